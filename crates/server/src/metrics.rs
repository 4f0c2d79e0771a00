//! Prometheus metrics: `GET /metrics` in the text exposition format.
//!
//! Series (no label ever carries a secret, a token, an organization or an
//! instance id — cardinality is bounded by routes, elements and outcomes):
//!
//! - `elements_http_requests_total{route,method,status}` and
//!   `elements_http_request_duration_seconds{route,method}`: `route` is the
//!   route template (axum's `MatchedPath`, e.g.
//!   `/elements/api-v2/elements/{key_or_id}`), `unmatched` for a path no
//!   route takes — never the raw path; `method` is `other` for a
//!   non-standard method.
//! - `elements_provider_requests_total{element,outcome}` and
//!   `elements_provider_request_duration_seconds{element,outcome}`: calls
//!   to providers; `outcome` is `ok` (2xx), `status` (another status),
//!   `timeout`, `connect`, `too_large` or `error`; `element` is the catalog
//!   key, `private` for an organization-private element
//!   ([`element_label`]).
//! - `elements_token_refreshes_total{outcome}`: `ok`, `transient`
//!   (the instance stays valid, retried later) or `invalid`.
//! - `elements_instances{state}` (`valid`, `invalid`, `disabled`),
//!   computed at each scrape by one count query.
//! - `elements_store_pool_connections{state}` (`open`, `idle`) and
//!   `elements_store_scrape_query_seconds` (the latency of that count query).
//! - `elements_webhook_deliveries_total{outcome}` and
//!   `elements_webhook_delivery_duration_seconds{outcome}`: webhook delivery
//!   attempts by the worker; `outcome` is `delivered`, `retrying` (failed,
//!   another attempt is scheduled), `dead` (failed, no attempt left) or
//!   `disabled` (the endpoint answered 410 and was disabled). No label names
//!   the organization, the endpoint or its URL.
//! - `elements_proxy_requests_total{element,outcome}` and
//!   `elements_proxy_request_duration_seconds{element,outcome}`: calls
//!   through the API proxy by their final upstream outcome: `2xx`, `3xx`,
//!   `4xx`, `5xx` (the provider's status class), `timeout`, `connect` (the
//!   provider could not be reached), `error` (another transport failure) or
//!   `too_large` (the streamed upload went over the limit); the latency
//!   includes retries and refreshes. `elements_proxy_retries_total{element}`
//!   counts the attempts that were retried. `element` is the catalog key;
//!   an organization-private element that is not in the catalog is
//!   `private` (its key is the organization's, and unbounded).
//!
//! The registry is the process's: one server per process.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus::{
    Encoder as _, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::AppState;

