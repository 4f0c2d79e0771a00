//! The wire shapes of requests and responses, typed.
//!
//! Responses derive `Deserialize` (and `Serialize`, to compare them with
//! recorded JSON); fields the server may add later are ignored. Request
//! bodies derive `Serialize` and have builder methods; every field is
//! public too. Secrets are [`Secret`]s, so `Debug` never shows them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Secret;

// ------------------------------------------------------------------ catalog

/// The element object of Cloud Elements' responses: the seed's eleven
/// fields, in the seed's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ElementMetadata {
    /// Numeric id (HubSpot: 43).
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Key (`hubspot`).
    pub key: String,
    /// Description.
    pub description: String,
    /// Image path.
    pub image: String,
    /// Offered.
    pub active: bool,
    /// Withdrawn.
    pub deleted: bool,
    /// Authenticates with OAuth.
    pub type_oauth: bool,
    /// Has a trial account.
    pub trial_account: bool,
    /// Text for connecting an existing account.
    pub existing_account_description: String,
    /// Text about configuration.
    pub config_description: String,
}

/// `{"type": "oauth2"}`: how an element's instances authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthenticationType {
    /// `oauth2`, `oauth2_client_credentials`, `oauth1`, `apikey`, `basic`
    /// or `custom`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One configuration entry an element declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigEntry {
    /// The key, e.g. `oauth.api.key`.
    pub key: String,
    /// A human-readable name.
    pub name: String,
    /// The Cloud Elements field type, e.g. `TEXTFIELD_32`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Whether provisioning fails without it (unless it has a default).
    pub required: bool,
    /// The value used when none is given (absent when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_value: Option<String>,
    /// A description for people.
    #[serde(default)]
    pub description: String,
    /// Whether consoles should hide the field.
    #[serde(default)]
    pub hide_from_console: bool,
    /// Whether the value is a secret (masked in responses).
    #[serde(default)]
    pub secret: bool,
    /// The only values the entry may take, when restricted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<String>,
    /// Whether the value is a whole host name.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub custom_host: bool,
}

/// An element as `GET /elements/{keyOrId}` and `GET /elements` answer it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Element {
    /// The seed's eleven fields.
    #[serde(flatten)]
    pub metadata: ElementMetadata,
    /// The hub (`marketing`, `crm`, ...).
    pub hub: String,
    /// How its instances authenticate.
    pub authentication: AuthenticationType,
    /// Its configuration entries.
    pub configuration: Vec<ConfigEntry>,
    /// The API base URL template, when the element declares one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<String>,
    /// Other keys that resolve to the element (Cloud Elements' `sfdc`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// True for an element private to the calling organization.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

/// The parameters of `GET` (or `POST`) `/elements/{keyOrId}/oauth/url`.
///
/// The seed's call (HubSpot's legacy flow):
///
/// ```
/// use elements_client::OAuthUrlRequest;
///
/// let request = OAuthUrlRequest::new()
///     .api_key("123456789d-1234-12e4-bda9-12345b8bf20")
///     .api_secret("123456")
///     .scope("contacts-rw offline")
///     .callback_url("http://demonstrab.ly");
/// assert_eq!(request.pairs()[0], ("apiKey", "123456789d-1234-12e4-bda9-12345b8bf20"));
/// assert!(!format!("{request:?}").contains("123456\""), "the secret is masked");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OAuthUrlRequest {
    /// `apiKey`: the OAuth client id.
    pub api_key: Option<String>,
    /// `apiSecret`: the client secret (HubSpot's legacy flow: the portal id).
    pub api_secret: Option<Secret>,
    /// `scope`.
    pub scope: Option<String>,
    /// `callbackUrl`.
    pub callback_url: Option<String>,
    /// `state`, passed to the callback.
    pub state: Option<String>,
    /// `codeVerifier`: a PKCE verifier of the caller's (RFC 7636); PKCE
    /// elements get one generated otherwise.
    pub code_verifier: Option<Secret>,
    /// Element-specific parameters (`oauth.flow`, `subdomain`, ...), in order.
    pub params: Vec<(String, String)>,
}

impl OAuthUrlRequest {
    /// No parameters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `apiKey`.
    pub fn api_key(mut self, value: impl Into<String>) -> Self {
        self.api_key = Some(value.into());
        self
    }

    /// Sets `apiSecret`.
    pub fn api_secret(mut self, value: impl Into<Secret>) -> Self {
        self.api_secret = Some(value.into());
        self
    }

