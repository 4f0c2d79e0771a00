#![forbid(unsafe_code)]
//! Storage for accounts and instances.
//!
//! One [`Store`] trait and one implementation of it, on either engine
//! (SQLite, PostgreSQL), picked once from the database URL by [`connect`].
//! Every query is written once, in portable SQL, and compiled against each
//! engine's driver (`sql.rs` explains how); only connecting, inserting a new
//! instance, the refresh lock and the durability read-back are per engine.
//! Queries are checked at run time (no database is needed to compile); each
//! engine embeds its migrations and runs them on connect.
//!
//! **Secrets at rest.** Provider tokens and the instance configuration are
//! encrypted with AES-256-GCM ([`crypto::Keyring`]): a fresh 96-bit nonce per
//! value, the row's identity and the column name as associated data (a value
//! copied to another row or column does not decrypt), and the key id stored
//! with the ciphertext so keys can rotate. Instance tokens and account secrets
//! are stored only as SHA-256 hashes ([`hash_secret`]); they are 256-bit
//! random values, so a fast hash is enough.
//!
//! **Durability.** A write that returned `Ok` is on disk: SQLite runs in WAL
//! mode with `synchronous=FULL` on every connection (the group-commit
//! writer's included); PostgreSQL connections are opened with
//! `synchronous_commit=on`, whatever the server's default.
//! [`Store::durability`] reads these settings back from the database.
//!
//! **One unreadable row fails alone.** [`Store::list_instances`] returns the
//! rows that decrypt and names the ones that do not; reading a single
//! undecryptable instance is a [`StoreError::Decrypt`]. [`rewrap`] verifies
//! afterwards that nothing is left under another key than the current one.
#![deny(missing_docs)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use elements_core::{Configuration, Secret};

mod common;
pub mod crypto;
pub mod events;
pub mod notify;
mod postgres;
mod sql;
mod sqlite;

pub use crypto::Keyring;
pub use events::{
    CheckOutcome, DeliveryClaim, DeliveryResult, EventFilter, EventKind, EventSummary, Health,
    HealthState, NewWebhook, Webhook,
};

/// A SHA-256 hash of an account secret or instance token.
pub type SecretHash = [u8; 32];

/// Hashes an account secret or instance token for storage and lookup.
pub fn hash_secret(secret: &str) -> SecretHash {
    use sha2::{Digest, Sha256};
    Sha256::digest(secret.as_bytes()).into()
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database error: {0}")]
    Database(String),
    /// A stored secret did not decrypt: wrong or missing key, or tampering.
    #[error("cannot decrypt stored {what}: {reason}")]
    Decrypt {
        /// Which value.
        what: String,
        /// Why (never the value).
        reason: String,
    },
    /// A unique constraint was violated (e.g. an account secret already in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The URL names no supported engine, or is malformed.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The encryption key configuration is unusable (never echoes a key).
    #[error("invalid encryption key: {0}")]
    Key(String),
    /// [`Store::create_instance_capped`]: the organization already holds
    /// its cap of instances; nothing was written.
    #[error("the organization already holds its maximum number of instances")]
    InstanceCap,
}

/// Shorthand.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A new organization with its first user.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Organization name.
    pub organization_name: String,
    /// Hash of the organization secret.
    pub organization_secret_hash: SecretHash,
    /// The user's e-mail address.
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Hash of the user secret.
    pub user_secret_hash: SecretHash,
}

/// A user of an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: i64,
    /// E-mail address.
    pub email: String,
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
}

/// An authenticated caller: a user acting for an organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The organization's id.
    pub organization_id: i64,
    /// The organization's name.
    pub organization_name: String,
    /// The user.
    pub user: User,
}

/// The provider tokens of an instance (decrypted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    /// The access token.
    pub access_token: Option<Secret>,
    /// The refresh token.
    pub refresh_token: Option<Secret>,
    /// `token_type`, e.g. `bearer`.
    pub token_type: Option<String>,
    /// When the access token expires, in Unix seconds.
    pub expires_at: Option<i64>,
}

/// A new instance.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// Owning organization.
    pub organization_id: i64,
    /// Creating user.
    pub user_id: i64,
    /// Element key.
    pub element_key: String,
    /// Element id.
    pub element_id: u64,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Configuration (encrypted at rest as a whole).
    pub configuration: Configuration,
    /// Hash of the instance token.
    pub token_hash: SecretHash,
    /// Provider tokens.
    pub tokens: Tokens,
}

/// A stored instance, decrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// Id (a positive integer below 2^53, safe in JSON: creation time in
    /// milliseconds above 12 random bits).
    pub id: i64,
    /// Owning organization.
    pub organization_id: i64,
    /// The user who created it.
    pub user: User,
    /// Element key.
    pub element_key: String,
    /// Element id.
    pub element_id: u64,
    /// Name.
    pub name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Configuration, decrypted.
    pub configuration: Configuration,
    /// Provider tokens, decrypted.
    pub tokens: Tokens,
    /// False once the provider refused the grant for good.
    pub valid: bool,
    /// Why the instance is invalid, if it is (never a secret).
    pub invalid_reason: Option<String>,
    /// Disabled by its owner.
    pub disabled: bool,
    /// Creation time, Unix milliseconds.
    pub created_at: i64,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
    /// Incremented on every token change; lets a refresher see that another
    /// one got there first.
    pub token_version: i64,
    /// Health (issue 16): derived from `valid`, `disabled` and the failure
    /// count, so the three always agree.
    pub health: Health,
}

