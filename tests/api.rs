//! The HTTP API end to end: a real server on 127.0.0.1:0 over a real SQLite
//! file, a real HTTP client.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{json, Value};

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
async fn seed_post_instances_answers_the_seed_shape() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let (status, body) = server
        .post_instance(&server.account, &seed_instance_body("at-seed", "rt-seed"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["element"],
        seed_instance_element(),
        "the element object, exactly: the seed's fields and the hub"
    );
    assert_eq!(body["name"], "Test");
    assert!(body["id"].as_i64().unwrap() > 0);
    assert!(body["token"].as_str().unwrap().len() >= 43);
    assert_eq!(body["provisionInteractions"], json!([]));
    assert_eq!(body["valid"], true);
    assert_eq!(body["disabled"], false);
    assert_eq!(body["maxCacheSize"], 0);
    assert_eq!(body["cacheTimeToLive"], 0);
    assert_eq!(body["cachingEnabled"], false);
    assert_eq!(body["tags"], json!(["seed"]));
    assert_eq!(body["user"]["emailAddress"], "dev@acme.test");
    assert_eq!(body["configuration"]["oauth.api.secret"], "********");
    assert_eq!(body["configuration"]["oauth.api.key"], "********");
    assert_eq!(
        body["configuration"]["oauth.callback.url"],
        "www.samplecallbackurl.com"
    );
    let text = body.to_string();
    assert!(
        !text.contains("at-seed") && !text.contains("rt-seed"),
        "providerData is never echoed"
    );
    // The seed's order of fields.
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
    let id = body["id"].as_i64().unwrap();
    let got: Value = server.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert!(got.get("token").is_none());
    assert_eq!(got["element"], seed_instance_element());
    server.stop().await;
}

#[tokio::test]
async fn missing_configuration_lists_exactly_the_missing_keys() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    for mask in 1u32..16 {
        let mut body = seed_instance_body("at", "rt");
        let mut expected = Vec::new();
        for (i, key) in SEED_KEYS.iter().enumerate() {
            if mask & (1 << i) != 0 {
                body["configuration"].as_object_mut().unwrap().remove(*key);
                expected.push(*key);
            }
        }
        let (status, err) = server.post_instance(&server.account, &body).await;
        assert_eq!(status, 400, "{err}");
        assert_eq!(err["missing"], json!(expected), "mask {mask:04b}: {err}");
        assert!(err["message"].as_str().unwrap().contains(expected[0]));
        assert!(err["requestId"].as_str().is_some());
    }
    server.stop().await;
}

#[tokio::test]
async fn instances_survive_a_restart_and_their_tokens_decrypt() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let account = server.account.clone();
    let (status, body) = server
        .post_instance(&account, &seed_instance_body("at-persist", "rt-persist"))
        .await;
    assert_eq!(status, 200);
    let id = body["id"].as_i64().unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    server.stop().await;

    // A new process would do exactly this: open the same data dir.
    let config = config_in(dir.path());
    let registry = elements_server::startup::registry(&config).unwrap();
    let store = elements_server::startup::open_store(&config).await.unwrap();
    let server = TestServer::start_with(config, registry, store, account).await;
    let got: Value = server.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert_eq!(got["name"], "Test");
    let (status, creds) = credentials(&server.client, &server.base, id, &token).await;
    assert_eq!(status, 200, "{creds}");
    assert_eq!(creds["accessToken"], "at-persist", "{creds}");
    server.stop().await;
}

#[tokio::test]
async fn database_files_hold_no_plaintext_secret() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let mut body = seed_instance_body("at-PLAINTEXT-access-0001", "rt-PLAINTEXT-refresh-0001");
    body["configuration"]["oauth.api.secret"] = json!("cfg-PLAINTEXT-secret-0001");
    let (status, created) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200);
    let instance_token = created["token"].as_str().unwrap().to_owned();
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

