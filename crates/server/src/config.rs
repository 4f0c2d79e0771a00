//! Server configuration: flags and environment (parsed by the CLI), an
//! optional TOML file, and defaults — in that order of precedence.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use elements_core::{OAuthOverride, Secret};
use serde::Deserialize;

use crate::tokens::TokenPolicy;

/// The `--config FILE` format.
///
/// ```toml
/// listen = "127.0.0.1:8080"
/// database_url = "sqlite://./elements-data/elements.db"
/// data_dir = "./elements-data"
/// elements_dirs = ["./my-elements"]
/// refresh_margin_seconds = 300
/// refresh_interval_seconds = 30
/// provider_timeout_seconds = 10
/// max_connections = 512              # connection cap (see `Limits`)
/// header_read_timeout_seconds = 10
/// idle_timeout_seconds = 60
/// shutdown_timeout_seconds = 10
/// auth_failure_burst = 20             # 0 turns the limiter off
/// auth_failures_per_minute = 10
/// max_instances_per_organization = 10000
/// max_configuration_entries = 100
/// max_configuration_bytes = 32768
/// default_page_size = 200            # GET /instances without pageSize
/// max_page_size = 500                # largest pageSize
/// cors_allowed_origins = []          # e.g. ["https://app.example.com"]
/// strict_key_permissions = false
/// metrics_listen = "127.0.0.1:9090"   # /metrics on its own listener
/// console_session_seconds = 43200
/// public_url = "https://elements.example.com"  # required for connect
/// connect_session_seconds = 900
///
/// [elements.freshdesk]               # per element key:
/// api_base_url = "http://127.0.0.1:9998/api/v2"   # replaces the API base URL
///
/// [elements.hubspot.oauth]          # endpoint overrides, per element key
/// token_url = "http://127.0.0.1:9999/oauth/v1/token"
/// refresh_url = "http://127.0.0.1:9999/auth/v1/refresh"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: Option<String>,
    /// Directory for the embedded database and key file.
    pub data_dir: Option<PathBuf>,
    /// Catalog directories layered over the built-in catalog.
    #[serde(default)]
    pub elements_dirs: Vec<PathBuf>,
    /// Refresh tokens that expire within this many seconds.
    pub refresh_margin_seconds: Option<i64>,
    /// How often the background refresher looks for expiring tokens.
    pub refresh_interval_seconds: Option<u64>,
    /// Timeout of each provider request.
    pub provider_timeout_seconds: Option<u64>,
    /// Most connections served at once.
    pub max_connections: Option<usize>,
    /// Time allowed to send a complete request head.
    pub header_read_timeout_seconds: Option<u64>,
    /// Time a kept-alive connection may sit idle between requests.
    pub idle_timeout_seconds: Option<u64>,
    /// Time given to open connections at shutdown.
    pub shutdown_timeout_seconds: Option<u64>,
    /// Failed authentications allowed in a burst per client address (0: no limit).
    pub auth_failure_burst: Option<u32>,
    /// Failed authentications replenished per minute per client address.
    pub auth_failures_per_minute: Option<u32>,
    /// Most instances per organization.
    pub max_instances_per_organization: Option<u64>,
    /// Most configuration entries per instance.
    pub max_configuration_entries: Option<usize>,
    /// Most configuration bytes (keys and values) per instance.
    pub max_configuration_bytes: Option<usize>,
    /// compat: `GET /instances` page size when `pageSize` is absent.
    pub default_page_size: Option<u32>,
    /// compat: the largest `pageSize` allowed.
    pub max_page_size: Option<u32>,
    /// compat: origins allowed to call the API from a browser (CORS).
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Refuse to start when the key file is readable by group or others.
    pub strict_key_permissions: Option<bool>,
    /// Per-element settings.
    #[serde(default)]
    pub elements: BTreeMap<String, ElementSettings>,
    /// Serve `/metrics` on this address instead of the main listener.
    pub metrics_listen: Option<String>,
    /// How long a console session lasts, in seconds.
    pub console_session_seconds: Option<i64>,
    // --- format ---
    /// Domains a `custom_host` configuration value (self-hosted and
    /// custom-domain providers) must be, or be under; empty: any host that
    /// passes the built-in rules (https, no IP address, no localhost, two
    /// labels or more).
    #[serde(default)]
    pub allowed_custom_hosts: Vec<String>,
    /// proxy: the `[proxy]` table (see [`crate::proxy::ProxySettings`]).
    #[serde(default)]
    pub proxy: crate::proxy::ProxyFileSettings,
    /// Deliver webhooks to private, loopback and link-local addresses, and
    /// over plain http.
    pub webhooks_allow_private: Option<bool>,
    /// Delays before each webhook retry, in milliseconds.
    pub webhooks_retry_schedule_ms: Option<Vec<u64>>,
    /// Timeout of one webhook delivery, in milliseconds.
    pub webhooks_timeout_ms: Option<u64>,
    /// How often the webhook worker polls when idle, in milliseconds.
    pub webhooks_poll_interval_ms: Option<u64>,
    /// The server's public base URL (connect: the OAuth callback).
    pub public_url: Option<String>,
    /// How long a connect session lasts, in seconds.
    pub connect_session_seconds: Option<i64>,
    /// health: run an element's `[verify]` request on `POST /instances`.
    pub verify_on_create: Option<bool>,
    /// health: seconds between background checks of an instance (0: off).
    pub health_check_interval_seconds: Option<u64>,
    /// health: days delivered and dead-lettered events are kept (0: for ever).
    pub event_retention_days: Option<u64>,
    // --- cache (issue 19) ---
    /// Most instances (and, apart, accounts) the credential cache keeps; 0: off.
    pub cache_capacity: Option<u64>,
    /// Oldest a cached entry may be when served, in milliseconds.
    pub cache_max_age_ms: Option<u64>,
}

