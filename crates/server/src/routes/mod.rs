//! Route modules, each with its own `router()`, and the shared fallbacks.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub mod elements;
pub mod instances;

/// Any path outside the API.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such resource".into())
}

/// A known path with a method it does not support.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// `Path<T>` whose rejection is our JSON 400.
pub struct PathParam<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| PathParam(v))
            .map_err(|e: PathRejection| ApiError::BadRequest(format!("invalid path: {}", e.body_text())))
    }
}

/// The query string as ordered pairs; invalid encodings are our JSON 400.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryPairs(v))
            .map_err(|_: QueryRejection| {
                ApiError::BadRequest("invalid query string: it must be valid UTF-8 after percent-decoding".into())
            })
    }
}

/// Parses an instance id: a positive integer.
pub fn instance_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadRequest("instance id must be a positive integer".into()))
}
