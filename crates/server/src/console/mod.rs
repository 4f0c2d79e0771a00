//! The console for people: server-rendered HTML over the same registry and
//! store as the API, no JavaScript.
//!
//! Anonymous visitors browse the catalog (`/`, `/console`, with `?q=`
//! search) and each element's page. Signing in (`/console/login`, the same
//! organization and user secrets as the API) gives a session cookie
//! ([`session`]); signed in, people see their organization's instances,
//! enable, disable or delete one (after a confirmation page), and edit the
//! callback-URL allow-list. Every POST carries the session's CSRF token.
//!
//! Every console answer carries strict headers (CSP without scripts, no
//! framing, no referrer, no caching); every value is escaped by the
//! templates; an unknown element or instance, or another organization's
//! instance, is an HTML 404.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, REFERRER_POLICY,
    SET_COOKIE, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Form, Router};
use elements_core::standard::check_callback_url;
use elements_core::ElementSpec;
use elements_store::{hash_secret, Instance, InstancePatch, Principal, StoreError};
use serde::Deserialize;

use crate::wire::{is_secret_key, MASK};
use crate::AppState;

pub mod session;

use session::{Sealer, Session, COOKIE as SESSION_COOKIE};

/// How the console runs. (Cloned for each serving thread's router: give
/// a `secret`, or each router draws its own session key.)
#[derive(Clone)]
pub struct Settings {
    /// Input keying material for the session key (HKDF-SHA256); replicas
    /// sharing it accept each other's cookies. `None`: a random key per
    /// process, so sessions end when the process does.
    pub secret: Option<Vec<u8>>,
    /// How long a session lasts, in seconds.
    pub session_seconds: i64,
    /// Mark the cookie `Secure` on every answer (the public URL is https),
    /// not only on requests that arrived over https.
    pub secure_cookies: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            secret: None,
            session_seconds: DEFAULT_SESSION_SECONDS,
            secure_cookies: false,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("session_seconds", &self.session_seconds)
            .field("secure_cookies", &self.secure_cookies)
            .finish()
    }
}

/// Twelve hours.
pub const DEFAULT_SESSION_SECONDS: i64 = 12 * 3600;
/// How long an anonymous session (the sign-in form's CSRF token) lasts.
const ANONYMOUS_SECONDS: i64 = 3600;
/// Instances per page.
const PAGE_SIZE: usize = 20;
/// The most entries an allow-list holds (as in the API).
const MAX_CALLBACKS: usize = 100;

const CSP: &str = "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
const STYLE: &str = include_str!("style.css");

struct Console {
    sealer: Sealer,
    session_seconds: i64,
    secure_cookies: bool,
}

/// The console's routes: `/`, `/console` and everything under it.
pub fn router(settings: Settings) -> Router<AppState> {
    let console = Arc::new(Console {
        sealer: match &settings.secret {
            Some(secret) => Sealer::from_secret(secret),
            None => Sealer::random(),
        },
        session_seconds: settings.session_seconds.max(0),
        secure_cookies: settings.secure_cookies,
    });
    Router::new()
        .route("/", get(catalog))
        .route("/console", get(catalog))
        .route("/console/style.css", get(style))
        .route("/console/elements/{key}", get(element))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", axum::routing::post(logout))
        .route("/console/instances", get(instances))
        .route("/console/instances/{id}", get(instance))
        .route(
            "/console/instances/{id}/enable",
            axum::routing::post(enable),
        )
        .route(
            "/console/instances/{id}/disable",
            axum::routing::post(disable),
        )
        .route(
            "/console/instances/{id}/delete",
            get(confirm_delete).post(delete),
        )
        .route(
            "/console/callback-urls",
            get(callbacks).post(save_callbacks),
        )
        .route("/console/{*rest}", get(unknown_page))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(Extension(console))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Strict headers on every console answer.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn style() -> Response {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/css; charset=utf-8"),
        )],
        STYLE,
    )
        .into_response()
}

// ---------------------------------------------------------------- sessions

/// What the layout shows: who is signed in, and the CSRF token for forms.
struct Nav {
    organization: Option<String>,
    csrf: String,
}

impl Nav {
    fn anonymous() -> Nav {
        Nav {
            organization: None,
            csrf: String::new(),
        }
    }
}

