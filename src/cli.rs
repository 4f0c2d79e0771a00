//! Flag parsing and the commands. Each command is a few calls into the crates.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use elements_core::{Element, OAuthUrlRequest, Registry};
use elements_server::element_view::ElementJson as _;

/// Connector registry and OAuth broker, compatible with the Cloud Elements API.
#[derive(Debug, Parser)]
#[command(name = "elements", version, about)]
struct Cli {
    #[command(flatten)]
    catalog: CatalogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct CatalogArgs {
    /// A directory of element TOML files that adds or overrides built-in
    /// elements (repeatable; later directories win).
    #[arg(
        long = "elements-dir",
        global = true,
        env = "ELEMENTS_ELEMENTS_DIR",
        value_delimiter = ','
    )]
    elements_dirs: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the elements, sorted by id.
    List {
        /// Print a JSON array of element objects instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one element as JSON.
    Show {
        /// The element's key or numeric id.
        element: String,
    },
    /// Print the OAuth authorization URL of an element as JSON.
    OauthUrl(OAuthUrlArgs),
    /// Validate catalog directories (default: elements/).
    Check {
        /// Directories to check, each a layer over the built-in catalog.
        dirs: Vec<PathBuf>,
    },
    /// Run the HTTP API (Cloud Elements compatible, under /elements/api-v2).
    Serve(Box<ServeArgs>),
    /// Manage accounts (organizations and users).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Manage the master keys that encrypt stored secrets.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Manage instances.
    Instances {
        #[command(subcommand)]
        command: InstancesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum InstancesCommand {
    /// Give an instance a new random token; the old one stops working at
    /// once. Prints `{"id": ..., "token": ...}`.
    RotateToken {
        /// The instance id.
        id: i64,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Print a new random key (base64, 32 bytes). To rotate, put it first in
    /// ELEMENTS_MASTER_KEY, keep the old ones after it, then `keys rewrap`.
    Generate,
    /// Re-encrypt every stored secret with the current (first) key, so the
    /// older keys can be retired. Safe while servers are running.
    Rewrap {
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Database URL: sqlite://PATH or postgres://... (default: a SQLite file
    /// in --data-dir).
    #[arg(long, env = "ELEMENTS_DATABASE_URL")]
    database_url: Option<String>,
    /// Directory of the embedded database and its key file [default:
    /// elements-data].
    #[arg(long, env = "ELEMENTS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Encryption keys, comma-separated base64 (32 bytes each); the first
    /// encrypts. Default: the key file in --data-dir, created if missing.
    #[arg(
        long = "master-key",
        env = "ELEMENTS_MASTER_KEY",
        hide_env_values = true
    )]
    master_key: Option<String>,
    /// A TOML configuration file (see the README).
    #[arg(long, env = "ELEMENTS_CONFIG")]
    config: Option<PathBuf>,
    /// Refuse to start when the key file is readable or writable by group
    /// or others (default: warn).
    #[arg(long, env = "ELEMENTS_STRICT_KEY_PERMISSIONS")]
    strict_key_permissions: bool,
}

#[derive(Debug, Args)]
struct LimitArgs {
    /// Most connections served at once; more wait in the listen backlog
    /// [default: 512].
    #[arg(long, env = "ELEMENTS_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a client has to send a complete request head [default: 10].
    #[arg(long, env = "ELEMENTS_HEADER_READ_TIMEOUT_SECONDS")]
    header_read_timeout_seconds: Option<u64>,
    /// Seconds a kept-alive connection may wait for its next request
    /// [default: 60].
    #[arg(long, env = "ELEMENTS_IDLE_TIMEOUT_SECONDS")]
    idle_timeout_seconds: Option<u64>,
    /// Seconds open requests get to finish at shutdown [default: 10].
    #[arg(long, env = "ELEMENTS_SHUTDOWN_TIMEOUT_SECONDS")]
    shutdown_timeout_seconds: Option<u64>,
    /// Failed authentications a client address may make at once before
    /// it gets 429; 0 turns the limit off [default: 20].
    #[arg(long, env = "ELEMENTS_AUTH_FAILURE_BURST")]
    auth_failure_burst: Option<u32>,
    /// Failed authentications a client address regains per minute
    /// [default: 10].
    #[arg(long, env = "ELEMENTS_AUTH_FAILURES_PER_MINUTE")]
    auth_failures_per_minute: Option<u32>,
    /// Most instances per organization [default: 10000].
    #[arg(long, env = "ELEMENTS_MAX_INSTANCES_PER_ORGANIZATION")]
    max_instances_per_organization: Option<u64>,
    /// Most configuration entries per instance [default: 100].
    #[arg(long, env = "ELEMENTS_MAX_CONFIGURATION_ENTRIES")]
    max_configuration_entries: Option<usize>,
    /// Most configuration bytes (keys plus values) per instance
    /// [default: 32768].
    #[arg(long, env = "ELEMENTS_MAX_CONFIGURATION_BYTES")]
    max_configuration_bytes: Option<usize>,
    /// `GET /instances` page size when the client gives no `pageSize`
    /// [default: 200].
    #[arg(long, env = "ELEMENTS_DEFAULT_PAGE_SIZE")]
    default_page_size: Option<u32>,
    /// The largest `pageSize` of `GET /instances` [default: 500].
    #[arg(long, env = "ELEMENTS_MAX_PAGE_SIZE")]
    max_page_size: Option<u32>,
    /// Origins allowed to call the API from a browser (CORS), comma
    /// separated, e.g. https://app.example.com [default: none].
    #[arg(long, env = "ELEMENTS_CORS_ALLOWED_ORIGINS", value_delimiter = ',')]
    cors_allowed_origins: Option<Vec<String>>,
}

impl LimitArgs {
    fn settings(&self) -> elements_server::config::LimitSettings {
        elements_server::config::LimitSettings {
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

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "ELEMENTS_LISTEN")]
    listen: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// The organization secret of an account to ensure at start.
    #[arg(long, env = "ELEMENTS_ORGANIZATION_SECRET", hide_env_values = true)]
    organization_secret: Option<String>,
    /// The user secret of an account to ensure at start.
    #[arg(long, env = "ELEMENTS_USER_SECRET", hide_env_values = true)]
    user_secret: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "ELEMENTS_LOG_FORMAT", default_value = "text")]
    log_format: String,
    #[command(flatten)]
    limits: LimitArgs,
    /// Serve /metrics (and the probes) on this address instead of the main
    /// listener [default: /metrics on the main listener].
    #[arg(long, env = "ELEMENTS_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// How long a console session lasts, in seconds (at least 60)
    /// [default: 43200].
    #[arg(long, env = "ELEMENTS_CONSOLE_SESSION_SECONDS")]
    console_session_seconds: Option<i64>,
    /// Domains a custom host (self-hosted or custom-domain provider) must be
    /// or be under, comma-separated; none: any host that passes the
    /// built-in rules.
    #[arg(long, env = "ELEMENTS_ALLOWED_CUSTOM_HOSTS", value_delimiter = ',')]
    allowed_custom_hosts: Vec<String>,
    /// Deliver webhooks to private, loopback and link-local addresses, and
    /// over plain http (config key `webhooks_allow_private`).
    #[arg(long, env = "ELEMENTS_WEBHOOKS_ALLOW_PRIVATE")]
    webhooks_allow_private: bool,
    /// The server's public base URL, e.g. https://elements.example.com;
    /// required by the hosted connect page (the OAuth callback is
    /// <public url>/elements/api-v2/oauth/callback).
    #[arg(long, env = "ELEMENTS_PUBLIC_URL")]
    public_url: Option<String>,
    /// How long a connect session lasts, in seconds [default: 900].
    #[arg(long, env = "ELEMENTS_CONNECT_SESSION_SECONDS")]
    connect_session_seconds: Option<i64>,
    /// Run an element's `[verify]` request on POST /instances (true or
    /// false) [default: true].
    #[arg(long, env = "ELEMENTS_VERIFY_ON_CREATE")]
    verify_on_create: Option<bool>,
    /// Seconds between background health checks of an instance; 0 turns
    /// them off [default: 21600].
    #[arg(long, env = "ELEMENTS_HEALTH_CHECK_INTERVAL_SECONDS")]
    health_check_interval_seconds: Option<u64>,
    /// Days delivered and dead-lettered events are kept; 0 keeps them for
    /// ever [default: 30].
    #[arg(long, env = "ELEMENTS_EVENT_RETENTION_DAYS")]
    event_retention_days: Option<u64>,
    #[command(flatten)]
    proxy: ProxyArgs,
    /// Export traces with OpenTelemetry (OTLP over HTTP/protobuf) to this
    /// collector base URL, e.g. http://127.0.0.1:4318 (`/v1/traces` is
    /// appended) [default: no export].
    #[arg(long, env = "ELEMENTS_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
}

