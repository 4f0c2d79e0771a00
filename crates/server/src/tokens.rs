//! Provider tokens: code exchange, and refresh that is safe under
//! concurrency, cancellation and failure.
//!
//! **One refresh per instance, shared.** In-process, a refresh is a
//! [`SingleFlight`] task per instance: every caller that needs it while it
//! runs awaits the same outcome (no queue of callers each making its own
//! provider call). Across processes, the store's `refresh_locked` holds a
//! database lock and hands the job the instance as re-read under it, so a
//! refresh another replica finished is seen and not repeated.
//!
//! **A refresh survives its caller.** The flight runs on a task of its own:
//! a client that hangs up after the provider rotated the refresh token does
//! not stop the new one from being stored. The code exchange of
//! `POST /instances` does the same ([`TokenManager::create_with_code`]): the
//! exchange and the insert finish, so the code is not wasted and the
//! instance exists (its owner finds it in `GET /instances`).
//!
//! **Failures back off, per instance.** Consecutive failures are counted in
//! memory. Readers get one immediate retry after a failure, then back off
//! (by default 2 s doubling to 5 min, [`TokenPolicy::backoff_base_ms`]): meanwhile they get the stored token if it is
//! still valid, else a fast, clear error without a provider call. The
//! background refresher backs off 30 s doubling to 30 min. A failure that
//! cannot heal by waiting (the provider refused the grant or the client,
//! the request cannot be built from the configuration) marks the instance
//! invalid with its reason.
//!
//! **A still-valid token is served** (`expires_at > now`) whatever happened
//! to its refresh: no refresh token, a refusal, a backoff.
//!
//! **Provider answers are checked** ([`TokenPolicy::accept`]): tokens with
//! control characters or whitespace are refused, an unusable `token_type`
//! is dropped (served as `bearer`), an absurd `expires_in` is defaulted or
//! clamped; each with a logged reason, never the token.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use elements_core::{
    CodeExchange, Element, ProviderError, RefreshRequest, Registry, Secret, TokenSet, Transport,
};
use elements_store::{Instance, NewInstance, RefreshDecision, Store, StoreError, Tokens};
use parking_lot::Mutex;

use crate::error::ApiError;
use crate::flight::{detached, Aborted, SingleFlight, Tracker};

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
    /// Readers' backoff after failed refreshes, in milliseconds: none after
    /// one failure, then twice this after two in a row, doubling up to
    /// `backoff_max_ms`.
    pub backoff_base_ms: i64,
    /// The longest readers' backoff, in milliseconds.
    pub backoff_max_ms: i64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            refresh_margin: 300,
            default_expires_in: 3600,
            max_expires_in: 365 * 24 * 3600,
            lease_seconds: 60,
            backoff_base_ms: 1000,
            backoff_max_ms: 300_000,
        }
    }
}

/// The longest token accepted from a provider.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A provider's token answer that [`TokenPolicy::accept`] refused.
#[derive(Debug)]
pub struct RejectedAnswer {
    /// Why (never the token).
    pub reason: String,
    /// The answer's refresh token, if it was itself acceptable: a provider
    /// that rotates has already retired the one we sent, so it is kept.
    pub refresh_token: Option<Secret>,
}

/// Why a token cannot be used, if it cannot.
fn unusable(token: &str) -> Option<&'static str> {
    if token.chars().any(char::is_control) {
        Some("contains control characters")
    } else if token.chars().any(char::is_whitespace) {
        Some("contains whitespace")
    } else if token.len() > MAX_TOKEN_LEN {
        Some("is longer than 16384 bytes")
    } else {
        None
    }
}

/// A `token_type` that can be served as is: a short name.
fn usable_token_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
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

    /// Stored tokens from a provider's answer, checked and normalised:
    /// an access or refresh token with control characters or whitespace,
    /// or longer than [`MAX_TOKEN_LEN`], refuses the answer; an unusable
    /// `token_type` is dropped; an `expires_in` that is not positive is
    /// defaulted, one above the maximum clamped. Every refusal or change is
    /// logged with its reason, never with the token.
    pub fn accept(&self, now: i64, set: TokenSet) -> Result<Tokens, RejectedAnswer> {
        let refresh_token = match set.refresh_token {
            Some(rt) => match unusable(rt.expose()) {
                Some(why) => {
                    let reason = format!("the refresh token {why}");
                    tracing::warn!(%reason, "provider token answer refused");
                    return Err(RejectedAnswer {
                        reason,
                        refresh_token: None,
                    });
                }
                None => Some(rt),
            },
            None => None,
        };
        if let Some(why) = unusable(set.access_token.expose()) {
            let reason = format!("the access token {why}");
            tracing::warn!(%reason, "provider token answer refused");
            return Err(RejectedAnswer {
                reason,
                refresh_token,
            });
        }
        let token_type = match set.token_type {
            Some(t) if usable_token_type(&t) => Some(t),
            Some(_) => {
                tracing::warn!("provider sent an unusable token_type; `bearer` is served instead");
                None
            }
            None => None,
        };
        match set.expires_in {
            Some(s) if s <= 0 => tracing::warn!(
                expires_in = s,
                default = self.default_expires_in,
                "provider sent a non-positive expires_in; the default lifetime is assumed"
            ),
            Some(s) if s > self.max_expires_in => tracing::warn!(
                expires_in = s,
                max = self.max_expires_in,
                "provider sent an absurd expires_in; clamped"
            ),
            _ => {}
        }
        Ok(Tokens {
            expires_at: Some(self.expires_at(now, set.expires_in)),
            access_token: Some(set.access_token),
            refresh_token,
            token_type,
        })
    }
}

