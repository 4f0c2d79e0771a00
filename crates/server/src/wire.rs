//! JSON wire shapes of requests and responses.

use std::collections::BTreeMap;

use elements_core::{ElementSpec, Secret};
use elements_store::Instance;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::UniqueMap;
use crate::element_view::{ElementJson as _, ElementMetadata};

/// The answer of `GET /elements/{key}/oauth/url` (and `elements oauth-url`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"element": "hubspot", "oauthUrl": crate::openapi::SEED_OAUTH_URL}))]
#[serde(rename_all = "camelCase")]
pub struct OAuthUrlResponse<'a> {
    /// The element key.
    pub element: &'a str,
    /// Where to send the user.
    pub oauth_url: &'a str,
    /// The PKCE verifier, for elements that use PKCE: keep it and send it
    /// back as `providerData.code_verifier` with the code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code_verifier: Option<&'a str>,
}

/// `{"key": "hubspot"}` or `{"id": 43}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ElementRef {
    /// The element key.
    #[serde(default)]
    pub key: Option<String>,
    /// The element id.
    #[serde(default)]
    pub id: Option<u64>,
}

/// `providerData` of `POST /instances`: tokens from the OAuth callback, or
/// a code to exchange. Secrets are [`Secret`]s, so `Debug` never shows them.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct ProviderData {
    /// An authorization code to exchange at the provider.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub code: Option<Secret>,
    /// The PKCE verifier returned by `oauth/url`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub code_verifier: Option<Secret>,
    /// An access token from the callback.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub access_token: Option<Secret>,
    /// A refresh token from the callback.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub refresh_token: Option<Secret>,
    /// Seconds until expiry: a number or a numeric string.
    #[serde(default)]
    #[schema(value_type = Option<crate::openapi::ExpiresIn>)]
    pub expires_in: Option<Value>,
    /// `token_type`.
    #[serde(default)]
    pub token_type: Option<String>,
    /// The client id (the seed sends it; configuration is authoritative).
    #[serde(default)]
    pub apikey: Option<String>,
    /// OAuth 1.0a: the access token of the 3-legged flow.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub oauth_token: Option<Secret>,
    /// OAuth 1.0a: the access token's secret.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub oauth_token_secret: Option<Secret>,
    /// The other keys of `POST /instances` (callback values such as
    /// `realmId`, token-response fields such as `instance_url`), filled by
    /// `credentials::provider_data`; only those the element declares are used.
    #[serde(skip)]
    pub extra: crate::credentials::ExtraKeys,
}

/// A configuration value: a string (numbers and booleans are taken as text).
/// `Debug` never shows it: configuration values may be secrets.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// A string.
    Text(String),
    /// A number, kept as its JSON text.
    Number(serde_json::Number),
    /// A boolean.
    Bool(bool),
}

impl std::fmt::Debug for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(MASK)
    }
}

impl ConfigValue {
    /// The value as text.
    pub fn into_text(self) -> String {
        match self {
            ConfigValue::Text(s) => s,
            ConfigValue::Number(n) => n.to_string(),
            ConfigValue::Bool(b) => b.to_string(),
        }
    }
}

/// The body of `POST /instances`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(example = crate::openapi::seed_create_instance)]
#[serde(rename_all = "camelCase")]
pub struct CreateInstance {
    /// Which element.
    pub element: ElementRef,
    /// Tokens or a code.
    #[serde(default, deserialize_with = "crate::credentials::provider_data")]
    pub provider_data: Option<ProviderData>,
    /// Configuration values.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, crate::openapi::ConfigValueSchema>)]
    pub configuration: UniqueMap<ConfigValue>,
    /// Tags (default: the name).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// The instance name.
    pub name: String,
}

/// The body of `PUT` and `PATCH /instances/{id}` (and `PATCH /instances`
/// with an `Element` token). Fields the update does not change (`id`,
/// `element`, `token`, `valid`, ...) are ignored, as Cloud Elements ignores
/// them: clients send back what they read.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchInstance {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// New tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Configuration: the whole of it (`PUT`) or entries to set (`PATCH`).
    #[serde(default)]
    #[schema(value_type = Option<BTreeMap<String, crate::openapi::ConfigValueSchema>>)]
    pub configuration: Option<UniqueMap<ConfigValue>>,
    /// New tokens or a code: re-provisions the instance.
    #[serde(default)]
    pub provider_data: Option<ProviderData>,
}

/// The user object inside an instance.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserJson<'a> {
    /// Id.
    pub id: i64,
    /// E-mail.
    pub email_address: &'a str,
    /// First name.
    pub first_name: &'a str,
    /// Last name.
    pub last_name: &'a str,
}

/// The element object inside an instance: the seed's eleven fields, then
/// `hub`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct InstanceElement<'a> {
    /// The seed's eleven fields.
    #[serde(flatten)]
    pub metadata: ElementMetadata<'a>,
    /// The element's hub (empty when it left the catalog).
    pub hub: &'a str,
}

