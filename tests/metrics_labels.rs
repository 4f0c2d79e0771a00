//! Metric labels stay bounded (issue 18 item 3, metrics): a provider call for an
//! organization-private element is counted under `element="private"`, never
//! under the element's own key (tenant input, unbounded), while a catalog
//! element keeps its key. The private element's token endpoint is the fake
//! provider's (crates/testkit).
//!
//! A private element's URLs must be https on a public host name, and the
//! fake provider is plain HTTP on 127.0.0.1: the server under test runs in
//! this process with the production transport (`HttpTransport`, wrapped by
//! the token manager's metering as always) behind one shim that sends the
//! private element's token URL to the fake provider's token endpoint,
//! standing in for DNS and TLS. Everything else is the real server.

mod common;

use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use elements_core::{OAuthOverride, ProviderRequest, ProviderResponse, Transport, TransportError};
use elements_server::provider::HttpTransport;
use elements_server::startup;
use elements_testkit::provider::FakeProvider;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// The private element's key: it must appear in no metric.
const PRIVATE_KEY: &str = "acme-machines-7f3a";
/// Its token endpoint, as the organization declared it.
const PRIVATE_TOKEN_URL: &str = "https://login.acme-machines.example/oauth/token";

/// The production transport, with the private element's token URL sent to
/// the fake provider instead.
struct ToFake {
    inner: HttpTransport,
    fake_token_url: String,
}

#[async_trait]
impl Transport for ToFake {
    async fn send(&self, request: &ProviderRequest) -> Result<ProviderResponse, TransportError> {
        if request.url == PRIVATE_TOKEN_URL {
            let mut request = request.clone();
            request.url = self.fake_token_url.clone();
            return self.inner.send(&request).await;
        }
        self.inner.send(request).await
    }
}

/// An organization-private OAuth 2.0 element, as a client sends it.
fn private_element() -> Value {
    json!({
        "key": PRIVATE_KEY,
        "name": "Acme Machines",
        "description": "Acme's API",
        "image": "elements/provider_acme.png",
        "hub": "crm",
        "authentication": "oauth2",
        "existing_account_description": "Use your Acme account",
        "config_description": "Register an app with Acme",
        "api_base_url": "https://api.acme-machines.example/v1",
        "oauth": {
            "authorization_url": "https://login.acme-machines.example/oauth/authorize",
            "token_url": PRIVATE_TOKEN_URL
        },
        "configuration": [
            { "key": "oauth.api.key", "name": "Client ID" },
            { "key": "oauth.api.secret", "name": "Client secret", "secret": true },
            { "key": "oauth.callback.url", "name": "Callback URL" }
        ]
    })
}

/// The `elements_provider_requests_total` lines of a scrape.
fn provider_series(scrape: &str) -> Vec<&str> {
    scrape
        .lines()
        .filter(|l| l.starts_with("elements_provider_requests_total{"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_calls_of_a_private_element_are_labelled_private() {
    let fake = FakeProvider::start().await;
    let dir = data_dir();
    let mut config = config_in(dir.path());
    // The catalog's client credentials element, at the fake provider too.
    config.overrides.insert(
        "auth0-management".into(),
        OAuthOverride {
            token_url: Some(fake.token_url()),
            ..Default::default()
        },
    );
    let registry = startup::registry(&config).expect("catalog");
    let store = startup::open_store(&config).await.expect("store");
    let account = startup::create_account(store.as_ref(), "acme", "dev@acme.test", "Ada", "L")
        .await
        .expect("account");
    let auth = format!(
        "User {}, Organization {}",
        account.user.secret, account.organization.secret
    );
    let state = startup::state_with_transport(
        &config,
        registry,
        store.clone(),
        Arc::new(ToFake {
            inner: HttpTransport::new(config.provider_timeout),
            fake_token_url: fake.token_url(),
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(elements_server::serve(listener, state, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{base}/elements/api-v2{path}");

    let r = client
        .post(url("/elements"))
        .header("Authorization", &auth)
        .json(&private_element())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // An instance of it whose access token has expired: reading its
    // credentials refreshes it, one provider call.
    let (access, refresh) = fake.issue_tokens("test-client");
    let r = client
        .post(url("/instances"))
        .header("Authorization", &auth)
        .json(&json!({
            "element": { "key": PRIVATE_KEY },
            "name": "machines",
            "providerData": { "access_token": access, "refresh_token": refresh, "expires_in": 3600 },
            "configuration": {
                "oauth.api.key": "test-client",
                "oauth.api.secret": "test-secret",
                "oauth.callback.url": "https://app.example/cb"
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_i64().unwrap();
    expire(store.as_ref(), id).await;
    let (status, read) = credentials(&client, &base, id, created["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(fake.refresh_calls(), 1);
    assert_ne!(read["accessToken"], access.as_str());

    // A catalog element's call keeps its key: a client credentials
    // instance obtains its token at creation.
    let r = client
        .post(url("/instances"))
        .header("Authorization", &auth)
        .json(&json!({
            "element": { "key": "auth0-management" },
            "name": "auth0",
            "configuration": {
                "tenant": "acme",
                "oauth.api.key": "test-client",
                "oauth.api.secret": "test-secret"
            },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(fake.client_credentials_grants(), 1);

    let scrape = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = provider_series(&scrape);
    assert!(
        series.contains(&r#"elements_provider_requests_total{element="private",outcome="ok"} 1"#),
        "{series:#?}"
    );
    assert!(
        series.contains(
            &r#"elements_provider_requests_total{element="auth0-management",outcome="ok"} 1"#
        ),
        "{series:#?}"
    );
    assert_eq!(series.len(), 2, "{series:#?}");
    assert!(
        !scrape.contains(PRIVATE_KEY),
        "a series carries the private key: {:?}",
        scrape
            .lines()
            .filter(|l| l.contains(PRIVATE_KEY))
            .collect::<Vec<_>>()
    );
    assert!(scrape.lines().any(|l| l.starts_with(
        r#"elements_provider_request_duration_seconds_count{element="private",outcome="ok"} 1"#
    )));

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