    /// Sets `scope`.
    pub fn scope(mut self, value: impl Into<String>) -> Self {
        self.scope = Some(value.into());
        self
    }

    /// Sets `callbackUrl`.
    pub fn callback_url(mut self, value: impl Into<String>) -> Self {
        self.callback_url = Some(value.into());
        self
    }

    /// Sets `state`.
    pub fn state(mut self, value: impl Into<String>) -> Self {
        self.state = Some(value.into());
        self
    }

    /// Sets `codeVerifier`.
    pub fn code_verifier(mut self, value: impl Into<Secret>) -> Self {
        self.code_verifier = Some(value.into());
        self
    }

    /// Adds an element-specific parameter.
    pub fn param(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.params.push((name.into(), value.into()));
        self
    }

    /// The parameters as (name, value) pairs, in the seed's order.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs = Vec::new();
        let known: [(&str, Option<&str>); 6] = [
            ("apiKey", self.api_key.as_deref()),
            ("apiSecret", self.api_secret.as_ref().map(Secret::expose)),
            ("scope", self.scope.as_deref()),
            ("callbackUrl", self.callback_url.as_deref()),
            ("state", self.state.as_deref()),
            (
                "codeVerifier",
                self.code_verifier.as_ref().map(Secret::expose),
            ),
        ];
        for (name, value) in known {
            if let Some(value) = value {
                pairs.push((name, value));
            }
        }
        for (name, value) in &self.params {
            pairs.push((name.as_str(), value.as_str()));
        }
        pairs
    }
}

/// The answer of `oauth/url`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OAuthUrl {
    /// The element key.
    pub element: String,
    /// Where to send the user.
    pub oauth_url: String,
    /// The PKCE verifier (PKCE elements only): send it back as
    /// `providerData.code_verifier` with the code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<Secret>,
}

// ---------------------------------------------------------------- instances

/// `{"key": "hubspot"}` or `{"id": 43}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementRef {
    /// The element key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The element id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

impl ElementRef {
    /// By key.
    pub fn key(key: impl Into<String>) -> Self {
        ElementRef {
            key: Some(key.into()),
            id: None,
        }
    }

    /// By id.
    pub fn id(id: u64) -> Self {
        ElementRef {
            key: None,
            id: Some(id),
        }
    }
}

/// `providerData` of `POST /instances`: tokens from the OAuth callback, a
/// code to exchange, or OAuth 1.0a tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderData {
    /// The client id (the seed sends it; configuration is authoritative).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apikey: Option<String>,
    /// An authorization code to exchange at the provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<Secret>,
    /// The PKCE verifier `oauth/url` answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<Secret>,
    /// An access token from the callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    /// A refresh token from the callback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    /// Seconds until expiry: a number or a numeric string (the seed sends
    /// `"1800"`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<Value>,
    /// `token_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// OAuth 1.0a: the access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth_token: Option<Secret>,
    /// OAuth 1.0a: the access token's secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oauth_token_secret: Option<Secret>,
}

impl ProviderData {
    /// Tokens the OAuth callback received.
    pub fn tokens(access_token: impl Into<Secret>, refresh_token: impl Into<Secret>) -> Self {
        ProviderData {
            access_token: Some(access_token.into()),
            refresh_token: Some(refresh_token.into()),
            ..Self::default()
        }
    }

    /// An authorization code for the server to exchange.
    pub fn code(code: impl Into<Secret>) -> Self {
        ProviderData {
            code: Some(code.into()),
            ..Self::default()
        }
    }

    /// OAuth 1.0a access token and token secret.
    pub fn oauth1(token: impl Into<Secret>, token_secret: impl Into<Secret>) -> Self {
        ProviderData {
            oauth_token: Some(token.into()),
            oauth_token_secret: Some(token_secret.into()),
            ..Self::default()
        }
    }

    /// Sets `expires_in` (a number, or a numeric string as in the seed).
    pub fn expires_in(mut self, seconds: impl Into<Value>) -> Self {
        self.expires_in = Some(seconds.into());
        self
    }

    /// Sets `apikey`.
    pub fn apikey(mut self, client_id: impl Into<String>) -> Self {
        self.apikey = Some(client_id.into());
        self
    }

    /// Sets `code_verifier`.
    pub fn code_verifier(mut self, verifier: impl Into<Secret>) -> Self {
        self.code_verifier = Some(verifier.into());
        self
    }

    /// Sets `token_type`.
    pub fn token_type(mut self, kind: impl Into<String>) -> Self {
        self.token_type = Some(kind.into());
        self
    }
}

