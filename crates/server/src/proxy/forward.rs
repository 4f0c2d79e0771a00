//! Forwarding one request: URL, credential, body, retries, refresh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use elements_core::{
    apply_credential, oauth1_authorization, oauth1_consumer, Authentication, CredentialError,
    ElementSpec, OAuth1Request, Secret,
};
use elements_store::Instance;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use reqwest::Url;

use super::{idempotent, path, RETRY_HEADER};
use crate::error::ApiError;
use crate::tokens::now_seconds;
use crate::AppState;

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus ours, never forwarded.
const STRIPPED: [&str; 11] = [
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "proxy-connection",
    "host",
    "authorization",
];

/// Whether a header is not to be passed on (either way).
fn stripped(name: &HeaderName, connection: &[String]) -> bool {
    let n = name.as_str();
    STRIPPED.contains(&n)
        || n.starts_with("proxy-")
        || n == RETRY_HEADER
        || n == super::ERROR_HEADER
        || connection.iter().any(|c| c == n)
}

/// The names listed in `Connection` headers.
fn connection_names(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    let connection = connection_names(from);
    for (name, value) in from {
        if !stripped(name, &connection) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn credential_error(e: CredentialError) -> ApiError {
    match e {
        CredentialError::Missing(m) => ApiError::Conflict(format!(
            "the instance cannot be used: {m} (its element now needs it)"
        )),
        other => ApiError::Conflict(other.to_string()),
    }
}

/// The request body: buffered (replayable) or streamed once.
enum Payload {
    Buffered(Bytes),
    Streamed(Option<Body>),
}

/// The URL to call: the element's base URL, the path and the query. The
/// result must stay on the base URL's origin and under its path.
fn target(
    spec: &ElementSpec,
    instance: &Instance,
    tail: &str,
    query: Option<&str>,
) -> Result<Url, ApiError> {
    let base = spec.base_url_for(&instance.configuration)?.ok_or_else(|| {
        ApiError::BadRequest(format!(
            "element `{}` declares no `api_base_url`: its API cannot be proxied",
            spec.key
        ))
    })?;
    let base_url = Url::parse(&base).map_err(|e| {
        ApiError::Conflict(format!(
            "element `{}` has an invalid API base URL: {e}",
            spec.key
        ))
    })?;
    let mut text = base.trim_end_matches('/').to_owned();
    if !tail.is_empty() {
        text.push('/');
        text.push_str(tail);
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        text.push('?');
        text.push_str(q);
    }
    let url = Url::parse(&text)
        .map_err(|e| ApiError::BadRequest(format!("the path does not make a valid URL: {e}")))?;
    let base_path = base_url.path().trim_end_matches('/');
    if url.scheme() != base_url.scheme()
        || url.host() != base_url.host()
        || url.port_or_known_default() != base_url.port_or_known_default()
        || !url.username().is_empty()
        || !url.path().starts_with(base_path)
    {
        return Err(ApiError::BadRequest(
            "the path leaves the element's API base URL".into(),
        ));
    }
    Ok(url)
}

/// Adds the instance's credential to a request for `url`.
fn authorize(
    spec: &ElementSpec,
    instance: &Instance,
    method: &Method,
    url: &Url,
    form: &[(String, String)],
) -> Result<(Url, Vec<(HeaderName, HeaderValue)>), ApiError> {
    let mut url = url.clone();
    let mut headers = Vec::new();
    let header = |name: &str, value: &Secret| -> Result<(HeaderName, HeaderValue), ApiError> {
        let name = HeaderName::try_from(name).map_err(|_| {
            ApiError::Conflict(format!(
                "the credential header `{name}` is not a valid header name"
            ))
        })?;
        let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
            ApiError::Conflict(format!(
                "the credential header `{name}` has a value that is not a valid header value"
            ))
        })?;
        value.set_sensitive(true);
        Ok((name, value))
    };
    if spec.authentication == Authentication::Oauth1 {
        let (consumer_key, consumer_secret) = oauth1_consumer(&instance.configuration)
            .map_err(|m| credential_error(CredentialError::Missing(m)))?;
        let token = instance
            .tokens
            .access_token
            .as_ref()
            .map(Secret::expose)
            .unwrap_or_default();
        let token_secret = instance.tokens.refresh_token.clone().unwrap_or_default();
        let nonce = crate::pkce::random_token(16);
        let authorization = oauth1_authorization(&OAuth1Request {
            method: method.as_str(),
            url: url.as_str(),
            params: form,
            consumer_key,
            consumer_secret: &consumer_secret,
            token: Some(token),
            token_secret: Some(&token_secret),
            callback: None,
            verifier: None,
            nonce: &nonce,
            timestamp: now_seconds(),
            version: true,
        })?;
        headers.push(header("Authorization", &authorization)?);
        return Ok((url, headers));
    }
    let applied = apply_credential(
        spec,
        &instance.configuration,
        instance.tokens.access_token.as_ref(),
    )
    .map_err(credential_error)?;
    if !applied.query.is_empty() {
        let mut pairs = url.query_pairs_mut();
        for (name, value) in &applied.query {
            pairs.append_pair(name, value.expose());
        }
    }
    for (name, value) in &applied.headers {
        headers.push(header(name, value)?);
    }
    Ok((url, headers))
}

