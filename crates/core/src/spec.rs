//! The catalog format: one TOML file per element.
//!
//! The doc comments on these types are the reference documentation of the
//! format. Field names are `snake_case` in TOML; unknown fields are refused,
//! and every error names the file, the line and the field.
//!
//! ```toml
//! id = 43                        # unique, stable numeric id
//! key = "hubspot"                # unique key: lower-case letters, digits, `-`, `_`
//! name = "HubSpot"
//! description = "HubSpot is an inbound marketing software platform ..."
//! image = "elements/provider_hubspot.png"
//! hub = "marketing"              # Cloud Elements hub: crm, marketing, helpdesk, ...
//! authentication = "oauth2"      # oauth2 | oauth1 | apikey | basic | custom
//! existing_account_description = "..."
//! config_description = "..."
//! # active = true, deleted = false, trial_account = false are the defaults
//! # api_base_url = "https://{subdomain}.example.com/api"   # optional URL template
//!
//! [oauth]                        # required when authentication is oauth2 or oauth1
//! # every URL below may be a template: "https://{subdomain}.zendesk.com/oauth/tokens"
//! authorization_url = "https://app.hubspot.com/auth/authenticate"
//! token_url = "https://api.hubapi.com/oauth/v1/token"
//! refresh_url = "https://api.hubapi.com/auth/v1/refresh"   # default: token_url
//! scope_separator = " "          # default " "
//! pkce = false                   # PKCE S256; default false
//! client_auth = "body"           # body | basic | none; default body
//! scope_param = "scope"          # name of the scope parameter; default "scope"
//! state_required = false         # refuse to build a URL without `state`; default false
//!
//! [oauth.authorization_params]   # extra parameters of the authorization URL
//! access_type = "offline"        # values may be templates: audience = "{tenant}"
//!
//! [oauth.token_params]           # extra form fields of token requests (templates too)
//!
//! [oauth.token_response]         # where the token response keeps its fields
//! access_token = "access_token"  # dotted paths into the JSON object, e.g.
//! refresh_token = "refresh_token" # "authed_user.access_token"; these are the defaults
//! expires_in = "expires_in"
//! token_type = "token_type"
//! scope = "scope"
//!
//! [[configuration]]              # one table per configuration entry
//! key = "oauth.api.key"
//! name = "OAuth API Key"
//! type = "TEXTFIELD_32"          # default TEXTFIELD_32
//! required = true                # default true
//! secret = false                 # masked in responses, encrypted at rest; default false
//! description = "..."
//! ```
//!
//! URLs and parameter values may contain `{name}` placeholders filled from
//! request parameters or instance configuration: see [`template`] for the
//! syntax and the rules. [`json_schema`] gives the JSON Schema of the format
//! (checked in as `docs/element.schema.json`).

pub mod template;

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::Configuration;

/// How an element authenticates against its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Authentication {
    /// OAuth 2.0 authorization code flow.
    Oauth2,
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
        matches!(self, Authentication::Oauth2 | Authentication::Oauth1)
    }

    /// The lower-case name used in TOML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Authentication::Oauth2 => "oauth2",
            Authentication::Oauth1 => "oauth1",
            Authentication::Apikey => "apikey",
            Authentication::Basic => "basic",
            Authentication::Custom => "custom",
        }
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuthSpec {
    /// Where the user is sent to authorize the application (a URL template).
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
}

/// The `[oauth.token_response]` table: where each field of a token response
/// is, as a dotted path into the JSON object (`authed_user.access_token` is
/// the `access_token` member of the `authed_user` object). A key that itself
/// contains dots is found too: the whole path is tried as one key first.
/// When a mapped path is absent from a response, the standard top-level name
/// is tried (a provider that nests its first answer may answer a refresh
/// flat). Responses may also be `application/x-www-form-urlencoded`; then only
/// top-level names exist.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
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
}

impl Default for TokenResponseSpec {
    fn default() -> Self {
        TokenResponseSpec {
            access_token: default_access_token_path(),
            refresh_token: default_refresh_token_path(),
            expires_in: default_expires_in_path(),
            token_type: default_token_type_path(),
            scope: default_scope_path(),
        }
    }
}

