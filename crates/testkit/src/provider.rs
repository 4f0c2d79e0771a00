//! A fake, HubSpot-like OAuth 2.0 provider that speaks real HTTP on
//! `127.0.0.1`.
//!
//! HubSpot cannot be reached from tests, so this is the one fake the project
//! allows. [`FakeProvider::start`] binds an axum server on an ephemeral port
//! and serves:
//!
//! | Endpoint | Purpose |
//! |---|---|
//! | `GET /oauth/authorize` | current flow: `302` to `redirect_uri?code=..&state=..` |
//! | `GET /auth/authenticate` | legacy flow: `302` to `redirect_uri?access_token=..&refresh_token=..&expires_in=..` |
//! | `POST /oauth/v1/token` | `authorization_code` and `refresh_token` grants |
//! | `POST /auth/v1/refresh` | legacy refresh (`refresh_token`, `client_id`, no secret) |
//! | `GET /api/me` | protected resource: `200 {"ok":true}` with a valid bearer token, `401` otherwise |
//!
//! Behaviour is configurable while the server runs (registered clients,
//! `expires_in`, refresh-token rotation, omitting refresh tokens, reuse
//! detection) and faults can be injected (latency, a number of failing
//! responses, a number of `invalid_grant` answers). Counters let tests assert
//! how many calls the code under test made.
//!
//! # Token model
//!
//! Every successful code exchange (and every [`FakeProvider::issue_tokens`]
//! call, and every legacy `/auth/authenticate` redirect) starts a new token
//! *family*. Refresh tokens and access tokens belong to a family. Revoking a
//! family (reuse detection, a second use of a code, or
//! [`FakeProvider::revoke_family_of`]) invalidates all of its tokens.
//! Access tokens do not expire with time (tests must not depend on the wall
//! clock); use [`FakeProvider::expire_access_tokens`] to simulate expiry.
//!
//! ```no_run
//! # async fn demo() {
//! use elements_testkit::provider::FakeProvider;
//!
//! let provider = FakeProvider::start().await;
//! provider.fail_next(1, 500);
//! let (access, _refresh) = provider.issue_tokens("test-client");
//! assert!(provider.is_access_token_valid(&access));
//! println!("point HubSpot's token URL at {}", provider.token_url());
//! provider.shutdown().await;
//! # }
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::Rng as _;
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Client id registered by default on every new [`FakeProvider`].
pub const DEFAULT_CLIENT_ID: &str = "test-client";

/// Client secret of [`DEFAULT_CLIENT_ID`].
pub const DEFAULT_CLIENT_SECRET: &str = "test-secret";

/// Default `expires_in` (seconds) of issued access tokens: HubSpot's 30 minutes.
pub const DEFAULT_EXPIRES_IN: u64 = 1800;

/// Path of the (current) authorization endpoint.
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";

/// Path of the legacy authorization endpoint (tokens in the redirect).
pub const LEGACY_AUTHENTICATE_PATH: &str = "/auth/authenticate";

/// Path of the token endpoint (`authorization_code` and `refresh_token` grants).
pub const TOKEN_PATH: &str = "/oauth/v1/token";

/// Path of the legacy refresh endpoint.
pub const LEGACY_REFRESH_PATH: &str = "/auth/v1/refresh";

/// Path of the protected test resource.
pub const ME_PATH: &str = "/api/me";

