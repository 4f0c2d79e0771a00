//! Hardening: key rotation and wrong keys, callback allow-lists, and
//! redacted `Debug` for every type that holds a secret.

mod common;

use std::process::Command;

use common::*;
use elements_core::{Configuration, ProviderRequest, Secret, TokenSet};
use elements_store::{Keyring, Tokens};
use reqwest::Method;
use serde_json::{json, Value};

fn keys_generate() -> String {
    let out = elements(&["keys", "generate"]);
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn serve_with_key(dir: &std::path::Path, key: &str) -> Binary {
    Binary::serve(
        &["--data-dir", dir.to_str().unwrap()],
        &[
            ("ELEMENTS_MASTER_KEY", key),
            ("ELEMENTS_ORGANIZATION_SECRET", "org-rotation"),
            ("ELEMENTS_USER_SECRET", "user-rotation"),
        ],
    )
}

fn serve_fails_with(dir: &std::path::Path, key: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_elements"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env_remove("ELEMENTS_MASTER_KEY")
        .env("ELEMENTS_ORGANIZATION_SECRET", "org-rotation")
        .env("ELEMENTS_USER_SECRET", "user-rotation");
    if let Some(key) = key {
        command.env("ELEMENTS_MASTER_KEY", key);
    }
    let out = command.output().unwrap();
    assert!(!out.status.success(), "the server must refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn access_token(server: &Binary, id: i64, token: &str) -> (u16, Value) {
    credentials(&reqwest::Client::new(), &server.base, id, token).await
}

#[tokio::test]
async fn keys_rotate_and_a_wrong_key_is_refused_at_start() {
    let dir = data_dir();
    let (old, new) = (keys_generate(), keys_generate());
    assert_ne!(old, new);

    // Provision under the old key.
    let server = serve_with_key(dir.path(), &old);
    let created: Value = reqwest::Client::new()
        .post(server.url("/instances"))
        .header(
            "Authorization",
            "User user-rotation, Organization org-rotation",
        )
        .json(&seed_instance_body("at-rotate", "rt-rotate"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (id, token) = (
        created["id"].as_i64().unwrap(),
        created["token"].as_str().unwrap().to_owned(),
    );
    drop(server);

    // A wrong key, or none at all, is a clear error at start-up.
    let err = serve_fails_with(dir.path(), Some(&new));
    assert!(
        err.contains("master key does not match this database"),
        "{err}"
    );
    let err = serve_fails_with(dir.path(), None);
    assert!(
        err.contains("master key does not match") || err.contains("key file"),
        "{err}"
    );

    // New key first, old after it: everything still reads; new writes use the new key.
    let both = format!("{new},{old}");
    let server = serve_with_key(dir.path(), &both);
    assert_eq!(
        access_token(&server, id, &token).await.1["accessToken"],
        "at-rotate"
    );
    drop(server);

    // Rewrap, then the old key can go.
    let db = format!("sqlite://{}", dir.path().join("elements.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_elements"))
        .args(["keys", "rewrap", "--database-url", &db])
        .env("ELEMENTS_MASTER_KEY", &both)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rewrapped"], 1, "{report}");

    let server = serve_with_key(dir.path(), &new);
    assert_eq!(
        access_token(&server, id, &token).await.1["accessToken"],
        "at-rotate"
    );
    drop(server);
    let err = serve_fails_with(dir.path(), Some(&old));
    assert!(
        err.contains("master key does not match this database"),
        "{err}"
    );
}

#[tokio::test]
async fn a_missing_key_file_next_to_a_database_is_refused() {
    let dir = data_dir();
    let server = Binary::serve(&["--data-dir", dir.path().to_str().unwrap()], &[]);
    drop(server);
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let err = serve_fails_with(dir.path(), None);
    assert!(err.contains("key file") && err.contains("missing"), "{err}");
    assert!(
        !dir.path().join("master.key").exists(),
        "no new key was made"
    );
}

#[tokio::test]
async fn organizations_may_restrict_callbacks_to_an_allow_list() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let allowed = "https://app.acme.test/callback";
    let response = server
        .authed(Method::PUT, "/organizations/me/callback-urls")
        .json(&json!([allowed]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let bad = server
        .authed(Method::PUT, "/organizations/me/callback-urls")
        .json(&json!(["javascript:alert(1)"]))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let listed: Vec<String> = server
        .fetch(Method::GET, "/organizations/me/callback-urls")
        .await;
    assert_eq!(listed, [allowed]);

    let url = |cb: &str| {
        format!("/elements/hubspot/oauth/url?apiKey=k&apiSecret=1&scope=s&callbackUrl={cb}")
    };
    // With the organization's credentials the list applies.
    let status = server
        .authed(Method::GET, &url(allowed))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let response = server
        .authed(Method::GET, &url("https://evil.test/cb"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let err: Value = response.json().await.unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("allow-list"),
        "{err}"
    );
    // The seed's anonymous call is unchanged.
    let status = server
        .get(&url("https://evil.test/cb"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    // Provisioning with another callback is refused; with the allowed one it works.
    let mut body = seed_instance_body("at", "rt");
    body["configuration"]["oauth.callback.url"] = json!("https://evil.test/cb");
    let (status, err) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 400, "{err}");
    body["configuration"]["oauth.callback.url"] = json!(allowed);
    let (status, _) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200);
    // Another organization has no list.
    let other = server.other_account("initech").await;
    let mut seed = seed_instance_body("at", "rt");
    seed["configuration"]["oauth.callback.url"] = json!("https://elsewhere.test/cb");
    let (status, _) = server.post_instance(&other, &seed).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[test]
fn debug_of_every_secret_holder_is_redacted() {
    const S: &str = "s3cr3t-value-that-must-not-print";
    let config: Configuration = [("oauth.api.secret", S)].into_iter().collect();
    let tokens = Tokens {
        access_token: Some(Secret::new(S)),
        refresh_token: Some(Secret::new(S)),
        token_type: None,
        expires_at: None,
    };
    let set = TokenSet {
        access_token: Secret::new(S),
        refresh_token: Some(Secret::new(S)),
        token_type: None,
        expires_in: None,
        scope: None,
    };
    let request = ProviderRequest::post("https://x.test").field("client_secret", S);
    let creds = elements_server::auth::parse_authorization(&format!(
        "User {S}, Organization {S}, Element {S}"
    ))
    .unwrap();
    let key = Keyring::encode_key(&Keyring::generate_key());
    let keyring = Keyring::parse(&key).unwrap();
    let key_text = format!("{keyring:?}");
    let body: elements_server::wire::CreateInstance = elements_server::body::parse(
        serde_json::to_vec(&json!({
            "name": "n",
            "element": {"key": "hubspot"},
            "providerData": {"access_token": S, "refresh_token": S, "code": S},
            "configuration": {"oauth.api.secret": S}
        }))
        .unwrap()
        .as_slice(),
    )
    .unwrap();
    let server_config = elements_server::ServerConfig {
        master_key: Some(Secret::new(S)),
        user_secret: Some(Secret::new(S)),
        organization_secret: Some(Secret::new(S)),
        ..Default::default()
    };
    for (what, text) in [
        ("Secret", format!("{:?} {}", Secret::new(S), Secret::new(S))),
        ("Configuration", format!("{config:?}")),
        ("Tokens", format!("{tokens:?}")),
        ("TokenSet", format!("{set:?}")),
        ("ProviderRequest", format!("{request:?}")),
        ("Credentials", format!("{creds:?}")),
        ("CreateInstance", format!("{body:?}")),
        ("ServerConfig", format!("{server_config:?}")),
    ] {
        assert!(!text.contains(S), "{what}: {text}");
        // Field-by-field types show the mask; ProviderRequest shows field names only.
        assert!(
            text.contains("********") || what == "ProviderRequest",
            "{what}: {text}"
        );
    }
    assert!(!key_text.contains(&key), "{key_text}");
}

/// A server still running with the old key writes a row after the rewrap;
/// once the old key is retired, that one row is left out of the list (the
/// others still answer), reading it alone is a server error, and
/// `keys rewrap` names it and exits non-zero until it is fixed.
#[tokio::test]
async fn a_row_stranded_under_a_retired_key_fails_alone() {
    let dir = data_dir();
    let (old, new) = (keys_generate(), keys_generate());
    let both = format!("{new},{old}");
    let db = format!("sqlite://{}", dir.path().join("elements.db").display());
    let client = reqwest::Client::new();
    let auth = "User user-rotation, Organization org-rotation";
    let create = |server: &Binary, access: &str| {
        client
            .post(server.url("/instances"))
            .header("Authorization", auth)
            .json(&seed_instance_body(access, "rt"))
            .send()
    };
    let rewrap = |keys: &str| {
        Command::new(env!("CARGO_BIN_EXE_elements"))
            .args(["keys", "rewrap", "--database-url", &db])
            .env("ELEMENTS_MASTER_KEY", keys)
            .output()
            .unwrap()
    };

    // A replica on the old key keeps running across the rotation.
    let replica = serve_with_key(dir.path(), &old);
    let kept: Value = create(&replica, "at-kept")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let out = rewrap(&both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rewrapped"], 1, "{report}");
    assert_eq!(report["stranded"], json!([]), "{report}");
    let stranded: Value = create(&replica, "at-stranded")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stranded_id = stranded["id"].as_i64().unwrap();
    drop(replica);

    // Retire the old key: the list still answers, without the stranded row.
    let server = serve_with_key(dir.path(), &new);
    let list = client
        .get(server.url("/instances"))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let list: Value = list.json().await.unwrap();
    let listed: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(listed, vec![kept["id"].as_i64().unwrap()]);
    let single = client
        .get(server.url(&format!("/instances/{stranded_id}")))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(single.status(), 500);
    let body = single.text().await.unwrap();
    assert!(!body.contains("at-stranded"), "{body}");
    drop(server);

    // Rewrap without the old key names the row and fails...
    let out = rewrap(&new);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let columns: Vec<(i64, &str)> = report["stranded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            assert_eq!(s["keyInKeyring"], false, "{s}");
            (
                s["instanceId"].as_i64().unwrap(),
                s["column"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        columns,
        vec![
            (stranded_id, "instances.configuration_enc"),
            (stranded_id, "instances.access_token_enc"),
            (stranded_id, "instances.refresh_token_enc"),
        ]
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("3 stored value(s) are still not under the current key"),
        "{stderr}"
    );
    // ...with the old key back it succeeds, and the row reads again.
    let out = rewrap(&both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rewrapped"], 1, "{report}");
    let server = serve_with_key(dir.path(), &new);
    assert_eq!(
        access_token(&server, stranded_id, stranded["token"].as_str().unwrap())
            .await
            .1["accessToken"],
        "at-stranded"
    );
}