/// Now, in Unix seconds.
pub fn now_seconds() -> i64 {
    elements_store::now_millis() / 1000
}

/// Why fresh credentials could not be had.
#[derive(Debug, Clone)]
pub enum RefreshFailure {
    /// The instance is gone.
    Gone,
    /// The instance is invalid (the grant is dead).
    Invalid(String),
    /// There is nothing to refresh with.
    NoRefreshToken,
    /// The instance cannot be refreshed by this server (its element is not
    /// in the catalog); retried with backoff, not marked invalid, since a
    /// catalog can come back.
    Unsupported(String),
    /// The provider failed or refused.
    Provider(ProviderError),
    /// The store failed.
    Store(Arc<StoreError>),
    /// Recent refreshes failed; no provider call until the backoff ends.
    BackingOff {
        /// Failures in a row.
        failures: u32,
        /// The last one, as shown to callers.
        last: String,
        /// Seconds until the next attempt.
        retry_in: i64,
    },
    /// The refresh task stopped before it finished (a bug, logged).
    Aborted,
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
            RefreshFailure::Unsupported(reason) => {
                ApiError::Conflict(format!("the instance cannot be refreshed: {reason}"))
            }
            RefreshFailure::Provider(e) => e.into(),
            RefreshFailure::Store(e) => match &*e {
                StoreError::Conflict(m) => ApiError::Conflict(m.clone()),
                other => ApiError::Internal(other.to_string()),
            },
            RefreshFailure::BackingOff {
                failures,
                last,
                retry_in,
            } => ApiError::BadGateway(format!(
                "{failures} failed refreshes in a row (last: {last}); backing off, next attempt in {retry_in} s"
            )),
            RefreshFailure::Aborted => {
                ApiError::Internal("the refresh task stopped before it finished".into())
            }
        }
    }
}

/// A failure as callers see it, for the backoff message (no secrets: the
/// provider's messages are sanitized; store errors are not detailed).
fn describe(f: &RefreshFailure) -> String {
    match f {
        RefreshFailure::Provider(ProviderError::Unavailable { status }) => {
            format!("provider error: it answered {status}")
        }
        RefreshFailure::Provider(ProviderError::Transport(t)) => format!("provider error: {t}"),
        RefreshFailure::Provider(ProviderError::InvalidResponse(m)) => {
            format!("provider sent an invalid token response: {m}")
        }
        RefreshFailure::Provider(ProviderError::Refused { status, error, .. }) => format!(
            "the provider refused the request ({})",
            error.clone().unwrap_or_else(|| format!("HTTP {status}"))
        ),
        RefreshFailure::Provider(ProviderError::Request(e)) => e.to_string(),
        RefreshFailure::Unsupported(reason) => reason.clone(),
        RefreshFailure::Store(_) => "a database error".into(),
        RefreshFailure::Aborted => "an internal error".into(),
        RefreshFailure::Gone
        | RefreshFailure::Invalid(_)
        | RefreshFailure::NoRefreshToken
        | RefreshFailure::BackingOff { .. } => "no refresh was possible".into(),
    }
}

/// Whether waiting cannot help: the grant or the client was refused (any
/// 4xx but 408, 425 and 429), or the request cannot be built.
fn is_permanent(e: &ProviderError) -> bool {
    match e {
        ProviderError::Request(_) => true,
        ProviderError::Refused { status, .. } => !matches!(status, 408 | 425 | 429),
        _ => false,
    }
}

