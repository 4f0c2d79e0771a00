//! The Authorization header parser never panics, and what it accepts has no
//! white space or control characters in any secret.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(creds) = elements_server::auth::parse_authorization(text) {
            for s in [creds.user, creds.organization, creds.element]
                .into_iter()
                .flatten()
            {
                assert!(!s.expose().is_empty());
                assert!(!s
                    .expose()
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control()));
            }
        }
    }
});
