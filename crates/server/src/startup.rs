//! What `elements serve` does, step by step.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context as _, Result};
use elements_core::Registry;
use elements_store::{hash_secret, Keyring, NewAccount, Principal, Store, StoreError};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::provider::HttpTransport;
use crate::tokens::TokenManager;
use crate::AppState;

/// The catalog with the configured directories and overrides.
pub fn registry(config: &ServerConfig) -> Result<Registry> {
    elements_catalog::load_with(
        &config.elements_dirs,
        config
            .overrides
            .iter()
            .map(|(k, o)| (k.as_str(), o.clone())),
        config
            .api_base_urls
            .iter()
            .map(|(k, u)| (k.as_str(), u.as_str())),
    )
    .map_err(|e| anyhow!("the catalog is invalid:\n{e}"))
}

const KEY_FILE: &str = "master.key";

fn key_file_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEY_FILE)
}

/// The encryption keys: `ELEMENTS_MASTER_KEY`, else the key file in the data
/// directory, created (owner-only) if missing.
pub fn keyring(config: &ServerConfig) -> Result<Keyring> {
    if let Some(keys) = &config.master_key {
        return Keyring::parse(keys.expose()).context("ELEMENTS_MASTER_KEY");
    }
    let path = key_file_path(&config.data_dir);
    match fs::read_to_string(&path) {
        Ok(text) => {
            check_key_permissions(&path, config.strict_key_permissions)?;
            Keyring::parse(text.trim()).with_context(|| format!("key file {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let database = config.data_dir.join("elements.db");
            if config.database_url.is_none() && database.exists() {
                return Err(anyhow!(
                    "the database {} exists but its key file {} is missing: restore the key file \
                     or set ELEMENTS_MASTER_KEY (a new key could not decrypt anything stored)",
                    database.display(),
                    path.display()
                ));
            }
            fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            let key = Keyring::encode_key(&Keyring::generate_key());
            let mut options = fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt as _;
                options.mode(0o600);
            }
            let mut file = options
                .open(&path)
                .with_context(|| format!("creating key file {}", path.display()))?;
            file.write_all(key.as_bytes())
                .and_then(|_| file.sync_all())
                .with_context(|| format!("writing key file {}", path.display()))?;
            tracing::warn!(
                path = %path.display(),
                "created a new master key file (owner-only); back it up: without it stored tokens cannot be decrypted"
            );
            Keyring::parse(&key).context("new key")
        }
        Err(e) => Err(anyhow!("reading key file {}: {e}", path.display())),
    }
}

/// Warns about — or, with `strict`, refuses — a key file that group or
/// others may read.
fn check_key_permissions(path: &Path, strict: bool) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(path)
            .with_context(|| format!("key file {}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            let problem = format!(
                "the key file {} is readable or writable by group or others (mode {mode:03o}); \
                 restrict it with `chmod 600 {}`",
                path.display(),
                path.display()
            );
            if strict {
                return Err(anyhow!(
                    "{problem} (refused: --strict-key-permissions / ELEMENTS_STRICT_KEY_PERMISSIONS)"
                ));
            }
            tracing::warn!("{problem}");
        }
    }
    #[cfg(not(unix))]
    let _ = (path, strict);
    Ok(())
}

/// Opens (and migrates) the configured database.
pub async fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>> {
    let url = config.database_url();
    if config.database_url.is_none() {
        fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    }
    let keyring = keyring(config)?;
    elements_store::connect(&url, keyring)
        .await
        .context("opening the database")
}

/// New account secrets, as `elements accounts create` prints them.
/// (No `Debug`: it holds the secrets in clear, for printing once.)
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAccount {
    /// The organization.
    pub organization: CreatedOrganization,
    /// The user.
    pub user: CreatedUser,
}

/// The organization part of [`CreatedAccount`].
#[derive(Serialize)]
pub struct CreatedOrganization {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The secret, shown once.
    pub secret: String,
}

