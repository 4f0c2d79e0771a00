//! Organization-private elements through the API (issue 17), against the
//! real binary: SQLite for the lifecycle, two replicas on a throwaway
//! PostgreSQL cluster for visibility across replicas.

mod common;

use std::time::Duration;

use common::*;
use elements_client::{
    Client, CreateInstance, ElementRef, Error, ListInstances, OAuthUrlRequest, ProviderData,
};
use elements_store::Keyring;
use elements_testkit::pg::PgCluster;
use reqwest::Method;
use serde_json::{json, Value};

/// A private OAuth 2.0 element, as a client would send it.
fn acme() -> Value {
    json!({
        "key": "acme-crm",
        "name": "Acme CRM",
        "description": "Acme's CRM",
        "image": "elements/provider_acme.png",
        "hub": "crm",
        "authentication": "oauth2",
        "existing_account_description": "Use your Acme account",
        "config_description": "Register an app with Acme",
        "api_base_url": "https://api.acme-crm.example/v1",
        "oauth": {
            "authorization_url": "https://login.acme-crm.example/oauth/authorize",
            "token_url": "https://login.acme-crm.example/oauth/token",
            "authorization_params": { "access_type": "offline" }
        },
        "configuration": [
            { "key": "oauth.api.key", "name": "Client ID" },
            { "key": "oauth.api.secret", "name": "Client secret", "secret": true },
            { "key": "oauth.callback.url", "name": "Callback URL" },
            { "key": "account.pin", "name": "PIN", "secret": true, "required": false }
        ]
    })
}

/// One deployment: the real binary over SQLite, its environment account
/// (organization A) and a second organization B made with the CLI.
struct Setup {
    _dir: tempfile::TempDir,
    _bin: Binary,
    /// Organization A's client.
    a: Client,
    /// Organization B's client.
    b: Client,
    /// No credentials.
    anonymous: Client,
}

const USER_A: &str = "user-a-secret-0123456789";
const ORG_A: &str = "org-a-secret-0123456789";

