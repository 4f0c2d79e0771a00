//! The built-in catalog, end to end: every element of `elements/` loads, builds
//! an authorization URL (or refuses clearly when it does not use OAuth) and a
//! token request; a sample is checked parameter by parameter against the
//! provider's documented example; `elements check` passes on the catalog and
//! reports `file:line: message` on a broken one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use elements_core::standard::pkce_challenge;
use elements_core::{
    Authentication, ClientAuth, CodeExchange, Configuration, Element, MissingConfiguration,
    OAuthError, OAuthUrlRequest, ProviderResponse, Registry, Secret,
};

fn registry() -> Registry {
    elements_catalog::builtin().expect("the built-in catalog loads")
}

fn element<'r>(registry: &'r Registry, key: &str) -> &'r dyn Element {
    registry
        .get(key)
        .unwrap_or_else(|| panic!("`{key}` is in the catalog"))
        .as_ref()
}

const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// A URL split into host, path and decoded query parameters (in order).
#[derive(Debug)]
struct Parsed {
    host: String,
    path: String,
    params: Vec<(String, String)>,
}

fn parse(url: &str) -> Parsed {
    let rest = url.strip_prefix("https://").expect("an https URL");
    let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (host, path) = match base.find('/') {
        Some(i) => (&base[..i], &base[i..]),
        None => (base, "/"),
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .expect("UTF-8")
            .into_owned()
    };
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    Parsed {
        host: host.to_owned(),
        path: path.to_owned(),
        params,
    }
}

// ---------------------------------------------------------------- the catalog

#[test]
fn catalog_has_at_least_fifty_curated_elements() {
    let registry = registry();
    assert!(registry.len() >= 50, "only {} elements", registry.len());
    // The ids of the first elements never change.
    for (key, id) in [
        ("hubspot", 43),
        ("github", 1201),
        ("googledrive", 1202),
        ("slack", 1203),
    ] {
        assert_eq!(registry.get(key).map(|e| e.id()), Some(id), "{key}");
    }
    // HubSpot is the element crate, not the generic element: a catalog
    // without the crate linked would silently lose its legacy flow.
    let hubspot = format!("{:?}", registry.get("hubspot").unwrap());
    assert!(hubspot.starts_with("HubSpot"), "{hubspot}");

    let mut hubs = BTreeMap::new();
    let mut auths = BTreeMap::new();
    for e in registry.iter() {
        let spec = e.spec();
        let key = &spec.key;
        assert_eq!(spec.source.file, format!("elements/{key}.toml"));
        assert_eq!(spec.image, format!("elements/provider_{key}.png"), "{key}");
        for (field, value) in [
            ("name", &spec.name),
            ("description", &spec.description),
            ("hub", &spec.hub),
            (
                "existing_account_description",
                &spec.existing_account_description,
            ),
            ("config_description", &spec.config_description),
        ] {
            assert!(!value.trim().is_empty(), "{key}: empty `{field}`");
        }
        assert!(spec.active && !spec.deleted, "{key}");
        assert!(!spec.configuration.is_empty(), "{key}: no configuration");
        *hubs.entry(spec.hub.clone()).or_insert(0) += 1;
        *auths.entry(spec.authentication.as_str()).or_insert(0) += 1;
    }
    for hub in [
        "crm",
        "marketing",
        "helpdesk",
        "documents",
        "messaging",
        "collaboration",
        "finance",
        "ecommerce",
    ] {
        assert!(
            hubs.get(hub).copied().unwrap_or(0) >= 3,
            "hub {hub}: {hubs:?}"
        );
    }
    for auth in ["oauth2", "apikey", "basic"] {
        assert!(auths.contains_key(auth), "no `{auth}` element: {auths:?}");
    }
}

#[test]
fn every_catalog_file_cites_the_providers_documentation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("elements");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") || path.ends_with("hubspot.toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("# ") && first.contains("https://"),
            "{}: the first line should cite the provider's documentation",
            path.display()
        );
    }
}

// ---------------------------------------------------------------- every element

/// A value for every placeholder, as an `oauth/url` request or configuration.
fn placeholder_values(spec: &elements_core::ElementSpec) -> BTreeMap<String, String> {
    spec.placeholders()
        .into_iter()
        .map(|name| {
            // Declared values (format: allowed_values, custom_host) first.
            let value = match spec.config_entry(name) {
                Some(e) if !e.allowed_values.is_empty() => e.allowed_values[0].clone(),
                Some(e) if e.custom_host => "https://acme-1.example.com".to_owned(),
                _ => "acme-1".to_owned(),
            };
            (name.to_owned(), value)
        })
        .collect()
}

