//! Operations: secret and token rotation (API and CLI), the environment
//! account whose secrets changed, `/metrics` (series that move exactly with
//! the requests driven, nothing secret in them, its own listener),
//! `/healthz` and `/readyz` (over a PostgreSQL cluster that is stopped and
//! started again), the progress lines of `keys rewrap`, console sessions
//! that survive a restart (a key derived from the master key), and a
//! SIGTERM as soon as the address is printed stopping the server gracefully.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use common::*;
use elements_client::{Client, CreateInstance, ListInstances, ProviderData, Secret};
use elements_store::Keyring;
use elements_testkit::pg::PgCluster;
use elements_testkit::provider::FakeProvider;
use reqwest::Method;
use serde_json::{json, Value};

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

// ------------------------------------------------------------- rotation

/// The status of `GET /instances` through `client`.
async fn list_status(client: &Client) -> u16 {
    match client.instances(&ListInstances::new()).await {
        Ok(_) => 200,
        Err(e) => e.status().expect("the server answered").as_u16(),
    }
}

/// The status of `GET /instances/{id}/credentials` with the `Element` token.
async fn credentials_status(base: &str, id: i64, token: &Secret) -> u16 {
    let client = Client::new(base).unwrap().with_element(token.clone());
    match client.credentials(id).await {
        Ok(_) => 200,
        Err(e) => e.status().expect("the server answered").as_u16(),
    }
}

#[tokio::test]
async fn rotated_secrets_and_tokens_stop_working_at_once() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let old = server.api();
    assert_eq!(list_status(&old).await, 200);

    // The organization secret.
    let org = old.rotate_organization_secret().await.unwrap();
    assert_eq!(org.expose().len(), 43, "32 random bytes, base64url");
    assert_ne!(org.expose(), server.account.organization_secret);
    assert_eq!(list_status(&old).await, 401, "the old organization secret");
    let after_org = server
        .anonymous()
        .with_account(&server.account.user_secret, org.clone());
    assert_eq!(list_status(&after_org).await, 200, "the new one");

    // The user secret.
    let user = after_org.rotate_user_secret().await.unwrap();
    assert_eq!(list_status(&after_org).await, 401, "the old user secret");
    let now = server.anonymous().with_account(user.clone(), org);
    assert_eq!(list_status(&now).await, 200);

    // An instance token.
    let created = now
        .create_instance(&seed_instance("at-1", "rt-1"))
        .await
        .unwrap();
    let id = created.id;
    let old_token = created.token.unwrap();
    assert_eq!(credentials_status(&server.base, id, &old_token).await, 200);
    let token = now.rotate_instance_token(id).await.unwrap();
    assert_ne!(token, old_token);
    assert_eq!(
        credentials_status(&server.base, id, &old_token).await,
        401,
        "the old instance token"
    );
    let creds = server
        .anonymous()
        .with_element(token.clone())
        .credentials(id)
        .await
        .unwrap();
    assert_eq!(creds.access_token.unwrap().expose(), "at-1");

    // Another organization cannot rotate this instance's token: a 404.
    let other = server.other_account("other").await.client(&server.base);
    let err = refused(other.rotate_instance_token(id).await);
    assert_eq!(err.status, 404);
    assert_eq!(
        credentials_status(&server.base, id, &token).await,
        200,
        "the token is unchanged"
    );

    // Every rotation answer is `Cache-Control: no-store` (raw through the
    // client's escape hatch: the header is what is asserted). Each answer's
    // value is what the next call needs.
    let rotate = |client: Client, path: String| async move {
        let rotated = client.request(Method::POST, &path).send().await.unwrap();
        assert_eq!(rotated.status(), 200, "{path}");
        assert_eq!(rotated.headers()["cache-control"], "no-store", "{path}");
        let body: Value = rotated.json().await.unwrap();
        let field = if path.starts_with("/instances") {
            "token"
        } else {
            "secret"
        };
        let value = body[field].as_str().unwrap().to_owned();
        assert_eq!(value.len(), 43, "{path}");
        value
    };
    rotate(now.clone(), format!("/instances/{id}/token/rotate")).await;
    let org = rotate(now, "/organizations/me/secret/rotate".to_owned()).await;
    let after = server.anonymous().with_account(user, org);
    rotate(after, "/users/me/secret/rotate".to_owned()).await;
    server.stop().await;
}

