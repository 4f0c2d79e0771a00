//! Provisional measurement: `POST /instances` latency over real HTTP on a
//! SQLite file (what the outbox adds is the difference between branches).
//! `cargo run --release -p elements-server --example events_post_latency -- 2000 16`
//! (requests, concurrent clients).

use std::time::Instant;

use elements_server::{startup, ServerConfig};

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (n, clients) = (
        args.first().copied().unwrap_or(2000),
        args.get(1).copied().unwrap_or(16),
    );
    let dir = std::env::temp_dir().join(format!("events-bench-{}", rand::random::<u64>()));
    let config = ServerConfig {
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    let registry = startup::registry(&config).unwrap();
    let store = startup::open_store(&config).await.unwrap();
    let created = startup::create_account(store.as_ref(), "bench", "b@b.test", "B", "B")
        .await
        .unwrap();
    let header = format!(
        "User {}, Organization {}",
        created.user.secret, created.organization.secret
    );
    let state = startup::state(&config, registry, store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/elements/api-v2/instances",
        listener.local_addr().unwrap()
    );
    tokio::spawn(elements_server::serve(
        listener,
        state,
        std::future::pending(),
    ));
    let body = serde_json::json!({
        "element": { "key": "hubspot" },
        "providerData": {
            "apikey": "bench-client",
            "access_token": "bench-access",
            "refresh_token": "bench-refresh",
            "expires_in": "1800"
        },
        "configuration": {
            "oauth.api.key": "bench-client",
            "oauth.api.secret": "123456",
            "oauth.callback.url": "www.samplecallbackurl.com",
            "oauth.scope": "contacts-rw+offline"
        },
        "name": "bench"
    });
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, base, header, body) =
            (client.clone(), base.clone(), header.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            for _ in 0..n / clients {
                let t = Instant::now();
                let r = client
                    .post(&base)
                    .header("Authorization", &header)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let total = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "POST /instances x{}, {clients} clients: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        lat.len(),
        lat.len() as f64 / total,
        p(0.5),
        p(0.99)
    );
    let _ = std::fs::remove_dir_all(dir);
}