#[test]
fn every_element_builds_an_authorization_url_or_refuses_with_not_oauth() {
    let registry = registry();
    let mut oauth = 0;
    for e in registry.iter() {
        let spec = e.spec();
        let key = spec.key.as_str();
        let mut req = OAuthUrlRequest {
            api_key: Some("client-id".into()),
            api_secret: Some("123456".into()),
            scope: Some("scope-a scope-b".into()),
            callback_url: Some("https://app.test/cb".into()),
            state: Some("st-1".into()),
            code_verifier: Some(VERIFIER.into()),
            params: BTreeMap::new(),
        };
        // Only the authorization code kind has an authorization URL.
        if spec.authentication != elements_core::Authentication::Oauth2 {
            let no_url = spec
                .oauth
                .as_ref()
                .is_none_or(|o| o.authorization_url.is_empty());
            assert!(no_url && !e.uses_pkce(), "{key}");
            assert_eq!(
                e.oauth_url(&req),
                Err(OAuthError::NotOAuth(key.to_owned())),
                "{key}"
            );
            continue;
        }
        oauth += 1;
        let o = spec.oauth.as_ref().unwrap();

        // Placeholders without a default are named when missing, with every
        // missing request parameter.
        let needed: Vec<String> = spec
            .authorization_placeholders()
            .into_iter()
            .filter(|n| {
                spec.config_entry(n)
                    .and_then(|c| c.default_value.as_ref())
                    .is_none()
            })
            .map(str::to_owned)
            .collect();
        if !needed.is_empty() {
            let err = e.oauth_url(&req).unwrap_err();
            assert_eq!(
                err,
                OAuthError::MissingConfiguration(MissingConfiguration {
                    keys: needed.clone()
                }),
                "{key}"
            );
            let mut no_key = req.clone();
            no_key.api_key = None;
            let mut keys = vec!["apiKey".to_owned()];
            keys.extend(needed.iter().cloned());
            assert_eq!(
                e.oauth_url(&no_key).unwrap_err(),
                OAuthError::MissingConfiguration(MissingConfiguration { keys }),
                "{key}"
            );
        }
        req.params = placeholder_values(spec);

        let url = e
            .oauth_url(&req)
            .unwrap_or_else(|err| panic!("{key}: {err}"))
            .url;
        assert!(!url.contains(['{', '}', ' ']), "{key}: {url}");
        let parsed = parse(&url);
        let params: BTreeMap<_, _> = parsed.params.iter().cloned().collect();
        assert_eq!(
            params.len(),
            parsed.params.len(),
            "{key}: a repeated parameter: {url}"
        );
        assert_eq!(
            params.get("client_id").map(String::as_str),
            Some("client-id"),
            "{key}"
        );
        assert_eq!(
            params.get("redirect_uri").map(String::as_str),
            Some("https://app.test/cb"),
            "{key}"
        );
        assert!(
            !parsed.host.is_empty() && !parsed.host.contains('{'),
            "{key}"
        );
        if key != "hubspot" {
            assert_eq!(
                params.get("response_type").map(String::as_str),
                Some("code"),
                "{key}"
            );
            assert_eq!(
                params.get("state").map(String::as_str),
                Some("st-1"),
                "{key}"
            );
            let scope = params.get(o.scope_param.as_str()).map(String::as_str);
            let joined = format!("scope-a{}scope-b", o.scope_separator);
            assert_eq!(scope, Some(joined.as_str()), "{key}");
            for (name, value) in &o.authorization_params {
                if !value.contains('{') {
                    assert_eq!(params.get(name), Some(value), "{key}: `{name}`");
                }
            }
        }
        let challenge = pkce_challenge(VERIFIER);
        assert_eq!(
            params.get("code_challenge").map(String::as_str),
            e.uses_pkce().then_some(challenge.as_str()),
            "{key}"
        );
        if e.uses_pkce() {
            let mut no_verifier = req.clone();
            no_verifier.code_verifier = None;
            assert_eq!(
                e.oauth_url(&no_verifier).unwrap_err(),
                OAuthError::MissingParameters(vec!["codeVerifier"]),
                "{key}"
            );
        }
        if o.state_required {
            let mut no_state = req.clone();
            no_state.state = None;
            assert_eq!(
                e.oauth_url(&no_state).unwrap_err(),
                OAuthError::MissingParameters(vec!["state"]),
                "{key}"
            );
        }
        // Any placeholder in the host refuses a value that would change it.
        for name in spec.authorization_placeholders() {
            for evil in ["evil.com/x", "a.b", "x@evil.com"] {
                let mut bad = req.clone();
                bad.params.insert(name.to_owned(), evil.to_owned());
                match e.oauth_url(&bad) {
                    Err(OAuthError::InvalidParameter { name: n, .. }) => assert_eq!(n, name),
                    Ok(u) => assert_eq!(
                        parse(&u.url).host,
                        parsed.host,
                        "{key}: `{name}` = {evil:?} changed the host: {}",
                        u.url
                    ),
                    Err(other) => panic!("{key}: {other}"),
                }
            }
        }
    }
    assert!(oauth >= 40, "only {oauth} OAuth elements");
}

