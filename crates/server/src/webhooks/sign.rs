//! Standard Webhooks signing: `whsec_<base64>` secrets and the `v1,`
//! signature of `{id}.{timestamp}.{body}` with HMAC-SHA256.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use elements_core::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a signing secret.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes)))
}

/// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256>` of
/// `{id}.{timestamp}.{body}`, keyed with the secret's base64-decoded part
/// after `whsec_`. `None` if the secret is malformed.
pub fn signature(secret: &Secret, id: &str, timestamp: i64, body: &str) -> Option<String> {
    let key = STANDARD
        .decode(secret.expose().strip_prefix(SECRET_PREFIX)?)
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    Some(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_specs_example() {
        // From the Standard Webhooks specification's example.
        let secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned());
        let body = r#"{"test": 2432232314}"#;
        let sig = signature(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn secrets_are_fresh_and_shaped() {
        let a = new_secret();
        assert!(a.expose().starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&a.expose()[6..]).unwrap().len(), 32);
        assert_ne!(a.expose(), new_secret().expose());
    }
}
