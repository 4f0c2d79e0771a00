//! The `Element` trait and how element crates register.

use std::fmt;

use async_trait::async_trait;

use crate::config::{Configuration, MissingConfiguration};
use crate::oauth::{
    self, CodeExchange, OAuthError, OAuthUrl, OAuthUrlRequest, ProviderError, ProviderRequest,
    ProviderResponse, RefreshRequest, TokenSet, Transport,
};
use crate::secret::Secret;
use crate::spec::{ConfigEntry, ElementSpec};

/// A connector: catalog metadata plus the behaviour of its provider's OAuth.
///
/// Object-safe (`Box<dyn Element>`), `Send + Sync`. Only [`Element::spec`] is
/// required: every other method has a default that implements standard
/// OAuth 2.0 from the spec's `[oauth]` section, so an element crate overrides
/// just the methods where its provider differs.
///
/// Building URLs and requests is pure; only [`Element::exchange_code`] and
/// [`Element::refresh`] do I/O, through the [`Transport`] they are given.
#[async_trait]
pub trait Element: Send + Sync + fmt::Debug {
    /// The catalog entry this element was built from (after any endpoint
    /// overrides). Metadata, OAuth settings and configuration entries all come
    /// from here.
    fn spec(&self) -> &ElementSpec;

    /// The unique key (`hubspot`).
    fn key(&self) -> &str {
        &self.spec().key
    }

    /// The unique numeric id (43).
    fn id(&self) -> u64 {
        self.spec().id
    }

    /// The configuration entries an instance needs.
    fn configuration(&self) -> &[ConfigEntry] {
        &self.spec().configuration
    }

    /// Checks an instance's configuration; the error lists **every** missing
    /// required key.
    fn validate_configuration(&self, config: &Configuration) -> Result<(), MissingConfiguration> {
        config.validate(self.configuration())
    }

    /// Whether [`Element::oauth_url`] needs a PKCE code verifier.
    fn uses_pkce(&self) -> bool {
        self.spec().oauth.as_ref().is_some_and(|o| o.pkce)
    }

    /// Builds the authorization URL to send the user to. Pure: the same
    /// request always gives the same URL. Names every missing parameter.
    fn oauth_url(&self, request: &OAuthUrlRequest) -> Result<OAuthUrl, OAuthError> {
        standard::authorization_url(self.spec(), request)
    }

    /// The token-endpoint request that exchanges an authorization code.
    fn code_exchange_request(
        &self,
        exchange: &CodeExchange<'_>,
    ) -> Result<ProviderRequest, OAuthError> {
        standard::code_exchange_request(self.spec(), exchange)
    }

    /// The request that exchanges a refresh token for new tokens.
    fn refresh_request(&self, refresh: &RefreshRequest<'_>) -> Result<ProviderRequest, OAuthError> {
        standard::refresh_request(self.spec(), refresh)
    }

    /// Reads the provider's answer to a code exchange or refresh, finding its
    /// fields where `[oauth.token_response]` says (RFC 6749's names by default).
    fn parse_token_response(
        &self,
        response: &ProviderResponse,
        request: &ProviderRequest,
    ) -> Result<TokenSet, ProviderError> {
        match &self.spec().oauth {
            Some(o) => oauth::parse_token_response_with(response, request, &o.token_response),
            None => oauth::parse_token_response(response, request),
        }
    }

    /// The RFC 7009 revocation request for `token`, or `Ok(None)` when the
    /// element declares no `revocation_url`.
    fn revocation_request(
        &self,
        config: &Configuration,
        token: &Secret,
        token_type_hint: Option<&str>,
    ) -> Result<Option<ProviderRequest>, OAuthError> {
        standard::revocation_request(self.spec(), config, token, token_type_hint)
    }

    /// The token-response fields to keep in the instance configuration
    /// (`[oauth.token_response] keep`), as (configuration key, value).
    fn kept_values(&self, response: &ProviderResponse) -> Vec<(String, String)> {
        standard::kept_values(self.spec(), response)
    }

