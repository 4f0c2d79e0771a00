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
    /// Why the body could not be read, when it could not (the connection
    /// broke mid-body): the status and request id above are still the
    /// server's.
    pub read_error: Option<String>,
    /// The whole body as text (lossy UTF-8), whatever its shape.
    raw: String,
}

impl ApiError {
    /// The server's message (or the text of a body that was not JSON, or
    /// why the body could not be read).
    pub fn message(&self) -> &str {
        self.body
            .as_ref()
            .map(|b| b.message.as_str())
            .or(self.text.as_deref())
            .or(self.read_error.as_deref())
            .unwrap_or("")
    }

    /// The whole body of the answer as text (lossy UTF-8), whatever its
    /// shape: for searching everything the server said (a test that no
    /// secret leaks into an error, say). Empty when the body could not be
    /// read.
    pub fn raw(&self) -> &str {
        &self.raw
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
    /// A success answer with another status than the route documents (a
    /// 200 where a 201 was due, say): the server and this client disagree.
    #[error("unexpected status {got} (expected {expected})")]
    UnexpectedStatus {
        /// The documented success status.
        expected: StatusCode,
        /// The status the server answered.
        got: StatusCode,
        /// The `X-Request-Id` header.
        request_id: Option<String>,
    },
}

impl Error {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Decode { status, .. } => Some(*status),
            Error::Transport(e) => e.status(),
            Error::BaseUrl(_) => None,
            Error::UnexpectedStatus { got, .. } => Some(*got),
        }
    }

    /// The whole body of a refusal as text ([`ApiError::raw`]), if this is one.
    pub fn body_text(&self) -> Option<&str> {
        self.api().map(ApiError::raw)
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
    match response.bytes().await {
        Ok(bytes) => api_error(status, request_id, elements_error, Ok(&bytes)),
        Err(e) => api_error(status, request_id, elements_error, Err(e.to_string())),
    }
}

/// The [`Error::Api`] of a non-success answer whose body was read (`Ok`)
/// or could not be (`Err`, why).
fn api_error(
    status: StatusCode,
    request_id: Option<String>,
    elements_error: bool,
    bytes: Result<&[u8], String>,
) -> Error {
    let (body, text, raw, read_error) = match bytes {
        Ok(bytes) => {
            let body = serde_json::from_slice::<ErrorBody>(bytes)
                .ok()
                .filter(|b| !b.message.is_empty());
            let text = body
                .is_none()
                .then(|| String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned());
            let raw = String::from_utf8_lossy(bytes).into_owned();
            (body, text, raw, None)
        }
        Err(why) => (None, None, String::new(), Some(why)),
    };
    Error::Api(Box::new(ApiError {
        status,
        request_id,
        body,
        text,
        elements_error,
        read_error,
        raw,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_refusal_keeps_its_fields_and_its_whole_text() {
        let raw = br#"{"requestId":"r-1","message":"missing required configuration: a","missing":["a"],"extra":"kept-in-raw"}"#;
        let err = api_error(StatusCode::BAD_REQUEST, Some("r-1".into()), false, Ok(raw));
        let api = err.api().expect("a refusal");
        assert_eq!(api.status, StatusCode::BAD_REQUEST);
        assert_eq!(api.message(), "missing required configuration: a");
        assert_eq!(api.missing(), ["a".to_owned()]);
        assert_eq!(api.text, None);
        assert_eq!(api.read_error, None);
        assert_eq!(api.raw(), std::str::from_utf8(raw).unwrap());
        assert_eq!(err.body_text(), Some(api.raw()));
        assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    }

    #[test]
    fn a_refusal_that_is_not_json_keeps_a_kib_as_text_and_all_as_raw() {
        let long = format!("<html>{}</html>", "x".repeat(3000));
        let err = api_error(StatusCode::BAD_GATEWAY, None, true, Ok(long.as_bytes()));
        let api = err.api().unwrap();
        assert_eq!(api.body, None);
        assert_eq!(api.text.as_deref().map(str::len), Some(1024));
        assert_eq!(api.raw(), long);
        assert!(api.elements_error);
    }

    #[test]
    fn an_unreadable_refusal_keeps_its_status_and_request_id() {
        let err = api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some("r-2".into()),
            false,
            Err("connection closed before message completed".into()),
        );
        assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
        let api = err.api().expect("still a refusal");
        assert_eq!(api.request_id.as_deref(), Some("r-2"));
        assert_eq!(
            api.read_error.as_deref(),
            Some("connection closed before message completed")
        );
        assert_eq!(api.message(), "connection closed before message completed");
        assert_eq!(api.raw(), "");
    }

    #[test]
    fn an_unexpected_success_status_names_both() {
        let err = Error::UnexpectedStatus {
            expected: StatusCode::CREATED,
            got: StatusCode::OK,
            request_id: Some("r-3".into()),
        };
        assert_eq!(err.status(), Some(StatusCode::OK));
        assert_eq!(
            err.to_string(),
            "unexpected status 200 OK (expected 201 Created)"
        );
        assert_eq!(err.body_text(), None);
    }
}
