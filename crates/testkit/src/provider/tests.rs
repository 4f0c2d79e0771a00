//! The fake provider's own tests (real HTTP on 127.0.0.1).

use std::time::Duration;

use serde_json::{json, Value};

use super::routes::{parse_form, Form};
use super::*;

const CB: &str = "http://localhost:9/callback";

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest client")
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = http().post(url).form(form).send().await.expect("send");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

/// The query parameters of a `Location` header.
fn location_params(response: &reqwest::Response) -> (String, Form) {
    let location = response
        .headers()
        .get("location")
        .expect("location header")
        .to_str()
        .expect("ascii location")
        .to_string();
    let query = location.split_once('?').map(|(_, q)| q).unwrap_or("");
    let params = parse_form(query).expect("query");
    (location, params)
}

async fn authorize_code(p: &FakeProvider) -> String {
    let response = http()
        .get(p.authorize_url())
        .query(&[
            ("client_id", DEFAULT_CLIENT_ID),
            ("redirect_uri", CB),
            ("scope", "oauth crm.objects.contacts.read"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status().as_u16(), 302);
    location_params(&response).1["code"].clone()
}

async fn exchange(p: &FakeProvider, code: &str) -> (u16, Value) {
    post_form(
        &p.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("redirect_uri", CB),
        ],
    )
    .await
}

async fn refresh(p: &FakeProvider, refresh_token: &str) -> (u16, Value) {
    post_form(
        &p.token_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
        ],
    )
    .await
}

fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
        .to_string()
}

async fn me_status(p: &FakeProvider, access: &str) -> u16 {
    http()
        .get(p.me_url())
        .bearer_auth(access)
        .send()
        .await
        .expect("me")
        .status()
        .as_u16()
}

#[tokio::test]
async fn urls_are_on_loopback() {
    let p = FakeProvider::start().await;
    assert!(p.base_url().starts_with("http://127.0.0.1:"));
    assert_ne!(p.addr().port(), 0);
    assert_eq!(
        p.authorize_url(),
        format!("{}/oauth/authorize", p.base_url())
    );
    assert_eq!(p.token_url(), format!("{}/oauth/v1/token", p.base_url()));
    assert_eq!(
        p.legacy_refresh_url(),
        format!("{}/auth/v1/refresh", p.base_url())
    );
}

