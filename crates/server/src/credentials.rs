//! Credential kinds on the server: what `POST /instances` takes in
//! `providerData` for each kind ([`provision`]), and the answer of
//! `GET /instances/{id}/credentials` ([`respond`]). How a credential is
//! applied is core's [`elements_core::apply_credential`] /
//! [`elements_core::oauth1_authorization`]; renewal is tokens.rs.
//!
//! The credentials answer, for every kind:
//!
//! ```json
//! { "instanceId": 7, "kind": "apikey",
//!   "headers": { "X-Api-Key": "..." }, "query": {} }
//! ```
//!
//! The OAuth 2.0 kinds keep the older fields too (`accessToken`,
//! `tokenType`, `expiresAt`, `expiresIn`), refreshed before expiry. An
//! `oauth1` instance answers its `consumerKey`, `token` and
//! `signatureMethod` (never the secrets); with `?method=GET&url=https://...`
//! it answers `headers.Authorization`, the signed `OAuth ...` header valid
//! for exactly that request.

use axum::response::Response;
use elements_core::{
    apply_credential, lenient_seconds, oauth1_authorization, oauth1_consumer, AppliedCredential,
    Authentication, CredentialError, Element, OAuth1Request, Secret,
};
use elements_store::{Instance, Tokens};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::tokens::now_seconds;
use crate::wire::ProviderData;
use crate::AppState;

/// Ten years: a longer `providerData.expires_in` is refused.
const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

/// How a new instance gets its provider credential.
pub enum Provision {
    /// Exchange this authorization code (and PKCE verifier).
    Code(Secret, Option<Secret>),
    /// Store these tokens as given.
    Tokens(Tokens),
    /// Obtain a token with the client credentials grant.
    ClientCredentials,
    /// Nothing to obtain: the credential is in the configuration.
    Configuration,
}

/// `providerData.expires_in` in seconds (`None` when absent or null); a
/// 400 for anything but a whole number of seconds from 0 to ten years, as
/// a number or a numeric string. Checked wherever it is given, used or not
/// (the API description allows nothing else).
pub fn expires_in(data: &ProviderData) -> Result<Option<i64>, ApiError> {
    match &data.expires_in {
        None | Some(Value::Null) => Ok(None),
        Some(v) => lenient_seconds(v)
            .filter(|s| (0..=MAX_EXPIRES_IN).contains(s))
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`providerData.expires_in` must be a whole number of seconds from 0 to {MAX_EXPIRES_IN}"
                ))
            }),
    }
}

fn nonempty(s: &Option<Secret>) -> bool {
    s.as_ref().is_some_and(|s| !s.expose().is_empty())
}

/// What `providerData` means for the element's credential kind; a 400
/// naming the problem when it does not fit the kind.
pub fn provision(
    state: &AppState,
    element: &dyn Element,
    data: ProviderData,
) -> Result<Provision, ApiError> {
    let kind = element.spec().authentication;
    let key = element.key();
    expires_in(&data)?;
    let oauth2_fields = [
        ("code", nonempty(&data.code)),
        ("access_token", nonempty(&data.access_token)),
        ("refresh_token", nonempty(&data.refresh_token)),
    ];
    let oauth1_fields = [
        ("oauth_token", nonempty(&data.oauth_token)),
        ("oauth_token_secret", nonempty(&data.oauth_token_secret)),
    ];
    let refuse = |fields: &[(&str, bool)], why: &str| -> Result<(), ApiError> {
        match fields.iter().find(|(_, given)| *given) {
            Some((name, _)) => Err(ApiError::BadRequest(format!(
                "element `{key}` uses `{}` credentials: `providerData.{name}` is not accepted ({why})",
                kind.as_str()
            ))),
            None => Ok(()),
        }
    };
    match kind {
        Authentication::Oauth2 => {
            refuse(&oauth1_fields, "give `code` or `access_token`")?;
            oauth2_provision(state, data)
        }
        Authentication::Oauth2ClientCredentials => {
            refuse(&oauth2_fields, "the server obtains the token itself")?;
            refuse(&oauth1_fields, "the server obtains the token itself")?;
            Ok(Provision::ClientCredentials)
        }
        Authentication::Oauth1 => {
            refuse(
                &oauth2_fields,
                "give `oauth_token` and `oauth_token_secret`",
            )?;
            let missing: Vec<&str> = oauth1_fields
                .iter()
                .filter(|(_, given)| !given)
                .map(|(name, _)| *name)
                .collect();
            if !missing.is_empty() {
                return Err(ApiError::BadRequest(format!(
                    "`providerData` must contain `oauth_token` and `oauth_token_secret` \
                     (missing: {})",
                    missing.join(", ")
                )));
            }
            // The token secret is kept in the refresh-token slot, sealed
            // like every token; with no expiry, nothing ever "refreshes" it.
            Ok(Provision::Tokens(Tokens {
                access_token: data.oauth_token,
                refresh_token: data.oauth_token_secret,
                token_type: None,
                expires_at: None,
            }))
        }
        Authentication::Apikey | Authentication::Basic | Authentication::Custom => {
            let given = oauth2_fields.iter().chain(&oauth1_fields).find(|(_, g)| *g);
            match given {
                Some((name, _)) => Err(ApiError::BadRequest(format!(
                    "element `{key}` does not use OAuth: `providerData.{name}` is not accepted \
                     (its `{}` credential is in the configuration)",
                    kind.as_str()
                ))),
                None => Ok(Provision::Configuration),
            }
        }
    }
}

