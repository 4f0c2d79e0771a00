//! The format features of issue 13 part 2 through the real server (real
//! HTTP on 127.0.0.1, a real SQLite file, the fake provider): token
//! requests as JSON and as GET, revocation when an instance is deleted,
//! aliases, restricted host placeholders.

mod common;

use common::*;
use elements_testkit::provider::FakeProvider;
use reqwest::Method;
use serde_json::{json, Value};

/// An element file whose endpoints are the fake's, with `extra` lines in
/// its `[oauth]` section.
fn element(id: u64, key: &str, fake: &FakeProvider, extra: &str) -> String {
    format!(
        "id = {id}\nkey = \"{key}\"\nname = \"{key}\"\ndescription = \"d\"\nimage = \"i\"\n\
         hub = \"crm\"\nauthentication = \"oauth2\"\nexisting_account_description = \"e\"\n\
         config_description = \"c\"\n[oauth]\nauthorization_url = \"{}\"\ntoken_url = \"{}\"\n\
         {extra}\n\
         [[configuration]]\nkey = \"oauth.api.key\"\nname = \"Client ID\"\n\
         [[configuration]]\nkey = \"oauth.api.secret\"\nname = \"Secret\"\nsecret = true\n\
         [[configuration]]\nkey = \"oauth.callback.url\"\nname = \"Callback\"\n",
        fake.authorize_url(),
        fake.token_url()
    )
}

async fn start(fake: &FakeProvider) -> (tempfile::TempDir, TestServer) {
    start_on(fake, None).await
}

/// [`start`] on this database (`None`: a SQLite file in the data dir).
async fn start_on(
    fake: &FakeProvider,
    database_url: Option<String>,
) -> (tempfile::TempDir, TestServer) {
    let dir = data_dir();
    let elements = dir.path().join("elements");
    std::fs::create_dir(&elements).unwrap();
    for (name, text) in [
        (
            "jsonbody.toml",
            element(90001, "jsonbody", fake, "token_request_format = \"json\""),
        ),
        (
            "getquery.toml",
            element(90002, "getquery", fake, "token_request_format = \"query\""),
        ),
        (
            "revoking.toml",
            element(
                90003,
                "revoking",
                fake,
                &format!("revocation_url = \"{}\"", fake.revoke_url()),
            ),
        ),
        (
            "deadrevoke.toml",
            element(
                90004,
                "deadrevoke",
                fake,
                "revocation_url = \"http://127.0.0.1:1/revoke\"",
            ),
        ),
        (
            "selfhosted.toml",
            "id = 90005\nkey = \"selfhosted\"\nname = \"S\"\ndescription = \"d\"\nimage = \"i\"\n\
             hub = \"crm\"\nauthentication = \"oauth2\"\nexisting_account_description = \"e\"\n\
             config_description = \"c\"\n[oauth]\n\
             authorization_url = \"https://{host}/realms/main/auth\"\n\
             token_url = \"https://{host}/realms/main/token\"\n\
             [[configuration]]\nkey = \"host\"\nname = \"Host\"\ncustom_host = true\n"
                .to_owned(),
        ),
        (
            "keeper.toml",
            format!(
                "id = 90006\nkey = \"keeper\"\nname = \"K\"\ndescription = \"d\"\nimage = \"i\"\n\
                 hub = \"crm\"\nauthentication = \"oauth2\"\nexisting_account_description = \"e\"\n\
                 config_description = \"c\"\n\
                 api_base_url = \"{{sf.instance_url}}/services/data/v60.0\"\n[oauth]\n\
                 authorization_url = \"{}\"\ntoken_url = \"{}\"\ncallback_capture = [\"realmId\"]\n\
                 [oauth.token_response]\nkeep = {{ instance_url = \"sf.instance_url\" }}\n\
                 [[configuration]]\nkey = \"oauth.api.key\"\nname = \"Client ID\"\n\
                 [[configuration]]\nkey = \"oauth.api.secret\"\nname = \"Secret\"\nsecret = true\n\
                 [[configuration]]\nkey = \"oauth.callback.url\"\nname = \"Callback\"\n\
                 [[configuration]]\nkey = \"sf.instance_url\"\nname = \"Instance URL\"\n\
                 required = false\ncustom_host = true\n\
                 [[configuration]]\nkey = \"realmId\"\nname = \"Realm\"\nrequired = false\n",
                fake.authorize_url(),
                fake.token_url()
            ),
        ),
    ] {
        std::fs::write(elements.join(name), text).unwrap();
    }
    let mut config = config_in(dir.path());
    if database_url.is_some() {
        config.database_url = database_url;
    }
    config.elements_dirs.push(elements);
    config.allowed_custom_hosts = vec!["acme.com".into()];
    let server = TestServer::start(config).await;
    (dir, server)
}

