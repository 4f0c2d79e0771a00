//! `POST /instances` body parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = elements_server::body::parse::<elements_server::wire::CreateInstance>(data);
    let _ = elements_server::body::parse::<elements_server::wire::PatchInstance>(data);
});
