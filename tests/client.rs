//! The typed client (crates/client) on the routes the other converted
//! files do not reach: callback allow-list, webhooks, events, connect
//! sessions, both proxy entrances, OAuth 1.0a signing, probes; and that
//! nothing it holds or answers prints a secret in `Debug`.

mod common;

use std::sync::Arc;

use common::*;
use elements_client::{
    Client, CreateConnectSession, CreateInstance, CreateWebhook, Error, ProviderData,
};
use elements_testkit::api::{Expect, FakeApi};
use reqwest::Method;
use serde_json::Value;

#[tokio::test]
async fn callback_allow_list_round_trips_and_is_enforced() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    assert_eq!(api.callback_urls().await.unwrap(), Vec::<String>::new());
    let list = vec!["https://app.example/cb".to_owned()];
    assert_eq!(api.set_callback_urls(&list).await.unwrap(), list);
    assert_eq!(api.callback_urls().await.unwrap(), list);
    // The seed's callback is not in the list: refused on create.
    let err = common::refused(api.create_instance(&seed_instance("at", "rt")).await);
    assert_eq!(err.status, 400);
    assert_eq!(
        err.message(),
        "`callbackUrl` is not in the organization's allow-list of callback URLs"
    );
    let err = common::refused(api.set_callback_urls(&["not a url".to_owned()]).await);
    assert_eq!(err.status, 400, "{err}");
    server.stop().await;
}

#[tokio::test]
async fn webhooks_and_events() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.webhooks.allow_private = true;
    let server = TestServer::start(config).await;
    let api = server.api();
    let created = api
        .create_webhook(&CreateWebhook::new("http://127.0.0.1:9/hooks").events(["instance.*"]))
        .await
        .unwrap();
    let secret = created.secret.clone().expect("the secret, once");
    assert!(secret.expose().starts_with("whsec_"), "a whsec_ secret");
    assert!(!format!("{created:?}").contains(secret.expose()));
    assert_eq!(created.events, ["instance.*"]);
    assert!(created.enabled);
    let listed = api.webhooks().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, created.id);
    assert_eq!(listed[0].secret, None, "shown once only");

    let instance = api
        .create_instance(&seed_instance("at-ev", "rt-ev"))
        .await
        .unwrap();
    let events = api.events(Some(10)).await.unwrap();
    let event = events
        .iter()
        .find(|e| e.kind == "instance.created")
        .expect("instance.created in the outbox");
    assert_eq!(
        event.payload["data"]["instanceId"], instance.id,
        "{event:?}"
    );
    assert!(
        event.deliveries.iter().all(|d| d.webhook_id == created.id),
        "{event:?}"
    );
    let again = api.redeliver_event(&event.id).await.unwrap();
    assert_eq!(again.id, event.id);
    let err = common::refused(api.redeliver_event("msg_aaaaaaaaaaaaaaaaaaaaaaaaaa").await);
    assert_eq!(err.status, 404);
    let err = common::refused(api.events(Some(501)).await);
    assert_eq!(err.message(), "`limit` must be an integer from 1 to 500");

    api.delete_webhook(created.id).await.unwrap();
    assert!(api.webhooks().await.unwrap().is_empty());
    let err = common::refused(api.delete_webhook(created.id).await);
    assert_eq!(
        (err.status.as_u16(), err.message()),
        (404, format!("no webhook with id {}", created.id).as_str())
    );
    server.stop().await;
}

#[tokio::test]
async fn connect_sessions() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.public_url = Some("https://elements.example".into());
    let server = TestServer::start(config).await;
    let session = server
        .api()
        .create_connect_session(
            &CreateConnectSession::new("github", "Acme GitHub", "https://app.example/connected")
                .configuration("oauth.api.key", "cid")
                .configuration("oauth.api.secret", "csecret-DEBUG-PROBE")
                .tags(["acme"])
                .end_user("customer-42"),
        )
        .await
        .unwrap();
    assert_eq!(
        session.url.expose(),
        format!(
            "https://elements.example/elements/api-v2/connect/{}",
            session.token.expose()
        )
    );
    assert!(session.expires_at.ends_with('Z'), "{}", session.expires_at);
    assert!(!format!("{session:?}").contains(session.token.expose()));
    // Without credentials: the 401 every bad credential gets.
    let err = common::refused(
        server
            .anonymous()
            .create_connect_session(&CreateConnectSession::new(
                "github",
                "x",
                "https://a.example/",
            ))
            .await,
    );
    assert_eq!(err.status, 401);
    server.stop().await;
}

