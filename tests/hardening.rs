//! Hardening: key rotation and wrong keys, callback allow-lists, and
//! redacted `Debug` for every type that holds a secret.

mod common;

use std::process::Command;

use common::*;
use elements_client::{Client, OAuthUrlRequest};
use elements_core::{Configuration, ProviderRequest, Secret, TokenSet};
use elements_store::{Keyring, Tokens};
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

/// The environment's account on `server`, typed.
fn api(server: &Binary) -> Client {
    Client::new(&server.base)
        .expect("base URL")
        .with_account("user-rotation", "org-rotation")
}

/// The access token `/credentials` answers for `id` with its `Element` token.
async fn access_token(server: &Binary, id: i64, token: &str) -> String {
    Client::new(&server.base)
        .expect("base URL")
        .with_element(token)
        .credentials(id)
        .await
        .unwrap_or_else(|e| panic!("credentials of {id}: {e}"))
        .access_token
        .expect("an access token")
        .into_inner()
}

#[tokio::test]
async fn keys_rotate_and_a_wrong_key_is_refused_at_start() {
    let dir = data_dir();
    let (old, new) = (keys_generate(), keys_generate());
    assert_ne!(old, new);

    // Provision under the old key.
    let server = serve_with_key(dir.path(), &old);
    let created = api(&server)
        .create_instance(&seed_instance("at-rotate", "rt-rotate"))
        .await
        .unwrap();
    let (id, token) = (created.id, created.token.unwrap().into_inner());
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
    assert_eq!(access_token(&server, id, &token).await, "at-rotate");
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
    assert_eq!(access_token(&server, id, &token).await, "at-rotate");
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
    let api = server.api();
    let allowed = "https://app.acme.test/callback";
    let url = |cb: &str| {
        OAuthUrlRequest::new()
            .api_key("k")
            .api_secret("1")
            .scope("s")
            .callback_url(cb)
    };
    // No list yet: any callback (and the organization's empty list is now
    // cached by this replica).
    api.oauth_url("hubspot", &url("https://evil.test/cb"))
        .await
        .unwrap();
    assert_eq!(
        api.set_callback_urls(&[allowed.to_owned()]).await.unwrap(),
        [allowed]
    );
    let bad = refused(
        api.set_callback_urls(&["javascript:alert(1)".to_owned()])
            .await,
    );
    assert_eq!(bad.status, 400, "{bad}");
    assert_eq!(api.callback_urls().await.unwrap(), [allowed]);

    // With the organization's credentials the list applies, at once.
    api.oauth_url("hubspot", &url(allowed)).await.unwrap();
    let err = refused(api.oauth_url("hubspot", &url("https://evil.test/cb")).await);
    assert_eq!(err.status, 400, "{err}");
    assert!(err.message().contains("allow-list"), "{err}");
    // The seed's anonymous call is unchanged.
    server
        .anonymous()
        .oauth_url("hubspot", &url("https://evil.test/cb"))
        .await
        .unwrap();
    // Provisioning with another callback is refused; with the allowed one it works.
    let body = seed_instance("at", "rt");
    let err = refused(
        api.create_instance(
            &body
                .clone()
                .configuration("oauth.callback.url", "https://evil.test/cb"),
        )
        .await,
    );
    assert_eq!(err.status, 400, "{err}");
    assert!(err.message().contains("allow-list"), "{err}");
    api.create_instance(&body.clone().configuration("oauth.callback.url", allowed))
        .await
        .unwrap();
    // Another organization has no list.
    let other = server.other_account("initech").await.client(&server.base);
    other
        .create_instance(&body.configuration("oauth.callback.url", "https://elsewhere.test/cb"))
        .await
        .unwrap();
    // Emptying the list lifts it at once.
    assert!(api.set_callback_urls(&[]).await.unwrap().is_empty());
    api.oauth_url("hubspot", &url("https://evil.test/cb"))
        .await
        .unwrap();
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
    let create = |server: &Binary, access: &str| {
        let api = api(server);
        let body = seed_instance(access, "rt");
        async move { api.create_instance(&body).await.unwrap() }
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
    let kept = create(&replica, "at-kept").await;
    let out = rewrap(&both);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rewrapped"], 1, "{report}");
    assert_eq!(report["stranded"], json!([]), "{report}");
    let stranded = create(&replica, "at-stranded").await;
    let stranded_id = stranded.id;
    drop(replica);

    // Retire the old key: the list still answers, without the stranded row.
    let server = serve_with_key(dir.path(), &new);
    let list = api(&server)
        .instances(&elements_client::ListInstances::new())
        .await
        .unwrap();
    let listed: Vec<i64> = list.items.iter().map(|i| i.id).collect();
    assert_eq!(listed, vec![kept.id]);
    // The whole body of the 500 (`ApiError::raw`, fields the typed error
    // does not know too) is searched for the token.
    let err = refused(api(&server).instance(stranded_id).await);
    assert_eq!(err.status, 500);
    let body = err.raw();
    assert!(!body.contains("at-stranded"), "{body}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["message"], "internal error", "{body}");
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
    let token = stranded.token.expect("the token, once");
    assert_eq!(
        access_token(&server, stranded_id, token.expose()).await,
        "at-stranded"
    );
}
