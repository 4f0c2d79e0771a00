//! compat: `GET /instances` with Cloud Elements' paging, search and tags,
//! and `GET /instances/count`.
//!
//! Paging is a keyset on the store's insertion order (newest first), so a
//! page a million rows deep costs what the first page costs. The cursor is
//! opaque to clients (`Elements-Next-Page-Token`, sent back as `nextPage`).

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use elements_store::PageQuery;
use serde::Serialize;

use super::{check_tags, spec_of};
use crate::auth::Account;
use crate::error::ApiError;
use crate::routes::QueryPairs;
use crate::wire::InstanceJson;
use crate::AppState;

/// How many rows the page holds.
pub const RETURNED_COUNT: &str = "elements-returned-count";
/// How many instances the organization holds (first unfiltered page only).
pub const TOTAL_COUNT: &str = "elements-total-count";
/// The cursor of the next page; absent on the last page.
pub const NEXT_PAGE_TOKEN: &str = "elements-next-page-token";

/// Query parameters Cloud Elements clients send that only shape the
/// response: accepted and ignored.
const IGNORED: &[&str] = &["hydrate"];

const MAX_SEARCH: usize = 200;

fn encode_cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("i1:{seq}"))
}

fn decode_cursor(token: &str) -> Result<i64, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("i1:").and_then(|n| n.parse::<i64>().ok()))
        .filter(|seq| *seq > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(
                "`nextPage` is not a page token from `Elements-Next-Page-Token`".into(),
            )
        })
}

/// `GET /instances?pageSize=&nextPage=&searchText=&tags[]=`.
#[utoipa::path(
    get,
    path = "/elements/api-v2/instances",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("pageSize" = Option<u32>, Query, minimum = 1, description = "Rows per page (default 200, at most the server's max_page_size)"),
        ("nextPage" = Option<String>, Query, description = "The `Elements-Next-Page-Token` of the previous page"),
        ("searchText" = Option<String>, Query, description = "Matches the instance name"),
        ("tags[]" = Option<Vec<String>>, Query, explode = true, description = "Every tag must match"),
        ("health" = Option<String>, Query, description = "`active`, `degraded`, `invalid` or `disabled`"),
        ("hydrate" = Option<String>, Query, description = "Accepted and ignored (Cloud Elements clients send it)"),
    ),
    responses(
        (status = 200, description = "One page of the organization's instances, newest first", body = Vec<crate::wire::InstanceJson>, headers(
            ("Elements-Returned-Count" = u64, description = "Rows in this page"),
            ("Elements-Next-Page-Token" = String, description = "The cursor of the next page; absent on the last"),
            ("Elements-Total-Count" = u64, description = "The organization's instances (first unfiltered page only)"),
        )),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Account { principal }: Account,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    list_page(&state, principal.organization_id, pairs, None).await
}

/// One page of the organization's instances, of one element if `element`.
pub async fn list_page(
    state: &AppState,
    organization_id: i64,
    pairs: Vec<(String, String)>,
    element: Option<String>,
) -> Result<Response, ApiError> {
    let limits = &state.limits;
    let mut query = PageQuery {
        limit: limits.default_page_size,
        element,
        ..PageQuery::default()
    };
    // events: `health` filters the page it reads (a filtered page may be
    // short while a next page exists, as with tags and search).
    let mut health = None;
    for (name, value) in pairs {
        match name.as_str() {
            "tags[]" | "tags" => query.tags.push(value),
            "health" => health = Some(crate::routes::webhooks::health_filter(&value)?),
            "pageSize" => {
                query.limit = value
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=limits.max_page_size).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`pageSize` must be a whole number from 1 to {} (max_page_size)",
                            limits.max_page_size
                        ))
                    })?
            }
            "nextPage" | "page" if !value.is_empty() => query.after = Some(decode_cursor(&value)?),
            "nextPage" | "page" => {}
            "searchText" => {
                crate::body::check_text("searchText", &value, MAX_SEARCH)?;
                query.search = Some(value).filter(|v| !v.is_empty());
            }
            ignored if IGNORED.contains(&ignored) => {}
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{}` (expected `pageSize`, `nextPage`, \
                     `searchText`, `tags[]`, `health` or `hydrate`)",
                    name.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    check_tags(&query.tags)?;
    let first_unfiltered = query.after.is_none()
        && query.tags.is_empty()
        && query.search.is_none()
        && query.element.is_none()
        && health.is_none();
    let page = state.store.instance_page(organization_id, &query).await?;
    for unreadable in &page.list.unreadable {
        tracing::error!(
            instance_id = unreadable.id,
            error = %unreadable.error,
            "instance left out of the list: it cannot be read"
        );
    }
    crate::private_elements::catalog(state, organization_id).await?;
    let elements: Vec<_> = page
        .list
        .instances
        .iter()
        .map(|i| spec_of(state, i))
        .collect();
    let items: Vec<InstanceJson<'_>> = page
        .list
        .instances
        .iter()
        .zip(&elements)
        .filter(|(i, _)| health.is_none_or(|h| i.health.state == h))
        .map(|(i, e)| InstanceJson::new(i, e.as_deref().map(|e| e.spec()), None))
        .collect();
    let returned = items.len();
    let mut response = Json(items).into_response();
    let headers = response.headers_mut();
    headers.insert(HeaderName::from_static(RETURNED_COUNT), returned.into());
    if first_unfiltered {
        // One index count on the first page only; later pages and filtered
        // lists would pay it on every call.
        let total = if page.next.is_none() {
            returned as u64
        } else {
            state.store.count_instances(organization_id).await?
        };
        headers.insert(HeaderName::from_static(TOTAL_COUNT), total.into());
    }
    if let Some(next) = page.next {
        if let Ok(value) = HeaderValue::from_str(&encode_cursor(next)) {
            headers.insert(HeaderName::from_static(NEXT_PAGE_TOKEN), value);
        }
    }
    Ok(response)
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CountJson {
    total_instances: u64,
    element_instances: Vec<ElementCount>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ElementCount {
    element: String,
    count: u64,
}

/// `GET /instances/count`.
#[utoipa::path(
    get,
    path = "/elements/api-v2/instances/count",
    tag = "instances",
    security(("UserOrganization" = [])),
    responses(
        (status = 200, description = "How many instances the organization holds, per element", body = CountJson),
    )
)]
pub async fn count(
    State(state): State<AppState>,
    Account { principal }: Account,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    if let Some((name, _)) = pairs.first() {
        return Err(ApiError::BadRequest(format!(
            "unknown query parameter `{}` (`GET /instances/count` takes none)",
            name.chars().take(64).collect::<String>()
        )));
    }
    let counts = state
        .store
        .instance_counts(principal.organization_id)
        .await?;
    Ok(Json(CountJson {
        total_instances: counts.iter().map(|(_, n)| n).sum(),
        element_instances: counts
            .into_iter()
            .map(|(element, count)| ElementCount { element, count })
            .collect(),
    })
    .into_response())
}
