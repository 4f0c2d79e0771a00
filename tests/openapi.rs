//! The OpenAPI description (issue 18, items 1 and 2): every registered route
//! is described, the document is valid OpenAPI 3.1 (openapi-spec-validator),
//! the live server conforms to it (schemathesis, anonymous and
//! authenticated), and the reference page renders and escapes in a real
//! headless Chromium.
//!
//! The Python tools live in the virtual environment `scripts/setup.sh`
//! creates (`target/py`); without it the conformance test fails, saying so.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use elements_testkit::api::FakeApi;
use elements_testkit::browser::Browser;
use elements_testkit::provider::FakeProvider;
use regex::Regex;
use serde_json::{json, Value};

const BASE: &str = "/elements/api-v2";

/// Console pages: HTML for people, outside the API, deliberately not in the
/// description (they take a session cookie and CSRF-protected forms, not the
/// API's `Authorization` header; tests/console.rs covers them). Listed here
/// one by one so a new console route is a deliberate decision too.
const CONSOLE_EXCLUDED: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/console"),
    ("GET", "/console/style.css"),
    ("GET", "/console/elements/{key}"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("POST", "/console/logout"),
    ("GET", "/console/instances"),
    ("GET", "/console/instances/{id}"),
    ("POST", "/console/instances/{id}/enable"),
    ("POST", "/console/instances/{id}/disable"),
    ("GET", "/console/instances/{id}/delete"),
    ("POST", "/console/instances/{id}/delete"),
    ("GET", "/console/callback-urls"),
    ("POST", "/console/callback-urls"),
    ("GET", "/console/{rest}"),
];

/// Files whose routers are at the root, not under `/elements/api-v2`
/// (crates/server/src/lib.rs: `ops` and the console): their paths are
/// plain literals, every other route's is `api!("...")` (the prefix).
const ROOT_FILES: &[&str] = &["health.rs", "metrics.rs", "console/mod.rs"];