/// Limits that protect the server from its clients. Every one is a flag,
/// an `ELEMENTS_*` variable and a config-file key (see `FileConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most connections served at once; further ones wait in the listen
    /// backlog until one closes.
    pub max_connections: usize,
    /// Time allowed to send a complete request head, from its first byte
    /// (from the connection's start for a new connection).
    pub header_read_timeout: Duration,
    /// Time a kept-alive connection may wait for its next request.
    pub idle_timeout: Duration,
    /// At shutdown, time given to open connections to finish; then they
    /// are closed.
    pub shutdown_timeout: Duration,
    /// Failed authentications a client address may make in a burst before
    /// it is answered 429; 0 turns the limiter off.
    pub auth_failure_burst: u32,
    /// Failed authentications replenished per minute per client address.
    pub auth_failures_per_minute: u32,
    /// Most instances an organization may hold.
    pub max_instances_per_organization: u64,
    /// Most configuration entries per instance.
    pub max_configuration_entries: usize,
    /// Most configuration bytes (keys plus values) per instance.
    pub max_configuration_bytes: usize,
    /// compat: `GET /instances` page size when `pageSize` is absent.
    pub default_page_size: u32,
    /// compat: the largest `pageSize` allowed (larger is a 400).
    pub max_page_size: u32,
    /// compat: exact origins (`https://app.example.com`) allowed to call the
    /// API from a browser; empty: no CORS headers at all.
    pub cors_allowed_origins: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(10),
            auth_failure_burst: 20,
            auth_failures_per_minute: 10,
            max_instances_per_organization: 10_000,
            max_configuration_entries: 100,
            max_configuration_bytes: 32 * 1024,
            default_page_size: 200,
            max_page_size: 500,
            cors_allowed_origins: Vec::new(),
        }
    }
}

/// Limit settings from one source (file, or flags and environment); the
/// unset ones leave the current value.
#[derive(Debug, Default, Clone)]
pub struct LimitSettings {
    /// `max_connections`.
    pub max_connections: Option<usize>,
    /// `header_read_timeout_seconds`.
    pub header_read_timeout_seconds: Option<u64>,
    /// `idle_timeout_seconds`.
    pub idle_timeout_seconds: Option<u64>,
    /// `shutdown_timeout_seconds`.
    pub shutdown_timeout_seconds: Option<u64>,
    /// `auth_failure_burst`.
    pub auth_failure_burst: Option<u32>,
    /// `auth_failures_per_minute`.
    pub auth_failures_per_minute: Option<u32>,
    /// `max_instances_per_organization`.
    pub max_instances_per_organization: Option<u64>,
    /// `max_configuration_entries`.
    pub max_configuration_entries: Option<usize>,
    /// `max_configuration_bytes`.
    pub max_configuration_bytes: Option<usize>,
    /// `default_page_size` (compat).
    pub default_page_size: Option<u32>,
    /// `max_page_size` (compat).
    pub max_page_size: Option<u32>,
    /// `cors_allowed_origins` (compat).
    pub cors_allowed_origins: Option<Vec<String>>,
}

