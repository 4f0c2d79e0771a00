//! Credential kinds: how an instance's credential is obtained and renewed
//! ([`Authentication`]) and how it is applied to a provider request
//! ([`CredentialSpec`], [`apply`], [`oauth1_authorization`]).
//!
//! Connect, `GET /instances/{id}/credentials`, the refresher and the API
//! proxy all go through this module; none of them matches on the kind.
//!
//! The `[credential]` table of a catalog file declares the headers, query
//! parameters and HTTP Basic pair to add to every provider request. Their
//! values are templates: `{name}` names a `[[configuration]]` entry (secret
//! entries are allowed: this *is* the credential) and, for the OAuth 2.0
//! kinds, `{access_token}` is the instance's current access token.
//!
//! ```toml
//! [credential]
//! headers = { Authorization = "Bearer {api.key}" }   # or X-Api-Key = "{api.key}"
//! query = { key = "{api.key}", token = "{api.token}" }
//! basic = { username = "{api.key}", password = "X" } # password defaults to ""
//! ```
//!
//! Without a `[credential]` table the OAuth 2.0 kinds send
//! `Authorization: Bearer {access_token}`; `apikey`, `basic` and `custom`
//! elements without one cannot be applied ([`CredentialError::NotDeclared`]).
//! `oauth1` elements sign each request instead ([`oauth1_authorization`]).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
#[cfg(feature = "schema")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha1::Sha1;

use crate::config::{Configuration, MissingConfiguration};
use crate::element::{keys, standard};
use crate::oauth::{OAuthError, ProviderRequest};
use crate::secret::Secret;
use crate::spec::template::{self, FillError};
use crate::spec::{Authentication, ElementSpec};

/// The placeholder that stands for the access token of the OAuth 2.0 kinds.
pub const ACCESS_TOKEN_PLACEHOLDER: &str = "access_token";

/// The `[credential]` table: what to add to a provider request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CredentialSpec {
    /// Headers to add: name -> value template (`Authorization = "Bearer {api.key}"`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Query parameters to add: name -> value template (`api_key = "{api.key}"`).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// HTTP Basic authentication (an `Authorization: Basic ...` header).
    #[serde(default)]
    pub basic: Option<BasicSpec>,
}

/// The `basic` entry of `[credential]`: user name and password templates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct BasicSpec {
    /// The user name (`{api.key}` for providers that take the key as user name).
    pub username: String,
    /// The password; empty by default (Stripe, Chargebee), `X` for Freshdesk.
    #[serde(default)]
    pub password: String,
}

/// The OAuth 1.0a signature method; only HMAC-SHA1 is supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
pub enum SignatureMethod {
    /// HMAC-SHA1 (RFC 5849 §3.4.2).
    #[default]
    #[serde(rename = "HMAC-SHA1")]
    HmacSha1,
}

/// The `[oauth1]` section: OAuth 1.0a endpoints (URL templates like those of
/// `[oauth]`). The consumer key and secret are the configuration values
/// `oauth.api.key` and `oauth.api.secret`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OAuth1Spec {
    /// Where a temporary (request) token is obtained (RFC 5849 §2.1).
    pub request_token_url: String,
    /// Where the user is sent to authorize the request token (§2.2).
    pub authorize_url: String,
    /// Where the authorized request token is exchanged for an access token (§2.3).
    pub access_token_url: String,
    /// The signature method: `HMAC-SHA1` (the default and the only one).
    #[serde(default)]
    pub signature_method: SignatureMethod,
}

/// What to add to one provider request. `Debug` never shows the values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppliedCredential {
    /// Headers, in name order (`Authorization` from `basic` last).
    pub headers: Vec<(String, Secret)>,
    /// Query parameters, in name order.
    pub query: Vec<(String, Secret)>,
}

/// Why a credential could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The element has no `[credential]` table and its kind has no default.
    #[error(
        "element `{0}` does not declare how its credential is applied (no [credential] table)"
    )]
    NotDeclared(String),
    /// The kind signs every request: use [`oauth1_authorization`].
    #[error("element `{0}` signs each request (OAuth 1.0a): give the request's method and URL")]
    SignedPerRequest(String),
    /// The instance has no access token.
    #[error("the instance has no access token")]
    NoAccessToken,
    /// The configuration lacks values the credential needs.
    #[error(transparent)]
    Missing(#[from] MissingConfiguration),
    /// A value cannot be used (control characters in a header, say).
    #[error("invalid credential value for `{0}`: {1}")]
    Invalid(String, String),
}

