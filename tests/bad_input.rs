//! The bad-input suite: table-driven over real HTTP. Every case must get a
//! 4xx with a JSON error that names the problem, and the server must serve
//! the next request.
//!
//! Every case names what its message must say (the field at fault and the
//! specific reason); [`weak_needles`] refuses a case whose needle is empty or
//! would match any body error's fixed prefix, so a case cannot pass on a
//! message that says nothing about the problem it sends.
//!
//! This file is the harness and the tests; the case tables are in
//! `bad_input/instances.rs` (the instance routes) and `bad_input/routes.rs`
//! (compat, connect, proxy, webhooks, private elements).

mod common;
#[path = "bad_input/instances.rs"]
mod instances;
#[path = "bad_input/routes.rs"]
mod routes;

use common::*;
use instances::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use routes::*;
use serde_json::{json, Value};

/// The fixed prefixes of body errors: a needle they contain says nothing.
const GENERIC_PREFIXES: [&str; 2] = ["invalid JSON body: ", "invalid JSON body at `"];

/// One bad request.
struct Case {
    name: String,
    method: Method,
    /// Path below /elements/api-v2 (may carry a raw query).
    path: String,
    /// `None`: the test account's credentials. `Some(None)`: no header.
    auth: Option<Option<Vec<u8>>>,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
    /// The exact status.
    status: u16,
    /// Fragments the message must contain (case-insensitive): what is at
    /// fault and why.
    needles: Vec<String>,
}

fn needles(n: &[&str]) -> Vec<String> {
    n.iter().map(|s| (*s).to_owned()).collect()
}

/// The cases whose needles cannot fail: none, an empty one, or one that a
/// generic prefix already contains.
fn weak_needles(cases: &[Case]) -> Vec<String> {
    cases
        .iter()
        .filter(|c| {
            c.needles.is_empty()
                || c.needles.iter().any(|n| {
                    let n = n.to_lowercase();
                    n.trim().is_empty()
                        || GENERIC_PREFIXES
                            .iter()
                            .any(|p| p.to_lowercase().contains(&n))
                })
        })
        .map(|c| c.name.clone())
        .collect()
}

fn post(name: impl Into<String>, body: impl Into<Vec<u8>>, status: u16, n: &[&str]) -> Case {
    Case {
        name: name.into(),
        method: Method::POST,
        path: "/instances".into(),
        auth: None,
        content_type: Some("application/json"),
        body: Some(body.into()),
        status,
        needles: needles(n),
    }
}

fn get(name: impl Into<String>, path: impl Into<String>, status: u16, n: &[&str]) -> Case {
    Case {
        name: name.into(),
        method: Method::GET,
        path: path.into(),
        auth: Some(None),
        content_type: None,
        body: None,
        status,
        needles: needles(n),
    }
}

fn seed() -> Value {
    seed_instance_body("at-x", "rt-x")
}

fn with(path: &[&str], value: Value) -> Vec<u8> {
    let mut body = seed();
    let mut slot = &mut body;
    for p in &path[..path.len() - 1] {
        slot = &mut slot[*p];
    }
    slot[path[path.len() - 1]] = value;
    serde_json::to_vec(&body).unwrap()
}

fn without(path: &[&str]) -> Vec<u8> {
    let mut body = seed();
    let mut slot = &mut body;
    for p in &path[..path.len() - 1] {
        slot = &mut slot[*p];
    }
    slot.as_object_mut().unwrap().remove(path[path.len() - 1]);
    serde_json::to_vec(&body).unwrap()
}