/// The request's session, if its cookie opens and has not expired.
/// `Err(())` when a cookie was there but expired (or did not open).
fn read_session(console: &Console, headers: &HeaderMap) -> Result<Option<Session>, ()> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for cookie in cookie::Cookie::split_parse(text).flatten() {
            if cookie.name() == SESSION_COOKIE {
                found = Some(cookie.value().to_owned());
            }
        }
    }
    let Some(value) = found else { return Ok(None) };
    match console.sealer.open(&value) {
        Some(session) if session.expires_at > now() => Ok(Some(session)),
        _ => Err(()),
    }
}

/// Unix milliseconds for people: `2026-11-27 09:42 UTC`.
fn when(unix_millis: i64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix_millis.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

fn now() -> i64 {
    crate::tokens::now_seconds()
}

/// Whether the request arrived over https (directly or through a proxy).
fn over_https(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// The `Set-Cookie` value. Without `max_age` the browser keeps the cookie
/// for its session; the expiry inside the sealed value is what counts.
fn set_cookie(
    console: &Console,
    headers: &HeaderMap,
    value: String,
    max_age: Option<i64>,
) -> HeaderValue {
    let mut cookie = cookie::Cookie::build((SESSION_COOKIE, value))
        .http_only(true)
        .same_site(cookie::SameSite::Strict)
        .path("/console")
        .secure(console.secure_cookies || over_https(headers))
        .build();
    if let Some(seconds) = max_age {
        cookie.set_max_age(time::Duration::seconds(seconds));
    }
    HeaderValue::from_str(&cookie.to_string()).expect("a base64url cookie is a valid header")
}

fn session_cookie(console: &Console, headers: &HeaderMap, session: &Session) -> HeaderValue {
    set_cookie(console, headers, console.sealer.seal(session), None)
}

/// A signed-in request: the principal and the session.
struct SignedIn {
    principal: Principal,
    session: Session,
}

impl SignedIn {
    fn nav(&self) -> Nav {
        Nav {
            organization: Some(self.principal.organization_name.clone()),
            csrf: self.session.csrf_token(),
        }
    }
}

/// The signed-in caller, or the answer that sends them to sign in.
async fn signed_in(
    state: &AppState,
    console: &Console,
    headers: &HeaderMap,
) -> Result<SignedIn, Response> {
    let session = match read_session(console, headers) {
        Ok(Some(session)) => session,
        Ok(None) => return Err(see_other("/console/login")),
        Err(()) => return Err(see_other("/console/login?expired=1")),
    };
    let Some((user, organization)) = session.account else {
        return Err(see_other("/console/login"));
    };
    match state.store.authenticate(&user, &organization).await {
        Ok(Some(principal)) => Ok(SignedIn { principal, session }),
        // The account's secrets changed or it is gone: the session ends.
        Ok(None) => Err(see_other("/console/login?expired=1")),
        Err(e) => Err(store_failure(e)),
    }
}

/// A signed-in POST whose CSRF token matches the session's.
async fn signed_in_post(
    state: &AppState,
    console: &Console,
    headers: &HeaderMap,
    csrf: &str,
) -> Result<SignedIn, Response> {
    let who = signed_in(state, console, headers).await?;
    if !who.session.csrf_matches(csrf) {
        return Err(csrf_refused(who.nav()));
    }
    Ok(who)
}

fn csrf_refused(nav: Nav) -> Response {
    error_page(
        StatusCode::FORBIDDEN,
        nav,
        "Form refused",
        "The form did not carry this session's security token (CSRF), so nothing was changed. \
         Go back, reload the page and try again.",
    )
}

// ---------------------------------------------------------------- responses

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            LOCATION,
            HeaderValue::from_str(location).expect("our own locations are valid"),
        )],
    )
        .into_response()
}

fn render(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "console template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><h1>Something went wrong</h1>"),
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    nav: Nav,
    title: &'a str,
    message: &'a str,
}

fn error_page(status: StatusCode, nav: Nav, title: &str, message: &str) -> Response {
    render(
        status,
        &ErrorPage {
            nav,
            title,
            message,
        },
    )
}

fn not_found(nav: Nav, message: &str) -> Response {
    error_page(StatusCode::NOT_FOUND, nav, "Not found", message)
}

fn bad_request(nav: Nav, message: &str) -> Response {
    error_page(StatusCode::BAD_REQUEST, nav, "Bad request", message)
}