/// `elements serve` with its output captured, to see it refuse to start.
fn serve_output(dir: &std::path::Path, key: &str, org: &str, user: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elements"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("ELEMENTS_LOG", "warn")
        .env("ELEMENTS_MASTER_KEY", key)
        .env("ELEMENTS_ORGANIZATION_SECRET", org)
        .env("ELEMENTS_USER_SECRET", user)
        .env_remove("ELEMENTS_DATABASE_URL")
        .output()
        .unwrap()
}

fn cli_in(dir: &std::path::Path, key: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_elements"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("ELEMENTS_LOG", "warn")
        .env("ELEMENTS_MASTER_KEY", key)
        .env_remove("ELEMENTS_DATABASE_URL")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_changed_environment_secret_refuses_to_start_and_the_cli_rotates() {
    let dir = data_dir();
    let data = dir.path().to_str().unwrap();
    let key = Keyring::encode_key(&Keyring::generate_key());
    let (org, user) = (
        format!("org-{}", random_hex()),
        format!("user-{}", random_hex()),
    );
    let envs = |org: &str, user: &str| {
        vec![
            ("ELEMENTS_MASTER_KEY".to_owned(), key.clone()),
            ("ELEMENTS_ORGANIZATION_SECRET".to_owned(), org.to_owned()),
            ("ELEMENTS_USER_SECRET".to_owned(), user.to_owned()),
        ]
    };
    let start = |org: &str, user: &str| {
        let envs = envs(org, user);
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Binary::serve(&["--data-dir", data], &envs)
    };
    let status_with = |base: String, org: String, user: String| async move {
        list_status(&Client::new(base).unwrap().with_account(user, org)).await
    };

    // First start: the account is created from the environment.
    let mut server = start(&org, &user);
    assert_eq!(
        status_with(server.base.clone(), org.clone(), user.clone()).await,
        200
    );
    let created = Client::new(&server.base)
        .unwrap()
        .with_account(&user, &org)
        .create_instance(&seed_instance("at-cli", "rt-cli"))
        .await
        .unwrap();
    let instance = created.id;
    let old_token = created.token.unwrap();
    assert!(server.terminate().success());

    // A changed organization secret: refused, naming the account; no second
    // account is created.
    let changed = format!("org-{}", random_hex());
    let out = serve_output(dir.path(), &key, &changed, &user);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "ELEMENTS_ORGANIZATION_SECRET/ELEMENTS_USER_SECRET do not open the account they \
             created (organization 1): they were changed, or the account's secrets were rotated"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("elements accounts rotate --organization 1"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&changed) && !stderr.contains(&user),
        "no secret in the message"
    );

    // The CLI rotates the organization secret: the new one starts the
    // server, the old one is refused by it.
    let out = cli_in(
        dir.path(),
        &key,
        &["accounts", "rotate", "--organization", "1"],
    );
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["organization"]["id"], 1);
    let new_org = printed["organization"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = serve_output(dir.path(), &key, &org, &user);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the old secret no longer opens it"
    );
    let mut server = start(&new_org, &user);
    assert_eq!(
        status_with(server.base.clone(), new_org.clone(), user.clone()).await,
        200
    );
    assert_eq!(
        status_with(server.base.clone(), org.clone(), user.clone()).await,
        401
    );

    // The CLI rotates a user secret and an instance token while the server
    // runs: the old values stop working within the server's check of the
    // SQLite file for other processes' commits (every 20 ms at most; the
    // documented bound for another process is 1 s, which this waits at most).
    let out = cli_in(dir.path(), &key, &["accounts", "rotate", "--user", "1"]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["user"]["id"], 1);
    let new_user = printed["user"]["secret"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut old_user_status = status_with(server.base.clone(), new_org.clone(), user.clone()).await;
    while old_user_status != 401 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        old_user_status = status_with(server.base.clone(), new_org.clone(), user.clone()).await;
    }
    assert_eq!(
        old_user_status, 401,
        "the old user secret still works after 1 s"
    );
    assert_eq!(
        status_with(server.base.clone(), new_org.clone(), new_user.clone()).await,
        200
    );
    let out = cli_in(
        dir.path(),
        &key,
        &["instances", "rotate-token", &instance.to_string()],
    );
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["id"], instance);
    let token = Secret::new(printed["token"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut old_token_status = credentials_status(&server.base, instance, &old_token).await;
    while old_token_status != 401 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        old_token_status = credentials_status(&server.base, instance, &old_token).await;
    }
    assert_eq!(old_token_status, 401, "the old token still works after 1 s");
    assert_eq!(
        credentials_status(&server.base, instance, &token).await,
        200
    );

    // Unknown ids and a missing choice are errors naming the problem.
    let out = cli_in(
        dir.path(),
        &key,
        &["accounts", "rotate", "--organization", "99"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no organization with id 99"));
    let out = cli_in(dir.path(), &key, &["instances", "rotate-token", "99"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no instance with id 99"));
    let out = cli_in(dir.path(), &key, &["accounts", "rotate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--organization <ORGANIZATION>|--user <USER>"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server.terminate().success());
}

// -------------------------------------------------------------- metrics

/// The samples of a Prometheus text page: series (name and labels as
/// printed) to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

async fn scrape(client: &reqwest::Client, url: &str) -> (String, BTreeMap<String, f64>) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    let s = samples(&text);
    (text, s)
}

fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    s.get(series).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_count_requests_by_route_provider_calls_and_refreshes() {
    let fake = FakeProvider::start().await;
    let (client_id, client_secret) = (format!("client-{}", random_hex()), random_hex());
    fake.add_client(&client_id, &client_secret);
    let dir = data_dir();
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        format!(
            "refresh_margin_seconds = 1000000\nrefresh_interval_seconds = 3600\n\
             [elements.hubspot.oauth]\ntoken_url = \"{}\"\nrefresh_url = \"{}\"\n",
            fake.token_url(),
            fake.legacy_refresh_url()
        ),
    )
    .unwrap();
    let key = Keyring::encode_key(&Keyring::generate_key());
    let (org, user) = (
        format!("org-{}", random_hex()),
        format!("user-{}", random_hex()),
    );
    let server = Binary::serve(
        &[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
        &[
            ("ELEMENTS_MASTER_KEY", &key),
            ("ELEMENTS_ORGANIZATION_SECRET", &org),
            ("ELEMENTS_USER_SECRET", &user),
        ],
    );
    let client = reqwest::Client::new();
    let anonymous = Client::new(&server.base).unwrap();
    let metrics = format!("{}/metrics", server.base);
    // The typed scrape first; the raw one below asserts the headers.
    let before = samples(&anonymous.metrics().await.unwrap());
    let show = r#"elements_http_requests_total{method="GET",route="/elements/api-v2/elements/{key_or_id}",status="200"}"#;
    let unknown = r#"elements_http_requests_total{method="GET",route="/elements/api-v2/elements/{key_or_id}",status="404"}"#;
    let unmatched = r#"elements_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    let durations = r#"elements_http_request_duration_seconds_count{method="GET",route="/elements/api-v2/elements/{key_or_id}"}"#;
    for _ in 0..3 {
        assert_eq!(anonymous.element("hubspot").await.unwrap().metadata.id, 43);
    }
    let err = refused(anonymous.element("nope").await);
    assert_eq!(err.status, 404);
    // Raw: paths and methods the API does not have (malformed on purpose).
    for path in ["/no/such/path", "/elements/api-v2/secret-in-path-xyz"] {
        let r = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
    }

    // Made-up methods share one series.
    for method in ["XYZZY1", "XYZZY2"] {
        let r = client
            .request(
                Method::from_bytes(method.as_bytes()).unwrap(),
                server.url("/elements/hubspot"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405);
    }

    // An instance from tokens, read with a margin that refreshes every read.
    let (access, refresh) = fake.issue_tokens(&client_id);
    let created = anonymous
        .clone()
        .with_account(&user, &org)
        .create_instance(
            &CreateInstance::new("hubspot", "metered")
                .provider_data(ProviderData::tokens(&access, &refresh).expires_in("1800"))
                .configuration("oauth.api.key", &client_id)
                .configuration("oauth.api.secret", &client_secret)
                .configuration("oauth.callback.url", "https://app.test/callback")
                .configuration("oauth.scope", "contacts"),
        )
        .await
        .unwrap();
    let id = created.id;
    let token = created.token.unwrap().into_inner();
    let scoped = anonymous.clone().with_element(&token);
    let creds = scoped.credentials(id).await.unwrap();
    let refreshed = creds.access_token.unwrap().into_inner();
    assert_ne!(refreshed, access, "refreshed on read");
    fake.fail_next(1, 503);
    let served = scoped.credentials(id).await;
    assert!(
        served.is_ok(),
        "a transient failure serves the stored token: {served:?}"
    );
    fake.invalid_grant_next(1);
    let served = scoped.credentials(id).await;
    assert!(
        served.is_ok(),
        "the stored token while it lasts: {served:?}"
    );

    let (text, after) = scrape(&client, &metrics).await;
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved(show), 3.0, "{text}");
    assert_eq!(moved(unknown), 1.0, "{text}");
    assert_eq!(moved(unmatched), 2.0, "{text}");
    assert_eq!(moved(durations), 4.0, "{text}");
    assert_eq!(
        moved(
            r#"elements_http_requests_total{method="other",route="/elements/api-v2/elements/{key_or_id}",status="405"}"#
        ),
        2.0,
        "{text}"
    );
    assert!(!text.contains("XYZZY"), "{text}");
    assert_eq!(
        moved(
            r#"elements_http_requests_total{method="POST",route="/elements/api-v2/instances",status="200"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(r#"elements_token_refreshes_total{outcome="ok"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(r#"elements_token_refreshes_total{outcome="transient"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(r#"elements_token_refreshes_total{outcome="invalid"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(r#"elements_provider_requests_total{element="hubspot",outcome="ok"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        moved(r#"elements_provider_requests_total{element="hubspot",outcome="status"}"#),
        2.0,
        "503 and invalid_grant: {text}"
    );
    assert_eq!(
        moved(
            r#"elements_provider_request_duration_seconds_count{element="hubspot",outcome="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        value(&after, r#"elements_instances{state="invalid"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&after, r#"elements_instances{state="valid"}"#),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(&after, r#"elements_instances{state="disabled"}"#),
        0.0,
        "{text}"
    );
    assert!(
        value(&after, r#"elements_store_pool_connections{state="open"}"#) >= 1.0,
        "{text}"
    );
    assert!(
        text.contains("elements_store_scrape_query_seconds "),
        "{text}"
    );

    // Nothing secret, no raw path, no organization.
    for secret in [
        &key,
        &org,
        &user,
        &token,
        &access,
        &refresh,
        &refreshed,
        &client_secret,
    ] {
        assert!(!text.contains(secret.as_str()), "a secret in /metrics");
    }
    assert!(!text.contains("secret-in-path-xyz") && !text.contains("/elements/hubspot\""));
    assert!(!text.contains("organization"), "{text}");

    // The probes.
    let health = anonymous.healthz().await.unwrap();
    assert_eq!(to_json(&health), json!({"status": "ok", "checks": {}}));
    assert!(health.is_ready());
    let ready = anonymous.readyz().await.unwrap();
    assert_eq!(
        to_json(&ready),
        json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok", "key": "ok"}})
    );
    drop(server);
    fake.shutdown().await;
}

#[tokio::test]
async fn metrics_listen_moves_metrics_off_the_main_listener() {
    let dir = data_dir();
    let key = Keyring::encode_key(&Keyring::generate_key());
    let mut child = Command::new(env!("CARGO_BIN_EXE_elements"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("ELEMENTS_METRICS_LISTEN", "127.0.0.1:0")
        .env("ELEMENTS_MASTER_KEY", &key)
        .env("ELEMENTS_LOG", "warn")
        .env_remove("ELEMENTS_ORGANIZATION_SECRET")
        .env_remove("ELEMENTS_USER_SECRET")
        .env_remove("ELEMENTS_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut main, mut metrics) = (None, None);
    while main.is_none() {
        let line = lines
            .next()
            .expect("the server printed its addresses")
            .unwrap();
        if let Some(a) = line.strip_prefix("listening on ") {
            main = Some(a.trim().to_owned());
        } else if let Some(a) = line.strip_prefix("metrics on ") {
            metrics = Some(a.trim().to_owned());
        }
    }
    let (main, metrics) = (
        main.unwrap(),
        metrics.expect("metrics printed before the main address"),
    );
    assert!(metrics.ends_with("/metrics"), "{metrics}");
    let client = reqwest::Client::new();
    let on_main = Client::new(&main).unwrap();
    assert_eq!(
        on_main.element("hubspot").await.unwrap().metadata.key,
        "hubspot"
    );
    let err = refused(on_main.metrics().await);
    assert_eq!(err.status, 404, "not on the main listener");
    let (text, s) = scrape(&client, &metrics).await;
    assert!(
        value(
            &s,
            r#"elements_http_requests_total{method="GET",route="/elements/api-v2/elements/{key_or_id}",status="200"}"#
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &s,
            r#"elements_http_requests_total{method="GET",route="unmatched",status="404"}"#
        ),
        1.0,
        "the 404 for /metrics on the main listener: {text}"
    );
    let base = metrics.trim_end_matches("/metrics");
    let on_metrics = Client::new(base).unwrap();
    assert!(
        on_metrics.readyz().await.unwrap().is_ready(),
        "the probes are on the metrics listener too"
    );
    assert!(
        on_main.readyz().await.unwrap().is_ready(),
        "and on the main one"
    );
    let _ = child.kill();
    let _ = child.wait();
}

// ------------------------------------------------------------ readiness

#[tokio::test]
async fn readyz_fails_while_the_database_is_down_and_recovers() {
    let pg = PgCluster::start().expect("postgres (run scripts/setup.sh)");
    let url = pg.create_database("ops_ready").unwrap();
    let key = Keyring::encode_key(&Keyring::generate_key());
    let server = Binary::serve(
        &["--database-url", &url],
        &[
            ("ELEMENTS_MASTER_KEY", &key),
            ("ELEMENTS_ORGANIZATION_SECRET", "o"),
            ("ELEMENTS_USER_SECRET", "u"),
        ],
    );
    let client = reqwest::Client::new();
    let api = Client::new(&server.base).unwrap();
    let readyz = format!("{}/readyz", server.base);
    assert_eq!(api.readyz().await.unwrap().status, "ready");

    pg.stop_server().unwrap();
    let typed = api.readyz().await.unwrap();
    assert!(!typed.is_ready());
    assert!(
        typed
            .message
            .as_deref()
            .unwrap()
            .starts_with("not ready: database: "),
        "{typed:?}"
    );
    assert_eq!(typed.checks["key"], "not checked");
    // Raw: the header of the 503 is asserted.
    let down = client.get(&readyz).send().await.unwrap();
    assert_eq!(down.status(), 503);
    assert_eq!(down.headers()["cache-control"], "no-store");
    let body: Value = down.json().await.unwrap();
    assert_eq!(body["status"], "not ready");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("not ready: database: "),
        "{body}"
    );
    assert_ne!(body["checks"]["database"], "ok", "{body}");
    assert_eq!(body["checks"]["key"], "not checked", "{body}");
    assert!(!body.to_string().contains(&key));
    let health = api.healthz().await.unwrap();
    assert_eq!(health.status, "ok", "the process itself is up");

    pg.start_server().unwrap();
    // The pool reconnects on its next use; a few tries at most.
    let mut ready = false;
    for _ in 0..20 {
        ready = api.readyz().await.unwrap().is_ready();
        if ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert!(ready, "ready again once the database is back");
    drop(server);
}

// ------------------------------------------------------------- progress

#[tokio::test]
async fn keys_rewrap_reports_progress_as_plain_lines_off_a_terminal() {
    let dir = data_dir();
    let data = dir.path().to_str().unwrap();
    let old = Keyring::encode_key(&Keyring::generate_key());
    let mut server = Binary::serve(
        &["--data-dir", data],
        &[
            ("ELEMENTS_MASTER_KEY", &old),
            ("ELEMENTS_ORGANIZATION_SECRET", "o"),
            ("ELEMENTS_USER_SECRET", "u"),
        ],
    );
    let api = Client::new(&server.base).unwrap().with_account("u", "o");
    for i in 0..3 {
        api.create_instance(&seed_instance(&format!("at-{i}"), &format!("rt-{i}")))
            .await
            .unwrap();
    }
    assert!(server.terminate().success());

    let new = Keyring::encode_key(&Keyring::generate_key());
    let out = Command::new(env!("CARGO_BIN_EXE_elements"))
        .args(["keys", "rewrap", "--data-dir", data])
        .env("ELEMENTS_MASTER_KEY", format!("{new},{old}"))
        .env("ELEMENTS_LOG", "warn")
        .env_remove("ELEMENTS_DATABASE_URL")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("rewrap: "))
        .collect();
    assert_eq!(
        lines,
        [
            "rewrap: 1/3 rows",
            "rewrap: 2/3 rows",
            "rewrap: 3/3 rows, done"
        ],
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no terminal escapes off a terminal"
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rewrapped"], 3);
}

// -------------------------------------------------------------- console

#[tokio::test]
async fn console_sessions_survive_a_restart_under_the_same_master_key() {
    let dir = data_dir();
    let data = dir.path().to_str().unwrap();
    let envs = [
        ("ELEMENTS_ORGANIZATION_SECRET", "o"),
        ("ELEMENTS_USER_SECRET", "u"),
    ];
    let args = ["--data-dir", data, "--console-session-seconds", "600"];
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let csrf_in = |html: &str| {
        regex::Regex::new(r#"name="csrf" value="([A-Za-z0-9_-]+)""#)
            .unwrap()
            .captures(html)
            .expect("a CSRF field")[1]
            .to_owned()
    };
    let cookie_of = |r: &reqwest::Response| {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|v| v.starts_with("elements_console="))
            .expect("a session cookie")
    };

    // The key file is created by the first start.
    let mut first = Binary::serve(&args, &envs);
    let form = http
        .get(format!("{}/console/login", first.base))
        .send()
        .await
        .unwrap();
    let anonymous = cookie_of(&form).split(';').next().unwrap().to_owned();
    let csrf = csrf_in(&form.text().await.unwrap());
    let signed_in = http
        .post(format!("{}/console/login", first.base))
        .header("cookie", &anonymous)
        .form(&[
            ("csrf", csrf.as_str()),
            ("organization_secret", "o"),
            ("user_secret", "u"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = cookie_of(&signed_in).split(';').next().unwrap().to_owned();
    assert!(first.terminate().success());

    let second = Binary::serve(&args, &envs);
    let page = http
        .get(format!("{}/console/instances", second.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the session outlives the process");
    drop(second);

    // Another master key (another deployment) does not accept it.
    let other = data_dir();
    let third = Binary::serve(&["--data-dir", other.path().to_str().unwrap()], &envs);
    let page = http
        .get(format!("{}/console/instances", third.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
}

#[test]
fn derived_keys_are_stable_per_master_key_and_distinct_per_label() {
    let raw = Keyring::generate_key();
    let a = Keyring::new(vec![raw]).unwrap();
    let again = Keyring::new(vec![raw]).unwrap();
    let other = Keyring::new(vec![Keyring::generate_key()]).unwrap();
    let label = elements_server::startup::CONSOLE_KEY_LABEL;
    assert_eq!(a.derive(label), again.derive(label));
    assert_ne!(a.derive(label), a.derive("another purpose"));
    assert_ne!(a.derive(label), other.derive(label));
    assert_ne!(a.derive(label), raw, "not the master key itself");
    // Only the encrypting (first) key counts: retired keys listed after it
    // change nothing (a new key put first ends the sessions: one sign-in).
    let rotated = Keyring::new(vec![raw, Keyring::generate_key()]).unwrap();
    assert_eq!(a.derive(label), rotated.derive(label));
}

/// A SIGTERM sent the moment the server prints its address stops it
/// gracefully (exit status 0, "shutting down" logged): the signal is
/// caught from before the address is printed, not from when the serving
/// loop first looks at it (a CI run once saw the server killed by a
/// SIGTERM sent right after its first request).
#[test]
fn a_sigterm_as_soon_as_the_address_is_printed_stops_gracefully() {
    for _ in 0..3 {
        let mut logged = Binary::serve_with_log_file(&[("ELEMENTS_LOG", "info")]);
        let status = logged.server.terminate();
        let log = logged.log();
        assert!(status.success(), "{status}: {log}");
        assert!(log.contains("shutting down"), "{log}");
    }
}