impl Authentication {
    /// Whether the server obtains and renews the access token itself, with no
    /// refresh token (the client credentials grant).
    pub fn renews_without_refresh_token(self) -> bool {
        self == Authentication::Oauth2ClientCredentials
    }

    /// Whether the instance holds provider tokens (OAuth 2.0 and 1.0a kinds).
    pub fn holds_tokens(self) -> bool {
        self.is_oauth()
    }

    /// Whether `POST /instances` takes tokens or a code in `providerData`.
    pub fn takes_provider_data(self) -> bool {
        matches!(self, Authentication::Oauth2 | Authentication::Oauth1)
    }

    /// Whether `{access_token}` may appear in `[credential]` templates.
    pub(crate) fn has_access_token(self) -> bool {
        matches!(
            self,
            Authentication::Oauth2 | Authentication::Oauth2ClientCredentials
        )
    }
}

/// The default `[credential]` of the OAuth 2.0 kinds.
fn bearer_default() -> &'static CredentialSpec {
    // Built once: this is on every credentials read (issue 19).
    static DEFAULT: std::sync::LazyLock<CredentialSpec> =
        std::sync::LazyLock::new(|| CredentialSpec {
            headers: [(
                "Authorization".to_owned(),
                "Bearer {access_token}".to_owned(),
            )]
            .into(),
            ..CredentialSpec::default()
        });
    &DEFAULT
}

/// The credential of an instance applied to a provider request: the headers
/// and query parameters to add, filled from the configuration (entry
/// defaults apply) and, for the OAuth 2.0 kinds, the access token.
///
/// ```
/// use elements_core::{apply_credential, Configuration, ElementSpec};
///
/// let toml = r#"
/// id = 9004
/// key = "keyed"
/// name = "Keyed"
/// description = "d"
/// image = "elements/provider_keyed.png"
/// hub = "general"
/// authentication = "apikey"
/// existing_account_description = "e"
/// config_description = "c"
///
/// [credential]
/// headers = { X-Api-Key = "{api.key}" }
///
/// [[configuration]]
/// key = "api.key"
/// name = "API key"
/// secret = true
/// "#;
/// let spec = ElementSpec::parse("keyed.toml", toml).unwrap();
/// let config: Configuration = [("api.key", "k-1")].into_iter().collect();
/// let applied = apply_credential(&spec, &config, None).unwrap();
/// assert_eq!(applied.headers[0].0, "X-Api-Key");
/// assert_eq!(applied.headers[0].1.expose(), "k-1");
/// ```
pub fn apply(
    spec: &ElementSpec,
    config: &Configuration,
    access_token: Option<&Secret>,
) -> Result<AppliedCredential, CredentialError> {
    let kind = spec.authentication;
    if kind == Authentication::Oauth1 {
        return Err(CredentialError::SignedPerRequest(spec.key.clone()));
    }
    let credential = match (&spec.credential, kind.has_access_token()) {
        (Some(c), _) => c,
        (None, true) => bearer_default(),
        (None, false) => return Err(CredentialError::NotDeclared(spec.key.clone())),
    };
    if kind.has_access_token() && access_token.is_none() {
        return Err(CredentialError::NoAccessToken);
    }
    let lookup = |name: &str| {
        if name == ACCESS_TOKEN_PLACEHOLDER && kind.has_access_token() {
            return access_token.map(|t| t.expose().to_owned());
        }
        config
            .get_or_default(&spec.configuration, name)
            .map(str::to_owned)
    };
    let mut templates: Vec<&str> = Vec::new();
    templates.extend(credential.headers.values().map(String::as_str));
    templates.extend(credential.query.values().map(String::as_str));
    if let Some(b) = &credential.basic {
        templates.push(&b.username);
        templates.push(&b.password);
    }
    let mut filled = fill(&templates, &lookup)?.into_iter();
    let mut applied = AppliedCredential::default();
    for name in credential.headers.keys() {
        let value = filled.next().unwrap_or_default();
        if value.chars().any(char::is_control) {
            return Err(CredentialError::Invalid(
                name.clone(),
                "a header value must not contain control characters".into(),
            ));
        }
        applied.headers.push((name.clone(), Secret::new(value)));
    }
    for name in credential.query.keys() {
        applied
            .query
            .push((name.clone(), Secret::new(filled.next().unwrap_or_default())));
    }
    if credential.basic.is_some() {
        let username = filled.next().unwrap_or_default();
        let password = filled.next().unwrap_or_default();
        if username.contains(':') || username.chars().any(char::is_control) {
            return Err(CredentialError::Invalid(
                "basic.username".into(),
                "must not contain `:` or control characters".into(),
            ));
        }
        let encoded = BASE64.encode(format!("{username}:{password}"));
        applied.headers.push((
            "Authorization".to_owned(),
            Secret::new(format!("Basic {encoded}")),
        ));
    }
    Ok(applied)
}

