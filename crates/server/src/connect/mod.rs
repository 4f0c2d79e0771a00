//! Connect: the server runs the whole authorization flow behind a hosted
//! page, so connecting an account takes the app one API call and one
//! redirect (or popup).
//!
//! - `POST /connect/sessions` (User + Organization): a short-lived,
//!   single-use session; answers its token, the page URL and the expiry.
//! - `GET /connect/{token}`: the hosted page (server-rendered, no
//!   JavaScript needed). OAuth elements get a button to the provider;
//!   other elements a form asking the required configuration the session
//!   did not supply. `POST /connect/{token}` takes that form.
//! - `GET /connect/{token}/authorize`: binds a fresh `state` (and a PKCE
//!   verifier, kept server-side) to the session and sends the browser to
//!   the provider.
//! - `GET /oauth/callback`: the one callback of the deployment
//!   (`<public url>/elements/api-v2/oauth/callback`); takes the state once,
//!   exchanges the code, creates the instance through the same function as
//!   `POST /instances`, and sends the browser back to the app's
//!   `redirectUrl` with `instanceId` or `error` + `errorDescription`, or in
//!   popup mode posts the outcome to `window.opener` (for the exact origin
//!   of `redirectUrl`) from `/connect/popup.js` and closes.
//! - `GET /connect.js`: the app-side helper (`ElementsConnect.open(url)`).
//!
//! Session tokens and states are stored hashed; the session's
//! configuration and verifier sealed, and wiped once the session is used.
//! Every answer carries strict headers (CSP with `script-src 'self'`,
//! `frame-ancestors 'none'`, no referrer, no caching).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use elements_core::{keys, ConfigEntry, Configuration, Element, OAuthUrlRequest, Secret};
use elements_store::{
    hash_secret, now_millis, ConnectSession, ConnectStage, ConnectTaken, NewConnectSession,
};
use serde::Deserialize;

use crate::auth::Account;
use crate::body::{check_text, JsonObject, UniqueMap};
use crate::credentials::Provision;
use crate::error::ApiError;
use crate::request_id::RequestId;
use crate::routes::instances::{check_name, check_tags, provision_instance};
use crate::routes::QueryPairs;
use crate::wire::{ConfigValue, ElementRef};
use crate::AppState;

/// Fifteen minutes: time to sign in at the provider, not much more.
pub const DEFAULT_SESSION_SECONDS: i64 = 900;
/// The path of the OAuth callback under the public URL.
pub const CALLBACK_PATH: &str = "/elements/api-v2/oauth/callback";

const CONNECT_JS: &str = include_str!("connect.js");
const POPUP_JS: &str = include_str!("popup.js");
const MAX_REDIRECT: usize = 2048;
const MAX_CONFIG_KEY: usize = 200;
const MAX_CONFIG_VALUE: usize = 8192;
const MAX_END_USER: usize = 200;
/// Longer path tokens are no session of ours (ours are 43 characters).
const MAX_TOKEN: usize = 128;

/// Connect's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The public base URL without a trailing slash; `None`: connect is off.
    pub public_url: Option<String>,
    /// How long a session lasts, in seconds.
    pub session_seconds: i64,
}

impl Settings {
    /// Settings from the configuration; a public URL that is not an
    /// absolute http(s) URL without query or fragment is ignored (logged),
    /// so connect answers that the setting is missing.
    pub fn new(public_url: Option<&str>, session_seconds: i64) -> Settings {
        let public_url = public_url.and_then(|raw| {
            let trimmed = raw.trim().trim_end_matches('/');
            match reqwest::Url::parse(trimmed) {
                Ok(url)
                    if matches!(url.scheme(), "http" | "https")
                        && url.host_str().is_some()
                        && url.query().is_none()
                        && url.fragment().is_none() =>
                {
                    Some(trimmed.to_owned())
                }
                _ => {
                    tracing::error!(
                        "public_url is not an absolute http(s) URL without query: connect is off"
                    );
                    None
                }
            }
        });
        Settings {
            public_url,
            session_seconds: session_seconds.max(0),
        }
    }

    /// The deployment's OAuth callback URL.
    pub fn callback_url(&self) -> Option<String> {
        self.public_url
            .as_ref()
            .map(|u| format!("{u}{CALLBACK_PATH}"))
    }
}

