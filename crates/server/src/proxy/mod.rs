//! The API proxy: a caller's request forwarded to its instance's provider
//! with the instance's credential applied.
//!
//! - `ANY /elements/api-v2/instances/{id}/proxy/{*path}`: `User` +
//!   `Organization` (the instance must be the organization's), or
//!   `Element <instance token>` alone.
//! - `ANY /elements/api-v2/hubs/{hub}/{*path}`: `Element <instance token>`
//!   (with or without `User` + `Organization`); the instance's element must
//!   be in `{hub}`. A path declared in the element's `[[resources]]` is
//!   mapped to its `provider_path`; any other passes through.
//!
//! The request goes to the element's `api_base_url` (filled, deployment
//! overrides applied) with the path and query appended; bodies are
//! streamed both ways. Our own errors carry `Elements-Error: true`; a
//! provider's answer is passed through as it is.

mod forward;
pub mod path;
mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::Deserialize;

use crate::auth::AccountOrInstance;
use crate::error::ApiError;
use crate::AppState;

/// The header on every error of ours (never on a provider's answer).
pub const ERROR_HEADER: &str = "elements-error";
/// The header with which a caller allows retries of a non-idempotent request.
pub const RETRY_HEADER: &str = "elements-retry";

/// The proxy's limits, timeout and retry policy (`[proxy]` in the config file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// The largest request body forwarded (413 above it).
    pub max_request_body: u64,
    /// Request bodies up to this size are buffered, so that the request can
    /// be replayed (retries, a refresh after a 401); larger ones are streamed.
    pub replay_body: u64,
    /// Time to wait for the provider's response head, and between body reads.
    pub timeout: Duration,
    /// Most retries of an idempotent request.
    pub max_retries: u32,
    /// Most time spent waiting between retries, in total.
    pub retry_budget: Duration,
    /// The longest `Retry-After` honoured (longer: the answer goes back).
    pub retry_after_cap: Duration,
    /// The first backoff delay (doubled at each retry, jittered).
    pub backoff: Duration,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            max_request_body: 100 * 1024 * 1024,
            replay_body: 64 * 1024,
            timeout: Duration::from_secs(30),
            max_retries: 2,
            retry_budget: Duration::from_secs(15),
            retry_after_cap: Duration::from_secs(10),
            backoff: Duration::from_millis(100),
        }
    }
}

/// The `[proxy]` table of the config file; each field replaces the default.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyFileSettings {
    /// [`ProxySettings::max_request_body`].
    pub max_request_body_bytes: Option<u64>,
    /// [`ProxySettings::replay_body`].
    pub replay_body_bytes: Option<u64>,
    /// [`ProxySettings::timeout`], in milliseconds.
    pub timeout_ms: Option<u64>,
    /// [`ProxySettings::max_retries`].
    pub max_retries: Option<u32>,
    /// [`ProxySettings::retry_budget`], in milliseconds.
    pub retry_budget_ms: Option<u64>,
    /// [`ProxySettings::retry_after_cap`], in seconds.
    pub retry_after_cap_seconds: Option<u64>,
    /// [`ProxySettings::backoff`], in milliseconds.
    pub backoff_ms: Option<u64>,
}

impl ProxySettings {
    /// Applies the file's settings (clamped to workable values).
    pub fn apply(&mut self, f: &ProxyFileSettings) {
        if let Some(v) = f.max_request_body_bytes {
            self.max_request_body = v;
        }
        if let Some(v) = f.replay_body_bytes {
            self.replay_body = v.min(16 * 1024 * 1024);
        }
        if let Some(v) = f.timeout_ms {
            self.timeout = Duration::from_millis(v.clamp(10, 600_000));
        }
        if let Some(v) = f.max_retries {
            self.max_retries = v.min(10);
        }
        if let Some(v) = f.retry_budget_ms {
            self.retry_budget = Duration::from_millis(v.min(120_000));
        }
        if let Some(v) = f.retry_after_cap_seconds {
            self.retry_after_cap = Duration::from_secs(v.min(120));
        }
        if let Some(v) = f.backoff_ms {
            self.backoff = Duration::from_millis(v.clamp(1, 10_000));
        }
    }
}

