//! The types of a catalog file, as TOML (and the JSON Schema) sees them.

use std::collections::BTreeMap;

#[cfg(feature = "schema")]
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// How an element authenticates against its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Authentication {
    /// OAuth 2.0 authorization code flow.
    Oauth2,
    /// OAuth 2.0 client credentials grant (RFC 6749 §4.4): the server
    /// obtains and renews the access token itself from the instance's client
    /// id and secret; the `[oauth]` section needs only `token_url`.
    #[serde(rename = "oauth2_client_credentials")]
    Oauth2ClientCredentials,
    /// OAuth 1.0a.
    Oauth1,
    /// A static API key.
    Apikey,
    /// HTTP basic authentication.
    Basic,
    /// Anything else, described by the configuration entries.
    Custom,
}

impl Authentication {
    /// Whether this is an OAuth flavour (the `typeOauth` of the element object).
    pub fn is_oauth(self) -> bool {
        matches!(
            self,
            Authentication::Oauth2
                | Authentication::Oauth2ClientCredentials
                | Authentication::Oauth1
        )
    }

    /// The lower-case name used in TOML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Authentication::Oauth2 => "oauth2",
            Authentication::Oauth2ClientCredentials => "oauth2_client_credentials",
            Authentication::Oauth1 => "oauth1",
            Authentication::Apikey => "apikey",
            Authentication::Basic => "basic",
            Authentication::Custom => "custom",
        }
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    #[default]
    Body,
    /// HTTP Basic `client_id:client_secret`.
    Basic,
    /// A public client (RFC 6749 §2.1, usually with PKCE): `client_id` in the
    /// form body and no client secret; `oauth.api.secret` is not needed.
    None,
}

/// The `[oauth]` section: the provider's endpoints and OAuth quirks.
///
/// Every URL and every parameter value may contain `{name}` placeholders,
/// where `name` is the key of a `[[configuration]]` entry: the value comes
/// from the `oauth/url` request parameter of that name (authorization URL) or
/// from the instance configuration (code exchange, refresh), else from the
/// entry's `default_value`. A placeholder in the host must be a whole label
/// in front of two literal labels (`https://{subdomain}.zendesk.com`) and its
/// value one DNS label; elsewhere in a URL the value is percent-encoded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct OAuthSpec {
    /// Where the user is sent to authorize the application (a URL template).
    /// Required for `oauth2`; not used (leave it out) for
    /// `oauth2_client_credentials`.
    #[serde(default)]
    pub authorization_url: String,
    /// Where an authorization code is exchanged for tokens (a URL template).
    pub token_url: String,
    /// Where a refresh token is exchanged for new tokens (a URL template);
    /// `token_url` when absent.
    #[serde(default)]
    pub refresh_url: Option<String>,
    /// Joins several scopes in the scope parameter; a space by default. The
    /// caller may separate scopes with spaces or commas: they are re-joined
    /// with this separator.
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    /// The name of the authorization URL's scope parameter; `scope` by default
    /// (Slack's user tokens: `user_scope`).
    #[serde(default = "default_scope_param")]
    pub scope_param: String,
    /// Whether to send a PKCE S256 `code_challenge` (RFC 7636); the caller
    /// then gives a code verifier.
    #[serde(default)]
    pub pkce: bool,
    /// Whether the provider requires a `state` parameter: building a URL
    /// without one is refused (it is always sent when given).
    #[serde(default)]
    pub state_required: bool,
    /// How the client authenticates at the token endpoint: `body`
    /// (`client_id` and `client_secret` form fields), `basic` (HTTP Basic) or
    /// `none` (public client: `client_id` only).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Scope used when the caller gives none.
    #[serde(default)]
    pub default_scope: Option<String>,
    /// Extra parameters of the authorization URL, appended in key order after
    /// the standard ones. Values may contain `{name}` placeholders. They may
    /// not redefine a standard parameter (`response_type`, `client_id`,
    /// `redirect_uri`, the scope parameter, `state`, `code_challenge`,
    /// `code_challenge_method`).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// Extra form fields sent to the token endpoint (code exchange and
    /// refresh). Values may contain `{name}` placeholders, which may name
    /// secret entries. They may not redefine a standard field.
    #[serde(default)]
    pub token_params: BTreeMap<String, String>,
    /// Where the token response keeps its fields, for providers whose answer
    /// is nested or differently named. Defaults to RFC 6749's names.
    #[serde(default)]
    pub token_response: TokenResponseSpec,
    /// Further named endpoints an element crate may use (for example a
    /// second authorization URL for a newer flow). Overridable like the others.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,

    // --- format features (issue 13 part 2) ---
    /// The `response_type` of the authorization URL; `code` by default.
    #[serde(default = "default_response_type")]
    pub response_type: String,
    /// Renames standard authorization URL parameters, e.g.
    /// `{ client_id = "client_key", redirect_uri = "redirect_url" }`. Keys:
    /// `response_type`, `client_id`, `redirect_uri`, `state`.
    #[serde(default)]
    pub authorization_param_names: BTreeMap<String, String>,
    /// Standard authorization URL parameters not sent at all, e.g.
    /// `["response_type"]`. Names: `response_type`, `client_id`, `redirect_uri`.
    #[serde(default)]
    pub omit_authorization_params: Vec<String>,
    /// Scopes always requested, whatever the caller asks; the caller's
    /// scopes (or `default_scope`) are added after them.
    #[serde(default)]
    pub fixed_scope: Option<String>,
    /// How token requests (code exchange, refresh) carry their fields:
    /// `form` (POST, `application/x-www-form-urlencoded`, the default),
    /// `json` (POST, a JSON object of strings) or `query` (GET, the fields in
    /// the query string).
    #[serde(default)]
    pub token_request_format: TokenRequestFormat,
    /// The token revocation endpoint (RFC 7009), a URL template; tokens are
    /// revoked, best effort, when an instance is deleted.
    #[serde(default)]
    pub revocation_url: Option<String>,
    /// Values the provider adds to the callback query (QuickBooks' `realmId`,
    /// Shopify's `shop`, Zoho's `accounts-server`): each names a
    /// `[[configuration]]` entry, whose value is taken from `providerData`
    /// (or the callback) and stored in the instance configuration.
    #[serde(default)]
    pub callback_capture: Vec<String>,
}

