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
