//! Instances: `/instances...`. Every route needs `User` and `Organization`
//! credentials (credentials also accept an `Element` token); another
//! organization's instance is a 404.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use elements_core::{Configuration, Element};
use elements_store::{hash_secret, Instance, InstancePatch, NewInstance, Tokens};

use super::{instance_id, PathParam, QueryPairs};
use crate::auth::{Account, AccountOrInstance};
use crate::body::{check_text, JsonObject};
use crate::error::ApiError;
use crate::wire::{is_secret_key, ConfigurationEntryJson, CreateInstance, InstanceJson, MASK};
use crate::AppState;

pub(crate) mod paging;
pub(crate) mod update;

pub use update::{with_instance_id, INSTANCE_ID};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            api!("/instances"),
            get(paging::list)
                .post(create)
                .patch(update::token_patch)
                .delete(update::token_delete),
        )
        .route(api!("/instances/count"), get(paging::count))
        .route(
            api!("/instances/configuration"),
            get(update::token_configuration),
        )
        .route(
            api!("/instances/{id}"),
            get(show)
                .put(update::put)
                .patch(update::patch)
                .delete(delete),
        )
        .route(
            api!("/instances/{id}/configuration/{config_id}"),
            get(update::entry).patch(update::patch_entry),
        )
        .route(
            api!("/instances/{id}/enabled"),
            axum::routing::put(enable).delete(disable),
        )
        .route(api!("/instances/{id}/configuration"), get(configuration))
        .route(api!("/instances/{id}/credentials"), get(credentials))
}

const MAX_NAME: usize = 200;
const MAX_TAG: usize = 100;
const MAX_TAGS: usize = 50;
pub(crate) const MAX_CONFIG_KEY: usize = 200;
pub(crate) const MAX_CONFIG_VALUE: usize = 8192;

pub(crate) fn spec_of(
    state: &AppState,
    instance: &Instance,
) -> Option<std::sync::Arc<dyn Element>> {
    crate::private_elements::instance_element(state, instance)
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

pub(crate) fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::BadRequest("`name` must not be empty".into()));
    }
    check_text("name", name, MAX_NAME)
}

pub(crate) fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_TAGS} `tags` are allowed"
        )));
    }
    for tag in tags {
        if tag.is_empty() {
            return Err(ApiError::BadRequest(
                "`tags` must not contain empty strings".into(),
            ));
        }
        check_text("tags", tag, MAX_TAG)?;
    }
    Ok(())
}