impl TokenResponseSpec {
    /// (field name, path) of every mapped field.
    pub fn paths(&self) -> [(&'static str, &str); 5] {
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

fn default_scope_param() -> String {
    "scope".to_owned()
}

/// Authorization URL parameters the standard flow writes itself.
const STANDARD_AUTHORIZATION_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
];

/// Token endpoint form fields the standard flow writes itself.
const STANDARD_TOKEN_FIELDS: &[&str] = &[
    "grant_type",
    "code",
    "redirect_uri",
    "client_id",
    "client_secret",
    "refresh_token",
    "code_verifier",
];

impl OAuthSpec {
    /// The refresh endpoint: `refresh_url`, or `token_url` when absent.
    pub fn refresh_url(&self) -> &str {
        self.refresh_url.as_deref().unwrap_or(&self.token_url)
    }
}

fn default_scope_separator() -> String {
    " ".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_config_type() -> String {
    "TEXTFIELD_32".to_owned()
}

/// One `[[configuration]]` entry: a value an instance of the element needs.
///
/// An entry is also what a `{key}` placeholder of a URL or parameter names.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
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
}

/// Where a parsed element came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line of `key = ...`.
    pub key_line: usize,
    /// 1-based line of `id = ...`.
    pub id_line: usize,
}

/// One element of the catalog, as parsed from its TOML file.
#[derive(Debug, Clone, PartialEq)]
pub struct ElementSpec {
    /// Unique, stable numeric id (HubSpot is 43).
    pub id: u64,
    /// Unique key, used in URLs (`hubspot`).
    pub key: String,
    /// Display name.
    pub name: String,
    /// One-paragraph description.
    pub description: String,
    /// Image path, e.g. `elements/provider_hubspot.png`.
    pub image: String,
    /// Whether the element is offered.
    pub active: bool,
    /// Whether the element is withdrawn.
    pub deleted: bool,
    /// Whether a trial account exists.
    pub trial_account: bool,
    /// Text shown when connecting an existing account.
    pub existing_account_description: String,
    /// Text shown about configuring the element.
    pub config_description: String,
    /// The Cloud Elements hub (crm, marketing, ...).
    pub hub: String,
    /// How the element authenticates.
    pub authentication: Authentication,
    /// OAuth settings; present exactly when `authentication` is an OAuth flavour.
    pub oauth: Option<OAuthSpec>,
    /// The configuration an instance needs.
    pub configuration: Vec<ConfigEntry>,
    /// The provider's API base URL, a URL template (e.g.
    /// `https://{subdomain}.freshdesk.com/api/v2`); see [`ElementSpec::base_url_for`].
    pub api_base_url: Option<String>,
    /// Where this spec was read from.
    pub source: Source,
}

/// One element of the catalog: the contents of one `elements/<key>.toml`
/// file. Unknown fields are refused.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Element", rename = "Element")]
struct RawSpec {
    /// Unique, stable numeric id. Never reuse or change one: clients store it.
    #[schemars(with = "u64", range(min = 1))]
    id: Spanned<u64>,
    /// Unique key, used in URLs: lower-case ASCII letters, digits, `-` and `_`,
    /// starting with a letter or digit. The file is named `<key>.toml`.
    #[schemars(with = "String", regex(pattern = r"^[a-z0-9][a-z0-9_-]*$"))]
    key: Spanned<String>,
    /// Display name.
    name: String,
    /// One-paragraph description.
    description: String,
    /// Image path, `elements/provider_<key>.png`.
    image: String,
    /// Whether the element is offered.
    #[serde(default = "default_true")]
    active: bool,
    /// Whether the element is withdrawn.
    #[serde(default)]
    deleted: bool,
    /// Whether a trial account exists.
    #[serde(default)]
    trial_account: bool,
    /// Text shown when connecting an existing account.
    existing_account_description: String,
    /// Text shown about configuring the element.
    config_description: String,
    /// The Cloud Elements hub: `crm`, `marketing`, `helpdesk`, `documents`,
    /// `messaging`, `collaboration`, `finance`, `payments`, `ecommerce`, `social`, ...
    hub: String,
    /// How the element authenticates: `oauth2` and `oauth1` need an `[oauth]`
    /// section; `apikey`, `basic` and `custom` must not have one and describe
    /// their credentials as configuration entries.
    #[schemars(with = "Authentication")]
    authentication: Spanned<Authentication>,
    /// The provider's API base URL, a URL template like the OAuth URLs (e.g.
    /// `https://{subdomain}.freshdesk.com/api/v2`). Optional; informational
    /// for clients and element crates.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    api_base_url: Option<Spanned<String>>,
    /// OAuth settings; required exactly when `authentication` is an OAuth flavour.
    #[serde(default)]
    #[schemars(with = "Option<OAuthSpec>")]
    oauth: Option<Spanned<OAuthSpec>>,
    /// The configuration an instance needs, one `[[configuration]]` table each.
    #[serde(default)]
    #[schemars(with = "Vec<ConfigEntry>")]
    configuration: Vec<Spanned<ConfigEntry>>,
}

/// The JSON Schema (draft 2020-12) of a catalog file, generated from the
/// Rust types; their doc comments are the descriptions. Checked in as
/// `docs/element.schema.json`.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(RawSpec).to_value()
}

