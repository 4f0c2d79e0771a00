//! The bad-input tables of the other routes: compat (Issue 17's instance
//! routes, paging), connect, the proxy, webhooks and the event log, and
//! private elements.

use super::*;

// ---- compat: the instance routes of Issue 17 and the paging of 12.8 ----

/// Bad requests to the compat routes; `other` is another organization's
/// `Authorization` header.
pub(super) fn compat_cases(id: i64, other: &str) -> Vec<Case> {
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
    // Schemathesis found this one: an `expires_in` no token uses was let
    // through; it is checked wherever it is given.
    for body in [
        r#"{"providerData":{"expires_in":2.0881897032341993e-213}}"#,
        r#"{"providerData":{"other":1,"expires_in":[]}}"#,
    ] {
        c.push(json(
            "PATCH expires_in without a token",
            Method::PATCH,
            format!("/instances/{id}"),
            body,
            400,
            &["`providerData.expires_in` must be a whole number of seconds from 0 to 315360000"],
        ));
    }
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
pub(super) fn connect_cases() -> Vec<Case> {
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
pub(super) fn proxy_cases(id: i64, foreign: i64) -> Vec<Case> {
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

/// Issue 16: webhooks, the event log, the `health` filter.
pub(super) fn webhook_cases() -> Vec<Case> {
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
pub(super) fn private_element() -> Value {
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
pub(super) fn private_element_cases() -> Vec<Case> {
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
