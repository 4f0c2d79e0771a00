//! The HTTP API end to end: a real server on 127.0.0.1:0 over a real SQLite
//! file, a real HTTP client.

mod common;

use common::*;
use elements_client::{ListInstances, OAuthUrlRequest, UpdateInstance};
use reqwest::Method;
use serde_json::Value;

const SEED_KEYS: [&str; 4] = [
    "oauth.api.key",
    "oauth.api.secret",
    "oauth.callback.url",
    "oauth.scope",
];

#[tokio::test]
async fn seed_oauth_url_through_the_server_is_byte_for_byte() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let response = server
        .get(&format!("/elements/hubspot/oauth/url?{SEED_OAUTH_QUERY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(response.text().await.unwrap(), SEED_OAUTH_ANSWER);
    server.stop().await;
}

#[tokio::test]
async fn seed_oauth_url_through_the_client() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let url = server
        .anonymous()
        .oauth_url("hubspot", &seed_oauth_request())
        .await
        .unwrap();
    assert_eq!(url.element, "hubspot");
    assert_eq!(url.oauth_url, SEED_OAUTH_URL);
    assert_eq!(url.code_verifier, None);
    // The POST form answers the same.
    let posted = server
        .anonymous()
        .oauth_url_post("hubspot", &seed_oauth_request())
        .await
        .unwrap();
    assert_eq!(posted, url);
    server.stop().await;
}

#[tokio::test]
async fn seed_post_instances_answers_the_seed_shape() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let created = api
        .create_instance(&seed_instance("at-seed", "rt-seed"))
        .await
        .unwrap();
    assert_eq!(
        to_json(&created.element),
        seed_instance_element(),
        "the element object, exactly: the seed's fields and the hub"
    );
    assert_eq!(created.name, "Test");
    assert!(created.id > 0);
    assert!(created.token.as_ref().unwrap().expose().len() >= 43);
    assert_eq!(created.provision_interactions, Vec::<Value>::new());
    assert!(created.valid);
    assert!(!created.disabled);
    assert_eq!(created.max_cache_size, 0);
    assert_eq!(created.cache_time_to_live, 0);
    assert!(!created.caching_enabled);
    assert_eq!(created.tags, ["seed"]);
    assert_eq!(created.user.email_address, "dev@acme.test");
    assert_eq!(created.configuration["oauth.api.secret"], "********");
    assert_eq!(created.configuration["oauth.api.key"], "********");
    assert_eq!(
        created.configuration["oauth.callback.url"],
        "www.samplecallbackurl.com"
    );

    // Raw reqwest here: what is asserted is the text of the answer (the
    // seed's order of fields, and that providerData is never echoed), which
    // a typed answer would hide.
    let (status, body) = server
        .post_instance(&server.account, &seed_instance_body("at-seed", "rt-seed"))
        .await;
    assert_eq!(status, 200, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("at-seed") && !text.contains("rt-seed"),
        "providerData is never echoed"
    );
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(
        &keys[..10],
        [
            "id",
            "name",
            "token",
            "element",
            "provisionInteractions",
            "valid",
            "disabled",
            "maxCacheSize",
            "cacheTimeToLive",
            "cachingEnabled"
        ]
    );
    // The token is returned once: not by GET.
    let got = api.instance(created.id).await.unwrap();
    assert!(got.token.is_none());
    assert_eq!(to_json(&got.element), seed_instance_element());
    server.stop().await;
}

#[tokio::test]
async fn missing_configuration_lists_exactly_the_missing_keys() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    for mask in 1u32..16 {
        let mut body = seed_instance("at", "rt");
        let mut expected = Vec::new();
        for (i, key) in SEED_KEYS.iter().enumerate() {
            if mask & (1 << i) != 0 {
                body.configuration.remove(*key);
                expected.push(*key);
            }
        }
        let err = refused(api.create_instance(&body).await);
        assert_eq!(err.status, 400, "{err}");
        assert_eq!(err.missing(), expected, "mask {mask:04b}: {err}");
        assert!(err.message().contains(expected[0]));
        let body = err.body.as_ref().unwrap();
        assert!(!body.request_id.is_empty());
        assert_eq!(err.request_id.as_deref(), Some(body.request_id.as_str()));
    }
    server.stop().await;
}

