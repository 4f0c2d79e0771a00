//! The provider's state: registered clients, token families, codes,
//! refresh and access tokens, counters, and the grant logic over them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use axum::response::Response;
use rand::Rng as _;
use serde_json::{json, Value};

use super::faults::Faults;
use super::routes::{oauth_error, param, token_response, Form, OAuthError};
use super::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_EXPIRES_IN};

pub(super) struct Shared {
    pub(super) inner: Mutex<Inner>,
    pub(super) token_calls: AtomicU64,
    pub(super) refresh_calls: AtomicU64,
    pub(super) code_exchanges: AtomicU64,
    pub(super) revoked_families: AtomicU64,
    pub(super) revocation_calls: AtomicU64,
    pub(super) issued_access_tokens: AtomicU64,
    /// `grant_type=client_credentials` requests (any outcome).
    pub(super) client_credentials_grants: AtomicU64,
}

pub(super) struct Inner {
    pub(super) clients: HashMap<String, String>,
    pub(super) expires_in: Option<Value>,
    pub(super) rotate_refresh_tokens: bool,
    pub(super) omit_refresh_token: bool,
    pub(super) reuse_detection: bool,
    pub(super) faults: Faults,
    /// The `token_type` sent (`None`: omitted).
    pub(super) token_type: Option<Value>,
    /// Further fields of every token response (`instance_url`, ...).
    pub(super) token_extra: serde_json::Map<String, Value>,
    /// Exact access tokens to issue next, in order (hostile-answer tests).
    pub(super) next_access_tokens: std::collections::VecDeque<String>,
    pub(super) next_family: u64,
    pub(super) families: HashMap<u64, Family>,
    pub(super) codes: HashMap<String, AuthCode>,
    pub(super) refresh_tokens: HashMap<String, RefreshToken>,
    /// access token -> family
    pub(super) access_tokens: HashMap<String, u64>,
}

pub(super) struct Family {
    pub(super) client_id: String,
    pub(super) revoked: bool,
}

pub(super) struct AuthCode {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    /// The family issued when the code was redeemed.
    pub(super) redeemed: Option<u64>,
    /// The PKCE `code_challenge` (S256) of the consent page's request; the
    /// exchange must then carry the matching `code_verifier`.
    pub(super) code_challenge: Option<String>,
}

#[derive(Clone, Copy)]
pub(super) struct RefreshToken {
    pub(super) family: u64,
    pub(super) used: bool,
}

impl Shared {
    pub(super) fn new() -> Shared {
        let mut clients = HashMap::new();
        clients.insert(
            DEFAULT_CLIENT_ID.to_string(),
            DEFAULT_CLIENT_SECRET.to_string(),
        );
        Shared {
            inner: Mutex::new(Inner {
                clients,
                expires_in: Some(json!(DEFAULT_EXPIRES_IN)),
                rotate_refresh_tokens: true,
                omit_refresh_token: false,
                reuse_detection: true,
                faults: Faults::default(),
                token_type: Some(json!("bearer")),
                token_extra: serde_json::Map::new(),
                next_access_tokens: std::collections::VecDeque::new(),
                next_family: 1,
                families: HashMap::new(),
                codes: HashMap::new(),
                refresh_tokens: HashMap::new(),
                access_tokens: HashMap::new(),
            }),
            token_calls: AtomicU64::new(0),
            refresh_calls: AtomicU64::new(0),
            code_exchanges: AtomicU64::new(0),
            revoked_families: AtomicU64::new(0),
            revocation_calls: AtomicU64::new(0),
            issued_access_tokens: AtomicU64::new(0),
            client_credentials_grants: AtomicU64::new(0),
        }
    }

    /// Never held across an `.await`; a poisoned lock (a panicking test
    /// thread) is recovered rather than cascading.
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn mint_access(&self, inner: &mut Inner, family: u64) -> String {
        let token = inner
            .next_access_tokens
            .pop_front()
            .unwrap_or_else(|| random_token("at-"));
        inner.access_tokens.insert(token.clone(), family);
        self.issued_access_tokens.fetch_add(1, Ordering::SeqCst);
        token
    }