/// The guard itself: it refuses what used to pass vacuously.
#[test]
fn the_guard_refuses_needles_that_cannot_fail() {
    let mut all = vec![
        post("no needles", Vec::new(), 400, &[]),
        post("empty needle", Vec::new(), 400, &[""]),
        post("blank needle", Vec::new(), 400, &["  "]),
        post("json", Vec::new(), 400, &["json"]),
        post("JSON body", Vec::new(), 400, &["invalid JSON body"]),
        post("id (in `invalid`)", Vec::new(), 400, &["id"]),
        post("one weak of two", Vec::new(), 400, &["at `name`", "body"]),
    ];
    let weak: Vec<String> = all.iter().map(|c| c.name.clone()).collect();
    assert_eq!(weak_needles(&all), weak);
    all.push(post(
        "specific",
        Vec::new(),
        400,
        &["at `name`", "invalid type: integer"],
    ));
    assert_eq!(weak_needles(&all), weak, "a specific case passes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    let dir = data_dir();
    // Dozens of deliberate 401s from one address: the failed-authentication
    // limiter (tests/limits.rs) is off here so each case gets its own answer.
    let mut config = config_in(dir.path());
    config.limits.auth_failure_burst = 0;
    config.public_url = Some("https://elements.example".into());
    let server = TestServer::start(config).await;
    let non_oauth = server
        .state
        .registry
        .iter()
        .find(|e| e.spec().oauth.is_none())
        .map(|e| NonOAuth {
            key: e.key().to_owned(),
            required: e
                .spec()
                .configuration
                .iter()
                .filter(|entry| entry.required && entry.default_value.is_none())
                .map(|entry| entry.key.clone())
                .collect(),
        });
    assert!(non_oauth.is_some(), "the catalog has a non-OAuth element");
    let (status, created) = server.post_instance(&server.account, &seed()).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();

    let other = server.other_account("other").await;
    let (status, foreign) = server.post_instance(&other, &seed()).await;
    assert_eq!(status, 200, "{foreign}");
    let foreign = foreign["id"].as_i64().unwrap();

    let mut all = cases(&server.account, non_oauth);
    all.extend(patch_cases(id));
    all.extend(rotation_cases(foreign));
    all.extend(connect_cases());
    let other = server.other_account("compat-other").await;
    all.extend(compat_cases(id, &other.header()));
    all.extend(webhook_cases());
    all.extend(proxy_cases(id, foreign));
    all.extend(private_element_cases());
    let weak = weak_needles(&all);
    assert!(
        weak.is_empty(),
        "{} cases check nothing specific: {weak:?}",
        weak.len()
    );
    assert!(all.len() >= 200, "only {} cases", all.len());
    eprintln!(
        "{} bad-input cases, {} with a needle that cannot fail",
        all.len(),
        weak.len()
    );

    // A fresh connection per request: after an early answer (413) the
    // server closes the connection, which a pooled client would reuse.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    for case in &all {
        let url = format!("{}/elements/api-v2{}", server.base, case.path);
        let mut headers = HeaderMap::new();
        match &case.auth {
            None => {
                headers.insert(
                    "authorization",
                    HeaderValue::from_str(&server.account.header()).unwrap(),
                );
            }
            Some(Some(raw)) => {
                headers.insert("authorization", HeaderValue::from_bytes(raw).unwrap());
                if case.name.contains("user twice") {
                    headers.append("authorization", HeaderValue::from_bytes(raw).unwrap());
                }
            }
            Some(None) => {}
        }
        if let Some(ct) = case.content_type {
            headers.insert(
                HeaderName::from_static("content-type"),
                HeaderValue::from_static(ct),
            );
        }
        let mut req = client.request(case.method.clone(), &url).headers(headers);
        if let Some(body) = &case.body {
            req = req.body(body.clone());
        }
        let response = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let status = response.status().as_u16();
        let ctype = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {text}", case.name);
        assert!(
            ctype
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json")),
            "{}: {ctype:?} {text}",
            case.name
        );
        let err: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{}: not JSON: {text}", case.name));
        let message = err["message"].as_str().unwrap_or_default();
        assert!(
            err["requestId"].as_str().is_some_and(|s| !s.is_empty()),
            "{}",
            case.name
        );
        for needle in &case.needles {
            assert!(
                message.to_lowercase().contains(&needle.to_lowercase()),
                "{}: {message:?} should say {needle:?}",
                case.name,
            );
        }
        assert!(
            !text.contains("at-x") && !text.contains(&server.account.user_secret),
            "{}: echoes a secret",
            case.name
        );
        // The server still serves.
        let next = client
            .get(server.url(&format!("/elements/hubspot/oauth/url?{SEED_OAUTH_QUERY}")))
            .send()
            .await
            .unwrap();
        assert_eq!(next.status(), 200, "after {}", case.name);
    }

    // Nothing was created or changed by any of it.
    let listed: Vec<Value> = server.fetch(Method::GET, "/instances").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "Test");
    server.stop().await;
}

#[tokio::test]
async fn html_in_names_is_stored_as_text_and_served_as_json() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    // compat: markup is removed (as Cloud Elements does); what is left is
    // served as JSON text.
    let name = "<a href=\"https://evil.example\">x</a><script>alert('x')</script> & y";
    let mut body = seed();
    body["name"] = json!(name);
    let (status, created) = server.post_instance(&server.account, &body).await;
    assert_eq!(status, 200);
    let id = created["id"].as_i64().unwrap();
    let response = server
        .authed(Method::GET, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let got: Value = response.json().await.unwrap();
    assert_eq!(got["name"], "x & y");
    server.stop().await;
}

impl Case {
    /// The same case with a raw (non-JSON) body.
    fn with_raw_body(mut self, body: &[u8]) -> Case {
        self.body = Some(body.to_vec());
        self.content_type = Some("application/json");
        self
    }
}

