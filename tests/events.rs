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

/// `POST /organizations/me/webhooks`: (status, body).
async fn create_webhook(server: &TestServer, account: &Account, body: Value) -> (u16, Value) {
    let r = server
        .client
        .post(server.url("/organizations/me/webhooks"))
        .header("Authorization", account.header())
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Subscribes the receiver; returns the webhook id.
async fn subscribe(
    server: &TestServer,
    receiver: &Receiver,
    url: &str,
    events: Option<Value>,
) -> i64 {
    let mut body = json!({ "url": url });
    if let Some(e) = events {
        body["events"] = e;
    }
    let (status, created) = create_webhook(server, &server.account, body).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(STANDARD.decode(&secret[6..]).unwrap().len(), 32);
    *receiver.secret.lock().unwrap() = Some(secret);
    created["id"].as_i64().unwrap()
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

async fn events(server: &TestServer) -> Vec<Value> {
    server
        .fetch::<Vec<Value>>(Method::GET, "/organizations/me/events?limit=500")
        .await
}

/// Polls the event log until `f` holds of it.
async fn until_events<F: Fn(&[Value]) -> bool>(
    server: &TestServer,
    what: &str,
    f: F,
) -> Vec<Value> {
    for _ in 0..3000 {
        let list = events(server).await;
        if f(&list) {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}: {:#}", json!(events(server).await));
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
    let (receiver, url) = Receiver::start(OK).await;
    let hook = subscribe(s, &receiver, &url, None).await;

    let listed: Vec<Value> = s.fetch(Method::GET, "/organizations/me/webhooks").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], hook);
    assert_eq!(listed[0]["events"], json!(["*"]));
    assert!(
        listed[0].get("secret").is_none(),
        "the secret is shown once: {listed:?}"
    );

    let (status, created) = s
        .post_instance(&s.account, &seed_instance_body("at", "rt"))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["health"]["state"], "active");
    assert_eq!(created["health"]["failures"], 0);
    for (method, state) in [(Method::DELETE, "disabled"), (Method::PUT, "active")] {
        let r = s
            .authed(method.clone(), &format!("/instances/{id}/enabled"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        let got: Value = s.fetch(Method::GET, &format!("/instances/{id}")).await;
        assert_eq!(got["health"]["state"], state);
        assert_eq!(got["disabled"], state == "disabled");
    }
    let r = s
        .authed(Method::DELETE, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

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
    assert_eq!(created_event.body["data"]["name"], created["name"]);

    // The event log shows them delivered; redelivery sends the same id again.
    let log = until_events(s, "all delivered", |l| {
        l.len() == 4 && l.iter().all(|e| e["deliveries"][0]["state"] == "delivered")
    })
    .await;
    let first = log.last().unwrap()["id"].as_str().unwrap().to_owned();
    let r = s
        .authed(
            Method::POST,
            &format!("/organizations/me/events/{first}/redeliver"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
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
    subscribe(s, &only_deleted, &url_a, Some(json!(["instance.deleted"]))).await;
    subscribe(s, &all_instance, &url_b, Some(json!(["instance.*"]))).await;
    let (_, created) = s
        .post_instance(&s.account, &seed_instance_body("a", "r"))
        .await;
    let id = created["id"].as_i64().unwrap();
    s.authed(Method::DELETE, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
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
        Some(json!([
            "instance.refresh_failed",
            "instance.recovered",
            "instance.invalid"
        ])),
    )
    .await;

    let (access, refresh) = fake.issue_tokens("test-client");
    let mut body = seed_instance_body(&access, &refresh);
    body["configuration"]["oauth.api.secret"] = json!("test-secret");
    let (status, created) = s.post_instance(&s.account, &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    let token = created["token"].as_str().unwrap().to_owned();

    // A transient failure: degraded, with the count and the error.
    expire(s.state.store.as_ref(), id).await;
    fake.fail_next(1, 500);
    let (status, _) = credentials(&s.client, &s.base, id, &token).await;
    assert_eq!(status, 502);
    let got: Value = s.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert_eq!(got["health"]["state"], "degraded", "{got}");
    assert_eq!(got["health"]["failures"], 1);
    assert!(
        got["health"]["lastError"].as_str().unwrap().contains("500"),
        "{got}"
    );
    assert_eq!(got["valid"], true);
    let degraded: Vec<Value> = s.fetch(Method::GET, "/instances?health=degraded").await;
    assert_eq!(degraded.len(), 1);
    let active: Vec<Value> = s.fetch(Method::GET, "/instances?health=active").await;
    assert!(active.is_empty());

    // The next refresh succeeds: recovered.
    let (status, _) = credentials(&s.client, &s.base, id, &token).await;
    assert_eq!(status, 200);
    let got: Value = s.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert_eq!(got["health"]["state"], "active", "{got}");
    assert_eq!(got["health"]["failures"], 0);

    // A dead grant: invalid.
    expire(s.state.store.as_ref(), id).await;
    fake.invalid_grant_next(1);
    let (status, _) = credentials(&s.client, &s.base, id, &token).await;
    assert_eq!(status, 409);
    let got: Value = s.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert_eq!(got["health"]["state"], "invalid", "{got}");
    assert_eq!(got["valid"], false);
    assert!(
        got["health"]["lastError"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{got}"
    );

    // A later check (the hook for a catalog `verify` request) recovers it.
    assert!(s
        .state
        .store
        .record_check(id, CheckOutcome::Ok)
        .await
        .unwrap());
    let got: Value = s.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert_eq!(got["health"]["state"], "active", "{got}");
    assert_eq!(got["valid"], true);
    assert!(s
        .state
        .store
        .record_check(id, CheckOutcome::Rejected("401 on the check".into()))
        .await
        .unwrap());
    let got: Value = s.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert_eq!(got["health"]["state"], "invalid");
    assert_eq!(got["invalidReason"], "401 on the check");

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
    s.post_instance(&s.account, &seed_instance_body("a", "r"))
        .await;
    // Schedule of two retries: three attempts, then dead.
    let log = until_events(s, "dead letter", |l| {
        l.first()
            .is_some_and(|e| e["deliveries"][0]["state"] == "dead")
    })
    .await;
    let d = &log[0]["deliveries"][0];
    assert_eq!(d["attempts"], 3, "{d}");
    assert_eq!(d["lastStatus"], 500);
    assert_eq!(d["lastError"], "the endpoint answered 500");
    let got = receiver.got();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|r| r.id == got[0].id && r.verified));

    // Redelivery revives it: three more attempts with the same id.
    receiver.mode.store(OK, Ordering::SeqCst);
    let id = log[0]["id"].as_str().unwrap();
    let r = s
        .authed(
            Method::POST,
            &format!("/organizations/me/events/{id}/redeliver"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["deliveriesReset"], 1);
    let log = until_events(s, "delivered", |l| {
        l[0]["deliveries"][0]["state"] == "delivered"
    })
    .await;
    assert_eq!(log[0]["deliveries"][0]["attempts"], 1);
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
    s.post_instance(&s.account, &seed_instance_body("a", "r"))
        .await;
    let log = until_events(s, "dead letter", |l| {
        l.first()
            .is_some_and(|e| e["deliveries"][0]["state"] == "dead")
    })
    .await;
    let d = &log[0]["deliveries"][0];
    assert_eq!(d["attempts"], 2, "{d}");
    assert_eq!(d["lastError"], "timed out after 300 ms");
    assert!(d.get("lastStatus").is_none());

    // 410: the delivery dies at once and the endpoint is disabled.
    let hooks: Vec<Value> = s.fetch(Method::GET, "/organizations/me/webhooks").await;
    let r = s
        .authed(
            Method::DELETE,
            &format!("/organizations/me/webhooks/{}", hooks[0]["id"]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (gone, url) = Receiver::start(GONE).await;
    let hook = subscribe(s, &gone, &url, None).await;
    s.post_instance(&s.account, &seed_instance_body("b", "r"))
        .await;
    let log = until_events(s, "gone", |l| {
        l[0]["deliveries"]
            .get(0)
            .is_some_and(|d| d["state"] == "dead")
    })
    .await;
    let d = &log[0]["deliveries"][0];
    assert_eq!(d["webhookId"], hook);
    assert_eq!(d["attempts"], 1);
    assert_eq!(d["lastStatus"], 410);
    let hooks: Vec<Value> = s.fetch(Method::GET, "/organizations/me/webhooks").await;
    assert_eq!(hooks[0]["enabled"], false);
    assert_eq!(hooks[0]["disabledReason"], "the endpoint answered 410 Gone");
    // A later event is not delivered to a disabled endpoint: once the log
    // shows it (fanned out or not), it has no delivery.
    s.post_instance(&s.account, &seed_instance_body("c", "r"))
        .await;
    let log = until_events(s, "third", |l| l.len() == 3).await;
    assert_eq!(log[0]["deliveries"], json!([]));
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
    let (status, body) = create_webhook(s, &s.account, json!({ "url": garbage_url })).await;
    assert_eq!(status, 201, "{body}");
    s.post_instance(&s.account, &seed_instance_body("a", "r"))
        .await;
    let log = until_events(s, "both settled", |l| {
        l.first().is_some_and(|e| {
            let d = e["deliveries"].as_array().unwrap();
            d.len() == 2 && d.iter().all(|d| d["state"] != "pending")
        })
    })
    .await;
    let states: BTreeMap<i64, String> = log[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["webhookId"].as_i64().unwrap(),
                d["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let mut values: Vec<&String> = states.values().collect();
    values.sort();
    assert_eq!(values, ["dead", "delivered"]);
    // The server still answers.
    let r = s.authed(Method::GET, "/instances").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn private_addresses_are_refused_unless_allowed() {
    let env = start(fast(false), None).await;
    let s = &env.server;
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
        let (status, body) = create_webhook(s, &s.account, json!({ "url": url })).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{url}: {body}"
        );
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
    s.post_instance(&s.account, &seed_instance_body("a", "r"))
        .await;
    let log = until_events(s, "both dead", |l| {
        l.first().is_some_and(|e| {
            let d = e["deliveries"].as_array().unwrap();
            d.len() == 2 && d.iter().all(|d| d["state"] == "dead")
        })
    })
    .await;
    let errors: Vec<&str> = log[0]["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["lastError"].as_str().unwrap())
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
    s.post_instance(&s.account, &seed_instance_body("a", "r"))
        .await;
    let log = until_events(s, "one event", |l| l.len() == 1).await;
    let event = log[0]["id"].as_str().unwrap().to_owned();

    let other = s.other_account("rival").await;
    let as_other = |m: Method, p: &str| {
        s.client
            .request(m, s.url(p))
            .header("Authorization", other.header())
    };
    let r = as_other(
        Method::DELETE,
        &format!("/organizations/me/webhooks/{hook}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], format!("no webhook with id {hook}"));
    let r = as_other(
        Method::POST,
        &format!("/organizations/me/events/{event}/redeliver"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 404);
    let hooks: Vec<Value> = as_other(Method::GET, "/organizations/me/webhooks")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(hooks.is_empty());
    let events: Vec<Value> = as_other(Method::GET, "/organizations/me/events")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(events.is_empty());
    // Still there for its owner.
    let hooks: Vec<Value> = s.fetch(Method::GET, "/organizations/me/webhooks").await;
    assert_eq!(hooks.len(), 1);
    let _ = env.stop.send(true);
    env.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocation_and_connect_events_can_be_recorded() {
    let env = start(fast(true), None).await;
    let s = &env.server;
    let (receiver, url) = Receiver::start(OK).await;
    subscribe(
        s,
        &receiver,
        &url,
        Some(json!(["instance.revoked", "connect.*"])),
    )
    .await;
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
    let header = format!("User {user}, Organization {org}");
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
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    {
        let server = start();
        let r = client
            .post(server.url("/organizations/me/webhooks"))
            .header("Authorization", &header)
            .json(&json!({ "url": url }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let created: Value = r.json().await.unwrap();
        *receiver.secret.lock().unwrap() = Some(created["secret"].as_str().unwrap().to_owned());
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
            let (client, header, base) = (client.clone(), header.clone(), server.base.clone());
            let (created, deleted) = (acked_created.clone(), acked_deleted.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let r = client
                        .post(format!("{base}/elements/api-v2/instances"))
                        .header("Authorization", &header)
                        .json(&seed_instance_body("a", "r"))
                        .send()
                        .await;
                    let Ok(r) = r else { return };
                    let Ok(body) = r.json::<Value>().await else {
                        return;
                    };
                    let Some(id) = body["id"].as_i64() else {
                        return;
                    };
                    created.lock().unwrap().push(id);
                    if id % 2 == 0 {
                        let r = client
                            .delete(format!("{base}/elements/api-v2/instances/{id}"))
                            .header("Authorization", &header)
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 200 => deleted.lock().unwrap().push(id),
                            _ => return,
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
    let client = reqwest::Client::new();
    let r = client
        .post(a.url("/organizations/me/webhooks"))
        .header("Authorization", format!("User {user}, Organization {org}"))
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    *receiver.secret.lock().unwrap() = Some(created["secret"].as_str().unwrap().to_owned());

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
    let auth = format!("User {user}, Organization {org}");
    let made: Value = client
        .post(b.url("/instances"))
        .header("Authorization", &auth)
        .json(&seed_instance_body("a", "r"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = made["id"].as_i64().unwrap();
    for (method, path) in [
        (Method::DELETE, format!("/instances/{id}/enabled")),
        (Method::DELETE, format!("/instances/{id}")),
    ] {
        let r = client
            .request(method, b.url(&path))
            .header("Authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
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
