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
//!
//! [oauth]                        # required when authentication is oauth2 or oauth1
//! authorization_url = "https://app.hubspot.com/auth/authenticate"
//! token_url = "https://api.hubapi.com/oauth/v1/token"
//! refresh_url = "https://api.hubapi.com/auth/v1/refresh"   # default: token_url
//! scope_separator = " "          # default " "
//! pkce = false                   # PKCE S256; default false
//! client_auth = "body"           # body | basic; default body
//!
//! [oauth.authorization_params]   # static extra parameters of the authorization URL
//! access_type = "offline"
//!
//! [[configuration]]              # one table per configuration entry
//! key = "oauth.api.key"
//! name = "OAuth API Key"
//! type = "TEXTFIELD_32"          # default TEXTFIELD_32
//! required = true                # default true
//! secret = false                 # masked in responses, encrypted at rest; default false
//! description = "..."
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// How an element authenticates against its provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body.
    #[default]
    Body,
    /// HTTP Basic `client_id:client_secret`.
    Basic,
}

/// The `[oauth]` section: the provider's endpoints and OAuth quirks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSpec {
    /// Where the user is sent to authorize the application.
    pub authorization_url: String,
    /// Where an authorization code is exchanged for tokens.
    pub token_url: String,
    /// Where a refresh token is exchanged for new tokens; `token_url` when absent.
    #[serde(default)]
    pub refresh_url: Option<String>,
    /// Joins several scopes in the `scope` parameter; a space by default.
    #[serde(default = "default_scope_separator")]
    pub scope_separator: String,
    /// Whether to send a PKCE S256 `code_challenge`.
    #[serde(default)]
    pub pkce: bool,
    /// How the client authenticates at the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Scope used when the caller gives none.
    #[serde(default)]
    pub default_scope: Option<String>,
    /// Static extra parameters of the authorization URL, appended in key order.
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// Static extra form fields sent to the token endpoint.
    #[serde(default)]
    pub token_params: BTreeMap<String, String>,
    /// Further named endpoints an element crate may use (for example a
    /// second authorization URL for a newer flow). Overridable like the others.
    #[serde(default)]
    pub endpoints: BTreeMap<String, String>,
}

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
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
    /// Where this spec was read from.
    pub source: Source,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    id: Spanned<u64>,
    key: Spanned<String>,
    name: String,
    description: String,
    image: String,
    #[serde(default = "default_true")]
    active: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    trial_account: bool,
    existing_account_description: String,
    config_description: String,
    hub: String,
    authentication: Spanned<Authentication>,
    #[serde(default)]
    oauth: Option<Spanned<OAuthSpec>>,
    #[serde(default)]
    configuration: Vec<Spanned<ConfigEntry>>,
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
        if let Some(oauth) = &raw.oauth {
            let o = oauth.get_ref();
            let mut urls = vec![
                ("authorization_url", o.authorization_url.as_str()),
                ("token_url", o.token_url.as_str()),
            ];
            urls.extend(o.refresh_url.as_deref().map(|u| ("refresh_url", u)));
            for (field, url) in urls {
                if !url_is_valid(url) {
                    errors.push(err(
                        oauth.span(),
                        format!("field `oauth.{field}`: {url:?} is not an absolute http(s) URL"),
                    ));
                }
            }
            for (name, url) in &o.endpoints {
                if !url_is_valid(url) {
                    errors.push(err(
                        oauth.span(),
                        format!(
                            "field `oauth.endpoints.{name}`: {url:?} is not an absolute http(s) URL"
                        ),
                    ));
                }
            }
        }
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
        }
    }

    /// The configuration entry with this key.
    pub fn config_entry(&self, key: &str) -> Option<&ConfigEntry> {
        self.configuration.iter().find(|e| e.key == key)
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
    fn duplicate_configuration_keys_are_refused() {
        check_err(
            "[[configuration]]\nkey = \"a\"\nname = \"A\"\n[[configuration]]\nkey = \"a\"\nname = \"B\"\n",
            13,
            "declared twice",
        );
    }
}
