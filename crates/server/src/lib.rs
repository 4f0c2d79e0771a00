#![forbid(unsafe_code)]
//! The Cloud Elements-compatible HTTP API.
//!
//! [`router`] builds the axum router over an [`AppState`]; [`serve`] runs it
//! on a listener until a shutdown future completes, so tests bind
//! `127.0.0.1:0` and talk real HTTP. [`run`] is what `elements serve` does:
//! configuration, catalog, key, store, accounts, background refresh, serve.
//!
//! Only this crate knows the JSON wire shapes of requests and responses
//! (the element object itself is the core's `ElementMetadata`).

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use elements_core::Registry;
use elements_store::Store;
use tokio::net::TcpListener;

/// The prefix of every API route (the console, `/healthz`, `/readyz` and
/// `/metrics` are at the root).
pub const API_PREFIX: &str = "/elements/api-v2";

/// An API route's path: `api!("/instances")` is
/// `"/elements/api-v2/instances"`. The routers register full paths instead
/// of being nested under [`API_PREFIX`]: axum wraps every nested route in a
/// layer that rebuilds the request URI on each request (issue 19).
macro_rules! api {
    ($path:literal) => {
        concat!("/elements/api-v2", $path)
    };
}

pub mod access_line;
pub mod auth;
pub mod auth_limit;
pub mod body;
pub mod cache;
pub mod config;
pub mod connect;
pub mod console;
pub mod cors;
use cors::ApplyCors as _;
pub mod credentials;
pub mod element_view;
pub mod error;
pub mod flight;
pub mod headers;
pub mod health;
pub mod health_check;
pub mod listener;
pub mod markup;
pub mod metrics;
pub mod openapi;
pub mod pkce;
pub mod placement;
pub mod private_elements;
pub mod provider;
pub mod proxy;
pub mod request_id;
pub mod revocation;
pub mod routes;
pub mod serving;
pub mod startup;
pub mod tokens;
pub mod trace;
pub mod webhooks;
pub mod wire;

pub use config::ServerConfig;
pub use startup::run;

/// Everything a handler needs: one `Arc`, so the clone every `State`
/// extractor and the per-request middleware make is one atomic increment
/// (it was a struct of a dozen `Arc`s, cloned and dropped field by field on
/// every request: issue 19's profile).
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl AppState {
    /// The state over its parts.
    pub fn new(inner: AppStateInner) -> Self {
        AppState(Arc::new(inner))
    }

    /// The same parts under a reference count of its own: each serving
    /// thread's router holds one, so the clones and drops of every request
    /// do not all write one counter shared by the threads (issue 19).
    pub fn replica(&self) -> Self {
        AppState::new((*self.0).clone())
    }
}

impl std::ops::Deref for AppState {
    type Target = AppStateInner;
    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Clone)]
pub struct AppStateInner {
    /// The element catalog.
    pub registry: Arc<Registry>,
    /// Accounts and instances.
    pub store: Arc<dyn Store>,
    /// Provider tokens: exchange and refresh.
    pub tokens: Arc<tokens::TokenManager>,
    /// Connection, authentication and per-organization limits.
    pub limits: Arc<config::Limits>,
    /// Failed authentications per client address.
    pub auth_limiter: Arc<auth_limit::AuthLimiter>,
    /// format: the domains `custom_host` values must be within (empty: any).
    pub allowed_custom_hosts: Arc<Vec<String>>,
    /// proxy: the API proxy's client and settings.
    pub proxy: Arc<proxy::Proxy>,
    /// Webhook settings (issue 16).
    pub webhooks: Arc<webhooks::Settings>,
    /// Connect: the public URL and the session lifetime.
    pub connect: Arc<connect::Settings>,
    /// private elements (issue 17): per-organization catalogs, cached.
    pub private_elements: Arc<private_elements::Cache>,
    /// health: the `[verify]` request's client and the health check settings.
    pub health_check: Arc<health_check::Checker>,
    /// cache (issue 19): the credential read path's cache.
    pub cache: Arc<cache::Cache>,
}

/// The API router, with every route under [`API_PREFIX`], and the
/// console at `/` and `/console` with its default settings.
pub fn router(state: AppState) -> Router {
    router_with(state, console::Settings::default())
}

/// [`router`] with the console's settings given (and `/metrics`).
pub fn router_with(state: AppState, console: console::Settings) -> Router {
    router_full(state, console, true)
}

/// [`router_with`], with `/metrics` only if `with_metrics` (else it is
/// served on its own listener: [`metrics::router`]). `/healthz` and
/// `/readyz` are always there; every request is counted in the metrics.
pub fn router_full(state: AppState, console: console::Settings, with_metrics: bool) -> Router {
    let mut ops = health::router();
    if with_metrics {
        ops = ops.merge(metrics::router());
    }
    let api = Router::new()
        .merge(routes::elements::router())
        .merge(routes::instances::router())
        .merge(routes::element_instances::router())
        .merge(routes::organizations::router())
        .merge(proxy::router())
        .merge(routes::webhooks::router())
        .merge(connect::router())
        .merge(routes::private_elements::router())
        .merge(openapi::router());
    Router::new()
        .merge(api)
        .merge(console::router(console))
        .merge(ops)
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        // One layer for request id, head cap, auth limiter, metrics and the
        // log line (request_id.rs says why one), around the body limit: one
        // `Router::layer` call, as each wraps every route in a boxed service
        // of its own (two allocations per request each).
        .layer(tower_layer::Stack::new(
            DefaultBodyLimit::max(body::MAX_BODY),
            request_id::Layer::new(state.clone()),
        ))
        .with_state(state.clone())
        .apply_cors(&state.limits.cors_allowed_origins)
}

/// Serves the API on `listener` until `shutdown` completes, then gives the
/// requests in flight `shutdown_timeout` to finish (see [`listener`]: the
/// connection cap and timeouts come from `state.limits`).
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.limits.clone();
    listener::serve(listener, router(state), &limits, shutdown).await
}