/// `path` for the request log: a connect session token in it (a bearer
/// secret until used) is replaced by `[token]`. Any other path is
/// borrowed as it is (no copy per request).
pub fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    const PREFIX: &str = "/elements/api-v2/connect/";
    match path.strip_prefix(PREFIX) {
        Some(rest) if rest != "sessions" && rest != "popup.js" => {
            let tail = rest.split_once('/').map_or("", |(_, t)| t);
            if tail.is_empty() {
                format!("{PREFIX}[token]").into()
            } else {
                format!("{PREFIX}[token]/{tail}").into()
            }
        }
        _ => path.into(),
    }
}

/// Connect's routes, nested under `/elements/api-v2`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(api!("/connect/sessions"), post(create_session))
        .route(api!("/connect.js"), get(connect_js))
        .route(api!("/connect/popup.js"), get(popup_js))
        .route(api!("/connect/{token}"), get(page).post(submit))
        .route(api!("/connect/{token}/authorize"), get(authorize))
        .route(api!("/oauth/callback"), get(callback))
        .layer(axum::middleware::from_fn(security_headers))
}

/// The default policy; a page whose form may redirect to the app widens
/// `form-action` with the app's origin (and sets its own header).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(CONTENT_SECURITY_POLICY) {
        headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    }
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/connect.js",
    tag = "connect",
    responses(
        (status = 200, description = "The popup helper: `ElementsConnect.open(url)`", content_type = "text/javascript", body = String),
    )
)]
async fn connect_js() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        CONNECT_JS,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/connect/popup.js",
    tag = "connect",
    responses(
        (status = 200, description = "The script of the hosted page in a popup", content_type = "text/javascript", body = String),
    )
)]
async fn popup_js() -> Response {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8")], POPUP_JS).into_response()
}

// ------------------------------------------------------------ the API call

/// The body of `POST /connect/sessions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateSession {
    element: ElementRef,
    name: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, crate::openapi::ConfigValueSchema>)]
    configuration: UniqueMap<ConfigValue>,
    redirect_url: String,
    #[serde(default)]
    end_user: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

/// Whether the element is connected through the provider (a button) or
/// through a form. Credential kinds (apikey, basic, client credentials)
/// plug in here: an `oauth2` element with an `[oauth]` section goes to the
/// provider; every other kind (apikey, basic, client credentials, custom)
/// is a form over its required configuration.
fn uses_provider(element: &dyn Element) -> bool {
    element.spec().authentication == elements_core::Authentication::Oauth2
        && element.spec().oauth.is_some()
}

/// The entries the end user must type: required, without a default, and
/// not supplied by the session.
fn form_fields<'a>(element: &'a dyn Element, supplied: &Configuration) -> Vec<&'a ConfigEntry> {
    element
        .configuration()
        .iter()
        .filter(|c| c.required && c.default_value.is_none() && supplied.get(&c.key).is_none())
        .collect()
}

fn unavailable(message: &str) -> Response {
    let id = RequestId::current().unwrap_or_default();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "requestId": id.as_str(), "message": message })),
    )
        .into_response()
}

