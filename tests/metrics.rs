//! Issue 18 item 3: the webhook delivery and API proxy series of `/metrics`
//! move as deliveries and proxied calls happen, by outcome, and no label
//! carries a URL, an instance id or a secret.
//!
//! The registry is the process's: each test here moves only its own series
//! (webhooks or proxy), and asserts differences between two scrapes.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use elements_client::{CreateInstance, CreateWebhook};
use elements_server::proxy::ProxyFileSettings;
use elements_server::webhooks::Settings;
use elements_testkit::api::{FakeApi, Fault};
use reqwest::Method;
use tokio::net::TcpListener;

/// `GET /metrics` as text.
async fn scrape(server: &TestServer) -> String {
    server.anonymous().metrics().await.unwrap()
}

/// The value of one sample (`name{labels}`, labels as printed), 0 when the
/// series does not exist yet.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Scrapes until `f` holds of the text (a guard against hanging, not a
/// time assertion); returns the text.
async fn until_scraped<F: Fn(&str) -> bool>(server: &TestServer, what: &str, f: F) -> String {
    for _ in 0..1000 {
        let text = scrape(server).await;
        if f(&text) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// A webhook receiver on 127.0.0.1 that answers every POST with `status`;
/// returns its URL and what it received.
async fn receiver(status: u16) -> (String, Arc<Mutex<u32>>) {
    let got = Arc::new(Mutex::new(0u32));
    let counter = got.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hooks?token=hook-query-secret",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

const DELIVERED: &str = r#"elements_webhook_deliveries_total{outcome="delivered"}"#;
const RETRYING: &str = r#"elements_webhook_deliveries_total{outcome="retrying"}"#;
const DEAD: &str = r#"elements_webhook_deliveries_total{outcome="dead"}"#;
const DISABLED: &str = r#"elements_webhook_deliveries_total{outcome="disabled"}"#;
/// The webhook creates answered 201 (the typed client takes any 2xx).
const WEBHOOKS_CREATED: &str = r#"elements_http_requests_total{method="POST",route="/elements/api-v2/organizations/me/webhooks",status="201"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhook_deliveries_are_counted_by_outcome() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    let settings = Settings {
        allow_private: true,
        // One retry: a failing receiver is retried once, then dead.
        retry_schedule: vec![Duration::from_millis(5)],
        timeout: Duration::from_millis(2000),
        poll_interval: Duration::from_millis(10),
        concurrency: 8,
        jitter: 0.0,
    };
    config.webhooks = settings.clone();
    let server = TestServer::start(config).await;
    let (_stop, rx) = tokio::sync::watch::channel(false);
    elements_server::webhooks::spawn(server.state.store.clone(), settings, rx);

    let before = scrape(&server).await;
    // Every outcome's series exists from the start.
    for series in [DELIVERED, RETRYING, DEAD, DISABLED] {
        assert!(before.contains(&format!("{series} ")), "{series}");
    }
    let (ok_url, ok_got) = receiver(204).await;
    let (fail_url, fail_got) = receiver(500).await;
    let (gone_url, gone_got) = receiver(410).await;
    let api = server.api();
    for url in [&ok_url, &fail_url, &gone_url] {
        let webhook = api
            .create_webhook(&CreateWebhook::new(url.as_str()).events(["instance.created"]))
            .await
            .unwrap();
        assert_eq!(
            (webhook.url.as_str(), webhook.events, webhook.enabled),
            (url.as_str(), vec!["instance.created".to_owned()], true)
        );
    }
    // One event, three endpoints.
    let created = api
        .create_instance(&seed_instance("at-secret-1", "rt-secret-1"))
        .await
        .unwrap();
    let id = created.id;
    let token = created.token.unwrap().into_inner();

    let delta = |text: &str, series: &str| sample(text, series) - sample(&before, series);
    assert_eq!(delta(&scrape(&server).await, WEBHOOKS_CREATED), 3.0);
    let after = until_scraped(&server, "a dead delivery", |t| delta(t, DEAD) >= 1.0).await;
    assert_eq!(delta(&after, DELIVERED), 1.0);
    assert_eq!(delta(&after, DISABLED), 1.0);
    assert_eq!(delta(&after, RETRYING), 1.0);
    assert_eq!(delta(&after, DEAD), 1.0);
    assert_eq!(*ok_got.lock().unwrap(), 1);
    assert_eq!(*gone_got.lock().unwrap(), 1);
    assert_eq!(*fail_got.lock().unwrap(), 2);
    // The latency histogram counts the same attempts.
    let count = |outcome: &str| {
        format!(r#"elements_webhook_delivery_duration_seconds_count{{outcome="{outcome}"}}"#)
    };
    assert_eq!(delta(&after, &count("delivered")), 1.0);
    assert_eq!(delta(&after, &count("retrying")), 1.0);
    assert_eq!(delta(&after, &count("dead")), 1.0);
    assert_eq!(delta(&after, &count("disabled")), 1.0);
    // No label names an endpoint, an instance, a token or a query.
    for secret in [
        "127.0.0.1",
        "hook-query-secret",
        "at-secret-1",
        "rt-secret-1",
        token.as_str(),
        &id.to_string(),
    ] {
        assert!(!after.contains(secret), "/metrics shows {secret}");
    }
}

/// Creates an instance; its id.
async fn create(server: &TestServer, body: &CreateInstance) -> i64 {
    server.api().create_instance(body).await.unwrap().id
}

fn proxied(element: &str, outcome: &str) -> String {
    format!(r#"elements_proxy_requests_total{{element="{element}",outcome="{outcome}"}}"#)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn proxy_upstream_outcomes_are_counted_by_element_and_outcome() {
    let fake = FakeApi::start().await;
    // A port nothing listens on: connecting is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config
        .api_base_urls
        .insert("sendgrid".into(), fake.base_url());
    config
        .api_base_urls
        .insert("trello".into(), format!("http://127.0.0.1:{closed}"));
    config.proxy.apply(&ProxyFileSettings {
        backoff_ms: Some(1),
        timeout_ms: Some(300),
        ..Default::default()
    });
    let server = TestServer::start(config).await;
    let sendgrid = create(
        &server,
        &CreateInstance::new("sendgrid", "mail").configuration("api.key", "SG.proxy-secret-key"),
    )
    .await;
    let trello = create(
        &server,
        &CreateInstance::new("trello", "boards")
            .configuration("api.key", "tk-secret")
            .configuration("api.token", "tt-secret"),
    )
    .await;
    let api = server.api();
    let call = |method: Method, instance: i64, path: &str| {
        let api = api.clone();
        let path = path.to_owned();
        async move {
            let response = api.proxy(instance, method, &path).await.unwrap();
            response.status().as_u16()
        }
    };
    let before = scrape(&server).await;

    let mail = "v3/mail?api_key=query-secret";
    assert_eq!(call(Method::GET, sendgrid, mail).await, 200);
    // A 503, retried, then a 200.
    fake.push_faults(&[Fault::Status(503, None)]);
    assert_eq!(call(Method::GET, sendgrid, mail).await, 200);
    fake.push_faults(&[Fault::Status(307, None)]);
    assert_eq!(call(Method::GET, sendgrid, mail).await, 307);
    fake.push_faults(&[Fault::Status(404, None)]);
    assert_eq!(call(Method::GET, sendgrid, mail).await, 404);
    // Three 500s: two retries, then the last answer goes back.
    fake.push_faults(&[Fault::Status(500, None); 3]);
    assert_eq!(call(Method::GET, sendgrid, mail).await, 500);
    assert_eq!(call(Method::POST, sendgrid, "hang").await, 504);
    assert_eq!(call(Method::POST, trello, "1/boards").await, 502);

    let after = scrape(&server).await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta(&proxied("sendgrid", "2xx")), 2.0);
    assert_eq!(delta(&proxied("sendgrid", "3xx")), 1.0);
    assert_eq!(delta(&proxied("sendgrid", "4xx")), 1.0);
    assert_eq!(delta(&proxied("sendgrid", "5xx")), 1.0);
    assert_eq!(delta(&proxied("sendgrid", "timeout")), 1.0);
    assert_eq!(delta(&proxied("trello", "connect")), 1.0);
    assert_eq!(
        delta(r#"elements_proxy_retries_total{element="sendgrid"}"#),
        3.0
    );
    assert_eq!(
        delta(r#"elements_proxy_request_duration_seconds_count{element="sendgrid",outcome="2xx"}"#),
        2.0
    );
    assert_eq!(
        delta(
            r#"elements_proxy_request_duration_seconds_count{element="trello",outcome="connect"}"#
        ),
        1.0
    );
    for secret in [
        "127.0.0.1",
        "query-secret",
        "proxy-secret-key",
        "tk-secret",
        "tt-secret",
        "v3/mail",
        &sendgrid.to_string(),
        &trello.to_string(),
    ] {
        assert!(!after.contains(secret), "/metrics shows {secret}");
    }
}
