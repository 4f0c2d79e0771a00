//! A service embedding elements: build the registry, look an element up,
//! build its OAuth URL and validate an instance configuration.
//!
//! `cargo run --example embed`

use elements_core::{Configuration, OAuthUrlRequest};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let registry = elements_catalog::builtin()?;
    println!("{} elements in the built-in catalog", registry.len());

    let hubspot = registry.get("hubspot").ok_or("hubspot is not registered")?;
    let url = hubspot.oauth_url(&OAuthUrlRequest {
        api_key: Some("123456789d-1234-12e4-bda9-12345b8bf20".into()),
        api_secret: Some("123456".into()),
        scope: Some("contacts-rw offline".into()),
        callback_url: Some("http://demonstrab.ly".into()),
        ..Default::default()
    })?;
    println!("send the user to {}", url.url);

    let config: Configuration = [("oauth.api.key", "123456789d-1234-12e4-bda9-12345b8bf20")]
        .into_iter()
        .collect();
    if let Err(missing) = hubspot.validate_configuration(&config) {
        println!("not yet: {missing}");
    }
    Ok(())
}
