//! Webhook endpoints and the event log of the caller's organization
//! (issue 16): `POST/GET /organizations/me/webhooks`,
//! `DELETE /organizations/me/webhooks/{id}`, `GET /organizations/me/events`,
//! `POST /organizations/me/events/{id}/redeliver`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use elements_store::{EventFilter, EventSummary, NewWebhook, Webhook};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PathParam, QueryPairs};
use crate::auth::Account;
use crate::body::{check_text, JsonObject};
use crate::error::ApiError;
use crate::webhooks::sign::new_secret;
use crate::webhooks::url_policy::check_url;
use crate::wire::rfc3339;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(api!("/organizations/me/webhooks"), get(list).post(create))
        .route(api!("/organizations/me/webhooks/{id}"), delete(remove))
        .route(api!("/organizations/me/events"), get(events))
        .route(
            api!("/organizations/me/events/{id}/redeliver"),
            post(redeliver),
        )
}

/// The most webhooks an organization holds.
const MAX_WEBHOOKS: usize = 20;
/// The most patterns in a filter.
const MAX_PATTERNS: usize = 20;
/// The most events `GET /organizations/me/events` returns.
const MAX_EVENTS: i64 = 500;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateWebhook {
    url: String,
    events: Option<Vec<String>>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct WebhookJson<'a> {
    id: i64,
    url: &'a str,
    events: &'a [String],
    enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<&'a str>,
    created_date: String,
    /// Only in the answer to `POST`.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'a str>,
}

impl<'a> WebhookJson<'a> {
    fn new(w: &'a Webhook, secret: Option<&'a str>) -> Self {
        WebhookJson {
            id: w.id,
            url: &w.url,
            events: &w.events.0,
            enabled: w.enabled,
            disabled_reason: w.disabled_reason.as_deref(),
            created_date: rfc3339(w.created_at),
            secret,
        }
    }
}

#[utoipa::path(
    post,
    path = "/elements/api-v2/organizations/me/webhooks",
    tag = "webhooks",
    security(("UserOrganization" = [])),
    request_body(content = CreateWebhook, example = json!({"url": "https://app.example/hooks", "events": ["instance.*"]})),
    responses(
        (status = 201, description = "The endpoint, with its `whsec_` signing secret (shown only here)", body = WebhookJson),
        (status = 409, description = "The organization holds its maximum number of webhooks", body = crate::error::ErrorBody),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
    )
)]
async fn create(
    State(state): State<AppState>,
    Account { principal }: Account,
    JsonObject(body): JsonObject<CreateWebhook>,
) -> Result<Response, ApiError> {
    check_text("url", &body.url, 2048)?;
    let url = check_url(&body.url, state.webhooks.allow_private).map_err(ApiError::BadRequest)?;
    let events = match body.events {
        None => vec!["*".to_owned()],
        Some(list) if list.is_empty() => {
            return Err(ApiError::BadRequest(
                "`events` must not be empty (omit it to receive every event)".into(),
            ))
        }
        Some(list) if list.len() > MAX_PATTERNS => {
            return Err(ApiError::BadRequest(format!(
                "`events` holds at most {MAX_PATTERNS} patterns"
            )))
        }
        Some(list) => {
            for p in &list {
                check_text("events", p, 100)?;
                EventFilter::check_pattern(p)
                    .map_err(|e| ApiError::BadRequest(format!("`events`: {e}")))?;
            }
            list
        }
    };
    let existing = state.store.webhooks(principal.organization_id).await?;
    if existing.len() >= MAX_WEBHOOKS {
        return Err(ApiError::Conflict(format!(
            "an organization holds at most {MAX_WEBHOOKS} webhooks; delete one first"
        )));
    }
    let secret = new_secret();
    let created = state
        .store
        .create_webhook(NewWebhook {
            organization_id: principal.organization_id,
            url: url.to_string(),
            events: EventFilter(events),
            secret: secret.clone(),
        })
        .await?;
    tracing::info!(
        organization_id = principal.organization_id,
        webhook_id = created.id,
        "webhook created"
    );
    Ok((
        StatusCode::CREATED,
        Json(WebhookJson::new(&created, Some(secret.expose()))),
    )
        .into_response())
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/organizations/me/webhooks",
    tag = "webhooks",
    security(("UserOrganization" = [])),
    responses(
        (status = 200, description = "The organization's webhook endpoints (no secrets)", body = Vec<WebhookJson>),
    )
)]
async fn list(
    State(state): State<AppState>,
    Account { principal }: Account,
) -> Result<Response, ApiError> {
    let hooks = state.store.webhooks(principal.organization_id).await?;
    let body: Vec<WebhookJson<'_>> = hooks.iter().map(|w| WebhookJson::new(w, None)).collect();
    Ok(Json(body).into_response())
}

