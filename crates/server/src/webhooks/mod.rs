//! Webhooks (issue 16): settings, URL policy, Standard Webhooks signing, and
//! the delivery worker that drains the store's outbox.
//!
//! Delivery is at least once: an event is a row committed with the change
//! that caused it; the worker fans it out to the organization's subscribed
//! endpoints, claims due deliveries under a lease (PostgreSQL: `FOR UPDATE
//! SKIP LOCKED`, so replicas share the work and never send one delivery
//! concurrently; SQLite: one process), POSTs the signed body, and records
//! the result. A crash between the POST and the record means the delivery
//! is sent again after its lease, with the same `webhook-id`.
//!
//! Failures are retried on a jittered exponential schedule (by default
//! 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: about 28 hours); after the
//! last attempt the delivery is dead (`GET /organizations/me/events` shows
//! it, `POST .../redeliver` revives it). A 410 kills the delivery and
//! disables the endpoint.

use std::time::Duration;

pub mod sign;
pub mod url_policy;
pub mod worker;

pub use worker::spawn;

/// Webhook delivery settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Deliver to private, loopback and link-local addresses, and over
    /// plain `http` (`--webhooks-allow-private`).
    pub allow_private: bool,
    /// The delay before each retry; attempts = 1 + its length.
    pub retry_schedule: Vec<Duration>,
    /// Time allowed for one delivery (connect + answer).
    pub timeout: Duration,
    /// How often the worker looks for new events and due deliveries when
    /// idle.
    pub poll_interval: Duration,
    /// Deliveries in flight at once per process.
    pub concurrency: usize,
    /// Spread each retry delay by up to this fraction either way (0.2:
    /// ±20 %).
    pub jitter: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            allow_private: false,
            retry_schedule: [5, 300, 1800, 7200, 18000, 36000, 36000]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            timeout: Duration::from_secs(15),
            poll_interval: Duration::from_millis(500),
            concurrency: 16,
            jitter: 0.2,
        }
    }
}

impl Settings {
    /// The delay before retry number `attempt` (1 = the first retry), with
    /// jitter; `None` after the last.
    pub fn retry_delay(&self, attempt: usize) -> Option<Duration> {
        let base = *self.retry_schedule.get(attempt.checked_sub(1)?)?;
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + spread * (rand::random::<f64>() * 2.0 - 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }

    /// The lease a worker takes on a delivery: longer than the delivery can
    /// last (its timeout) plus recording the result, so two workers never
    /// send it at once; a crashed worker's deliveries are taken over when
    /// it ends.
    pub fn lease(&self) -> Duration {
        self.timeout * 3 + Duration::from_secs(5)
    }
}