impl Limits {
    /// Applies the settings given (at least one connection, timeouts of at
    /// least a second, a shutdown timeout of zero or more).
    pub fn apply(&mut self, s: &LimitSettings) {
        if let Some(n) = s.max_connections {
            self.max_connections = n.max(1);
        }
        if let Some(secs) = s.header_read_timeout_seconds {
            self.header_read_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = s.idle_timeout_seconds {
            self.idle_timeout = Duration::from_secs(secs.max(1));
        }
        if let Some(secs) = s.shutdown_timeout_seconds {
            self.shutdown_timeout = Duration::from_secs(secs);
        }
        if let Some(n) = s.auth_failure_burst {
            self.auth_failure_burst = n;
        }
        if let Some(n) = s.auth_failures_per_minute {
            self.auth_failures_per_minute = n.max(1);
        }
        if let Some(n) = s.max_instances_per_organization {
            self.max_instances_per_organization = n;
        }
        if let Some(n) = s.max_configuration_entries {
            self.max_configuration_entries = n;
        }
        if let Some(n) = s.max_configuration_bytes {
            self.max_configuration_bytes = n;
        }
        if let Some(n) = s.max_page_size {
            self.max_page_size = n.max(1);
        }
        if let Some(n) = s.default_page_size {
            self.default_page_size = n.max(1);
        }
        self.default_page_size = self.default_page_size.min(self.max_page_size);
        if let Some(origins) = &s.cors_allowed_origins {
            self.cors_allowed_origins = origins.clone();
        }
    }
}

impl FileConfig {
    /// The limit settings of the file.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            max_connections: self.max_connections,
            header_read_timeout_seconds: self.header_read_timeout_seconds,
            idle_timeout_seconds: self.idle_timeout_seconds,
            shutdown_timeout_seconds: self.shutdown_timeout_seconds,
            auth_failure_burst: self.auth_failure_burst,
            auth_failures_per_minute: self.auth_failures_per_minute,
            max_instances_per_organization: self.max_instances_per_organization,
            max_configuration_entries: self.max_configuration_entries,
            max_configuration_bytes: self.max_configuration_bytes,
            default_page_size: self.default_page_size,
            max_page_size: self.max_page_size,
            cors_allowed_origins: self.cors_allowed_origins.clone(),
        }
    }
}

/// `[elements.<key>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementSettings {
    /// Replaces the same-named fields of the element's `[oauth]` section.
    #[serde(default)]
    pub oauth: OAuthOverride,
    /// Replaces the element's `api_base_url` (any kind of element).
    #[serde(default)]
    pub api_base_url: Option<String>,
}

impl FileConfig {
    /// Reads and parses a config file; errors name the file and line.
    pub fn load(path: &Path) -> Result<FileConfig, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].matches('\n').count() + 1)
                .map_or(String::new(), |l| format!("{l}:"));
            format!("{}:{line} {}", path.display(), e.message().trim_end())
        })
    }
}