/// Provisions an instance (the seed's step 2) from `providerData` tokens, a code to exchange, or
/// configuration alone (API-key, basic and client-credential elements).
#[utoipa::path(
    post,
    path = "/elements/api-v2/instances",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("verify" = Option<bool>, Query, description = "`false` skips the element's `[verify]` request; `true` (or leaving it out) keeps the deployment's setting (`verify_on_create`, on by default). Any other value is a 400"),
    ),
    request_body(content = crate::wire::CreateInstance, example = crate::openapi::seed_create_instance),
    responses(
        (status = 200, description = "The new instance, with its `token` (shown only here, never cached)", body = crate::wire::InstanceJson, example = crate::openapi::seed_instance),
        (status = 403, description = "The organization holds its maximum number of instances (`max_instances_per_organization`); delete one first", body = crate::error::ErrorBody),
        (status = 404, description = "No such element; the message suggests close keys", body = crate::error::ErrorBody),
        (status = 409, description = "The element is deactivated for the organization (PUT /elements/{keyOrId}/active re-activates it)", body = crate::error::ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 400, description = "The body or `verify` is wrong (the field is named), required configuration is missing (`missing` lists every key), `oauth.callback.url` is not on the organization's allow-list, the provider refused the code, or the provider rejected the credential in the `[verify]` request", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed during the code exchange or the `[verify]` request", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn create(
    State(state): State<AppState>,
    Account { principal }: Account,
    QueryPairs(query): QueryPairs,
    JsonObject(mut body): JsonObject<CreateInstance>,
) -> Result<Response, ApiError> {
    // compat: no markup in names and tags.
    body.name = crate::markup::strip(&body.name);
    body.tags = body
        .tags
        .map(|tags| tags.iter().map(|t| crate::markup::strip(t)).collect());
    // The organization's catalog (cached): its elements and its callback
    // allow-list, as `oauth/url` reads them.
    let catalog = crate::private_elements::catalog(&state, principal.organization_id).await?;
    let element: &dyn Element = &*match (&body.element.key, body.element.id) {
        (Some(key), _) => crate::private_elements::usable_in(&state, &catalog, key)?,
        (None, Some(id)) => crate::private_elements::usable_in(&state, &catalog, &id.to_string())?,
        (None, None) => {
            return Err(ApiError::BadRequest(
                "`element.key` is required (or `element.id`)".into(),
            ))
        }
    };
    check_name(&body.name)?;
    let tags = body.tags.unwrap_or_else(|| vec![body.name.clone()]);
    check_tags(&tags)?;
    let limits = &state.limits;
    if body.configuration.0.len() > limits.max_configuration_entries {
        return Err(ApiError::BadRequest(format!(
            "at most {} `configuration` entries are allowed (max_configuration_entries)",
            limits.max_configuration_entries
        )));
    }
    let mut configuration = Configuration::new();
    for (key, value) in body.configuration.0 {
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
        configuration.insert(key, value);
    }
    let size: usize = configuration.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > limits.max_configuration_bytes {
        return Err(ApiError::BadRequest(format!(
            "`configuration` keys and values total {size} bytes; at most {} are allowed (max_configuration_bytes)",
            limits.max_configuration_bytes
        )));
    }
    element
        .validate_configuration(&configuration)
        .map_err(|m| ApiError::MissingConfiguration(m.keys))?;
    if let Some(callback) = configuration.get(elements_core::keys::CALLBACK_URL) {
        super::organizations::allowed(&catalog.callback_urls, callback)?;
    }

    let provider_data = body.provider_data.unwrap_or_default();
    // leftovers: callback values and kept token fields from `providerData`.
    configuration.extend(crate::credentials::provider_data_values(
        element,
        &provider_data,
    )?);
    // format: custom hosts must pass the rules and the allow-list.
    element.spec().check_custom_hosts(
        &|k| configuration.get(k).map(str::to_owned),
        &state.allowed_custom_hosts,
    )?;
    if let Some(verifier) = &provider_data.code_verifier {
        crate::pkce::check_code_verifier(verifier.expose(), "providerData.code_verifier")?;
    }
    let provision = crate::credentials::provision(&state, element, provider_data)?;
    let verify = crate::health_check::wanted(&state, &query)?;
    let (instance, token) = provision_for(
        &state,
        Owner {
            organization_id: principal.organization_id,
            user_id: principal.user.id,
            user: Some(&principal.user),
        },
        element,
        (body.name, tags),
        configuration,
        provision,
        verify,
    )
    .await?;
    // The answer carries the instance token: never cached.
    Ok(crate::headers::no_store(
        Json(InstanceJson::new(
            &instance,
            Some(element.spec()),
            Some(&token),
        ))
        .into_response(),
    ))
}

/// Stores a new instance of `element` for `(organization id, user id)`:
/// checks the organization's instance limit, then obtains the credential
/// as `provision` says, runs the element's `[verify]` request with it when
/// `verify` (health_check.rs; nothing is stored if the provider rejects
/// it) and inserts. Answers the instance and its `Element`
/// token. Shared by `POST /instances` and the hosted connect flow (connect/).
pub(crate) async fn provision_instance(
    state: &AppState,
    (organization_id, user_id): (i64, i64),
    element: &dyn Element,
    name_and_tags: (String, Vec<String>),
    configuration: Configuration,
    how: crate::credentials::Provision,
    verify: bool,
) -> Result<(Instance, String), ApiError> {
    let owner = Owner {
        organization_id,
        user_id,
        user: None,
    };
    provision_for(
        state,
        owner,
        element,
        name_and_tags,
        configuration,
        how,
        verify,
    )
    .await
}

/// Who a new instance is for: the organization, the creating user's id
/// and, when the caller has them (an authenticated principal), the user's
/// details, so that the store answers the new instance without reading it
/// back.
struct Owner<'a> {
    organization_id: i64,
    user_id: i64,
    user: Option<&'a elements_store::User>,
}

