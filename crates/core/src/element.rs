//! The `Element` trait and how element crates register.

use std::fmt;

use async_trait::async_trait;

use crate::config::{Configuration, MissingConfiguration};
use crate::oauth::{
    self, CodeExchange, OAuthError, OAuthUrl, OAuthUrlRequest, ProviderError, ProviderRequest,
    ProviderResponse, RefreshRequest, TokenSet, Transport,
};
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

    /// Reads the provider's answer to a code exchange or refresh.
    fn parse_token_response(
        &self,
        response: &ProviderResponse,
        request: &ProviderRequest,
    ) -> Result<TokenSet, ProviderError> {
        oauth::parse_token_response(response, request)
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
/// element's type. The registry calls `build` with the TOML spec of the same
/// key.
///
/// ```
/// use elements_core::{Element, ElementFactory, ElementSpec};
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
/// }
/// ```
pub struct ElementFactory {
    /// The key of the catalog file this code belongs to.
    pub key: &'static str,
    /// Builds the element from its spec.
    pub build: fn(ElementSpec) -> Box<dyn Element>,
}

impl ElementFactory {
    /// A factory for `key`.
    pub const fn new(key: &'static str, build: fn(ElementSpec) -> Box<dyn Element>) -> Self {
        ElementFactory { key, build }
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

    use super::keys;
    use crate::config::MissingConfiguration;
    use crate::encode::QueryBuilder;
    use crate::oauth::{CodeExchange, OAuthError, OAuthUrl, OAuthUrlRequest, ProviderRequest, RefreshRequest};
    use crate::spec::{ClientAuth, ElementSpec, OAuthSpec};

    /// The `[oauth]` section, or [`OAuthError::NotOAuth`].
    pub fn oauth(spec: &ElementSpec) -> Result<&OAuthSpec, OAuthError> {
        spec.oauth
            .as_ref()
            .ok_or_else(|| OAuthError::NotOAuth(spec.key.clone()))
    }

    /// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
    pub fn pkce_challenge(verifier: &str) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
    }

    /// Checks a callback URL: absolute `http` or `https`, with a host, and no
    /// userinfo, fragment, white space or control characters. The URL itself
    /// is used exactly as given.
    pub fn check_callback_url(url: &str) -> Result<(), OAuthError> {
        let invalid = |reason: &str| OAuthError::InvalidParameter {
            name: "callbackUrl".into(),
            reason: reason.into(),
        };
        let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
        let rest = if lower.starts_with("https://") {
            &url[8..]
        } else if lower.starts_with("http://") {
            &url[7..]
        } else {
            return Err(invalid("must be an absolute http or https URL"));
        };
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid("must not contain white space or control characters"));
        }
        if url.contains('#') {
            return Err(invalid("must not contain a fragment"));
        }
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(invalid("must not contain user information"));
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(invalid("must name a host"));
        }
        Ok(())
    }

    /// Splits a scope list on white space and commas and joins it with the
    /// provider's separator, so callers may write scopes either way.
    pub fn join_scopes(scopes: &str, separator: &str) -> String {
        scopes
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(separator)
    }

    /// The standard authorization URL: `response_type=code`, `client_id`,
    /// `redirect_uri`, `scope`, `state`, the spec's static parameters in key
    /// order, then the PKCE challenge.
    pub fn authorization_url(
        spec: &ElementSpec,
        req: &OAuthUrlRequest,
    ) -> Result<OAuthUrl, OAuthError> {
        let oauth = oauth(spec)?;
        let mut missing = Vec::new();
        let client_id = OAuthUrlRequest::require(&req.api_key, "apiKey", &mut missing);
        let callback = OAuthUrlRequest::require(&req.callback_url, "callbackUrl", &mut missing);
        let verifier = if oauth.pkce {
            Some(OAuthUrlRequest::require(&req.code_verifier, "codeVerifier", &mut missing))
        } else {
            None
        };
        if !missing.is_empty() {
            return Err(OAuthError::MissingParameters(missing));
        }
        check_callback_url(callback)?;
        let scope = req
            .scope
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| join_scopes(s, &oauth.scope_separator))
            .or_else(|| oauth.default_scope.clone());
        let mut url = QueryBuilder::new(&oauth.authorization_url)
            .param("response_type", "code")
            .param("client_id", client_id)
            .param("redirect_uri", callback)
            .param_opt("scope", scope.as_deref())
            .param_opt("state", req.state.as_deref());
        for (name, value) in &oauth.authorization_params {
            url = url.param(name, value);
        }
        if let Some(verifier) = verifier {
            url = url
                .param("code_challenge", &pkce_challenge(verifier))
                .param("code_challenge_method", "S256");
        }
        Ok(OAuthUrl { url: url.finish() })
    }

    /// Client credentials from the configuration: (`oauth.api.key`,
    /// `oauth.api.secret`), naming both when missing.
    pub fn client_credentials<'a>(
        config: &'a crate::Configuration,
        extra_required: &[&str],
    ) -> Result<(&'a str, &'a str), MissingConfiguration> {
        let mut missing = Vec::new();
        for key in [keys::API_KEY, keys::API_SECRET].iter().chain(extra_required) {
            if config.get(key).is_none() {
                missing.push((*key).to_owned());
            }
        }
        if !missing.is_empty() {
            return Err(MissingConfiguration { keys: missing });
        }
        Ok((
            config.get(keys::API_KEY).unwrap_or_default(),
            config.get(keys::API_SECRET).unwrap_or_default(),
        ))
    }

    fn with_client(
        mut request: ProviderRequest,
        oauth: &OAuthSpec,
        client_id: &str,
        client_secret: &str,
    ) -> ProviderRequest {
        match oauth.client_auth {
            ClientAuth::Body => {
                request = request
                    .field("client_id", client_id)
                    .field("client_secret", client_secret);
            }
            ClientAuth::Basic => {
                request.basic_auth = Some((client_id.to_owned(), client_secret.into()));
            }
        }
        for (name, value) in &oauth.token_params {
            request = request.field(name, value.as_str());
        }
        request
    }

    /// The standard code exchange (RFC 6749 §4.1.3) at `token_url`.
    pub fn code_exchange_request(
        spec: &ElementSpec,
        exchange: &CodeExchange<'_>,
    ) -> Result<ProviderRequest, OAuthError> {
        let oauth = oauth(spec)?;
        let config = exchange.configuration;
        let (id, secret) = client_credentials(config, &[keys::CALLBACK_URL])?;
        let mut request = ProviderRequest::post(&oauth.token_url)
            .field("grant_type", "authorization_code")
            .field("code", exchange.code.clone())
            .field("redirect_uri", config.get(keys::CALLBACK_URL).unwrap_or_default());
        if let Some(verifier) = exchange.code_verifier {
            request = request.field("code_verifier", verifier);
        }
        Ok(with_client(request, oauth, id, secret))
    }

    /// The standard refresh (RFC 6749 §6) at `refresh_url`.
    pub fn refresh_request(
        spec: &ElementSpec,
        refresh: &RefreshRequest<'_>,
    ) -> Result<ProviderRequest, OAuthError> {
        let oauth = oauth(spec)?;
        let (id, secret) = client_credentials(refresh.configuration, &[])?;
        let request = ProviderRequest::post(oauth.refresh_url())
            .field("grant_type", "refresh_token")
            .field("refresh_token", refresh.refresh_token.clone());
        Ok(with_client(request, oauth, id, secret))
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
        fn pkce_matches_rfc7636_appendix_b() {
            assert_eq!(
                pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
            );
        }
    }
}
