//! health (issue 16): the `[verify]` request on `POST /instances`, the
//! background health check moving instances between states with their
//! events, and event retention. The provider API is the fake in testkit.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use elements_client::{
    Client, CreateInstance, CreateWebhook, Error, HealthState, Instance, ListInstances,
};
use elements_testkit::api::{Expect, FakeApi, Fault};
use serde_json::{json, Value};

/// Hits of the fake API per bearer token, and whether it accepts them.
#[derive(Clone, Default)]
struct Gate {
    accept: Arc<AtomicBool>,
    hits: Arc<Mutex<HashMap<String, u64>>>,
}

impl Gate {
    fn expect(&self) -> Expect {
        let g = self.clone();
        Expect::Bearer(Arc::new(move |t| {
            *g.hits.lock().unwrap().entry(t.to_owned()).or_default() += 1;
            g.accept.load(Ordering::SeqCst)
        }))
    }
    fn hits(&self, token: &str) -> u64 {
        self.hits.lock().unwrap().get(token).copied().unwrap_or(0)
    }
}

struct Env {
    _dir: tempfile::TempDir,
    server: TestServer,
    api: FakeApi,
    gate: Gate,
}

async fn start(period: Duration) -> Env {
    let api = FakeApi::start().await;
    let gate = Gate::default();
    gate.accept.store(true, Ordering::SeqCst);
    api.expect(gate.expect());
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config
        .api_base_urls
        .insert("sendgrid".into(), api.base_url());
    config.health_check.verify_on_create = true;
    config.health_check.period = period;
    config.health_check.poll_interval = Duration::from_millis(20);
    config.health_check.timeout = Duration::from_secs(2);
    config.webhooks.allow_private = true;
    let server = TestServer::start(config).await;
    Env {
        _dir: dir,
        server,
        api,
        gate,
    }
}

fn sendgrid(key: &str) -> CreateInstance {
    CreateInstance::new("sendgrid", "mail").configuration("api.key", key)
}

/// `POST /instances`, with the element's `[verify]` request.
async fn post(env: &Env, body: &CreateInstance) -> Result<Instance, Error> {
    env.server.api().create_instance(body).await
}

/// `POST /instances?verify=false`.
async fn post_unverified(env: &Env, body: &CreateInstance) -> Instance {
    env.server
        .api()
        .create_instance_unverified(body)
        .await
        .unwrap()
}

async fn count(env: &Env) -> usize {
    env.server
        .api()
        .instances(&ListInstances::new())
        .await
        .unwrap()
        .items
        .len()
}

/// A refusal's JSON error body as text (the fields the client knows).
fn body_text(err: &elements_client::ApiError) -> String {
    to_json(&err.body).to_string()
}

#[tokio::test]
async fn post_instances_verifies_the_credential_before_storing() {
    let env = start(Duration::ZERO).await;
    // 200: stored, after one verify request with the key applied.
    let created = post(&env, &sendgrid("SG.good")).await.unwrap();
    assert_eq!(created.element.metadata.key, "sendgrid");
    assert_eq!(env.gate.hits("SG.good"), 1);
    assert_eq!(count(&env).await, 1);

    // 401: refused with a 4xx saying so; nothing stored; no token echoed.
    env.gate.accept.store(false, Ordering::SeqCst);
    // The whole body (`ApiError::raw`, fields the typed error does not
    // know too) is searched for the key.
    let err = refused(post(&env, &sendgrid("SG.bad")).await);
    assert_eq!(err.status, 400);
    let body: Value = serde_json::from_str(err.raw()).unwrap();
    assert_eq!(
        body["message"],
        "the provider rejected the credential: SendGrid's verify request answered 401 \
         (nothing was stored; pass verify=false to skip the check)"
    );
    let text = err.raw();
    assert!(
        text.contains("the provider rejected the credential") && text.contains("401"),
        "{text}"
    );
    assert!(!text.contains("SG.bad"), "{text}");
    assert_eq!(env.gate.hits("SG.bad"), 1);
    assert_eq!(count(&env).await, 1);

    // verify=false: stored without a request.
    post_unverified(&env, &sendgrid("SG.skip")).await;
    assert_eq!(env.gate.hits("SG.skip"), 0);
    assert_eq!(count(&env).await, 2);

    // 5xx: 502 naming the provider; nothing stored.
    env.gate.accept.store(true, Ordering::SeqCst);
    env.api.push_faults(&[Fault::Status(503, None)]);
    let err = refused(post(&env, &sendgrid("SG.flaky")).await);
    assert_eq!(err.status, 502, "{err}");
    assert_eq!(
        err.message(),
        "the provider SendGrid could not verify the credential: the verify request \
         answered 503 (nothing was stored)"
    );
    let text = body_text(&err);
    assert!(text.contains("SendGrid") && text.contains("503"), "{text}");
    assert_eq!(count(&env).await, 2);
}

