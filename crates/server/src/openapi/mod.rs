//! The OpenAPI 3.1 description of the API, generated from the handlers'
//! `#[utoipa::path]` attributes and the wire types' `ToSchema` derives, and
//! its two routes: `GET /elements/api-v2/openapi.json` (the document) and
//! `GET /elements/api-v2/docs` (a reference page rendered on the server from
//! the same document: no script, no CDN).
//!
//! Nothing here is written by hand that the code already says: paths,
//! parameters, bodies and responses come from the attributes next to each
//! handler; this module adds what is global (the three ways to fill the one
//! `Authorization` header, the error responses every route can answer, the
//! seed's examples) and lists the handlers. `tests/openapi.rs` fails when a
//! route is registered that the document lacks.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::AppState;

mod docs;

/// The base path of the API.
pub const BASE: &str = crate::API_PREFIX;

/// The seed's sample `oauthUrl` (hubspot-create-instance.md, step 1).
pub const SEED_OAUTH_URL: &str = "https://app.hubspot.com/auth/authenticate?client_id=123456789d-1234-12e4-bda9-12345b8bf20&portalId=123456&redirect_uri=http%3A%2F%2Fdemonstrab.ly&scope=contacts-rw%20offline";

/// The seed's sample answer of `GET /elements/hubspot/oauth/url`.
pub fn seed_oauth_url() -> Value {
    json!({"element": "hubspot", "oauthUrl": SEED_OAUTH_URL})
}

/// The seed's sample body of `POST /instances` (step 2).
pub fn seed_create_instance() -> Value {
    json!({
        "element": {"key": "hubspot"},
        "providerData": {
            "apikey": "123456789d-1234-12e4-bda9-12345b8bf20",
            "access_token": "<ACCESS_TOKEN RETURNED IN OAUTH EXCHANGE>",
            "refresh_token": "<REFRESH_TOKEN RETURNED IN OAUTH EXCHANGE>",
            "expires_in": "1800"
        },
        "configuration": {
            "oauth.api.key": "123456789d-1234-12e4-bda9-12345b8bf20",
            "oauth.api.secret": "123456",
            "oauth.callback.url": "www.samplecallbackurl.com",
            "oauth.scope": "contacts-rw+offline"
        },
        "tags": ["demo"],
        "name": "Test"
    })
}

/// The seed's sample instance (the answer of `POST /instances`), with the
/// fields this server adds after the seed's.
pub fn seed_instance() -> Value {
    json!({
        "id": 12345,
        "name": "Test",
        "token": "dsPr6AheKIS8pt7rp8E81bSRINFgeEkx9Ftr+7t",
        "element": {
            "id": 43,
            "name": "HubSpot",
            "key": "hubspot",
            "description": "HubSpot is an inbound marketing software platform that helps companies attract visitors, convert leads, and close customers.",
            "image": "elements/provider_hubspot.png",
            "active": true,
            "deleted": false,
            "typeOauth": true,
            "trialAccount": false,
            "existingAccountDescription": "Give your application access to your existing HubSpot accountEnter your credentials and details for your HubSpot Account",
            "configDescription": "If you do not have a HubSpot account, you can create one at HubSpot Signup",
            "hub": "marketing"
        },
        "provisionInteractions": [],
        "valid": true,
        "disabled": false,
        "maxCacheSize": 0,
        "cacheTimeToLive": 0,
        "cachingEnabled": false,
        "tags": ["demo"],
        "createdDate": "2026-01-01T00:00:00Z",
        "user": {"id": 1, "emailAddress": "admin@example.com", "firstName": "", "lastName": ""},
        "configuration": {
            "oauth.api.key": "********",
            "oauth.api.secret": "********",
            "oauth.callback.url": "www.samplecallbackurl.com",
            "oauth.scope": "contacts-rw+offline"
        },
        "health": {"state": "active", "failures": 0, "lastError": null, "since": "2026-01-01T00:00:00Z"}
    })
}

/// `providerData.expires_in`: seconds, as a number or a numeric string.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ExpiresIn {
    /// Seconds.
    Seconds(i64),
    /// Seconds as text (the seed sends `"1800"`).
    Text(String),
}

