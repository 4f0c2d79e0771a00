//! The compact form of a checked catalog layer: what a build script embeds so
//! that start-up parses no TOML (`elements-catalog`'s built-in catalog).
//!
//! A layer is encoded with postcard as an index (what the registry needs to
//! join layers and what a listing prints: id, key, aliases, the lines of the
//! source, name, hub, authentication) followed by one body per element (the
//! whole [`ElementSpec`]), so a body is decoded only when its element is
//! first used. The form is private to this crate version: it is produced and
//! read by the same code, never stored across versions.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use super::{
    Authentication, ClientAuth, ConfigEntry, ElementSpec, OAuthSpec, ProxySpec, ResourceSpec,
    Source, TokenRequestFormat, TokenResponseSpec, VerifySpec,
};
use crate::credential::{CredentialSpec, OAuth1Spec};

/// One element of the index, borrowed from the encoded layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IndexEntry<'a> {
    pub(crate) id: u64,
    pub(crate) key: &'a str,
    #[serde(borrow)]
    pub(crate) aliases: Vec<&'a str>,
    pub(crate) file: &'a str,
    pub(crate) key_line: usize,
    pub(crate) id_line: usize,
    pub(crate) aliases_line: usize,
    pub(crate) name: &'a str,
    pub(crate) hub: &'a str,
    pub(crate) authentication: Authentication,
    /// The body: `[start, end)` in the bytes after the index.
    start: usize,
    end: usize,
}

/// A decoded index with the bytes of its bodies.
pub(crate) struct Layer<'a> {
    pub(crate) entries: Vec<IndexEntry<'a>>,
    bodies: &'a [u8],
}

impl<'a> Layer<'a> {
    /// Reads the index of an encoded layer (the bodies stay encoded).
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<Self, postcard::Error> {
        let (entries, bodies): (Vec<IndexEntry<'a>>, &'a [u8]) = postcard::take_from_bytes(bytes)?;
        if entries
            .iter()
            .any(|e| e.start > e.end || e.end > bodies.len())
        {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        }
        Ok(Layer { entries, bodies })
    }

    /// The encoded body of an entry.
    pub(crate) fn body(&self, entry: &IndexEntry<'_>) -> &'a [u8] {
        &self.bodies[entry.start..entry.end]
    }
}

/// Encodes checked specs as a layer (in the order given).
pub(crate) fn encode<'s>(specs: impl IntoIterator<Item = &'s ElementSpec>) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut bodies = Vec::new();
    for spec in specs {
        let start = bodies.len();
        bodies.extend(
            postcard::to_allocvec(&Repr::from(spec)).expect("a spec always encodes to memory"),
        );
        entries.push(IndexEntry {
            id: spec.id,
            key: &spec.key,
            aliases: spec.aliases.iter().map(String::as_str).collect(),
            file: &spec.source.file,
            key_line: spec.source.key_line,
            id_line: spec.source.id_line,
            aliases_line: spec.source.aliases_line,
            name: &spec.name,
            hub: &spec.hub,
            authentication: spec.authentication,
            start,
            end: bodies.len(),
        });
    }
    let mut out = postcard::to_allocvec(&entries).expect("an index always encodes to memory");
    out.extend(bodies);
    out
}

/// Decodes one body.
pub(crate) fn decode_body(bytes: &[u8]) -> Result<ElementSpec, postcard::Error> {
    postcard::from_bytes::<Repr>(bytes).map(ElementSpec::from)
}

/// [`ElementSpec`] as postcard sees it: every field, in order. (The spec has
/// no serde form of its own, [`OAuthSpec`] only TOML's, and [`ConfigEntry`]'s
/// is the JSON wire shape, which skips empty fields.)
#[derive(Serialize, Deserialize)]
struct Repr {
    id: u64,
    key: String,
    name: String,
    description: String,
    image: String,
    active: bool,
    deleted: bool,
    trial_account: bool,
    existing_account_description: String,
    config_description: String,
    hub: String,
    authentication: Authentication,
    oauth: Option<OAuthRepr>,
    configuration: Vec<ConfigRepr>,
    api_base_url: Option<String>,
    aliases: Vec<String>,
    file: String,
    key_line: usize,
    id_line: usize,
    aliases_line: usize,
    credential: Option<CredentialSpec>,
    oauth1: Option<OAuth1Spec>,
    resources: Vec<ResourceSpec>,
    proxy: Option<ProxySpec>,
    verify: Option<VerifySpec>,
}