/// What an `any(...)` route is described with.
const ANY_METHODS: &[&str] = &[
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text of a call's arguments: from after `open` (an opening paren) to
/// its matching closing paren.
fn call_arguments(text: &str, open: usize) -> &str {
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced `.route(` call")
}

/// Every `(METHOD, full path)` registered by a `.route("...", ...)` call in
/// crates/server/src, with axum's `{*rest}` written as OpenAPI's `{rest}`.
fn registered_routes() -> BTreeSet<(String, String)> {
    let src = repo().join("crates/server/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let route = Regex::new(r#"\.route\(\s*(api!\(\s*)?""#).unwrap();
    let path_literal = Regex::new(r#"^\s*(api!\(\s*)?"([^"]*)""#).unwrap();
    let method = Regex::new(r"(?:^|[^A-Za-z0-9_])(get|post|put|patch|delete|any)\(").unwrap();
    let wildcard = Regex::new(r"\{\*([a-z_]+)\}").unwrap();
    let mut routes = BTreeSet::new();
    let mut files_with_routes = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let root = ROOT_FILES.contains(&relative.as_str());
        let mut found = false;
        for m in route.find_iter(&text) {
            found = true;
            let arguments = call_arguments(&text, m.start() + ".route".len());
            let literal = path_literal.captures(arguments).unwrap();
            let path = &literal[2];
            let prefixed = literal.get(1).is_some();
            assert_eq!(
                prefixed,
                !root,
                "{relative}: route {path} must be written {}",
                if root {
                    "as a plain literal"
                } else {
                    "api!(\"...\")"
                }
            );
            let prefix = if prefixed { BASE } else { "" };
            let handlers = &arguments[arguments.find(',').unwrap()..];
            let full = wildcard
                .replace_all(&format!("{prefix}{path}"), "{$1}")
                .into_owned();
            let mut methods = 0;
            for c in method.captures_iter(handlers) {
                methods += 1;
                let name = c[1].to_ascii_uppercase();
                if name == "ANY" {
                    for m in ANY_METHODS {
                        routes.insert((m.to_string(), full.clone()));
                    }
                } else {
                    routes.insert((name, full.clone()));
                }
            }
            assert!(methods > 0, "{relative}: no method found for route {path}");
        }
        files_with_routes += usize::from(found);
    }
    // The scan sees the routers it must see (a guard against a scan that
    // silently finds nothing).
    assert!(
        files_with_routes >= 10,
        "{files_with_routes} files with routes"
    );
    assert!(routes.contains(&(
        "GET".into(),
        format!("{BASE}/elements/{{key_or_id}}/oauth/url")
    )));
    assert!(routes.contains(&("POST".into(), format!("{BASE}/instances"))));
    routes
}

/// Every `(METHOD, path)` of the document.
fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                out.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn document() -> Value {
    serde_json::to_value(elements_server::openapi::document()).unwrap()
}

#[test]
fn every_registered_route_is_described_and_nothing_else() {
    let lib = std::fs::read_to_string(repo().join("crates/server/src/lib.rs")).unwrap();
    // The root-level routers are the ones ROOT_FILES names.
    assert!(
        lib.contains("concat!(\"/elements/api-v2\", $path)"),
        "{lib}"
    );
    assert!(lib.contains(".merge(api)"), "{lib}");
    assert!(lib.contains("health::router()") && lib.contains("metrics::router()"));
    assert!(lib.contains(".merge(console::router(console))"));

    let registered = registered_routes();
    let excluded: BTreeSet<(String, String)> = CONSOLE_EXCLUDED
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let console: BTreeSet<(String, String)> = registered
        .iter()
        .filter(|(_, p)| p == "/" || p.starts_with("/console"))
        .cloned()
        .collect();
    assert_eq!(
        console, excluded,
        "the console's routes changed: update CONSOLE_EXCLUDED deliberately"
    );
    let doc = document();
    let described = described(&doc);
    let missing: Vec<_> = registered
        .difference(&described)
        .filter(|r| !excluded.contains(*r))
        .collect();
    assert!(
        missing.is_empty(),
        "routes without a description (add #[utoipa::path] and list the handler in crates/server/src/openapi/mod.rs): {missing:?}"
    );
    let phantom: Vec<_> = described.difference(&registered).collect();
    assert!(
        phantom.is_empty(),
        "described but not registered: {phantom:?}"
    );
    assert_eq!(described.len(), registered.len() - excluded.len());
}

#[test]
fn document_has_the_schemes_the_error_shape_and_the_seed_examples() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(
        schemes.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "ElementToken".to_owned(),
            "UserOrganization".to_owned(),
            "UserOrganizationElement".to_owned()
        ])
    );
    for scheme in schemes.values() {
        assert_eq!(scheme["type"], "apiKey");
        assert_eq!(scheme["in"], "header");
        assert_eq!(scheme["name"], "Authorization");
    }
    assert!(schemes["UserOrganization"]["description"]
        .as_str()
        .unwrap()
        .contains("User <user secret>, Organization <organization secret>"));

    // The seed's step 1: anonymous (or with credentials), the sample oauthUrl.
    let oauth = &doc["paths"][format!("{BASE}/elements/{{key_or_id}}/oauth/url")]["get"];
    assert_eq!(oauth["security"], json!([{}, {"UserOrganization": []}]));
    assert_eq!(
        oauth["responses"]["200"]["content"]["application/json"]["example"],
        json!({"element": "hubspot", "oauthUrl": SEED_OAUTH_ANSWER_URL})
    );
    let names: Vec<&str> = oauth["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "key_or_id",
        "apiKey",
        "apiSecret",
        "scope",
        "callbackUrl",
        "state",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    // The seed's step 2: the sample body and the sample instance.
    let create = &doc["paths"][format!("{BASE}/instances")]["post"];
    assert_eq!(create["security"], json!([{"UserOrganization": []}]));
    let body = &create["requestBody"]["content"]["application/json"];
    assert_eq!(
        body["schema"]["$ref"],
        "#/components/schemas/CreateInstance"
    );
    assert_eq!(body["example"]["element"], json!({"key": "hubspot"}));
    assert_eq!(
        body["example"]["configuration"]["oauth.callback.url"],
        "www.samplecallbackurl.com"
    );
    let ok = &create["responses"]["200"]["content"]["application/json"];
    assert_eq!(ok["schema"]["$ref"], "#/components/schemas/InstanceJson");
    assert_eq!(
        ok["example"]["token"],
        "dsPr6AheKIS8pt7rp8E81bSRINFgeEkx9Ftr+7t"
    );
    let mut element = seed_instance_element();
    element["hub"] = json!("marketing");
    assert_eq!(ok["example"]["element"], element);
    for status in ["400", "401", "404", "429"] {
        assert_eq!(
            create["responses"][status]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{status}"
        );
    }

    // Credentials take any of the three schemes.
    let credentials = &doc["paths"][format!("{BASE}/instances/{{id}}/credentials")]["get"];
    assert_eq!(
        credentials["security"],
        json!([{"UserOrganization": []}, {"ElementToken": []}, {"UserOrganizationElement": []}])
    );

    // The error body.
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], json!(["requestId", "message"]));
    // The instance's fields, in the seed's order first.
    let instance = &doc["components"]["schemas"]["InstanceJson"]["properties"];
    let fields: Vec<&String> = instance.as_object().unwrap().keys().collect();
    assert_eq!(
        &fields[..11],
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
            "cachingEnabled",
            "tags"
        ]
    );

    // Operation ids are unique (one handler serves the proxy's methods).
    let mut ids = BTreeSet::new();
    for item in doc["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            }
        }
    }
}