    /// Exchanges an authorization code for tokens.
    async fn exchange_code(
        &self,
        transport: &dyn Transport,
        exchange: CodeExchange<'_>,
    ) -> Result<TokenSet, ProviderError> {
        let request = self.code_exchange_request(&exchange)?;
        let response = transport.send(&request).await?;
        self.parse_token_response(&response, &request)
    }

    /// Exchanges a refresh token for new tokens.
    async fn refresh(
        &self,
        transport: &dyn Transport,
        refresh: RefreshRequest<'_>,
    ) -> Result<TokenSet, ProviderError> {
        let request = self.refresh_request(&refresh)?;
        let response = transport.send(&request).await?;
        self.parse_token_response(&response, &request)
    }
}

/// Registers an element crate: `inventory::submit!` one of these next to the
/// element's type. The registry calls the build function with the TOML spec
/// of the same key.
///
/// A crate that replaces part of the standard behaviour declares the catalog
/// fields its code does not read with [`ElementFactory::unsupported_fields`]:
/// a catalog file for its key (the built-in one or an override from another
/// directory) that sets one of them is then refused, naming the field, instead
/// of being silently ignored.
///
/// ```
/// use elements_core::{Element, ElementFactory, ElementSpec, RegistryBuilder};
///
/// #[derive(Debug)]
/// struct Quirky {
///     spec: ElementSpec,
/// }
///
/// impl Element for Quirky {
///     fn spec(&self) -> &ElementSpec {
///         &self.spec
///     }
/// }
///
/// elements_core::inventory::submit! {
///     ElementFactory::new("quirky", |spec| Box::new(Quirky { spec }))
///         .unsupported_fields(&["oauth.pkce"])
/// }
///
/// let toml = r#"
/// id = 9003
/// key = "quirky"
/// name = "Quirky"
/// description = "d"
/// image = "elements/provider_quirky.png"
/// hub = "general"
/// authentication = "oauth2"
/// existing_account_description = "e"
/// config_description = "c"
///
/// [oauth]
/// authorization_url = "https://quirky.example/authorize"
/// token_url = "https://quirky.example/token"
/// "#;
/// let mut builder = RegistryBuilder::new();
/// builder.add_layer([("quirky.toml", toml)]);
/// let registry = builder.build().unwrap();
/// assert!(format!("{:?}", registry.get("quirky").unwrap()).starts_with("Quirky"));
///
/// let mut builder = RegistryBuilder::new();
/// builder.add_layer([("quirky.toml", format!("{toml}pkce = true\n"))]);
/// // The refused file is not added, so the crate has no file either: two errors.
/// let errors = builder.build().unwrap_err().0;
/// assert_eq!(
///     errors[0].to_string(),
///     "quirky.toml:15: field `oauth.pkce`: element `quirky` is served by its own code, \
///      which does not support this field (remove it or leave it at its default)"
/// );
/// ```
pub struct ElementFactory {
    /// The key of the catalog file this code belongs to.
    pub(crate) key: &'static str,
    /// Builds the element from its spec.
    pub(crate) build: fn(ElementSpec) -> Box<dyn Element>,
    /// Catalog fields the code does not read (`oauth.pkce`, ...).
    pub(crate) unsupported: &'static [&'static str],
}

impl ElementFactory {
    /// A factory for `key`: `build` makes the element from its spec.
    pub const fn new(key: &'static str, build: fn(ElementSpec) -> Box<dyn Element>) -> Self {
        ElementFactory {
            key,
            build,
            unsupported: &[],
        }
    }

    /// Declares the catalog fields (`oauth.pkce`, `oauth.token_params`, ...:
    /// any optional field of the `[oauth]` section) that this element's code
    /// does not read. A catalog file for the key that sets one of them to
    /// anything but its default is refused with an error naming the field.
    pub const fn unsupported_fields(mut self, fields: &'static [&'static str]) -> Self {
        self.unsupported = fields;
        self
    }
}

inventory::collect!(ElementFactory);

