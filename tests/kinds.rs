//! Credential kinds end to end (issue 13): for each kind, `POST /instances`
//! and `GET /instances/{id}/credentials` against a real server; the
//! client credentials kind against the fake provider's token endpoint.

mod common;

use std::time::Duration;

use common::*;
use elements_client::{Client, CreateInstance, Credentials, ListInstances, ProviderData};
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

/// An instance of `element` with this configuration and `providerData`.
fn body(
    element: &str,
    configuration: &[(&str, &str)],
    provider_data: Option<ProviderData>,
) -> CreateInstance {
    let mut body = CreateInstance::new(element, format!("{element} instance"));
    for (key, value) in configuration {
        body = body.configuration(*key, *value);
    }
    match provider_data {
        Some(data) => body.provider_data(data),
        None => body,
    }
}

/// Creates an instance; (id, instance token).
async fn create(server: &TestServer, body: &CreateInstance) -> (i64, String) {
    let created = server.api().create_instance(body).await.unwrap();
    (created.id, created.token.unwrap().into_inner())
}

/// A client with the instance's `Element` token.
fn element_client(server: &TestServer, token: &str) -> Client {
    server.anonymous().with_element(token)
}

async fn creds(server: &TestServer, id: i64, token: &str) -> Credentials {
    element_client(server, token).credentials(id).await.unwrap()
}

/// The exposed value of a secret that must be there.
fn exposed(secret: &Option<elements_client::Secret>) -> &str {
    secret.as_ref().expect("a value").expose()
}

/// The refusal of a create.
async fn refused_create(server: &TestServer, body: &CreateInstance) -> elements_client::ApiError {
    refused(server.api().create_instance(body).await)
}

const CC_CONFIG: [(&str, &str); 3] = [
    ("tenant", "acme"),
    ("oauth.api.key", "test-client"),
    ("oauth.api.secret", "test-secret"),
];

#[tokio::test]
async fn client_credentials_obtains_at_creation_and_renews_once_under_concurrency() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, token) = create(&server, &body("auth0-management", &CC_CONFIG, None)).await;
    assert_eq!(fake.client_credentials_grants(), 1);

    let first = creds(&server, id, &token).await;
    assert_eq!(first.kind.as_deref(), Some("oauth2_client_credentials"));
    let access = exposed(&first.access_token).to_owned();
    assert!(fake.is_access_token_valid(&access));
    assert_eq!(first.token_type.as_deref(), Some("bearer"));
    assert!(first.expires_in.unwrap() > 600, "{first:?}");
    assert_eq!(
        to_json(&first.headers),
        json!({ "Authorization": format!("Bearer {access}") })
    );
    assert_eq!(to_json(&first.query), json!({}));
    // A fresh token is served without a provider call.
    assert_eq!(fake.client_credentials_grants(), 1);

    // Expired: 50 concurrent readers cause exactly one new grant.
    expire(server.state.store.as_ref(), id).await;
    let reads: Vec<_> = (0..50)
        .map(|_| {
            let client = element_client(&server, &token);
            tokio::spawn(async move { client.credentials(id).await })
        })
        .collect();
    let mut renewed = Vec::new();
    for read in reads {
        let body = read.await.unwrap().unwrap();
        renewed.push(exposed(&body.access_token).to_owned());
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
    let (id, token) = create(&server, &body("auth0-management", &CC_CONFIG, None)).await;
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
    assert!(after.expires_in.unwrap() > 600, "{after:?}");
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
        &CC_CONFIG,
        Some(ProviderData::code("abc")),
    );
    let err = refused_create(&server, &with_code).await;
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "element `auth0-management` uses `oauth2_client_credentials` credentials: \
         `providerData.code` is not accepted (the server obtains the token itself)"
    );
    // Missing configuration lists the keys.
    let err = refused_create(&server, &body("auth0-management", &[], None)).await;
    assert_eq!(err.status, 400, "{err}");
    let message = err.message();
    for key in ["tenant", "oauth.api.key", "oauth.api.secret"] {
        assert!(message.contains(key), "{message}");
    }
    // A wrong client secret: the provider's refusal, no instance. The whole
    // text of the answer (`ApiError::raw`, fields the typed error does not
    // know too) is searched for the secret.
    let mut wrong = CC_CONFIG;
    wrong[2].1 = "nope";
    let err = refused_create(&server, &body("auth0-management", &wrong, None)).await;
    let (status, text) = (err.status.as_u16(), err.raw());
    assert!((400..500).contains(&status), "{status} {text}");
    assert!(!text.is_empty());
    assert!(!text.contains("nope"), "{text}");
    let list = server.api().instances(&ListInstances::new()).await.unwrap();
    assert!(list.items.is_empty(), "{list:?}");
    server.stop().await;
}