/// Changes to an instance's owner-editable fields; `None` leaves a field as is.
#[derive(Debug, Clone, Default)]
pub struct InstancePatch {
    /// New name.
    pub name: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// Disable (true) or enable (false).
    pub disabled: Option<bool>,
}

/// What a refresh job decided, applied by the store under the lock.
#[derive(Debug, Clone)]
pub enum RefreshDecision {
    /// Nothing to write (another refresher already did the work, or a
    /// transient failure).
    Unchanged,
    /// New tokens. A `None` refresh token keeps the stored one.
    Update(Tokens),
    /// The grant is dead: set `valid = false` with this reason.
    Invalidate(String),
    // ---- leftovers (issues 13 and 17) ----
    /// New tokens and the whole new configuration (with the token-response
    /// fields the element keeps, issue 13.2.5), written together.
    UpdateWithConfiguration(Tokens, Configuration),
    /// A re-provisioning (`PUT` with tokens or configuration): what
    /// [`Store::replace_instance`] writes, under the refresh lock so that no
    /// concurrent refresher overwrites it with tokens of the old grant.
    Replace(ReplaceInstance),
}

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The work done while holding an instance's refresh lock: it receives the
/// instance as re-read *after* taking the lock.
pub type RefreshJob<'a> = Box<dyn FnOnce(Instance) -> BoxFuture<'a, RefreshDecision> + Send + 'a>;

