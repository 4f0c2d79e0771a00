//! The HTTP side: the router, the endpoint handlers, form parsing, client
//! authentication and the OAuth response shapes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

use super::state::{random_token, AuthCode, Inner, Shared};
use super::{
    AUTHORIZE_PATH, LEGACY_AUTHENTICATE_PATH, LEGACY_REFRESH_PATH, ME_PATH, REVOKE_PATH, TOKEN_PATH,
};

/// Characters left as-is when building redirect query strings (RFC 3986
/// unreserved characters).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The fake's routes over its state.
pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(AUTHORIZE_PATH, get(authorize))
        .route(
            super::CONSENT_PATH,
            get(super::consent::page).post(super::consent::decide),
        )
        .route(LEGACY_AUTHENTICATE_PATH, get(legacy_authenticate))
        .route(TOKEN_PATH, post(token).get(token_in_query))
        .route(REVOKE_PATH, post(revoke))
        .route(LEGACY_REFRESH_PATH, post(legacy_refresh))
        .route(ME_PATH, get(me))
        .with_state(shared)
}

pub(super) type Form = HashMap<String, String>;

async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params = match parse_form(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return oauth_error("invalid_request", &e),
    };
    let (client_id, redirect_uri) = match check_authorization_request(&shared, &params) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Some(rt) = param(&params, "response_type") {
        if rt != "code" {
            return oauth_error_status(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                "only response_type=code is supported",
            );
        }
    }
    let code = random_token("code-");
    shared.lock().codes.insert(
        code.clone(),
        AuthCode {
            client_id: client_id.to_string(),
            redirect_uri: redirect_uri.to_string(),
            redeemed: None,
            code_challenge: None,
        },
    );
    let mut pairs = vec![("code", code)];
    if let Some(state) = param(&params, "state") {
        pairs.push(("state", state.to_string()));
    }
    redirect(redirect_uri, &pairs)
}

async fn legacy_authenticate(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = match parse_form(query.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return oauth_error("invalid_request", &e),
    };
    let (client_id, redirect_uri) = match check_authorization_request(&shared, &params) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let mut inner = shared.lock();
    let family = inner.new_family(client_id);
    let access = shared.mint_access(&mut inner, family);
    let refresh = inner.mint_refresh(family);
    let mut pairs = vec![("access_token", access), ("refresh_token", refresh)];
    if let Some(expires_in) = &inner.expires_in {
        let text = match expires_in {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        pairs.push(("expires_in", text));
    }
    drop(inner);
    if let Some(state) = param(&params, "state") {
        pairs.push(("state", state.to_string()));
    }
    redirect(redirect_uri, &pairs)
}

/// A token request sent as GET with its fields in the query string (some
/// providers want that): the same as the POST.
async fn token_in_query(
    state: State<Arc<Shared>>,
    mut headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    token(state, headers, Bytes::from(query.unwrap_or_default())).await
}

/// RFC 7009 revocation: authenticates the client, revokes the family of the
/// token if it is known, and answers 200 either way (§2.2).
async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match parse_form_body(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let (client_id, secret) = match client_credentials(&headers, &form) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = shared.lock().authenticate(&client_id, secret.as_deref()) {
        return r.into_response();
    }
    let Some(token) = param(&form, "token") else {
        return oauth_error("invalid_request", "token is required");
    };
    shared.revocation_calls.fetch_add(1, Ordering::SeqCst);
    let mut inner = shared.lock();
    let family = inner
        .access_tokens
        .get(token)
        .copied()
        .or_else(|| inner.refresh_tokens.get(token).map(|rt| rt.family));
    if let Some(family) = family {
        shared.revoke_family(&mut inner, family);
    }
    StatusCode::OK.into_response()
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.token_calls.fetch_add(1, Ordering::SeqCst);
    let form = parse_form_body(&headers, &body);
    match form.as_ref().ok().and_then(|f| param(f, "grant_type")) {
        Some("refresh_token") => {
            shared.refresh_calls.fetch_add(1, Ordering::SeqCst);
        }
        Some("authorization_code") => {
            shared.code_exchanges.fetch_add(1, Ordering::SeqCst);
        }
        Some("client_credentials") => {
            shared
                .client_credentials_grants
                .fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }
    if let Some(response) = shared.before_response().await {
        return response;
    }
    let form = match form {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    let grant_type = match param(&form, "grant_type") {
        None => return oauth_error("invalid_request", "grant_type is required"),
        Some(g @ ("authorization_code" | "refresh_token" | "client_credentials")) => g,
        Some(other) => {
            return oauth_error(
                "unsupported_grant_type",
                &format!("grant_type `{other}` is not supported"),
            )
        }
    };
    let (client_id, secret) = match client_credentials(&headers, &form) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if let Err(r) = shared.lock().authenticate(&client_id, secret.as_deref()) {
        return r.into_response();
    }
    let response = if grant_type == "authorization_code" {
        shared.exchange_code(&form, &client_id)
    } else if grant_type == "client_credentials" {
        shared.client_credentials_grant(&client_id)
    } else {
        shared.refresh(&form, &client_id)
    };
    shared.after_processing(response).await
}

async fn legacy_refresh(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.refresh_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(response) = shared.before_response().await {
        return response;
    }
    let form = match parse_form_body(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r.into_response(),
    };
    match param(&form, "grant_type") {
        None => return oauth_error("invalid_request", "grant_type is required"),
        Some("refresh_token") => {}
        Some(other) => {
            return oauth_error(
                "unsupported_grant_type",
                &format!("grant_type `{other}` is not supported here"),
            )
        }
    }
    let Some(client_id) = param(&form, "client_id") else {
        return oauth_error("invalid_request", "client_id is required");
    };
    if !shared.lock().clients.contains_key(client_id) {
        return oauth_error("invalid_client", "unknown client_id");
    }
    let response = shared.refresh(&form, client_id);
    shared.after_processing(response).await
}

async fn me(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    if token.is_some_and(|t| shared.lock().access_token_valid(t)) {
        return json_response(StatusCode::OK, json!({"ok": true}));
    }
    let mut response = json_response(
        StatusCode::UNAUTHORIZED,
        json!({"ok": false, "error": "invalid_token"}),
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    response
}

/// Validates `client_id` and `redirect_uri` of an authorization request and
/// that the client is registered.
pub(super) fn check_authorization_request<'a>(
    shared: &Shared,
    params: &'a Form,
) -> Result<(&'a str, &'a str), OAuthError> {
    let Some(client_id) = param(params, "client_id") else {
        return Err(OAuthError::new("invalid_request", "client_id is required"));
    };
    let Some(redirect_uri) = param(params, "redirect_uri") else {
        return Err(OAuthError::new(
            "invalid_request",
            "redirect_uri is required",
        ));
    };
    if !shared.lock().clients.contains_key(client_id) {
        return Err(OAuthError::new("invalid_client", "unknown client_id"));
    }
    Ok((client_id, redirect_uri))
}

/// A non-empty parameter (RFC 6749 §3.1: parameters without a value are
/// treated as omitted).
pub(super) fn param<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// Parses `application/x-www-form-urlencoded` (`form_urlencoded`); a
/// repeated parameter is an error (RFC 6749 §3.1).
pub(super) fn parse_form(input: &str) -> Result<Form, String> {
    let mut out = Form::new();
    for (k, v) in form_urlencoded::parse(input.as_bytes()) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter `{k}` is repeated"));
        }
    }
    Ok(out)
}

/// One form-encoded component (`+` is a space), as in HTTP Basic
/// credentials (RFC 6749 §2.3.1).
fn form_decode(s: &str) -> String {
    percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// Checks the content type and parses the body of a token request.
fn parse_form_body(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        // A JSON object of strings (`token_request_format = "json"`).
        let object: Map<String, Value> = serde_json::from_slice(body)
            .map_err(|_| OAuthError::new("invalid_request", "body is not a JSON object"))?;
        return object
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(OAuthError::new(
                    "invalid_request",
                    "JSON body members must be strings",
                )),
            })
            .collect();
    }
    if !mime.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return Err(OAuthError::new(
            "invalid_request",
            "expected Content-Type: application/x-www-form-urlencoded",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| OAuthError::new("invalid_request", "request body is not UTF-8"))?;
    parse_form(text).map_err(|e| OAuthError::new("invalid_request", &e))
}