#[test]
fn every_oauth_element_builds_token_requests_from_configuration() {
    let registry = registry();
    for e in registry.iter() {
        let spec = e.spec();
        let key = spec.key.as_str();
        let Some(o) = &spec.oauth else {
            // Non-OAuth elements validate their own configuration.
            let missing = e.validate_configuration(&Configuration::new()).unwrap_err();
            assert!(!missing.keys.is_empty(), "{key}");
            let mut config: Configuration = spec
                .configuration
                .iter()
                .map(|c| (c.key.clone(), "acme-1".to_owned()))
                .collect();
            assert_eq!(e.validate_configuration(&config), Ok(()), "{key}");
            if let Some(url) = spec.base_url_for(&config).unwrap() {
                assert!(
                    url.starts_with("https://") && !url.contains('{'),
                    "{key}: {url}"
                );
            }
            config.insert("subdomain", "evil.com/x");
            config.insert("site", "evil.com/x");
            if spec
                .placeholders()
                .iter()
                .any(|n| *n == "subdomain" || *n == "site")
            {
                assert!(spec.base_url_for(&config).is_err(), "{key}");
            }
            continue;
        };
        if key == "hubspot" {
            continue; // its own crate; tested there
        }
        let code = Secret::new("the-code");
        let empty = Configuration::new();
        let err = e
            .code_exchange_request(&CodeExchange {
                code: &code,
                configuration: &empty,
                code_verifier: None,
            })
            .unwrap_err();
        let OAuthError::MissingConfiguration(missing) = err else {
            panic!("{key}: {err}")
        };
        assert_eq!(missing.keys[0], "oauth.api.key", "{key}");
        assert_eq!(
            missing.keys.iter().any(|k| k == "oauth.api.secret"),
            o.client_auth != ClientAuth::None,
            "{key}"
        );

        let mut config: Configuration = placeholder_values(spec).into_iter().collect();
        config.insert("oauth.api.key", "client-id");
        config.insert("oauth.api.secret", "client-secret");
        config.insert("oauth.callback.url", "https://app.test/cb");
        // Entries only the credential uses (ServiceTitan's app key header).
        for c in spec.configuration.iter().filter(|c| c.required) {
            if config.get(&c.key).is_none() {
                config.insert(c.key.clone(), "acme-1");
            }
        }
        assert_eq!(e.validate_configuration(&config), Ok(()), "{key}");
        let request = e
            .code_exchange_request(&CodeExchange {
                code: &code,
                configuration: &config,
                code_verifier: e.uses_pkce().then_some(VERIFIER),
            })
            .unwrap_or_else(|err| panic!("{key}: {err}"));
        assert!(
            request.url.starts_with("https://") && !request.url.contains('{'),
            "{key}: {}",
            request.url
        );
        assert_eq!(
            request.get("grant_type"),
            Some("authorization_code"),
            "{key}"
        );
        assert_eq!(request.get("code"), Some("the-code"), "{key}");
        assert_eq!(
            request.get("redirect_uri"),
            Some("https://app.test/cb"),
            "{key}"
        );
        match o.client_auth {
            ClientAuth::Body => {
                assert_eq!(request.get("client_secret"), Some("client-secret"), "{key}")
            }
            ClientAuth::Basic => {
                assert!(request.basic_auth.is_some() && request.get("client_secret").is_none())
            }
            ClientAuth::None => assert!(
                request.basic_auth.is_none()
                    && request.get("client_secret").is_none()
                    && request.get("client_id") == Some("client-id"),
                "{key}"
            ),
        }
        if e.uses_pkce() {
            assert_eq!(request.get("code_verifier"), Some(VERIFIER), "{key}");
        }
        let refresh = e
            .refresh_request(&elements_core::RefreshRequest {
                refresh_token: &Secret::new("rt"),
                configuration: &config,
            })
            .unwrap_or_else(|err| panic!("{key}: {err}"));
        assert_eq!(refresh.get("grant_type"), Some("refresh_token"), "{key}");
        assert!(!refresh.url.contains('{'), "{key}");

        // A standard token response is understood by every element.
        let response = ProviderResponse {
            status: 200,
            body: br#"{"access_token":"at","refresh_token":"rt","expires_in":3600,"token_type":"bearer"}"#
                .to_vec(),
        };
        let tokens = e
            .parse_token_response(&response, &request)
            .unwrap_or_else(|err| panic!("{key}: {err}"));
        assert_eq!(tokens.access_token.expose(), "at", "{key}");
    }
}

// ---------------------------------------------------------------- documented examples

