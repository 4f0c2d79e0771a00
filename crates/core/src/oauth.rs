//! OAuth requests and responses, as plain data.
//!
//! Building the authorization URL is pure. Talking to a token endpoint is
//! split in two pure halves — a [`ProviderRequest`] to send and a
//! [`ProviderResponse`] to parse — joined by a [`Transport`] that the caller
//! supplies (the server's is reqwest; tests may bring their own).

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde_json::Value;

use crate::config::{Configuration, MissingConfiguration};
use crate::secret::Secret;
use crate::spec::{TokenRequestFormat, TokenResponseSpec};

/// A request for an authorization URL, as `GET /elements/{key}/oauth/url`
/// receives it. Every field is optional so that the element can name all the
/// missing ones at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthUrlRequest {
    /// `apiKey`: the OAuth client id.
    pub api_key: Option<String>,
    /// `apiSecret`: the client secret (HubSpot's legacy flow: the Portal ID).
    pub api_secret: Option<String>,
    /// `scope`, as given (the element joins nothing; the caller's separators stay).
    pub scope: Option<String>,
    /// `callbackUrl`, used exactly as received.
    pub callback_url: Option<String>,
    /// `state`, passed through to the callback.
    pub state: Option<String>,
    /// The PKCE code verifier, for elements that use PKCE.
    pub code_verifier: Option<String>,
    /// Further named parameters the element may read (for example HubSpot's
    /// `oauth.flow`). They are not appended to the URL blindly.
    pub params: BTreeMap<String, String>,
}

impl OAuthUrlRequest {
    /// The value of a required parameter, or its name pushed onto `missing`.
    pub fn require<'a>(
        value: &'a Option<String>,
        name: &'static str,
        missing: &mut Vec<&'static str>,
    ) -> &'a str {
        match value.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => v,
            None => {
                missing.push(name);
                ""
            }
        }
    }
}

/// A built authorization URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthUrl {
    /// Where to send the user.
    pub url: String,
}

/// Why an OAuth request could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The element does not use OAuth.
    #[error("element `{0}` does not use OAuth")]
    NotOAuth(String),
    /// Required request parameters are missing.
    #[error("missing required parameters: {}", .0.join(", "))]
    MissingParameters(Vec<&'static str>),
    /// A parameter has a value the element cannot use.
    #[error("invalid parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The instance configuration lacks what the request needs.
    #[error(transparent)]
    MissingConfiguration(#[from] MissingConfiguration),
}

/// A form POST to a provider's token endpoint. `Debug` shows the URL and the
/// field names, never their values.
///
/// ```
/// use elements_core::ProviderRequest;
///
/// let request = ProviderRequest::post("https://provider.example/token")
///     .field("grant_type", "refresh_token")
///     .field("refresh_token", "rt-123");
/// assert_eq!(request.get("grant_type"), Some("refresh_token"));
/// assert!(!format!("{request:?}").contains("rt-123"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderRequest {
    /// The endpoint.
    pub url: String,
    /// Form fields, in order. Values are secrets (codes, tokens, client secrets).
    pub form: Vec<(String, Secret)>,
    /// HTTP Basic credentials (`client_id`, `client_secret`), if the element uses them.
    pub basic_auth: Option<(String, Secret)>,
    /// How the fields travel: a form POST (the default), a JSON POST, or a
    /// GET query string (`token_request_format`).
    pub format: TokenRequestFormat,
}

impl ProviderRequest {
    /// A POST to `url` with no fields yet.
    pub fn post(url: impl Into<String>) -> Self {
        ProviderRequest {
            url: url.into(),
            form: Vec::new(),
            basic_auth: None,
            format: TokenRequestFormat::Form,
        }
    }

    /// Adds a form field.
    pub fn field(mut self, name: &str, value: impl Into<Secret>) -> Self {
        self.form.push((name.to_owned(), value.into()));
        self
    }

    /// The value of the first form field named `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.expose())
    }

    /// Every secret this request carries, for scrubbing provider messages.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &str> {
        self.form
            .iter()
            .map(|(_, v)| v.expose())
            .chain(self.basic_auth.iter().map(|(_, s)| s.expose()))
            .filter(|s| s.len() >= 4)
    }
}

impl fmt::Debug for ProviderRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderRequest")
            .field("url", &self.url)
            .field(
                "form",
                &self
                    .form
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("basic_auth", &self.basic_auth.as_ref().map(|(id, _)| id))
            .field("format", &self.format)
            .finish()
    }
}