/// Accounts and instances, on one engine.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The engine's name, `sqlite` or `postgres`.
    fn engine(&self) -> &'static str;

    /// Creates an organization and its first user. A secret hash already in
    /// use is a [`StoreError::Conflict`].
    async fn create_account(&self, new: NewAccount) -> Result<Principal>;

    /// How many organizations exist.
    async fn organization_count(&self) -> Result<u64>;

    /// How many instances an organization holds.
    async fn count_instances(&self, organization_id: i64) -> Result<u64>;

    /// The principal whose user and organization secrets hash to these
    /// values, compared in constant time; `None` if they do not match.
    async fn authenticate(
        &self,
        user_secret_hash: &SecretHash,
        organization_secret_hash: &SecretHash,
    ) -> Result<Option<Principal>>;

    /// Stores a new instance durably and returns it.
    async fn create_instance(&self, new: NewInstance) -> Result<Instance>;

    /// The instance `id` if it belongs to `organization_id`.
    async fn instance(&self, organization_id: i64, id: i64) -> Result<Option<Instance>>;

    /// The instance `id`, whatever its organization (for token refresh, which
    /// acts for the instance itself, never for a caller).
    async fn instance_any(&self, id: i64) -> Result<Option<Instance>>;

    /// The instance whose token hashes to `token_hash`.
    async fn instance_by_token(&self, token_hash: &SecretHash) -> Result<Option<Instance>>;

    /// The organization's instances having every tag in `tags`, newest
    /// first; fails with the first row that does not decrypt. Callers that
    /// must not fail because of one row use [`Store::list_instances`].
    async fn instances(&self, organization_id: i64, tags: &[String]) -> Result<Vec<Instance>> {
        let list = self.list_instances(organization_id, tags).await?;
        match list.unreadable.into_iter().next() {
            Some(unreadable) => Err(unreadable.error),
            None => Ok(list.instances),
        }
    }

    /// The organization's instances having every tag in `tags`, newest
    /// first, and apart the ids of those that match but cannot be read (a
    /// secret that does not decrypt: a retired key, tampering). Tags are
    /// stored in the clear, so the filter applies to unreadable rows too.
    async fn list_instances(&self, organization_id: i64, tags: &[String]) -> Result<InstanceList>;

    /// Applies a patch; `None` if there is no such instance in the organization.
    async fn update_instance(
        &self,
        organization_id: i64,
        id: i64,
        patch: InstancePatch,
    ) -> Result<Option<Instance>>;

    /// Deletes an instance; false if there was none in the organization.
    async fn delete_instance(&self, organization_id: i64, id: i64) -> Result<bool>;

    /// Runs `job` while holding instance `id`'s refresh lock, which excludes
    /// every other refresher of that instance in every process sharing the
    /// database, and dies with a crashed holder (PostgreSQL: a row lock in a
    /// transaction; SQLite: a lease that expires after `lease_seconds`).
    /// The job gets the instance re-read after the lock was taken; its
    /// decision is written before the lock is released. Returns the instance
    /// as stored afterwards, or `None` if it no longer exists.
    async fn refresh_locked<'a>(
        &'a self,
        id: i64,
        lease_seconds: i64,
        job: RefreshJob<'a>,
    ) -> Result<Option<Instance>>;

    /// A fact about the database itself (`meta` table).
    async fn meta(&self, key: &str) -> Result<Option<String>>;

    /// Sets a fact about the database itself.
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;

    /// The sealed columns of every instance, for re-encryption.
    async fn sealed_rows(&self) -> Result<Vec<SealedRow>>;

    /// Replaces one instance's sealed columns if they still hold `old`
    /// (compare-and-swap); false if the row changed or is gone.
    async fn replace_sealed(&self, old: &SealedRow, new: &SealedRow) -> Result<bool>;

    /// The organization's allow-list of exact callback URLs (empty: no list).
    async fn callback_urls(&self, organization_id: i64) -> Result<Vec<String>>;

    /// Replaces the organization's allow-list (empty: remove it).
    async fn set_callback_urls(&self, organization_id: i64, urls: &[String]) -> Result<()>;

    /// Ids of valid, enabled instances with a refresh token whose access token
    /// expires before `unix_seconds`, soonest first, at most `limit`.
    async fn expiring_before(&self, unix_seconds: i64, limit: i64) -> Result<Vec<i64>>;

    /// One keyset page of the instances [`Store::expiring_before`] selects:
    /// `(id, organization_id, expires_at)` ordered by `(expires_at, id)`,
    /// strictly after `after` (an `(expires_at, id)` of the previous page),
    /// at most `limit`.
    async fn expiring_page(
        &self,
        unix_seconds: i64,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<(i64, i64, i64)>>;
    /// The durability settings the store's own connections run with, as the
    /// database reports them.
    async fn durability(&self) -> Result<Durability>;

    // --- ops: secret rotation, readiness, metrics ---

    /// Replaces organization `organization_id`'s secret hash (the old secret
    /// stops working at once); false if there is no such organization.
    async fn set_organization_secret(
        &self,
        organization_id: i64,
        hash: &SecretHash,
    ) -> Result<bool>;

    /// Replaces user `user_id`'s secret hash; false if there is no such user.
    async fn set_user_secret(&self, user_id: i64, hash: &SecretHash) -> Result<bool>;

    /// Replaces instance `id`'s token hash if it belongs to
    /// `organization_id`; false if there is no such instance there.
    async fn set_instance_token(
        &self,
        organization_id: i64,
        id: i64,
        hash: &SecretHash,
    ) -> Result<bool>;

    /// Instances of every organization by state (one cheap count query).
    async fn instance_states(&self) -> Result<InstanceStates>;

    /// The readiness checks, in order: `database` (a query answers),
    /// `migrations` (the latest embedded migration is applied), `key` (the
    /// sealed key check opens with this store's keyring). Each is `Ok` or
    /// the reason it failed (never a secret).
    async fn readiness(&self) -> Vec<(&'static str, std::result::Result<(), String>)>;

    /// The connection pool: (open connections, idle connections).
    fn pool_usage(&self) -> (u32, usize);
    // ---- compat: instance paging and counts ----

    /// One keyset page of the organization's instances, newest first:
    /// those strictly older than `query.after` (a [`InstancePage::next`] of
    /// the previous page), whose name contains `query.search` (ASCII
    /// case-insensitive) and which have every tag in `query.tags`; at most
    /// `query.limit` rows are read. Unreadable rows are named apart, as in
    /// [`Store::list_instances`]; a page may hold fewer rows than `limit`
    /// while `next` is still set. Unfiltered, `next` is set only when
    /// another row follows; filtered (search, tags), whenever the page is
    /// full, so the last page of a filtered list may be empty (finding the
    /// next match could mean scanning every older row).
    async fn instance_page(&self, organization_id: i64, query: &PageQuery) -> Result<InstancePage>;

    /// How many instances the organization holds per element key, by key.
    async fn instance_counts(&self, organization_id: i64) -> Result<Vec<(String, u64)>>;

    /// Replaces an instance's name, tags and, when given, configuration and
    /// provider tokens (a re-provisioning: the instance becomes valid again).
    /// `None` if there is no such instance in the organization.
    async fn replace_instance(
        &self,
        organization_id: i64,
        id: i64,
        replace: ReplaceInstance,
    ) -> Result<Option<Instance>>;
    // --- kinds (credential kinds) ---

    /// Like [`Store::expiring_page`], but also selects the instances of the
    /// elements in `renewable_elements` that have no refresh token (their
    /// tokens are renewed by a new grant, e.g. OAuth 2.0 client credentials).
    /// With an empty list it selects exactly what `expiring_page` selects.
    async fn expiring_page_renewable(
        &self,
        unix_seconds: i64,
        after: Option<(i64, i64)>,
        limit: i64,
        renewable_elements: &[String],
    ) -> Result<Vec<(i64, i64, i64)>>;
    // ---- events (issue 16): health, the outbox, webhooks ----

    /// Records a transient refresh failure of a valid instance: its health
    /// becomes (or stays) `degraded` with the count and `error` (never a
    /// secret), and an `instance.refresh_failed` event with `attempt` is
    /// written in the same transaction. False if there is no such valid
    /// instance.
    async fn record_refresh_failure(&self, id: i64, error: &str) -> Result<bool>;

    /// Feeds the outcome of a credential check (e.g. a catalog `verify`
    /// request) into the health machine: `Ok` recovers a degraded or invalid
    /// instance (`instance.recovered`), `Transient` degrades it
    /// (`instance.refresh_failed` with `source: "check"`), `Rejected` makes
    /// it invalid (`instance.invalid`). Returns whether the state changed
    /// (or, for `Transient`, the failure was counted).
    async fn record_check(&self, id: i64, outcome: CheckOutcome) -> Result<bool>;

    /// Writes an event of `kind` with `data` (an object; for instance events
    /// `instanceId` and `element` at least) to the outbox, for events not
    /// caused by a store write (`instance.revoked` with its `outcome`,
    /// `connect.failed`). Returns the event id.
    async fn record_event(
        &self,
        organization_id: i64,
        kind: EventKind,
        data: serde_json::Value,
    ) -> Result<String>;

    /// Creates a webhook endpoint (the secret is sealed at rest).
    async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook>;

    /// The organization's webhooks, oldest first.
    async fn webhooks(&self, organization_id: i64) -> Result<Vec<Webhook>>;

    /// Deletes a webhook (and its deliveries); false if none in the organization.
    async fn delete_webhook(&self, organization_id: i64, id: i64) -> Result<bool>;

    /// The organization's newest events (at most `limit`) with their deliveries.
    async fn events(&self, organization_id: i64, limit: i64) -> Result<Vec<EventSummary>>;

    /// Makes every delivery of event `event_id` pending again (attempts
    /// reset, due now). `None` if the organization has no such event;
    /// otherwise how many deliveries were reset.
    async fn redeliver_event(&self, organization_id: i64, event_id: &str) -> Result<Option<u64>>;

    /// Fans out up to `limit` events not yet fanned out: one delivery per
    /// enabled webhook of the event's organization whose filter matches.
    /// Returns how many events were fanned out. Safe to run in several
    /// processes (PostgreSQL: `FOR UPDATE SKIP LOCKED`).
    async fn fan_out_events(&self, limit: i64) -> Result<u64>;

    /// Claims up to `limit` due deliveries for `lease_millis` under `owner`
    /// (a random tag per call): no other worker claims them before the lease
    /// ends or [`Store::finish_delivery`] releases them.
    async fn claim_deliveries(
        &self,
        owner: i64,
        lease_millis: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryClaim>>;

    /// Records the result of a claimed delivery, if `owner` still holds it.
    async fn finish_delivery(
        &self,
        delivery_id: i64,
        owner: i64,
        result: DeliveryResult,
    ) -> Result<bool>;
    // connect: hosted connect sessions (see [`ConnectSession`])

    /// Stores a new connect session (configuration sealed) and returns it.
    async fn create_connect_session(&self, new: NewConnectSession) -> Result<ConnectSession>;

    /// The connect session whose token hashes to `token_hash`, whatever its
    /// stage or expiry (callers decide). A used session has an empty
    /// configuration (its secrets were wiped).
    async fn connect_session(&self, token_hash: &SecretHash) -> Result<Option<ConnectSession>>;

    /// Starts (or restarts) the provider leg of session `id`: binds the
    /// hashed `state` and the sealed PKCE verifier, replacing earlier ones.
    /// False if the session is used, expired at `now_millis` or gone.
    async fn begin_connect_authorization(
        &self,
        id: i64,
        state_hash: &SecretHash,
        verifier: Option<&Secret>,
        popup: bool,
        now_millis: i64,
    ) -> Result<bool>;

    /// Takes the session bound to `state_hash`, once: marks it used and
    /// wipes its sealed columns, returning what they held. Expiry is the
    /// caller's to judge (the session is used up either way).
    async fn take_connect_state(&self, state_hash: &SecretHash) -> Result<ConnectTaken>;

    /// Marks session `id` used (wiping its secrets) if it is still open or
    /// authorizing and not expired at `now_millis`; false otherwise.
    async fn finish_connect_session(&self, id: i64, now_millis: i64) -> Result<bool>;

    /// Deletes the sessions that expired before `now_millis`; how many.
    async fn sweep_connect_sessions(&self, now_millis: i64) -> Result<u64>;

    // private elements (issue 17)

    /// An organization's private elements (in row id order) and the keys of
    /// the elements it has deactivated for itself.
    async fn private_catalog(
        &self,
        organization_id: i64,
    ) -> Result<(Vec<PrivateElementRow>, Vec<String>)>;

    /// Stores a new private element; a key the organization already has is
    /// [`StoreError::Conflict`]. Returns the row.
    async fn insert_private_element(
        &self,
        organization_id: i64,
        key: &str,
        spec_toml: &str,
    ) -> Result<PrivateElementRow>;

    /// Replaces a private element's key and text; `false` if the
    /// organization has no such row. A key in use is [`StoreError::Conflict`].
    async fn update_private_element(
        &self,
        organization_id: i64,
        row_id: i64,
        key: &str,
        spec_toml: &str,
    ) -> Result<bool>;

    /// Deletes a private element (and its deactivation, if any); `false` if
    /// the organization has no such row.
    async fn delete_private_element(&self, organization_id: i64, row_id: i64) -> Result<bool>;

    /// Deactivates (`active = false`) or re-activates an element key for one
    /// organization. Idempotent.
    async fn set_element_active(&self, organization_id: i64, key: &str, active: bool)
        -> Result<()>;
    // ---- health: background checks, event retention, rewrap coverage ----

    /// Claims up to `limit` enabled instances whose health check is due at
    /// `now_millis` (`next_check_at`, or one `period_millis` after creation
    /// when never checked) and, in the same statement, moves each one's
    /// next check to `next_at + (id mod spread_millis)` (spread: jitter).
    /// A row is claimed by one caller only, across processes (PostgreSQL:
    /// `FOR UPDATE SKIP LOCKED`). Returns the ids claimed.
    async fn claim_health_checks(
        &self,
        now_millis: i64,
        period_millis: i64,
        next_at: i64,
        spread_millis: i64,
        limit: i64,
    ) -> Result<Vec<i64>>;

    /// Deletes up to `limit` events created before `before_millis` whose
    /// deliveries are all finished (delivered or dead; none pending) and
    /// that were fanned out; never a pending one. Returns how many.
    async fn delete_old_events(&self, before_millis: i64, limit: i64) -> Result<u64>;

    /// Every sealed value outside the instances table (webhook signing
    /// secrets, connect sessions' configuration and PKCE verifier), for
    /// [`rewrap`].
    async fn other_sealed_values(&self) -> Result<Vec<SealedValue>>;

    /// Replaces one [`SealedValue`] if it still holds `old.value`
    /// (compare-and-swap); false if it changed or is gone.
    async fn replace_sealed_value(&self, old: &SealedValue, new_value: &str) -> Result<bool>;

    // ---- speed (issue 19) ----

    /// Whether the organization holds at least `cap` instances (the
    /// `max_instances_per_organization` check of a new instance before a
    /// provider call; [`Store::create_instance_capped`] checks at the
    /// insert). The
    /// default counts them all; the SQL store does not count while it can
    /// avoid it (see its implementation), so the check does not grow with
    /// the organization.
    async fn has_at_least_instances(&self, organization_id: i64, cap: u64) -> Result<bool> {
        Ok(self.count_instances(organization_id).await? >= cap)
    }

    /// [`Store::create_instance`] for a caller that knows the creating
    /// user's details (the authenticated principal's `user`): the answer is
    /// built from what was written instead of reading the row back. The
    /// same `Instance` a read would return; if `creator.id` is not
    /// `new.user_id`, the row is read back as by `create_instance`. The
    /// default does exactly that.
    async fn create_instance_by(&self, new: NewInstance, creator: &User) -> Result<Instance> {
        let _ = creator;
        self.create_instance(new).await
    }

    /// Stores a new instance (as [`Store::create_instance_by`] with
    /// `creator`, else as [`Store::create_instance`]) unless the
    /// organization already holds `cap` instances: then
    /// [`StoreError::InstanceCap`] and nothing is written. The SQL store
    /// checks inside the insert's own transaction (on SQLite the
    /// group-commit writer's, which serializes every insert, so the cap is
    /// exact and the check costs one statement per organization per batch
    /// instead of a round trip per request); the default checks with
    /// [`Store::has_at_least_instances`] first, then inserts.
    async fn create_instance_capped(
        &self,
        new: NewInstance,
        creator: Option<&User>,
        cap: u64,
    ) -> Result<Instance> {
        if self
            .has_at_least_instances(new.organization_id, cap)
            .await?
        {
            return Err(StoreError::InstanceCap);
        }
        match creator {
            Some(user) => self.create_instance_by(new, user).await,
            None => self.create_instance(new).await,
        }
    }
    // --- cache (issue 19) ---
    /// Registers `hook`, told of every change made through this store (in
    /// this process) as soon as the write returned. Other processes learn of
    /// changes through [`notify::listen`] (PostgreSQL).
    fn on_change(&self, hook: notify::ChangeHook) {
        let _ = hook;
    }
}

/// A sealed value outside the instances table (health: rewrap coverage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedValue {
    /// `table.column`, e.g. `webhooks.secret_enc`.
    pub column: &'static str,
    /// The row's id (webhook id, connect session id).
    pub id: i64,
    /// The associated data the value is sealed with.
    pub aad: String,
    /// The sealed value.
    pub value: String,
}

/// What [`Store::instance_page`] selects (compat).
#[derive(Debug, Clone, Default)]
pub struct PageQuery {
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// A substring of the name.
    pub search: Option<String>,
    /// The cursor: rows older than this position.
    pub after: Option<i64>,
    /// Most rows read.
    pub limit: u32,
    /// Only instances of this element key.
    pub element: Option<String>,
}

/// One page of instances (compat).
#[derive(Debug, Default)]
pub struct InstancePage {
    /// The rows of the page.
    pub list: InstanceList,
    /// The cursor of the next page; `None` on the last page.
    pub next: Option<i64>,
}

/// What [`Store::replace_instance`] writes (compat).
#[derive(Debug, Clone)]
pub struct ReplaceInstance {
    /// New name.
    pub name: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New configuration (the whole of it).
    pub configuration: Option<Configuration>,
    /// New provider tokens (re-provisioned): replaces all token columns and
    /// marks the instance valid.
    pub tokens: Option<Tokens>,
}

/// Instances by state, for metrics: `disabled` counts every disabled
/// instance; `valid` and `invalid` count the enabled ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstanceStates {
    /// Enabled and valid.
    pub valid: u64,
    /// Enabled, marked invalid (the provider refused its refresh token).
    pub invalid: u64,
    /// Disabled.
    pub disabled: u64,
}

