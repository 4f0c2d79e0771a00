//! The element object of Cloud Elements' responses: the seed's eleven fields
//! inside an instance, and the fuller view of `GET /elements/{key}` and
//! `elements show`. These are wire shapes, so they live here rather than in
//! `elements-core`; [`ElementJson`] gives them to any [`ElementSpec`].

use elements_core::{ConfigEntry, ElementSpec};
use serde::Serialize;

/// The element object as Cloud Elements returns it inside an instance, field
/// for field in the seed's order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuthenticationView {
    /// The authentication type.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The full element as `GET /elements/{key}` and `elements show` return it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ElementView<'a> {
    /// The seed's eleven fields.
    #[serde(flatten)]
    pub metadata: ElementMetadata<'a>,
    /// The hub.
    pub hub: &'a str,
    /// The authentication type.
    pub authentication: AuthenticationView,
    /// The configuration entries.
    #[schema(value_type = Vec<crate::openapi::ConfigEntrySchema>)]
    pub configuration: &'a [ConfigEntry],
    /// The API base URL template, when the element declares one.
    #[serde(rename = "apiBaseUrl", skip_serializing_if = "Option::is_none")]
    pub api_base_url: Option<&'a str>,
    /// Other keys that resolve to the element (Cloud Elements' `sfdc`), when any.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    #[schema(value_type = Option<Vec<String>>)]
    pub aliases: &'a [String],
}

/// The JSON views of a catalog spec (`spec.metadata()`, `spec.view()`).
pub trait ElementJson {
    /// The element object of Cloud Elements' responses (the seed's eleven fields).
    fn metadata(&self) -> ElementMetadata<'_>;
    /// The fuller element view: metadata plus hub, authentication and configuration.
    fn view(&self) -> ElementView<'_>;
}

impl ElementJson for ElementSpec {
    fn metadata(&self) -> ElementMetadata<'_> {
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

    fn view(&self) -> ElementView<'_> {
        ElementView {
            metadata: self.metadata(),
            hub: &self.hub,
            authentication: AuthenticationView {
                kind: self.authentication.as_str(),
            },
            configuration: &self.configuration,
            api_base_url: self.api_base_url.as_deref(),
            aliases: &self.aliases,
        }
    }
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

    #[test]
    fn metadata_is_the_seeds_eleven_fields() {
        let spec = ElementSpec::parse("demo.toml", MINIMAL).unwrap();
        assert!(!spec.metadata().type_oauth);
        assert_eq!(
            serde_json::to_value(spec.metadata()).unwrap(),
            serde_json::json!({
                "id": 7, "name": "Demo", "key": "demo", "description": "d", "image": "i",
                "active": true, "deleted": false, "typeOauth": false, "trialAccount": false,
                "existingAccountDescription": "e", "configDescription": "c"
            })
        );
    }

    #[test]
    fn view_adds_hub_authentication_configuration_and_base_url() {
        let text = format!(
            "{MINIMAL}api_base_url = \"https://api.example.com/{{tenant}}\"\n\
             [[configuration]]\nkey = \"tenant\"\nname = \"T\"\ndefault_value = \"common\"\n"
        );
        let spec = ElementSpec::parse("demo.toml", &text).unwrap();
        let view = serde_json::to_value(spec.view()).unwrap();
        assert_eq!(view["apiBaseUrl"], "https://api.example.com/{tenant}");
        assert_eq!(view["hub"], "general");
        assert_eq!(
            view["authentication"],
            serde_json::json!({"type": "apikey"})
        );
        assert_eq!(view["configuration"][0]["defaultValue"], "common");
        assert_eq!(view["key"], "demo");
        let plain =
            serde_json::to_value(ElementSpec::parse("demo.toml", MINIMAL).unwrap().view()).unwrap();
        assert!(plain.get("apiBaseUrl").is_none(), "{plain}");
    }

    #[test]
    fn view_lists_aliases() {
        let text = MINIMAL.replace("name = ", "aliases = [\"sfdc\", \"sf\"]\nname = ");
        let spec = ElementSpec::parse("demo.toml", &text).unwrap();
        let view = serde_json::to_value(spec.view()).unwrap();
        assert_eq!(view["aliases"], serde_json::json!(["sfdc", "sf"]));
        let plain =
            serde_json::to_value(ElementSpec::parse("demo.toml", MINIMAL).unwrap().view()).unwrap();
        assert!(plain.get("aliases").is_none(), "{plain}");
    }
}
