//! The catalog format: the types of one TOML file per element
//! ([`format`]), parsing and checking a file ([`check`]), and `{name}`
//! placeholders ([`template`]). The reference documentation of the format
//! is the doc comment of [`ElementSpec`].

mod check;
pub(crate) mod compact;
mod format;
pub(crate) mod template;

#[cfg(test)]
mod features_tests;

use crate::config::Configuration;
use crate::element::standard;
use crate::oauth::OAuthError;

pub(crate) use check::line_of_field;
pub use check::CatalogError;
#[cfg(feature = "schema")]
pub use format::json_schema;
pub use format::{
    Authentication, ClientAuth, ConfigEntry, OAuthSpec, ProxySpec, ResourceSpec,
    TokenRequestFormat, TokenResponseSpec, VerifySpec,
};
pub use template::check_custom_host;

/// Where a parsed element came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line of `key = ...`.
    pub key_line: usize,
    /// 1-based line of `id = ...`.
    pub id_line: usize,
    /// 1-based line of `aliases = ...` (that of `key` when absent).
    pub aliases_line: usize,
}

/// One element of the catalog, as parsed from its TOML file
/// (`elements/<key>.toml`).
///
/// # The catalog format
///
/// This doc comment and those of [`OAuthSpec`], [`TokenResponseSpec`] and
/// [`ConfigEntry`] are the reference documentation of the format. Field names are `snake_case` in TOML; unknown fields are refused,
/// and every error names the file, the line and the field.
///
/// ```toml
/// id = 43                        # unique, stable numeric id
/// key = "hubspot"                # unique key: lower-case letters, digits, `-`, `_`
/// name = "HubSpot"
/// description = "HubSpot is an inbound marketing software platform ..."
/// image = "elements/provider_hubspot.png"
/// hub = "marketing"              # Cloud Elements hub: crm, marketing, helpdesk, ...
/// authentication = "oauth2"      # oauth2 | oauth2_client_credentials | oauth1 | apikey | basic | custom
/// existing_account_description = "..."
/// config_description = "..."
/// # active = true, deleted = false, trial_account = false are the defaults
/// # api_base_url = "https://{subdomain}.example.com/api"   # optional URL template
///
/// [oauth]                        # required when authentication is oauth2 or oauth1
/// # every URL below may be a template: "https://{subdomain}.zendesk.com/oauth/tokens"
/// authorization_url = "https://app.hubspot.com/auth/authenticate"
/// token_url = "https://api.hubapi.com/oauth/v1/token"
/// refresh_url = "https://api.hubapi.com/auth/v1/refresh"   # default: token_url
/// scope_separator = " "          # default " "
/// pkce = false                   # PKCE S256; default false
/// client_auth = "body"           # body | basic | none; default body
/// scope_param = "scope"          # name of the scope parameter; default "scope"
/// state_required = false         # refuse to build a URL without `state`; default false
///
/// [oauth.authorization_params]   # extra parameters of the authorization URL
/// access_type = "offline"        # values may be templates: audience = "{tenant}"
///
/// [oauth.token_params]           # extra form fields of token requests (templates too)
///
/// [oauth.token_response]         # where the token response keeps its fields
/// access_token = "access_token"  # dotted paths into the JSON object, e.g.
/// refresh_token = "refresh_token" # "authed_user.access_token"; these are the defaults
/// expires_in = "expires_in"
/// token_type = "token_type"
/// scope = "scope"
///
/// [credential]                  # how the credential is applied to a provider request
/// headers = { Authorization = "Bearer {access_token}" }   # the OAuth 2.0 default; apikey:
/// # headers = { X-Api-Key = "{api.key}" }, query = { key = "{api.key}" },
/// # basic = { username = "{api.key}", password = "" }  (see `CredentialSpec`)
///
/// # [oauth1]                     # instead of [oauth] when authentication = "oauth1"
/// # request_token_url = "...", authorize_url = "...", access_token_url = "..."
///
/// [[configuration]]              # one table per configuration entry
/// key = "oauth.api.key"
/// name = "OAuth API Key"
/// type = "TEXTFIELD_32"          # default TEXTFIELD_32
/// required = true                # default true
/// secret = false                 # masked in responses, encrypted at rest; default false
/// description = "..."
/// ```
///
/// URLs and parameter values may contain `{name}` placeholders filled from
/// request parameters or instance configuration (see *Placeholders* below).
/// With the `schema` feature, `json_schema()` gives the JSON Schema of the
/// format (checked in as `docs/element.schema.json`).
///
/// # Placeholders
///
/// ## Syntax
///
/// A placeholder is `{name}`, where `name` is the key of one of the element's
/// `[[configuration]]` entries (letters, digits, `.`, `_`, `-`). The braces
/// have no other meaning: an unmatched `{` or `}` is an error, and there is
/// no escape. Placeholders may appear in `authorization_url`, `token_url`,
/// `refresh_url`, `endpoints`, `api_base_url` and the values of
/// `authorization_params` and `token_params`.
///
/// ## Where the values come from
///
/// - building an authorization URL: the request parameter with that name
///   (`GET .../oauth/url?subdomain=acme`), else the entry's `default_value`;
/// - exchanging a code or refreshing a token: the instance configuration
///   value with that key, else the entry's `default_value`.
///
/// Blank values count as missing. Every missing name is reported at once; no
/// URL is ever built half-filled.
///
/// ## How values are inserted
///
/// Where a placeholder stands decides what its value may be:
///
/// - **in the host** (`https://{subdomain}.zendesk.com/...`): the placeholder
///   must be a whole DNS label of the template's host, and the last two labels
///   of the host must be literal (so the template fixes the domain). The value
///   must be one DNS label: ASCII letters, digits and `-`, 1 to 63 characters,
///   not starting or ending with `-`. `a.b`, `evil.com/x` or `x@y` are refused:
///   a value can never change the domain, the port, the path or add userinfo.
/// - **in the path or the query**: the value is percent-encoded like a query
///   value (only `A-Z a-z 0-9 - . _ *` stay as is), so it cannot add a path
///   segment or a parameter; `.` and `..` are refused in the path.
/// - **in a parameter value** (`authorization_params`, `token_params`): the
///   value is inserted as is; the whole parameter is encoded when it is sent.
///
/// Placeholders cannot appear in the scheme or in a port, and a placeholder
/// naming a `secret = true` entry is refused everywhere but `token_params`
/// (a secret must not end up in a URL that a browser, a proxy or a log sees).
///
/// # Example
///
/// ```
/// use elements_core::{Configuration, ElementSpec};
///
/// let toml = r#"
/// id = 9002
/// key = "tenanted"
/// name = "Tenanted"
/// description = "A provider with one host per tenant"
/// image = "elements/provider_tenanted.png"
/// hub = "crm"
/// authentication = "apikey"
/// existing_account_description = "..."
/// config_description = "..."
/// api_base_url = "https://{subdomain}.tenanted.example/api"
///
/// [[configuration]]
/// key = "subdomain"
/// name = "Subdomain"
/// "#;
/// let spec = ElementSpec::parse("tenanted.toml", toml).unwrap();
/// assert_eq!(spec.placeholders(), ["subdomain"]);
/// let config: Configuration = [("subdomain", "acme")].into_iter().collect();
/// assert_eq!(
///     spec.base_url_for(&config).unwrap().as_deref(),
///     Some("https://acme.tenanted.example/api")
/// );
///
/// // Errors name the file, the line and the field.
/// let errors = ElementSpec::parse("bad.toml", "id = 0\nkey = \"x\"").unwrap_err();
/// assert_eq!(errors[0].to_string(), "bad.toml:1: missing field `name`");
/// ```
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
    /// Other keys that resolve to this element (Cloud Elements' `sfdc`).
    pub aliases: Vec<String>,
    /// Where this spec was read from.
    pub source: Source,
    // --- credential kinds ---
    /// How the credential is applied to provider requests (`[credential]`).
    pub credential: Option<crate::credential::CredentialSpec>,
    /// OAuth 1.0a endpoints; present exactly when `authentication` is `oauth1`.
    pub oauth1: Option<crate::credential::OAuth1Spec>,
    // --- proxy ---
    /// Normalised hub resources (`[[resources]]`).
    pub resources: Vec<ResourceSpec>,
    /// Per-element proxy settings (`[proxy]`).
    pub proxy: Option<ProxySpec>,
    /// health: the request that checks a credential (`[verify]`).
    pub verify: Option<VerifySpec>,
}