const SEED_OAUTH_ANSWER_URL: &str = "https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline";

#[tokio::test]
async fn served_document_and_reference_page() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let response = server.get("/openapi.json").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    assert_eq!(served, document());

    let response = server.get("/docs").send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("script-src"), "{csp}");
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script"), "the page has no script");
    // Descriptions holding `<...>` are escaped, not markup.
    assert!(html.contains("User &#60;user secret&#62;, Organization &#60;organization secret&#62;"));
    assert!(!html.contains("<user secret>"));
    // Every operation has its section.
    let sections = html.matches("<section class=\"op\"").count();
    assert_eq!(sections, described(&served).len());
    server.stop().await;
}

#[tokio::test]
async fn reference_page_in_a_headless_browser() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let browser = Browser::start().await.expect("a headless Chromium");
    browser
        .goto(&format!("{}{BASE}/docs", server.base))
        .await
        .unwrap();
    assert_eq!(browser.title().await.unwrap(), "elements API reference");

    // The seed's two operations, with their parameters, bodies and examples.
    let step1 = browser.text("#op-oauth-url h3").await.unwrap();
    assert_eq!(step1, "GET /elements/api-v2/elements/{key_or_id}/oauth/url");
    let step1_text = browser.text("#op-oauth-url").await.unwrap();
    for needle in ["apiKey", "apiSecret", "callbackUrl", SEED_OAUTH_ANSWER_URL] {
        assert!(step1_text.contains(needle), "{needle} in {step1_text}");
    }
    let step2 = browser.text("#op-post-instances h3").await.unwrap();
    assert_eq!(step2, "POST /elements/api-v2/instances");
    let step2_text = browser.text("#op-post-instances").await.unwrap();
    for needle in [
        "CreateInstance",
        "InstanceJson",
        "www.samplecallbackurl.com",
        "dsPr6AheKIS8pt7rp8E81bSRINFgeEkx9Ftr+7t",
        "UserOrganization",
    ] {
        assert!(step2_text.contains(needle), "{needle} in {step2_text}");
    }
    // Grouped by tag; the schema a response names is on the page.
    assert!(browser.exists("#tag-catalog").await.unwrap());
    assert!(browser.exists("#tag-instances").await.unwrap());
    assert!(browser.exists("#schema-InstanceJson").await.unwrap());
    browser
        .click("#op-post-instances a[href='#schema-InstanceJson']")
        .await
        .unwrap();
    assert!(browser
        .url()
        .await
        .unwrap()
        .ends_with("#schema-InstanceJson"));

    // Escaped: the scheme descriptions' `<user secret>` is text, no element.
    let schemes = browser.text("#authorization + p + table").await.unwrap();
    assert!(
        schemes.contains("User <user secret>, Organization <organization secret>"),
        "{schemes}"
    );
    assert!(!browser.exists("user").await.unwrap());
    assert!(!browser.exists("script").await.unwrap());
    browser.close().await.unwrap();
    server.stop().await;
}

// ------------------------------------------------------------ conformance

/// The virtual environment of scripts/setup.sh.
fn venv_tool(name: &str) -> PathBuf {
    let tool = repo().join("target/py/bin").join(name);
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/setup.sh (it creates the Python virtual environment \
         target/py with schemathesis and openapi-spec-validator)",
        tool.display()
    );
    tool
}

