//! Organization-private elements through the API (issue 17), against the
//! real binary: SQLite for the lifecycle, two replicas on a throwaway
//! PostgreSQL cluster for visibility across replicas.

mod common;

use std::time::Duration;

use common::*;
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
    bin: Binary,
    a: String,
    b: String,
    client: reqwest::Client,
}

impl Setup {
    fn start() -> Setup {
        let dir = data_dir();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let bin = Binary::serve(
            &["--data-dir", data],
            &[
                ("ELEMENTS_ORGANIZATION_SECRET", "org-a-secret-0123456789"),
                ("ELEMENTS_USER_SECRET", "user-a-secret-0123456789"),
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
        Setup {
            _dir: dir,
            bin,
            a: "User user-a-secret-0123456789, Organization org-a-secret-0123456789".into(),
            b: format!(
                "User {}, Organization {}",
                b["user"]["secret"].as_str().unwrap(),
                b["organization"]["secret"].as_str().unwrap()
            ),
            client: reqwest::Client::new(),
        }
    }

    /// (status, JSON body or the text as a JSON string).
    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.client.request(method, self.bin.url(path));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let response = req.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }
}

fn message(v: &Value) -> &str {
    v["message"].as_str().unwrap_or_default()
}

const OAUTH_QUERY: &str =
    "apiKey=acme-client&apiSecret=s3cr3t&scope=read&callbackUrl=https://app.example/cb&state=xyz";

/// The TOML text as the JSON an API client would send back.
fn toml_to_json(text: &str) -> Value {
    let table: toml::Table = text.parse().expect("the export is TOML");
    serde_json::to_value(table).unwrap()
}

#[tokio::test]
async fn a_private_element_lives_through_create_use_export_clone_deactivate_delete() {
    let s = Setup::start();
    let a = Some(s.a.as_str());

    // Create.
    let (status, created) = s.call(Method::POST, "/elements", a, Some(&acme())).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_u64().unwrap();
    assert!(
        id > 1_000_000_000,
        "private ids are in the reserved range: {id}"
    );
    assert_eq!(created["key"], "acme-crm");
    assert_eq!(created["private"], true);
    assert_eq!(created["active"], true);
    assert_eq!(created["hub"], "crm");

    // Get, by key and by id.
    let (status, by_key) = s.call(Method::GET, "/elements/acme-crm", a, None).await;
    assert_eq!(status, 200, "{by_key}");
    assert_eq!(by_key["id"].as_u64(), Some(id));
    assert_eq!(by_key["private"], true);
    let (status, by_id) = s
        .call(Method::GET, &format!("/elements/{id}"), a, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(by_id["key"], "acme-crm");
    let (status, config) = s
        .call(Method::GET, "/elements/acme-crm/configuration", a, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(config[1]["key"], "oauth.api.secret");

    // The list: with the account, the built-ins plus its own, marked; anonymous, built-ins only.
    let (_, listed) = s.call(Method::GET, "/elements", a, None).await;
    let own: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["private"] == true)
        .collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0]["key"], "acme-crm");
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["key"] == "hubspot"));
    let (_, anonymous) = s.call(Method::GET, "/elements", None, None).await;
    assert_eq!(
        anonymous.as_array().unwrap().len() + 1,
        listed.as_array().unwrap().len()
    );
    assert!(!anonymous
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["key"] == "acme-crm"));
    let (status, _) = s.call(Method::GET, "/elements/acme-crm", None, None).await;
    assert_eq!(status, 404);

    // oauth/url.
    let (status, url) = s
        .call(
            Method::GET,
            &format!("/elements/acme-crm/oauth/url?{OAUTH_QUERY}"),
            a,
            None,
        )
        .await;
    assert_eq!(status, 200, "{url}");
    assert_eq!(url["element"], "acme-crm");
    let oauth_url = url["oauthUrl"].as_str().unwrap();
    assert!(
        oauth_url.starts_with("https://login.acme-crm.example/oauth/authorize?"),
        "{oauth_url}"
    );
    assert!(oauth_url.contains("client_id=acme-client"), "{oauth_url}");
    assert!(oauth_url.contains("access_type=offline"), "{oauth_url}");

    // An instance of it.
    let instance_body = json!({
        "element": { "key": "acme-crm" },
        "providerData": { "access_token": "at-acme", "refresh_token": "rt-acme", "expires_in": 3600 },
        "configuration": {
            "oauth.api.key": "acme-client",
            "oauth.api.secret": "s3cr3t",
            "oauth.callback.url": "https://app.example/cb",
            "account.pin": "4242"
        },
        "name": "Acme of A"
    });
    let (status, instance) = s
        .call(Method::POST, "/instances", a, Some(&instance_body))
        .await;
    assert_eq!(status, 200, "{instance}");
    let instance_id = instance["id"].as_i64().unwrap();
    // The instance shows its private element, and masks what it declares secret.
    assert_eq!(instance["element"]["id"].as_u64(), Some(id));
    assert_eq!(instance["element"]["name"], "Acme CRM");
    assert_eq!(instance["configuration"]["account.pin"], "********");
    let (_, shown) = s
        .call(Method::GET, &format!("/instances/{instance_id}"), a, None)
        .await;
    assert_eq!(
        (
            shown["element"]["key"].clone(),
            shown["element"]["deleted"].clone()
        ),
        (json!("acme-crm"), json!(false))
    );
    let (_, entries) = s
        .call(
            Method::GET,
            &format!("/instances/{instance_id}/configuration"),
            a,
            None,
        )
        .await;
    let pin = entries
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["key"] == "account.pin")
        .unwrap();
    assert_eq!(pin["propertyValue"], "********");
    let (_, page) = s.call(Method::GET, "/instances", a, None).await;
    assert_eq!(page[0]["element"]["name"], "Acme CRM");
    let (_, counted) = s
        .call(Method::GET, "/elements/acme-crm/instances", a, None)
        .await;
    assert_eq!(counted.as_array().unwrap().len(), 1);

    // Export: the TOML file, which POST takes back (under another key).
    let response = s
        .client
        .get(s.bin.url("/elements/acme-crm/export"))
        .header("Authorization", &s.a)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/toml; charset=utf-8"
    );
    let exported = response.text().await.unwrap();
    assert!(exported.starts_with(&format!("id = {id}\n")), "{exported}");
    let mut again = toml_to_json(&exported);
    assert_eq!(
        again["oauth"]["token_url"],
        "https://login.acme-crm.example/oauth/token"
    );
    again["key"] = json!("acme-crm-2");
    let (status, second) = s.call(Method::POST, "/elements", a, Some(&again)).await;
    assert_eq!(status, 200, "{second}");
    let second_id = second["id"].as_u64().unwrap();
    assert!(second_id > id);
    let (_, second_export) = s
        .call(Method::GET, "/elements/acme-crm-2/export", a, None)
        .await;
    assert_eq!(
        second_export.as_str().unwrap(),
        exported
            .replacen(&format!("id = {id}"), &format!("id = {second_id}"), 1)
            .replacen("key = \"acme-crm\"", "key = \"acme-crm-2\"", 1)
    );

    // Clone a built-in: it keeps its key, for this organization only.
    let (status, clone) = s
        .call(Method::POST, "/elements/hubspot/clone", a, None)
        .await;
    assert_eq!(status, 200, "{clone}");
    assert_eq!(clone["key"], "hubspot");
    assert_eq!(clone["private"], true);
    let clone_id = clone["id"].as_u64().unwrap();
    assert!(clone_id > 1_000_000_000);
    let (_, seen_by_a) = s.call(Method::GET, "/elements/hubspot", a, None).await;
    assert_eq!(seen_by_a["id"].as_u64(), Some(clone_id));
    // The built-in's id names the organization's element too (the key is shadowed).
    let (_, by_builtin_id) = s.call(Method::GET, "/elements/43", a, None).await;
    assert_eq!(by_builtin_id["id"].as_u64(), Some(clone_id));
    let (_, seen_by_b) = s
        .call(Method::GET, "/elements/hubspot", Some(&s.b), None)
        .await;
    assert_eq!(seen_by_b, seed_element_view(&seen_by_b));
    assert_eq!(seen_by_b["id"], 43);
    let (status, anonymous) = s
        .call(
            Method::GET,
            &format!("/elements/hubspot/oauth/url?{SEED_OAUTH_QUERY}"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        anonymous,
        serde_json::from_str::<Value>(SEED_OAUTH_ANSWER).unwrap()
    );
    // A clone with changes, and the clone of a clone's key is refused.
    let (status, renamed) = s
        .call(
            Method::POST,
            "/elements/hubspot/clone",
            a,
            Some(&json!({"key": "my-hubspot", "name": "Our HubSpot"})),
        )
        .await;
    assert_eq!(status, 200, "{renamed}");
    assert_eq!(renamed["name"], "Our HubSpot");
    let (status, again) = s
        .call(Method::POST, "/elements/hubspot/clone", a, None)
        .await;
    assert_eq!(status, 409, "{again}");
    assert!(message(&again).contains("field `key`"), "{again}");

    // Deactivate: new instances and oauth/url are refused naming it; the
    // existing instance keeps working; the element shows active: false.
    let (status, off) = s
        .call(Method::DELETE, "/elements/acme-crm/active", a, None)
        .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["active"], false);
    let (_, shown) = s.call(Method::GET, "/elements/acme-crm", a, None).await;
    assert_eq!(shown["active"], false);
    let (status, refused) = s
        .call(
            Method::GET,
            &format!("/elements/acme-crm/oauth/url?{OAUTH_QUERY}"),
            a,
            None,
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(
        message(&refused),
        "element `acme-crm` is deactivated for this organization (PUT /elements/acme-crm/active to activate it)"
    );
    let (status, refused) = s
        .call(Method::POST, "/instances", a, Some(&instance_body))
        .await;
    assert_eq!(status, 409);
    assert!(message(&refused).contains("element `acme-crm` is deactivated"));
    let (status, still) = s
        .call(Method::GET, &format!("/instances/{instance_id}"), a, None)
        .await;
    assert_eq!(status, 200, "{still}");
    // Another organization's view of a built-in is untouched by A's switch.
    let (status, _) = s
        .call(Method::DELETE, "/elements/github/active", a, None)
        .await;
    assert_eq!(status, 200);
    let (_, github_a) = s.call(Method::GET, "/elements/github", a, None).await;
    let (_, github_b) = s
        .call(Method::GET, "/elements/github", Some(&s.b), None)
        .await;
    assert_eq!(
        (github_a["active"].clone(), github_b["active"].clone()),
        (json!(false), json!(true))
    );
    // Re-activate.
    let (status, on) = s
        .call(Method::PUT, "/elements/acme-crm/active", a, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(on["active"], true);
    let (status, _) = s
        .call(
            Method::GET,
            &format!("/elements/acme-crm/oauth/url?{OAUTH_QUERY}"),
            a,
            None,
        )
        .await;
    assert_eq!(status, 200);

    // PUT replaces it (the id stays).
    let mut changed = acme();
    changed["name"] = json!("Acme CRM v2");
    let (status, put) = s
        .call(Method::PUT, "/elements/acme-crm", a, Some(&changed))
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(
        (put["id"].as_u64(), put["name"].clone()),
        (Some(id), json!("Acme CRM v2"))
    );

    // Delete: refused while an instance uses it, then done.
    let (status, refused) = s.call(Method::DELETE, "/elements/acme-crm", a, None).await;
    assert_eq!(status, 409);
    assert_eq!(
        message(&refused),
        "element `acme-crm` has 1 instance(s): it cannot be deleted until they are deleted"
    );
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("/instances/{instance_id}"),
            a,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s.call(Method::DELETE, "/elements/acme-crm", a, None).await;
    assert_eq!(status, 200);
    let (status, gone) = s.call(Method::GET, "/elements/acme-crm", a, None).await;
    assert_eq!(status, 404, "{gone}");
    // Deleting the clone gives the built-in back.
    let (status, _) = s.call(Method::DELETE, "/elements/hubspot", a, None).await;
    assert_eq!(status, 200);
    let (_, back) = s.call(Method::GET, "/elements/hubspot", a, None).await;
    assert_eq!(back["id"], 43);
    assert!(back.get("private").is_none(), "{back}");
}

/// The built-in HubSpot element as `GET /elements/hubspot` shows it: the
/// fields a test compares (the view carries more than the seed's eleven).
fn seed_element_view(shown: &Value) -> Value {
    let mut view = shown.clone();
    for (k, v) in seed_element().as_object().unwrap() {
        view[k] = v.clone();
    }
    view
}

#[tokio::test]
async fn another_organization_gets_404s_and_cannot_be_shadowed() {
    let s = Setup::start();
    let a = Some(s.a.as_str());
    let b = Some(s.b.as_str());
    let (status, created) = s.call(Method::POST, "/elements", a, Some(&acme())).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_u64().unwrap();

    for (method, path) in [
        (Method::GET, "/elements/acme-crm".to_owned()),
        (Method::GET, format!("/elements/{id}")),
        (Method::GET, "/elements/acme-crm/configuration".to_owned()),
        (
            Method::GET,
            format!("/elements/acme-crm/oauth/url?{OAUTH_QUERY}"),
        ),
        (Method::GET, "/elements/acme-crm/export".to_owned()),
        (Method::GET, "/elements/acme-crm/instances".to_owned()),
        (Method::PUT, "/elements/acme-crm/active".to_owned()),
        (Method::DELETE, "/elements/acme-crm/active".to_owned()),
        (Method::DELETE, "/elements/acme-crm".to_owned()),
        (Method::POST, "/elements/acme-crm/clone".to_owned()),
    ] {
        let (status, body) = s.call(method.clone(), &path, b, None).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
        assert!(
            message(&body).contains("no element with key or id"),
            "{path}: {body}"
        );
    }
    let (status, body) = s
        .call(Method::PUT, "/elements/acme-crm", b, Some(&acme()))
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s
        .call(
            Method::POST,
            "/instances",
            b,
            Some(&json!({"element": {"key": "acme-crm"}, "name": "x", "configuration": {}})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = s
        .call(
            Method::POST,
            "/instances",
            b,
            Some(&json!({"element": {"id": id}, "name": "x", "configuration": {}})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    let (_, listed) = s.call(Method::GET, "/elements", b, None).await;
    assert!(!listed
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["key"] == "acme-crm"));

    // B may use the same key for its own element: keys are per organization.
    let (status, theirs) = s.call(Method::POST, "/elements", b, Some(&acme())).await;
    assert_eq!(status, 200, "{theirs}");
    assert_ne!(theirs["id"], created["id"]);

    // A shadows `hubspot` and `sfdc` (an alias) for itself; B and anonymous
    // callers still get the built-ins.
    let (status, _) = s
        .call(Method::POST, "/elements/hubspot/clone", a, None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            Method::POST,
            "/elements/salesforce/clone",
            a,
            Some(&json!({"name": "A's Salesforce"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, sfdc_a) = s.call(Method::GET, "/elements/sfdc", a, None).await;
    assert_eq!(sfdc_a["name"], "A's Salesforce");
    let (_, sfdc_b) = s.call(Method::GET, "/elements/sfdc", b, None).await;
    assert_eq!(sfdc_b["key"], "salesforce");
    assert_ne!(sfdc_b["name"], "A's Salesforce");
    assert!(sfdc_b.get("private").is_none());
    let (_, hubspot_b) = s.call(Method::GET, "/elements/hubspot", b, None).await;
    assert_eq!(hubspot_b["id"], 43);
    let (_, hubspot_anon) = s.call(Method::GET, "/elements/hubspot", None, None).await;
    assert_eq!(hubspot_anon["id"], 43);
    // B cannot change or delete a built-in.
    let (status, body) = s.call(Method::DELETE, "/elements/hubspot", b, None).await;
    assert_eq!(status, 403);
    assert!(
        message(&body).contains("element `hubspot` is built in"),
        "{body}"
    );
}

#[tokio::test]
async fn bad_elements_name_the_field_and_the_rule() {
    let s = Setup::start();
    let a = Some(s.a.as_str());
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
        let (got, answer) = s.call(Method::POST, "/elements", a, Some(&body)).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert!(
            message(&answer).contains(needle),
            "{name}: {answer} should say {needle:?}"
        );
    }
    // Duplicate key within the organization: 409 naming the field.
    let (status, _) = s.call(Method::POST, "/elements", a, Some(&acme())).await;
    assert_eq!(status, 200);
    let (status, dup) = s.call(Method::POST, "/elements", a, Some(&acme())).await;
    assert_eq!(status, 409, "{dup}");
    assert!(
        message(&dup)
            .starts_with("field `key`: this organization already has an element `acme-crm`"),
        "{dup}"
    );
    // An alias that is another of its elements' key.
    let mut aliased = acme();
    aliased["key"] = json!("acme-two");
    aliased["aliases"] = json!(["acme-crm"]);
    let (status, dup) = s.call(Method::POST, "/elements", a, Some(&aliased)).await;
    assert_eq!(status, 409, "{dup}");
    assert!(
        message(&dup).contains("field `aliases`: `acme-crm`"),
        "{dup}"
    );
    // A built-in cannot be replaced in place.
    let (status, refused) = s
        .call(Method::PUT, "/elements/hubspot", a, Some(&acme()))
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(
        message(&refused).contains("POST /elements/hubspot/clone"),
        "{refused}"
    );
    // Nothing was stored by the refused requests.
    let (_, listed) = s.call(Method::GET, "/elements", a, None).await;
    assert_eq!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["private"] == true)
            .count(),
        1
    );
}

#[tokio::test]
async fn two_replicas_on_postgresql_see_a_new_element_within_a_second() {
    let pg = PgCluster::start().expect("a throwaway PostgreSQL cluster");
    let url = pg.create_database("private_elements").unwrap();
    let key = Keyring::encode_key(&Keyring::generate_key());
    let envs = [
        ("ELEMENTS_MASTER_KEY", key.as_str()),
        ("ELEMENTS_ORGANIZATION_SECRET", "org-a-secret-0123456789"),
        ("ELEMENTS_USER_SECRET", "user-a-secret-0123456789"),
    ];
    let one = Binary::serve(&["--database-url", &url], &envs);
    let two = Binary::serve(&["--database-url", &url], &envs);
    let auth = "User user-a-secret-0123456789, Organization org-a-secret-0123456789";
    let client = reqwest::Client::new();
    let get = |bin: &Binary, path: &str| {
        client
            .get(bin.url(path))
            .header("Authorization", auth)
            .send()
    };
    // Replica two caches the organization's (empty) private catalog.
    assert_eq!(get(&two, "/elements/acme-crm").await.unwrap().status(), 404);
    let created = client
        .post(one.url("/elements"))
        .header("Authorization", auth)
        .json(&acme())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    // Replica one sees it at once (local invalidation).
    assert_eq!(get(&one, "/elements/acme-crm").await.unwrap().status(), 200);
    // Replica two, once its cache entry is older than its one-second max age.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seen = get(&two, "/elements/acme-crm").await.unwrap();
    assert_eq!(seen.status(), 200);
    let seen: Value = seen.json().await.unwrap();
    assert_eq!(seen["private"], true);
    // A deactivation on one replica reaches the other the same way.
    let off = client
        .delete(one.url("/elements/acme-crm/active"))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = get(&two, &format!("/elements/acme-crm/oauth/url?{OAUTH_QUERY}"))
        .await
        .unwrap();
    assert_eq!(refused.status(), 409);
}
