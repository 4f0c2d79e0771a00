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
        .route("/organizations/me/callback-urls", get(list).put(replace))
        .route("/organizations/me/secret/rotate", post(rotate_organization))
        .route("/users/me/secret/rotate", post(rotate_user))
        .route("/instances/{id}/token/rotate", post(rotate_instance_token))
}

/// A new secret or token, shown once, never cached.
fn shown_once(field: &str, value: String) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(serde_json::json!({ field: value })),
    )
        .into_response()
}

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

async fn list(
    State(state): State<AppState>,
    Account { principal }: Account,
) -> Result<Response, ApiError> {
    let urls = state.store.callback_urls(principal.organization_id).await?;
    Ok(Json(urls).into_response())
}

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
    tracing::info!(
        organization_id = principal.organization_id,
        entries = urls.len(),
        "callback allow-list replaced"
    );
    Ok(Json(urls).into_response())
}

/// Refuses `url` if the organization has an allow-list that lacks it.
pub async fn check_allowed(
    state: &AppState,
    organization_id: i64,
    url: &str,
) -> Result<(), ApiError> {
    let allowed = state.store.callback_urls(organization_id).await?;
    if allowed.is_empty() || allowed.iter().any(|a| a == url) {
        Ok(())
    } else {
        Err(ApiError::BadRequest(
            "`callbackUrl` is not in the organization's allow-list of callback URLs".into(),
        ))
    }
}
