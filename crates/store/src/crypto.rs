//! Encryption at rest: AES-256-GCM with key rotation.
//!
//! A stored value looks like `v1.<key id>.<base64(nonce || ciphertext)>`:
//! the format version, the id of the key that encrypted it (the first 8 hex
//! digits of the SHA-256 of the key), and the 96-bit random nonce followed by
//! the ciphertext and its 128-bit tag, in standard base64. The caller's
//! associated data (e.g. `instance:<id>:access_token`) binds the value to its
//! row and column: a value copied elsewhere does not decrypt.
//!
//! A [`Keyring`] holds one or more keys: the first encrypts, all decrypt, so a
//! key can be rotated by putting the new one first and keeping the old one
//! until every value has been rewritten.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::{RngCore as _, TryRngCore as _};
use sha2::{Digest, Sha256};

use crate::StoreError;

/// The environment variable holding the master key(s), for messages.
pub const MASTER_KEY_ENV: &str = "ELEMENTS_MASTER_KEY";

const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// A set of AES-256-GCM keys: the first encrypts, every one decrypts.
///
/// `Debug` prints the key ids only.
#[derive(Clone)]
pub struct Keyring {
    keys: Vec<(String, Aes256Gcm)>,
    /// HKDF-SHA256 pseudo-random key extracted from the first key, for
    /// [`Keyring::derive`] (never printed).
    derive_prk: [u8; 32],
}

impl Keyring {
    /// A keyring from raw 32-byte keys; the first one encrypts. Fails if
    /// `keys` is empty or holds the same key twice.
    pub fn new(keys: Vec<[u8; 32]>) -> Result<Keyring, StoreError> {
        if keys.is_empty() {
            return Err(StoreError::Key("no encryption key given".into()));
        }
        let mut out: Vec<(String, Aes256Gcm)> = Vec::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            let id = key_id(key);
            if out.iter().any(|(other, _)| *other == id) {
                return Err(StoreError::Key(format!(
                    "key {} of {} (id {id}) is given twice",
                    i + 1,
                    keys.len()
                )));
            }
            out.push((id, Aes256Gcm::new(key.into())));
        }
        let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(b"elements keyring derive"), &keys[0]);
        Ok(Keyring {
            keys: out,
            derive_prk: prk.into(),
        })
    }

    /// Parses the value of `ELEMENTS_MASTER_KEY`: one or more comma-separated
    /// standard-base64 32-byte keys, the encrypting one first. Whitespace
    /// around each key is ignored. Errors say which key is wrong and why,
    /// never what it is.
    pub fn parse(s: &str) -> Result<Keyring, StoreError> {
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.iter().all(|p| p.is_empty()) {
            return Err(StoreError::Key(format!(
                "{MASTER_KEY_ENV} is empty; expected one or more comma-separated \
                 base64-encoded 32-byte keys"
            )));
        }
        let n = parts.len();
        let mut keys = Vec::with_capacity(n);
        for (i, part) in parts.iter().enumerate() {
            let which = if n == 1 {
                MASTER_KEY_ENV.to_string()
            } else {
                format!("key {} of {n} in {MASTER_KEY_ENV}", i + 1)
            };
            if part.is_empty() {
                return Err(StoreError::Key(format!("{which} is empty")));
            }
            let bytes = STANDARD.decode(part).map_err(|_| {
                StoreError::Key(format!(
                    "{which} is not valid standard base64 (A-Z, a-z, 0-9, +, / with = padding)"
                ))
            })?;
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                StoreError::Key(format!(
                    "{which} decodes to {} bytes; an AES-256 key is 32 bytes",
                    bytes.len()
                ))
            })?;
            keys.push(key);
        }
        Keyring::new(keys)
    }

    /// A new random key from the operating system's generator.
    pub fn generate_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut key)
            .unwrap_or_else(|_| rand::rng().fill_bytes(&mut key));
        key
    }

    /// A key in the form [`Keyring::parse`] reads (standard base64).
    pub fn encode_key(key: &[u8; 32]) -> String {
        STANDARD.encode(key)
    }

    /// A 32-byte key for another purpose, derived from the encrypting key
    /// with HKDF-SHA256 and `label` as the info: the same master key gives
    /// the same value in every process, distinct labels give unrelated
    /// values, and none reveals the master key.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let hk = hkdf::Hkdf::<Sha256>::from_prk(&self.derive_prk).expect("a 32-byte PRK is valid");
        let mut out = [0u8; 32];
        hk.expand(label.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 length");
        out
    }

    /// The id of the key that encrypts.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The ids of every key, the encrypting one first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Encrypts `plaintext` with the current key and a fresh random nonce,
    /// binding it to `aad`.
    pub fn encrypt(&self, aad: &str, plaintext: &[u8]) -> String {
        let (id, cipher) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            // Only fails for plaintexts longer than 64 GiB.
            .expect("AES-GCM encryption failed");
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        format!("{VERSION}.{id}.{}", STANDARD.encode(blob))
    }

    /// Decrypts a value made by [`Keyring::encrypt`] with the same `aad`.
    /// Fails with [`StoreError::Decrypt`] (naming `aad` as what, never a
    /// value) on an unknown key id, a malformed value, or a bad tag (wrong
    /// key, wrong associated data, tampering).
    pub fn decrypt(&self, aad: &str, stored: &str) -> Result<Vec<u8>, StoreError> {
        let fail = |reason: String| StoreError::Decrypt {
            what: aad.to_owned(),
            reason,
        };
        let mut parts = stored.splitn(3, '.');
        let (Some(version), Some(id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(fail("not in the v1.<key id>.<data> format".into()));
        };
        if version != VERSION {
            return Err(fail("unknown encryption format version".into()));
        }
        let Some((_, cipher)) = self.keys.iter().find(|(k, _)| k == id) else {
            let known: Vec<&str> = self.key_ids().collect();
            let id = if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                id
            } else {
                "(malformed)"
            };
            return Err(fail(format!(
                "encrypted with key id {id}, which is not in the keyring (has {}); \
                 was {MASTER_KEY_ENV} changed?",
                known.join(", ")
            )));
        };
        let blob = STANDARD
            .decode(body)
            .map_err(|_| fail("the ciphertext is not valid base64".into()))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(fail("the ciphertext is truncated".into()));
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| {
                fail(format!(
                    "authentication failed with key id {id} (the wrong key, a value \
                     moved from another row or column, or tampering)"
                ))
            })
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