/// What [`rewrap_with_progress`] reports after each row: (rows handled in
/// this pass, rows in this pass).
pub type Progress<'a> = &'a mut (dyn FnMut(u64, u64) + Send);

/// What [`Store::list_instances`] found.
#[derive(Debug, Default)]
pub struct InstanceList {
    /// The instances that decrypted, newest first.
    pub instances: Vec<Instance>,
    /// The matching instances that could not be read, newest first.
    pub unreadable: Vec<Unreadable>,
}

/// An instance that could not be read.
#[derive(Debug)]
pub struct Unreadable {
    /// The instance id.
    pub id: i64,
    /// Why (never a value).
    pub error: StoreError,
}

/// What [`Store::durability`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durability {
    /// `sqlite` or `postgres`.
    pub engine: &'static str,
    /// Each setting of each connection checked, in a fixed order.
    pub settings: Vec<DurabilitySetting>,
}

/// One durability setting of one of the store's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurabilitySetting {
    /// Which connection: `pool` (one of the pool's) or `writer` (SQLite's
    /// group-commit writer).
    pub connection: &'static str,
    /// The setting: `journal_mode`, `synchronous` (SQLite; `2` is FULL) or
    /// `synchronous_commit` (PostgreSQL).
    pub name: &'static str,
    /// Its value, as the database reports it.
    pub value: String,
}

