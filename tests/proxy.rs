//! The API proxy (issue 15): the instance's credential applied per kind,
//! refresh before expiry and after a 401, retries, path safety, timeouts,
//! streaming, and the Cloud Elements hub entrance with `[[resources]]`.

mod common;

use std::sync::Arc;

use common::*;
use elements_client::{Client, CreateInstance, ProviderData, Secret};
use elements_core::OAuthOverride;
use elements_server::proxy::ProxyFileSettings;
use elements_testkit::api::{Expect, FakeApi, Fault};
use elements_testkit::provider::FakeProvider;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

struct Setup {
    _dir: tempfile::TempDir,
    server: TestServer,
    oauth: Arc<FakeProvider>,
    api: FakeApi,
}

/// A server whose HubSpot (and other elements') API is the fake API, and
/// whose HubSpot token endpoints are the fake OAuth provider's.
async fn setup_with(settings: ProxyFileSettings) -> Setup {
    let oauth = Arc::new(FakeProvider::start().await);
    let api = FakeApi::start().await;
    let dir = data_dir();
    let mut config = config_in(dir.path());
    config.overrides.insert(
        "hubspot".into(),
        OAuthOverride {
            token_url: Some(oauth.token_url()),
            refresh_url: Some(oauth.legacy_refresh_url()),
            ..Default::default()
        },
    );
    for key in ["hubspot", "sendgrid", "trello", "freshdesk", "flickr"] {
        config.api_base_urls.insert(key.into(), api.base_url());
    }
    config.proxy.apply(&ProxyFileSettings {
        backoff_ms: Some(1),
        ..settings
    });
    let server = TestServer::start(config).await;
    Setup {
        _dir: dir,
        server,
        oauth,
        api,
    }
}

async fn setup() -> Setup {
    setup_with(ProxyFileSettings::default()).await
}

/// Creates an instance through `api`; (id, instance token).
async fn create(api: &Client, body: &CreateInstance) -> (i64, Secret) {
    let created = api.create_instance(body).await.unwrap();
    (created.id, created.token.expect("the token, once"))
}

/// A HubSpot instance with tokens issued by the fake OAuth provider; the
/// fake API accepts exactly the provider's valid tokens.
async fn hubspot(s: &Setup) -> (i64, Secret, String) {
    let (access, refresh) = s.oauth.issue_tokens("test-client");
    let (id, token) = create(&s.server.api(), &seed_instance(&access, &refresh)).await;
    let oauth = s.oauth.clone();
    s.api.expect(Expect::Bearer(Arc::new(move |t| {
        oauth.is_access_token_valid(t)
    })));
    (id, token, access)
}

/// An instance of `element` named `<element> instance` with configuration
/// only (API-key, basic and OAuth 1.0a elements).
fn simple(element: &str, configuration: &[(&str, &str)]) -> CreateInstance {
    configuration.iter().fold(
        CreateInstance::new(element, format!("{element} instance")),
        |body, (key, value)| body.configuration(*key, *value),
    )
}

/// A proxied answer: (status, headers, JSON body or `Null`).
async fn answer(response: reqwest::Response) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// `{method} /instances/{id}/proxy/{path}` through `api`, without a body.
async fn call(
    api: &Client,
    id: i64,
    method: Method,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    answer(api.proxy(id, method, path).await.expect("proxied request")).await
}

/// `{method} /hubs/{hub}/{path}` through `api`, without a body.
async fn call_hub(
    api: &Client,
    hub: &str,
    method: Method,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    answer(api.hub(hub, method, path).await.expect("proxied request")).await
}

