//! Several replicas of the real binary on one PostgreSQL cluster (a
//! throwaway one, started with the machine's own binaries).

mod common;

use std::time::Duration;

use common::PgDeployment as Deployment;
use common::*;
use elements_client::{Client, Secret, UpdateInstance};
use elements_testkit::pg::PgCluster;
use elements_testkit::provider::FakeProvider;

impl Deployment {
    /// The typed client of `replica` with the deployment's account.
    fn api(&self, replica: &Binary) -> Client {
        Client::with_http_client(&replica.base, http())
            .unwrap()
            .with_account(&self.user, &self.org)
    }

    async fn provision(&self, via: &Binary, fake: &FakeProvider) -> (i64, Secret) {
        let (access, refresh) = fake.issue_tokens("test-client");
        let body =
            seed_instance(&access, &refresh).configuration("oauth.api.secret", "test-secret");
        let created = self.api(via).create_instance(&body).await.expect("created");
        (created.id, created.token.expect("the instance token"))
    }

    /// Makes the stored access token expired (as time would).
    async fn expire(&self, id: i64) {
        common::expire(self.store().await.as_ref(), id).await;
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The typed client of `replica` with an instance's `Element` token only.
fn scoped(replica: &Binary, token: &Secret) -> Client {
    Client::with_http_client(&replica.base, http())
        .unwrap()
        .with_element(token.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_created_on_one_replica_is_served_by_the_other() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "replicas_crud", &fake);
    let (a, b) = (d.replica(), d.replica());
    let (id, token) = d.provision(&a, &fake).await;

    let got = d.api(&b).instance(id).await.unwrap();
    assert_eq!(got.name, "Test");
    let creds = scoped(&b, &token).credentials(id).await.unwrap();
    let access = creds.access_token.as_ref().expect("an access token");
    assert!(fake.is_access_token_valid(access.expose()), "{creds:?}");
    let patched = d
        .api(&b)
        .update_instance(id, &UpdateInstance::new().name("via B"))
        .await
        .unwrap();
    assert_eq!(patched.name, "via B");
    let got = d.api(&a).instance(id).await.unwrap();
    assert_eq!(got.name, "via B", "A sees B's change");
    d.api(&b).delete_instance(id).await.unwrap();
    let err = refused(d.api(&a).instance(id).await);
    assert_eq!(err.status, 404, "deleted through B, gone on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_over_two_replicas_refreshes_once() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "replicas_storm", &fake);
    let (a, b) = (d.replica(), d.replica());
    let (id, token) = d.provision(&a, &fake).await;
    let (on_a, on_b) = (scoped(&a, &token), scoped(&b, &token));
    for round in 1..=3u64 {
        d.expire(id).await;
        let mut tasks = Vec::new();
        for i in 0..100 {
            let client = if i % 2 == 0 {
                on_a.clone()
            } else {
                on_b.clone()
            };
            tasks.push(tokio::spawn(async move { client.credentials(id).await }));
        }
        let mut tokens = std::collections::BTreeSet::new();
        for t in tasks {
            let creds = t.await.unwrap().expect("credentials");
            tokens.insert(creds.access_token.unwrap().into_inner());
        }
        assert_eq!(
            fake.refresh_calls(),
            round,
            "round {round}: one refresh across both replicas"
        );
        assert_eq!(tokens.len(), 1, "everyone got the same token");
    }
    assert_eq!(fake.revoked_families(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_replica_mid_refresh_leaves_no_stuck_lock() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    // A replica killed after the provider answered would lose a rotated
    // refresh token with it; this test is about the lock, so no rotation.
    fake.set_rotate_refresh_tokens(false);
    let d = Deployment::new(pg, "replicas_kill", &fake);
    let (mut a, b) = (d.replica(), d.replica());
    let (id, token) = d.provision(&a, &fake).await;
    d.expire(id).await;

    fake.set_latency(Duration::from_millis(1500));
    let via_a = scoped(&a, &token);
    let on_a = tokio::spawn(async move { via_a.credentials(id).await });
    // Wait until A is inside the refresh (its provider call has arrived).
    for _ in 0..200 {
        if fake.refresh_calls() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.refresh_calls(), 1, "A started refreshing");
    a.kill();
    assert!(
        matches!(
            on_a.await.unwrap(),
            Err(elements_client::Error::Transport(_))
        ),
        "A died mid-request"
    );
    fake.set_latency(Duration::ZERO);

    let creds = scoped(&b, &token).credentials(id).await.unwrap();
    assert!(fake.is_access_token_valid(creds.access_token.as_ref().unwrap().expose()));
    assert!(
        creds.expires_in.unwrap() > 600,
        "B finished the refresh: {creds:?}"
    );
}
