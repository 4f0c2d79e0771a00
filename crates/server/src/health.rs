//! Probes: `GET /healthz` (the process answers) and `GET /readyz` (the
//! database answers, its migrations are applied, the master key opens its
//! key check). Neither needs credentials; neither says anything secret.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::AppState;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The process is up", body = Object, example = json!({"status": "ok"})),
    )
)]
async fn healthz() -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "status": "ok" })),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Database reachable, key check passed, migrations applied", body = Object, example = json!({"status": "ready", "checks": {"database": "ok", "migrations": "ok", "key": "ok"}})),
        (status = 503, description = "Not ready: `message` and `checks` say why", body = Object),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let checks = match tokio::time::timeout(READY_TIMEOUT, state.store.readiness()).await {
        Ok(checks) => checks,
        Err(_) => vec![
            (
                "database",
                Err(format!(
                    "the database did not answer within {} s",
                    READY_TIMEOUT.as_secs()
                )),
            ),
            ("migrations", Err("not checked".into())),
            ("key", Err("not checked".into())),
        ],
    };
    let mut map = Map::new();
    let mut failing = Vec::new();
    for (name, result) in checks {
        match result {
            Ok(()) => {
                map.insert(name.into(), Value::from("ok"));
            }
            Err(reason) => {
                if reason != "not checked" {
                    failing.push(format!("{name}: {reason}"));
                }
                map.insert(name.into(), Value::from(reason));
            }
        }
    }
    let (status, body) = if failing.is_empty() {
        (StatusCode::OK, json!({ "status": "ready", "checks": map }))
    } else {
        tracing::warn!(failing = %failing.join("; "), "not ready");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "not ready",
                "message": format!("not ready: {}", failing.join("; ")),
                "checks": map,
            }),
        )
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
}