/// The data files of this test: the providers' documented examples.
fn data_file<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/catalog")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One provider's documented authorization URL example
/// (`tests/data/catalog/authorization_urls.toml`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Documented {
    key: String,
    /// The request, with the documented example's values.
    client_id: String,
    redirect_uri: String,
    scope: Option<String>,
    state: Option<String>,
    verifier: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, String>,
    /// The documented URL: host, path and every parameter.
    host: String,
    path: String,
    expected: BTreeMap<String, String>,
    /// Parameters we send that the provider's example does not show (and
    /// that the provider ignores or documents elsewhere).
    #[serde(default)]
    extra: Vec<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentedUrls {
    example: Vec<Documented>,
}

fn check_documented(registry: &Registry, d: &Documented) {
    let e = element(registry, &d.key);
    let req = OAuthUrlRequest {
        api_key: Some(d.client_id.clone()),
        callback_url: Some(d.redirect_uri.clone()),
        scope: d.scope.clone(),
        state: d.state.clone(),
        code_verifier: d.verifier.clone(),
        params: d.params.clone(),
        ..Default::default()
    };
    let url = e
        .oauth_url(&req)
        .unwrap_or_else(|err| panic!("{}: {err}", d.key))
        .url;
    let parsed = parse(&url);
    assert_eq!(parsed.host, d.host, "{}: host of {url}", d.key);
    assert_eq!(parsed.path, d.path, "{}: path of {url}", d.key);
    let got: BTreeMap<&str, &str> = parsed
        .params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .filter(|(k, _)| !d.extra.iter().any(|x| x == k))
        .collect();
    let expected: BTreeMap<&str, &str> = d
        .expected
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    for (name, value) in &expected {
        assert_eq!(
            got.get(name),
            Some(value),
            "{}: parameter `{name}` of {url}",
            d.key
        );
    }
    assert_eq!(got, expected, "{}: parameters of {url}", d.key);
}

#[test]
fn sample_urls_match_the_providers_documented_examples() {
    let registry = registry();
    let examples: DocumentedUrls = data_file("authorization_urls.toml");
    assert!(examples.example.len() >= 8);
    for d in &examples.example {
        // A documented challenge is the S256 of the documented verifier.
        if let Some(verifier) = &d.verifier {
            assert_eq!(
                d.expected.get("code_challenge"),
                Some(&pkce_challenge(verifier)),
                "{}",
                d.key
            );
        }
        check_documented(&registry, d);
    }
}

#[test]
fn sage_continues_the_query_of_its_authorization_url() {
    let registry = registry();
    let url = element(&registry, "sage")
        .oauth_url(&OAuthUrlRequest {
            api_key: Some("cid".into()),
            callback_url: Some("https://app.test/cb".into()),
            state: Some("s".into()),
            ..Default::default()
        })
        .unwrap()
        .url;
    assert_eq!(
        url,
        "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1&response_type=code\
         &client_id=cid&redirect_uri=https%3A%2F%2Fapp.test%2Fcb&scope=full_access&state=s"
    );
}

/// The hosts every element is documented to use
/// (`tests/data/catalog/hosts.toml`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Hosts {
    authorization: Option<String>,
    token: Option<String>,
    api: Option<String>,
}

/// The host of an `https` URL (refusing any other scheme).
fn https_host(key: &str, url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("{key}: not an https URL: {url}"));
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest[..end].to_owned()
}