impl Setup {
    fn start() -> Setup {
        let dir = data_dir();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let bin = Binary::serve(
            &["--data-dir", data],
            &[
                ("ELEMENTS_ORGANIZATION_SECRET", ORG_A),
                ("ELEMENTS_USER_SECRET", USER_A),
            ],
        );
        let out = elements(&[
            "accounts",
            "create",
            "--organization",
            "Globex",
            "--email",
            "g@globex.test",
            "--data-dir",
            data,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b: Value = serde_json::from_slice(&out.stdout).unwrap();
        let anonymous = Client::new(&bin.base).expect("base URL");
        Setup {
            _dir: dir,
            a: anonymous.clone().with_account(USER_A, ORG_A),
            b: anonymous.clone().with_account(
                b["user"]["secret"].as_str().unwrap(),
                b["organization"]["secret"].as_str().unwrap(),
            ),
            anonymous,
            _bin: bin,
        }
    }
}

/// An element's JSON as `GET /elements/{keyOrId}` answers it. Raw: the
/// test asserts that `private` is absent (not `false`), which a typed
/// answer cannot tell apart.
async fn element_json(client: &Client, key: &str) -> Value {
    let response = client
        .request(Method::GET, &format!("/elements/{key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{key}");
    response.json().await.unwrap()
}

/// The `oauth/url` parameters of the tests.
fn acme_oauth() -> OAuthUrlRequest {
    OAuthUrlRequest::new()
        .api_key("acme-client")
        .api_secret("s3cr3t")
        .scope("read")
        .callback_url("https://app.example/cb")
        .state("xyz")
}

/// The TOML text as the JSON an API client would send back.
fn toml_to_json(text: &str) -> Value {
    let table: toml::Table = text.parse().expect("the export is TOML");
    serde_json::to_value(table).unwrap()
}

#[tokio::test]
async fn a_private_element_lives_through_create_use_export_clone_deactivate_delete() {
    let s = Setup::start();
    let a = &s.a;

    // Create.
    let created = a.create_element(&acme()).await.unwrap();
    let id = created.metadata.id;
    assert!(
        id > 1_000_000_000,
        "private ids are in the reserved range: {id}"
    );
    assert_eq!(created.metadata.key, "acme-crm");
    assert!(created.private);
    assert!(created.metadata.active);
    assert_eq!(created.hub, "crm");

    // Get, by key and by id.
    let by_key = a.element("acme-crm").await.unwrap();
    assert_eq!(by_key.metadata.id, id);
    assert!(by_key.private);
    let by_id = a.element(&id.to_string()).await.unwrap();
    assert_eq!(by_id.metadata.key, "acme-crm");
    let config = a.element_configuration("acme-crm").await.unwrap();
    assert_eq!(config[1].key, "oauth.api.secret");

    // The list: with the account, the built-ins plus its own, marked; anonymous, built-ins only.
    let listed = a.elements().await.unwrap();
    let own: Vec<_> = listed.iter().filter(|e| e.private).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].metadata.key, "acme-crm");
    assert!(listed.iter().any(|e| e.metadata.key == "hubspot"));
    let anonymous = s.anonymous.elements().await.unwrap();
    assert_eq!(anonymous.len() + 1, listed.len());
    assert!(!anonymous.iter().any(|e| e.metadata.key == "acme-crm"));
    let err = refused(s.anonymous.element("acme-crm").await);
    assert_eq!(err.status, 404, "{err}");

    // oauth/url.
    let url = a.oauth_url("acme-crm", &acme_oauth()).await.unwrap();
    assert_eq!(url.element, "acme-crm");
    let oauth_url = url.oauth_url.as_str();
    assert!(
        oauth_url.starts_with("https://login.acme-crm.example/oauth/authorize?"),
        "{oauth_url}"
    );
    assert!(oauth_url.contains("client_id=acme-client"), "{oauth_url}");
    assert!(oauth_url.contains("access_type=offline"), "{oauth_url}");

    // An instance of it.
    let instance_body = CreateInstance::new("acme-crm", "Acme of A")
        .provider_data(ProviderData::tokens("at-acme", "rt-acme").expires_in(3600))
        .configuration("oauth.api.key", "acme-client")
        .configuration("oauth.api.secret", "s3cr3t")
        .configuration("oauth.callback.url", "https://app.example/cb")
        .configuration("account.pin", "4242");
    let instance = a.create_instance(&instance_body).await.unwrap();
    let instance_id = instance.id;
    // The instance shows its private element, and masks what it declares secret.
    assert_eq!(instance.element.metadata.id, id);
    assert_eq!(instance.element.metadata.name, "Acme CRM");
    assert_eq!(instance.configuration["account.pin"], "********");
    let shown = a.instance(instance_id).await.unwrap();
    assert_eq!(
        (
            shown.element.metadata.key.as_str(),
            shown.element.metadata.deleted
        ),
        ("acme-crm", false)
    );
    let entries = a.instance_configuration(instance_id).await.unwrap();
    let pin = entries.iter().find(|e| e.key == "account.pin").unwrap();
    assert_eq!(pin.property_value, "********");
    let page = a.instances(&ListInstances::new()).await.unwrap();
    assert_eq!(page.items[0].element.metadata.name, "Acme CRM");
    let counted = a
        .element_instances("acme-crm", &ListInstances::new())
        .await
        .unwrap();
    assert_eq!(counted.items.len(), 1);

    // Export: the TOML file, which POST takes back (under another key).
    // Raw: its `Content-Type` is asserted.
    let response = a
        .request(Method::GET, "/elements/acme-crm/export")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/toml; charset=utf-8"
    );
    let exported = response.text().await.unwrap();
    assert_eq!(a.export_element("acme-crm").await.unwrap(), exported);
    assert!(exported.starts_with(&format!("id = {id}\n")), "{exported}");
    let mut again = toml_to_json(&exported);
    assert_eq!(
        again["oauth"]["token_url"],
        "https://login.acme-crm.example/oauth/token"
    );
    again["key"] = json!("acme-crm-2");
    let second = a.create_element(&again).await.unwrap();
    let second_id = second.metadata.id;
    assert!(second_id > id);
    let second_export = a.export_element("acme-crm-2").await.unwrap();
    assert_eq!(
        second_export,
        exported
            .replacen(&format!("id = {id}"), &format!("id = {second_id}"), 1)
            .replacen("key = \"acme-crm\"", "key = \"acme-crm-2\"", 1)
    );