/// A provider's answer.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderResponse {
    /// HTTP status.
    pub status: u16,
    /// The body (bounded by the transport).
    pub body: Vec<u8>,
}

impl fmt::Debug for ProviderResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderResponse")
            .field("status", &self.status)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Why a provider could not be reached or answered unusably at the HTTP level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No answer within the timeout.
    #[error("provider timed out")]
    Timeout,
    /// The connection failed.
    #[error("provider unreachable: {0}")]
    Connect(String),
    /// The body exceeded the size limit.
    #[error("provider response too large")]
    TooLarge,
    /// Anything else.
    #[error("provider request failed: {0}")]
    Other(String),
}

/// Sends provider requests. Implementations must not log form values.
#[async_trait]
pub trait Transport: Send + Sync {
    /// Sends one request and returns the provider's answer.
    async fn send(&self, request: &ProviderRequest) -> Result<ProviderResponse, TransportError>;
}

/// Tokens received from a provider.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, when the provider sent one.
    pub refresh_token: Option<Secret>,
    /// `token_type`, usually `bearer`.
    pub token_type: Option<String>,
    /// Seconds until the access token expires, as the provider said it
    /// (numbers and numeric strings are accepted; anything else is `None`).
    /// Clamping is the caller's policy.
    pub expires_in: Option<i64>,
    /// Granted scope, when reported.
    pub scope: Option<String>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Parses a lenient `expires_in`: an integer, a float, or a numeric string.
pub fn lenient_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
}

/// A code to exchange for tokens.
#[derive(Debug, Clone, Copy)]
pub struct CodeExchange<'a> {
    /// The authorization code from the callback.
    pub code: &'a Secret,
    /// The instance configuration (client id and secret, callback URL).
    pub configuration: &'a Configuration,
    /// The PKCE verifier used when the URL was built.
    pub code_verifier: Option<&'a str>,
}

/// A refresh token to exchange for new tokens.
#[derive(Debug, Clone, Copy)]
pub struct RefreshRequest<'a> {
    /// The current refresh token.
    pub refresh_token: &'a Secret,
    /// The instance configuration (client id and secret).
    pub configuration: &'a Configuration,
}

/// Why a provider did not give us tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The request could not be built.
    #[error(transparent)]
    Request(#[from] OAuthError),
    /// The provider could not be reached.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The provider refused (4xx): a bad code, a revoked or reused refresh token.
    #[error("provider refused the request ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` code, e.g. `invalid_grant`.
        error: Option<String>,
        /// A sanitized provider message (no secrets, bounded length).
        message: String,
    },
    /// The provider failed (5xx): transient, retry later.
    #[error("provider failed ({status})")]
    Unavailable {
        /// HTTP status.
        status: u16,
    },
    /// The provider answered 2xx with something that is not a token response.
    #[error("provider sent an invalid token response: {0}")]
    InvalidResponse(String),
}

impl ProviderError {
    /// Whether the grant itself is dead (`invalid_grant` or a provider-specific
    /// equivalent): retrying with the same refresh token cannot succeed.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, ProviderError::Refused { error: Some(e), .. } if e == "invalid_grant")
    }

    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ProviderError::Transport(_) | ProviderError::Unavailable { .. }
        )
    }
}

const MAX_PROVIDER_MESSAGE: usize = 200;

/// Makes a provider's message safe to show: no control characters, none of
/// the secrets we sent, bounded length.
pub(crate) fn sanitize_message(message: &str, request: &ProviderRequest) -> String {
    let mut clean: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    for secret in request.secrets() {
        if clean.contains(secret) {
            clean = clean.replace(secret, "********");
        }
    }
    if clean.chars().count() > MAX_PROVIDER_MESSAGE {
        clean = clean.chars().take(MAX_PROVIDER_MESSAGE).collect::<String>() + "...";
    }
    clean.trim().to_owned()
}

/// Parses a standard OAuth 2.0 token response (RFC 6749 §5.1 and §5.2).
pub(crate) fn parse_token_response(
    response: &ProviderResponse,
    request: &ProviderRequest,
) -> Result<TokenSet, ProviderError> {
    parse_token_response_with(response, request, &TokenResponseSpec::default())
}