/// Fills value templates, reporting every missing name at once.
fn fill(
    templates: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<String>, CredentialError> {
    template::fill_all_checked(
        templates.iter().map(|t| (*t, false)),
        lookup,
        &template::refuse_restricted,
    )
    .map_err(|e| match e {
        FillError::Missing(keys) => CredentialError::Missing(MissingConfiguration { keys }),
        FillError::Invalid { name, reason } => CredentialError::Invalid(name, reason),
        FillError::Syntax(e) => CredentialError::Invalid("template".into(), e.0),
    })
}

/// The client credentials grant request (RFC 6749 §4.4) of an
/// `oauth2_client_credentials` element: `token_url`, the client id and
/// secret (`oauth.api.key`, `oauth.api.secret`) as `client_auth` says,
/// `scope` from `oauth.scope` or `default_scope`, and `token_params`.
/// "Renewing" such a token is the same request again.
pub fn client_credentials_request(
    spec: &ElementSpec,
    config: &Configuration,
) -> Result<ProviderRequest, OAuthError> {
    standard::client_credentials_request(spec, config)
}

// ---------------------------------------------------------------- OAuth 1.0a

/// RFC 3986 unreserved characters stay; everything else is encoded (RFC 5849 §3.6).
const OAUTH1_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn enc(s: &str) -> String {
    utf8_percent_encode(s, OAUTH1_ENCODE).to_string()
}

/// One OAuth 1.0a request to sign (RFC 5849 §3). `Debug` hides the secrets.
#[derive(Debug, Clone)]
pub struct OAuth1Request<'a> {
    /// The HTTP method (`GET`, `POST`, ...), any case.
    pub method: &'a str,
    /// The full request URL; its query parameters are signed too.
    pub url: &'a str,
    /// Further parameters to sign: the request's
    /// `application/x-www-form-urlencoded` body fields.
    pub params: &'a [(String, String)],
    /// The consumer key (client identifier).
    pub consumer_key: &'a str,
    /// The consumer secret.
    pub consumer_secret: &'a Secret,
    /// The token (request token or access token), if any.
    pub token: Option<&'a str>,
    /// The token secret, if any.
    pub token_secret: Option<&'a Secret>,
    /// `oauth_callback` (request token step only).
    pub callback: Option<&'a str>,
    /// `oauth_verifier` (access token step only).
    pub verifier: Option<&'a str>,
    /// A random nonce, unique per timestamp.
    pub nonce: &'a str,
    /// Unix seconds.
    pub timestamp: i64,
    /// Whether to send `oauth_version="1.0"` (optional in RFC 5849; most
    /// providers accept it, some require it).
    pub version: bool,
}

/// The `Authorization: OAuth ...` header value of a request signed with
/// HMAC-SHA1 (RFC 5849 §3.4.2, §3.5.1). Pure: the nonce and timestamp are
/// inputs. An invalid URL is [`OAuthError::InvalidParameter`] naming `url`.
///
/// ```
/// use elements_core::{oauth1_authorization, OAuth1Request, Secret};
///
/// // RFC 5849 §1.2: the printer fetches a photo with its access token.
/// let header = oauth1_authorization(&OAuth1Request {
///     method: "GET",
///     url: "http://photos.example.net/photos?file=vacation.jpg&size=original",
///     params: &[],
///     consumer_key: "dpf43f3p2l4k3l03",
///     consumer_secret: &Secret::new("kd94hf93k423kf44"),
///     token: Some("nnch734d00sl2jdk"),
///     token_secret: Some(&Secret::new("pfkkdhi9sl3r4s00")),
///     callback: None,
///     verifier: None,
///     nonce: "chapoH",
///     timestamp: 137131202,
///     version: false,
/// })
/// .unwrap();
/// assert!(header.expose().contains(r#"oauth_signature="MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D""#));
/// ```
pub fn oauth1_authorization(request: &OAuth1Request<'_>) -> Result<Secret, OAuthError> {
    let (oauth_params, signature) = oauth1_sign(request)?;
    let mut header = String::from("OAuth ");
    let mut all = oauth_params;
    all.push(("oauth_signature".to_owned(), signature));
    all.sort();
    let parts: Vec<String> = all
        .iter()
        .map(|(k, v)| format!("{}=\"{}\"", enc(k), enc(v)))
        .collect();
    header.push_str(&parts.join(", "));
    Ok(Secret::new(header))
}