/// Latency buckets, in seconds (1 ms to 10 s).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every series of the process.
pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    provider_requests: IntCounterVec,
    provider_duration: HistogramVec,
    refreshes: IntCounterVec,
    instances: IntGaugeVec,
    pool: IntGaugeVec,
    scrape_query: Gauge,
    webhook_deliveries: IntCounterVec,
    webhook_duration: HistogramVec,
    proxy_requests: IntCounterVec,
    proxy_duration: HistogramVec,
    proxy_retries: IntCounterVec,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let http_requests = IntCounterVec::new(
        Opts::new("elements_http_requests_total", "HTTP requests answered"),
        &["route", "method", "status"],
    )?;
    let http_duration = HistogramVec::new(
        HistogramOpts::new(
            "elements_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head)",
        )
        .buckets(BUCKETS.to_vec()),
        &["route", "method"],
    )?;
    let provider_requests = IntCounterVec::new(
        Opts::new(
            "elements_provider_requests_total",
            "Requests to providers' token endpoints",
        ),
        &["element", "outcome"],
    )?;
    let provider_duration = HistogramVec::new(
        HistogramOpts::new(
            "elements_provider_request_duration_seconds",
            "Time of a provider request",
        )
        .buckets(BUCKETS.to_vec()),
        &["element", "outcome"],
    )?;
    let refreshes = IntCounterVec::new(
        Opts::new(
            "elements_token_refreshes_total",
            "Token refreshes by outcome",
        ),
        &["outcome"],
    )?;
    let instances = IntGaugeVec::new(
        Opts::new("elements_instances", "Instances by state"),
        &["state"],
    )?;
    let pool = IntGaugeVec::new(
        Opts::new(
            "elements_store_pool_connections",
            "Database pool connections",
        ),
        &["state"],
    )?;
    let scrape_query = Gauge::new(
        "elements_store_scrape_query_seconds",
        "Latency of the instance count query of the last scrape",
    )?;
    let webhook_deliveries = IntCounterVec::new(
        Opts::new(
            "elements_webhook_deliveries_total",
            "Webhook delivery attempts by outcome",
        ),
        &["outcome"],
    )?;
    let webhook_duration = HistogramVec::new(
        HistogramOpts::new(
            "elements_webhook_delivery_duration_seconds",
            "Time of a webhook delivery attempt",
        )
        .buckets(BUCKETS.to_vec()),
        &["outcome"],
    )?;
    let proxy_requests = IntCounterVec::new(
        Opts::new(
            "elements_proxy_requests_total",
            "Calls through the API proxy by upstream outcome",
        ),
        &["element", "outcome"],
    )?;
    let proxy_duration = HistogramVec::new(
        HistogramOpts::new(
            "elements_proxy_request_duration_seconds",
            "Time of a proxied call, retries included",
        )
        .buckets(BUCKETS.to_vec()),
        &["element", "outcome"],
    )?;
    let proxy_retries = IntCounterVec::new(
        Opts::new(
            "elements_proxy_retries_total",
            "Upstream attempts of the API proxy that were retried",
        ),
        &["element"],
    )?;
    registry.register(Box::new(http_requests.clone()))?;
    registry.register(Box::new(http_duration.clone()))?;
    registry.register(Box::new(provider_requests.clone()))?;
    registry.register(Box::new(provider_duration.clone()))?;
    registry.register(Box::new(refreshes.clone()))?;
    registry.register(Box::new(instances.clone()))?;
    registry.register(Box::new(pool.clone()))?;
    registry.register(Box::new(scrape_query.clone()))?;
    registry.register(Box::new(webhook_deliveries.clone()))?;
    registry.register(Box::new(webhook_duration.clone()))?;
    registry.register(Box::new(proxy_requests.clone()))?;
    registry.register(Box::new(proxy_duration.clone()))?;
    registry.register(Box::new(proxy_retries.clone()))?;
    for outcome in WEBHOOK_OUTCOMES {
        webhook_deliveries.with_label_values(&[outcome]);
    }
    for outcome in ["ok", "transient", "invalid"] {
        refreshes.with_label_values(&[outcome]);
    }
    Ok(Metrics {
        registry,
        http_requests,
        http_duration,
        provider_requests,
        provider_duration,
        refreshes,
        instances,
        pool,
        scrape_query,
        webhook_deliveries,
        webhook_duration,
        proxy_requests,
        proxy_duration,
        proxy_retries,
    })
}

/// The outcomes of a webhook delivery attempt.
const WEBHOOK_OUTCOMES: [&str; 4] = ["delivered", "retrying", "dead", "disabled"];

static METRICS: LazyLock<Metrics> =
    LazyLock::new(|| build().expect("metric names and labels are valid"));

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Counts a token refresh: `ok`, `transient` or `invalid`.
pub fn refresh(outcome: &'static str) {
    metrics().refreshes.with_label_values(&[outcome]).inc();
}

/// The `element` label of a provider call: the element's key, or
/// `private` for an organization-private element (an id in the private
/// range, [`crate::private_elements::ID_BASE`] and up), whose key is the
/// organization's choice: one series per tenant key would be unbounded and
/// would publish the key. A private clone of a built-in keeps the built-in's
/// key but is `private` too: its endpoints may be anything.
pub fn element_label(element: &dyn elements_core::Element) -> &str {
    if element.id() >= crate::private_elements::ID_BASE {
        "private"
    } else {
        element.key()
    }
}

/// Records a provider call (`element`: [`element_label`]).
pub fn provider_call(element: &str, outcome: &'static str, elapsed: Duration) {
    let m = metrics();
    m.provider_requests
        .with_label_values(&[element, outcome])
        .inc();
    m.provider_duration
        .with_label_values(&[element, outcome])
        .observe(elapsed.as_secs_f64());
}

/// Records a webhook delivery attempt: `delivered`, `retrying`, `dead` or
/// `disabled`.
pub fn webhook_delivery(outcome: &'static str, elapsed: Duration) {
    let m = metrics();
    m.webhook_deliveries.with_label_values(&[outcome]).inc();
    m.webhook_duration
        .with_label_values(&[outcome])
        .observe(elapsed.as_secs_f64());
}

/// The outcome label of an upstream status: its class.
pub fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "1xx",
    }
}