#[test]
fn every_element_uses_https_and_its_documented_hosts() {
    let registry = registry();
    let table: BTreeMap<String, Hosts> = data_file("hosts.toml");
    let keys: Vec<&str> = registry.iter().map(|e| e.spec().key.as_str()).collect();
    // Every shipped element has a row, and every row an element.
    for key in &keys {
        assert!(table.contains_key(*key), "{key}: no row in hosts.toml");
    }
    for key in table.keys() {
        assert!(
            keys.contains(&key.as_str()),
            "hosts.toml: `{key}` is not shipped"
        );
    }
    assert!(keys.len() >= 300, "only {} elements", keys.len());

    let code = Secret::new("c");
    for e in registry.iter() {
        let spec = e.spec();
        let key = spec.key.as_str();
        let row = &table[key];
        let values = placeholder_values(spec);
        let mut config: Configuration = [
            ("oauth.api.key", "client-id"),
            ("oauth.api.secret", "123456"),
            ("oauth.callback.url", "https://app.test/cb"),
        ]
        .into_iter()
        .collect();
        for (name, value) in &values {
            config.insert(name.as_str(), value.as_str());
        }
        if let Some(api) = &spec.api_base_url {
            let url = spec
                .base_url_for(&config)
                .unwrap_or_else(|err| panic!("{key}: {err}"))
                .unwrap_or_else(|| panic!("{key}: {api}"));
            let host = https_host(key, &url);
            if let Some(expected) = &row.api {
                assert_eq!(&host, expected, "{key}: API host of {url}");
            }
        }
        let Some(o) = &spec.oauth else {
            assert!(
                row.authorization.is_none() && row.token.is_none(),
                "{key}: hosts.toml gives OAuth hosts to an element without OAuth"
            );
            continue;
        };
        // The client credentials kind has only a token endpoint.
        if spec.authentication == Authentication::Oauth2ClientCredentials {
            assert!(row.authorization.is_none(), "{key}: no authorization URL");
            let request = elements_core::client_credentials_request(spec, &config)
                .unwrap_or_else(|err| panic!("{key}: {err}"));
            assert_eq!(
                Some(https_host(key, &request.url)),
                row.token,
                "{key}: token host of {}",
                request.url
            );
            continue;
        }
        let url = e
            .oauth_url(&OAuthUrlRequest {
                api_key: Some("client-id".into()),
                api_secret: Some("123456".into()),
                scope: Some("scope-a scope-b".into()),
                callback_url: Some("https://app.test/cb".into()),
                state: Some("st-1".into()),
                code_verifier: Some(VERIFIER.into()),
                params: values.clone(),
            })
            .unwrap_or_else(|err| panic!("{key}: {err}"))
            .url;
        assert_eq!(
            Some(https_host(key, &url)),
            row.authorization,
            "{key}: authorization host of {url}"
        );
        let request = e
            .code_exchange_request(&CodeExchange {
                code: &code,
                configuration: &config,
                code_verifier: e.uses_pkce().then_some(VERIFIER),
            })
            .unwrap_or_else(|err| panic!("{key}: {err}"));
        assert_eq!(
            Some(https_host(key, &request.url)),
            row.token,
            "{key}: token host of {}",
            request.url
        );
        if let Some(refresh) = &o.refresh_url {
            https_host(key, refresh);
        }
    }
}

// ---------------------------------------------------------------- templates

#[test]
fn missing_subdomain_is_a_named_error() {
    let registry = registry();
    let zendesk = element(&registry, "zendesk");
    let req = OAuthUrlRequest {
        api_key: Some("cid".into()),
        callback_url: Some("https://app.test/cb".into()),
        ..Default::default()
    };
    let err = zendesk.oauth_url(&req).unwrap_err();
    assert_eq!(
        err,
        OAuthError::MissingConfiguration(MissingConfiguration {
            keys: vec!["subdomain".into()]
        })
    );
    assert_eq!(err.to_string(), "missing required configuration: subdomain");
    // A blank value is missing too.
    let mut blank = req.clone();
    blank.params.insert("subdomain".into(), "  ".into());
    assert_eq!(zendesk.oauth_url(&blank).unwrap_err(), err);
    // Code exchange reads the configuration, and names every missing key.
    let code = Secret::new("c");
    let config: Configuration = [("oauth.api.key", "cid")].into_iter().collect();
    let err = zendesk
        .code_exchange_request(&CodeExchange {
            code: &code,
            configuration: &config,
            code_verifier: None,
        })
        .unwrap_err();
    assert_eq!(
        err,
        OAuthError::MissingConfiguration(MissingConfiguration {
            keys: vec![
                "oauth.api.secret".into(),
                "oauth.callback.url".into(),
                "subdomain".into()
            ]
        })
    );
    // Validation of an instance's configuration names it too.
    let missing = zendesk.validate_configuration(&config).unwrap_err();
    assert!(
        missing.keys.contains(&"subdomain".to_owned()),
        "{missing:?}"
    );
}

#[test]
fn a_subdomain_cannot_change_the_host() {
    let registry = registry();
    for (key, name) in [
        ("zendesk", "subdomain"),
        ("shopify", "shop"),
        ("servicenow", "instance"),
        ("egnyte", "subdomain"),
        ("netsuite", "account_id"),
        ("salesforce", "login_host"),
        ("docusign", "environment"),
    ] {
        let e = element(&registry, key);
        for evil in [
            "evil.com/x",
            "a.b",
            "evil.com#",
            "evil.com?x=",
            "x@evil.com",
            "evil.com:443",
            "%2e",
            "-x",
            "é",
        ] {
            let req = OAuthUrlRequest {
                api_key: Some("cid".into()),
                callback_url: Some("https://app.test/cb".into()),
                code_verifier: Some(VERIFIER.into()),
                state: Some("s".into()),
                params: [(name.to_owned(), evil.to_owned())].into_iter().collect(),
                ..Default::default()
            };
            match e.oauth_url(&req) {
                Err(OAuthError::InvalidParameter { name: n, reason }) => {
                    assert_eq!(n, name, "{key}");
                    assert!(reason.contains("label"), "{key}: {reason}");
                }
                other => panic!("{key}: {name} = {evil:?} gave {other:?}"),
            }
            // The same holds where the value comes from configuration.
            let config: Configuration = [
                ("oauth.api.key", "cid"),
                ("oauth.api.secret", "sec"),
                ("oauth.callback.url", "https://app.test/cb"),
                (name, evil),
            ]
            .into_iter()
            .collect();
            let code = Secret::new("c");
            let err = e
                .code_exchange_request(&CodeExchange {
                    code: &code,
                    configuration: &config,
                    code_verifier: None,
                })
                .unwrap_err();
            assert!(
                matches!(err, OAuthError::InvalidParameter { .. }),
                "{key}: {err}"
            );
        }
    }
}