/// The body of `POST /instances` (and `POST /elements/{keyOrId}/instances`,
/// where `element` may be left out).
///
/// The seed's `instance.json`:
///
/// ```
/// use elements_client::{CreateInstance, ProviderData};
///
/// let body = CreateInstance::new("hubspot", "Test")
///     .provider_data(
///         ProviderData::tokens("<ACCESS TOKEN>", "<REFRESH TOKEN>")
///             .apikey("my-client-id")
///             .expires_in("1800"),
///     )
///     .configuration("oauth.api.key", "my-client-id")
///     .configuration("oauth.api.secret", "123456")
///     .configuration("oauth.callback.url", "www.samplecallbackurl.com")
///     .configuration("oauth.scope", "contacts-rw+offline")
///     .tag("demo");
/// let json = serde_json::to_value(&body).unwrap();
/// assert_eq!(json["providerData"]["expires_in"], "1800");
/// assert_eq!(json["element"]["key"], "hubspot");
/// assert!(!format!("{body:?}").contains("ACCESS TOKEN"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateInstance {
    /// Which element (`None`: the path names it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub element: Option<ElementRef>,
    /// Tokens, a code, or nothing (credentials in configuration).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_data: Option<ProviderData>,
    /// Configuration values (`Debug` masks them all).
    pub configuration: BTreeMap<String, Secret>,
    /// Tags (`None`: the name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// The instance name.
    pub name: String,
}

impl CreateInstance {
    /// An instance of the element `key` named `name`.
    pub fn new(key: impl Into<String>, name: impl Into<String>) -> Self {
        CreateInstance {
            element: Some(ElementRef::key(key)),
            provider_data: None,
            configuration: BTreeMap::new(),
            tags: None,
            name: name.into(),
        }
    }

    /// Sets `providerData`.
    pub fn provider_data(mut self, data: ProviderData) -> Self {
        self.provider_data = Some(data);
        self
    }

    /// Sets one configuration value.
    pub fn configuration(mut self, key: impl Into<String>, value: impl Into<Secret>) -> Self {
        self.configuration.insert(key.into(), value.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.get_or_insert_with(Vec::new).push(tag.into());
        self
    }

    /// Sets the tags (replacing any).
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }
}

/// The body of `PUT` and `PATCH /instances/{id}` (and `PATCH /instances`
/// with an `Element` token): what is given changes. `PUT` needs `name`,
/// and its `configuration` replaces the stored one; `PATCH` merges it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateInstance {
    /// New name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Configuration: the whole of it (`PUT`) or entries to set (`PATCH`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub configuration: Option<BTreeMap<String, Secret>>,
    /// New tokens or a code: re-provisions the instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_data: Option<ProviderData>,
}

impl UpdateInstance {
    /// Changes nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Sets one configuration value.
    pub fn configuration(mut self, key: impl Into<String>, value: impl Into<Secret>) -> Self {
        self.configuration
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }

    /// Sets `providerData` (re-provisions).
    pub fn provider_data(mut self, data: ProviderData) -> Self {
        self.provider_data = Some(data);
        self
    }
}

/// The element object inside an instance: the seed's eleven fields, then
/// the hub.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceElement {
    /// The seed's eleven fields.
    #[serde(flatten)]
    pub metadata: ElementMetadata,
    /// The element's hub (empty when it left the catalog).
    pub hub: String,
}

/// The user who created an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// Id.
    pub id: i64,
    /// E-mail.
    pub email_address: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
}

/// An instance's health state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Working.
    Active,
    /// Transient refresh failures.
    Degraded,
    /// The provider refused the grant for good.
    Invalid,
    /// Disabled by its owner.
    Disabled,
}

impl HealthState {
    /// The wire name (`active`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Active => "active",
            HealthState::Degraded => "degraded",
            HealthState::Invalid => "invalid",
            HealthState::Disabled => "disabled",
        }
    }
}

/// An instance's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// The state.
    pub state: HealthState,
    /// Transient failures in a row.
    pub failures: i64,
    /// The last failure, or why it is invalid.
    pub last_error: Option<String>,
    /// When the state began, RFC 3339.
    pub since: String,
}