#[tokio::test]
async fn proxy_escape_hatches_carry_the_credentials() {
    let api_fake = FakeApi::start().await;
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config
        .api_base_urls
        .insert("hubspot".into(), api_fake.base_url());
    let server = TestServer::start(config).await;
    let created = server
        .api()
        .create_instance(&seed_instance("at-proxy", "rt-proxy"))
        .await
        .unwrap();
    api_fake.expect(Expect::Bearer(Arc::new(|t| t == "at-proxy")));
    let id = created.id;
    let scoped = server.anonymous().with_element(created.token.unwrap());

    // The instance entrance, with the account.
    let response = server
        .api()
        .proxy(id, Method::GET, "/crm/v3/objects/contacts?limit=5")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/crm/v3/objects/contacts");
    assert_eq!(echo["query"], "limit=5");
    assert_eq!(echo["headers"]["authorization"], "Bearer at-proxy");
    // With a body, through the unsent builder and the Element token.
    let response = scoped
        .proxy_request(id, Method::POST, "crm/v3/objects/contacts")
        .json(&serde_json::json!({"properties": {"email": "a@b.test"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    // The hub entrance maps HubSpot's normalised contacts.
    let response = scoped
        .hub("marketing", Method::GET, "contacts")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let echo: Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/crm/v3/objects/contacts");
    // Without credentials: our 401, not the provider's.
    let response = server
        .anonymous()
        .proxy(id, Method::GET, "contacts")
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid or missing credentials"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn oauth1_credentials_and_signing() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let flickr = api
        .create_instance(
            &CreateInstance::new("flickr", "photos")
                .provider_data(ProviderData::oauth1("tok-1", "tok-secret-1"))
                .configuration("oauth.api.key", "consumer-1")
                .configuration("oauth.api.secret", "consumer-secret-1"),
        )
        .await
        .unwrap();
    let public = api.credentials(flickr.id).await.unwrap();
    assert_eq!(public.kind.as_deref(), Some("oauth1"));
    assert_eq!(public.consumer_key.as_deref(), Some("consumer-1"));
    assert_eq!(public.token.as_ref().unwrap().expose(), "tok-1");
    assert!(public.signing.is_some());
    let signed = api
        .oauth1_signature(flickr.id, "GET", "https://api.flickr.com/services/rest")
        .await
        .unwrap();
    let header = signed.headers["Authorization"].expose();
    assert!(header.starts_with("OAuth "), "{header}");
    assert!(header.contains("oauth_token=\"tok-1\""), "{header}");
    let shown = format!("{signed:?}");
    assert!(
        !shown.contains("tok-1") && !shown.contains("oauth_signature"),
        "{shown}"
    );
    server.stop().await;
}

#[tokio::test]
async fn errors_carry_status_body_and_request_id() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let wrong = server
        .anonymous()
        .with_account("no-such-user", "no-such-org");
    match wrong.instance(1).await {
        Err(Error::Api(e)) => {
            assert_eq!(e.status, 401);
            let body = e.body.as_ref().expect("Cloud Elements' JSON error");
            assert_eq!(
                body.message,
                "invalid or missing credentials: expected `Authorization: User <secret>, Organization <secret>`"
            );
            assert_eq!(e.request_id.as_deref(), Some(body.request_id.as_str()));
            assert!(!e.elements_error);
            let shown = format!("{e} {e:?} {wrong:?}");
            assert!(!shown.contains("no-such-user"), "{shown}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing listens: a transport error, no status.
    let gone = Client::new("http://127.0.0.1:9").unwrap();
    let err = gone.healthz().await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(err.status(), None);
    server.stop().await;
}

/// Organization-private elements through the client: create, read, export,
/// clone, deactivate and re-activate, delete; anonymous callers never see them.
#[tokio::test]
async fn private_elements_round_trip() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let api = server.api();
    let body = serde_json::json!({
        "key": "client-crm",
        "name": "Client CRM",
        "description": "A CRM reached through the typed client",
        "image": "elements/provider_client_crm.png",
        "existing_account_description": "Use your Client CRM account",
        "config_description": "Register an app with Client CRM",
        "hub": "crm",
        "authentication": "oauth2",
        "oauth": {
            "authorization_url": "https://login.client-crm.example/oauth/authorize",
            "token_url": "https://login.client-crm.example/oauth/token"
        },
        "configuration": [
            { "key": "oauth.api.key", "name": "Client ID" },
            { "key": "oauth.api.secret", "name": "Client secret", "secret": true },
            { "key": "oauth.callback.url", "name": "Callback URL" }
        ]
    });
    let created = api.create_element(&body).await.unwrap();
    assert!(created.private);
    assert_eq!(created.metadata.key, "client-crm");
    assert!(
        created.metadata.id >= 1_000_000_000,
        "a private id: {}",
        created.metadata.id
    );
    assert_eq!(
        api.element("client-crm").await.unwrap().metadata.id,
        created.metadata.id
    );
    let err = common::refused(server.anonymous().element("client-crm").await);
    assert_eq!(err.status, 404, "{err}");

    let toml = api.export_element("client-crm").await.unwrap();
    assert!(toml.contains("key = \"client-crm\""), "{toml}");
    assert!(
        toml.contains("https://login.client-crm.example/oauth/token"),
        "{toml}"
    );

    let copy = api
        .clone_element(
            "client-crm",
            Some(&serde_json::json!({"key": "client-crm-2"})),
        )
        .await
        .unwrap();
    assert_eq!(copy.metadata.key, "client-crm-2");
    assert_ne!(copy.metadata.id, created.metadata.id);

    let off = api.deactivate_element("client-crm").await.unwrap();
    assert!(!off.metadata.active);
    let err = common::refused(
        api.oauth_url(
            "client-crm",
            &elements_client::OAuthUrlRequest::new()
                .api_key("id")
                .api_secret("s")
                .callback_url("https://app.example/cb"),
        )
        .await,
    );
    assert_eq!(err.status, 409, "{err}");
    assert!(err.message().contains("deactivated"), "{err}");
    assert!(
        api.activate_element("client-crm")
            .await
            .unwrap()
            .metadata
            .active
    );

    let mut renamed = body.clone();
    renamed["name"] = "Client CRM, renamed".into();
    let replaced = api.replace_element("client-crm", &renamed).await.unwrap();
    assert_eq!(replaced.metadata.name, "Client CRM, renamed");
    assert_eq!(replaced.metadata.id, created.metadata.id);

    api.delete_element("client-crm").await.unwrap();
    api.delete_element("client-crm-2").await.unwrap();
    let err = common::refused(api.element("client-crm").await);
    assert_eq!(err.status, 404, "{err}");
    server.stop().await;
}

/// The client checks each route's documented success status exactly (201,
/// 202, 204 where the description says so; an `Ok` means that status) and
/// keeps a refusal's whole body as text, so tests can search all of it.
#[tokio::test]
async fn exact_success_statuses_and_whole_error_bodies() {
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.webhooks.allow_private = true;
    let server = TestServer::start(config).await;
    let api = server.api();
    // 201, then 204: typed calls that succeed only on exactly those.
    let hook = api
        .create_webhook(&CreateWebhook::new("http://127.0.0.1:9/exact"))
        .await
        .unwrap();
    api.delete_webhook(hook.id).await.unwrap();
    // The same 201 seen raw: what the typed call required.
    let raw = api
        .request(Method::POST, "/organizations/me/webhooks")
        .json(&serde_json::json!({"url": "http://127.0.0.1:9/raw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 201);

    // A refusal keeps its whole body, byte for byte, beside the parsed one.
    let err = api
        .create_instance(
            &CreateInstance::new("hubspot", "no configuration")
                .provider_data(ProviderData::tokens("at-RAW-1", "rt-RAW-2")),
        )
        .await
        .unwrap_err();
    let body = err.body_text().expect("a refusal").to_owned();
    let parsed: Value = serde_json::from_str(&body).unwrap();
    let api_error = err.api().unwrap();
    assert_eq!(api_error.status, 400);
    assert_eq!(parsed["message"], api_error.message());
    assert_eq!(
        parsed["missing"],
        serde_json::json!([
            "oauth.api.key",
            "oauth.api.secret",
            "oauth.callback.url",
            "oauth.scope"
        ])
    );
    assert_eq!(
        parsed["requestId"].as_str(),
        api_error.request_id.as_deref()
    );
    assert_eq!(api_error.raw(), body);
    for secret in ["at-RAW-1", "rt-RAW-2"] {
        assert!(!body.contains(secret), "{body}");
    }
    // A success is never an error body.
    assert_eq!(
        api.callback_urls()
            .await
            .map_err(|e| e.body_text().map(str::to_owned)),
        Ok(Vec::<String>::new())
    );
    server.stop().await;
}