/// The proxy's HTTP client and settings.
pub struct Proxy {
    /// The settings.
    pub settings: ProxySettings,
    client: upstream::Upstream,
    /// Elements' API base URLs, parsed (by the URL text after templates
    /// are filled; at most [`BASES`], then started afresh).
    bases: parking_lot::Mutex<HashMap<String, Arc<forward::Base>>>,
}

/// The most distinct base URLs kept parsed.
const BASES: usize = 1024;

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// A proxy with these settings.
    pub fn new(settings: ProxySettings) -> Self {
        Proxy::with_tls(settings, upstream::tls_config())
    }

    /// A proxy with these settings and this TLS configuration (tests add
    /// their own root certificate).
    #[doc(hidden)]
    pub fn with_tls(settings: ProxySettings, tls: rustls::ClientConfig) -> Self {
        let client = upstream::client(&settings, tls);
        Proxy {
            settings,
            client,
            bases: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The element's API base URL for `instance`, parsed.
    fn base(
        &self,
        spec: &elements_core::ElementSpec,
        instance: &elements_store::Instance,
    ) -> Result<Arc<forward::Base>, ApiError> {
        let text = spec.base_url_for(&instance.configuration)?.ok_or_else(|| {
            ApiError::BadRequest(format!(
                "element `{}` declares no `api_base_url`: its API cannot be proxied",
                spec.key
            ))
        })?;
        if let Some(base) = self.bases.lock().get(&text) {
            return Ok(base.clone());
        }
        let base = Arc::new(forward::Base::parse(&text).map_err(|e| {
            ApiError::Conflict(format!(
                "element `{}` has an invalid API base URL: {e}",
                spec.key
            ))
        })?);
        let mut bases = self.bases.lock();
        if bases.len() >= BASES {
            bases.clear();
        }
        bases.insert(text, base.clone());
        Ok(base)
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new(ProxySettings::default())
    }
}

/// The proxy's routes (under `/elements/api-v2`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(api!("/instances/{id}/proxy/"), any(instance_proxy))
        .route(api!("/instances/{id}/proxy/{*path}"), any(instance_proxy))
        .route(api!("/hubs/{hub}/{*path}"), any(hub_proxy))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// Marks an error of ours.
fn ours(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(ERROR_HEADER, HeaderValue::from_static("true"));
    r
}

/// The request path after `skip` segments (`/instances/{id}/proxy/...`: 3),
/// as sent (still percent-encoded), and the segments skipped.
fn split_path(path: &str, skip: usize) -> (Vec<&str>, &str) {
    let mut parts = path.splitn(skip + 2, '/');
    parts.next();
    let head: Vec<&str> = (0..skip).filter_map(|_| parts.next()).collect();
    (head, parts.next().unwrap_or(""))
}

/// The tail of the request path after [`crate::API_PREFIX`] and the
/// route's own prefix.
fn tail_of(request: &Request, skip: usize) -> (Vec<String>, String) {
    let path = request.uri().path();
    let path = path.strip_prefix(crate::API_PREFIX).unwrap_or(path);
    let (head, tail) = split_path(path, skip);
    (
        head.into_iter().map(str::to_owned).collect(),
        tail.to_owned(),
    )
}

/// Calls the provider's API with the instance's credential (any method; the body streams).
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace),
    path = "/elements/api-v2/instances/{id}/proxy/{path}",
    tag = "proxy",
    security(("UserOrganization" = []), ("ElementToken" = []), ("UserOrganizationElement" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
        ("path" = String, Path, description = "The provider API path, relative to the element's `api_base_url` (may hold `/`)"),
    ),
    responses(
        (status = 200, description = "The provider's answer, unchanged (any status and body); ours carry `Elements-Error: true`"),
        (status = 403, description = "The instance is disabled", body = crate::error::ErrorBody),
        (status = 404, description = "No such instance", body = crate::error::ErrorBody),
        (status = 409, description = "The instance's grant is dead", body = crate::error::ErrorBody),
        (status = 502, description = "The provider could not be reached", body = crate::error::ErrorBody),
        (status = 504, description = "The provider did not answer in time", body = crate::error::ErrorBody),
    )
)]
async fn instance_proxy(
    State(state): State<AppState>,
    caller: AccountOrInstance,
    request: Request,
) -> Response {
    let (head, tail) = tail_of(&request, 3);
    let result = async {
        let raw_id = head.get(1).map(String::as_str).unwrap_or("");
        let id: i64 = raw_id.parse().ok().filter(|i| *i > 0).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "instance id `{}` is not a positive whole number",
                raw_id.chars().take(32).collect::<String>()
            ))
        })?;
        let instance = resolve(&state, &caller, Some(id)).await?;
        forward::forward(&state, instance, &tail, false, request).await
    }
    .await;
    result.unwrap_or_else(ours)
}