impl ElementSpec {
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
        if let Some(o) = &self.oauth1 {
            templates.extend([
                o.request_token_url.as_str(),
                o.authorize_url.as_str(),
                o.access_token_url.as_str(),
            ]);
        }
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
    /// apply); `None` when the element declares none. A missing value is
    /// [`OAuthError::MissingConfiguration`] naming every missing key; a value
    /// that cannot stand where its placeholder is, [`OAuthError::InvalidParameter`].
    pub fn base_url_for(&self, config: &Configuration) -> Result<Option<String>, OAuthError> {
        let Some(url) = &self.api_base_url else {
            return Ok(None);
        };
        let lookup = |name: &str| {
            config
                .get_or_default(&self.configuration, name)
                .map(str::to_owned)
        };
        let check = |name: &str, position, value: &str| self.check_value(name, position, value);
        template::fill_url_checked(url, &lookup, &check)
            .map(Some)
            .map_err(|e| standard::fill_error(e, &[]))
    }

    /// Checks a value against the declarations of its entry: `allowed_values`
    /// (for every placeholder), a restricted host placeholder needs them, a
    /// whole-host placeholder needs `custom_host = true`.
    pub(crate) fn check_value(
        &self,
        name: &str,
        position: template::Position,
        value: &str,
    ) -> Result<(), String> {
        let entry = self.config_entry(name);
        let allowed = entry.map(|e| e.allowed_values.as_slice()).unwrap_or(&[]);
        if !allowed.is_empty() && !allowed.iter().any(|a| a == value) {
            return Err(format!("must be one of {}", allowed.join(", ")));
        }
        match position {
            template::Position::RestrictedHost if allowed.is_empty() => {
                template::refuse_restricted(name, position, value)
            }
            template::Position::WholeHost | template::Position::Origin
                if !entry.is_some_and(|e| e.custom_host) =>
            {
                template::refuse_restricted(name, position, value)
            }
            _ => Ok(()),
        }
    }

