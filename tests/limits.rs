//! Hardening 2 (issue 12): connection timeouts and cap, bounded shutdown,
//! header size, suggestion cost, failed-authentication limit, `no-store`,
//! PKCE verifier rules, key-file permissions, credential masking and
//! per-organization limits. Real servers, real sockets.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use elements_server::config::Limits;
use elements_server::ServerConfig;
use reqwest::Method;
use serde_json::{json, Value};
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

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

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

    let near: Value = server
        .get("/elements/hubspott")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        near["message"]
            .as_str()
            .unwrap()
            .contains("did you mean hubspot"),
        "{near}"
    );

    // "hubspot" followed by 20,000 characters contains a key: it used to
    // be suggested, after a 20,000 x N edit-distance computation.
    let long = format!("hubspot{}", "x".repeat(20_000));
    let response = server
        .get(&format!("/elements/{long}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.starts_with("no element with key or id `hubspotxxx"),
        "{message}"
    );
    assert!(!message.contains("did you mean"), "{message}");

    let (status, body) = server
        .post_instance(
            &server.account,
            &json!({ "element": { "key": format!("hubspot{}", "y".repeat(50_000)) }, "name": "n" }),
        )
        .await;
    assert_eq!(status, 404);
    assert!(
        !body["message"].as_str().unwrap().contains("did you mean"),
        "{body}"
    );
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
    let bad = |server: &TestServer| {
        server
            .get("/instances")
            .header("Authorization", "User nope, Organization nope")
            .send()
    };
    assert_eq!(bad(&server).await.unwrap().status(), 401);
    assert_eq!(bad(&server).await.unwrap().status(), 401);
    // Successes spend nothing of the budget.
    for _ in 0..10 {
        let ok = server
            .authed(Method::GET, "/instances")
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    }
    assert_eq!(bad(&server).await.unwrap().status(), 401);

    // The fourth failure spends the last of the burst: 429, Retry-After.
    let limited = bad(&server).await.unwrap();
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
    let correct = server
        .authed(Method::GET, "/instances")
        .send()
        .await
        .unwrap();
    assert_eq!(correct.status(), 429);
    assert!(correct.headers().contains_key("retry-after"));
    // ...so is a guessed instance token...
    let token = server
        .get("/instances/1/credentials")
        .header("Authorization", "Element guess")
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 429);
    // ...but the public catalog still answers,
    assert_eq!(
        server.get("/elements/keys").send().await.unwrap().status(),
        200
    );
    // and another client address is not affected.
    let other = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let response = other
        .get(server.url("/instances"))
        .header("Authorization", server.account.header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn the_failed_authentication_burst_flows_from_the_environment() {
    let dir = data_dir();
    let server = Binary::serve(
        &["--data-dir", dir.path().to_str().unwrap()],
        &[("ELEMENTS_AUTH_FAILURE_BURST", "1")],
    );
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let response = client
            .get(server.url("/instances"))
            .header("Authorization", "User a, Organization b")
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
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
    let created = server
        .authed(Method::POST, "/instances")
        .json(&seed_instance_body("at-nostore", "rt-nostore"))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    assert_no_store(&created, "POST /instances");
    let created: Value = created.json().await.unwrap();
    let (id, token) = (
        created["id"].as_i64().unwrap(),
        created["token"].as_str().unwrap().to_owned(),
    );

    let credentials = server
        .get(&format!("/instances/{id}/credentials"))
        .header("Authorization", format!("Element {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(credentials.status(), 200);
    assert_no_store(&credentials, "GET credentials");
    let body: Value = credentials.json().await.unwrap();
    assert_eq!(body["accessToken"], "at-nostore");

    let url = server
        .get(&format!("/elements/hubspot/oauth/url?{SEED_OAUTH_QUERY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(url.status(), 200);
    assert_no_store(&url, "oauth/url");
    server.stop().await;
}

// ---------------------------------------------------------------- 12.13

#[tokio::test]
async fn caller_code_verifiers_must_follow_rfc_7636() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    for bad in ["short", &"a".repeat(129), &format!("{}+/", "a".repeat(50))] {
        let mut body = seed_instance_body("", "");
        body["providerData"] = json!({ "code": "the-code", "code_verifier": bad });
        let (status, answer) = server.post_instance(&server.account, &body).await;
        assert_eq!(status, 400, "{bad}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains("`providerData.code_verifier` must be 43 to 128 characters")
                && message.contains("RFC 7636"),
            "{message}"
        );
        assert!(!message.contains(bad), "the verifier is not echoed");
    }
    // A conforming verifier passes this check (the seed's tokens are used).
    let mut body = seed_instance_body("at-pkce", "rt-pkce");
    body["providerData"]["code_verifier"] = json!("A-._~".repeat(10));
    assert_eq!(server.post_instance(&server.account, &body).await.0, 200);

    let url = server
        .get(&format!(
            "/elements/hubspot/oauth/url?{SEED_OAUTH_QUERY}&codeVerifier=tooshort"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(url.status(), 400);
    let answer: Value = url.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("`codeVerifier` must be 43 to 128"),
        "{answer}"
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

fn shipstation(name: &str) -> Value {
    json!({
        "element": { "key": "shipstation" },
        "configuration": { "api.key": "ss-key-plain", "api.secret": "ss-secret-plain" },
        "name": name
    })
}

#[tokio::test]
async fn configuration_entries_that_hold_keys_are_masked() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let (status, created) = server
        .post_instance(&server.account, &shipstation("ss"))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    assert_eq!(created["configuration"]["api.key"], "********");
    assert_eq!(created["configuration"]["api.secret"], "********");

    let shown: Value = server.fetch(Method::GET, &format!("/instances/{id}")).await;
    let listed: Value = server.fetch(Method::GET, "/instances").await;
    let entries: Value = server
        .fetch(Method::GET, &format!("/instances/{id}/configuration"))
        .await;
    for text in [shown.to_string(), listed.to_string(), entries.to_string()] {
        assert!(
            !text.contains("ss-key-plain") && !text.contains("ss-secret-plain"),
            "{text}"
        );
    }
    assert_eq!(shown["configuration"]["api.key"], "********");
    let key = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "api.key")
        .unwrap();
    assert_eq!(key["propertyValue"], "********");
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
    let a = server.account.clone();
    let (s1, first) = server.post_instance(&a, &shipstation("one")).await;
    let (s2, _) = server.post_instance(&a, &shipstation("two")).await;
    assert_eq!((s1, s2), (200, 200));
    let (status, body) = server.post_instance(&a, &shipstation("three")).await;
    assert_eq!(status, 403);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("already has 2 instances")
            && message.contains("max_instances_per_organization = 2"),
        "{message}"
    );
    // Another organization has its own count.
    let b = server.other_account("other").await;
    assert_eq!(server.post_instance(&b, &shipstation("b")).await.0, 200);
    // Deleting one makes room.
    let id = first["id"].as_i64().unwrap();
    let deleted = server
        .authed(Method::DELETE, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(server.post_instance(&a, &shipstation("three")).await.0, 200);

    let mut entries = shipstation("many");
    entries["configuration"]["a"] = json!("1");
    entries["configuration"]["b"] = json!("2");
    let (status, body) = server.post_instance(&b, &entries).await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 `configuration` entries are allowed (max_configuration_entries)"),
        "{body}"
    );

    let mut big = shipstation("big");
    big["configuration"]["api.secret"] = json!("s".repeat(90));
    let (status, body) = server.post_instance(&b, &big).await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap();
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
    let a = server.account.clone();
    assert_eq!(server.post_instance(&a, &shipstation("one")).await.0, 200);
    let (status, body) = server.post_instance(&a, &shipstation("two")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("max_instances_per_organization = 1"),
        "{body}"
    );
    let b = server.other_account("pg-other").await;
    assert_eq!(server.post_instance(&b, &shipstation("b")).await.0, 200);
    server.stop().await;
}