/// The protocol parameters and the base64 signature of a request.
fn oauth1_sign(r: &OAuth1Request<'_>) -> Result<(Vec<(String, String)>, String), OAuthError> {
    let invalid = |reason: &str| OAuthError::InvalidParameter {
        name: "url".into(),
        reason: reason.into(),
    };
    let url = url::Url::parse(r.url).map_err(|e| invalid(&format!("must be a valid URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("must be an absolute http or https URL"));
    }
    // §3.4.1.2: scheme and host in lower case, the port only when not the default.
    let mut base_uri = format!(
        "{}://{}",
        url.scheme(),
        url.host_str().unwrap_or_default().to_ascii_lowercase()
    );
    if let Some(port) = url.port() {
        base_uri.push_str(&format!(":{port}"));
    }
    base_uri.push_str(url.path());

    let mut oauth_params: Vec<(String, String)> = vec![
        ("oauth_consumer_key".into(), r.consumer_key.to_owned()),
        ("oauth_nonce".into(), r.nonce.to_owned()),
        ("oauth_signature_method".into(), "HMAC-SHA1".into()),
        ("oauth_timestamp".into(), r.timestamp.to_string()),
    ];
    if let Some(token) = r.token {
        oauth_params.push(("oauth_token".into(), token.to_owned()));
    }
    if let Some(callback) = r.callback {
        oauth_params.push(("oauth_callback".into(), callback.to_owned()));
    }
    if let Some(verifier) = r.verifier {
        oauth_params.push(("oauth_verifier".into(), verifier.to_owned()));
    }
    if r.version {
        oauth_params.push(("oauth_version".into(), "1.0".into()));
    }
    // §3.4.1.3: query, body and protocol parameters, encoded, then sorted.
    let mut params: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (enc(&k), enc(&v)))
        .chain(r.params.iter().map(|(k, v)| (enc(k), enc(v))))
        .chain(oauth_params.iter().map(|(k, v)| (enc(k), enc(v))))
        .collect();
    params.sort();
    let normalized = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let base = format!(
        "{}&{}&{}",
        r.method.to_ascii_uppercase(),
        enc(&base_uri),
        enc(&normalized)
    );
    let key = format!(
        "{}&{}",
        enc(r.consumer_secret.expose()),
        enc(r.token_secret.map(Secret::expose).unwrap_or_default())
    );
    let mut mac = Hmac::<Sha1>::new_from_slice(key.as_bytes())
        .map_err(|_| invalid("cannot key the signature"))?;
    mac.update(base.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    Ok((oauth_params, signature))
}

/// A signed OAuth 1.0a request to a provider endpoint (request token or
/// access token step): POST to `url` with `authorization` as its
/// `Authorization` header and no body. `Debug` hides the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The endpoint (filled from the configuration).
    pub url: String,
    /// The `Authorization: OAuth ...` header value.
    pub authorization: Secret,
}

/// The consumer key and secret of an `oauth1` instance's configuration, or
/// the missing keys.
pub fn oauth1_consumer(config: &Configuration) -> Result<(&str, Secret), MissingConfiguration> {
    let key = config.get(keys::API_KEY);
    let secret = config.get(keys::API_SECRET);
    match (key, secret) {
        (Some(k), Some(s)) => Ok((k, Secret::new(s))),
        _ => Err(MissingConfiguration {
            keys: [(keys::API_KEY, key), (keys::API_SECRET, secret)]
                .into_iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.to_owned())
                .collect(),
        }),
    }
}

fn oauth1_spec(spec: &ElementSpec) -> Result<&OAuth1Spec, OAuthError> {
    spec.oauth1
        .as_ref()
        .ok_or_else(|| OAuthError::NotOAuth(spec.key.clone()))
}