/// The checks schemathesis runs, chosen deliberately:
/// - `not_a_server_error`: no input makes the server answer 5xx;
/// - `status_code_conformance`: every status is documented;
/// - `content_type_conformance`: every body has its documented media type;
/// - `response_schema_conformance`: every body matches its schema;
/// - `response_headers_conformance`: documented headers have their types;
/// - `negative_data_rejection`: schema-invalid requests are refused (4xx);
/// - `missing_required_header`, `ignored_auth`: a request without the
///   `Authorization` header the operation declares is refused;
/// - `unsupported_method`, `allow_header_conformance`: a method the path
///   does not declare is a 405;
/// - `use_after_free`, `ensure_resource_availability`: in the stateful
///   phase, a deleted resource is gone and a created one can be read.
///
/// Not run: `positive_data_acceptance` (a schema-valid request is still
/// refused for what a schema cannot say: an unknown element, a missing
/// configuration key, a callback URL off the allow-list, an `Element` token
/// route called without one); `object_level_authorization` (needs a second
/// organization; tests/api.rs checks another organization's instance is a 404).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,\
                      negative_data_rejection,missing_required_header,ignored_auth,\
                      unsupported_method,allow_header_conformance,use_after_free,\
                      ensure_resource_availability";

struct Run {
    status: std::process::ExitStatus,
    output: String,
}