#[tokio::test]
async fn instances_survive_a_restart_and_their_tokens_decrypt() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let account = server.account.clone();
    let created = server
        .api()
        .create_instance(&seed_instance("at-persist", "rt-persist"))
        .await
        .unwrap();
    let id = created.id;
    let token = created.token.unwrap();
    server.stop().await;

    // A new process would do exactly this: open the same data dir.
    let config = config_in(dir.path());
    let registry = elements_server::startup::registry(&config).unwrap();
    let store = elements_server::startup::open_store(&config).await.unwrap();
    let server = TestServer::start_with(config, registry, store, account).await;
    let got = server.api().instance(id).await.unwrap();
    assert_eq!(got.name, "Test");
    let creds = server
        .anonymous()
        .with_element(token)
        .credentials(id)
        .await
        .unwrap();
    assert_eq!(
        creds.access_token.as_ref().map(|t| t.expose()),
        Some("at-persist")
    );
    server.stop().await;
}

#[tokio::test]
async fn database_files_hold_no_plaintext_secret() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let body = seed_instance("at-PLAINTEXT-access-0001", "rt-PLAINTEXT-refresh-0001")
        .configuration("oauth.api.secret", "cfg-PLAINTEXT-secret-0001");
    let created = server.api().create_instance(&body).await.unwrap();
    let instance_token = created.token.unwrap().into_inner();
    let account = server.account.clone();
    server.stop().await;
    let mut bytes = Vec::new();
    for name in ["elements.db", "elements.db-wal", "elements.db-shm"] {
        if let Ok(b) = std::fs::read(dir.path().join(name)) {
            bytes.extend(b);
        }
    }
    assert!(bytes.len() > 4096, "the database was written");
    for secret in [
        "at-PLAINTEXT-access-0001",
        "rt-PLAINTEXT-refresh-0001",
        "cfg-PLAINTEXT-secret-0001",
        instance_token.as_str(),
        account.user_secret.as_str(),
        account.organization_secret.as_str(),
    ] {
        assert!(
            !contains(&bytes, secret),
            "plaintext {secret} found in the database files"
        );
    }
}

/// The status of a refused call, or 200.
fn status_of<T: std::fmt::Debug>(result: Result<T, elements_client::Error>) -> u16 {
    match result {
        Ok(_) => 200,
        Err(e) => refused::<()>(Err(e)).status.as_u16(),
    }
}

/// Every instance route on instance `id`, through `client`: (name, status).
async fn every_instance_route(
    client: &elements_client::Client,
    id: i64,
) -> Vec<(&'static str, u16)> {
    let rename = UpdateInstance::new().name("pwned");
    vec![
        ("GET /instances/{id}", status_of(client.instance(id).await)),
        (
            "PATCH /instances/{id}",
            status_of(client.update_instance(id, &rename).await),
        ),
        (
            "DELETE /instances/{id}/enabled",
            status_of(client.disable_instance(id).await),
        ),
        (
            "PUT /instances/{id}/enabled",
            status_of(client.enable_instance(id).await),
        ),
        (
            "GET /instances/{id}/configuration",
            status_of(client.instance_configuration(id).await),
        ),
        (
            "GET /instances/{id}/credentials",
            status_of(client.credentials(id).await),
        ),
        (
            "DELETE /instances/{id}",
            status_of(client.delete_instance(id).await),
        ),
    ]
}

#[tokio::test]
async fn organizations_cannot_see_or_change_each_others_instances() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let other = server.other_account("globex").await.client(&server.base);
    let mine = server
        .api()
        .create_instance(&seed_instance("at-a", "rt-a"))
        .await
        .unwrap();
    let theirs = other
        .create_instance(&seed_instance("at-b", "rt-b"))
        .await
        .unwrap();
    let id = mine.id;
    let their_token = theirs.token.unwrap();

    for (route, status) in every_instance_route(&other, id).await {
        assert_eq!(status, 404, "{route} with another organization");
    }
    // Another instance's token.
    let with_their_token = server.anonymous().with_element(their_token);
    let err = refused(with_their_token.credentials(id).await);
    assert_eq!(err.status, 404);
    // Another instance's token alone is no account: 401 on every route but
    // credentials, where it is a 404 (checked above).
    for (route, status) in every_instance_route(&with_their_token, id).await {
        if route.ends_with("/credentials") {
            assert_eq!(status, 404, "{route} with another instance's token");
        } else {
            assert_eq!(status, 401, "{route} with another instance's token");
        }
    }
    // Their listing does not show mine; mine is unchanged.
    let listed = other.instances(&ListInstances::new()).await.unwrap();
    assert!(listed.items.iter().all(|i| i.id != id));
    assert_eq!(listed.items.len(), 1);
    let got = server.api().instance(id).await.unwrap();
    assert_eq!((got.name.as_str(), got.disabled), ("Test", false));
    server.stop().await;
}

