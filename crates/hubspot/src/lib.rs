//! The HubSpot element (id 43).
//!
//! HubSpot has two OAuth flows, selected by one parameter, **`oauth.flow`**
//! (a query parameter of `oauth/url`, an instance configuration value):
//!
//! - `legacy` (the default, the Cloud Elements seed's flow): the user is sent
//!   to `authorization_url` with `client_id`, `portalId` (the seed's
//!   `apiSecret`), `redirect_uri` and `scope`; refresh posts `refresh_token`,
//!   `client_id` and `grant_type=refresh_token` to `refresh_url`
//!   (`/auth/v1/refresh`), with no client secret.
//! - `current`: the user is sent to `endpoints.current_authorization_url`
//!   (`/oauth/authorize`) with `client_id`, `redirect_uri`, `scope` and
//!   `state`; codes and refresh tokens go to `token_url` (`/oauth/v1/token`)
//!   with `client_id` and `client_secret` (`oauth.api.secret`).
//!
//! Everything else (metadata, configuration entries, endpoints) comes from
//! `elements/hubspot.toml`.
#![forbid(unsafe_code)]

use elements_core::{
    keys, standard, CodeExchange, Configuration, Element, ElementFactory, ElementSpec, OAuthError,
    OAuthUrl, OAuthUrlRequest, ProviderRequest, QueryBuilder, RefreshRequest,
};

/// The key of the HubSpot element.
pub const KEY: &str = "hubspot";
/// The parameter (and configuration key) that selects the flow.
pub const FLOW: &str = "oauth.flow";

/// Which HubSpot OAuth flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The seed's flow, byte for byte (the default).
    Legacy,
    /// HubSpot's current `/oauth/authorize` flow.
    Current,
}

impl Flow {
    /// Reads `oauth.flow`: absent or `legacy` is legacy, `current` is current.
    pub fn parse(value: Option<&str>) -> Result<Flow, OAuthError> {
        match value.map(str::trim) {
            None | Some("") | Some("legacy") => Ok(Flow::Legacy),
            Some("current") => Ok(Flow::Current),
            Some(_) => Err(OAuthError::InvalidParameter {
                name: FLOW.into(),
                reason: "must be `legacy` or `current`".into(),
            }),
        }
    }

    fn of_config(config: &Configuration) -> Result<Flow, OAuthError> {
        Flow::parse(config.get(FLOW))
    }
}

/// The HubSpot element.
#[derive(Debug)]
pub struct HubSpot {
    spec: ElementSpec,
}

impl HubSpot {
    /// Builds the element from its catalog spec.
    pub fn from_spec(spec: ElementSpec) -> Box<dyn Element> {
        Box::new(HubSpot { spec })
    }

    /// The current flow's authorization URL, from the catalog file (never a
    /// constant here, so deployments can override it like any endpoint).
    fn current_authorization_url(&self) -> Result<&str, OAuthError> {
        self.spec
            .oauth
            .as_ref()
            .and_then(|o| o.endpoints.get("current_authorization_url"))
            .map(String::as_str)
            .ok_or_else(|| OAuthError::InvalidParameter {
                name: FLOW.into(),
                reason: "the catalog file declares no `oauth.endpoints.current_authorization_url` \
                         for the current flow"
                    .into(),
            })
    }
}

impl Element for HubSpot {
    fn spec(&self) -> &ElementSpec {
        &self.spec
    }

    fn oauth_url(&self, req: &OAuthUrlRequest) -> Result<OAuthUrl, OAuthError> {
        let oauth = standard::oauth(&self.spec)?;
        let flow = Flow::parse(req.params.get(FLOW).map(String::as_str))?;
        let mut missing = Vec::new();
        let client_id = OAuthUrlRequest::require(&req.api_key, "apiKey", &mut missing);
        let portal_id = match flow {
            Flow::Legacy => OAuthUrlRequest::require(&req.api_secret, "apiSecret", &mut missing),
            Flow::Current => "",
        };
        let scope = OAuthUrlRequest::require(&req.scope, "scope", &mut missing);
        let callback = OAuthUrlRequest::require(&req.callback_url, "callbackUrl", &mut missing);
        if !missing.is_empty() {
            return Err(OAuthError::MissingParameters(missing));
        }
        standard::check_callback_url(callback)?;
        let url = match flow {
            Flow::Legacy => QueryBuilder::new(&oauth.authorization_url)
                .param("client_id", client_id)
                .param("portalId", portal_id)
                .param("redirect_uri", callback)
                .param("scope", scope),
            Flow::Current => QueryBuilder::new(self.current_authorization_url()?)
                .param("client_id", client_id)
                .param("redirect_uri", callback)
                .param("scope", scope),
        };
        Ok(OAuthUrl {
            url: url.param_opt("state", req.state.as_deref()).finish(),
        })
    }

    fn code_exchange_request(
        &self,
        exchange: &CodeExchange<'_>,
    ) -> Result<ProviderRequest, OAuthError> {
        // Only the current flow has codes; its exchange is standard OAuth 2.0
        // at token_url with the client secret in the body.
        standard::code_exchange_request(&self.spec, exchange)
    }

