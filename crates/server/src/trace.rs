//! Spans for the optional OpenTelemetry trace export (`--otlp-endpoint`).
//!
//! The binary installs the exporter and calls [`enable`]; until then every
//! function here answers [`Span::none`] after one atomic load, so a server
//! without the setting creates no span and pays nothing. Spans carry the
//! target [`TARGET`] (the binary's log output filters it out, the exporter
//! takes only it) and bounded, secret-free fields: a route template, a
//! method, a status, an element key, an outcome — never a path, a query
//! string, a header, an id or a token.

use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::Method;
use tracing::field::Empty;
use tracing::Span;

/// The target of every span of this module, and of the store's spans
/// (`store.<operation>`, at `trace`, made by `elements_store` itself: the
/// binary's exporter layer keeps those only inside an exported span, and
/// its log output turns the target off).
pub const TARGET: &str = "elements::otel";

static ON: AtomicBool = AtomicBool::new(false);

/// Turns span creation on (the binary does, once its exporter is installed).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether spans are created.
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The span of one HTTP request: named `METHOD /route/{template}`; its
/// status is recorded by [`record_status`].
pub fn request(method: &Method, route: Option<&str>) -> Span {
    if !on() {
        return Span::none();
    }
    let method = crate::metrics::method_label(method);
    let route = route.unwrap_or("unmatched");
    tracing::info_span!(
        target: "elements::otel",
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    )
}

/// Records a request's status (a 5xx is an error).
pub fn record_status(span: &Span, status: u16) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// The span of one call to a provider's token endpoint (`element`: a
/// catalog key); [`record_outcome`] adds how it went.
pub fn provider_call(element: &str) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        target: "elements::otel",
        "provider call",
        otel.name = "provider call",
        otel.kind = "client",
        element = element,
        outcome = Empty,
        otel.status_code = Empty,
    )
}

/// The span of one upstream attempt of the API proxy (`element`: the
/// metrics label, a catalog key or `private`).
pub fn proxy_attempt(element: &str, method: &Method, attempt: u32) -> Span {
    if !on() {
        return Span::none();
    }
    tracing::info_span!(
        target: "elements::otel",
        "proxy upstream",
        otel.name = "proxy upstream",
        otel.kind = "client",
        element = element,
        http.request.method = crate::metrics::method_label(method),
        attempt = attempt,
        outcome = Empty,
        otel.status_code = Empty,
    )
}

/// Records how a provider or upstream call went (`ok` or `2xx`: success;
/// anything else marks the span as an error).
pub fn record_outcome(span: &Span, outcome: &str) {
    if span.is_none() {
        return;
    }
    span.record("outcome", outcome);
    if outcome != "ok" && outcome != "2xx" {
        span.record("otel.status_code", "error");
    }
}

/// The span to run a spawned task in: the caller's current span when spans
/// are on (so a detached provider call stays a child of its request).
pub fn current() -> Span {
    if on() {
        Span::current()
    } else {
        Span::none()
    }
}