/// The `invalidReason` stored for a permanent failure.
fn invalid_reason(e: &ProviderError) -> String {
    match e {
        ProviderError::Refused {
            error: Some(code),
            message,
            ..
        } if code == "invalid_grant" => {
            format!("the provider refused the refresh token (invalid_grant: {message})")
        }
        ProviderError::Refused {
            status,
            error,
            message,
        } => format!(
            "the provider refused the refresh ({}: {message})",
            error.clone().unwrap_or_else(|| format!("HTTP {status}"))
        ),
        ProviderError::Request(e) => format!("the refresh request cannot be built: {e}"),
        other => other.to_string(),
    }
}

/// Consecutive failures of one instance's refresh.
#[derive(Debug, Clone)]
struct Failures {
    count: u32,
    last_at_ms: i64,
    last: String,
}

/// Readers' wait after `count` failures in a row: none after the first (a
/// blip is not an outage), then `base << (count - 1)` up to `max` (by
/// default 2 s doubling to 5 min).
fn foreground_delay_ms(policy: &TokenPolicy, count: u32) -> i64 {
    if count <= 1 {
        0
    } else {
        policy
            .backoff_base_ms
            .max(0)
            .saturating_mul(1_i64 << (count - 1).min(20))
            .min(policy.backoff_max_ms)
    }
}

/// The background refresher's wait: 30 s doubling to 30 min.
fn background_delay_ms(count: u32) -> i64 {
    (30_000_i64 << count.saturating_sub(1).min(20)).min(1_800_000)
}

/// What one refresh flight ended with, shared by its callers.
#[derive(Debug)]
struct Outcome {
    /// The instance as stored afterwards, if it could be read.
    after: Option<Instance>,
    /// Why the refresh did not happen, if it did not.
    failure: Option<RefreshFailure>,
}

impl Outcome {
    fn failed(failure: RefreshFailure) -> Outcome {
        Outcome {
            after: None,
            failure: Some(failure),
        }
    }
}

/// Whether the stored access token can still be used (`expires_at > now`).
fn usable(instance: &Instance, now: i64) -> bool {
    instance.tokens.access_token.is_some() && instance.tokens.expires_at.is_none_or(|at| at > now)
}

/// Background pass limits: rows per page, pages per pass (the rest of the
/// list is the next pass's), refreshes per pass, refreshes at once.
const PAGE: i64 = 200;
const MAX_PAGES: usize = 50;
const PASS_BUDGET: usize = 100;
const CONCURRENCY: usize = 4;

/// The parts a refresh task owns (cheap to clone: all shared).
#[derive(Clone)]
struct Core {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    transport: Arc<dyn Transport>,
    policy: TokenPolicy,
    failures: Arc<Mutex<HashMap<i64, Failures>>>,
    /// Held by every refresh and code exchange while it runs.
    busy: Tracker,
    /// Keys of the elements whose tokens are renewed by a new grant rather
    /// than a refresh token (client credentials).
    renewable_elements: Arc<Vec<String>>,
}

impl Core {
    /// Whether the instance's token can be renewed: it has a refresh token,
    /// or its element's credential kind obtains tokens itself.
    fn renewable(&self, instance: &Instance) -> bool {
        instance.tokens.refresh_token.is_some()
            || self.renews_without_refresh_token(&instance.element_key)
    }

    fn renews_without_refresh_token(&self, element_key: &str) -> bool {
        self.renewable_elements.iter().any(|k| k == element_key)
    }

    /// A new client credentials grant (RFC 6749 §4.4) for `configuration`,
    /// with the token-response fields the element keeps.
    async fn client_credentials(
        &self,
        element: &dyn Element,
        configuration: &elements_core::Configuration,
    ) -> Result<(TokenSet, Kept), ProviderError> {
        let request = elements_core::client_credentials_request(element.spec(), configuration)?;
        let response = crate::provider::measured(self.transport.as_ref(), element)
            .send(&request)
            .await?;
        let set = element.parse_token_response(&response, &request)?;
        Ok((set, element.kept_values(&response)))
    }

    fn is_fresh(&self, instance: &Instance, now: i64) -> bool {
        instance.tokens.access_token.is_some()
            && instance
                .tokens
                .expires_at
                .is_none_or(|at| at > now + self.policy.refresh_margin)
    }

    /// Readers wait? Then the fast answer.
    fn foreground_backoff(&self, id: i64) -> Option<RefreshFailure> {
        let failures = self.failures.lock();
        let f = failures.get(&id)?;
        let wait_ms = f.last_at_ms + foreground_delay_ms(&self.policy, f.count)
            - elements_store::now_millis();
        (wait_ms > 0).then(|| RefreshFailure::BackingOff {
            failures: f.count,
            last: f.last.clone(),
            retry_in: (wait_ms + 999) / 1000,
        })
    }

    fn background_blocked(&self, id: i64, now_ms: i64) -> bool {
        self.failures
            .lock()
            .get(&id)
            .is_some_and(|f| now_ms < f.last_at_ms + background_delay_ms(f.count))
    }