#[tokio::test]
async fn oauth2_bearer_is_applied_and_our_headers_are_stripped() {
    let s = setup().await;
    let (id, token, access) = hubspot(&s).await;
    let r = s
        .server
        .anonymous()
        .with_element(token)
        .proxy_request(
            id,
            Method::GET,
            "crm/v3/objects/contacts?limit=5&after=a%20b",
        )
        .header("X-Keep", "kept")
        .header("Proxy-Authorization", "Basic c2VjcmV0")
        .header("Elements-Retry", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    assert!(!r.headers().contains_key("elements-error"));
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/crm/v3/objects/contacts");
    assert_eq!(echo["query"], "limit=5&after=a%20b");
    assert_eq!(echo["headers"]["authorization"], format!("Bearer {access}"));
    assert_eq!(echo["headers"]["x-keep"], "kept");
    assert_eq!(echo["headers"].get("proxy-authorization"), None);
    assert_eq!(echo["headers"].get("elements-retry"), None);
    assert_eq!(
        echo["headers"]["host"],
        s.api.base_url().trim_start_matches("http://")
    );

    // With User + Organization instead of the instance token.
    let (status, _, echo) = call(
        &s.server.api(),
        id,
        Method::DELETE,
        "crm/v3/objects/contacts/7",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echo["method"], "DELETE");
    assert_eq!(echo["path"], "/crm/v3/objects/contacts/7");
}

#[tokio::test]
async fn each_credential_kind_is_applied_as_declared() {
    let s = setup().await;
    let api = s.server.api();

    let (id, _) = create(&api, &simple("sendgrid", &[("api.key", "SG.k1")])).await;
    s.api.expect(Expect::Header(
        "authorization".into(),
        "Bearer SG.k1".into(),
    ));
    let (status, _, echo) = call(&api, id, Method::GET, "v3/mail").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/v3/mail");

    let (id, _) = create(
        &api,
        &simple("trello", &[("api.key", "tk"), ("api.token", "tt")]),
    )
    .await;
    s.api.expect(Expect::Query("token".into(), "tt".into()));
    let (status, _, echo) = call(&api, id, Method::GET, "boards?x=1").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["query"], "x=1&key=tk&token=tt");

    let (id, _) = create(
        &api,
        &simple("freshdesk", &[("api.key", "fk"), ("subdomain", "acme")]),
    )
    .await;
    s.api.expect(Expect::Basic("fk".into(), "X".into()));
    let (status, _, echo) = call(&api, id, Method::GET, "tickets").await;
    assert_eq!(status, 200, "{echo}");

    let flickr = simple(
        "flickr",
        &[("oauth.api.key", "ck"), ("oauth.api.secret", "cs")],
    )
    .provider_data(ProviderData::oauth1("ot", "ots"));
    let (id, _) = create(&api, &flickr).await;
    s.api.expect(Expect::OAuth1("ck".into()));
    let (status, _, echo) = call(&api, id, Method::GET, "?method=flickr.test").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(echo["path"], "/");
    assert_eq!(echo["query"], "method=flickr.test");
    let auth = echo["headers"]["authorization"].as_str().unwrap();
    assert!(auth.contains("oauth_token=\"ot\""), "{auth}");
    assert!(!auth.contains("ots") && !auth.contains("\"cs\""), "{auth}");

    // A credential the API refuses is the provider's 401, passed through.
    s.api.expect(Expect::Header("x-never".into(), "x".into()));
    let (status, headers, body) = call(&api, id, Method::GET, "x").await;
    assert_eq!(status, 401);
    assert!(!headers.contains_key("elements-error"));
    assert_eq!(body["error"], "header x-never missing or wrong");
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_first_and_a_401_is_refreshed_and_replayed_once() {
    let s = setup().await;
    let (id, token, access) = hubspot(&s).await;
    let scoped = s.server.anonymous().with_element(token);

    expire(s.server.state.store.as_ref(), id).await;
    let (status, _, echo) = call(&scoped, id, Method::GET, "a").await;
    assert_eq!(status, 200, "{echo}");
    assert_eq!(s.oauth.refresh_calls(), 1);
    let second = echo["headers"]["authorization"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(second, format!("Bearer {access}"));

    // The provider drops the token: one forced refresh, the POST replayed
    // with its body.
    s.oauth.expire_access_tokens();
    let r = scoped
        .proxy_request(id, Method::POST, "crm/v3/objects/contacts")
        .body("x".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bodyLength"], 1000);
    assert_eq!(s.oauth.refresh_calls(), 2);
    assert_ne!(echo["headers"]["authorization"], second.as_str());

    // Still 401 after the refresh: the provider's answer goes back.
    s.api.expect(Expect::Bearer(Arc::new(|_| false)));
    let (status, headers, body) = call(&scoped, id, Method::GET, "a").await;
    assert_eq!(status, 401);
    assert!(!headers.contains_key("elements-error"));
    assert_eq!(body["error"], "bearer token missing or invalid");
    assert_eq!(s.oauth.refresh_calls(), 3);

    // No refresh token: nothing to refresh, the provider's 401 goes back.
    let (access, _) = s.oauth.issue_tokens("test-client");
    let body = seed_instance(&access, "unused").provider_data(ProviderData {
        access_token: Some(access.into()),
        expires_in: Some(json!(1800)),
        ..ProviderData::default()
    });
    let api = s.server.api();
    let (id, _) = create(&api, &body).await;
    let (status, headers, body) = call(&api, id, Method::GET, "a").await;
    assert_eq!(status, 401);
    assert!(!headers.contains_key("elements-error"));
    assert_eq!(body["error"], "bearer token missing or invalid");
    assert_eq!(s.oauth.refresh_calls(), 3);
}

#[tokio::test]
async fn concurrent_calls_on_an_expired_token_refresh_exactly_once() {
    let s = setup().await;
    let (id, token, _) = hubspot(&s).await;
    expire(s.server.state.store.as_ref(), id).await;
    let scoped = s.server.anonymous().with_element(token);
    let calls = (0..200).map(|_| {
        let scoped = scoped.clone();
        tokio::spawn(async move { scoped.proxy(id, Method::GET, "c").await.unwrap().status() })
    });
    for c in calls {
        assert_eq!(c.await.unwrap(), 200);
    }
    assert_eq!(s.oauth.refresh_calls(), 1);
    assert_eq!(s.api.calls(), 200);
}

#[tokio::test]
async fn idempotent_requests_are_retried_and_posts_only_when_asked() {
    let s = setup().await;
    let api = s.server.api();
    let (id, _) = create(&api, &simple("sendgrid", &[("api.key", "k")])).await;
    let path = "r";

    s.api
        .push_faults(&[Fault::Status(429, Some(0)), Fault::Status(503, None)]);
    let (status, _, _) = call(&api, id, Method::GET, path).await;
    assert_eq!(status, 200);
    assert_eq!(s.api.calls(), 3);

    s.api.push_faults(&[Fault::Reset, Fault::Status(502, None)]);
    let (status, _, _) = call(&api, id, Method::PUT, path).await;
    assert_eq!(status, 200);
    assert_eq!(s.api.calls(), 6);

    // More failures than retries (2): the last answer goes back.
    s.api.push_faults(&[Fault::Status(500, None); 3]);
    let (status, headers, body) = call(&api, id, Method::GET, path).await;
    assert_eq!(status, 500);
    assert!(!headers.contains_key("elements-error"));
    assert_eq!(body["fault"], 500);
    assert_eq!(s.api.calls(), 9);

    // A Retry-After beyond the cap is not waited for.
    s.api.push_faults(&[Fault::Status(429, Some(3600))]);
    let (status, headers, _) = call(&api, id, Method::GET, path).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "3600");
    assert_eq!(s.api.calls(), 10);

    // POST: never retried...
    s.api.push_faults(&[Fault::Status(503, None)]);
    let (status, _, _) = call(&api, id, Method::POST, path).await;
    assert_eq!(status, 503);
    assert_eq!(s.api.calls(), 11);
    s.api.push_faults(&[Fault::Reset]);
    let (status, headers, body) = call(&api, id, Method::POST, path).await;
    assert_eq!(status, 502);
    assert_eq!(headers["elements-error"], "true");
    assert_eq!(body["message"], "the provider could not be reached");
    assert_eq!(s.api.calls(), 12);

    // ... unless the caller asks.
    s.api.push_faults(&[Fault::Reset]);
    let r = api
        .proxy_request(id, Method::POST, path)
        .header("Elements-Retry", "true")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.api.calls(), 14);
}

/// Sends a request line exactly as given (no client normalisation).
async fn raw(base: &str, target: &str, auth: &str) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    (status, answer)
}