impl DurabilitySetting {
    pub(crate) fn new(connection: &'static str, name: &'static str, value: String) -> Self {
        DurabilitySetting {
            connection,
            name,
            value,
        }
    }
}

/// The encrypted columns of one instance, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    /// The instance id (part of the associated data).
    pub id: i64,
    /// `configuration_enc`.
    pub configuration: String,
    /// `access_token_enc`.
    pub access_token: Option<String>,
    /// `refresh_token_enc`.
    pub refresh_token: Option<String>,
}

/// What [`rewrap`] did, and what it left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewrapReport {
    /// Instances whose secrets were re-encrypted with the current key.
    pub rewrapped: u64,
    /// Instances already under the current key.
    pub unchanged: u64,
    /// Values still under another key after the last pass (verified by
    /// reading every row again). Empty: the old keys can be retired.
    pub stranded: Vec<Stranded>,
}

/// A stored value that is not under the keyring's current key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stranded {
    /// The instance (for `webhooks.*` and `connect_sessions.*` columns: the
    /// webhook's or the connect session's id).
    pub instance_id: i64,
    /// `table.column`, e.g. `instances.access_token_enc`.
    pub column: &'static str,
    /// The key id the value is sealed with (`(malformed)` if it has none).
    pub key_id: String,
    /// Whether that key is in the keyring rewrap was given (if not, the
    /// value was written by a process with another key, or it is damaged).
    pub key_in_keyring: bool,
}