/// Cloud Elements' hub API: the provider's API (or the element's normalised resources) for the
/// instance of the `Element` token.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace),
    path = "/elements/api-v2/hubs/{hub}/{path}",
    tag = "proxy",
    security(("UserOrganizationElement" = []), ("ElementToken" = [])),
    params(
        ("hub" = String, Path, description = "The element's hub, e.g. `marketing`"),
        ("path" = String, Path, description = "The resource path (may hold `/`)"),
    ),
    responses(
        (status = 200, description = "The provider's answer, unchanged (any status and body); ours carry `Elements-Error: true`"),
        (status = 403, description = "The instance is disabled", body = crate::error::ErrorBody),
        (status = 404, description = "No such instance", body = crate::error::ErrorBody),
        (status = 409, description = "The instance's grant is dead", body = crate::error::ErrorBody),
        (status = 502, description = "The provider could not be reached", body = crate::error::ErrorBody),
        (status = 504, description = "The provider did not answer in time", body = crate::error::ErrorBody),
    )
)]
async fn hub_proxy(
    State(state): State<AppState>,
    caller: AccountOrInstance,
    request: Request,
) -> Response {
    let (head, tail) = tail_of(&request, 2);
    let result = async {
        let hub = head.get(1).map(String::as_str).unwrap_or("");
        if caller.element_token_hash.is_none() {
            return Err(ApiError::BadRequest(
                "the hub API needs the instance's token: `Authorization: User <secret>, \
                 Organization <secret>, Element <token>`"
                    .into(),
            ));
        }
        let instance = resolve(&state, &caller, None).await?;
        let element_hub = crate::private_elements::lookup(
            &state,
            instance.organization_id,
            &instance.element_key,
        )
        .await
        .ok()
        .map(|e| e.spec().hub.clone())
        .unwrap_or_default();
        if element_hub != hub {
            return Err(ApiError::BadRequest(format!(
                "the instance's element `{}` is in hub `{element_hub}`, not `{}`",
                instance.element_key,
                hub.chars().take(64).collect::<String>()
            )));
        }
        forward::forward(&state, instance, &tail, true, request).await
    }
    .await;
    result.unwrap_or_else(ours)
}

/// The instance the caller may use: by its token (and then it must be
/// `id`, and the caller's organization's), or the organization's instance `id`.
async fn resolve(
    state: &AppState,
    caller: &AccountOrInstance,
    id: Option<i64>,
) -> Result<crate::cache::SharedInstance, ApiError> {
    let not_found = |id: i64| ApiError::NotFound(format!("no instance with id {id}"));
    let instance = match (&caller.principal, &caller.element_token_hash, id) {
        (_, Some(token), _) => {
            // cache (issue 19): the same read path as `/credentials`.
            let instance = crate::cache::instance_by_token(state, token).await?;
            let same_org = caller
                .principal
                .as_ref()
                .is_none_or(|p| p.organization_id == instance.organization_id);
            if !same_org || id.is_some_and(|id| id != instance.id) {
                return Err(not_found(id.unwrap_or(instance.id)));
            }
            instance
        }
        (Some(principal), None, Some(id)) => {
            crate::cache::instance(state, principal.organization_id, id)
                .await?
                .ok_or_else(|| not_found(id))?
        }
        _ => return Err(ApiError::Unauthorized),
    };
    if instance.disabled {
        return Err(ApiError::Forbidden(format!(
            "instance {} is disabled",
            instance.id
        )));
    }
    Ok(instance)
}