    pub(super) fn revoke_family(&self, inner: &mut Inner, family: u64) {
        if let Some(f) = inner.families.get_mut(&family) {
            if !f.revoked {
                f.revoked = true;
                self.revoked_families.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    pub(super) fn exchange_code(&self, form: &Form, client_id: &str) -> Response {
        let Some(code) = param(form, "code") else {
            return oauth_error("invalid_request", "code is required");
        };
        let Some(redirect_uri) = param(form, "redirect_uri") else {
            return oauth_error("invalid_request", "redirect_uri is required");
        };
        let mut inner = self.lock();
        let Some(record) = inner.codes.get(code) else {
            return oauth_error("invalid_grant", "unknown authorization code");
        };
        if record.client_id != client_id {
            return oauth_error(
                "invalid_grant",
                "authorization code was issued to another client",
            );
        }
        if let Some(family) = record.redeemed {
            if inner.reuse_detection {
                self.revoke_family(&mut inner, family);
                return oauth_error(
                    "invalid_grant",
                    "authorization code already used; tokens issued from it are revoked",
                );
            }
            return oauth_error("invalid_grant", "authorization code already used");
        }
        if let Some(challenge) = &record.code_challenge {
            let ok =
                param(form, "code_verifier").is_some_and(|v| super::consent::s256(v) == *challenge);
            if !ok {
                return oauth_error(
                    "invalid_grant",
                    "code_verifier does not match the code_challenge",
                );
            }
        }
        if record.redirect_uri != redirect_uri {
            return oauth_error(
                "invalid_grant",
                "redirect_uri does not match the authorization request",
            );
        }
        let family = inner.new_family(client_id);
        if let Some(record) = inner.codes.get_mut(code) {
            record.redeemed = Some(family);
        }
        let access = self.mint_access(&mut inner, family);
        let refresh = inner.mint_refresh(family);
        token_response(&inner, &access, Some(&refresh))
    }

    /// The client credentials grant (RFC 6749 §4.4): an access token of a
    /// new family, no refresh token.
    pub(super) fn client_credentials_grant(&self, client_id: &str) -> Response {
        let mut inner = self.lock();
        let family = inner.new_family(client_id);
        let access = self.mint_access(&mut inner, family);
        token_response(&inner, &access, None)
    }

    pub(super) fn refresh(&self, form: &Form, client_id: &str) -> Response {
        let Some(presented) = param(form, "refresh_token") else {
            return oauth_error("invalid_request", "refresh_token is required");
        };
        let mut inner = self.lock();
        let Some(record) = inner.refresh_tokens.get(presented).copied() else {
            return oauth_error("invalid_grant", "unknown refresh token");
        };
        let Some(family) = inner.families.get(&record.family) else {
            return oauth_error("invalid_grant", "unknown refresh token");
        };
        if family.revoked {
            return oauth_error("invalid_grant", "refresh token has been revoked");
        }
        if family.client_id != client_id {
            return oauth_error(
                "invalid_grant",
                "refresh token was issued to another client",
            );
        }
        if record.used {
            if inner.reuse_detection {
                self.revoke_family(&mut inner, record.family);
                return oauth_error(
                    "invalid_grant",
                    "refresh token reuse detected; token family revoked",
                );
            }
            return oauth_error("invalid_grant", "refresh token already used");
        }
        let access = self.mint_access(&mut inner, record.family);
        let refresh = if inner.omit_refresh_token {
            None
        } else if inner.rotate_refresh_tokens {
            if let Some(old) = inner.refresh_tokens.get_mut(presented) {
                old.used = true;
            }
            Some(inner.mint_refresh(record.family))
        } else {
            Some(presented.to_string())
        };
        token_response(&inner, &access, refresh.as_deref())
    }
}

impl Inner {
    pub(super) fn new_family(&mut self, client_id: &str) -> u64 {
        let id = self.next_family;
        self.next_family += 1;
        self.families.insert(
            id,
            Family {
                client_id: client_id.to_string(),
                revoked: false,
            },
        );
        id
    }

    pub(super) fn mint_refresh(&mut self, family: u64) -> String {
        let token = random_token("rt-");
        self.refresh_tokens.insert(
            token.clone(),
            RefreshToken {
                family,
                used: false,
            },
        );
        token
    }

    pub(super) fn family_revoked(&self, family: u64) -> bool {
        self.families.get(&family).is_none_or(|f| f.revoked)
    }

    pub(super) fn access_token_valid(&self, token: &str) -> bool {
        self.access_tokens
            .get(token)
            .is_some_and(|&family| !self.family_revoked(family))
    }

    /// Authenticates a confidential client (token endpoint).
    pub(super) fn authenticate(
        &self,
        client_id: &str,
        secret: Option<&str>,
    ) -> Result<(), OAuthError> {
        let Some(expected) = self.clients.get(client_id) else {
            return Err(OAuthError::new("invalid_client", "unknown client_id"));
        };
        match secret {
            None => Err(OAuthError::new(
                "invalid_client",
                "client_secret is required",
            )),
            Some(secret) if secret == expected => Ok(()),
            Some(_) => Err(OAuthError::new(
                "invalid_client",
                "client_secret does not match",
            )),
        }
    }
}

/// `prefix` followed by 32 random bytes in lowercase hex.
pub(super) fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    let mut out = String::with_capacity(prefix.len() + 64);
    out.push_str(prefix);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
