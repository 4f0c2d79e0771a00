//! cache (issue 19): the credential read path's cache keeps every promise.
//! Two replicas of the real binary on a throwaway PostgreSQL: a delete, a
//! disable, a rotated `Element` token or a refresh on one replica is seen by
//! the other within a second (LISTEN/NOTIFY); on SQLite, in one process,
//! deletes and disables are refused at once.

mod common;

use std::time::{Duration, Instant};

use common::PgDeployment as Deployment;
use common::*;
use elements_client::{Client, Credentials, Error, ListInstances};
use elements_testkit::pg::PgCluster;
use elements_testkit::provider::FakeProvider;

/// How long another replica may take to see a change.
const PROPAGATION: Duration = Duration::from_secs(1);

impl Deployment {
    /// The account's typed client of replica `via`.
    fn api(&self, http: &reqwest::Client, via: &Binary) -> Client {
        client_of(http, via).with_account(&self.user, &self.org)
    }

    async fn provision(
        &self,
        http: &reqwest::Client,
        via: &Binary,
        fake: &FakeProvider,
    ) -> (i64, String) {
        let (access, refresh) = fake.issue_tokens("test-client");
        let body =
            seed_instance(&access, &refresh).configuration("oauth.api.secret", "test-secret");
        let created = self.api(http, via).create_instance(&body).await.unwrap();
        (
            created.id,
            created.token.expect("the token, once").into_inner(),
        )
    }