/// An error in one catalog file: `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogError {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong, naming the field.
    pub message: String,
}

impl fmt::Display for CatalogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

impl std::error::Error for CatalogError {}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn key_is_valid(key: &str) -> bool {
    let mut bytes = key.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_'))
}

fn url_is_valid(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && !url.contains(|c: char| c.is_whitespace() || c.is_control())
}

/// Checks the templates and parameters of one file, collecting errors with
/// the line of the field at fault.
struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    entries: BTreeMap<&'a str, &'a ConfigEntry>,
    errors: Vec<CatalogError>,
}

impl Checker<'_> {
    /// The line of `name = ...` at or after byte `from` (inside `[section]`
    /// when given), else the line of `from`.
    fn line(&self, from: usize, section: Option<&str>, name: &str) -> usize {
        let mut start = from.min(self.text.len());
        if let Some(section) = section {
            if let Some(i) = self.text[start..].find(&format!("[{section}]")) {
                start += i;
            }
        }
        let mut offset = start;
        for line in self.text[start..].split_inclusive('\n') {
            let trimmed = line.trim_start();
            let key = trimmed
                .strip_prefix('"')
                .and_then(|t| t.strip_prefix(name).and_then(|t| t.strip_prefix('"')))
                .or_else(|| trimmed.strip_prefix(name));
            if key.is_some_and(|rest| rest.trim_start().starts_with('=')) {
                return line_of(self.text, offset);
            }
            offset += line.len();
        }
        line_of(self.text, from)
    }

    fn push(&mut self, line: usize, message: String) {
        self.errors.push(CatalogError {
            file: self.file.to_owned(),
            line: Some(line),
            message,
        });
    }

    /// Checks the placeholders of a parsed template against the entries.
    fn placeholders(
        &mut self,
        line: usize,
        field: &str,
        pieces: &[template::Piece<'_>],
        secrets_ok: bool,
    ) {
        for piece in pieces {
            let template::Piece::Placeholder { name, position } = piece else {
                continue;
            };
            match self.entries.get(name).copied() {
                None => self.push(
                    line,
                    format!(
                        "field `{field}`: placeholder `{{{name}}}` names no [[configuration]] \
                         entry (declare one with key = {name:?})"
                    ),
                ),
                Some(entry) if entry.secret && !secrets_ok => self.push(
                    line,
                    format!(
                        "field `{field}`: placeholder `{{{name}}}` names a secret entry; \
                         secrets may only be used in `oauth.token_params`"
                    ),
                ),
                Some(entry) => {
                    let bad_default = entry.default_value.as_deref().filter(|d| {
                        *position == template::Position::Host && !template::is_host_label(d)
                    });
                    if let Some(d) = bad_default {
                        self.push(
                            line,
                            format!(
                                "field `{field}`: the default value {d:?} of `{name}` is not a \
                                 single host name label"
                            ),
                        );
                    }
                }
            }
        }
    }

    fn url(
        &mut self,
        from: usize,
        section: Option<&str>,
        field: &str,
        url: &str,
        secrets_ok: bool,
    ) {
        let name = field.rsplit('.').next().unwrap_or(field);
        let line = self.line(from, section, name);
        if !url_is_valid(url) {
            self.push(
                line,
                format!("field `{field}`: {url:?} is not an absolute http(s) URL"),
            );
            return;
        }
        match template::parse_url(url) {
            Ok(pieces) => self.placeholders(line, field, &pieces, secrets_ok),
            Err(e) => self.push(line, format!("field `{field}`: {e}")),
        }
    }

    fn params(
        &mut self,
        from: usize,
        section: &str,
        params: &BTreeMap<String, String>,
        reserved: &[&str],
        secrets_ok: bool,
    ) {
        for (name, value) in params {
            let field = format!("{section}.{name}");
            let line = self.line(from, Some(section), name);
            if reserved.contains(&name.as_str()) {
                self.push(
                    line,
                    format!("field `{field}`: `{name}` is a standard parameter and is written by the flow itself"),
                );
            }
            match template::parse_value(value) {
                Ok(pieces) => self.placeholders(line, &field, &pieces, secrets_ok),
                Err(e) => self.push(line, format!("field `{field}`: {e}")),
            }
        }
    }

    fn oauth(&mut self, from: usize, o: &OAuthSpec) {
        self.url(
            from,
            None,
            "oauth.authorization_url",
            &o.authorization_url,
            false,
        );
        self.url(from, None, "oauth.token_url", &o.token_url, false);
        if let Some(url) = &o.refresh_url {
            self.url(from, None, "oauth.refresh_url", url, false);
        }
        for (name, url) in &o.endpoints {
            self.url(
                from,
                Some("oauth.endpoints"),
                &format!("oauth.endpoints.{name}"),
                url,
                false,
            );
        }
        let scope_param = o.scope_param.as_str();
        if scope_param.is_empty() || STANDARD_AUTHORIZATION_PARAMS.contains(&scope_param) {
            let line = self.line(from, None, "scope_param");
            self.push(
                line,
                format!(
                    "field `oauth.scope_param`: {scope_param:?} cannot name the scope parameter"
                ),
            );
        }
        let mut reserved = STANDARD_AUTHORIZATION_PARAMS.to_vec();
        reserved.push(scope_param);
        self.params(
            from,
            "oauth.authorization_params",
            &o.authorization_params,
            &reserved,
            false,
        );
        self.params(
            from,
            "oauth.token_params",
            &o.token_params,
            STANDARD_TOKEN_FIELDS,
            true,
        );
        for (name, path) in o.token_response.paths() {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                let line = self.line(from, Some("oauth.token_response"), name);
                self.push(
                    line,
                    format!(
                        "field `oauth.token_response.{name}`: {path:?} is not a dotted path \
                         (names separated by single dots)"
                    ),
                );
            }
        }
    }
}