    /// Counts a flight's failure, or forgets the instance's failures.
    fn record(&self, id: i64, outcome: &Outcome) {
        let mut failures = self.failures.lock();
        match &outcome.failure {
            None | Some(RefreshFailure::Invalid(_)) | Some(RefreshFailure::Gone) => {
                failures.remove(&id);
            }
            Some(RefreshFailure::NoRefreshToken) | Some(RefreshFailure::BackingOff { .. }) => {}
            Some(f) => {
                let entry = failures.entry(id).or_insert(Failures {
                    count: 0,
                    last_at_ms: 0,
                    last: String::new(),
                });
                entry.count = entry.count.saturating_add(1);
                entry.last_at_ms = elements_store::now_millis();
                entry.last = describe(f);
            }
        }
    }

    /// Forgets failures older than two hours (deleted instances, healed ones
    /// nobody read since).
    fn prune_failures(&self, now_ms: i64) {
        self.failures
            .lock()
            .retain(|_, f| now_ms - f.last_at_ms < 2 * 3600 * 1000);
    }

    /// One flight: the refresh on a task of its own (a panic there is an
    /// `Aborted` outcome, not a panicking caller), then its bookkeeping.
    async fn flight(self, id: i64, force: bool) -> Arc<Outcome> {
        let core = self.clone();
        let outcome = detached(async move {
            let _busy = core.busy.clone();
            core.refresh_once(id, force).await
        })
        .await
        .unwrap_or_else(|Aborted| Outcome::failed(RefreshFailure::Aborted));
        self.record(id, &outcome);
        Arc::new(outcome)
    }