/// Records a proxied call by its final outcome (`element`: a catalog key
/// or `private`).
pub fn proxy_call(element: &str, outcome: &'static str, elapsed: Duration) {
    let m = metrics();
    m.proxy_requests
        .with_label_values(&[element, outcome])
        .inc();
    m.proxy_duration
        .with_label_values(&[element, outcome])
        .observe(elapsed.as_secs_f64());
}

/// Counts a retried upstream attempt of the proxy.
pub fn proxy_retry(element: &str) {
    metrics().proxy_retries.with_label_values(&[element]).inc();
}

/// The standard methods as themselves; any other (a client may send any
/// token as a method) as `other`, so clients cannot create series.
pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times one answered request by route template (`None`: no
/// route took the path, `unmatched`), method and status; called by the
/// per-request layer ([`crate::request_id::Layer`]).
///
/// Each thread keeps the series it used (at most [`MAX_CACHED_SERIES`]):
/// `with_label_values` hashes the labels, takes the vector's lock and
/// clones the series' `Arc` on every call, and with requests spread over
/// the serving threads that lock and those counts are shared memory every
/// request writes (issue 19).
pub fn http_request(
    route: Option<&str>,
    method: &axum::http::Method,
    status: StatusCode,
    elapsed: Duration,
) {
    let route = route.unwrap_or("unmatched");
    let method = method_label(method);
    let seconds = elapsed.as_secs_f64();
    HTTP_SERIES.with_borrow_mut(|series| {
        let key = (route, method, status.as_u16());
        if let Some(s) = series.get(&key as &dyn SeriesKey) {
            s.count.inc();
            s.duration.observe(seconds);
            return;
        }
        let m = metrics();
        let count = m
            .http_requests
            .with_label_values(&[route, method, status.as_str()]);
        let duration = m.http_duration.with_label_values(&[route, method]);
        count.inc();
        duration.observe(seconds);
        if series.len() < MAX_CACHED_SERIES {
            series.insert(
                (route.into(), method, status.as_u16()),
                HttpSeries { count, duration },
            );
        }
    });
}

/// The most HTTP series a thread keeps (routes x methods x statuses is
/// bounded, and far below this; past it, lookups go to the vectors).
const MAX_CACHED_SERIES: usize = 4096;

/// One HTTP series' handles.
struct HttpSeries {
    count: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

/// A thread's series: (route, method, status) to handles.
type SeriesMap = std::collections::HashMap<(Box<str>, &'static str, u16), HttpSeries>;

thread_local! {
    static HTTP_SERIES: std::cell::RefCell<SeriesMap> = std::cell::RefCell::new(SeriesMap::new());
}

/// Looks up `(Box<str>, &str, u16)` keys with a borrowed `(&str, &str,
/// u16)`, without allocating.
trait SeriesKey {
    fn parts(&self) -> (&str, &str, u16);
}

impl SeriesKey for (Box<str>, &'static str, u16) {
    fn parts(&self) -> (&str, &str, u16) {
        (&self.0, self.1, self.2)
    }
}

impl SeriesKey for (&str, &'static str, u16) {
    fn parts(&self) -> (&str, &str, u16) {
        (self.0, self.1, self.2)
    }
}

impl<'a> std::borrow::Borrow<dyn SeriesKey + 'a> for (Box<str>, &'static str, u16) {
    fn borrow(&self) -> &(dyn SeriesKey + 'a) {
        self
    }
}

impl PartialEq for dyn SeriesKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn SeriesKey + '_ {}

impl std::hash::Hash for dyn SeriesKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state)
    }
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format (on `--metrics-listen` instead when set)", content_type = "text/plain", body = String),
    )
)]
pub async fn handler(State(state): State<AppState>) -> Response {
    let m = metrics();
    let start = Instant::now();
    match state.store.instance_states().await {
        Ok(s) => {
            m.scrape_query.set(start.elapsed().as_secs_f64());
            m.instances
                .with_label_values(&["valid"])
                .set(s.valid as i64);
            m.instances
                .with_label_values(&["invalid"])
                .set(s.invalid as i64);
            m.instances
                .with_label_values(&["disabled"])
                .set(s.disabled as i64);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count instances"),
    }
    let (open, idle) = state.store.pool_usage();
    m.pool.with_label_values(&["open"]).set(i64::from(open));
    m.pool.with_label_values(&["idle"]).set(idle as i64);
    let mut body = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut body) {
        tracing::error!(error = %e, "metrics: cannot encode");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// The router of `GET /metrics` (on the main listener, or on its own with
/// `--metrics-listen`).
pub fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/metrics", axum::routing::get(handler))
}
