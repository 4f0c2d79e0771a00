//! Several replicas of the real binary on one PostgreSQL cluster (a
//! throwaway one, started with the machine's own binaries).

mod common;

use std::time::Duration;

use common::*;
use elements_store::{Keyring, Store};
use elements_testkit::pg::PgCluster;
use elements_testkit::provider::FakeProvider;
use serde_json::Value;

struct Deployment {
    _dir: tempfile::TempDir,
    db_url: String,
    key: String,
    config: String,
    org: String,
    user: String,
}

impl Deployment {
    fn new(pg: &PgCluster, name: &str, fake: &FakeProvider) -> Deployment {
        let dir = data_dir();
        let config = dir.path().join("elements.toml");
        std::fs::write(
            &config,
            format!(
                "refresh_interval_seconds = 3600\n\
                 [elements.hubspot.oauth]\n\
                 token_url = \"{}\"\nrefresh_url = \"{}\"\n",
                fake.token_url(),
                fake.legacy_refresh_url()
            ),
        )
        .unwrap();
        Deployment {
            db_url: pg.create_database(name).expect("database"),
            key: Keyring::encode_key(&Keyring::generate_key()),
            config: config.to_str().unwrap().to_owned(),
            org: format!("org-{name}"),
            user: format!("user-{name}"),
            _dir: dir,
        }
    }

    fn replica(&self) -> Binary {
        Binary::serve(
            &["--database-url", &self.db_url, "--config", &self.config],
            &[
                ("ELEMENTS_MASTER_KEY", &self.key),
                ("ELEMENTS_ORGANIZATION_SECRET", &self.org),
                ("ELEMENTS_USER_SECRET", &self.user),
            ],
        )
    }

    fn header(&self) -> String {
        format!("User {}, Organization {}", self.user, self.org)
    }

    async fn store(&self) -> std::sync::Arc<dyn Store> {
        elements_store::connect(&self.db_url, Keyring::parse(&self.key).unwrap())
            .await
            .unwrap()
    }

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

    /// Makes the stored access token expired (as time would).
    async fn expire(&self, id: i64) {
        common::expire(self.store().await.as_ref(), id).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_created_on_one_replica_is_served_by_the_other() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "replicas_crud", &fake);
    let (a, b) = (d.replica(), d.replica());
    let client = client();
    let (id, token) = d.provision(&client, &a, &fake).await;

    let got: Value = client
        .get(b.url(&format!("/instances/{id}")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "Test");
    let creds: Value = client
        .get(b.url(&format!("/instances/{id}/credentials")))
        .header("Authorization", format!("Element {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        fake.is_access_token_valid(creds["accessToken"].as_str().unwrap()),
        "{creds}"
    );
    let patched: Value = client
        .patch(b.url(&format!("/instances/{id}")))
        .header("Authorization", d.header())
        .json(&serde_json::json!({"name": "via B"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["name"], "via B");
    let got: Value = client
        .get(a.url(&format!("/instances/{id}")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["name"], "via B", "A sees B's change");
    let status = client
        .delete(b.url(&format!("/instances/{id}")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let status = client
        .get(a.url(&format!("/instances/{id}")))
        .header("Authorization", d.header())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404, "deleted through B, gone on A");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_over_two_replicas_refreshes_once() {
    let pg = PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(pg, "replicas_storm", &fake);
    let (a, b) = (d.replica(), d.replica());
    let client = client();
    let (id, token) = d.provision(&client, &a, &fake).await;
    for round in 1..=3u64 {
        d.expire(id).await;
        let mut tasks = Vec::new();
        for i in 0..100 {
            let url = if i % 2 == 0 { a.url("") } else { b.url("") };
            let (client, token) = (client.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                let r = client
                    .get(format!("{url}/instances/{id}/credentials"))
                    .header("Authorization", format!("Element {token}"))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }));
        }
        let mut tokens = std::collections::BTreeSet::new();
        for t in tasks {
            let (status, body) = t.await.unwrap();
            assert_eq!(status, 200, "{body}");
            tokens.insert(body["accessToken"].as_str().unwrap().to_owned());
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
    let client = client();
    let (id, token) = d.provision(&client, &a, &fake).await;
    d.expire(id).await;

    fake.set_latency(Duration::from_millis(1500));
    let url = a.url(&format!("/instances/{id}/credentials"));
    let auth = format!("Element {token}");
    let c = client.clone();
    let on_a = tokio::spawn(async move { c.get(url).header("Authorization", auth).send().await });
    // Wait until A is inside the refresh (its provider call has arrived).
    for _ in 0..200 {
        if fake.refresh_calls() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.refresh_calls(), 1, "A started refreshing");
    a.kill();
    assert!(on_a.await.unwrap().is_err(), "A died mid-request");
    fake.set_latency(Duration::ZERO);

    let (status, creds) = credentials(&client, &b.base, id, &token).await;
    assert_eq!(status, 200, "{creds}");
    assert!(fake.is_access_token_valid(creds["accessToken"].as_str().unwrap()));
    assert!(
        creds["expiresIn"].as_i64().unwrap() > 600,
        "B finished the refresh: {creds}"
    );
}
