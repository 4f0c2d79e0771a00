//! Request ids and the one log line per request.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// A random id per request, returned in error bodies and the
/// `X-Request-Id` header, and logged.
#[derive(Debug, Clone)]
pub struct RequestId(String);

impl RequestId {
    /// A fresh id.
    pub fn new() -> Self {
        RequestId(crate::pkce::random_token(12))
    }

    /// The id of the request being served on this task.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(Clone::clone).ok()
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// Middleware: assigns the id, runs the request inside its scope, logs one
/// line with method, path (never the query: it may carry secrets), status
/// and latency.
pub async fn middleware(request: Request, next: Next) -> Response {
    let id = RequestId::new();
    let method = request.method().clone();
    let path = crate::connect::loggable_path(request.uri().path());
    let start = Instant::now();
    let mut response = CURRENT.scope(id.clone(), next.run(request)).await;
    let latency_us = start.elapsed().as_micros() as u64;
    let status = response.status().as_u16();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(id.as_str()) {
        headers.insert("x-request-id", value);
    }
    // Bodies are JSON only; browsers must not sniff them into HTML.
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    tracing::info!(
        target: "elements::http",
        request_id = id.as_str(),
        %method,
        path = ?path.chars().take(200).collect::<String>(),
        status,
        latency_us,
        "request"
    );
    response
}
