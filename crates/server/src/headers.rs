//! Header rules: the size cap on the request head (431), and `no-store` on
//! every response that carries a token or secret.

use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use axum::http::HeaderValue;
use axum::response::{IntoResponse as _, Response};

/// The largest request head (request target plus every header line)
/// answered normally: 32 KiB, between nginx's default (8 KiB lines, 32 KiB
/// total) and Node's 16 KiB. Larger heads get a JSON 431; above
/// [`crate::listener::MAX_HEAD_BYTES`] the parser answers a bare 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The message of the 431.
pub const TOO_LARGE_MESSAGE: &str =
    "request headers too large: the request line and headers must total at most 32 KiB (32768 bytes)";

/// The size of a request head as sent: `name: value\r\n` per header, plus
/// the request target.
pub fn head_size(request: &Request) -> usize {
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |pq| pq.as_str().len());
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target
}

/// Marks a response that carries a token or secret as not to be stored by
/// any cache (RFC 6749 §5.1; `Pragma` for HTTP/1.0 caches).
pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `value` as a JSON answer that no cache may keep ([`no_store`]),
/// serialized into one buffer sized for the hot paths' answers (the
/// credentials, `oauth/url`: no reallocation on the way; issue 19).
pub fn json_no_store<T: serde::Serialize>(value: &T) -> Response {
    let mut bytes = Vec::with_capacity(512);
    if let Err(e) = serde_json::to_writer(&mut bytes, value) {
        return crate::error::ApiError::Internal(format!("answer: {e}")).into_response();
    }
    let mut response = Response::new(axum::body::Body::from(bytes));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    no_store(response)
}