/// The API proxy's settings (the `[proxy]` table of the config file; a flag
/// or variable wins over the file).
#[derive(Debug, Args)]
struct ProxyArgs {
    /// The largest request body the proxy forwards, in bytes (413 above it)
    /// [default: 104857600].
    #[arg(long, env = "ELEMENTS_PROXY_MAX_REQUEST_BODY_BYTES")]
    proxy_max_request_body_bytes: Option<u64>,
    /// Request bodies up to this size are buffered so they can be replayed
    /// (retries, refresh after a 401), in bytes [default: 65536].
    #[arg(long, env = "ELEMENTS_PROXY_REPLAY_BODY_BYTES")]
    proxy_replay_body_bytes: Option<u64>,
    /// Time to wait for the provider's answer, and between body reads, in
    /// milliseconds [default: 30000].
    #[arg(long, env = "ELEMENTS_PROXY_TIMEOUT_MS")]
    proxy_timeout_ms: Option<u64>,
    /// Most retries of an idempotent request [default: 2].
    #[arg(long, env = "ELEMENTS_PROXY_MAX_RETRIES")]
    proxy_max_retries: Option<u32>,
    /// Most time spent waiting between retries, in milliseconds [default: 15000].
    #[arg(long, env = "ELEMENTS_PROXY_RETRY_BUDGET_MS")]
    proxy_retry_budget_ms: Option<u64>,
    /// The longest `Retry-After` honoured, in seconds [default: 10].
    #[arg(long, env = "ELEMENTS_PROXY_RETRY_AFTER_CAP_SECONDS")]
    proxy_retry_after_cap_seconds: Option<u64>,
    /// The first retry backoff, in milliseconds (doubled, jittered) [default: 100].
    #[arg(long, env = "ELEMENTS_PROXY_BACKOFF_MS")]
    proxy_backoff_ms: Option<u64>,
}

