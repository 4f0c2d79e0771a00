//! The bad-input suite: table-driven over real HTTP. Every case must get a
//! 4xx with a JSON error that names the problem, and the server must serve
//! the next request.
//!
//! Every case names what its message must say (the field at fault and the
//! specific reason); [`weak_needles`] refuses a case whose needle is empty or
//! would match any body error's fixed prefix, so a case cannot pass on a
//! message that says nothing about the problem it sends.

mod common;

use common::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
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

/// A non-OAuth element: its key and its required configuration keys.
struct NonOAuth {
    key: String,
    required: Vec<String>,
}

fn cases(account: &Account, non_oauth: Option<NonOAuth>) -> Vec<Case> {
    let mut c = Vec::new();
    let seed_text = serde_json::to_string(&seed()).unwrap();

    // Malformed JSON, each with serde_json's own reason.
    for (i, (text, reason)) in [
        ("{", &["EOF while parsing an object"][..]),
        ("}", &["expected value at line 1 column 1"]),
        ("[", &["EOF while parsing a list"]),
        ("nul", &["EOF while parsing a value"]),
        ("{\"name\":}", &["at `name`", "expected value"]),
        ("{\"name\":\"x\",}", &["trailing comma"]),
        ("{'name':'x'}", &["key must be a string"]),
        ("{\"name\":\"x\"", &["EOF while parsing an object"]),
        ("[]", &["invalid length 0"]),
        ("\"just a string\"", &["invalid type: string"]),
        ("42", &["invalid type: integer `42`"]),
        ("null", &["invalid type: null"]),
        ("true", &["invalid type: boolean `true`"]),
        ("{\"name\" \"x\"}", &["expected `:`"]),
        // The first problem found: no `element` (before the stray `}`).
        ("{\"a\":1}}", &["missing field `element`"]),
    ]
    .iter()
    .enumerate()
    {
        c.push(post(
            format!("malformed {i}: {text}"),
            text.as_bytes().to_vec(),
            400,
            reason,
        ));
    }
    for cut in [1, 10, 40, 80, 120, 200, seed_text.len() - 1] {
        c.push(post(
            format!("truncated at {cut}"),
            seed_text.as_bytes()[..cut].to_vec(),
            400,
            &["EOF while parsing", &format!("column {cut}")],
        ));
    }
    for garbage in [" {}", "x", "]", "\u{0}", " null", ",{}"] {
        c.push(post(
            format!("trailing {garbage:?}"),
            format!("{seed_text}{garbage}").into_bytes(),
            400,
            &["trailing characters"],
        ));
    }
    c.push(post(
        "empty body",
        Vec::new(),
        400,
        &["request body is empty"],
    ));
    c.push(post(
        "only spaces",
        b"   ".to_vec(),
        400,
        &["request body is empty"],
    ));

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
            &["must be JSON (Content-Type: application/json)"],
        );
        case.content_type = Some(ct);
        c.push(case);
    }
    let mut case = post(
        "no content type",
        seed_text.clone().into_bytes(),
        415,
        &["must be JSON (Content-Type: application/json)"],
    );
    case.content_type = None;
    c.push(case);

    // Bodies over the limit.
    for size in [65_537usize, 200_000, 1_000_000] {
        let mut body = br#"{"name":""#.to_vec();
        body.resize(size, b'a');
        body.extend_from_slice(br#""}"#);
        c.push(post(
            format!("body of {size} bytes"),
            body,
            413,
            &["larger than 64 KiB"],
        ));
    }

    // Deeply nested JSON where any JSON value is read (a configuration
    // value), so the parser really descends.
    for depth in [200usize, 5_000, 30_000] {
        let body = format!(
            r#"{{"name":"a","element":{{"key":"hubspot"}},"configuration":{{"deep":{}{}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        c.push(post(
            format!("nested {depth}"),
            body.into_bytes(),
            400,
            &["at `configuration.deep[0][0]", "recursion limit exceeded"],
        ));
    }
    // Deep nesting where a string is expected: refused at the first bracket.
    c.push(post(
        "nested name",
        format!("{{\"name\":{}{}}}", "[".repeat(5_000), "]".repeat(5_000)).into_bytes(),
        400,
        &["at `name`", "invalid type: sequence, expected a string"],
    ));

    // Duplicate keys, anywhere.
    c.push(post(
        "duplicate name",
        br#"{"name":"a","name":"b","element":{"key":"hubspot"}}"#.to_vec(),
        400,
        &["duplicate field `name`"],
    ));
    c.push(post(
        "duplicate element key",
        br#"{"name":"a","element":{"key":"hubspot","key":"x"}}"#.to_vec(),
        400,
        &["at `element`", "duplicate field `key`"],
    ));
    c.push(post(
        "duplicate configuration key",
        br#"{"name":"a","element":{"key":"hubspot"},"configuration":{"oauth.scope":"a","oauth.scope":"b"}}"#.to_vec(),
        400,
        &["at `configuration`", "duplicate key `oauth.scope`"],
    ));
    c.push(post(
        "duplicate providerData key",
        br#"{"name":"a","element":{"key":"hubspot"},"providerData":{"access_token":"a","access_token":"b"}}"#.to_vec(),
        400,
        &["at `providerData`", "duplicate field `access_token`"],
    ));

    // Wrong types and nulls, field by field: (path, value, what the message says).
    let wrong: &[(&[&str], Value, &[&str])] = &[
        (
            &["name"],
            json!(5),
            &["at `name`", "invalid type: integer `5`, expected a string"],
        ),
        (
            &["name"],
            json!(true),
            &[
                "at `name`",
                "invalid type: boolean `true`, expected a string",
            ],
        ),
        (
            &["name"],
            json!(null),
            &["at `name`", "invalid type: null, expected a string"],
        ),
        (
            &["name"],
            json!([]),
            &["at `name`", "invalid type: sequence, expected a string"],
        ),
        (
            &["name"],
            json!({}),
            &["at `name`", "invalid type: map, expected a string"],
        ),
        (
            &["element"],
            json!("hubspot"),
            &["at `element`", "invalid type: string"],
        ),
        (
            &["element"],
            json!(43),
            &["at `element`", "invalid type: integer `43`"],
        ),
        (
            &["element"],
            json!(null),
            &["at `element`", "invalid type: null"],
        ),
        // An empty array reads as an element reference without fields.
        (
            &["element"],
            json!([]),
            &["`element.key` is required (or `element.id`)"],
        ),
        (
            &["element", "key"],
            json!(5),
            &[
                "at `element.key`",
                "invalid type: integer `5`, expected a string",
            ],
        ),
        (
            &["element", "key"],
            json!([]),
            &[
                "at `element.key`",
                "invalid type: sequence, expected a string",
            ],
        ),
        (
            &["element", "id"],
            json!("43"),
            &[
                "at `element.id`",
                "invalid type: string \"43\", expected u64",
            ],
        ),
        (
            &["element", "id"],
            json!(-1),
            &[
                "at `element.id`",
                "invalid value: integer `-1`, expected u64",
            ],
        ),
        (
            &["element", "id"],
            json!(1.5),
            &[
                "at `element.id`",
                "invalid type: floating point `1.5`, expected u64",
            ],
        ),
        (
            &["tags"],
            json!("x"),
            &[
                "at `tags`",
                "invalid type: string \"x\", expected a sequence",
            ],
        ),
        (
            &["tags"],
            json!(5),
            &[
                "at `tags`",
                "invalid type: integer `5`, expected a sequence",
            ],
        ),
        (
            &["tags"],
            json!([5]),
            &[
                "at `tags[0]`",
                "invalid type: integer `5`, expected a string",
            ],
        ),
        (
            &["tags"],
            json!([null]),
            &["at `tags[0]`", "invalid type: null, expected a string"],
        ),
        (
            &["tags"],
            json!({}),
            &["at `tags`", "invalid type: map, expected a sequence"],
        ),
        (
            &["configuration"],
            json!([]),
            &[
                "at `configuration`",
                "invalid type: sequence, expected a JSON object",
            ],
        ),
        (
            &["configuration"],
            json!("x"),
            &[
                "at `configuration`",
                "invalid type: string \"x\", expected a JSON object",
            ],
        ),
        (
            &["configuration"],
            json!(5),
            &[
                "at `configuration`",
                "invalid type: integer `5`, expected a JSON object",
            ],
        ),
        (
            &["configuration"],
            json!(null),
            &[
                "at `configuration`",
                "invalid type: null, expected a JSON object",
            ],
        ),
        (
            &["configuration", "oauth.scope"],
            json!(null),
            &[
                "at `configuration.oauth.scope`",
                "did not match any variant",
            ],
        ),
        (
            &["configuration", "oauth.scope"],
            json!([]),
            &[
                "at `configuration.oauth.scope`",
                "did not match any variant",
            ],
        ),
        (
            &["configuration", "oauth.scope"],
            json!({}),
            &[
                "at `configuration.oauth.scope`",
                "did not match any variant",
            ],
        ),
        (
            &["providerData"],
            json!("x"),
            &["at `providerData`", "invalid type: string \"x\""],
        ),
        (
            &["providerData"],
            json!(5),
            &["at `providerData`", "invalid type: integer `5`"],
        ),
        // An empty array reads as provider data without fields.
        (
            &["providerData"],
            json!([]),
            &["`providerData` must contain `code` (to exchange) or `access_token`"],
        ),
        (
            &["providerData", "access_token"],
            json!(5),
            &[
                "at `providerData.access_token`",
                "invalid type: integer `5`, expected a string",
            ],
        ),
        (
            &["providerData", "access_token"],
            json!([]),
            &[
                "at `providerData.access_token`",
                "invalid type: sequence, expected a string",
            ],
        ),
        (
            &["providerData", "refresh_token"],
            json!({}),
            &[
                "at `providerData.refresh_token`",
                "invalid type: map, expected a string",
            ],
        ),
        (
            &["providerData", "code"],
            json!(7),
            &[
                "at `providerData.code`",
                "invalid type: integer `7`, expected a string",
            ],
        ),
    ];
    for (path, value, said) in wrong {
        c.push(post(
            format!("{} = {value}", path.join(".")),
            with(path, value.clone()),
            400,
            said,
        ));
    }
    // Huge numbers.
    c.push(post(
        "element.id 2^64",
        br#"{"name":"a","element":{"id":18446744073709551616}}"#.to_vec(),
        400,
        &["at `element.id`", "expected u64"],
    ));
    c.push(post(
        "element.id 1e400",
        br#"{"name":"a","element":{"id":1e400}}"#.to_vec(),
        400,
        &["at `element.id`", "number out of range"],
    ));
    c.push(post(
        "expires_in 1e400",
        seed_text.replace("\"1800\"", "1e400").into_bytes(),
        400,
        &["at `providerData.expires_in`", "number out of range"],
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
            &["`providerData.expires_in` must be a whole number of seconds from 0 to 315360000"],
        ));
    }

    // NUL bytes, control characters, invalid UTF-8.
    c.push(post(
        "NUL in name",
        with(&["name"], json!("a\u{0}b")),
        400,
        &["`name` must not contain control characters"],
    ));
    c.push(post(
        "newline in name",
        with(&["name"], json!("a\nb")),
        400,
        &["`name` must not contain control characters"],
    ));
    c.push(post(
        "NUL in tag",
        with(&["tags"], json!(["a\u{0}"])),
        400,
        &["`tags` must not contain control characters"],
    ));
    c.push(post(
        "NUL in configuration value",
        with(&["configuration", "oauth.scope"], json!("a\u{0}")),
        400,
        &["`configuration.oauth.scope` must be at most 8192 bytes without NUL"],
    ));
    c.push(post(
        "control char in configuration key",
        with(&["configuration", "a\u{7}"], json!("x")),
        400,
        &["`configuration key` must not contain control characters"],
    ));
    let mut invalid_utf8 = br#"{"name":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#"","element":{"key":"hubspot"}}"#);
    c.push(post(
        "invalid UTF-8",
        invalid_utf8,
        400,
        &["at `name`", "invalid unicode code point"],
    ));
    c.push(post(
        "lone surrogate",
        br#"{"name":"\ud800","element":{"key":"hubspot"}}"#.to_vec(),
        400,
        &["at `name`", "hex escape"],
    ));

    // Missing and empty fields.
    c.push(post(
        "missing name",
        without(&["name"]),
        400,
        &["missing field `name`"],
    ));
    c.push(post(
        "empty name",
        with(&["name"], json!("")),
        400,
        &["`name` must not be empty"],
    ));
    c.push(post(
        "blank name",
        with(&["name"], json!("   ")),
        400,
        &["`name` must not be empty"],
    ));
    c.push(post(
        "missing element",
        without(&["element"]),
        400,
        &["missing field `element`"],
    ));
    c.push(post(
        "empty element",
        with(&["element"], json!({})),
        400,
        &["`element.key` is required (or `element.id`)"],
    ));
    c.push(post(
        "no providerData for OAuth",
        without(&["providerData"]),
        400,
        &["`providerData` must contain `code` (to exchange) or `access_token`"],
    ));
    c.push(post(
        "empty access token",
        with(&["providerData", "access_token"], json!("")),
        400,
        &["`providerData` must contain `code` (to exchange) or `access_token`"],
    ));
    c.push(post(
        "empty tag",
        with(&["tags"], json!([""])),
        400,
        &["`tags` must not contain empty strings"],
    ));
    c.push(post(
        "empty configuration key",
        with(&["configuration", ""], json!("x")),
        400,
        &["`configuration` keys must not be empty"],
    ));

    // Unknown elements.
    for (key, shown) in [
        ("nope", "nope"),
        ("HubSpot", "HubSpot"),
        ("HUBSPOT", "HUBSPOT"),
        ("../hubspot", "../hubspot"),
        ("hubspot/../x", "hubspot/../x"),
        (" hubspot", " hubspot"),
        // Control characters are shown as `?`.
        ("hubspot\u{0}", "hubspot?"),
    ] {
        c.push(post(
            format!("element key {key:?}"),
            with(&["element", "key"], json!(key)),
            404,
            &[&format!("no element with key or id `{shown}`")],
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
            &[&format!("no element with key or id `{id}`")],
        ));
    }

    // Extremely long values.
    c.push(post(
        "long name",
        with(&["name"], json!("n".repeat(10_000))),
        400,
        &["`name` is longer than 200 characters"],
    ));
    c.push(post(
        "long tag",
        with(&["tags"], json!(["t".repeat(1_000)])),
        400,
        &["`tags` is longer than 100 characters"],
    ));
    c.push(post(
        "many tags",
        with(
            &["tags"],
            json!((0..51).map(|i| i.to_string()).collect::<Vec<_>>()),
        ),
        400,
        &["at most 50 `tags` are allowed"],
    ));
    c.push(post(
        "long configuration value",
        with(&["configuration", "oauth.scope"], json!("v".repeat(9_000))),
        400,
        &["`configuration.oauth.scope` must be at most 8192 bytes without NUL"],
    ));
    c.push(post(
        "long configuration key",
        with(&["configuration", &"k".repeat(300)], json!("v")),
        400,
        &["`configuration key` is longer than 200 characters"],
    ));

    // A non-OAuth element: missing configuration, and a code it cannot use.
    if let Some(NonOAuth { key, required }) = non_oauth {
        assert!(!required.is_empty(), "{key} has required configuration");
        c.push(post(
            format!("missing configuration for {key}"),
            serde_json::to_vec(&json!({"name":"a","element":{"key":key},"configuration":{}}))
                .unwrap(),
            400,
            &[&format!(
                "missing required configuration: {}",
                required.join(", ")
            )],
        ));
        let configuration: serde_json::Map<String, Value> = required
            .iter()
            .map(|k| (k.clone(), json!("value")))
            .collect();
        c.push(post(
            format!("code for non-OAuth {key}"),
            serde_json::to_vec(&json!({"name":"a","element":{"key":key},"providerData":{"code":"c"},"configuration":configuration})).unwrap(),
            400,
            &[&format!("element `{key}` does not use OAuth: `providerData.code` is not accepted")],
        ));
    }

    // Every malformed Authorization header: one message for all, by design
    // (nothing tells a prober which part was wrong).
    let mut auth_case = |name: &str, header: Option<Vec<u8>>| {
        c.push(Case {
            name: format!("authorization: {name}"),
            method: Method::GET,
            path: "/instances".into(),
            auth: Some(header),
            content_type: None,
            body: None,
            status: 401,
            needles: needles(&[
                "invalid or missing credentials: expected `Authorization: User <secret>, Organization <secret>`",
            ]),
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

    // Path tricks and ids out of range: (path, what the message names).
    for (path, said) in [
        ("/elements/nope", "no element with key or id `nope`"),
        (
            "/elements/HubSpot",
            "no element with key or id `HubSpot`; did you mean hubspot, hubspotcrm?",
        ),
        (
            "/elements/HUBSPOT",
            "no element with key or id `HUBSPOT`; did you mean hubspot, hubspotcrm?",
        ),
        // `..` is resolved before routing: /elements/api-v2/ has no such route.
        ("/elements/%2e%2e", "no such resource"),
        (
            "/elements/%2E%2E%2Finstances",
            "no element with key or id `../instances`",
        ),
        (
            "/elements/hubspot%2F..",
            "no element with key or id `hubspot/..`",
        ),
        (
            "/elements/hubspot%00",
            "no element with key or id `hubspot?`",
        ),
        ("/elements/0", "no element with key or id `0`"),
        (
            "/elements/99999999999999999999999",
            "no element with key or id `99999999999999999999999`",
        ),
        ("/elements/43.0", "no element with key or id `43.0`"),
        (
            "/elements/%20hubspot",
            "no element with key or id ` hubspot`",
        ),
        ("/elements/-1", "no element with key or id `-1`"),
        (
            "/elements/hub%2Fspot/configuration",
            "no element with key or id `hub/spot`",
        ),
        ("/elements/%2e%2e/oauth/url", "no such resource"),
    ] {
        c.push(get(format!("path {path}"), path, 404, &[said]));
    }
    for (path, status, said) in [
        (
            "/instances/0",
            400,
            "instance id must be a positive integer",
        ),
        (
            "/instances/-1",
            400,
            "instance id must be a positive integer",
        ),
        (
            "/instances/99999999999999999999",
            400,
            "instance id must be a positive integer",
        ),
        (
            "/instances/1.5",
            400,
            "instance id must be a positive integer",
        ),
        ("/instances/%2e%2e", 404, "no such resource"),
        (
            "/instances/abc",
            400,
            "instance id must be a positive integer",
        ),
        (
            "/instances/1%2F2",
            400,
            "instance id must be a positive integer",
        ),
    ] {
        let mut case = get(format!("instance path {path}"), path, status, &[said]);
        case.auth = None;
        c.push(case);
    }

    // The oauth/url query: callback policy, CRLF in reflected parameters, repeats.
    let base = "/elements/hubspot/oauth/url?apiKey=k&apiSecret=1&scope=s";
    let not_http = "invalid parameter `callbackUrl`: must be an absolute http or https URL";
    let control = "query parameter `callbackUrl` must not contain control characters";
    for (what, cb, said) in [
        ("javascript", "javascript:alert(1)", not_http),
        ("data", "data:text/html,%3Cscript%3E", not_http),
        ("file", "file:///etc/passwd", not_http),
        ("relative", "/callback", not_http),
        ("scheme-relative", "//evil.test/cb", not_http),
        ("ftp", "ftp://host/cb", not_http),
        (
            "userinfo",
            "https://user:pw@host.test/cb",
            "invalid parameter `callbackUrl`: must not contain user information",
        ),
        (
            "fragment",
            "https://host.test/cb%23frag",
            "invalid parameter `callbackUrl`: must not contain a fragment",
        ),
        (
            "CRLF",
            "https://host.test/cb%0d%0aSet-Cookie:%20x=1",
            control,
        ),
        ("tab", "https://host.test/c%09b", control),
        (
            "space",
            "https://host.test/c%20b",
            "invalid parameter `callbackUrl`: must not contain white space or control characters",
        ),
        (
            "no host",
            "https://",
            "invalid parameter `callbackUrl`: must name a host",
        ),
        ("empty", "", "missing required parameters: callbackUrl"),
    ] {
        c.push(get(
            format!("callback {what}"),
            format!("{base}&callbackUrl={cb}"),
            400,
            &[said],
        ));
    }
    let cb = "&callbackUrl=https://app.test/cb";
    for (what, query, status, said) in [
        (
            "CRLF in state",
            format!("{base}{cb}&state=a%0d%0ab"),
            400,
            "query parameter `state` must not contain control characters",
        ),
        (
            "CRLF in apiKey",
            format!("/elements/hubspot/oauth/url?apiKey=k%0d%0a&apiSecret=1&scope=s{cb}"),
            400,
            "query parameter `apiKey` must not contain control characters",
        ),
        (
            "NUL in scope",
            format!("/elements/hubspot/oauth/url?apiKey=k&apiSecret=1&scope=s%00{cb}"),
            400,
            "query parameter `scope` must not contain control characters",
        ),
        (
            "CRLF in extra param",
            format!("{base}{cb}&x=%0d%0a"),
            400,
            "query parameter `x` must not contain control characters",
        ),
        (
            "repeated apiKey",
            format!("{base}{cb}&apiKey=k2"),
            400,
            "query parameter `apiKey` is given more than once",
        ),
        (
            "repeated callbackUrl",
            format!("{base}{cb}{cb}"),
            400,
            "query parameter `callbackUrl` is given more than once",
        ),
        (
            "missing everything",
            "/elements/hubspot/oauth/url".to_owned(),
            400,
            "missing required parameters: apiKey, apiSecret, scope, callbackUrl",
        ),
        (
            "missing callbackUrl",
            base.to_owned(),
            400,
            "missing required parameters: callbackUrl",
        ),
        (
            "oversized apiKey",
            format!(
                "/elements/hubspot/oauth/url?apiKey={}&apiSecret=1&scope=s{cb}",
                "k".repeat(3000)
            ),
            400,
            "query parameter `apiKey` is too long",
        ),
        (
            "invalid percent-encoding",
            format!("{base}{cb}&state=%ff%fe"),
            400,
            "invalid query string: it must be valid UTF-8 after percent-decoding",
        ),
        (
            "unknown flow",
            format!("{base}{cb}&oauth.flow=bogus"),
            400,
            "invalid parameter `oauth.flow`: must be `legacy` or `current`",
        ),
        (
            "unknown element",
            format!("/elements/nope/oauth/url?apiKey=k{cb}"),
            404,
            "no element with key or id `nope`",
        ),
    ] {
        c.push(get(format!("oauth/url {what}"), query, status, &[said]));
    }

    // Methods not allowed.
    for (method, path) in [
        (Method::PUT, "/elements"),
        (Method::POST, "/elements/hubspot"),
        (Method::DELETE, "/elements/keys"),
        (Method::PUT, "/instances"),
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
            needles: needles(&["method not allowed on this resource"]),
        });
    }
    c
}