/// The user part of [`CreatedAccount`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedUser {
    /// Id.
    pub id: i64,
    /// E-mail.
    pub email_address: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// The secret, shown once.
    pub secret: String,
}

/// Creates an organization and its first user with fresh random secrets.
pub async fn create_account(
    store: &dyn Store,
    organization: &str,
    email: &str,
    first_name: &str,
    last_name: &str,
) -> Result<CreatedAccount, StoreError> {
    let org_secret = crate::pkce::random_token(32);
    let user_secret = crate::pkce::random_token(32);
    let principal = store
        .create_account(NewAccount {
            organization_name: organization.to_owned(),
            organization_secret_hash: hash_secret(&org_secret),
            email: email.to_owned(),
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            user_secret_hash: hash_secret(&user_secret),
        })
        .await?;
    Ok(created(principal, org_secret, user_secret))
}

fn created(p: Principal, org_secret: String, user_secret: String) -> CreatedAccount {
    CreatedAccount {
        organization: CreatedOrganization {
            id: p.organization_id,
            name: p.organization_name,
            secret: org_secret,
        },
        user: CreatedUser {
            id: p.user.id,
            email_address: p.user.email,
            first_name: p.user.first_name,
            last_name: p.user.last_name,
            secret: user_secret,
        },
    }
}

/// The `meta` key recording which organization the configured
/// `ELEMENTS_ORGANIZATION_SECRET`/`ELEMENTS_USER_SECRET` account is.
const ENV_ACCOUNT: &str = "env_account_organization_id";

/// Makes sure an account exists: the one named by the configured secrets,
/// or — if the database has none at all — a new one, whose secrets are
/// printed once on standard output.
///
/// The account created from `ELEMENTS_ORGANIZATION_SECRET` and
/// `ELEMENTS_USER_SECRET` is remembered (`meta`). If later the configured
/// secrets no longer open it — they were changed, or the account's secrets
/// were rotated — the server refuses to start, naming the account, instead
/// of creating a second account beside it while the old secrets keep
/// working. (Rotating automatically to the configured values was rejected:
/// two replicas with different values would rotate each other's secrets
/// away at every restart.)
pub async fn ensure_account(store: &dyn Store, config: &ServerConfig) -> Result<()> {
    match (&config.organization_secret, &config.user_secret) {
        (Some(org), Some(user)) => {
            let (uh, oh) = (hash_secret(user.expose()), hash_secret(org.expose()));
            let recorded = store
                .meta(ENV_ACCOUNT)
                .await
                .context("checking the account")?;
            match store
                .authenticate(&uh, &oh)
                .await
                .context("checking the account")?
            {
                Some(principal) => {
                    let id = principal.organization_id.to_string();
                    if recorded.as_deref() != Some(id.as_str()) {
                        store
                            .set_meta(ENV_ACCOUNT, &id)
                            .await
                            .context("recording the account")?;
                    }
                }
                None => {
                    if let Some(id) = recorded {
                        return Err(anyhow!(
                            "ELEMENTS_ORGANIZATION_SECRET/ELEMENTS_USER_SECRET do not open the account \
                             they created (organization {id}): they were changed, or the account's \
                             secrets were rotated. Set them to the account's current secrets (get new \
                             ones with `elements accounts rotate --organization {id}` and \
                             `elements accounts rotate --user ID`); refusing to start rather than \
                             create a second account"
                        ));
                    }
                    let principal = store
                        .create_account(NewAccount {
                            organization_name: "default".into(),
                            organization_secret_hash: oh,
                            email: "admin@localhost".into(),
                            first_name: "Admin".into(),
                            last_name: "".into(),
                            user_secret_hash: uh,
                        })
                        .await
                        .context(
                            "creating the account of ELEMENTS_ORGANIZATION_SECRET/ELEMENTS_USER_SECRET",
                        )?;
                    store
                        .set_meta(ENV_ACCOUNT, &principal.organization_id.to_string())
                        .await
                        .context("recording the account")?;
                    tracing::info!("created the account given by ELEMENTS_ORGANIZATION_SECRET and ELEMENTS_USER_SECRET");
                }
            }
        }
        (None, None) => {
            if store
                .organization_count()
                .await
                .context("counting accounts")?
                == 0
            {
                let account = create_account(store, "default", "admin@localhost", "Admin", "")
                    .await
                    .context("creating the first account")?;
                println!(
                    "{}",
                    serde_json::to_string(&serde_json::json!({ "firstAccount": account }))
                        .unwrap_or_default()
                );
                tracing::warn!(
                    "created the first account; its secrets were printed once on standard output"
                );
            }
        }
        _ => {
            return Err(anyhow!(
                "set both ELEMENTS_ORGANIZATION_SECRET and ELEMENTS_USER_SECRET, or neither"
            ))
        }
    }
    Ok(())
}