    // Clone a built-in: it keeps its key, for this organization only.
    let clone = a.clone_element::<Value>("hubspot", None).await.unwrap();
    assert_eq!(clone.metadata.key, "hubspot");
    assert!(clone.private);
    let clone_id = clone.metadata.id;
    assert!(clone_id > 1_000_000_000);
    let seen_by_a = a.element("hubspot").await.unwrap();
    assert_eq!(seen_by_a.metadata.id, clone_id);
    // The built-in's id names the organization's element too (the key is shadowed).
    let by_builtin_id = a.element("43").await.unwrap();
    assert_eq!(by_builtin_id.metadata.id, clone_id);
    let seen_by_b = s.b.element("hubspot").await.unwrap();
    assert_eq!(to_json(&seen_by_b.metadata), seed_element());
    assert_eq!(seen_by_b.metadata.id, 43);
    let anonymous = s
        .anonymous
        .oauth_url("hubspot", &seed_oauth_request())
        .await
        .unwrap();
    assert_eq!(
        to_json(&anonymous),
        serde_json::from_str::<Value>(SEED_OAUTH_ANSWER).unwrap()
    );
    // A clone with changes, and the clone of a clone's key is refused.
    let renamed = a
        .clone_element(
            "hubspot",
            Some(&json!({"key": "my-hubspot", "name": "Our HubSpot"})),
        )
        .await
        .unwrap();
    assert_eq!(renamed.metadata.name, "Our HubSpot");
    let again = refused(a.clone_element::<Value>("hubspot", None).await);
    assert_eq!(again.status, 409, "{again}");
    assert!(again.message().contains("field `key`"), "{again}");

    // Deactivate: new instances and oauth/url are refused naming it; the
    // existing instance keeps working; the element shows active: false.
    let off = a.deactivate_element("acme-crm").await.unwrap();
    assert!(!off.metadata.active);
    let shown = a.element("acme-crm").await.unwrap();
    assert!(!shown.metadata.active);
    let err = refused(a.oauth_url("acme-crm", &acme_oauth()).await);
    assert_eq!(err.status, 409);
    assert_eq!(
        err.message(),
        "element `acme-crm` is deactivated for this organization (PUT /elements/acme-crm/active to activate it)"
    );
    let err = refused(a.create_instance(&instance_body).await);
    assert_eq!(err.status, 409);
    assert!(err.message().contains("element `acme-crm` is deactivated"));
    a.instance(instance_id).await.unwrap();
    // Another organization's view of a built-in is untouched by A's switch.
    a.deactivate_element("github").await.unwrap();
    let github_a = a.element("github").await.unwrap();
    let github_b = s.b.element("github").await.unwrap();
    assert_eq!(
        (github_a.metadata.active, github_b.metadata.active),
        (false, true)
    );
    // Re-activate.
    let on = a.activate_element("acme-crm").await.unwrap();
    assert!(on.metadata.active);
    a.oauth_url("acme-crm", &acme_oauth()).await.unwrap();

    // PUT replaces it (the id stays).
    let mut changed = acme();
    changed["name"] = json!("Acme CRM v2");
    let put = a.replace_element("acme-crm", &changed).await.unwrap();
    assert_eq!(
        (put.metadata.id, put.metadata.name.as_str()),
        (id, "Acme CRM v2")
    );

    // Delete: refused while an instance uses it, then done.
    let err = refused(a.delete_element("acme-crm").await);
    assert_eq!(err.status, 409);
    assert_eq!(
        err.message(),
        "element `acme-crm` has 1 instance(s): it cannot be deleted until they are deleted"
    );
    a.delete_instance(instance_id).await.unwrap();
    a.delete_element("acme-crm").await.unwrap();
    let gone = refused(a.element("acme-crm").await);
    assert_eq!(gone.status, 404, "{gone}");
    // Deleting the clone gives the built-in back.
    a.delete_element("hubspot").await.unwrap();
    let back = a.element("hubspot").await.unwrap();
    assert_eq!(back.metadata.id, 43);
    assert!(!back.private);
    let back = element_json(a, "hubspot").await;
    assert_eq!(back["id"], 43);
    assert!(back.get("private").is_none(), "{back}");
}