/// Everything `elements serve` needs, resolved.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: String,
    /// Database URL; `None` means a SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// Directory for the embedded database and the key file.
    pub data_dir: PathBuf,
    /// Catalog directories layered over the built-in catalog.
    pub elements_dirs: Vec<PathBuf>,
    /// `ELEMENTS_MASTER_KEY`: comma-separated base64 keys, first encrypts.
    pub master_key: Option<Secret>,
    /// `ELEMENTS_ORGANIZATION_SECRET`: an account ensured at start.
    pub organization_secret: Option<Secret>,
    /// `ELEMENTS_USER_SECRET`: an account ensured at start.
    pub user_secret: Option<Secret>,
    /// Endpoint overrides by element key.
    pub overrides: BTreeMap<String, OAuthOverride>,
    /// Token timing.
    pub policy: TokenPolicy,
    /// Background refresh period.
    pub refresh_interval: Duration,
    /// Provider request timeout.
    pub provider_timeout: Duration,
    /// Connection, authentication and per-organization limits.
    pub limits: Limits,
    /// Refuse to start (instead of warning) when the key file is readable
    /// by group or others.
    pub strict_key_permissions: bool,
    /// `/metrics` on its own listener at this address (then not on the
    /// main one); `None`: on the main listener.
    pub metrics_listen: Option<String>,
    /// How long a console session lasts.
    pub console_session_seconds: i64,
    // --- format ---
    /// `allowed_custom_hosts` (`ELEMENTS_ALLOWED_CUSTOM_HOSTS`, comma-separated).
    pub allowed_custom_hosts: Vec<String>,
    /// `api_base_url` overrides by element key (`[elements.<key>] api_base_url`).
    pub api_base_urls: BTreeMap<String, String>,
    /// proxy: limits, timeout and retry policy of the API proxy.
    pub proxy: crate::proxy::ProxySettings,
    /// Webhook delivery (issue 16).
    pub webhooks: crate::webhooks::Settings,
    /// The public base URL (`https://host[:port][/prefix]`), needed by
    /// connect: the OAuth callback is `<public_url>/elements/api-v2/oauth/callback`.
    pub public_url: Option<String>,
    /// How long a connect session lasts, in seconds (0 or more).
    pub connect_session_seconds: i64,
    /// health: verification on create, the background check, event retention.
    pub health_check: crate::health_check::Settings,
    // --- cache (issue 19) ---
    /// The credential read path's cache: size limit and maximum entry age.
    pub cache: crate::cache::CacheSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            database_url: None,
            data_dir: PathBuf::from("elements-data"),
            elements_dirs: Vec::new(),
            master_key: None,
            organization_secret: None,
            user_secret: None,
            overrides: BTreeMap::new(),
            policy: TokenPolicy::default(),
            refresh_interval: Duration::from_secs(30),
            provider_timeout: Duration::from_secs(10),
            limits: Limits::default(),
            strict_key_permissions: false,
            metrics_listen: None,
            console_session_seconds: crate::console::DEFAULT_SESSION_SECONDS,
            allowed_custom_hosts: Vec::new(),
            api_base_urls: BTreeMap::new(),
            proxy: crate::proxy::ProxySettings::default(),
            webhooks: crate::webhooks::Settings::default(),
            public_url: None,
            connect_session_seconds: crate::connect::DEFAULT_SESSION_SECONDS,
            health_check: crate::health_check::Settings::default(),
            cache: crate::cache::CacheSettings::default(),
        }
    }
}