impl ElementSpec {
    /// Parses one catalog file. `file` is only used in error messages.
    ///
    /// Returns every error found in the file.
    pub fn parse(file: &str, text: &str) -> Result<ElementSpec, Vec<CatalogError>> {
        let err = |span: Range<usize>, message: String| CatalogError {
            file: file.to_owned(),
            line: Some(line_of(text, span.start)),
            message,
        };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            vec![CatalogError {
                file: file.to_owned(),
                line: e.span().map(|s| line_of(text, s.start)),
                message: e.message().trim_end().to_owned(),
            }]
        })?;

        let mut errors = Vec::new();
        if !key_is_valid(raw.key.get_ref()) {
            errors.push(err(
                raw.key.span(),
                format!(
                    "field `key`: {:?} must be lower-case letters, digits, `-` or `_`",
                    raw.key.get_ref()
                ),
            ));
        }
        if *raw.id.get_ref() == 0 {
            errors.push(err(raw.id.span(), "field `id`: must be positive".into()));
        }
        let auth = *raw.authentication.get_ref();
        match (&raw.oauth, auth.is_oauth()) {
            (None, true) => errors.push(err(
                raw.authentication.span(),
                format!(
                    "field `authentication`: `{}` needs an [oauth] section",
                    auth.as_str()
                ),
            )),
            (Some(oauth), false) => errors.push(err(
                oauth.span(),
                format!(
                    "field `oauth`: not allowed when authentication is `{}`",
                    auth.as_str()
                ),
            )),
            _ => {}
        }
        let mut checker = Checker {
            file,
            text,
            entries: raw
                .configuration
                .iter()
                .map(|e| (e.get_ref().key.as_str(), e.get_ref()))
                .collect(),
            errors: Vec::new(),
        };
        if let Some(url) = &raw.api_base_url {
            checker.url(url.span().start, None, "api_base_url", url.get_ref(), false);
        }
        if let Some(oauth) = &raw.oauth {
            checker.oauth(oauth.span().start, oauth.get_ref());
        }
        errors.append(&mut checker.errors);
        let mut seen = BTreeMap::new();
        for entry in &raw.configuration {
            let key = &entry.get_ref().key;
            if key.is_empty() {
                errors.push(err(
                    entry.span(),
                    "field `configuration.key`: must not be empty".into(),
                ));
            }
            if let Some(first) = seen.insert(key.clone(), line_of(text, entry.span().start)) {
                errors.push(err(
                    entry.span(),
                    format!(
                        "field `configuration.key`: {key:?} is declared twice (first on line {first})"
                    ),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        Ok(ElementSpec {
            source: Source {
                file: file.to_owned(),
                key_line: line_of(text, raw.key.span().start),
                id_line: line_of(text, raw.id.span().start),
            },
            id: raw.id.into_inner(),
            key: raw.key.into_inner(),
            name: raw.name,
            description: raw.description,
            image: raw.image,
            active: raw.active,
            deleted: raw.deleted,
            trial_account: raw.trial_account,
            existing_account_description: raw.existing_account_description,
            config_description: raw.config_description,
            hub: raw.hub,
            authentication: auth,
            api_base_url: raw.api_base_url.map(Spanned::into_inner),
            oauth: raw.oauth.map(Spanned::into_inner),
            configuration: raw
                .configuration
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
        })
    }

    /// The element object of Cloud Elements' responses (the seed's eleven fields).
    pub fn metadata(&self) -> ElementMetadata<'_> {
        ElementMetadata {
            id: self.id,
            name: &self.name,
            key: &self.key,
            description: &self.description,
            image: &self.image,
            active: self.active,
            deleted: self.deleted,
            type_oauth: self.authentication.is_oauth(),
            trial_account: self.trial_account,
            existing_account_description: &self.existing_account_description,
            config_description: &self.config_description,
        }
    }

    /// The fuller element view: metadata plus hub, authentication and configuration.
    pub fn view(&self) -> ElementView<'_> {
        ElementView {
            metadata: self.metadata(),
            hub: &self.hub,
            authentication: AuthenticationView {
                kind: self.authentication.as_str(),
            },
            configuration: &self.configuration,
            api_base_url: self.api_base_url.as_deref(),
        }
    }

    /// The configuration entry with this key.
    pub fn config_entry(&self, key: &str) -> Option<&ConfigEntry> {
        self.configuration.iter().find(|e| e.key == key)
    }

    /// The names of every `{name}` placeholder of the spec (URLs, endpoints,
    /// parameters, `api_base_url`), each once, in order of appearance.
    pub fn placeholders(&self) -> Vec<&str> {
        let mut templates: Vec<&str> = Vec::new();
        if let Some(o) = &self.oauth {
            templates.push(&o.authorization_url);
            templates.extend(o.authorization_params.values().map(String::as_str));
            templates.push(&o.token_url);
            templates.extend(o.refresh_url.as_deref());
            templates.extend(o.token_params.values().map(String::as_str));
            templates.extend(o.endpoints.values().map(String::as_str));
        }
        templates.extend(self.api_base_url.as_deref());
        let mut names: Vec<&str> = Vec::new();
        for name in templates.into_iter().flat_map(template::placeholders) {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }

    /// The placeholders of the authorization URL and its parameters: what a
    /// caller of `oauth/url` may (or, without a default, must) pass as
    /// request parameters.
    pub fn authorization_placeholders(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        if let Some(o) = &self.oauth {
            let templates = std::iter::once(o.authorization_url.as_str())
                .chain(o.authorization_params.values().map(String::as_str));
            for name in templates.flat_map(template::placeholders) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// `api_base_url` filled from an instance's configuration (entry defaults
    /// apply); `None` when the element declares none.
    pub fn base_url_for(
        &self,
        config: &Configuration,
    ) -> Result<Option<String>, template::FillError> {
        let Some(url) = &self.api_base_url else {
            return Ok(None);
        };
        let lookup = |name: &str| {
            config
                .get_or_default(&self.configuration, name)
                .map(str::to_owned)
        };
        template::fill_url(url, &lookup).map(Some)
    }
}

/// The element object as Cloud Elements returns it inside an instance, field
/// for field in the seed's order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ElementMetadata<'a> {
    /// Numeric id.
    pub id: u64,
    /// Display name.
    pub name: &'a str,
    /// Key.
    pub key: &'a str,
    /// Description.
    pub description: &'a str,
    /// Image path.
    pub image: &'a str,
    /// Offered.
    pub active: bool,
    /// Withdrawn.
    pub deleted: bool,
    /// Authenticates with OAuth.
    pub type_oauth: bool,
    /// Has a trial account.
    pub trial_account: bool,
    /// Text for connecting an existing account.
    pub existing_account_description: &'a str,
    /// Text about configuration.
    pub config_description: &'a str,
}

/// `{"type": "oauth2"}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AuthenticationView {
    /// The authentication type.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The full element as `GET /elements/{key}` and `elements show` return it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ElementView<'a> {
    /// The seed's eleven fields.
    #[serde(flatten)]
    pub metadata: ElementMetadata<'a>,
    /// The hub.
    pub hub: &'a str,
    /// The authentication type.
    pub authentication: AuthenticationView,
    /// The configuration entries.
    pub configuration: &'a [ConfigEntry],
    /// The API base URL template, when the element declares one.
    #[serde(rename = "apiBaseUrl", skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"id = 7
key = "demo"
name = "Demo"
description = "d"
image = "i"
hub = "general"
authentication = "apikey"
existing_account_description = "e"
config_description = "c"
"#;

    fn check_err(extra: &str, line: usize, needle: &str) {
        let text = format!("{MINIMAL}{extra}");
        let errs = ElementSpec::parse("demo.toml", &text).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.line == Some(line) && e.message.contains(needle)),
            "expected line {line} containing {needle:?}, got {errs:?}"
        );
    }

    #[test]
    fn minimal_parses() {
        let spec = ElementSpec::parse("demo.toml", MINIMAL).unwrap();
        assert_eq!((spec.id, spec.key.as_str()), (7, "demo"));
        assert!(spec.active && !spec.deleted && !spec.metadata().type_oauth);
        assert_eq!(spec.source.key_line, 2);
    }

    #[test]
    fn errors_name_line_and_field() {
        check_err("colour = \"red\"\n", 10, "unknown field `colour`");
        check_err(
            "[[configuration]]\nkey = \"a\"\nname = \"A\"\nsecrets = true\n",
            13,
            "unknown field `secrets`",
        );
        check_err(
            "[oauth]\nauthorization_url = \"https://a\"\ntoken_url = \"https://b\"\n",
            10,
            "field `oauth`",
        );
        let bad_key = MINIMAL.replace("\"demo\"", "\"De mo\"");
        let errs = ElementSpec::parse("x.toml", &bad_key).unwrap_err();
        assert_eq!(errs[0].to_string().split(':').nth(1), Some("2"));
        assert!(errs[0].message.contains("field `key`"));
        let no_oauth = MINIMAL.replace("apikey", "oauth2");
        let errs = ElementSpec::parse("x.toml", &no_oauth).unwrap_err();
        assert_eq!(errs[0].line, Some(7));
        assert!(errs[0].message.contains("[oauth]"));
    }

    #[test]
    fn missing_field_is_named() {
        let text = MINIMAL.replace("name = \"Demo\"\n", "");
        let errs = ElementSpec::parse("x.toml", &text).unwrap_err();
        assert!(errs[0].message.contains("missing field `name`"), "{errs:?}");
    }

    #[test]
    fn templates_are_checked_with_the_line_of_the_field() {
        let oauth = "[oauth]\nauthorization_url = \"https://{sub}.example.com/a\"\n\
                     token_url = \"https://example.com/t\"\n";
        // Line 11: the placeholder names no configuration entry.
        let text = format!("{}{oauth}", MINIMAL.replace("apikey", "oauth2"));
        let errs = ElementSpec::parse("x.toml", &text).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, Some(11));
        assert!(errs[0]
            .message
            .contains("placeholder `{sub}` names no [[configuration]]"));
        // Declared, it parses; a host default must be a label.
        let entry = "[[configuration]]\nkey = \"sub\"\nname = \"S\"\n";
        let ok = format!("{text}{entry}");
        let spec = ElementSpec::parse("x.toml", &ok).unwrap();
        assert_eq!(spec.placeholders(), ["sub"]);
        assert_eq!(spec.authorization_placeholders(), ["sub"]);
        let bad_default = format!("{ok}default_value = \"a.b\"\n");
        let errs = ElementSpec::parse("x.toml", &bad_default).unwrap_err();
        assert!(
            errs[0].message.contains("not a single host name label"),
            "{errs:?}"
        );
        // Secrets stay out of URLs.
        let secret = format!("{ok}secret = true\n");
        let errs = ElementSpec::parse("x.toml", &secret).unwrap_err();
        assert!(errs[0].message.contains("names a secret entry"), "{errs:?}");
        // Placement rules and syntax.
        let domain = text.replace("{sub}.example.com", "{sub}.com");
        let errs = ElementSpec::parse("x.toml", &format!("{domain}{entry}")).unwrap_err();
        assert!(errs[0].message.contains("last two labels"), "{errs:?}");
        let unmatched = text.replace("/a\"", "/{a\"");
        let errs = ElementSpec::parse("x.toml", &format!("{unmatched}{entry}")).unwrap_err();
        assert!(errs[0].message.contains("unmatched `{`"), "{errs:?}");
        assert_eq!(errs[0].line, Some(11));
    }

    #[test]
    fn new_oauth_fields_parse_and_are_checked() {
        let base = MINIMAL.replace("apikey", "oauth2");
        let text = format!(
            "{base}api_base_url = \"https://api.example.com/{{tenant}}\"\n\
             [oauth]\nauthorization_url = \"https://example.com/a\"\n\
             token_url = \"https://example.com/t\"\nclient_auth = \"none\"\n\
             scope_param = \"user_scope\"\nstate_required = true\n\
             [oauth.authorization_params]\naudience = \"{{tenant}}\"\n\
             [oauth.token_params]\nclient_assertion = \"{{key}}\"\n\
             [oauth.token_response]\naccess_token = \"data.token\"\n\
             [[configuration]]\nkey = \"tenant\"\nname = \"T\"\ndefault_value = \"common\"\n\
             [[configuration]]\nkey = \"key\"\nname = \"K\"\nsecret = true\n"
        );
        let spec = ElementSpec::parse("x.toml", &text).unwrap();
        let o = spec.oauth.as_ref().unwrap();
        assert_eq!(o.client_auth, ClientAuth::None);
        assert_eq!(o.scope_param, "user_scope");
        assert!(o.state_required);
        assert_eq!(o.token_response.access_token, "data.token");
        assert_eq!(o.token_response.refresh_token, "refresh_token");
        assert_eq!(spec.placeholders(), ["tenant", "key"]);
        assert_eq!(
            spec.base_url_for(&Configuration::new()).unwrap().as_deref(),
            Some("https://api.example.com/common")
        );
        let view = serde_json::to_value(spec.view()).unwrap();
        assert_eq!(view["apiBaseUrl"], "https://api.example.com/{tenant}");

        let line_of_error = |from: &str, to: &str| {
            let errs = ElementSpec::parse("x.toml", &text.replace(from, to)).unwrap_err();
            (errs[0].line, errs[0].message.clone())
        };
        let (line, msg) = line_of_error("audience = ", "state = ");
        assert_eq!(line, Some(18));
        assert!(msg.contains("`state` is a standard parameter"), "{msg}");
        let (line, msg) = line_of_error("client_assertion", "code");
        assert_eq!(line, Some(20));
        assert!(msg.contains("oauth.token_params.code"), "{msg}");
        let (line, msg) = line_of_error("\"data.token\"", "\"data.\"");
        assert_eq!(line, Some(22));
        assert!(msg.contains("not a dotted path"), "{msg}");
        let (_, msg) = line_of_error("\"user_scope\"", "\"state\"");
        assert!(msg.contains("oauth.scope_param"), "{msg}");
        let (line, msg) = line_of_error("access_token = ", "access_tokens = ");
        assert_eq!(line, Some(22));
        assert!(msg.contains("unknown field `access_tokens`"), "{msg}");
        let (_, msg) = line_of_error("\"none\"", "\"jwt\"");
        assert!(msg.contains("unknown variant `jwt`"), "{msg}");
        // A secret may be used in token_params, not in the API base URL.
        let (line, msg) = line_of_error("example.com/{tenant}", "example.com/{key}");
        assert_eq!(line, Some(10));
        assert!(msg.contains("field `api_base_url`"), "{msg}");
    }

    #[test]
    fn duplicate_configuration_keys_are_refused() {
        check_err(
            "[[configuration]]\nkey = \"a\"\nname = \"A\"\n[[configuration]]\nkey = \"a\"\nname = \"B\"\n",
            13,
            "declared twice",
        );
    }
}