/// The origin (`scheme://host[:port]`) of an http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[utoipa::path(
    post,
    path = "/elements/api-v2/connect/sessions",
    tag = "connect",
    security(("UserOrganization" = [])),
    request_body(content = CreateSession, example = json!({"element": {"key": "github"}, "name": "Acme GitHub", "tags": ["acme"], "configuration": {"oauth.api.key": "<CLIENT ID>", "oauth.api.secret": "<CLIENT SECRET>", "oauth.scope": "repo"}, "redirectUrl": "https://app.example/connected", "endUser": "customer-42"})),
    responses(
        (status = 201, description = "The session: send the user to `url`", body = Object, example = json!({"token": "<SESSION TOKEN>", "url": "https://elements.example/elements/api-v2/connect/<SESSION TOKEN>", "expiresAt": "2026-01-01T00:15:00Z"})),
        (status = 400, description = "The body is wrong (the field is named), required configuration is missing, or `redirectUrl` is not on the organization's allow-list", body = crate::error::ErrorBody),
        (status = 404, description = "No such element", body = crate::error::ErrorBody),
        (status = 409, description = "The element is deactivated for the organization (PUT /elements/{keyOrId}/active re-activates it)", body = crate::error::ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 503, description = "The deployment has no public URL (`--public-url`) yet", body = crate::error::ErrorBody),
    )
)]
async fn create_session(
    State(state): State<AppState>,
    Account { principal }: Account,
    JsonObject(body): JsonObject<CreateSession>,
) -> Result<Response, ApiError> {
    // 503, not 4xx: the request is fine, this deployment has not been told
    // its public URL, and the same request succeeds once the operator sets it.
    let Some(callback) = state.connect.callback_url() else {
        return Ok(unavailable(
            "connect is not available: the server has no public URL; set `--public-url` \
             (`ELEMENTS_PUBLIC_URL`, config key `public_url`) to the URL browsers reach it at",
        ));
    };
    let element: &dyn Element = &*match (&body.element.key, body.element.id) {
        (Some(key), _) => {
            crate::private_elements::lookup_connect(&state, principal.organization_id, key).await?
        }
        (None, Some(id)) => {
            crate::private_elements::lookup_connect(
                &state,
                principal.organization_id,
                &id.to_string(),
            )
            .await?
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "`element.key` is required (or `element.id`)".into(),
            ))
        }
    };
    check_name(&body.name)?;
    let tags = body.tags.unwrap_or_else(|| vec![body.name.clone()]);
    check_tags(&tags)?;
    check_text("redirectUrl", &body.redirect_url, MAX_REDIRECT)?;
    elements_core::standard::check_callback_url(&body.redirect_url)
        .map_err(|e| ApiError::BadRequest(e.to_string().replace("callbackUrl", "redirectUrl")))?;
    let allowed = state.store.callback_urls(principal.organization_id).await?;
    if !allowed.is_empty() && !allowed.contains(&body.redirect_url) {
        return Err(ApiError::BadRequest(
            "`redirectUrl` is not in the organization's allow-list of callback URLs".into(),
        ));
    }
    if let Some(end_user) = &body.end_user {
        check_text("endUser", end_user, MAX_END_USER)?;
    }
    let popup = match body.mode.as_deref() {
        None | Some("redirect") => false,
        Some("popup") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`mode` must be `redirect` or `popup`".into(),
            ))
        }
    };
    let limits = &state.limits;
    if body.configuration.0.len() > limits.max_configuration_entries {
        return Err(ApiError::BadRequest(format!(
            "at most {} `configuration` entries are allowed (max_configuration_entries)",
            limits.max_configuration_entries
        )));
    }
    let mut configuration = Configuration::new();
    for (key, value) in body.configuration.0 {
        if key.is_empty() {
            return Err(ApiError::BadRequest(
                "`configuration` keys must not be empty".into(),
            ));
        }
        check_text("configuration key", &key, MAX_CONFIG_KEY)?;
        if key == keys::CALLBACK_URL {
            return Err(ApiError::BadRequest(format!(
                "`configuration.{key}` is set by the server for connect (its OAuth callback, \
                 {callback}); leave it out"
            )));
        }
        let value = value.into_text();
        if value.len() > MAX_CONFIG_VALUE || value.contains('\0') {
            return Err(ApiError::BadRequest(format!(
                "`configuration.{key}` must be at most {MAX_CONFIG_VALUE} bytes without NUL"
            )));
        }
        configuration.insert(key, value);
    }
    let size: usize = configuration.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > limits.max_configuration_bytes {
        return Err(ApiError::BadRequest(format!(
            "`configuration` keys and values total {size} bytes; at most {} are allowed (max_configuration_bytes)",
            limits.max_configuration_bytes
        )));
    }
    if uses_provider(element) {
        configuration.insert(keys::CALLBACK_URL, callback);
        element
            .validate_configuration(&configuration)
            .map_err(|m| ApiError::MissingConfiguration(m.keys))?;
        // HubSpot's legacy flow puts tokens in the redirect, not a code.
        if element.key() == "hubspot" && configuration.get("oauth.flow") != Some("current") {
            return Err(ApiError::BadRequest(
                "element `hubspot` connects through its current OAuth flow only: set \
                 `configuration.oauth.flow` to `current`"
                    .into(),
            ));
        }
    }
    // Expired sessions go on every creation (an index range delete).
    let now = now_millis();
    if let Err(e) = state.store.sweep_connect_sessions(now).await {
        tracing::warn!(error = %e, "connect: sweeping expired sessions failed");
    }
    let token = crate::pkce::random_token(32);
    let expires_at = now + state.connect.session_seconds * 1000;
    let session = state
        .store
        .create_connect_session(NewConnectSession {
            organization_id: principal.organization_id,
            user_id: principal.user.id,
            element_key: element.key().to_owned(),
            name: body.name,
            tags,
            configuration,
            redirect_url: body.redirect_url,
            end_user: body.end_user,
            popup,
            token_hash: hash_secret(&token),
            expires_at,
        })
        .await?;
    tracing::info!(
        session_id = session.id,
        element = element.key(),
        "connect session created"
    );
    let public = state.connect.public_url.as_deref().unwrap_or_default();
    let answer = serde_json::json!({
        "token": token,
        "url": format!("{public}/elements/api-v2/connect/{token}"),
        "expiresAt": crate::wire::rfc3339(expires_at),
    });
    Ok(crate::headers::no_store(
        (StatusCode::CREATED, Json(answer)).into_response(),
    ))
}