/// Characters left as-is when building redirect query strings (RFC 3986
/// unreserved characters).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A running fake OAuth provider.
///
/// Dropping it (or calling [`FakeProvider::shutdown`]) stops the server. All
/// configuration methods take `&self` and apply immediately, also to
/// requests arriving concurrently.
pub struct FakeProvider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeProvider")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeProvider {
    /// Binds `127.0.0.1:0`, spawns the server on a tokio task and returns once
    /// it accepts connections.
    ///
    /// One client is registered: [`DEFAULT_CLIENT_ID`] /
    /// [`DEFAULT_CLIENT_SECRET`]. Defaults: `expires_in` 1800, refresh tokens
    /// rotate on every use, refresh responses include a refresh token, reuse
    /// detection is on, no latency, no faults.
    ///
    /// # Panics
    ///
    /// If the loopback listener cannot be bound (test support: failing loudly
    /// is the useful behaviour). Must be called within a tokio runtime.
    pub async fn start() -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake provider: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake provider: local address");
        let shared = Arc::new(Shared::new());
        let app = Router::new()
            .route(AUTHORIZE_PATH, get(authorize))
            .route(LEGACY_AUTHENTICATE_PATH, get(legacy_authenticate))
            .route(TOKEN_PATH, post(token))
            .route(LEGACY_REFRESH_PATH, post(legacy_refresh))
            .route(ME_PATH, get(me))
            .with_state(Arc::clone(&shared));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = shutdown_rx.await;
                })
                .await;
        });
        FakeProvider {
            addr,
            shared,
            shutdown_tx: Some(shutdown_tx),
            task: Some(task),
        }
    }

    /// Stops the server and waits (at most a few seconds, then aborts) for it
    /// to finish. Dropping the provider also stops it, without waiting.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `{base}/oauth/authorize`.
    pub fn authorize_url(&self) -> String {
        format!("{}{AUTHORIZE_PATH}", self.base_url())
    }

    /// `{base}/auth/authenticate` (legacy flow).
    pub fn legacy_authenticate_url(&self) -> String {
        format!("{}{LEGACY_AUTHENTICATE_PATH}", self.base_url())
    }

    /// `{base}/oauth/v1/token`.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.base_url())
    }

    /// `{base}/auth/v1/refresh` (legacy refresh).
    pub fn legacy_refresh_url(&self) -> String {
        format!("{}{LEGACY_REFRESH_PATH}", self.base_url())
    }

    /// `{base}/api/me`, the protected resource.
    pub fn me_url(&self) -> String {
        format!("{}{ME_PATH}", self.base_url())
    }

    /// Registers a client (or replaces the secret of an existing one).
    pub fn add_client(&self, client_id: impl Into<String>, client_secret: impl Into<String>) {
        self.shared
            .lock()
            .clients
            .insert(client_id.into(), client_secret.into());
    }

    /// The `expires_in` value sent in token responses (and in the legacy
    /// redirect). `None` omits the field; any JSON value is sent verbatim, so
    /// tests can send `0`, negative numbers, strings or huge numbers.
    /// Default: `Some(1800)`.
    pub fn set_expires_in(&self, expires_in: Option<Value>) {
        self.shared.lock().expires_in = expires_in;
    }

    /// Whether a refresh grant issues a new refresh token and retires the one
    /// presented (default `true`). When `false` the same refresh token is
    /// returned and stays usable.
    pub fn set_rotate_refresh_tokens(&self, rotate: bool) {
        self.shared.lock().rotate_refresh_tokens = rotate;
    }

    /// When `true`, refresh responses carry no `refresh_token` field at all
    /// and the presented refresh token stays usable (it is not rotated).
    /// Code exchanges always include one. Default `false`.
    pub fn set_omit_refresh_token(&self, omit: bool) {
        self.shared.lock().omit_refresh_token = omit;
    }

    /// Reuse detection (default `true`): presenting a refresh token that was
    /// already used (rotated), or redeeming an authorization code twice,
    /// revokes the whole token family and answers `invalid_grant`. When off,
    /// such requests still get `invalid_grant` but nothing is revoked.
    pub fn set_reuse_detection(&self, enabled: bool) {
        self.shared.lock().reuse_detection = enabled;
    }

    /// Delay added before every response of the token and legacy refresh
    /// endpoints (including injected failures). `Duration::ZERO` disables it.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// The next `n` responses of the token and legacy refresh endpoints have
    /// HTTP status `status` and a JSON error body
    /// (`{"status":"error","message":..,"error":..,"error_description":..}`),
    /// before normal behaviour resumes. Replaces any pending count.
    ///
    /// # Panics
    ///
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn fail_next(&self, n: u32, status: u16) {
        let status = StatusCode::from_u16(status).expect("fake provider: invalid HTTP status");
        let mut inner = self.shared.lock();
        inner.fail_next = n;
        inner.fail_status = status;
    }

    /// The next `n` responses of the token and legacy refresh endpoints are
    /// `400 {"error":"invalid_grant",..}` without looking at the request
    /// (checked after [`FakeProvider::fail_next`] is exhausted). Nothing is
    /// consumed or revoked. Replaces any pending count.
    pub fn invalid_grant_next(&self, n: u32) {
        self.shared.lock().invalid_grant_next = n;
    }

    /// Requests received by `POST /oauth/v1/token` (any grant, any outcome).
    pub fn token_calls(&self) -> u64 {
        self.shared.token_calls.load(Ordering::SeqCst)
    }

    /// Refresh requests received by either refresh endpoint: `POST
    /// /oauth/v1/token` with `grant_type=refresh_token`, and every `POST
    /// /auth/v1/refresh` (any outcome).
    pub fn refresh_calls(&self) -> u64 {
        self.shared.refresh_calls.load(Ordering::SeqCst)
    }

    /// Requests to `POST /oauth/v1/token` with
    /// `grant_type=authorization_code` (any outcome).
    pub fn code_exchanges(&self) -> u64 {
        self.shared.code_exchanges.load(Ordering::SeqCst)
    }

    /// Number of token families revoked so far (each family counts once).
    pub fn revoked_families(&self) -> u64 {
        self.shared.revoked_families.load(Ordering::SeqCst)
    }

    /// Number of access tokens issued so far (by any endpoint or by
    /// [`FakeProvider::issue_tokens`]).
    pub fn issued_access_tokens(&self) -> u64 {
        self.shared.issued_access_tokens.load(Ordering::SeqCst)
    }

    /// Whether `access_token` was issued by this provider, its family is not
    /// revoked, and it was not expired with
    /// [`FakeProvider::expire_access_tokens`].
    pub fn is_access_token_valid(&self, access_token: &str) -> bool {
        self.shared.lock().access_token_valid(access_token)
    }

    /// Whether `refresh_token` would currently be accepted: issued here, not
    /// yet used (rotated away), family not revoked.
    pub fn is_refresh_token_valid(&self, refresh_token: &str) -> bool {
        let inner = self.shared.lock();
        inner
            .refresh_tokens
            .get(refresh_token)
            .is_some_and(|rt| !rt.used && !inner.family_revoked(rt.family))
    }

    /// Starts a new token family for `client_id` directly (no HTTP) and
    /// returns `(access_token, refresh_token)`, e.g. for tests that provision
    /// an instance from tokens. The client does not have to be registered,
    /// but refreshing through HTTP requires it to be.
    pub fn issue_tokens(&self, client_id: &str) -> (String, String) {
        let mut inner = self.shared.lock();
        let family = inner.new_family(client_id);
        let access = self.shared.mint_access(&mut inner, family);
        let refresh = inner.mint_refresh(family);
        (access, refresh)
    }

    /// Invalidates every access token issued so far (simulates their expiry);
    /// refresh tokens are unaffected.
    pub fn expire_access_tokens(&self) {
        self.shared.lock().access_tokens.clear();
    }

    /// Revokes the family of `token` (an access or refresh token), as when a
    /// user uninstalls the app. Returns `false` if the token is unknown.
    pub fn revoke_family_of(&self, token: &str) -> bool {
        let mut inner = self.shared.lock();
        let family = inner
            .access_tokens
            .get(token)
            .copied()
            .or_else(|| inner.refresh_tokens.get(token).map(|rt| rt.family));
        match family {
            Some(family) => {
                self.shared.revoke_family(&mut inner, family);
                true
            }
            None => false,
        }
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

struct Shared {
    inner: Mutex<Inner>,
    token_calls: AtomicU64,
    refresh_calls: AtomicU64,
    code_exchanges: AtomicU64,
    revoked_families: AtomicU64,
    issued_access_tokens: AtomicU64,
}

struct Inner {
    clients: HashMap<String, String>,
    expires_in: Option<Value>,
    rotate_refresh_tokens: bool,
    omit_refresh_token: bool,
    reuse_detection: bool,
    latency: Duration,
    fail_next: u32,
    fail_status: StatusCode,
    invalid_grant_next: u32,
    next_family: u64,
    families: HashMap<u64, Family>,
    codes: HashMap<String, AuthCode>,
    refresh_tokens: HashMap<String, RefreshToken>,
    /// access token -> family
    access_tokens: HashMap<String, u64>,
}

struct Family {
    client_id: String,
    revoked: bool,
}

struct AuthCode {
    client_id: String,
    redirect_uri: String,
    /// The family issued when the code was redeemed.
    redeemed: Option<u64>,
}

#[derive(Clone, Copy)]
struct RefreshToken {
    family: u64,
    used: bool,
}

impl Shared {
    fn new() -> Shared {
        let mut clients = HashMap::new();
        clients.insert(
            DEFAULT_CLIENT_ID.to_string(),
            DEFAULT_CLIENT_SECRET.to_string(),
        );
        Shared {
            inner: Mutex::new(Inner {
                clients,
                expires_in: Some(json!(DEFAULT_EXPIRES_IN)),
                rotate_refresh_tokens: true,
                omit_refresh_token: false,
                reuse_detection: true,
                latency: Duration::ZERO,
                fail_next: 0,
                fail_status: StatusCode::INTERNAL_SERVER_ERROR,
                invalid_grant_next: 0,
                next_family: 1,
                families: HashMap::new(),
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                access_tokens: HashMap::new(),
            }),
            token_calls: AtomicU64::new(0),
            refresh_calls: AtomicU64::new(0),
            code_exchanges: AtomicU64::new(0),
            revoked_families: AtomicU64::new(0),
            issued_access_tokens: AtomicU64::new(0),
        }
    }

    /// Never held across an `.await`; a poisoned lock (a panicking test
    /// thread) is recovered rather than cascading.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mint_access(&self, inner: &mut Inner, family: u64) -> String {
        let token = random_token("at-");
        inner.access_tokens.insert(token.clone(), family);
        self.issued_access_tokens.fetch_add(1, Ordering::SeqCst);
        token
    }

    fn revoke_family(&self, inner: &mut Inner, family: u64) {
        if let Some(f) = inner.families.get_mut(&family) {
            if !f.revoked {
                f.revoked = true;
                self.revoked_families.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    /// Latency, then injected faults. `Some` is the response to send instead
    /// of normal processing.
    async fn before_response(&self) -> Option<Response> {
        let latency = self.lock().latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut inner = self.lock();
        if inner.fail_next > 0 {
            inner.fail_next -= 1;
            return Some(injected_failure(inner.fail_status));
        }
        if inner.invalid_grant_next > 0 {
            inner.invalid_grant_next -= 1;
            return Some(oauth_error(
                "invalid_grant",
                "injected invalid_grant (fault injection)",
            ));
        }
        None
    }

    fn exchange_code(&self, form: &Form, client_id: &str) -> Response {
        let Some(code) = param(form, "code") else {
            return oauth_error("invalid_request", "code is required");
        };
        let Some(redirect_uri) = param(form, "redirect_uri") else {
            return oauth_error("invalid_request", "redirect_uri is required");
        };
        let mut inner = self.lock();
        let Some(record) = inner.codes.get(code) else {
            return oauth_error("invalid_grant", "unknown authorization code");
        };
        if record.client_id != client_id {
            return oauth_error(
                "invalid_grant",
                "authorization code was issued to another client",
            );
        }
        if let Some(family) = record.redeemed {
            if inner.reuse_detection {
                self.revoke_family(&mut inner, family);
                return oauth_error(
                    "invalid_grant",
                    "authorization code already used; tokens issued from it are revoked",
                );
            }
            return oauth_error("invalid_grant", "authorization code already used");
        }
        if record.redirect_uri != redirect_uri {
            return oauth_error(
                "invalid_grant",
                "redirect_uri does not match the authorization request",
            );
        }
        let family = inner.new_family(client_id);
        if let Some(record) = inner.codes.get_mut(code) {
            record.redeemed = Some(family);
        }
        let access = self.mint_access(&mut inner, family);
        let refresh = inner.mint_refresh(family);
        token_response(&inner, &access, Some(&refresh))
    }

    fn refresh(&self, form: &Form, client_id: &str) -> Response {
        let Some(presented) = param(form, "refresh_token") else {
            return oauth_error("invalid_request", "refresh_token is required");
        };
        let mut inner = self.lock();
        let Some(record) = inner.refresh_tokens.get(presented).copied() else {
            return oauth_error("invalid_grant", "unknown refresh token");
        };
        let Some(family) = inner.families.get(&record.family) else {
            return oauth_error("invalid_grant", "unknown refresh token");
        };
        if family.revoked {
            return oauth_error("invalid_grant", "refresh token has been revoked");
        }
        if family.client_id != client_id {
            return oauth_error(
                "invalid_grant",
                "refresh token was issued to another client",
            );
        }
        if record.used {
            if inner.reuse_detection {
                self.revoke_family(&mut inner, record.family);
                return oauth_error(
                    "invalid_grant",
                    "refresh token reuse detected; token family revoked",
                );
            }
            return oauth_error("invalid_grant", "refresh token already used");
        }
        let access = self.mint_access(&mut inner, record.family);
        let refresh = if inner.omit_refresh_token {
            None
        } else if inner.rotate_refresh_tokens {
            if let Some(old) = inner.refresh_tokens.get_mut(presented) {
                old.used = true;
            }
            Some(inner.mint_refresh(record.family))
        } else {
            Some(presented.to_string())
        };
        token_response(&inner, &access, refresh.as_deref())
    }
}

impl Inner {
    fn new_family(&mut self, client_id: &str) -> u64 {
        let id = self.next_family;
        self.next_family += 1;
        self.families.insert(
            id,
            Family {
                client_id: client_id.to_string(),
                revoked: false,
            },
        );
        id
    }

    fn mint_refresh(&mut self, family: u64) -> String {
        let token = random_token("rt-");
        self.refresh_tokens.insert(
            token.clone(),
            RefreshToken {
                family,
                used: false,
            },
        );
        token
    }

    fn family_revoked(&self, family: u64) -> bool {
        self.families.get(&family).is_none_or(|f| f.revoked)
    }

    fn access_token_valid(&self, token: &str) -> bool {
        self.access_tokens
            .get(token)
            .is_some_and(|&family| !self.family_revoked(family))
    }

    /// Authenticates a confidential client (token endpoint).
    fn authenticate(&self, client_id: &str, secret: Option<&str>) -> Result<(), OAuthError> {
        let Some(expected) = self.clients.get(client_id) else {
            return Err(OAuthError::new("invalid_client", "unknown client_id"));
        };
        match secret {
            None => Err(OAuthError::new(
                "invalid_client",
                "client_secret is required",
            )),
            Some(secret) if secret == expected => Ok(()),
            Some(_) => Err(OAuthError::new(
                "invalid_client",
                "client_secret does not match",
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

type Form = HashMap<String, String>;

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
        Some(g @ ("authorization_code" | "refresh_token")) => g,
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
    if grant_type == "authorization_code" {
        shared.exchange_code(&form, &client_id)
    } else {
        shared.refresh(&form, &client_id)
    }
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
    shared.refresh(&form, client_id)
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

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Validates `client_id` and `redirect_uri` of an authorization request and
/// that the client is registered.
fn check_authorization_request<'a>(
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
fn param<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
    form.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

/// Parses `application/x-www-form-urlencoded`; a repeated parameter is an
/// error (RFC 6749 §3.1).
fn parse_form(input: &str) -> Result<Form, String> {
    let mut out = Form::new();
    for pair in input.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = form_decode(k);
        if out.insert(k.clone(), form_decode(v)).is_some() {
            return Err(format!("parameter `{k}` is repeated"));
        }
    }
    Ok(out)
}

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
fn redirect(base: &str, pairs: &[(&str, String)]) -> Response {
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

fn token_response(inner: &Inner, access: &str, refresh: Option<&str>) -> Response {
    let mut body = Map::new();
    body.insert("access_token".into(), Value::from(access));
    if let Some(refresh) = refresh {
        body.insert("refresh_token".into(), Value::from(refresh));
    }
    if let Some(expires_in) = &inner.expires_in {
        body.insert("expires_in".into(), expires_in.clone());
    }
    body.insert("token_type".into(), Value::from("bearer"));
    json_response(StatusCode::OK, Value::Object(body))
}

/// An OAuth error answered with status 400 (`{"error","error_description"}`).
struct OAuthError {
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
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

fn oauth_error(error: &str, description: &str) -> Response {
    oauth_error_status(StatusCode::BAD_REQUEST, error, description)
}

fn oauth_error_status(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        json!({"error": error, "error_description": description}),
    )
}

fn injected_failure(status: StatusCode) -> Response {
    let error = if status.is_server_error() {
        "server_error"
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        "temporarily_unavailable"
    } else {
        "invalid_request"
    };
    let message = format!("injected failure (HTTP {})", status.as_u16());
    json_response(
        status,
        json!({
            "status": "error",
            "message": message,
            "error": error,
            "error_description": message,
        }),
    )
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// `prefix` followed by 32 random bytes in lowercase hex.
fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CB: &str = "http://localhost:9/callback";

    fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client")
    }

    async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = http().post(url).form(form).send().await.expect("send");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json body"))
    }

    /// The query parameters of a `Location` header.
    fn location_params(response: &reqwest::Response) -> (String, Form) {
        let location = response
            .headers()
            .get("location")
            .expect("location header")
            .to_str()
            .expect("ascii location")
            .to_string();
        let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
        let params = parse_form(query).expect("query");
        (location, params)
    }

    async fn authorize_code(p: &FakeProvider) -> String {
        let response = http()
            .get(p.authorize_url())
            .query(&[
                ("client_id", DEFAULT_CLIENT_ID),
                ("redirect_uri", CB),
                ("scope", "oauth crm.objects.contacts.read"),
            ])
            .send()
            .await
            .expect("authorize");
        assert_eq!(response.status().as_u16(), 302);
        location_params(&response).1["code"].clone()
    }

    async fn exchange(p: &FakeProvider, code: &str) -> (u16, Value) {
        post_form(
            &p.token_url(),
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
                ("redirect_uri", CB),
            ],
        )
        .await
    }

    async fn refresh(p: &FakeProvider, refresh_token: &str) -> (u16, Value) {
        post_form(
            &p.token_url(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
            ],
        )
        .await
    }

    fn s(v: &Value, key: &str) -> String {
        v[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing in {v}"))
            .to_string()
    }

    async fn me_status(p: &FakeProvider, access: &str) -> u16 {
        http()
            .get(p.me_url())
            .bearer_auth(access)
            .send()
            .await
            .expect("me")
            .status()
            .as_u16()
    }

    #[tokio::test]
    async fn urls_are_on_loopback() {
        let p = FakeProvider::start().await;
        assert!(p.base_url().starts_with("http://127.0.0.1:"));
        assert_ne!(p.addr().port(), 0);
        assert_eq!(
            p.authorize_url(),
            format!("{}/oauth/authorize", p.base_url())
        );
        assert_eq!(p.token_url(), format!("{}/oauth/v1/token", p.base_url()));
        assert_eq!(
            p.legacy_refresh_url(),
            format!("{}/auth/v1/refresh", p.base_url())
        );
    }

    #[tokio::test]
    async fn authorize_redirects_with_code_and_state() {
        let p = FakeProvider::start().await;
        let response = http()
            .get(p.authorize_url())
            .query(&[
                ("client_id", DEFAULT_CLIENT_ID),
                ("redirect_uri", "http://localhost:9/cb?x=1"),
                ("scope", "contacts offline"),
                ("state", "a b&c=d"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 302);
        let (location, params) = location_params(&response);
        assert!(
            location.starts_with("http://localhost:9/cb?x=1&code=code-"),
            "{location}"
        );
        assert_eq!(params["x"], "1");
        assert_eq!(params["state"], "a b&c=d");
        assert!(params["code"].len() > 20);

        // No state: none echoed, `?` separator.
        let response = http()
            .get(p.authorize_url())
            .query(&[("client_id", DEFAULT_CLIENT_ID), ("redirect_uri", CB)])
            .send()
            .await
            .unwrap();
        let (location, params) = location_params(&response);
        assert!(location.starts_with(&format!("{CB}?code=")), "{location}");
        assert!(!params.contains_key("state"));

        // Fresh code each time.
        assert_ne!(authorize_code(&p).await, authorize_code(&p).await);

        // Missing parameters: 400 JSON.
        for query in [
            vec![("redirect_uri", CB)],
            vec![("client_id", DEFAULT_CLIENT_ID)],
        ] {
            let response = http()
                .get(p.authorize_url())
                .query(&query)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status().as_u16(), 400);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "invalid_request");
        }

        // Unknown client.
        let response = http()
            .get(p.authorize_url())
            .query(&[("client_id", "nobody"), ("redirect_uri", CB)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
    }

    #[tokio::test]
    async fn code_exchange_is_single_use() {
        let p = FakeProvider::start().await;
        let code = authorize_code(&p).await;
        let (status, body) = exchange(&p, &code).await;
        assert_eq!(status, 200, "{body}");
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["access_token", "refresh_token", "expires_in", "token_type"]
        );
        assert_eq!(body["expires_in"], 1800);
        assert_eq!(body["token_type"], "bearer");
        let access = s(&body, "access_token");
        let refresh_token = s(&body, "refresh_token");
        assert!(access.starts_with("at-") && refresh_token.starts_with("rt-"));
        assert!(p.is_access_token_valid(&access));
        assert!(p.is_refresh_token_valid(&refresh_token));
        assert_eq!(me_status(&p, &access).await, 200);

        // Second use: invalid_grant, and the tokens issued from it are revoked.
        let (status, body) = exchange(&p, &code).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_grant");
        assert!(!p.is_access_token_valid(&access));
        assert!(!p.is_refresh_token_valid(&refresh_token));
        assert_eq!(me_status(&p, &access).await, 401);
        assert_eq!(p.revoked_families(), 1);
        assert_eq!(p.code_exchanges(), 2);

        // Mismatched redirect_uri, unknown code, wrong secret.
        let code = authorize_code(&p).await;
        let (status, body) = post_form(
            &p.token_url(),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
                ("redirect_uri", "http://localhost:9/other"),
            ],
        )
        .await;
        assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
        let (status, body) = exchange(&p, "code-nope").await;
        assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
        let (status, body) = post_form(
            &p.token_url(),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", "wrong"),
                ("redirect_uri", CB),
            ],
        )
        .await;
        assert_eq!(
            (status, s(&body, "error").as_str()),
            (400, "invalid_client")
        );
        // The failed attempts did not consume the code.
        let (status, _) = exchange(&p, &code).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn refresh_rotates_tokens() {
        let p = FakeProvider::start().await;
        let (_, body) = exchange(&p, &authorize_code(&p).await).await;
        let (access1, rt1) = (s(&body, "access_token"), s(&body, "refresh_token"));

        let (status, body) = refresh(&p, &rt1).await;
        assert_eq!(status, 200, "{body}");
        let (access2, rt2) = (s(&body, "access_token"), s(&body, "refresh_token"));
        assert_ne!(rt1, rt2);
        assert_ne!(access1, access2);
        assert!(p.is_access_token_valid(&access1));
        assert!(p.is_access_token_valid(&access2));
        assert!(!p.is_refresh_token_valid(&rt1));
        assert!(p.is_refresh_token_valid(&rt2));

        let (status, body) = refresh(&p, &rt2).await;
        assert_eq!(status, 200);
        assert_ne!(s(&body, "refresh_token"), rt2);
        assert_eq!(p.revoked_families(), 0);

        // Without rotation the same refresh token comes back and stays usable.
        p.set_rotate_refresh_tokens(false);
        let rt3 = s(&body, "refresh_token");
        for _ in 0..2 {
            let (status, body) = refresh(&p, &rt3).await;
            assert_eq!(status, 200);
            assert_eq!(s(&body, "refresh_token"), rt3);
        }
        assert_eq!(p.refresh_calls(), 4);
    }

    #[tokio::test]
    async fn reuse_revokes_the_family() {
        let p = FakeProvider::start().await;
        let (access1, rt1) = p.issue_tokens(DEFAULT_CLIENT_ID);
        // An unrelated family must survive.
        let (other_access, other_rt) = p.issue_tokens(DEFAULT_CLIENT_ID);

        let (_, body) = refresh(&p, &rt1).await;
        let (access2, rt2) = (s(&body, "access_token"), s(&body, "refresh_token"));

        let (status, body) = refresh(&p, &rt1).await;
        assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
        assert_eq!(p.revoked_families(), 1);
        for access in [&access1, &access2] {
            assert!(!p.is_access_token_valid(access));
            assert_eq!(me_status(&p, access).await, 401);
        }
        let (status, body) = refresh(&p, &rt2).await;
        assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
        assert_eq!(p.revoked_families(), 1, "a family is counted once");

        assert!(p.is_access_token_valid(&other_access));
        let (status, _) = refresh(&p, &other_rt).await;
        assert_eq!(status, 200);

        // Reuse detection off: reuse is refused but nothing is revoked.
        p.set_reuse_detection(false);
        let (_, rt_a) = p.issue_tokens(DEFAULT_CLIENT_ID);
        let (_, body) = refresh(&p, &rt_a).await;
        let rt_b = s(&body, "refresh_token");
        let (status, _) = refresh(&p, &rt_a).await;
        assert_eq!(status, 400);
        let (status, _) = refresh(&p, &rt_b).await;
        assert_eq!(status, 200);
        assert_eq!(p.revoked_families(), 1);
    }

    #[tokio::test]
    async fn omit_refresh_token_keeps_the_old_one_usable() {
        let p = FakeProvider::start().await;
        p.set_omit_refresh_token(true);
        let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
        for _ in 0..2 {
            let (status, body) = refresh(&p, &rt).await;
            assert_eq!(status, 200, "{body}");
            assert!(body.get("refresh_token").is_none(), "{body}");
            assert!(p.is_access_token_valid(&s(&body, "access_token")));
        }
        assert_eq!(p.revoked_families(), 0);
        // Code exchanges still include one.
        let (_, body) = exchange(&p, &authorize_code(&p).await).await;
        assert!(body["refresh_token"].is_string());
    }

    #[tokio::test]
    async fn fail_next_then_success() {
        let p = FakeProvider::start().await;
        let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
        p.fail_next(2, 500);
        for _ in 0..2 {
            let (status, body) = refresh(&p, &rt).await;
            assert_eq!(status, 500);
            assert_eq!(body["error"], "server_error");
        }
        // The failures consumed nothing: the refresh token still works.
        let (status, _) = refresh(&p, &rt).await;
        assert_eq!(status, 200);
        assert_eq!(p.refresh_calls(), 3);
        assert_eq!(p.token_calls(), 3);

        // Applies to the legacy endpoint too.
        p.fail_next(1, 503);
        let (status, _) = post_form(
            &p.legacy_refresh_url(),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt-whatever"),
                ("client_id", DEFAULT_CLIENT_ID),
            ],
        )
        .await;
        assert_eq!(status, 503);
    }

    #[tokio::test]
    async fn invalid_grant_next_then_success() {
        let p = FakeProvider::start().await;
        let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
        p.invalid_grant_next(1);
        let (status, body) = refresh(&p, &rt).await;
        assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
        assert!(p.is_refresh_token_valid(&rt));
        let (status, _) = refresh(&p, &rt).await;
        assert_eq!(status, 200);
        assert_eq!(p.revoked_families(), 0);
    }

    #[tokio::test]
    async fn latency_does_not_break_responses() {
        let p = FakeProvider::start().await;
        p.set_latency(Duration::from_millis(30));
        let (_, body) = exchange(&p, &authorize_code(&p).await).await;
        let (status, _) = refresh(&p, &s(&body, "refresh_token")).await;
        assert_eq!(status, 200);
        p.set_latency(Duration::ZERO);
        let (status, _) = refresh(&p, "rt-unknown").await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn basic_auth_is_accepted() {
        let p = FakeProvider::start().await;
        p.add_client("other client", "s3cr:t");
        let code = http()
            .get(p.authorize_url())
            .query(&[("client_id", "other client"), ("redirect_uri", CB)])
            .send()
            .await
            .unwrap();
        let code = location_params(&code).1["code"].clone();
        // RFC 6749 §2.3.1: form-urlencode id and secret before base64.
        let response = http()
            .post(p.token_url())
            .basic_auth("other+client", Some("s3cr%3At"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", CB),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: Value = response.json().await.unwrap();

        let response = http()
            .post(p.token_url())
            .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", s(&body, "refresh_token").as_str()),
            ])
            .send()
            .await
            .unwrap();
        // Issued to "other client", presented by test-client.
        assert_eq!(response.status().as_u16(), 400);

        let response = http()
            .post(p.token_url())
            .basic_auth("other client", Some("s3cr:t"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", s(&body, "refresh_token").as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);

        // Wrong Basic secret.
        let response = http()
            .post(p.token_url())
            .basic_auth(DEFAULT_CLIENT_ID, Some("nope"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt-x")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }

    #[tokio::test]
    async fn request_errors_have_oauth_shape() {
        let p = FakeProvider::start().await;
        let cases: [(&[(&str, &str)], &str); 4] = [
            (&[("client_id", DEFAULT_CLIENT_ID)], "invalid_request"),
            (
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", DEFAULT_CLIENT_ID),
                    ("client_secret", DEFAULT_CLIENT_SECRET),
                ],
                "unsupported_grant_type",
            ),
            (
                &[("grant_type", "refresh_token"), ("refresh_token", "rt-x")],
                "invalid_request",
            ),
            (
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", "rt-x"),
                    ("client_id", "nobody"),
                    ("client_secret", "x"),
                ],
                "invalid_client",
            ),
        ];
        for (form, error) in cases {
            let (status, body) = post_form(&p.token_url(), form).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["error"], error, "{body}");
            assert!(body["error_description"].is_string());
        }
        // JSON instead of a form is refused.
        let response = http()
            .post(p.token_url())
            .json(&json!({"grant_type": "refresh_token"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        assert_eq!(p.token_calls(), 5);
    }

    #[tokio::test]
    async fn legacy_flow_and_refresh() {
        let p = FakeProvider::start().await;
        let response = http()
            .get(p.legacy_authenticate_url())
            .query(&[
                ("client_id", DEFAULT_CLIENT_ID),
                ("portalId", "123456"),
                ("redirect_uri", CB),
                ("scope", "contacts-rw offline"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 302);
        let (_, params) = location_params(&response);
        assert_eq!(params["expires_in"], "1800");
        assert!(p.is_access_token_valid(&params["access_token"]));
        let rt = params["refresh_token"].clone();

        let (status, body) = post_form(
            &p.legacy_refresh_url(),
            &[
                ("refresh_token", &rt),
                ("client_id", DEFAULT_CLIENT_ID),
                ("grant_type", "refresh_token"),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_ne!(s(&body, "refresh_token"), rt);
        // Reuse on the legacy endpoint revokes too.
        let (status, _) = post_form(
            &p.legacy_refresh_url(),
            &[
                ("refresh_token", &rt),
                ("client_id", DEFAULT_CLIENT_ID),
                ("grant_type", "refresh_token"),
            ],
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(p.revoked_families(), 1);
        assert_eq!(p.refresh_calls(), 2);
        assert_eq!(p.token_calls(), 0);
    }

    #[tokio::test]
    async fn hostile_expires_in_values() {
        let p = FakeProvider::start().await;
        let (_, mut rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
        for value in [
            Some(json!(0)),
            Some(json!(-60)),
            Some(json!("1800")),
            Some(json!(1e300)),
            Some(json!(u64::MAX)),
            None,
        ] {
            p.set_expires_in(value.clone());
            let (status, body) = refresh(&p, &rt).await;
            assert_eq!(status, 200);
            assert_eq!(body.get("expires_in"), value.as_ref());
            rt = s(&body, "refresh_token");
        }
    }

    #[tokio::test]
    async fn api_me_requires_a_valid_bearer_token() {
        let p = FakeProvider::start().await;
        let (access, _) = p.issue_tokens(DEFAULT_CLIENT_ID);
        let response = http().get(p.me_url()).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
        assert_eq!(me_status(&p, "at-forged").await, 401);
        let response = http()
            .get(p.me_url())
            .bearer_auth(&access)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.json::<Value>().await.unwrap(), json!({"ok": true}));

        p.expire_access_tokens();
        assert_eq!(me_status(&p, &access).await, 401);

        let (access, refresh_token) = p.issue_tokens(DEFAULT_CLIENT_ID);
        assert!(p.revoke_family_of(&refresh_token));
        assert!(!p.is_access_token_valid(&access));
        assert!(!p.revoke_family_of("rt-unknown"));
    }

    #[tokio::test]
    async fn counters() {
        let p = FakeProvider::start().await;
        assert_eq!(
            (
                p.token_calls(),
                p.refresh_calls(),
                p.code_exchanges(),
                p.revoked_families(),
                p.issued_access_tokens()
            ),
            (0, 0, 0, 0, 0)
        );
        p.issue_tokens(DEFAULT_CLIENT_ID);
        let (_, body) = exchange(&p, &authorize_code(&p).await).await;
        let rt = s(&body, "refresh_token");
        refresh(&p, &rt).await;
        refresh(&p, &rt).await; // reuse: revokes
        assert_eq!(p.token_calls(), 3);
        assert_eq!(p.refresh_calls(), 2);
        assert_eq!(p.code_exchanges(), 1);
        assert_eq!(p.revoked_families(), 1);
        assert_eq!(p.issued_access_tokens(), 3);
    }

    #[tokio::test]
    async fn concurrent_refreshes_with_one_token_trigger_reuse_detection() {
        let p = FakeProvider::start().await;
        let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
        let (a, b) = tokio::join!(refresh(&p, &rt), refresh(&p, &rt));
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 400]);
        assert_eq!(p.revoked_families(), 1);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let p = FakeProvider::start().await;
        let url = p.me_url();
        assert_eq!(
            http().get(&url).send().await.unwrap().status().as_u16(),
            401
        );
        p.shutdown().await;
        // A fresh client (no pooled connection) cannot connect any more.
        assert!(http().get(&url).send().await.is_err());
    }
}