fn oauth1_url(spec: &ElementSpec, url: &str, config: &Configuration) -> Result<String, OAuthError> {
    let lookup = |name: &str| {
        config
            .get_or_default(&spec.configuration, name)
            .map(str::to_owned)
    };
    let check = |name: &str, position, value: &str| spec.check_value(name, position, value);
    template::fill_url_checked(url, &lookup, &check).map_err(|e| standard::fill_error(e, &[]))
}

/// Step 1 of the 3-legged flow (RFC 5849 §2.1): the signed request for a
/// temporary token, with `oauth_callback` (`oob` when out of band).
pub fn oauth1_request_token_request(
    spec: &ElementSpec,
    config: &Configuration,
    callback: &str,
    nonce: &str,
    timestamp: i64,
) -> Result<SignedRequest, OAuthError> {
    let o = oauth1_spec(spec)?;
    let (consumer_key, consumer_secret) = oauth1_consumer(config)?;
    let url = oauth1_url(spec, &o.request_token_url, config)?;
    let authorization = oauth1_authorization(&OAuth1Request {
        method: "POST",
        url: &url,
        params: &[],
        consumer_key,
        consumer_secret: &consumer_secret,
        token: None,
        token_secret: None,
        callback: Some(callback),
        verifier: None,
        nonce,
        timestamp,
        version: true,
    })?;
    Ok(SignedRequest { url, authorization })
}

/// The URL the user is sent to authorize a temporary token (§2.2).
pub fn oauth1_authorize_url(
    spec: &ElementSpec,
    config: &Configuration,
    request_token: &str,
) -> Result<String, OAuthError> {
    let o = oauth1_spec(spec)?;
    let base = oauth1_url(spec, &o.authorize_url, config)?;
    Ok(crate::encode::QueryBuilder::new(&base)
        .param("oauth_token", request_token)
        .finish())
}

/// Step 3 (RFC 5849 §2.3): the signed request exchanging the authorized
/// temporary token and its verifier for an access token.
#[allow(clippy::too_many_arguments)]
pub fn oauth1_access_token_request(
    spec: &ElementSpec,
    config: &Configuration,
    request_token: &str,
    request_token_secret: &Secret,
    verifier: &str,
    nonce: &str,
    timestamp: i64,
) -> Result<SignedRequest, OAuthError> {
    let o = oauth1_spec(spec)?;
    let (consumer_key, consumer_secret) = oauth1_consumer(config)?;
    let url = oauth1_url(spec, &o.access_token_url, config)?;
    let authorization = oauth1_authorization(&OAuth1Request {
        method: "POST",
        url: &url,
        params: &[],
        consumer_key,
        consumer_secret: &consumer_secret,
        token: Some(request_token),
        token_secret: Some(request_token_secret),
        callback: None,
        verifier: Some(verifier),
        nonce,
        timestamp,
        version: true,
    })?;
    Ok(SignedRequest { url, authorization })
}