#[tokio::test]
async fn paths_that_would_leave_the_base_url_are_refused() {
    let s = setup().await;
    let (id, _) = create(&s.server.api(), &simple("sendgrid", &[("api.key", "k")])).await;
    let auth = s.server.account.header();
    let prefix = format!("/elements/api-v2/instances/{id}/proxy/");
    let cases = [
        (
            "a/../../admin",
            "the path must not contain `.` or `..` segments",
        ),
        (
            "a/%2e%2e/admin",
            "the path must not contain `.` or `..` segments",
        ),
        (
            "a%2Fb",
            "the path must not contain an encoded slash (`%2F`)",
        ),
        (
            "a%5Cb",
            "the path must not contain a backslash (`\\\\` or `%5C`)",
        ),
        (
            "a\\b",
            "the path must not contain a backslash (`\\\\` or `%5C`)",
        ),
        ("/evil.example/x", "the path must not start with `//`"),
        (
            "http://evil.example/x",
            "the path must be relative to the element's API, not an absolute URL",
        ),
        ("user@evil.example/x", "the path must not contain `@`"),
        (
            "a%0d%0aX-Injected:%201",
            "the path must not contain control characters",
        ),
    ];
    for (payload, message) in cases {
        // Raw: malformed on purpose; a client (reqwest's URL parser, this
        // project's client) would normalise or encode these paths.
        let (status, answer) = raw(&s.server.base, &format!("{prefix}{payload}"), &auth).await;
        assert_eq!(status, 400, "{payload}: {answer}");
        assert!(
            answer.contains(&format!("\"message\":\"{message}\"")),
            "{payload}: {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("elements-error: true"),
            "{answer}"
        );
    }
    assert_eq!(s.api.calls(), 0);
}