/// [`provision_instance`] for an [`Owner`].
async fn provision_for(
    state: &AppState,
    Owner {
        organization_id,
        user_id,
        user,
    }: Owner<'_>,
    element: &dyn Element,
    (name, tags): (String, Vec<String>),
    configuration: Configuration,
    provision: crate::credentials::Provision,
    verify: bool,
) -> Result<(Instance, String), ApiError> {
    let cap = state.limits.max_instances_per_organization;
    let checker = (verify && element.spec().verify.is_some()).then(|| state.health_check.clone());
    // The cap: checked before any provider call (a code is spent once, a
    // verify request is wasted) and, for stored tokens and configuration,
    // only by the store's insert (one statement per batch of inserts on
    // SQLite instead of a round trip per request).
    let calls_provider = checker.is_some()
        || matches!(
            provision,
            crate::credentials::Provision::Code(..)
                | crate::credentials::Provision::ClientCredentials
        );
    if calls_provider
        && state
            .store
            .has_at_least_instances(organization_id, cap)
            .await?
    {
        return Err(at_cap(state, organization_id).await);
    }
    let tokens = match &provision {
        crate::credentials::Provision::Tokens(tokens) => tokens.clone(),
        _ => Tokens::default(),
    };
    let token = crate::pkce::random_token(32);
    let new = NewInstance {
        organization_id,
        user_id,
        element_key: element.key().to_owned(),
        element_id: element.id(),
        name,
        tags,
        configuration,
        token_hash: hash_secret(&token),
        tokens,
    };
    let instance = match provision {
        // Exchange and insert finish even if the client hangs up: the code
        // is spent at the provider, the instance exists (see tokens.rs).
        crate::credentials::Provision::Code(code, verifier) => {
            state
                .tokens
                .create_with_code(code, verifier, new, checker)
                .await?
        }
        crate::credentials::Provision::ClientCredentials => {
            state
                .tokens
                .create_with_client_credentials(new, checker)
                .await?
        }
        _ => {
            if let Some(checker) = &checker {
                crate::health_check::check_credential(
                    checker,
                    element.spec(),
                    &new.configuration,
                    &new.tokens,
                )
                .await?;
            }
            match state.store.create_instance_capped(new, user, cap).await {
                Err(elements_store::StoreError::InstanceCap) => {
                    return Err(at_cap(state, organization_id).await)
                }
                other => other?,
            }
        }
    };
    tracing::info!(
        instance_id = instance.id,
        element = element.key(),
        "instance provisioned"
    );
    Ok((instance, token))
}

/// The refusal of a new instance at the organization's cap (counted
/// exactly only for the message).
async fn at_cap(state: &AppState, organization_id: i64) -> ApiError {
    let cap = state.limits.max_instances_per_organization;
    match state.store.count_instances(organization_id).await {
        Ok(count) => ApiError::Forbidden(format!(
            "the organization already has {count} instances, the most allowed \
             (max_instances_per_organization = {cap}); delete one first"
        )),
        Err(e) => e.into(),
    }
}

pub(crate) async fn owned(
    state: &AppState,
    organization_id: i64,
    raw_id: &str,
) -> Result<Instance, ApiError> {
    let id = instance_id(raw_id)?;
    crate::private_elements::catalog(state, organization_id).await?;
    state
        .store
        .instance(organization_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no instance with id {id}")))
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/instances/{id}",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    responses(
        (status = 200, description = "The instance (configuration secrets masked)", body = crate::wire::InstanceJson),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
    )
)]
async fn show(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let instance = owned(&state, principal.organization_id, &id).await?;
    Ok(render(&state, &instance))
}

