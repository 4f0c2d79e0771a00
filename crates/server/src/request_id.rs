//! Request ids, and the one per-request layer of the router: request id,
//! head size cap, failed-authentication limiter, metrics and the one log
//! line per request.
//!
//! These used to be four `from_fn` layers; each costs a boxed future and a
//! boxed clone of the inner service per request, so they are one
//! hand-written layer now ([`Layer`]; issue 19: the per-request overhead is
//! shared by every route). The order of the old stack is kept: the 431 and
//! 429 answers carry the request id, are counted by route and are logged
//! like any other answer.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use tokio::task::futures::TaskLocalFuture;
use tracing::instrument::Instrumented;
use tracing::Instrument as _;

use crate::error::ApiError;
use crate::AppState;

tokio::task_local! {
    static CURRENT: RequestId;
}

/// Random bytes per id: 12, i.e. 16 base64url characters.
const ID_BYTES: usize = 12;
/// The id's length in characters.
const ID_LEN: usize = 16;

/// The header every response carries.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");

/// A random id per request, returned in error bodies and the
/// `X-Request-Id` header, and logged. Held inline (16 base64url
/// characters): making, cloning and scoping one allocates nothing.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; ID_LEN]);

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

impl RequestId {
    /// A fresh id: 12 random bytes, base64url.
    pub fn new() -> Self {
        let mut random = [0u8; ID_BYTES];
        rand::rng().fill_bytes(&mut random);
        let mut id = [0u8; ID_LEN];
        // 12 bytes always encode to exactly 16 characters.
        let written = URL_SAFE_NO_PAD
            .encode_slice(random, &mut id)
            .unwrap_or_default();
        debug_assert_eq!(written, ID_LEN);
        RequestId(id)
    }