// ------------------------------------------------------------ pages

#[derive(Template)]
#[template(path = "connect/error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

struct Field<'a> {
    key: &'a str,
    label: &'a str,
    description: &'a str,
    secret: bool,
}

#[derive(Template)]
#[template(path = "connect/page.html")]
struct Page<'a> {
    element_name: &'a str,
    instance_name: &'a str,
    oauth: bool,
    scope: Option<String>,
    fields: Vec<Field<'a>>,
    action: String,
    popup: bool,
    error: Option<String>,
    expires: String,
}

#[derive(Template)]
#[template(path = "connect/done.html")]
struct DonePage<'a> {
    title: &'a str,
    origin: &'a str,
    instance_id: Option<i64>,
    error: Option<&'a str>,
    description: &'a str,
    return_url: &'a str,
}

fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "connect template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><h1>Something went wrong</h1>"),
            )
                .into_response()
        }
    }
}

fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &ErrorPage { title, message })
}

fn unknown_session() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Link not valid",
        "This connect link is not valid: no connect session has this address.",
    )
}

fn expired_session() -> Response {
    error_page(
        StatusCode::GONE,
        "Link expired",
        "This connect link has expired. Connect links last a few minutes; ask the application for a new one.",
    )
}

fn used_session() -> Response {
    error_page(
        StatusCode::GONE,
        "Link already used",
        "This connect link was already used. Each link connects one account once; ask the application for a new one.",
    )
}

fn store_failure(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "connect: store failure");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "The server could not reach its database. Try again in a moment.",
    )
}

/// The open session at `token`, or the page saying why not.
async fn open_session(state: &AppState, token: &str) -> Result<ConnectSession, Response> {
    if token.is_empty() || token.len() > MAX_TOKEN {
        return Err(unknown_session());
    }
    let session = match state.store.connect_session(&hash_secret(token)).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(unknown_session()),
        Err(e) => return Err(store_failure(e)),
    };
    if session.stage == ConnectStage::Done {
        return Err(used_session());
    }
    if session.expires_at <= now_millis() {
        return Err(expired_session());
    }
    Ok(session)
}

fn popup_requested(pairs: &[(String, String)]) -> bool {
    pairs.iter().any(|(k, v)| k == "popup" && v == "1")
}

