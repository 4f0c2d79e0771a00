//! The delivery worker: fan out new events, claim due deliveries, send
//! them signed, record what happened.

use std::sync::Arc;
use std::time::Duration;

use elements_store::{DeliveryClaim, DeliveryResult, Store};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::sign::signature;
use super::url_policy::{literal_allowed, FilteringResolver};
use super::Settings;

/// Starts the worker; it stops when `stop` turns true (after finishing the
/// deliveries in flight).
pub fn spawn(
    store: Arc<dyn Store>,
    settings: Settings,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(store, settings, stop))
}

/// The HTTP client of deliveries: no redirects, the filtering resolver, the
/// delivery timeout.
pub fn client(settings: &Settings) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(FilteringResolver {
            allow_private: settings.allow_private,
        }))
        .user_agent(concat!("elements-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("the TLS backend initializes")
}

async fn run(store: Arc<dyn Store>, settings: Settings, mut stop: watch::Receiver<bool>) {
    let client = client(&settings);
    let settings = Arc::new(settings);
    let lease_ms = settings.lease().as_millis() as i64;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut busy = false;
        match store.fan_out_events(500).await {
            Ok(n) => busy |= n > 0,
            Err(e) => tracing::warn!(error = %e, "webhooks: fan-out failed"),
        }
        let owner = rand::random_range(1..i64::MAX);
        let claims = match store
            .claim_deliveries(owner, lease_ms, (settings.concurrency * 4) as i64)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: claiming deliveries failed");
                Vec::new()
            }
        };
        busy |= !claims.is_empty();
        let mut set = JoinSet::new();
        let gate = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
        for claim in claims {
            let (store, client, settings, gate) = (
                store.clone(),
                client.clone(),
                settings.clone(),
                gate.clone(),
            );
            set.spawn(async move {
                let _permit = gate.acquire_owned().await;
                let id = claim.delivery_id;
                let started = std::time::Instant::now();
                let result = deliver(&client, &settings, &claim).await;
                crate::metrics::webhook_delivery(outcome(&result), started.elapsed());
                if let Err(e) = store.finish_delivery(id, owner, result).await {
                    tracing::warn!(delivery = id, error = %e, "webhooks: recording a delivery failed");
                }
            });
        }
        while set.join_next().await.is_some() {}
        if !busy {
            tokio::select! {
                _ = tokio::time::sleep(settings.poll_interval) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

/// The metrics label of a delivery's result.
fn outcome(result: &DeliveryResult) -> &'static str {
    match result {
        DeliveryResult::Delivered { .. } => "delivered",
        DeliveryResult::Retry { .. } => "retrying",
        DeliveryResult::Dead { .. } => "dead",
        DeliveryResult::Gone => "disabled",
    }
}

/// Sends one delivery and classifies the answer.
pub async fn deliver(
    client: &reqwest::Client,
    settings: &Settings,
    claim: &DeliveryClaim,
) -> DeliveryResult {
    let attempt = claim.attempts as usize + 1;
    let failed = |status: Option<u16>, error: String| match settings.retry_delay(attempt) {
        Some(delay) => DeliveryResult::Retry {
            status,
            error,
            next_attempt_at: elements_store::now_millis() + delay.as_millis() as i64,
        },
        None => DeliveryResult::Dead { status, error },
    };
    let url = match url::Url::parse(&claim.url) {
        Ok(u) if literal_allowed(&u, settings.allow_private) => u,
        Ok(_) => {
            return failed(
                None,
                "the URL's address is private, loopback or link-local".into(),
            )
        }
        Err(_) => return failed(None, "the URL is malformed".into()),
    };
    let timestamp = elements_store::now_millis() / 1000;
    let Some(sig) = signature(&claim.secret, &claim.event_id, timestamp, &claim.payload) else {
        return DeliveryResult::Dead {
            status: None,
            error: "the webhook's signing secret is malformed".into(),
        };
    };
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &claim.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", sig)
        .body(claim.payload.clone())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => DeliveryResult::Delivered {
            status: r.status().as_u16(),
        },
        Ok(r) if r.status() == reqwest::StatusCode::GONE => DeliveryResult::Gone,
        Ok(r) => {
            let status = r.status().as_u16();
            failed(Some(status), format!("the endpoint answered {status}"))
        }
        Err(e) => {
            let e = e.without_url();
            let error = if e.is_timeout() {
                format!("timed out after {} ms", settings.timeout.as_millis())
            } else if e.is_connect() {
                format!("could not connect: {}", source_chain(&e))
            } else {
                format!("request failed: {}", source_chain(&e))
            };
            failed(None, error)
        }
    }
}

/// An error with its causes, on one line, bounded.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out.chars().take(300).collect()
}