    /// Checks the values of the `custom_host` entries (as `lookup` gives
    /// them, entry defaults apply) against [`check_custom_host`] and the
    /// deployment's allow-list; the error is
    /// [`OAuthError::InvalidParameter`] naming the entry and the rule.
    /// Call it wherever configuration is accepted (instance creation and
    /// update, `oauth/url`).
    pub fn check_custom_hosts(
        &self,
        lookup: &dyn Fn(&str) -> Option<String>,
        allowed_domains: &[String],
    ) -> Result<(), OAuthError> {
        for entry in self.configuration.iter().filter(|e| e.custom_host) {
            let value = lookup(&entry.key)
                .filter(|v| !v.trim().is_empty())
                .or_else(|| entry.default_value.clone());
            if let Some(value) = value {
                template::check_custom_origin(&value, allowed_domains).map_err(|reason| {
                    OAuthError::InvalidParameter {
                        name: entry.key.clone(),
                        reason,
                    }
                })?;
            }
        }
        Ok(())
    }

    /// The values of `callback_capture` found in `data` (the `providerData`
    /// of `POST /instances`, or the callback query), as configuration pairs
    /// to store. Each value is checked against the entry's `allowed_values`
    /// and must be at most 255 characters without control characters.
    pub fn captured_values(
        &self,
        data: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, String)>, OAuthError> {
        let Some(oauth) = &self.oauth else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for name in &oauth.callback_capture {
            let Some(value) = data(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            let invalid = |reason: String| OAuthError::InvalidParameter {
                name: name.clone(),
                reason,
            };
            if value.len() > 255 || value.chars().any(char::is_control) {
                return Err(invalid(
                    "must be at most 255 characters without control characters".into(),
                ));
            }
            self.check_value(name, template::Position::Value, &value)
                .map_err(invalid)?;
            if self.config_entry(name).is_some_and(|e| e.custom_host) {
                template::check_custom_origin(&value, &[]).map_err(invalid)?;
            }
            out.push((name.clone(), value));
        }
        Ok(out)
    }
}
