//! The registry across crates: built-in element crates are linked and
//! registered; an element crate defined outside the built-in set registers
//! too (this test binary defines one).

use elements_core::{
    Element, ElementFactory, ElementSpec, OAuthError, OAuthUrl, OAuthUrlRequest, RegistryBuilder,
};

#[derive(Debug)]
struct Quirky {
    spec: ElementSpec,
}

impl Element for Quirky {
    fn spec(&self) -> &ElementSpec {
        &self.spec
    }

    fn oauth_url(&self, _: &OAuthUrlRequest) -> Result<OAuthUrl, OAuthError> {
        Ok(OAuthUrl {
            url: "https://quirky.test/always-the-same".into(),
        })
    }
}

elements_core::inventory::submit! {
    ElementFactory::new("quirky", |spec| Box::new(Quirky { spec }))
}

const QUIRKY_TOML: &str = r#"
id = 77001
key = "quirky"
name = "Quirky"
description = "A test element with code"
image = "elements/provider_quirky.png"
hub = "general"
authentication = "oauth2"
existing_account_description = "e"
config_description = "c"

[oauth]
authorization_url = "https://quirky.test/auth"
token_url = "https://quirky.test/token"
"#;

#[test]
fn an_outside_element_crate_registers_and_is_found() {
    let mut builder = elements_catalog::builder();
    builder.add_layer([("tests/quirky.toml", QUIRKY_TOML)]);
    let registry = builder.build().expect("registry");
    let quirky = registry.get("quirky").expect("registered");
    assert!(format!("{quirky:?}").starts_with("Quirky"));
    assert_eq!(
        quirky.oauth_url(&OAuthUrlRequest::default()).unwrap().url,
        "https://quirky.test/always-the-same"
    );
    // HubSpot is there, as its own crate's type, not the generic element.
    let hubspot = registry.get("hubspot").expect("hubspot is registered");
    assert!(format!("{hubspot:?}").starts_with("HubSpot"), "{hubspot:?}");
}

#[test]
fn a_registered_crate_without_a_catalog_file_is_refused() {
    // This binary registers `quirky`; the built-in catalog has no file for it.
    let err = elements_catalog::builtin().unwrap_err();
    assert!(
        err.to_string()
            .contains("element crate registered for key `quirky`, but no catalog file declares it"),
        "{err}"
    );
    // Likewise HubSpot's crate, linked here, without its file.
    let mut builder = RegistryBuilder::new();
    builder.add_layer([("q.toml", QUIRKY_TOML)]);
    let err = builder.build().unwrap_err();
    assert!(err.to_string().contains("key `hubspot`"), "{err}");
}

/// The built-in `hubspot.toml`, with `extra` inserted after its
/// `refresh_url` line (inside `[oauth]`) and `tail` appended.
fn hubspot_override(extra: &str, tail: &str) -> String {
    let builtin = elements_catalog::BUILTIN
        .iter()
        .find(|(name, _)| name.ends_with("hubspot.toml"))
        .expect("the built-in hubspot.toml")
        .1;
    let anchor = "refresh_url = \"https://api.hubapi.com/auth/v1/refresh\"\n";
    assert!(builtin.contains(anchor), "hubspot.toml has a refresh_url");
    format!(
        "{}{tail}",
        builtin.replacen(anchor, &format!("{anchor}{extra}"), 1)
    )
}

fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).expect("needle in text")]
        .matches('\n')
        .count()
        + 1
}

#[test]
fn an_override_of_a_crate_element_may_not_set_fields_the_crate_ignores() {
    // An --elements-dir file for `hubspot` is served by the HubSpot crate,
    // which builds its own authorization URL and refresh requests: `pkce` or
    // `token_params` there would be silently ignored, so they are refused.
    let dir = tempfile::tempdir().unwrap();
    // This binary registers `quirky` too, so the directory declares it.
    std::fs::write(dir.path().join("quirky.toml"), QUIRKY_TOML).unwrap();
    let text = hubspot_override(
        "pkce = true\n",
        "\n[oauth.token_params]\naudience = \"crm\"\n",
    );
    std::fs::write(dir.path().join("hubspot.toml"), &text).unwrap();
    let err = elements_catalog::load(&[dir.path().to_path_buf()], []).unwrap_err();
    let file = dir.path().join("hubspot.toml").display().to_string();
    let reason = "element `hubspot` is served by its own code, which does not support this \
                  field (remove it or leave it at its default)";
    assert_eq!(
        err.to_string(),
        format!(
            "{file}:{}: field `oauth.pkce`: {reason}\n{file}:{}: field `oauth.token_params`: {reason}",
            line_of(&text, "pkce = true"),
            line_of(&text, "[oauth.token_params]"),
        )
    );

    // What the crate does honour may be overridden: names, endpoints.
    let text = hubspot_override("", "")
        .replace("name = \"HubSpot\"", "name = \"HubSpot (staging)\"")
        .replace(
            "https://api.hubapi.com/oauth/v1/token",
            "https://staging.hubapi.test/oauth/v1/token",
        );
    std::fs::write(dir.path().join("hubspot.toml"), &text).unwrap();
    let registry = elements_catalog::load(&[dir.path().to_path_buf()], []).unwrap();
    let hubspot = registry.get("hubspot").unwrap();
    assert!(format!("{hubspot:?}").starts_with("HubSpot"), "{hubspot:?}");
    assert_eq!(hubspot.spec().name, "HubSpot (staging)");
    assert_eq!(
        hubspot.spec().oauth.as_ref().unwrap().token_url,
        "https://staging.hubapi.test/oauth/v1/token"
    );
}
