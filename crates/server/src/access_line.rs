//! The one access line per request ([`crate::request_id`] logs it on the
//! way out): what it holds, and where it goes.
//!
//! By default it is a `tracing` event (target `elements::http`, message
//! `request`, fields `request_id`, `method`, `path`, `status`,
//! `latency_us`), so any subscriber sees it: an embedding application's,
//! the tests'. The `elements` binary installs a [`Sink`] instead
//! ([`set_sink`]): it writes the same line, byte for byte, straight into
//! its log buffer. Through `tracing` the line cost ~0.55 µs of a ~10 µs
//! request, most of it handing six field values one by one through the
//! dynamic `Visit` interface to the formatter; written directly it costs a
//! fraction of that (issue 19, BENCHMARKS.md). The sink is asked only when
//! the line is enabled: `ELEMENTS_LOG` directives (`elements::http=warn`,
//! `warn`...) turn it off either way.

use std::sync::OnceLock;

use axum::http::Method;

/// The target of the access line.
pub const TARGET: &str = "elements::http";

/// One answered request, as its access line shows it. `path` never
/// carries the query (it may hold secrets) and is cut to 200 characters.
#[derive(Debug, Clone, Copy)]
pub struct AccessLine<'a> {
    /// The request id (16 base64url characters).
    pub request_id: &'a str,
    /// The request's method.
    pub method: &'a Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The answer's status.
    pub status: u16,
    /// From the request's arrival to its answer's head, in microseconds.
    pub latency_us: u64,
}

/// Where access lines go instead of a `tracing` event.
pub trait Sink: Send + Sync + 'static {
    /// Writes one line (called only when the line is enabled).
    fn write(&self, line: &AccessLine<'_>);
}

static SINK: OnceLock<Box<dyn Sink>> = OnceLock::new();

/// Sends every later access line of the process to `sink` instead of a
/// `tracing` event; once per process (a second sink is handed back).
pub fn set_sink(sink: Box<dyn Sink>) -> Result<(), Box<dyn Sink>> {
    SINK.set(sink)
}

/// Logs `line`: to the sink when one is set and the line is enabled, else
/// as the `tracing` event.
pub fn log(line: &AccessLine<'_>) {
    match SINK.get() {
        Some(sink) => {
            if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
                sink.write(line);
            }
        }
        // The message as a `&str` field, not a format string: the same
        // line (`request request_id=...`), written without `core::fmt`.
        None => tracing::info!(
            target: TARGET,
            message = "request",
            request_id = line.request_id,
            method = %line.method,
            path = line.path,
            status = line.status,
            latency_us = line.latency_us,
        ),
    }
}