pub(crate) const KEY_CHECK: &str = "key_check";
pub(crate) const KEY_CHECK_AAD: &str = "meta:key_check";
pub(crate) const KEY_CHECK_VALUE: &[u8] = b"elements key check";

/// Refuses a keyring that cannot read this database: a value sealed with
/// the key in force when the database was created (or last rewrapped) must
/// decrypt. A new database gets the value now.
async fn check_key(store: &dyn Store, keyring: &Keyring) -> Result<()> {
    match store.meta(KEY_CHECK).await? {
        None => {
            let sealed = keyring.encrypt(KEY_CHECK_AAD, KEY_CHECK_VALUE);
            store.set_meta(KEY_CHECK, &sealed).await
        }
        Some(sealed) => match keyring.decrypt(KEY_CHECK_AAD, &sealed) {
            Ok(v) if v == KEY_CHECK_VALUE => Ok(()),
            _ => {
                let written_with = sealed.split('.').nth(1).unwrap_or("?").to_owned();
                let given: Vec<&str> = keyring.key_ids().collect();
                Err(StoreError::Key(format!(
                    "the master key does not match this database: it was sealed with key id {written_with}, \
                     the keys given have ids {}; start with the key the database was created with \
                     (ELEMENTS_MASTER_KEY or the key file), listing new keys first to rotate",
                    given.join(", ")
                )))
            }
        },
    }
}

/// How many passes [`rewrap`] makes over rows that change underfoot.
const REWRAP_PASSES: usize = 5;