/// Whether the request body is `application/x-www-form-urlencoded`.
fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            m.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// Our 413, naming the limit (marked as ours).
fn too_large(limit: u64) -> Response {
    let mut r = super::ours(ApiError::BadRequest(format!(
        "the request body is larger than the proxy's limit of {limit} bytes \
         (max_request_body_bytes)"
    )));
    *r.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    r
}

/// A `Retry-After` in seconds (an HTTP date counts as the cap).
fn retry_after(headers: &HeaderMap, cap: Duration) -> Duration {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(|v| match v.trim().parse::<u64>() {
            Ok(s) => Duration::from_secs(s),
            Err(_) => cap + Duration::from_secs(1),
        })
        .unwrap_or(Duration::ZERO)
}

/// The jittered exponential backoff before retry `n` (1-based).
fn backoff(base: Duration, n: u32) -> Duration {
    let full = base.saturating_mul(1 << n.min(10).saturating_sub(1));
    let jitter = rand::random_range(0.5..1.0);
    full.mul_f64(jitter)
}

/// Forwards `request` to the provider of `instance`.
pub(super) async fn forward(
    state: &AppState,
    instance: crate::cache::SharedInstance,
    tail: &str,
    hub: bool,
    request: Request,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let settings = &state.proxy.settings;
    let element =
        crate::private_elements::lookup(state, instance.organization_id, &instance.element_key)
            .await
            .ok();
    let spec = element.as_ref().map(|e| e.spec()).ok_or_else(|| {
        ApiError::Conflict(format!(
            "element `{}` of instance {} is not in this server's catalog",
            instance.element_key, instance.id
        ))
    })?;
    path::check(tail).map_err(ApiError::BadRequest)?;
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let mapped = if hub {
        path::map_resource(&spec.resources, method.as_str(), tail)
    } else {
        None
    };
    let tail = mapped.as_deref().unwrap_or(tail);
    let url = target(spec, &instance, tail, parts.uri.query())?;
    let kind = spec.authentication;
    let oauth2 = matches!(
        kind,
        Authentication::Oauth2 | Authentication::Oauth2ClientCredentials
    );
    let mut instance = instance;
    if kind.holds_tokens() && instance.tokens.access_token.is_none() {
        return Err(ApiError::Conflict(format!(
            "instance {} has no OAuth tokens (element `{}`)",
            instance.id, instance.element_key
        )));
    }
    if oauth2 {
        instance = state.tokens.fresh_shared(instance).await?;
    }

    // The body: buffered when small enough to replay, streamed otherwise.
    let length = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    if length.is_some_and(|l| l > settings.max_request_body) {
        return Ok(too_large(settings.max_request_body));
    }
    // OAuth 1.0a signs the fields of a form body (RFC 5849 §3.4.1.3): such
    // a body is read whole (up to the limit) and its fields signed.
    let sign_form = kind == Authentication::Oauth1 && is_form(&parts.headers);
    let mut form = Vec::new();
    let mut payload = match length {
        _ if sign_form => {
            let limit = settings.max_request_body;
            let bytes = match http_body_util::Limited::new(body, limit as usize)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(too_large(limit));
                }
                Err(_) => {
                    return Err(ApiError::BadRequest(
                        "the request body could not be read".into(),
                    ))
                }
            };
            form = url::form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            Payload::Buffered(bytes)
        }
        Some(l) if l <= settings.replay_body => Payload::Buffered(
            http_body_util::Limited::new(body, settings.replay_body as usize)
                .collect()
                .await
                .map_err(|_| ApiError::BadRequest("the request body could not be read".into()))?
                .to_bytes(),
        ),
        None if !chunked => Payload::Buffered(Bytes::new()),
        _ => Payload::Streamed(Some(body)),
    };

    let mut out_headers = HeaderMap::new();
    copy_headers(&parts.headers, &mut out_headers);
    let opted_in = parts
        .headers
        .get(RETRY_HEADER)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let max_retries = spec
        .proxy
        .as_ref()
        .and_then(|p| p.max_retries)
        .unwrap_or(settings.max_retries);
    let may_retry = idempotent(&method) || opted_in;

    let mut retries = 0u32;
    let mut waited = Duration::ZERO;
    let mut refreshed = false;
    let path_for_log = url.path().to_owned();
    // Bounded metrics labels: catalog keys; any organization-private element
    // (a clone that kept a built-in's key too) is `private`, as for
    // provider calls.
    let label = element
        .as_deref()
        .map_or("private", crate::metrics::element_label);
    // Set when a streamed body goes over the limit (the upload is cut off).
    let over_limit = Arc::new(AtomicBool::new(false));
    loop {
        let replayable = matches!(payload, Payload::Buffered(_));
        let (signed_url, cred_headers) = authorize(spec, &instance, &method, &url, &form)?;
        let mut builder = state
            .proxy
            .client
            .request(method.clone(), signed_url)
            .headers(out_headers.clone());
        for (name, value) in cred_headers {
            builder = builder.header(name, value);
        }
        builder = match &mut payload {
            Payload::Buffered(b) => builder.body(b.clone()),
            Payload::Streamed(b) => {
                let limit = settings.max_request_body;
                let mut seen = 0u64;
                let over = over_limit.clone();
                let stream = b
                    .take()
                    .unwrap_or_default()
                    .into_data_stream()
                    .map(move |c| {
                        let c = c?;
                        seen += c.len() as u64;
                        if seen > limit {
                            over.store(true, Ordering::SeqCst);
                            return Err(axum::Error::new("the request body is too large"));
                        }
                        Ok(c)
                    });
                builder.body(reqwest::Body::wrap_stream(stream))
            }
        };
        // A streamed upload may take longer than the timeout; the client's
        // read timeout still cuts off an upstream that stops answering.
        let wait = if replayable {
            settings.timeout
        } else {
            Duration::from_secs(24 * 3600)
        };
        let span = crate::trace::proxy_attempt(label, &method, retries + 1);
        let sent = if span.is_none() {
            tokio::time::timeout(wait, builder.send()).await
        } else {
            use tracing::Instrument as _;
            tokio::time::timeout(wait, builder.send())
                .instrument(span.clone())
                .await
        };
        if !span.is_none() {
            let outcome = match &sent {
                Ok(Ok(r)) => crate::metrics::status_class(r.status()),
                Ok(Err(e)) if e.is_connect() => "connect",
                Ok(Err(_)) => "error",
                Err(_) => "timeout",
            };
            crate::trace::record_outcome(&span, outcome);
        }
        if over_limit.load(Ordering::SeqCst) {
            log(
                label,
                spec,
                &method,
                &path_for_log,
                None,
                started,
                retries,
                "too_large",
            );
            return Ok(too_large(settings.max_request_body));
        }
        let budget_left = settings.retry_budget.saturating_sub(waited);
        let delay = match sent {
            Err(_) => {
                log(
                    label,
                    spec,
                    &method,
                    &path_for_log,
                    None,
                    started,
                    retries,
                    "timeout",
                );
                return Ok(gateway_timeout(format!(
                    "the provider did not answer within {} ms",
                    settings.timeout.as_millis()
                )));
            }
            Ok(Err(e)) => {
                let transient = e.is_connect() || e.is_request() && !e.is_body() && !e.is_builder();
                let d = backoff(settings.backoff, retries + 1);
                match (transient && may_retry && replayable && retries < max_retries)
                    .then_some(d)
                    .filter(|d| *d <= budget_left)
                {
                    Some(d) => d,
                    None => {
                        let outcome = if e.is_timeout() {
                            "timeout"
                        } else if e.is_connect() {
                            "connect"
                        } else {
                            "error"
                        };
                        log(
                            label,
                            spec,
                            &method,
                            &path_for_log,
                            None,
                            started,
                            retries,
                            outcome,
                        );
                        if e.is_timeout() {
                            return Ok(gateway_timeout(format!(
                                "the provider did not answer within {} ms",
                                settings.timeout.as_millis()
                            )));
                        }
                        return Err(ApiError::BadGateway(
                            "the provider could not be reached".into(),
                        ));
                    }
                }
            }
            Ok(Ok(response)) => {
                let status = response.status();
                if status == StatusCode::UNAUTHORIZED && oauth2 && !refreshed && replayable {
                    refreshed = true;
                    match state.tokens.refresh(instance.id, true).await {
                        Ok(renewed) => {
                            instance = renewed.into();
                            continue;
                        }
                        // No new token to be had: the provider's 401 goes back.
                        Err(failure) => {
                            tracing::info!(element = %spec.key, failure = ?failure, "proxy: refresh after a 401 failed");
                            log(
                                label,
                                spec,
                                &method,
                                &path_for_log,
                                Some(status),
                                started,
                                retries,
                                "answered",
                            );
                            return Ok(respond(response));
                        }
                    }
                }
                let wanted = if !(may_retry && replayable && retries < max_retries) {
                    None
                } else if status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE
                {
                    let after = retry_after(response.headers(), settings.retry_after_cap);
                    (after <= settings.retry_after_cap)
                        .then(|| after.max(backoff(settings.backoff, retries + 1)))
                } else if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED {
                    Some(backoff(settings.backoff, retries + 1))
                } else {
                    None
                };
                match wanted.filter(|d| *d <= budget_left) {
                    Some(d) => d,
                    None => {
                        log(
                            label,
                            spec,
                            &method,
                            &path_for_log,
                            Some(status),
                            started,
                            retries,
                            "answered",
                        );
                        return Ok(respond(response));
                    }
                }
            }
        };
        retries += 1;
        crate::metrics::proxy_retry(label);
        waited += delay;
        tokio::time::sleep(delay).await;
    }
}

/// Logs a proxied call and records its metrics (`label`: the element's
/// metrics label; `outcome`: `answered`, with `status`, or a failure).
#[allow(clippy::too_many_arguments)]
fn log(
    label: &str,
    spec: &ElementSpec,
    method: &Method,
    path: &str,
    status: Option<StatusCode>,
    started: Instant,
    retries: u32,
    outcome: &'static str,
) {
    let class = match status {
        Some(s) if outcome == "answered" => crate::metrics::status_class(s),
        _ => outcome,
    };
    crate::metrics::proxy_call(label, class, started.elapsed());
    tracing::info!(
        element = %spec.key,
        method = %method,
        path = %path,
        status = status.map(|s| s.as_u16()),
        latency_ms = started.elapsed().as_millis() as u64,
        retries,
        outcome,
        "proxied"
    );
}

/// The provider's answer, streamed back, hop-by-hop headers stripped.
fn respond(response: reqwest::Response) -> Response {
    let status = response.status();
    let mut headers = HeaderMap::new();
    copy_headers(response.headers(), &mut headers);
    let mut out = Response::new(Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// Our 504 (marked as ours).
fn gateway_timeout(message: String) -> Response {
    let mut r = super::ours(ApiError::BadGateway(message));
    *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    r
}