/// Checks the `[credential]` table's templates: every placeholder names a
/// configuration entry (or `access_token` when the kind has one), names
/// are non-empty and header names are tokens. Each error is
/// (field, message).
pub(crate) fn check_credential(
    spec: &CredentialSpec,
    kind: Authentication,
    entries: &dyn Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut value = |field: String, t: &str| match template::parse_value(t) {
        Err(e) => errors.push((field, e.to_string())),
        Ok(pieces) => {
            for piece in pieces {
                if let template::Piece::Placeholder { name, .. } = piece {
                    let ok = entries(name)
                        || (name == ACCESS_TOKEN_PLACEHOLDER && kind.has_access_token());
                    if !ok {
                        let hint = if kind.has_access_token() {
                            " or `{access_token}`"
                        } else {
                            ""
                        };
                        errors.push((
                            field.clone(),
                            format!(
                                "placeholder `{{{name}}}` names no [[configuration]] entry \
                                 (use a configuration key{hint})"
                            ),
                        ));
                    }
                }
            }
        }
    };
    for (name, t) in &spec.headers {
        value(format!("credential.headers.{name}"), t);
    }
    for (name, t) in &spec.query {
        value(format!("credential.query.{name}"), t);
    }
    if let Some(b) = &spec.basic {
        value("credential.basic.username".into(), &b.username);
        value("credential.basic.password".into(), &b.password);
    }
    for name in spec.headers.keys() {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            errors.push((
                format!("credential.headers.{name}"),
                format!("{name:?} is not a valid header name"),
            ));
        } else if spec.basic.is_some() && name.eq_ignore_ascii_case("authorization") {
            errors.push((
                format!("credential.headers.{name}"),
                "`basic` already sets the Authorization header".into(),
            ));
        }
    }
    for name in spec.query.keys() {
        if name.is_empty() {
            errors.push((
                "credential.query".into(),
                "a parameter name is empty".into(),
            ));
        }
    }
    if spec.headers.is_empty() && spec.query.is_empty() && spec.basic.is_none() {
        errors.push((
            "credential".into(),
            "declare at least one of `headers`, `query` or `basic`".into(),
        ));
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "id = 7\nkey = \"demo\"\nname = \"Demo\"\ndescription = \"d\"\n\
        image = \"i\"\nhub = \"general\"\nexisting_account_description = \"e\"\n\
        config_description = \"c\"\n";

    fn spec(kind: &str, extra: &str) -> ElementSpec {
        ElementSpec::parse(
            "demo.toml",
            &format!("{BASE}authentication = \"{kind}\"\n{extra}"),
        )
        .unwrap()
    }

    fn errors(kind: &str, extra: &str) -> Vec<String> {
        ElementSpec::parse(
            "demo.toml",
            &format!("{BASE}authentication = \"{kind}\"\n{extra}"),
        )
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
    }

    type Pairs = Vec<(String, String)>;

    fn shown(applied: &AppliedCredential) -> (Pairs, Pairs) {
        let show = |v: &[(String, Secret)]| {
            v.iter()
                .map(|(k, s)| (k.clone(), s.expose().to_owned()))
                .collect()
        };
        (show(&applied.headers), show(&applied.query))
    }

    const KEY_ENTRY: &str = "[[configuration]]\nkey = \"api.key\"\nname = \"K\"\nsecret = true\n";

    #[test]
    fn apikey_header_with_prefix_and_query() {
        let s = spec(
            "apikey",
            &format!(
                "[credential]\nheaders = {{ Authorization = \"Token token={{api.key}}\" }}\n\
                 query = {{ api_key = \"{{api.key}}\" }}\n{KEY_ENTRY}"
            ),
        );
        let config: Configuration = [("api.key", "s3cr3t")].into_iter().collect();
        let applied = apply(&s, &config, None).unwrap();
        assert_eq!(
            shown(&applied),
            (
                vec![("Authorization".into(), "Token token=s3cr3t".into())],
                vec![("api_key".into(), "s3cr3t".into())]
            )
        );
        assert!(!format!("{applied:?}").contains("s3cr3t"));
        let err = apply(&s, &Configuration::new(), None).unwrap_err();
        assert_eq!(err.to_string(), "missing required configuration: api.key");
    }

    #[test]
    fn basic_with_key_as_user_name_and_default_password() {
        let s = spec(
            "basic",
            &format!("[credential]\nbasic = {{ username = \"{{api.key}}\" }}\n{KEY_ENTRY}"),
        );
        let config: Configuration = [("api.key", "sk_test")].into_iter().collect();
        let (headers, query) = shown(&apply(&s, &config, None).unwrap());
        // base64("sk_test:")
        assert_eq!(
            headers,
            [("Authorization".to_owned(), "Basic c2tfdGVzdDo=".to_owned())]
        );
        assert!(query.is_empty());
        let bad: Configuration = [("api.key", "a:b")].into_iter().collect();
        assert_eq!(
            apply(&s, &bad, None).unwrap_err().to_string(),
            "invalid credential value for `basic.username`: must not contain `:` or control characters"
        );
    }

    #[test]
    fn oauth2_kinds_default_to_bearer_and_may_use_the_access_token() {
        let cc = "[oauth]\ntoken_url = \"https://example.com/t\"\n";
        let s = spec("oauth2_client_credentials", cc);
        let token = Secret::new("at-1");
        let (headers, _) = shown(&apply(&s, &Configuration::new(), Some(&token)).unwrap());
        assert_eq!(
            headers,
            [("Authorization".to_owned(), "Bearer at-1".to_owned())]
        );
        assert_eq!(
            apply(&s, &Configuration::new(), None).unwrap_err(),
            CredentialError::NoAccessToken
        );
        let s = spec(
            "oauth2_client_credentials",
            &format!("{cc}[credential]\nquery = {{ access_token = \"{{access_token}}\" }}\n"),
        );
        let (headers, query) = shown(&apply(&s, &Configuration::new(), Some(&token)).unwrap());
        assert!(headers.is_empty());
        assert_eq!(query, [("access_token".to_owned(), "at-1".to_owned())]);
    }

    #[test]
    fn apikey_without_credential_and_oauth1_cannot_be_applied() {
        let s = spec("apikey", "");
        assert_eq!(
            apply(&s, &Configuration::new(), None)
                .unwrap_err()
                .to_string(),
            "element `demo` does not declare how its credential is applied (no [credential] table)"
        );
    }

    #[test]
    fn client_credentials_request_has_grant_scope_and_client() {
        let s = spec(
            "oauth2_client_credentials",
            "[oauth]\ntoken_url = \"https://{tenant}.example.com/oauth/token\"\n\
             client_auth = \"basic\"\n[oauth.token_params]\naudience = \"https://api.example.com/\"\n\
             [[configuration]]\nkey = \"tenant\"\nname = \"T\"\n",
        );
        let config: Configuration = [
            ("tenant", "acme"),
            ("oauth.api.key", "cid"),
            ("oauth.api.secret", "cs"),
            ("oauth.scope", "read,write"),
        ]
        .into_iter()
        .collect();
        let r = client_credentials_request(&s, &config).unwrap();
        assert_eq!(r.url, "https://acme.example.com/oauth/token");
        assert_eq!(r.get("grant_type"), Some("client_credentials"));
        assert_eq!(r.get("scope"), Some("read write"));
        assert_eq!(r.get("audience"), Some("https://api.example.com/"));
        assert_eq!(
            r.basic_auth.as_ref().map(|(id, _)| id.as_str()),
            Some("cid")
        );
        let err = client_credentials_request(&s, &Configuration::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required configuration: oauth.api.key, oauth.api.secret, tenant"
        );
    }

    #[test]
    fn twitter_documented_signature() {
        // https://developer.x.com/en/docs/authentication/oauth-1-0a/creating-a-signature
        let params = [
            ("include_entities".to_owned(), "true".to_owned()),
            (
                "status".to_owned(),
                "Hello Ladies + Gentlemen, a signed OAuth request!".to_owned(),
            ),
        ];
        let request = OAuth1Request {
            method: "post",
            url: "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
            params: &params[1..],
            consumer_key: "xvz1evFS4wEEPTGEFPHBog",
            consumer_secret: &Secret::new("kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw"),
            token: Some("370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            token_secret: Some(&Secret::new("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE")),
            callback: None,
            verifier: None,
            nonce: "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
            timestamp: 1318622958,
            version: true,
        };
        let (_, signature) = oauth1_sign(&request).unwrap();
        assert_eq!(signature, "hCtSmYh+iHYCEqBWrE7C7hYmtUk=");
        let header = oauth1_authorization(&request).unwrap();
        assert_eq!(
            header.expose(),
            "OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", \
             oauth_nonce=\"kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg\", \
             oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\", \
             oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1318622958\", \
             oauth_token=\"370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb\", \
             oauth_version=\"1.0\""
        );
    }

    #[test]
    fn rfc5849_request_token_example() {
        // RFC 5849 §1.2: the temporary credentials request.
        let (_, signature) = oauth1_sign(&OAuth1Request {
            method: "POST",
            url: "https://photos.example.net/initiate",
            params: &[],
            consumer_key: "dpf43f3p2l4k3l03",
            consumer_secret: &Secret::new("kd94hf93k423kf44"),
            token: None,
            token_secret: None,
            callback: Some("http://printer.example.com/ready"),
            verifier: None,
            nonce: "wIjqoS",
            timestamp: 137131200,
            version: false,
        })
        .unwrap();
        assert_eq!(signature, "74KNZJeDHnMBp0EMJ9ZHt/XKycU=");
    }

    #[test]
    fn oauth1_builders_fill_urls_and_sign() {
        let s = spec(
            "oauth1",
            "[oauth1]\nrequest_token_url = \"https://example.com/request\"\n\
             authorize_url = \"https://example.com/authorize\"\n\
             access_token_url = \"https://example.com/access\"\n",
        );
        let config: Configuration = [("oauth.api.key", "ck"), ("oauth.api.secret", "cs")]
            .into_iter()
            .collect();
        let r = oauth1_request_token_request(&s, &config, "oob", "n", 1).unwrap();
        assert_eq!(r.url, "https://example.com/request");
        assert!(r.authorization.expose().contains("oauth_callback=\"oob\""));
        assert!(!format!("{r:?}").contains("oauth_signature"));
        assert_eq!(
            oauth1_authorize_url(&s, &config, "rt 1").unwrap(),
            "https://example.com/authorize?oauth_token=rt%201"
        );
        let a = oauth1_access_token_request(&s, &config, "rt", &Secret::new("rs"), "v", "n", 1)
            .unwrap();
        assert!(a.authorization.expose().contains("oauth_verifier=\"v\""));
        assert_eq!(
            oauth1_request_token_request(&s, &Configuration::new(), "oob", "n", 1)
                .unwrap_err()
                .to_string(),
            "missing required configuration: oauth.api.key, oauth.api.secret"
        );
        assert_eq!(
            apply(&s, &config, None).unwrap_err(),
            CredentialError::SignedPerRequest("demo".into())
        );
    }

    #[test]
    fn toml_errors_name_line_and_field() {
        // Line 9 is `authentication`; the tables follow.
        let errs = errors("apikey", "[credential]\nheaders = { X-Key = \"{nope}\" }\n");
        assert_eq!(
            errs,
            [
                "demo.toml:11: field `credential.headers.X-Key`: placeholder `{nope}` names no \
              [[configuration]] entry (use a configuration key)"
            ]
        );
        let errs = errors("apikey", "[credential]\nheaders = { \"X Key\" = \"v\" }\n");
        assert_eq!(
            errs,
            ["demo.toml:11: field `credential.headers.X Key`: \"X Key\" is not a valid header name"]
        );
        let errs = errors("apikey", "[credential]\n");
        assert_eq!(
            errs,
            ["demo.toml:10: field `credential`: declare at least one of `headers`, `query` or `basic`"]
        );
        let errs = errors("apikey", "[credential]\nbasic = { user = \"u\" }\n");
        assert!(
            errs[0].starts_with("demo.toml:11: unknown field `user`"),
            "{errs:?}"
        );
        let errs = errors(
            "apikey",
            "[credential]\nquery = { k = \"{access_token}\" }\n",
        );
        assert!(errs[0].contains("placeholder `{access_token}`"), "{errs:?}");
        let errs = errors("oauth1", "");
        assert_eq!(
            errs,
            ["demo.toml:9: field `authentication`: `oauth1` needs an [oauth1] section"]
        );
        let errs = errors(
            "oauth1",
            "[oauth1]\nrequest_token_url = \"https://e.com/r\"\nauthorize_url = \"https://e.com/a\"\n\
             access_token_url = \"https://e.com/t\"\n[credential]\nheaders = { A = \"b\" }\n",
        );
        assert_eq!(
            errs,
            [
                "demo.toml:14: field `credential`: not allowed when authentication is `oauth1` \
              (requests are signed)"
            ]
        );
        let errs = errors(
            "oauth1",
            "[oauth1]\nrequest_token_url = \"ftp://e.com/r\"\n\
             authorize_url = \"https://e.com/a\"\naccess_token_url = \"https://e.com/t\"\n",
        );
        assert_eq!(
            errs,
            ["demo.toml:11: field `oauth1.request_token_url`: \"ftp://e.com/r\" is not an absolute http(s) URL"]
        );
        let errs = errors(
            "apikey",
            "[oauth1]\nrequest_token_url = \"https://e.com/r\"\n\
             authorize_url = \"https://e.com/a\"\naccess_token_url = \"https://e.com/t\"\n",
        );
        assert_eq!(
            errs,
            ["demo.toml:10: field `oauth1`: not allowed when authentication is `apikey`"]
        );
        let errs = errors("oauth2", "[oauth]\ntoken_url = \"https://e.com/t\"\n");
        assert_eq!(
            errs,
            ["demo.toml:10: field `oauth.authorization_url`: required when authentication is `oauth2`"]
        );
        let errs = errors(
            "oauth2_client_credentials",
            "[oauth]\nauthorization_url = \"https://e.com/a\"\ntoken_url = \"https://e.com/t\"\n",
        );
        assert_eq!(
            errs,
            [
                "demo.toml:11: field `oauth.authorization_url`: not used by \
              `oauth2_client_credentials` (remove it)"
            ]
        );
        let errs = errors("apikey", "api_base_url = \"http://api.example.com\"\n");
        assert_eq!(
            errs,
            ["demo.toml:10: field `api_base_url`: must be an https URL"]
        );
        let errs = errors("oauth2_client_credentials", "");
        assert_eq!(
            errs,
            ["demo.toml:9: field `authentication`: `oauth2_client_credentials` needs an [oauth] section"]
        );
    }
}