fn store_failure(e: StoreError) -> Response {
    tracing::error!(error = %e, "console: store failure");
    error_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        Nav::anonymous(),
        "Something went wrong",
        "The server could not reach its database. Try again in a moment.",
    )
}

async fn unknown_page(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let nav = anonymous_nav(&state, &console, &headers).await;
    not_found(nav, "There is no such page in the console.")
}

async fn method_not_allowed() -> Response {
    error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        Nav::anonymous(),
        "Method not allowed",
        "This page does not answer that kind of request.",
    )
}

/// The layout of a page that does not need a signed-in caller, showing
/// who is signed in when someone is.
async fn anonymous_nav(state: &AppState, console: &Console, headers: &HeaderMap) -> Nav {
    if let Ok(Some(session)) = read_session(console, headers) {
        if let Some((user, organization)) = &session.account {
            if let Ok(Some(principal)) = state.store.authenticate(user, organization).await {
                return Nav {
                    organization: Some(principal.organization_name),
                    csrf: session.csrf_token(),
                };
            }
        }
    }
    Nav::anonymous()
}

// ---------------------------------------------------------------- catalog

#[derive(Debug, Deserialize)]
struct CatalogQuery {
    #[serde(default)]
    q: String,
}

struct ElementRow<'a> {
    id: u64,
    key: &'a str,
    name: &'a str,
    hub: &'a str,
    authentication: &'a str,
}

#[derive(Template)]
#[template(path = "console/catalog.html")]
struct CatalogPage<'a> {
    nav: Nav,
    query: &'a str,
    total: usize,
    rows: Vec<ElementRow<'a>>,
}

/// Whether an element matches a search: every word of the query is in its
/// name, key, hub or credential kind (case-insensitive).
fn matches(spec: &ElementSpec, query: &str) -> bool {
    let haystack = format!(
        "{} {} {} {}",
        spec.name,
        spec.key,
        spec.hub,
        spec.authentication.as_str()
    )
    .to_lowercase();
    query
        .split_whitespace()
        .all(|word| haystack.contains(&word.to_lowercase()))
}

async fn catalog(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    query: Result<Query<CatalogQuery>, QueryRejection>,
) -> Response {
    let nav = anonymous_nav(&state, &console, &headers).await;
    let Ok(Query(query)) = query else {
        return bad_request(nav, "The search could not be read: give one `q` parameter.");
    };
    let q = query.q.trim();
    if q.chars().count() > 200 {
        return bad_request(nav, "The search is longer than 200 characters.");
    }
    let rows = state
        .registry
        .iter()
        .map(|e| e.spec())
        .filter(|spec| matches(spec, q))
        .map(|spec| ElementRow {
            id: spec.id,
            key: &spec.key,
            name: &spec.name,
            hub: &spec.hub,
            authentication: spec.authentication.as_str(),
        })
        .collect();
    render(
        StatusCode::OK,
        &CatalogPage {
            nav,
            query: q,
            total: state.registry.len(),
            rows,
        },
    )
}

#[derive(Template)]
#[template(path = "console/element.html")]
struct ElementPage<'a> {
    nav: Nav,
    spec: &'a ElementSpec,
    toml: Option<&'a str>,
}

async fn element(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    key: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let nav = anonymous_nav(&state, &console, &headers).await;
    let Some(element) = key
        .ok()
        .and_then(|Path(key)| state.registry.by_key(&key).cloned())
    else {
        return not_found(nav, "There is no element with this key in the catalog.");
    };
    let spec = element.spec();
    // The built-in catalog's files are embedded; others were read from disk.
    let toml = elements_catalog::BUILTIN
        .iter()
        .find(|(file, _)| *file == spec.source.file)
        .map(|(_, text)| *text);
    render(StatusCode::OK, &ElementPage { nav, spec, toml })
}

// ---------------------------------------------------------------- sign in

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    nav: Nav,
    notice: Option<&'a str>,
    error: Option<&'a str>,
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    #[serde(default)]
    expired: Option<String>,
}

/// The sign-in page, under an anonymous session carrying its CSRF token
/// (a fresh one unless the request already has a live session).
fn login_page(
    console: &Console,
    headers: &HeaderMap,
    status: StatusCode,
    notice: Option<&str>,
    error: Option<&str>,
) -> Response {
    let session = match read_session(console, headers) {
        Ok(Some(session)) => session,
        _ => Session::new(now() + ANONYMOUS_SECONDS, None),
    };
    let nav = Nav {
        organization: None,
        csrf: session.csrf_token(),
    };
    let mut response = render(status, &LoginPage { nav, notice, error });
    response
        .headers_mut()
        .append(SET_COOKIE, session_cookie(console, headers, &session));
    response
}