    /// `/credentials` of `id` on `via` with the account's secrets.
    async fn account_credentials(
        &self,
        http: &reqwest::Client,
        via: &Binary,
        id: i64,
    ) -> Result<Credentials, Error> {
        self.api(http, via).credentials(id).await
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A typed client of replica `b`, without credentials.
fn client_of(http: &reqwest::Client, b: &Binary) -> Client {
    Client::with_http_client(&b.base, http.clone()).expect("base URL")
}

/// `/credentials` of `id` on `b` with its `Element` token.
async fn credentials(
    http: &reqwest::Client,
    b: &Binary,
    id: i64,
    token: &str,
) -> Result<Credentials, Error> {
    client_of(http, b).with_element(token).credentials(id).await
}

/// The status a call was answered with (a typed `Ok`: these routes' 200).
fn status<T>(answer: &Result<T, Error>) -> u16 {
    match answer {
        Ok(_) => 200,
        Err(e) => e
            .status()
            .unwrap_or_else(|| panic!("no answer: {e}"))
            .as_u16(),
    }
}

/// The refusal's message (panics on a success).
fn message<T: std::fmt::Debug>(answer: Result<T, Error>) -> String {
    refused(answer).message().to_owned()
}

/// The access token a `/credentials` answer carries.
fn access(answer: &Credentials) -> &str {
    answer
        .access_token
        .as_ref()
        .expect("an access token")
        .expose()
}

/// Reads `id`'s credentials on `b` (by Element token and by account) until
/// they answer `want` (by token, by account), for at most PROPAGATION after
/// `since`; returns the last statuses seen.
async fn settle(
    d: &Deployment,
    http: &reqwest::Client,
    b: &Binary,
    id: i64,
    token: &str,
    want: (u16, u16),
    since: Instant,
) -> (u16, u16) {
    loop {
        let by_token = status(&credentials(http, b, id, token).await);
        let by_account = status(&d.account_credentials(http, b, id).await);
        if (by_token, by_account) == want || since.elapsed() > PROPAGATION {
            return (by_token, by_account);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Warms B's cache: both read paths answer 200.
async fn warm(d: &Deployment, http: &reqwest::Client, b: &Binary, id: i64, token: &str) {
    for _ in 0..3 {
        credentials(http, b, id, token).await.unwrap();
        d.account_credentials(http, b, id).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_on_one_replica_is_refused_by_the_other_within_a_second() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_delete", &fake);
    let (a, b) = (d.replica(), d.replica());
    let http = http();
    let (id, token) = d.provision(&http, &a, &fake).await;
    warm(&d, &http, &b, id, &token).await;

    d.api(&http, &a).delete_instance(id).await.unwrap();
    let deleted = Instant::now();
    // On A at once.
    assert_eq!(status(&credentials(&http, &a, id, &token).await), 401);
    assert_eq!(status(&d.account_credentials(&http, &a, id).await), 404);
    // On B: the token no longer names an instance (401); by account, 404.
    let seen = settle(&d, &http, &b, id, &token, (401, 404), deleted).await;
    assert_eq!(seen, (401, 404), "B still serves a deleted instance");
    assert_eq!(
        message(d.account_credentials(&http, &b, id).await),
        format!("no instance with id {id}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disable_on_one_replica_is_refused_by_the_other_within_a_second() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_disable", &fake);
    let (a, b) = (d.replica(), d.replica());
    let http = http();
    let (id, token) = d.provision(&http, &a, &fake).await;
    warm(&d, &http, &b, id, &token).await;

    assert!(
        d.api(&http, &a)
            .disable_instance(id)
            .await
            .unwrap()
            .disabled
    );
    let disabled = Instant::now();
    let on_a = credentials(&http, &a, id, &token).await;
    assert_eq!(status(&on_a), 403, "{on_a:?}");
    let (by_token, by_account) = settle(&d, &http, &b, id, &token, (403, 403), disabled).await;
    assert_eq!((by_token, by_account), (403, 403));
    assert_eq!(
        message(credentials(&http, &b, id, &token).await),
        format!("instance {id} is disabled")
    );

    // Enabled again on A: B serves it again.
    assert!(!d.api(&http, &a).enable_instance(id).await.unwrap().disabled);
    let enabled = Instant::now();
    assert_eq!(
        settle(&d, &http, &b, id, &token, (200, 200), enabled).await,
        (200, 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_element_token_is_refused_by_the_other_replica_within_a_second() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_rotate", &fake);
    let (a, b) = (d.replica(), d.replica());
    let http = http();
    let (id, old) = d.provision(&http, &a, &fake).await;
    warm(&d, &http, &b, id, &old).await;

    let new = d
        .api(&http, &a)
        .rotate_instance_token(id)
        .await
        .expect("a new token");
    let since = Instant::now();
    assert_eq!(status(&credentials(&http, &a, id, &old).await), 401);
    loop {
        let seen = status(&credentials(&http, &b, id, &old).await);
        if seen == 401 || since.elapsed() > PROPAGATION {
            assert_eq!(seen, 401, "B still takes the rotated-away token");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let answer = credentials(&http, &b, id, new.expose()).await.unwrap();
    assert_eq!(answer.instance_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_refresh_on_one_replica_the_other_never_serves_the_older_token() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_refresh", &fake);
    let (a, b) = (d.replica(), d.replica());
    let http = http();
    let (id, token) = d.provision(&http, &a, &fake).await;
    warm(&d, &http, &b, id, &token).await;
    let before = credentials(&http, &b, id, &token).await.unwrap();
    let old = access(&before).to_owned();

    // Expired through the store (as time would), then refreshed by A.
    common::expire(d.store().await.as_ref(), id).await;
    let on_a = credentials(&http, &a, id, &token).await.unwrap();
    let stored = access(&on_a).to_owned();
    assert_ne!(stored, old, "A refreshed");
    assert_eq!(fake.refresh_calls(), 1);
    let refreshed = Instant::now();

    // B converges on A's token within a second, then never goes back.
    let mut seen_new = false;
    while refreshed.elapsed() <= PROPAGATION || !seen_new {
        let body = credentials(&http, &b, id, &token).await.unwrap();
        let got = access(&body);
        if seen_new {
            assert_eq!(got, stored, "B went back to an older token");
        }
        if got == stored {
            seen_new = true;
        } else {
            assert!(
                refreshed.elapsed() <= PROPAGATION,
                "B still serves {got} after a second"
            );
            // Never an expired token: B refreshes rather than serving it.
            assert!(body.expires_in.expect("expiresIn") > 0, "{body:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let by_account = d.account_credentials(&http, &b, id).await.unwrap();
    assert_eq!(access(&by_account), stored);
    assert_eq!(
        fake.refresh_calls(),
        1,
        "B took A's token, it did not refresh again"
    );
}

#[tokio::test]
async fn on_sqlite_a_delete_or_disable_is_refused_at_once() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let by_token = |token: &str| server.anonymous().with_element(token);
    let first = api
        .create_instance(&seed_instance("at-1", "rt-1"))
        .await
        .unwrap();
    let (id, token) = (first.id, first.token.unwrap().into_inner());
    let second = api
        .create_instance(&seed_instance("at-1", "rt-1"))
        .await
        .unwrap();
    let (id2, token2) = (second.id, second.token.unwrap().into_inner());

    // Any change of the database file (this server's background writers
    // included: event delivery, health-check claims) empties the cache
    // within 20 ms, so read until both are cached at the same time.
    let mut cached = 0;
    for _ in 0..100 {
        by_token(&token).credentials(id).await.unwrap();
        by_token(&token2).credentials(id2).await.unwrap();
        cached = server.state.cache.len().0;
        if cached >= 2 {
            break;
        }
    }
    assert!(cached >= 2, "the reads were cached ({cached})");

    // Disabled: 403 on the very next read, by token and by account.
    assert!(api.disable_instance(id).await.unwrap().disabled);
    let err = refused(by_token(&token).credentials(id).await);
    assert_eq!(err.status, 403, "{err}");
    assert_eq!(err.message(), format!("instance {id} is disabled"));
    assert_eq!(status(&api.credentials(id).await), 403);

    // Deleted: 401 by token, 404 by account, at once.
    api.delete_instance(id2).await.unwrap();
    assert_eq!(status(&by_token(&token2).credentials(id2).await), 401);
    assert_eq!(status(&api.credentials(id2).await), 404);
    server.stop().await;
}

#[tokio::test]
async fn on_sqlite_a_rotated_account_secret_is_refused_at_once() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    // As above: read until the account is cached (a write of the file
    // in between empties the cache).
    let mut cached = 0;
    for _ in 0..100 {
        api.instances(&ListInstances::new()).await.unwrap();
        cached = server.state.cache.len().1;
        if cached == 1 {
            break;
        }
    }
    assert_eq!(cached, 1, "the account was cached");
    let new_user = api.rotate_user_secret().await.unwrap();
    assert_eq!(
        status(&api.instances(&ListInstances::new()).await),
        401,
        "the old user secret still works"
    );
    server
        .anonymous()
        .with_account(new_user, &server.account.organization_secret)
        .instances(&ListInstances::new())
        .await
        .unwrap();
    server.stop().await;
}