/// An instance as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// The instance (`Element`) token: only in the answer to the create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// The element.
    pub element: InstanceElement,
    /// Always empty.
    pub provision_interactions: Vec<Value>,
    /// False once the provider refused the grant for good.
    pub valid: bool,
    /// Disabled by its owner.
    pub disabled: bool,
    /// Always 0.
    pub max_cache_size: u32,
    /// Always 0.
    pub cache_time_to_live: u32,
    /// Always false.
    pub caching_enabled: bool,
    /// Tags.
    pub tags: Vec<String>,
    /// Creation time, RFC 3339.
    pub created_date: String,
    /// The user who created it.
    pub user: User,
    /// Configuration, secret values masked (`********`).
    pub configuration: BTreeMap<String, String>,
    /// Why the instance is invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Health.
    pub health: Health,
}

/// The query of `GET /instances` (and `GET /elements/{keyOrId}/instances`):
/// paging, search, tags, health.
///
/// ```
/// use elements_client::{HealthState, ListInstances};
///
/// let query = ListInstances::new().page_size(50).tag("crm").search("acme");
/// assert_eq!(
///     query.pairs(),
///     [("pageSize", "50".to_owned()), ("searchText", "acme".to_owned()), ("tags[]", "crm".to_owned())]
/// );
/// let _ = ListInstances::new().health(HealthState::Degraded);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListInstances {
    /// `pageSize`: 1 to the server's `max_page_size`.
    pub page_size: Option<u32>,
    /// `nextPage`: the `Elements-Next-Page-Token` of the previous page.
    pub next_page: Option<String>,
    /// `searchText`: a substring of the name, ASCII case-insensitive.
    pub search_text: Option<String>,
    /// `tags[]`: every one must match.
    pub tags: Vec<String>,
    /// `health`.
    pub health: Option<HealthState>,
    /// `hydrate` (accepted and ignored by the server, as Cloud Elements
    /// clients send it).
    pub hydrate: Option<bool>,
}

impl ListInstances {
    /// The first page, default size.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `pageSize`.
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// Sets `nextPage`.
    pub fn next_page(mut self, token: impl Into<String>) -> Self {
        self.next_page = Some(token.into());
        self
    }

    /// Sets `searchText`.
    pub fn search(mut self, text: impl Into<String>) -> Self {
        self.search_text = Some(text.into());
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets `health`.
    pub fn health(mut self, state: HealthState) -> Self {
        self.health = Some(state);
        self
    }

    /// Sets `hydrate`.
    pub fn hydrate(mut self, hydrate: bool) -> Self {
        self.hydrate = Some(hydrate);
        self
    }

    /// The query pairs, in a fixed order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(n) = self.page_size {
            pairs.push(("pageSize", n.to_string()));
        }
        if let Some(t) = &self.next_page {
            pairs.push(("nextPage", t.clone()));
        }
        if let Some(s) = &self.search_text {
            pairs.push(("searchText", s.clone()));
        }
        for t in &self.tags {
            pairs.push(("tags[]", t.clone()));
        }
        if let Some(h) = self.health {
            pairs.push(("health", h.as_str().to_owned()));
        }
        if let Some(h) = self.hydrate {
            pairs.push(("hydrate", h.to_string()));
        }
        pairs
    }
}

/// One page of a list, with the `Elements-*` paging headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows, newest first.
    pub items: Vec<T>,
    /// `Elements-Returned-Count`.
    pub returned_count: Option<u64>,
    /// `Elements-Next-Page-Token`: absent on the last page.
    pub next_page_token: Option<String>,
    /// `Elements-Total-Count`: on the first page of an unfiltered list only.
    pub total_count: Option<u64>,
}

/// One entry of an instance's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationEntry {
    /// Position, 1-based, in key order (the `configId` of the entry routes).
    pub id: u64,
    /// Key.
    pub key: String,
    /// Value, `********` when secret.
    pub property_value: String,
}

/// The answer of `GET /instances/{id}/credentials`: what an app adds to
/// its own provider calls. Every value is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credentials {
    /// The instance id.
    pub instance_id: i64,
    /// The credential kind (`oauth2`, `apikey`, ...).
    #[serde(default)]
    pub kind: Option<String>,
    /// OAuth 2.0: a fresh access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    /// OAuth 2.0: usually `bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// OAuth 2.0: expiry, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// OAuth 2.0: seconds until expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
    /// Headers to add.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Query parameters to add.
    #[serde(default)]
    pub query: BTreeMap<String, Secret>,
    /// OAuth 1.0a: the consumer key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_key: Option<String>,
    /// OAuth 1.0a: the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// OAuth 1.0a: `HMAC-SHA1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_method: Option<String>,
    /// OAuth 1.0a without `method` and `url`: how to get a signed header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<String>,
}

