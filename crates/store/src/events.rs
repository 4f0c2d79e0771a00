//! Instance health, lifecycle events and webhooks (issue 16): the types.
//!
//! **Health** is a state machine per instance, derived from stored columns
//! so that it always agrees with Cloud Elements' `valid` and `disabled`:
//! `disabled` (the owner disabled it), else `invalid` (`valid = false`: the
//! provider rejected the credential), else `degraded` (one or more
//! transient refresh or check failures in a row, with the count and the last
//! error), else `active`. It changes only through the store's writes:
//! [`crate::Store::update_instance`] (enable/disable), the refresh decision
//! written under the refresh lock (invalidate, or new tokens: recovered),
//! [`crate::Store::record_refresh_failure`] and [`crate::Store::record_check`]
//! (which a later verification request feeds).
//!
//! **The outbox.** Every event is a row of the `events` table written in the
//! same transaction as the change that caused it; the webhook worker fans
//! each event out to the organization's subscribed endpoints
//! (`webhook_deliveries`) and delivers it at least once. An event's id is
//! its `webhook-id`, the same on every attempt.

use serde::Serialize;

/// The health states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// Working.
    Active,
    /// Transient failures (refresh or check) since the last success.
    Degraded,
    /// The provider rejected the credential for good.
    Invalid,
    /// Disabled by its owner.
    Disabled,
}

impl HealthState {
    /// The state's name: `active`, `degraded`, `invalid`, `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Active => "active",
            HealthState::Degraded => "degraded",
            HealthState::Invalid => "invalid",
            HealthState::Disabled => "disabled",
        }
    }

    /// Parses a state's name.
    pub fn parse(s: &str) -> Option<HealthState> {
        Some(match s {
            "active" => HealthState::Active,
            "degraded" => HealthState::Degraded,
            "invalid" => HealthState::Invalid,
            "disabled" => HealthState::Disabled,
            _ => return None,
        })
    }
}

/// An instance's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The state.
    pub state: HealthState,
    /// Transient failures in a row (0 unless degraded, or invalid/disabled
    /// after being degraded).
    pub failures: i64,
    /// The last failure's message (never a secret), or why it is invalid.
    pub last_error: Option<String>,
    /// When the current state began, Unix milliseconds.
    pub since: i64,
}

impl Health {
    /// The health the stored columns mean.
    pub(crate) fn derive(
        valid: bool,
        disabled: bool,
        failures: i64,
        last_error: Option<String>,
        since: i64,
        invalid_reason: Option<&str>,
    ) -> Health {
        let state = if disabled {
            HealthState::Disabled
        } else if !valid {
            HealthState::Invalid
        } else if failures > 0 {
            HealthState::Degraded
        } else {
            HealthState::Active
        };
        let last_error = match state {
            HealthState::Invalid => last_error.or_else(|| invalid_reason.map(str::to_owned)),
            _ => last_error,
        };
        Health {
            state,
            failures,
            last_error,
            since,
        }
    }
}

/// What a credential check (a later `verify` request, or anything that
/// tests an instance's credential) found. Fed to
/// [`crate::Store::record_check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The credential works: a degraded or invalid instance recovers.
    Ok,
    /// A transient failure (timeout, 5xx): degraded, `refresh_failed`-like.
    Transient(String),
    /// The provider rejected the credential (401, `invalid_grant`): invalid.
    Rejected(String),
}

/// The event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `instance.created`
    InstanceCreated,
    /// `instance.deleted`
    InstanceDeleted,
    /// `instance.enabled`
    InstanceEnabled,
    /// `instance.disabled`
    InstanceDisabled,
    /// `instance.refresh_failed` (transient; `data.attempt` counts them)
    InstanceRefreshFailed,
    /// `instance.invalid`
    InstanceInvalid,
    /// `instance.recovered`
    InstanceRecovered,
    /// `instance.revoked` (`data.outcome`: what the provider's revocation
    /// endpoint answered)
    InstanceRevoked,
    /// `connect.failed` (emitted by the connect flow)
    ConnectFailed,
}

impl EventKind {
    /// Every type, for validating filters.
    pub const ALL: [EventKind; 9] = [
        EventKind::InstanceCreated,
        EventKind::InstanceDeleted,
        EventKind::InstanceEnabled,
        EventKind::InstanceDisabled,
        EventKind::InstanceRefreshFailed,
        EventKind::InstanceInvalid,
        EventKind::InstanceRecovered,
        EventKind::InstanceRevoked,
        EventKind::ConnectFailed,
    ];

    /// The wire name, e.g. `instance.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::InstanceCreated => "instance.created",
            EventKind::InstanceDeleted => "instance.deleted",
            EventKind::InstanceEnabled => "instance.enabled",
            EventKind::InstanceDisabled => "instance.disabled",
            EventKind::InstanceRefreshFailed => "instance.refresh_failed",
            EventKind::InstanceInvalid => "instance.invalid",
            EventKind::InstanceRecovered => "instance.recovered",
            EventKind::InstanceRevoked => "instance.revoked",
            EventKind::ConnectFailed => "connect.failed",
        }
    }
}

/// A webhook's event filter: patterns that are an event type, a prefix
/// ending in `.*` (`instance.*`), or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter(pub Vec<String>);

impl EventFilter {
    /// Whether an event of type `kind` passes.
    pub fn matches(&self, kind: &str) -> bool {
        self.0.iter().any(|p| pattern_matches(p, kind))
    }

    /// Checks a pattern: `*`, a known type, or `prefix.*` matching at least
    /// one known type. The error names the pattern.
    pub fn check_pattern(p: &str) -> Result<(), String> {
        if EventKind::ALL
            .iter()
            .any(|k| pattern_matches(p, k.as_str()))
        {
            Ok(())
        } else {
            let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
            Err(format!(
                "unknown event type or pattern `{p}` (expected `*`, `instance.*`, `connect.*` or one of: {})",
                known.join(", ")
            ))
        }
    }
}