/// Client credentials from HTTP Basic (RFC 6749 §2.3.1: id and secret
/// form-urlencoded, then base64) or from the body. Returns `(client_id,
/// client_secret)`.
fn client_credentials(
    headers: &HeaderMap,
    form: &Form,
) -> Result<(String, Option<String>), OAuthError> {
    let body_id = param(form, "client_id");
    let body_secret = param(form, "client_secret");
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, rest)| rest.trim());
    if let Some(encoded) = basic {
        let malformed = || OAuthError::new("invalid_client", "malformed Basic credentials");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| malformed())?;
        let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
        let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
        let (id, secret) = (form_decode(id), form_decode(secret));
        if body_secret.is_some() {
            return Err(OAuthError::new(
                "invalid_request",
                "client authenticated with both HTTP Basic and client_secret in the body",
            ));
        }
        if body_id.is_some_and(|b| b != id) {
            return Err(OAuthError::new(
                "invalid_request",
                "client_id in the body differs from HTTP Basic",
            ));
        }
        return Ok((id, Some(secret)));
    }
    let Some(id) = body_id else {
        return Err(OAuthError::new("invalid_request", "client_id is required"));
    };
    Ok((id.to_string(), body_secret.map(str::to_string)))
}

/// `302 Found` to `base` with `pairs` appended to its query.
pub(super) fn redirect(base: &str, pairs: &[(&str, String)]) -> Response {
    let mut location = base.to_string();
    let separator = if location.ends_with('?') || location.ends_with('&') {
        ""
    } else if location.contains('?') {
        "&"
    } else {
        "?"
    };
    location.push_str(separator);
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect();
    location.push_str(&query.join("&"));
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut response = StatusCode::FOUND.into_response();
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => oauth_error(
            "invalid_request",
            "redirect_uri is not a valid header value",
        ),
    }
}

pub(super) fn token_response(inner: &Inner, access: &str, refresh: Option<&str>) -> Response {
    let mut body = Map::new();
    body.insert("access_token".into(), Value::from(access));
    if let Some(refresh) = refresh {
        body.insert("refresh_token".into(), Value::from(refresh));
    }
    if let Some(expires_in) = &inner.expires_in {
        body.insert("expires_in".into(), expires_in.clone());
    }
    if let Some(token_type) = &inner.token_type {
        body.insert("token_type".into(), token_type.clone());
    }
    for (k, v) in &inner.token_extra {
        body.insert(k.clone(), v.clone());
    }
    json_response(StatusCode::OK, Value::Object(body))
}

/// An OAuth error answered with status 400 (`{"error","error_description"}`).
pub(super) struct OAuthError {
    error: &'static str,
    description: String,
}

impl OAuthError {
    pub(super) fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            error,
            description: description.into(),
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        oauth_error(self.error, &self.description)
    }
}

pub(super) fn oauth_error(error: &str, description: &str) -> Response {
    oauth_error_status(StatusCode::BAD_REQUEST, error, description)
}

pub(super) fn oauth_error_status(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

pub(super) fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}
