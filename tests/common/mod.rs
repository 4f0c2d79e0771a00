//! Shared helpers of the end-to-end tests: a real server on 127.0.0.1:0
//! over a real SQLite file, a real HTTP client, and the real binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use elements_server::startup;
use elements_server::{AppState, ServerConfig};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SEED_OAUTH_QUERY: &str = "apiKey=123456789d-1234-12e4-bda9-12345b8bf20&apiSecret=123456&scope=contacts-rw%20offline&callbackUrl=http://demonstrab.ly";
pub const SEED_OAUTH_ANSWER: &str = r#"{"element":"hubspot","oauthUrl":"https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline"}"#;

/// The seed's element object, with the line break of the guide folded.
pub fn seed_element() -> Value {
    json!({
        "id": 43,
        "name": "HubSpot",
        "key": "hubspot",
        "description": "HubSpot is an inbound marketing software platform that helps companies attract visitors, convert leads, and close customers.",
        "image": "elements/provider_hubspot.png",
        "active": true,
        "deleted": false,
        "typeOauth": true,
        "trialAccount": false,
        "existingAccountDescription": "Give your application access to your existing HubSpot accountEnter your credentials and details for your HubSpot Account",
        "configDescription": "If you do not have a HubSpot account, you can create one at HubSpot Signup"
    })
}

/// The element object inside an instance: the seed's eleven fields, then
/// the hub (issue 17: Cloud Elements clients read it there too).
pub fn seed_instance_element() -> Value {
    let mut element = seed_element();
    element["hub"] = json!("marketing");
    element
}

/// The seed's instance.json with its placeholders filled in.
pub fn seed_instance_body(access: &str, refresh: &str) -> Value {
    json!({
        "element": { "key": "hubspot" },
        "providerData": {
            "apikey": "test-client",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": "1800"
        },
        "configuration": {
            "oauth.api.key": "test-client",
            "oauth.api.secret": "123456",
            "oauth.callback.url": "www.samplecallbackurl.com",
            "oauth.scope": "contacts-rw+offline"
        },
        "tags": ["seed"],
        "name": "Test"
    })
}

/// Runs the real `elements` binary.
pub fn elements(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_elements"))
        .args(args)
        .env_remove("ELEMENTS_ELEMENTS_DIR")
        .output()
        .expect("run the elements binary")
}

/// Account secrets.
#[derive(Clone, Debug)]
pub struct Account {
    pub organization_secret: String,
    pub user_secret: String,
}

impl Account {
    pub fn header(&self) -> String {
        format!(
            "User {}, Organization {}",
            self.user_secret, self.organization_secret
        )
    }
}

/// A server running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub base: String,
    pub state: AppState,
    pub config: ServerConfig,
    pub account: Account,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

/// A fresh temporary data directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// A config over a data directory, with a fixed key.
pub fn config_in(dir: &Path) -> ServerConfig {
    let mut config = ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".into(),
        ..Default::default()
    };
    // health: catalog elements' `[verify]` requests would reach the real
    // providers; tests/health_check.rs turns it on against a fake API.
    config.health_check.verify_on_create = false;
    config
}

impl TestServer {
    /// Starts a server over `config`, creating an account.
    pub async fn start(config: ServerConfig) -> TestServer {
        let registry = startup::registry(&config).expect("catalog");
        let store = startup::open_store(&config).await.expect("store");
        let created =
            startup::create_account(store.as_ref(), "acme", "dev@acme.test", "Ada", "Lovelace")
                .await
                .expect("account");
        let account = Account {
            organization_secret: created.organization.secret,
            user_secret: created.user.secret,
        };
        Self::start_with(config, registry, store, account).await
    }