/// A configuration value: a string; numbers and booleans are taken as text.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ConfigValueSchema {
    /// A string.
    Text(String),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// A value of `POST .../oauth/url`'s body: text, a number or a boolean
/// (taken as text); null is left out.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum OAuthUrlValue {
    /// A string, or null (left out).
    Text(Option<String>),
    /// A number.
    Number(f64),
    /// A boolean.
    Bool(bool),
}

/// One configuration entry of an element (`GET /elements/{keyOrId}/configuration`).
/// Mirrors `elements_core::ConfigEntry`'s JSON (core knows no OpenAPI).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ConfigEntrySchema {
    /// The configuration key, e.g. `oauth.api.key`.
    key: String,
    /// A human-readable name.
    name: String,
    /// The Cloud Elements field type, e.g. `TEXTFIELD_32`.
    #[serde(rename = "type")]
    kind: String,
    /// Whether provisioning fails without it (unless it has a default).
    required: bool,
    /// The value used when none is given (absent when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    default_value: Option<String>,
    /// A description for people.
    description: String,
    /// Whether consoles should hide the field.
    hide_from_console: bool,
    /// Whether the value is a secret: masked in responses, encrypted at rest.
    secret: bool,
    /// The only values the entry may take (absent: any).
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_values: Option<Vec<String>>,
    /// Whether the value is a whole host name (absent: false).
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_host: Option<bool>,
}

/// The answer of `GET /instances/{id}/credentials`: what the app adds to its
/// own provider calls. Which fields appear depends on the element's
/// credential kind (`kind`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CredentialsSchema {
    /// The instance id.
    instance_id: i64,
    /// `oauth2`, `oauth2_client_credentials`, `oauth1`, `apikey`, `basic` or `custom`.
    kind: String,
    /// OAuth 2.0: a fresh access token.
    #[serde(skip_serializing_if = "Option::is_none")]
    access_token: Option<String>,
    /// OAuth 2.0: usually `bearer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<String>,
    /// OAuth 2.0: expiry, RFC 3339 (when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<String>,
    /// OAuth 2.0: seconds until expiry (when known).
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<i64>,
    /// Headers to add to provider calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<std::collections::BTreeMap<String, String>>,
    /// Query parameters to add to provider calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<std::collections::BTreeMap<String, String>>,
}

/// The names of the security schemes (all three fill the one
/// `Authorization` header, as Cloud Elements clients send it).
pub const USER_ORGANIZATION: &str = "UserOrganization";
/// `Authorization: Element <instance token>`.
pub const ELEMENT_TOKEN: &str = "ElementToken";
/// `Authorization: User <secret>, Organization <secret>, Element <token>`.
pub const USER_ORGANIZATION_ELEMENT: &str = "UserOrganizationElement";

struct Global;