impl ServerConfig {
    /// Applies a config file over these settings (flags and environment
    /// are applied after it, by the caller).
    pub fn with_file(mut self, file: FileConfig) -> Self {
        self.limits.apply(&file.limit_settings());
        if let Some(listen) = file.listen {
            self.listen = listen;
        }
        if let Some(url) = file.database_url {
            self.database_url = Some(url);
        }
        if let Some(dir) = file.data_dir {
            self.data_dir = dir;
        }
        self.elements_dirs.extend(file.elements_dirs);
        if let Some(m) = file.refresh_margin_seconds {
            self.policy.refresh_margin = m.max(0);
        }
        if let Some(s) = file.refresh_interval_seconds {
            self.refresh_interval = Duration::from_secs(s.max(1));
        }
        if let Some(s) = file.provider_timeout_seconds {
            self.provider_timeout = Duration::from_secs(s.clamp(1, 300));
        }
        if let Some(allow) = file.webhooks_allow_private {
            self.webhooks.allow_private = allow;
        }
        if let Some(schedule) = file.webhooks_retry_schedule_ms {
            self.webhooks.retry_schedule =
                schedule.into_iter().map(Duration::from_millis).collect();
        }
        if let Some(ms) = file.webhooks_timeout_ms {
            self.webhooks.timeout = Duration::from_millis(ms.clamp(1, 300_000));
        }
        if let Some(ms) = file.webhooks_poll_interval_ms {
            self.webhooks.poll_interval = Duration::from_millis(ms.clamp(1, 60_000));
        }
        if let Some(strict) = file.strict_key_permissions {
            self.strict_key_permissions = strict;
        }
        if let Some(addr) = file.metrics_listen {
            self.metrics_listen = Some(addr);
        }
        if let Some(s) = file.console_session_seconds {
            self.console_session_seconds = s.max(60);
        }
        if let Some(url) = file.public_url {
            self.public_url = Some(url);
        }
        if let Some(s) = file.connect_session_seconds {
            self.connect_session_seconds = s.max(0);
        }
        for (key, settings) in file.elements {
            if let Some(url) = settings.api_base_url {
                self.api_base_urls.insert(key.clone(), url);
            }
            if settings.oauth != OAuthOverride::default() {
                self.overrides.insert(key, settings.oauth);
            }
        }
        if !file.allowed_custom_hosts.is_empty() {
            self.allowed_custom_hosts = file.allowed_custom_hosts;
        }
        self.proxy.apply(&file.proxy);
        self.health_check.apply(
            file.verify_on_create,
            file.health_check_interval_seconds,
            file.event_retention_days,
        );
        if let Some(c) = file.cache_capacity {
            self.cache.capacity = c;
        }
        if let Some(ms) = file.cache_max_age_ms {
            self.cache.max_age = Duration::from_millis(ms.min(60_000));
        }
        self
    }

    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("elements.db").display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_is_read_from_the_config_file() {
        let file: FileConfig = toml::from_str(
            "max_connections = 7\n\
             header_read_timeout_seconds = 3\n\
             idle_timeout_seconds = 4\n\
             shutdown_timeout_seconds = 0\n\
             auth_failure_burst = 5\n\
             auth_failures_per_minute = 6\n\
             max_instances_per_organization = 8\n\
             max_configuration_entries = 9\n\
             max_configuration_bytes = 1000\n\
             default_page_size = 50\n\
             max_page_size = 100\n\
             cors_allowed_origins = [\"https://app.example.com\"]\n\
             strict_key_permissions = true\n",
        )
        .unwrap();
        let config = ServerConfig::default().with_file(file);
        assert_eq!(
            config.limits,
            Limits {
                max_connections: 7,
                header_read_timeout: Duration::from_secs(3),
                idle_timeout: Duration::from_secs(4),
                shutdown_timeout: Duration::ZERO,
                auth_failure_burst: 5,
                auth_failures_per_minute: 6,
                max_instances_per_organization: 8,
                max_configuration_entries: 9,
                max_configuration_bytes: 1000,
                default_page_size: 50,
                max_page_size: 100,
                cors_allowed_origins: vec!["https://app.example.com".into()],
            }
        );
        assert!(config.strict_key_permissions);
    }

    #[test]
    fn ops_settings_are_read_from_the_config_file() {
        let file: FileConfig =
            toml::from_str("metrics_listen = \"127.0.0.1:9091\"\nconsole_session_seconds = 600\n")
                .unwrap();
        let config = ServerConfig::default().with_file(file);
        assert_eq!(config.metrics_listen.as_deref(), Some("127.0.0.1:9091"));
        assert_eq!(config.console_session_seconds, 600);
        let defaults = ServerConfig::default();
        assert_eq!(defaults.metrics_listen, None);
        assert_eq!(defaults.console_session_seconds, 12 * 3600);
    }

    #[test]
    fn connect_settings_are_read_from_the_config_file() {
        let file: FileConfig = toml::from_str(
            "public_url = \"https://elements.example.com\"\nconnect_session_seconds = 120\n",
        )
        .unwrap();
        let config = ServerConfig::default().with_file(file);
        assert_eq!(
            config.public_url.as_deref(),
            Some("https://elements.example.com")
        );
        assert_eq!(config.connect_session_seconds, 120);
        let defaults = ServerConfig::default();
        assert_eq!(defaults.public_url, None);
        assert_eq!(defaults.connect_session_seconds, 900);
    }

    #[test]
    fn limits_are_clamped_to_workable_values() {
        let mut limits = Limits::default();
        limits.apply(&LimitSettings {
            max_connections: Some(0),
            header_read_timeout_seconds: Some(0),
            idle_timeout_seconds: Some(0),
            auth_failures_per_minute: Some(0),
            ..LimitSettings::default()
        });
        assert_eq!(limits.max_connections, 1);
        assert_eq!(limits.header_read_timeout, Duration::from_secs(1));
        assert_eq!(limits.idle_timeout, Duration::from_secs(1));
        assert_eq!(limits.auth_failures_per_minute, 1);
        assert_eq!(Limits::default().auth_failure_burst, 20);
    }
}
