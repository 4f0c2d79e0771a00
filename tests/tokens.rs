//! The OAuth token lifecycle against the fake provider (real HTTP on
//! 127.0.0.1): code exchange, refresh storms, rotation with reuse
//! detection and provider failures. Secrets in logs and databases:
//! tests/secrets.rs.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use elements_client::{
    CreateInstance, Credentials, Error, ListInstances, OAuthUrlRequest, ProviderData,
};
use elements_core::OAuthOverride;
use elements_testkit::provider::FakeProvider;
use serde_json::json;

/// Every log line of this test binary, at debug level.
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || Capture(sink.clone()))
            .init();
        buffer
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A server whose HubSpot endpoints point at the fake provider.
async fn start(fake: &FakeProvider) -> (tempfile::TempDir, TestServer) {
    captured_logs();
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.overrides.insert(
        "hubspot".into(),
        OAuthOverride {
            authorization_url: Some(fake.legacy_authenticate_url()),
            token_url: Some(fake.token_url()),
            refresh_url: Some(fake.legacy_refresh_url()),
            endpoints: [("current_authorization_url".to_owned(), fake.authorize_url())].into(),
        },
    );
    let server = TestServer::start(config).await;
    (dir, server)
}

/// Provisions a HubSpot instance from tokens the fake issued; returns
/// (id, instance token, access token).
async fn provision(server: &TestServer, fake: &FakeProvider, flow: &str) -> (i64, String, String) {
    let (access, refresh) = fake.issue_tokens("test-client");
    let body = seed_instance(&access, &refresh)
        .configuration("oauth.api.secret", "test-secret")
        .configuration("oauth.flow", flow);
    let created = server.api().create_instance(&body).await.unwrap();
    (created.id, created.token.unwrap().into_inner(), access)
}

async fn expire(server: &TestServer, id: i64) {
    common::expire(server.state.store.as_ref(), id).await;
}