    async fn refresh_once(&self, id: i64, force: bool) -> Outcome {
        // A cheap read first: another replica may have refreshed already.
        if !force {
            match self.store.instance_any(id).await {
                Err(e) => return Outcome::failed(RefreshFailure::Store(Arc::new(e))),
                Ok(None) => return Outcome::failed(RefreshFailure::Gone),
                Ok(Some(current)) => {
                    if self.is_fresh(&current, now_seconds()) || !current.valid {
                        return Outcome {
                            after: Some(current),
                            failure: None,
                        };
                    }
                }
            }
        }
        // The job's verdict for the caller; the store only carries the
        // decision it writes.
        let mut failure = None;
        let verdict = &mut failure;
        let job: elements_store::RefreshJob<'_> = Box::new(move |current: Instance| {
            Box::pin(async move {
                let (decision, outcome) = self.decide(current, force).await;
                *verdict = outcome;
                decision
            })
        });
        let stored = self
            .store
            .refresh_locked(id, self.policy.lease_seconds, job)
            .await;
        match stored {
            Ok(Some(after)) => {
                // Issue 16: a transient failure degrades the instance's
                // health (and writes `instance.refresh_failed`).
                if let Some(f @ (RefreshFailure::Provider(_) | RefreshFailure::Unsupported(_))) =
                    &failure
                {
                    if let Err(e) = self.store.record_refresh_failure(id, &describe(f)).await {
                        tracing::warn!(instance_id = id, error = %e, "could not record a refresh failure");
                    }
                }
                Outcome {
                    after: Some(after),
                    failure,
                }
            }
            Ok(None) => Outcome::failed(RefreshFailure::Gone),
            Err(e) => Outcome::failed(RefreshFailure::Store(Arc::new(e))),
        }
    }

    /// The work under the refresh lock, on the instance as re-read there.
    async fn decide(
        &self,
        current: Instance,
        force: bool,
    ) -> (RefreshDecision, Option<RefreshFailure>) {
        if !current.valid || (!force && self.is_fresh(&current, now_seconds())) {
            return (RefreshDecision::Unchanged, None);
        }
        if !self.renewable(&current) {
            return (
                RefreshDecision::Unchanged,
                Some(RefreshFailure::NoRefreshToken),
            );
        }
        let Some(element) = crate::private_elements::element_for(
            self.store.as_ref(),
            &self.registry,
            current.organization_id,
            &current.element_key,
        )
        .await
        else {
            let reason = format!(
                "element `{}` is not in this server's catalog",
                current.element_key
            );
            tracing::warn!(instance_id = current.id, %reason, "refresh impossible; will retry");
            return (
                RefreshDecision::Unchanged,
                Some(RefreshFailure::Unsupported(reason)),
            );
        };
        let result = match &current.tokens.refresh_token {
            Some(refresh_token) => {
                let capturing = Capturing::new(
                    crate::provider::measured(self.transport.as_ref(), element.as_ref()),
                    element.as_ref(),
                );
                element
                    .refresh(
                        &capturing,
                        RefreshRequest {
                            refresh_token,
                            configuration: &current.configuration,
                        },
                    )
                    .await
                    .map(|set| (set, capturing.kept(element.as_ref())))
            }
            // Renewable without one (checked above): a new grant.
            None => {
                self.client_credentials(element.as_ref(), &current.configuration)
                    .await
            }
        };
        match result {
            Ok((set, kept)) => match self.policy.accept(now_seconds(), set) {
                Ok(tokens) => {
                    crate::metrics::refresh("ok");
                    // Kept token-response fields go with the tokens, in the
                    // same locked write, when they changed.
                    let mut configuration = current.configuration.clone();
                    configuration.extend(kept);
                    let decision = if configuration == current.configuration {
                        RefreshDecision::Update(tokens)
                    } else {
                        RefreshDecision::UpdateWithConfiguration(tokens, configuration)
                    };
                    (decision, None)
                }
                Err(rejected) => {
                    crate::metrics::refresh("transient");
                    tracing::warn!(
                        instance_id = current.id,
                        reason = %rejected.reason,
                        "refresh answer refused; will retry"
                    );
                    let failure = Some(RefreshFailure::Provider(ProviderError::InvalidResponse(
                        rejected.reason,
                    )));
                    match rejected.refresh_token {
                        // The one we sent may be retired: keep the new one.
                        Some(rt) => (
                            RefreshDecision::Update(Tokens {
                                refresh_token: Some(rt),
                                ..current.tokens
                            }),
                            failure,
                        ),
                        None => (RefreshDecision::Unchanged, failure),
                    }
                }
            },
            Err(e) if is_permanent(&e) => {
                // We hold the lock and used the refresh token as stored
                // under it: the refusal is about this grant, not a race.
                let reason = invalid_reason(&e);
                crate::metrics::refresh("invalid");
                tracing::warn!(
                    instance_id = current.id,
                    %reason,
                    "refresh refused; instance marked invalid"
                );
                (
                    RefreshDecision::Invalidate(reason.clone()),
                    Some(RefreshFailure::Invalid(reason)),
                )
            }
            Err(e) => {
                crate::metrics::refresh("transient");
                tracing::warn!(instance_id = current.id, error = %e, "refresh failed; will retry");
                (
                    RefreshDecision::Unchanged,
                    Some(RefreshFailure::Provider(e)),
                )
            }
        }
    }

    async fn exchange_and_create(
        &self,
        code: Secret,
        code_verifier: Option<Secret>,
        mut new: NewInstance,
        verify: Option<Arc<crate::health_check::Checker>>,
    ) -> Result<Instance, ApiError> {
        let element = crate::private_elements::element_for(
            self.store.as_ref(),
            &self.registry,
            new.organization_id,
            &new.element_key,
        )
        .await
        .ok_or_else(|| ApiError::NotFound(format!("no element with key `{}`", new.element_key)))?;
        let capturing = Capturing::new(
            crate::provider::measured(self.transport.as_ref(), element.as_ref()),
            element.as_ref(),
        );
        let set = element
            .exchange_code(
                &capturing,
                CodeExchange {
                    code: &code,
                    configuration: &new.configuration,
                    code_verifier: code_verifier.as_ref().map(Secret::expose),
                },
            )
            .await?;
        new.configuration.extend(capturing.kept(element.as_ref()));
        new.tokens = self
            .policy
            .accept(now_seconds(), set)
            .map_err(|r| ProviderError::InvalidResponse(r.reason))?;
        self.verify(verify, element.as_ref(), &new).await?;
        Ok(self.store.create_instance(new).await?)
    }

    /// health: the element's `[verify]` request with a credential the
    /// server has just obtained, before it is stored.
    async fn verify(
        &self,
        checker: Option<Arc<crate::health_check::Checker>>,
        element: &dyn Element,
        new: &NewInstance,
    ) -> Result<(), ApiError> {
        match checker {
            Some(checker) => {
                crate::health_check::check_credential(
                    &checker,
                    element.spec(),
                    &new.configuration,
                    &new.tokens,
                )
                .await
            }
            None => Ok(()),
        }
    }

    async fn obtain_and_create(
        &self,
        mut new: NewInstance,
        verify: Option<Arc<crate::health_check::Checker>>,
    ) -> Result<Instance, ApiError> {
        let element = crate::private_elements::element_for(
            self.store.as_ref(),
            &self.registry,
            new.organization_id,
            &new.element_key,
        )
        .await
        .ok_or_else(|| ApiError::NotFound(format!("no element with key `{}`", new.element_key)))?;
        let (set, kept) = self
            .client_credentials(element.as_ref(), &new.configuration)
            .await?;
        new.configuration.extend(kept);
        new.tokens = self
            .policy
            .accept(now_seconds(), set)
            .map_err(|r| ProviderError::InvalidResponse(r.reason))?;
        self.verify(verify, element.as_ref(), &new).await?;
        Ok(self.store.create_instance(new).await?)
    }
}