#[tokio::test]
async fn another_organization_gets_404s_and_cannot_be_shadowed() {
    let s = Setup::start();
    let (a, b) = (&s.a, &s.b);
    let created = a.create_element(&acme()).await.unwrap();
    let id = created.metadata.id;

    let answers: Vec<(&str, Result<(), Error>)> = vec![
        (
            "GET /elements/acme-crm",
            b.element("acme-crm").await.map(drop),
        ),
        (
            "GET /elements/{id}",
            b.element(&id.to_string()).await.map(drop),
        ),
        (
            "GET /elements/acme-crm/configuration",
            b.element_configuration("acme-crm").await.map(drop),
        ),
        (
            "GET /elements/acme-crm/oauth/url",
            b.oauth_url("acme-crm", &acme_oauth()).await.map(drop),
        ),
        (
            "GET /elements/acme-crm/export",
            b.export_element("acme-crm").await.map(drop),
        ),
        (
            "GET /elements/acme-crm/instances",
            b.element_instances("acme-crm", &ListInstances::new())
                .await
                .map(drop),
        ),
        (
            "PUT /elements/acme-crm/active",
            b.activate_element("acme-crm").await.map(drop),
        ),
        (
            "DELETE /elements/acme-crm/active",
            b.deactivate_element("acme-crm").await.map(drop),
        ),
        (
            "DELETE /elements/acme-crm",
            b.delete_element("acme-crm").await,
        ),
        (
            "POST /elements/acme-crm/clone",
            b.clone_element::<Value>("acme-crm", None).await.map(drop),
        ),
    ];
    for (what, answer) in answers {
        let err = refused(answer);
        assert_eq!(err.status, 404, "{what}: {err}");
        assert!(
            err.message().contains("no element with key or id"),
            "{what}: {err}"
        );
    }
    let err = refused(b.replace_element("acme-crm", &acme()).await);
    assert_eq!(err.status, 404, "{err}");
    let err = refused(
        b.create_instance(&CreateInstance::new("acme-crm", "x"))
            .await,
    );
    assert_eq!(err.status, 404, "{err}");
    let mut by_id = CreateInstance::new("acme-crm", "x");
    by_id.element = Some(ElementRef::id(id));
    let err = refused(b.create_instance(&by_id).await);
    assert_eq!(err.status, 404, "{err}");
    let listed = b.elements().await.unwrap();
    assert!(!listed.iter().any(|e| e.metadata.key == "acme-crm"));

    // B may use the same key for its own element: keys are per organization.
    let theirs = b.create_element(&acme()).await.unwrap();
    assert_ne!(theirs.metadata.id, created.metadata.id);

    // A shadows `hubspot` and `sfdc` (an alias) for itself; B and anonymous
    // callers still get the built-ins.
    a.clone_element::<Value>("hubspot", None).await.unwrap();
    a.clone_element("salesforce", Some(&json!({"name": "A's Salesforce"})))
        .await
        .unwrap();
    let sfdc_a = a.element("sfdc").await.unwrap();
    assert_eq!(sfdc_a.metadata.name, "A's Salesforce");
    let sfdc_b = b.element("sfdc").await.unwrap();
    assert_eq!(sfdc_b.metadata.key, "salesforce");
    assert_ne!(sfdc_b.metadata.name, "A's Salesforce");
    assert!(!sfdc_b.private);
    assert!(element_json(b, "sfdc").await.get("private").is_none());
    let hubspot_b = b.element("hubspot").await.unwrap();
    assert_eq!(hubspot_b.metadata.id, 43);
    let hubspot_anon = s.anonymous.element("hubspot").await.unwrap();
    assert_eq!(hubspot_anon.metadata.id, 43);
    // B cannot change or delete a built-in.
    let err = refused(b.delete_element("hubspot").await);
    assert_eq!(err.status, 403);
    assert!(
        err.message().contains("element `hubspot` is built in"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_elements_name_the_field_and_the_rule() {
    let s = Setup::start();
    let a = &s.a;
    let with = |path: &[&str], value: Value| {
        let mut body = acme();
        let mut slot = &mut body;
        for p in &path[..path.len() - 1] {
            slot = match p.parse::<usize>() {
                Ok(i) => &mut slot[i],
                Err(_) => &mut slot[*p],
            };
        }
        slot[path[path.len() - 1]] = value;
        body
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("unknown field", with(&["colour"], json!("red")), 400, "unknown field `colour`"),
        (
            "http URL",
            with(&["oauth", "token_url"], json!("http://login.acme-crm.example/oauth/token")),
            400,
            "field `oauth.token_url`: must be an https URL (private elements)",
        ),
        (
            "IP host",
            with(&["oauth", "token_url"], json!("https://169.254.169.254/latest")),
            400,
            "field `oauth.token_url`: host `169.254.169.254` must be a host name, not an IP address",
        ),
        (
            "localhost",
            with(&["api_base_url"], json!("https://localhost/api")),
            400,
            "field `api_base_url`: host `localhost`",
        ),
        (
            "undeclared host placeholder",
            with(&["api_base_url"], json!("https://{tenant}.acme-crm.example/v1")),
            400,
            "field `api_base_url`: placeholder `{tenant}` names no [[configuration]] entry",
        ),
        ("null", with(&["hub"], Value::Null), 400, "field `hub`: must not be null"),
        (
            "wrong type in an entry",
            with(&["configuration", "1", "secret"], json!("yes")),
            400,
            "field `configuration[1].secret`: invalid type: string \"yes\", expected a boolean",
        ),
        ("bad key", with(&["key"], json!("Acme CRM")), 400, "field `key`"),
        ("missing name", { let mut b = acme(); b.as_object_mut().unwrap().remove("name"); b }, 400, "missing field `name`"),
        ("not an object", json!([1, 2]), 400, "the body must be a JSON object"),
    ];
    for (name, body, status, needle) in cases {
        let err = refused(a.create_element(&body).await);
        assert_eq!(err.status, status, "{name}: {err}");
        assert!(
            err.message().contains(needle),
            "{name}: {err} should say {needle:?}"
        );
    }
    // Duplicate key within the organization: 409 naming the field.
    a.create_element(&acme()).await.unwrap();
    let dup = refused(a.create_element(&acme()).await);
    assert_eq!(dup.status, 409, "{dup}");
    assert!(
        dup.message()
            .starts_with("field `key`: this organization already has an element `acme-crm`"),
        "{dup}"
    );
    // An alias that is another of its elements' key.
    let mut aliased = acme();
    aliased["key"] = json!("acme-two");
    aliased["aliases"] = json!(["acme-crm"]);
    let dup = refused(a.create_element(&aliased).await);
    assert_eq!(dup.status, 409, "{dup}");
    assert!(
        dup.message().contains("field `aliases`: `acme-crm`"),
        "{dup}"
    );
    // A built-in cannot be replaced in place.
    let err = refused(a.replace_element("hubspot", &acme()).await);
    assert_eq!(err.status, 403, "{err}");
    assert!(
        err.message().contains("POST /elements/hubspot/clone"),
        "{err}"
    );
    // Nothing was stored by the refused requests.
    let listed = a.elements().await.unwrap();
    assert_eq!(listed.iter().filter(|e| e.private).count(), 1);
}

#[tokio::test]
async fn two_replicas_on_postgresql_see_a_new_element_within_a_second() {
    let pg = PgCluster::start().expect("a throwaway PostgreSQL cluster");
    let url = pg.create_database("private_elements").unwrap();
    let key = Keyring::encode_key(&Keyring::generate_key());
    let envs = [
        ("ELEMENTS_MASTER_KEY", key.as_str()),
        ("ELEMENTS_ORGANIZATION_SECRET", ORG_A),
        ("ELEMENTS_USER_SECRET", USER_A),
    ];
    let one = Binary::serve(&["--database-url", &url], &envs);
    let two = Binary::serve(&["--database-url", &url], &envs);
    let api = |bin: &Binary| Client::new(&bin.base).unwrap().with_account(USER_A, ORG_A);
    let (on_one, on_two) = (api(&one), api(&two));
    // Replica two caches the organization's (empty) private catalog.
    let err = refused(on_two.element("acme-crm").await);
    assert_eq!(err.status, 404, "{err}");
    on_one.create_element(&acme()).await.unwrap();
    // Replica one sees it at once (local invalidation).
    on_one.element("acme-crm").await.unwrap();
    // Replica two, once its cache entry is older than its one-second max age.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seen = on_two.element("acme-crm").await.unwrap();
    assert!(seen.private);
    // A deactivation on one replica reaches the other the same way.
    on_one.deactivate_element("acme-crm").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let err = refused(on_two.oauth_url("acme-crm", &acme_oauth()).await);
    assert_eq!(err.status, 409, "{err}");
}

/// A private `oauth2_client_credentials` element has no authorization URL:
/// it is accepted (it was refused as "must be an https URL" for the empty
/// value), and one that gives an authorization URL is refused by name.
#[tokio::test]
async fn a_private_client_credentials_element_needs_no_authorization_url() {
    let s = Setup::start();
    let mut body = acme();
    body["key"] = json!("acme-m2m");
    body["authentication"] = json!("oauth2_client_credentials");
    body["oauth"] = json!({ "token_url": "https://login.acme-crm.example/oauth/token" });
    body["configuration"] = json!([
        { "key": "oauth.api.key", "name": "Client ID" },
        { "key": "oauth.api.secret", "name": "Client secret", "secret": true }
    ]);
    let created = s.a.create_element(&body).await.unwrap();
    assert_eq!(created.metadata.key, "acme-m2m");
    assert!(created.private);
    assert_eq!(
        s.a.element("acme-m2m").await.unwrap().authentication.kind,
        "oauth2_client_credentials"
    );
    body["key"] = json!("acme-m2m-two");
    body["oauth"]["authorization_url"] = json!("https://login.acme-crm.example/oauth/authorize");
    let err = refused(s.a.create_element(&body).await);
    assert_eq!(err.status, 400, "{err}");
    assert!(
        err.message()
            .contains("field `oauth.authorization_url`: not used by `oauth2_client_credentials`"),
        "{err}"
    );
}
