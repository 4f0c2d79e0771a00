//! Hardening 2 (issue 12): connection timeouts and cap, bounded shutdown,
//! header size, suggestion cost, failed-authentication limit, `no-store`,
//! PKCE verifier rules, key-file permissions, credential masking and
//! per-organization limits. Real servers, real sockets.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use elements_client::{Client, CreateInstance, Error, ListInstances, ProviderData};
use elements_server::config::Limits;
use elements_server::ServerConfig;
use reqwest::Method;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// How long a test waits for something that must happen before it calls
/// the server hung. Never an assertion about speed.
const HANG: Duration = Duration::from_secs(30);

fn config_with(dir: &std::path::Path, limits: Limits) -> ServerConfig {
    ServerConfig {
        limits,
        ..config_in(dir)
    }
}

/// The status a call was answered with (a typed `Ok`: these routes' 200).
fn status<T>(answer: &Result<T, Error>) -> u16 {
    match answer {
        Ok(_) => 200,
        Err(e) => e
            .status()
            .unwrap_or_else(|| panic!("no answer: {e}"))
            .as_u16(),
    }
}

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

// Raw sockets below: these tests hold the connection itself (half-sent
// heads, silence, keep-alive, the connection cap), which no HTTP client
// exposes; the typed client serves every well-formed call further down.

/// Reads one response (head and `Content-Length` body): (status, body).
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let status = head[9..12].parse().expect("a status code");
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = tokio::time::timeout(HANG, stream.read(&mut chunk))
                    .await
                    .expect("the body in time")
                    .unwrap();
                assert!(n > 0, "closed inside a body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).into_owned();
            return (status, body);
        }
        let n = tokio::time::timeout(HANG, stream.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "the server closed before answering");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A keep-alive GET on an open connection.
