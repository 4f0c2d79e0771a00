//! The `Authorization` header: `User <secret>, Organization <secret>`, in
//! either order, optionally with `Element <instance token>`.
//!
//! Every failure is the same 401 with the same message, whatever was wrong,
//! so a caller learns nothing about which part failed.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use elements_core::Secret;
use elements_store::{hash_secret, Principal, SecretHash};

use crate::error::ApiError;
use crate::AppState;

/// The parts of an `Authorization` header.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `User <secret>`.
    pub user: Option<Secret>,
    /// `Organization <secret>`.
    pub organization: Option<Secret>,
    /// `Element <token>`.
    pub element: Option<Secret>,
}

/// The longest header we look at.
const MAX_HEADER: usize = 1024;

/// Parses the header value. `None` for anything malformed: an unknown or
/// repeated scheme, an empty or oversized value, white space or control
/// characters inside a secret.
pub fn parse_authorization(header: &str) -> Option<Credentials> {
    let parts = parse_parts(header)?;
    Some(Credentials {
        user: parts.user.map(Secret::new),
        organization: parts.organization.map(Secret::new),
        element: parts.element.map(Secret::new),
    })
}

/// [`Credentials`], borrowed from the header: the request paths hash the
/// secrets where they lie, without copying them (issue 19).
#[derive(Default)]
struct HeaderSecrets<'a> {
    user: Option<&'a str>,
    organization: Option<&'a str>,
    element: Option<&'a str>,
}

fn parse_parts(header: &str) -> Option<HeaderSecrets<'_>> {
    if header.len() > MAX_HEADER {
        return None;
    }
    let mut creds = HeaderSecrets::default();
    for part in header.split(',') {
        let (scheme, value) = part.trim().split_once(' ')?;
        let value = value.trim();
        if value.is_empty()
            || value
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == ',')
        {
            return None;
        }
        let slot = match scheme {
            s if s.eq_ignore_ascii_case("user") => &mut creds.user,
            s if s.eq_ignore_ascii_case("organization") => &mut creds.organization,
            s if s.eq_ignore_ascii_case("element") => &mut creds.element,
            _ => return None,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(value);
    }
    Some(creds)
}

fn credentials(parts: &Parts) -> Result<HeaderSecrets<'_>, ApiError> {
    credentials_of(&parts.headers)
}

fn credentials_of(headers: &HeaderMap) -> Result<HeaderSecrets<'_>, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ApiError::Unauthorized);
    };
    let text = value.to_str().map_err(|_| ApiError::Unauthorized)?;
    parse_parts(text).ok_or(ApiError::Unauthorized)
}

/// A caller authenticated as a user of an organization; any `Element` token
/// in the header is kept for routes that want it.
#[derive(Debug, Clone)]
pub struct Account {
    /// Who is calling.
    pub principal: Principal,
}

/// Authenticates `User` + `Organization`.
async fn account(state: &AppState, creds: &HeaderSecrets<'_>) -> Result<Principal, ApiError> {
    let (Some(user), Some(org)) = (creds.user, creds.organization) else {
        return Err(ApiError::Unauthorized);
    };
    let (user, org) = (hash_secret(user), hash_secret(org));
    // cache (issue 19): a known account without a database round trip.
    if let Some(principal) = state.cache.account(&user, &org) {
        return Ok(principal);
    }
    let ticket = state.cache.ticket();
    let principal = state
        .store
        .authenticate(&user, &org)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    state.cache.put_account(ticket, &user, &org, &principal);
    Ok(principal)
}

/// Authenticates `User` + `Organization` from a request's headers.
pub async fn account_from_headers(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    account(state, &credentials_of(headers)?).await
}

/// A caller that may send `User` + `Organization` credentials: `None`
/// without an `Authorization` header, else its organization (bad
/// credentials are refused as by [`Account`]). Reads the header in place
/// (extracting a `HeaderMap` would copy every header: issue 19, the
/// `oauth/url` hot path).
#[derive(Debug, Clone)]
pub struct OptionalAccount(pub Option<Principal>);

impl FromRequestParts<AppState> for OptionalAccount {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if !parts.headers.contains_key(AUTHORIZATION) {
            return Ok(OptionalAccount(None));
        }
        let creds = credentials(parts)?;
        Ok(OptionalAccount(Some(account(state, &creds).await?)))
    }
}

impl FromRequestParts<AppState> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let creds = credentials(parts)?;
        Ok(Account {
            principal: account(state, &creds).await?,
        })
    }
}

/// A caller that is either an account (`User`, `Organization`) or holds an
/// instance token (`Element`), or both (then both must be valid).
#[derive(Debug, Clone)]
pub struct AccountOrInstance {
    /// The account, when `User` and `Organization` were given.
    pub principal: Option<Principal>,
    /// The hash of the instance token, when `Element` was given (all a
    /// route needs: instances are found by it; the token itself is not
    /// copied out of the header).
    pub element_token_hash: Option<SecretHash>,
}

impl FromRequestParts<AppState> for AccountOrInstance {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let creds = credentials(parts)?;
        let principal = if creds.user.is_some() || creds.organization.is_some() {
            Some(account(state, &creds).await?)
        } else {
            None
        };
        if principal.is_none() && creds.element.is_none() {
            return Err(ApiError::Unauthorized);
        }
        Ok(AccountOrInstance {
            principal,
            element_token_hash: creds.element.map(hash_secret),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(header: &str, expected: Option<(&str, &str, Option<&str>)>) {
        let got = parse_authorization(header).map(|c| {
            (
                c.user.map(Secret::into_inner).unwrap_or_default(),
                c.organization.map(Secret::into_inner).unwrap_or_default(),
                c.element.map(Secret::into_inner),
            )
        });
        let expected = expected.map(|(u, o, e)| (u.to_owned(), o.to_owned(), e.map(str::to_owned)));
        assert_eq!(got, expected, "{header:?}");
    }

    #[test]
    fn parses_either_order_and_element() {
        check("User u1, Organization o1", Some(("u1", "o1", None)));
        check("Organization o1, User u1", Some(("u1", "o1", None)));
        check(
            "User u1,Organization o1, Element e+/=",
            Some(("u1", "o1", Some("e+/="))),
        );
        check("Element e", Some(("", "", Some("e"))));
    }

    #[test]
    fn refuses_malformed() {
        check("", None);
        check("User", None);
        check("User , Organization o", None);
        check("User a, User b", None);
        check("Bearer x", None);
        check("User a b, Organization o", None);
        check("User a\u{0}, Organization o", None);
        check(&format!("User {}, Organization o", "a".repeat(2000)), None);
    }
}
