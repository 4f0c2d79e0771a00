//! compat: `PUT /instances/{id}`, the lenient `PATCH /instances/{id}`,
//! one configuration entry (`GET/PATCH /instances/{id}/configuration/{configId}`),
//! and the routes that take the instance from the `Element` token instead
//! of the path (`GET /instances/configuration`, `PATCH /instances`,
//! `DELETE /instances`).

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use elements_core::{Configuration, Element};
use elements_store::{Instance, ReplaceInstance, Tokens};
use serde::Deserialize;

use super::{check_name, check_tags, owned, spec_of, MAX_CONFIG_KEY, MAX_CONFIG_VALUE};
use crate::auth::{Account, AccountOrInstance};
use crate::body::{check_text, JsonObject, UniqueMap};
use crate::error::ApiError;
use crate::routes::PathParam;
use crate::tokens::now_seconds;
use crate::wire::{
    is_secret_key, ConfigValue, ConfigurationEntryJson, InstanceJson, ProviderData, MASK,
};
use crate::AppState;

/// The instance a response is about.
pub const INSTANCE_ID: &str = "elements-instance-id";

use crate::wire::PatchInstance as UpdateInstance;

/// The body of `PATCH /instances/{id}/configuration/{configId}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PatchEntry {
    /// The new value.
    #[schema(value_type = crate::openapi::ConfigValueSchema)]
    pub property_value: ConfigValue,
}

/// Sets `Elements-Instance-Id` on an instance-scoped answer.
pub fn with_instance_id(mut response: Response, id: i64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(INSTANCE_ID), value);
    }
    response
}

fn render(state: &AppState, instance: &Instance) -> Response {
    with_instance_id(
        Json(InstanceJson::new(
            instance,
            spec_of(state, instance).as_deref().map(Element::spec),
            None,
        ))
        .into_response(),
        instance.id,
    )
}

/// Checks and adds configuration entries onto `into`.
fn merge_configuration(
    state: &AppState,
    into: &mut Configuration,
    given: UniqueMap<ConfigValue>,
) -> Result<(), ApiError> {
    for (key, value) in given.0 {
        if key.is_empty() {
            return Err(ApiError::BadRequest(
                "`configuration` keys must not be empty".into(),
            ));
        }
        check_text("configuration key", &key, MAX_CONFIG_KEY)?;
        let value = value.into_text();
        if value.len() > MAX_CONFIG_VALUE || value.contains('\0') {
            return Err(ApiError::BadRequest(format!(
                "`configuration.{key}` must be at most {MAX_CONFIG_VALUE} bytes without NUL"
            )));
        }
        into.insert(key, value);
    }
    let limits = &state.limits;
    if into.len() > limits.max_configuration_entries {
        return Err(ApiError::BadRequest(format!(
            "at most {} `configuration` entries are allowed (max_configuration_entries)",
            limits.max_configuration_entries
        )));
    }
    let size: usize = into.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > limits.max_configuration_bytes {
        return Err(ApiError::BadRequest(format!(
            "`configuration` keys and values total {size} bytes; at most {} are allowed (max_configuration_bytes)",
            limits.max_configuration_bytes
        )));
    }
    Ok(())
}

/// New tokens from `providerData`: a code exchanged now, or tokens given.
/// `None` when it holds neither.
async fn reprovision(
    state: &AppState,
    element: &dyn Element,
    configuration: &Configuration,
    data: ProviderData,
) -> Result<Option<Tokens>, ApiError> {
    let expires_in = crate::credentials::expires_in(&data)?;
    if let Some(verifier) = &data.code_verifier {
        crate::pkce::check_code_verifier(verifier.expose(), "providerData.code_verifier")?;
    }
    if let Some(code) = data.code.filter(|c| !c.expose().is_empty()) {
        if element.spec().oauth.is_none() {
            return Err(ApiError::BadRequest(format!(
                "element `{}` does not use OAuth: `providerData.code` is not accepted",
                element.key()
            )));
        }
        let verifier = data.code_verifier.as_ref().map(|v| v.expose());
        let tokens = state
            .tokens
            .exchange_code(element, &code, configuration, verifier)
            .await?;
        return Ok(Some(tokens));
    }
    let Some(access_token) = data.access_token.filter(|t| !t.expose().is_empty()) else {
        return Ok(None);
    };
    Ok(Some(Tokens {
        access_token: Some(access_token),
        refresh_token: data.refresh_token.filter(|t| !t.expose().is_empty()),
        token_type: data.token_type,
        expires_at: Some(state.tokens.policy().expires_at(now_seconds(), expires_in)),
    }))
}

