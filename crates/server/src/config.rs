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
    /// Per-element settings.
    #[serde(default)]
    pub elements: BTreeMap<String, ElementSettings>,
}

/// `[elements.<key>]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementSettings {
    /// Replaces the same-named fields of the element's `[oauth]` section.
    #[serde(default)]
    pub oauth: OAuthOverride,
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
        }
    }
}

impl ServerConfig {
    /// Applies a config file over these settings (flags and environment
    /// are applied after it, by the caller).
    pub fn with_file(mut self, file: FileConfig) -> Self {
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
        for (key, settings) in file.elements {
            self.overrides.insert(key, settings.oauth);
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
