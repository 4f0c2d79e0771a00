//! The client's error: a refusal of the server (its status, Cloud Elements'
//! JSON error body and the request id) or a failure to talk to it.

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

/// Cloud Elements' error body, `{"requestId": "...", "message": "..."}`,
/// with the fields elements adds where useful.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The id of the request (also the `X-Request-Id` header).
    #[serde(default)]
    pub request_id: String,
    /// What was wrong.
    #[serde(default)]
    pub message: String,
    /// Missing configuration keys or query parameters, every one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<Vec<String>>,
    /// The provider's sanitized message when a provider refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_message: Option<String>,
    /// Seconds to wait after too many failed authentications (429).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// A non-success answer of the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `X-Request-Id` header, when the answer had one.
    pub request_id: Option<String>,
    /// The JSON error body; `None` when the body was not one (then
    /// [`ApiError::text`] holds what came).
    pub body: Option<ErrorBody>,
    /// The body as text when it was not Cloud Elements' JSON error (at most
    /// 1 KiB of it).
    pub text: Option<String>,
    /// Whether the answer carried `Elements-Error: true` (an error of
    /// elements itself, not of a provider, on the proxy routes).
    pub elements_error: bool,
}

impl ApiError {
    /// The server's message (or the text of a body that was not JSON).
    pub fn message(&self) -> &str {
        self.body
            .as_ref()
            .map(|b| b.message.as_str())
            .or(self.text.as_deref())
            .unwrap_or("")
    }

    /// The missing configuration keys or parameters a 400 lists.
    pub fn missing(&self) -> &[String] {
        self.body
            .as_ref()
            .and_then(|b| b.missing.as_deref())
            .unwrap_or(&[])
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message())?;
        if let Some(id) = &self.request_id {
            write!(f, " (request id {id})")?;
        }
        Ok(())
    }
}

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with a 4xx or 5xx status (boxed: the error
    /// stays small on the success path).
    #[error("the server refused the request: {0}")]
    Api(Box<ApiError>),
    /// The request could not be sent or its answer not read (connection,
    /// timeout, TLS; or credentials that are not valid header text).
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// A success answer whose body is not the documented shape.
    #[error("unexpected answer ({status}): {message}")]
    Decode {
        /// The HTTP status.
        status: StatusCode,
        /// What did not match.
        message: String,
        /// The `X-Request-Id` header.
        request_id: Option<String>,
    },
    /// The base URL given to [`crate::Client::new`] is not an absolute
    /// http(s) URL.
    #[error("invalid base URL: {0}")]
    BaseUrl(String),
}

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Decode { status, .. } => Some(*status),
            Error::Transport(e) => e.status(),
            Error::BaseUrl(_) => None,
        }
    }

    /// The refusal, if this is one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// Reads a non-success answer into an [`ApiError`].
pub(crate) async fn from_response(response: reqwest::Response) -> Error {
    let status = response.status();
    let request_id = crate::header(response.headers(), "x-request-id");
    let elements_error =
        crate::header(response.headers(), "elements-error").as_deref() == Some("true");
    let bytes = match response.bytes().await {
        Ok(b) => b,
        Err(e) => return Error::Transport(e),
    };
    let body = serde_json::from_slice::<ErrorBody>(&bytes)
        .ok()
        .filter(|b| !b.message.is_empty());
    let text = if body.is_none() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned();
        Some(text)
    } else {
        None
    };
    Error::Api(Box::new(ApiError {
        status,
        request_id,
        body,
        text,
        elements_error,
    }))
}