/// A server whose proxy times out after `timeout_ms`, and a SendGrid
/// instance on the fake API.
async fn sendgrid_with_timeout(timeout_ms: u64) -> (Setup, Client, i64) {
    let s = setup_with(ProxyFileSettings {
        timeout_ms: Some(timeout_ms),
        ..Default::default()
    })
    .await;
    let api = s.server.api();
    let (id, _) = create(&api, &simple("sendgrid", &[("api.key", "k")])).await;
    (s, api, id)
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_cut_off() {
    let (_s, api, id) = sendgrid_with_timeout(300).await;
    let (status, headers, body) = call(&api, id, Method::POST, "hang").await;
    assert_eq!(status, 504);
    assert_eq!(headers["elements-error"], "true");
    assert_eq!(body["message"], "the provider did not answer within 300 ms");
}

/// The timeout bounds the wait for the head and for each read of the
/// body, not the whole transfer: a body that keeps coming, slowly, passes
/// whole however long it takes; one that stops is cut off.
#[tokio::test]
async fn a_slow_body_streams_through_whole_and_a_stalled_one_is_cut_off() {
    let (_s, api, id) = sendgrid_with_timeout(400).await;

    // 8 chunks, one every 150 ms: 1.2 s in all, three times the timeout.
    let response = api
        .proxy(id, Method::GET, "slow?chunks=8&every_ms=150")
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len(), 8 * 64 * 1024);
    assert!(body.iter().all(|b| *b == b's'));

    // One chunk after 1 s: the read waits longer than the timeout.
    let response = api
        .proxy(id, Method::GET, "slow?chunks=1&every_ms=1000")
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the head came at once");
    assert!(
        response.bytes().await.is_err(),
        "a body stalled beyond the timeout must be cut off, not delivered"
    );
}

#[tokio::test]
async fn the_hub_entrance_maps_declared_resources_and_checks_the_hub() {
    let s = setup().await;
    let (id, token, _) = hubspot(&s).await;
    let both = s.server.api().with_element(token.clone());
    for (method, path, provider) in [
        (Method::GET, "contacts?limit=2", "/crm/v3/objects/contacts"),
        (Method::GET, "contacts/42", "/crm/v3/objects/contacts/42"),
        (Method::POST, "deals", "/crm/v3/objects/deals"),
        (Method::GET, "companies/9", "/crm/v3/objects/companies/9"),
        (Method::DELETE, "contacts/42", "/contacts/42"),
        (Method::GET, "owners/v2", "/owners/v2"),
    ] {
        let (status, _, echo) = call_hub(&both, "marketing", method.clone(), path).await;
        assert_eq!(status, 200, "{path}: {echo}");
        assert_eq!(echo["path"], provider, "{method} /hubs/marketing/{path}");
    }

    let (status, headers, body) = call_hub(&both, "crm", Method::GET, "contacts").await;
    assert_eq!(status, 400);
    assert_eq!(headers["elements-error"], "true");
    assert_eq!(
        body["message"],
        "the instance's element `hubspot` is in hub `marketing`, not `crm`"
    );

    let (status, _, body) = call_hub(&s.server.api(), "marketing", Method::GET, "contacts").await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("needs the instance's token"),
        "{body}"
    );

    // Another organization's instance is a 404, by either entrance.
    let other = s.server.other_account("other").await.client(&s.server.base);
    let (status, _, body) = call_hub(
        &other.clone().with_element(token),
        "marketing",
        Method::GET,
        "contacts",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], format!("no instance with id {id}"));
    let (status, _, body) = call(&other, id, Method::GET, "x").await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], format!("no instance with id {id}"));
    assert_eq!(s.api.calls(), 6);
}

