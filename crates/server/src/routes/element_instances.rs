//! compat: `GET` and `POST /elements/{keyOrId}/instances`: the instances of
//! one element, and creating one with the element taken from the path.

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::elements::find;
use super::instances::{self, paging};
use super::{PathParam, QueryPairs};
use crate::auth::Account;
use crate::body::{JsonBody, UniqueMap};
use crate::error::ApiError;
use crate::wire::{ConfigValue, CreateInstance, ElementRef, ProviderData};
use crate::AppState;

/// Routes.
pub fn router() -> Router<AppState> {
    Router::new().route("/elements/{key_or_id}/instances", get(list).post(create))
}

async fn list(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(key_or_id): PathParam<String>,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let key = find(&state, &key_or_id)?.key().to_owned();
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

async fn create(
    State(state): State<AppState>,
    account: Account,
    query: QueryPairs,
    PathParam(key_or_id): PathParam<String>,
    JsonBody(body): JsonBody<CreateAt>,
) -> Result<Response, ApiError> {
    let element = find(&state, &key_or_id)?;
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
    instances::create(State(state), account, query, JsonBody(create)).await
}