fn pattern_matches(pattern: &str, kind: &str) -> bool {
    if pattern == "*" || pattern == kind {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => kind
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.')),
        None => false,
    }
}

/// A new webhook endpoint.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Owning organization.
    pub organization_id: i64,
    /// Where events are POSTed (already checked by the caller).
    pub url: String,
    /// Which events.
    pub events: EventFilter,
    /// The signing secret (`whsec_...`), sealed at rest.
    pub secret: elements_core::Secret,
}

/// A webhook endpoint (its secret is not part of it; see [`DeliveryClaim`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Id.
    pub id: i64,
    /// URL.
    pub url: String,
    /// Event filter.
    pub events: EventFilter,
    /// False once the endpoint answered 410 Gone.
    pub enabled: bool,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Unix ms.
    pub created_at: i64,
}

/// A stored event and how its deliveries stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSummary {
    /// The event id (`msg_...`), also its `webhook-id`.
    pub id: String,
    /// Type, e.g. `instance.created`.
    pub kind: String,
    /// The JSON body delivered.
    pub payload: String,
    /// Unix ms.
    pub created_at: i64,
    /// Deliveries: (webhook id, state, attempts, last status, last error).
    pub deliveries: Vec<DeliveryState>,
}

/// One delivery of an event to one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryState {
    /// The webhook.
    pub webhook_id: i64,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    /// Attempts made.
    pub attempts: i64,
    /// The last HTTP status answered, if any.
    pub last_status: Option<i64>,
    /// The last failure (never a secret).
    pub last_error: Option<String>,
}

/// A delivery claimed by a worker: everything needed to send it.
#[derive(Debug, Clone)]
pub struct DeliveryClaim {
    /// The delivery row.
    pub delivery_id: i64,
    /// The event id (the `webhook-id` header).
    pub event_id: String,
    /// Event time, Unix ms.
    pub event_created_at: i64,
    /// The body.
    pub payload: String,
    /// The webhook.
    pub webhook_id: i64,
    /// Its URL.
    pub url: String,
    /// Its signing secret, decrypted.
    pub secret: elements_core::Secret,
    /// Attempts made before this one.
    pub attempts: i64,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    /// A 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// A failure to try again at `next_attempt_at` (Unix ms).
    Retry {
        /// The status, if one came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// When to try again.
        next_attempt_at: i64,
    },
    /// The last attempt failed: dead letter.
    Dead {
        /// The status, if one came.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// 410 Gone: the delivery is dead and the webhook disabled.
    Gone,
}

/// A new random event id, `msg_` and 26 lowercase base32 characters.
pub(crate) fn new_event_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    let bytes: [u8; 16] = rand::random();
    let mut n = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(30);
    out.push_str("msg_");
    for _ in 0..26 {
        out.push(ALPHABET[(n & 31) as usize] as char);
        n >>= 5;
    }
    out
}

/// RFC 3339 of Unix milliseconds.
pub(crate) fn rfc3339(unix_millis: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(unix_millis as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// An event ready to insert: id, type, body.
pub(crate) struct NewEvent {
    pub id: String,
    pub organization_id: i64,
    pub kind: &'static str,
    pub payload: String,
    pub now: i64,
}

impl NewEvent {
    /// `{"type", "timestamp", "data": {"instanceId", "element", ...extra}}`.
    pub(crate) fn instance(
        kind: EventKind,
        organization_id: i64,
        instance_id: i64,
        element_key: &str,
        extra: serde_json::Value,
    ) -> NewEvent {
        let mut data = serde_json::Map::new();
        data.insert("instanceId".into(), instance_id.into());
        data.insert("element".into(), element_key.into());
        if let serde_json::Value::Object(extra) = extra {
            data.extend(extra);
        }
        NewEvent::with_data(kind, organization_id, serde_json::Value::Object(data))
    }

    /// An event with the given `data` object.
    pub(crate) fn with_data(
        kind: EventKind,
        organization_id: i64,
        data: serde_json::Value,
    ) -> NewEvent {
        let now = crate::now_millis();
        let body = serde_json::json!({
            "type": kind.as_str(),
            "timestamp": rfc3339(now),
            "data": data,
        });
        NewEvent {
            id: new_event_id(),
            organization_id,
            kind: kind.as_str(),
            payload: body.to_string(),
            now,
        }
    }
}

/// The `instance.created` event of a new instance row.
pub(crate) fn created_event(row: &crate::common::InstanceRow) -> NewEvent {
    NewEvent::instance(
        EventKind::InstanceCreated,
        row.organization_id,
        row.id,
        &row.element_key,
        serde_json::json!({ "name": row.name }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let f = EventFilter(vec!["instance.*".into()]);
        assert!(f.matches("instance.created"));
        assert!(!f.matches("connect.failed"));
        assert!(!EventFilter(vec!["instance.created".into()]).matches("instance.deleted"));
        assert!(EventFilter(vec!["*".into()]).matches("connect.failed"));
        assert!(EventFilter::check_pattern("instance.*").is_ok());
        assert!(EventFilter::check_pattern("connect.failed").is_ok());
        let e = EventFilter::check_pattern("instanc.*").unwrap_err();
        assert!(e.contains("`instanc.*`"), "{e}");
        assert!(EventFilter::check_pattern("instance").is_err());
    }

    #[test]
    fn event_ids_are_distinct_and_shaped() {
        let a = new_event_id();
        assert_eq!(a.len(), 30);
        assert!(a.starts_with("msg_"));
        assert_ne!(a, new_event_id());
    }
}
