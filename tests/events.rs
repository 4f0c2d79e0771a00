//! Issue 16: instance health, lifecycle events from the outbox, signed
//! webhooks. A receiver on 127.0.0.1 verifies every delivery's signature
//! with its own implementation of the Standard Webhooks algorithm (below,
//! from the specification: HMAC-SHA256 over `{id}.{timestamp}.{body}`
//! keyed with the base64-decoded secret after `whsec_`, base64, `v1,`).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use elements_client::{Client, CreateWebhook, Event, HealthState, ListInstances};
use elements_core::OAuthOverride;
use elements_server::webhooks::Settings;
use elements_store::{CheckOutcome, EventKind};
use elements_testkit::provider::FakeProvider;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;

/// How the receiver answers.
const OK: u8 = 0;
const FAIL: u8 = 1;
const GONE: u8 = 2;
const SLOW: u8 = 3;
const HUGE: u8 = 4;

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub body: Value,
    pub verified: bool,
}

#[derive(Clone)]
struct Receiver {
    mode: Arc<AtomicU8>,
    secret: Arc<Mutex<Option<String>>>,
    got: Arc<Mutex<Vec<Received>>>,
    /// Deliveries being received now, by webhook-id.
    in_flight: Arc<Mutex<std::collections::HashSet<String>>>,
    /// Deliveries that arrived while one with the same id was in flight.
    overlaps: Arc<std::sync::atomic::AtomicUsize>,
}

/// The Standard Webhooks verification, written from the specification.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(id), Some(ts), Some(sigs)) = (
        h("webhook-id"),
        h("webhook-timestamp"),
        h("webhook-signature"),
    ) else {
        return false;
    };
    let Some(key) = secret
        .strip_prefix("whsec_")
        .and_then(|k| STANDARD.decode(k).ok())
    else {
        return false;
    };
    let mut signed = Vec::new();
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(ts.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(&signed);
    let expected = STANDARD.encode(mac.finalize().into_bytes());
    // Space-delimited list of `version,signature`.
    sigs.split(' ')
        .any(|s| s.split_once(',') == Some(("v1", expected.as_str())))
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let verified = r
        .secret
        .lock()
        .unwrap()
        .as_deref()
        .is_some_and(|s| verify(s, &headers, &body));
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !r.in_flight.lock().unwrap().insert(id.clone()) {
        r.overlaps.fetch_add(1, Ordering::SeqCst);
    }
    // Widen the window in which a concurrent duplicate would be seen.
    tokio::time::sleep(Duration::from_millis(1)).await;
    r.in_flight.lock().unwrap().remove(&id);
    r.got.lock().unwrap().push(Received {
        id,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        verified,
    });
    match r.mode.load(Ordering::SeqCst) {
        OK => (StatusCode::NO_CONTENT, Vec::new()),
        FAIL => (StatusCode::INTERNAL_SERVER_ERROR, b"nope".to_vec()),
        GONE => (StatusCode::GONE, Vec::new()),
        SLOW => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, Vec::new())
        }
        _ => (StatusCode::OK, vec![b'x'; 20 << 20]),
    }
}