async fn login_form(
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let expired = query.is_ok_and(|Query(q)| q.expired.is_some());
    let notice = expired.then_some("Your session has expired. Please sign in again.");
    login_page(&console, &headers, StatusCode::OK, notice, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    organization_secret: String,
    #[serde(default)]
    user_secret: String,
}

async fn login(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return login_page(
            &console,
            &headers,
            StatusCode::BAD_REQUEST,
            None,
            Some("The sign-in form could not be read. Please try again."),
        );
    };
    let session = read_session(&console, &headers).ok().flatten();
    if !session.as_ref().is_some_and(|s| s.csrf_matches(&form.csrf)) {
        // Not the form this site served (or it expired): a fresh one.
        let fresh = Session::new(now() + ANONYMOUS_SECONDS, None);
        let mut response = render(
            StatusCode::FORBIDDEN,
            &LoginPage {
                nav: Nav {
                    organization: None,
                    csrf: fresh.csrf_token(),
                },
                notice: None,
                error: Some(
                    "The sign-in form expired or did not come from this site. Please try again.",
                ),
            },
        );
        response
            .headers_mut()
            .append(SET_COOKIE, session_cookie(&console, &headers, &fresh));
        return response;
    }
    let organization = form.organization_secret.trim();
    let user = form.user_secret.trim();
    let wrong = "The organization secret or the user secret is wrong.";
    if organization.is_empty() || user.is_empty() || organization.len() > 512 || user.len() > 512 {
        return login_page(
            &console,
            &headers,
            StatusCode::UNAUTHORIZED,
            None,
            Some(wrong),
        );
    }
    let hashes = (hash_secret(user), hash_secret(organization));
    match state.store.authenticate(&hashes.0, &hashes.1).await {
        Ok(Some(principal)) => {
            tracing::info!(
                organization_id = principal.organization_id,
                user_id = principal.user.id,
                "console sign-in"
            );
            // A new session (new CSRF token) on every sign-in.
            let session = Session::new(now() + console.session_seconds, Some(hashes));
            let mut response = see_other("/console/instances");
            response
                .headers_mut()
                .append(SET_COOKIE, session_cookie(&console, &headers, &session));
            response
        }
        Ok(None) => {
            tracing::info!("console sign-in refused: wrong secrets");
            login_page(
                &console,
                &headers,
                StatusCode::UNAUTHORIZED,
                None,
                Some(wrong),
            )
        }
        Err(e) => store_failure(e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    match read_session(&console, &headers) {
        Ok(Some(session)) if !session.csrf_matches(&csrf) => csrf_refused(Nav::anonymous()),
        _ => {
            let mut response = see_other("/console");
            response.headers_mut().append(
                SET_COOKIE,
                set_cookie(&console, &headers, String::new(), Some(0)),
            );
            response
        }
    }
}

// ---------------------------------------------------------------- instances

struct InstanceRow {
    id: i64,
    name: String,
    element: String,
    valid: bool,
    disabled: bool,
    created: String,
}

#[derive(Template)]
#[template(path = "console/instances.html")]
struct InstancesPage {
    nav: Nav,
    total: usize,
    page: usize,
    pages: usize,
    rows: Vec<InstanceRow>,
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    #[serde(default)]
    page: Option<String>,
}

fn element_name(state: &AppState, instance: &Instance) -> String {
    state
        .registry
        .by_key(&instance.element_key)
        .map(|e| e.spec().name.clone())
        .unwrap_or_else(|| instance.element_key.clone())
}

async fn instances(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Response {
    let who = match signed_in(&state, &console, &headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let page = match query {
        Ok(Query(PageQuery { page: None })) => 1,
        Ok(Query(PageQuery { page: Some(p) })) => match p.parse::<usize>() {
            Ok(p) if p >= 1 => p,
            _ => return bad_request(who.nav(), "`page` must be a whole number from 1 on."),
        },
        Err(_) => return bad_request(who.nav(), "The query could not be read."),
    };
    let all = match state
        .store
        .instances(who.principal.organization_id, &[])
        .await
    {
        Ok(all) => all,
        Err(e) => return store_failure(e),
    };
    let total = all.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    if page > pages {
        return not_found(who.nav(), "There is no such page of instances.");
    }
    let rows = all
        .iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .map(|i| InstanceRow {
            id: i.id,
            name: i.name.clone(),
            element: element_name(&state, i),
            valid: i.valid,
            disabled: i.disabled,
            created: when(i.created_at),
        })
        .collect();
    render(
        StatusCode::OK,
        &InstancesPage {
            nav: who.nav(),
            total,
            page,
            pages,
            rows,
        },
    )
}

/// The caller's instance named by a path segment; anything else is a 404.
async fn owned(
    state: &AppState,
    who: &SignedIn,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Instance, Response> {
    let missing = || not_found(who.nav(), "Your organization has no instance with this id.");
    let Some(id) = id
        .ok()
        .and_then(|Path(id)| id.parse::<i64>().ok())
        .filter(|id| *id > 0)
    else {
        return Err(missing());
    };
    match state
        .store
        .instance(who.principal.organization_id, id)
        .await
    {
        Ok(Some(instance)) => Ok(instance),
        Ok(None) => Err(missing()),
        Err(e) => Err(store_failure(e)),
    }
}

#[derive(Template)]
#[template(path = "console/instance.html")]
struct InstancePage {
    nav: Nav,
    id: i64,
    name: String,
    element: String,
    element_link: Option<String>,
    valid: bool,
    invalid_reason: Option<String>,
    disabled: bool,
    tags: Vec<String>,
    created: String,
    updated: String,
    user: String,
    configuration: Vec<(String, String)>,
}

async fn instance(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let who = match signed_in(&state, &console, &headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let instance = match owned(&state, &who, id).await {
        Ok(instance) => instance,
        Err(response) => return response,
    };
    let element = state.registry.by_key(&instance.element_key);
    let spec = element.map(|e| e.spec());
    // The API's masking, through the API's own function.
    let configuration = instance
        .configuration
        .iter()
        .map(|(k, v)| {
            let shown = if is_secret_key(spec, k) { MASK } else { v };
            (k.to_owned(), shown.to_owned())
        })
        .collect();
    render(
        StatusCode::OK,
        &InstancePage {
            nav: who.nav(),
            id: instance.id,
            element: element_name(&state, &instance),
            element_link: spec.map(|s| s.key.clone()),
            valid: instance.valid,
            invalid_reason: instance.invalid_reason.clone(),
            disabled: instance.disabled,
            tags: instance.tags.clone(),
            created: when(instance.created_at),
            updated: when(instance.updated_at),
            user: format!(
                "{} {} <{}>",
                instance.user.first_name, instance.user.last_name, instance.user.email
            ),
            name: instance.name,
            configuration,
        },
    )
}

async fn set_disabled(
    state: AppState,
    console: Arc<Console>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
    disabled: bool,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    let who = match signed_in_post(&state, &console, &headers, &csrf).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let instance = match owned(&state, &who, id).await {
        Ok(instance) => instance,
        Err(response) => return response,
    };
    let patch = InstancePatch {
        disabled: Some(disabled),
        ..Default::default()
    };
    match state
        .store
        .update_instance(who.principal.organization_id, instance.id, patch)
        .await
    {
        Ok(Some(_)) => {
            tracing::info!(
                organization_id = who.principal.organization_id,
                instance_id = instance.id,
                disabled,
                "console: instance enabled/disabled"
            );
            see_other(&format!("/console/instances/{}", instance.id))
        }
        Ok(None) => not_found(who.nav(), "Your organization has no instance with this id."),
        Err(e) => store_failure(e),
    }
}

async fn enable(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    set_disabled(state, console, headers, id, form, false).await
}

async fn disable(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    set_disabled(state, console, headers, id, form, true).await
}

#[derive(Template)]
#[template(path = "console/confirm_delete.html")]
struct ConfirmDeletePage {
    nav: Nav,
    id: i64,
    name: String,
}

async fn confirm_delete(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    let who = match signed_in(&state, &console, &headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let instance = match owned(&state, &who, id).await {
        Ok(instance) => instance,
        Err(response) => return response,
    };
    render(
        StatusCode::OK,
        &ConfirmDeletePage {
            nav: who.nav(),
            id: instance.id,
            name: instance.name,
        },
    )
}

async fn delete(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    id: Result<Path<String>, axum::extract::rejection::PathRejection>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let csrf = form.map(|Form(f)| f.csrf).unwrap_or_default();
    let who = match signed_in_post(&state, &console, &headers, &csrf).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let instance = match owned(&state, &who, id).await {
        Ok(instance) => instance,
        Err(response) => return response,
    };
    match state
        .store
        .delete_instance(who.principal.organization_id, instance.id)
        .await
    {
        Ok(true) => {
            tracing::info!(
                organization_id = who.principal.organization_id,
                instance_id = instance.id,
                "console: instance deleted"
            );
            see_other("/console/instances")
        }
        Ok(false) => not_found(who.nav(), "Your organization has no instance with this id."),
        Err(e) => store_failure(e),
    }
}

// ---------------------------------------------------------------- callbacks

#[derive(Template)]
#[template(path = "console/callbacks.html")]
struct CallbacksPage<'a> {
    nav: Nav,
    current: Vec<String>,
    text: String,
    error: Option<&'a str>,
}

async fn callbacks(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
) -> Response {
    let who = match signed_in(&state, &console, &headers).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    match state
        .store
        .callback_urls(who.principal.organization_id)
        .await
    {
        Ok(current) => render(
            StatusCode::OK,
            &CallbacksPage {
                nav: who.nav(),
                text: current.join("\n"),
                current,
                error: None,
            },
        ),
        Err(e) => store_failure(e),
    }
}

#[derive(Deserialize)]
struct CallbacksForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    urls: String,
}

/// The allow-list in a form's text, one URL a line, or what is wrong with it.
fn parse_callbacks(text: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if urls.len() > MAX_CALLBACKS {
        return Err(format!(
            "At most {MAX_CALLBACKS} callback URLs are allowed."
        ));
    }
    for (n, url) in urls.iter().enumerate() {
        if url.chars().count() > 2048 {
            return Err(format!("URL {} is longer than 2048 characters.", n + 1));
        }
        if url.chars().any(char::is_control) {
            return Err(format!("URL {} contains control characters.", n + 1));
        }
        if let Err(e) = check_callback_url(url) {
            return Err(format!("URL {} ({url}): {e}", n + 1));
        }
    }
    Ok(urls)
}

async fn save_callbacks(
    State(state): State<AppState>,
    Extension(console): Extension<Arc<Console>>,
    headers: HeaderMap,
    form: Result<Form<CallbacksForm>, FormRejection>,
) -> Response {
    let form = form.map(|Form(f)| f).unwrap_or(CallbacksForm {
        csrf: String::new(),
        urls: String::new(),
    });
    let who = match signed_in_post(&state, &console, &headers, &form.csrf).await {
        Ok(who) => who,
        Err(response) => return response,
    };
    let organization_id = who.principal.organization_id;
    let urls = match parse_callbacks(&form.urls) {
        Ok(urls) => urls,
        Err(message) => {
            let current = match state.store.callback_urls(organization_id).await {
                Ok(current) => current,
                Err(e) => return store_failure(e),
            };
            return render(
                StatusCode::BAD_REQUEST,
                &CallbacksPage {
                    nav: who.nav(),
                    current,
                    text: form.urls,
                    error: Some(&message),
                },
            );
        }
    };
    match state.store.set_callback_urls(organization_id, &urls).await {
        Ok(()) => {
            state.private_elements.invalidate(organization_id);
            tracing::info!(
                organization_id,
                entries = urls.len(),
                "console: callback allow-list replaced"
            );
            see_other("/console/callback-urls")
        }
        Err(e) => store_failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_lines_are_checked() {
        assert_eq!(
            parse_callbacks(" https://a.test/cb \n\nhttp://b.test/x\r\n"),
            Ok(vec!["https://a.test/cb".into(), "http://b.test/x".into()])
        );
        assert_eq!(parse_callbacks(""), Ok(vec![]));
        let err = parse_callbacks("https://a.test/cb\nftp://b.test/").unwrap_err();
        assert!(err.starts_with("URL 2 (ftp://b.test/)"), "{err}");
        let many = "https://a.test/\n".repeat(MAX_CALLBACKS + 1);
        assert_eq!(
            parse_callbacks(&many),
            Err(format!(
                "At most {MAX_CALLBACKS} callback URLs are allowed."
            ))
        );
    }
}
