//! Refresh safety against the fake provider (real HTTP on 127.0.0.1, real
//! SQLite): a refresh survives the client that started it, callers share
//! one provider call and back off together, a still-valid token is served,
//! one organization's broken instances do not starve another's, a panic
//! poisons nothing, hostile token answers are refused or normalised.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use elements_client::{Client, Credentials, Error, ListInstances, ProviderData};
use elements_core::{
    Configuration, OAuthOverride, ProviderRequest, ProviderResponse, Transport, TransportError,
};
use elements_server::provider::HttpTransport;
use elements_server::tokens::{now_seconds, TokenManager};
use elements_store::{hash_secret, NewInstance, RefreshDecision, Store, Tokens};
use elements_testkit::provider::FakeProvider;
use serde_json::json;

/// A server whose HubSpot legacy endpoints point at the fake provider and
/// whose current-flow token endpoint is `token_url` (the fake's by default).
async fn start_with(fake: &FakeProvider, token_url: String) -> (tempfile::TempDir, TestServer) {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.overrides.insert(
        "hubspot".into(),
        OAuthOverride {
            authorization_url: Some(fake.legacy_authenticate_url()),
            token_url: Some(token_url),
            refresh_url: Some(fake.legacy_refresh_url()),
            endpoints: [("current_authorization_url".to_owned(), fake.authorize_url())].into(),
        },
    );
    config.refresh_interval = Duration::from_millis(100);
    // Readers back off a minute after two failures in a row: long enough
    // that no test depends on how fast it runs.
    config.policy.backoff_base_ms = 30_000;
    let server = TestServer::start(config).await;
    (dir, server)
}

async fn start(fake: &FakeProvider) -> (tempfile::TempDir, TestServer) {
    start_with(fake, fake.token_url()).await
}

/// A legacy-flow HubSpot instance from tokens the fake issued, with the
/// given `expires_in`: (id, instance token, access token).
async fn provision(
    server: &TestServer,
    fake: &FakeProvider,
    expires_in: &str,
) -> (i64, String, String) {
    let (access, refresh) = fake.issue_tokens("test-client");
    let body = seed_instance(&access, &refresh)
        .configuration("oauth.api.secret", "test-secret")
        .provider_data(
            ProviderData::tokens(&access, &refresh)
                .apikey("test-client")
                .expires_in(expires_in),
        );
    let created = server.api().create_instance(&body).await.unwrap();
    (created.id, created.token.unwrap().into_inner(), access)
}

/// Sets the stored expiry to now + `seconds`, keeping the tokens.
async fn expire_in(store: &dyn Store, id: i64, seconds: i64) {
    let job: elements_store::RefreshJob<'_> = Box::new(move |current| {
        Box::pin(async move {
            RefreshDecision::Update(Tokens {
                expires_at: Some(now_seconds() + seconds),
                ..current.tokens
            })
        })
    });
    store.refresh_locked(id, 60, job).await.unwrap().unwrap();
}

/// The status of a credentials read: 200, or the refusal's.
fn status(result: &Result<Credentials, Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(e) => e.status().map_or(0, |s| s.as_u16()),
    }
}

