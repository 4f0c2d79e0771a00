//! compat: `GET` and `POST /elements/{keyOrId}/instances`: the instances of
//! one element, and creating one with the element taken from the path.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::instances::{self, paging};
use super::{PathParam, QueryPairs};
use crate::auth::Account;
use crate::body::{JsonObject, UniqueMap};
use crate::error::ApiError;
use crate::wire::{ConfigValue, CreateInstance, ElementRef, ProviderData};
use crate::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new().route(
        api!("/elements/{key_or_id}/instances"),
        get(list).post(create),
    )
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/elements/{key_or_id}/instances",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "hubspot", description = "An element key (`hubspot`) or id (`43`)"),
        ("pageSize" = Option<u32>, Query, minimum = 1, description = "Rows per page (default 200, at most the server's max_page_size)"),
        ("nextPage" = Option<String>, Query, description = "The `Elements-Next-Page-Token` of the previous page"),
        ("searchText" = Option<String>, Query, description = "Matches the instance name"),
        ("tags[]" = Option<Vec<String>>, Query, explode = true, description = "Every tag must match"),
        ("health" = Option<String>, Query, description = "`active`, `degraded`, `invalid` or `disabled`"),
        ("hydrate" = Option<String>, Query, description = "Accepted and ignored (Cloud Elements clients send it)"),
    ),
    responses(
        (status = 200, description = "One page of the organization's instances of this element, newest first", body = Vec<crate::wire::InstanceJson>, headers(
            ("Elements-Returned-Count" = u64, description = "Rows in this page"),
            ("Elements-Next-Page-Token" = String, description = "The cursor of the next page; absent on the last"),
            ("Elements-Total-Count" = u64, description = "The organization's instances (first unfiltered page only)"),
        )),
        (status = 404, description = "No such element; the message suggests close keys", body = crate::error::ErrorBody),
    )
)]
async fn list(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let key = crate::private_elements::lookup(&state, principal.organization_id, &key_or_id)
        .await?
        .key()
        .to_owned();
    paging::list_page(&state, principal.organization_id, pairs, Some(key)).await
}

/// `POST /instances`' body with `element` optional: the path names it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateAt {
    #[serde(default)]
    element: Option<ElementRef>,
    #[serde(default)]
    provider_data: Option<ProviderData>,
    #[serde(default)]
    configuration: UniqueMap<ConfigValue>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    name: String,
}

#[utoipa::path(
    post,
    path = "/elements/api-v2/elements/{key_or_id}/instances",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("key_or_id" = String, Path, example = "hubspot", description = "An element key (`hubspot`) or id (`43`)"),
        ("verify" = Option<bool>, Query, description = "`false` skips the element's `[verify]` request; `true` (or leaving it out) keeps the deployment's setting (`verify_on_create`, on by default). Any other value is a 400"),
    ),
    request_body(content = crate::wire::CreateInstance, description = "`POST /instances`' body; `element` may be left out (the path names it)", example = crate::openapi::seed_create_instance),
    responses(
        (status = 200, description = "The new instance, with its `token` (shown only here, never cached)", body = crate::wire::InstanceJson, example = crate::openapi::seed_instance),
        (status = 403, description = "The organization holds its maximum number of instances (`max_instances_per_organization`); delete one first", body = crate::error::ErrorBody),
        (status = 404, description = "No such element; the message suggests close keys", body = crate::error::ErrorBody),
        (status = 409, description = "The element is deactivated for the organization (PUT /elements/{keyOrId}/active re-activates it)", body = crate::error::ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
        (status = 400, description = "The body or `verify` is wrong (the field is named; `element`, if given, must name the path's element), required configuration is missing (`missing` lists every key), `oauth.callback.url` is not on the organization's allow-list, the provider refused the code, or the provider rejected the credential in the `[verify]` request", body = crate::error::ErrorBody),
        (status = 502, description = "The provider failed during the code exchange or the `[verify]` request", body = crate::error::ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    account: Account,
    query: QueryPairs,
    PathParam(key_or_id): PathParam<String>,
    JsonObject(body): JsonObject<CreateAt>,
) -> Result<Response, ApiError> {
    let element = crate::private_elements::lookup_usable(
        &state,
        account.principal.organization_id,
        &key_or_id,
    )
    .await?;
    if let Some(given) = &body.element {
        let same = given.key.as_deref().is_none_or(|k| k == element.key())
            && given.id.is_none_or(|id| id == element.id());
        if !same {
            return Err(ApiError::BadRequest(format!(
                "`element` names another element than the path (`{}`)",
                element.key()
            )));
        }
    }
    let create = CreateInstance {
        element: ElementRef {
            key: Some(element.key().to_owned()),
            id: None,
        },
        provider_data: body.provider_data,
        configuration: body.configuration,
        tags: body.tags,
        name: body.name,
    };
    instances::create(State(state), account, query, JsonObject(create)).await
}