#[test]
fn path_placeholders_are_encoded_and_defaults_apply() {
    let registry = registry();
    let onedrive = element(&registry, "onedrive");
    let mut req = OAuthUrlRequest {
        api_key: Some("cid".into()),
        callback_url: Some("https://app.test/cb".into()),
        code_verifier: Some(VERIFIER.into()),
        ..Default::default()
    };
    // The tenant's default is `common`.
    assert!(onedrive
        .oauth_url(&req)
        .unwrap()
        .url
        .starts_with("https://login.microsoftonline.com/common/oauth2/v2.0/authorize?"));
    req.params.insert("tenant".into(), "../evil?x=1#".into());
    let url = onedrive.oauth_url(&req).unwrap().url;
    assert!(
        url.starts_with(
            "https://login.microsoftonline.com/..%2Fevil%3Fx%3D1%23/oauth2/v2.0/authorize?"
        ),
        "{url}"
    );
    req.params.insert("tenant".into(), "..".into());
    assert!(matches!(
        onedrive.oauth_url(&req),
        Err(OAuthError::InvalidParameter { .. })
    ));
    // Configuration-derived: a code exchange goes to the configured tenant.
    let config: Configuration = [
        ("oauth.api.key", "cid"),
        ("oauth.api.secret", "sec"),
        ("oauth.callback.url", "https://app.test/cb"),
        ("tenant", "contoso.onmicrosoft.com"),
    ]
    .into_iter()
    .collect();
    let code = Secret::new("c");
    let request = onedrive
        .code_exchange_request(&CodeExchange {
            code: &code,
            configuration: &config,
            code_verifier: Some(VERIFIER),
        })
        .unwrap();
    assert_eq!(
        request.url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
}

#[test]
fn templated_token_urls_come_from_configuration() {
    let registry = registry();
    let code = Secret::new("c");
    for (key, name, value, url) in [
        (
            "zendesk",
            "subdomain",
            "acme",
            "https://acme.zendesk.com/oauth/tokens",
        ),
        (
            "shopify",
            "shop",
            "acme",
            "https://acme.myshopify.com/admin/oauth/access_token",
        ),
        (
            "netsuite",
            "account_id",
            "1234567-sb1",
            "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/auth/oauth2/v1/token",
        ),
        (
            "servicenow",
            "instance",
            "dev12345",
            "https://dev12345.service-now.com/oauth_token.do",
        ),
    ] {
        let config: Configuration = [
            ("oauth.api.key", "cid"),
            ("oauth.api.secret", "sec"),
            ("oauth.callback.url", "https://app.test/cb"),
            (name, value),
        ]
        .into_iter()
        .collect();
        let request = element(&registry, key)
            .code_exchange_request(&CodeExchange {
                code: &code,
                configuration: &config,
                code_verifier: None,
            })
            .unwrap();
        assert_eq!(request.url, url, "{key}");
    }
    // Non-OAuth elements resolve their API base URL the same way.
    let freshdesk = element(&registry, "freshdesk");
    assert_eq!(freshdesk.spec().authentication, Authentication::Apikey);
    let config: Configuration = [("subdomain", "acme"), ("api.key", "k")]
        .into_iter()
        .collect();
    assert_eq!(
        freshdesk.spec().base_url_for(&config).unwrap().as_deref(),
        Some("https://acme.freshdesk.com/api/v2")
    );
    let twilio = element(&registry, "twilio");
    let config: Configuration = [("account_sid", "AC123/../x"), ("auth_token", "t")]
        .into_iter()
        .collect();
    assert_eq!(
        twilio.spec().base_url_for(&config).unwrap().as_deref(),
        Some("https://api.twilio.com/2010-04-01/Accounts/AC123%2F..%2Fx")
    );
}

/// A provider's documented token response and what must be read from it
/// (`tests/data/catalog/token_responses.toml`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentedResponse {
    key: String,
    body: String,
    expected: BTreeMap<String, String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentedResponses {
    response: Vec<DocumentedResponse>,
}

#[test]
fn nested_token_responses_are_read_where_the_catalog_says() {
    let registry = registry();
    let request = elements_core::ProviderRequest::post("https://slack.com/api/oauth.v2.access");
    let responses: DocumentedResponses = data_file("token_responses.toml");
    assert!(responses.response.len() >= 2);
    for r in &responses.response {
        let tokens = element(&registry, &r.key)
            .parse_token_response(
                &ProviderResponse {
                    status: 200,
                    body: r.body.as_bytes().to_vec(),
                },
                &request,
            )
            .unwrap_or_else(|err| panic!("{}: {err}", r.key));
        for (field, value) in &r.expected {
            let got = match field.as_str() {
                "access_token" => Some(tokens.access_token.expose()),
                "refresh_token" => tokens.refresh_token.as_ref().map(Secret::expose),
                "token_type" => tokens.token_type.as_deref(),
                "scope" => tokens.scope.as_deref(),
                other => panic!("{}: unknown expected field `{other}`", r.key),
            };
            assert_eq!(got, Some(value.as_str()), "{}: `{field}`", r.key);
        }
    }
}

// ---------------------------------------------------------------- `elements check`

fn elements_bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_elements"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("ELEMENTS_ELEMENTS_DIR");
    cmd
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "elements-catalog-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn check_passes_on_the_whole_catalog() {
    let out = elements_bin().args(["check", "elements"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    let count = registry().len();
    assert!(
        stdout.contains(&format!("ok: {count} elements")),
        "{stdout}"
    );
}

#[test]
fn check_fails_on_a_broken_dir_with_file_and_line() {
    let dir = TempDir::new("broken");
    let good_head = "id = 9901\nkey = \"acme\"\nname = \"Acme\"\ndescription = \"d\"\n\
                     image = \"elements/provider_acme.png\"\nhub = \"crm\"\nauthentication = \"oauth2\"\n\
                     existing_account_description = \"e\"\nconfig_description = \"c\"\n";
    // Line 11: an unknown field of the [oauth] section.
    let unknown = format!(
        "{good_head}[oauth]\ncolour = \"red\"\nauthorization_url = \"https://a.test/auth\"\n\
         token_url = \"https://a.test/token\"\n"
    );
    std::fs::write(dir.0.join("acme.toml"), unknown).unwrap();
    // Line 11: a placeholder that names no configuration entry.
    let template = format!(
        "{}[oauth]\nauthorization_url = \"https://{{tenant}}.example.com/auth\"\n\
         token_url = \"https://example.com/token\"\n",
        good_head.replace("9901", "9902").replace("acme", "beta")
    );
    std::fs::write(dir.0.join("beta.toml"), template).unwrap();

    let out = elements_bin().arg("check").arg(&dir.0).output().unwrap();
    assert!(!out.status.success(), "a broken catalog passed the check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let acme = dir.0.join("acme.toml");
    let beta = dir.0.join("beta.toml");
    let line_of = |file: &Path, line: usize, needle: &str| {
        let prefix = format!("{}:{line}: ", file.display());
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&prefix) && l.contains(needle)),
            "no `{prefix}...{needle}...` line in:\n{stderr}"
        );
    };
    line_of(&acme, 11, "unknown field `colour`");
    line_of(
        &beta,
        11,
        "field `oauth.authorization_url`: placeholder `{tenant}`",
    );
}

