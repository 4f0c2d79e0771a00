//! Provider tokens: code exchange, and refresh that is safe under
//! concurrency.
//!
//! One refresh per instance at a time across the whole deployment:
//! in-process, callers queue on a per-instance gate and re-read the instance
//! after passing it (so a storm of readers causes one refresh); across
//! processes, the store's `refresh_locked` holds a database lock and hands
//! the job the instance as re-read under that lock, so a refresh another
//! replica finished is seen and not repeated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use elements_core::{
    CodeExchange, Element, ProviderError, RefreshRequest, Registry, Secret, TokenSet, Transport,
};
use elements_store::{Instance, RefreshDecision, Store, Tokens};

use crate::error::ApiError;

/// Timing policy for tokens.
#[derive(Debug, Clone, Copy)]
pub struct TokenPolicy {
    /// Refresh when the access token expires within this many seconds.
    pub refresh_margin: i64,
    /// Lifetime assumed when the provider's `expires_in` is missing,
    /// zero, negative or not a number.
    pub default_expires_in: i64,
    /// The longest lifetime believed.
    pub max_expires_in: i64,
    /// How long a SQLite refresh lease lasts (longer than a provider call).
    pub lease_seconds: i64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            refresh_margin: 300,
            default_expires_in: 3600,
            max_expires_in: 365 * 24 * 3600,
            lease_seconds: 60,
        }
    }
}

impl TokenPolicy {
    /// The expiry time for a provider's `expires_in`, with default and clamp.
    pub fn expires_at(&self, now: i64, expires_in: Option<i64>) -> i64 {
        let seconds = match expires_in {
            Some(s) if s > 0 => s.min(self.max_expires_in),
            _ => self.default_expires_in,
        };
        now.saturating_add(seconds)
    }

    /// Stored tokens from a provider's answer.
    pub fn tokens(&self, now: i64, set: TokenSet) -> Tokens {
        Tokens {
            expires_at: Some(self.expires_at(now, set.expires_in)),
            access_token: Some(set.access_token),
            refresh_token: set.refresh_token,
            token_type: set.token_type,
        }
    }
}

/// Now, in Unix seconds.
pub fn now_seconds() -> i64 {
    elements_store::now_millis() / 1000
}

/// Why fresh credentials could not be had.
#[derive(Debug)]
pub enum RefreshFailure {
    /// The instance is gone.
    Gone,
    /// The instance is invalid (the grant is dead).
    Invalid(String),
    /// There is nothing to refresh with.
    NoRefreshToken,
    /// The provider failed or refused.
    Provider(ProviderError),
    /// The store failed.
    Store(elements_store::StoreError),
}

impl From<RefreshFailure> for ApiError {
    fn from(f: RefreshFailure) -> Self {
        match f {
            RefreshFailure::Gone => ApiError::NotFound("no such instance".into()),
            RefreshFailure::Invalid(reason) => ApiError::Conflict(format!(
                "the instance is no longer valid: {reason}; provision it again"
            )),
            RefreshFailure::NoRefreshToken => ApiError::Conflict(
                "the access token has expired and the instance has no refresh token".into(),
            ),
            RefreshFailure::Provider(e) => e.into(),
            RefreshFailure::Store(e) => e.into(),
        }
    }
}

/// Exchanges codes and refreshes tokens for instances.
pub struct TokenManager {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    transport: Arc<dyn Transport>,
    policy: TokenPolicy,
    gates: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("policy", &self.policy)
            .finish()
    }
}

