//! compat: CORS for browser clients. Only the origins of the
//! `cors_allowed_origins` setting (exact `scheme://host[:port]`) get CORS
//! headers; with none set (the default) no CORS header is ever sent, so
//! browsers keep the same-origin policy.
//!
//! Allowed origins may send `Authorization` (the API's only credential, a
//! header, never a cookie: credentials mode stays off) and read the paging
//! and request-id headers.

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Headers a browser client may read on allowed origins.
pub const EXPOSED: &[&str] = &[
    "elements-returned-count",
    "elements-total-count",
    "elements-next-page-token",
    "elements-instance-id",
    "x-request-id",
];

/// Adds the CORS layer to a router when origins are allowed.
pub trait ApplyCors {
    /// The router with CORS for `origins` (unchanged for none).
    fn apply_cors(self, origins: &[String]) -> Self;
}

impl ApplyCors for axum::Router {
    fn apply_cors(self, origins: &[String]) -> Self {
        match layer(origins) {
            Some(cors) => self.layer(cors),
            None => self,
        }
    }
}

/// The CORS layer for `origins`; `None` when none is allowed.
pub fn layer(origins: &[String]) -> Option<CorsLayer> {
    let allowed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o.trim().trim_end_matches('/')).ok())
        .collect();
    if allowed.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(allowed))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers(
            EXPOSED
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect::<Vec<_>>(),
        )
        .max_age(std::time::Duration::from_secs(600));
    Some(layer)
}