/// An instance as the API returns it: the seed's fields first, in order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = crate::openapi::seed_instance)]
#[serde(rename_all = "camelCase")]
pub struct InstanceJson<'a> {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: &'a str,
    /// The instance token: only in the answer to `POST /instances`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<&'a str>,
    /// The element object: the seed's eleven fields, and the element's hub
    /// (as `GET /elements/{keyOrId}` has it; Cloud Elements clients read it).
    pub element: InstanceElement<'a>,
    /// Always empty.
    #[schema(value_type = Vec<Object>)]
    pub provision_interactions: [(); 0],
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
    pub tags: &'a [String],
    /// Creation time, RFC 3339.
    pub created_date: String,
    /// The user who created it.
    pub user: UserJson<'a>,
    /// Configuration, secret values masked.
    pub configuration: BTreeMap<&'a str, &'a str>,
    /// Why the instance is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<&'a str>,
    /// Health (issue 16): `{state, failures, lastError, since}`.
    pub health: HealthJson<'a>,
}

/// An instance's health as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthJson<'a> {
    /// `active`, `degraded`, `invalid` or `disabled`.
    pub state: &'static str,
    /// Transient failures in a row.
    pub failures: i64,
    /// The last failure, or why it is invalid.
    pub last_error: Option<&'a str>,
    /// When the state began, RFC 3339.
    pub since: String,
}

/// The mask shown in place of secret values.
pub const MASK: &str = "********";

/// Whether a configuration value is shown masked: the element declares it
/// secret, or its key names a credential — it contains `secret`,
/// `password`, `passwd`, `token`, `private` or `credential`, or one of its
/// `.`/`_`/`-`-separated words is or ends in `key` (`api.key`, `apikey`,
/// `oauth.api.key`, `api_key`, `accessKey`). `oauth.api.key` is masked as
/// Cloud Elements masks it: a name cannot tell an OAuth client id from
/// ShipStation's `api.key`, which is a password. Client ids named
/// `client_id` are public (they appear in authorization URLs) and shown.
pub fn is_secret_key(spec: Option<&ElementSpec>, key: &str) -> bool {
    if spec
        .and_then(|s| s.config_entry(key))
        .is_some_and(|e| e.secret)
    {
        return true;
    }
    let lower = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "passwd",
        "token",
        "private",
        "credential",
    ]
    .iter()
    .any(|w| lower.contains(w))
        || lower
            .split(['.', '_', '-'])
            .any(|word| word.ends_with("key"))
}

/// Unix milliseconds as RFC 3339.
pub fn rfc3339(unix_millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_millis as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl<'a> InstanceJson<'a> {
    /// Renders a stored instance; `spec` is its element if still in the catalog.
    pub fn new(
        instance: &'a Instance,
        spec: Option<&'a ElementSpec>,
        token: Option<&'a str>,
    ) -> Self {
        let metadata = match spec {
            Some(spec) => spec.metadata(),
            None => ElementMetadata {
                id: instance.element_id,
                name: &instance.element_key,
                key: &instance.element_key,
                description: "",
                image: "",
                active: false,
                deleted: true,
                type_oauth: instance.tokens.access_token.is_some(),
                trial_account: false,
                existing_account_description: "",
                config_description: "",
            },
        };
        let element = InstanceElement {
            metadata,
            hub: spec.map_or("", |spec| spec.hub.as_str()),
        };
        InstanceJson {
            id: instance.id,
            name: &instance.name,
            token,
            element,
            provision_interactions: [],
            valid: instance.valid,
            disabled: instance.disabled,
            max_cache_size: 0,
            cache_time_to_live: 0,
            caching_enabled: false,
            tags: &instance.tags,
            created_date: rfc3339(instance.created_at),
            user: UserJson {
                id: instance.user.id,
                email_address: &instance.user.email,
                first_name: &instance.user.first_name,
                last_name: &instance.user.last_name,
            },
            configuration: instance
                .configuration
                .iter()
                .map(|(k, v)| (k, if is_secret_key(spec, k) { MASK } else { v }))
                .collect(),
            invalid_reason: instance.invalid_reason.as_deref(),
            health: HealthJson {
                state: instance.health.state.as_str(),
                failures: instance.health.failures,
                last_error: instance.health.last_error.as_deref(),
                since: rfc3339(instance.health.since),
            },
        }
    }
}

/// One entry of `GET /instances/{id}/configuration`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationEntryJson<'a> {
    /// Position, 1-based, in key order.
    pub id: usize,
    /// Key.
    pub key: &'a str,
    /// Value, masked when secret.
    pub property_value: &'a str,
}

/// The answer of `GET /instances/{id}/credentials`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsJson<'a> {
    /// The instance id.
    pub instance_id: i64,
    /// A fresh access token.
    pub access_token: &'a str,
    /// Usually `bearer`.
    pub token_type: &'a str,
    /// Expiry, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Seconds until expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_hold_credentials_are_masked() {
        for key in [
            "api.key",
            "apikey",
            "oauth.api.key",
            "API_KEY",
            "accessKey",
            "oauth.api.secret",
            "db.password",
            "refresh_token",
            "private.pem",
            "credentials",
        ] {
            assert!(is_secret_key(None, key), "{key} must be masked");
        }
        for key in [
            "subdomain",
            "oauth.callback.url",
            "oauth.scope",
            "client_id",
            "keyboard.layout",
            "base.url",
        ] {
            assert!(!is_secret_key(None, key), "{key} must be shown");
        }
    }
}