fn patch_cases(id: i64) -> Vec<Case> {
    let mut c = Vec::new();
    for (what, body, said) in [
        // Unknown fields are ignored, as Cloud Elements ignores them
        // (compat.rs); a known field of the wrong type is still refused.
        (
            "configuration type",
            r#"{"configuration":"x"}"#,
            &[
                "at `configuration`",
                "invalid type: string \"x\", expected a JSON object",
            ][..],
        ),
        (
            "name type",
            r#"{"name":5}"#,
            &["at `name`", "invalid type: integer `5`, expected a string"],
        ),
        (
            "tags type",
            r#"{"tags":"x"}"#,
            &[
                "at `tags`",
                "invalid type: string \"x\", expected a sequence",
            ],
        ),
        (
            "empty name",
            r#"{"name":""}"#,
            &["`name` must not be empty"],
        ),
        (
            "NUL name",
            r#"{"name":"a\u0000"}"#,
            &["`name` must not contain control characters"],
        ),
        (
            "duplicate",
            r#"{"name":"a","name":"b"}"#,
            &["duplicate field `name`"],
        ),
        (
            "malformed",
            r#"{"name":"#,
            &["at `name`", "EOF while parsing a value"],
        ),
    ] {
        c.push(Case {
            name: format!("PATCH {what}"),
            method: Method::PATCH,
            path: format!("/instances/{id}"),
            auth: None,
            content_type: Some("application/json"),
            body: Some(body.as_bytes().to_vec()),
            status: 400,
            needles: needles(said),
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
        needles: needles(&["must be JSON (Content-Type: application/json)"]),
    });
    c
}

/// Rotation routes (ops): bad ids, unknown and foreign instances, wrong
/// methods, missing credentials. `foreign`: an instance of another
/// organization.
fn rotation_cases(foreign: i64) -> Vec<Case> {
    let mut c = Vec::new();
    let post_to =
        |name: &str, path: String, auth: Option<Option<Vec<u8>>>, status, n: &[&str]| Case {
            name: name.into(),
            method: Method::POST,
            path,
            auth,
            content_type: None,
            body: None,
            status,
            needles: needles(n),
        };
    for raw in ["abc", "0", "-1", "1.5", "99999999999999999999"] {
        c.push(post_to(
            &format!("rotate token of instance {raw}"),
            format!("/instances/{raw}/token/rotate"),
            None,
            400,
            &["instance id must be a positive integer"],
        ));
    }
    c.push(post_to(
        "rotate token of an unknown instance",
        "/instances/987654321/token/rotate".into(),
        None,
        404,
        &["no instance with id 987654321"],
    ));
    c.push(post_to(
        "rotate token of another organization's instance",
        format!("/instances/{foreign}/token/rotate"),
        None,
        404,
        &[&format!("no instance with id {foreign}")],
    ));
    for path in [
        "/organizations/me/secret/rotate",
        "/users/me/secret/rotate",
        "/instances/1/token/rotate",
    ] {
        for (what, header) in [
            ("no credentials", None),
            (
                "wrong secrets",
                Some(b"User nope, Organization nope".to_vec()),
            ),
        ] {
            c.push(post_to(
                &format!("{path}: {what}"),
                path.into(),
                Some(header),
                401,
                &["invalid or missing credentials: expected `Authorization: User <secret>, Organization <secret>`"],
            ));
        }
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            c.push(Case {
                name: format!("{method} {path}"),
                method: method.clone(),
                path: path.into(),
                auth: None,
                content_type: None,
                body: None,
                status: 405,
                needles: needles(&["method not allowed on this resource"]),
            });
        }
    }
    c
}