#[tokio::test]
async fn authorize_redirects_with_code_and_state() {
    let p = FakeProvider::start().await;
    let response = http()
        .get(p.authorize_url())
        .query(&[
            ("client_id", DEFAULT_CLIENT_ID),
            ("redirect_uri", "http://localhost:9/cb?x=1"),
            ("scope", "contacts offline"),
            ("state", "a b&c=d"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let (location, params) = location_params(&response);
    assert!(
        location.starts_with("http://localhost:9/cb?x=1&code=code-"),
        "{location}"
    );
    assert_eq!(params["x"], "1");
    assert_eq!(params["state"], "a b&c=d");
    assert!(params["code"].len() > 20);

    // No state: none echoed, `?` separator.
    let response = http()
        .get(p.authorize_url())
        .query(&[("client_id", DEFAULT_CLIENT_ID), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    let (location, params) = location_params(&response);
    assert!(location.starts_with(&format!("{CB}?code=")), "{location}");
    assert!(!params.contains_key("state"));

    // Fresh code each time.
    assert_ne!(authorize_code(&p).await, authorize_code(&p).await);

    // Missing parameters: 400 JSON.
    for query in [
        vec![("redirect_uri", CB)],
        vec![("client_id", DEFAULT_CLIENT_ID)],
    ] {
        let response = http()
            .get(p.authorize_url())
            .query(&query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "invalid_request");
    }

    // Unknown client.
    let response = http()
        .get(p.authorize_url())
        .query(&[("client_id", "nobody"), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn code_exchange_is_single_use() {
    let p = FakeProvider::start().await;
    let code = authorize_code(&p).await;
    let (status, body) = exchange(&p, &code).await;
    assert_eq!(status, 200, "{body}");
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["access_token", "refresh_token", "expires_in", "token_type"]
    );
    assert_eq!(body["expires_in"], 1800);
    assert_eq!(body["token_type"], "bearer");
    let access = s(&body, "access_token");
    let refresh_token = s(&body, "refresh_token");
    assert!(access.starts_with("at-") && refresh_token.starts_with("rt-"));
    assert!(p.is_access_token_valid(&access));
    assert!(p.is_refresh_token_valid(&refresh_token));
    assert_eq!(me_status(&p, &access).await, 200);

    // Second use: invalid_grant, and the tokens issued from it are revoked.
    let (status, body) = exchange(&p, &code).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
    assert!(!p.is_access_token_valid(&access));
    assert!(!p.is_refresh_token_valid(&refresh_token));
    assert_eq!(me_status(&p, &access).await, 401);
    assert_eq!(p.revoked_families(), 1);
    assert_eq!(p.code_exchanges(), 2);

    // Mismatched redirect_uri, unknown code, wrong secret.
    let code = authorize_code(&p).await;
    let (status, body) = post_form(
        &p.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("redirect_uri", "http://localhost:9/other"),
        ],
    )
    .await;
    assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
    let (status, body) = exchange(&p, "code-nope").await;
    assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
    let (status, body) = post_form(
        &p.token_url(),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", "wrong"),
            ("redirect_uri", CB),
        ],
    )
    .await;
    assert_eq!(
        (status, s(&body, "error").as_str()),
        (400, "invalid_client")
    );
    // The failed attempts did not consume the code.
    let (status, _) = exchange(&p, &code).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn refresh_rotates_tokens() {
    let p = FakeProvider::start().await;
    let (_, body) = exchange(&p, &authorize_code(&p).await).await;
    let (access1, rt1) = (s(&body, "access_token"), s(&body, "refresh_token"));

    let (status, body) = refresh(&p, &rt1).await;
    assert_eq!(status, 200, "{body}");
    let (access2, rt2) = (s(&body, "access_token"), s(&body, "refresh_token"));
    assert_ne!(rt1, rt2);
    assert_ne!(access1, access2);
    assert!(p.is_access_token_valid(&access1));
    assert!(p.is_access_token_valid(&access2));
    assert!(!p.is_refresh_token_valid(&rt1));
    assert!(p.is_refresh_token_valid(&rt2));

    let (status, body) = refresh(&p, &rt2).await;
    assert_eq!(status, 200);
    assert_ne!(s(&body, "refresh_token"), rt2);
    assert_eq!(p.revoked_families(), 0);

    // Without rotation the same refresh token comes back and stays usable.
    p.set_rotate_refresh_tokens(false);
    let rt3 = s(&body, "refresh_token");
    for _ in 0..2 {
        let (status, body) = refresh(&p, &rt3).await;
        assert_eq!(status, 200);
        assert_eq!(s(&body, "refresh_token"), rt3);
    }
    assert_eq!(p.refresh_calls(), 4);
}

#[tokio::test]
async fn reuse_revokes_the_family() {
    let p = FakeProvider::start().await;
    let (access1, rt1) = p.issue_tokens(DEFAULT_CLIENT_ID);
    // An unrelated family must survive.
    let (other_access, other_rt) = p.issue_tokens(DEFAULT_CLIENT_ID);

    let (_, body) = refresh(&p, &rt1).await;
    let (access2, rt2) = (s(&body, "access_token"), s(&body, "refresh_token"));

    let (status, body) = refresh(&p, &rt1).await;
    assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
    assert_eq!(p.revoked_families(), 1);
    for access in [&access1, &access2] {
        assert!(!p.is_access_token_valid(access));
        assert_eq!(me_status(&p, access).await, 401);
    }
    let (status, body) = refresh(&p, &rt2).await;
    assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
    assert_eq!(p.revoked_families(), 1, "a family is counted once");

    assert!(p.is_access_token_valid(&other_access));
    let (status, _) = refresh(&p, &other_rt).await;
    assert_eq!(status, 200);

    // Reuse detection off: reuse is refused but nothing is revoked.
    p.set_reuse_detection(false);
    let (_, rt_a) = p.issue_tokens(DEFAULT_CLIENT_ID);
    let (_, body) = refresh(&p, &rt_a).await;
    let rt_b = s(&body, "refresh_token");
    let (status, _) = refresh(&p, &rt_a).await;
    assert_eq!(status, 400);
    let (status, _) = refresh(&p, &rt_b).await;
    assert_eq!(status, 200);
    assert_eq!(p.revoked_families(), 1);
}

#[tokio::test]
async fn omit_refresh_token_keeps_the_old_one_usable() {
    let p = FakeProvider::start().await;
    p.set_omit_refresh_token(true);
    let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    for _ in 0..2 {
        let (status, body) = refresh(&p, &rt).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("refresh_token").is_none(), "{body}");
        assert!(p.is_access_token_valid(&s(&body, "access_token")));
    }
    assert_eq!(p.revoked_families(), 0);
    // Code exchanges still include one.
    let (_, body) = exchange(&p, &authorize_code(&p).await).await;
    assert!(body["refresh_token"].is_string());
}

#[tokio::test]
async fn fail_next_then_success() {
    let p = FakeProvider::start().await;
    let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    p.fail_next(2, 500);
    for _ in 0..2 {
        let (status, body) = refresh(&p, &rt).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"], "server_error");
    }
    // The failures consumed nothing: the refresh token still works.
    let (status, _) = refresh(&p, &rt).await;
    assert_eq!(status, 200);
    assert_eq!(p.refresh_calls(), 3);
    assert_eq!(p.token_calls(), 3);

    // Applies to the legacy endpoint too.
    p.fail_next(1, 503);
    let (status, _) = post_form(
        &p.legacy_refresh_url(),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", "rt-whatever"),
            ("client_id", DEFAULT_CLIENT_ID),
        ],
    )
    .await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn invalid_grant_next_then_success() {
    let p = FakeProvider::start().await;
    let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    p.invalid_grant_next(1);
    let (status, body) = refresh(&p, &rt).await;
    assert_eq!((status, s(&body, "error").as_str()), (400, "invalid_grant"));
    assert!(p.is_refresh_token_valid(&rt));
    let (status, _) = refresh(&p, &rt).await;
    assert_eq!(status, 200);
    assert_eq!(p.revoked_families(), 0);
}

#[tokio::test]
async fn latency_does_not_break_responses() {
    let p = FakeProvider::start().await;
    p.set_latency(Duration::from_millis(30));
    let (_, body) = exchange(&p, &authorize_code(&p).await).await;
    let (status, _) = refresh(&p, &s(&body, "refresh_token")).await;
    assert_eq!(status, 200);
    p.set_latency(Duration::ZERO);
    let (status, _) = refresh(&p, "rt-unknown").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn basic_auth_is_accepted() {
    let p = FakeProvider::start().await;
    p.add_client("other client", "s3cr:t");
    let code = http()
        .get(p.authorize_url())
        .query(&[("client_id", "other client"), ("redirect_uri", CB)])
        .send()
        .await
        .unwrap();
    let code = location_params(&code).1["code"].clone();
    // RFC 6749 §2.3.1: form-urlencode id and secret before base64.
    let response = http()
        .post(p.token_url())
        .basic_auth("other+client", Some("s3cr%3At"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();

    let response = http()
        .post(p.token_url())
        .basic_auth(DEFAULT_CLIENT_ID, Some(DEFAULT_CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", s(&body, "refresh_token").as_str()),
        ])
        .send()
        .await
        .unwrap();
    // Issued to "other client", presented by test-client.
    assert_eq!(response.status().as_u16(), 400);

    let response = http()
        .post(p.token_url())
        .basic_auth("other client", Some("s3cr:t"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", s(&body, "refresh_token").as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);

    // Wrong Basic secret.
    let response = http()
        .post(p.token_url())
        .basic_auth(DEFAULT_CLIENT_ID, Some("nope"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "rt-x")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");
}

#[tokio::test]
async fn request_errors_have_oauth_shape() {
    let p = FakeProvider::start().await;
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[("client_id", DEFAULT_CLIENT_ID)], "invalid_request"),
        (
            &[
                ("grant_type", "password"),
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
            ],
            "unsupported_grant_type",
        ),
        (
            &[("grant_type", "refresh_token"), ("refresh_token", "rt-x")],
            "invalid_request",
        ),
        (
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", "rt-x"),
                ("client_id", "nobody"),
                ("client_secret", "x"),
            ],
            "invalid_client",
        ),
    ];
    for (form, error) in cases {
        let (status, body) = post_form(&p.token_url(), form).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert!(body["error_description"].is_string());
    }
    // JSON instead of a form is refused.
    let response = http()
        .post(p.token_url())
        .json(&json!({"grant_type": "refresh_token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(p.token_calls(), 5);
}

#[tokio::test]
async fn legacy_flow_and_refresh() {
    let p = FakeProvider::start().await;
    let response = http()
        .get(p.legacy_authenticate_url())
        .query(&[
            ("client_id", DEFAULT_CLIENT_ID),
            ("portalId", "123456"),
            ("redirect_uri", CB),
            ("scope", "contacts-rw offline"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 302);
    let (_, params) = location_params(&response);
    assert_eq!(params["expires_in"], "1800");
    assert!(p.is_access_token_valid(&params["access_token"]));
    let rt = params["refresh_token"].clone();

    let (status, body) = post_form(
        &p.legacy_refresh_url(),
        &[
            ("refresh_token", &rt),
            ("client_id", DEFAULT_CLIENT_ID),
            ("grant_type", "refresh_token"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(s(&body, "refresh_token"), rt);
    // Reuse on the legacy endpoint revokes too.
    let (status, _) = post_form(
        &p.legacy_refresh_url(),
        &[
            ("refresh_token", &rt),
            ("client_id", DEFAULT_CLIENT_ID),
            ("grant_type", "refresh_token"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(p.revoked_families(), 1);
    assert_eq!(p.refresh_calls(), 2);
    assert_eq!(p.token_calls(), 0);
}

#[tokio::test]
async fn hostile_expires_in_values() {
    let p = FakeProvider::start().await;
    let (_, mut rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    for value in [
        Some(json!(0)),
        Some(json!(-60)),
        Some(json!("1800")),
        Some(json!(1e300)),
        Some(json!(u64::MAX)),
        None,
    ] {
        p.set_expires_in(value.clone());
        let (status, body) = refresh(&p, &rt).await;
        assert_eq!(status, 200);
        assert_eq!(body.get("expires_in"), value.as_ref());
        rt = s(&body, "refresh_token");
    }
}

#[tokio::test]
async fn api_me_requires_a_valid_bearer_token() {
    let p = FakeProvider::start().await;
    let (access, _) = p.issue_tokens(DEFAULT_CLIENT_ID);
    let response = http().get(p.me_url()).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(me_status(&p, "at-forged").await, 401);
    let response = http()
        .get(p.me_url())
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"ok": true}));

    p.expire_access_tokens();
    assert_eq!(me_status(&p, &access).await, 401);

    let (access, refresh_token) = p.issue_tokens(DEFAULT_CLIENT_ID);
    assert!(p.revoke_family_of(&refresh_token));
    assert!(!p.is_access_token_valid(&access));
    assert!(!p.revoke_family_of("rt-unknown"));
}

#[tokio::test]
async fn counters() {
    let p = FakeProvider::start().await;
    assert_eq!(
        (
            p.token_calls(),
            p.refresh_calls(),
            p.code_exchanges(),
            p.revoked_families(),
            p.issued_access_tokens()
        ),
        (0, 0, 0, 0, 0)
    );
    p.issue_tokens(DEFAULT_CLIENT_ID);
    let (_, body) = exchange(&p, &authorize_code(&p).await).await;
    let rt = s(&body, "refresh_token");
    refresh(&p, &rt).await;
    refresh(&p, &rt).await; // reuse: revokes
    assert_eq!(p.token_calls(), 3);
    assert_eq!(p.refresh_calls(), 2);
    assert_eq!(p.code_exchanges(), 1);
    assert_eq!(p.revoked_families(), 1);
    assert_eq!(p.issued_access_tokens(), 3);
}

#[tokio::test]
async fn concurrent_refreshes_with_one_token_trigger_reuse_detection() {
    let p = FakeProvider::start().await;
    let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    let (a, b) = tokio::join!(refresh(&p, &rt), refresh(&p, &rt));
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400]);
    assert_eq!(p.revoked_families(), 1);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let p = FakeProvider::start().await;
    let url = p.me_url();
    assert_eq!(
        http().get(&url).send().await.unwrap().status().as_u16(),
        401
    );
    p.shutdown().await;
    // A fresh client (no pooled connection) cannot connect any more.
    assert!(http().get(&url).send().await.is_err());
}

#[tokio::test]
async fn latency_after_processing_commits_before_answering() {
    let p = FakeProvider::start().await;
    let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    p.set_latency_after_processing(Duration::from_secs(30));
    let gave_up = tokio::time::timeout(Duration::from_secs(1), refresh(&p, &rt)).await;
    assert!(gave_up.is_err(), "the answer is held back");
    // The rotation happened although the caller never saw the new token.
    for _ in 0..200 {
        if !p.is_refresh_token_valid(&rt) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!p.is_refresh_token_valid(&rt));
    assert_eq!(p.refresh_calls(), 1);
    assert_eq!(p.issued_access_tokens(), 2);
}

#[tokio::test]
async fn a_503_after_a_delay() {
    let p = FakeProvider::start().await;
    let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    p.set_latency(Duration::from_millis(50));
    p.fail_next(1, 503);
    let (status, body) = refresh(&p, &rt).await;
    assert_eq!((status, s(&body, "error").as_str()), (503, "server_error"));
    // Nothing was consumed.
    assert!(p.is_refresh_token_valid(&rt));
}

#[tokio::test]
async fn hostile_token_type_and_queued_access_tokens() {
    let p = FakeProvider::start().await;
    let (_, rt) = p.issue_tokens(DEFAULT_CLIENT_ID);
    p.set_token_type(Some(json!("bearer\r\nX-Evil: 1")));
    p.queue_access_token("at-\u{7}bell");
    let (status, body) = refresh(&p, &rt).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer\r\nX-Evil: 1");
    assert_eq!(body["access_token"], "at-\u{7}bell");
    assert!(p.is_access_token_valid("at-\u{7}bell"));
    p.set_token_type(None);
    let (_, body) = refresh(&p, &s(&body, "refresh_token")).await;
    assert!(body.get("token_type").is_none(), "{body}");
    assert!(s(&body, "access_token").starts_with("at-"));
}