fn when(unix_millis: i64) -> String {
    let format = time::macros::format_description!("[hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix_millis.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

fn render_page(
    state: &AppState,
    session: &ConnectSession,
    token: &str,
    popup: bool,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let Some(element) = state.registry.by_key(&session.element_key) else {
        return error_page(
            StatusCode::NOT_FOUND,
            "Not available",
            "The service this link connects to is no longer offered by this server.",
        );
    };
    let element = element.as_ref();
    let oauth = uses_provider(element);
    let popup = popup || session.popup;
    let base = format!("/elements/api-v2/connect/{token}");
    let action = if oauth {
        format!("{base}/authorize{}", if popup { "?popup=1" } else { "" })
    } else {
        base
    };
    let scope = element.spec().oauth.as_ref().and_then(|o| {
        session
            .configuration
            .get(keys::SCOPE)
            .map(str::to_owned)
            .or_else(|| o.default_scope.clone())
    });
    let fields = if oauth {
        Vec::new()
    } else {
        form_fields(element, &session.configuration)
            .into_iter()
            .map(|c| Field {
                key: &c.key,
                label: if c.name.is_empty() { &c.key } else { &c.name },
                description: &c.description,
                secret: c.secret,
            })
            .collect()
    };
    let mut response = render(
        status,
        &Page {
            element_name: &element.spec().name,
            instance_name: &session.name,
            oauth,
            scope,
            fields,
            action,
            popup,
            error,
            expires: when(session.expires_at),
        },
    );
    // The form's answer redirects to the app: let the form go there.
    if let Some(origin) = origin_of(&session.redirect_url) {
        let csp = CSP.replace(
            "form-action 'self'",
            &format!("form-action 'self' {origin}"),
        );
        if let Ok(value) = HeaderValue::from_str(&csp) {
            response
                .headers_mut()
                .insert(CONTENT_SECURITY_POLICY, value);
        }
    }
    response
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/connect/{token}",
    tag = "connect",
    params(
        ("token" = String, Path, description = "The session token of `POST /connect/sessions`"),
    ),
    responses(
        (status = 200, description = "The hosted page: the provider button or the credentials form", content_type = "text/html", body = String),
        (status = 404, description = "No such session (an HTML page)", content_type = "text/html", body = String),
        (status = 410, description = "The session expired or was already used (an HTML page)", content_type = "text/html", body = String),
    )
)]
async fn page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    QueryPairs(pairs): QueryPairs,
) -> Response {
    match open_session(&state, &token).await {
        Ok(session) => render_page(
            &state,
            &session,
            &token,
            popup_requested(&pairs),
            StatusCode::OK,
            None,
        ),
        Err(page) => page,
    }
}

/// The authorization request for the session's configuration.
fn authorization_request(
    configuration: &Configuration,
    state: String,
    verifier: Option<&Secret>,
) -> OAuthUrlRequest {
    let get = |k: &str| configuration.get(k).map(str::to_owned);
    OAuthUrlRequest {
        api_key: get(keys::API_KEY),
        api_secret: get(keys::API_SECRET),
        scope: get(keys::SCOPE),
        callback_url: get(keys::CALLBACK_URL),
        state: Some(state),
        code_verifier: verifier.map(|v| v.expose().to_owned()),
        params: configuration
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect::<BTreeMap<_, _>>(),
    }
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/connect/{token}/authorize",
    tag = "connect",
    params(
        ("token" = String, Path, description = "The session token of `POST /connect/sessions`"),
    ),
    responses(
        (status = 303, description = "To the provider's authorization URL"),
        (status = 400, description = "The session's element is not connected through a sign-in, or its settings cannot build the authorization URL (an HTML page)", content_type = "text/html", body = String),
        (status = 404, description = "No such session (an HTML page)", content_type = "text/html", body = String),
        (status = 410, description = "The session expired or was already used (an HTML page)", content_type = "text/html", body = String),
    )
)]
async fn authorize(
    State(state): State<AppState>,
    Path(token): Path<String>,
    QueryPairs(pairs): QueryPairs,
) -> Response {
    let session = match open_session(&state, &token).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let Some(element) =
        crate::private_elements::lookup(&state, session.organization_id, &session.element_key)
            .await
            .ok()
    else {
        return unknown_session();
    };
    if !uses_provider(element.as_ref()) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Nothing to authorize",
            "This service is connected with the form on the previous page, not through a sign-in.",
        );
    }
    let oauth_state = crate::pkce::random_token(32);
    let verifier = element
        .uses_pkce()
        .then(|| Secret::new(crate::pkce::new_code_verifier()));
    let request = authorization_request(
        &session.configuration,
        oauth_state.clone(),
        verifier.as_ref(),
    );
    let url = match element.oauth_url(&request) {
        Ok(url) => url.url,
        Err(e) => {
            tracing::warn!(session_id = session.id, error = %e, "connect: cannot build the authorization URL");
            return error_page(
                StatusCode::BAD_REQUEST,
                "Cannot continue",
                &format!("The application's settings for this service are incomplete: {e}"),
            );
        }
    };
    match state
        .store
        .begin_connect_authorization(
            session.id,
            &hash_secret(&oauth_state),
            verifier.as_ref(),
            popup_requested(&pairs),
            now_millis(),
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return expired_session(),
        Err(e) => return store_failure(e),
    }
    let Ok(location) = HeaderValue::from_str(&url) else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Cannot continue",
            "The provider's sign-in address is not a valid URL.",
        );
    };
    (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response()
}