/// The event log, newest first (the most the route answers).
async fn events(env: &Env) -> Vec<elements_client::Event> {
    env.server.api().events(Some(500)).await.unwrap()
}

async fn until_events<F: Fn(&[String]) -> bool>(env: &Env, what: &str, f: F) -> Vec<String> {
    for _ in 0..1500 {
        let types: Vec<String> = events(env).await.into_iter().map(|e| e.kind).collect();
        if f(&types) {
            return types;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}: {:#?}", events(env).await);
}

async fn health(env: &Env, id: i64) -> HealthState {
    env.server.api().instance(id).await.unwrap().health.state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_background_check_moves_an_instance_to_invalid_and_back() {
    let env = start(Duration::from_secs(1)).await;
    let api = env.server.api();
    let id = post(&env, &sendgrid("SG.live")).await.unwrap().id;
    let disabled = post(&env, &sendgrid("SG.off")).await.unwrap().id;
    assert!(api.disable_instance(disabled).await.unwrap().disabled);
    let receiver = Receiver::start().await;
    let created = api
        .create_webhook(&CreateWebhook::new(&receiver.url).events(["instance.*"]))
        .await
        .unwrap();
    assert_eq!(created.events, ["instance.*"]);
    *receiver.secret.lock().unwrap() = created.secret.map(|s| s.into_inner());
    let (_stop, rx) = tokio::sync::watch::channel(false);
    elements_server::health_check::spawn(env.server.state.clone(), rx.clone());
    let webhooks = elements_server::webhooks::Settings {
        allow_private: true,
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    elements_server::webhooks::spawn(env.server.state.store.clone(), webhooks, rx);

    // The provider now rejects the key: invalid, with its event.
    env.gate.accept.store(false, Ordering::SeqCst);
    until_events(&env, "instance.invalid", |t| {
        t.iter().any(|t| t == "instance.invalid")
    })
    .await;
    assert_eq!(health(&env, id).await, HealthState::Invalid);
    // It accepts it again: recovered, active.
    env.gate.accept.store(true, Ordering::SeqCst);
    until_events(&env, "instance.recovered", |t| {
        t.iter().any(|t| t == "instance.recovered")
    })
    .await;
    assert_eq!(health(&env, id).await, HealthState::Active);
    // A 5xx degrades it (counted), the next success recovers it.
    env.api.push_faults(&[Fault::Status(500, None)]);
    until_events(&env, "instance.refresh_failed", |t| {
        t.iter().any(|t| t == "instance.refresh_failed")
    })
    .await;
    // The disabled instance was never checked after its creation.
    assert_eq!(env.gate.hits("SG.off"), 1);
    // The receiver got the transitions, each signed (verified independently).
    for _ in 0..1500 {
        let got = receiver.types();
        if [
            "instance.invalid",
            "instance.recovered",
            "instance.refresh_failed",
        ]
        .iter()
        .all(|t| got.iter().any(|g| g == t))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = receiver.got.lock().unwrap().clone();
    for kind in [
        "instance.invalid",
        "instance.recovered",
        "instance.refresh_failed",
    ] {
        let hit = got
            .iter()
            .find(|(body, _)| body["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} delivered: {got:?}"));
        assert!(hit.1, "{kind}: bad signature");
        assert_eq!(hit.0["data"]["instanceId"], id, "{kind}");
        assert_eq!(hit.0["data"]["element"], "sendgrid", "{kind}");
    }
}

/// A webhook receiver on 127.0.0.1 that checks each Standard Webhooks
/// signature with its own HMAC-SHA256.
#[derive(Clone)]
struct Receiver {
    url: String,
    secret: Arc<Mutex<Option<String>>>,
    got: Arc<Mutex<Vec<(Value, bool)>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        use base64::Engine as _;
        use hmac::Mac as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Receiver {
            url: format!("http://{}/hooks", listener.local_addr().unwrap()),
            secret: Arc::default(),
            got: Arc::default(),
        };
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hooks",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let state = state.clone();
                    async move {
                        let h = |n: &str| {
                            headers
                                .get(n)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let b64 = base64::engine::general_purpose::STANDARD;
                        let secret = state.secret.lock().unwrap().clone().unwrap_or_default();
                        let key = b64
                            .decode(secret.trim_start_matches("whsec_"))
                            .unwrap_or_default();
                        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
                        mac.update(
                            format!("{}.{}.", h("webhook-id"), h("webhook-timestamp")).as_bytes(),
                        );
                        mac.update(&body);
                        let want = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
                        let ok = h("webhook-signature").split(' ').any(|s| s == want);
                        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        state.got.lock().unwrap().push((value, ok));
                        axum::http::StatusCode::NO_CONTENT
                    }
                },
            ),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    fn types(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(b, _)| b["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_old_finished_events_and_keeps_pending_ones() {
    let env = start(Duration::ZERO).await;
    let store = env.server.state.store.clone();
    post_unverified(&env, &sendgrid("SG.a")).await;
    // Fanned out (no webhooks: nothing left to deliver): finished.
    assert_eq!(store.fan_out_events(100).await.unwrap(), 1);
    post_unverified(&env, &sendgrid("SG.b")).await;
    // Not fanned out yet: pending, never deleted.
    let cutoff = elements_store::now_millis() + 60_000;
    assert_eq!(store.delete_old_events(cutoff, 100).await.unwrap(), 1);
    assert_eq!(store.delete_old_events(cutoff, 100).await.unwrap(), 0);
    let left = events(&env).await;
    assert_eq!(left.len(), 1, "{left:?}");
    // Events younger than the cutoff are kept whatever their state.
    assert_eq!(store.fan_out_events(100).await.unwrap(), 1);
    assert_eq!(
        store
            .delete_old_events(elements_store::now_millis() - 60_000, 100)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn rewrap_covers_webhook_secrets_so_the_old_key_can_be_retired() {
    use elements_store::{connect, hash_secret, rewrap, EventFilter, EventKind, Keyring};
    let dir = data_dir();
    let url = format!("sqlite://{}", dir.path().join("rewrap.db").display());
    let (k1, k2) = (Keyring::generate_key(), Keyring::generate_key());
    let store = connect(&url, Keyring::new(vec![k1]).unwrap())
        .await
        .unwrap();
    let a = store
        .create_account(elements_store::NewAccount {
            organization_name: "a".into(),
            organization_secret_hash: hash_secret("org-a"),
            email: "a@test".into(),
            first_name: "F".into(),
            last_name: "L".into(),
            user_secret_hash: hash_secret("user-a"),
        })
        .await
        .unwrap();
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    store
        .create_webhook(elements_store::NewWebhook {
            organization_id: a.organization_id,
            url: "http://127.0.0.1:9/hooks".into(),
            events: EventFilter(vec!["*".into()]),
            secret: elements_core::Secret::new(secret),
        })
        .await
        .unwrap();
    let both = Keyring::new(vec![k2, k1]).unwrap();
    let report = rewrap(store.as_ref(), &both).await.unwrap();
    assert_eq!(report.rewrapped, 1, "{report:?}");
    assert!(report.stranded.is_empty(), "{report:?}");
    drop(store);
    // The old key is retired: the store opens with the new one alone and
    // the webhook's secret still decrypts for signing.
    let store = connect(&url, Keyring::new(vec![k2]).unwrap())
        .await
        .unwrap();
    store
        .record_event(
            a.organization_id,
            EventKind::ConnectFailed,
            json!({"error": "access_denied"}),
        )
        .await
        .unwrap();
    assert_eq!(store.fan_out_events(10).await.unwrap(), 1);
    let claims = store.claim_deliveries(7, 60_000, 10).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].secret.expose(), secret);
}

/// Two real replicas on one PostgreSQL database, checking every 2 s: each
/// instance is checked, and never more often than once per period (two
/// replicas checking one instance each period would double its hits).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_never_check_one_instance_twice_per_period() {
    const INSTANCES: usize = 12;
    const PERIOD_SECONDS: u64 = 2;
    let pg = elements_testkit::pg::PgCluster::shared().expect("postgres");
    let db_url = pg.create_database("health_replicas").expect("database");
    let key = elements_store::Keyring::encode_key(&elements_store::Keyring::generate_key());
    let api = FakeApi::start().await;
    let gate = Gate::default();
    gate.accept.store(true, Ordering::SeqCst);
    api.expect(gate.expect());
    let dir = data_dir();
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        format!(
            "health_check_interval_seconds = {PERIOD_SECONDS}\n\
             [elements.sendgrid]\napi_base_url = \"{}\"\n",
            api.base_url()
        ),
    )
    .unwrap();
    let (org, user) = ("org-health-replicas", "user-health-replicas");
    let replica = || {
        Binary::serve(
            &[
                "--database-url",
                &db_url,
                "--config",
                config.to_str().unwrap(),
            ],
            &[
                ("ELEMENTS_MASTER_KEY", key.as_str()),
                ("ELEMENTS_ORGANIZATION_SECRET", org),
                ("ELEMENTS_USER_SECRET", user),
            ],
        )
    };
    let mut a = replica();
    let mut b = replica();
    let on_a = Client::new(&a.base).unwrap().with_account(user, org);
    let on_b = Client::new(&b.base).unwrap().with_account(user, org);
    let started = std::time::Instant::now();
    for i in 0..INSTANCES {
        let via = if i % 2 == 0 { &on_a } else { &on_b };
        let key = format!("SG.replica-{i}");
        let created = via.create_instance(&sendgrid(&key)).await.unwrap();
        assert_eq!(created.configuration["api.key"], "********", "{key}");
    }
    // Every instance is checked at least twice (a guard against hanging,
    // not a time assertion).
    for _ in 0..3000 {
        if (0..INSTANCES).all(|i| gate.hits(&format!("SG.replica-{i}")) >= 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.kill();
    b.kill();
    let elapsed = started.elapsed().as_secs_f64();
    // Checks of an instance are at least one period apart and the first
    // one period after its creation, so in `elapsed` there are at most
    // elapsed / period of them.
    let bound = (elapsed / PERIOD_SECONDS as f64).floor() as u64;
    for i in 0..INSTANCES {
        let hits = gate.hits(&format!("SG.replica-{i}"));
        assert!(
            (2..=bound).contains(&hits),
            "instance {i}: {hits} checks in {elapsed:.1} s (at most {bound})"
        );
    }
}

/// The claim itself, on PostgreSQL: sixteen concurrent claimers of the same
/// due instances get disjoint sets that together cover every instance, and
/// a second round finds nothing due (each claim moved the row forward).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_on_postgres_are_disjoint() {
    use elements_store::{connect, hash_secret, Keyring, NewInstance};
    const INSTANCES: usize = 200;
    let pg = elements_testkit::pg::PgCluster::shared().expect("postgres");
    let db_url = pg.create_database("health_claims").expect("database");
    let store = connect(
        &db_url,
        Keyring::new(vec![Keyring::generate_key()]).unwrap(),
    )
    .await
    .unwrap();
    let a = store
        .create_account(elements_store::NewAccount {
            organization_name: "claims".into(),
            organization_secret_hash: hash_secret("org-claims"),
            email: "c@test".into(),
            first_name: "F".into(),
            last_name: "L".into(),
            user_secret_hash: hash_secret("user-claims"),
        })
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..INSTANCES {
        let created = store
            .create_instance(NewInstance {
                organization_id: a.organization_id,
                user_id: a.user.id,
                element_key: "sendgrid".into(),
                element_id: 1,
                name: format!("i{i}"),
                tags: Vec::new(),
                configuration: elements_core::Configuration::new(),
                token_hash: hash_secret(&format!("token-{i}")),
                tokens: Default::default(),
            })
            .await
            .unwrap();
        ids.push(created.id);
    }
    let now = elements_store::now_millis() + 1;
    let hour = 3_600_000;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let store = store.clone();
        set.spawn(async move {
            store
                .claim_health_checks(now, 0, now + hour, 1000, INSTANCES as i64)
                .await
                .unwrap()
        });
    }
    let mut claims = Vec::new();
    while let Some(got) = set.join_next().await {
        claims.push(got.unwrap());
    }
    let mut all: Vec<i64> = claims.into_iter().flatten().collect();
    let claimed = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), claimed, "an instance was claimed twice");
    ids.sort_unstable();
    assert_eq!(all, ids);
    assert!(store
        .claim_health_checks(now, 0, now + hour, 1000, 100)
        .await
        .unwrap()
        .is_empty());
    // Due again after the next time (at most `now + hour + 999`).
    assert_eq!(
        store
            .claim_health_checks(now + hour + 1000, 0, now + 2 * hour, 1000, 1000)
            .await
            .unwrap()
            .len(),
        INSTANCES
    );
}

/// A client-credentials element that declares `[verify]` (a deployment
/// file: no catalog element of that kind documents a cheap check).
const VERIFIED_CC: &str = r#"
id = 990001
key = "verified-cc"
name = "Verified CC"
description = "A client-credentials API whose credential is verified on create"
image = "elements/provider_verified-cc.png"
hub = "general"
authentication = "oauth2_client_credentials"
existing_account_description = "Use a machine-to-machine client"
config_description = "Create a machine-to-machine client"
api_base_url = "https://api.verified-cc.example/v1"

[oauth]
token_url = "https://login.verified-cc.example/oauth/token"
client_auth = "body"

[verify]
path = "/me"

[[configuration]]
key = "oauth.api.key"
name = "Client ID"

[[configuration]]
key = "oauth.api.secret"
name = "Client Secret"
secret = true
"#;

/// A credential the server obtains itself (client credentials) is verified
/// too, before it is stored: a token the API refuses stores nothing.
#[tokio::test]
async fn a_client_credentials_token_is_verified_before_it_is_stored() {
    let fake = elements_testkit::provider::FakeProvider::start().await;
    fake.add_client("cc-client", "cc-secret");
    let api = FakeApi::start().await;
    let gate = Gate::default();
    gate.accept.store(false, Ordering::SeqCst);
    api.expect(gate.expect());
    let dir = data_dir();
    let elements_dir = dir.path().join("elements");
    std::fs::create_dir_all(&elements_dir).unwrap();
    std::fs::write(elements_dir.join("verified-cc.toml"), VERIFIED_CC).unwrap();
    let mut config = config_in(dir.path());
    config.elements_dirs.push(elements_dir);
    config.overrides.insert(
        "verified-cc".into(),
        elements_core::OAuthOverride {
            token_url: Some(fake.token_url()),
            ..Default::default()
        },
    );
    config
        .api_base_urls
        .insert("verified-cc".into(), api.base_url());
    config.health_check.verify_on_create = true;
    config.health_check.timeout = Duration::from_secs(2);
    let server = TestServer::start(config).await;
    let env = Env {
        _dir: dir,
        server,
        api,
        gate,
    };
    let body = CreateInstance::new("verified-cc", "m2m")
        .configuration("oauth.api.key", "cc-client")
        .configuration("oauth.api.secret", "cc-secret");
    // Refused by the API: a 400 saying so, the grant made, nothing stored.
    let err = refused(post(&env, &body).await);
    assert_eq!(err.status, 400, "{err}");
    assert_eq!(
        err.message(),
        "the provider rejected the credential: Verified CC's verify request answered 401 \
         (nothing was stored; pass verify=false to skip the check)"
    );
    let text = body_text(&err);
    assert!(
        text.contains("the provider rejected the credential"),
        "{text}"
    );
    assert_eq!(fake.client_credentials_grants(), 1);
    assert_eq!(env.gate.hits.lock().unwrap().values().sum::<u64>(), 1);
    assert_eq!(count(&env).await, 0);
    // Accepted: stored after one verify request with the obtained token.
    env.gate.accept.store(true, Ordering::SeqCst);
    let created = post(&env, &body).await.unwrap();
    assert_eq!(created.element.metadata.key, "verified-cc");
    assert_eq!(fake.client_credentials_grants(), 2);
    assert_eq!(env.gate.hits.lock().unwrap().values().sum::<u64>(), 2);
    assert_eq!(count(&env).await, 1);
    // verify=false: no request.
    post_unverified(&env, &body).await;
    assert_eq!(env.gate.hits.lock().unwrap().values().sum::<u64>(), 2);
    assert_eq!(count(&env).await, 2);
}