    fn refresh_request(&self, refresh: &RefreshRequest<'_>) -> Result<ProviderRequest, OAuthError> {
        let oauth = standard::oauth(&self.spec)?;
        let config = refresh.configuration;
        let value = |key| config.get(key).unwrap_or_default();
        match Flow::of_config(config)? {
            Flow::Current => {
                config.require(&[keys::API_KEY, keys::API_SECRET])?;
                Ok(ProviderRequest::post(&oauth.token_url)
                    .field("grant_type", "refresh_token")
                    .field("refresh_token", refresh.refresh_token.clone())
                    .field("client_id", value(keys::API_KEY))
                    .field("client_secret", value(keys::API_SECRET))
                    .field("redirect_uri", value(keys::CALLBACK_URL)))
            }
            Flow::Legacy => {
                config.require(&[keys::API_KEY])?;
                Ok(ProviderRequest::post(oauth.refresh_url())
                    .field("refresh_token", refresh.refresh_token.clone())
                    .field("client_id", value(keys::API_KEY))
                    .field("grant_type", "refresh_token"))
            }
        }
    }
}

/// The `[oauth]` fields of the catalog file that this crate does not read:
/// the authorization URL is HubSpot's own in both flows, and refresh requests
/// are built here. A file for `hubspot` that sets one is refused.
pub const UNSUPPORTED_FIELDS: &[&str] = &[
    "oauth.pkce",
    "oauth.state_required",
    "oauth.scope_param",
    "oauth.scope_separator",
    "oauth.default_scope",
    "oauth.authorization_params",
    "oauth.client_auth",
    "oauth.token_params",
];

elements_core::inventory::submit! {
    ElementFactory::new(KEY, HubSpot::from_spec).unsupported_fields(UNSUPPORTED_FIELDS)
}

#[cfg(test)]
mod tests {
    use elements_core::{Registry, Secret};

    use super::*;

    // The unit-test build of this crate registers itself; it is joined with
    // the catalog file as the registry would join the built-in one.
    fn registry() -> Registry {
        let mut builder = elements_core::RegistryBuilder::new();
        builder.add_layer([(
            "elements/hubspot.toml",
            include_str!("../../../elements/hubspot.toml"),
        )]);
        builder.build().expect("hubspot catalog file")
    }

    fn seed_request() -> OAuthUrlRequest {
        OAuthUrlRequest {
            api_key: Some("123456789d-1234-12e4-bda9-12345b8bf20".into()),
            api_secret: Some("123456".into()),
            scope: Some("contacts-rw offline".into()),
            callback_url: Some("http://demonstrab.ly".into()),
            ..Default::default()
        }
    }

    #[test]
    fn is_registered_as_code_not_generic() {
        let r = registry();
        let hubspot = r.get("hubspot").expect("hubspot registered");
        assert!(format!("{hubspot:?}").starts_with("HubSpot"), "{hubspot:?}");
        assert_eq!(r.get("43").unwrap().key(), "hubspot");
    }

    #[test]
    fn seed_url_byte_for_byte() {
        let url = registry()
            .get("hubspot")
            .unwrap()
            .oauth_url(&seed_request())
            .unwrap();
        assert_eq!(
            url.url,
            "https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline"
        );
    }

    #[test]
    fn current_flow_is_one_parameter_away() {
        let mut req = seed_request();
        req.api_secret = None;
        req.state = Some("xyz".into());
        req.params.insert(FLOW.into(), "current".into());
        let url = registry().get("hubspot").unwrap().oauth_url(&req).unwrap();
        assert_eq!(
            url.url,
            "https://app.hubspot.com/oauth/authorize?client_id=123456789d-1234-12e4-bda9-12345b8bf20&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline&state=xyz"
        );
        req.params.insert(FLOW.into(), "newest".into());
        assert!(matches!(
            registry().get("hubspot").unwrap().oauth_url(&req),
            Err(OAuthError::InvalidParameter { .. })
        ));
    }

    #[test]
    fn names_every_missing_parameter() {
        let err = registry()
            .get("hubspot")
            .unwrap()
            .oauth_url(&OAuthUrlRequest::default())
            .unwrap_err();
        assert_eq!(
            err,
            OAuthError::MissingParameters(vec!["apiKey", "apiSecret", "scope", "callbackUrl"])
        );
    }

    #[test]
    fn refresh_requests_per_flow() {
        let r = registry();
        let hubspot = r.get("hubspot").unwrap();
        let token = Secret::new("rt");
        let mut config: Configuration = [
            ("oauth.api.key", "cid"),
            ("oauth.api.secret", "csecret"),
            ("oauth.callback.url", "https://app.test/cb"),
        ]
        .into_iter()
        .collect();
        let legacy = hubspot
            .refresh_request(&RefreshRequest {
                refresh_token: &token,
                configuration: &config,
            })
            .unwrap();
        assert_eq!(legacy.url, "https://api.hubapi.com/auth/v1/refresh");
        assert_eq!(legacy.get("client_id"), Some("cid"));
        assert_eq!(legacy.get("client_secret"), None);
        config.insert(FLOW, "current");
        let current = hubspot
            .refresh_request(&RefreshRequest {
                refresh_token: &token,
                configuration: &config,
            })
            .unwrap();
        assert_eq!(current.url, "https://api.hubapi.com/oauth/v1/token");
        assert_eq!(current.get("client_secret"), Some("csecret"));
        assert_eq!(current.get("grant_type"), Some("refresh_token"));
    }
}