/// Token-response fields an element keeps: (configuration key, value).
type Kept = Vec<(String, String)>;

/// A transport that keeps the body of the last successful answer, so the
/// token-response fields the element keeps (`[oauth.token_response] keep`)
/// can be read after a code exchange or refresh (only for elements that
/// keep some: otherwise nothing is copied).
struct Capturing<'a> {
    inner: crate::provider::Measured<'a>,
    keeps: bool,
    last: Mutex<Option<Vec<u8>>>,
}

impl<'a> Capturing<'a> {
    fn new(inner: crate::provider::Measured<'a>, element: &dyn Element) -> Self {
        let keeps = element
            .spec()
            .oauth
            .as_ref()
            .is_some_and(|o| !o.token_response.keep.is_empty());
        Capturing {
            inner,
            keeps,
            last: Mutex::new(None),
        }
    }

    /// The fields `element` keeps from the last successful answer.
    fn kept(&self, element: &dyn Element) -> Kept {
        match self.last.lock().take() {
            Some(body) => {
                element.kept_values(&elements_core::ProviderResponse { status: 200, body })
            }
            None => Vec::new(),
        }
    }
}

#[async_trait::async_trait]
impl Transport for Capturing<'_> {
    async fn send(
        &self,
        request: &elements_core::ProviderRequest,
    ) -> Result<elements_core::ProviderResponse, elements_core::TransportError> {
        let response = self.inner.send(request).await?;
        if self.keeps && (200..300).contains(&response.status) {
            *self.last.lock() = Some(response.body.clone());
        }
        Ok(response)
    }
}

/// Exchanges codes and refreshes tokens for instances.
pub struct TokenManager {
    core: Core,
    flights: SingleFlight<i64, Arc<Outcome>>,
}

