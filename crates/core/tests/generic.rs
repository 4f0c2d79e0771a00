//! The generic element's declarative OAuth: templates, scope parameter,
//! required state, public clients, token parameters and token response
//! mapping — all from TOML, no provider code.

use elements_core::{
    CodeExchange, Configuration, MissingConfiguration, OAuthError, OAuthUrlRequest,
    ProviderResponse, RefreshRequest, Registry, RegistryBuilder, Secret,
};

const HEAD: &str = r#"id = 9001
key = "acme"
name = "Acme"
description = "d"
image = "elements/provider_acme.png"
hub = "crm"
authentication = "oauth2"
existing_account_description = "e"
config_description = "c"
"#;

fn registry(rest: &str) -> Registry {
    let mut builder = RegistryBuilder::new();
    builder.add_layer([("acme.toml", format!("{HEAD}{rest}"))]);
    builder.build().unwrap_or_else(|e| panic!("{e}"))
}

const TEMPLATED: &str = r#"
[oauth]
authorization_url = "https://{subdomain}.acme.test/{tenant}/authorize"
token_url = "https://{subdomain}.acme.test/{tenant}/token"
refresh_url = "https://{subdomain}.acme.test/refresh"
scope_separator = ","
scope_param = "user_scope"
state_required = true
client_auth = "basic"

[oauth.authorization_params]
audience = "https://{subdomain}.acme.test"
prompt = "consent"

[oauth.token_params]
assertion = "{signing.key}"

[oauth.token_response]
access_token = "data.token"
expires_in = "data.ttl"

[[configuration]]
key = "oauth.api.key"
name = "Client ID"

[[configuration]]
key = "oauth.api.secret"
name = "Client Secret"
secret = true

[[configuration]]
key = "oauth.callback.url"
name = "Callback URL"

[[configuration]]
key = "subdomain"
name = "Subdomain"

[[configuration]]
key = "tenant"
name = "Tenant"
required = false
default_value = "common"

[[configuration]]
key = "signing.key"
name = "Signing key"
secret = true
"#;

fn request() -> OAuthUrlRequest {
    OAuthUrlRequest {
        api_key: Some("cid".into()),
        callback_url: Some("https://app.test/cb".into()),
        scope: Some("a b".into()),
        state: Some("s".into()),
        ..Default::default()
    }
}

#[test]
fn authorization_url_from_templates() {
    let r = registry(TEMPLATED);
    let acme = r.get("acme").unwrap();
    let mut req = request();
    req.params.insert("subdomain".into(), "eu-1".into());
    assert_eq!(
        acme.oauth_url(&req).unwrap().url,
        "https://eu-1.acme.test/common/authorize?response_type=code&client_id=cid\
         &redirect_uri=https%3A%2F%2Fapp.test%2Fcb&user_scope=a%2Cb&state=s\
         &audience=https%3A%2F%2Feu-1.acme.test&prompt=consent"
    );
    req.params.insert("tenant".into(), "t 1/2".into());
    assert!(acme
        .oauth_url(&req)
        .unwrap()
        .url
        .starts_with("https://eu-1.acme.test/t%201%2F2/authorize?"));
}

#[test]
fn every_missing_value_is_named_at_once() {
    let r = registry(TEMPLATED);
    let acme = r.get("acme").unwrap();
    let err = acme.oauth_url(&OAuthUrlRequest::default()).unwrap_err();
    assert_eq!(
        err,
        OAuthError::MissingConfiguration(MissingConfiguration {
            keys: vec![
                "apiKey".into(),
                "callbackUrl".into(),
                "state".into(),
                "subdomain".into()
            ]
        })
    );
    let mut req = request();
    req.params.insert("subdomain".into(), "x".into());
    req.state = None;
    assert_eq!(
        acme.oauth_url(&req).unwrap_err(),
        OAuthError::MissingParameters(vec!["state"])
    );
    req.state = Some("s".into());
    req.params.insert("subdomain".into(), "evil.test/x".into());
    assert!(matches!(
        acme.oauth_url(&req),
        Err(OAuthError::InvalidParameter { name, .. }) if name == "subdomain"
    ));
}

