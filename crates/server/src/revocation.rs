//! Best-effort token revocation (RFC 7009) when an instance is deleted.
//!
//! The element builds the request (`[oauth] revocation_url`, client
//! authentication per element); it is sent on a detached task (a client
//! that hangs up does not cancel it), bounded in time, and its outcome is
//! logged and returned so that callers (later: the `instance.revoked` event)
//! can report it. The refresh token is revoked when there is one (RFC 7009
//! §2.1: revoking it also invalidates its access tokens at most providers),
//! else the access token.

use std::time::Duration;

use elements_store::Instance;

use crate::flight::detached;
use crate::AppState;

/// How long a revocation may take.
pub const REVOCATION_TIMEOUT: Duration = Duration::from_secs(5);

/// What became of a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationOutcome {
    /// The provider accepted (2xx).
    Revoked {
        /// `refresh_token` or `access_token`.
        token_type_hint: &'static str,
    },
    /// Nothing to do: the element declares no `revocation_url`, or the
    /// instance holds no token, or it was already gone.
    Skipped(&'static str),
    /// The provider refused, could not be reached, or took too long; the
    /// reason never contains a token.
    Failed(String),
}

/// Revokes the tokens of a deleted instance, best effort. `instance` is the
/// instance as it was read before the deletion (`None`: nothing to do).
pub async fn revoke_on_delete(state: &AppState, instance: Option<Instance>) -> RevocationOutcome {
    let Some(instance) = instance else {
        return RevocationOutcome::Skipped("no instance");
    };
    let (id, organization_id) = (instance.id, instance.organization_id);
    let element = instance.element_key.clone();
    let outcome = revoke(state, instance).await;
    // The outcome of an attempted revocation is an `instance.revoked` event
    // (its own transaction: the delete has committed already).
    let attempted = match &outcome {
        RevocationOutcome::Revoked { token_type_hint } => {
            Some(serde_json::json!({"outcome": "revoked", "tokenTypeHint": token_type_hint}))
        }
        RevocationOutcome::Failed(why) => {
            Some(serde_json::json!({"outcome": "failed", "reason": why}))
        }
        RevocationOutcome::Skipped(_) => None,
    };
    if let Some(mut data) = attempted {
        data["instanceId"] = id.into();
        data["element"] = element.into();
        if let Err(e) = state
            .store
            .record_event(
                organization_id,
                elements_store::EventKind::InstanceRevoked,
                data,
            )
            .await
        {
            tracing::error!(instance_id = id, error = %e, "cannot record instance.revoked");
        }
    }
    match &outcome {
        RevocationOutcome::Revoked { token_type_hint } => {
            tracing::info!(instance_id = id, token_type_hint, "provider token revoked")
        }
        RevocationOutcome::Skipped(why) => {
            tracing::debug!(instance_id = id, why, "no token revocation")
        }
        RevocationOutcome::Failed(why) => {
            tracing::warn!(
                instance_id = id,
                why = why.as_str(),
                "token revocation failed"
            )
        }
    }
    outcome
}

async fn revoke(state: &AppState, instance: Instance) -> RevocationOutcome {
    let Some(element) =
        crate::private_elements::lookup(state, instance.organization_id, &instance.element_key)
            .await
            .ok()
    else {
        return RevocationOutcome::Skipped("element no longer in the catalog");
    };
    let (token, hint) = match (
        &instance.tokens.refresh_token,
        &instance.tokens.access_token,
    ) {
        (Some(rt), _) => (rt.clone(), "refresh_token"),
        (None, Some(at)) => (at.clone(), "access_token"),
        (None, None) => return RevocationOutcome::Skipped("no token"),
    };
    let request = match element.revocation_request(&instance.configuration, &token, Some(hint)) {
        Ok(Some(request)) => request,
        Ok(None) => return RevocationOutcome::Skipped("no revocation_url"),
        Err(e) => return RevocationOutcome::Failed(e.to_string()),
    };
    let transport = state.tokens.transport();
    let work =
        async move { tokio::time::timeout(REVOCATION_TIMEOUT, transport.send(&request)).await };
    match detached(work).await {
        Err(_) => RevocationOutcome::Failed("the revocation task stopped".into()),
        Ok(Err(_)) => RevocationOutcome::Failed("provider timed out".into()),
        Ok(Ok(Err(e))) => RevocationOutcome::Failed(e.to_string()),
        Ok(Ok(Ok(response))) if (200..300).contains(&response.status) => {
            RevocationOutcome::Revoked {
                token_type_hint: hint,
            }
        }
        Ok(Ok(Ok(response))) => {
            RevocationOutcome::Failed(format!("provider answered {}", response.status))
        }
    }
}