// ---- compat: the instance routes of Issue 17 and the paging of 12.8 ----

/// Bad requests to the compat routes; `other` is another organization's
/// `Authorization` header.
fn compat_cases(id: i64, other: &str) -> Vec<Case> {
    let mut c = Vec::new();
    for (path, status, said) in [
        (
            "/instances?pageSize=0",
            400,
            &["`pageSize` must be a whole number from 1 to 500 (max_page_size)"][..],
        ),
        (
            "/instances?pageSize=abc",
            400,
            &["`pageSize` must be a whole number from 1 to 500"],
        ),
        (
            "/instances?pageSize=501",
            400,
            &["`pageSize` must be a whole number from 1 to 500"],
        ),
        (
            "/instances?nextPage=zzz",
            400,
            &["`nextPage` is not a page token"],
        ),
        (
            "/instances?nextPage=aTE6LTU",
            400,
            &["`nextPage` is not a page token"],
        ),
        (
            "/instances?where=name%3D1",
            400,
            &["unknown query parameter `where`"],
        ),
        (
            "/instances?searchText=a%01b",
            400,
            &["`searchText` must not contain control characters"],
        ),
        (
            "/instances/count?x=1",
            400,
            &["unknown query parameter `x`", "takes none"],
        ),
        ("/instances/configuration", 400, &["`Element` token"]),
        (
            &*format!("/instances/{id}/configuration/0"),
            400,
            &["configuration id must be a positive integer"],
        ),
        (
            &*format!("/instances/{id}/configuration/x"),
            400,
            &["configuration id must be a positive integer"],
        ),
        (
            &*format!("/instances/{id}/configuration/99"),
            404,
            &["has no configuration entry 99"],
        ),
        (
            "/instances/abc/configuration/1",
            400,
            &["instance id must be a positive integer"],
        ),
        (
            "/instances/999/configuration/1",
            404,
            &["no instance with id 999"],
        ),
        (
            "/elements/nope/instances",
            404,
            &["no element with key or id `nope`"],
        ),
        (
            "/elements/hubspot/instances?pageSize=-1",
            400,
            &["`pageSize` must be a whole number"],
        ),
    ] {
        c.push(Case {
            // With the account's credentials (`get` sends none).
            auth: None,
            ..get(format!("compat GET {path}"), path, status, said)
        });
    }
    let json =
        |name: &str, method: Method, path: String, body: &str, status: u16, said: &[&str]| Case {
            name: format!("compat {name}"),
            method,
            path,
            auth: None,
            content_type: Some("application/json"),
            body: Some(body.as_bytes().to_vec()),
            status,
            needles: needles(said),
        };
    c.push(json(
        "PUT no name",
        Method::PUT,
        format!("/instances/{id}"),
        r#"{"tags":["a"]}"#,
        400,
        &["`name` is required"],
    ));
    c.push(json(
        "PUT missing configuration",
        Method::PUT,
        format!("/instances/{id}"),
        r#"{"name":"a","configuration":{"oauth.api.key":"k"}}"#,
        400,
        &[
            "missing required configuration",
            "oauth.api.secret",
            "oauth.callback.url",
        ],
    ));
    c.push(json(
        "PUT empty name",
        Method::PUT,
        format!("/instances/{id}"),
        r#"{"name":" "}"#,
        400,
        &["`name` must not be empty"],
    ));
    c.push(json(
        "PUT bad id",
        Method::PUT,
        "/instances/abc".into(),
        r#"{"name":"a"}"#,
        400,
        &["instance id must be a positive integer"],
    ));
    c.push(json(
        "PUT unknown id",
        Method::PUT,
        "/instances/999".into(),
        r#"{"name":"a"}"#,
        404,
        &["no instance with id 999"],
    ));
    c.push(json(
        "PUT bad expires_in",
        Method::PUT,
        format!("/instances/{id}"),
        r#"{"name":"a","providerData":{"access_token":"t","expires_in":"soon"}}"#,
        400,
        &["`providerData.expires_in` must be a whole number of seconds"],
    ));
    c.push(json(
        "PATCH configuration NUL",
        Method::PATCH,
        format!("/instances/{id}"),
        r#"{"configuration":{"oauth.scope":"a\u0000"}}"#,
        400,
        &["`configuration.oauth.scope` must be at most"],
    ));
    c.push(json(
        "PATCH empty configuration key",
        Method::PATCH,
        format!("/instances/{id}"),
        r#"{"configuration":{"":"a"}}"#,
        400,
        &["`configuration` keys must not be empty"],
    ));
    c.push(json(
        "PATCH /instances without Element",
        Method::PATCH,
        "/instances".into(),
        r#"{"tags":["a"]}"#,
        400,
        &["`Element` token"],
    ));
    c.push(json(
        "PATCH entry without value",
        Method::PATCH,
        format!("/instances/{id}/configuration/1"),
        r#"{"key":"x"}"#,
        400,
        &["missing field `propertyValue`"],
    ));
    c.push(json(
        "POST element mismatch",
        Method::POST,
        "/elements/github/instances".into(),
        r#"{"element":{"key":"hubspot"},"name":"a"}"#,
        400,
        &["`element` names another element than the path (`github`)"],
    ));
    c.push(json(
        "POST element instances no name",
        Method::POST,
        "/elements/github/instances".into(),
        r#"{}"#,
        400,
        &["missing field `name`"],
    ));
    c.push(json(
        "POST oauth/url array",
        Method::POST,
        "/elements/hubspot/oauth/url".into(),
        r#"{"apiKey":[]}"#,
        400,
        &["`apiKey` must be a string, a number or a boolean"],
    ));
    c.push(json(
        "POST oauth/url query",
        Method::POST,
        "/elements/hubspot/oauth/url?apiKey=x".into(),
        r#"{}"#,
        400,
        &["query parameter `apiKey`", "in the JSON body"],
    ));
    c.push(json(
        "POST oauth/url missing",
        Method::POST,
        "/elements/hubspot/oauth/url".into(),
        r#"{"apiKey":"k"}"#,
        400,
        &["apiSecret"],
    ));
    // Another organization's instance: a 404, as if it did not exist.
    for (method, path, body) in [
        (Method::PUT, format!("/instances/{id}"), r#"{"name":"a"}"#),
        (Method::PATCH, format!("/instances/{id}"), r#"{"name":"a"}"#),
        (Method::GET, format!("/instances/{id}/configuration/1"), ""),
        (
            Method::PATCH,
            format!("/instances/{id}/configuration/1"),
            r#"{"propertyValue":"a"}"#,
        ),
    ] {
        c.push(Case {
            name: format!("compat other organization {method} {path}"),
            method,
            path,
            auth: Some(Some(other.as_bytes().to_vec())),
            content_type: Some("application/json"),
            body: (!body.is_empty()).then(|| body.as_bytes().to_vec()),
            status: 404,
            needles: needles(&[&format!("no instance with id {id}")]),
        });
    }
    // A bad Element token: the one 401, whatever was wrong.
    for (method, path) in [
        (Method::GET, "/instances/configuration"),
        (Method::DELETE, "/instances"),
    ] {
        c.push(Case {
            name: format!("compat unknown Element token {method} {path}"),
            method,
            path: path.into(),
            auth: Some(Some(b"Element not-a-token".to_vec())),
            content_type: None,
            body: None,
            status: 401,
            needles: needles(&["invalid or missing credentials"]),
        });
    }
    c
}

/// `POST /connect/sessions` (the server has a public URL).
fn connect_cases() -> Vec<Case> {
    let base = || {
        json!({
            "element": {"key": "gitlab"},
            "name": "Acme GitLab",
            "configuration": {"oauth.api.key": "id", "oauth.api.secret": "secret"},
            "redirectUrl": "https://app.example/connected"
        })
    };
    let body = |edit: &dyn Fn(&mut Value)| {
        let mut b = base();
        edit(&mut b);
        serde_json::to_vec(&b).unwrap()
    };
    let at = |name: &str, bytes: Vec<u8>, status: u16, n: &[&str]| Case {
        path: "/connect/sessions".into(),
        ..post(format!("connect: {name}"), bytes, status, n)
    };
    let mut c = vec![
        at(
            "no element",
            body(&|b| b["element"] = json!({})),
            400,
            &["`element.key` is required (or `element.id`)"],
        ),
        at(
            "unknown element",
            body(&|b| b["element"] = json!({"key": "nope-nope"})),
            404,
            &["no element with key or id `nope-nope`"],
        ),
        at(
            "blank name",
            body(&|b| b["name"] = json!("  ")),
            400,
            &["`name` must not be empty"],
        ),
        at(
            "an empty tag",
            body(&|b| b["tags"] = json!([""])),
            400,
            &["`tags` must not contain empty strings"],
        ),
        at(
            "no redirectUrl",
            body(&|b| {
                b.as_object_mut().unwrap().remove("redirectUrl");
            }),
            400,
            &["missing field `redirectUrl`"],
        ),
        at(
            "ftp redirectUrl",
            body(&|b| b["redirectUrl"] = json!("ftp://app.example/x")),
            400,
            &["`redirectUrl`", "must be an absolute http or https URL"],
        ),
        at(
            "redirectUrl with a fragment",
            body(&|b| b["redirectUrl"] = json!("https://app.example/x#frag")),
            400,
            &["`redirectUrl`", "must not contain a fragment"],
        ),
        at(
            "redirectUrl too long",
            body(&|b| b["redirectUrl"] = json!(format!("https://app.example/{}", "a".repeat(2100)))),
            400,
            &["`redirectUrl` is longer than 2048 characters"],
        ),
        at(
            "unknown mode",
            body(&|b| b["mode"] = json!("tab")),
            400,
            &["`mode` must be `redirect` or `popup`"],
        ),
        at(
            "endUser too long",
            body(&|b| b["endUser"] = json!("u".repeat(201))),
            400,
            &["`endUser` is longer than 200 characters"],
        ),
        at(
            "a callback URL in the configuration",
            body(&|b| b["configuration"]["oauth.callback.url"] = json!("https://x.example/cb")),
            400,
            &["`configuration.oauth.callback.url` is set by the server for connect"],
        ),
        at(
            "no client id",
            body(&|b| {
                b["configuration"].as_object_mut().unwrap().remove("oauth.api.key");
            }),
            400,
            &["missing required configuration: oauth.api.key"],
        ),
        at(
            "a NUL in a configuration value",
            body(&|b| b["configuration"]["oauth.scope"] = json!("a\u{0}b")),
            400,
            &["`configuration.oauth.scope` must be at most 8192 bytes without NUL"],
        ),
        at(
            "an unknown field",
            body(&|b| b["colour"] = json!("red")),
            400,
            &["unknown field `colour`"],
        ),
        at(
            "HubSpot's legacy flow",
            body(&|b| {
                b["element"] = json!({"key": "hubspot"});
                b["configuration"]["oauth.scope"] = json!("contacts");
            }),
            400,
            &["set `configuration.oauth.flow` to `current`"],
        ),
        Case {
            auth: Some(None),
            ..at("no credentials", body(&|_| {}), 401, &["invalid or missing credentials: expected `Authorization: User <secret>, Organization <secret>`"])
        },
    ];
    c.push(Case {
        method: Method::GET,
        ..at(
            "GET",
            Vec::new(),
            405,
            &["method not allowed on this resource"],
        )
    });
    c
}

/// proxy: paths that would leave the base URL, unknown instances, the hub
/// entrance without an instance token. None reaches a provider.
fn proxy_cases(id: i64, foreign: i64) -> Vec<Case> {
    let mut c = Vec::new();
    for (path, status, said) in [
        (
            format!("/instances/{id}/proxy/a%2Fb"),
            400,
            "the path must not contain an encoded slash (`%2F`)",
        ),
        (
            format!("/instances/{id}/proxy/a%5Cb"),
            400,
            "the path must not contain a backslash",
        ),
        (
            format!("/instances/{id}/proxy/user@evil.example"),
            400,
            "the path must not contain `@`",
        ),
        (
            format!("/instances/{id}/proxy/a%00b"),
            400,
            "the path must not contain control characters",
        ),
        (
            "/instances/abc/proxy/x".to_owned(),
            400,
            "instance id `abc` is not a positive whole number",
        ),
        (
            format!("/instances/{foreign}/proxy/x"),
            404,
            &*format!("no instance with id {foreign}").leak(),
        ),
        (
            "/hubs/marketing/contacts".to_owned(),
            400,
            "the hub API needs the instance's token",
        ),
    ] {
        c.push(Case {
            name: format!("proxy {path}"),
            method: Method::GET,
            path,
            auth: None,
            content_type: None,
            body: None,
            status,
            needles: needles(&[said]),
        });
    }
    c
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

/// Issue 16: webhooks, the event log, the `health` filter.
fn webhook_cases() -> Vec<Case> {
    let case =
        |name: &str, method: Method, path: &str, body: Option<Vec<u8>>, status, n: &[&str]| Case {
            name: format!("webhooks: {name}"),
            method,
            path: path.into(),
            auth: None,
            content_type: body.as_ref().map(|_| "application/json"),
            body,
            status,
            needles: needles(n),
        };
    let hooks = "/organizations/me/webhooks";
    let mut c = Vec::new();
    for (what, body, said) in [
        (
            "http",
            json!({"url": "http://app.example/hooks"}),
            "`url` must use https",
        ),
        (
            "ftp",
            json!({"url": "ftp://app.example/"}),
            "must use https, not `ftp`",
        ),
        (
            "userinfo",
            json!({"url": "https://u:p@app.example/"}),
            "must not contain user info",
        ),
        (
            "loopback",
            json!({"url": "https://127.0.0.1/"}),
            "private, loopback or link-local",
        ),
        (
            "link-local",
            json!({"url": "https://169.254.169.254/"}),
            "private, loopback or link-local",
        ),
        (
            "not a URL",
            json!({"url": "not a url"}),
            "`url` is not a valid absolute URL",
        ),
        (
            "long URL",
            json!({"url": format!("https://app.example/{}", "a".repeat(3000))}),
            "`url` is longer than 2048",
        ),
        ("no url", json!({"events": ["*"]}), "missing field `url`"),
        (
            "empty events",
            json!({"url": "https://app.example/", "events": []}),
            "`events` must not be empty",
        ),
        (
            "unknown event",
            json!({"url": "https://app.example/", "events": ["instance.nope"]}),
            "unknown event type or pattern `instance.nope`",
        ),
        (
            "bad pattern",
            json!({"url": "https://app.example/", "events": ["inst*"]}),
            "unknown event type or pattern `inst*`",
        ),
        (
            "events not a list",
            json!({"url": "https://app.example/", "events": "instance.*"}),
            "events",
        ),
        (
            "unknown field",
            json!({"url": "https://app.example/", "secret": "mine"}),
            "unknown field `secret`",
        ),
    ] {
        c.push(case(
            what,
            Method::POST,
            hooks,
            Some(body.to_string().into_bytes()),
            400,
            &[said],
        ));
    }
    c.push(case(
        "delete bad id",
        Method::DELETE,
        "/organizations/me/webhooks/abc",
        None,
        400,
        &["webhook id must be a positive integer"],
    ));
    c.push(case(
        "delete unknown",
        Method::DELETE,
        "/organizations/me/webhooks/12345",
        None,
        404,
        &["no webhook with id 12345"],
    ));
    c.push(case(
        "events limit 0",
        Method::GET,
        "/organizations/me/events?limit=0",
        None,
        400,
        &["`limit` must be an integer from 1 to 500"],
    ));
    c.push(case(
        "events unknown param",
        Method::GET,
        "/organizations/me/events?foo=1",
        None,
        400,
        &["unknown query parameter `foo`"],
    ));
    c.push(case(
        "redeliver bad id",
        Method::POST,
        "/organizations/me/events/xyz/redeliver",
        None,
        400,
        &["event id must be `msg_`"],
    ));
    c.push(case(
        "redeliver unknown",
        Method::POST,
        "/organizations/me/events/msg_aaaaaaaaaaaaaaaaaaaaaaaaaa/redeliver",
        None,
        404,
        &["no event with id msg_aaaaaaaaaaaaaaaaaaaaaaaaaa"],
    ));
    c.push(case(
        "health filter",
        Method::GET,
        "/instances?health=sick",
        None,
        400,
        &["`health` must be one of active, degraded, invalid, disabled"],
    ));
    c
}

/// Issue 17: a private element as the API takes it (valid as is).
fn private_element() -> Value {
    json!({
        "key": "bad-input-crm",
        "name": "Bad Input CRM",
        "description": "d",
        "image": "elements/provider_x.png",
        "hub": "crm",
        "authentication": "oauth2",
        "existing_account_description": "e",
        "config_description": "c",
        "oauth": {
            "authorization_url": "https://login.crm.example/authorize",
            "token_url": "https://login.crm.example/token"
        },
        "configuration": [{ "key": "oauth.api.key", "name": "Client ID" }]
    })
}

/// Issue 17: bad private elements and their routes.
fn private_element_cases() -> Vec<Case> {
    let case =
        |name: &str, method: Method, path: &str, body: Option<Value>, status, n: &[&str]| Case {
            name: format!("private elements: {name}"),
            method,
            path: path.into(),
            auth: None,
            content_type: body.as_ref().map(|_| "application/json"),
            body: body.map(|b| serde_json::to_vec(&b).unwrap()),
            status,
            needles: needles(n),
        };
    let with = |path: &[&str], value: Value| {
        let mut body = private_element();
        let mut slot = &mut body;
        for p in &path[..path.len() - 1] {
            slot = &mut slot[*p];
        }
        slot[path[path.len() - 1]] = value;
        Some(body)
    };
    vec![
        case(
            "unknown field",
            Method::POST,
            "/elements",
            with(&["colour"], json!("red")),
            400,
            &["unknown field `colour`"],
        ),
        case(
            "http token URL",
            Method::POST,
            "/elements",
            with(
                &["oauth", "token_url"],
                json!("http://login.crm.example/token"),
            ),
            400,
            &["field `oauth.token_url`: must be an https URL"],
        ),
        case(
            "IP address host",
            Method::POST,
            "/elements",
            with(&["oauth", "token_url"], json!("https://10.0.0.1/token")),
            400,
            &["field `oauth.token_url`", "not an IP address"],
        ),
        case(
            "undeclared host placeholder",
            Method::POST,
            "/elements",
            with(
                &["oauth", "authorization_url"],
                json!("https://{tenant}.crm.example/authorize"),
            ),
            400,
            &["placeholder `{tenant}` names no [[configuration]] entry"],
        ),
        case(
            "null field",
            Method::POST,
            "/elements",
            with(&["hub"], Value::Null),
            400,
            &["field `hub`: must not be null"],
        ),
        case(
            "wrong type",
            Method::POST,
            "/elements",
            with(&["oauth", "pkce"], json!("yes")),
            400,
            &["field `oauth.pkce`: invalid type: string \"yes\", expected a boolean"],
        ),
        case(
            "not an object",
            Method::POST,
            "/elements",
            Some(json!(["a"])),
            400,
            &["the body must be a JSON object"],
        ),
        case(
            "change a built-in",
            Method::PUT,
            "/elements/hubspot",
            Some(private_element()),
            403,
            &["element `hubspot` is built in", "/clone"],
        ),
        case(
            "delete a built-in",
            Method::DELETE,
            "/elements/hubspot",
            None,
            403,
            &["element `hubspot` is built in"],
        ),
        case(
            "unknown element's export",
            Method::GET,
            "/elements/no-such-element/export",
            None,
            404,
            &["no element with key or id `no-such-element`"],
        ),
        case(
            "unknown private id",
            Method::PUT,
            "/elements/1000000001/active",
            None,
            404,
            &["no element with key or id `1000000001`"],
        ),
        case(
            "clone body not JSON",
            Method::POST,
            "/elements/hubspot/clone",
            None,
            400,
            &["the body must be a JSON object of the fields to change"],
        )
        .with_raw_body(b"{nope"),
    ]
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
