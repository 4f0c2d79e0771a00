//! The caller's organization: its allow-list of callback URLs.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use elements_core::standard::check_callback_url;

use crate::auth::Account;
use crate::body::{check_text, JsonBody};
use crate::error::ApiError;
use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/organizations/me/callback-urls", get(list).put(replace))
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