impl Receiver {
    async fn start(mode: u8) -> (Receiver, String) {
        let r = Receiver {
            mode: Arc::new(AtomicU8::new(mode)),
            secret: Arc::new(Mutex::new(None)),
            got: Arc::new(Mutex::new(Vec::new())),
            in_flight: Arc::default(),
            overlaps: Arc::default(),
        };
        let app = axum::Router::new()
            .route("/hooks", axum::routing::post(receive))
            .with_state(r.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

fn fast(allow_private: bool) -> Settings {
    Settings {
        allow_private,
        retry_schedule: vec![Duration::from_millis(5), Duration::from_millis(10)],
        timeout: Duration::from_millis(300),
        poll_interval: Duration::from_millis(10),
        concurrency: 8,
        jitter: 0.2,
    }
}

struct Env {
    _dir: tempfile::TempDir,
    server: TestServer,
    stop: tokio::sync::watch::Sender<bool>,
}

async fn start(settings: Settings, fake: Option<&FakeProvider>) -> Env {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.webhooks = settings.clone();
    if let Some(fake) = fake {
        config.overrides.insert(
            "hubspot".into(),
            OAuthOverride {
                authorization_url: Some(fake.legacy_authenticate_url()),
                token_url: Some(fake.token_url()),
                refresh_url: Some(fake.legacy_refresh_url()),
                endpoints: [("current_authorization_url".to_owned(), fake.authorize_url())].into(),
            },
        );
    }
    let server = TestServer::start(config).await;
    let (stop, rx) = tokio::sync::watch::channel(false);
    elements_server::webhooks::spawn(server.state.store.clone(), settings, rx);
    Env {
        _dir: dir,
        server,
        stop,
    }
}

/// Checks a new webhook's signing secret (`whsec_` and 32 random bytes in
/// base64) and gives it to the receiver.
fn keep_secret(receiver: &Receiver, secret: &str) {
    assert!(secret.starts_with("whsec_"), "a whsec_ secret");
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
    *receiver.secret.lock().unwrap() = Some(secret.to_owned());
}

/// Subscribes the receiver through `api` (every event, or those matching
/// `events`); returns the webhook id.
async fn subscribe_with(
    api: &Client,
    receiver: &Receiver,
    url: &str,
    events: Option<&[&str]>,
) -> i64 {
    let mut body = CreateWebhook::new(url);
    if let Some(patterns) = events {
        body = body.events(patterns.iter().copied());
    }
    let created = api.create_webhook(&body).await.unwrap();
    assert_eq!(
        created.events,
        events.unwrap_or(&["*"]),
        "the patterns as stored"
    );
    keep_secret(receiver, created.secret.as_ref().unwrap().expose());
    created.id
}

/// [`subscribe_with`] the server's account.
async fn subscribe(
    server: &TestServer,
    receiver: &Receiver,
    url: &str,
    events: Option<&[&str]>,
) -> i64 {
    subscribe_with(&server.api(), receiver, url, events).await
}

/// Polls `f` until it holds (a guard against hanging, not a time assertion).
async fn until<F: FnMut() -> bool>(what: &str, mut f: F) {
    for _ in 0..3000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// The event log, newest first (the most the route answers).
async fn events(server: &TestServer) -> Vec<Event> {
    server.api().events(Some(500)).await.unwrap()
}

/// Polls the event log until `f` holds of it.
async fn until_events<F: Fn(&[Event]) -> bool>(
    server: &TestServer,
    what: &str,
    f: F,
) -> Vec<Event> {
    for _ in 0..3000 {
        let list = events(server).await;
        if f(&list) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}: {:#?}", events(server).await);
}

/// The first delivery of the newest event, if there is one.
fn newest_delivery(log: &[Event]) -> Option<&elements_client::Delivery> {
    log.first().and_then(|e| e.deliveries.first())
}

fn types(got: &[Received]) -> Vec<String> {
    let mut t: Vec<String> = got
        .iter()
        .map(|r| r.body["type"].as_str().unwrap_or("?").to_owned())
        .collect();
    t.sort();
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_events_arrive_signed_with_the_documented_shape() {
    let env = start(fast(true), None).await;
    let s = &env.server;
    let api = s.api();
    let (receiver, url) = Receiver::start(OK).await;
    // The typed create is `Ok` only on the documented 201.
    let created = api
        .create_webhook(&CreateWebhook::new(url.as_str()))
        .await
        .unwrap();
    keep_secret(
        &receiver,
        created.secret.as_ref().expect("the secret, once").expose(),
    );
    let hook = created.id;

    let listed = api.webhooks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, hook);
    assert_eq!(listed[0].events, ["*"]);
    assert_eq!(listed[0].secret, None, "the secret is shown once");
    // Raw: the key is absent, not `null` (a typed `None` cannot tell).
    let listed: Vec<Value> = s.fetch(Method::GET, "/organizations/me/webhooks").await;
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once: {listed:?}"
    );

    let created = api
        .create_instance(&seed_instance("at", "rt"))
        .await
        .unwrap();
    let id = created.id;
    assert_eq!(created.health.state, HealthState::Active);
    assert_eq!(created.health.failures, 0);
    for (disable, state) in [(true, HealthState::Disabled), (false, HealthState::Active)] {
        let answered = if disable {
            api.disable_instance(id).await
        } else {
            api.enable_instance(id).await
        }
        .unwrap();
        assert_eq!(answered.disabled, disable);
        let got = api.instance(id).await.unwrap();
        assert_eq!(got.health.state, state);
        assert_eq!(got.disabled, disable);
    }
    api.delete_instance(id).await.unwrap();

    until("four deliveries", || receiver.got().len() >= 4).await;
    let got = receiver.got();
    assert!(
        got.iter().all(|r| r.verified),
        "every signature verifies: {got:?}"
    );
    assert_eq!(
        types(&got),
        [
            "instance.created",
            "instance.deleted",
            "instance.disabled",
            "instance.enabled"
        ]
    );
    for r in &got {
        assert_eq!(r.body["data"]["instanceId"], id, "{:?}", r.body);
        assert_eq!(r.body["data"]["element"], "hubspot");
        assert!(r.body["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(r.id.starts_with("msg_"), "{}", r.id);
    }
    let created_event = got
        .iter()
        .find(|r| r.body["type"] == "instance.created")
        .unwrap();
    assert_eq!(created_event.body["data"]["name"], created.name);

    // The event log shows them delivered; redelivery sends the same id again.
    let log = until_events(s, "all delivered", |l| {
        l.len() == 4
            && l.iter()
                .all(|e| e.deliveries.first().is_some_and(|d| d.state == "delivered"))
    })
    .await;
    let first = log.last().unwrap().id.clone();
    // The typed redelivery is `Ok` only on the documented 202.
    let redelivered = api.redeliver_event(&first).await.unwrap();
    assert_eq!(redelivered.id, first);
    until("the redelivery", || receiver.got().len() >= 5).await;
    let again = receiver.got();
    assert_eq!(again.iter().filter(|r| r.id == first).count(), 2);
    assert!(again.iter().all(|r| r.verified));
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filters_select_events() {
    let env = start(fast(true), None).await;
    let s = &env.server;
    let (only_deleted, url_a) = Receiver::start(OK).await;
    let (all_instance, url_b) = Receiver::start(OK).await;
    subscribe(s, &only_deleted, &url_a, Some(&["instance.deleted"])).await;
    subscribe(s, &all_instance, &url_b, Some(&["instance.*"])).await;
    let api = s.api();
    let id = api
        .create_instance(&seed_instance("a", "r"))
        .await
        .unwrap()
        .id;
    api.delete_instance(id).await.unwrap();
    until("both", || {
        all_instance.got().len() >= 2 && !only_deleted.got().is_empty()
    })
    .await;
    // A marker event after the others: once it arrived, nothing else will.
    s.state
        .store
        .record_event(
            org_id(s, &s.account).await,
            EventKind::InstanceDeleted,
            json!({ "instanceId": 1, "element": "marker" }),
        )
        .await
        .unwrap();
    until("the marker", || only_deleted.got().len() >= 2).await;
    assert_eq!(
        types(&only_deleted.got()),
        ["instance.deleted", "instance.deleted"]
    );
    assert_eq!(
        types(&all_instance.got())[..2],
        ["instance.created", "instance.deleted"]
    );
    let _ = env.stop.send(true);
    env.server.stop().await;
}

async fn org_id(s: &TestServer, account: &Account) -> i64 {
    s.state
        .store
        .authenticate(
            &elements_store::hash_secret(&account.user_secret),
            &elements_store::hash_secret(&account.organization_secret),
        )
        .await
        .unwrap()
        .unwrap()
        .organization_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_follows_refresh_failures_checks_and_dead_grants() {
    let fake = FakeProvider::start().await;
    let env = start(fast(true), Some(&fake)).await;
    let s = &env.server;
    let (receiver, url) = Receiver::start(OK).await;
    subscribe(
        s,
        &receiver,
        &url,
        Some(&[
            "instance.refresh_failed",
            "instance.recovered",
            "instance.invalid",
        ]),
    )
    .await;

    let api = s.api();
    let (access, refresh) = fake.issue_tokens("test-client");
    let body = seed_instance(&access, &refresh).configuration("oauth.api.secret", "test-secret");
    let created = api.create_instance(&body).await.unwrap();
    let id = created.id;
    let scoped = s.anonymous().with_element(created.token.unwrap());
    let listed = |health: HealthState| {
        let api = api.clone();
        async move {
            api.instances(&ListInstances::new().health(health))
                .await
                .unwrap()
                .items
        }
    };

    // A transient failure: degraded, with the count and the error.
    expire(s.state.store.as_ref(), id).await;
    fake.fail_next(1, 500);
    assert_eq!(refused(scoped.credentials(id).await).status, 502);
    let got = api.instance(id).await.unwrap();
    assert_eq!(got.health.state, HealthState::Degraded, "{got:?}");
    assert_eq!(got.health.failures, 1);
    assert!(
        got.health.last_error.as_deref().unwrap().contains("500"),
        "{got:?}"
    );
    assert!(got.valid);
    assert_eq!(listed(HealthState::Degraded).await.len(), 1);
    assert!(listed(HealthState::Active).await.is_empty());

    // The next refresh succeeds: recovered.
    scoped.credentials(id).await.unwrap();
    let got = api.instance(id).await.unwrap();
    assert_eq!(got.health.state, HealthState::Active, "{got:?}");
    assert_eq!(got.health.failures, 0);

    // A dead grant: invalid.
    expire(s.state.store.as_ref(), id).await;
    fake.invalid_grant_next(1);
    assert_eq!(refused(scoped.credentials(id).await).status, 409);
    let got = api.instance(id).await.unwrap();
    assert_eq!(got.health.state, HealthState::Invalid, "{got:?}");
    assert!(!got.valid);
    assert!(
        got.health
            .last_error
            .as_deref()
            .unwrap()
            .contains("invalid_grant"),
        "{got:?}"
    );

    // A later check (the hook for a catalog `verify` request) recovers it.
    assert!(s
        .state
        .store
        .record_check(id, CheckOutcome::Ok)
        .await
        .unwrap());
    let got = api.instance(id).await.unwrap();
    assert_eq!(got.health.state, HealthState::Active, "{got:?}");
    assert!(got.valid);
    assert!(s
        .state
        .store
        .record_check(id, CheckOutcome::Rejected("401 on the check".into()))
        .await
        .unwrap());
    let got = api.instance(id).await.unwrap();
    assert_eq!(got.health.state, HealthState::Invalid);
    assert_eq!(got.invalid_reason.as_deref(), Some("401 on the check"));

    until("five events", || receiver.got().len() >= 5).await;
    let got = receiver.got();
    assert_eq!(
        types(&got),
        [
            "instance.invalid",
            "instance.invalid",
            "instance.recovered",
            "instance.recovered",
            "instance.refresh_failed"
        ]
    );
    let failed = got
        .iter()
        .find(|r| r.body["type"] == "instance.refresh_failed")
        .unwrap();
    assert_eq!(failed.body["data"]["attempt"], 1);
    assert_eq!(failed.body["data"]["instanceId"], id);
    assert!(got.iter().all(|r| r.verified));
    let _ = env.stop.send(true);
    env.server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_receiver_is_retried_on_the_schedule_then_dead_lettered() {
    let env = start(fast(true), None).await;
    let s = &env.server;
    let (receiver, url) = Receiver::start(FAIL).await;
    subscribe(s, &receiver, &url, None).await;
    let api = s.api();
    api.create_instance(&seed_instance("a", "r")).await.unwrap();
    // Schedule of two retries: three attempts, then dead.
    let log = until_events(s, "dead letter", |l| {
        newest_delivery(l).is_some_and(|d| d.state == "dead")
    })
    .await;
    let d = &log[0].deliveries[0];
    assert_eq!(d.attempts, 3, "{d:?}");
    assert_eq!(d.last_status, Some(500));
    assert_eq!(d.last_error.as_deref(), Some("the endpoint answered 500"));
    let got = receiver.got();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.id == got[0].id && r.verified));

    // Redelivery revives it: three more attempts with the same id.
    receiver.mode.store(OK, Ordering::SeqCst);
    let id = log[0].id.as_str();
    let again = api.redeliver_event(id).await.unwrap();
    assert_eq!(again.id, id);
    assert_eq!(again.deliveries_reset, 1);
    let log = until_events(s, "delivered", |l| {
        newest_delivery(l).is_some_and(|d| d.state == "delivered")
    })
    .await;
    assert_eq!(log[0].deliveries[0].attempts, 1);
    assert_eq!(receiver.got().len(), 4);
    assert_eq!(receiver.got()[3].id, id);
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_receiver_times_out_and_a_gone_one_disables_the_endpoint() {
    let mut settings = fast(true);
    settings.retry_schedule = vec![Duration::from_millis(5)];
    let env = start(settings, None).await;
    let s = &env.server;
    let (slow, url) = Receiver::start(SLOW).await;
    subscribe(s, &slow, &url, None).await;
    let api = s.api();
    api.create_instance(&seed_instance("a", "r")).await.unwrap();
    let log = until_events(s, "dead letter", |l| {
        newest_delivery(l).is_some_and(|d| d.state == "dead")
    })
    .await;
    let d = &log[0].deliveries[0];
    assert_eq!(d.attempts, 2, "{d:?}");
    assert_eq!(d.last_error.as_deref(), Some("timed out after 300 ms"));
    assert_eq!(d.last_status, None);
    // Raw: `lastStatus` is absent, not `null` (a typed `None` cannot tell).
    let raw: Vec<Value> = s
        .fetch(Method::GET, "/organizations/me/events?limit=500")
        .await;
    assert!(
        raw[0]["deliveries"][0].get("lastStatus").is_none(),
        "{raw:?}"
    );

    // 410: the delivery dies at once and the endpoint is disabled.
    let hooks = api.webhooks().await.unwrap();
    // The typed delete is `Ok` only on the documented 204.
    api.delete_webhook(hooks[0].id).await.unwrap();
    assert!(api.webhooks().await.unwrap().is_empty());
    let (gone, url) = Receiver::start(GONE).await;
    let hook = subscribe(s, &gone, &url, None).await;
    api.create_instance(&seed_instance("b", "r")).await.unwrap();
    let log = until_events(s, "gone", |l| {
        newest_delivery(l).is_some_and(|d| d.state == "dead")
    })
    .await;
    let d = &log[0].deliveries[0];
    assert_eq!(d.webhook_id, hook);
    assert_eq!(d.attempts, 1);
    assert_eq!(d.last_status, Some(410));
    let hooks = api.webhooks().await.unwrap();
    assert!(!hooks[0].enabled);
    assert_eq!(
        hooks[0].disabled_reason.as_deref(),
        Some("the endpoint answered 410 Gone")
    );
    // A later event is not delivered to a disabled endpoint: once the log
    // shows it (fanned out or not), it has no delivery.
    api.create_instance(&seed_instance("c", "r")).await.unwrap();
    let log = until_events(s, "third", |l| l.len() == 3).await;
    assert!(log[0].deliveries.is_empty(), "{:?}", log[0]);
    assert_eq!(gone.got().len(), 1);
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_receivers_never_break_the_server() {
    let env = start(fast(true), None).await;
    let s = &env.server;
    // A 20 MiB answer: delivered (2xx), the body never read.
    let (huge, url) = Receiver::start(HUGE).await;
    subscribe(s, &huge, &url, None).await;
    // Garbage instead of HTTP.
    let garbage = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let garbage_url = format!("http://{}/", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        loop {
            let Ok((mut c, _)) = garbage.accept().await else {
                return;
            };
            let _ = c.write_all(b"\x00\xffNOT HTTP AT ALL\r\n\r\n").await;
        }
    });
    let api = s.api();
    let garbage_hook = api
        .create_webhook(&CreateWebhook::new(&garbage_url))
        .await
        .unwrap();
    assert_eq!(garbage_hook.url, garbage_url);
    let instance = api.create_instance(&seed_instance("a", "r")).await.unwrap();
    let log = until_events(s, "both settled", |l| {
        l.first().is_some_and(|e| {
            e.deliveries.len() == 2 && e.deliveries.iter().all(|d| d.state != "pending")
        })
    })
    .await;
    let states: BTreeMap<i64, String> = log[0]
        .deliveries
        .iter()
        .map(|d| (d.webhook_id, d.state.clone()))
        .collect();
    let mut values: Vec<&String> = states.values().collect();
    values.sort();
    assert_eq!(values, ["dead", "delivered"]);
    assert_eq!(states[&garbage_hook.id], "dead");
    // The server still answers.
    let listed = api.instances(&ListInstances::new()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].id, instance.id);
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_addresses_are_refused_unless_allowed() {
    let env = start(fast(false), None).await;
    let s = &env.server;
    let api = s.api();
    for (url, says) in [
        ("http://127.0.0.1:9/hooks", "must use https"),
        ("https://127.0.0.1/hooks", "private, loopback or link-local"),
        ("https://10.0.0.8/hooks", "private, loopback or link-local"),
        (
            "https://169.254.169.254/latest",
            "private, loopback or link-local",
        ),
        ("https://localhost/hooks", "private, loopback or link-local"),
        ("https://[fe80::1]/hooks", "private, loopback or link-local"),
    ] {
        let err = refused(api.create_webhook(&CreateWebhook::new(url)).await);
        assert_eq!(err.status, 400, "{url}: {err}");
        assert!(err.message().contains(says), "{url}: {err}");
    }
    // Stored before the setting changed (here: through the store), a
    // private address is still not delivered to: a literal one is refused,
    // and a name is resolved and its private addresses dropped.
    let (receiver, url) = Receiver::start(OK).await;
    let org = org_id(s, &s.account).await;
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for url in [url.clone(), format!("https://localhost:{port}/hooks")] {
        s.state
            .store
            .create_webhook(elements_store::NewWebhook {
                organization_id: org,
                url,
                events: elements_store::EventFilter(vec!["*".into()]),
                secret: elements_server::webhooks::sign::new_secret(),
            })
            .await
            .unwrap();
    }
    api.create_instance(&seed_instance("a", "r")).await.unwrap();
    let log = until_events(s, "both dead", |l| {
        l.first().is_some_and(|e| {
            e.deliveries.len() == 2 && e.deliveries.iter().all(|d| d.state == "dead")
        })
    })
    .await;
    let errors: Vec<&str> = log[0]
        .deliveries
        .iter()
        .map(|d| d.last_error.as_deref().unwrap())
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("private, loopback or link-local")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("no public address")),
        "{errors:?}"
    );
    assert!(receiver.got().is_empty());
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_organizations_webhooks_and_events_are_404() {
    let env = start(fast(true), None).await;
    let s = &env.server;
    let (receiver, url) = Receiver::start(OK).await;
    let hook = subscribe(s, &receiver, &url, None).await;
    s.api()
        .create_instance(&seed_instance("a", "r"))
        .await
        .unwrap();
    let log = until_events(s, "one event", |l| l.len() == 1).await;
    let event = log[0].id.clone();

    let other = s.other_account("rival").await.client(&s.base);
    let err = refused(other.delete_webhook(hook).await);
    assert_eq!(err.status, 404);
    assert_eq!(err.message(), format!("no webhook with id {hook}"));
    let err = refused(other.redeliver_event(&event).await);
    assert_eq!(err.status, 404);
    assert!(other.webhooks().await.unwrap().is_empty());
    assert!(other.events(None).await.unwrap().is_empty());
    // Still there for its owner.
    assert_eq!(s.api().webhooks().await.unwrap().len(), 1);
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_and_connect_events_can_be_recorded() {
    let env = start(fast(true), None).await;
    let s = &env.server;
    let (receiver, url) = Receiver::start(OK).await;
    subscribe(s, &receiver, &url, Some(&["instance.revoked", "connect.*"])).await;
    let org = org_id(s, &s.account).await;
    s.state
        .store
        .record_event(
            org,
            EventKind::InstanceRevoked,
            json!({ "instanceId": 7, "element": "hubspot", "outcome": "revoked" }),
        )
        .await
        .unwrap();
    s.state
        .store
        .record_event(
            org,
            EventKind::ConnectFailed,
            json!({ "element": "hubspot", "error": "access_denied" }),
        )
        .await
        .unwrap();
    until("two", || receiver.got().len() >= 2).await;
    let got = receiver.got();
    assert_eq!(types(&got), ["connect.failed", "instance.revoked"]);
    let revoked = got
        .iter()
        .find(|r| r.body["type"] == "instance.revoked")
        .unwrap();
    assert_eq!(revoked.body["data"]["outcome"], "revoked");
    let _ = env.stop.send(true);
    env.server.stop().await;
}

/// SIGKILL of the real binary during a burst of state changes and
/// deliveries, 20 rounds: every committed event is delivered at least once,
/// duplicates carry the same `webhook-id`, nothing is delivered that was not
/// committed, every signature verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn committed_events_survive_sigkill_and_are_delivered() {
    use rand::Rng;
    const ROUNDS: usize = 20;
    const WORKERS: usize = 6;
    let dir = data_dir();
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        "webhooks_allow_private = true\n\
         webhooks_retry_schedule_ms = [10, 20, 40, 80, 160, 320, 640, 1280, 2560]\n\
         webhooks_timeout_ms = 1000\n\
         webhooks_poll_interval_ms = 10\n",
    )
    .unwrap();
    let org = format!("org-{}", rand::rng().random::<u64>());
    let user = format!("user-{}", rand::rng().random::<u64>());
    let data = dir.path().join("data");
    let start = || {
        Binary::serve(
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
            ],
            &[
                ("ELEMENTS_ORGANIZATION_SECRET", org.as_str()),
                ("ELEMENTS_USER_SECRET", user.as_str()),
            ],
        )
    };
    let (receiver, url) = Receiver::start(OK).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let api_of = |server: &Binary| {
        Client::with_http_client(&server.base, http.clone())
            .unwrap()
            .with_account(&user, &org)
    };
    {
        let server = start();
        subscribe_with(&api_of(&server), &receiver, &url, None).await;
    }
    let acked_created = Arc::new(Mutex::new(Vec::<i64>::new()));
    let acked_deleted = Arc::new(Mutex::new(Vec::<i64>::new()));
    for round in 0..ROUNDS {
        // Some rounds the receiver fails, so retries are in flight too.
        receiver
            .mode
            .store(if round % 3 == 1 { FAIL } else { OK }, Ordering::SeqCst);
        let mut server = start();
        let mut tasks = Vec::new();
        for _ in 0..WORKERS {
            let api = api_of(&server);
            let (created, deleted) = (acked_created.clone(), acked_deleted.clone());
            tasks.push(tokio::spawn(async move {
                // Until the server is killed: an acknowledged change is a
                // typed answer; any failure ends the worker.
                loop {
                    let Ok(instance) = api.create_instance(&seed_instance("a", "r")).await else {
                        return;
                    };
                    let id = instance.id;
                    created.lock().unwrap().push(id);
                    if id % 2 == 0 {
                        match api.delete_instance(id).await {
                            Ok(()) => deleted.lock().unwrap().push(id),
                            Err(_) => return,
                        }
                    }
                }
            }));
        }
        let delay = rand::rng().random_range(50..300);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        for t in tasks {
            t.await.unwrap();
        }
    }
    receiver.mode.store(OK, Ordering::SeqCst);
    let server = start();
    // The outbox as committed, read through the store of the same file.
    let mut cfg = config_in(&data);
    cfg.database_url = None;
    let store = elements_server::startup::open_store(&cfg).await.unwrap();
    let org_id = store
        .authenticate(
            &elements_store::hash_secret(&user),
            &elements_store::hash_secret(&org),
        )
        .await
        .unwrap()
        .unwrap()
        .organization_id;
    let outbox = store.events(org_id, 1_000_000).await.unwrap();
    let created = acked_created.lock().unwrap().clone();
    let deleted = acked_deleted.lock().unwrap().clone();
    let of = |kind: &str| -> BTreeMap<i64, String> {
        outbox
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| {
                let v: Value = serde_json::from_str(&e.payload).unwrap();
                (v["data"]["instanceId"].as_i64().unwrap(), e.id.clone())
            })
            .collect()
    };
    let (created_events, deleted_events) = (of("instance.created"), of("instance.deleted"));
    // Every acknowledged change has its event.
    for id in &created {
        assert!(
            created_events.contains_key(id),
            "no instance.created for acked {id}"
        );
    }
    for id in &deleted {
        assert!(
            deleted_events.contains_key(id),
            "no instance.deleted for acked {id}"
        );
    }
    // An event exists only for a change that committed: a created instance
    // exists now unless its deletion's event is there too.
    for id in created_events.keys() {
        let exists = store.instance_any(*id).await.unwrap().is_some();
        assert!(
            exists != deleted_events.contains_key(id),
            "instance {id}: exists {exists}"
        );
    }
    // Every committed event is delivered at least once.
    let ids: std::collections::BTreeSet<String> = outbox.iter().map(|e| e.id.clone()).collect();
    until("every committed event delivered", || {
        let got: std::collections::BTreeSet<String> =
            receiver.got().into_iter().map(|r| r.id).collect();
        ids.is_subset(&got)
    })
    .await;
    let got = receiver.got();
    assert!(got.iter().all(|r| r.verified), "a signature did not verify");
    // Nothing delivered that is not in the outbox; duplicates share the id.
    let mut by_change: BTreeMap<(String, i64), std::collections::BTreeSet<String>> =
        BTreeMap::new();
    for r in &got {
        assert!(
            ids.contains(&r.id),
            "delivered but never committed: {:?}",
            r.body
        );
        by_change
            .entry((
                r.body["type"].as_str().unwrap().to_owned(),
                r.body["data"]["instanceId"].as_i64().unwrap(),
            ))
            .or_default()
            .insert(r.id.clone());
    }
    assert!(
        by_change.values().all(|s| s.len() == 1),
        "a change delivered under two ids"
    );
    eprintln!(
        "{ROUNDS} SIGKILL rounds: {} acked creates, {} acked deletes, {} events committed, \
         {} deliveries received ({} duplicates)",
        created.len(),
        deleted.len(),
        outbox.len(),
        got.len(),
        got.len() - ids.len(),
    );
    assert!(!created.is_empty() && !deleted.is_empty());
    drop(server);
}

/// Two replicas of the real binary on one PostgreSQL database share the
/// delivery of 10,000 events: each is delivered exactly once, and never by
/// both at the same time (the receiver records overlapping deliveries of
/// one webhook-id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_share_ten_thousand_deliveries() {
    const EVENTS: usize = 10_000;
    let pg = elements_testkit::pg::PgCluster::shared().expect("postgres");
    let db_url = pg.create_database("events_replicas").expect("database");
    let key = elements_store::Keyring::encode_key(&elements_store::Keyring::generate_key());
    let dir = data_dir();
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        "webhooks_allow_private = true\nwebhooks_poll_interval_ms = 20\nwebhooks_timeout_ms = 5000\n",
    )
    .unwrap();
    let (org, user) = ("org-events-replicas", "user-events-replicas");
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
    let a = replica();
    let b = replica();
    let (receiver, url) = Receiver::start(OK).await;
    let on_a = Client::new(&a.base).unwrap().with_account(user, org);
    let on_b = Client::new(&b.base).unwrap().with_account(user, org);
    subscribe_with(&on_a, &receiver, &url, None).await;

    let store = elements_store::connect(&db_url, elements_store::Keyring::parse(&key).unwrap())
        .await
        .unwrap();
    let org_id = store
        .authenticate(
            &elements_store::hash_secret(user),
            &elements_store::hash_secret(org),
        )
        .await
        .unwrap()
        .unwrap()
        .organization_id;
    // The instance write paths on PostgreSQL: create, disable, delete.
    let id = on_b
        .create_instance(&seed_instance("a", "r"))
        .await
        .unwrap()
        .id;
    assert!(on_b.disable_instance(id).await.unwrap().disabled);
    on_b.delete_instance(id).await.unwrap();
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..EVENTS).step_by(8) {
                store
                    .record_event(
                        org_id,
                        EventKind::ConnectFailed,
                        json!({ "element": "hubspot", "n": i }),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    until("every event delivered", || {
        receiver.got().len() >= EVENTS + 3
    })
    .await;
    let log = store.events(org_id, 100).await.unwrap();
    assert!(log
        .iter()
        .all(|e| e.deliveries.iter().all(|d| d.state == "delivered")));
    let got = receiver.got();
    let unique: std::collections::BTreeSet<&str> = got.iter().map(|r| r.id.as_str()).collect();
    let overlaps = receiver.overlaps.load(Ordering::SeqCst);
    eprintln!(
        "two replicas: {} deliveries of {EVENTS} events, {} unique, {overlaps} overlapping",
        got.len(),
        unique.len()
    );
    assert_eq!(overlaps, 0, "a delivery was sent by both replicas at once");
    assert_eq!(unique.len(), EVENTS + 3);
    assert_eq!(got.len(), EVENTS + 3, "each event delivered exactly once");
    let mut lifecycle: Vec<String> = types(&got)
        .into_iter()
        .filter(|t| t.starts_with("instance."))
        .collect();
    lifecycle.sort();
    assert_eq!(
        lifecycle,
        ["instance.created", "instance.deleted", "instance.disabled"]
    );
    assert!(got.iter().all(|r| r.verified));
    drop((a, b));
}