fn vm_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The real binary over `dir`, with sendgrid's API at `api` and `proxy`
/// as the config file's `[proxy]` table, plus `args` and `env`.
fn serve_sendgrid_at(
    dir: &tempfile::TempDir,
    api: &FakeApi,
    proxy: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Binary {
    let config = dir.path().join("elements.toml");
    std::fs::write(
        &config,
        format!(
            "[elements.sendgrid]\napi_base_url = \"{}\"\n\n[proxy]\n{proxy}\n",
            api.base_url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut all = vec![
        "--data-dir",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    Binary::serve(&all, env)
}

#[tokio::test]
async fn a_one_gib_response_is_streamed_through_the_real_binary_in_little_memory() {
    let api = FakeApi::start().await;
    let dir = data_dir();
    let server = serve_sendgrid_at(
        &dir,
        &api,
        "timeout_ms = 20000",
        &[],
        &[
            ("ELEMENTS_ORGANIZATION_SECRET", "org-proxy-stream"),
            ("ELEMENTS_USER_SECRET", "user-proxy-stream"),
        ],
    );
    let client = Client::new(&server.base)
        .unwrap()
        .with_account("user-proxy-stream", "org-proxy-stream");
    let (id, _) = create(&client, &simple("sendgrid", &[("api.key", "k")])).await;
    const GIB: u64 = 1 << 30;
    let mut r = client
        .proxy(id, Method::GET, &format!("big?bytes={GIB}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.content_length(), Some(GIB));
    let pid = server.child.id();
    let (mut received, mut peak) = (0u64, 0u64);
    while let Some(chunk) = r.chunk().await.unwrap() {
        received += chunk.len() as u64;
        if received % (64 << 20) < chunk.len() as u64 {
            peak = peak.max(vm_rss_kb(pid));
        }
    }
    peak = peak.max(vm_rss_kb(pid));
    eprintln!("peak server RSS while streaming 1 GiB: {peak} kB");
    assert_eq!(received, GIB);
    assert!(peak < 60 * 1024, "the server's RSS reached {peak} kB");
}

// ---- leftovers (issue 15): OAuth 1.0a form bodies, body limits, settings ----

/// RFC 5849 §3.6 percent-encoding (unreserved characters stay).
fn rfc5849(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// The HMAC-SHA1 signature of a request, computed here from RFC 5849 §3.4
/// (not with the server's code): `params` are the query, body and protocol
/// parameters, decoded.
fn hmac_sha1_signature(
    method: &str,
    base_uri: &str,
    params: &[(String, String)],
    consumer_secret: &str,
    token_secret: &str,
) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (rfc5849(k), rfc5849(v)))
        .collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        rfc5849(base_uri),
        rfc5849(&normalized)
    );
    let key = format!("{}&{}", rfc5849(consumer_secret), rfc5849(token_secret));
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The parameters of an `Authorization: OAuth ...` header, decoded.
fn oauth_header_params(header: &str) -> Vec<(String, String)> {
    header
        .strip_prefix("OAuth ")
        .unwrap()
        .split(", ")
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap();
            let v = v.trim_matches('"');
            (
                k.to_owned(),
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .unwrap()
                    .into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn oauth1_signs_the_fields_of_a_form_body() {
    let s = setup_with(ProxyFileSettings {
        max_request_body_bytes: Some(4096),
        ..Default::default()
    })
    .await;
    let api = s.server.api();
    let flickr = simple(
        "flickr",
        &[("oauth.api.key", "ck"), ("oauth.api.secret", "c s&1")],
    )
    .provider_data(ProviderData::oauth1("ot", "ots~2"));
    let (id, _) = create(&api, &flickr).await;
    s.api.expect(Expect::OAuth1("ck".into()));
    let form = "method=flickr.photos.search&text=caf%C3%A9+au+lait%21&tags=a%2Cb&empty=";
    let r = api
        .proxy_request(id, Method::POST, "services/rest?format=json&x=%7E")
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bodyLength"], form.len());
    let header = echo["headers"]["authorization"].as_str().unwrap();
    let oauth = oauth_header_params(header);
    let signature = oauth
        .iter()
        .find(|(k, _)| k == "oauth_signature")
        .map(|(_, v)| v.clone())
        .expect("a signature");
    let protocol: Vec<(String, String)> = oauth
        .iter()
        .filter(|(k, _)| k != "oauth_signature" && k != "realm")
        .cloned()
        .collect();
    let decode = |text: &str| -> Vec<(String, String)> {
        reqwest::Url::parse(&format!("http://x/?{text}"))
            .unwrap()
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    };
    let base_uri = format!("{}{}", s.api.base_url(), echo["path"].as_str().unwrap());
    let query = decode(echo["query"].as_str().unwrap());
    let with_body: Vec<_> = [protocol.clone(), query.clone(), decode(form)].concat();
    assert_eq!(
        signature,
        hmac_sha1_signature("POST", &base_uri, &with_body, "c s&1", "ots~2"),
        "the signature covers the query, the form fields and the protocol parameters"
    );
    // Without the body's fields the signature would differ.
    let without_body: Vec<_> = [protocol, query].concat();
    assert_ne!(
        signature,
        hmac_sha1_signature("POST", &base_uri, &without_body, "c s&1", "ots~2")
    );

    // A form body above the limit is a 413 naming it; nothing is sent.
    let calls = s.api.calls();
    let big = format!("text={}", "x".repeat(5000));
    for chunked in [false, true] {
        let mut request = api
            .proxy_request(id, Method::POST, "services/rest")
            .header("Content-Type", "application/x-www-form-urlencoded");
        request = if chunked {
            let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
                .as_bytes()
                .chunks(1000)
                .map(|c| Ok(c.to_vec()))
                .collect();
            request.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
        } else {
            request.body(big.clone())
        };
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 413, "chunked: {chunked}");
        assert_eq!(r.headers()["elements-error"], "true");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["message"],
            "the request body is larger than the proxy's limit of 4096 bytes (max_request_body_bytes)"
        );
    }
    assert_eq!(s.api.calls(), calls, "the API saw none of the large bodies");
}

#[tokio::test]
async fn a_body_above_the_limit_set_by_variable_is_refused_with_413() {
    let api = FakeApi::start().await;
    let dir = data_dir();
    // The file's limit is replaced by the variable's.
    let server = serve_sendgrid_at(
        &dir,
        &api,
        "max_request_body_bytes = 10",
        &["--proxy-replay-body-bytes", "100"],
        &[
            ("ELEMENTS_ORGANIZATION_SECRET", "org-proxy-limit"),
            ("ELEMENTS_USER_SECRET", "user-proxy-limit"),
            ("ELEMENTS_PROXY_MAX_REQUEST_BODY_BYTES", "1000"),
        ],
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let client = Client::with_http_client(&server.base, http)
        .unwrap()
        .with_account("user-proxy-limit", "org-proxy-limit");
    let (id, _) = create(&client, &simple("sendgrid", &[("api.key", "k")])).await;
    let send = || client.proxy_request(id, Method::POST, "v3/mail/send");
    // At the limit: forwarded (streamed: above the replay size of 100).
    let r = send().body(vec![b'a'; 1000]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["bodyLength"], 1000);
    assert_eq!(api.calls(), 1);
    // One byte more: 413 naming the limit, and the API never sees it.
    let r = send().body(vec![b'a'; 1001]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["elements-error"], "true");
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["message"],
        "the request body is larger than the proxy's limit of 1000 bytes (max_request_body_bytes)"
    );
    assert_eq!(api.calls(), 1);
}