/// The first 8 hex digits of the SHA-256 of `key`.
fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::digest(key);
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[[u8; 32]]) -> Keyring {
        Keyring::new(keys.to_vec()).unwrap()
    }

    #[test]
    fn roundtrip() {
        let k = ring(&[Keyring::generate_key()]);
        let stored = k.encrypt("instance:1:access_token", b"tok-123");
        assert!(stored.starts_with(&format!("v1.{}.", k.current_key_id())));
        assert!(!stored.contains("tok-123"));
        assert_eq!(
            k.decrypt("instance:1:access_token", &stored).unwrap(),
            b"tok-123"
        );
        // Fresh nonce each time.
        assert_ne!(stored, k.encrypt("instance:1:access_token", b"tok-123"));
        // Empty plaintext works too.
        let empty = k.encrypt("a", b"");
        assert_eq!(k.decrypt("a", &empty).unwrap(), b"");
    }

    #[test]
    fn aad_mismatch_fails() {
        let k = ring(&[Keyring::generate_key()]);
        let stored = k.encrypt("instance:1:access_token", b"tok");
        for aad in ["instance:2:access_token", "instance:1:refresh_token", ""] {
            match k.decrypt(aad, &stored) {
                Err(StoreError::Decrypt { what, reason }) => {
                    assert_eq!(what, aad);
                    assert!(reason.contains("authentication failed"), "{reason}");
                }
                other => panic!("expected a Decrypt error, got {other:?}"),
            }
        }
    }

    #[test]
    fn rotation() {
        let old = Keyring::generate_key();
        let new = Keyring::generate_key();
        let before = ring(&[old]);
        let stored_old = before.encrypt("x", b"secret");

        let after = ring(&[new, old]);
        assert_eq!(after.current_key_id(), key_id(&new));
        assert_eq!(after.decrypt("x", &stored_old).unwrap(), b"secret");
        let stored_new = after.encrypt("x", b"secret");
        assert!(stored_new.starts_with(&format!("v1.{}.", key_id(&new))));
        assert_eq!(after.decrypt("x", &stored_new).unwrap(), b"secret");
        // The old keyring alone cannot read what the new key wrote.
        assert!(matches!(
            before.decrypt("x", &stored_new),
            Err(StoreError::Decrypt { .. })
        ));
    }

    #[test]
    fn wrong_key_fails_clearly() {
        let a = ring(&[Keyring::generate_key()]);
        let b = ring(&[Keyring::generate_key()]);
        let stored = a.encrypt("instance:7:configuration", b"{\"k\":\"v\"}");
        let err = b.decrypt("instance:7:configuration", &stored).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("instance:7:configuration"), "{msg}");
        assert!(msg.contains(a.current_key_id()), "{msg}");
        assert!(msg.contains("not in the keyring"), "{msg}");
        assert!(!msg.contains("\"v\""), "{msg}");

        // Same key id, tampered body: a tag failure.
        let (prefix, body) = stored.rsplit_once('.').unwrap();
        let mut blob = STANDARD.decode(body).unwrap();
        blob[NONCE_LEN] ^= 1;
        let tampered = format!("{prefix}.{}", STANDARD.encode(blob));
        let err = a
            .decrypt("instance:7:configuration", &tampered)
            .unwrap_err();
        assert!(err.to_string().contains("authentication failed"), "{err}");

        for junk in ["", "v1", "v2.abc.def", "v1.zz.???", "plaintext"] {
            assert!(matches!(
                a.decrypt("w", junk),
                Err(StoreError::Decrypt { .. })
            ));
        }
    }

    #[test]
    fn parse_keys() {
        let k1 = Keyring::generate_key();
        let k2 = Keyring::generate_key();
        let s = format!(
            " {} , {}",
            Keyring::encode_key(&k1),
            Keyring::encode_key(&k2)
        );
        let ring = Keyring::parse(&s).unwrap();
        assert_eq!(ring.current_key_id(), key_id(&k1));
        assert_eq!(ring.key_ids().count(), 2);

        let dbg = format!("{ring:?}");
        assert!(dbg.contains(&key_id(&k1)));
        assert!(!dbg.contains(&Keyring::encode_key(&k1)));

        let short = STANDARD.encode([7u8; 16]);
        let err = Keyring::parse(&short).unwrap_err().to_string();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(!err.contains(&short), "{err}");

        let err = Keyring::parse(&format!("{},not*base64", Keyring::encode_key(&k1)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("key 2 of 2"), "{err}");
        assert!(err.contains("base64"), "{err}");
        assert!(!err.contains("not*base64"), "{err}");

        assert!(Keyring::parse("").is_err());
        assert!(Keyring::parse(&format!("{},", Keyring::encode_key(&k1))).is_err());
        assert!(Keyring::new(vec![]).is_err());
        assert!(Keyring::new(vec![k1, k1]).is_err());
    }
}
