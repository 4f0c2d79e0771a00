//! The catalog TOML parser never panics; errors always carry a message.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(errors) = elements_core::ElementSpec::parse("fuzz.toml", text) {
            assert!(errors.iter().all(|e| !e.message.is_empty()));
        }
    }
});