#[tokio::test]
async fn private_elements_refuse_duplicates_and_stay_in_their_organization() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let post = |account: &Account| {
        server
            .client
            .post(server.url("/elements"))
            .header("Authorization", account.header())
            .json(&private_element())
            .send()
    };
    let first = post(&server.account).await.unwrap();
    assert_eq!(first.status(), 200);
    let again = post(&server.account).await.unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("field `key`: this organization already has an element `bad-input-crm`"),
        "{body}"
    );
    // Another organization: a 404 on every route, and its own key is free.
    let other = server.other_account("other").await;
    for (method, path) in [
        (Method::GET, "/elements/bad-input-crm"),
        (Method::GET, "/elements/bad-input-crm/export"),
        (Method::DELETE, "/elements/bad-input-crm"),
        (Method::DELETE, "/elements/bad-input-crm/active"),
    ] {
        let response = server
            .client
            .request(method.clone(), server.url(path))
            .header("Authorization", other.header())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["message"], "no element with key or id `bad-input-crm`");
    }
    assert_eq!(post(&other).await.unwrap().status(), 200);
    server.stop().await;
}

/// leftovers (issue 13.2.3): callback values read from `providerData`.
#[tokio::test]
async fn bad_callback_values_in_provider_data_are_named() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let body = |provider_data: &str| {
        format!(
            r#"{{"name":"qb","element":{{"key":"quickbooks"}},"providerData":{provider_data},
            "configuration":{{"oauth.api.key":"cid","oauth.api.secret":"cs","oauth.callback.url":"https://app.test/cb"}}}}"#
        )
    };
    for (provider_data, status, needle) in [
        (
            r#"{"access_token":"at","realmId":"46\n20"}"#,
            400,
            "realmId",
        ),
        (
            &*format!(r#"{{"access_token":"at","realmId":"{}"}}"#, "9".repeat(256)),
            400,
            "at most 255 characters",
        ),
        (
            r#"{"access_token":"at","realmId":"1","realmId":"2"}"#,
            400,
            "duplicate field `realmId`",
        ),
        (
            r#"{"access_token":"at","access_token":"b"}"#,
            400,
            "duplicate field `access_token`",
        ),
        (
            r#"{"access_token":5}"#,
            400,
            "at `providerData.access_token`",
        ),
    ] {
        let r = server
            .authed(Method::POST, "/instances")
            .header("content-type", "application/json")
            .body(body(provider_data))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{provider_data}");
        let text = r.text().await.unwrap();
        assert!(text.contains(needle), "{provider_data}: {text}");
        assert!(!text.contains("46\n20"), "{text}");
    }
    // A good value is stored; a non-text one is not captured.
    let r = server
        .authed(Method::POST, "/instances")
        .header("content-type", "application/json")
        .body(body(r#"{"access_token":"at","realmId":{"x":1}}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["configuration"].get("realmId"), None, "{created}");
    server.stop().await;
}

/// health: a `verify` query parameter that is neither `true` nor `false`
/// is a 400 naming it, and nothing is stored.
#[tokio::test]
async fn health_a_bad_verify_parameter_is_a_400_naming_it() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    for (query, needle) in [
        (
            "?verify=maybe",
            "query parameter `verify` must be `true` or `false`, not \"maybe\"",
        ),
        (
            "?verify=",
            "query parameter `verify` must be `true` or `false`, not \"\"",
        ),
        (
            "?verify=false&verify=1",
            "query parameter `verify` must be `true` or `false`, not \"1\"",
        ),
    ] {
        let r = server
            .authed(Method::POST, &format!("/instances{query}"))
            .json(&seed())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert!(
            body.to_string().contains(&needle.replace('"', "\\\"")),
            "{query}: {body}"
        );
    }
    let list: Vec<Value> = server.fetch(Method::GET, "/instances").await;
    assert!(list.is_empty(), "{list:?}");
    server.stop().await;
}

/// health: a catalog file whose `[verify]` table is wrong is refused by
/// `elements check` with `file:line: field verify.<name>: ...`.
#[test]
fn health_a_bad_verify_table_is_refused_with_file_line_and_field() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{root}/elements/sendgrid.toml"))
        .unwrap()
        .replace("path = \"/user/profile\"", "path = \"../user/profile\"")
        .replace("expect = [200]", "expect = [500]");
    let lines: Vec<&str> = text.lines().collect();
    let path_line = lines.iter().position(|l| l.starts_with("path = ")).unwrap() + 1;
    let expect_line = lines
        .iter()
        .position(|l| l.starts_with("expect = "))
        .unwrap()
        + 1;
    std::fs::write(dir.path().join("sendgrid.toml"), &text).unwrap();
    let out = elements(&["check", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "sendgrid.toml:{path_line}: field `verify.path`: \"../user/profile\" must be an absolute path"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "sendgrid.toml:{expect_line}: field `verify.expect`: 500 is not a success status (200-399)"
        )),
        "{err}"
    );
}
