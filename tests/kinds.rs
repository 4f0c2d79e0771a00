//! Credential kinds end to end (issue 13): for each kind, `POST /instances`
//! and `GET /instances/{id}/credentials` against a real server; the
//! client credentials kind against the fake provider's token endpoint.

mod common;

use std::time::Duration;

use common::*;
use elements_core::{oauth1_authorization, OAuth1Request, OAuthOverride, Secret};
use elements_testkit::provider::FakeProvider;
use reqwest::Method;
use serde_json::{json, Value};

/// A server whose `auth0-management` token endpoint is the fake provider's.
async fn start(fake: &FakeProvider) -> (tempfile::TempDir, TestServer) {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.overrides.insert(
        "auth0-management".into(),
        OAuthOverride {
            token_url: Some(fake.token_url()),
            ..Default::default()
        },
    );
    let server = TestServer::start(config).await;
    (dir, server)
}

fn body(element: &str, configuration: Value, provider_data: Option<Value>) -> Value {
    let mut b = json!({
        "element": { "key": element },
        "name": format!("{element} instance"),
        "configuration": configuration,
    });
    if let Some(pd) = provider_data {
        b["providerData"] = pd;
    }
    b
}

/// Creates an instance; (id, instance token).
async fn create(server: &TestServer, body: &Value) -> (i64, String) {
    let (status, created) = server.post_instance(&server.account, body).await;
    assert_eq!(status, 200, "{created}");
    (
        created["id"].as_i64().unwrap(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

async fn creds(server: &TestServer, id: i64, token: &str) -> Value {
    let (status, body) = credentials(&server.client, &server.base, id, token).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn cc_config() -> Value {
    json!({
        "tenant": "acme",
        "oauth.api.key": "test-client",
        "oauth.api.secret": "test-secret",
    })
}

#[tokio::test]
async fn client_credentials_obtains_at_creation_and_renews_once_under_concurrency() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token) = create(&server, &body("auth0-management", cc_config(), None)).await;
    assert_eq!(fake.client_credentials_grants(), 1);

    let first = creds(&server, id, &token).await;
    assert_eq!(first["kind"], "oauth2_client_credentials");
    let access = first["accessToken"].as_str().unwrap().to_owned();
    assert!(fake.is_access_token_valid(&access));
    assert_eq!(first["tokenType"], "bearer");
    assert!(first["expiresIn"].as_i64().unwrap() > 600, "{first}");
    assert_eq!(
        first["headers"],
        json!({ "Authorization": format!("Bearer {access}") })
    );
    assert_eq!(first["query"], json!({}));
    // A fresh token is served without a provider call.
    assert_eq!(fake.client_credentials_grants(), 1);

    // Expired: 50 concurrent readers cause exactly one new grant.
    expire(server.state.store.as_ref(), id).await;
    let reads = (0..50).map(|_| {
        let (client, base, token) = (server.client.clone(), server.base.clone(), token.clone());
        tokio::spawn(async move { credentials(&client, &base, id, &token).await })
    });
    let mut renewed = Vec::new();
    for read in reads {
        let (status, body) = read.await.unwrap();
        assert_eq!(status, 200, "{body}");
        renewed.push(body["accessToken"].as_str().unwrap().to_owned());
    }
    assert_eq!(fake.client_credentials_grants(), 2);
    assert_eq!(fake.refresh_calls(), 0);
    assert!(renewed.iter().all(|t| t == &renewed[0]));
    assert_ne!(renewed[0], access);
    server.stop().await;
}

#[tokio::test]
async fn the_background_refresher_renews_client_credentials_tokens() {
    let fake = FakeProvider::start().await;
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.overrides.insert(
        "auth0-management".into(),
        OAuthOverride {
            token_url: Some(fake.token_url()),
            ..Default::default()
        },
    );
    config.refresh_interval = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    let (id, token) = create(&server, &body("auth0-management", cc_config(), None)).await;
    expire(server.state.store.as_ref(), id).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let background = tokio::spawn(
        server
            .state
            .tokens
            .clone()
            .run_background(Duration::from_millis(100), stopped),
    );
    let mut renewed = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if fake.client_credentials_grants() >= 2 {
            renewed = true;
            break;
        }
    }
    stop.send(true).unwrap();
    background.await.unwrap();
    assert!(renewed, "the background refresher made no new grant");
    assert_eq!(fake.client_credentials_grants(), 2);
    // The reader gets the renewed token without a further grant.
    let after = creds(&server, id, &token).await;
    assert!(after["expiresIn"].as_i64().unwrap() > 600, "{after}");
    assert_eq!(fake.client_credentials_grants(), 2);
    server.stop().await;
}

#[tokio::test]
async fn client_credentials_refusals_are_clear() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    // No providerData is needed, and a code is refused.
    let with_code = body(
        "auth0-management",
        cc_config(),
        Some(json!({ "code": "abc" })),
    );
    let (status, err) = server.post_instance(&server.account, &with_code).await;
    assert_eq!(status, 400);
    assert_eq!(
        err["message"],
        "element `auth0-management` uses `oauth2_client_credentials` credentials: \
         `providerData.code` is not accepted (the server obtains the token itself)"
    );
    // Missing configuration lists the keys.
    let (status, err) = server
        .post_instance(&server.account, &body("auth0-management", json!({}), None))
        .await;
    assert_eq!(status, 400, "{err}");
    let message = err["message"].as_str().unwrap();
    for key in ["tenant", "oauth.api.key", "oauth.api.secret"] {
        assert!(message.contains(key), "{message}");
    }
    // A wrong client secret: the provider's refusal, no instance.
    let mut wrong = cc_config();
    wrong["oauth.api.secret"] = json!("nope");
    let (status, err) = server
        .post_instance(&server.account, &body("auth0-management", wrong, None))
        .await;
    assert!((400..500).contains(&status), "{status} {err}");
    assert!(!err.to_string().contains("nope"), "{err}");
    let list: Vec<Value> = server.fetch(Method::GET, "/instances").await;
    assert!(list.is_empty(), "{list:?}");
    server.stop().await;
}

