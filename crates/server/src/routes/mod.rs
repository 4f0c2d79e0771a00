//! Route modules, each with its own `router()`, and the shared fallbacks and
//! extractors.

use std::borrow::Cow;

use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

pub mod element_instances;
pub mod elements;
pub mod instances;
pub mod organizations;
pub mod private_elements;
pub mod webhooks;

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
            .map_err(|e: PathRejection| {
                ApiError::BadRequest(format!("invalid path: {}", e.body_text()))
            })
    }
}

/// The query string as ordered, decoded pairs (`application/x-www-form-urlencoded`:
/// `+` is a space). A value that is not UTF-8 once decoded is our JSON 400,
/// never silently replaced.
pub struct QueryPairs(pub Vec<(String, String)>);

/// Decodes one name or value of a query string (`+` is a space); borrowed
/// when there is nothing to decode (most names and values: issue 19).
pub fn decode_component(s: &str) -> Result<Cow<'_, str>, ApiError> {
    if !s.contains(['+', '%']) {
        return Ok(s.into());
    }
    let spaced: Cow<'_, str> = if s.contains('+') {
        s.replace('+', " ").into()
    } else {
        s.into()
    };
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|c| Cow::Owned(c.into_owned()))
        .map_err(|_| {
            ApiError::BadRequest(
                "invalid query string: it must be valid UTF-8 after percent-decoding".into(),
            )
        })
}

/// The raw `name=value` pairs of a query string, in order (empty pairs
/// skipped, a bare name has an empty value), not decoded.
pub fn raw_pairs(raw: &str) -> impl Iterator<Item = (&str, &str)> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Decodes a raw query string strictly.
pub fn parse_query(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    raw_pairs(raw)
        .map(|(name, value)| {
            Ok((
                decode_component(name)?.into_owned(),
                decode_component(value)?.into_owned(),
            ))
        })
        .collect()
}

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or("")).map(QueryPairs)
    }
}

/// Parses an instance id: a positive integer.
pub fn instance_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadRequest("instance id must be a positive integer".into()))
}

#[cfg(test)]
mod tests {
    use super::parse_query;

    #[test]
    fn query_pairs_are_decoded_only_where_needed() {
        let pairs = |raw: &str| parse_query(raw).unwrap();
        assert_eq!(
            pairs("apiKey=abc&scope=contacts-rw%20offline&x=a+b&&empty=&bare"),
            [
                ("apiKey".into(), "abc".into()),
                ("scope".into(), "contacts-rw offline".into()),
                ("x".into(), "a b".into()),
                ("empty".into(), String::new()),
                ("bare".into(), String::new()),
            ]
        );
        assert_eq!(
            pairs("n%61me=%E6%9D%B1%2B"),
            [("name".into(), "東+".into())]
        );
        assert!(parse_query("bad=%FF").is_err());
    }
}
