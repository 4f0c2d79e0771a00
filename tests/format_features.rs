//! The format features of issue 13 part 2 through the real server (real
//! HTTP on 127.0.0.1, a real SQLite file, the fake provider): token
//! requests as JSON and as GET, revocation when an instance is deleted,
//! aliases, restricted host placeholders.

mod common;

use std::collections::BTreeMap;

use common::*;
use elements_client::{CreateInstance, OAuthUrlRequest, ProviderData, UpdateInstance};
use elements_testkit::provider::FakeProvider;
use serde_json::json;

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
    let body = CreateInstance::new(key, key)
        .provider_data(ProviderData::tokens(&access, &refresh).expires_in(1800))
        .configuration("oauth.api.key", "fmt-client")
        .configuration("oauth.api.secret", "fmt-secret")
        .configuration("oauth.callback.url", "https://app.test/cb");
    let created = server.api().create_instance(&body).await.unwrap();
    (created.id, created.token.unwrap().into_inner(), refresh)
}

/// `oauth/url` of `key` with the client id `cid`, the callback
/// `https://app.test/cb` and `params`.
async fn oauth_url(
    server: &TestServer,
    key: &str,
    params: &[(&str, &str)],
) -> Result<elements_client::OAuthUrl, elements_client::Error> {
    let mut request = OAuthUrlRequest::new()
        .api_key("cid")
        .callback_url("https://app.test/cb");
    for (name, value) in params {
        request = request.param(*name, *value);
    }
    server.api().oauth_url(key, &request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_as_json_and_as_get_refresh_for_real() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    for (n, key) in ["jsonbody", "getquery"].into_iter().enumerate() {
        let (id, token, old_refresh) = provision(&server, &fake, key).await;
        expire(server.state.store.as_ref(), id).await;
        let body = element_credentials(&server, id, &token)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"));
        let access = body
            .access_token
            .unwrap_or_else(|| panic!("{key}: no access token"));
        assert!(fake.is_access_token_valid(access.expose()), "{key}");
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
    let api = server.api();
    let (id, _, refresh) = provision(&server, &fake, "revoking").await;
    assert!(fake.is_refresh_token_valid(&refresh));
    // Raw (the client's escape hatch) once: the exact status, 200, is
    // asserted; the typed `delete_instance` below accepts any 2xx.
    let response = api
        .request(reqwest::Method::DELETE, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(fake.revocation_calls(), 1);
    assert!(!fake.is_refresh_token_valid(&refresh));
    assert_eq!(fake.revoked_families(), 1);

    // An element without revocation_url: nothing is sent.
    let (id, _, refresh) = provision(&server, &fake, "jsonbody").await;
    api.delete_instance(id).await.unwrap();
    assert_eq!(fake.revocation_calls(), 1);
    assert!(fake.is_refresh_token_valid(&refresh));

    // A revocation endpoint that is down does not fail the deletion.
    let (id, _, refresh) = provision(&server, &fake, "deadrevoke").await;
    api.delete_instance(id).await.unwrap();
    let gone = refused(api.instance(id).await);
    assert_eq!(gone.status, 404, "{gone}");
    assert!(fake.is_refresh_token_valid(&refresh));
    assert_eq!(fake.revocation_calls(), 1);
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_resolve_over_http_and_region_domains_are_restricted() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let api = server.api();
    let by_alias = api.element("sfdc").await.unwrap();
    assert_eq!(by_alias.metadata.key, "salesforce");
    assert_eq!(by_alias.aliases, ["sfdc"]);
    let close = api.element("closeio").await.unwrap();
    assert_eq!(close.metadata.key, "close");

    let zoho = |region: &str| {
        OAuthUrlRequest::new()
            .api_key("cid")
            .api_secret("s")
            .callback_url("https://app.test/cb")
            .param("region_domain", region)
    };
    let eu = api.oauth_url("zohocrm", &zoho("eu")).await.unwrap();
    assert!(
        eu.oauth_url
            .starts_with("https://accounts.zoho.eu/oauth/v2/auth?"),
        "{eu:?}"
    );
    let evil = refused(api.oauth_url("zohocrm", &zoho("evil.test")).await);
    assert_eq!(evil.status, 400);
    assert!(
        evil.message().contains("region_domain")
            && evil.message().contains("must be one of com, eu"),
        "{evil}"
    );
    server.stop().await;
    fake.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_hosts_obey_the_rules_and_the_allow_list() {
    let fake = FakeProvider::start().await;
    let (_dir, server) = start(&fake).await;
    let ok = oauth_url(&server, "selfhosted", &[("host", "sso.acme.com")])
        .await
        .unwrap();
    assert!(
        ok.oauth_url
            .starts_with("https://sso.acme.com/realms/main/auth?"),
        "{ok:?}"
    );
    for (host, needle) in [
        ("sso.evil.test", "allowed_custom_hosts: acme.com"),
        ("10.0.0.1", "not an IP address"),
        ("localhost", "not a single label"),
    ] {
        let err = refused(oauth_url(&server, "selfhosted", &[("host", host)]).await);
        assert_eq!(err.status, 400, "{host}");
        assert!(
            err.message().contains("host") && err.message().contains(needle),
            "{host}: {err}"
        );
    }
    let body = CreateInstance::new("selfhosted", "s")
        .provider_data(ProviderData {
            access_token: Some("at-1".into()),
            ..ProviderData::default()
        })
        .configuration("host", "sso.evil.test");
    let err = refused(server.api().create_instance(&body).await);
    assert_eq!(err.status, 400, "{err}");
    assert!(err.message().contains("allowed_custom_hosts"), "{err}");
    server.stop().await;
    fake.shutdown().await;
}

/// A code from the fake provider's authorize endpoint for `client` (raw:
/// the fake provider, not our API).
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
    let api = server.api();
    let keeper = |name: &str| {
        CreateInstance::new("keeper", name)
            .configuration("oauth.api.key", "keep-client")
            .configuration("oauth.api.secret", "keep-secret")
            .configuration("oauth.callback.url", "https://app.test/cb")
    };

    // 1. A code exchange: the answer's instance_url is kept.
    fake.set_token_extra(extra("https://eu1.acme.com"));
    let code = authorization_code(&fake, "keep-client", "https://app.test/cb").await;
    let created = api
        .create_instance(&keeper("k").provider_data(ProviderData::code(code)))
        .await
        .unwrap();
    let id = created.id;
    let token = created.token.unwrap().into_inner();
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
    element_credentials(&server, id, &token).await.unwrap();
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
    element_credentials(&server, id, &token).await.unwrap();
    assert_eq!(
        stored(&server, id)
            .await
            .configuration
            .get("sf.instance_url"),
        Some("https://eu2.acme.com")
    );

    // 3. Tokens given in providerData: instance_url and the captured
    //    realmId are read from its other keys; undeclared keys are dropped.
    let given_tokens = ProviderData {
        access_token: Some("at-given".into()),
        ..ProviderData::default()
    };
    let fields = BTreeMap::from([
        ("instance_url".to_owned(), json!("https://eu3.acme.com")),
        ("realmId".to_owned(), json!(4620816365_u64)),
        ("other".to_owned(), json!("dropped")),
    ]);
    let created = api
        .create_instance_with_provider_fields(&keeper("k2").provider_data(given_tokens), &fields)
        .await
        .unwrap();
    let given = stored(&server, created.id).await;
    assert_eq!(
        given.configuration.get("sf.instance_url"),
        Some("https://eu3.acme.com")
    );
    assert_eq!(given.configuration.get("realmId"), Some("4620816365"));
    assert_eq!(given.configuration.get("other"), None);
    // The instance JSON shows them (not secrets).
    assert_eq!(
        created.configuration.get("realmId").map(String::as_str),
        Some("4620816365"),
        "{created:?}"
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
            let client = server.anonymous().with_element(&token);
            tokio::spawn(async move { client.credentials(id).await })
        };
        // Let the refresh take the lock and call the provider.
        while fake.refresh_calls() == before {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let put_refresh = format!("rt-put-{round}");
        let put = UpdateInstance::new().name("re-provisioned").provider_data(
            ProviderData::tokens(format!("at-put-{round}"), &put_refresh).expires_in(3600),
        );
        server.api().replace_instance(id, &put).await.unwrap();
        refresher.await.unwrap().unwrap();
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
            (&[][..], "accounts.zoho.com"),
            (&[("region_domain", "eu")][..], "accounts.zoho.eu"),
        ] {
            let body = oauth_url(&server, key, region)
                .await
                .unwrap_or_else(|e| panic!("{key}: {e}"));
            let url = body.oauth_url;
            assert!(
                url.starts_with(&format!("https://{host}/oauth/v2/auth?")),
                "{key}: {url}"
            );
        }
        // A value outside the list never moves the domain.
        let err = refused(oauth_url(&server, key, &[("region_domain", "evil.com")]).await);
        assert_eq!(err.status, 400, "{key}");
        assert!(err.message().contains("region_domain"), "{key}: {err}");
    }

    // An instance in the EU data centre: token, refresh and API on .eu.
    let body = CreateInstance::new("zohocrm", "eu")
        .provider_data(ProviderData::tokens("at-eu", "rt-eu"))
        .configuration("oauth.api.key", "cid")
        .configuration("oauth.api.secret", "cs")
        .configuration("oauth.callback.url", "https://app.test/cb")
        .configuration("region_domain", "eu");
    let created = server.api().create_instance(&body).await.unwrap();
    let instance = stored(&server, created.id).await;
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
