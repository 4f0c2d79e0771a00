//! Crash safety: the real binary, concurrent `POST /instances`, SIGKILL at
//! random moments, restart — every instance acknowledged with a 200 is there
//! afterwards and its tokens decrypt.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rand::Rng;
use serde_json::{json, Value};

fn start(dir: &std::path::Path, org: &str, user: &str) -> Binary {
    Binary::serve(
        &["--data-dir", dir.to_str().unwrap()],
        &[
            ("ELEMENTS_ORGANIZATION_SECRET", org),
            ("ELEMENTS_USER_SECRET", user),
        ],
    )
}

#[derive(Clone, Debug)]
struct Acked {
    id: i64,
    token: String,
    access: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_instances_survive_sigkill() {
    let dir = data_dir();
    let org = format!("org-{}", rand::rng().random::<u64>());
    let user = format!("user-{}", rand::rng().random::<u64>());
    let header = format!("User {user}, Organization {org}");
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();

    for round in 0..20 {
        let mut server = start(dir.path(), &org, &user);
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let (client, acked, header) = (client.clone(), acked.clone(), header.clone());
            let url = format!("{}/elements/api-v2/instances", server.base);
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let access = format!("at-crash-{round}-{worker}-{i}");
                    let body =
                        seed_instance_body(&access, &format!("rt-crash-{round}-{worker}-{i}"));
                    let Ok(response) = client
                        .post(&url)
                        .header("Authorization", &header)
                        .json(&body)
                        .send()
                        .await
                    else {
                        return; // the server is gone
                    };
                    if response.status() != 200 {
                        return;
                    }
                    let Ok(created) = response.json::<Value>().await else {
                        return;
                    };
                    acked.lock().unwrap().push(Acked {
                        id: created["id"].as_i64().unwrap(),
                        token: created["token"].as_str().unwrap().to_owned(),
                        access,
                    });
                }
            }));
        }
        let delay = rand::rng().random_range(30..250);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill(); // Child::kill is SIGKILL on Unix
        for t in tasks {
            t.await.unwrap();
        }
    }

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 20,
        "only {} instances were acknowledged",
        acked.len()
    );
    let server = start(dir.path(), &org, &user);
    let mut lost = Vec::new();
    for a in &acked {
        let response = client
            .get(format!(
                "{}/elements/api-v2/instances/{}/credentials",
                server.base, a.id
            ))
            .header("Authorization", format!("Element {}", a.token))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(json!(null));
        if status != 200 || body["accessToken"] != a.access.as_str() {
            lost.push((a.id, status, body));
        }
    }
    drop(server);
    eprintln!(
        "{} instances acknowledged over 20 SIGKILL rounds; {} lost",
        acked.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged instances lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}