async fn update(
    state: &AppState,
    organization_id: i64,
    raw_id: &str,
    patch: InstancePatch,
) -> Result<Response, ApiError> {
    let id = instance_id(raw_id)?;
    let instance = state
        .store
        .update_instance(organization_id, id, patch)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no instance with id {id}")))?;
    Ok(render(state, &instance))
}

#[utoipa::path(
    delete,
    path = "/elements/api-v2/instances/{id}",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    responses(
        (status = 200, description = "Deleted (the provider's token is revoked where the element declares how)"),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
    )
)]
async fn delete(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let id = instance_id(&id)?;
    let doomed = state.store.instance(principal.organization_id, id).await?;
    if state
        .store
        .delete_instance(principal.organization_id, id)
        .await?
    {
        crate::revocation::revoke_on_delete(&state, doomed).await;
        Ok(axum::http::StatusCode::OK.into_response())
    } else {
        Err(ApiError::NotFound(format!("no instance with id {id}")))
    }
}

async fn set_disabled(
    state: AppState,
    principal: elements_store::Principal,
    id: String,
    disabled: bool,
) -> Result<Response, ApiError> {
    let patch = InstancePatch {
        disabled: Some(disabled),
        ..Default::default()
    };
    update(&state, principal.organization_id, &id, patch).await
}

#[utoipa::path(
    put,
    path = "/elements/api-v2/instances/{id}/enabled",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    responses(
        (status = 200, description = "Enabled; the instance", body = crate::wire::InstanceJson),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
    )
)]
async fn enable(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, principal, id, false).await
}

#[utoipa::path(
    delete,
    path = "/elements/api-v2/instances/{id}/enabled",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    responses(
        (status = 200, description = "Disabled; the instance", body = crate::wire::InstanceJson),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
    )
)]
async fn disable(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, principal, id, true).await
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/instances/{id}/configuration",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    responses(
        (status = 200, description = "The configuration entries, secrets as `********`", body = Vec<crate::wire::ConfigurationEntryJson>),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
    )
)]
async fn configuration(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let instance = owned(&state, principal.organization_id, &id).await?;
    let element = spec_of(&state, &instance);
    let spec = element.as_deref().map(Element::spec);
    let entries: Vec<ConfigurationEntryJson<'_>> = instance
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
        .collect();
    Ok(Json(entries).into_response())
}

/// Fresh provider credentials for the app, refreshed first when needed.
#[utoipa::path(
    get,
    path = "/elements/api-v2/instances/{id}/credentials",
    tag = "instances",
    security(("UserOrganization" = []), ("ElementToken" = []), ("UserOrganizationElement" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
        ("method" = Option<String>, Query, description = "OAuth 1.0a elements: the method of the request to sign"),
        ("url" = Option<String>, Query, description = "OAuth 1.0a elements: the URL of the request to sign"),
    ),
    responses(
        (status = 200, description = "What the app adds to its provider calls (never cached)", body = crate::openapi::CredentialsSchema),
        (status = 403, description = "The instance is disabled", body = crate::error::ErrorBody),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
        (status = 409, description = "The grant is dead (`invalid_grant`) and the stored token expired, or the element left the catalog", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed during the refresh", body = crate::error::ErrorBody),
    )
)]
async fn credentials(
    State(state): State<AppState>,
    caller: AccountOrInstance,
    PathParam(id): PathParam<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let id = instance_id(&id)?;
    let not_found = || ApiError::NotFound(format!("no instance with id {id}"));
    let instance = match (&caller.principal, &caller.element_token_hash) {
        (_, Some(token)) => {
            let instance = crate::cache::instance_by_token(&state, token).await?;
            let same_org = caller
                .principal
                .as_ref()
                .is_none_or(|p| p.organization_id == instance.organization_id);
            if instance.id != id || !same_org {
                return Err(not_found());
            }
            instance
        }
        (Some(principal), None) => crate::cache::instance(&state, principal.organization_id, id)
            .await?
            .ok_or_else(not_found)?,
        (None, None) => return Err(ApiError::Unauthorized),
    };
    if instance.disabled {
        return Err(ApiError::Forbidden(format!("instance {id} is disabled")));
    }
    crate::credentials::respond(&state, instance, pairs).await
}