impl std::fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenManager")
            .field("policy", &self.core.policy)
            .field("flights", &self.flights)
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
            core: Core {
                store,
                transport,
                policy,
                failures: Arc::new(Mutex::new(HashMap::new())),
                busy: Tracker::default(),
                renewable_elements: Arc::new(
                    registry
                        .iter()
                        .filter(|e| e.spec().authentication.renews_without_refresh_token())
                        .map(|e| e.key().to_owned())
                        .collect(),
                ),
                registry,
            },
            flights: SingleFlight::default(),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &TokenPolicy {
        &self.core.policy
    }

    /// The transport to providers (format: token revocation uses it too).
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.core.transport.clone()
    }

    /// Waits, at most `limit`, for the refreshes and code exchanges still
    /// running (their callers may be gone) to store their results; for a
    /// graceful shutdown. Whether they all finished.
    pub async fn drain(&self, limit: Duration) -> bool {
        let drained = self.core.busy.idle(limit).await;
        if !drained {
            tracing::warn!("shutting down with provider calls still running");
        }
        drained
    }

    /// Exchanges an authorization code for tokens, in the caller's task:
    /// if the caller is dropped after the provider answered, the tokens are
    /// lost. Creating an instance uses [`TokenManager::create_with_code`].
    pub async fn exchange_code(
        &self,
        element: &dyn Element,
        code: &Secret,
        configuration: &elements_core::Configuration,
        code_verifier: Option<&str>,
    ) -> Result<Tokens, ProviderError> {
        let set = element
            .exchange_code(
                &crate::provider::measured(self.core.transport.as_ref(), element),
                CodeExchange {
                    code,
                    configuration,
                    code_verifier,
                },
            )
            .await?;
        self.core
            .policy
            .accept(now_seconds(), set)
            .map_err(|r| ProviderError::InvalidResponse(r.reason))
    }

    /// Exchanges `code` with the provider of `new.element_key` and stores
    /// `new` with the tokens, on a task of its own: once the provider has
    /// the code, the instance is created even if the caller hangs up (the
    /// code is used once, and not for nothing).
    pub async fn create_with_code(
        &self,
        code: Secret,
        code_verifier: Option<Secret>,
        new: NewInstance,
        verify: Option<Arc<crate::health_check::Checker>>,
    ) -> Result<Instance, ApiError> {
        let core = self.core.clone();
        detached(async move {
            let _busy = core.busy.clone();
            core.exchange_and_create(code, code_verifier, new, verify)
                .await
        })
        .await
        .unwrap_or_else(|Aborted| {
            Err(ApiError::Internal(
                "the code exchange task stopped before it finished".into(),
            ))
        })
    }

    /// Obtains an access token with the client credentials grant and stores
    /// `new` with it, on a task of its own like
    /// [`TokenManager::create_with_code`] (the provider has issued a token:
    /// the instance is created even if the caller hangs up).
    pub async fn create_with_client_credentials(
        &self,
        new: NewInstance,
        verify: Option<Arc<crate::health_check::Checker>>,
    ) -> Result<Instance, ApiError> {
        let core = self.core.clone();
        detached(async move {
            let _busy = core.busy.clone();
            core.obtain_and_create(new, verify).await
        })
        .await
        .unwrap_or_else(|Aborted| {
            Err(ApiError::Internal(
                "the client credentials task stopped before it finished".into(),
            ))
        })
    }

    /// The instance with an access token that is not about to expire,
    /// refreshing first if needed. When no refresh can be had (none
    /// possible, failed, backing off), a token that is still valid is
    /// served; otherwise the reason.
    /// Whether `instance`'s access token needs no refresh now (then
    /// [`TokenManager::fresh`] would hand it back unchanged).
    pub fn is_fresh(&self, instance: &Instance) -> bool {
        self.core.is_fresh(instance, now_seconds())
    }

    /// [`TokenManager::fresh`] for a shared (cached) instance: copied only
    /// when it needs a refresh.
    pub async fn fresh_shared(
        &self,
        instance: crate::cache::SharedInstance,
    ) -> Result<crate::cache::SharedInstance, RefreshFailure> {
        if self.is_fresh(&instance) {
            return Ok(instance);
        }
        Ok(self.fresh(instance.to_owned_instance()).await?.into())
    }

    pub async fn fresh(&self, instance: Instance) -> Result<Instance, RefreshFailure> {
        let now = now_seconds();
        if self.core.is_fresh(&instance, now) {
            return Ok(instance);
        }
        let blocked = if !instance.valid {
            Some(RefreshFailure::Invalid(
                instance.invalid_reason.clone().unwrap_or_default(),
            ))
        } else if !self.core.renewable(&instance) {
            Some(RefreshFailure::NoRefreshToken)
        } else {
            self.core.foreground_backoff(instance.id)
        };
        match blocked {
            Some(_) if usable(&instance, now) => Ok(instance),
            Some(failure) => Err(failure),
            None => self.refresh(instance.id, false).await,
        }
    }

    /// Refreshes instance `id` unless (with `force` false) it is already
    /// fresh once the locks are held. Joins the refresh of `id` already
    /// running, if any, and shares its outcome.
    pub async fn refresh(&self, id: i64, force: bool) -> Result<Instance, RefreshFailure> {
        let core = self.core.clone();
        let outcome = self
            .flights
            .run(id, move || core.flight(id, force))
            .await
            .unwrap_or_else(|Aborted| Arc::new(Outcome::failed(RefreshFailure::Aborted)));
        let now = now_seconds();
        match (&outcome.after, &outcome.failure) {
            (Some(after), None) if after.valid || usable(after, now) => Ok(after.clone()),
            (Some(after), None) => Err(RefreshFailure::Invalid(
                after.invalid_reason.clone().unwrap_or_default(),
            )),
            (Some(after), Some(_)) if usable(after, now) => Ok(after.clone()),
            (_, Some(failure)) => Err(failure.clone()),
            (None, None) => Err(RefreshFailure::Gone),
        }
    }

    /// Refreshes, in the background, every instance whose token expires
    /// within the margin, until `shutdown` resolves. Each pass pages
    /// through the expiring instances (up to 10,000 rows; the next pass
    /// goes on from there), skips those backing off, and refreshes 100 of
    /// them, taken round-robin across organizations (soonest expiry first
    /// within each), four at a time: one organization's broken or slow
    /// instances cannot starve another's.
    pub async fn run_background(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut resume = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            resume = self.background_pass(resume, &shutdown).await;
        }
    }

    /// One pass from `resume` (`None`: the start of the list); returns
    /// where the next pass starts.
    async fn background_pass(
        self: &Arc<Self>,
        resume: Option<(i64, i64)>,
        shutdown: &tokio::sync::watch::Receiver<bool>,
    ) -> Option<(i64, i64)> {
        let now = now_seconds();
        let now_ms = elements_store::now_millis();
        self.core.prune_failures(now_ms);
        let before = now + self.core.policy.refresh_margin;
        let mut queues: BTreeMap<i64, VecDeque<i64>> = BTreeMap::new();
        let (mut taken, mut after, mut next) = (0, resume, None);
        for page_number in 0..MAX_PAGES {
            let page = match self
                .core
                .store
                .expiring_page_renewable(before, after, PAGE, &self.core.renewable_elements)
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "background refresh: cannot list expiring instances");
                    break;
                }
            };
            for &(id, organization, _) in &page {
                if self.core.background_blocked(id, now_ms) {
                    continue;
                }
                let queue = queues.entry(organization).or_default();
                if queue.len() < PASS_BUDGET {
                    queue.push_back(id);
                    taken += 1;
                }
            }
            after = page.last().map(|&(id, _, expires_at)| (expires_at, id));
            if (page.len() as i64) < PAGE {
                break;
            }
            if page_number + 1 == MAX_PAGES {
                next = after;
            }
        }
        // Round-robin across organizations, soonest expiry first in each.
        let mut order = Vec::with_capacity(taken.min(PASS_BUDGET));
        'rounds: loop {
            let mut any = false;
            for queue in queues.values_mut() {
                if let Some(id) = queue.pop_front() {
                    order.push(id);
                    any = true;
                    if order.len() >= PASS_BUDGET {
                        break 'rounds;
                    }
                }
            }
            if !any {
                break;
            }
        }
        let mut running = tokio::task::JoinSet::new();
        for id in order {
            if *shutdown.borrow() {
                break;
            }
            while running.len() >= CONCURRENCY {
                running.join_next().await;
            }
            let me = self.clone();
            running.spawn(async move {
                // Failures are counted by the flight and logged by the job.
                let _ = me.refresh(id, false).await;
            });
        }
        while running.join_next().await.is_some() {}
        next
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

    fn set(access: &str, refresh: Option<&str>, token_type: Option<&str>) -> TokenSet {
        TokenSet {
            access_token: Secret::new(access),
            refresh_token: refresh.map(Secret::new),
            token_type: token_type.map(str::to_owned),
            expires_in: Some(60),
            scope: None,
        }
    }

    #[test]
    fn hostile_token_answers_are_refused_or_normalised() {
        let p = TokenPolicy::default();
        let ok = p.accept(0, set("at", Some("rt"), Some("Bearer"))).unwrap();
        assert_eq!(ok.token_type.as_deref(), Some("Bearer"));
        assert_eq!(ok.expires_at, Some(60));
        for odd in ["bearer\r\nX-Evil: 1", "", "mac token", &"x".repeat(33)] {
            let t = p.accept(0, set("at", None, Some(odd))).unwrap();
            assert_eq!(t.token_type, None, "{odd:?}");
        }
        let r = p
            .accept(0, set("a\u{7}t", Some("rt-new"), None))
            .unwrap_err();
        assert_eq!(r.reason, "the access token contains control characters");
        assert_eq!(r.refresh_token.unwrap().expose(), "rt-new");
        let r = p.accept(0, set("a t", None, None)).unwrap_err();
        assert_eq!(r.reason, "the access token contains whitespace");
        let r = p
            .accept(0, set(&"a".repeat(MAX_TOKEN_LEN + 1), None, None))
            .unwrap_err();
        assert_eq!(r.reason, "the access token is longer than 16384 bytes");
        let r = p.accept(0, set("at", Some("r\nt"), None)).unwrap_err();
        assert_eq!(r.reason, "the refresh token contains control characters");
        assert!(r.refresh_token.is_none());
    }

    #[test]
    fn backoff_schedules() {
        let p = TokenPolicy::default();
        assert_eq!(
            (1..=4)
                .map(|n| foreground_delay_ms(&p, n))
                .collect::<Vec<_>>(),
            [0, 2_000, 4_000, 8_000]
        );
        assert_eq!(foreground_delay_ms(&p, 40), 300_000);
        assert_eq!(
            (1..=3).map(background_delay_ms).collect::<Vec<_>>(),
            [30_000, 60_000, 120_000]
        );
        assert_eq!(background_delay_ms(u32::MAX), 1_800_000);
    }

    #[test]
    fn permanent_and_transient_failures() {
        let refused = |status, error: Option<&str>| ProviderError::Refused {
            status,
            error: error.map(str::to_owned),
            message: "m".into(),
        };
        assert!(is_permanent(&refused(400, Some("invalid_grant"))));
        assert!(is_permanent(&refused(401, None)));
        assert!(!is_permanent(&refused(429, None)));
        assert!(!is_permanent(&ProviderError::Unavailable { status: 503 }));
        assert!(!is_permanent(&ProviderError::InvalidResponse("x".into())));
        assert_eq!(
            invalid_reason(&refused(400, Some("invalid_grant"))),
            "the provider refused the refresh token (invalid_grant: m)"
        );
        assert_eq!(
            invalid_reason(&refused(401, None)),
            "the provider refused the refresh (HTTP 401: m)"
        );
    }
}