fn webhook_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::BadRequest("webhook id must be a positive integer".into()))
}

#[utoipa::path(
    delete,
    path = "/elements/api-v2/organizations/me/webhooks/{id}",
    tag = "webhooks",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The webhook id"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such webhook in this organization", body = crate::error::ErrorBody),
    )
)]
async fn remove(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(raw): PathParam<String>,
) -> Result<Response, ApiError> {
    let id = webhook_id(&raw)?;
    if !state
        .store
        .delete_webhook(principal.organization_id, id)
        .await?
    {
        return Err(ApiError::NotFound(format!("no webhook with id {id}")));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventJson<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    created_date: String,
    payload: Value,
    deliveries: Vec<DeliveryJson<'a>>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct DeliveryJson<'a> {
    webhook_id: i64,
    state: &'a str,
    attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_status: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a str>,
}

fn event_json(e: &EventSummary) -> EventJson<'_> {
    EventJson {
        id: &e.id,
        kind: &e.kind,
        created_date: rfc3339(e.created_at),
        payload: serde_json::from_str(&e.payload).unwrap_or(Value::Null),
        deliveries: e
            .deliveries
            .iter()
            .map(|d| DeliveryJson {
                webhook_id: d.webhook_id,
                state: &d.state,
                attempts: d.attempts,
                last_status: d.last_status,
                last_error: d.last_error.as_deref(),
            })
            .collect(),
    }
}

#[utoipa::path(
    get,
    path = "/elements/api-v2/organizations/me/events",
    tag = "webhooks",
    security(("UserOrganization" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "How many (default 100)"),
    ),
    responses(
        (status = 200, description = "The newest events of the outbox and their deliveries", body = Vec<EventJson>),
    )
)]
async fn events(
    State(state): State<AppState>,
    Account { principal }: Account,
    QueryPairs(pairs): QueryPairs,
) -> Result<Response, ApiError> {
    let mut limit = 100;
    for (name, value) in pairs {
        match name.as_str() {
            "limit" => {
                limit = value
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (1..=MAX_EVENTS).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`limit` must be an integer from 1 to {MAX_EVENTS}"
                        ))
                    })?
            }
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "unknown query parameter `{}` (expected `limit`)",
                    name.chars().take(64).collect::<String>()
                )))
            }
        }
    }
    let list = state.store.events(principal.organization_id, limit).await?;
    let body: Vec<EventJson<'_>> = list.iter().map(event_json).collect();
    Ok(Json(body).into_response())
}

#[utoipa::path(
    post,
    path = "/elements/api-v2/organizations/me/events/{id}/redeliver",
    tag = "webhooks",
    security(("UserOrganization" = [])),
    params(
        ("id" = String, Path, description = "The event id: `msg_` and 26 base32 characters"),
    ),
    responses(
        (status = 202, description = "The event's deliveries are queued again", body = Object, example = json!({"id": "msg_2b4q7mxkzc6d3e5f7g2h4j6k7m", "deliveriesReset": 1})),
        (status = 404, description = "No such event in this organization", body = crate::error::ErrorBody),
    )
)]
async fn redeliver(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(raw): PathParam<String>,
) -> Result<Response, ApiError> {
    let well_formed = raw.len() == 30
        && raw.starts_with("msg_")
        && raw[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b));
    if !well_formed {
        return Err(ApiError::BadRequest(
            "event id must be `msg_` followed by 26 characters".into(),
        ));
    }
    match state
        .store
        .redeliver_event(principal.organization_id, &raw)
        .await?
    {
        None => Err(ApiError::NotFound(format!("no event with id {raw}"))),
        Some(n) => Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "id": raw, "deliveriesReset": n })),
        )
            .into_response()),
    }
}

/// Parses `?health=` of `GET /instances`.
pub fn health_filter(value: &str) -> Result<elements_store::HealthState, ApiError> {
    elements_store::HealthState::parse(value).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "`health` must be one of active, degraded, invalid, disabled (got `{}`)",
            value.chars().take(32).collect::<String>()
        ))
    })
}
