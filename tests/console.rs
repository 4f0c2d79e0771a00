//! The HTML console end to end: a real server on 127.0.0.1:0 over a real
//! SQLite file, driven by a real headless Chromium (elements_testkit::browser)
//! and, for what a browser cannot forge, a real HTTP client.
//!
//! The browser tests write docs/screenshots/*.png.

mod common;

use std::path::PathBuf;

use common::*;
use elements_server::console::Settings;
use elements_server::AppState;
use elements_testkit::browser::Browser;
use regex::Regex;
use reqwest::header::{CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::Method;
use serde_json::Value;

const XSS_NAME: &str = "<script>alert(1)</script>";

/// Where a screenshot goes: `target/screenshots` on every run, or the
/// folder in `ELEMENTS_SCREENSHOT_DIR` (`docs/screenshots` to refresh the
/// README's pictures), so an ordinary test run leaves the tree clean.
fn screenshot(name: &str) -> PathBuf {
    let dir = std::env::var_os("ELEMENTS_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots"));
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir.join(format!("{name}.png"))
}

/// Creates an instance through the API; returns its id.
async fn create_instance(server: &TestServer, account: &Account, name: &str) -> i64 {
    let mut body = seed_instance_body("at-console", "rt-console");
    body["name"] = Value::String(name.into());
    body["tags"] = serde_json::json!(["console"]);
    let (status, answer) = server.post_instance(account, &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["id"].as_i64().expect("an id")
}

/// An instance whose stored name is `name` as given: the API removes
/// markup from names (compat), so markup reaches the store only in rows
/// written before that or by other means; the console must escape it.
async fn create_instance_stored_as(server: &TestServer, account: &Account, name: &str) -> i64 {
    let id = create_instance(server, account, "placeholder").await;
    let store = &server.state.store;
    let org = store
        .instance_any(id)
        .await
        .unwrap()
        .unwrap()
        .organization_id;
    let patch = elements_store::InstancePatch {
        name: Some(name.into()),
        ..Default::default()
    };
    store
        .update_instance(org, id, patch)
        .await
        .unwrap()
        .unwrap();
    id
}

/// The instance as the API shows it: (status, body).
async fn api_instance(server: &TestServer, id: i64) -> (u16, Value) {
    let response = server
        .authed(Method::GET, &format!("/instances/{id}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Signs in through the browser's form and waits until the browser is at
/// `lands_on` (a path).
async fn browser_sign_in(browser: &Browser, base: &str, account: &Account, lands_on: &str) {
    browser
        .goto(&format!("{base}/console/login"))
        .await
        .unwrap();
    browser
        .fill("#organization_secret", &account.organization_secret)
        .await
        .unwrap();
    browser
        .fill("#user_secret", &account.user_secret)
        .await
        .unwrap();
    browser.click("#sign-in").await.unwrap();
    // The login page has an `h1` too: wait for the redirect.
    browser
        .wait_for_url(&format!("{base}{lands_on}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn catalog_search_and_element_page_in_a_browser() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let total = server.state.registry.len();
    let browser = Browser::start().await.expect("a headless Chromium");

    // The catalog at `/` and at `/console`, for anonymous visitors.
    for path in ["/", "/console"] {
        browser
            .goto(&format!("{}{path}", server.base))
            .await
            .unwrap();
        assert_eq!(browser.title().await.unwrap(), "Catalog · elements console");
        assert_eq!(
            browser.text("#count").await.unwrap(),
            format!("{total} of {total} elements")
        );
        assert_eq!(
            browser.find_all("#elements tbody tr").await.unwrap().len(),
            total
        );
        assert!(browser
            .text("header nav")
            .await
            .unwrap()
            .contains("Sign in"));
    }
    browser.screenshot_to(&screenshot("catalog")).await.unwrap();

    // Search through the form: by hub.
    browser.fill("#q", "marketing").await.unwrap();
    browser.click("form.search button").await.unwrap();
    // The page before has a `#count` too: wait for the new URL.
    browser
        .wait_for_url(&format!("{}/console?q=marketing", server.base))
        .await
        .unwrap();
    browser.wait_for("#count").await.unwrap();
    let hubs: Vec<String> = {
        let mut hubs = Vec::new();
        for row in browser
            .find_all("#elements tbody tr td:nth-child(3)")
            .await
            .unwrap()
        {
            hubs.push(row.text().await.unwrap());
        }
        hubs
    };
    let marketing = server
        .state
        .registry
        .iter()
        .filter(|e| e.spec().hub == "marketing")
        .count();
    assert!(marketing >= 2, "the catalog has several marketing elements");
    assert_eq!(hubs.len(), marketing);
    assert!(hubs.iter().all(|h| h == "marketing"), "{hubs:?}");
    assert_eq!(
        browser.text("#count").await.unwrap(),
        format!("{marketing} of {total} elements matching “marketing”")
    );

    // By credential kind, by key, and nothing.
    browser
        .goto(&format!("{}/console?q=apikey", server.base))
        .await
        .unwrap();
    let keys = browser
        .find_all("#elements tbody tr td:nth-child(2)")
        .await
        .unwrap();
    let kinds = browser
        .find_all("#elements tbody tr td:nth-child(4)")
        .await
        .unwrap();
    assert!(!kinds.is_empty());
    assert_eq!(keys.len(), kinds.len());
    let mut by_kind = 0;
    for (key, kind) in keys.iter().zip(&kinds) {
        let (key, kind) = (key.text().await.unwrap(), kind.text().await.unwrap());
        // A match by kind, or by a key such as `bamboohr-apikey`.
        assert!(kind == "apikey" || key.contains("apikey"), "{key}: {kind}");
        by_kind += usize::from(kind == "apikey");
    }
    assert!(by_kind > 0);
    browser
        .goto(&format!("{}/console?q=HUBSPOT", server.base))
        .await
        .unwrap();
    // Case-insensitive: HubSpot and every element named or keyed like it
    // (hubspotcrm), nothing else.
    let rows = browser.text("#elements tbody").await.unwrap();
    assert!(
        rows.lines()
            .any(|row| row.split_whitespace().take(2).eq(["HubSpot", "hubspot"])),
        "{rows}"
    );
    for row in rows.lines() {
        assert!(row.to_lowercase().contains("hubspot"), "{row}");
    }
    browser
        .goto(&format!("{}/console?q=no-such-thing", server.base))
        .await
        .unwrap();
    assert_eq!(
        browser.text("p.empty").await.unwrap(),
        "No element matches “no-such-thing”."
    );

    // The element page, reached by its link.
    browser
        .goto(&format!("{}/console?q=hubspot", server.base))
        .await
        .unwrap();
    browser.click("#elements a").await.unwrap();
    browser.wait_for("#toml").await.unwrap();
    assert!(browser
        .url()
        .await
        .unwrap()
        .ends_with("/console/elements/hubspot"));
    assert_eq!(browser.text("h1").await.unwrap(), "HubSpot hubspot");
    let oauth = browser.text("#oauth").await.unwrap();
    assert!(
        oauth.contains("https://app.hubspot.com/auth/authenticate"),
        "{oauth}"
    );
    assert!(
        oauth.contains("https://api.hubapi.com/oauth/v1/token"),
        "{oauth}"
    );
    assert!(
        oauth.contains("https://api.hubapi.com/auth/v1/refresh"),
        "{oauth}"
    );
    let configuration = browser.text("#configuration").await.unwrap();
    assert!(
        configuration.contains("oauth.api.secret secret"),
        "{configuration}"
    );
    assert!(
        configuration.contains("oauth.flow OAuth flow SELECT optional legacy"),
        "{configuration}"
    );
    let toml = browser.text("#toml").await.unwrap();
    assert!(toml.contains("key = \"hubspot\""), "{toml}");
    assert!(toml.contains("[[configuration]]"), "{toml}");
    browser.screenshot_to(&screenshot("element")).await.unwrap();

    // An unknown element: a human 404 page.
    browser
        .goto(&format!("{}/console/elements/nope", server.base))
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Not found");
    assert_eq!(
        browser.text("#message").await.unwrap(),
        "There is no element with this key in the catalog."
    );
    browser.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn sign_in_and_manage_instances_in_a_browser() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let account = server.account.clone();
    let plain = create_instance(&server, &account, "Marketing CRM").await;
    let xss = create_instance_stored_as(&server, &account, XSS_NAME).await;
    let browser = Browser::start().await.expect("a headless Chromium");

    // Signed out, the instances send people to sign in.
    browser
        .goto(&format!("{}/console/instances", server.base))
        .await
        .unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console/login"));

    // Wrong secrets: an error, still on the sign-in page.
    browser.fill("#organization_secret", "wrong").await.unwrap();
    browser
        .fill("#user_secret", &account.user_secret)
        .await
        .unwrap();
    browser.click("#sign-in").await.unwrap();
    browser.wait_for("#error").await.unwrap();
    assert_eq!(
        browser.text("#error").await.unwrap(),
        "The organization secret or the user secret is wrong."
    );
    assert_eq!(browser.title().await.unwrap(), "Sign in · elements console");
    browser.screenshot_to(&screenshot("login")).await.unwrap();

    // The right ones: the organization's instances, names as text.
    browser_sign_in(&browser, &server.base, &account, "/console/instances").await;
    assert!(browser.url().await.unwrap().ends_with("/console/instances"));
    assert_eq!(browser.text("h1").await.unwrap(), "Instances");
    assert!(browser.text("header nav").await.unwrap().contains("acme"));
    let rows = browser.find_all("#instances tbody tr").await.unwrap();
    assert_eq!(rows.len(), 2);
    let names = browser.text("#instances").await.unwrap();
    assert!(names.contains(XSS_NAME), "{names}");
    assert!(names.contains("Marketing CRM"), "{names}");
    assert!(names.contains("HubSpot"), "{names}");
    let source = browser.source().await.unwrap();
    assert!(
        !source.contains(XSS_NAME),
        "the name is escaped in the HTML"
    );
    assert!(
        source.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "the name is HTML-escaped"
    );
    // No script ran (and none could: CSP without scripts).
    assert!(browser.client().get_alert_text().await.is_err());
    browser
        .screenshot_to(&screenshot("instances"))
        .await
        .unwrap();

    // The XSS-named instance's page: the name is text there too.
    browser
        .click(&format!("a[href='/console/instances/{xss}']"))
        .await
        .unwrap();
    browser.wait_for("#name").await.unwrap();
    assert_eq!(browser.text("#name").await.unwrap(), XSS_NAME);
    assert_eq!(
        browser.title().await.unwrap(),
        format!("{XSS_NAME} · elements console")
    );

    // The other instance's page: secrets masked, as in the API.
    browser
        .goto(&format!("{}/console/instances/{plain}", server.base))
        .await
        .unwrap();
    assert_eq!(browser.text("#name").await.unwrap(), "Marketing CRM");
    let configuration = browser.text("#configuration").await.unwrap();
    assert!(
        configuration.contains("oauth.api.secret ********"),
        "{configuration}"
    );
    assert!(
        configuration.contains("oauth.api.key ********"),
        "{configuration}"
    );
    assert!(!browser.source().await.unwrap().contains("123456"));
    assert_eq!(browser.text("#status").await.unwrap(), "valid enabled");
    browser
        .screenshot_to(&screenshot("instance"))
        .await
        .unwrap();

    // Disable, then enable again; the API sees each change.
    browser.click("#toggle").await.unwrap();
    // The page reloads into itself: wait for the new status, not for an
    // element the old page has too.
    browser
        .wait_for_text("#status", "valid disabled")
        .await
        .unwrap();
    assert_eq!(api_instance(&server, plain).await.1["disabled"], true);
    assert_eq!(browser.text("#toggle").await.unwrap(), "Enable");
    browser.click("#toggle").await.unwrap();
    browser
        .wait_for_text("#status", "valid enabled")
        .await
        .unwrap();
    assert_eq!(api_instance(&server, plain).await.1["disabled"], false);

    // Delete: a confirmation page first, which changes nothing.
    browser.click("#delete").await.unwrap();
    browser.wait_for("#confirm-delete").await.unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Delete “Marketing CRM”?");
    assert_eq!(api_instance(&server, plain).await.0, 200);
    browser.click("#confirm-delete").await.unwrap();
    browser.wait_for("#instances").await.unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console/instances"));
    assert_eq!(
        browser.find_all("#instances tbody tr").await.unwrap().len(),
        1
    );
    assert_eq!(api_instance(&server, plain).await.0, 404);

    // A deleted (or unknown) instance is a 404 page.
    browser
        .goto(&format!("{}/console/instances/{plain}", server.base))
        .await
        .unwrap();
    assert_eq!(browser.text("h1").await.unwrap(), "Not found");

    // The callback allow-list: edit, see it, and a bad URL is refused.
    browser
        .goto(&format!("{}/console/callback-urls", server.base))
        .await
        .unwrap();
    assert_eq!(
        browser.text("#current").await.unwrap(),
        "No allow-list: every well-formed callback URL is accepted."
    );
    browser
        .fill(
            "#urls",
            "https://app.acme.test/cb\nhttp://localhost:8080/cb",
        )
        .await
        .unwrap();
    browser.click("#save").await.unwrap();
    // The page reloads into itself: wait for the new list (the store
    // keeps it sorted).
    browser
        .wait_for_text(
            "#current",
            "http://localhost:8080/cb\nhttps://app.acme.test/cb",
        )
        .await
        .unwrap();
    assert_eq!(
        server
            .fetch::<Vec<String>>(Method::GET, "/organizations/me/callback-urls")
            .await,
        vec!["http://localhost:8080/cb", "https://app.acme.test/cb"],
        "the API sees the list"
    );
    browser.fill("#urls", "ftp://nope.test/").await.unwrap();
    browser.click("#save").await.unwrap();
    browser.wait_for("#error").await.unwrap();
    assert!(browser
        .text("#error")
        .await
        .unwrap()
        .starts_with("URL 1 (ftp://nope.test/)"));
    assert_eq!(
        server
            .fetch::<Vec<String>>(Method::GET, "/organizations/me/callback-urls")
            .await,
        vec!["http://localhost:8080/cb", "https://app.acme.test/cb"]
    );

    // Sign out: the instances want a sign-in again.
    browser.click("header button.link").await.unwrap();
    browser.wait_for("#count").await.unwrap();
    browser
        .goto(&format!("{}/console/instances", server.base))
        .await
        .unwrap();
    assert!(browser.url().await.unwrap().ends_with("/console/login"));
    browser.close().await.unwrap();
    server.stop().await;
}

// ------------------------------------------------------------------ HTTP

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

/// The `name=value` part of the session cookie an answer sets.
fn session_cookie(response: &reqwest::Response) -> String {
    let set = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("elements_console="))
        .expect("a session cookie");
    set.split(';').next().unwrap().to_owned()
}

fn csrf_in(html: &str) -> String {
    Regex::new(r#"name="csrf" value="([A-Za-z0-9_-]+)""#)
        .unwrap()
        .captures(html)
        .expect("a CSRF field")[1]
        .to_owned()
}

/// Signs in over HTTP; returns (session cookie, CSRF token, Set-Cookie line).
async fn http_sign_in(
    base: &str,
    account: &Account,
    headers: &[(&str, &str)],
) -> (String, String, String) {
    let client = http();
    let mut request = client.get(format!("{base}/console/login"));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let form = request.send().await.unwrap();
    assert_eq!(form.status(), 200);
    let anonymous = session_cookie(&form);
    let csrf = csrf_in(&form.text().await.unwrap());
    let mut request = client
        .post(format!("{base}/console/login"))
        .header(COOKIE, &anonymous)
        .form(&[
            ("csrf", csrf.as_str()),
            ("organization_secret", account.organization_secret.as_str()),
            ("user_secret", account.user_secret.as_str()),
        ]);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let signed_in = request.send().await.unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()[LOCATION], "/console/instances");
    let line = signed_in
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("elements_console="))
        .unwrap();
    let cookie = session_cookie(&signed_in);
    assert_ne!(cookie, anonymous, "a new session on sign-in");
    // The session's CSRF token, as its pages carry it.
    let page = client
        .get(format!("{base}/console/instances"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csrf = csrf_in(&page.text().await.unwrap());
    (cookie, csrf, line)
}

/// Serves the same router with other console settings, over the same state.
async fn serve_with(state: AppState, settings: Settings) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, elements_server::router_with(state, settings))
            .await
            .unwrap();
    });
    base
}

#[tokio::test]
async fn every_console_page_carries_strict_headers_and_the_api_keeps_json() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let (cookie, _, _) = http_sign_in(&server.base, &server.account, &[]).await;
    let id = create_instance(&server, &server.account, "x").await;
    let client = http();
    for (path, status) in [
        ("/", 200),
        ("/console", 200),
        ("/console?q=crm", 200),
        ("/console/elements/hubspot", 200),
        ("/console/elements/nope", 404),
        ("/console/login", 200),
        ("/console/instances", 200),
        (&format!("/console/instances/{id}") as &str, 200),
        (&format!("/console/instances/{id}/delete") as &str, 200),
        ("/console/instances/abc", 404),
        ("/console/instances/999999", 404),
        ("/console/callback-urls", 200),
        ("/console/no/such/page", 404),
        ("/console/style.css", 200),
    ] {
        let response = client
            .get(format!("{}{path}", server.base))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        let h = response.headers();
        assert_eq!(
            h["content-security-policy"],
            "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self'; \
             form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
            "{path}"
        );
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        let kind = h[CONTENT_TYPE].to_str().unwrap().to_owned();
        if path.ends_with(".css") {
            assert_eq!(kind, "text/css; charset=utf-8");
        } else {
            assert_eq!(kind, "text/html; charset=utf-8", "{path}");
            let html = response.text().await.unwrap();
            assert!(html.starts_with("<!doctype html>"), "{path}");
            assert!(!html.contains("<script"), "{path}: no scripts");
            assert!(!html.contains("style="), "{path}: no inline styles");
        }
    }
    // A method a console page does not take: an HTML 405, same headers.
    for (method, path) in [
        (Method::PUT, "/console"),
        (Method::POST, "/"),
        (Method::DELETE, "/console/instances/1"),
        (Method::GET, "/console/logout"),
    ] {
        let response = client
            .request(method.clone(), format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method} {path}");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(response
            .text()
            .await
            .unwrap()
            .contains("This page does not answer that kind of request."));
    }
    // The API is unchanged: JSON, JSON 404s inside and outside it.
    for path in [
        "/elements/api-v2/nope",
        "/nope",
        "/elements/api-v2/elements/nope",
    ] {
        let response = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert!(response.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
    }
    let elements = client.get(server.url("/elements")).send().await.unwrap();
    assert_eq!(elements.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn the_session_cookie_is_strict_opaque_and_csrf_guards_every_post() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let id = create_instance(&server, &server.account, "guarded").await;
    let (cookie, csrf, line) = http_sign_in(&server.base, &server.account, &[]).await;

    // Attributes; no Secure over plain http, Secure behind an https proxy.
    assert!(line.contains("HttpOnly"), "{line}");
    assert!(line.contains("SameSite=Strict"), "{line}");
    assert!(line.contains("Path=/console"), "{line}");
    assert!(!line.contains("Secure"), "{line}");
    let (_, _, https_line) = http_sign_in(
        &server.base,
        &server.account,
        &[("x-forwarded-proto", "https")],
    )
    .await;
    assert!(https_line.contains("; Secure"), "{https_line}");

    // Neither the secrets nor their hashes are readable in the cookie.
    let value = cookie.trim_start_matches("elements_console=");
    let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, value)
        .expect("base64url");
    for secret in [
        &server.account.organization_secret,
        &server.account.user_secret,
    ] {
        assert!(!cookie.contains(secret.as_str()));
        let hash = elements_store::hash_secret(secret);
        assert!(!raw.windows(32).any(|w| w == hash));
    }

    let client = http();
    let disable = format!("{}/console/instances/{id}/disable", server.base);
    let other_token = elements_server::console::session::Session::new(0, None).csrf_token();
    // Without the token, with another token, with a token but no session.
    for (form, with_cookie) in [
        (vec![], true),
        (vec![("csrf", "AAAA")], true),
        (vec![("csrf", other_token.as_str())], true),
        (vec![("csrf", csrf.as_str())], false),
    ] {
        let mut request = client.post(&disable).form(&form);
        if with_cookie {
            request = request.header(COOKIE, &cookie);
        }
        let response = request.send().await.unwrap();
        if with_cookie {
            assert_eq!(response.status(), 403, "{form:?}");
            let html = response.text().await.unwrap();
            assert!(
                html.contains("security token (CSRF), so nothing was changed"),
                "{html}"
            );
        } else {
            assert_eq!(response.status(), 303);
            assert_eq!(response.headers()[LOCATION], "/console/login");
        }
        assert_eq!(api_instance(&server, id).await.1["disabled"], false);
    }
    // Delete and the allow-list and sign-out are guarded too.
    for (path, form) in [
        (format!("/console/instances/{id}/delete"), vec![]),
        (
            "/console/callback-urls".into(),
            vec![("urls", "https://evil.test/")],
        ),
        ("/console/logout".into(), vec![]),
    ] {
        let response = client
            .post(format!("{}{path}", server.base))
            .header(COOKIE, &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }
    assert_eq!(api_instance(&server, id).await.0, 200);
    assert!(server
        .fetch::<Vec<String>>(Method::GET, "/organizations/me/callback-urls")
        .await
        .is_empty());

    // With the token: done.
    let response = client
        .post(&disable)
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()[LOCATION],
        format!("/console/instances/{id}")
    );
    assert_eq!(api_instance(&server, id).await.1["disabled"], true);

    // The sign-in form itself needs its token.
    let response = client
        .post(format!("{}/console/login", server.base))
        .form(&[
            (
                "organization_secret",
                server.account.organization_secret.as_str(),
            ),
            ("user_secret", server.account.user_secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(response
        .text()
        .await
        .unwrap()
        .contains("The sign-in form expired or did not come from this site."));

    // A tampered cookie is no session.
    let mut bytes = raw.clone();
    bytes[20] ^= 1;
    let forged = format!(
        "elements_console={}",
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &bytes)
    );
    let response = client
        .get(format!("{}/console/instances", server.base))
        .header(COOKIE, forged)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/console/login?expired=1");
    server.stop().await;
}

#[tokio::test]
async fn another_organizations_instance_is_a_404_page() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let other = server.other_account("globex").await;
    let theirs = create_instance(&server, &other, "Globex CRM").await;
    let (cookie, csrf, _) = http_sign_in(&server.base, &server.account, &[]).await;
    let client = http();
    for path in [
        format!("/console/instances/{theirs}"),
        format!("/console/instances/{theirs}/delete"),
    ] {
        let response = client
            .get(format!("{}{path}", server.base))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let html = response.text().await.unwrap();
        assert!(html.contains("Your organization has no instance with this id."));
        assert!(!html.contains("Globex CRM"));
    }
    for action in ["disable", "delete"] {
        let response = client
            .post(format!(
                "{}/console/instances/{theirs}/{action}",
                server.base
            ))
            .header(COOKIE, &cookie)
            .form(&[("csrf", csrf.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{action}");
    }
    // Their list does not show in ours.
    let list = client
        .get(format!("{}/console/instances", server.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!list.contains("Globex CRM"));
    assert!(list.contains("Your organization has no instances yet."));
    let response = server
        .client
        .get(server.url(&format!("/instances/{theirs}")))
        .header("Authorization", other.header())
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["disabled"], false, "untouched");
    server.stop().await;
}

#[tokio::test]
async fn an_expired_session_goes_back_to_sign_in() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    // The same router over the same store, with zero-length sessions.
    let base = serve_with(
        server.state.clone(),
        Settings {
            session_seconds: 0,
            ..Settings::default()
        },
    )
    .await;
    let (cookie, csrf, _) = {
        // Sign-in works (the form's own token lives an hour) ...
        let client = http();
        let form = client
            .get(format!("{base}/console/login"))
            .send()
            .await
            .unwrap();
        let anonymous = session_cookie(&form);
        let csrf = csrf_in(&form.text().await.unwrap());
        let response = client
            .post(format!("{base}/console/login"))
            .header(COOKIE, &anonymous)
            .form(&[
                ("csrf", csrf.as_str()),
                (
                    "organization_secret",
                    server.account.organization_secret.as_str(),
                ),
                ("user_secret", server.account.user_secret.as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303);
        (session_cookie(&response), csrf, ())
    };
    // ... but the session it gives is already over.
    let client = http();
    let response = client
        .get(format!("{base}/console/instances"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/console/login?expired=1");
    let id = create_instance(&server, &server.account, "kept").await;
    let response = client
        .post(format!("{base}/console/instances/{id}/delete"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()[LOCATION], "/console/login?expired=1");
    assert_eq!(
        api_instance(&server, id).await.0,
        200,
        "nothing was deleted"
    );
    let notice = client
        .get(format!("{base}/console/login?expired=1"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(notice.contains("Your session has expired. Please sign in again."));

    // In a browser: sign in, and land on the sign-in page with the notice.
    let browser = Browser::start().await.expect("a headless Chromium");
    browser_sign_in(&browser, &base, &server.account, "/console/login?expired=1").await;
    assert!(browser
        .url()
        .await
        .unwrap()
        .ends_with("/console/login?expired=1"));
    assert_eq!(
        browser.text("#notice").await.unwrap(),
        "Your session has expired. Please sign in again."
    );
    browser.close().await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn replicas_sharing_a_secret_share_sessions() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    let secret = b"a shared console secret, 32+ bytes long".to_vec();
    let shared = || Settings {
        secret: Some(secret.clone()),
        ..Settings::default()
    };
    let a = serve_with(server.state.clone(), shared()).await;
    let b = serve_with(server.state.clone(), shared()).await;
    let (cookie, _, _) = http_sign_in(&a, &server.account, &[]).await;
    let client = http();
    let on_b = client
        .get(format!("{b}/console/instances"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(on_b.status(), 200, "replica b accepts a's session");
    // A process with its own random key (the default) does not.
    let on_default = client
        .get(format!("{}/console/instances", server.base))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(on_default.status(), 303);
    assert_eq!(on_default.headers()[LOCATION], "/console/login?expired=1");
    server.stop().await;
}

#[tokio::test]
async fn instances_are_paged_twenty_at_a_time() {
    let dir = data_dir();
    let server = TestServer::start(config_in(dir.path())).await;
    for n in 0..21 {
        create_instance(&server, &server.account, &format!("instance {n:02}")).await;
    }
    let (cookie, _, _) = http_sign_in(&server.base, &server.account, &[]).await;
    let client = http();
    let page = |q: &'static str| {
        client
            .get(format!("{}/console/instances{q}", server.base))
            .header(COOKIE, &cookie)
            .send()
    };
    let rows = Regex::new(r#"<a href="/console/instances/\d+">instance (\d\d)</a>"#).unwrap();
    let first = page("").await.unwrap().text().await.unwrap();
    assert!(first.contains("21 instances · page 1 of 2"));
    let names: Vec<&str> = rows
        .captures_iter(&first)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert_eq!(names.len(), 20);
    assert_eq!(names[0], "20", "newest first");
    assert!(first.contains(r#"<a href="/console/instances?page=2" rel="next">"#));
    let second = page("?page=2").await.unwrap().text().await.unwrap();
    let names: Vec<&str> = rows
        .captures_iter(&second)
        .map(|c| c.get(1).unwrap().as_str())
        .collect();
    assert_eq!(names, vec!["00"]);
    assert!(second.contains(r#"<a href="/console/instances?page=1" rel="prev">"#));
    for (q, status, message) in [
        ("?page=3", 404, "There is no such page of instances."),
        ("?page=0", 400, "`page` must be a whole number from 1 on."),
        ("?page=abc", 400, "`page` must be a whole number from 1 on."),
    ] {
        let response = page(q).await.unwrap();
        assert_eq!(response.status(), status, "{q}");
        assert!(response.text().await.unwrap().contains(message), "{q}");
    }
    server.stop().await;
}