/// The credentials form's answer.
#[utoipa::path(
    post,
    path = "/elements/api-v2/connect/{token}",
    tag = "connect",
    params(
        ("token" = String, Path, description = "The session token of `POST /connect/sessions`"),
    ),
    request_body(content = HashMap<String, String>, content_type = "application/x-www-form-urlencoded", description = "The credentials form (API-key, basic and client-credential elements)"),
    responses(
        (status = 303, description = "Back to the app's `redirectUrl` with `?instanceId=` or `?error=`"),
        (status = 400, description = "The form again, naming what is wrong", content_type = "text/html", body = String),
        (status = 404, description = "No such session (an HTML page)", content_type = "text/html", body = String),
        (status = 410, description = "The session expired or was already used (an HTML page)", content_type = "text/html", body = String),
    )
)]
async fn submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let session = match open_session(&state, &token).await {
        Ok(s) => s,
        Err(page) => return page,
    };
    let Some(element) =
        crate::private_elements::lookup(&state, session.organization_id, &session.element_key)
            .await
            .ok()
    else {
        return unknown_session();
    };
    let element = element.as_ref();
    if uses_provider(element) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Nothing to submit",
            "This service is connected by signing in at the provider: use the Continue button.",
        );
    }
    let Some(pairs) = std::str::from_utf8(&body)
        .ok()
        .and_then(|text| crate::routes::parse_query(text).ok())
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Form not understood",
            "The form could not be read. Go back, reload the page and try again.",
        );
    };
    let popup = popup_requested(&pairs);
    let submitted: BTreeMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut configuration = session.configuration.clone();
    let mut missing = Vec::new();
    let mut invalid = Vec::new();
    for field in form_fields(element, &session.configuration) {
        let label = if field.name.is_empty() {
            &field.key
        } else {
            &field.name
        };
        match submitted.get(field.key.as_str()).map(|v| v.trim()) {
            None | Some("") => missing.push(label.clone()),
            Some(v) if v.len() > MAX_CONFIG_VALUE || v.chars().any(char::is_control) => {
                invalid.push(label.clone())
            }
            Some(v) => configuration.insert(field.key.clone(), v.to_owned()),
        }
    }
    if !missing.is_empty() || !invalid.is_empty() {
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!("Enter {}.", missing.join(", ")));
        }
        if !invalid.is_empty() {
            parts.push(format!(
                "{} must be at most {MAX_CONFIG_VALUE} characters without control characters.",
                invalid.join(", ")
            ));
        }
        return render_page(
            &state,
            &session,
            &token,
            popup,
            StatusCode::BAD_REQUEST,
            Some(parts.join(" ")),
        );
    }
    // kinds: a credential kind that can verify a key with the provider
    // plugs in here, before the session is spent.
    if let Err(m) = element.validate_configuration(&configuration) {
        return render_page(
            &state,
            &session,
            &token,
            popup,
            StatusCode::BAD_REQUEST,
            Some(format!("Enter {}.", m.keys.join(", "))),
        );
    }
    match state
        .store
        .finish_connect_session(session.id, now_millis())
        .await
    {
        Ok(true) => {}
        Ok(false) => return used_session(),
        Err(e) => return store_failure(e),
    }
    let outcome = provision_instance(
        &state,
        (session.organization_id, session.user_id),
        element,
        (session.name.clone(), session.tags.clone()),
        configuration,
        // kinds: client-credential elements obtain their token here.
        if element.spec().authentication == elements_core::Authentication::Oauth2ClientCredentials {
            Provision::ClientCredentials
        } else {
            Provision::Configuration
        },
        state.health_check.settings.verify_on_create,
    )
    .await
    .map(|(instance, _token)| instance.id)
    .map_err(|e| failure("create_failed", &e));
    report_failure(&state, &session, &outcome).await;
    finish(&session, popup || session.popup, outcome)
}

// ------------------------------------------------------------ the callback

/// A failed outcome: an error code for the app and a description for people.
struct Failure {
    code: &'static str,
    description: String,
}