#[tokio::test]
async fn apikey_and_basic_produce_exactly_the_declared_headers_and_query() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;

    // Header with a prefix (SendGrid).
    let (id, token) = create(
        &server,
        &body("sendgrid", json!({ "api.key": "SG.k1" }), None),
    )
    .await;
    assert_eq!(
        creds(&server, id, &token).await,
        json!({
            "instanceId": id, "kind": "apikey",
            "headers": { "Authorization": "Bearer SG.k1" }, "query": {}
        })
    );

    // A bare header (BigCommerce).
    let (id, token) = create(
        &server,
        &body(
            "bigcommerce",
            json!({ "store_hash": "abc", "api.token": "bc-t" }),
            None,
        ),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(c["headers"], json!({ "X-Auth-Token": "bc-t" }));
    assert_eq!(c["query"], json!({}));

    // Query parameters (Trello).
    let (id, token) = create(
        &server,
        &body(
            "trello",
            json!({ "api.key": "tk", "api.token": "tt" }),
            None,
        ),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(c["kind"], "apikey");
    assert_eq!(c["headers"], json!({}));
    assert_eq!(c["query"], json!({ "key": "tk", "token": "tt" }));

    // HTTP Basic, key as user name and an empty password (Chargebee):
    // base64("ck_live:").
    let (id, token) = create(
        &server,
        &body(
            "chargebee",
            json!({ "site": "acme", "api.key": "ck_live" }),
            None,
        ),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(c["kind"], "basic");
    assert_eq!(
        c["headers"],
        json!({ "Authorization": "Basic Y2tfbGl2ZTo=" })
    );
    assert_eq!(c["query"], json!({}));

    // HTTP Basic with user name and password (ShipStation): base64("u:p").
    let (id, token) = create(
        &server,
        &body(
            "shipstation",
            json!({ "api.key": "u", "api.secret": "p" }),
            None,
        ),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(c["headers"], json!({ "Authorization": "Basic dTpw" }));

    // Wrong providerData for the kind is a 400 naming it.
    let (status, err) = server
        .post_instance(
            &server.account,
            &body(
                "sendgrid",
                json!({ "api.key": "k" }),
                Some(json!({ "code": "c" })),
            ),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        err["message"],
        "element `sendgrid` does not use OAuth: `providerData.code` is not accepted \
         (its `apikey` credential is in the configuration)"
    );
    // Missing configuration is the usual 400 listing keys.
    let (status, err) = server
        .post_instance(&server.account, &body("trello", json!({}), None))
        .await;
    assert_eq!(status, 400);
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("api.key") && message.contains("api.token"),
        "{message}"
    );
    // `method`/`url` are for oauth1 only.
    let response = server
        .client
        .get(format!(
            "{}/elements/api-v2/instances/{id}/credentials?method=GET&url=https://x.test/",
            server.base
        ))
        .header("Authorization", format!("Element {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let err: Value = response.json().await.unwrap();
    assert_eq!(
        err["message"],
        "`method` and `url` are only taken for `oauth1` elements (`shipstation` is `basic`)"
    );
    server.stop().await;
}

#[tokio::test]
async fn oauth1_stores_tokens_and_signs_one_request_on_demand() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let config = json!({ "oauth.api.key": "ck", "oauth.api.secret": "cs-secret" });

    // The tokens of the 3-legged flow are required.
    let (status, err) = server
        .post_instance(
            &server.account,
            &body(
                "flickr",
                config.clone(),
                Some(json!({ "oauth_token": "t" })),
            ),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        err["message"],
        "`providerData` must contain `oauth_token` and `oauth_token_secret` (missing: oauth_token_secret)"
    );
    let (status, err) = server
        .post_instance(
            &server.account,
            &body("flickr", config.clone(), Some(json!({ "code": "c" }))),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        err["message"],
        "element `flickr` uses `oauth1` credentials: `providerData.code` is not accepted \
         (give `oauth_token` and `oauth_token_secret`)"
    );

    let (id, token) = create(
        &server,
        &body(
            "flickr",
            config,
            Some(json!({ "oauth_token": "at-1", "oauth_token_secret": "ts-secret" })),
        ),
    )
    .await;
    // Without a request: the public parts only, never a secret.
    let c = creds(&server, id, &token).await;
    assert_eq!(c["kind"], "oauth1");
    assert_eq!(c["consumerKey"], "ck");
    assert_eq!(c["token"], "at-1");
    assert_eq!(c["signatureMethod"], "HMAC-SHA1");
    let text = c.to_string();
    assert!(
        !text.contains("cs-secret") && !text.contains("ts-secret"),
        "{text}"
    );

    // With a request: its Authorization header, which verifies.
    let url = "https://api.flickr.com/services/rest?method=flickr.test.login&format=json";
    let response = server
        .client
        .get(format!(
            "{}/elements/api-v2/instances/{id}/credentials",
            server.base
        ))
        .query(&[("method", "get"), ("url", url)])
        .header("Authorization", format!("Element {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let c: Value = response.json().await.unwrap();
    assert_eq!(c["query"], json!({}));
    let header = c["headers"]["Authorization"].as_str().unwrap().to_owned();
    let field = |name: &str| {
        let start = header.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
        header[start..].split('"').next().unwrap().to_owned()
    };
    let (nonce, timestamp) = (field("oauth_nonce"), field("oauth_timestamp"));
    let expected = oauth1_authorization(&OAuth1Request {
        method: "GET",
        url,
        params: &[],
        consumer_key: "ck",
        consumer_secret: &Secret::new("cs-secret"),
        token: Some("at-1"),
        token_secret: Some(&Secret::new("ts-secret")),
        callback: None,
        verifier: None,
        nonce: &nonce,
        timestamp: timestamp.parse().unwrap(),
        version: true,
    })
    .unwrap();
    assert_eq!(header, expected.expose());
    assert!(!header.contains("secret"), "{header}");

    let response = server
        .client
        .get(format!(
            "{}/elements/api-v2/instances/{id}/credentials?method=GET",
            server.base
        ))
        .header("Authorization", format!("Element {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let err: Value = response.json().await.unwrap();
    assert_eq!(
        err["message"],
        "`method` and `url` go together: `url` is missing"
    );
    server.stop().await;
}

#[tokio::test]
async fn element_json_shows_the_kind_and_api_base_url() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let e: Value = server
        .fetch(Method::GET, "/elements/auth0-management")
        .await;
    assert_eq!(
        e["authentication"]["type"], "oauth2_client_credentials",
        "{e}"
    );
    assert_eq!(
        e["apiBaseUrl"],
        "https://{tenant}.{region}.auth0.com/api/v2"
    );
    server.stop().await;
}

#[tokio::test]
async fn api_base_url_can_be_overridden_from_the_config_file() {
    let dir = data_dir();
    let file = dir.path().join("elements.toml");
    std::fs::write(
        &file,
        "[elements.freshdesk]\napi_base_url = \"http://127.0.0.1:9/api/v2\"\n",
    )
    .unwrap();
    let loaded = elements_server::config::FileConfig::load(&file).unwrap();
    let config = config_in(dir.path()).with_file(loaded);
    assert_eq!(
        config.api_base_urls.get("freshdesk").map(String::as_str),
        Some("http://127.0.0.1:9/api/v2")
    );
    assert!(config.overrides.is_empty(), "{:?}", config.overrides);
    let server = TestServer::start(config).await;
    let e: Value = server.fetch(Method::GET, "/elements/freshdesk").await;
    assert_eq!(e["apiBaseUrl"], "http://127.0.0.1:9/api/v2");
    server.stop().await;

    // An unknown element or a relative URL refuses to start, naming it.
    let mut bad = config_in(dir.path());
    bad.api_base_urls
        .insert("nosuch".into(), "https://x.test".into());
    bad.api_base_urls.insert("stripe".into(), "/v1".into());
    let err = elements_server::startup::registry(&bad)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("api_base_url override for unknown element `nosuch`"),
        "{err}"
    );
    assert!(
        err.contains("api_base_url override for `stripe`: \"/v1\" is not an absolute http(s) URL"),
        "{err}"
    );
}