/// Re-encrypts every stored secret with the keyring's current (first) key,
/// then verifies: every row is read again and each value still under another
/// key is listed in [`RewrapReport::stranded`] (instance, column, key id;
/// never a value). Only when none is left is the key check re-sealed with the
/// current key, so that older keys can be retired; while values are
/// stranded, a server given only the new key still refuses to start.
///
/// Safe while servers run: each row is replaced only if unchanged since it
/// was read; rows that changed underfoot are read again, for up to five
/// passes. A value that does not decrypt with this keyring is skipped (its
/// row is left as it is) and reported as stranded. A row written under an
/// old key *after* the verification (a replica still running with the old
/// key first) is not seen: restart every replica with the new key first,
/// then run rewrap, and again until it reports nothing stranded.
pub async fn rewrap(store: &dyn Store, keyring: &Keyring) -> Result<RewrapReport> {
    rewrap_with_progress(store, keyring, &mut |_, _| {}).await
}

/// [`rewrap`], calling `progress(done, total)` as it reaches each row of
/// each pass (a pass reads every row again).
pub async fn rewrap_with_progress(
    store: &dyn Store,
    keyring: &Keyring,
    progress: Progress<'_>,
) -> Result<RewrapReport> {
    let current = keyring.current_key_id().to_owned();
    let under_current = |v: &str| key_id_of(v) == Some(current.as_str());
    let reseal = |id: i64, column: &str, v: &str| -> Result<String> {
        let aad = common::aad(id, column);
        let plain = keyring.decrypt(&aad, v)?;
        Ok(keyring.encrypt(&aad, &plain))
    };
    let mut report = RewrapReport::default();
    for _pass in 0..REWRAP_PASSES {
        let mut changed_underfoot = false;
        report.unchanged = 0;
        let rows = store.sealed_rows().await?;
        let total = rows.len() as u64;
        for (done, row) in (1u64..).zip(rows) {
            progress(done, total);
            let all_current = under_current(&row.configuration)
                && row.access_token.as_deref().is_none_or(under_current)
                && row.refresh_token.as_deref().is_none_or(under_current);
            if all_current {
                report.unchanged += 1;
                continue;
            }
            let new = (|| {
                Ok::<_, StoreError>(SealedRow {
                    id: row.id,
                    configuration: reseal(row.id, common::COL_CONFIGURATION, &row.configuration)?,
                    access_token: row
                        .access_token
                        .as_deref()
                        .map(|v| reseal(row.id, common::COL_ACCESS_TOKEN, v))
                        .transpose()?,
                    refresh_token: row
                        .refresh_token
                        .as_deref()
                        .map(|v| reseal(row.id, common::COL_REFRESH_TOKEN, v))
                        .transpose()?,
                })
            })();
            let new = match new {
                Ok(new) => new,
                Err(e) => {
                    // Left as it is; the verification below reports it.
                    tracing::error!(instance_id = row.id, error = %e, "rewrap: cannot re-encrypt this instance");
                    continue;
                }
            };
            if store.replace_sealed(&row, &new).await? {
                report.rewrapped += 1;
            } else {
                changed_underfoot = true;
            }
        }
        // health: webhook secrets and connect sessions' sealed columns.
        for value in store.other_sealed_values().await? {
            if under_current(&value.value) {
                report.unchanged += 1;
                continue;
            }
            let resealed = keyring
                .decrypt(&value.aad, &value.value)
                .map(|plain| keyring.encrypt(&value.aad, &plain));
            match resealed {
                Ok(new) => {
                    if store.replace_sealed_value(&value, &new).await? {
                        report.rewrapped += 1;
                    } else {
                        changed_underfoot = true;
                    }
                }
                Err(e) => {
                    tracing::error!(id = value.id, column = value.column, error = %e, "rewrap: cannot re-encrypt this value");
                }
            }
        }
        // Rows written meanwhile (by a refresh, say) are read again.
        if !changed_underfoot {
            break;
        }
    }
    report.stranded = stranded(store, keyring).await?;
    if report.stranded.is_empty() {
        let sealed = keyring.encrypt(KEY_CHECK_AAD, KEY_CHECK_VALUE);
        store.set_meta(KEY_CHECK, &sealed).await?;
    }
    Ok(report)
}

/// Every stored value not under the keyring's current key.
async fn stranded(store: &dyn Store, keyring: &Keyring) -> Result<Vec<Stranded>> {
    let current = keyring.current_key_id();
    let mut out = Vec::new();
    for row in store.sealed_rows().await? {
        let columns = [
            ("instances.configuration_enc", Some(&row.configuration)),
            ("instances.access_token_enc", row.access_token.as_ref()),
            ("instances.refresh_token_enc", row.refresh_token.as_ref()),
        ];
        for (column, value) in columns {
            let Some(value) = value else { continue };
            let key_id = key_id_of(value);
            if key_id == Some(current) {
                continue;
            }
            let key_id = key_id.unwrap_or("(malformed)").to_owned();
            out.push(Stranded {
                instance_id: row.id,
                column,
                key_in_keyring: keyring.key_ids().any(|k| k == key_id),
                key_id,
            });
        }
    }
    // health: webhook secrets and connect sessions (`instance_id` is then
    // the webhook's or the session's id; `column` says which).
    for value in store.other_sealed_values().await? {
        let key_id = key_id_of(&value.value);
        if key_id == Some(current) {
            continue;
        }
        let key_id = key_id.unwrap_or("(malformed)").to_owned();
        out.push(Stranded {
            instance_id: value.id,
            column: value.column,
            key_in_keyring: keyring.key_ids().any(|k| k == key_id),
            key_id,
        });
    }
    Ok(out)
}