/// Applies an update to `instance`. `full`: `PUT` (a name is required and
/// the configuration given replaces the stored one); otherwise `PATCH`
/// (entries given are set, the others kept).
async fn apply(
    state: &AppState,
    instance: Instance,
    body: UpdateInstance,
    full: bool,
) -> Result<Response, ApiError> {
    let updated = apply_instance(state, instance, body, full).await?;
    Ok(render(state, &updated))
}

async fn apply_instance(
    state: &AppState,
    instance: Instance,
    body: UpdateInstance,
    full: bool,
) -> Result<Instance, ApiError> {
    let mut body = body;
    body.name = body.name.map(|n| crate::markup::strip(&n));
    body.tags = body
        .tags
        .map(|tags| tags.iter().map(|t| crate::markup::strip(t)).collect());
    let element =
        crate::private_elements::lookup(state, instance.organization_id, &instance.element_key)
            .await?;
    match &body.name {
        Some(name) => check_name(name)?,
        None if full => return Err(ApiError::BadRequest("`name` is required".into())),
        None => {}
    }
    if let Some(tags) = &body.tags {
        check_tags(tags)?;
    }
    let configuration = match body.configuration {
        Some(given) => {
            let mut configuration = if full {
                Configuration::new()
            } else {
                instance.configuration.clone()
            };
            merge_configuration(state, &mut configuration, given)?;
            element
                .validate_configuration(&configuration)
                .map_err(|m| ApiError::MissingConfiguration(m.keys))?;
            if let Some(callback) = configuration.get(elements_core::keys::CALLBACK_URL) {
                super::super::organizations::check_allowed(
                    state,
                    instance.organization_id,
                    callback,
                )
                .await?;
            }
            Some(configuration)
        }
        None => None,
    };
    let tokens = match body.provider_data {
        Some(data) => {
            let config = configuration.as_ref().unwrap_or(&instance.configuration);
            reprovision(state, element.as_ref(), config, data).await?
        }
        None => None,
    };
    let id = instance.id;
    state
        .store
        .replace_instance(
            instance.organization_id,
            id,
            ReplaceInstance {
                name: body.name,
                tags: body.tags,
                configuration,
                tokens,
            },
        )
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no instance with id {id}")))
}

/// `PUT /instances/{id}`.
#[utoipa::path(
    put,
    path = "/elements/api-v2/instances/{id}",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    request_body(content = crate::wire::PatchInstance, description = "The whole instance: `configuration` replaces all entries; `providerData` re-provisions"),
    responses(
        (status = 200, description = "The updated instance", body = crate::wire::InstanceJson),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed while re-provisioning from a code", body = crate::error::ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
    JsonObject(body): JsonObject<UpdateInstance>,
) -> Result<Response, ApiError> {
    let instance = owned(&state, principal.organization_id, &id).await?;
    apply(&state, instance, body, true).await
}

/// `PATCH /instances/{id}`.
#[utoipa::path(
    patch,
    path = "/elements/api-v2/instances/{id}",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    request_body(content = crate::wire::PatchInstance, description = "What to change: `name`, `tags`, `configuration` entries to set, `providerData`"),
    responses(
        (status = 200, description = "The updated instance", body = crate::wire::InstanceJson),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed while re-provisioning from a code", body = crate::error::ErrorBody),
    )
)]
pub async fn patch(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
    JsonObject(body): JsonObject<UpdateInstance>,
) -> Result<Response, ApiError> {
    let instance = owned(&state, principal.organization_id, &id).await?;
    apply(&state, instance, body, false).await
}

/// The instance of the `Element` token (with an account too, of the same
/// organization). A token of no instance (a deleted one) is a 401.
pub async fn by_token(state: &AppState, caller: &AccountOrInstance) -> Result<Instance, ApiError> {
    let token = caller.element_token_hash.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "this route takes the instance from the `Element` token of the Authorization header"
                .into(),
        )
    })?;
    let instance = state
        .store
        .instance_by_token(token)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    if caller
        .principal
        .as_ref()
        .is_some_and(|p| p.organization_id != instance.organization_id)
    {
        return Err(ApiError::Unauthorized);
    }
    Ok(instance)
}

fn entries<'a>(state: &AppState, instance: &'a Instance) -> Vec<ConfigurationEntryJson<'a>> {
    let element = spec_of(state, instance);
    let spec = element.as_deref().map(Element::spec);
    instance
        .configuration
        .iter()
        .enumerate()
        .map(|(i, (key, value))| ConfigurationEntryJson {
            id: i + 1,
            key,
            property_value: if is_secret_key(spec, key) {
                MASK
            } else {
                value
            },
        })
        .collect()
}

