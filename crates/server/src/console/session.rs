//! The console's session cookie: stateless, authenticated-encrypted.
//!
//! The cookie value is `base64url(nonce ‖ AES-256-GCM(key, payload))` with
//! the cookie name as associated data. The payload holds an expiry, a
//! per-session CSRF token and, once signed in, the SHA-256 hashes of the
//! user and organization secrets (never the secrets): every request
//! re-authenticates those hashes against the store, so a changed or removed
//! account ends its sessions. Any replica holding the same key accepts the
//! cookie; nothing is stored server-side.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use elements_store::SecretHash;
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const COOKIE: &str = "elements_console";
/// The payload format version.
const VERSION: u8 = 1;
/// HKDF `info` for the session key.
const KEY_INFO: &[u8] = b"elements console session cookie v1";

/// The session's contents.
#[derive(Clone, PartialEq, Eq)]
pub struct Session {
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The CSRF token every form of this session carries.
    pub csrf: [u8; 32],
    /// Hashes of (user secret, organization secret) once signed in.
    pub account: Option<(SecretHash, SecretHash)>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("expires_at", &self.expires_at)
            .field("signed_in", &self.account.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A fresh session with a new CSRF token.
    pub fn new(expires_at: i64, account: Option<(SecretHash, SecretHash)>) -> Session {
        let mut csrf = [0u8; 32];
        rand::rng().fill_bytes(&mut csrf);
        Session {
            expires_at,
            csrf,
            account,
        }
    }

    /// The CSRF token as it appears in forms.
    pub fn csrf_token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.csrf)
    }

    /// Whether a form's token is this session's, compared in constant time.
    pub fn csrf_matches(&self, given: &str) -> bool {
        match URL_SAFE_NO_PAD.decode(given.as_bytes()) {
            Ok(bytes) if bytes.len() == 32 => bytes.ct_eq(&self.csrf).into(),
            _ => false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 + 32 + 1 + 64);
        out.push(VERSION);
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.csrf);
        match &self.account {
            None => out.push(0),
            Some((user, org)) => {
                out.push(1);
                out.extend_from_slice(user);
                out.extend_from_slice(org);
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Session> {
        let (&version, rest) = bytes.split_first()?;
        if version != VERSION || rest.len() < 8 + 32 + 1 {
            return None;
        }
        let expires_at = i64::from_be_bytes(rest[..8].try_into().ok()?);
        let csrf: [u8; 32] = rest[8..40].try_into().ok()?;
        let account = match (rest[40], &rest[41..]) {
            (0, []) => None,
            (1, hashes) if hashes.len() == 64 => {
                Some((hashes[..32].try_into().ok()?, hashes[32..].try_into().ok()?))
            }
            _ => return None,
        };
        Some(Session {
            expires_at,
            csrf,
            account,
        })
    }
}

/// Seals and opens session cookies.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// A sealer keyed by HKDF-SHA256 of `secret` (at least 32 random bytes).
    pub fn from_secret(secret: &[u8]) -> Sealer {
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(None, secret)
            .expand(KEY_INFO, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// A sealer with a random key of its own (sessions end with the process).
    pub fn random() -> Sealer {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        Sealer::from_secret(&secret)
    }

    /// The cookie value for `session`.
    pub fn seal(&self, session: &Session) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &session.encode(),
                    aad: COOKIE.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of a short message cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// The session in a cookie value, if it was sealed with this key and is
    /// intact (expiry is the caller's to check).
    pub fn open(&self, value: &str) -> Option<Session> {
        if value.len() > 512 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value.as_bytes()).ok()?;
        if bytes.len() < 12 + 16 {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: COOKIE.as_bytes(),
                },
            )
            .ok()?;
        Session::decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_tampering() {
        let sealer = Sealer::from_secret(b"0123456789abcdef0123456789abcdef");
        let signed_in = Session::new(1_900_000_000, Some(([1; 32], [2; 32])));
        let value = sealer.seal(&signed_in);
        assert_eq!(sealer.open(&value), Some(signed_in.clone()));
        let anonymous = Session::new(5, None);
        assert_eq!(sealer.open(&sealer.seal(&anonymous)), Some(anonymous));

        // The hashes are not visible in the cookie.
        let raw = URL_SAFE_NO_PAD.decode(&value).unwrap();
        assert!(!raw.windows(32).any(|w| w == [1u8; 32] || w == [2u8; 32]));

        // One flipped bit, another key, garbage: refused.
        let mut bytes = raw.clone();
        bytes[20] ^= 1;
        assert_eq!(sealer.open(&URL_SAFE_NO_PAD.encode(&bytes)), None);
        let other = Sealer::from_secret(b"another secret of thirty-two b..");
        assert_eq!(other.open(&value), None);
        assert_eq!(sealer.open("not base64 !"), None);
        assert_eq!(sealer.open(""), None);
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        let session = Session::new(0, None);
        assert!(session.csrf_matches(&session.csrf_token()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches(&Session::new(0, None).csrf_token()));
        assert!(!session.csrf_matches("%%%"));
        assert_ne!(Session::new(0, None).csrf, session.csrf);
    }
}