/// The key id a sealed value names (`v1.<key id>.<data>`), if well formed.
fn key_id_of(sealed: &str) -> Option<&str> {
    let mut parts = sealed.splitn(3, '.');
    let (_, id, _) = (parts.next()?, parts.next()?, parts.next()?);
    (id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// Opens the database named by `url` (`sqlite://PATH` or `postgres://...`),
/// runs its migrations, refuses a keyring that cannot read the database
/// ([`StoreError::Key`]), and returns the store.
pub async fn connect(url: &str, keyring: Keyring) -> Result<Arc<dyn Store>> {
    let keyring = Arc::new(keyring);
    let store = open(url, keyring.clone()).await?;
    check_key(store.as_ref(), &keyring).await?;
    Ok(store)
}

/// Like [`connect`] but without the start-up key check: every read of a
/// secret the keyring cannot open is then a [`StoreError::Decrypt`]. For
/// tests of that second line of defence; servers use [`connect`].
pub async fn connect_without_key_check(url: &str, keyring: Keyring) -> Result<Arc<dyn Store>> {
    open(url, Arc::new(keyring)).await
}

async fn open(url: &str, keyring: Arc<Keyring>) -> Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(sqlite::connect(url, keyring).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(postgres::connect(url, keyring).await?)
    } else {
        return Err(StoreError::InvalidUrl(
            "expected a URL starting with sqlite:// or postgres://".into(),
        ));
    };
    Ok(store)
}

/// Now, in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// connect: hosted connect sessions

/// A connect session to store. `expires_at` is Unix milliseconds.
#[derive(Debug, Clone)]
pub struct NewConnectSession {
    /// The organization the instance will belong to.
    pub organization_id: i64,
    /// The user who created the session.
    pub user_id: i64,
    /// The element's key.
    pub element_key: String,
    /// The instance's name.
    pub name: String,
    /// The instance's tags.
    pub tags: Vec<String>,
    /// What the app supplied (sealed at rest).
    pub configuration: Configuration,
    /// Where the end user returns (on the organization's allow-list).
    pub redirect_url: String,
    /// The app's reference for its end user.
    pub end_user: Option<String>,
    /// Whether the outcome goes to `window.opener` (popup mode).
    pub popup: bool,
    /// The session token's hash.
    pub token_hash: SecretHash,
    /// Unix milliseconds after which the session is refused.
    pub expires_at: i64,
}

/// Where a connect session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectStage {
    /// Created, the page not yet left for the provider.
    Open,
    /// Sent to the provider with a `state`.
    Authorizing,
    /// Used (an instance was attempted); its secrets are wiped.
    Done,
}

impl ConnectStage {
    pub(crate) fn parse(s: &str) -> ConnectStage {
        match s {
            "open" => ConnectStage::Open,
            "authorizing" => ConnectStage::Authorizing,
            _ => ConnectStage::Done,
        }
    }
}

/// A stored connect session, opened.
#[derive(Debug, Clone)]
pub struct ConnectSession {
    /// The session's id.
    pub id: i64,
    /// The organization the instance will belong to.
    pub organization_id: i64,
    /// The user who created the session.
    pub user_id: i64,
    /// The element's key.
    pub element_key: String,
    /// The instance's name.
    pub name: String,
    /// The instance's tags.
    pub tags: Vec<String>,
    /// The configuration (what the app supplied; empty once used).
    pub configuration: Configuration,
    /// Where the end user returns (on the organization's allow-list).
    pub redirect_url: String,
    /// The app's reference for its end user.
    pub end_user: Option<String>,
    /// Whether the outcome goes to `window.opener` (popup mode).
    pub popup: bool,
    /// Where the session is.
    pub stage: ConnectStage,
    /// Unix milliseconds.
    pub expires_at: i64,
}

/// What [`Store::take_connect_state`] found.
#[derive(Debug)]
pub enum ConnectTaken {
    /// The session, now used, with its PKCE verifier if it had one.
    Taken(Box<ConnectSession>, Option<Secret>),
    /// The state belonged to a session already used (a replay).
    AlreadyUsed,
    /// No session has this state (forged, tampered, or swept).
    Unknown,
}

// private elements (issue 17)

/// One stored private element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateElementRow {
    /// The row id (the element id is derived from it by the server).
    pub row_id: i64,
    /// The element's key.
    pub key: String,
    /// The element's TOML text, without `id`.
    pub spec_toml: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix milliseconds.
    pub updated_at: i64,
}