#[tokio::test]
async fn instance_routes_manage_the_lifecycle() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let a = api
        .create_instance(&seed_instance("at", "rt").tags(["red", "blue"]))
        .await
        .unwrap()
        .id;
    let b = api
        .create_instance(&seed_instance("at", "rt").tags(["red"]))
        .await
        .unwrap()
        .id;

    let list = |query: ListInstances| {
        let api = api.clone();
        async move {
            let page = api.instances(&query).await.unwrap();
            let mut ids: Vec<i64> = page.items.iter().map(|i| i.id).collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(list(ListInstances::new()).await, both);
    assert_eq!(list(ListInstances::new().tag("red")).await, both);
    assert_eq!(list(ListInstances::new().tag("blue")).await, vec![a]);
    // `tags[]` percent-encoded, as some clients send it (raw: the client
    // always sends it one way).
    let encoded: Vec<Value> = server
        .authed(Method::GET, "/instances?tags%5B%5D=blue")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(encoded.len(), 1);
    assert_eq!(encoded[0]["id"], a);

    let patched = api
        .update_instance(a, &UpdateInstance::new().name("Renamed").tags(["green"]))
        .await
        .unwrap();
    assert_eq!(
        (patched.name.as_str(), patched.tags.clone()),
        ("Renamed", vec!["green".to_owned()])
    );

    let disabled = api.disable_instance(a).await.unwrap();
    assert!(disabled.disabled);
    let err = refused(api.credentials(a).await);
    assert_eq!(err.status, 403, "a disabled instance gives no credentials");
    assert_eq!(err.message(), format!("instance {a} is disabled"));
    let enabled = api.enable_instance(a).await.unwrap();
    assert!(!enabled.disabled);

    let config = api.instance_configuration(a).await.unwrap();
    let value = |key: &str| {
        config
            .iter()
            .find(|e| e.key == key)
            .unwrap()
            .property_value
            .clone()
    };
    assert_eq!(value("oauth.api.secret"), "********");
    assert_eq!(value("oauth.api.key"), "********");
    assert_eq!(value("oauth.scope"), "contacts-rw+offline");

    api.delete_instance(a).await.unwrap();
    let err = refused(api.instance(a).await);
    assert_eq!(err.status, 404, "GET /instances/{a} after delete");
    let err = refused(api.credentials(a).await);
    assert_eq!(err.status, 404, "credentials after delete");
    assert_eq!(list(ListInstances::new()).await, vec![b]);
    server.stop().await;
}

#[tokio::test]
async fn catalog_routes() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.anonymous();
    let keys = api.element_keys().await.unwrap();
    assert!(keys.contains(&"hubspot".to_owned()));
    let all = api.elements().await.unwrap();
    assert_eq!(all.len(), keys.len());
    assert_eq!(
        all.iter()
            .map(|e| e.metadata.key.clone())
            .collect::<Vec<_>>(),
        keys
    );
    for key_or_id in ["hubspot", "43"] {
        let element = api.element(key_or_id).await.unwrap();
        assert_eq!(to_json(&element.metadata), seed_element(), "{key_or_id}");
        assert_eq!(element.hub, "marketing");
        assert_eq!(element.authentication.kind, "oauth2");
    }
    let config = api.element_configuration("hubspot").await.unwrap();
    assert!(config
        .iter()
        .any(|e| e.key == "oauth.callback.url" && e.required));
    let err = refused(api.element("hubspto").await);
    assert_eq!(err.status, 404);
    assert!(err.message().contains("hubspot"), "{err}");
    let err = refused(
        api.oauth_url("hubspot", &OAuthUrlRequest::new().api_key("k"))
            .await,
    );
    assert_eq!(err.status, 400);
    assert_eq!(err.missing(), ["apiSecret", "scope", "callbackUrl"]);
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    // The table of bad inputs is tests/bad_input.rs; this covers the router.
    // Raw reqwest: these requests are deliberately malformed (no such path,
    // a method the route lacks, an instance id that is not a number).
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let response = server
        .client
        .get(format!("{}/nope", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());
    let response = server
        .client
        .put(server.url("/elements"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert!(response.json::<Value>().await.unwrap()["message"].is_string());
    let response = server
        .authed(Method::GET, "/instances/abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = server
        .get(&format!("/elements/hubspot/oauth/url?{SEED_OAUTH_QUERY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}