    /// The id of the request being served on this task.
    pub fn current() -> Option<RequestId> {
        CURRENT.try_with(|id| *id).ok()
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        // base64url output is ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

/// At most the first `max` characters of `text` (no allocation).
fn prefix_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// The per-request layer (installed once by [`crate::router_full`]):
///
/// 1. assigns the request id and runs the request inside its scope (error
///    bodies read it), and returns it as `X-Request-Id` on every response,
///    with `X-Content-Type-Options: nosniff`;
/// 2. answers 431 to a head larger than [`crate::headers::MAX_HEADER_BYTES`];
/// 3. refuses requests with credentials from a locked-out address and
///    counts every 401 ([`crate::auth_limit`]);
/// 4. counts and times the request by route template, method and status
///    ([`crate::metrics`]);
/// 5. logs one line with method, path (never the query: it may carry
///    secrets), status, latency and the request id.
///
/// A hand-written tower layer rather than `axum::middleware::from_fn`:
/// steps 2 and 3 need nothing asynchronous, so the route is called at
/// once from [`PerRequest::call`] (no clone of the inner service, no boxed
/// `Next`, no extractor round trip of the request's parts), and only the
/// answer's side is a future, a named one ([`Answer`]; issue 19: measured
/// in BENCHMARKS.md).
#[derive(Clone)]
pub struct Layer {
    state: AppState,
}

impl Layer {
    /// The layer over `state`'s limiter.
    pub fn new(state: AppState) -> Self {
        Layer { state }
    }
}

impl<S> tower_layer::Layer<S> for Layer {
    type Service = PerRequest<S>;

    fn layer(&self, inner: S) -> PerRequest<S> {
        PerRequest {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service of [`Layer`] around one route.
#[derive(Clone)]
pub struct PerRequest<S> {
    inner: S,
    state: AppState,
}

impl<S> tower_service::Service<Request> for PerRequest<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Answer<S::Future> {
        let start = Instant::now();
        let id = RequestId::new();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        // The URI shares the request head's bytes: its clone copies no text.
        let uri = request.uri().clone();
        let span = crate::trace::request(&method, route.as_ref().map(MatchedPath::as_str));
        let ip = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        // Steps 2 and 3, before the route sees the request.
        let refused = if crate::headers::head_size(&request) > crate::headers::MAX_HEADER_BYTES {
            Some(ApiError::HeadersTooLarge)
        } else {
            ip.filter(|_| request.headers().contains_key(AUTHORIZATION))
                .and_then(|ip| self.state.auth_limiter.locked(ip))
                .map(|retry_after| ApiError::TooManyFailedAuthentications { retry_after })
        };
        let routed = match refused {
            Some(error) => Routed::Refused {
                response: Some(CURRENT.sync_scope(id, || error.into_response())),
            },
            None if span.is_none() => Routed::Plain {
                future: CURRENT.scope(id, self.inner.call(request)),
            },
            None => Routed::Traced {
                future: CURRENT
                    .scope(id, self.inner.call(request))
                    .instrument(span.clone()),
            },
        };
        Answer {
            routed,
            done: Some(Done {
                id,
                start,
                route,
                method,
                uri,
                span,
                ip,
                state: self.state.clone(),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`PerRequest`]: the route's future, then steps 1, 3
    /// (the 401 count), 4 and 5. A named future rather than a boxed `async`
    /// block: one allocation fewer per request on every route (issue 19).
    pub struct Answer<F> {
        #[pin]
        routed: Routed<F>,
        done: Option<Done>,
    }
}

pin_project_lite::pin_project! {
    #[project = RoutedProjection]
    enum Routed<F> {
        /// Answered before the route (431, 429).
        Refused { response: Option<Response> },
        /// The route, in the request id's scope.
        Plain { #[pin] future: TaskLocalFuture<RequestId, F> },
        /// The same, inside the request's tracing span (OpenTelemetry on).
        Traced { #[pin] future: Instrumented<TaskLocalFuture<RequestId, F>> },
    }
}

/// What the way out needs from the way in.
struct Done {
    id: RequestId,
    start: Instant,
    route: Option<MatchedPath>,
    method: Method,
    uri: Uri,
    span: tracing::Span,
    ip: Option<IpAddr>,
    state: AppState,
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = match this.routed.project() {
            RoutedProjection::Refused { response } => response.take(),
            RoutedProjection::Plain { future } => {
                Some(std::task::ready!(future.poll(cx)).unwrap_or_else(|n| match n {}))
            }
            RoutedProjection::Traced { future } => {
                Some(std::task::ready!(future.poll(cx)).unwrap_or_else(|n| match n {}))
            }
        };
        let (Some(mut response), Some(done)) = (answered, this.done.take()) else {
            panic!("request_id::Answer polled after it completed");
        };
        // Step 3: every 401 counts against the address.
        if response.status() == StatusCode::UNAUTHORIZED {
            if let Some(retry_after) = done.ip.and_then(|ip| done.state.auth_limiter.failed(ip)) {
                response = CURRENT.sync_scope(done.id, || {
                    ApiError::TooManyFailedAuthentications { retry_after }.into_response()
                });
            }
        }
        let path = crate::connect::loggable_path(done.uri.path());
        Poll::Ready(Ok(finish(
            done.id,
            done.start,
            done.route,
            &done.method,
            &path,
            &done.span,
            response,
        )))
    }
}

/// Steps 1, 4 and 5 on the way out: metrics, headers, the log line.
fn finish(
    id: RequestId,
    start: Instant,
    route: Option<MatchedPath>,
    method: &Method,
    path: &str,
    span: &tracing::Span,
    mut response: Response,
) -> Response {
    let elapsed = start.elapsed();
    let status = response.status();
    crate::trace::record_status(span, status.as_u16());
    crate::metrics::http_request(
        route.as_ref().map(MatchedPath::as_str),
        method,
        status,
        elapsed,
    );
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_bytes(&id.0) {
        headers.insert(X_REQUEST_ID.clone(), value);
    }
    // Bodies are JSON only; browsers must not sniff them into HTML.
    headers.insert(
        X_CONTENT_TYPE_OPTIONS.clone(),
        HeaderValue::from_static("nosniff"),
    );
    crate::access_line::log(&crate::access_line::AccessLine {
        request_id: id.as_str(),
        method,
        path: prefix_chars(path, 200),
        status: status.as_u16(),
        latency_us: elapsed.as_micros() as u64,
    });
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_url_safe_characters_and_differ() {
        let a = RequestId::new();
        let b = RequestId::new();
        assert_eq!(a.as_str().len(), 16);
        assert!(a
            .as_str()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
        assert_eq!(format!("{a:?}"), format!("RequestId({:?})", a.as_str()));
    }

    #[test]
    fn the_logged_path_is_cut_at_a_character_boundary() {
        assert_eq!(prefix_chars("abc", 200), "abc");
        assert_eq!(prefix_chars("ééé", 2), "éé");
        assert_eq!(prefix_chars("", 2), "");
    }
}