    /// Starts a server over an already open store and a known account.
    pub async fn start_with(
        config: ServerConfig,
        registry: elements_core::Registry,
        store: std::sync::Arc<dyn elements_store::Store>,
        account: Account,
    ) -> TestServer {
        let state = startup::state(&config, registry, store);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel();
        let app = state.clone();
        let handle = tokio::spawn(async move {
            elements_server::serve(listener, app, async {
                let _ = rx.await;
            })
            .await
            .expect("serve");
        });
        TestServer {
            base,
            state,
            config,
            account,
            client: reqwest::Client::new(),
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    /// Another account on the same server.
    pub async fn other_account(&self, name: &str) -> Account {
        let created =
            startup::create_account(self.state.store.as_ref(), name, "x@y.test", "X", "Y")
                .await
                .expect("account");
        Account {
            organization_secret: created.organization.secret,
            user_secret: created.user.secret,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/elements/api-v2{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path))
    }

    pub fn authed(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .header("Authorization", self.account.header())
    }

    /// An authenticated call's JSON answer.
    pub async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> T {
        self.authed(method, path)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("a JSON answer")
    }

    /// Creates an instance from the seed body; returns (status, body).
    pub async fn post_instance(&self, account: &Account, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url("/instances"))
            .header("Authorization", account.header())
            .json(body)
            .send()
            .await
            .expect("POST /instances");
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }
}

/// Every file below `dir`, concatenated (to search for plaintext).
pub fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.extend(bytes);
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The real `elements serve` binary, running; killed (SIGKILL) on drop.
pub struct Binary {
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Binary {
    /// Starts `elements serve --listen 127.0.0.1:0 ARGS` with `envs`, and
    /// waits until it prints its address.
    pub fn serve(args: &[&str], envs: &[(&str, &str)]) -> Binary {
        Self::serve_logging_to(args, envs, Stdio::null())
    }

    /// [`Binary::serve`], with the server's log (standard error) going to
    /// `log` (`ELEMENTS_LOG` in `envs` sets the level).
    pub fn serve_logging_to(args: &[&str], envs: &[(&str, &str)], log: impl Into<Stdio>) -> Binary {
        let mut command = Command::new(env!("CARGO_BIN_EXE_elements"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("ELEMENTS_LOG", "warn")
            .env("ELEMENTS_VERIFY_ON_CREATE", "false")
            .env_remove("ELEMENTS_MASTER_KEY")
            .env_remove("ELEMENTS_DATABASE_URL")
            .env_remove("ELEMENTS_ORGANIZATION_SECRET")
            .env_remove("ELEMENTS_USER_SECRET")
            .stdout(Stdio::piped())
            .stderr(log);
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start elements serve");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("the server printed its address before exiting")
                .unwrap();
            if let Some(addr) = line.strip_prefix("listening on ") {
                break addr.trim().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Binary { child, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/elements/api-v2{}", self.base, path)
    }

    /// SIGTERM (a graceful stop, which flushes the log), and reap.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM: {sent}");
        self.child.wait().expect("wait for elements serve")
    }

    /// `elements serve` on a fresh data directory, its log (standard
    /// error) in a file next to it; `envs` as for [`Binary::serve`].
    pub fn serve_with_log_file(envs: &[(&str, &str)]) -> LoggedBinary {
        let dir = tempfile::tempdir().expect("temp dir");
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let data = dir.path().join("data");
        let server = Binary::serve_logging_to(&["--data-dir", data.to_str().unwrap()], envs, log);
        LoggedBinary {
            server,
            log_path,
            _dir: dir,
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes an instance's stored access token expired (as time would), keeping
/// the tokens themselves, through the store's own refresh lock.
pub async fn expire(store: &dyn elements_store::Store, id: i64) {
    let job: elements_store::RefreshJob<'_> = Box::new(|current| {
        Box::pin(async move {
            elements_store::RefreshDecision::Update(elements_store::Tokens {
                expires_at: Some(elements_server::tokens::now_seconds() - 10),
                ..current.tokens
            })
        })
    });
    store.refresh_locked(id, 60, job).await.unwrap().unwrap();
}

/// `GET {base}/elements/api-v2/instances/{id}/credentials` with
/// `Authorization: Element <token>`: (status, JSON body or `Null`).
pub async fn credentials(
    client: &reqwest::Client,
    base: &str,
    id: i64,
    token: &str,
) -> (u16, Value) {
    let response = client
        .get(format!("{base}/elements/api-v2/instances/{id}/credentials"))
        .header("Authorization", format!("Element {token}"))
        .send()
        .await
        .expect("credentials request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

// ------------------------------------------------ client (issue 18)
// The typed client (crates/client) the end-to-end tests call the API with.

/// Instance `id`'s credentials on `server`, read with its `Element` token.
pub async fn element_credentials(
    server: &TestServer,
    id: i64,
    token: &str,
) -> Result<elements_client::Credentials, elements_client::Error> {
    server.anonymous().with_element(token).credentials(id).await
}

/// The access token of a credentials answer (which must have one).
pub fn access_token(credentials: &elements_client::Credentials) -> &str {
    credentials
        .access_token
        .as_ref()
        .expect("an access token")
        .expose()
}

impl Account {
    /// A typed client of `base` (`http://127.0.0.1:PORT`) with these secrets.
    pub fn client(&self, base: &str) -> elements_client::Client {
        elements_client::Client::new(base)
            .expect("base URL")
            .with_account(&self.user_secret, &self.organization_secret)
    }
}

impl TestServer {
    /// The typed client, with the server's account.
    pub fn api(&self) -> elements_client::Client {
        self.account.client(&self.base)
    }

    /// The typed client, without credentials.
    pub fn anonymous(&self) -> elements_client::Client {
        elements_client::Client::new(&self.base).expect("base URL")
    }
}

/// The seed's `oauth/url` query, typed.
pub fn seed_oauth_request() -> elements_client::OAuthUrlRequest {
    elements_client::OAuthUrlRequest::new()
        .api_key("123456789d-1234-12e4-bda9-12345b8bf20")
        .api_secret("123456")
        .scope("contacts-rw offline")
        .callback_url("http://demonstrab.ly")
}

/// The seed's `oauthUrl`.
pub const SEED_OAUTH_URL: &str = "https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline";

/// The seed's instance.json with its placeholders filled in, typed: the
/// same body as [`seed_instance_body`].
pub fn seed_instance(access: &str, refresh: &str) -> elements_client::CreateInstance {
    elements_client::CreateInstance::new("hubspot", "Test")
        .provider_data(
            elements_client::ProviderData::tokens(access, refresh)
                .apikey("test-client")
                .expires_in("1800"),
        )
        .configuration("oauth.api.key", "test-client")
        .configuration("oauth.api.secret", "123456")
        .configuration("oauth.callback.url", "www.samplecallbackurl.com")
        .configuration("oauth.scope", "contacts-rw+offline")
        .tag("seed")
}

/// The refusal a call must have ended in (panics with the answer otherwise).
pub fn refused<T: std::fmt::Debug>(
    result: Result<T, elements_client::Error>,
) -> elements_client::ApiError {
    match result {
        Err(elements_client::Error::Api(e)) => *e,
        other => panic!("expected the server to refuse, got {other:?}"),
    }
}

/// The JSON of a typed value (to compare with recorded shapes).
pub fn to_json(value: &impl serde::Serialize) -> Value {
    serde_json::to_value(value).expect("serializable")
}

/// A deployment of replicas on one throwaway PostgreSQL database: its URL,
/// master key, config file (HubSpot's token endpoints at the fake provider)
/// and the environment's account. Test files add their own methods.
pub struct PgDeployment {
    pub _dir: tempfile::TempDir,
    pub db_url: String,
    pub key: String,
    pub config: String,
    pub org: String,
    pub user: String,
}

impl PgDeployment {
    pub fn new(
        pg: &elements_testkit::pg::PgCluster,
        name: &str,
        fake: &elements_testkit::provider::FakeProvider,
    ) -> PgDeployment {
        let dir = data_dir();
        let config = dir.path().join("elements.toml");
        std::fs::write(
            &config,
            format!(
                "refresh_interval_seconds = 3600\n\
                 [elements.hubspot.oauth]\n\
                 token_url = \"{}\"\nrefresh_url = \"{}\"\n",
                fake.token_url(),
                fake.legacy_refresh_url()
            ),
        )
        .unwrap();
        PgDeployment {
            db_url: pg.create_database(name).expect("database"),
            key: elements_store::Keyring::encode_key(&elements_store::Keyring::generate_key()),
            config: config.to_str().unwrap().to_owned(),
            org: format!("org-{name}"),
            user: format!("user-{name}"),
            _dir: dir,
        }
    }

    /// A replica: the real binary on the deployment's database.
    pub fn replica(&self) -> Binary {
        Binary::serve(
            &["--database-url", &self.db_url, "--config", &self.config],
            &[
                ("ELEMENTS_MASTER_KEY", &self.key),
                ("ELEMENTS_ORGANIZATION_SECRET", &self.org),
                ("ELEMENTS_USER_SECRET", &self.user),
            ],
        )
    }

    /// The account's `Authorization` header.
    pub fn header(&self) -> String {
        format!("User {}, Organization {}", self.user, self.org)
    }

    /// The store, opened from the test process.
    pub async fn store(&self) -> std::sync::Arc<dyn elements_store::Store> {
        elements_store::connect(
            &self.db_url,
            elements_store::Keyring::parse(&self.key).unwrap(),
        )
        .await
        .unwrap()
    }
}

// ------------------------------------------------ the fake OTLP/HTTP collector
// (tests/otel.rs, tests/otel_store.rs)

/// What a fake collector received: (content type, body) per POST.
pub type OtlpReceived = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A fake OTLP/HTTP collector on 127.0.0.1: `POST /v1/traces` is recorded
/// and answered an empty protobuf response (an empty
/// `ExportTraceServiceResponse`); every other path answers `{}` (a
/// provider API a test proxies to); its base URL.
pub async fn otlp_collector() -> (String, OtlpReceived) {
    let got: OtlpReceived = Default::default();
    let store = got.clone();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let store = store.clone();
                    async move {
                        let kind = headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        store.lock().unwrap().push((kind, body.to_vec()));
                        ([("content-type", "application/x-protobuf")], Vec::new())
                    }
                },
            ),
        )
        .fallback(|| async { axum::Json(serde_json::json!({})) });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, got)
}

/// Every span of what a collector received, decoded.
pub fn otlp_spans(received: &OtlpReceived) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    use prost::Message as _;
    let mut spans = Vec::new();
    for (_, body) in received.lock().unwrap().iter() {
        let request =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body.as_slice(),
            )
            .expect("OTLP protobuf");
        for resource in request.resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    spans
}

/// A server from [`Binary::serve_with_log_file`].
pub struct LoggedBinary {
    pub server: Binary,
    pub log_path: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl LoggedBinary {
    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).expect("read the server log")
    }
}