#[test]
fn token_requests_fill_templates_from_configuration() {
    let r = registry(TEMPLATED);
    let acme = r.get("acme").unwrap();
    let code = Secret::new("the-code");
    let empty = Configuration::new();
    let err = acme
        .code_exchange_request(&CodeExchange {
            code: &code,
            configuration: &empty,
            code_verifier: None,
        })
        .unwrap_err();
    assert_eq!(
        err,
        OAuthError::MissingConfiguration(MissingConfiguration {
            keys: vec![
                "oauth.api.key".into(),
                "oauth.api.secret".into(),
                "oauth.callback.url".into(),
                "subdomain".into(),
                "signing.key".into()
            ]
        })
    );
    let config: Configuration = [
        ("oauth.api.key", "cid"),
        ("oauth.api.secret", "csecret"),
        ("oauth.callback.url", "https://app.test/cb"),
        ("subdomain", "eu-1"),
        ("signing.key", "sk-1"),
    ]
    .into_iter()
    .collect();
    let request = acme
        .code_exchange_request(&CodeExchange {
            code: &code,
            configuration: &config,
            code_verifier: None,
        })
        .unwrap();
    assert_eq!(request.url, "https://eu-1.acme.test/common/token");
    assert_eq!(request.get("assertion"), Some("sk-1"));
    assert_eq!(request.get("client_secret"), None);
    assert_eq!(
        request
            .basic_auth
            .as_ref()
            .map(|(id, s)| (id.as_str(), s.expose())),
        Some(("cid", "csecret"))
    );
    let refresh = acme
        .refresh_request(&RefreshRequest {
            refresh_token: &Secret::new("rt"),
            configuration: &config,
        })
        .unwrap();
    assert_eq!(refresh.url, "https://eu-1.acme.test/refresh");
    assert_eq!(refresh.get("assertion"), Some("sk-1"));

    // The token response is read where the catalog says.
    let tokens = acme
        .parse_token_response(
            &ProviderResponse {
                status: 200,
                body: br#"{"data":{"token":"at-1","ttl":"600"}}"#.to_vec(),
            },
            &request,
        )
        .unwrap();
    assert_eq!(tokens.access_token.expose(), "at-1");
    assert_eq!(tokens.expires_in, Some(600));
}

#[test]
fn public_clients_send_no_secret() {
    let r = registry(
        r#"
[oauth]
authorization_url = "https://acme.test/authorize"
token_url = "https://acme.test/token"
pkce = true
client_auth = "none"

[[configuration]]
key = "oauth.api.key"
name = "Client ID"

[[configuration]]
key = "oauth.callback.url"
name = "Callback URL"
"#,
    );
    let acme = r.get("acme").unwrap();
    let config: Configuration = [
        ("oauth.api.key", "cid"),
        ("oauth.callback.url", "https://app.test/cb"),
    ]
    .into_iter()
    .collect();
    assert_eq!(acme.validate_configuration(&config), Ok(()));
    let code = Secret::new("c");
    let request = acme
        .code_exchange_request(&CodeExchange {
            code: &code,
            configuration: &config,
            code_verifier: Some("verifier"),
        })
        .unwrap();
    assert_eq!(request.get("client_id"), Some("cid"));
    assert_eq!(request.get("client_secret"), None);
    assert_eq!(request.basic_auth, None);
    assert_eq!(request.get("code_verifier"), Some("verifier"));
    let err = acme
        .refresh_request(&RefreshRequest {
            refresh_token: &Secret::new("rt"),
            configuration: &Configuration::new(),
        })
        .unwrap_err();
    assert_eq!(
        err,
        OAuthError::MissingConfiguration(MissingConfiguration {
            keys: vec!["oauth.api.key".into()]
        })
    );
}
