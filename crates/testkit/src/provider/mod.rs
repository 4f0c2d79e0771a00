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
//! | `GET /oauth/consent` | an authorize page with "Allow" and "Deny" buttons: `POST` back, then `302` to `redirect_uri?code=..&state=..` or `?error=access_denied&state=..`; a `code_challenge` (S256) given here must be matched by the exchange's `code_verifier` |
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

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

mod consent;
mod faults;
mod routes;
mod state;
#[cfg(test)]
mod tests;

use state::Shared;

/// Client id registered by default on every new [`FakeProvider`].
pub const DEFAULT_CLIENT_ID: &str = "test-client";

/// Client secret of [`DEFAULT_CLIENT_ID`].
pub const DEFAULT_CLIENT_SECRET: &str = "test-secret";

/// Default `expires_in` (seconds) of issued access tokens: HubSpot's 30 minutes.
pub const DEFAULT_EXPIRES_IN: u64 = 1800;

/// Path of the (current) authorization endpoint.
pub const AUTHORIZE_PATH: &str = "/oauth/authorize";

/// Path of the authorize page with Allow and Deny buttons.
pub const CONSENT_PATH: &str = "/oauth/consent";

/// Path of the legacy authorization endpoint (tokens in the redirect).
pub const LEGACY_AUTHENTICATE_PATH: &str = "/auth/authenticate";

/// Path of the token endpoint (`authorization_code` and `refresh_token` grants).
pub const TOKEN_PATH: &str = "/oauth/v1/token";

/// Path of the legacy refresh endpoint.
pub const LEGACY_REFRESH_PATH: &str = "/auth/v1/refresh";

/// Path of the protected test resource.
pub const ME_PATH: &str = "/api/me";

/// The token revocation endpoint (RFC 7009).
pub const REVOKE_PATH: &str = "/oauth/revoke";

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
        let app = routes::router(Arc::clone(&shared));
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

    /// `{base}/oauth/consent`: the authorize page with Allow and Deny.
    pub fn consent_url(&self) -> String {
        format!("{}{CONSENT_PATH}", self.base_url())
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

    /// `{base}/oauth/revoke` (RFC 7009: `token`, optional `token_type_hint`,
    /// client authentication as at the token endpoint; revokes the token's
    /// family).
    pub fn revoke_url(&self) -> String {
        format!("{}{REVOKE_PATH}", self.base_url())
    }

    /// Number of authenticated requests to the revocation endpoint.
    pub fn revocation_calls(&self) -> u64 {
        self.shared.revocation_calls.load(Ordering::SeqCst)
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

    /// The `token_type` sent in token responses. `None` omits the field; any
    /// JSON value is sent verbatim (control characters, numbers...).
    /// Default: `Some("bearer")`.
    pub fn set_token_type(&self, token_type: Option<Value>) {
        self.shared.lock().token_type = token_type;
    }

    /// Further fields sent in every token response (Salesforce's
    /// `instance_url`, Slack's `team`), replacing those set before.
    pub fn set_token_extra(&self, extra: serde_json::Map<String, Value>) {
        self.shared.lock().token_extra = extra;
    }

    /// The next access token issued (by any endpoint) is exactly `token`,
    /// e.g. one with control characters; later ones are random again.
    /// Calls queue up in order.
    pub fn queue_access_token(&self, token: impl Into<String>) {
        self.shared
            .lock()
            .next_access_tokens
            .push_back(token.into());
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
    /// endpoints (including injected failures), before the request is looked
    /// at. With [`FakeProvider::fail_next`] it makes "503 after a delay".
    /// `Duration::ZERO` disables it.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().faults.latency = latency;
    }

    /// Delay added after the token and legacy refresh endpoints processed a
    /// grant (tokens issued, a refresh token rotated or a family revoked)
    /// and before the answer is sent: a provider that commits, then answers
    /// slowly. A caller that gives up meanwhile has lost that answer.
    /// `Duration::ZERO` (the default) disables it.
    pub fn set_latency_after_processing(&self, delay: Duration) {
        self.shared.lock().faults.latency_after = delay;
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
        let faults = &mut self.shared.lock().faults;
        faults.fail_next = n;
        faults.fail_status = status;
    }

    /// The next `n` responses of the token and legacy refresh endpoints are
    /// `400 {"error":"invalid_grant",..}` without looking at the request
    /// (checked after [`FakeProvider::fail_next`] is exhausted). Nothing is
    /// consumed or revoked. Replaces any pending count.
    pub fn invalid_grant_next(&self, n: u32) {
        self.shared.lock().faults.invalid_grant_next = n;
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
    /// `grant_type=client_credentials` (any outcome).
    pub fn client_credentials_grants(&self) -> u64 {
        self.shared.client_credentials_grants.load(Ordering::SeqCst)
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