/// A new random secret for organization `id` (`elements accounts rotate
/// --organization`); the old one stops working at once.
pub async fn rotate_organization_secret(store: &dyn Store, id: i64) -> Result<String> {
    let secret = crate::pkce::random_token(32);
    if !store
        .set_organization_secret(id, &hash_secret(&secret))
        .await?
    {
        return Err(anyhow!("no organization with id {id}"));
    }
    Ok(secret)
}

/// A new random secret for user `id` (`elements accounts rotate --user`).
pub async fn rotate_user_secret(store: &dyn Store, id: i64) -> Result<String> {
    let secret = crate::pkce::random_token(32);
    if !store.set_user_secret(id, &hash_secret(&secret)).await? {
        return Err(anyhow!("no user with id {id}"));
    }
    Ok(secret)
}

/// A new random token for instance `id` (`elements instances rotate-token`).
pub async fn rotate_instance_token(store: &dyn Store, id: i64) -> Result<String> {
    let instance = store
        .instance_any(id)
        .await?
        .ok_or_else(|| anyhow!("no instance with id {id}"))?;
    let token = crate::pkce::random_token(32);
    if !store
        .set_instance_token(instance.organization_id, id, &hash_secret(&token))
        .await?
    {
        return Err(anyhow!("no instance with id {id}"));
    }
    Ok(token)
}

/// The HKDF info label of the console's session key.
pub const CONSOLE_KEY_LABEL: &str = "elements console session key v1";

/// Builds the application state over an open store.
pub fn state(config: &ServerConfig, registry: Registry, store: Arc<dyn Store>) -> AppState {
    let transport = Arc::new(HttpTransport::new(config.provider_timeout));
    state_with_transport(config, registry, store, transport)
}

/// [`state`] with the token manager's provider calls going through
/// `transport` (tests route a provider's host to a local fake with it).
pub fn state_with_transport(
    config: &ServerConfig,
    registry: Registry,
    store: Arc<dyn Store>,
    transport: Arc<dyn elements_core::Transport>,
) -> AppState {
    let registry = Arc::new(registry);
    let tokens = Arc::new(TokenManager::new(
        store.clone(),
        registry.clone(),
        transport,
        config.policy,
    ));
    let cache = crate::cache::start(config.cache, &config.database_url(), store.as_ref());
    AppState::new(crate::AppStateInner {
        registry,
        store,
        tokens,
        limits: Arc::new(config.limits.clone()),
        auth_limiter: Arc::new(crate::auth_limit::AuthLimiter::new(
            config.limits.auth_failure_burst,
            config.limits.auth_failures_per_minute,
        )),
        allowed_custom_hosts: Arc::new(config.allowed_custom_hosts.clone()),
        proxy: Arc::new(crate::proxy::Proxy::new(config.proxy.clone())),
        webhooks: Arc::new(config.webhooks.clone()),
        connect: Arc::new(crate::connect::Settings::new(
            config.public_url.as_deref(),
            config.connect_session_seconds,
        )),
        private_elements: Arc::new(crate::private_elements::Cache::new()),
        health_check: Arc::new(crate::health_check::Checker::new(
            config.health_check.clone(),
        )),
        cache,
    })
}

