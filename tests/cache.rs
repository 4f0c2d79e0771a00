//! cache (issue 19): the credential read path's cache keeps every promise.
//! Two replicas of the real binary on a throwaway PostgreSQL: a delete, a
//! disable, a rotated `Element` token or a refresh on one replica is seen by
//! the other within a second (LISTEN/NOTIFY); on SQLite, in one process,
//! deletes and disables are refused at once.

mod common;

use std::time::{Duration, Instant};

use common::PgDeployment as Deployment;
use common::*;
use elements_testkit::pg::PgCluster;
use elements_testkit::provider::FakeProvider;
use serde_json::Value;

/// How long another replica may take to see a change.
const PROPAGATION: Duration = Duration::from_secs(1);

impl Deployment {
    async fn provision(
        &self,
        client: &reqwest::Client,
        via: &Binary,
        fake: &FakeProvider,
    ) -> (i64, String) {
        let (access, refresh) = fake.issue_tokens("test-client");
        let mut body = seed_instance_body(&access, &refresh);
        body["configuration"]["oauth.api.secret"] = "test-secret".into();
        let created: Value = client
            .post(via.url("/instances"))
            .header("Authorization", self.header())
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            created["id"].as_i64().expect("created"),
            created["token"].as_str().unwrap().to_owned(),
        )
    }

    /// `/credentials` of `id` on `via` with the account's header.
    async fn account_credentials(
        &self,
        client: &reqwest::Client,
        via: &Binary,
        id: i64,
    ) -> (u16, Value) {
        let r = client
            .get(via.url(&format!("/instances/{id}/credentials")))
            .header("Authorization", self.header())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The replica's base URL without `/elements/api-v2` (for `common::credentials`).
fn base(b: &Binary) -> String {
    b.url("").trim_end_matches("/elements/api-v2").to_owned()
}

/// Reads `id`'s credentials on `b` (by Element token and by account) until
/// they answer `want` (by token, by account), for at most PROPAGATION after
/// `since`; returns the last statuses seen.
async fn settle(
    d: &Deployment,
    client: &reqwest::Client,
    b: &Binary,
    id: i64,
    token: &str,
    want: (u16, u16),
    since: Instant,
) -> (u16, u16) {
    loop {
        let (by_token, _) = credentials(client, &base(b), id, token).await;
        let (by_account, _) = d.account_credentials(client, b, id).await;
        if (by_token, by_account) == want || since.elapsed() > PROPAGATION {
            return (by_token, by_account);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Warms B's cache: both read paths answer 200.
async fn warm(d: &Deployment, client: &reqwest::Client, b: &Binary, id: i64, token: &str) {
    for _ in 0..3 {
        let (status, body) = credentials(client, &base(b), id, token).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = d.account_credentials(client, b, id).await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_on_one_replica_is_refused_by_the_other_within_a_second() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_delete", &fake);
    let (a, b) = (d.replica(), d.replica());
    let client = client();
    let (id, token) = d.provision(&client, &a, &fake).await;
    warm(&d, &client, &b, id, &token).await;

    let r = client
        .delete(a.url(&format!("/instances/{id}")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let deleted = Instant::now();
    // On A at once.
    assert_eq!(credentials(&client, &base(&a), id, &token).await.0, 401);
    assert_eq!(d.account_credentials(&client, &a, id).await.0, 404);
    // On B: the token no longer names an instance (401); by account, 404.
    let seen = settle(&d, &client, &b, id, &token, (401, 404), deleted).await;
    assert_eq!(seen, (401, 404), "B still serves a deleted instance");
    let (_, body) = d.account_credentials(&client, &b, id).await;
    assert_eq!(body["message"], format!("no instance with id {id}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disable_on_one_replica_is_refused_by_the_other_within_a_second() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_disable", &fake);
    let (a, b) = (d.replica(), d.replica());
    let client = client();
    let (id, token) = d.provision(&client, &a, &fake).await;
    warm(&d, &client, &b, id, &token).await;

    let r = client
        .delete(a.url(&format!("/instances/{id}/enabled")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let disabled = Instant::now();
    let (status, body) = credentials(&client, &base(&a), id, &token).await;
    assert_eq!(status, 403, "{body}");
    let (by_token, by_account) = settle(&d, &client, &b, id, &token, (403, 403), disabled).await;
    assert_eq!((by_token, by_account), (403, 403));
    let (_, body) = credentials(&client, &base(&b), id, &token).await;
    assert_eq!(body["message"], format!("instance {id} is disabled"));

    // Enabled again on A: B serves it again.
    let r = client
        .put(a.url(&format!("/instances/{id}/enabled")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let enabled = Instant::now();
    assert_eq!(
        settle(&d, &client, &b, id, &token, (200, 200), enabled).await,
        (200, 200)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_element_token_is_refused_by_the_other_replica_within_a_second() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_rotate", &fake);
    let (a, b) = (d.replica(), d.replica());
    let client = client();
    let (id, old) = d.provision(&client, &a, &fake).await;
    warm(&d, &client, &b, id, &old).await;

    let rotated: Value = client
        .post(a.url(&format!("/instances/{id}/token/rotate")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new = rotated["token"].as_str().expect("a new token").to_owned();
    let since = Instant::now();
    assert_eq!(credentials(&client, &base(&a), id, &old).await.0, 401);
    loop {
        let (status, _) = credentials(&client, &base(&b), id, &old).await;
        if status == 401 || since.elapsed() > PROPAGATION {
            assert_eq!(status, 401, "B still takes the rotated-away token");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = credentials(&client, &base(&b), id, &new).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["instanceId"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_refresh_on_one_replica_the_other_never_serves_the_older_token() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "cache_refresh", &fake);
    let (a, b) = (d.replica(), d.replica());
    let client = client();
    let (id, token) = d.provision(&client, &a, &fake).await;
    warm(&d, &client, &b, id, &token).await;
    let (_, before) = credentials(&client, &base(&b), id, &token).await;
    let old = before["accessToken"].as_str().unwrap().to_owned();

    // Expired through the store (as time would), then refreshed by A.
    common::expire(d.store().await.as_ref(), id).await;
    let (status, body) = credentials(&client, &base(&a), id, &token).await;
    assert_eq!(status, 200, "{body}");
    let stored = body["accessToken"].as_str().unwrap().to_owned();
    assert_ne!(stored, old, "A refreshed");
    assert_eq!(fake.refresh_calls(), 1);
    let refreshed = Instant::now();

    // B converges on A's token within a second, then never goes back.
    let mut seen_new = false;
    while refreshed.elapsed() <= PROPAGATION || !seen_new {
        let (status, body) = credentials(&client, &base(&b), id, &token).await;
        assert_eq!(status, 200, "{body}");
        let got = body["accessToken"].as_str().unwrap();
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
            assert!(body["expiresIn"].as_i64().unwrap() > 0, "{body}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, by_account) = d.account_credentials(&client, &b, id).await;
    assert_eq!(by_account["accessToken"], stored.as_str());
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
    let body = seed_instance_body("at-1", "rt-1");
    let (status, created) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, second) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200, "{second}");
    let (id2, token2) = (
        second["id"].as_i64().unwrap(),
        second["token"].as_str().unwrap().to_owned(),
    );

    for _ in 0..3 {
        assert_eq!(
            credentials(&server.client, &server.base, id, &token)
                .await
                .0,
            200
        );
        assert_eq!(
            credentials(&server.client, &server.base, id2, &token2)
                .await
                .0,
            200
        );
    }
    assert!(server.state.cache.len().0 >= 2, "the reads were cached");

    // Disabled: 403 on the very next read, by token and by account.
    let r = server
        .authed(reqwest::Method::DELETE, &format!("/instances/{id}/enabled"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = credentials(&server.client, &server.base, id, &token).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], format!("instance {id} is disabled"));
    let r = server
        .authed(
            reqwest::Method::GET,
            &format!("/instances/{id}/credentials"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    // Deleted: 401 by token, 404 by account, at once.
    let r = server
        .authed(reqwest::Method::DELETE, &format!("/instances/{id2}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        credentials(&server.client, &server.base, id2, &token2)
            .await
            .0,
        401
    );
    let r = server
        .authed(
            reqwest::Method::GET,
            &format!("/instances/{id2}/credentials"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    server.stop().await;
}

#[tokio::test]
async fn on_sqlite_a_rotated_account_secret_is_refused_at_once() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    for _ in 0..2 {
        let r = server
            .authed(reqwest::Method::GET, "/instances")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    assert_eq!(server.state.cache.len().1, 1, "the account was cached");
    let rotated: Value = server
        .fetch(reqwest::Method::POST, "/users/me/secret/rotate")
        .await;
    let new_user = rotated["secret"].as_str().unwrap();
    let r = server
        .authed(reqwest::Method::GET, "/instances")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401, "the old user secret still works");
    let r = server
        .get("/instances")
        .header(
            "Authorization",
            format!(
                "User {new_user}, Organization {}",
                server.account.organization_secret
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    server.stop().await;
}
