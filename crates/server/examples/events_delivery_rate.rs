//! Provisional measurement: webhook events delivered per second to a local
//! receiver (SQLite file, one worker).
//! `cargo run --release -p elements-server --example events_delivery_rate -- 5000`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elements_server::webhooks::{sign::new_secret, Settings};
use elements_server::{startup, ServerConfig};
use elements_store::{EventFilter, EventKind, NewWebhook};

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5000);
    let dir = std::env::temp_dir().join(format!("events-bench-{}", rand::random::<u64>()));
    let config = ServerConfig {
        data_dir: dir.clone(),
        ..Default::default()
    };
    let store = startup::open_store(&config).await.unwrap();
    let created = startup::create_account(store.as_ref(), "bench", "b@b.test", "B", "B")
        .await
        .unwrap();
    let org = store
        .authenticate(
            &elements_store::hash_secret(&created.user.secret),
            &elements_store::hash_secret(&created.organization.secret),
        )
        .await
        .unwrap()
        .unwrap()
        .organization_id;
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    store
        .create_webhook(NewWebhook {
            organization_id: org,
            url,
            events: EventFilter(vec!["*".into()]),
            secret: new_secret(),
        })
        .await
        .unwrap();
    let write = Instant::now();
    let mut writers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                store
                    .record_event(org, EventKind::ConnectFailed, serde_json::json!({ "n": i }))
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let wrote = write.elapsed().as_secs_f64();
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let settings = Settings {
        allow_private: true,
        poll_interval: Duration::from_millis(10),
        ..Settings::default()
    };
    let started = Instant::now();
    elements_server::webhooks::spawn(store.clone(), settings, rx);
    while count.load(Ordering::SeqCst) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "{n} events: written {:.0}/s (8 writers, one transaction each); delivered {:.0}/s \
         (fan-out + claim + signed POST + record, concurrency 16)",
        n as f64 / wrote,
        n as f64 / took
    );
    let _ = std::fs::remove_dir_all(dir);
}