/// `n` concurrent credential reads.
async fn wave(
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

/// Polls `check` every 20 ms, at most `tries` times; whether it held.
async fn eventually<F, Fut>(tries: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A client of the server that gives up after 0.5 s, without credentials.
fn impatient(server: &TestServer) -> Client {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    Client::with_http_client(&server.base, http).unwrap()
}

/// Whether a call ended because the client gave up waiting.
fn is_timeout<T>(result: &Result<T, Error>) -> bool {
    matches!(result, Err(Error::Transport(e)) if e.is_timeout())
}

// ---------------------------------------------------------------------------
// Issue 12.1: a client that hangs up does not cost the grant.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_hanging_up_mid_refresh_does_not_lose_the_grant() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token, _) = provision(&server, &fake, "1800").await;
    let original = server.state.store.instance_any(id).await.unwrap().unwrap();
    let old_refresh = original.tokens.refresh_token.clone().unwrap();
    expire_in(server.state.store.as_ref(), id, -10).await;
    // The provider rotates, then takes 1 s to answer; the client gives up at 0.5 s.
    fake.set_latency_after_processing(Duration::from_secs(1));
    let gave_up = impatient(&server)
        .with_element(&token)
        .credentials(id)
        .await;
    assert!(is_timeout(&gave_up), "{gave_up:?}");
    let rotated = eventually(500, || async {
        !fake.is_refresh_token_valid(old_refresh.expose())
    })
    .await;
    assert!(rotated, "the provider rotated");
    // The refresh finishes anyway and stores the rotated refresh token.
    // A graceful shutdown would wait for it: so does the test.
    assert!(server.state.tokens.drain(Duration::from_secs(30)).await);
    let stored = server.state.store.instance_any(id).await.unwrap().unwrap();
    let new_refresh = stored.tokens.refresh_token.unwrap();
    assert_ne!(new_refresh, old_refresh);
    assert!(
        fake.is_refresh_token_valid(new_refresh.expose()),
        "the rotated refresh token was never stored"
    );
    // And the grant lives on: the next refresh works.
    fake.set_latency_after_processing(Duration::ZERO);
    expire_in(server.state.store.as_ref(), id, -10).await;
    let creds = element_credentials(&server, id, &token).await.unwrap();
    assert!(fake.is_access_token_valid(access_token(&creds)));
    assert_eq!(fake.revoked_families(), 0);
    assert_eq!(fake.refresh_calls(), 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_hanging_up_mid_code_exchange_still_gets_its_instance() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let callback = "https://app.test/callback";
    // Raw: the fake provider's authorize page, not our API.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = no_redirects
        .get(fake.authorize_url())
        .query(&[("client_id", "test-client"), ("redirect_uri", callback)])
        .send()
        .await
        .unwrap();
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let code = location.split_once("code=").unwrap().1.to_owned();
    fake.set_latency_after_processing(Duration::from_secs(1));
    let body = elements_client::CreateInstance::new("hubspot", "hung up")
        .provider_data(ProviderData::code(code))
        .configuration("oauth.api.key", "test-client")
        .configuration("oauth.api.secret", "test-secret")
        .configuration("oauth.callback.url", callback)
        .configuration("oauth.scope", "contacts")
        .configuration("oauth.flow", "current");
    let gave_up = impatient(&server)
        .with_account(
            &server.account.user_secret,
            &server.account.organization_secret,
        )
        .create_instance(&body)
        .await;
    assert!(is_timeout(&gave_up), "{gave_up:?}");
    // The exchanged code was not wasted: the instance exists, and its
    // owner reads its credentials with the account's secrets.
    let api = server.api();
    let found = eventually(500, || async {
        let listed = api.instances(&ListInstances::new()).await.unwrap();
        listed.items.iter().any(|i| i.name == "hung up")
    })
    .await;
    assert!(found, "the instance was never created");
    let listed = api.instances(&ListInstances::new()).await.unwrap().items;
    assert_eq!(listed.len(), 1);
    let creds = api.credentials(listed[0].id).await.unwrap();
    assert!(
        fake.is_access_token_valid(access_token(&creds)),
        "{creds:?}"
    );
    assert_eq!(fake.code_exchanges(), 1);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Issue 12.3: callers behind a failing provider share one call, then back off.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_behind_a_failing_provider_share_one_call_then_back_off() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token, old_access) = provision(&server, &fake, "1800").await;
    expire_in(server.state.store.as_ref(), id, -10).await;
    // 503 after a second, every time.
    fake.set_latency(Duration::from_secs(1));
    fake.fail_next(10_000, 503);

    // Eight callers, one provider call, one shared answer.
    let first = wave(&server, id, &token, 8).await;
    assert_eq!(
        fake.refresh_calls(),
        1,
        "one provider call for eight callers"
    );
    for result in first {
        let err = refused(result);
        assert_eq!(err.status, 502, "{err}");
        assert_eq!(err.message(), "provider error: it answered 503", "{err}");
    }
    // One failure earns one immediate retry (a blip is not an outage)...
    let second = wave(&server, id, &token, 8).await;
    assert_eq!(fake.refresh_calls(), 2);
    assert!(second.iter().all(|r| status(r) == 502), "{second:?}");
    // ...two in a row back off: fast, clear errors, no provider call.
    let third = wave(&server, id, &token, 8).await;
    assert_eq!(fake.refresh_calls(), 2, "no call while backing off");
    for result in third {
        let err = refused(result);
        assert_eq!(err.status, 502, "{err}");
        let message = err.message();
        assert!(
            message.contains("2 failed refreshes in a row")
                && message.contains("provider error: it answered 503")
                && message.contains("next attempt in"),
            "{message}"
        );
    }
    // A token that is still valid is served while backing off.
    expire_in(server.state.store.as_ref(), id, 60).await;
    let fourth = wave(&server, id, &token, 8).await;
    assert_eq!(fake.refresh_calls(), 2);
    for result in &fourth {
        assert_eq!(access_token(result.as_ref().unwrap()), old_access);
    }
    let got = server.api().instance(id).await.unwrap();
    assert!(got.valid, "transient failures keep it valid");
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Issue 12.4: a still-valid token is served.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_still_valid_token_without_refresh_token_is_served() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    // Only an access token, valid for 2 minutes (inside the 5-minute margin).
    let (access, _) = fake.issue_tokens("test-client");
    let only_access = ProviderData {
        access_token: Some(access.as_str().into()),
        ..ProviderData::default()
    };
    let body = seed_instance(&access, "")
        .provider_data(only_access.apikey("test-client").expires_in("120"));
    let created = server.api().create_instance(&body).await.unwrap();
    let id = created.id;
    let token = created.token.unwrap().into_inner();
    let creds = element_credentials(&server, id, &token).await.unwrap();
    assert_eq!(access_token(&creds), access);
    let left = creds.expires_in.unwrap();
    assert!((1..=120).contains(&left), "{left}");
    // Once it has expired, the answer says why.
    expire_in(server.state.store.as_ref(), id, -1).await;
    let err = refused(element_credentials(&server, id, &token).await);
    assert_eq!(err.status, 409, "{err}");
    assert_eq!(
        err.message(),
        "the access token has expired and the instance has no refresh token"
    );
    assert_eq!(fake.refresh_calls(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_still_valid_token_is_served_after_a_non_transient_refresh_error() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token, access) = provision(&server, &fake, "120").await;
    fake.fail_next(1, 400);
    let creds = element_credentials(&server, id, &token).await.unwrap();
    assert_eq!(access_token(&creds), access);
    assert_eq!(fake.refresh_calls(), 1);
    // The refusal is recorded: the instance needs provisioning again...
    let got = server.api().instance(id).await.unwrap();
    assert!(!got.valid, "{got:?}");
    let reason = got.invalid_reason.as_deref().unwrap();
    assert!(reason.contains("invalid_request"), "{reason}");
    // ...and its token is served, without another provider call, while it lasts.
    let creds = element_credentials(&server, id, &token).await.unwrap();
    assert_eq!(access_token(&creds), access);
    assert_eq!(fake.refresh_calls(), 1);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Issue 12.2: the background refresher is fair.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_broken_instances_of_one_org_do_not_starve_another() {
    let fake = FakeProvider::start().await;
    // The current flow's token endpoint: a port where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_dir, server) = start_with(&fake, format!("http://127.0.0.1:{dead}/token")).await;
    let store = server.state.store.clone();
    let org_a = elements_server::startup::create_account(store.as_ref(), "a", "a@a.test", "A", "A")
        .await
        .unwrap();
    let org_b = elements_server::startup::create_account(store.as_ref(), "b", "b@b.test", "B", "B")
        .await
        .unwrap();
    let now = now_seconds();
    let new = |org: &elements_server::startup::CreatedAccount,
               name: String,
               configuration: Configuration,
               refresh: String,
               expires_at: i64| NewInstance {
        organization_id: org.organization.id,
        user_id: org.user.id,
        element_key: "hubspot".into(),
        element_id: 43,
        name,
        tags: vec![],
        configuration,
        token_hash: hash_secret(&format!("token-{}", rand::random::<u64>())),
        tokens: Tokens {
            access_token: Some(elements_core::Secret::new("at-old")),
            refresh_token: Some(elements_core::Secret::new(refresh)),
            token_type: None,
            expires_at: Some(expires_at),
        },
    };
    // Organization A: 50 instances whose refresh fails before any network
    // call (a legacy flow without `oauth.api.key`), 50 whose provider is
    // unreachable; all expire before B's.
    let mut broken = Vec::new();
    let mut unreachable = Vec::new();
    for i in 0..100 {
        let configuration: Configuration = if i % 2 == 0 {
            [("oauth.flow", "legacy")].into_iter().collect()
        } else {
            [
                ("oauth.flow", "current"),
                ("oauth.api.key", "test-client"),
                ("oauth.api.secret", "test-secret"),
            ]
            .into_iter()
            .collect()
        };
        let created = store
            .create_instance(new(
                &org_a,
                format!("a{i}"),
                configuration,
                format!("rt-a{i}"),
                now - 1000 + i,
            ))
            .await
            .unwrap();
        if i % 2 == 0 {
            broken.push(created.id);
        } else {
            unreachable.push(created.id);
        }
    }
    // Organization B: one healthy instance expiring within the margin.
    let (_, refresh) = fake.issue_tokens("test-client");
    let b = store
        .create_instance(new(
            &org_b,
            "b".into(),
            [("oauth.flow", "legacy"), ("oauth.api.key", "test-client")]
                .into_iter()
                .collect(),
            refresh,
            now + 60,
        ))
        .await
        .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(
        server
            .state
            .tokens
            .clone()
            .run_background(Duration::from_millis(100), stopped),
    );
    let refreshed = eventually(1500, || async { fake.refresh_calls() >= 1 }).await;
    // Let the refresher see every broken row at least once.
    let all_seen = eventually(1500, || {
        let store = store.clone();
        let broken = broken.clone();
        async move {
            for id in broken {
                if store.instance_any(id).await.unwrap().unwrap().valid {
                    return false;
                }
            }
            true
        }
    })
    .await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(refreshed, "organization B's instance was never refreshed");
    assert_eq!(
        fake.refresh_calls(),
        1,
        "only B's instance reaches the fake"
    );
    let b = store.instance_any(b.id).await.unwrap().unwrap();
    assert!(b.tokens.expires_at.unwrap() > now_seconds() + 600);
    assert!(fake.is_access_token_valid(b.tokens.access_token.unwrap().expose()));
    // Failures before the network are not transient: invalid, with the reason.
    assert!(all_seen, "broken instances stayed valid");
    let first = store.instance_any(broken[0]).await.unwrap().unwrap();
    let reason = first.invalid_reason.unwrap();
    assert!(reason.contains("oauth.api.key"), "{reason}");
    // An unreachable provider is transient: still valid, backing off.
    let u = store.instance_any(unreachable[0]).await.unwrap().unwrap();
    assert!(u.valid);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Issue 11.4: one panic does not poison later reads.
// ---------------------------------------------------------------------------

/// Panics on its first request, then sends like the real transport.
struct PanicsOnce {
    panicked: AtomicBool,
    real: HttpTransport,
}

#[async_trait]
impl Transport for PanicsOnce {
    async fn send(&self, request: &ProviderRequest) -> Result<ProviderResponse, TransportError> {
        if !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("a bug in a transport");
        }
        self.real.send(request).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panicking_refresh_poisons_nothing() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, _, old_access) = provision(&server, &fake, "1800").await;
    expire_in(server.state.store.as_ref(), id, -10).await;
    let registry = elements_server::startup::registry(&server.config).unwrap();
    let tokens = Arc::new(TokenManager::new(
        server.state.store.clone(),
        Arc::new(registry),
        Arc::new(PanicsOnce {
            panicked: AtomicBool::new(false),
            real: HttpTransport::default(),
        }),
        server.config.policy,
    ));
    let instance = server.state.store.instance_any(id).await.unwrap().unwrap();
    let first = {
        let (tokens, instance) = (tokens.clone(), instance.clone());
        tokio::spawn(async move { tokens.fresh(instance).await.map(|_| ()) }).await
    };
    let failure = first.expect("the caller does not panic").unwrap_err();
    let api: elements_server::error::ApiError = failure.into();
    assert_eq!(api.status(), 500);
    // The lease was released and nothing is poisoned: the next read refreshes.
    let second = tokens.fresh(instance).await.unwrap();
    let access = second.tokens.access_token.unwrap();
    assert_ne!(access.expose(), old_access);
    assert!(fake.is_access_token_valid(access.expose()));
    assert_eq!(fake.refresh_calls(), 1);
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Issue 12.15: hostile token answers.
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_token_answers_are_refused_or_normalised() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token, _) = provision(&server, &fake, "1800").await;

    // A token_type with a header injection is normalised to `bearer`.
    fake.set_token_type(Some(json!("bearer\r\nX-Evil: 1")));
    expire_in(server.state.store.as_ref(), id, -10).await;
    let creds = element_credentials(&server, id, &token).await.unwrap();
    assert_eq!(creds.token_type.as_deref(), Some("bearer"));
    // So is a number, or an absurdly long one.
    for odd in [json!(7), json!("x".repeat(100))] {
        fake.set_token_type(Some(odd.clone()));
        expire_in(server.state.store.as_ref(), id, -10).await;
        let creds = element_credentials(&server, id, &token)
            .await
            .unwrap_or_else(|e| panic!("{odd}: {e}"));
        assert_eq!(creds.token_type.as_deref(), Some("bearer"), "{odd}");
    }
    fake.set_token_type(Some(json!("Bearer")));

    // An access token with a control character is refused, clearly...
    fake.queue_access_token("at-\u{7}bell");
    expire_in(server.state.store.as_ref(), id, -10).await;
    // The whole text of the answer (`ApiError::raw`, fields the typed
    // error does not know too) is searched for the token.
    let err = refused(element_credentials(&server, id, &token).await);
    assert_eq!(err.status, 502);
    let text = err.raw();
    let body: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(
        body["message"],
        "provider sent an invalid token response: the access token contains control characters"
    );
    assert!(!text.contains("bell"), "{text}");
    // ...but the refresh token rotated in that answer was kept: the grant lives.
    let creds = element_credentials(&server, id, &token).await.unwrap();
    assert!(fake.is_access_token_valid(access_token(&creds)));
    assert_eq!(fake.revoked_families(), 0);

    // Absurd lifetimes are clamped: a year at most, the default when nonsense.
    for (expires_in, low, high) in [
        (json!(10_i64.pow(12)), 364 * 24 * 3600, 365 * 24 * 3600),
        (json!(-1), 3000, 3600),
        (json!("soon"), 3000, 3600),
    ] {
        fake.set_expires_in(Some(expires_in.clone()));
        expire_in(server.state.store.as_ref(), id, -10).await;
        let creds = element_credentials(&server, id, &token)
            .await
            .unwrap_or_else(|e| panic!("{expires_in}: {e}"));
        let left = creds.expires_in.unwrap();
        assert!((low..=high).contains(&left), "{expires_in}: {left}");
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------
// The store query behind the fair refresher, on both engines.
// ---------------------------------------------------------------------------

async fn check_expiring_pages(store: Arc<dyn Store>) {
    let account =
        elements_server::startup::create_account(store.as_ref(), "p", "p@p.test", "P", "P")
            .await
            .unwrap();
    let now = now_seconds();
    let mut ids = Vec::new();
    // Three share an expiry (ties break by id), one expires too late, one
    // has no refresh token, one is invalid.
    for (i, (offset, refresh)) in [
        (5, true),
        (1, true),
        (1, true),
        (1, true),
        (900, true),
        (2, false),
        (3, true),
    ]
    .into_iter()
    .enumerate()
    {
        let created = store
            .create_instance(NewInstance {
                organization_id: account.organization.id,
                user_id: account.user.id,
                element_key: "hubspot".into(),
                element_id: 43,
                name: format!("p{i}"),
                tags: vec![],
                configuration: Configuration::new(),
                token_hash: hash_secret(&format!("page-token-{i}-{}", rand::random::<u64>())),
                tokens: Tokens {
                    access_token: Some(elements_core::Secret::new("at")),
                    refresh_token: refresh.then(|| elements_core::Secret::new("rt")),
                    token_type: None,
                    expires_at: Some(now + offset),
                },
            })
            .await
            .unwrap();
        ids.push(created.id);
    }
    let job: elements_store::RefreshJob<'_> =
        Box::new(|_| Box::pin(async { RefreshDecision::Invalidate("gone".into()) }));
    store.refresh_locked(ids[6], 60, job).await.unwrap();
    let mut tied = vec![ids[1], ids[2], ids[3]];
    tied.sort_unstable();
    let expected: Vec<i64> = tied.into_iter().chain([ids[0]]).collect();
    assert_eq!(
        store.expiring_before(now + 300, 100).await.unwrap(),
        expected
    );
    // Pages of two, each strictly after the last row of the previous one.
    let (mut seen, mut after) = (Vec::new(), None);
    loop {
        let page = store.expiring_page(now + 300, after, 2).await.unwrap();
        assert!(page.len() <= 2);
        for &(_, organization, _) in &page {
            assert_eq!(organization, account.organization.id);
        }
        seen.extend(page.iter().map(|&(id, _, _)| id));
        match page.last() {
            Some(&(id, _, expires_at)) => after = Some((expires_at, id)),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let rows = store.expiring_page(now + 300, None, 10).await.unwrap();
    assert_eq!(rows[3], (ids[0], account.organization.id, now + 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_pages_on_sqlite_and_postgres() {
    let dir = data_dir();
    let url = format!("sqlite://{}", dir.path().join("pages.db").display());
    let key = || {
        elements_store::Keyring::parse(&elements_store::Keyring::encode_key(
            &elements_store::Keyring::generate_key(),
        ))
        .unwrap()
    };
    check_expiring_pages(elements_store::connect(&url, key()).await.unwrap()).await;
    let pg = elements_testkit::pg::PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let url = pg.create_database("refresh_pages").expect("database");
    check_expiring_pages(elements_store::connect(&url, key()).await.unwrap()).await;
}