impl Modify for Global {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        let scheme = |description: &str| {
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                description,
            )))
        };
        components.add_security_scheme(
            USER_ORGANIZATION,
            scheme(
                "`Authorization: User <user secret>, Organization <organization secret>` \
                 (in either order; the scheme names are case-insensitive). The secrets are \
                 shown once, when the account is created or rotated. Any failure is the same 401.",
            ),
        );
        components.add_security_scheme(
            ELEMENT_TOKEN,
            scheme(
                "`Authorization: Element <instance token>`: the token `POST /instances` \
                 answers once. Accepted alone where a route says so.",
            ),
        );
        components.add_security_scheme(
            USER_ORGANIZATION_ELEMENT,
            scheme(
                "`Authorization: User <user secret>, Organization <organization secret>, \
                 Element <instance token>`: the three in one header, as Cloud Elements \
                 clients send them; the instance must belong to the organization.",
            ),
        );
        document_provider_data_extras(components);
        // The error answers every operation can give, unless its own
        // attribute already describes them.
        let error = |description: &str| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                                "ErrorBody",
                            ))))
                            .build(),
                    )
                    .build(),
            )
        };
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let json_api = op
                    .tags
                    .as_ref()
                    .is_none_or(|t| !t.iter().any(|t| t == "operations"));
                let has_json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                let responses = &mut op.responses.responses;
                let mut add = |code: &str, text: &str| {
                    responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error(text));
                };
                if json_api {
                    add("400", "Bad request: the message names what was wrong");
                    add("405", "Method not allowed on this resource");
                }
                if secured {
                    add(
                        "401",
                        "Invalid or missing credentials (always the same message)",
                    );
                    add(
                        "429",
                        "Too many failed authentications from this client address (`Retry-After`)",
                    );
                }
                if has_json_body {
                    add("413", "The body is larger than the limit (64 KiB)");
                    add(
                        "415",
                        "The body is not JSON (`Content-Type: application/json`)",
                    );
                }
                add("431", "Request headers too large");
            }
        }
        // One handler may serve several methods (the proxy) or paths: give
        // every operation a unique id, `<handler>_<method>` when shared.
        let mut seen = std::collections::BTreeMap::<String, usize>::new();
        for item in doc.paths.paths.values_mut() {
            for op in operations(item) {
                if let Some(id) = &op.operation_id {
                    *seen.entry(id.clone()).or_default() += 1;
                }
            }
        }
        for (path, item) in doc.paths.paths.iter_mut() {
            let slug: String = path
                .trim_start_matches(BASE)
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .join("_");
            let slug = if path.ends_with('/') {
                format!("{slug}_root")
            } else {
                slug
            };
            let methods = [
                "get", "put", "post", "delete", "options", "head", "patch", "trace",
            ];
            let ops = [
                item.get.as_mut(),
                item.put.as_mut(),
                item.post.as_mut(),
                item.delete.as_mut(),
                item.options.as_mut(),
                item.head.as_mut(),
                item.patch.as_mut(),
                item.trace.as_mut(),
            ];
            for (method, op) in methods.iter().zip(ops) {
                let Some(op) = op else { continue };
                let shared = op
                    .operation_id
                    .as_ref()
                    .is_none_or(|id| seen.get(id).copied().unwrap_or(0) > 1);
                if shared {
                    op.operation_id = Some(format!("{method}_{slug}"));
                }
            }
        }
    }
}

/// `ProviderData` is read with its other keys kept apart
/// (`ProviderData::extra`, `#[serde(skip)]`, so the derived schema cannot
/// show them): document them as `additionalProperties`.
fn document_provider_data_extras(components: &mut utoipa::openapi::Components) {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType};
    let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut("ProviderData") else {
        return;
    };
    let extra = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .description(Some(
            "Any other key: a value the element declares, which `POST /instances` (and \
         `POST /elements/{keyOrId}/instances`) stores in the instance's configuration: a value \
         the provider added to the OAuth callback that the element captures \
         (`[oauth] callback_capture`, e.g. QuickBooks' `realmId`), or a token-response field the \
         element keeps (`[oauth.token_response] keep`, e.g. Salesforce's `instance_url`, read \
         with `access_token`) for an app that ran the callback or the code exchange itself. \
         Strings, numbers and booleans are taken as text; keys the element does not declare, \
         and other values, are ignored, as are all other keys in `PUT`/`PATCH /instances/{id}`.",
        ));
    object.additional_properties = Some(Box::new(AdditionalProperties::RefOr(RefOr::T(
        Schema::Object(extra.build()),
    ))));
}