/// The body as a JSON object, or as `application/x-www-form-urlencoded`
/// pairs (GitHub answers that way without `Accept: application/json`) when
/// it has an `access_token` or an `error`.
fn body_object(body: &[u8]) -> Option<serde_json::Map<String, Value>> {
    if let Ok(obj) = serde_json::from_slice::<serde_json::Map<String, Value>>(body) {
        return Some(obj);
    }
    let text = std::str::from_utf8(body).ok()?.trim();
    if text.is_empty() || text.contains(|c: char| c.is_whitespace() || c == '<' || c == '{') {
        return None;
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    let mut obj = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=')?;
        obj.insert(decode(name)?, Value::String(decode(value)?));
    }
    (obj.contains_key("access_token") || obj.contains_key("error")).then_some(obj)
}

/// The value at a dotted path (`authed_user.access_token`): the whole path
/// as one key first, then member by member.
pub(crate) fn value_at<'v>(
    obj: &'v serde_json::Map<String, Value>,
    path: &str,
) -> Option<&'v Value> {
    if let Some(v) = obj.get(path) {
        return Some(v);
    }
    let mut parts = path.split('.');
    let mut current = obj.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// Parses a token response whose fields are where `fields` says
/// (`[oauth.token_response]`); a path that is absent falls back to the
/// standard top-level name. Errors are read from the standard top-level
/// `error`, `error_description` and `message` members; a 2xx answer with an
/// `error` (Slack's `{"ok": false, "error": ...}`) is a refusal too.
pub(crate) fn parse_token_response_with(
    response: &ProviderResponse,
    request: &ProviderRequest,
    fields: &TokenResponseSpec,
) -> Result<TokenSet, ProviderError> {
    let json = body_object(&response.body);
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    if response.status >= 500 {
        return Err(ProviderError::Unavailable {
            status: response.status,
        });
    }
    let Some(obj) = json else {
        return Err(if (200..300).contains(&response.status) {
            ProviderError::InvalidResponse("body is not a JSON object".into())
        } else {
            ProviderError::Refused {
                status: response.status,
                error: None,
                message: "provider refused the request".into(),
            }
        });
    };
    let error = text(obj.get("error"));
    if !(200..300).contains(&response.status) || error.is_some() {
        let message = ["error_description", "message", "error"]
            .iter()
            .find_map(|k| text(obj.get(*k)))
            .unwrap_or_else(|| "provider refused the request".into());
        return Err(ProviderError::Refused {
            status: if response.status < 400 {
                400
            } else {
                response.status
            },
            error: error.map(|e| sanitize_message(&e, request)),
            message: sanitize_message(&message, request),
        });
    }
    // A mapped path that is absent falls back to the standard top-level name:
    // providers that nest the first answer often answer a refresh flat.
    let field = |path: &str, standard: &str| value_at(&obj, path).or_else(|| obj.get(standard));
    let access_token = text(field(&fields.access_token, "access_token"))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ProviderError::InvalidResponse(format!("no `{}`", fields.access_token)))?;
    Ok(TokenSet {
        access_token: Secret::new(access_token),
        refresh_token: text(field(&fields.refresh_token, "refresh_token"))
            .filter(|t| !t.is_empty())
            .map(Secret::new),
        token_type: text(field(&fields.token_type, "token_type")),
        expires_in: field(&fields.expires_in, "expires_in").and_then(lenient_seconds),
        scope: text(field(&fields.scope, "scope")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, body: &str) -> ProviderResponse {
        ProviderResponse {
            status,
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn parses_tokens_and_lenient_expiry() {
        let req = ProviderRequest::post("https://x");
        let t = parse_token_response(
            &resp(
                200,
                r#"{"access_token":"a","refresh_token":"r","expires_in":"1800"}"#,
            ),
            &req,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "a");
        assert_eq!(t.expires_in, Some(1800));
        let t = parse_token_response(&resp(200, r#"{"access_token":"a","expires_in":[1]}"#), &req)
            .unwrap();
        assert_eq!((t.expires_in, t.refresh_token), (None, None));
    }

    #[test]
    fn refusals_are_sanitized() {
        let req = ProviderRequest::post("https://x").field("refresh_token", "rt-secret-1");
        let err = parse_token_response(
            &resp(
                400,
                r#"{"error":"invalid_grant","error_description":"token rt-secret-1 was\nrevoked"}"#,
            ),
            &req,
        )
        .unwrap_err();
        assert!(err.is_invalid_grant());
        let ProviderError::Refused { message, .. } = err else {
            panic!("expected a refusal")
        };
        assert_eq!(message, "token ******** was revoked");
        assert!(parse_token_response(&resp(503, "oops"), &req)
            .unwrap_err()
            .is_transient());
    }

    #[test]
    fn nested_fields_by_dotted_path() {
        let req = ProviderRequest::post("https://x");
        let fields = TokenResponseSpec {
            access_token: "authed_user.access_token".into(),
            refresh_token: "authed_user.refresh_token".into(),
            expires_in: "authed_user.expires_in".into(),
            token_type: "authed_user.token_type".into(),
            scope: "authed_user.scope".into(),
            keep: BTreeMap::new(),
        };
        let body = r#"{"ok":true,"app_id":"A1","authed_user":{"id":"U1","scope":"search:read",
            "access_token":"xoxp-1","token_type":"user","refresh_token":"xoxe-1","expires_in":43200},
            "team":{"id":"T1"}}"#;
        let t = parse_token_response_with(&resp(200, body), &req, &fields).unwrap();
        assert_eq!(t.access_token.expose(), "xoxp-1");
        assert_eq!(t.refresh_token.unwrap().expose(), "xoxe-1");
        assert_eq!(t.expires_in, Some(43200));
        assert_eq!(t.token_type.as_deref(), Some("user"));
        assert_eq!(t.scope.as_deref(), Some("search:read"));
        // A refresh answers flat: the standard names are the fallback.
        let flat = r#"{"ok":true,"access_token":"xoxe.xoxp-2","refresh_token":"xoxe-2","expires_in":43200,"token_type":"user"}"#;
        let t = parse_token_response_with(&resp(200, flat), &req, &fields).unwrap();
        assert_eq!(t.access_token.expose(), "xoxe.xoxp-2");
        assert_eq!(t.refresh_token.unwrap().expose(), "xoxe-2");
        let err =
            parse_token_response_with(&resp(200, r#"{"ok":true}"#), &req, &fields).unwrap_err();
        assert_eq!(
            err,
            ProviderError::InvalidResponse("no `authed_user.access_token`".into())
        );
        let slack_refusal = r#"{"ok":false,"error":"invalid_code"}"#;
        let err = parse_token_response_with(&resp(200, slack_refusal), &req, &fields).unwrap_err();
        assert!(
            matches!(err, ProviderError::Refused { status: 400, error: Some(ref e), .. } if e == "invalid_code")
        );
        let renamed = TokenResponseSpec {
            scope: "scopes".into(),
            ..Default::default()
        };
        let t = parse_token_response_with(
            &resp(200, r#"{"access_token":"a","scopes":"repository account"}"#),
            &req,
            &renamed,
        )
        .unwrap();
        assert_eq!(t.scope.as_deref(), Some("repository account"));
        let dotted_key = TokenResponseSpec {
            access_token: "x.token".into(),
            ..Default::default()
        };
        let t =
            parse_token_response_with(&resp(200, r#"{"x.token":"k"}"#), &req, &dotted_key).unwrap();
        assert_eq!(t.access_token.expose(), "k");
    }

    #[test]
    fn form_encoded_responses() {
        let req = ProviderRequest::post("https://x");
        let t = parse_token_response(
            &resp(
                200,
                "access_token=gho_16C7e42F&scope=repo%2Cgist&token_type=bearer",
            ),
            &req,
        )
        .unwrap();
        assert_eq!(t.access_token.expose(), "gho_16C7e42F");
        assert_eq!(t.scope.as_deref(), Some("repo,gist"));
        let err = parse_token_response(
            &resp(
                200,
                "error=bad_verification_code&error_description=The+code+is+wrong",
            ),
            &req,
        )
        .unwrap_err();
        let ProviderError::Refused { error, message, .. } = err else {
            panic!("expected a refusal")
        };
        assert_eq!(error.as_deref(), Some("bad_verification_code"));
        assert_eq!(message, "The code is wrong");
        assert!(matches!(
            parse_token_response(&resp(200, "<html>a=b</html>"), &req),
            Err(ProviderError::InvalidResponse(_))
        ));
        assert!(matches!(
            parse_token_response(&resp(200, "a=b"), &req),
            Err(ProviderError::InvalidResponse(_))
        ));
    }

    #[test]
    fn debug_never_shows_form_values() {
        let req = ProviderRequest::post("https://x").field("client_secret", "hunter2");
        assert!(!format!("{req:?}").contains("hunter2"));
    }
}