/// `providerData` of an authorization-code element, as before kinds.
fn oauth2_provision(state: &AppState, data: ProviderData) -> Result<Provision, ApiError> {
    let expires_in = expires_in(&data)?;
    if let Some(code) = data.code.filter(|c| !c.expose().is_empty()) {
        return Ok(Provision::Code(code, data.code_verifier));
    }
    let Some(access_token) = data.access_token.filter(|t| !t.expose().is_empty()) else {
        return Err(ApiError::BadRequest(
            "`providerData` must contain `code` (to exchange) or `access_token`".into(),
        ));
    };
    Ok(Provision::Tokens(Tokens {
        access_token: Some(access_token),
        refresh_token: data.refresh_token.filter(|t| !t.expose().is_empty()),
        token_type: data.token_type,
        expires_at: Some(state.tokens.policy().expires_at(now_seconds(), expires_in)),
    }))
}

fn credential_error(e: CredentialError) -> ApiError {
    match e {
        // The instance was valid when created: its element changed since.
        CredentialError::Missing(m) => ApiError::Conflict(format!(
            "the instance cannot be used: {m} (its element now needs it)"
        )),
        other => ApiError::Conflict(other.to_string()),
    }
}

fn object(pairs: &[(String, Secret)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.expose())))
            .collect(),
    )
}

fn put_applied(body: &mut Map<String, Value>, applied: &AppliedCredential) {
    body.insert("headers".into(), object(&applied.headers));
    body.insert("query".into(), object(&applied.query));
}