/// What the app learns of an `ApiError` (never a secret: these messages
/// carry no codes or tokens, and 5xx causes stay in the log).
fn failure(code: &'static str, e: &ApiError) -> Failure {
    let description = match e {
        ApiError::ProviderRefused { message, .. } => {
            format!("{message}: the authorization could not be exchanged")
        }
        ApiError::BadGateway(_) => "the provider could not be reached or failed".into(),
        ApiError::Forbidden(m) | ApiError::BadRequest(m) | ApiError::Conflict(m) => m.clone(),
        ApiError::MissingConfiguration(keys) => {
            format!("missing required configuration: {}", keys.join(", "))
        }
        _ => {
            tracing::error!(?e, "connect: the instance could not be created");
            "the connection could not be completed".into()
        }
    };
    Failure { code, description }
}

/// A provider's `error` value we pass on: short and `[a-z_]` only.
fn provider_error_code(raw: &str) -> Option<&str> {
    (!raw.is_empty() && raw.len() <= 64 && raw.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
        .then_some(raw)
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/oauth/callback",
    tag = "connect",
    params(
        ("state" = Option<String>, Query, description = "The session's state"),
        ("code" = Option<String>, Query, description = "The provider's authorization code"),
        ("error" = Option<String>, Query, description = "The provider's refusal"),
    ),
    responses(
        (status = 303, description = "Back to the app's `redirectUrl` with `?instanceId=` or `?error=&errorDescription=`; never a token or code"),
        (status = 400, description = "Not a callback of a live session (an HTML page)", content_type = "text/html", body = String),
    )
)]
async fn callback(State(state): State<AppState>, QueryPairs(pairs): QueryPairs) -> Response {
    let mut params: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in &pairs {
        params.entry(k.as_str()).or_insert(v.as_str());
    }
    let Some(oauth_state) = params
        .get("state")
        .copied()
        .filter(|s| !s.is_empty() && s.len() <= MAX_TOKEN)
    else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Sign-in not recognised",
            "The provider's answer carries no valid `state`, so it cannot be matched to a connect session. Nothing was stored.",
        );
    };
    let (session, verifier) = match state
        .store
        .take_connect_state(&hash_secret(oauth_state))
        .await
    {
        Ok(ConnectTaken::Taken(session, verifier)) => (*session, verifier),
        Ok(ConnectTaken::AlreadyUsed) => {
            tracing::warn!("connect: a callback reused a state");
            return error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in already used",
                "This sign-in answer was already used (or replaced by a newer one). Nothing more was stored; start again from the application if needed.",
            );
        }
        Ok(ConnectTaken::Unknown) => {
            tracing::warn!("connect: a callback carried an unknown state");
            return error_page(
                StatusCode::BAD_REQUEST,
                "Sign-in not recognised",
                "The `state` of the provider's answer matches no connect session (it was altered, or the session is gone). Nothing was stored.",
            );
        }
        Err(e) => return store_failure(e),
    };
    let popup = session.popup;
    let outcome = callback_outcome(&state, &session, verifier, &params).await;
    report_failure(&state, &session, &outcome).await;
    finish(&session, popup, outcome)
}

/// A failed connection is a `connect.failed` event for the app's webhooks
/// (the error code and the sanitized description the app is redirected
/// with; never a code, state or token). Best effort: the user's redirect
/// does not wait on a store failure beyond logging it.
async fn report_failure(
    state: &AppState,
    session: &ConnectSession,
    outcome: &Result<i64, Failure>,
) {
    let Err(f) = outcome else { return };
    let mut data = serde_json::json!({
        "sessionId": session.id,
        "element": session.element_key,
        "error": f.code,
        "errorDescription": f.description,
    });
    if let Some(end_user) = &session.end_user {
        data["endUser"] = end_user.as_str().into();
    }
    if let Err(e) = state
        .store
        .record_event(
            session.organization_id,
            elements_store::EventKind::ConnectFailed,
            data,
        )
        .await
    {
        tracing::error!(session_id = session.id, error = %e, "cannot record connect.failed");
    }
}

