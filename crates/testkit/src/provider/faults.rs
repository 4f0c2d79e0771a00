//! Fault injection: latency before an answer, a delay after the request was
//! processed (the provider committed its changes but answers slowly), a
//! number of failing answers, a number of `invalid_grant` answers.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::routes::{json_response, oauth_error};
use super::state::Shared;

/// The faults in force, part of the provider's state.
#[derive(Debug, Clone)]
pub(super) struct Faults {
    /// Delay before an answer of the token and refresh endpoints, before
    /// anything is looked at (so a caller that gives up changed nothing).
    pub(super) latency: Duration,
    /// Delay after a grant was processed (tokens issued, rotated or
    /// revoked) and before its answer is sent.
    pub(super) latency_after: Duration,
    /// How many answers fail with `fail_status`.
    pub(super) fail_next: u32,
    /// The status of injected failures.
    pub(super) fail_status: StatusCode,
    /// How many answers are `invalid_grant` (after `fail_next`).
    pub(super) invalid_grant_next: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            latency: Duration::ZERO,
            latency_after: Duration::ZERO,
            fail_next: 0,
            fail_status: StatusCode::INTERNAL_SERVER_ERROR,
            invalid_grant_next: 0,
        }
    }
}

impl Shared {
    /// Latency, then injected faults. `Some` is the response to send instead
    /// of normal processing.
    pub(super) async fn before_response(&self) -> Option<Response> {
        let latency = self.lock().faults.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut inner = self.lock();
        let faults = &mut inner.faults;
        if faults.fail_next > 0 {
            faults.fail_next -= 1;
            return Some(injected_failure(faults.fail_status));
        }
        if faults.invalid_grant_next > 0 {
            faults.invalid_grant_next -= 1;
            return Some(oauth_error(
                "invalid_grant",
                "injected invalid_grant (fault injection)",
            ));
        }
        None
    }

    /// Holds a processed answer back for the configured delay: whatever the
    /// grant changed is already in force while the caller waits.
    pub(super) async fn after_processing(&self, response: Response) -> Response {
        let delay = self.lock().faults.latency_after;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        response
    }
}

fn injected_failure(status: StatusCode) -> Response {
    let error = if status.is_server_error() {
        "server_error"
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        "temporarily_unavailable"
    } else {
        "invalid_request"
    };
    let message = format!("injected failure (HTTP {})", status.as_u16());
    json_response(
        status,
        json!({
            "status": "error",
            "message": message,
            "error": error,
            "error_description": message,
        }),
    )
}