/// How token requests carry their fields (`token_request_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenRequestFormat {
    /// POST with an `application/x-www-form-urlencoded` body (RFC 6749).
    #[default]
    Form,
    /// POST with a JSON object body.
    Json,
    /// GET with the fields in the query string.
    Query,
}

/// The `[oauth.token_response]` table: where each field of a token response
/// is, as a dotted path into the JSON object (`authed_user.access_token` is
/// the `access_token` member of the `authed_user` object). A key that itself
/// contains dots is found too: the whole path is tried as one key first.
/// When a mapped path is absent from a response, the standard top-level name
/// is tried (a provider that nests its first answer may answer a refresh
/// flat). Responses may also be `application/x-www-form-urlencoded`; then only
/// top-level names exist.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenResponseSpec {
    /// The access token (required in every successful response).
    #[serde(default = "default_access_token_path")]
    pub access_token: String,
    /// The refresh token, if the provider sends one.
    #[serde(default = "default_refresh_token_path")]
    pub refresh_token: String,
    /// Seconds until the access token expires (a number or a numeric string).
    #[serde(default = "default_expires_in_path")]
    pub expires_in: String,
    /// The token type, usually `bearer`.
    #[serde(default = "default_token_type_path")]
    pub token_type: String,
    /// The granted scope.
    #[serde(default = "default_scope_path")]
    pub scope: String,
    /// Further fields kept in the instance configuration: dotted path in the
    /// response = configuration key, e.g.
    /// `keep = { instance_url = "salesforce.instance_url" }`. Each key must be
    /// a `[[configuration]]` entry with `required = false`; templates may then
    /// use it (`{salesforce.instance_url}`).
    #[serde(default)]
    pub keep: BTreeMap<String, String>,
}

impl Default for TokenResponseSpec {
    fn default() -> Self {
        TokenResponseSpec {
            access_token: default_access_token_path(),
            refresh_token: default_refresh_token_path(),
            expires_in: default_expires_in_path(),
            token_type: default_token_type_path(),
            scope: default_scope_path(),
            keep: BTreeMap::new(),
        }
    }
}

impl TokenResponseSpec {
    /// (field name, path) of every mapped field.
    pub(crate) fn paths(&self) -> [(&'static str, &str); 5] {
        [
            ("access_token", &self.access_token),
            ("refresh_token", &self.refresh_token),
            ("expires_in", &self.expires_in),
            ("token_type", &self.token_type),
            ("scope", &self.scope),
        ]
    }
}

fn default_access_token_path() -> String {
    "access_token".to_owned()
}

fn default_refresh_token_path() -> String {
    "refresh_token".to_owned()
}

fn default_expires_in_path() -> String {
    "expires_in".to_owned()
}

fn default_token_type_path() -> String {
    "token_type".to_owned()
}

fn default_scope_path() -> String {
    "scope".to_owned()
}

fn default_response_type() -> String {
    "code".to_owned()
}

fn default_scope_param() -> String {
    "scope".to_owned()
}

impl OAuthSpec {
    /// The refresh endpoint: `refresh_url`, or `token_url` when absent.
    pub fn refresh_url(&self) -> &str {
        self.refresh_url.as_deref().unwrap_or(&self.token_url)
    }