// ---------------------------------------------------------------- non-OAuth kinds and aliases

#[test]
fn cloud_elements_keys_resolve_to_their_elements() {
    let registry = registry();
    for (alias, key) in [
        ("sfdc", "salesforce"),
        ("closeio", "close"),
        ("netsuiteerpv2", "netsuite"),
        ("netsuitefinancev2", "netsuite"),
        ("onedrivev2", "onedrive"),
        ("infusionsoftcrm", "keap"),
        ("paypalv2", "paypal"),
        ("adobe-esign", "adobesign"),
        ("intacct", "sage-intacct"),
        ("sfdcmarketingcloud", "sfmc"),
    ] {
        let spec = registry
            .get(alias)
            .unwrap_or_else(|| panic!("`{alias}` resolves"))
            .spec();
        assert_eq!(spec.key, key, "{alias}");
        assert!(spec.aliases.iter().any(|a| a == alias), "{alias}");
    }
    // Client credentials variants have their own keys, not the oauth2 ones.
    assert_eq!(
        element(&registry, "paypal-rest").spec().authentication,
        Authentication::Oauth2ClientCredentials
    );
    assert_eq!(
        element(&registry, "paypal").spec().authentication,
        Authentication::Oauth2
    );
}

/// Name-value pairs, values shown.
type Shown = Vec<(String, String)>;

/// The headers and query parameters an element adds, values shown.
fn applied(
    registry: &Registry,
    key: &str,
    config: &[(&str, &str)],
    token: Option<&str>,
) -> (Shown, Shown) {
    let spec = element(registry, key).spec();
    let config: Configuration = config.iter().copied().collect();
    let token = token.map(Secret::new);
    let applied = elements_core::apply_credential(spec, &config, token.as_ref())
        .unwrap_or_else(|err| panic!("{key}: {err}"));
    let show = |v: Vec<(String, Secret)>| {
        v.into_iter()
            .map(|(n, s)| (n, s.expose().to_owned()))
            .collect::<Vec<_>>()
    };
    (show(applied.headers), show(applied.query))
}

