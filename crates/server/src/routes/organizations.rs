//! The caller's organization: its allow-list of callback URLs, and the
//! rotation of the caller's secrets and of its instances' tokens.
//!
//! Rotation (`POST`, no body; answers `Cache-Control: no-store`; the old
//! value stops working at once, the new one is shown once):
//! - `/organizations/me/secret/rotate` → `{"secret": ...}`: the
//!   organization secret of every user of the caller's organization.
//! - `/users/me/secret/rotate` → `{"secret": ...}`: the caller's user secret.
//! - `/instances/{id}/token/rotate` → `{"token": ...}`: the instance's
//!   `Element` token (another organization's instance is a 404).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use elements_core::standard::check_callback_url;

use super::{instance_id, PathParam};
use crate::auth::Account;
use crate::body::{check_text, JsonBody};
use crate::error::ApiError;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            api!("/organizations/me/callback-urls"),
            get(list).put(replace),
        )
        .route(
            api!("/organizations/me/secret/rotate"),
            post(rotate_organization),
        )
        .route(api!("/users/me/secret/rotate"), post(rotate_user))
        .route(
            api!("/instances/{id}/token/rotate"),
            post(rotate_instance_token),
        )
}

/// A new secret or token, shown once, never cached.
fn shown_once(field: &str, value: String) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ field: value })),
    )
        .into_response()
}

#[utoipa::path(
    post,
    path = "/elements/api-v2/organizations/me/secret/rotate",
    tag = "organization",
    security(("UserOrganization" = [])),
    responses(
        (status = 200, description = "The new organization secret, shown once (never cached); the old one stops at once", body = Object, example = json!({"secret": "<NEW SECRET>"})),
        (status = 404, description = "The organization no longer exists", body = crate::error::ErrorBody),
    )
)]
async fn rotate_organization(
    State(state): State<AppState>,
    Account { principal }: Account,
) -> Result<Response, ApiError> {
    let secret = crate::pkce::random_token(32);
    let hash = elements_store::hash_secret(&secret);
    if !state
        .store
        .set_organization_secret(principal.organization_id, &hash)
        .await?
    {
        return Err(ApiError::NotFound(
            "the organization no longer exists".into(),
        ));
    }
    tracing::info!(
        organization_id = principal.organization_id,
        "organization secret rotated"
    );
    Ok(shown_once("secret", secret))
}

#[utoipa::path(
    post,
    path = "/elements/api-v2/users/me/secret/rotate",
    tag = "organization",
    security(("UserOrganization" = [])),
    responses(
        (status = 200, description = "The new user secret, shown once (never cached); the old one stops at once", body = Object, example = json!({"secret": "<NEW SECRET>"})),
        (status = 404, description = "The user no longer exists", body = crate::error::ErrorBody),
    )
)]
async fn rotate_user(
    State(state): State<AppState>,
    Account { principal }: Account,
) -> Result<Response, ApiError> {
    let secret = crate::pkce::random_token(32);
    let hash = elements_store::hash_secret(&secret);
    if !state
        .store
        .set_user_secret(principal.user.id, &hash)
        .await?
    {
        return Err(ApiError::NotFound("the user no longer exists".into()));
    }
    tracing::info!(user_id = principal.user.id, "user secret rotated");
    Ok(shown_once("secret", secret))
}

#[utoipa::path(
    post,
    path = "/elements/api-v2/instances/{id}/token/rotate",
    tag = "instances",
    security(("UserOrganization" = [])),
    params(
        ("id" = i64, Path, minimum = 1, description = "The instance id"),
    ),
    responses(
        (status = 200, description = "The instance's new `Element` token, shown once (never cached); the old one stops at once", body = Object, example = json!({"token": "<NEW INSTANCE TOKEN>"})),
        (status = 404, description = "No such instance in this organization (another organization's is a 404 too)", body = crate::error::ErrorBody),
    )
)]
async fn rotate_instance_token(
    State(state): State<AppState>,
    Account { principal }: Account,
    PathParam(id): PathParam<String>,
) -> Result<Response, ApiError> {
    let id = instance_id(&id)?;
    let token = crate::pkce::random_token(32);
    let hash = elements_store::hash_secret(&token);
    if !state
        .store
        .set_instance_token(principal.organization_id, id, &hash)
        .await?
    {
        return Err(ApiError::NotFound(format!("no instance with id {id}")));
    }
    tracing::info!(instance_id = id, "instance token rotated");
    Ok(shown_once("token", token))
}

/// The most entries an allow-list holds.
const MAX_CALLBACKS: usize = 100;

#[utoipa::path(
    get,
    path = "/elements/api-v2/organizations/me/callback-urls",
    tag = "organization",
    security(("UserOrganization" = [])),
    responses(
        (status = 200, description = "The allow-list of exact callback URLs (empty: no list)", body = Vec<String>, example = json!(["https://app.example/callback"])),
    )
)]
async fn list(
    State(state): State<AppState>,
    Account { principal }: Account,
) -> Result<Response, ApiError> {
    let urls = state.store.callback_urls(principal.organization_id).await?;
    Ok(Json(urls).into_response())
}

#[utoipa::path(
    put,
    path = "/elements/api-v2/organizations/me/callback-urls",
    tag = "organization",
    security(("UserOrganization" = [])),
    request_body(content = Vec<String>, description = "Absolute http(s) URLs without user information, fragment or white space; at most 100", example = json!(["https://app.example/callback"])),
    responses(
        (status = 200, description = "The new allow-list", body = Vec<String>),
        (status = 413, description = "The body is larger than 64 KiB", body = crate::error::ErrorBody),
        (status = 415, description = "The body is not JSON", body = crate::error::ErrorBody),
    )
)]
async fn replace(
    State(state): State<AppState>,
    Account { principal }: Account,
    JsonBody(urls): JsonBody<Vec<String>>,
) -> Result<Response, ApiError> {
    if urls.len() > MAX_CALLBACKS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_CALLBACKS} callback URLs are allowed"
        )));
    }
    for url in &urls {
        check_text("callbackUrls", url, 2048)?;
        check_callback_url(url)?;
    }
    state
        .store
        .set_callback_urls(principal.organization_id, &urls)
        .await?;
    state.private_elements.invalidate(principal.organization_id);
    tracing::info!(
        organization_id = principal.organization_id,
        entries = urls.len(),
        "callback allow-list replaced"
    );
    Ok(Json(urls).into_response())
}

/// Refuses `url` if the organization has an allow-list that lacks it (the
/// list as cached with the organization's catalog: a change made on this
/// replica applies at once, one made on another within
/// [`crate::private_elements::MAX_AGE`]).
pub async fn check_allowed(
    state: &AppState,
    organization_id: i64,
    url: &str,
) -> Result<(), ApiError> {
    let catalog = crate::private_elements::catalog(state, organization_id).await?;
    allowed(&catalog.callback_urls, url)
}

/// Refuses `url` if `allowed` is a (non-empty) allow-list that lacks it.
pub fn allowed(allowed: &[String], url: &str) -> Result<(), ApiError> {
    if allowed.is_empty() || allowed.iter().any(|a| a == url) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "`callbackUrl` is not in the organization's allow-list of callback URLs".into(),
        ))
    }
}