    /// Every optional field of the section, as `oauth.<field>`: what an
    /// element crate may declare unsupported.
    pub(crate) const OPTIONAL_FIELDS: [&'static str; 18] = [
        "oauth.refresh_url",
        "oauth.scope_separator",
        "oauth.scope_param",
        "oauth.pkce",
        "oauth.state_required",
        "oauth.client_auth",
        "oauth.default_scope",
        "oauth.authorization_params",
        "oauth.token_params",
        "oauth.token_response",
        "oauth.endpoints",
        "oauth.response_type",
        "oauth.authorization_param_names",
        "oauth.omit_authorization_params",
        "oauth.fixed_scope",
        "oauth.token_request_format",
        "oauth.revocation_url",
        "oauth.callback_capture",
    ];

    /// The optional fields of the section set to something other than their
    /// default, as `oauth.<field>` (the URLs are always set and not listed).
    pub(crate) fn non_default_fields(&self) -> Vec<&'static str> {
        let set = [
            ("oauth.refresh_url", self.refresh_url.is_some()),
            (
                "oauth.scope_separator",
                self.scope_separator != default_scope_separator(),
            ),
            (
                "oauth.scope_param",
                self.scope_param != default_scope_param(),
            ),
            ("oauth.pkce", self.pkce),
            ("oauth.state_required", self.state_required),
            (
                "oauth.client_auth",
                self.client_auth != ClientAuth::default(),
            ),
            ("oauth.default_scope", self.default_scope.is_some()),
            (
                "oauth.authorization_params",
                !self.authorization_params.is_empty(),
            ),
            ("oauth.token_params", !self.token_params.is_empty()),
            (
                "oauth.token_response",
                self.token_response != TokenResponseSpec::default(),
            ),
            ("oauth.endpoints", !self.endpoints.is_empty()),
            (
                "oauth.response_type",
                self.response_type != default_response_type(),
            ),
            (
                "oauth.authorization_param_names",
                !self.authorization_param_names.is_empty(),
            ),
            (
                "oauth.omit_authorization_params",
                !self.omit_authorization_params.is_empty(),
            ),
            ("oauth.fixed_scope", self.fixed_scope.is_some()),
            (
                "oauth.token_request_format",
                self.token_request_format != TokenRequestFormat::default(),
            ),
            ("oauth.revocation_url", self.revocation_url.is_some()),
            ("oauth.callback_capture", !self.callback_capture.is_empty()),
        ];
        set.into_iter()
            .filter(|(_, is_set)| *is_set)
            .map(|(field, _)| field)
            .collect()
    }
}

fn default_scope_separator() -> String {
    " ".to_owned()
}

pub(crate) fn default_true() -> bool {
    true
}

fn default_config_type() -> String {
    "TEXTFIELD_32".to_owned()
}

/// One `[[configuration]]` entry: a value an instance of the element needs.
///
/// An entry is also what a `{key}` placeholder of a URL or parameter names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(
    deny_unknown_fields,
    rename_all(serialize = "camelCase", deserialize = "snake_case")
)]
pub struct ConfigEntry {
    /// The configuration key, e.g. `oauth.api.key`.
    pub key: String,
    /// A human-readable name.
    pub name: String,
    /// The Cloud Elements field type, e.g. `TEXTFIELD_32`.
    #[serde(rename = "type", default = "default_config_type")]
    pub kind: String,
    /// Whether provisioning fails without it (unless it has a default).
    #[serde(default = "default_true")]
    pub required: bool,
    /// The value used when none is given.
    #[serde(default)]
    pub default_value: Option<String>,
    /// A description for people.
    #[serde(default)]
    pub description: String,
    /// Whether consoles should hide the field.
    #[serde(default)]
    pub hide_from_console: bool,
    /// Whether the value is a secret: masked in responses and encrypted at rest.
    #[serde(default)]
    pub secret: bool,
    /// The only values the entry may take. Required for a placeholder that
    /// is part of a host label or stands in the last two labels of a host
    /// (`https://accounts.zoho.{region_domain}`), so that no value can move
    /// the registrable domain; each value is then one or more dot-separated
    /// host labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_values: Vec<String>,
    /// Whether the value is a whole host name, for self-hosted and
    /// custom-domain providers (`https://{host}/oauth/token`). Only such an
    /// entry may be the whole host of a URL, only after `https://`; its value
    /// must be a DNS name of two labels or more, not an IP literal nor
    /// `localhost`, and within the deployment's `allowed_custom_hosts`
    /// when that list is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub custom_host: bool,
}