/// [`OAuthSpec`] as postcard sees it (its serde form is TOML's only).
#[derive(Serialize, Deserialize)]
struct OAuthRepr {
    authorization_url: String,
    token_url: String,
    refresh_url: Option<String>,
    scope_separator: String,
    scope_param: String,
    pkce: bool,
    state_required: bool,
    client_auth: ClientAuth,
    default_scope: Option<String>,
    authorization_params: BTreeMap<String, String>,
    token_params: BTreeMap<String, String>,
    token_response: TokenResponseSpec,
    endpoints: BTreeMap<String, String>,
    response_type: String,
    authorization_param_names: BTreeMap<String, String>,
    omit_authorization_params: Vec<String>,
    fixed_scope: Option<String>,
    token_request_format: TokenRequestFormat,
    revocation_url: Option<String>,
    callback_capture: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct ConfigRepr {
    key: String,
    name: String,
    kind: String,
    required: bool,
    default_value: Option<String>,
    description: String,
    hide_from_console: bool,
    secret: bool,
    allowed_values: Vec<String>,
    custom_host: bool,
}

impl From<&ElementSpec> for Repr {
    fn from(spec: &ElementSpec) -> Self {
        // Destructured, so a new field of the spec cannot be forgotten here.
        let ElementSpec {
            id,
            key,
            name,
            description,
            image,
            active,
            deleted,
            trial_account,
            existing_account_description,
            config_description,
            hub,
            authentication,
            oauth,
            configuration,
            api_base_url,
            aliases,
            source:
                Source {
                    file,
                    key_line,
                    id_line,
                    aliases_line,
                },
            credential,
            oauth1,
            resources,
            proxy,
            verify,
        } = spec.clone();
        Repr {
            id,
            key,
            name,
            description,
            image,
            active,
            deleted,
            trial_account,
            existing_account_description,
            config_description,
            hub,
            authentication,
            oauth: oauth.map(OAuthRepr::from),
            configuration: configuration.into_iter().map(ConfigRepr::from).collect(),
            api_base_url,
            aliases,
            file,
            key_line,
            id_line,
            aliases_line,
            credential,
            oauth1,
            resources,
            proxy,
            verify,
        }
    }
}

impl From<Repr> for ElementSpec {
    fn from(r: Repr) -> Self {
        ElementSpec {
            id: r.id,
            key: r.key,
            name: r.name,
            description: r.description,
            image: r.image,
            active: r.active,
            deleted: r.deleted,
            trial_account: r.trial_account,
            existing_account_description: r.existing_account_description,
            config_description: r.config_description,
            hub: r.hub,
            authentication: r.authentication,
            oauth: r.oauth.map(OAuthSpec::from),
            configuration: r.configuration.into_iter().map(ConfigEntry::from).collect(),
            api_base_url: r.api_base_url,
            aliases: r.aliases,
            source: Source {
                file: r.file,
                key_line: r.key_line,
                id_line: r.id_line,
                aliases_line: r.aliases_line,
            },
            credential: r.credential,
            oauth1: r.oauth1,
            resources: r.resources,
            proxy: r.proxy,
            verify: r.verify,
        }
    }
}

impl From<OAuthSpec> for OAuthRepr {
    fn from(o: OAuthSpec) -> Self {
        let OAuthSpec {
            authorization_url,
            token_url,
            refresh_url,
            scope_separator,
            scope_param,
            pkce,
            state_required,
            client_auth,
            default_scope,
            authorization_params,
            token_params,
            token_response,
            endpoints,
            response_type,
            authorization_param_names,
            omit_authorization_params,
            fixed_scope,
            token_request_format,
            revocation_url,
            callback_capture,
        } = o;
        OAuthRepr {
            authorization_url,
            token_url,
            refresh_url,
            scope_separator,
            scope_param,
            pkce,
            state_required,
            client_auth,
            default_scope,
            authorization_params,
            token_params,
            token_response,
            endpoints,
            response_type,
            authorization_param_names,
            omit_authorization_params,
            fixed_scope,
            token_request_format,
            revocation_url,
            callback_capture,
        }
    }
}

impl From<OAuthRepr> for OAuthSpec {
    fn from(r: OAuthRepr) -> Self {
        OAuthSpec {
            authorization_url: r.authorization_url,
            token_url: r.token_url,
            refresh_url: r.refresh_url,
            scope_separator: r.scope_separator,
            scope_param: r.scope_param,
            pkce: r.pkce,
            state_required: r.state_required,
            client_auth: r.client_auth,
            default_scope: r.default_scope,
            authorization_params: r.authorization_params,
            token_params: r.token_params,
            token_response: r.token_response,
            endpoints: r.endpoints,
            response_type: r.response_type,
            authorization_param_names: r.authorization_param_names,
            omit_authorization_params: r.omit_authorization_params,
            fixed_scope: r.fixed_scope,
            token_request_format: r.token_request_format,
            revocation_url: r.revocation_url,
            callback_capture: r.callback_capture,
        }
    }
}

impl From<ConfigEntry> for ConfigRepr {
    fn from(e: ConfigEntry) -> Self {
        let ConfigEntry {
            key,
            name,
            kind,
            required,
            default_value,
            description,
            hide_from_console,
            secret,
            allowed_values,
            custom_host,
        } = e;
        ConfigRepr {
            key,
            name,
            kind,
            required,
            default_value,
            description,
            hide_from_console,
            secret,
            allowed_values,
            custom_host,
        }
    }
}

impl From<ConfigRepr> for ConfigEntry {
    fn from(r: ConfigRepr) -> Self {
        ConfigEntry {
            key: r.key,
            name: r.name,
            kind: r.kind,
            required: r.required,
            default_value: r.default_value,
            description: r.description,
            hide_from_console: r.hide_from_console,
            secret: r.secret,
            allowed_values: r.allowed_values,
            custom_host: r.custom_host,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"id = 7
key = "demo"
aliases = ["dm"]
name = "Demo"
description = "d"
image = "i"
hub = "general"
authentication = "oauth2"
existing_account_description = "e"
config_description = "c"
api_base_url = "https://{subdomain}.demo.test/api"

[oauth]
authorization_url = "https://demo.test/auth"
token_url = "https://demo.test/token"
pkce = true
scope_separator = ","
authorization_params = { audience = "{subdomain}" }

[oauth.token_response]
access_token = "authed_user.access_token"

[credential]
headers = { Authorization = "Bearer {access_token}" }

[[configuration]]
key = "subdomain"
name = "Subdomain"
allowed_values = ["a", "b"]
required = false
default_value = "a"

[[configuration]]
key = "oauth.api.secret"
name = "Secret"
secret = true

[[resources]]
name = "contacts"
method = "GET"
path = "/contacts"
provider_path = "/v3/contacts"

[proxy]
max_retries = 2

[verify]
path = "/me"
expect = [200, 204]
"#;

    #[test]
    fn a_layer_round_trips_every_field_and_its_index() {
        let full = ElementSpec::parse("demo.toml", FULL).unwrap();
        let minimal = ElementSpec::parse(
            "m.toml",
            "id = 9\nkey = \"m\"\nname = \"M\"\ndescription = \"d\"\nimage = \"i\"\n\
             hub = \"h\"\nauthentication = \"apikey\"\nexisting_account_description = \"e\"\n\
             config_description = \"c\"\n",
        )
        .unwrap();
        let bytes = encode([&full, &minimal]);
        let layer = Layer::decode(&bytes).unwrap();
        assert_eq!(layer.entries.len(), 2);
        let e = &layer.entries[0];
        assert_eq!(
            (e.id, e.key, e.file, e.name, e.hub, e.authentication),
            (
                7,
                "demo",
                "demo.toml",
                "Demo",
                "general",
                Authentication::Oauth2
            )
        );
        assert_eq!(e.aliases, ["dm"]);
        assert_eq!(
            (e.key_line, e.id_line, e.aliases_line),
            (
                full.source.key_line,
                full.source.id_line,
                full.source.aliases_line
            )
        );
        assert_eq!((e.key_line, e.id_line, e.aliases_line), (2, 1, 3));
        assert_eq!(decode_body(layer.body(e)).unwrap(), full);
        assert_eq!(decode_body(layer.body(&layer.entries[1])).unwrap(), minimal);
    }

    #[test]
    fn truncated_bytes_are_an_error_not_a_panic() {
        let full = ElementSpec::parse("demo.toml", FULL).unwrap();
        let bytes = encode([&full]);
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            if let Ok(layer) = Layer::decode(&bytes[..cut]) {
                let entry = &layer.entries[0];
                assert!(decode_body(layer.body(entry)).is_err(), "cut at {cut}");
            }
        }
    }
}