impl ProxyArgs {
    fn settings(&self) -> elements_server::proxy::ProxyFileSettings {
        elements_server::proxy::ProxyFileSettings {
            max_request_body_bytes: self.proxy_max_request_body_bytes,
            replay_body_bytes: self.proxy_replay_body_bytes,
            timeout_ms: self.proxy_timeout_ms,
            max_retries: self.proxy_max_retries,
            retry_budget_ms: self.proxy_retry_budget_ms,
            retry_after_cap_seconds: self.proxy_retry_after_cap_seconds,
            backoff_ms: self.proxy_backoff_ms,
        }
    }
}

#[derive(Debug, Subcommand)]
enum AccountsCommand {
    /// Create an organization with its first user; prints the secrets as JSON.
    Create {
        /// The organization's name.
        #[arg(long)]
        organization: String,
        /// The user's e-mail address.
        #[arg(long)]
        email: String,
        /// The user's first name.
        #[arg(long, default_value = "")]
        first_name: String,
        /// The user's last name.
        #[arg(long, default_value = "")]
        last_name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Give an organization or a user a new random secret; the old one
    /// stops working at once. Prints the new secret as JSON.
    #[command(group(clap::ArgGroup::new("who").required(true).args(["organization", "user"])))]
    Rotate {
        /// The organization id.
        #[arg(long)]
        organization: Option<i64>,
        /// The user id.
        #[arg(long)]
        user: Option<i64>,
        #[command(flatten)]
        store: StoreArgs,
    },
}

#[derive(Debug, Args)]
struct OAuthUrlArgs {
    /// The element's key or numeric id.
    element: String,
    /// The OAuth client id (`apiKey`).
    #[arg(long)]
    api_key: Option<String>,
    /// The client secret (`apiSecret`; HubSpot's legacy flow: the Portal ID).
    #[arg(long)]
    api_secret: Option<String>,
    /// The scope, e.g. "contacts-rw offline".
    #[arg(long)]
    scope: Option<String>,
    /// The callback URL, used exactly as given.
    #[arg(long)]
    callback_url: Option<String>,
    /// An opaque value passed through to the callback.
    #[arg(long)]
    state: Option<String>,
    /// The PKCE code verifier (generated and printed when the element uses
    /// PKCE and none is given).
    #[arg(long)]
    code_verifier: Option<String>,
    /// An element-specific parameter, e.g. `oauth.flow=current` for HubSpot
    /// (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

pub fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::List { json } => list(&load(&cli.catalog)?, json),
        Command::Show { element } => {
            let registry = load(&cli.catalog)?;
            let element = find(&registry, &element)?;
            print_json(&serde_json::to_string_pretty(&element.spec().view())?)
        }
        Command::OauthUrl(args) => oauth_url(&load(&cli.catalog)?, args),
        Command::Check { dirs } => check(&cli.catalog, dirs),
        Command::Serve(args) => serve(&cli.catalog, *args),
        Command::Keys { command } => keys(&cli.catalog, command),
        Command::Instances {
            command: InstancesCommand::RotateToken { id, store },
        } => {
            let _logs = init_logging("text");
            let config = server_config(&cli.catalog, &store, None)?;
            runtime()?.block_on(async {
                let store = elements_server::startup::open_store(&config).await?;
                let token =
                    elements_server::startup::rotate_instance_token(store.as_ref(), id).await?;
                print_json(&serde_json::json!({ "id": id, "token": token }).to_string())
            })
        }
        Command::Accounts {
            command:
                AccountsCommand::Rotate {
                    organization,
                    user,
                    store,
                },
        } => {
            let _logs = init_logging("text");
            let config = server_config(&cli.catalog, &store, None)?;
            runtime()?.block_on(async {
                let store = elements_server::startup::open_store(&config).await?;
                let printed = match (organization, user) {
                    (Some(id), None) => {
                        let secret = elements_server::startup::rotate_organization_secret(
                            store.as_ref(),
                            id,
                        )
                        .await?;
                        serde_json::json!({ "organization": { "id": id, "secret": secret } })
                    }
                    (None, Some(id)) => {
                        let secret =
                            elements_server::startup::rotate_user_secret(store.as_ref(), id)
                                .await?;
                        serde_json::json!({ "user": { "id": id, "secret": secret } })
                    }
                    _ => bail!("give exactly one of --organization ID and --user ID"),
                };
                print_json(&printed.to_string())
            })
        }
        Command::Accounts {
            command:
                AccountsCommand::Create {
                    organization,
                    email,
                    first_name,
                    last_name,
                    store,
                },
        } => {
            let _logs = init_logging("text");
            let config = server_config(&cli.catalog, &store, None)?;
            runtime()?.block_on(async {
                let store = elements_server::startup::open_store(&config).await?;
                let account = elements_server::startup::create_account(
                    store.as_ref(),
                    &organization,
                    &email,
                    &first_name,
                    &last_name,
                )
                .await?;
                print_json(&serde_json::to_string_pretty(&account)?)
            })
        }
    }
}