async fn storm(
    server: &TestServer,
    id: i64,
    token: &str,
    n: usize,
) -> Vec<Result<Credentials, Error>> {
    let client = server.anonymous().with_element(token);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.credentials(id).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// A HubSpot current-flow instance of an authorization code.
fn by_code(code: &str, callback: &str, scope: &str, name: &str) -> CreateInstance {
    CreateInstance::new("hubspot", name)
        .provider_data(ProviderData::code(code))
        .configuration("oauth.api.key", "test-client")
        .configuration("oauth.api.secret", "test-secret")
        .configuration("oauth.callback.url", callback)
        .configuration("oauth.scope", scope)
        .configuration("oauth.flow", "current")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn code_exchange_end_to_end() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let api = server.api();
    let callback = "https://app.test/callback";
    // 1. The authorization URL of the current flow.
    let answer = server
        .anonymous()
        .oauth_url(
            "hubspot",
            &OAuthUrlRequest::new()
                .api_key("test-client")
                .scope("contacts oauth")
                .callback_url(callback)
                .state("st-1")
                .param("oauth.flow", "current"),
        )
        .await
        .unwrap();
    let url = answer.oauth_url.as_str();
    assert!(url.starts_with(&fake.authorize_url()), "{url}");
    // 2. The user authorizes: the provider redirects to the callback with a
    //    code (raw: the fake provider, not our API).
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_redirects.get(url).send().await.unwrap();
    assert_eq!(redirect.status(), 302);
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(callback) && location.contains("state=st-1"),
        "{location}"
    );
    let code = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_owned();
    // 3. POST /instances with the code.
    let body = by_code(&code, callback, "contacts oauth", "via code");
    let created = api.create_instance(&body).await.unwrap();
    assert_eq!(fake.code_exchanges(), 1);
    // 4. The credentials work at the provider.
    let creds = element_credentials(
        &server,
        created.id,
        created.token.as_ref().unwrap().expose(),
    )
    .await
    .unwrap();
    // Raw: the fake provider's API, not ours.
    let me = server
        .client
        .get(fake.me_url())
        .bearer_auth(access_token(&creds))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // A used code is refused with the provider's sanitized message.
    let err = refused(api.create_instance(&body).await);
    assert_eq!(err.status, 400, "{err}");
    assert!(
        err.body.as_ref().unwrap().provider_message.is_some(),
        "{err:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_of_reads_causes_exactly_one_refresh() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token, old_access) = provision(&server, &fake, "legacy").await;
    expire(&server, id).await;
    let results = storm(&server, id, &token, 200).await;
    assert_eq!(fake.refresh_calls(), 1, "exactly one provider refresh");
    let first = access_token(results[0].as_ref().unwrap()).to_owned();
    assert_ne!(first, old_access);
    for result in &results {
        let creds = result.as_ref().unwrap();
        assert_eq!(
            access_token(creds),
            first,
            "every caller gets the same new token"
        );
    }
    assert!(fake.is_access_token_valid(&first));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_storms_with_rotation_never_trip_reuse_detection() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token, _) = provision(&server, &fake, "current").await;
    for round in 1..=50u64 {
        expire(&server, id).await;
        let results = storm(&server, id, &token, 20).await;
        assert!(
            results.iter().all(Result::is_ok),
            "round {round}: {results:?}"
        );
        assert_eq!(fake.refresh_calls(), round, "round {round}");
    }
    assert_eq!(fake.revoked_families(), 0);
    let creds = element_credentials(&server, id, &token).await.unwrap();
    assert!(fake.is_access_token_valid(access_token(&creds)));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_failures_transient_and_terminal() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let api = server.api();
    let (id, token, _) = provision(&server, &fake, "legacy").await;

    // A 500 keeps the instance valid; a later read succeeds.
    expire(&server, id).await;
    fake.fail_next(1, 500);
    let err = refused(element_credentials(&server, id, &token).await);
    assert_eq!(err.status, 502, "{err}");
    assert!(api.instance(id).await.unwrap().valid);
    element_credentials(&server, id, &token).await.unwrap();

    // invalid_grant marks it invalid with a clear error.
    expire(&server, id).await;
    fake.invalid_grant_next(1);
    let err = refused(element_credentials(&server, id, &token).await);
    assert_eq!(err.status, 409, "{err}");
    assert!(err.message().contains("invalid_grant"), "{err}");
    let got = api.instance(id).await.unwrap();
    assert!(!got.valid);
    assert!(got.invalid_reason.unwrap().contains("invalid_grant"));
    let err = refused(element_credentials(&server, id, &token).await);
    assert_eq!(
        err.status, 409,
        "stays invalid without calling the provider again"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_expires_in_and_missing_refresh_tokens() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token, _) = provision(&server, &fake, "legacy").await;
    for hostile in [
        json!("soon"),
        json!(-5),
        json!(0),
        json!(1e300),
        json!(null),
    ] {
        fake.set_expires_in(Some(hostile.clone()));
        expire(&server, id).await;
        let creds = element_credentials(&server, id, &token)
            .await
            .unwrap_or_else(|e| panic!("{hostile}: {e}"));
        let expires_in = creds.expires_in.unwrap();
        assert!(
            (300..=365 * 24 * 3600).contains(&expires_in),
            "{hostile}: {expires_in}"
        );
    }
    // No refresh token in the answer: the old one is kept and still works.
    fake.set_expires_in(None);
    fake.set_omit_refresh_token(true);
    for _ in 0..3 {
        expire(&server, id).await;
        element_credentials(&server, id, &token).await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_provider_is_a_502_and_changes_nothing() {
    captured_logs();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.overrides.insert(
        "hubspot".into(),
        OAuthOverride {
            token_url: Some(format!("http://127.0.0.1:{port}/oauth/v1/token")),
            ..Default::default()
        },
    );
    let server = TestServer::start(config).await;
    let api = server.api();
    let body = by_code(
        "some-code",
        "https://app.test/cb",
        "contacts",
        "unreachable",
    );
    let err = refused(api.create_instance(&body).await);
    assert_eq!(err.status, 502, "{err}");
    assert!(err.message().contains("provider"), "{err}");
    let listed = api.instances(&ListInstances::new()).await.unwrap();
    assert!(listed.items.is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_background_refresher_refreshes_expiring_tokens() {
    let fake = FakeProvider::start().await;
    captured_logs();
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.overrides.insert(
        "hubspot".into(),
        OAuthOverride {
            token_url: Some(fake.token_url()),
            refresh_url: Some(fake.legacy_refresh_url()),
            ..Default::default()
        },
    );
    config.refresh_interval = std::time::Duration::from_millis(100);
    let server = TestServer::start(config.clone()).await;
    let (id, _, _) = provision(&server, &fake, "legacy").await;
    expire(&server, id).await;
    // Run the background task as `elements serve` does, and wait (bounded)
    // until it has refreshed; nobody reads the credentials meanwhile.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        server
            .state
            .tokens
            .clone()
            .run_background(config.refresh_interval, stopped),
    );
    for _ in 0..300 {
        if fake.refresh_calls() >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.send(true).unwrap();
    task.await.unwrap();
    assert_eq!(fake.refresh_calls(), 1);
    let got = server.state.store.instance_any(id).await.unwrap().unwrap();
    assert!(got.tokens.expires_at.unwrap() > elements_server::tokens::now_seconds() + 600);
    assert!(fake.is_access_token_valid(got.tokens.access_token.unwrap().expose()));
    server.stop().await;
}