/// Instances of one element, in `GET /instances/count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElementCount {
    /// The element key.
    pub element: String,
    /// How many instances.
    pub count: u64,
}

/// The answer of `GET /instances/count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceCount {
    /// Every instance of the organization.
    pub total_instances: u64,
    /// Per element, sorted by key.
    pub element_instances: Vec<ElementCount>,
}

// ------------------------------------------------------------ organizations

/// A webhook endpoint of the organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Id.
    pub id: i64,
    /// Where events go.
    pub url: String,
    /// Event patterns (`instance.*`, `*`).
    pub events: Vec<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Why it was disabled (a 410 from the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Creation time, RFC 3339.
    pub created_date: String,
    /// The `whsec_` signing secret: only in the answer to the create.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
}

/// The body of `POST /organizations/me/webhooks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreateWebhook {
    /// A public https URL (unless the server allows private ones).
    pub url: String,
    /// Event patterns; `None`: every event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

impl CreateWebhook {
    /// Every event to `url`.
    pub fn new(url: impl Into<String>) -> Self {
        CreateWebhook {
            url: url.into(),
            events: None,
        }
    }

    /// Only events matching `patterns`.
    pub fn events<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.events = Some(patterns.into_iter().map(Into::into).collect());
        self
    }
}

/// One delivery of an event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The webhook.
    pub webhook_id: i64,
    /// `pending`, `delivered`, `failed`, `dead`, ...
    pub state: String,
    /// Attempts so far.
    pub attempts: i64,
    /// The endpoint's last status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<i64>,
    /// The last failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// An event of the organization's outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// `msg_...`.
    pub id: String,
    /// `instance.created`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// When, RFC 3339.
    pub created_date: String,
    /// The payload delivered.
    pub payload: Value,
    /// Its deliveries.
    pub deliveries: Vec<Delivery>,
}

/// The answer of `POST /organizations/me/events/{id}/redeliver`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redelivery {
    /// The event.
    pub id: String,
    /// Deliveries set to go again.
    pub deliveries_reset: u64,
}

// ------------------------------------------------------------------ connect

/// The body of `POST /connect/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateConnectSession {
    /// Which element.
    pub element: ElementRef,
    /// The instance's name.
    pub name: String,
    /// Its tags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// Configuration the app supplies (client id and secret, scope, ...).
    pub configuration: BTreeMap<String, Secret>,
    /// Where the user comes back (`?instanceId=` or `?error=`).
    pub redirect_url: String,
    /// The app's name for its user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    /// `popup` for the popup helper; `None`: redirect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl CreateConnectSession {
    /// A session for an instance of `key` named `name`, back to `redirect_url`.
    pub fn new(
        key: impl Into<String>,
        name: impl Into<String>,
        redirect_url: impl Into<String>,
    ) -> Self {
        CreateConnectSession {
            element: ElementRef::key(key),
            name: name.into(),
            tags: None,
            configuration: BTreeMap::new(),
            redirect_url: redirect_url.into(),
            end_user: None,
            mode: None,
        }
    }

    /// Sets one configuration value.
    pub fn configuration(mut self, key: impl Into<String>, value: impl Into<Secret>) -> Self {
        self.configuration.insert(key.into(), value.into());
        self
    }

    /// Sets the tags.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `endUser`.
    pub fn end_user(mut self, user: impl Into<String>) -> Self {
        self.end_user = Some(user.into());
        self
    }

    /// Sets `mode` (`popup`).
    pub fn mode(mut self, mode: impl Into<String>) -> Self {
        self.mode = Some(mode.into());
        self
    }
}

/// The answer of `POST /connect/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectSession {
    /// The session token (single use; a bearer secret until used).
    pub token: Secret,
    /// The hosted page to send the user to (it holds the token).
    pub url: Secret,
    /// Expiry, RFC 3339.
    pub expires_at: String,
}

// --------------------------------------------------------------- operations

/// The answer of `/readyz` (and `/healthz`, which has `status` only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// `ok`, `ready` or `not ready`.
    pub status: String,
    /// Why not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Each check (`database`, `migrations`, `key`): `ok` or the reason.
    #[serde(default)]
    pub checks: BTreeMap<String, String>,
}

impl Readiness {
    /// Whether every check passed (`status: "ready"`; `/healthz`: `"ok"`).
    pub fn is_ready(&self) -> bool {
        matches!(self.status.as_str(), "ready" | "ok")
    }
}
