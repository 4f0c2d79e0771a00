//! Random values the server hands out: PKCE verifiers, secrets, tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;

/// A fresh random value of `bytes` bytes, base64url without padding.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// A PKCE code verifier (RFC 7636 §4.1): 32 random bytes, 43 characters.
pub fn new_code_verifier() -> String {
    random_token(32)
}