/// Well-known configuration keys shared by Cloud Elements' OAuth elements.
pub mod keys {
    /// The OAuth client id.
    pub const API_KEY: &str = "oauth.api.key";
    /// The OAuth client secret.
    pub const API_SECRET: &str = "oauth.api.secret";
    /// The redirect URI registered with the provider.
    pub const CALLBACK_URL: &str = "oauth.callback.url";
    /// The requested scope.
    pub const SCOPE: &str = "oauth.scope";
}

/// Standard OAuth 2.0 building blocks, used by the default methods and
/// available to element crates that only differ in part.
pub mod standard {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    use url::Url;

    use super::keys;
    use crate::config::{Configuration, MissingConfiguration};
    use crate::encode::QueryBuilder;
    use crate::oauth::{
        value_at, CodeExchange, OAuthError, OAuthUrl, OAuthUrlRequest, ProviderRequest,
        ProviderResponse, RefreshRequest,
    };
    use crate::secret::Secret;
    use crate::spec::template::{self, FillError};
    use crate::spec::{ClientAuth, ElementSpec, OAuthSpec};
    use serde_json::Value;

    /// The `[oauth]` section, or [`OAuthError::NotOAuth`].
    pub fn oauth(spec: &ElementSpec) -> Result<&OAuthSpec, OAuthError> {
        spec.oauth
            .as_ref()
            .ok_or_else(|| OAuthError::NotOAuth(spec.key.clone()))
    }

    /// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
    ///
    /// ```
    /// // RFC 7636, Appendix B.
    /// assert_eq!(
    ///     elements_core::standard::pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
    ///     "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    /// );
    /// ```
    pub fn pkce_challenge(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }

    /// Checks a callback URL: absolute `http` or `https`, with a host, and no
    /// userinfo, fragment, white space or control characters. The URL itself
    /// is used exactly as given.
    ///
    /// ```
    /// use elements_core::{standard::check_callback_url, OAuthError};
    ///
    /// assert!(check_callback_url("https://app.test:8443/cb?x=1").is_ok());
    /// assert_eq!(
    ///     check_callback_url("https://app.test/cb#frag").unwrap_err().to_string(),
    ///     "invalid parameter `callbackUrl`: must not contain a fragment"
    /// );
    /// assert!(matches!(
    ///     check_callback_url("javascript:alert(1)"),
    ///     Err(OAuthError::InvalidParameter { .. })
    /// ));
    /// ```
    pub fn check_callback_url(raw: &str) -> Result<(), OAuthError> {
        if crate::callback_url::plainly_valid(raw) {
            return Ok(());
        }
        check_callback_url_parsed(raw)
    }

