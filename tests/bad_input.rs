//! The bad-input suite: table-driven over real HTTP. Every case must get a
//! 4xx with a JSON error that names the problem, and the server must serve
//! the next request.

mod common;

use common::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::{json, Value};

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
    /// The exact status, or 0 for "any 4xx".
    status: u16,
    /// A fragment the message must contain (case-insensitive), if any.
    needle: &'static str,
}

fn post(
    name: impl Into<String>,
    body: impl Into<Vec<u8>>,
    status: u16,
    needle: &'static str,
) -> Case {
    Case {
        name: name.into(),
        method: Method::POST,
        path: "/instances".into(),
        auth: None,
        content_type: Some("application/json"),
        body: Some(body.into()),
        status,
        needle,
    }
}

fn get(
    name: impl Into<String>,
    path: impl Into<String>,
    status: u16,
    needle: &'static str,
) -> Case {
    Case {
        name: name.into(),
        method: Method::GET,
        path: path.into(),
        auth: Some(None),
        content_type: None,
        body: None,
        status,
        needle,
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

fn cases(account: &Account, non_oauth: Option<String>) -> Vec<Case> {
    let mut c = Vec::new();
    let seed_text = serde_json::to_string(&seed()).unwrap();

    // Malformed, truncated and trailing-garbage JSON.
    for (i, text) in [
        "{",
        "}",
        "[",
        "nul",
        "{\"name\":}",
        "{\"name\":\"x\",}",
        "{'name':'x'}",
        "{\"name\":\"x\"",
        "[]",
        "\"just a string\"",
        "42",
        "null",
        "true",
        "{\"name\" \"x\"}",
        "{\"a\":1}}",
    ]
    .iter()
    .enumerate()
    {
        c.push(post(
            format!("malformed {i}: {text}"),
            text.as_bytes().to_vec(),
            400,
            "json",
        ));
    }
    for cut in [1, 10, 40, 80, 120, 200, seed_text.len() - 1] {
        c.push(post(
            format!("truncated at {cut}"),
            seed_text.as_bytes()[..cut].to_vec(),
            400,
            "json",
        ));
    }
    for garbage in [" {}", "x", "]", "\u{0}", " null", ",{}"] {
        c.push(post(
            format!("trailing {garbage:?}"),
            format!("{seed_text}{garbage}").into_bytes(),
            400,
            "json",
        ));
    }
    c.push(post("empty body", Vec::new(), 400, "empty"));
    c.push(post("only spaces", b"   ".to_vec(), 400, "empty"));

    // Wrong content types.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
        "json",
        "application/xml",
    ] {
        let mut case = post(
            format!("content type {ct}"),
            seed_text.clone().into_bytes(),
            415,
            "content-type",
        );
        case.content_type = Some(ct);
        c.push(case);
    }
    let mut case = post(
        "no content type",
        seed_text.clone().into_bytes(),
        415,
        "content-type",
    );
    case.content_type = None;
    c.push(case);

    // Bodies over the limit.
    for size in [65_537usize, 200_000, 1_000_000] {
        let mut body = br#"{"name":""#.to_vec();
        body.resize(size, b'a');
        body.extend_from_slice(br#""}"#);
        c.push(post(format!("body of {size} bytes"), body, 413, "64 kib"));
    }

    // Deeply nested JSON.
    for depth in [200usize, 5_000, 30_000] {
        let body = format!("{{\"name\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        c.push(post(
            format!("nested {depth}"),
            body.into_bytes(),
            400,
            "json",
        ));
    }

    // Duplicate keys, anywhere.
    c.push(post(
        "duplicate name",
        br#"{"name":"a","name":"b","element":{"key":"hubspot"}}"#.to_vec(),
        400,
        "duplicate",
    ));
    c.push(post(
        "duplicate element key",
        br#"{"name":"a","element":{"key":"hubspot","key":"x"}}"#.to_vec(),
        400,
        "duplicate",
    ));
    c.push(post(
        "duplicate configuration key",
        br#"{"name":"a","element":{"key":"hubspot"},"configuration":{"oauth.scope":"a","oauth.scope":"b"}}"#.to_vec(),
        400,
        "duplicate key",
    ));
    c.push(post(
        "duplicate providerData key",
        br#"{"name":"a","element":{"key":"hubspot"},"providerData":{"access_token":"a","access_token":"b"}}"#.to_vec(),
        400,
        "duplicate",
    ));

    // Wrong types and nulls, field by field.
    let wrong: &[(&[&str], Value)] = &[
        (&["name"], json!(5)),
        (&["name"], json!(true)),
        (&["name"], json!(null)),
        (&["name"], json!([])),
        (&["name"], json!({})),
        (&["element"], json!("hubspot")),
        (&["element"], json!(43)),
        (&["element"], json!(null)),
        (&["element"], json!([])),
        (&["element", "key"], json!(5)),
        (&["element", "key"], json!([])),
        (&["element", "id"], json!("43")),
        (&["element", "id"], json!(-1)),
        (&["element", "id"], json!(1.5)),
        (&["tags"], json!("x")),
        (&["tags"], json!(5)),
        (&["tags"], json!([5])),
        (&["tags"], json!([null])),
        (&["tags"], json!({})),
        (&["configuration"], json!([])),
        (&["configuration"], json!("x")),
        (&["configuration"], json!(5)),
        (&["configuration"], json!(null)),
        (&["configuration", "oauth.scope"], json!(null)),
        (&["configuration", "oauth.scope"], json!([])),
        (&["configuration", "oauth.scope"], json!({})),
        (&["providerData"], json!("x")),
        (&["providerData"], json!(5)),
        (&["providerData"], json!([])),
        (&["providerData", "access_token"], json!(5)),
        (&["providerData", "access_token"], json!([])),
        (&["providerData", "refresh_token"], json!({})),
        (&["providerData", "code"], json!(7)),
    ];
    for (path, value) in wrong {
        c.push(post(
            format!("{} = {value}", path.join(".")),
            with(path, value.clone()),
            400,
            path[path.len() - 1],
        ));
    }
    // Huge numbers.
    c.push(post(
        "element.id 2^64",
        br#"{"name":"a","element":{"id":18446744073709551616}}"#.to_vec(),
        400,
        "element",
    ));
    c.push(post(
        "element.id 1e400",
        br#"{"name":"a","element":{"id":1e400}}"#.to_vec(),
        400,
        "json",
    ));
    c.push(post(
        "expires_in 1e400",
        seed_text.replace("\"1800\"", "1e400").into_bytes(),
        400,
        "json",
    ));

    // Hostile expires_in.
    for v in [
        json!("soon"),
        json!([]),
        json!({}),
        json!(true),
        json!("1e"),
        json!(-1),
        json!("-60"),
        json!(1.5),
        json!(99999999999999i64),
        json!("12 34"),
    ] {
        c.push(post(
            format!("expires_in {v}"),
            with(&["providerData", "expires_in"], v),
            400,
            "expires_in",
        ));
    }

    // NUL bytes, control characters, invalid UTF-8.
    c.push(post(
        "NUL in name",
        with(&["name"], json!("a\u{0}b")),
        400,
        "name",
    ));
    c.push(post(
        "newline in name",
        with(&["name"], json!("a\nb")),
        400,
        "name",
    ));
    c.push(post(
        "NUL in tag",
        with(&["tags"], json!(["a\u{0}"])),
        400,
        "tags",
    ));
    c.push(post(
        "NUL in configuration value",
        with(&["configuration", "oauth.scope"], json!("a\u{0}")),
        400,
        "configuration",
    ));
    c.push(post(
        "control char in configuration key",
        with(&["configuration", "a\u{7}"], json!("x")),
        400,
        "configuration",
    ));
    let mut invalid_utf8 = br#"{"name":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#"","element":{"key":"hubspot"}}"#);
    c.push(post("invalid UTF-8", invalid_utf8, 400, "json"));
    c.push(post(
        "lone surrogate",
        br#"{"name":"\ud800","element":{"key":"hubspot"}}"#.to_vec(),
        400,
        "json",
    ));

    // Missing and empty fields.
    c.push(post("missing name", without(&["name"]), 400, "name"));
    c.push(post("empty name", with(&["name"], json!("")), 400, "name"));
    c.push(post(
        "blank name",
        with(&["name"], json!("   ")),
        400,
        "name",
    ));
    c.push(post(
        "missing element",
        without(&["element"]),
        400,
        "element",
    ));
    c.push(post(
        "empty element",
        with(&["element"], json!({})),
        400,
        "element",
    ));
    c.push(post(
        "no providerData for OAuth",
        without(&["providerData"]),
        400,
        "providerData",
    ));
    c.push(post(
        "empty access token",
        with(&["providerData", "access_token"], json!("")),
        400,
        "providerData",
    ));
    c.push(post("empty tag", with(&["tags"], json!([""])), 400, "tags"));
    c.push(post(
        "empty configuration key",
        with(&["configuration", ""], json!("x")),
        400,
        "configuration",
    ));

    // Unknown elements.
    for key in [
        "nope",
        "HubSpot",
        "HUBSPOT",
        "../hubspot",
        "hubspot/../x",
        " hubspot",
        "hubspot\u{0}",
    ] {
        c.push(post(
            format!("element key {key:?}"),
            with(&["element", "key"], json!(key)),
            404,
            "no element",
        ));
    }
    for id in [0u64, 999_999, u64::MAX] {
        c.push(post(
            format!("element id {id}"),
            serde_json::to_vec(
                &json!({"name":"a","element":{"id":id},"providerData":{"access_token":"x"}}),
            )
            .unwrap(),
            404,
            "no element",
        ));
    }

    // Extremely long values.
    c.push(post(
        "long name",
        with(&["name"], json!("n".repeat(10_000))),
        400,
        "name",
    ));
    c.push(post(
        "long tag",
        with(&["tags"], json!(["t".repeat(1_000)])),
        400,
        "tags",
    ));
    c.push(post(
        "many tags",
        with(
            &["tags"],
            json!((0..51).map(|i| i.to_string()).collect::<Vec<_>>()),
        ),
        400,
        "tags",
    ));
    c.push(post(
        "long configuration value",
        with(&["configuration", "oauth.scope"], json!("v".repeat(9_000))),
        400,
        "configuration",
    ));
    c.push(post(
        "long configuration key",
        with(&["configuration", &"k".repeat(300)], json!("v")),
        400,
        "configuration",
    ));

    // Non-OAuth element with a code.
    if let Some(key) = non_oauth {
        c.push(post(
            format!("code for non-OAuth {key}"),
            serde_json::to_vec(&json!({"name":"a","element":{"key":key},"providerData":{"code":"c"},"configuration":{}})).unwrap(),
            400,
            "",
        ));
    }

    // Every malformed Authorization header.
    let mut auth_case = |name: &str, header: Option<Vec<u8>>| {
        c.push(Case {
            name: format!("authorization: {name}"),
            method: Method::GET,
            path: "/instances".into(),
            auth: Some(header),
            content_type: None,
            body: None,
            status: 401,
            needle: "credentials",
        });
    };
    let u = &account.user_secret;
    let o = &account.organization_secret;
    auth_case("none", None);
    for (name, header) in [
        ("empty", String::new()),
        ("User only", "User".into()),
        ("user secret only", format!("User {u}")),
        ("org secret only", format!("Organization {o}")),
        ("missing org value", format!("User {u}, Organization")),
        ("no comma", format!("User {u} Organization {o}")),
        ("semicolon", format!("User {u}; Organization {o}")),
        ("bearer", "Bearer abc".into()),
        ("basic", "Basic dXNlcjpwYXNz".into()),
        (
            "empty element",
            format!("User {u}, Organization {o}, Element"),
        ),
        (
            "user twice",
            format!("User {u}, User {u}, Organization {o}"),
        ),
        ("blank user", format!("User , Organization {o}")),
        ("swapped", format!("User {o}, Organization {u}")),
        ("wrong org", format!("User {u}, Organization nope")),
        ("wrong user", format!("User nope, Organization {o}")),
        ("element only", "Element abc".into()),
        (
            "unknown scheme",
            format!("User {u}, Organization {o}, Admin x"),
        ),
        (
            "oversized",
            format!("User {}, Organization {o}", "a".repeat(20_000)),
        ),
        ("tab inside", format!("User {u}\tx, Organization {o}")),
        ("trailing comma", format!("User {u}, Organization {o},")),
    ] {
        auth_case(name, Some(header.into_bytes()));
    }
    auth_case("non-UTF-8", Some(b"User \xff\xfe, Organization x".to_vec()));

    // Path tricks and ids out of range.
    for path in [
        "/elements/nope",
        "/elements/HubSpot",
        "/elements/HUBSPOT",
        "/elements/%2e%2e",
        "/elements/%2E%2E%2Finstances",
        "/elements/hubspot%2F..",
        "/elements/hubspot%00",
        "/elements/0",
        "/elements/99999999999999999999999",
        "/elements/43.0",
        "/elements/%20hubspot",
        "/elements/-1",
        "/elements/hub%2Fspot/configuration",
        "/elements/%2e%2e/oauth/url",
    ] {
        c.push(get(format!("path {path}"), path, 0, ""));
    }
    for path in [
        "/instances/0",
        "/instances/-1",
        "/instances/99999999999999999999",
        "/instances/1.5",
        "/instances/%2e%2e",
        "/instances/abc",
        "/instances/1%2F2",
    ] {
        let mut case = get(format!("instance path {path}"), path, 0, "");
        case.auth = None;
        c.push(case);
    }

    // The oauth/url query: callback policy, CRLF in reflected parameters, repeats.
    let base = "/elements/hubspot/oauth/url?apiKey=k&apiSecret=1&scope=s";
    for (what, cb) in [
        ("javascript", "javascript:alert(1)"),
        ("data", "data:text/html,%3Cscript%3E"),
        ("file", "file:///etc/passwd"),
        ("relative", "/callback"),
        ("scheme-relative", "//evil.test/cb"),
        ("ftp", "ftp://host/cb"),
        ("userinfo", "https://user:pw@host.test/cb"),
        ("fragment", "https://host.test/cb%23frag"),
        ("CRLF", "https://host.test/cb%0d%0aSet-Cookie:%20x=1"),
        ("tab", "https://host.test/c%09b"),
        ("space", "https://host.test/c%20b"),
        ("no host", "https://"),
        ("empty", ""),
    ] {
        c.push(get(
            format!("callback {what}"),
            format!("{base}&callbackUrl={cb}"),
            400,
            "callbackUrl",
        ));
    }
    let cb = "&callbackUrl=https://app.test/cb";
    for (what, query) in [
        ("CRLF in state", format!("{base}{cb}&state=a%0d%0ab")),
        (
            "CRLF in apiKey",
            format!("/elements/hubspot/oauth/url?apiKey=k%0d%0a&apiSecret=1&scope=s{cb}"),
        ),
        (
            "NUL in scope",
            format!("/elements/hubspot/oauth/url?apiKey=k&apiSecret=1&scope=s%00{cb}"),
        ),
        ("CRLF in extra param", format!("{base}{cb}&x=%0d%0a")),
        ("repeated apiKey", format!("{base}{cb}&apiKey=k2")),
        ("repeated callbackUrl", format!("{base}{cb}{cb}")),
        (
            "missing everything",
            "/elements/hubspot/oauth/url".to_owned(),
        ),
        ("missing callbackUrl", base.to_owned()),
        (
            "oversized apiKey",
            format!(
                "/elements/hubspot/oauth/url?apiKey={}&apiSecret=1&scope=s{cb}",
                "k".repeat(3000)
            ),
        ),
        (
            "invalid percent-encoding",
            format!("{base}{cb}&state=%ff%fe"),
        ),
        ("unknown flow", format!("{base}{cb}&oauth.flow=bogus")),
        (
            "unknown element",
            format!("/elements/nope/oauth/url?apiKey=k{cb}"),
        ),
    ] {
        c.push(get(format!("oauth/url {what}"), query, 0, ""));
    }

    // Methods not allowed.
    for (method, path) in [
        (Method::PUT, "/elements"),
        (Method::POST, "/elements/hubspot"),
        (Method::DELETE, "/elements/keys"),
        (Method::PATCH, "/instances"),
        (Method::POST, "/instances/1/configuration"),
    ] {
        c.push(Case {
            name: format!("{method} {path}"),
            method,
            path: path.into(),
            auth: None,
            content_type: None,
            body: None,
            status: 405,
            needle: "method",
        });
    }
    c
}

fn patch_cases(id: i64) -> Vec<Case> {
    let mut c = Vec::new();
    for (what, body, status, needle) in [
        ("unknown field", r#"{"colour":"red"}"#, 400, "colour"),
        ("name type", r#"{"name":5}"#, 400, "name"),
        ("tags type", r#"{"tags":"x"}"#, 400, "tags"),
        ("empty name", r#"{"name":""}"#, 400, "name"),
        ("NUL name", r#"{"name":"a\u0000"}"#, 400, "name"),
        ("duplicate", r#"{"name":"a","name":"b"}"#, 400, "duplicate"),
        ("malformed", r#"{"name":"#, 400, "json"),
    ] {
        c.push(Case {
            name: format!("PATCH {what}"),
            method: Method::PATCH,
            path: format!("/instances/{id}"),
            auth: None,
            content_type: Some("application/json"),
            body: Some(body.as_bytes().to_vec()),
            status,
            needle,
        });
    }
    c.push(Case {
        name: "PATCH text/plain".into(),
        method: Method::PATCH,
        path: format!("/instances/{id}"),
        auth: None,
        content_type: Some("text/plain"),
        body: Some(br#"{"name":"x"}"#.to_vec()),
        status: 415,
        needle: "content-type",
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    let dir = data_dir();
    // Dozens of deliberate 401s from one address: the failed-authentication
    // limiter (tests/limits.rs) is off here so each case gets its own answer.
    let mut config = config_in(dir.path());
    config.limits.auth_failure_burst = 0;
    let server = TestServer::start(config).await;
    let non_oauth = server
        .state
        .registry
        .iter()
        .find(|e| e.spec().oauth.is_none())
        .map(|e| e.key().to_owned());
    let (status, created) = server.post_instance(&server.account, &seed()).await;
    assert_eq!(status, 200, "{created}");
    let id = created["id"].as_i64().unwrap();

    let mut all = cases(&server.account, non_oauth);
    all.extend(patch_cases(id));
    assert!(all.len() >= 150, "only {} cases", all.len());
    eprintln!("{} bad-input cases", all.len());

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
        assert!(
            (400..500).contains(&status),
            "{}: status {status}",
            case.name
        );
        if case.status != 0 {
            assert_eq!(status, case.status, "{}", case.name);
        }
        let ctype = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
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
        assert!(!message.is_empty(), "{}: {text}", case.name);
        assert!(
            err["requestId"].as_str().is_some_and(|s| !s.is_empty()),
            "{}",
            case.name
        );
        assert!(
            message.to_lowercase().contains(&case.needle.to_lowercase()),
            "{}: {message:?} should name {:?}",
            case.name,
            case.needle
        );
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
    let name = "<script>alert('x')</script>";
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
    assert_eq!(got["name"], name);
    server.stop().await;
}