fn pairs(p: &[(&str, &str)]) -> Shown {
    p.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[test]
fn non_oauth_elements_apply_their_documented_credentials() {
    let registry = registry();
    // API key in a header, with and without a prefix, plus a fixed header.
    assert_eq!(
        applied(&registry, "brevo", &[("api.key", "key-1")], None),
        (pairs(&[("api-key", "key-1")]), vec![])
    );
    assert_eq!(
        applied(&registry, "opsgenie", &[("api.key", "key-1")], None),
        (pairs(&[("Authorization", "GenieKey key-1")]), vec![])
    );
    assert_eq!(
        applied(&registry, "recharge", &[("api.key", "key-1")], None),
        (
            pairs(&[
                ("X-Recharge-Access-Token", "key-1"),
                ("X-Recharge-Version", "2021-11")
            ]),
            vec![]
        )
    );
    // API key in the query.
    assert_eq!(
        applied(&registry, "jazzhr", &[("api.key", "key-1")], None),
        (vec![], pairs(&[("apikey", "key-1")]))
    );
    // HTTP Basic: base64("api:key-1"), base64("agent@acme.test/token:tok-1"),
    // base64(":key-1").
    assert_eq!(
        applied(&registry, "mailgun", &[("api.key", "key-1")], None),
        (pairs(&[("Authorization", "Basic YXBpOmtleS0x")]), vec![])
    );
    assert_eq!(
        applied(
            &registry,
            "zendesk-apitoken",
            &[
                ("subdomain", "acme"),
                ("email", "agent@acme.test"),
                ("api.token", "tok-1")
            ],
            None
        ),
        (
            pairs(&[(
                "Authorization",
                "Basic YWdlbnRAYWNtZS50ZXN0L3Rva2VuOnRvay0x"
            )]),
            vec![]
        )
    );
    assert_eq!(
        applied(&registry, "affinity", &[("api.key", "key-1")], None),
        (pairs(&[("Authorization", "Basic OmtleS0x")]), vec![])
    );
    // Client credentials: the access token, and ServiceTitan's app key header.
    assert_eq!(
        applied(
            &registry,
            "servicetitan",
            &[("app_key", "ak-1")],
            Some("at-1")
        ),
        (
            pairs(&[("Authorization", "Bearer at-1"), ("ST-App-Key", "ak-1")]),
            vec![]
        )
    );
    assert_eq!(
        applied(&registry, "ups", &[], Some("at-1")),
        (pairs(&[("Authorization", "Bearer at-1")]), vec![])
    );
}

#[test]
fn client_credentials_elements_build_their_token_requests() {
    let registry = registry();
    let config = |extra: &[(&str, &str)]| -> Configuration {
        [("oauth.api.key", "cid"), ("oauth.api.secret", "csecret")]
            .iter()
            .chain(extra)
            .copied()
            .collect()
    };
    // Microsoft Graph: tenant in the token URL, the `.default` scope.
    let graph = elements_core::client_credentials_request(
        element(&registry, "microsoftgraph-app").spec(),
        &config(&[("tenant", "contoso.onmicrosoft.com")]),
    )
    .unwrap();
    assert_eq!(
        graph.url,
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    assert_eq!(graph.get("grant_type"), Some("client_credentials"));
    assert_eq!(
        graph.get("scope"),
        Some("https://graph.microsoft.com/.default")
    );
    assert_eq!(graph.get("client_secret"), Some("csecret"));
    // commercetools: HTTP Basic client auth, the scope the instance asks for.
    let ct = elements_core::client_credentials_request(
        element(&registry, "commercetools").spec(),
        &config(&[
            ("region", "europe-west1"),
            ("cloud", "gcp"),
            ("project_key", "shop-1"),
            ("oauth.scope", "manage_project:shop-1"),
        ]),
    )
    .unwrap();
    assert_eq!(
        ct.url,
        "https://auth.europe-west1.gcp.commercetools.com/oauth/token"
    );
    assert_eq!(ct.get("scope"), Some("manage_project:shop-1"));
    assert!(ct.basic_auth.is_some() && ct.get("client_secret").is_none());
    // Marketing Cloud: the business unit's MID in the token request.
    let sfmc = elements_core::client_credentials_request(
        element(&registry, "sfmc").spec(),
        &config(&[("subdomain", "mc-abc123"), ("account_id", "5100001")]),
    )
    .unwrap();
    assert_eq!(
        sfmc.url,
        "https://mc-abc123.auth.marketingcloudapis.com/v2/token"
    );
    assert_eq!(sfmc.get("account_id"), Some("5100001"));
}