/// `elements serve`: runs until SIGINT or SIGTERM.
pub async fn run(config: ServerConfig) -> Result<()> {
    let registry = registry(&config)?;
    let store = open_store(&config).await?;
    // The key file exists now (open_store created it if it was missing).
    let console_key = keyring(&config)?.derive(CONSOLE_KEY_LABEL);
    ensure_account(store.as_ref(), &config).await?;
    let state = state(&config, registry, store.clone());
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("local address")?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_server = match &config.metrics_listen {
        Some(metrics_addr) => {
            let metrics_listener = TcpListener::bind(metrics_addr)
                .await
                .with_context(|| format!("listening on {metrics_addr} (metrics)"))?;
            let bound = metrics_listener.local_addr().context("local address")?;
            println!("metrics on http://{bound}/metrics");
            let router = crate::metrics::router()
                .merge(crate::health::router())
                .with_state(state.clone());
            let limits = state.limits.clone();
            let mut stop = stop_rx.clone();
            Some(tokio::spawn(async move {
                crate::listener::serve(metrics_listener, router, &limits, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
            }))
        }
        None => None,
    };
    tracing::info!(
        %addr,
        engine = store.engine(),
        elements = state.registry.len(),
        "elements is serving /elements/api-v2"
    );
    let signals = ShutdownSignals::catch();
    println!("listening on http://{addr}");

    let tokens = state.tokens.clone();
    let background = tokio::spawn(
        tokens
            .clone()
            .run_background(config.refresh_interval, stop_rx),
    );
    let webhooks =
        crate::webhooks::spawn(store.clone(), config.webhooks.clone(), stop_tx.subscribe());
    let health_check = crate::health_check::spawn(state.clone(), stop_tx.subscribe());
    let limits = state.limits.clone();
    let console = crate::console::Settings {
        secret: Some(console_key.to_vec()),
        session_seconds: config.console_session_seconds,
        ..crate::console::Settings::default()
    };
    let with_metrics = config.metrics_listen.is_none();
    let router = crate::router_full(state.clone(), console.clone(), with_metrics);
    // Requests are served on one single-threaded runtime per core, each
    // with its own router (serving.rs); they stop last, after the
    // refreshes drained below.
    let serving = crate::serving::ServingThreads::per_core()
        .context("serving threads")?
        .with_routers(router.clone(), || {
            crate::router_full(state.replica(), console.clone(), with_metrics)
        });
    crate::listener::serve_on(
        listener,
        router,
        &limits,
        async move {
            signals.received().await;
            tracing::info!("shutting down");
        },
        Some(&serving),
    )
    .await
    .context("serving")?;
    let _ = stop_tx.send(true);
    let _ = background.await;
    if let Some(server) = metrics_server {
        let _ = server.await;
    }
    let _ = webhooks.await;
    let _ = health_check.await;
    // Refreshes whose clients hung up still store their results.
    tokens.drain(config.provider_timeout * 2).await;
    drop(serving);
    Ok(())
}

/// The signals that stop the server gracefully (SIGINT, SIGTERM), caught
/// from the moment this is made. [`run`] makes it before printing its
/// address: a supervisor or a test that signals as soon as it reads the
/// address must get the graceful stop, not the signal's default action
/// (the process killed). Caught only once the shutdown future was first
/// polled, a SIGTERM sent right after the first request could still kill
/// the server (a CI failure of `tests/access_log.rs`).
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    /// Starts catching the signals (inside the runtime).
    fn catch() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            ShutdownSignals {}
        }
    }

    /// Completes when one of the signals arrives.
    async fn received(self) {
        #[cfg(unix)]
        {
            async fn one(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = one(self.interrupt) => {}
                _ = one(self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