/// The answer of `GET /instances/{id}/credentials` for an enabled instance
/// the caller may read. `pairs` is the query string: only `method` and
/// `url` (together; `oauth1` only) are taken.
pub async fn respond(
    state: &AppState,
    instance: crate::cache::SharedInstance,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let (mut method, mut url) = (None, None);
    for (name, value) in pairs {
        match name.as_str() {
            "method" => method = Some(value),
            "url" => url = Some(value),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{}` (expected `method` and `url`)",
                    name.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    let id = instance.id;
    let element =
        crate::private_elements::lookup(state, instance.organization_id, &instance.element_key)
            .await
            .ok()
            .ok_or_else(|| {
                ApiError::Conflict(format!(
                    "element `{}` of instance {id} is not in this server's catalog",
                    instance.element_key
                ))
            })?;
    let spec = element.spec();
    let kind = spec.authentication;
    if kind != Authentication::Oauth1 && (method.is_some() || url.is_some()) {
        return Err(ApiError::BadRequest(format!(
            "`method` and `url` are only taken for `oauth1` elements (`{}` is `{}`)",
            spec.key,
            kind.as_str()
        )));
    }
    if kind.holds_tokens() && instance.tokens.access_token.is_none() {
        return Err(ApiError::BadRequest(format!(
            "instance {id} has no OAuth tokens (element `{}`)",
            instance.element_key
        )));
    }
    match kind {
        Authentication::Oauth2 | Authentication::Oauth2ClientCredentials => {
            let instance = state.tokens.fresh_shared(instance).await?;
            let now = now_seconds();
            let access = instance.tokens.access_token.as_ref().ok_or_else(|| {
                ApiError::Internal("refreshed instance has no access token".into())
            })?;
            let applied = instance
                .applied(&element, || {
                    apply_credential(spec, &instance.configuration, Some(access))
                })
                .map_err(credential_error)?;
            let expires_at = instance.tokens.expires_at;
            Ok(crate::headers::json_no_store(&Answer {
                instance_id: id,
                access_token: Some(access.expose()),
                token_type: Some(instance.tokens.token_type.as_deref().unwrap_or("bearer")),
                expires_at: expires_at.map(|at| crate::wire::rfc3339(at * 1000)),
                expires_in: expires_at.map(|at| (at - now).max(0)),
                kind: kind.as_str(),
                headers: Pairs(&applied.headers),
                query: Pairs(&applied.query),
            }))
        }
        Authentication::Oauth1 => {
            let mut body = Map::new();
            body.insert("instanceId".into(), Value::from(id));
            body.insert("kind".into(), Value::from(kind.as_str()));
            oauth1(&mut body, &instance, method, url)?;
            Ok(crate::headers::json_no_store(&body))
        }
        Authentication::Apikey | Authentication::Basic | Authentication::Custom => {
            let applied = instance
                .applied(&element, || {
                    apply_credential(spec, &instance.configuration, None)
                })
                .map_err(credential_error)?;
            Ok(crate::headers::json_no_store(&Answer {
                instance_id: id,
                access_token: None,
                token_type: None,
                expires_at: None,
                expires_in: None,
                kind: kind.as_str(),
                headers: Pairs(&applied.headers),
                query: Pairs(&applied.query),
            }))
        }
    }
}

/// The credentials answer of the OAuth 2.0 and configuration kinds,
/// serialized straight from the instance (no intermediate JSON map: this
/// is the hot path of issue 19).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer<'a> {
    instance_id: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<i64>,
    kind: &'static str,
    headers: Pairs<'a>,
    query: Pairs<'a>,
}

/// Name/value pairs as a JSON object; a name given twice keeps its last
/// value, as a map would.
struct Pairs<'a>(&'a [(String, Secret)]);

impl serde::Serialize for Pairs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            if self.0[i + 1..].iter().any(|(later, _)| later == name) {
                continue;
            }
            map.serialize_entry(name, value.expose())?;
        }
        map.end()
    }
}

/// The `oauth1` answer: the public parts, or one signed request's header.
fn oauth1(
    body: &mut Map<String, Value>,
    instance: &Instance,
    method: Option<String>,
    url: Option<String>,
) -> Result<(), ApiError> {
    let (consumer_key, consumer_secret) = oauth1_consumer(&instance.configuration)
        .map_err(|m| credential_error(CredentialError::Missing(m)))?;
    let token = instance
        .tokens
        .access_token
        .as_ref()
        .map(Secret::expose)
        .unwrap_or_default();
    body.insert("consumerKey".into(), Value::from(consumer_key));
    body.insert("token".into(), Value::from(token));
    body.insert("signatureMethod".into(), Value::from("HMAC-SHA1"));
    let (method, url) = match (method, url) {
        (None, None) => {
            body.insert(
                "signing".into(),
                Value::from(
                    "every request must be signed: ask again with ?method=...&url=... \
                     for the Authorization header of one request",
                ),
            );
            return Ok(());
        }
        (Some(m), Some(u)) => (m, u),
        (m, _) => {
            return Err(ApiError::BadRequest(format!(
                "`method` and `url` go together: `{}` is missing",
                if m.is_none() { "method" } else { "url" }
            )))
        }
    };
    let known = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];
    let upper = method.to_ascii_uppercase();
    if !known.contains(&upper.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "`method` must be one of {}",
            known.join(", ")
        )));
    }
    if url.len() > 8192 || !url.starts_with("https://") && !url.starts_with("http://") {
        return Err(ApiError::BadRequest(
            "`url` must be an absolute http(s) URL of at most 8192 bytes".into(),
        ));
    }
    let token_secret = instance.tokens.refresh_token.clone().unwrap_or_default();
    let nonce = crate::pkce::random_token(16);
    let authorization = oauth1_authorization(&OAuth1Request {
        method: &upper,
        url: &url,
        params: &[],
        consumer_key,
        consumer_secret: &consumer_secret,
        token: Some(token),
        token_secret: Some(&token_secret),
        callback: None,
        verifier: None,
        nonce: &nonce,
        timestamp: now_seconds(),
        version: true,
    })?;
    let applied = AppliedCredential {
        headers: vec![("Authorization".into(), authorization)],
        query: Vec::new(),
    };
    put_applied(body, &applied);
    Ok(())
}

// ---- leftovers (issue 13.2.3, 13.2.5): the other keys of `providerData` ----

/// The keys of `providerData` that are not its named fields, with their
/// values. `Debug` names the keys only (a value may be a secret).
#[derive(Default, Clone)]
pub struct ExtraKeys(pub std::collections::BTreeMap<String, Value>);

impl std::fmt::Debug for ExtraKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// `providerData` of `POST /instances`: the named fields as the derived
/// `Deserialize` reads them (duplicate keys refused, an array read by
/// position, errors naming the field), and every other key kept in
/// [`ProviderData::extra`]. (No `#[serde(flatten)]`: it refuses arrays.)
pub fn provider_data<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<ProviderData>, D::Error> {
    use serde::de::{Error as _, MapAccess, SeqAccess, Visitor};

    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Option<ProviderData>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("struct ProviderData")
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_any(V)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            // As the derived implementation: fields by position.
            let d = serde::de::value::SeqAccessDeserializer::new(seq);
            serde::Deserialize::deserialize(d).map(Some)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut data = ProviderData::default();
            let mut seen = std::collections::BTreeSet::new();
            while let Some(key) = map.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(A::Error::custom(format_args!("duplicate field `{key}`")));
                }
                match key.as_str() {
                    "code" => data.code = map.next_value()?,
                    "code_verifier" => data.code_verifier = map.next_value()?,
                    "access_token" => data.access_token = map.next_value()?,
                    "refresh_token" => data.refresh_token = map.next_value()?,
                    "expires_in" => data.expires_in = map.next_value()?,
                    "token_type" => data.token_type = map.next_value()?,
                    "apikey" => data.apikey = map.next_value()?,
                    "oauth_token" => data.oauth_token = map.next_value()?,
                    "oauth_token_secret" => data.oauth_token_secret = map.next_value()?,
                    _ => {
                        let value: Value = map.next_value()?;
                        data.extra.0.insert(key, value);
                    }
                }
            }
            Ok(Some(data))
        }
    }
    deserializer.deserialize_option(V)
}