/// Whether `method` may be retried without the caller's consent.
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_its_encoding() {
        assert_eq!(
            split_path("/instances/7/proxy/a/b%2Fc?x", 3),
            (vec!["instances", "7", "proxy"], "a/b%2Fc?x")
        );
        assert_eq!(
            split_path("/hubs/marketing//evil", 2),
            (vec!["hubs", "marketing"], "/evil")
        );
    }
}

#[cfg(test)]
mod settings_tests {
    use super::*;
    use crate::config::{FileConfig, ServerConfig};

    #[test]
    fn the_proxy_table_of_the_config_file_is_read_and_clamped() {
        let file: FileConfig = toml::from_str(
            "[proxy]\nmax_request_body_bytes = 1000\nreplay_body_bytes = 10\ntimeout_ms = 1\n\
             max_retries = 50\nretry_budget_ms = 500\nretry_after_cap_seconds = 3\nbackoff_ms = 7\n",
        )
        .unwrap();
        let config = ServerConfig::default().with_file(file);
        assert_eq!(
            config.proxy,
            ProxySettings {
                max_request_body: 1000,
                replay_body: 10,
                timeout: Duration::from_millis(10),
                max_retries: 10,
                retry_budget: Duration::from_millis(500),
                retry_after_cap: Duration::from_secs(3),
                backoff: Duration::from_millis(7),
            }
        );
        assert_eq!(ServerConfig::default().proxy, ProxySettings::default());
    }

    const ELEMENT: &str = "id = 9004\nkey = \"keyed\"\nname = \"Keyed\"\ndescription = \"d\"\n\
        image = \"elements/provider_keyed.png\"\nhub = \"general\"\nauthentication = \"apikey\"\n\
        existing_account_description = \"e\"\nconfig_description = \"c\"\n\
        api_base_url = \"https://api.keyed.example\"\n\n[credential]\nheaders = { X-Api-Key = \"{api.key}\" }\n\n\
        [[configuration]]\nkey = \"api.key\"\nname = \"API key\"\nsecret = true\n";

    #[test]
    fn resources_and_the_proxy_table_are_read_from_catalog_files() {
        let text = format!(
            "{ELEMENT}\n[proxy]\nmax_retries = 0\n\n[[resources]]\nname = \"things\"\nmethod = \"GET\"\n\
             path = \"/things/{{id}}\"\nprovider_path = \"/v2/things/{{id}}\"\n"
        );
        let spec = elements_core::ElementSpec::parse("keyed.toml", &text).unwrap();
        assert_eq!(spec.proxy.and_then(|p| p.max_retries), Some(0));
        assert_eq!(spec.resources[0].provider_path, "/v2/things/{id}");

        let bad = format!(
            "{ELEMENT}\n[[resources]]\nname = \"things\"\nmethod = \"GET\"\npath = \"/things\"\n\
             provider_path = \"/v2/../admin\"\n"
        );
        let err = elements_core::ElementSpec::parse("keyed.toml", &bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            err.contains("field `resources`: `things`: `provider_path` must be an absolute path"),
            "{err}"
        );
        let bad = format!(
            "{ELEMENT}\n[[resources]]\nname = \"things\"\nmethod = \"FETCH\"\npath = \"/things\"\n\
             provider_path = \"/v2/things\"\n"
        );
        let err = elements_core::ElementSpec::parse("keyed.toml", &bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            err.contains("method must be one of GET, POST, PUT, PATCH, DELETE"),
            "{err}"
        );
    }
}