    /// [`check_callback_url`] by parsing the URL: the whole rule, for what
    /// the fast path (`callback_url.rs`) does not settle.
    pub(crate) fn check_callback_url_parsed(raw: &str) -> Result<(), OAuthError> {
        let invalid = |reason: &str| OAuthError::InvalidParameter {
            name: "callbackUrl".into(),
            reason: reason.into(),
        };
        // The scheme as written: the URL standard would also take `https:host`.
        let Some((_, after_scheme)) = raw
            .split_once("://")
            .filter(|(s, _)| s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https"))
        else {
            return Err(invalid("must be an absolute http or https URL"));
        };
        // The URL standard silently drops tabs and new lines; we refuse them.
        if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(
                "must not contain white space or control characters",
            ));
        }
        let url = match Url::parse(raw) {
            Ok(url) => url,
            Err(url::ParseError::EmptyHost) => return Err(invalid("must name a host")),
            Err(e) => return Err(invalid(&format!("must be a valid URL ({e})"))),
        };
        if url.fragment().is_some() {
            return Err(invalid("must not contain a fragment"));
        }
        // The URL standard drops an empty `@` (`https://@host`): user
        // information all the same.
        let authority = after_scheme.split(['/', '?']).next().unwrap_or_default();
        if !url.username().is_empty() || url.password().is_some() || authority.contains('@') {
            return Err(invalid("must not contain user information"));
        }
        // ... and skips extra slashes (`https:///host` is `https://host/`).
        if authority.is_empty() || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid("must name a host"));
        }
        Ok(())
    }

    /// Splits a scope list on white space and commas and joins it with the
    /// provider's separator, so callers may write scopes either way.
    fn join_scopes(scopes: &str, separator: &str) -> String {
        scopes
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(separator)
    }

    /// Where the values of `{name}` placeholders come from.
    #[derive(Debug, Clone, Copy)]
    enum TemplateValues<'a> {
        /// An authorization URL request: its `params`.
        Request(&'a OAuthUrlRequest),
        /// An instance configuration (code exchange, refresh).
        Configuration(&'a Configuration),
    }

    impl TemplateValues<'_> {
        /// The value of `name`: the request parameter or configuration value,
        /// else the default value of the spec's entry. Blank is missing.
        fn get(&self, spec: &ElementSpec, name: &str) -> Option<String> {
            let given = match self {
                TemplateValues::Request(req) => req.params.get(name).map(String::as_str),
                TemplateValues::Configuration(config) => config.get(name),
            };
            given
                .filter(|v| !v.trim().is_empty())
                .or_else(|| {
                    spec.config_entry(name)
                        .and_then(|e| e.default_value.as_deref())
                })
                .map(str::to_owned)
        }
    }

    /// A template error as the OAuth error a caller sees.
    pub(crate) fn fill_error(e: FillError, already_missing: &[&str]) -> OAuthError {
        match e {
            FillError::Missing(names) => OAuthError::MissingConfiguration(MissingConfiguration {
                keys: already_missing
                    .iter()
                    .map(|s| (*s).to_owned())
                    .chain(names)
                    .collect(),
            }),
            FillError::Invalid { name, reason } => OAuthError::InvalidParameter { name, reason },
            FillError::Syntax(e) => OAuthError::InvalidParameter {
                name: "template".into(),
                reason: e.0,
            },
        }
    }

    /// Fills URL templates (`true`) and parameter-value templates (`false`)
    /// of `spec` at once. Missing values are reported together with
    /// `already_missing` (names the caller found missing itself) as
    /// [`OAuthError::MissingConfiguration`], listing every one; a value that
    /// cannot stand where its placeholder is gives
    /// [`OAuthError::InvalidParameter`] naming the placeholder.
    fn fill_templates<'t>(
        spec: &ElementSpec,
        templates: impl IntoIterator<Item = (&'t str, bool)>,
        values: TemplateValues<'_>,
        already_missing: &[&str],
    ) -> Result<Vec<String>, OAuthError> {
        let lookup = |name: &str| values.get(spec, name);
        let check = |name: &str, position, value: &str| spec.check_value(name, position, value);
        template::fill_all_checked(templates, &lookup, &check)
            .map_err(|e| fill_error(e, already_missing))
    }

    /// The standard authorization URL: `response_type=code`, `client_id`,
    /// `redirect_uri`, the scope parameter, `state`, the spec's extra
    /// parameters in key order, then the PKCE challenge.
    ///
    /// Placeholders of `authorization_url` and of the extra parameters are
    /// filled from the request's `params` (then the entries' defaults). When
    /// only standard parameters are missing the error is
    /// [`OAuthError::MissingParameters`]; when placeholder values are missing
    /// too, it is [`OAuthError::MissingConfiguration`] listing every missing
    /// name, the standard parameters first.
    pub fn authorization_url(
        spec: &ElementSpec,
        req: &OAuthUrlRequest,
    ) -> Result<OAuthUrl, OAuthError> {
        let oauth = oauth(spec)?;
        // The client credentials kind has no authorization step.
        if oauth.authorization_url.is_empty() {
            return Err(OAuthError::NotOAuth(spec.key.clone()));
        }
        let mut missing = Vec::new();
        let client_id = OAuthUrlRequest::require(&req.api_key, "apiKey", &mut missing);
        let callback = OAuthUrlRequest::require(&req.callback_url, "callbackUrl", &mut missing);
        let verifier = if oauth.pkce {
            Some(OAuthUrlRequest::require(
                &req.code_verifier,
                "codeVerifier",
                &mut missing,
            ))
        } else {
            None
        };
        if oauth.state_required {
            OAuthUrlRequest::require(&req.state, "state", &mut missing);
        }
        let templates = std::iter::once((oauth.authorization_url.as_str(), true)).chain(
            oauth
                .authorization_params
                .values()
                .map(|v| (v.as_str(), false)),
        );
        let mut filled =
            fill_templates(spec, templates, TemplateValues::Request(req), &missing)?.into_iter();
        if !missing.is_empty() {
            return Err(OAuthError::MissingParameters(missing));
        }
        check_callback_url(callback)?;
        let base = filled.next().unwrap_or_default();
        let asked = req
            .scope
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| join_scopes(s, &oauth.scope_separator))
            .or_else(|| oauth.default_scope.clone());
        let scope = with_fixed_scope(oauth, asked);
        let name = |standard: &'static str| -> Option<&str> {
            if oauth
                .omit_authorization_params
                .iter()
                .any(|o| o == standard)
            {
                return None;
            }
            Some(
                oauth
                    .authorization_param_names
                    .get(standard)
                    .map_or(standard, String::as_str),
            )
        };
        let mut url = QueryBuilder::new(&base);
        for (standard, value) in [
            ("response_type", Some(oauth.response_type.as_str())),
            ("client_id", Some(client_id)),
            ("redirect_uri", Some(callback)),
        ] {
            if let Some(name) = name(standard) {
                url = url.param_opt(name, value);
            }
        }
        url = url.param_opt(&oauth.scope_param, scope.as_deref());
        if let Some(name) = name("state") {
            url = url.param_opt(name, req.state.as_deref());
        }
        for (name, value) in oauth.authorization_params.keys().zip(filled) {
            url = url.param(name, &value);
        }
        if let Some(verifier) = verifier {
            url = url
                .param("code_challenge", &pkce_challenge(verifier))
                .param("code_challenge_method", "S256");
        }
        Ok(OAuthUrl { url: url.finish() })
    }

    /// The fixed scopes first, then the asked ones not already among them,
    /// joined with the provider's separator.
    fn with_fixed_scope(oauth: &OAuthSpec, asked: Option<String>) -> Option<String> {
        let Some(fixed) = oauth
            .fixed_scope
            .as_deref()
            .filter(|f| !f.trim().is_empty())
        else {
            return asked;
        };
        let fixed = join_scopes(fixed, &oauth.scope_separator);
        let split = |s: &str| -> Vec<String> {
            s.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut all = split(&fixed);
        for scope in asked.as_deref().map(split).unwrap_or_default() {
            if !all.contains(&scope) {
                all.push(scope);
            }
        }
        Some(all.join(&oauth.scope_separator))
    }

    /// The configuration keys a token request of this spec needs: the client
    /// id, the secret unless the client is public, then `extra`.
    fn required_keys<'k>(oauth: &OAuthSpec, extra: &[&'k str]) -> Vec<&'k str> {
        let mut keys = vec![keys::API_KEY];
        if oauth.client_auth != ClientAuth::None {
            keys.push(keys::API_SECRET);
        }
        keys.extend_from_slice(extra);
        keys
    }

    /// Builds a token-endpoint request: fills `url` and the `token_params`
    /// from the configuration, checks the required keys, and lists every
    /// missing key at once.
    fn token_request(
        spec: &ElementSpec,
        oauth: &OAuthSpec,
        url: &str,
        config: &Configuration,
        required: &[&str],
    ) -> Result<(ProviderRequest, Vec<(String, String)>), OAuthError> {
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|k| config.get(k).is_none())
            .collect();
        let templates = std::iter::once((url, true))
            .chain(oauth.token_params.values().map(|v| (v.as_str(), false)));
        let mut filled = fill_templates(
            spec,
            templates,
            TemplateValues::Configuration(config),
            &missing,
        )?
        .into_iter();
        if !missing.is_empty() {
            return Err(MissingConfiguration {
                keys: missing.iter().map(|s| (*s).to_owned()).collect(),
            }
            .into());
        }
        let mut request = ProviderRequest::post(filled.next().unwrap_or_default());
        request.format = oauth.token_request_format;
        let params = oauth.token_params.keys().cloned().zip(filled).collect();
        Ok((request, params))
    }

    fn with_client(
        mut request: ProviderRequest,
        oauth: &OAuthSpec,
        config: &Configuration,
        params: Vec<(String, String)>,
    ) -> ProviderRequest {
        let client_id = config.get(keys::API_KEY).unwrap_or_default();
        let client_secret = config.get(keys::API_SECRET).unwrap_or_default();
        match oauth.client_auth {
            ClientAuth::Body => {
                request = request
                    .field("client_id", client_id)
                    .field("client_secret", client_secret);
            }
            ClientAuth::Basic => {
                request.basic_auth = Some((client_id.to_owned(), client_secret.into()));
            }
            ClientAuth::None => {
                request = request.field("client_id", client_id);
            }
        }
        for (name, value) in params {
            request = request.field(&name, value);
        }
        request
    }

    /// The standard code exchange (RFC 6749 §4.1.3) at `token_url`, its
    /// placeholders filled from the configuration.
    pub fn code_exchange_request(
        spec: &ElementSpec,
        exchange: &CodeExchange<'_>,
    ) -> Result<ProviderRequest, OAuthError> {
        let oauth = oauth(spec)?;
        let config = exchange.configuration;
        let required = required_keys(oauth, &[keys::CALLBACK_URL]);
        let (request, params) = token_request(spec, oauth, &oauth.token_url, config, &required)?;
        let mut request = request
            .field("grant_type", "authorization_code")
            .field("code", exchange.code.clone())
            .field(
                "redirect_uri",
                config.get(keys::CALLBACK_URL).unwrap_or_default(),
            );
        if let Some(verifier) = exchange.code_verifier {
            request = request.field("code_verifier", verifier);
        }
        Ok(with_client(request, oauth, config, params))
    }

    /// The standard refresh (RFC 6749 §6) at `refresh_url`, its placeholders
    /// filled from the configuration.
    pub fn refresh_request(
        spec: &ElementSpec,
        refresh: &RefreshRequest<'_>,
    ) -> Result<ProviderRequest, OAuthError> {
        let oauth = oauth(spec)?;
        let config = refresh.configuration;
        let required = required_keys(oauth, &[]);
        let (request, params) = token_request(spec, oauth, oauth.refresh_url(), config, &required)?;
        let request = request
            .field("grant_type", "refresh_token")
            .field("refresh_token", refresh.refresh_token.clone());
        Ok(with_client(request, oauth, config, params))
    }

    /// The token revocation request (RFC 7009 §2.1) at `revocation_url`:
    /// `token`, `token_type_hint` when given, and the client authentication
    /// of the element (`client_auth`), in the element's
    /// `token_request_format`. `Ok(None)` when the element declares no
    /// `revocation_url`.
    pub fn revocation_request(
        spec: &ElementSpec,
        config: &Configuration,
        token: &Secret,
        token_type_hint: Option<&str>,
    ) -> Result<Option<ProviderRequest>, OAuthError> {
        let oauth = oauth(spec)?;
        let Some(url) = oauth.revocation_url.as_deref() else {
            return Ok(None);
        };
        let required = required_keys(oauth, &[]);
        let (request, _) = token_request(spec, oauth, url, config, &required)?;
        let mut request = request.field("token", token.clone());
        if let Some(hint) = token_type_hint {
            request = request.field("token_type_hint", hint);
        }
        Ok(Some(with_client(request, oauth, config, Vec::new())))
    }

    /// The `[oauth.token_response] keep` fields found in a token response,
    /// as (configuration key, value) pairs to store in the instance
    /// configuration. Strings are kept as they are, numbers and booleans as
    /// their JSON text; absent fields are skipped.
    pub fn kept_values(spec: &ElementSpec, response: &ProviderResponse) -> Vec<(String, String)> {
        let Some(oauth) = &spec.oauth else {
            return Vec::new();
        };
        if oauth.token_response.keep.is_empty() {
            return Vec::new();
        }
        let Ok(obj) = serde_json::from_slice::<serde_json::Map<String, Value>>(&response.body)
        else {
            return Vec::new();
        };
        oauth
            .token_response
            .keep
            .iter()
            .filter_map(|(path, key)| {
                let value = match value_at(&obj, path)? {
                    Value::String(s) => s.clone(),
                    v @ (Value::Number(_) | Value::Bool(_)) => v.to_string(),
                    _ => return None,
                };
                // A kept host or origin must pass the host rules, and every
                // value its entry's allowed_values: else it is not kept.
                let entry = spec.config_entry(key);
                if entry.is_some_and(|e| e.custom_host)
                    && template::check_custom_origin(&value, &[]).is_err()
                {
                    return None;
                }
                spec.check_value(key, template::Position::Value, &value)
                    .ok()?;
                Some((key.clone(), value))
            })
            .collect()
    }

    /// The client credentials grant (RFC 6749 §4.4) at `token_url`: the
    /// client id and secret from the configuration (as `client_auth` says),
    /// `scope` from `oauth.scope` or `default_scope` when set, and the
    /// `token_params`.
    pub fn client_credentials_request(
        spec: &ElementSpec,
        config: &Configuration,
    ) -> Result<ProviderRequest, OAuthError> {
        let oauth = oauth(spec)?;
        let required = required_keys(oauth, &[]);
        let (mut request, params) =
            token_request(spec, oauth, &oauth.token_url, config, &required)?;
        request = request.field("grant_type", "client_credentials");
        let scope = config
            .get(keys::SCOPE)
            .filter(|s| !s.trim().is_empty())
            .map(|s| join_scopes(s, &oauth.scope_separator))
            .or_else(|| oauth.default_scope.clone());
        if let Some(scope) = scope {
            request = request.field("scope", scope);
        }
        Ok(with_client(request, oauth, config, params))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn check(url: &str, ok: bool) {
            assert_eq!(check_callback_url(url).is_ok(), ok, "{url}");
        }

        #[test]
        fn callback_policy() {
            check("http://demonstrab.ly", true);
            check("https://app.test:8443/cb?x=1", true);
            check("HTTPS://app.test/cb", true);
            check("javascript:alert(1)", false);
            check("data:text/html,hi", false);
            check("file:///etc/passwd", false);
            check("/relative/cb", false);
            check("https://app.test/cb#frag", false);
            check("https://user:pw@app.test/cb", false);
            check("https://app.test/c\r\nb", false);
            check("https://", false);
            check("https:///path", false);
        }

        #[test]
        fn callback_errors_name_the_rule() {
            let reason = |url: &str| match check_callback_url(url) {
                Err(OAuthError::InvalidParameter { name, reason }) => {
                    assert_eq!(name, "callbackUrl");
                    reason
                }
                other => panic!("{url}: {other:?}"),
            };
            let scheme = "must be an absolute http or https URL";
            assert_eq!(reason("ftp://host/cb"), scheme);
            assert_eq!(reason("/relative/cb"), scheme);
            // The URL standard reads these as http(s) URLs; we do not.
            assert_eq!(reason("https:app.test/cb"), scheme);
            assert_eq!(reason("HTTPS:/app.test/cb"), scheme);
            let space = "must not contain white space or control characters";
            assert_eq!(reason("https://app.test/c b"), space);
            assert_eq!(reason("https://app.test/c\tb"), space);
            assert_eq!(
                reason("https://app.test/cb#"),
                "must not contain a fragment"
            );
            let userinfo = "must not contain user information";
            assert_eq!(reason("https://user@app.test/cb"), userinfo);
            assert_eq!(reason("https://@app.test/cb"), userinfo);
            let host = "must name a host";
            assert_eq!(reason("https://"), host);
            assert_eq!(reason("https://:443/cb"), host);
            assert_eq!(reason("https:///app.test/cb"), host);
            assert_eq!(reason("https://?x=1"), host);
            // What the URL standard cannot parse at all (new with the url crate).
            assert_eq!(
                reason("https://app<test/cb"),
                "must be a valid URL (invalid international domain name)"
            );
        }

        #[test]
        fn pkce_matches_rfc7636_appendix_b() {
            assert_eq!(
                pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
            );
        }
    }
}