/// The operations of a path item, mutably.
fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "elements",
        description = "A connector registry and OAuth broker compatible with the Cloud Elements \
                       platform API. Errors are `{\"requestId\", \"message\"}` with the right \
                       status; another organization's instance is a 404.",
        license(name = "MIT OR Apache-2.0")
    ),
    modifiers(&Global),
    paths(
        crate::routes::elements::list,
        crate::routes::elements::keys,
        crate::routes::elements::show,
        crate::routes::elements::configuration,
        crate::routes::elements::oauth_url,
        crate::routes::elements::oauth_url_post,
        crate::routes::private_elements::create,
        crate::routes::private_elements::replace,
        crate::routes::private_elements::remove,
        crate::routes::private_elements::activate,
        crate::routes::private_elements::deactivate,
        crate::routes::private_elements::export,
        crate::routes::private_elements::clone,
        crate::routes::element_instances::list,
        crate::routes::element_instances::create,
        crate::routes::instances::paging::list,
        crate::routes::instances::create,
        crate::routes::instances::update::token_patch,
        crate::routes::instances::update::token_delete,
        crate::routes::instances::paging::count,
        crate::routes::instances::update::token_configuration,
        crate::routes::instances::show,
        crate::routes::instances::update::put,
        crate::routes::instances::update::patch,
        crate::routes::instances::delete,
        crate::routes::instances::update::entry,
        crate::routes::instances::update::patch_entry,
        crate::routes::instances::enable,
        crate::routes::instances::disable,
        crate::routes::instances::configuration,
        crate::routes::instances::credentials,
        crate::routes::organizations::list,
        crate::routes::organizations::replace,
        crate::routes::organizations::rotate_organization,
        crate::routes::organizations::rotate_user,
        crate::routes::organizations::rotate_instance_token,
        crate::routes::webhooks::list,
        crate::routes::webhooks::create,
        crate::routes::webhooks::remove,
        crate::routes::webhooks::events,
        crate::routes::webhooks::redeliver,
        instance_proxy_root,
        crate::proxy::instance_proxy,
        crate::proxy::hub_proxy,
        crate::connect::create_session,
        crate::connect::connect_js,
        crate::connect::popup_js,
        crate::connect::page,
        crate::connect::submit,
        crate::connect::authorize,
        crate::connect::callback,
        openapi_json,
        docs_page,
        crate::health::healthz,
        crate::health::readyz,
        crate::metrics::handler,
    ),
    components(schemas(crate::error::ErrorBody, ConfigEntrySchema, ExpiresIn)),
    tags(
        (name = "catalog", description = "The element catalog; no credentials needed"),
        (name = "private-elements", description = "An organization's own elements: create, replace, delete, activate, clone, export"),
        (name = "instances", description = "An organization's instances"),
        (name = "organization", description = "The organization: callback allow-list, secret rotation"),
        (name = "webhooks", description = "Webhook endpoints and the event outbox"),
        (name = "proxy", description = "The API proxy: calls the provider with the instance's credential"),
        (name = "connect", description = "The hosted connect flow"),
        (name = "reference", description = "This description"),
        (name = "operations", description = "Probes and metrics (outside the base path)"),
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

fn document_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().unwrap_or_else(|_| "{}".into()))
}

/// `/instances/{id}/proxy/` (the API's root) is served by the same handler
/// as `/instances/{id}/proxy/{path}`; one attribute describes one path, so
/// this one describes the root.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options, trace),
    path = "/elements/api-v2/instances/{id}/proxy/",
    tag = "proxy",
    security(("UserOrganization" = []), ("ElementToken" = []), ("UserOrganizationElement" = [])),
    params(("id" = i64, Path, minimum = 1, description = "The instance id")),
    responses(
        (status = 200, description = "The provider's answer to its API root, unchanged"),
        (status = 403, description = "The instance is disabled", body = crate::error::ErrorBody),
        (status = 404, description = "No such instance", body = crate::error::ErrorBody),
        (status = 409, description = "The instance's grant is dead", body = crate::error::ErrorBody),
        (status = 502, description = "The provider could not be reached", body = crate::error::ErrorBody),
        (status = 504, description = "The provider did not answer in time", body = crate::error::ErrorBody),
    )
)]
#[allow(dead_code)]
async fn instance_proxy_root() {}

/// The two routes (under `/elements/api-v2`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route(api!("/openapi.json"), get(openapi_json))
        .route(api!("/docs"), get(docs_page))
}

/// The OpenAPI 3.1 document of this server.
#[utoipa::path(
    get,
    path = "/elements/api-v2/openapi.json",
    tag = "reference",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        document_json(),
    )
        .into_response()
}

/// The API reference as one HTML page (operations by tag, parameters,
/// bodies, responses, schemas), rendered from the document.
#[utoipa::path(
    get,
    path = "/elements/api-v2/docs",
    tag = "reference",
    responses((status = 200, description = "The reference page", content_type = "text/html", body = String))
)]
async fn docs_page() -> Response {
    docs::page()
}