/// The configuration values `providerData` brings for `element`: the
/// callback values it captures (`callback_capture`, e.g. QuickBooks'
/// `realmId`), and, when tokens are given, the token-response fields it
/// keeps (`[oauth.token_response] keep`, e.g. Salesforce's `instance_url`),
/// read from the other keys of `providerData`. A captured value that breaks
/// its entry's rules is a 400 naming it; a kept field that does is skipped
/// (as from a provider's answer).
pub fn provider_data_values(
    element: &dyn Element,
    data: &ProviderData,
) -> Result<Vec<(String, String)>, ApiError> {
    let spec = element.spec();
    let Some(oauth) = spec.oauth.as_ref() else {
        return Ok(Vec::new());
    };
    if data.extra.0.is_empty()
        || (oauth.callback_capture.is_empty() && oauth.token_response.keep.is_empty())
    {
        return Ok(Vec::new());
    }
    let text = |k: &str| match data.extra.0.get(k)? {
        Value::String(s) => Some(s.clone()),
        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
        _ => None,
    };
    let mut values = spec.captured_values(&text).map_err(ApiError::from)?;
    if !oauth.token_response.keep.is_empty() && nonempty(&data.access_token) {
        let body = serde_json::to_vec(&data.extra.0).unwrap_or_default();
        values.extend(element.kept_values(&elements_core::ProviderResponse { status: 200, body }));
    }
    Ok(values)
}
