//! Crash safety: the real binary, concurrent `POST /instances`, SIGKILL at
//! random moments, restart — every instance acknowledged with a 200 is there
//! afterwards and its tokens decrypt.
//!
//! Workers never stop silently: every answer and every failure is counted.
//! A SIGKILL cannot produce an HTTP answer, so any non-200 answer fails the
//! test; a connection error fails it too unless it happened after the kill
//! (a request in flight at the kill, or one sent to the dead server), and
//! such a request was not acknowledged, so nothing is expected of it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use elements_client::{Client, Instance};
use rand::Rng;
use reqwest::Method;

const ROUNDS: usize = 20;
const WORKERS: usize = 8;

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

/// What the workers saw, over all rounds.
#[derive(Default, Debug)]
struct Tally {
    acked: Vec<Acked>,
    /// Answers other than 200: (round, status, body). Never explained by a kill.
    non_200: Vec<(usize, u16, String)>,
    /// Failures before the kill, or timeouts: (round, what).
    unexpected: Vec<(usize, String)>,
    /// Requests in flight at the kill (reset, or a 200 whose body was cut).
    cut_by_kill: usize,
    /// Connections refused by the dead server (the worker then stops).
    refused_after_kill: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_instances_survive_sigkill() {
    let dir = data_dir();
    let org = format!("org-{}", rand::rng().random::<u64>());
    let user = format!("user-{}", rand::rng().random::<u64>());
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let client = |server: &Binary| Client::with_http_client(&server.base, http.clone()).unwrap();

    for round in 0..ROUNDS {
        let mut server = start(dir.path(), &org, &user);
        let killed = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for worker in 0..WORKERS {
            let (api, tally, killed) = (
                client(&server).with_account(&user, &org),
                tally.clone(),
                killed.clone(),
            );
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let access = format!("at-crash-{round}-{worker}-{i}");
                    let body = seed_instance(&access, &format!("rt-crash-{round}-{worker}-{i}"));
                    // Raw send (the typed body, the typed answer below): a
                    // kill can cut an answer mid-body, and a cut non-200
                    // must still count as an answer, while the typed
                    // method's error would drop its status.
                    let sent = api
                        .request(Method::POST, "/instances")
                        .json(&body)
                        .send()
                        .await;
                    let response = match sent {
                        Ok(r) => r,
                        Err(e) => {
                            // Read the flag after the failure: the kill sets
                            // it first, so a failure the kill caused sees it.
                            let after_kill = killed.load(Ordering::SeqCst);
                            let mut t = tally.lock().unwrap();
                            if !after_kill || e.is_timeout() {
                                t.unexpected.push((round, format!("request {i}: {e:?}")));
                            } else if e.is_connect() {
                                t.refused_after_kill += 1;
                            } else {
                                t.cut_by_kill += 1;
                            }
                            return;
                        }
                    };
                    let status = response.status().as_u16();
                    let text = response.text().await;
                    let after_kill = killed.load(Ordering::SeqCst);
                    let mut t = tally.lock().unwrap();
                    match text {
                        Ok(text) if status == 200 => {
                            let created: Instance =
                                serde_json::from_str(&text).unwrap_or_else(|e| {
                                    panic!("a 200 that is not an instance ({e}): {text}")
                                });
                            t.acked.push(Acked {
                                id: created.id,
                                token: created.token.expect("the token").into_inner(),
                                access,
                            });
                        }
                        Ok(text) => t.non_200.push((round, status, text)),
                        // The server answered, then died: a non-200 still counts.
                        Err(e) if status != 200 => {
                            t.non_200.push((round, status, format!("(body cut: {e})")));
                            return;
                        }
                        // A 200 cut short: the client never learnt the id, so
                        // it is not acknowledged.
                        Err(e) if after_kill && !e.is_timeout() => {
                            t.cut_by_kill += 1;
                            return;
                        }
                        Err(e) => {
                            t.unexpected
                                .push((round, format!("request {i}: 200, body: {e:?}")));
                            return;
                        }
                    }
                }
            }));
        }
        let delay = rand::rng().random_range(30..250);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        killed.store(true, Ordering::SeqCst);
        server.kill(); // Child::kill is SIGKILL on Unix
        for t in tasks {
            t.await.unwrap();
        }
    }

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    let acked = tally.acked.clone();
    let server = start(dir.path(), &org, &user);
    let mut lost = Vec::new();
    for a in &acked {
        let answer = client(&server)
            .with_element(&a.token)
            .credentials(a.id)
            .await;
        let served = answer
            .as_ref()
            .ok()
            .and_then(|c| c.access_token.as_ref())
            .map(|t| t.expose());
        if served != Some(a.access.as_str()) {
            lost.push((a.id, answer));
        }
    }
    drop(server);
    eprintln!(
        "{ROUNDS} SIGKILL rounds, {WORKERS} workers: {} instances acknowledged, {} lost; \
         {} non-200 answers, {} unexpected failures; {} requests cut by the kill, \
         {} refused after it",
        acked.len(),
        lost.len(),
        tally.non_200.len(),
        tally.unexpected.len(),
        tally.cut_by_kill,
        tally.refused_after_kill,
    );
    assert!(
        tally.non_200.is_empty(),
        "{} answers other than 200 (a kill cannot answer): {:?}",
        tally.non_200.len(),
        &tally.non_200[..tally.non_200.len().min(5)]
    );
    assert!(
        tally.unexpected.is_empty(),
        "{} failures not explained by the kill: {:?}",
        tally.unexpected.len(),
        &tally.unexpected[..tally.unexpected.len().min(5)]
    );
    // Every worker of every round ended on the kill, and nothing else.
    assert_eq!(
        tally.cut_by_kill + tally.refused_after_kill,
        ROUNDS * WORKERS,
        "each worker stops exactly once, at the kill"
    );
    assert!(
        acked.len() >= ROUNDS,
        "only {} instances were acknowledged",
        acked.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged instances lost: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
}
