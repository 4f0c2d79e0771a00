//! Random values the server hands out: PKCE verifiers, secrets, tokens.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;

use crate::error::ApiError;

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

/// RFC 7636 §4.1: a code verifier is 43 to 128 characters of
/// `[A-Za-z0-9-._~]`. `field` names it in the 400.
pub fn check_code_verifier(verifier: &str, field: &str) -> Result<(), ApiError> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if (43..=128).contains(&verifier.len()) && verifier.bytes().all(unreserved) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "`{field}` must be 43 to 128 characters of A-Z, a-z, 0-9, `-`, `.`, `_` and `~` (RFC 7636 section 4.1)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_verifiers_follow_rfc_7636() {
        assert!(check_code_verifier(&new_code_verifier(), "v").is_ok());
        assert!(check_code_verifier(&"a".repeat(43), "v").is_ok());
        assert!(check_code_verifier(&"~._-Az9".repeat(19)[..128], "v").is_ok());
        for bad in [
            "a".repeat(42),
            "a".repeat(129),
            format!("{}+", "a".repeat(42)),
            format!("{}/", "a".repeat(42)),
            format!("{} ", "a".repeat(42)),
            format!("{}\u{e9}", "a".repeat(42)),
            String::new(),
        ] {
            let err = check_code_verifier(&bad, "providerData.code_verifier").unwrap_err();
            let ApiError::BadRequest(message) = err else {
                panic!("not a 400")
            };
            assert!(message.contains("RFC 7636"), "{message}");
            assert!(message.contains("providerData.code_verifier"), "{message}");
        }
    }
}