/// Provisions an instance of `key` from tokens the fake issued: (id, instance token, refresh token).
async fn provision(server: &TestServer, fake: &FakeProvider, key: &str) -> (i64, String, String) {
    fake.add_client("fmt-client", "fmt-secret");
    let (access, refresh) = fake.issue_tokens("fmt-client");
    let body = json!({
        "element": { "key": key },
        "name": key,
        "providerData": { "access_token": access, "refresh_token": refresh, "expires_in": 1800 },
        "configuration": {
            "oauth.api.key": "fmt-client",
            "oauth.api.secret": "fmt-secret",
            "oauth.callback.url": "https://app.test/cb"
        }
    });
    let (status, created) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200, "{created}");
    (
        created["id"].as_i64().unwrap(),
        created["token"].as_str().unwrap().to_owned(),
        refresh,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_as_json_and_as_get_refresh_for_real() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    for (n, key) in ["jsonbody", "getquery"].into_iter().enumerate() {
        let (id, token, old_refresh) = provision(&server, &fake, key).await;
        expire(server.state.store.as_ref(), id).await;
        let (status, body) = credentials(&server.client, &server.base, id, &token).await;
        assert_eq!(status, 200, "{key}: {body}");
        let access = body["token"]["access_token"]
            .as_str()
            .or_else(|| body["accessToken"].as_str())
            .or_else(|| body["access_token"].as_str())
            .unwrap_or_else(|| panic!("{key}: no access token in {body}"))
            .to_owned();
        assert!(fake.is_access_token_valid(&access), "{key}");
        assert_eq!(fake.refresh_calls(), n as u64 + 1, "{key}");
        // The fake rotates refresh tokens: the old one is spent.
        assert!(!fake.is_refresh_token_valid(&old_refresh), "{key}");
    }
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_instance_revokes_its_tokens() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let (id, _, refresh) = provision(&server, &fake, "revoking").await;
    assert!(fake.is_refresh_token_valid(&refresh));
    let response = server
        .authed(Method::DELETE, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(fake.revocation_calls(), 1);
    assert!(!fake.is_refresh_token_valid(&refresh));
    assert_eq!(fake.revoked_families(), 1);

    // An element without revocation_url: nothing is sent.
    let (id, _, refresh) = provision(&server, &fake, "jsonbody").await;
    let response = server
        .authed(Method::DELETE, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(fake.revocation_calls(), 1);
    assert!(fake.is_refresh_token_valid(&refresh));

    // A revocation endpoint that is down does not fail the deletion.
    let (id, _, refresh) = provision(&server, &fake, "deadrevoke").await;
    let response = server
        .authed(Method::DELETE, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let gone = server
        .authed(Method::GET, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    assert!(fake.is_refresh_token_valid(&refresh));
    assert_eq!(fake.revocation_calls(), 1);
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_resolve_over_http_and_region_domains_are_restricted() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let by_alias: Value = server
        .authed(Method::GET, "/elements/sfdc")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(by_alias["key"], "salesforce");
    assert_eq!(by_alias["aliases"], json!(["sfdc"]));
    let close: Value = server
        .authed(Method::GET, "/elements/closeio")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(close["key"], "close");

    let query = "apiKey=cid&apiSecret=s&callbackUrl=https%3A%2F%2Fapp.test%2Fcb";
    let eu: Value = server
        .authed(
            Method::GET,
            &format!("/elements/zohocrm/oauth/url?{query}&region_domain=eu"),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        eu["oauthUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://accounts.zoho.eu/oauth/v2/auth?"),
        "{eu}"
    );
    let evil = server
        .authed(
            Method::GET,
            &format!("/elements/zohocrm/oauth/url?{query}&region_domain=evil.test"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status().as_u16(), 400);
    let body: Value = evil.json().await.unwrap();
    assert!(
        body.to_string().contains("region_domain")
            && body.to_string().contains("must be one of com, eu"),
        "{body}"
    );
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_hosts_obey_the_rules_and_the_allow_list() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let query = "apiKey=cid&callbackUrl=https%3A%2F%2Fapp.test%2Fcb";
    let get = |host: &str| {
        server
            .authed(
                Method::GET,
                &format!("/elements/selfhosted/oauth/url?{query}&host={host}"),
            )
            .send()
    };
    let ok: Value = get("sso.acme.com").await.unwrap().json().await.unwrap();
    assert!(
        ok["oauthUrl"]
            .as_str()
            .unwrap()
            .starts_with("https://sso.acme.com/realms/main/auth?"),
        "{ok}"
    );
    for (host, needle) in [
        ("sso.evil.test", "allowed_custom_hosts: acme.com"),
        ("10.0.0.1", "not an IP address"),
        ("localhost", "not a single label"),
    ] {
        let r = get(host).await.unwrap();
        assert_eq!(r.status().as_u16(), 400, "{host}");
        let body = r.text().await.unwrap();
        assert!(
            body.contains("host") && body.contains(needle),
            "{host}: {body}"
        );
    }
    let body = json!({
        "element": { "key": "selfhosted" },
        "name": "s",
        "providerData": { "access_token": "at-1" },
        "configuration": { "host": "sso.evil.test" }
    });
    let (status, answer) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer.to_string().contains("allowed_custom_hosts"),
        "{answer}"
    );
    server.stop().await;
    fake.shutdown().await;
}

/// A code from the fake provider's authorize endpoint for `client`.
async fn authorization_code(fake: &FakeProvider, client: &str, callback: &str) -> String {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(fake.authorize_url())
        .query(&[
            ("client_id", client),
            ("redirect_uri", callback),
            ("scope", "a"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_owned()
}

async fn stored(server: &TestServer, id: i64) -> elements_store::Instance {
    server
        .state
        .store
        .instance_any(id)
        .await
        .unwrap()
        .expect("instance stored")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_token_fields_are_stored_at_creation_and_on_every_refresh() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    fake.add_client("keep-client", "keep-secret");
    let extra = |url: &str| {
        let mut m = serde_json::Map::new();
        m.insert("instance_url".into(), json!(url));
        m
    };
    let configuration = json!({
        "oauth.api.key": "keep-client",
        "oauth.api.secret": "keep-secret",
        "oauth.callback.url": "https://app.test/cb"
    });

    // 1. A code exchange: the answer's instance_url is kept.
    fake.set_token_extra(extra("https://eu1.acme.com"));
    let code = authorization_code(&fake, "keep-client", "https://app.test/cb").await;
    let body = json!({
        "element": { "key": "keeper" },
        "name": "k",
        "providerData": { "code": code },
        "configuration": configuration
    });
    let (status, created) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let instance = stored(&server, id).await;
    assert_eq!(
        instance.configuration.get("sf.instance_url"),
        Some("https://eu1.acme.com")
    );
    // The proxy's API base is built from it.
    let spec = server
        .state
        .registry
        .by_key("keeper")
        .unwrap()
        .spec()
        .clone();
    assert_eq!(
        spec.base_url_for(&instance.configuration)
            .unwrap()
            .as_deref(),
        Some("https://eu1.acme.com/services/data/v60.0")
    );

    // 2. A refresh: the new value replaces the old one, with the tokens.
    fake.set_token_extra(extra("https://eu2.acme.com"));
    expire(server.state.store.as_ref(), id).await;
    let version = stored(&server, id).await.token_version;
    let (status, answer) = credentials(&server.client, &server.base, id, &token).await;
    assert_eq!(status, 200, "{answer}");
    let after = stored(&server, id).await;
    assert_eq!(after.token_version, version + 1);
    assert_eq!(
        after.configuration.get("sf.instance_url"),
        Some("https://eu2.acme.com")
    );
    assert_eq!(
        after.configuration.get("oauth.api.key"),
        Some("keep-client")
    );
    // A value that breaks the host rules is not kept: the old one stays.
    fake.set_token_extra(extra("https://10.0.0.1"));
    expire(server.state.store.as_ref(), id).await;
    let (status, _) = credentials(&server.client, &server.base, id, &token).await;
    assert_eq!(status, 200);
    assert_eq!(
        stored(&server, id)
            .await
            .configuration
            .get("sf.instance_url"),
        Some("https://eu2.acme.com")
    );

    // 3. Tokens given in providerData: instance_url and the captured
    //    realmId are read from its other keys; undeclared keys are dropped.
    let body = json!({
        "element": { "key": "keeper" },
        "name": "k2",
        "providerData": {
            "access_token": "at-given",
            "instance_url": "https://eu3.acme.com",
            "realmId": 4620816365_u64,
            "other": "dropped"
        },
        "configuration": configuration
    });
    let (status, created) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200, "{created}");
    let given = stored(&server, created["id"].as_i64().unwrap()).await;
    assert_eq!(
        given.configuration.get("sf.instance_url"),
        Some("https://eu3.acme.com")
    );
    assert_eq!(given.configuration.get("realmId"), Some("4620816365"));
    assert_eq!(given.configuration.get("other"), None);
    // The instance JSON shows them (not secrets).
    assert_eq!(
        created["configuration"]["realmId"], "4620816365",
        "{created}"
    );
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_racing_a_refresh_never_keeps_the_losing_refresh_token() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    put_races_refresh(&server, &fake).await;
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_racing_a_refresh_never_keeps_the_losing_refresh_token_on_postgres() {
    let pg = elements_testkit::pg::PgCluster::shared().expect("postgres (run scripts/setup.sh)");
    let url = pg.create_database("leftovers_put_race").expect("database");
    let fake = FakeProvider::start().await;
    let (_dir, server) = start_on(&fake, Some(url)).await;
    put_races_refresh(&server, &fake).await;
    server.stop().await;
    fake.shutdown().await;
}

/// Three rounds of a `PUT` with new tokens arriving while a refresh waits
/// for the provider: the `PUT`'s tokens must stand.
async fn put_races_refresh(server: &TestServer, fake: &FakeProvider) {
    for round in 0..3 {
        let (id, token, _) = provision(server, fake, "jsonbody").await;
        expire(server.state.store.as_ref(), id).await;
        // The provider rotates, then takes its time to answer: the refresh
        // holds the lock meanwhile.
        fake.set_latency_after_processing(std::time::Duration::from_millis(400));
        let before = fake.refresh_calls();
        let refresher = {
            let (client, base, token) = (server.client.clone(), server.base.clone(), token.clone());
            tokio::spawn(async move { credentials(&client, &base, id, &token).await })
        };
        // Let the refresh take the lock and call the provider.
        while fake.refresh_calls() == before {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let put_refresh = format!("rt-put-{round}");
        let put = server
            .authed(Method::PUT, &format!("/instances/{id}"))
            .json(&json!({
                "name": "re-provisioned",
                "providerData": {
                    "access_token": format!("at-put-{round}"),
                    "refresh_token": put_refresh,
                    "expires_in": 3600
                }
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
        let (status, _) = refresher.await.unwrap();
        assert_eq!(status, 200);
        fake.set_latency_after_processing(std::time::Duration::ZERO);
        let after = server
            .state
            .store
            .instance_any(id)
            .await
            .unwrap()
            .expect("instance");
        // The PUT came last (it waited for the refresh's lock): its tokens
        // stand, not the ones the refresh obtained with the old grant.
        assert_eq!(
            after
                .tokens
                .refresh_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            Some(put_refresh),
            "round {round}"
        );
        assert_eq!(after.name, "re-provisioned");
        assert_eq!(
            after
                .tokens
                .access_token
                .as_ref()
                .map(|t| t.expose().to_owned()),
            Some(format!("at-put-{round}"))
        );
    }
}

#[test]
fn scopes_with_placeholders_are_refused_at_check_time() {
    let fake_urls = "[oauth]\nauthorization_url = \"https://a.example.com/auth\"\n\
                     token_url = \"https://a.example.com/token\"\n";
    let head = "id = 7\nkey = \"demo\"\nname = \"Demo\"\ndescription = \"d\"\nimage = \"i\"\n\
                hub = \"crm\"\nauthentication = \"oauth2\"\nexisting_account_description = \"e\"\n\
                config_description = \"c\"\n";
    let tail = "[[configuration]]\nkey = \"tenant\"\nname = \"Tenant\"\n";
    for field in ["default_scope", "fixed_scope"] {
        let text = format!("{head}{fake_urls}{field} = \"api://{{tenant}}/.default\"\n{tail}");
        let errors = elements_core::ElementSpec::parse("demo.toml", &text).unwrap_err();
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            text,
            format!(
                "demo.toml:13: field `oauth.{field}`: scopes are sent as written and take no \
                 `{{placeholder}}`; write the scopes out (a caller may pass `scope` to \
                 `oauth/url`), or move the value into `authorization_params`, which may use \
                 placeholders"
            )
        );
    }
    // Written out, the same scope is fine.
    let text = format!("{head}{fake_urls}default_scope = \"api://acme/.default\"\n{tail}");
    assert!(elements_core::ElementSpec::parse("demo.toml", &text).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zoho_eu_instance_uses_eu_hosts_for_authorize_token_and_api() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let query = "apiKey=cid&callbackUrl=https%3A%2F%2Fapp.test%2Fcb";
    let zoho: Vec<String> = server
        .state
        .registry
        .iter()
        .map(|e| e.key().to_owned())
        .filter(|k| k.starts_with("zoho") || k == "servicedeskplus")
        .collect();
    assert!(zoho.len() >= 27, "{zoho:?}");
    for key in &zoho {
        for (region, host) in [
            ("", "accounts.zoho.com"),
            ("&region_domain=eu", "accounts.zoho.eu"),
        ] {
            let r = server
                .authed(
                    Method::GET,
                    &format!("/elements/{key}/oauth/url?{query}{region}"),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{key}");
            let body: Value = r.json().await.unwrap();
            let url = body["oauthUrl"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("https://{host}/oauth/v2/auth?")),
                "{key}: {url}"
            );
        }
        // A value outside the list never moves the domain.
        let r = server
            .authed(
                Method::GET,
                &format!("/elements/{key}/oauth/url?{query}&region_domain=evil.com"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{key}");
        assert!(r.text().await.unwrap().contains("region_domain"), "{key}");
    }

    // An instance in the EU data centre: token, refresh and API on .eu.
    let body = json!({
        "element": { "key": "zohocrm" },
        "name": "eu",
        "providerData": { "access_token": "at-eu", "refresh_token": "rt-eu" },
        "configuration": {
            "oauth.api.key": "cid",
            "oauth.api.secret": "cs",
            "oauth.callback.url": "https://app.test/cb",
            "region_domain": "eu"
        }
    });
    let (status, created) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200, "{created}");
    let instance = stored(&server, created["id"].as_i64().unwrap()).await;
    let spec = server
        .state
        .registry
        .by_key("zohocrm")
        .unwrap()
        .spec()
        .clone();
    let code = elements_core::Secret::new("c");
    let exchange = elements_core::standard::code_exchange_request(
        &spec,
        &elements_core::CodeExchange {
            code: &code,
            configuration: &instance.configuration,
            code_verifier: None,
        },
    )
    .unwrap();
    assert_eq!(exchange.url, "https://accounts.zoho.eu/oauth/v2/token");
    let refresh_token = elements_core::Secret::new("rt-eu");
    let refresh = elements_core::standard::refresh_request(
        &spec,
        &elements_core::RefreshRequest {
            refresh_token: &refresh_token,
            configuration: &instance.configuration,
        },
    )
    .unwrap();
    assert_eq!(refresh.url, "https://accounts.zoho.eu/oauth/v2/token");
    assert_eq!(
        spec.base_url_for(&instance.configuration)
            .unwrap()
            .as_deref(),
        Some("https://www.zohoapis.eu/crm/v8")
    );
    // Without a region: the .com data centre.
    let mut default = elements_core::Configuration::new();
    for (k, v) in instance
        .configuration
        .iter()
        .filter(|(k, _)| *k != "region_domain")
    {
        default.insert(k, v);
    }
    assert_eq!(
        spec.base_url_for(&default).unwrap().as_deref(),
        Some("https://www.zohoapis.com/crm/v8")
    );
    server.stop().await;
    fake.shutdown().await;
}
