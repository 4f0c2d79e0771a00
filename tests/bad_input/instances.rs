//! The bad-input tables of the instance routes: `POST /instances` (every
//! field of the body, every credential kind), `PATCH`, and the
//! organization's secret rotation.

use super::*;

/// A non-OAuth element: its key and its required configuration keys.
pub(super) struct NonOAuth {
    pub(super) key: String,
    pub(super) required: Vec<String>,
}

pub(super) fn cases(account: &Account, non_oauth: Option<NonOAuth>) -> Vec<Case> {
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

    // An `expires_in` nothing uses (a code to exchange) is checked too.
    let mut coded = seed();
    coded["providerData"] = json!({"code": "c", "expires_in": 1.5});
    c.push(post(
        "expires_in beside a code",
        serde_json::to_vec(&coded).unwrap(),
        400,
        &["`providerData.expires_in` must be a whole number of seconds from 0 to 315360000"],
    ));

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

pub(super) fn patch_cases(id: i64) -> Vec<Case> {
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
pub(super) fn rotation_cases(foreign: i64) -> Vec<Case> {
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
