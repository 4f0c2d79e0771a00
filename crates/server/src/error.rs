//! The one error type of the API and its JSON shape.
//!
//! Every error body is Cloud Elements' `{"requestId": "...", "message": "..."}`,
//! plus machine-readable fields where useful. 5xx bodies are generic; their
//! cause goes to the log, never to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use elements_core::{OAuthError, ProviderError};
use elements_store::StoreError;
use serde::Serialize;

use crate::request_id::RequestId;

/// An error answer.
#[derive(Debug)]
pub enum ApiError {
    /// 400 with a message naming what is wrong.
    BadRequest(String),
    /// 400: required configuration is missing (every key listed).
    MissingConfiguration(Vec<String>),
    /// 400: required query parameters are missing (every name listed).
    MissingParameters(Vec<&'static str>),
    /// 401, always the same message.
    Unauthorized,
    /// 403.
    Forbidden(String),
    /// 404.
    NotFound(String),
    /// 405.
    MethodNotAllowed,
    /// 409.
    Conflict(String),
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 429 with `Retry-After`: too many failed authentications from one
    /// client address.
    TooManyFailedAuthentications {
        /// Seconds until the next attempt is allowed.
        retry_after: u64,
    },
    /// 431: the request headers exceed the limit.
    HeadersTooLarge,
    /// The provider refused (a bad code, a dead grant): 4xx with its sanitized message.
    ProviderRefused {
        /// Our status.
        status: StatusCode,
        /// What happened.
        message: String,
        /// The provider's sanitized message.
        provider_message: String,
    },
    /// 502: the provider could not be reached or failed.
    BadGateway(String),
    /// 500: the cause is logged, not shown.
    Internal(String),
}

/// Every error answer: Cloud Elements' `{"requestId", "message"}`, plus
/// machine-readable fields where useful.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(example = json!({"requestId": "3f1c9b0a2d4e6f81", "message": "missing required configuration: oauth.callback.url, oauth.scope", "missing": ["oauth.callback.url", "oauth.scope"]}))]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody<'a> {
    /// The request id (also the `X-Request-Id` header).
    request_id: &'a str,
    /// What was wrong; the same for every 401; generic for every 5xx.
    message: &'a str,
    /// 400: every missing configuration key or query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    missing: Option<Vec<&'a str>>,
    /// A provider's refusal: its sanitized message.
    #[serde(skip_serializing_if = "Option::is_none")]
    provider_message: Option<&'a str>,
    /// 429: seconds until the next attempt (also `Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_seconds: Option<u64>,
}

/// The message of every 401.
pub const UNAUTHORIZED: &str =
    "invalid or missing credentials: expected `Authorization: User <secret>, Organization <secret>`";

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_)
            | ApiError::MissingConfiguration(_)
            | ApiError::MissingParameters(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyFailedAuthentications { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::ProviderRefused { status, .. } => *status,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Renders the error for one request.
    pub fn into_response_with(self, request_id: &str) -> Response {
        let status = self.status();
        let joined;
        let (message, missing, provider_message): (&str, Option<Vec<&str>>, Option<&str>) =
            match &self {
                ApiError::BadRequest(m)
                | ApiError::Forbidden(m)
                | ApiError::NotFound(m)
                | ApiError::Conflict(m)
                | ApiError::BadGateway(m) => (m, None, None),
                ApiError::MissingConfiguration(keys) => {
                    joined = format!("missing required configuration: {}", keys.join(", "));
                    (
                        &joined,
                        Some(keys.iter().map(String::as_str).collect()),
                        None,
                    )
                }
                ApiError::MissingParameters(names) => {
                    joined = format!("missing required parameters: {}", names.join(", "));
                    (&joined, Some(names.to_vec()), None)
                }
                ApiError::Unauthorized => (UNAUTHORIZED, None, None),
                ApiError::MethodNotAllowed => ("method not allowed on this resource", None, None),
                ApiError::PayloadTooLarge => ("request body is larger than 64 KiB", None, None),
                ApiError::UnsupportedMediaType => (
                    "request body must be JSON (Content-Type: application/json)",
                    None,
                    None,
                ),
                ApiError::TooManyFailedAuthentications { retry_after } => {
                    joined = format!(
                        "too many failed authentications from this client address: \
                         retry after {retry_after} seconds"
                    );
                    (&joined, None, None)
                }
                ApiError::HeadersTooLarge => (crate::headers::TOO_LARGE_MESSAGE, None, None),
                ApiError::ProviderRefused {
                    message,
                    provider_message,
                    ..
                } => (message, None, Some(provider_message.as_str())),
                ApiError::Internal(cause) => {
                    tracing::error!(request_id, %cause, "internal error");
                    ("internal error", None, None)
                }
            };
        let retry_after = match &self {
            ApiError::TooManyFailedAuthentications { retry_after } => Some(*retry_after),
            _ => None,
        };
        let body = ErrorBody {
            request_id,
            message,
            missing,
            provider_message,
            retry_after_seconds: retry_after,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The id of the request being served (set by the request-id
        // middleware); an error rendered outside a request gets a fresh one.
        let id = RequestId::current().unwrap_or_default();
        self.into_response_with(id.as_str())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::InstanceCap => ApiError::Forbidden(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        match e {
            OAuthError::MissingParameters(names) => ApiError::MissingParameters(names),
            OAuthError::MissingConfiguration(m) => ApiError::MissingConfiguration(m.keys),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Request(e) => e.into(),
            ProviderError::Refused { error, message, .. } => {
                let what = error.as_deref().unwrap_or("refused");
                ApiError::ProviderRefused {
                    status: StatusCode::BAD_REQUEST,
                    message: format!("the provider refused the request ({what})"),
                    provider_message: message,
                }
            }
            ProviderError::Transport(t) => ApiError::BadGateway(format!("provider error: {t}")),
            ProviderError::Unavailable { status } => {
                ApiError::BadGateway(format!("provider error: it answered {status}"))
            }
            ProviderError::InvalidResponse(m) => {
                ApiError::BadGateway(format!("provider sent an invalid token response: {m}"))
            }
        }
    }
}
