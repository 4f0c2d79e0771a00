//! The fuzz targets' properties (see `fuzz/`), run as property tests in the
//! normal suite: the parsers of untrusted input never panic and never let
//! raw control characters through.

use std::sync::OnceLock;

use elements_core::{ElementSpec, OAuthUrlRequest, Registry};
use elements_server::auth::parse_authorization;
use elements_server::body::parse;
use elements_server::routes::elements::{oauth_url_request, oauth_url_request_from_query};
use elements_server::routes::parse_query;
use elements_server::wire::{CreateInstance, PatchInstance};
use proptest::prelude::*;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(|| elements_catalog::builtin().unwrap())
}

/// Text skewed towards the characters each grammar cares about.
fn grammar(alphabet: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(
            proptest::sample::select(alphabet.chars().collect::<Vec<_>>()),
            0..200
        )
        .prop_map(|v| v.into_iter().collect()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn catalog_parser_never_panics(text in grammar("idkeyname=\"[]\n .#{},_oauth0123456789tf")) {
        if let Err(errors) = ElementSpec::parse("prop.toml", &text) {
            prop_assert!(errors.iter().all(|e| !e.message.is_empty()));
        }
    }

    #[test]
    fn authorization_parser_accepts_only_clean_secrets(text in grammar("User Organization Element,  \t\r\nab=+/")) {
        if let Some(creds) = parse_authorization(&text) {
            for s in [creds.user, creds.organization, creds.element].into_iter().flatten() {
                prop_assert!(!s.expose().is_empty());
                prop_assert!(!s.expose().chars().any(|c| c.is_whitespace() || c.is_control()));
            }
        }
    }

    #[test]
    fn oauth_urls_never_reflect_raw_characters(raw in grammar("apiKeySecretscopecallbackUrlstate=&%0aAdDfF+:/.#@ ")) {
        if let Ok(request) = parse_query(&raw).and_then(oauth_url_request) {
            for element in registry().iter() {
                if let Ok(url) = element.oauth_url(&request) {
                    prop_assert!(!url.url.chars().any(|c| c.is_control() || c == ' '), "{}", url.url);
                }
            }
        }
    }

    #[test]
    fn the_one_pass_query_reading_is_the_two_pass_one(raw in prop_oneof![
        grammar("apiKeySecretscopecallbackUrlstatecodeVerifier=&%0aAdDfF+:/.#@ "),
        query_of_known_names(),
    ]) {
        // GET oauth/url reads its query in one pass; it must give exactly
        // what decoding every pair, then checking them, gives, and refuse
        // with the same message when that refuses.
        let two_pass = parse_query(&raw).and_then(oauth_url_request);
        let one_pass = oauth_url_request_from_query(&raw).and_then(|request| request);
        match (two_pass, one_pass) {
            (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
            (Err(a), Err(b)) => prop_assert_eq!(format!("{a:?}"), format!("{b:?}")),
            (a, b) => prop_assert!(false, "{raw:?}: two-pass {:?}, one-pass {:?}", a.is_ok(), b.is_ok()),
        }
    }

    #[test]
    fn instance_bodies_never_panic(bytes in prop_oneof![
        any::<Vec<u8>>(),
        grammar("{}[]\",:namelemtkyhubspotconfigurationproviderDatatags0123456789.-e\\u ").prop_map(String::into_bytes),
    ]) {
        let _ = parse::<CreateInstance>(&bytes);
        let _ = parse::<PatchInstance>(&bytes);
    }
}

/// Queries made of the names `oauth/url` knows (some encoded, some
/// repeated), other names, and values at the rules' edges (control
/// characters, bad UTF-8, the length limit, `+` and `%20`).
fn query_of_known_names() -> impl Strategy<Value = String> {
    let names = proptest::sample::select(vec![
        "apiKey",
        "apiSecret",
        "scope",
        "callbackUrl",
        "state",
        "codeVerifier",
        "oauth.flow",
        "x",
        "%61piKey",
        "api+Key",
        "sc%0aope",
        "",
        "st%FFate",
    ]);
    let values = prop_oneof![
        Just(String::new()),
        Just("k".to_owned()),
        Just("contacts-rw%20offline+x".to_owned()),
        Just("a%0d%0aX:1".to_owned()),
        Just("%C3%A9%FF".to_owned()),
        Just("v".repeat(2048)),
        Just("v".repeat(2049)),
        Just("%41".repeat(2049)),
        "[a-z%+=]{0,12}",
    ];
    proptest::collection::vec((names, proptest::option::of(values)), 0..8).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value)| match value {
                Some(value) => format!("{name}={value}"),
                None => name.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&")
    })
}

#[test]
fn a_seed_callback_url_with_crlf_is_refused() {
    let pairs =
        parse_query("apiKey=k&apiSecret=1&scope=s&callbackUrl=http://a.test/%0d%0aX:1").unwrap();
    let request = OAuthUrlRequest {
        api_key: Some(pairs[0].1.clone()),
        api_secret: Some(pairs[1].1.clone()),
        scope: Some(pairs[2].1.clone()),
        callback_url: Some(pairs[3].1.clone()),
        ..Default::default()
    };
    assert!(registry()
        .get("hubspot")
        .unwrap()
        .oauth_url(&request)
        .is_err());
}