#[tokio::test]
async fn organizations_cannot_see_or_change_each_others_instances() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let other = server.other_account("globex").await;
    let (_, mine) = server
        .post_instance(&server.account, &seed_instance_body("at-a", "rt-a"))
        .await;
    let (_, theirs) = server
        .post_instance(&other, &seed_instance_body("at-b", "rt-b"))
        .await;
    let id = mine["id"].as_i64().unwrap();
    let their_token = theirs["token"].as_str().unwrap();

    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/instances/{id}"), None),
        (
            Method::PATCH,
            format!("/instances/{id}"),
            Some(json!({"name": "pwned"})),
        ),
        (Method::DELETE, format!("/instances/{id}/enabled"), None),
        (Method::PUT, format!("/instances/{id}/enabled"), None),
        (Method::GET, format!("/instances/{id}/configuration"), None),
        (Method::GET, format!("/instances/{id}/credentials"), None),
        (Method::DELETE, format!("/instances/{id}"), None),
    ];
    for (method, path, body) in &attempts {
        let mut req = server
            .client
            .request(method.clone(), server.url(path))
            .header("Authorization", other.header());
        if let Some(b) = body {
            req = req.json(b);
        }
        let status = req.send().await.unwrap().status();
        assert_eq!(status, 404, "{method} {path} with another organization");
    }
    // Another instance's token.
    let status = server
        .client
        .get(server.url(&format!("/instances/{id}/credentials")))
        .header("Authorization", format!("Element {their_token}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    // Another instance's token alone is no account: 401 on every route but
    // credentials, where it is a 404 (checked above).
    for (method, path, body) in &attempts {
        if path.ends_with("/credentials") {
            continue;
        }
        let mut req = server
            .client
            .request(method.clone(), server.url(path))
            .header("Authorization", format!("Element {their_token}"));
        if let Some(b) = body {
            req = req.json(b);
        }
        let status = req.send().await.unwrap().status();
        assert_eq!(status, 401, "{method} {path} with another instance's token");
    }
    // Their listing does not show mine; mine is unchanged.
    let listed: Vec<Value> = server
        .client
        .get(server.url("/instances"))
        .header("Authorization", other.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed.iter().all(|i| i["id"].as_i64() != Some(id)));
    let got: Value = server.fetch(Method::GET, &format!("/instances/{id}")).await;
    assert_eq!(
        (got["name"].as_str(), got["disabled"].as_bool()),
        (Some("Test"), Some(false))
    );
    server.stop().await;
}

#[tokio::test]
async fn instance_routes_manage_the_lifecycle() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let mut body = seed_instance_body("at", "rt");
    body["tags"] = json!(["red", "blue"]);
    let (_, a) = server.post_instance(&server.account, &body).await;
    body["tags"] = json!(["red"]);
    let (_, b) = server.post_instance(&server.account, &body).await;
    let (a, b) = (a["id"].as_i64().unwrap(), b["id"].as_i64().unwrap());

    let list = |q: &'static str| {
        let req = server.authed(Method::GET, &format!("/instances{q}"));
        async move {
            let v: Vec<Value> = req.send().await.unwrap().json().await.unwrap();
            let mut ids: Vec<i64> = v.iter().map(|i| i["id"].as_i64().unwrap()).collect();
            ids.sort();
            ids
        }
    };
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(list("").await, both);
    assert_eq!(list("?tags[]=red").await, both);
    assert_eq!(list("?tags[]=blue").await, vec![a]);
    assert_eq!(list("?tags%5B%5D=blue").await, vec![a]);

    let patched: Value = server
        .authed(Method::PATCH, &format!("/instances/{a}"))
        .json(&json!({"name": "Renamed", "tags": ["green"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (patched["name"].as_str(), patched["tags"].clone()),
        (Some("Renamed"), json!(["green"]))
    );

    let disabled: Value = server
        .fetch(Method::DELETE, &format!("/instances/{a}/enabled"))
        .await;
    assert_eq!(disabled["disabled"], true);
    let status = server
        .authed(Method::GET, &format!("/instances/{a}/credentials"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403, "a disabled instance gives no credentials");
    let enabled: Value = server
        .fetch(Method::PUT, &format!("/instances/{a}/enabled"))
        .await;
    assert_eq!(enabled["disabled"], false);

    let config: Vec<Value> = server
        .fetch(Method::GET, &format!("/instances/{a}/configuration"))
        .await;
    let secret = config
        .iter()
        .find(|e| e["key"] == "oauth.api.secret")
        .unwrap();
    assert_eq!(secret["propertyValue"], "********");
    let key = config.iter().find(|e| e["key"] == "oauth.api.key").unwrap();
    assert_eq!(key["propertyValue"], "********");
    let scope = config.iter().find(|e| e["key"] == "oauth.scope").unwrap();
    assert_eq!(scope["propertyValue"], "contacts-rw+offline");

    let status = server
        .authed(Method::DELETE, &format!("/instances/{a}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    for path in [
        format!("/instances/{a}"),
        format!("/instances/{a}/credentials"),
    ] {
        let status = server
            .authed(Method::GET, &path)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 404, "{path} after delete");
    }
    assert_eq!(list("").await, vec![b]);
    server.stop().await;
}

#[tokio::test]
async fn catalog_routes() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let keys: Vec<String> = server
        .get("/elements/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(keys.contains(&"hubspot".to_owned()));
    let all: Vec<Value> = server
        .get("/elements")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(all.len(), keys.len());
    for path in ["/elements/hubspot", "/elements/43"] {
        let v: Value = server.get(path).send().await.unwrap().json().await.unwrap();
        for (field, expected) in seed_element().as_object().unwrap() {
            assert_eq!(&v[field], expected, "{path} {field}");
        }
        assert_eq!(v["hub"], "marketing");
        assert_eq!(v["authentication"]["type"], "oauth2");
    }
    let config: Vec<Value> = server
        .get("/elements/hubspot/configuration")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(config
        .iter()
        .any(|e| e["key"] == "oauth.callback.url" && e["required"] == true));
    let response = server.get("/elements/hubspto").send().await.unwrap();
    assert_eq!(response.status(), 404);
    let err: Value = response.json().await.unwrap();
    assert!(
        err["message"].as_str().unwrap().contains("hubspot"),
        "{err}"
    );
    let response = server
        .get("/elements/hubspot/oauth/url?apiKey=k")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let err: Value = response.json().await.unwrap();
    assert_eq!(err["missing"], json!(["apiSecret", "scope", "callbackUrl"]));
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    // The table of bad inputs is tests/bad_input.rs; this covers the router.
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