fn schemathesis(base: &str, extra: &[&str]) -> Run {
    let reports = tempfile::tempdir().unwrap();
    let output = Command::new(venv_tool("schemathesis"))
        .current_dir(reports.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_HOOKS", "")
        .args([
            "run",
            &format!("{base}{BASE}/openapi.json"),
            "--url",
            base,
            "--checks",
            CHECKS,
            "--max-examples",
            "10",
            "--workers",
            "2",
            "--seed",
            "18",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .args(extra)
        .output()
        .expect("run schemathesis");
    Run {
        status: output.status,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Asserts a run found nothing: exit status 0, and its summary says every
/// generated case passed (at least `min_cases` of them; cases schemathesis
/// skips, e.g. examples it cannot build, are neither).
fn assert_clean(run: &Run, what: &str, min_cases: u64) {
    let summary = Regex::new(r"(\d+) generated, (\d+) passed(?:, \d+ skipped)?\s*\n").unwrap();
    let caps = summary.captures(&run.output).unwrap_or_else(|| {
        panic!(
            "{what}: no `N generated, N passed` summary (status {}):\n{}",
            run.status, run.output
        )
    });
    let generated: u64 = caps[1].parse().unwrap();
    let passed: u64 = caps[2].parse().unwrap();
    assert!(
        run.status.success() && generated == passed && generated >= min_cases,
        "{what}: {passed}/{generated} passed, status {}:\n{}",
        run.status,
        run.output
    );
    assert!(!run.output.contains("FAILURES"), "{what}:\n{}", run.output);
}

#[tokio::test]
async fn document_is_valid_and_the_live_server_conforms() {
    let validator = venv_tool("openapi-spec-validator");
    venv_tool("schemathesis");
    let dir = data_dir();
    let data = dir.path().to_str().unwrap().to_owned();
    let (org, user) = (
        "openapi-org-secret-0123456789",
        "openapi-user-secret-0123456789",
    );
    // HubSpot's endpoints point at local fakes, so what the fuzzer makes the
    // server send a provider (a code exchange for a generated `code`, a
    // refresh, a verify request, a proxied call) gets a provider's answer,
    // not a connection error: an unreachable provider is a correct 502, which
    // `not_a_server_error` would count as a failure at random.
    let provider = FakeProvider::start().await;
    provider.add_client("client", "123456");
    let api = FakeApi::start().await;
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        format!(
            "[elements.hubspot]\napi_base_url = \"{}\"\n\
             [elements.hubspot.oauth]\ntoken_url = \"{}\"\nrefresh_url = \"{}\"\n",
            api.base_url(),
            provider.token_url(),
            provider.legacy_refresh_url()
        ),
    )
    .unwrap();
    let server = Binary::serve(
        &[
            "--data-dir",
            &data,
            "--config",
            config.to_str().unwrap(),
            // Schemathesis sends malformed Authorization headers on purpose;
            // the failed-authentication limiter would answer 429 to the rest.
            "--auth-failure-burst",
            "0",
            "--public-url",
            "http://127.0.0.1:9",
        ],
        &[
            ("ELEMENTS_ORGANIZATION_SECRET", org),
            ("ELEMENTS_USER_SECRET", user),
        ],
    );
    let base = server.base.clone();
    let auth = format!("User {user}, Organization {org}");
    let client = reqwest::Client::new();

    // An instance for the authenticated routes to find.
    let created = client
        .post(server.url("/instances"))
        .header("authorization", &auth)
        .json(&json!({
            "element": {"key": "hubspot"},
            "providerData": {"access_token": "at-openapi", "refresh_token": "rt-openapi", "expires_in": 31_536_000},
            "configuration": {
                "oauth.api.key": "client", "oauth.api.secret": "123456",
                "oauth.callback.url": "https://app.example/cb", "oauth.scope": "contacts"
            },
            "name": "conformance"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);

    // The served document is valid OpenAPI 3.1.
    let text = client
        .get(server.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(&validator).arg(&file).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && said.trim_end().ends_with(": OK"),
        "openapi-spec-validator: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not run: the proxy (`proxy` tag). The fuzzer creates instances of
    // other elements too, whose APIs no fake stands in for (an unreachable
    // provider is a correct 502, which `not_a_server_error` counts as a
    // failure); tests/proxy.rs covers the proxy against a fake provider.
    let run = tokio::task::spawn_blocking({
        let base = base.clone();
        move || {
            schemathesis(
                &base,
                &[
                    "--include-tag",
                    "catalog",
                    "--include-tag",
                    "reference",
                    "--include-tag",
                    "operations",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_clean(&run, "anonymous catalog routes", 100);

    let run = tokio::task::spawn_blocking({
        let (base, header) = (base.clone(), format!("Authorization: {auth}"));
        move || {
            schemathesis(
                &base,
                &[
                    "-H",
                    &header,
                    "--include-tag",
                    "instances",
                    "--include-tag",
                    "organization",
                    "--include-tag",
                    "webhooks",
                    "--include-tag",
                    "connect",
                    // Rotating the account's secrets would end the run's own
                    // credentials (tests/ops.rs covers rotation).
                    "--exclude-path-regex",
                    "secret/rotate$",
                ],
            )
        }
    })
    .await
    .unwrap();
    assert_clean(&run, "authenticated instance routes", 200);

    // Private elements in a run of their own, after the instance routes:
    // fuzzed together, the fuzzer creates an element (its example's token
    // URL is a real host, unreachable here), an instance of it, and then
    // sends that instance a `code` to exchange, which is a correct 502.
    let run = tokio::task::spawn_blocking({
        let (base, header) = (base.clone(), format!("Authorization: {auth}"));
        move || schemathesis(&base, &["-H", &header, "--include-tag", "private-elements"])
    })
    .await
    .unwrap();
    assert_clean(&run, "authenticated private-element routes", 100);

    // The server is still up and still answers the seed's call.
    let seed = client
        .get(format!(
            "{}?{SEED_OAUTH_QUERY}",
            server.url("/elements/hubspot/oauth/url")
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(seed.status(), 200);
    assert_eq!(seed.text().await.unwrap(), SEED_OAUTH_ANSWER);
}

/// Found by schemathesis (`negative_data_rejection`): serde's derived
/// structs also took a JSON array of their fields, so `[null, null]` was a
/// `PATCH /instances/{id}` that changed nothing and answered 200. Every
/// object body now refuses anything but an object.
#[tokio::test]
async fn object_bodies_refuse_arrays() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let account = server.account.clone();
    let (status, created) = server
        .post_instance(&account, &seed_instance_body("at-1", "rt-1"))
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();
    let array_bodies = [
        (
            reqwest::Method::PATCH,
            format!("/instances/{id}"),
            "[null, null]",
        ),
        (
            reqwest::Method::PUT,
            format!("/instances/{id}"),
            "[\"renamed\"]",
        ),
        (
            reqwest::Method::POST,
            "/instances".to_owned(),
            r#"[{"key": "hubspot"}, null, {}, null, "x"]"#,
        ),
        (
            reqwest::Method::POST,
            "/elements/hubspot/instances".to_owned(),
            r#"[null, null, {}, null, "x"]"#,
        ),
        (
            reqwest::Method::PATCH,
            format!("/instances/{id}/configuration/1"),
            "[\"v\"]",
        ),
        (
            reqwest::Method::POST,
            "/organizations/me/webhooks".to_owned(),
            "[\"https://app.example/hooks\", null]",
        ),
    ];
    for (method, path, body) in array_bodies {
        let response = server
            .authed(method.clone(), &path)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{method} {path} {body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["message"], "invalid JSON body: expected a JSON object, not an array",
            "{method} {path}"
        );
    }
    // Nothing changed.
    let shown: Value = server
        .fetch(reqwest::Method::GET, &format!("/instances/{id}"))
        .await;
    assert_eq!(shown["name"], "Test");
    // An object is still taken.
    let response = server
        .authed(reqwest::Method::PATCH, &format!("/instances/{id}"))
        .json(&json!({"name": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.stop().await;
}

// ------------------------------------------- documented refusals (issue 18)

/// The statuses the document lists for `method` on `path` (a template as
/// the document spells it: `/elements/api-v2/instances/{id}`).
fn documented(doc: &Value, method: &str, path: &str) -> BTreeSet<u16> {
    let op = &doc["paths"][path][method];
    let responses = op["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
    responses
        .keys()
        .map(|k| {
            k.parse()
                .unwrap_or_else(|_| panic!("{method} {path}: status {k:?}"))
        })
        .collect()
}

/// Fails unless `status` is among the statuses documented for `method`
/// on `path`.
fn assert_documented(doc: &Value, method: &str, path: &str, status: u16) {
    let listed = documented(doc, method, path);
    assert!(
        listed.contains(&status),
        "{} {path} answered {status}, which the description does not list (it lists {listed:?})",
        method.to_uppercase()
    );
}

/// The status of a refused typed call, asserted exact, then checked
/// against the served description: the status is listed, and its
/// description names the cause (`why`), so a status documented for another
/// reason does not pass.
fn refusal<T: std::fmt::Debug>(
    doc: &Value,
    (method, path): (&str, &str),
    expected: u16,
    why: &str,
    result: Result<T, elements_client::Error>,
) -> elements_client::ApiError {
    let err = refused(result);
    assert_eq!(err.status, expected, "{method} {path}: {err}");
    assert_documented(doc, method, path, expected);
    let description = doc["paths"][path][method]["responses"][expected.to_string()]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains(why),
        "{} {path} answered {expected} because of {why:?} ({}), but the description of its \
         {expected} says: {description:?}",
        method.to_uppercase(),
        err.message()
    );
    err
}

#[tokio::test]
async fn every_provoked_refusal_is_a_documented_status() {
    use elements_client::{CreateConnectSession, CreateInstance};
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.limits.max_instances_per_organization = 1;
    config.public_url = Some("https://elements.example".into());
    let server = TestServer::start(config).await;
    let doc: Value = server
        .get("/openapi.json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api = server.api();
    let shipstation = |name: &str| {
        CreateInstance::new("shipstation", name)
            .configuration("api.key", "ss-key")
            .configuration("api.secret", "ss-secret")
    };
    let instances = format!("{BASE}/instances");
    let element_instances = format!("{BASE}/elements/{{key_or_id}}/instances");
    let oauth_url = format!("{BASE}/elements/{{key_or_id}}/oauth/url");

    // The callback allow-list: a 400 on both creates and both oauth/url calls.
    api.set_callback_urls(&["https://app.example/cb".to_owned()])
        .await
        .unwrap();
    let err = refusal(
        &doc,
        ("post", &instances),
        400,
        "allow-list",
        api.create_instance(&seed_instance("at", "rt")).await,
    );
    assert!(err.message().contains("allow-list"), "{err}");
    refusal(
        &doc,
        ("post", &element_instances),
        400,
        "allow-list",
        api.create_element_instance("hubspot", &seed_instance("at", "rt"))
            .await,
    );
    refusal(
        &doc,
        ("get", &oauth_url),
        400,
        "allow-list",
        api.oauth_url("hubspot", &seed_oauth_request()).await,
    );
    refusal(
        &doc,
        ("post", &oauth_url),
        400,
        "allow-list",
        api.oauth_url_post("hubspot", &seed_oauth_request()).await,
    );
    let session = CreateConnectSession::new("github", "gh", "https://evil.example/cb")
        .configuration("oauth.api.key", "cid")
        .configuration("oauth.api.secret", "cs");
    refusal(
        &doc,
        ("post", &format!("{BASE}/connect/sessions")),
        400,
        "allow-list",
        api.create_connect_session(&session).await,
    );

    // The instance cap: a 403 on both creates.
    let first = api.create_instance(&shipstation("one")).await.unwrap();
    let err = refusal(
        &doc,
        ("post", &instances),
        403,
        "maximum number of instances",
        api.create_instance(&shipstation("two")).await,
    );
    assert!(
        err.message().contains("max_instances_per_organization = 1"),
        "{err}"
    );
    refusal(
        &doc,
        ("post", &element_instances),
        403,
        "maximum number of instances",
        api.create_element_instance("shipstation", &shipstation("two"))
            .await,
    );

    // A deactivated element: a 409 on both creates and both oauth/url calls.
    api.deactivate_element("shipstation").await.unwrap();
    api.deactivate_element("hubspot").await.unwrap();
    let err = refusal(
        &doc,
        ("post", &instances),
        409,
        "deactivated",
        api.create_instance(&shipstation("three")).await,
    );
    assert!(err.message().contains("deactivated"), "{err}");
    refusal(
        &doc,
        ("post", &element_instances),
        409,
        "deactivated",
        api.create_element_instance("shipstation", &shipstation("three"))
            .await,
    );
    let anywhere = elements_client::OAuthUrlRequest::new()
        .api_key("k")
        .api_secret("1")
        .scope("s")
        .callback_url("https://app.example/cb");
    refusal(
        &doc,
        ("get", &oauth_url),
        409,
        "deactivated",
        api.oauth_url("hubspot", &anywhere).await,
    );
    refusal(
        &doc,
        ("post", &oauth_url),
        409,
        "deactivated",
        api.oauth_url_post("hubspot", &anywhere).await,
    );

    // A built-in element cannot be replaced or deleted: 403.
    let element = format!("{BASE}/elements/{{key_or_id}}");
    refusal(
        &doc,
        ("put", &element),
        403,
        "built in",
        api.replace_element("github", &json!({"key": "github", "name": "G"}))
            .await,
    );
    refusal(
        &doc,
        ("delete", &element),
        403,
        "built in",
        api.delete_element("github").await,
    );

    // A disabled instance's credentials: 403; unknown ids: 404.
    api.disable_instance(first.id).await.unwrap();
    refusal(
        &doc,
        ("get", &format!("{BASE}/instances/{{id}}/credentials")),
        403,
        "disabled",
        api.credentials(first.id).await,
    );
    refusal(
        &doc,
        ("get", &format!("{BASE}/instances/{{id}}")),
        404,
        "No such instance",
        api.instance(first.id + 1).await,
    );
    refusal(
        &doc,
        (
            "delete",
            &format!("{BASE}/organizations/me/webhooks/{{id}}"),
        ),
        404,
        "No such webhook",
        api.delete_webhook(987_654).await,
    );
    refusal(
        &doc,
        (
            "post",
            &format!("{BASE}/organizations/me/events/{{id}}/redeliver"),
        ),
        404,
        "No such event",
        api.redeliver_event("msg_aaaaaaaaaaaaaaaaaaaaaaaaaa").await,
    );
    // A connect page of no session: 404 (an HTML page).
    let page = server.get("/connect/no-such-token").send().await.unwrap();
    assert_eq!(page.status(), 404);
    assert_documented(&doc, "get", &format!("{BASE}/connect/{{token}}"), 404);
    server.stop().await;
}

#[test]
fn provider_data_documents_its_other_keys() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["ProviderData"];
    let extra = schema["additionalProperties"]["description"]
        .as_str()
        .unwrap_or_else(|| panic!("no additionalProperties: {schema}"));
    // Any value (not only objects): the server ignores the others.
    assert_eq!(schema["additionalProperties"].get("type"), None, "{schema}");
    for named in ["realmId", "instance_url", "callback_capture", "keep"] {
        assert!(extra.contains(named), "{named} in {extra}");
    }
    // The typed fields are still listed.
    assert!(schema["properties"]["access_token"].is_object(), "{schema}");
    let verify = doc["paths"][format!("{BASE}/instances")]["post"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "verify")
        .expect("verify")["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(verify.contains("verify_on_create"), "{verify}");
    assert!(!verify.contains("default `true`"), "{verify}");
}
