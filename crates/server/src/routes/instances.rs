//! Instances: `/instances...`. Every route needs `User` and `Organization`
//! credentials (credentials also accept an `Element` token); another
//! organization's instance is a 404.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use elements_core::lenient_seconds;
use elements_core::{Configuration, Element, ElementSpec};
use elements_store::{hash_secret, Instance, InstancePatch, NewInstance, Tokens};

use super::elements::find;
use super::{instance_id, PathParam, QueryPairs};
use crate::auth::{Account, AccountOrInstance};
use crate::body::{check_text, JsonBody};
use crate::error::ApiError;
use crate::tokens::now_seconds;
use crate::wire::{
    is_secret_key, ConfigurationEntryJson, CreateInstance, CredentialsJson, InstanceJson,
    PatchInstance, MASK,
};
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/instances", get(list).post(create))
        .route("/instances/{id}", get(show).patch(patch).delete(delete))
        .route(
            "/instances/{id}/enabled",
            axum::routing::put(enable).delete(disable),
        )
        .route("/instances/{id}/configuration", get(configuration))
        .route("/instances/{id}/credentials", get(credentials))
}

const MAX_NAME: usize = 200;
const MAX_TAG: usize = 100;
const MAX_TAGS: usize = 50;
const MAX_CONFIG_KEY: usize = 200;
const MAX_CONFIG_VALUE: usize = 8192;
/// Ten years: a longer `providerData.expires_in` is refused.
const MAX_EXPIRES_IN: i64 = 10 * 365 * 24 * 3600;

fn spec_of<'a>(state: &'a AppState, instance: &Instance) -> Option<&'a ElementSpec> {
    state
        .registry
        .by_key(&instance.element_key)
        .map(|e| e.spec())
}

fn render(state: &AppState, instance: &Instance) -> Response {
    Json(InstanceJson::new(instance, spec_of(state, instance), None)).into_response()
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::BadRequest("`name` must not be empty".into()));
    }
    check_text("name", name, MAX_NAME)
}

fn check_tags(tags: &[String]) -> Result<(), ApiError> {
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

async fn create(
    State(state): State<AppState>,
    Account { principal }: Account,
    JsonBody(body): JsonBody<CreateInstance>,
) -> Result<Response, ApiError> {
    let element: &dyn Element = match (&body.element.key, body.element.id) {
        (Some(key), _) => find(&state, key)?.as_ref(),
        (None, Some(id)) => find(&state, &id.to_string())?.as_ref(),
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
        super::organizations::check_allowed(&state, principal.organization_id, callback).await?;
    }

    let provider_data = body.provider_data.unwrap_or_default();
    if let Some(verifier) = &provider_data.code_verifier {
        crate::pkce::check_code_verifier(verifier.expose(), "providerData.code_verifier")?;
    }
    let count = state
        .store
        .count_instances(principal.organization_id)
        .await?;
    if count >= limits.max_instances_per_organization {
        return Err(ApiError::Forbidden(format!(
            "the organization already has {count} instances, the most allowed \
             (max_instances_per_organization = {}); delete one first",
            limits.max_instances_per_organization
        )));
    }
    let mut exchange = None;
    let tokens = if let Some(code) = provider_data.code.filter(|c| !c.expose().is_empty()) {
        if element.spec().oauth.is_none() {
            return Err(ApiError::BadRequest(format!(
                "element `{}` does not use OAuth: `providerData.code` is not accepted",
                element.key()
            )));
        }
        exchange = Some((code, provider_data.code_verifier));
        Tokens::default()
    } else if let Some(access_token) = provider_data
        .access_token
        .filter(|t| !t.expose().is_empty())
    {
        let expires_in = match &provider_data.expires_in {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                lenient_seconds(v)
                    .filter(|s| (0..=MAX_EXPIRES_IN).contains(s))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`providerData.expires_in` must be a whole number of seconds from 0 to {MAX_EXPIRES_IN}"
                        ))
                    })?,
            ),
        };
        Tokens {
            access_token: Some(access_token),
            refresh_token: provider_data
                .refresh_token
                .filter(|t| !t.expose().is_empty()),
            token_type: provider_data.token_type,
            expires_at: Some(state.tokens.policy().expires_at(now_seconds(), expires_in)),
        }
    } else if element.spec().oauth.is_some() {
        return Err(ApiError::BadRequest(
            "`providerData` must contain `code` (to exchange) or `access_token`".into(),
        ));
    } else {
        Tokens::default()
    };

    let token = crate::pkce::random_token(32);
    let new = NewInstance {
        organization_id: principal.organization_id,
        user_id: principal.user.id,
        element_key: element.key().to_owned(),
        element_id: element.id(),
        name: body.name,
        tags,
        configuration,
        token_hash: hash_secret(&token),
        tokens,
    };
    let instance = match exchange {
        // Exchange and insert finish even if the client hangs up: the code
        // is spent at the provider, the instance exists (see tokens.rs).
        Some((code, verifier)) => state.tokens.create_with_code(code, verifier, new).await?,
        None => state.store.create_instance(new).await?,
    };
    tracing::info!(
        instance_id = instance.id,
        element = element.key(),
        "instance provisioned"
    );
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