async fn get_on(stream: &mut TcpStream, path: &str) -> (u16, String) {
    stream
        .write_all(format!("GET /elements/api-v2{path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    read_response(stream).await
}

/// Waits until the server closes the connection; returns the bytes it
/// sent first (panics if it is still open after [`HANG`]).
async fn closed_by_server(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(HANG, stream.read(&mut chunk)).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(Ok(0)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Ok(Err(e)) => panic!("unexpected read error {e}"),
        }
    }
}

const HALF_HEAD: &[u8] = b"GET /elements/api-v2/elements/keys HTTP/1.1\r\nHost: t\r\nX-Slow: ";

// ---------------------------------------------------------------- 12.6

#[tokio::test]
async fn half_sent_heads_and_silent_connections_are_closed_after_the_header_timeout() {
    let dir = data_dir();
    let server = TestServer::start(config_with(
        dir.path(),
        Limits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
    ))
    .await;
    let mut half = TcpStream::connect(addr(&server.base)).await.unwrap();
    half.write_all(HALF_HEAD).await.unwrap();
    let mut silent = TcpStream::connect(addr(&server.base)).await.unwrap();
    assert_eq!(closed_by_server(&mut half).await, b"");
    assert_eq!(closed_by_server(&mut silent).await, b"");

    // A client that sends its head in time is served.
    let mut normal = TcpStream::connect(addr(&server.base)).await.unwrap();
    let (status, body) = get_on(&mut normal, "/elements/keys").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"hubspot\""), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_after_the_idle_timeout() {
    let dir = data_dir();
    let server = TestServer::start(config_with(
        dir.path(),
        Limits {
            header_read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
    ))
    .await;
    let mut stream = TcpStream::connect(addr(&server.base)).await.unwrap();
    assert_eq!(get_on(&mut stream, "/elements/keys").await.0, 200);
    assert_eq!(get_on(&mut stream, "/elements/hubspot").await.0, 200);
    // No third request: the idle timer (not the 600 s header timer) closes it.
    assert_eq!(closed_by_server(&mut stream).await, b"");
    server.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_its_first_head_deadline_and_its_later_heads_are_timed() {
    // The listener leaves its timer set to an earlier deadline while the
    // real one moves later, and moves it on when it fires: firing early
    // must not close a connection that is merely idle, and a later slow
    // head must still be cut off.
    let dir = data_dir();
    let server = TestServer::start(config_with(
        dir.path(),
        Limits {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
    ))
    .await;
    let mut stream = TcpStream::connect(addr(&server.base)).await.unwrap();
    assert_eq!(get_on(&mut stream, "/elements/keys").await.0, 200);
    // Idle past the first head's 300 ms deadline: still open (idle is 600 s).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(get_on(&mut stream, "/elements/hubspot").await.0, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    // A third head sent only in part is cut off by the header timeout.
    stream.write_all(HALF_HEAD).await.unwrap();
    assert_eq!(closed_by_server(&mut stream).await, b"");
    server.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let dir = data_dir();
    let server = TestServer::start(config_with(
        dir.path(),
        Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
            ..Limits::default()
        },
    ))
    .await;
    let mut first = TcpStream::connect(addr(&server.base)).await.unwrap();
    let mut second = TcpStream::connect(addr(&server.base)).await.unwrap();
    assert_eq!(get_on(&mut first, "/elements/keys").await.0, 200);
    assert_eq!(get_on(&mut second, "/elements/keys").await.0, 200);

    // The third connection completes its TCP handshake (the kernel's
    // backlog) but is not served while two are open.
    let base = server.base.clone();
    let mut third = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr(&base)).await.unwrap();
        get_on(&mut stream, "/elements/keys").await
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut third)
            .await
            .is_err(),
        "the third connection was served beyond the cap of 2"
    );
    // Connections within the cap keep working meanwhile.
    assert_eq!(get_on(&mut second, "/elements/hubspot").await.0, 200);
    assert!(!third.is_finished());

    // Closing one lets the waiting one in.
    drop(first);
    let (status, _) = tokio::time::timeout(HANG, third)
        .await
        .expect("served once a slot was free")
        .unwrap();
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_completes_with_a_half_sent_request_open() {
    let dir = data_dir();
    let server = TestServer::start(config_with(
        dir.path(),
        Limits {
            header_read_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
    ))
    .await;
    let mut half = TcpStream::connect(addr(&server.base)).await.unwrap();
    half.write_all(HALF_HEAD).await.unwrap();
    // Make sure the server has accepted it and is reading it.
    let mut probe = TcpStream::connect(addr(&server.base)).await.unwrap();
    assert_eq!(get_on(&mut probe, "/elements/keys").await.0, 200);

    tokio::time::timeout(HANG, server.stop())
        .await
        .expect("shutdown finished although a request head was half sent");
    assert_eq!(closed_by_server(&mut half).await, b"");
}

#[tokio::test]
async fn sigterm_stops_the_binary_with_a_half_sent_request_open() {
    let dir = data_dir();
    let mut server = Binary::serve(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--header-read-timeout-seconds",
            "600",
            "--shutdown-timeout-seconds",
            "1",
        ],
        &[],
    );
    let mut half = TcpStream::connect(addr(&server.base)).await.unwrap();
    half.write_all(HALF_HEAD).await.unwrap();
    let mut probe = TcpStream::connect(addr(&server.base)).await.unwrap();
    assert_eq!(get_on(&mut probe, "/elements/keys").await.0, 200);

    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(waited < HANG, "elements serve ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(closed_by_server(&mut half).await, b"");
}

#[tokio::test]
async fn the_header_read_timeout_flows_from_the_environment() {
    let dir = data_dir();
    let server = Binary::serve(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[("ELEMENTS_HEADER_READ_TIMEOUT_SECONDS", "1")],
    );
    let mut half = TcpStream::connect(addr(&server.base)).await.unwrap();
    half.write_all(HALF_HEAD).await.unwrap();
    assert_eq!(closed_by_server(&mut half).await, b"");
}

// ---------------------------------------------------------------- 12.7

#[tokio::test]
async fn request_heads_above_32_kib_get_431() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;

    // Raw: the request heads are deliberately oversized.
    let fine = server
        .get("/elements/keys")
        .header("X-Big", "a".repeat(16 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200);

    let big = server
        .get("/elements/keys")
        .header("X-Big", "a".repeat(40 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 431);
    let body: Value = big.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("request headers too large")
            && body["message"].as_str().unwrap().contains("32 KiB"),
        "{body}"
    );

    // 200 KB: refused by the parser before it is even buffered whole.
    let mut stream = TcpStream::connect(addr(&server.base)).await.unwrap();
    let head = format!(
        "GET /elements/api-v2/elements/keys HTTP/1.1\r\nHost: t\r\nX-Huge: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let _ = stream.write_all(head.as_bytes()).await; // the server may close mid-write
    let answer = closed_by_server_lenient(&mut stream).await;
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    server.stop().await;
}

/// Like [`closed_by_server`], but a reset or broken pipe also ends it.
async fn closed_by_server_lenient(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(HANG, stream.read(&mut chunk)).await {
            Err(_) => panic!("the server kept the connection open"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---------------------------------------------------------------- 12.9

#[tokio::test]
async fn no_suggestions_for_keys_longer_than_any_element_key() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;

    let near = refused(server.anonymous().element("hubspott").await);
    assert!(near.message().contains("did you mean hubspot"), "{near}");

    // "hubspot" followed by 20,000 characters contains a key: it used to
    // be suggested, after a 20,000 x N edit-distance computation.
    let long = format!("hubspot{}", "x".repeat(20_000));
    let err = refused(server.anonymous().element(&long).await);
    assert_eq!(err.status, 404);
    let message = err.message();
    assert!(
        message.starts_with("no element with key or id `hubspotxxx"),
        "{message}"
    );
    assert!(!message.contains("did you mean"), "{message}");

    let err = refused(
        server
            .api()
            .create_instance(&CreateInstance::new(
                format!("hubspot{}", "y".repeat(50_000)),
                "n",
            ))
            .await,
    );
    assert_eq!(err.status, 404);
    assert!(!err.message().contains("did you mean"), "{err}");
    server.stop().await;
}

// ---------------------------------------------------------------- 12.10

#[tokio::test]
async fn failed_authentications_are_limited_per_client_address() {
    let dir = data_dir();
    let server = TestServer::start(config_with(
        dir.path(),
        Limits {
            auth_failure_burst: 3,
            auth_failures_per_minute: 1,
            ..Limits::default()
        },
    ))
    .await;
    let api = server.api();
    let wrong = server.anonymous().with_account("nope", "nope");
    let bad = || async { status(&wrong.instances(&ListInstances::new()).await) };
    assert_eq!(bad().await, 401);
    assert_eq!(bad().await, 401);
    // Successes spend nothing of the budget.
    for _ in 0..10 {
        api.instances(&ListInstances::new()).await.unwrap();
    }
    assert_eq!(bad().await, 401);

    // The fourth failure spends the last of the burst: 429, Retry-After.
    // Raw: the `Retry-After` header is asserted (the typed error has no headers).
    let limited = server
        .get("/instances")
        .header("Authorization", "User nope, Organization nope")
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = limited.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("too many failed authentications from this client address"),
        "{body}"
    );
    assert_eq!(body["retryAfterSeconds"], retry);

    // During the lockout even a correct credential from that address is
    // refused unchecked (else a 200 would tell a guesser it guessed right)...
    // Raw: the header is asserted.
    let correct = server
        .authed(Method::GET, "/instances")
        .send()
        .await
        .unwrap();
    assert_eq!(correct.status(), 429);
    assert!(correct.headers().contains_key("retry-after"));
    let err = refused(api.instances(&ListInstances::new()).await);
    assert_eq!(err.status, 429, "{err}");
    assert!(
        err.body.as_ref().unwrap().retry_after_seconds.is_some(),
        "{err:?}"
    );
    // ...so is a guessed instance token...
    let guess = server
        .anonymous()
        .with_element("guess")
        .credentials(1)
        .await;
    assert_eq!(status(&guess), 429);
    // ...but the public catalog still answers,
    assert!(server
        .anonymous()
        .element_keys()
        .await
        .unwrap()
        .contains(&"hubspot".to_owned()));
    // and another client address is not affected.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    Client::with_http_client(&server.base, other)
        .unwrap()
        .with_account(
            &server.account.user_secret,
            &server.account.organization_secret,
        )
        .instances(&ListInstances::new())
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn the_failed_authentication_burst_flows_from_the_environment() {
    let dir = data_dir();
    let server = Binary::serve(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[("ELEMENTS_AUTH_FAILURE_BURST", "1")],
    );
    let wrong = Client::new(&server.base).unwrap().with_account("a", "b");
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(status(&wrong.instances(&ListInstances::new()).await));
    }
    assert_eq!(statuses, [401, 429]);
}

// ---------------------------------------------------------------- 12.12

fn assert_no_store(response: &reqwest::Response, what: &str) {
    assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
    assert_eq!(response.headers()["pragma"], "no-cache", "{what}");
}

#[tokio::test]
async fn responses_with_tokens_or_secrets_are_not_stored() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    // Raw throughout: the `Cache-Control` and `Pragma` headers are what is
    // asserted (the typed answers carry none); the bodies are read typed.
    let created = server
        .api()
        .request(Method::POST, "/instances")
        .json(&seed_instance("at-nostore", "rt-nostore"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert_no_store(&created, "POST /instances");
    let created: elements_client::Instance = created.json().await.unwrap();
    let (id, token) = (created.id, created.token.unwrap());

    let credentials = server
        .anonymous()
        .with_element(token)
        .request(Method::GET, &format!("/instances/{id}/credentials"))
        .send()
        .await
        .unwrap();
    assert_eq!(credentials.status(), 200);
    assert_no_store(&credentials, "GET credentials");
    let body: elements_client::Credentials = credentials.json().await.unwrap();
    assert_eq!(body.access_token.unwrap().expose(), "at-nostore");

    let url = server
        .anonymous()
        .request(
            Method::GET,
            &format!("/elements/hubspot/oauth/url?{SEED_OAUTH_QUERY}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(url.status(), 200);
    assert_no_store(&url, "oauth/url");
    let url: elements_client::OAuthUrl = url.json().await.unwrap();
    assert_eq!(url.oauth_url, SEED_OAUTH_URL);
    server.stop().await;
}

// ---------------------------------------------------------------- 12.13

#[tokio::test]
async fn caller_code_verifiers_must_follow_rfc_7636() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    for bad in ["short", &"a".repeat(129), &format!("{}+/", "a".repeat(50))] {
        let body =
            seed_instance("", "").provider_data(ProviderData::code("the-code").code_verifier(bad));
        let err = refused(api.create_instance(&body).await);
        assert_eq!(err.status, 400, "{bad}");
        let message = err.message();
        assert!(
            message.contains("`providerData.code_verifier` must be 43 to 128 characters")
                && message.contains("RFC 7636"),
            "{message}"
        );
        assert!(!message.contains(bad), "the verifier is not echoed");
    }
    // A conforming verifier passes this check (the seed's tokens are used).
    let body = seed_instance("at-pkce", "rt-pkce").provider_data(
        ProviderData::tokens("at-pkce", "rt-pkce")
            .apikey("test-client")
            .expires_in("1800")
            .code_verifier("A-._~".repeat(10)),
    );
    api.create_instance(&body).await.unwrap();

    let err = refused(
        server
            .anonymous()
            .oauth_url("hubspot", &seed_oauth_request().code_verifier("tooshort"))
            .await,
    );
    assert_eq!(err.status, 400);
    assert!(
        err.message().contains("`codeVerifier` must be 43 to 128"),
        "{err}"
    );
    server.stop().await;
}

// ---------------------------------------------------------------- 12.14

fn write_key_file(dir: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let out = elements(&["keys", "generate"]);
    assert!(out.status.success());
    let path = dir.join("master.key");
    std::fs::write(&path, &out.stdout).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn serve_command(dir: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_elements"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("ELEMENTS_MASTER_KEY")
        .env_remove("ELEMENTS_DATABASE_URL")
        .env_remove("ELEMENTS_STRICT_KEY_PERMISSIONS")
        .env("ELEMENTS_ORGANIZATION_SECRET", "org-perm")
        .env("ELEMENTS_USER_SECRET", "user-perm");
    command
}

#[test]
fn a_key_file_readable_by_others_is_refused_when_strict_and_warned_about_otherwise() {
    let dir = data_dir();
    write_key_file(dir.path(), 0o644);

    let flag = serve_command(dir.path())
        .arg("--strict-key-permissions")
        .output()
        .unwrap();
    assert!(!flag.status.success());
    let stderr = String::from_utf8_lossy(&flag.stderr);
    assert!(
        stderr.contains("is readable or writable by group or others (mode 644)")
            && stderr.contains("chmod 600"),
        "{stderr}"
    );

    let env = serve_command(dir.path())
        .env("ELEMENTS_STRICT_KEY_PERMISSIONS", "true")
        .output()
        .unwrap();
    assert!(!env.status.success());
    assert!(String::from_utf8_lossy(&env.stderr).contains("(mode 644)"));

    // Without the flag: a warning, and the server runs.
    let mut child = serve_command(dir.path())
        .env("ELEMENTS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let warned = stderr.any(|l| {
        l.unwrap()
            .contains("readable or writable by group or others")
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = stdout.any(|l| l.unwrap().starts_with("listening on "));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        warned && listening,
        "warned {warned}, listening {listening}"
    );

    // An owner-only key file starts under the strict flag.
    let dir = data_dir();
    write_key_file(dir.path(), 0o600);
    let mut child = serve_command(dir.path())
        .arg("--strict-key-permissions")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let listening = stdout.any(|l| l.unwrap().starts_with("listening on "));
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening);
}

fn shipstation(name: &str) -> CreateInstance {
    CreateInstance::new("shipstation", name)
        .configuration("api.key", "ss-key-plain")
        .configuration("api.secret", "ss-secret-plain")
}

#[tokio::test]
async fn configuration_entries_that_hold_keys_are_masked() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let created = api.create_instance(&shipstation("ss")).await.unwrap();
    let id = created.id;
    assert_eq!(created.configuration["api.key"], "********");
    assert_eq!(created.configuration["api.secret"], "********");

    // Raw: the whole text of each answer is searched for the plaintext (a
    // typed answer drops fields it does not know); each is then read typed.
    let text = |path: String| {
        let request = api.request(Method::GET, &path);
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
            response.text().await.unwrap()
        }
    };
    let shown = text(format!("/instances/{id}")).await;
    let listed = text("/instances".to_owned()).await;
    let entries = text(format!("/instances/{id}/configuration")).await;
    for text in [&shown, &listed, &entries] {
        assert!(
            !text.contains("ss-key-plain") && !text.contains("ss-secret-plain"),
            "{text}"
        );
    }
    let shown: elements_client::Instance = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown.configuration["api.key"], "********");
    let listed: Vec<elements_client::Instance> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0].configuration["api.key"], "********");
    let entries: Vec<elements_client::ConfigurationEntry> = serde_json::from_str(&entries).unwrap();
    let key = entries.iter().find(|e| e.key == "api.key").unwrap();
    assert_eq!(key.property_value, "********");
    // The typed reads agree.
    assert_eq!(api.instance(id).await.unwrap(), shown);
    assert_eq!(api.instance_configuration(id).await.unwrap(), entries);
    server.stop().await;
}

// ---------------------------------------------------------------- 12.8

#[tokio::test]
async fn per_organization_instance_and_configuration_limits() {
    let dir = data_dir();
    let server = TestServer::start(config_with(
        dir.path(),
        Limits {
            max_instances_per_organization: 2,
            max_configuration_entries: 3,
            max_configuration_bytes: 100,
            ..Limits::default()
        },
    ))
    .await;
    let a = server.api();
    let first = a.create_instance(&shipstation("one")).await.unwrap();
    a.create_instance(&shipstation("two")).await.unwrap();
    let err = refused(a.create_instance(&shipstation("three")).await);
    assert_eq!(err.status, 403);
    let message = err.message();
    assert!(
        message.contains("already has 2 instances")
            && message.contains("max_instances_per_organization = 2"),
        "{message}"
    );
    // Another organization has its own count.
    let b = server.other_account("other").await.client(&server.base);
    b.create_instance(&shipstation("b")).await.unwrap();
    // Deleting one makes room.
    a.delete_instance(first.id).await.unwrap();
    a.create_instance(&shipstation("three")).await.unwrap();

    let entries = shipstation("many")
        .configuration("a", "1")
        .configuration("b", "2");
    let err = refused(b.create_instance(&entries).await);
    assert_eq!(err.status, 400);
    assert!(
        err.message()
            .contains("at most 3 `configuration` entries are allowed (max_configuration_entries)"),
        "{err}"
    );

    let big = shipstation("big").configuration("api.secret", "s".repeat(90));
    let err = refused(b.create_instance(&big).await);
    assert_eq!(err.status, 400);
    let message = err.message();
    assert!(
        message.contains("total 119 bytes; at most 100 are allowed (max_configuration_bytes)"),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_instance_cap_counts_on_postgresql_too() {
    let pg = elements_testkit::pg::PgCluster::shared().expect("PostgreSQL");
    let dir = data_dir();
    let mut config = config_with(
        dir.path(),
        Limits {
            max_instances_per_organization: 1,
            ..Limits::default()
        },
    );
    config.database_url = Some(pg.create_database("limits_count").expect("database"));
    let server = TestServer::start(config).await;
    assert_eq!(server.state.store.engine(), "postgres");
    let a = server.api();
    a.create_instance(&shipstation("one")).await.unwrap();
    let err = refused(a.create_instance(&shipstation("two")).await);
    assert_eq!(err.status, 403, "{err}");
    assert!(
        err.message().contains("max_instances_per_organization = 1"),
        "{err}"
    );
    let b = server.other_account("pg-other").await.client(&server.base);
    b.create_instance(&shipstation("b")).await.unwrap();
    server.stop().await;
}