/// `GET /instances/configuration` (instance of the `Element` token).
#[utoipa::path(
    get,
    path = "/elements/api-v2/instances/configuration",
    tag = "instances",
    security(("ElementToken" = []), ("UserOrganizationElement" = [])),
    responses(
        (status = 200, description = "The configuration entries of the token's instance", body = Vec<crate::wire::ConfigurationEntryJson>),
    )
)]
pub async fn token_configuration(
    State(state): State<AppState>,
    caller: AccountOrInstance,
) -> Result<Response, ApiError> {
    let instance = by_token(&state, &caller).await?;
    Ok(with_instance_id(
        Json(entries(&state, &instance)).into_response(),
        instance.id,
    ))
}

/// `PATCH /instances` (instance of the `Element` token).
#[utoipa::path(
    patch,
    path = "/elements/api-v2/instances",
    tag = "instances",
    security(("ElementToken" = []), ("UserOrganizationElement" = [])),
    request_body(content = crate::wire::PatchInstance, description = "What to change in the token's instance"),
    responses(
        (status = 200, description = "The updated instance", body = crate::wire::InstanceJson),
                (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed while re-provisioning from a code", body = crate::error::ErrorBody),
    )
)]
pub async fn token_patch(
    State(state): State<AppState>,
    caller: AccountOrInstance,
    JsonObject(body): JsonObject<UpdateInstance>,
) -> Result<Response, ApiError> {
    let instance = by_token(&state, &caller).await?;
    apply(&state, instance, body, false).await
}

/// `DELETE /instances` (instance of the `Element` token).
#[utoipa::path(
    delete,
    path = "/elements/api-v2/instances",
    tag = "instances",
    security(("ElementToken" = []), ("UserOrganizationElement" = [])),
    responses(
        (status = 200, description = "The token's instance is deleted"),
    )
)]
pub async fn token_delete(
    State(state): State<AppState>,
    caller: AccountOrInstance,
) -> Result<Response, ApiError> {
    let instance = by_token(&state, &caller).await?;
    let (organization_id, id) = (instance.organization_id, instance.id);
    if state.store.delete_instance(organization_id, id).await? {
        crate::revocation::revoke_on_delete(&state, Some(instance.clone())).await;
        Ok(with_instance_id(
            axum::http::StatusCode::OK.into_response(),
            instance.id,
        ))
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn entry_index(instance: &Instance, raw: &str) -> Result<(String, usize), ApiError> {
    let n = raw
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ApiError::BadRequest("configuration id must be a positive integer".into())
        })?;
    instance
        .configuration
        .iter()
        .nth(n - 1)
        .map(|(k, _)| (k.to_owned(), n))
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "instance {} has no configuration entry {n}",
                instance.id
            ))
        })
}

/// `GET /instances/{id}/configuration/{configId}`.
#[utoipa::path(
    get,
    path = "/elements/api-v2/instances/{id}/configuration/{config_id}",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
        ("config_id" = u64, Path, minimum = 1, description = "The entry's position, 1-based, in key order"),
    ),
    responses(
        (status = 200, description = "One configuration entry", body = crate::wire::ConfigurationEntryJson),
        (status = 404, description = "No such instance or entry (another organization's is a 404 too)", body = crate::error::ErrorBody),
    )
)]
pub async fn entry(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam((id, config_id)): PathParam<(String, String)>,
) -> Result<Response, ApiError> {
    let instance = owned(&state, principal.organization_id, &id).await?;
    let (_, n) = entry_index(&instance, &config_id)?;
    let all = entries(&state, &instance);
    let one = all.into_iter().nth(n - 1);
    Ok(with_instance_id(Json(one).into_response(), instance.id))
}

/// `PATCH /instances/{id}/configuration/{configId}`.
#[utoipa::path(
    patch,
    path = "/elements/api-v2/instances/{id}/configuration/{config_id}",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
        ("config_id" = u64, Path, minimum = 1, description = "The entry's position, 1-based, in key order"),
    ),
    request_body(content = PatchEntry, example = json!({"propertyValue": "contacts-rw offline"})),
    responses(
        (status = 200, description = "The entry, updated", body = crate::wire::ConfigurationEntryJson),
        (status = 404, description = "No such instance or entry (another organization's is a 404 too)", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
    )
)]
pub async fn patch_entry(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam((id, config_id)): PathParam<(String, String)>,
    JsonObject(body): JsonObject<PatchEntry>,
) -> Result<Response, ApiError> {
    let instance = owned(&state, principal.organization_id, &id).await?;
    let (key, _) = entry_index(&instance, &config_id)?;
    let mut given = std::collections::BTreeMap::new();
    given.insert(key, body.property_value);
    let update = UpdateInstance {
        configuration: Some(UniqueMap(given)),
        ..UpdateInstance::default()
    };
    let instance = apply_instance(&state, instance, update, false).await?;
    let (_, n) = entry_index(&instance, &config_id)?;
    let one = entries(&state, &instance).into_iter().nth(n - 1);
    Ok(with_instance_id(Json(one).into_response(), instance.id))
}