async fn list(
    State(state): State<AppState>,
    Account { principal }: Account,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let mut tags = Vec::new();
    let mut health = None;
    for (name, value) in pairs {
        match name.as_str() {
            "tags[]" | "tags" => tags.push(value),
            "health" => health = Some(super::webhooks::health_filter(&value)?),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{}` (expected `tags[]`)",
                    name.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    check_tags(&tags)?;
    let list = state
        .store
        .list_instances(principal.organization_id, &tags)
        .await?;
    // One unreadable row (a secret under a retired key, say) must not hide
    // the others: it is left out and named in the log.
    for unreadable in &list.unreadable {
        tracing::error!(
            instance_id = unreadable.id,
            error = %unreadable.error,
            "instance left out of the list: it cannot be read"
        );
    }
    let body: Vec<InstanceJson<'_>> = list
        .instances
        .iter()
        .filter(|i| health.is_none_or(|h| i.health.state == h))
        .map(|i| InstanceJson::new(i, spec_of(&state, i), None))
        .collect();
    Ok(Json(body).into_response())
}

async fn owned(state: &AppState, organization_id: i64, raw_id: &str) -> Result<Instance, ApiError> {
    let id = instance_id(raw_id)?;
    state
        .store
        .instance(organization_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no instance with id {id}")))
}

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

async fn patch(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
    JsonBody(body): JsonBody<PatchInstance>,
) -> Result<Response, ApiError> {
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    if let Some(tags) = &body.tags {
        check_tags(tags)?;
    }
    let patch = InstancePatch {
        name: body.name,
        tags: body.tags,
        disabled: None,
    };
    update(&state, principal.organization_id, &id, patch).await
}

async fn delete(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let id = instance_id(&id)?;
    if state
        .store
        .delete_instance(principal.organization_id, id)
        .await?
    {
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

async fn enable(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, principal, id, false).await
}

async fn disable(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    set_disabled(state, principal, id, true).await
}

async fn configuration(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let instance = owned(&state, principal.organization_id, &id).await?;
    let spec = spec_of(&state, &instance);
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

async fn credentials(
    State(state): State<AppState>,
    caller: AccountOrInstance,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let id = instance_id(&id)?;
    let not_found = || ApiError::NotFound(format!("no instance with id {id}"));
    let instance = match (&caller.principal, &caller.element_token) {
        (_, Some(token)) => {
            let instance = state
                .store
                .instance_by_token(&hash_secret(token.expose()))
                .await?
                .ok_or(ApiError::Unauthorized)?;
            let same_org = caller
                .principal
                .as_ref()
                .is_none_or(|p| p.organization_id == instance.organization_id);
            if instance.id != id || !same_org {
                return Err(not_found());
            }
            instance
        }
        (Some(principal), None) => state
            .store
            .instance(principal.organization_id, id)
            .await?
            .ok_or_else(not_found)?,
        (None, None) => return Err(ApiError::Unauthorized),
    };
    if instance.disabled {
        return Err(ApiError::Forbidden(format!("instance {id} is disabled")));
    }
    if instance.tokens.access_token.is_none() {
        return Err(ApiError::BadRequest(format!(
            "instance {id} has no OAuth tokens (element `{}`)",
            instance.element_key
        )));
    }
    let instance = state.tokens.fresh(instance).await?;
    let now = now_seconds();
    let access = instance
        .tokens
        .access_token
        .as_ref()
        .ok_or_else(|| ApiError::Internal("refreshed instance has no access token".into()))?;
    Ok(crate::headers::no_store(
        Json(CredentialsJson {
            instance_id: instance.id,
            access_token: access.expose(),
            token_type: instance.tokens.token_type.as_deref().unwrap_or("bearer"),
            expires_at: instance
                .tokens
                .expires_at
                .map(|at| crate::wire::rfc3339(at * 1000)),
            expires_in: instance.tokens.expires_at.map(|at| (at - now).max(0)),
        })
        .into_response(),
    ))
}