#[tokio::test]
async fn apikey_and_basic_produce_exactly_the_declared_headers_and_query() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;

    // Header with a prefix (SendGrid).
    let (id, token) = create(&server, &body("sendgrid", &[("api.key", "SG.k1")], None)).await;
    let c = creds(&server, id, &token).await;
    assert_eq!(c.kind.as_deref(), Some("apikey"));
    assert_eq!(
        to_json(&c.headers),
        json!({ "Authorization": "Bearer SG.k1" })
    );
    // Raw (the client's escape hatch): the whole answer, exactly, so that a
    // field the typed `Credentials` does not know would show.
    let raw: Value = element_client(&server, &token)
        .request(Method::GET, &format!("/instances/{id}/credentials"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        raw,
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
            &[("store_hash", "abc"), ("api.token", "bc-t")],
            None,
        ),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(to_json(&c.headers), json!({ "X-Auth-Token": "bc-t" }));
    assert_eq!(to_json(&c.query), json!({}));

    // Query parameters (Trello).
    let (id, token) = create(
        &server,
        &body("trello", &[("api.key", "tk"), ("api.token", "tt")], None),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(c.kind.as_deref(), Some("apikey"));
    assert_eq!(to_json(&c.headers), json!({}));
    assert_eq!(to_json(&c.query), json!({ "key": "tk", "token": "tt" }));

    // HTTP Basic, key as user name and an empty password (Chargebee):
    // base64("ck_live:").
    let (id, token) = create(
        &server,
        &body(
            "chargebee",
            &[("site", "acme"), ("api.key", "ck_live")],
            None,
        ),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(c.kind.as_deref(), Some("basic"));
    assert_eq!(
        to_json(&c.headers),
        json!({ "Authorization": "Basic Y2tfbGl2ZTo=" })
    );
    assert_eq!(to_json(&c.query), json!({}));

    // HTTP Basic with user name and password (ShipStation): base64("u:p").
    let (id, token) = create(
        &server,
        &body(
            "shipstation",
            &[("api.key", "u"), ("api.secret", "p")],
            None,
        ),
    )
    .await;
    let c = creds(&server, id, &token).await;
    assert_eq!(
        to_json(&c.headers),
        json!({ "Authorization": "Basic dTpw" })
    );

    // Wrong providerData for the kind is a 400 naming it.
    let err = refused_create(
        &server,
        &body(
            "sendgrid",
            &[("api.key", "k")],
            Some(ProviderData::code("c")),
        ),
    )
    .await;
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "element `sendgrid` does not use OAuth: `providerData.code` is not accepted \
         (its `apikey` credential is in the configuration)"
    );
    // Missing configuration is the usual 400 listing keys.
    let err = refused_create(&server, &body("trello", &[], None)).await;
    assert_eq!(err.status, 400);
    let message = err.message();
    assert!(
        message.contains("api.key") && message.contains("api.token"),
        "{message}"
    );
    // `method`/`url` are for oauth1 only.
    let err = refused(
        element_client(&server, &token)
            .oauth1_signature(id, "GET", "https://x.test/")
            .await,
    );
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "`method` and `url` are only taken for `oauth1` elements (`shipstation` is `basic`)"
    );
    server.stop().await;
}

#[tokio::test]
async fn oauth1_stores_tokens_and_signs_one_request_on_demand() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let config = [("oauth.api.key", "ck"), ("oauth.api.secret", "cs-secret")];

    // The tokens of the 3-legged flow are required.
    let only_token = ProviderData {
        oauth_token: Some("t".into()),
        ..ProviderData::default()
    };
    let err = refused_create(&server, &body("flickr", &config, Some(only_token))).await;
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "`providerData` must contain `oauth_token` and `oauth_token_secret` (missing: oauth_token_secret)"
    );
    let err = refused_create(
        &server,
        &body("flickr", &config, Some(ProviderData::code("c"))),
    )
    .await;
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "element `flickr` uses `oauth1` credentials: `providerData.code` is not accepted \
         (give `oauth_token` and `oauth_token_secret`)"
    );

    let (id, token) = create(
        &server,
        &body(
            "flickr",
            &config,
            Some(ProviderData::oauth1("at-1", "ts-secret")),
        ),
    )
    .await;
    let client = element_client(&server, &token);
    // Without a request: the public parts only, never a secret.
    let c = creds(&server, id, &token).await;
    assert_eq!(c.kind.as_deref(), Some("oauth1"));
    assert_eq!(c.consumer_key.as_deref(), Some("ck"));
    assert_eq!(exposed(&c.token), "at-1");
    assert_eq!(c.signature_method.as_deref(), Some("HMAC-SHA1"));
    // Raw (the client's escape hatch): the whole text of the answer is
    // searched for the secrets, fields the typed answer does not know too.
    let text = client
        .request(Method::GET, &format!("/instances/{id}/credentials"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"consumerKey\":\"ck\""), "{text}");
    assert!(
        !text.contains("cs-secret") && !text.contains("ts-secret"),
        "{text}"
    );

    // With a request: its Authorization header, which verifies.
    let url = "https://api.flickr.com/services/rest?method=flickr.test.login&format=json";
    let c = client.oauth1_signature(id, "get", url).await.unwrap();
    assert_eq!(to_json(&c.query), json!({}));
    let header = c.headers["Authorization"].expose().to_owned();
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

    // Raw (the client's escape hatch): `method` without `url` is
    // deliberately malformed; the typed call always sends both.
    let response = client
        .request(
            Method::GET,
            &format!("/instances/{id}/credentials?method=GET"),
        )
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
    let e = server.api().element("auth0-management").await.unwrap();
    assert_eq!(e.authentication.kind, "oauth2_client_credentials", "{e:?}");
    assert_eq!(
        e.api_base_url.as_deref(),
        Some("https://{tenant}.{region}.auth0.com/api/v2")
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
    let e = server.api().element("freshdesk").await.unwrap();
    assert_eq!(e.api_base_url.as_deref(), Some("http://127.0.0.1:9/api/v2"));
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