async fn callback_outcome(
    state: &AppState,
    session: &ConnectSession,
    verifier: Option<Secret>,
    params: &BTreeMap<&str, &str>,
) -> Result<i64, Failure> {
    let param = |name: &str| params.get(name).copied();
    if session.expires_at <= now_millis() {
        return Err(Failure {
            code: "expired_session",
            description: "the connect session expired before the provider answered".into(),
        });
    }
    if let Some(error) = param("error") {
        return Err(match error {
            "access_denied" => Failure {
                code: "access_denied",
                description: "the user denied access at the provider".into(),
            },
            other => Failure {
                code: "provider_error",
                description: match provider_error_code(other) {
                    Some(code) => format!("the provider answered with error `{code}`"),
                    None => "the provider answered with an error".into(),
                },
            },
        });
    }
    let Some(code) = param("code").filter(|c| !c.is_empty()) else {
        return Err(Failure {
            code: "invalid_response",
            description: "the provider's answer carries no authorization code".into(),
        });
    };
    let Some(element) =
        crate::private_elements::lookup(state, session.organization_id, &session.element_key)
            .await
            .ok()
    else {
        return Err(Failure {
            code: "element_unavailable",
            description: format!(
                "element `{}` is no longer in this server's catalog",
                session.element_key
            ),
        });
    };
    // format: values the element declares as captured from the callback
    // (`callback_capture`) are copied into the configuration here.
    let mut configuration = session.configuration.clone();
    let captured = element
        .spec()
        .captured_values(&|k| param(k).map(str::to_owned))
        .map_err(|e| Failure {
            code: "invalid_response",
            description: format!("the provider's answer carries an unusable value: {e}"),
        })?;
    configuration.extend(captured);
    provision_instance(
        state,
        (session.organization_id, session.user_id),
        element.as_ref(),
        (session.name.clone(), session.tags.clone()),
        configuration,
        Provision::Code(Secret::new(code), verifier),
        state.health_check.settings.verify_on_create,
    )
    .await
    .map(|(instance, _token)| instance.id)
    .map_err(|e| failure("exchange_failed", &e))
}

/// Sends the browser back to the app (or, in popup mode, renders the page
/// that posts the outcome to the opener).
fn finish(session: &ConnectSession, popup: bool, outcome: Result<i64, Failure>) -> Response {
    match &outcome {
        Ok(id) => tracing::info!(
            session_id = session.id,
            instance_id = id,
            "connect: connected"
        ),
        Err(f) => tracing::info!(session_id = session.id, error = f.code, "connect: failed"),
    }
    let Ok(mut url) = reqwest::Url::parse(&session.redirect_url) else {
        return error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The application's return address is not valid.",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        match &outcome {
            Ok(id) => {
                query.append_pair("instanceId", &id.to_string());
            }
            Err(f) => {
                query.append_pair("error", f.code);
                query.append_pair("errorDescription", &f.description);
            }
        }
    }
    if popup {
        let origin = origin_of(&session.redirect_url).unwrap_or_default();
        let (title, description) = match &outcome {
            Ok(_) => (
                "Connected",
                "Your account is connected. You can close this window.".to_owned(),
            ),
            Err(f) => ("Not connected", f.description.clone()),
        };
        return render(
            if outcome.is_ok() {
                StatusCode::OK
            } else {
                StatusCode::BAD_REQUEST
            },
            &DonePage {
                title,
                origin: &origin,
                instance_id: outcome.as_ref().ok().copied(),
                error: outcome.as_ref().err().map(|f| f.code),
                description: &description,
                return_url: url.as_str(),
            },
        );
    }
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => (StatusCode::SEE_OTHER, [(LOCATION, location)]).into_response(),
        Err(_) => error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The application's return address is not valid.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens_never_reach_the_request_log() {
        let p = "/elements/api-v2/connect/";
        assert_eq!(loggable_path(&format!("{p}abc")), format!("{p}[token]"));
        assert_eq!(
            loggable_path(&format!("{p}abc/authorize")),
            format!("{p}[token]/authorize")
        );
        assert_eq!(
            loggable_path(&format!("{p}sessions")),
            format!("{p}sessions")
        );
        assert_eq!(
            loggable_path(&format!("{p}popup.js")),
            format!("{p}popup.js")
        );
        assert_eq!(
            loggable_path("/elements/api-v2/instances"),
            "/elements/api-v2/instances"
        );
    }

    #[test]
    fn the_public_url_must_be_an_absolute_http_url() {
        let s = Settings::new(Some("https://elements.example.com/"), 60);
        assert_eq!(
            s.callback_url().as_deref(),
            Some("https://elements.example.com/elements/api-v2/oauth/callback")
        );
        for bad in [
            "elements.example.com",
            "ftp://x.example",
            "https://x.example/?a=1",
            "",
        ] {
            assert_eq!(Settings::new(Some(bad), 60).public_url, None, "{bad}");
        }
        assert_eq!(Settings::new(None, -5).session_seconds, 0);
    }
}
