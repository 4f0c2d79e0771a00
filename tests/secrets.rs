//! Secret hygiene: the real binary, logging at `ELEMENTS_LOG=trace`, runs
//! every flow that handles a secret against the fake provider — a code
//! exchange, a PKCE code exchange, provisioning from tokens, refreshes that
//! rotate refresh tokens, a provider refusal, a reused code, a delete — over
//! SQLite and over a throwaway PostgreSQL cluster. Then every byte the
//! server wrote (its log, the SQLite file with its `-wal` and `-shm`, every
//! file of the PostgreSQL data directory) is searched for each secret: raw,
//! hex and base64, and for the shape of every token and code the fake ever
//! issued (so refresh tokens the test never saw, rotated ones included, are
//! covered too).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use common::*;
use elements_client::{Client, CreateInstance, OAuthUrlRequest, ProviderData, Secret};
use elements_store::Keyring;
use elements_testkit::pg::PgCluster;
use elements_testkit::provider::FakeProvider;
use regex::bytes::Regex;

const CALLBACK: &str = "https://app.test/callback";

/// A secret the test knows, by what it is.
type Known = Vec<(String, String)>;

/// One deployment of the binary: its files, config and secrets.
struct Deployment {
    dir: tempfile::TempDir,
    config: String,
    key: String,
    org: String,
    user: String,
    client_id: String,
    client_secret: String,
    /// An instance name: stored in plaintext, so finding it proves a scan
    /// reaches the data.
    probe: String,
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Deployment {
    /// Every secret refreshes on read (a margin longer than any token's
    /// life), HubSpot and GitLab (PKCE) point at the fake provider.
    fn new(fake: &FakeProvider) -> Deployment {
        let dir = data_dir();
        let client_id = format!("client-{}", random_hex());
        let client_secret = format!("client-secret-{}", random_hex());
        fake.add_client(&client_id, &client_secret);
        let config = dir.path().join("elements.toml");
        std::fs::write(
            &config,
            format!(
                "refresh_margin_seconds = 1000000\n\
                 refresh_interval_seconds = 3600\n\
                 [elements.hubspot.oauth]\n\
                 authorization_url = \"{legacy}\"\n\
                 token_url = \"{token}\"\n\
                 refresh_url = \"{refresh}\"\n\
                 [elements.hubspot.oauth.endpoints]\n\
                 current_authorization_url = \"{authorize}\"\n\
                 [elements.gitlab.oauth]\n\
                 authorization_url = \"{authorize}\"\n\
                 token_url = \"{token}\"\n",
                legacy = fake.legacy_authenticate_url(),
                token = fake.token_url(),
                refresh = fake.legacy_refresh_url(),
                authorize = fake.authorize_url(),
            ),
        )
        .unwrap();
        Deployment {
            config: config.to_str().unwrap().to_owned(),
            key: Keyring::encode_key(&Keyring::generate_key()),
            org: format!("org-{}", random_hex()),
            user: format!("user-{}", random_hex()),
            client_id,
            client_secret,
            probe: format!("probe-{}", random_hex()),
            dir,
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The binary over `store_args`, logging at trace level to `server.log`.
    fn serve(&self, store_args: &[&str]) -> Binary {
        let mut args = store_args.to_vec();
        args.extend(["--config", &self.config]);
        let log = std::fs::File::create(self.log_path()).unwrap();
        Binary::serve_logging_to(
            &args,
            &[
                ("ELEMENTS_LOG", "trace"),
                ("ELEMENTS_MASTER_KEY", &self.key),
                ("ELEMENTS_ORGANIZATION_SECRET", &self.org),
                ("ELEMENTS_USER_SECRET", &self.user),
            ],
            log,
        )
    }

    /// The typed client of `server` with the deployment's account.
    fn api(&self, server: &Binary) -> Client {
        Client::new(&server.base)
            .unwrap()
            .with_account(&self.user, &self.org)
    }

    /// The secrets of the deployment itself.
    fn known(&self) -> Known {
        vec![
            ("the master key".into(), self.key.clone()),
            ("the organization secret".into(), self.org.clone()),
            ("the user secret".into(), self.user.clone()),
            ("the client secret".into(), self.client_secret.clone()),
        ]
    }
}

/// A client that does not follow redirects (the provider's answer is one).
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET oauth/url`, then the user's visit to the provider: (code, verifier).
async fn authorize(
    http: &reqwest::Client,
    server: &Binary,
    d: &Deployment,
    element: &str,
    flow: Option<&str>,
) -> (String, Option<String>) {
    let mut request = OAuthUrlRequest::new()
        .api_key(&d.client_id)
        .api_secret(&d.client_secret)
        .scope("contacts")
        .callback_url(CALLBACK)
        .state("st");
    if let Some(flow) = flow {
        request = request.param("oauth.flow", flow);
    }
    let answer = d
        .api(server)
        .anonymous()
        .oauth_url(element, &request)
        .await
        .unwrap();
    let url = answer.oauth_url;
    let verifier = answer.code_verifier.map(Secret::into_inner);
    if let Some(v) = &verifier {
        assert!(!url.contains(v.as_str()), "the verifier is not in the URL");
        assert!(url.contains("code_challenge="), "{url}");
    }
    // The user's visit to the (fake) provider: raw, it is not our API.
    let redirect = http.get(&url).send().await.unwrap();
    assert_eq!(redirect.status(), 302, "{url}");
    let location = redirect.headers()["location"].to_str().unwrap().to_owned();
    let code = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap_or_else(|| panic!("{location}"))
        .to_owned();
    (code, verifier)
}

async fn create(server: &Binary, d: &Deployment, body: &CreateInstance) -> (i64, String) {
    let created = d.api(server).create_instance(body).await.expect("created");
    (
        created.id,
        created.token.expect("the instance token").into_inner(),
    )
}

/// A fresh access token through `GET /instances/{id}/credentials` with
/// the instance token.
async fn access_token(server: &Binary, id: i64, token: &str) -> String {
    Client::new(&server.base)
        .unwrap()
        .with_element(token)
        .credentials(id)
        .await
        .expect("credentials")
        .access_token
        .expect("an access token")
        .into_inner()
}

/// Runs every flow that handles a secret; returns the secrets it saw.
async fn flows(server: &Binary, d: &Deployment, fake: &FakeProvider) -> Known {
    let http = client();
    let api = d.api(server);
    let mut known = d.known();
    let hubspot = |name: &str, data: ProviderData| {
        CreateInstance::new("hubspot", name)
            .provider_data(data)
            .configuration("oauth.api.key", &d.client_id)
            .configuration("oauth.api.secret", &d.client_secret)
            .configuration("oauth.callback.url", CALLBACK)
            .configuration("oauth.scope", "contacts")
            .configuration("oauth.flow", "current")
    };
    let refreshes = fake.refresh_calls();

    // 1. HubSpot, current flow: a code exchange.
    let (code, _) = authorize(&http, server, d, "hubspot", Some("current")).await;
    let body = hubspot(&d.probe, ProviderData::code(&code));
    let (by_code_id, by_code_token) = create(server, d, &body).await;
    known.push(("a HubSpot authorization code".into(), code.clone()));
    known.push(("an instance token".into(), by_code_token.clone()));
    // Two reads, two refreshes: the refresh token rotates twice.
    for _ in 0..2 {
        known.push((
            "a refreshed access token".into(),
            access_token(server, by_code_id, &by_code_token).await,
        ));
    }
    // The used code again: the provider refuses (and says why).
    let err = refused(api.create_instance(&body).await);
    assert_eq!(err.status, 400);

    // 2. HubSpot from tokens, whose refresh token rotates on first read.
    let (access, refresh) = fake.issue_tokens(&d.client_id);
    known.push(("an original access token".into(), access.clone()));
    known.push(("an original refresh token".into(), refresh.clone()));
    let (by_tokens_id, by_tokens_token) = create(
        server,
        d,
        &hubspot(
            "from tokens",
            ProviderData::tokens(&access, &refresh).expires_in("1800"),
        ),
    )
    .await;
    known.push(("an instance token".into(), by_tokens_token.clone()));
    let refreshed = access_token(server, by_tokens_id, &by_tokens_token).await;
    assert_ne!(refreshed, access);
    known.push(("a refreshed access token".into(), refreshed));
    assert!(
        !fake.is_refresh_token_valid(&refresh),
        "the original refresh token was rotated away"
    );
    // A refusal, whose provider message could echo what we sent.
    fake.invalid_grant_next(1);
    // The refusal marks the instance invalid; its access token is still
    // valid for minutes, so it is still served (issue 12.4).
    let served = Client::new(&server.base)
        .unwrap()
        .with_element(&by_tokens_token)
        .credentials(by_tokens_id)
        .await;
    assert!(served.is_ok(), "a still-valid token is served: {served:?}");
    let instance = api.instance(by_tokens_id).await.unwrap();
    assert!(
        !instance.valid,
        "a refused refresh marks the instance invalid: {instance:?}"
    );

    // 3. GitLab: PKCE.
    let (code, verifier) = authorize(&http, server, d, "gitlab", None).await;
    let verifier = verifier.expect("gitlab uses PKCE: oauth/url returns a codeVerifier");
    known.push(("a GitLab authorization code".into(), code.clone()));
    known.push(("a PKCE code verifier".into(), verifier.clone()));
    let exchanges = fake.code_exchanges();
    let (pkce_id, pkce_token) = create(
        server,
        d,
        &CreateInstance::new("gitlab", "pkce")
            .provider_data(ProviderData::code(&code).code_verifier(&verifier))
            .configuration("oauth.api.key", &d.client_id)
            .configuration("oauth.api.secret", &d.client_secret)
            .configuration("oauth.callback.url", CALLBACK),
    )
    .await;
    assert_eq!(fake.code_exchanges(), exchanges + 1);
    known.push(("an instance token".into(), pkce_token.clone()));
    known.push((
        "a refreshed access token".into(),
        access_token(server, pkce_id, &pkce_token).await,
    ));

    // 4. A delete.
    api.delete_instance(by_tokens_id).await.unwrap();

    // Two refreshes, one refused, one more for each of the others.
    assert!(
        fake.refresh_calls() >= refreshes + 5,
        "{} refreshes",
        fake.refresh_calls() - refreshes
    );
    known
}

/// Every form a secret's bytes could take: raw, hex, and base64 (standard
/// and URL-safe) at each of the three alignments it could sit at in a
/// longer encoded value (the characters that depend on neighbours cut off).
fn encodings(secret: &str) -> Vec<(&'static str, String)> {
    let bytes = secret.as_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut out = vec![
        ("raw", secret.to_owned()),
        ("hex", hex.clone()),
        ("HEX", hex.to_uppercase()),
    ];
    for (name, engine) in [
        ("base64", &base64::engine::general_purpose::STANDARD_NO_PAD),
        (
            "base64url",
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ),
    ] {
        for shift in 0..3 {
            let mut padded = vec![0u8; shift];
            padded.extend_from_slice(bytes);
            let encoded = engine.encode(&padded);
            let start = if shift == 0 { 0 } else { 4 };
            let whole = (shift + bytes.len()) / 3 * 4;
            if whole > start + 8 {
                out.push((name, encoded[start..whole].to_owned()));
            }
        }
    }
    out
}

/// What the search looks for: each known secret in each encoding, and the
/// shape of every token and code the fake provider issues (`rt-`, `at-`,
/// `code-` and 64 hex digits), raw and hex-encoded.
struct Search {
    regex: Regex,
    labels: Vec<(Vec<u8>, String)>,
}

impl Search {
    fn new(known: &Known) -> Search {
        let mut alternatives = Vec::new();
        let mut labels = Vec::new();
        for (what, secret) in known {
            assert!(secret.len() >= 16, "{what} is long enough to search for");
            for (encoding, text) in encodings(secret) {
                alternatives.push(regex::escape(&text));
                labels.push((text.into_bytes(), format!("{what} ({encoding})")));
            }
        }
        let hex_digit_as_hex = "(?:3[0-9]|6[1-6])";
        for prefix in ["rt-", "at-", "code-"] {
            alternatives.push(format!("{}[0-9a-f]{{64}}", regex::escape(prefix)));
            let hex: String = prefix.bytes().map(|b| format!("{b:02x}")).collect();
            alternatives.push(format!("(?i:{hex}{hex_digit_as_hex}{{64}})"));
        }
        Search {
            regex: Regex::new(&format!("(?-u:{})", alternatives.join("|"))).unwrap(),
            labels,
        }
    }

    /// Each secret found in `bytes`, named (never quoted).
    fn find(&self, bytes: &[u8]) -> Vec<String> {
        let mut found: Vec<String> = self
            .regex
            .find_iter(bytes)
            .map(|m| {
                let text = m.as_bytes();
                self.labels
                    .iter()
                    .find(|(needle, _)| needle.as_slice() == text)
                    .map(|(_, label)| label.clone())
                    .unwrap_or_else(|| {
                        let shape = String::from_utf8_lossy(&text[..text.len().min(6)]);
                        format!("a token or code the fake provider issued ({shape}…)")
                    })
            })
            .collect();
        found.sort();
        found.dedup();
        found
    }
}

/// Every regular file below `dir`: (path, bytes).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        } else if meta.is_file() {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

/// Searches every file below `dir`; returns "file: secret" lines and the
/// number of bytes searched. `probe` must be found (the data is there).
fn scan_dir(search: &Search, dir: &Path, probe: &str) -> (Vec<String>, usize) {
    let mut leaks = Vec::new();
    let mut bytes = 0;
    let mut probe_seen = false;
    for (path, content) in files(dir) {
        bytes += content.len();
        probe_seen |= contains(&content, probe);
        for what in search.find(&content) {
            leaks.push(format!("{}: {what}", path.display()));
        }
    }
    assert!(
        probe_seen,
        "the instance name {probe} is somewhere below {}: the scan reaches the data",
        dir.display()
    );
    (leaks, bytes)
}

/// The server's trace log: non-empty, at trace level, and free of secrets.
fn scan_log(search: &Search, d: &Deployment) -> (Vec<String>, usize) {
    let log = std::fs::read(d.log_path()).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("TRACE"), "the log is at trace level");
    assert!(text.contains("/instances"), "the log records the requests");
    let leaks = search
        .find(&log)
        .into_iter()
        .map(|what| format!("server log: {what}"))
        .collect();
    (leaks, log.len())
}

/// The search itself finds each form, wherever it sits, and nothing else.
#[test]
fn the_search_finds_every_encoding_and_every_issued_shape() {
    let secret = "client-secret-0123456789abcdef";
    let search = Search::new(&vec![("the client secret".into(), secret.into())]);
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let mut found = search.find(format!("x{secret}y {} {}", hex, hex.to_uppercase()).as_bytes());
    assert_eq!(
        found,
        [
            "the client secret (HEX)",
            "the client secret (hex)",
            "the client secret (raw)"
        ]
    );
    // Base64 of a value with the secret at any offset, in either alphabet.
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for prefix in ["", "a", "ab", "abc", "{\"k\":\""] {
            let encoded = engine.encode(format!("{prefix}{secret}\"}}"));
            found = search.find(encoded.as_bytes());
            assert_eq!(found.len(), 1, "{prefix:?}: {found:?}");
            assert!(
                found[0].starts_with("the client secret (base64"),
                "{found:?}"
            );
        }
    }
    // Tokens and codes the test never saw, by their shape, raw or hex-encoded.
    let rotated = format!("rt-{}", "5e".repeat(32));
    let code = format!("code-{}", "0a".repeat(32));
    let code_hex: String = code.bytes().map(|b| format!("{b:02X}")).collect();
    found = search.find(format!("{{\"r\":\"{rotated}\"}} {code_hex}").as_bytes());
    assert_eq!(
        found,
        [
            "a token or code the fake provider issued (636F64…)",
            "a token or code the fake provider issued (rt-5e5…)"
        ]
    );
    // Nothing else: other text, a shorter hex run, an encrypted-looking blob.
    let clean = format!(
        "client-secret at-{} rt-xyz {}",
        "ab".repeat(20),
        "Zm9v".repeat(40)
    );
    assert!(search.find(clean.as_bytes()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_trace_log_or_the_sqlite_files() {
    let fake = FakeProvider::start().await;
    let d = Deployment::new(&fake);
    let data = d.dir.path().join("data");
    let mut server = d.serve(&["--data-dir", data.to_str().unwrap()]);
    let known = flows(&server, &d, &fake).await;
    let search = Search::new(&known);

    // While the server runs: the database with its -wal and -shm files.
    let names: Vec<String> = files(&data)
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("-wal")) && names.iter().any(|n| n.ends_with("-shm")),
        "{names:?}"
    );
    let (mut leaks, running_bytes) = scan_dir(&search, &data, &d.probe);
    // After a graceful stop.
    assert!(server.terminate().success());
    let (stopped, stopped_bytes) = scan_dir(&search, &data, &d.probe);
    leaks.extend(stopped);
    let (log_leaks, log_bytes) = scan_log(&search, &d);
    leaks.extend(log_leaks);
    eprintln!(
        "{} secrets ({} searched forms) over {running_bytes} + {stopped_bytes} bytes of SQLite \
         files ({names:?}) and {log_bytes} bytes of trace log: {} found",
        known.len(),
        search.labels.len(),
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "secrets in plaintext:\n{}",
        leaks.join("\n")
    );
}

/// The `psql` client next to the server binaries (or on `PATH`).
fn psql() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("psql"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| {
            let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("bin/psql"))
                .filter(|p| p.is_file())
                .collect();
            found.sort();
            found.pop()
        })
        .expect("psql, which comes with the PostgreSQL server binaries")
}

fn sql(pg: &PgCluster, statement: &str) -> String {
    let out = Command::new(psql())
        .args(["-X", "-A", "-t", "-d", &pg.url(), "-c", statement])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql -c {statement}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_the_trace_log_or_the_postgres_data_directory() {
    let pg = PgCluster::start().expect("a throwaway PostgreSQL cluster");
    let fake = FakeProvider::start().await;
    let d = Deployment::new(&fake);
    let url = pg.create_database("secrets").unwrap();
    let mut server = d.serve(&["--database-url", &url]);
    let known = flows(&server, &d, &fake).await;
    let search = Search::new(&known);
    assert!(server.terminate().success());

    // Every table page on disk, the WAL too.
    sql(&pg, "CHECKPOINT");
    let data = PathBuf::from(sql(&pg, "SHOW data_directory"));
    assert!(data.join("pg_wal").is_dir(), "{}", data.display());
    let (mut leaks, bytes) = scan_dir(&search, &data, &d.probe);
    let (log_leaks, log_bytes) = scan_log(&search, &d);
    leaks.extend(log_leaks);
    eprintln!(
        "{} secrets ({} searched forms) over {bytes} bytes of the PostgreSQL data directory \
         and {log_bytes} bytes of trace log: {} found",
        known.len(),
        search.labels.len(),
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "secrets in plaintext:\n{}",
        leaks.join("\n")
    );
}