/// One element of the catalog: the contents of one `elements/<key>.toml`
/// file. Unknown fields are refused.
#[derive(Deserialize)]
#[cfg_attr(feature = "schema", derive(JsonSchema))]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "schema", schemars(title = "Element", rename = "Element"))]
pub(crate) struct RawSpec {
    /// Unique, stable numeric id. Never reuse or change one: clients store it.
    #[cfg_attr(feature = "schema", schemars(with = "u64", range(min = 1)))]
    pub(crate) id: Spanned<u64>,
    /// Unique key, used in URLs: lower-case ASCII letters, digits, `-` and `_`,
    /// starting with a letter or digit. The file is named `<key>.toml`.
    #[cfg_attr(
        feature = "schema",
        schemars(with = "String", regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))
    )]
    pub(crate) key: Spanned<String>,
    /// Display name.
    pub(crate) name: String,
    /// One-paragraph description.
    pub(crate) description: String,
    /// Other keys that resolve to this element, e.g. the Cloud Elements key
    /// `sfdc` for `salesforce`: same syntax as `key`, unique across every
    /// key and alias of the catalog.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<String>"))]
    pub(crate) aliases: Option<Spanned<Vec<String>>>,
    /// Image path, `elements/provider_<key>.png`.
    pub(crate) image: String,
    /// Whether the element is offered.
    #[serde(default = "default_true")]
    pub(crate) active: bool,
    /// Whether the element is withdrawn.
    #[serde(default)]
    pub(crate) deleted: bool,
    /// Whether a trial account exists.
    #[serde(default)]
    pub(crate) trial_account: bool,
    /// Text shown when connecting an existing account.
    pub(crate) existing_account_description: String,
    /// Text shown about configuring the element.
    pub(crate) config_description: String,
    /// The Cloud Elements hub: `crm`, `marketing`, `helpdesk`, `documents`,
    /// `messaging`, `collaboration`, `finance`, `payments`, `ecommerce`, `social`, ...
    pub(crate) hub: String,
    /// How the element authenticates: `oauth2` and `oauth1` need an `[oauth]`
    /// section; `apikey`, `basic` and `custom` must not have one and describe
    /// their credentials as configuration entries.
    #[cfg_attr(feature = "schema", schemars(with = "Authentication"))]
    pub(crate) authentication: Spanned<Authentication>,
    /// The provider's API base URL, a URL template like the OAuth URLs (e.g.
    /// `https://{subdomain}.freshdesk.com/api/v2`). Optional; informational
    /// for clients and element crates.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<String>"))]
    pub(crate) api_base_url: Option<Spanned<String>>,
    /// OAuth settings; required exactly when `authentication` is an OAuth flavour.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<OAuthSpec>"))]
    pub(crate) oauth: Option<Spanned<OAuthSpec>>,
    /// The configuration an instance needs, one `[[configuration]]` table each.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<ConfigEntry>"))]
    pub(crate) configuration: Vec<Spanned<ConfigEntry>>,
    // --- credential kinds (see crate::credential) ---
    /// How the credential is applied to a provider request (headers, query
    /// parameters, HTTP Basic). Not allowed for `oauth1` (requests are signed).
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::credential::CredentialSpec>")
    )]
    pub(crate) credential: Option<Spanned<crate::credential::CredentialSpec>>,
    /// OAuth 1.0a endpoints; required exactly when `authentication` is `oauth1`.
    #[serde(default)]
    #[cfg_attr(
        feature = "schema",
        schemars(with = "Option<crate::credential::OAuth1Spec>")
    )]
    pub(crate) oauth1: Option<Spanned<crate::credential::OAuth1Spec>>,
    // --- proxy ---
    /// Normalised Cloud Elements hub resources, one `[[resources]]` table
    /// each: `GET /hubs/{hub}/{name}` reaches the provider's `provider_path`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Vec<ResourceSpec>"))]
    pub(crate) resources: Vec<Spanned<ResourceSpec>>,
    /// Per-element proxy settings (`[proxy] max_retries = 2`).
    #[serde(default)]
    pub(crate) proxy: Option<ProxySpec>,
    // --- health: the `[verify]` request ---
    /// A cheap request that tells whether an instance's credential works
    /// (`[verify] method = "GET" path = "/crm/v3/owners?limit=1" expect = [200]`):
    /// run by `POST /instances` and by the background health check. Needs
    /// `api_base_url`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(with = "Option<VerifySpec>"))]
    pub(crate) verify: Option<Spanned<VerifySpec>>,
}