impl TokenManager {
    /// A manager over these parts.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        transport: Arc<dyn Transport>,
        policy: TokenPolicy,
    ) -> Self {
        TokenManager {
            store,
            registry,
            transport,
            policy,
            gates: Mutex::new(HashMap::new()),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// Exchanges an authorization code for tokens.
    pub async fn exchange_code(
        &self,
        element: &dyn Element,
        code: &Secret,
        configuration: &elements_core::Configuration,
        code_verifier: Option<&str>,
    ) -> Result<Tokens, ProviderError> {
        let set = element
            .exchange_code(
                self.transport.as_ref(),
                CodeExchange {
                    code,
                    configuration,
                    code_verifier,
                },
            )
            .await?;
        Ok(self.policy.tokens(now_seconds(), set))
    }

    fn is_fresh(&self, instance: &Instance, now: i64) -> bool {
        instance.tokens.access_token.is_some()
            && instance
                .tokens
                .expires_at
                .is_none_or(|at| at > now + self.policy.refresh_margin)
    }

    fn gate(&self, id: i64) -> Arc<tokio::sync::Mutex<()>> {
        self.gates
            .lock()
            .expect("gate map")
            .entry(id)
            .or_default()
            .clone()
    }

    fn release_gate(&self, id: i64, gate: Arc<tokio::sync::Mutex<()>>) {
        let mut gates = self.gates.lock().expect("gate map");
        // Ours plus the map's: nobody else is waiting.
        if Arc::strong_count(&gate) == 2 {
            gates.remove(&id);
        }
    }

    /// The instance with an access token that is not about to expire,
    /// refreshing first if needed. If a refresh fails transiently while the
    /// old token is still valid, the old token is returned.
    pub async fn fresh(&self, instance: Instance) -> Result<Instance, RefreshFailure> {
        if !instance.valid {
            return Err(RefreshFailure::Invalid(
                instance.invalid_reason.clone().unwrap_or_default(),
            ));
        }
        if self.is_fresh(&instance, now_seconds()) {
            return Ok(instance);
        }
        self.refresh(instance.id, false).await
    }

    /// Refreshes instance `id` unless (with `force` false) it is already
    /// fresh once the locks are held.
    pub async fn refresh(&self, id: i64, force: bool) -> Result<Instance, RefreshFailure> {
        let gate = self.gate(id);
        let result = {
            let _held = gate.lock().await;
            self.refresh_gated(id, force).await
        };
        self.release_gate(id, gate);
        result
    }

    async fn refresh_gated(&self, id: i64, force: bool) -> Result<Instance, RefreshFailure> {
        // Someone ahead of us in the queue may have refreshed already: a
        // cheap read before taking the database lock.
        if !force {
            let current = self
                .store
                .instance_any(id)
                .await
                .map_err(RefreshFailure::Store)?
                .ok_or(RefreshFailure::Gone)?;
            if self.is_fresh(&current, now_seconds()) || !current.valid {
                return self.fresh_or_invalid(current);
            }
        }
        let failure: Mutex<Option<RefreshFailure>> = Mutex::new(None);
        let failure_ref = &failure;
        let job: elements_store::RefreshJob<'_> = Box::new(move |current: Instance| {
            Box::pin(async move {
                let now = now_seconds();
                if !current.valid || (!force && self.is_fresh(&current, now)) {
                    return RefreshDecision::Unchanged;
                }
                let Some(refresh_token) = current.tokens.refresh_token.clone() else {
                    *failure_ref.lock().expect("failure slot") =
                        Some(RefreshFailure::NoRefreshToken);
                    return RefreshDecision::Unchanged;
                };
                let Some(element) = self.registry.by_key(&current.element_key) else {
                    *failure_ref.lock().expect("failure slot") =
                        Some(RefreshFailure::Invalid(format!(
                            "element `{}` is no longer in the catalog",
                            current.element_key
                        )));
                    return RefreshDecision::Unchanged;
                };
                let result = element
                    .refresh(
                        self.transport.as_ref(),
                        RefreshRequest {
                            refresh_token: &refresh_token,
                            configuration: &current.configuration,
                        },
                    )
                    .await;
                match result {
                    Ok(set) => RefreshDecision::Update(self.policy.tokens(now_seconds(), set)),
                    Err(e) if e.is_invalid_grant() => {
                        // We hold the lock and used the refresh token as
                        // stored under it: the grant is dead, not raced.
                        let reason = match &e {
                            ProviderError::Refused { message, .. } => {
                                format!("the provider refused the refresh token (invalid_grant: {message})")
                            }
                            _ => "the provider refused the refresh token (invalid_grant)".into(),
                        };
                        tracing::warn!(
                            instance_id = current.id,
                            "refresh refused: invalid_grant; instance marked invalid"
                        );
                        *failure_ref.lock().expect("failure slot") =
                            Some(RefreshFailure::Invalid(reason.clone()));
                        RefreshDecision::Invalidate(reason)
                    }
                    Err(e) => {
                        tracing::warn!(instance_id = current.id, error = %e, "refresh failed; will retry");
                        *failure_ref.lock().expect("failure slot") =
                            Some(RefreshFailure::Provider(e));
                        RefreshDecision::Unchanged
                    }
                }
            })
        });
        let after = self
            .store
            .refresh_locked(id, self.policy.lease_seconds, job)
            .await
            .map_err(RefreshFailure::Store)?
            .ok_or(RefreshFailure::Gone)?;
        match failure.into_inner().expect("failure slot") {
            None => self.fresh_or_invalid(after),
            Some(RefreshFailure::Provider(e)) if e.is_transient() => {
                // Still usable? Then the app gets the old token.
                let now = now_seconds();
                if after.tokens.access_token.is_some()
                    && after.tokens.expires_at.is_none_or(|at| at > now)
                {
                    Ok(after)
                } else {
                    Err(RefreshFailure::Provider(e))
                }
            }
            Some(other) => Err(other),
        }
    }

    fn fresh_or_invalid(&self, instance: Instance) -> Result<Instance, RefreshFailure> {
        if instance.valid {
            Ok(instance)
        } else {
            Err(RefreshFailure::Invalid(
                instance.invalid_reason.clone().unwrap_or_default(),
            ))
        }
    }

    /// Refreshes, in the background, every instance whose token expires
    /// within the margin, until `shutdown` resolves. Transient failures back
    /// off exponentially per instance (30 s doubling to 30 min).
    pub async fn run_background(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff: HashMap<i64, (i64, i64)> = HashMap::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            let now = now_seconds();
            let due = match self
                .store
                .expiring_before(now + self.policy.refresh_margin, 100)
                .await
            {
                Ok(ids) => ids,
                Err(e) => {
                    tracing::warn!(error = %e, "background refresh: cannot list expiring instances");
                    continue;
                }
            };
            for id in due {
                if backoff.get(&id).is_some_and(|&(next, _)| next > now) {
                    continue;
                }
                match self.refresh(id, false).await {
                    Ok(_) => {
                        backoff.remove(&id);
                    }
                    Err(RefreshFailure::Provider(e)) if e.is_transient() => {
                        let delay = backoff.get(&id).map_or(30, |&(_, d)| (d * 2).min(1800));
                        backoff.insert(id, (now + delay, delay));
                    }
                    Err(_) => {
                        backoff.remove(&id);
                    }
                }
            }
            backoff.retain(|_, &mut (next, _)| next > now - 3600);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_expires_in_is_defaulted_and_clamped() {
        let p = TokenPolicy::default();
        assert_eq!(p.expires_at(1000, None), 1000 + 3600);
        assert_eq!(p.expires_at(1000, Some(0)), 1000 + 3600);
        assert_eq!(p.expires_at(1000, Some(-5)), 1000 + 3600);
        assert_eq!(p.expires_at(1000, Some(1800)), 2800);
        assert_eq!(p.expires_at(1000, Some(i64::MAX)), 1000 + p.max_expires_in);
    }
}
