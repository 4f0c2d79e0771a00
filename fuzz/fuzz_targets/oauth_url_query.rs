//! oauth/url query parsing and URL building never panic; a built URL has
//! no control characters or spaces (nothing reflected raw).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn registry() -> &'static elements_core::Registry {
    static R: OnceLock<elements_core::Registry> = OnceLock::new();
    R.get_or_init(|| elements_server::startup::registry(&Default::default()).unwrap())
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(request) = elements_server::routes::parse_query(raw)
        .and_then(elements_server::routes::elements::oauth_url_request)
    else {
        return;
    };
    for element in registry().iter() {
        if let Ok(url) = element.oauth_url(&request) {
            assert!(!url.url.chars().any(|c| c.is_control() || c == ' '));
        }
    }
});