/// A `[[resources]]` entry: a hub path of ours and the provider path it maps to.
/// `{id}`-style segments are carried over by name.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The resource name (`contacts`).
    pub name: String,
    /// The HTTP method (`GET`, `POST`, ...).
    pub method: String,
    /// Our path under the hub (`/contacts`, `/contacts/{id}`).
    pub path: String,
    /// The provider's path, relative to `api_base_url` (`/crm/v3/objects/contacts/{id}`).
    pub provider_path: String,
}

impl ResourceSpec {
    /// Whether the entry is usable: a known method, both paths starting
    /// with `/`, no `..`, `//`, `?` or `#`, placeholders only as whole segments.
    pub fn check(&self) -> Result<(), String> {
        const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
        if !METHODS.contains(&self.method.as_str()) {
            return Err(format!("method must be one of {}", METHODS.join(", ")));
        }
        for (field, p) in [("path", &self.path), ("provider_path", &self.provider_path)] {
            let bad = !p.starts_with('/')
                || p.contains("//")
                || p.split('/').any(|s| s == ".." || s == ".")
                || p.contains(['?', '#', '\\', '%', '@'])
                || p.split('/').any(|s| {
                    s.contains(['{', '}'])
                        && !(s.starts_with('{') && s.ends_with('}') && s.len() > 2)
                });
            if bad {
                return Err(format!(
                    "`{field}` must be an absolute path of plain segments or `{{name}}` segments"
                ));
            }
        }
        Ok(())
    }
}

/// The `[proxy]` table of an element: overrides of the deployment's proxy settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Most retries of an idempotent request (0 turns retries off).
    #[serde(default)]
    pub max_retries: Option<u32>,
}

/// The `[verify]` table of an element: a cheap, side-effect-free request
/// under `api_base_url` that answers one of `expect` when the credential
/// works. A 401 or 403 means the provider rejected the credential; a 5xx or
/// a timeout is a transient failure.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct VerifySpec {
    /// The HTTP method: `GET` (the default), `HEAD` or `POST` (sent without a
    /// body, for APIs whose check is a POST such as Slack's `auth.test`).
    #[serde(default = "default_verify_method")]
    pub method: String,
    /// The path under `api_base_url`, starting with `/`; may carry a query
    /// (`/crm/v3/owners?limit=1`). No placeholders, `..`, `//`, `#`, `\` or `@`.
    pub path: String,
    /// The statuses that mean the credential works, each 200-399; `[200]` by
    /// default.
    #[serde(default = "default_verify_expect")]
    pub expect: Vec<u16>,
}

fn default_verify_method() -> String {
    "GET".to_owned()
}

fn default_verify_expect() -> Vec<u16> {
    vec![200]
}

impl VerifySpec {
    /// The methods a verify request may use.
    pub const METHODS: [&'static str; 3] = ["GET", "HEAD", "POST"];

    /// Checks the table: (field, message) of each problem.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !Self::METHODS.contains(&self.method.as_str()) {
            out.push((
                "method",
                format!(
                    "{:?} is not one of {}",
                    self.method,
                    Self::METHODS.join(", ")
                ),
            ));
        }
        let p = &self.path;
        let (path, _query) = p.split_once('?').unwrap_or((p, ""));
        let bad = !path.starts_with('/')
            || path.contains("//")
            || path.split('/').any(|s| s == ".." || s == ".")
            || p.contains(['#', '\\', '@', '{', '}'])
            || p.chars().any(|c| c.is_whitespace() || c.is_control());
        if bad {
            out.push((
                "path",
                format!(
                    "{p:?} must be an absolute path under api_base_url (starting with `/`, \
                     optionally `?query`), without placeholders, `..`, `//`, `#`, `\\`, `@` or spaces"
                ),
            ));
        }
        if self.expect.is_empty() {
            out.push(("expect", "must list at least one status".into()));
        }
        for status in &self.expect {
            if !(200..=399).contains(status) {
                out.push((
                    "expect",
                    format!("{status} is not a success status (200-399)"),
                ));
            }
        }
        out
    }
}

/// The JSON Schema (draft 2020-12) of a catalog file, generated from the
/// Rust types; their doc comments are the descriptions. Checked in as
/// `docs/element.schema.json`.
#[cfg(feature = "schema")]
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(RawSpec).to_value()
}