fn keys(catalog: &CatalogArgs, command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::Generate => {
            println!(
                "{}",
                elements_store::Keyring::encode_key(&elements_store::Keyring::generate_key())
            );
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Rewrap { store } => {
            let _logs = init_logging("text");
            let config = server_config(catalog, &store, None)?;
            runtime()?.block_on(async {
                let keyring = elements_server::startup::keyring(&config)?;
                let store = elements_server::startup::open_store(&config).await?;
                let mut progress = Progress::new("rewrap");
                let report = elements_store::rewrap_with_progress(
                    store.as_ref(),
                    &keyring,
                    &mut |done, total| progress.update(done, total),
                )
                .await?;
                progress.finish();
                let stranded: Vec<serde_json::Value> = report
                    .stranded
                    .iter()
                    .map(|s| {
                        // health: webhook secrets and connect sessions name
                        // their row as `id`.
                        let id_name = if s.column.starts_with("instances.") {
                            "instanceId"
                        } else {
                            "id"
                        };
                        serde_json::json!({
                            id_name: s.instance_id,
                            "column": s.column,
                            "keyId": s.key_id,
                            "keyInKeyring": s.key_in_keyring,
                        })
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({
                        "currentKeyId": keyring.current_key_id(),
                        "rewrapped": report.rewrapped,
                        "unchanged": report.unchanged,
                        "stranded": stranded,
                    })
                );
                if report.stranded.is_empty() {
                    return Ok(ExitCode::SUCCESS);
                }
                eprintln!(
                    "error: {} stored value(s) are still not under the current key {} (listed \
                     under \"stranded\"); the old keys are still needed. A process may still be \
                     writing with an old key first: restart every server with the new key first, \
                     then run `elements keys rewrap` again until nothing is stranded",
                    report.stranded.len(),
                    keyring.current_key_id()
                );
                Ok(ExitCode::FAILURE)
            })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// `ELEMENTS_LOG` (default `info`), with the exporter's span target off:
/// those spans (the store's included) are never created for the log,
/// whatever `ELEMENTS_LOG` says.
fn log_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("ELEMENTS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
        .add_directive(
            format!("{}=off", elements_server::trace::TARGET)
                .parse()
                .expect("a valid directive"),
        )
}

/// Logs go to standard error through [`crate::log_writer`]: one shared
/// buffer a writer thread empties every 50 ms, so a request never waits on
/// a `write(2)` nor wakes a thread; colours only on a terminal. Without
/// colours the access line is written directly
/// ([`crate::access_log::Direct`]), in the same layout. Keep the
/// guard alive: dropping it writes what is left.
fn init_logging(format: &str) -> crate::log_writer::Guard {
    use std::io::IsTerminal as _;
    let filter = log_filter();
    let (writer, guard) = crate::log_writer::new(std::io::stderr());
    let ansi = std::io::stderr().is_terminal();
    if !ansi || format == "json" {
        // The access line straight into the buffer, in the same layout
        // (`access_log::Direct`); with colours it stays an event.
        let direct = crate::access_log::Direct::new(writer.clone(), format == "json");
        let _ = elements_server::access_line::set_sink(Box::new(direct));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    // The default layouts, written faster (`crate::access_log`).
    if format == "json" {
        builder
            .with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(crate::access_log::Json::default())
            .init();
    } else {
        builder
            .event_format(crate::access_log::Text::default())
            .init();
    }
    guard
}

/// [`init_logging`] plus the OpenTelemetry layer: the log output as
/// without it (the spans' target is filtered out of it), and only the
/// server's spans (target `elements::otel`) exported.
fn init_logging_with_otel(
    format: &str,
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> crate::log_writer::Guard {
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = log_filter();
    let (writer, guard) = crate::log_writer::new(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let fmt = if format == "json" {
        fmt.with_ansi(false)
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(crate::access_log::Json::default())
            .boxed()
    } else {
        fmt.event_format(crate::access_log::Text::default()).boxed()
    };
    // ops3: the store's spans (`store.*`) only inside an exported span (a
    // request's), so background loops export nothing.
    let spans = tracing_subscriber::filter::DynFilterFn::new(|meta, cx| {
        meta.target() == elements_server::trace::TARGET
            && (!meta.name().starts_with("store.") || cx.lookup_current().is_some())
    })
    .with_callsite_filter(|meta| {
        use tracing::subscriber::Interest;
        if meta.target() != elements_server::trace::TARGET {
            Interest::never()
        } else if meta.name().starts_with("store.") {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(spans),
        )
        .init();
    guard
}

fn server_config(
    catalog: &CatalogArgs,
    store: &StoreArgs,
    serve: Option<&ServeArgs>,
) -> anyhow::Result<elements_server::ServerConfig> {
    // Defaults, then the file, then flags and environment.
    let mut config = elements_server::ServerConfig::default();
    if let Some(path) = &store.config {
        let file = elements_server::config::FileConfig::load(path).map_err(anyhow::Error::msg)?;
        config = config.with_file(file);
    }
    if let Some(url) = &store.database_url {
        config.database_url = Some(url.clone());
    }
    if let Some(dir) = &store.data_dir {
        config.data_dir = dir.clone();
    }
    config
        .elements_dirs
        .extend(catalog.elements_dirs.iter().cloned());
    config.master_key = store.master_key.clone().map(Into::into);
    config.strict_key_permissions |= store.strict_key_permissions;
    if let Some(serve) = serve {
        config.limits.apply(&serve.limits.settings());
        if let Some(listen) = &serve.listen {
            config.listen = listen.clone();
        }
        config.organization_secret = serve.organization_secret.clone().map(Into::into);
        config.user_secret = serve.user_secret.clone().map(Into::into);
        if let Some(addr) = &serve.metrics_listen {
            config.metrics_listen = Some(addr.clone());
        }
        if let Some(s) = serve.console_session_seconds {
            config.console_session_seconds = s.max(60);
        }
        if !serve.allowed_custom_hosts.is_empty() {
            config.allowed_custom_hosts = serve.allowed_custom_hosts.clone();
        }
        config.webhooks.allow_private |= serve.webhooks_allow_private;
        if let Some(url) = &serve.public_url {
            config.public_url = Some(url.clone());
        }
        if let Some(s) = serve.connect_session_seconds {
            config.connect_session_seconds = s.max(0);
        }
        config.proxy.apply(&serve.proxy.settings());
        config.health_check.apply(
            serve.verify_on_create,
            serve.health_check_interval_seconds,
            serve.event_retention_days,
        );
    }
    Ok(config)
}

fn serve(catalog: &CatalogArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let endpoint = args.otlp_endpoint.clone().filter(|e| !e.trim().is_empty());
    let Some(endpoint) = endpoint else {
        let _logs = init_logging(&args.log_format);
        let config = server_config(catalog, &args.store, Some(&args))?;
        runtime.block_on(elements_server::run(config))?;
        return Ok(ExitCode::SUCCESS);
    };
    let otel = crate::otel::Otel::start(&endpoint, runtime.handle().clone())?;
    let _logs = init_logging_with_otel(&args.log_format, otel.tracer());
    elements_server::trace::enable();
    let served = server_config(catalog, &args.store, Some(&args))
        .and_then(|config| runtime.block_on(elements_server::run(config)));
    // The runtime still runs: the last batch is sent on it.
    otel.shutdown();
    served?;
    Ok(ExitCode::SUCCESS)
}

fn load(args: &CatalogArgs) -> anyhow::Result<Registry> {
    elements_catalog::load(&args.elements_dirs, [])
        .map_err(|errors| anyhow!("the catalog is invalid:\n{errors}"))
}

fn find<'r>(registry: &'r Registry, key_or_id: &str) -> anyhow::Result<&'r dyn Element> {
    if let Some(element) = registry.get(key_or_id) {
        return Ok(element.as_ref());
    }
    let suggestions = registry.suggest(key_or_id);
    if suggestions.is_empty() {
        bail!("unknown element `{key_or_id}` (`elements list` shows them all)")
    }
    bail!(
        "unknown element `{key_or_id}`; did you mean {}?",
        suggestions
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn print_json(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    Ok(ExitCode::SUCCESS)
}

fn list(registry: &Registry, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        let all: Vec<_> = registry.iter().map(|e| e.spec().metadata()).collect();
        return print_json(&serde_json::to_string_pretty(&all)?);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "{:>6}  {:<24}  {:<14}  {:<8}  NAME",
        "ID", "KEY", "HUB", "AUTH"
    )?;
    // The listing, not the specs: built-in specs stay encoded.
    for element in registry.listing() {
        writeln!(
            out,
            "{:>6}  {:<24}  {:<14}  {:<8}  {}",
            element.id,
            element.key,
            element.hub,
            element.authentication.as_str(),
            element.name
        )?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn oauth_url(registry: &Registry, args: OAuthUrlArgs) -> anyhow::Result<ExitCode> {
    let element = find(registry, &args.element)?;
    let code_verifier = match args.code_verifier {
        Some(v) => Some(v),
        None if element.uses_pkce() => Some(elements_server::pkce::new_code_verifier()),
        None => None,
    };
    let request = OAuthUrlRequest {
        api_key: args.api_key,
        api_secret: args.api_secret,
        scope: args.scope,
        callback_url: args.callback_url,
        state: args.state,
        code_verifier: code_verifier.clone(),
        params: args.params.into_iter().collect::<BTreeMap<_, _>>(),
    };
    let url = element
        .oauth_url(&request)
        .with_context(|| format!("cannot build the OAuth URL of `{}`", element.key()))?;
    print_json(&serde_json::to_string(
        &elements_server::wire::OAuthUrlResponse {
            element: element.key(),
            oauth_url: &url.url,
            code_verifier: code_verifier.as_deref(),
        },
    )?)
}

fn check(args: &CatalogArgs, mut dirs: Vec<PathBuf>) -> anyhow::Result<ExitCode> {
    if dirs.is_empty() {
        dirs.push(PathBuf::from("elements"));
    }
    dirs.splice(0..0, args.elements_dirs.iter().cloned());
    match elements_catalog::load(&dirs, []) {
        Ok(registry) => {
            println!(
                "ok: {} elements ({} checked)",
                registry.len(),
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.0.len());
            Ok(ExitCode::from(1))
        }
    }
}

/// Progress of a command that walks the whole database, on standard error:
/// a bar on a terminal; otherwise plain lines (`rewrap: 100/1000 rows`)
/// every 10% and at the end.
struct Progress {
    what: &'static str,
    bar: Option<indicatif::ProgressBar>,
    last: (u64, u64),
    printed: u64,
}

impl Progress {
    fn new(what: &'static str) -> Self {
        use std::io::IsTerminal as _;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:40}] {pos}/{len} rows ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar.set_message(what);
            bar
        });
        Progress {
            what,
            bar,
            last: (0, 0),
            printed: 0,
        }
    }

    fn update(&mut self, done: u64, total: u64) {
        if done < self.last.0 {
            // A new pass over the rows.
            self.printed = 0;
        }
        self.last = (done, total);
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(done);
            }
            None => {
                let step = (total / 10).max(1);
                if done >= self.printed + step && done < total {
                    self.printed = done;
                    eprintln!("{}: {done}/{total} rows", self.what);
                }
            }
        }
    }

    fn finish(self) {
        let (done, total) = self.last;
        match self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => eprintln!("{}: {done}/{total} rows, done", self.what),
        }
    }
}
