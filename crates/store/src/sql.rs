//! The store's queries, written once for both engines.
//!
//! **Design.** Every query lives here, once: its SQL text, its binds and the
//! mapping of its rows. The text is portable SQL that PostgreSQL and SQLite
//! (3.39 or later, bundled by sqlx) both accept, with `$1`, `$2`, ...
//! placeholders: PostgreSQL's own syntax, which SQLite reads as numbered
//! parameters too (sqlx binds `$N` by number). Booleans are written
//! `TRUE`/`FALSE`, null-safe comparison `IS NOT DISTINCT FROM`.
//!
//! The code that runs a query is written once as well: [`on_pool!`] expands
//! one body once per engine, with the engine's own typed pool, so the
//! compiler checks the binds and row types against each driver and the
//! running code is exactly the driver's (no run-time translation layer).
//! [`on_conn!`] does the same for a connection (a transaction's).
//!
//! Why this and not the alternatives: functions generic over
//! `sqlx::Database` would have to spell sqlx's higher-ranked bounds
//! (`Executor` for `&mut Connection`, `Encode`/`Decode`/`Type` per Rust type,
//! `IntoArguments`) on every function, and those bounds are not implied, so
//! every new query would repeat them; `sqlx::Any` converts every value at run
//! time and hides the typed connections the engine-specific parts need; a
//! query builder (sea-query) adds a dependency and a second language for SQL
//! this simple, and would still leave the engine-specific parts below.
//!
//! **What stays per engine** ([`crate::sqlite`], [`crate::postgres`]):
//! connecting (pool options, durability settings, migrations), inserting a
//! new instance (SQLite through the group-commit writer, PostgreSQL
//! directly), the refresh lock (SQLite: a lease column; PostgreSQL: a row
//! lock in a transaction), and reading the durability settings.
//!
//! **A new query** (a new table, say) is one method on [`SqlStore`] using
//! `on_pool!` and `$N` placeholders, plus a migration per engine.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::Row as _;
use subtle::ConstantTimeEq as _;
use tracing::instrument;

use crate::common::{
    conflict, db_err, has_tags, instance_id, random_id, seal_configuration, seal_tokens, tags_json,
    unique_violation, Inserted, InstanceRow, RawInstance, HELD_UP_TO_CAP, ID_ATTEMPTS,
    INSTANCE_COLUMNS, INSTANCE_FROM,
};
use crate::events::{
    CheckOutcome, DeliveryClaim, DeliveryResult, DeliveryState, EventFilter, EventKind,
    EventSummary, NewEvent, NewWebhook, Webhook,
};
use elements_core::Secret;

use crate::{
    now_millis, postgres, sqlite, Durability, Instance, InstanceList, InstancePatch, Keyring,
    NewAccount, NewInstance, Principal, RefreshDecision, RefreshJob, Result, SealedRow, SecretHash,
    Store, StoreError, Unreadable, User,
};

/// The engine a store runs on, with what only that engine needs.
pub(crate) enum Db {
    /// SQLite: the pool and the group-commit writer.
    Sqlite(sqlite::Sqlite),
    /// PostgreSQL: the pool.
    Postgres(postgres::Postgres),
}

impl Db {
    /// The engine's `db.system` name in OpenTelemetry's conventions.
    pub(crate) fn system(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgresql",
        }
    }
}

/// A connection of either engine (e.g. a transaction's).
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(c: &'c mut SqliteConnection) -> Self {
        Conn::Sqlite(c)
    }
}

impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(c: &'c mut PgConnection) -> Self {
        Conn::Postgres(c)
    }
}

/// Runs `$body` with `$pool` bound to the engine's pool (`&SqlitePool` or
/// `&PgPool`): written once, compiled once per engine.
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::sql::Db::Sqlite(engine) => {
                let $pool = &engine.pool;
                $body
            }
            $crate::sql::Db::Postgres(engine) => {
                let $pool = &engine.pool;
                $body
            }
        }
    };
}

/// Runs `$body` with `$conn` bound to the engine's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`).
macro_rules! on_conn {
    ($c:expr, |$conn:ident| $body:expr) => {
        match $c {
            $crate::sql::Conn::Sqlite($conn) => $body,
            $crate::sql::Conn::Postgres($conn) => $body,
        }
    };
}

/// The store, on either engine.
pub(crate) struct SqlStore {
    pub(crate) db: Db,
    pub(crate) keyring: Arc<Keyring>,
    /// cache (issue 19): told of every change made through this store.
    pub(crate) changes: crate::notify::LocalHooks,
}

/// Writes a refresh decision on `conn`. `lease_owner`: SQLite's lease, also
/// released by the write, which happens only while `lease_owner` still holds
/// it; `None` under PostgreSQL's row lock. Returns the rows written (none for
/// `Unchanged` without a lease).
pub(crate) async fn write_decision(
    mut conn: Conn<'_>,
    keyring: &Keyring,
    id: i64,
    decision: &RefreshDecision,
    lease_owner: Option<i64>,
) -> Result<u64> {
    // The lease columns exist only in SQLite's schema.
    let (release, held) = match lease_owner {
        Some(_) => (
            "refresh_lease_until = NULL, refresh_lease_owner = NULL",
            " AND refresh_lease_owner = $7",
        ),
        None => ("", ""),
    };
    let comma = if release.is_empty() { "" } else { ", " };
    // leftovers: the decisions that write more than tokens.
    let update;
    let decision = match decision {
        RefreshDecision::UpdateWithConfiguration(tokens, configuration) => {
            write_configuration(conn.reborrow(), keyring, id, configuration, lease_owner).await?;
            update = RefreshDecision::Update(tokens.clone());
            &update
        }
        RefreshDecision::Replace(replace) => {
            return write_replace(conn, keyring, id, replace, lease_owner).await;
        }
        other => other,
    };
    // One list of seven parameters serves every statement: `$1`-`$4` the
    // new token columns (`$1` the reason when invalidating), `$5` the time,
    // `$6` the id, `$7` the lease owner; a statement ignores those it does
    // not name.
    let (sql, text, tokens) = match decision {
        RefreshDecision::Unchanged if lease_owner.is_none() => return Ok(0),
        RefreshDecision::Unchanged => (
            format!("UPDATE instances SET {release} WHERE id = $6{held}"),
            None,
            None,
        ),
        RefreshDecision::Update(tokens) => {
            let sealed = seal_tokens(keyring, id, tokens);
            (
                format!(
                    "UPDATE instances SET access_token_enc = $1, \
                     refresh_token_enc = COALESCE($2, refresh_token_enc), token_type = $3, \
                     expires_at = $4, token_version = token_version + 1, updated_at = $5\
                     {comma}{release} WHERE id = $6{held}"
                ),
                sealed.access_token_enc.clone(),
                Some(sealed),
            )
        }
        RefreshDecision::Invalidate(reason) => (
            format!(
                "UPDATE instances SET valid = FALSE, invalid_reason = $1, updated_at = $5\
                 {comma}{release} WHERE id = $6{held}"
            ),
            Some(reason.clone()),
            None,
        ),
        // Turned into `Update` or written above.
        RefreshDecision::UpdateWithConfiguration(..) | RefreshDecision::Replace(_) => return Ok(0),
    };
    let (refresh, token_type, expires_at) = tokens
        .map(|t| (t.refresh_token_enc, t.token_type, t.expires_at))
        .unwrap_or_default();
    // Health and events (issue 16): the state before, read under the lock.
    let before = match decision {
        RefreshDecision::Unchanged => None,
        _ => health_before(conn.reborrow(), id).await.map_err(db_err)?,
    };
    let now = now_millis();
    let done = on_conn!(conn.reborrow(), |c| sqlx::query(&sql)
        .bind(text)
        .bind(refresh)
        .bind(token_type)
        .bind(expires_at)
        .bind(now)
        .bind(id)
        .bind(lease_owner)
        .execute(&mut *c)
        .await
        .map(|d| d.rows_affected()))
    .map_err(db_err)?;
    if done > 0 {
        if let Some(before) = before {
            decision_health(conn, id, decision, &before, now)
                .await
                .map_err(db_err)?;
        }
    }
    Ok(done)
}

/// Instance `id` as stored (still sealed), read on `conn`; `FOR UPDATE` is
/// appended by callers that lock (PostgreSQL).
pub(crate) async fn raw_instance(
    conn: Conn<'_>,
    id: i64,
    suffix: &str,
) -> Result<Option<RawInstance>, sqlx::Error> {
    let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.id = $1{suffix}");
    on_conn!(conn, |c| sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(&mut *c)
        .await)
}

impl SqlStore {
    /// Runs `sql` (`$1` the new hash, `$2` the row id) for a secret
    /// rotation; false if no row matched, a conflict if the hash is in use.
    async fn replace_secret_hash(&self, sql: &str, id: i64, hash: &SecretHash) -> Result<bool> {
        let n = on_pool!(&self.db, |pool| sqlx::query(sql)
            .bind(&hash[..])
            .bind(id)
            .execute(pool)
            .await
            .map(|d| d.rows_affected()))
        .map_err(|e| match unique_violation(&e) {
            Some(col) => conflict(&col),
            None => db_err(e),
        })?;
        Ok(n > 0)
    }

    /// Draws an id, seals and inserts `new` (SQLite: through the group-commit
    /// writer), redrawing a taken id. With the creating user's details
    /// (`creator`, whose id is `new.user_id`) the answer is what was written,
    /// opened from `new` itself: the insert succeeded only if that user
    /// belongs to the organization, and every other column is a value bound
    /// to it or a constant of the `INSERT` (`valid`, `disabled`,
    /// `token_version`, no health failures). Without it the row is read back.
    /// With `cap`, the engine refuses the row if the organization already
    /// holds that many instances ([`StoreError::InstanceCap`]).
    async fn insert_instance(
        &self,
        new: NewInstance,
        creator: Option<&User>,
        cap: Option<u64>,
    ) -> Result<Instance> {
        let tags = tags_json(&new.tags);
        let cap = cap.map(|c| i64::try_from(c).unwrap_or(i64::MAX));
        for _ in 0..ID_ATTEMPTS {
            // The id is the associated data of the ciphertexts: draw it and
            // encrypt here, in the caller's task; the engine only does SQL.
            let now = now_millis();
            let id = instance_id(now);
            let row = InstanceRow {
                id,
                organization_id: new.organization_id,
                user_id: new.user_id,
                element_key: new.element_key.clone(),
                element_id: new.element_id as i64,
                name: new.name.clone(),
                tags: tags.clone(),
                configuration_enc: seal_configuration(&self.keyring, id, &new.configuration),
                token_hash: new.token_hash.to_vec(),
                tokens: seal_tokens(&self.keyring, id, &new.tokens),
                now,
                cap,
            };
            let inserted = match &self.db {
                Db::Sqlite(engine) => engine.writer.insert(row).await?,
                Db::Postgres(engine) => engine.insert(&row).await?,
            };
            match (inserted, creator) {
                (Inserted::Done, Some(user)) => return Ok(written(id, now, new, user.clone())),
                (Inserted::Done, None) => {
                    return self.fetch(id).await?.ok_or_else(|| {
                        StoreError::Database(format!("instance {id} vanished after insert"))
                    });
                }
                (Inserted::IdTaken, _) => continue,
                (Inserted::AtCap, _) => return Err(StoreError::InstanceCap),
            }
        }
        Err(StoreError::Database(
            "could not draw an unused instance id".into(),
        ))
    }

    /// Instance `id`, whatever its organization.
    pub(crate) async fn fetch(&self, id: i64) -> Result<Option<Instance>> {
        let raw = on_pool!(&self.db, |pool| {
            let mut c = pool.acquire().await.map_err(db_err)?;
            raw_instance(Conn::from(&mut *c), id, "").await
        })
        .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    /// Whether instance `id` exists.
    pub(crate) async fn exists(&self, id: i64) -> Result<bool> {
        let row = on_pool!(&self.db, |pool| sqlx::query(
            "SELECT 1 FROM instances WHERE id = $1"
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .map(|r| r.is_some()))
        .map_err(db_err)?;
        Ok(row)
    }

    /// One instance by a unique column (`i.id`, `i.token_hash`), optionally
    /// within an organization.
    async fn raw_where(&self, sql_where: &str, bind: Key<'_>) -> Result<Option<RawInstance>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE {sql_where}");
        on_pool!(&self.db, |pool| {
            let q = sqlx::query_as(&sql);
            let q = match bind {
                Key::IdInOrganization(id, org) => q.bind(id).bind(org),
                Key::TokenHash(hash) => q.bind(hash),
            };
            q.fetch_optional(pool).await
        })
        .map_err(db_err)
    }
}

/// What [`SqlStore::raw_where`] binds.
enum Key<'a> {
    IdInOrganization(i64, i64),
    TokenHash(&'a [u8]),
}

// Spans (issue 18): every method below is a span named `store.<method>`
// with only `db.system` and `db.operation.name` (never an argument: no
// SQL parameter, id, hash or value). Target `elements::otel` at `trace`:
// the OpenTelemetry exporter's layer alone takes that target (the log output
// turns it off), so without `--otlp-endpoint` no subscriber wants them and a
// call pays one level comparison; the exporter keeps only those with a
// parent span (a request's), so background loops export nothing.
#[async_trait]
impl Store for SqlStore {
    fn engine(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.create_account",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "create_account"))]
    async fn create_account(&self, new: NewAccount) -> Result<Principal> {
        let now = now_millis();
        let inserted = on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let org_id: i64 = sqlx::query_scalar(
                "INSERT INTO organizations (name, secret_hash, created_at) VALUES ($1, $2, $3) \
                 RETURNING id",
            )
            .bind(&new.organization_name)
            .bind(&new.organization_secret_hash[..])
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            let user_id: i64 = sqlx::query_scalar(
                "INSERT INTO users (organization_id, email, first_name, last_name, secret_hash, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(org_id)
            .bind(&new.email)
            .bind(&new.first_name)
            .bind(&new.last_name)
            .bind(&new.user_secret_hash[..])
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>((org_id, user_id))
        }
        .await);
        let (org_id, user_id) = inserted.map_err(|e| match unique_violation(&e) {
            Some(col) => conflict(&col),
            None => db_err(e),
        })?;
        Ok(Principal {
            organization_id: org_id,
            organization_name: new.organization_name,
            user: User {
                id: user_id,
                email: new.email,
                first_name: new.first_name,
                last_name: new.last_name,
            },
        })
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.organization_count",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "organization_count"))]
    async fn organization_count(&self) -> Result<u64> {
        let n: i64 = on_pool!(&self.db, |pool| sqlx::query(
            "SELECT COUNT(*) FROM organizations"
        )
        .fetch_one(pool)
        .await
        .and_then(|r| r.try_get(0)))
        .map_err(db_err)?;
        Ok(n as u64)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.count_instances",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "count_instances"))]
    async fn count_instances(&self, organization_id: i64) -> Result<u64> {
        let n: i64 = on_pool!(&self.db, |pool| sqlx::query(
            "SELECT COUNT(*) FROM instances WHERE organization_id = $1"
        )
        .bind(organization_id)
        .fetch_one(pool)
        .await
        .and_then(|r| r.try_get(0)))
        .map_err(db_err)?;
        Ok(n as u64)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.authenticate",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "authenticate"))]
    async fn authenticate(
        &self,
        user_secret_hash: &SecretHash,
        organization_secret_hash: &SecretHash,
    ) -> Result<Option<Principal>> {
        type Found = (i64, String, String, String, i64, String, Vec<u8>);
        let found: Option<Found> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT u.id, u.email, u.first_name, u.last_name, o.id, o.name, o.secret_hash \
             FROM users u JOIN organizations o ON o.id = u.organization_id \
             WHERE u.secret_hash = $1",
        )
        .bind(&user_secret_hash[..])
        .fetch_optional(pool)
        .await)
        .map_err(db_err)?;
        let Some((user_id, email, first_name, last_name, org_id, org_name, org_hash)) = found
        else {
            return Ok(None);
        };
        if !bool::from(org_hash.as_slice().ct_eq(&organization_secret_hash[..])) {
            return Ok(None);
        }
        Ok(Some(Principal {
            organization_id: org_id,
            organization_name: org_name,
            user: User {
                id: user_id,
                email,
                first_name,
                last_name,
            },
        }))
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.create_instance",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "create_instance"))]
    async fn create_instance(&self, new: NewInstance) -> Result<Instance> {
        self.insert_instance(new, None, None).await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.instance",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "instance"))]
    async fn instance(&self, organization_id: i64, id: i64) -> Result<Option<Instance>> {
        let raw = self
            .raw_where(
                "i.id = $1 AND i.organization_id = $2",
                Key::IdInOrganization(id, organization_id),
            )
            .await?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.instance_any",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "instance_any"))]
    async fn instance_any(&self, id: i64) -> Result<Option<Instance>> {
        self.fetch(id).await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.instance_by_token",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "instance_by_token"))]
    async fn instance_by_token(&self, token_hash: &SecretHash) -> Result<Option<Instance>> {
        let raw = self
            .raw_where("i.token_hash = $1", Key::TokenHash(&token_hash[..]))
            .await?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.list_instances",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "list_instances"))]
    async fn list_instances(&self, organization_id: i64, tags: &[String]) -> Result<InstanceList> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.organization_id = $1 \
             ORDER BY i.seq DESC"
        );
        let raws: Vec<RawInstance> = on_pool!(&self.db, |pool| sqlx::query_as(&sql)
            .bind(organization_id)
            .fetch_all(pool)
            .await)
        .map_err(db_err)?;
        let mut list = InstanceList::default();
        for raw in raws {
            let id = raw.id;
            // Tags are stored in the clear: filter before decrypting, so a
            // row left out by the filter is never opened.
            let stored = match raw.tags() {
                Ok(stored) if !has_tags(&stored, tags) => continue,
                Ok(stored) => stored,
                Err(error) => {
                    list.unreadable.push(Unreadable { id, error });
                    continue;
                }
            };
            match raw.open_tagged(&self.keyring, stored) {
                Ok(instance) => list.instances.push(instance),
                Err(error) => list.unreadable.push(Unreadable { id, error }),
            }
        }
        Ok(list)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.update_instance",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "update_instance"))]
    async fn update_instance(
        &self,
        organization_id: i64,
        id: i64,
        patch: InstancePatch,
    ) -> Result<Option<Instance>> {
        let _changed = self.changes.guard(crate::notify::Change::Instance(id)); // cache (issue 19)
                                                                                // One transaction: the change and its `instance.enabled` /
                                                                                // `instance.disabled` event (only when `disabled` actually changes).
        let now = now_millis();
        let updated = on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            if let Some(disabled) = patch.disabled {
                let changed: Option<(i64, String)> = sqlx::query_as(
                    "UPDATE instances SET disabled = $1, health_since = $2 \
                     WHERE id = $3 AND organization_id = $4 AND disabled <> $1 \
                     RETURNING organization_id, element_key",
                )
                .bind(disabled)
                .bind(now)
                .bind(id)
                .bind(organization_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some((org, element)) = changed {
                    let kind = if disabled {
                        EventKind::InstanceDisabled
                    } else {
                        EventKind::InstanceEnabled
                    };
                    let event = NewEvent::instance(kind, org, id, &element, serde_json::json!({}));
                    insert_events(Conn::from(&mut *tx), &[event]).await?;
                }
            }
            let updated = sqlx::query(
                "UPDATE instances SET name = COALESCE($1, name), tags = COALESCE($2, tags), \
                 disabled = COALESCE($3, disabled), updated_at = $4 \
                 WHERE id = $5 AND organization_id = $6",
            )
            .bind(&patch.name)
            .bind(patch.tags.as_deref().map(tags_json))
            .bind(patch.disabled)
            .bind(now)
            .bind(id)
            .bind(organization_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(updated)
        }
        .await)
        .map_err(db_err)?;
        if updated == 0 {
            return Ok(None);
        }
        self.instance(organization_id, id).await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.delete_instance",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "delete_instance"))]
    async fn delete_instance(&self, organization_id: i64, id: i64) -> Result<bool> {
        let _changed = self.changes.guard(crate::notify::Change::Instance(id)); // cache (issue 19)
                                                                                // One transaction: the delete and its `instance.deleted` event.
        let deleted = on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let gone: Option<String> = sqlx::query_scalar(
                "DELETE FROM instances WHERE id = $1 AND organization_id = $2 \
                 RETURNING element_key",
            )
            .bind(id)
            .bind(organization_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(element) = &gone {
                let event = NewEvent::instance(
                    EventKind::InstanceDeleted,
                    organization_id,
                    id,
                    element,
                    serde_json::json!({}),
                );
                insert_events(Conn::from(&mut *tx), &[event]).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(gone.is_some())
        }
        .await)
        .map_err(db_err)?;
        Ok(deleted)
    }

    async fn refresh_locked<'a>(
        &'a self,
        id: i64,
        lease_seconds: i64,
        job: RefreshJob<'a>,
    ) -> Result<Option<Instance>> {
        use tracing::Instrument as _;
        // Its span by hand: the job (a provider call) runs in the caller's
        // span, beside this one rather than under it.
        let span = tracing::trace_span!(
            target: "elements::otel",
            "store.refresh_locked",
            otel.kind = "client",
            db.system = self.db.system(),
            db.operation.name = "refresh_locked",
        );
        let job: RefreshJob<'a> = if span.is_disabled() {
            job
        } else {
            let caller = tracing::Span::current();
            Box::new(move |instance| Box::pin(job(instance).instrument(caller)))
        };
        async move {
            let _changed = self.changes.guard(crate::notify::Change::Instance(id)); // cache (issue 19)
            match &self.db {
                Db::Sqlite(engine) => engine.refresh_locked(self, id, lease_seconds, job).await,
                Db::Postgres(engine) => {
                    engine
                        .refresh_locked(&self.keyring, id, lease_seconds, job)
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.meta",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "meta"))]
    async fn meta(&self, key: &str) -> Result<Option<String>> {
        on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT value FROM meta WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(pool)
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.set_meta",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "set_meta"))]
    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        on_pool!(&self.db, |pool| sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.sealed_rows",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "sealed_rows"))]
    async fn sealed_rows(&self) -> Result<Vec<SealedRow>> {
        type Sealed = (i64, String, Option<String>, Option<String>);
        let rows: Vec<Sealed> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT id, configuration_enc, access_token_enc, refresh_token_enc \
             FROM instances ORDER BY id",
        )
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, configuration, access_token, refresh_token)| SealedRow {
                    id,
                    configuration,
                    access_token,
                    refresh_token,
                },
            )
            .collect())
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.replace_sealed",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "replace_sealed"))]
    async fn replace_sealed(&self, old: &SealedRow, new: &SealedRow) -> Result<bool> {
        let done = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE instances SET configuration_enc = $1, access_token_enc = $2, \
             refresh_token_enc = $3 \
             WHERE id = $4 AND configuration_enc = $5 AND access_token_enc IS NOT DISTINCT FROM $6 \
             AND refresh_token_enc IS NOT DISTINCT FROM $7",
        )
        .bind(&new.configuration)
        .bind(&new.access_token)
        .bind(&new.refresh_token)
        .bind(old.id)
        .bind(&old.configuration)
        .bind(&old.access_token)
        .bind(&old.refresh_token)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)?;
        Ok(done == 1)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.callback_urls",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "callback_urls"))]
    async fn callback_urls(&self, organization_id: i64) -> Result<Vec<String>> {
        on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT url FROM organization_callbacks WHERE organization_id = $1 ORDER BY url",
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.set_callback_urls",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "set_callback_urls"))]
    async fn set_callback_urls(&self, organization_id: i64, urls: &[String]) -> Result<()> {
        on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            sqlx::query("DELETE FROM organization_callbacks WHERE organization_id = $1")
                .bind(organization_id)
                .execute(&mut *tx)
                .await?;
            for url in urls {
                sqlx::query(
                    "INSERT INTO organization_callbacks (organization_id, url) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(organization_id)
                .bind(url)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        }
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.expiring_before",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "expiring_before"))]
    async fn expiring_before(&self, unix_seconds: i64, limit: i64) -> Result<Vec<i64>> {
        // `= TRUE`/`= FALSE` rather than bare `valid AND NOT disabled`: an
        // equality SQLite can match against the (valid, disabled, expires_at)
        // index.
        on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT id FROM instances WHERE valid = TRUE AND disabled = FALSE \
             AND refresh_token_enc IS NOT NULL AND expires_at IS NOT NULL AND expires_at < $1 \
             ORDER BY expires_at, id LIMIT $2",
        )
        .bind(unix_seconds)
        .bind(limit.max(0))
        .fetch_all(pool)
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.expiring_page",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "expiring_page"))]
    async fn expiring_page(
        &self,
        unix_seconds: i64,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<(i64, i64, i64)>> {
        let (after_expires, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
        on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT id, organization_id, expires_at FROM instances \
             WHERE valid = TRUE AND disabled = FALSE \
             AND refresh_token_enc IS NOT NULL AND expires_at IS NOT NULL AND expires_at < $1 \
             AND (expires_at > $2 OR (expires_at = $2 AND id > $3)) \
             ORDER BY expires_at, id LIMIT $4",
        )
        .bind(unix_seconds)
        .bind(after_expires)
        .bind(after_id)
        .bind(limit.max(0))
        .fetch_all(pool)
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.durability",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "durability"))]
    async fn durability(&self) -> Result<Durability> {
        match &self.db {
            Db::Sqlite(engine) => engine.durability().await,
            Db::Postgres(engine) => engine.durability().await,
        }
    }

    // --- ops: secret rotation, readiness, metrics ---

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.set_organization_secret",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "set_organization_secret"))]
    async fn set_organization_secret(
        &self,
        organization_id: i64,
        hash: &SecretHash,
    ) -> Result<bool> {
        let _changed = self
            .changes
            .guard(crate::notify::Change::Organization(organization_id)); // cache (issue 19)
        self.replace_secret_hash(
            "UPDATE organizations SET secret_hash = $1 WHERE id = $2",
            organization_id,
            hash,
        )
        .await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.set_user_secret",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "set_user_secret"))]
    async fn set_user_secret(&self, user_id: i64, hash: &SecretHash) -> Result<bool> {
        let _changed = self.changes.guard(crate::notify::Change::User(user_id)); // cache (issue 19)
        self.replace_secret_hash(
            "UPDATE users SET secret_hash = $1 WHERE id = $2",
            user_id,
            hash,
        )
        .await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.set_instance_token",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "set_instance_token"))]
    async fn set_instance_token(
        &self,
        organization_id: i64,
        id: i64,
        hash: &SecretHash,
    ) -> Result<bool> {
        let _changed = self.changes.guard(crate::notify::Change::Instance(id)); // cache (issue 19)
        let n = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE instances SET token_hash = $1, updated_at = $2 \
             WHERE id = $3 AND organization_id = $4"
        )
        .bind(&hash[..])
        .bind(now_millis())
        .bind(id)
        .bind(organization_id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(|e| match unique_violation(&e) {
            Some(col) => conflict(&col),
            None => db_err(e),
        })?;
        Ok(n > 0)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.instance_states",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "instance_states"))]
    async fn instance_states(&self) -> Result<crate::InstanceStates> {
        type Counts = (Option<i64>, Option<i64>, Option<i64>);
        let (valid, invalid, disabled): Counts = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT \
             SUM(CASE WHEN disabled = FALSE AND valid = TRUE THEN 1 ELSE 0 END), \
             SUM(CASE WHEN disabled = FALSE AND valid = FALSE THEN 1 ELSE 0 END), \
             SUM(CASE WHEN disabled = TRUE THEN 1 ELSE 0 END) FROM instances"
        )
        .fetch_one(pool)
        .await)
        .map_err(db_err)?;
        let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
        Ok(crate::InstanceStates {
            valid: n(valid),
            invalid: n(invalid),
            disabled: n(disabled),
        })
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.readiness",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "readiness"))]
    async fn readiness(&self) -> Vec<(&'static str, std::result::Result<(), String>)> {
        let latest = match &self.db {
            Db::Sqlite(_) => sqlx::migrate!("./migrations/sqlite")
                .iter()
                .map(|m| m.version)
                .max(),
            Db::Postgres(_) => sqlx::migrate!("./migrations/postgres")
                .iter()
                .map(|m| m.version)
                .max(),
        }
        .unwrap_or(0);
        let applied: std::result::Result<Option<i64>, sqlx::Error> =
            on_pool!(&self.db, |pool| sqlx::query_scalar(
                "SELECT MAX(version) FROM _sqlx_migrations WHERE success = TRUE"
            )
            .fetch_one(pool)
            .await);
        let applied = match applied {
            Ok(v) => v.unwrap_or(0),
            Err(e) => {
                let reason = format!("the database does not answer: {}", db_err(e));
                return vec![
                    ("database", Err(reason)),
                    ("migrations", Err("not checked".into())),
                    ("key", Err("not checked".into())),
                ];
            }
        };
        let migrations = if applied >= latest {
            Ok(())
        } else {
            Err(format!(
                "migration {latest} is not applied (latest applied: {applied})"
            ))
        };
        let key = match self.meta(crate::KEY_CHECK).await {
            Ok(Some(sealed)) => match self.keyring.decrypt(crate::KEY_CHECK_AAD, &sealed) {
                Ok(v) if v == crate::KEY_CHECK_VALUE => Ok(()),
                _ => Err("the master key does not open the database's key check".into()),
            },
            Ok(None) => Err("the database has no key check".into()),
            Err(e) => Err(format!("reading the key check: {e}")),
        };
        vec![
            ("database", Ok(())),
            ("migrations", migrations),
            ("key", key),
        ]
    }

    fn pool_usage(&self) -> (u32, usize) {
        on_pool!(&self.db, |pool| (pool.size(), pool.num_idle()))
    }

    // ---- compat: instance paging and counts ----

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.instance_page",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "instance_page"))]
    async fn instance_page(
        &self,
        organization_id: i64,
        query: &crate::PageQuery,
    ) -> Result<crate::InstancePage> {
        // Keyset on the (organization_id, seq) index, newest first. Filters
        // are LIKE patterns: the name's (ASCII-lowercased on both sides, so
        // both engines agree), and one per tag on the tags' JSON text, a
        // pre-filter confirmed exactly below (a tag's JSON text may occur
        // inside another tag's).
        let mut patterns = Vec::new();
        let mut sql = format!(
            "SELECT {INSTANCE_COLUMNS}, i.seq AS page_seq {INSTANCE_FROM} \
             WHERE i.organization_id = $1 AND i.seq < $2"
        );
        if let Some(search) = query.search.as_deref().filter(|s| !s.is_empty()) {
            patterns.push(format!("%{}%", like_escape(&search.to_ascii_lowercase())));
            sql.push_str(&format!(
                " AND LOWER(i.name) LIKE ${} ESCAPE '\\'",
                patterns.len() + 2
            ));
        }
        if let Some(element) = &query.element {
            patterns.push(element.clone());
            sql.push_str(&format!(" AND i.element_key = ${}", patterns.len() + 2));
        }
        for tag in &query.tags {
            let json = serde_json::to_string(tag).expect("a string serializes");
            patterns.push(format!("%{}%", like_escape(&json)));
            sql.push_str(&format!(
                " AND i.tags LIKE ${} ESCAPE '\\'",
                patterns.len() + 2
            ));
        }
        sql.push_str(&format!(
            " ORDER BY i.seq DESC LIMIT ${}",
            patterns.len() + 3
        ));
        // Unfiltered, one row more than the page tells whether another
        // follows (the next row in the index). Filtered, that row may lie
        // a million rows further: a full page gets a cursor, and the last
        // page of a filtered list may come back empty.
        let limit = i64::from(query.limit.max(1));
        let probe = i64::from(patterns.is_empty());
        let mut rows: Vec<PagedRaw> = on_pool!(&self.db, |pool| {
            let mut q = sqlx::query_as(&sql)
                .bind(organization_id)
                .bind(query.after.unwrap_or(i64::MAX));
            for p in &patterns {
                q = q.bind(p);
            }
            q.bind(limit + probe).fetch_all(pool).await
        })
        .map_err(db_err)?;
        let next = if rows.len() as i64 >= limit + probe {
            rows.truncate(limit as usize);
            rows.last().map(|r| r.page_seq)
        } else {
            None
        };
        let mut list = InstanceList::default();
        for PagedRaw { raw, .. } in rows {
            let id = raw.id;
            let stored = match raw.tags() {
                Ok(stored) if !has_tags(&stored, &query.tags) => continue,
                Ok(stored) => stored,
                Err(error) => {
                    list.unreadable.push(Unreadable { id, error });
                    continue;
                }
            };
            match raw.open_tagged(&self.keyring, stored) {
                Ok(instance) => list.instances.push(instance),
                Err(error) => list.unreadable.push(Unreadable { id, error }),
            }
        }
        Ok(crate::InstancePage { list, next })
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.instance_counts",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "instance_counts"))]
    async fn instance_counts(&self, organization_id: i64) -> Result<Vec<(String, u64)>> {
        let rows: Vec<(String, i64)> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT element_key, COUNT(*) FROM instances WHERE organization_id = $1 \
             GROUP BY element_key ORDER BY element_key",
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        Ok(rows.into_iter().map(|(k, n)| (k, n as u64)).collect())
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.replace_instance",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "replace_instance"))]
    async fn replace_instance(
        &self,
        organization_id: i64,
        id: i64,
        replace: crate::ReplaceInstance,
    ) -> Result<Option<Instance>> {
        let _changed = self.changes.guard(crate::notify::Change::Instance(id)); // cache (issue 19)
                                                                                // leftovers (issue 17): tokens and configuration change only under
                                                                                // the refresh lock.
        if replace.tokens.is_some() || replace.configuration.is_some() {
            return self.replace_locked(organization_id, id, replace).await;
        }
        let configuration = replace
            .configuration
            .as_ref()
            .map(|c| seal_configuration(&self.keyring, id, c));
        let tokens = replace
            .tokens
            .as_ref()
            .map(|t| seal_tokens(&self.keyring, id, t));
        let reprovision = tokens.is_some();
        let t = tokens.unwrap_or(crate::common::SealedTokens {
            access_token_enc: None,
            refresh_token_enc: None,
            token_type: None,
            expires_at: None,
        });
        // `$6` true: every token column is replaced (NULLs included), the
        // token version moves on and the instance is valid again.
        let updated = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE instances SET name = COALESCE($1, name), tags = COALESCE($2, tags), \
             configuration_enc = COALESCE($3, configuration_enc), \
             access_token_enc = CASE WHEN $6 THEN $7 ELSE access_token_enc END, \
             refresh_token_enc = CASE WHEN $6 THEN $8 ELSE refresh_token_enc END, \
             token_type = CASE WHEN $6 THEN $9 ELSE token_type END, \
             expires_at = CASE WHEN $6 THEN $10 ELSE expires_at END, \
             token_version = CASE WHEN $6 THEN token_version + 1 ELSE token_version END, \
             valid = CASE WHEN $6 THEN TRUE ELSE valid END, \
             invalid_reason = CASE WHEN $6 THEN NULL ELSE invalid_reason END, \
             updated_at = $4 WHERE id = $5 AND organization_id = $11",
        )
        .bind(&replace.name)
        .bind(replace.tags.as_deref().map(tags_json))
        .bind(&configuration)
        .bind(now_millis())
        .bind(id)
        .bind(reprovision)
        .bind(&t.access_token_enc)
        .bind(&t.refresh_token_enc)
        .bind(&t.token_type)
        .bind(t.expires_at)
        .bind(organization_id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)?;
        if updated == 0 {
            return Ok(None);
        }
        self.instance(organization_id, id).await
    }

    // --- kinds (credential kinds) ---

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.expiring_page_renewable",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "expiring_page_renewable"))]
    async fn expiring_page_renewable(
        &self,
        unix_seconds: i64,
        after: Option<(i64, i64)>,
        limit: i64,
        renewable_elements: &[String],
    ) -> Result<Vec<(i64, i64, i64)>> {
        let (after_expires, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
        // One bind parameter per element key ($5, $6, ...): no text of a key
        // is ever part of the SQL.
        let keys: Vec<String> = (0..renewable_elements.len())
            .map(|i| format!("${}", i + 5))
            .collect();
        let renewable = if keys.is_empty() {
            String::new()
        } else {
            format!(" OR element_key IN ({})", keys.join(", "))
        };
        let sql = format!(
            "SELECT id, organization_id, expires_at FROM instances \
             WHERE valid = TRUE AND disabled = FALSE \
             AND (refresh_token_enc IS NOT NULL{renewable}) \
             AND expires_at IS NOT NULL AND expires_at < $1 \
             AND (expires_at > $2 OR (expires_at = $2 AND id > $3)) \
             ORDER BY expires_at, id LIMIT $4"
        );
        on_pool!(&self.db, |pool| {
            let mut query = sqlx::query_as(&sql)
                .bind(unix_seconds)
                .bind(after_expires)
                .bind(after_id)
                .bind(limit.max(0));
            for key in renewable_elements {
                query = query.bind(key.as_str());
            }
            query.fetch_all(pool).await
        })
        .map_err(db_err)
    }

    // ---- events (issue 16): health, the outbox, webhooks ----

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.record_refresh_failure",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "record_refresh_failure"))]
    async fn record_refresh_failure(&self, id: i64, error: &str) -> Result<bool> {
        let _changed = self.changes.guard(crate::notify::Change::Instance(id)); // cache (issue 19)
        self.record_transient(id, error, "refresh").await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.record_check",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "record_check"))]
    async fn record_check(&self, id: i64, outcome: CheckOutcome) -> Result<bool> {
        let _changed = self.changes.guard(crate::notify::Change::Instance(id)); // cache (issue 19)
        let now = now_millis();
        let (sql, text, kind) = match &outcome {
            CheckOutcome::Transient(error) => {
                return self.record_transient(id, error, "check").await
            }
            CheckOutcome::Ok => (
                "UPDATE instances SET valid = TRUE, invalid_reason = NULL, health_failures = 0, \
                 health_last_error = NULL, health_since = $2, updated_at = $2 \
                 WHERE id = $3 AND (valid = FALSE OR health_failures > 0) AND $1 IS NULL \
                 RETURNING organization_id, element_key",
                None,
                EventKind::InstanceRecovered,
            ),
            CheckOutcome::Rejected(reason) => (
                "UPDATE instances SET valid = FALSE, invalid_reason = $1, health_last_error = $1, \
                 health_since = $2, updated_at = $2 WHERE id = $3 AND valid = TRUE \
                 RETURNING organization_id, element_key",
                Some(reason.clone()),
                EventKind::InstanceInvalid,
            ),
        };
        on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let changed: Option<(i64, String)> = sqlx::query_as(sql)
                .bind(&text)
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((org, element)) = &changed {
                let extra = match &text {
                    Some(reason) => serde_json::json!({ "reason": reason, "source": "check" }),
                    None => serde_json::json!({ "source": "check" }),
                };
                let event = NewEvent::instance(kind, *org, id, element, extra);
                insert_events(Conn::from(&mut *tx), &[event]).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(changed.is_some())
        }
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.record_event",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "record_event"))]
    async fn record_event(
        &self,
        organization_id: i64,
        kind: EventKind,
        data: serde_json::Value,
    ) -> Result<String> {
        let event = NewEvent::with_data(kind, organization_id, data);
        let id = event.id.clone();
        on_pool!(&self.db, |pool| async {
            let mut c = pool.acquire().await?;
            insert_events(Conn::from(&mut *c), &[event]).await
        }
        .await)
        .map_err(db_err)?;
        Ok(id)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.create_webhook",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "create_webhook"))]
    async fn create_webhook(&self, new: NewWebhook) -> Result<Webhook> {
        let now = now_millis();
        let events = serde_json::to_string(&new.events.0).expect("strings serialize");
        for _ in 0..ID_ATTEMPTS {
            let id = random_id();
            let secret_enc = self
                .keyring
                .encrypt(&webhook_aad(id), new.secret.expose().as_bytes());
            let inserted = on_pool!(&self.db, |pool| sqlx::query(
                "INSERT INTO webhooks (id, organization_id, url, events, secret_enc, enabled, \
                 created_at) VALUES ($1, $2, $3, $4, $5, TRUE, $6)",
            )
            .bind(id)
            .bind(new.organization_id)
            .bind(&new.url)
            .bind(&events)
            .bind(&secret_enc)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ()));
            match inserted {
                Ok(_) => {
                    return Ok(Webhook {
                        id,
                        url: new.url,
                        events: new.events,
                        enabled: true,
                        disabled_reason: None,
                        created_at: now,
                    })
                }
                Err(e) if unique_violation(&e).is_some() => continue,
                Err(e) => return Err(db_err(e)),
            }
        }
        Err(StoreError::Database(
            "could not draw an unused webhook id".into(),
        ))
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.webhooks",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "webhooks"))]
    async fn webhooks(&self, organization_id: i64) -> Result<Vec<Webhook>> {
        type Row = (i64, String, String, bool, Option<String>, i64);
        let rows: Vec<Row> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT id, url, events, enabled, disabled_reason, created_at FROM webhooks \
             WHERE organization_id = $1 ORDER BY created_at, id",
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(id, url, events, enabled, disabled_reason, created_at)| {
                Ok(Webhook {
                    id,
                    url,
                    events: parse_filter(id, &events)?,
                    enabled,
                    disabled_reason,
                    created_at,
                })
            })
            .collect()
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.delete_webhook",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "delete_webhook"))]
    async fn delete_webhook(&self, organization_id: i64, id: i64) -> Result<bool> {
        let deleted = on_pool!(&self.db, |pool| sqlx::query(
            "DELETE FROM webhooks WHERE id = $1 AND organization_id = $2"
        )
        .bind(id)
        .bind(organization_id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)?;
        Ok(deleted > 0)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.events",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "events"))]
    async fn events(&self, organization_id: i64, limit: i64) -> Result<Vec<EventSummary>> {
        type Row = (i64, String, String, String, i64);
        type DRow = (i64, i64, String, i64, Option<i64>, Option<String>);
        let (rows, deliveries): (Vec<Row>, Vec<DRow>) = on_pool!(&self.db, |pool| async {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT seq, id, type, payload, created_at FROM events \
                 WHERE organization_id = $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(organization_id)
            .bind(limit.max(0))
            .fetch_all(pool)
            .await?;
            let oldest = rows.last().map(|r| r.0).unwrap_or(i64::MAX);
            let deliveries: Vec<DRow> = sqlx::query_as(
                "SELECT d.event_seq, d.webhook_id, d.state, d.attempts, d.last_status, d.last_error \
                 FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq \
                 WHERE e.organization_id = $1 AND d.event_seq >= $2 ORDER BY d.webhook_id",
            )
            .bind(organization_id)
            .bind(oldest)
            .fetch_all(pool)
            .await?;
            Ok::<_, sqlx::Error>((rows, deliveries))
        }
        .await)
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|(seq, id, kind, payload, created_at)| EventSummary {
                id,
                kind,
                payload,
                created_at,
                deliveries: deliveries
                    .iter()
                    .filter(|d| d.0 == seq)
                    .map(|d| DeliveryState {
                        webhook_id: d.1,
                        state: d.2.clone(),
                        attempts: d.3,
                        last_status: d.4,
                        last_error: d.5.clone(),
                    })
                    .collect(),
            })
            .collect())
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.redeliver_event",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "redeliver_event"))]
    async fn redeliver_event(&self, organization_id: i64, event_id: &str) -> Result<Option<u64>> {
        let now = now_millis();
        on_pool!(&self.db, |pool| async {
            let seq: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM events WHERE id = $1 AND organization_id = $2")
                    .bind(event_id)
                    .bind(organization_id)
                    .fetch_optional(pool)
                    .await?;
            let Some(seq) = seq else {
                return Ok(None);
            };
            let reset = sqlx::query(
                "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, \
                 next_attempt_at = $1, last_error = NULL, updated_at = $1 \
                 WHERE event_seq = $2 AND webhook_id IN \
                 (SELECT id FROM webhooks WHERE enabled = TRUE AND organization_id = $3)",
            )
            .bind(now)
            .bind(seq)
            .bind(organization_id)
            .execute(pool)
            .await?
            .rows_affected();
            Ok::<_, sqlx::Error>(Some(reset))
        }
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.fan_out_events",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "fan_out_events"))]
    async fn fan_out_events(&self, limit: i64) -> Result<u64> {
        let (begin, lock) = match self.db {
            Db::Sqlite(_) => ("BEGIN IMMEDIATE", ""),
            Db::Postgres(_) => ("BEGIN", " FOR UPDATE SKIP LOCKED"),
        };
        let select = format!(
            "SELECT seq, organization_id, type FROM events WHERE fanned_out = FALSE \
             ORDER BY seq LIMIT $1{lock}"
        );
        let now = now_millis();
        let hooks = on_pool!(&self.db, |pool| async {
            let mut c = pool.acquire().await?;
            let mut tx = sqlx::Connection::begin_with(&mut *c, begin).await?;
            let events: Vec<(i64, i64, String)> = sqlx::query_as(&select)
                .bind(limit.max(0))
                .fetch_all(&mut *tx)
                .await?;
            if events.is_empty() {
                return Ok(0);
            }
            let mut orgs: Vec<i64> = events.iter().map(|e| e.1).collect();
            orgs.sort_unstable();
            orgs.dedup();
            let mut pairs: Vec<(i64, i64)> = Vec::new();
            for org in orgs {
                let hooks: Vec<(i64, String)> = sqlx::query_as(
                    "SELECT id, events FROM webhooks WHERE organization_id = $1 AND enabled = TRUE",
                )
                .bind(org)
                .fetch_all(&mut *tx)
                .await?;
                for (hook, filter) in hooks {
                    let filter = parse_filter(hook, &filter).unwrap_or(EventFilter(Vec::new()));
                    for e in events.iter().filter(|e| e.1 == org && filter.matches(&e.2)) {
                        pairs.push((e.0, hook));
                    }
                }
            }
            for chunk in pairs.chunks(200) {
                let values: Vec<String> = (0..chunk.len())
                    .map(|i| format!("(${}, ${}, $1, $1)", 2 * i + 2, 2 * i + 3))
                    .collect();
                let sql = format!(
                    "INSERT INTO webhook_deliveries (event_seq, webhook_id, next_attempt_at, \
                     updated_at) VALUES {} ON CONFLICT DO NOTHING",
                    values.join(", ")
                );
                let mut q = sqlx::query(&sql).bind(now);
                for (seq, hook) in chunk {
                    q = q.bind(*seq).bind(*hook);
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in events.chunks(200) {
                let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "UPDATE events SET fanned_out = TRUE WHERE seq IN ({})",
                    list.join(", ")
                );
                let mut q = sqlx::query(&sql);
                for e in chunk {
                    q = q.bind(e.0);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(events.len() as u64)
        }
        .await)
        .map_err(db_err)?;
        Ok(hooks)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.claim_deliveries",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "claim_deliveries"))]
    async fn claim_deliveries(
        &self,
        owner: i64,
        lease_millis: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryClaim>> {
        // PostgreSQL: rows another replica is claiming are skipped, not
        // waited for; SQLite: one writer at a time anyway.
        let lock = match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let claim = format!(
            "UPDATE webhook_deliveries SET lease_until = $1, lease_owner = $2 \
             WHERE id IN (SELECT id FROM webhook_deliveries WHERE state = 'pending' \
             AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
             AND webhook_id IN (SELECT id FROM webhooks WHERE enabled = TRUE) \
             ORDER BY next_attempt_at, id LIMIT $4{lock}) \
             AND (lease_until IS NULL OR lease_until < $3)"
        );
        let now = now_millis();
        type Row = (i64, String, i64, String, i64, String, String, i64);
        let rows: Vec<Row> = on_pool!(&self.db, |pool| async {
            let claimed = sqlx::query(&claim)
                .bind(now.saturating_add(lease_millis))
                .bind(owner)
                .bind(now)
                .bind(limit.max(0))
                .execute(pool)
                .await?
                .rows_affected();
            if claimed == 0 {
                return Ok(Vec::new());
            }
            sqlx::query_as(
                "SELECT d.id, e.id, e.created_at, e.payload, w.id, w.url, w.secret_enc, d.attempts \
                 FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq \
                 JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.lease_owner = $1 AND d.state = 'pending' ORDER BY d.next_attempt_at, d.id",
            )
            .bind(owner)
            .fetch_all(pool)
            .await
        }
        .await)
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for (
            delivery_id,
            event_id,
            event_created_at,
            payload,
            webhook_id,
            url,
            secret_enc,
            attempts,
        ) in rows
        {
            // One unreadable secret (a retired key) holds up only its own
            // webhook's deliveries, which stay leased and are retried.
            let secret = match self.keyring.decrypt(&webhook_aad(webhook_id), &secret_enc) {
                Ok(plain) => match String::from_utf8(plain) {
                    Ok(s) => s,
                    Err(_) => {
                        tracing::error!(
                            webhook_id,
                            "webhook secret is not UTF-8; delivery skipped"
                        );
                        continue;
                    }
                },
                Err(e) => {
                    tracing::error!(webhook_id, error = %e, "webhook secret does not decrypt; delivery skipped");
                    continue;
                }
            };
            out.push(DeliveryClaim {
                delivery_id,
                event_id,
                event_created_at,
                payload,
                webhook_id,
                url,
                secret: elements_core::Secret::new(secret),
                attempts,
            });
        }
        Ok(out)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.finish_delivery",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "finish_delivery"))]
    async fn finish_delivery(
        &self,
        delivery_id: i64,
        owner: i64,
        result: DeliveryResult,
    ) -> Result<bool> {
        let now = now_millis();
        let (state, status, error, next) = match &result {
            DeliveryResult::Delivered { status } => ("delivered", Some(*status as i64), None, now),
            DeliveryResult::Retry {
                status,
                error,
                next_attempt_at,
            } => (
                "pending",
                status.map(i64::from),
                Some(error.clone()),
                *next_attempt_at,
            ),
            DeliveryResult::Dead { status, error } => {
                ("dead", status.map(i64::from), Some(error.clone()), now)
            }
            DeliveryResult::Gone => (
                "dead",
                Some(410),
                Some("the endpoint answered 410 Gone; webhook disabled".to_owned()),
                now,
            ),
        };
        let gone = matches!(result, DeliveryResult::Gone);
        on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(
                "UPDATE webhook_deliveries SET state = $1, attempts = attempts + 1, \
                 last_status = $2, last_error = $3, next_attempt_at = $4, updated_at = $5, \
                 lease_until = NULL, lease_owner = NULL WHERE id = $6 AND lease_owner = $7",
            )
            .bind(state)
            .bind(status)
            .bind(&error)
            .bind(next)
            .bind(now)
            .bind(delivery_id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done > 0 && gone {
                sqlx::query(
                    "UPDATE webhooks SET enabled = FALSE, disabled_reason = $1 WHERE id = \
                     (SELECT webhook_id FROM webhook_deliveries WHERE id = $2)",
                )
                .bind("the endpoint answered 410 Gone")
                .bind(delivery_id)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(done > 0)
        }
        .await)
        .map_err(db_err)
    }
    // connect

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.create_connect_session",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "create_connect_session"))]
    async fn create_connect_session(
        &self,
        new: crate::NewConnectSession,
    ) -> Result<crate::ConnectSession> {
        let now = now_millis();
        let id = random_id();
        let sealed = connect_seal_configuration(&self.keyring, id, &new.configuration);
        on_pool!(&self.db, |pool| sqlx::query(
            "INSERT INTO connect_sessions (id, token_hash, organization_id, user_id, element_key, \
             name, tags, redirect_url, end_user, popup, configuration_enc, stage, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'open', $12, $13)"
        )
        .bind(id)
        .bind(&new.token_hash[..])
        .bind(new.organization_id)
        .bind(new.user_id)
        .bind(&new.element_key)
        .bind(&new.name)
        .bind(tags_json(&new.tags))
        .bind(&new.redirect_url)
        .bind(&new.end_user)
        .bind(new.popup)
        .bind(&sealed)
        .bind(new.expires_at)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(|e| match unique_violation(&e) {
            Some(col) => conflict(&col),
            None => db_err(e),
        })?;
        Ok(crate::ConnectSession {
            id,
            organization_id: new.organization_id,
            user_id: new.user_id,
            element_key: new.element_key,
            name: new.name,
            tags: new.tags,
            configuration: new.configuration,
            redirect_url: new.redirect_url,
            end_user: new.end_user,
            popup: new.popup,
            stage: crate::ConnectStage::Open,
            expires_at: new.expires_at,
        })
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.connect_session",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "connect_session"))]
    async fn connect_session(
        &self,
        token_hash: &SecretHash,
    ) -> Result<Option<crate::ConnectSession>> {
        let row: Option<ConnectRow> = on_pool!(&self.db, |pool| sqlx::query_as(&format!(
            "SELECT {CONNECT_COLUMNS} FROM connect_sessions WHERE token_hash = $1"
        ))
        .bind(&token_hash[..])
        .fetch_optional(pool)
        .await)
        .map_err(db_err)?;
        row.map(|r| r.open(&self.keyring).map(|(s, _)| s))
            .transpose()
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.begin_connect_authorization",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "begin_connect_authorization"))]
    async fn begin_connect_authorization(
        &self,
        id: i64,
        state_hash: &SecretHash,
        verifier: Option<&Secret>,
        popup: bool,
        now_millis: i64,
    ) -> Result<bool> {
        let verifier_enc = verifier.map(|v| {
            self.keyring
                .encrypt(&connect_aad(id, "verifier"), v.expose().as_bytes())
        });
        let n = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE connect_sessions SET state_hash = $1, verifier_enc = $2, \
             popup = (popup OR $3), stage = 'authorizing' \
             WHERE id = $4 AND stage IN ('open', 'authorizing') AND expires_at > $5"
        )
        .bind(&state_hash[..])
        .bind(verifier_enc)
        .bind(popup)
        .bind(id)
        .bind(now_millis)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)?;
        Ok(n == 1)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.take_connect_state",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "take_connect_state"))]
    async fn take_connect_state(&self, state_hash: &SecretHash) -> Result<crate::ConnectTaken> {
        let row: Option<ConnectRow> = on_pool!(&self.db, |pool| sqlx::query_as(&format!(
            "SELECT {CONNECT_COLUMNS} FROM connect_sessions WHERE state_hash = $1"
        ))
        .bind(&state_hash[..])
        .fetch_optional(pool)
        .await)
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(crate::ConnectTaken::Unknown);
        };
        if row.stage != "authorizing" {
            return Ok(crate::ConnectTaken::AlreadyUsed);
        }
        // Compare-and-swap on the state: of two callbacks racing with the
        // same state, one wins; a restarted authorization (new state) wins
        // over a stale one.
        let n = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE connect_sessions SET stage = 'done', configuration_enc = NULL, \
             verifier_enc = NULL WHERE id = $1 AND state_hash = $2 AND stage = 'authorizing'"
        )
        .bind(row.id)
        .bind(&state_hash[..])
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)?;
        if n != 1 {
            return Ok(crate::ConnectTaken::AlreadyUsed);
        }
        let (mut session, verifier) = row.open(&self.keyring)?;
        session.stage = crate::ConnectStage::Done;
        Ok(crate::ConnectTaken::Taken(Box::new(session), verifier))
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.finish_connect_session",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "finish_connect_session"))]
    async fn finish_connect_session(&self, id: i64, now_millis: i64) -> Result<bool> {
        let n = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE connect_sessions SET stage = 'done', configuration_enc = NULL, \
             verifier_enc = NULL \
             WHERE id = $1 AND stage IN ('open', 'authorizing') AND expires_at > $2"
        )
        .bind(id)
        .bind(now_millis)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)?;
        Ok(n == 1)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.sweep_connect_sessions",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "sweep_connect_sessions"))]
    async fn sweep_connect_sessions(&self, now_millis: i64) -> Result<u64> {
        on_pool!(&self.db, |pool| sqlx::query(
            "DELETE FROM connect_sessions WHERE expires_at <= $1"
        )
        .bind(now_millis)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)
    }

    // private elements (issue 17)

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.private_catalog",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "private_catalog"))]
    async fn private_catalog(
        &self,
        organization_id: i64,
    ) -> Result<(Vec<crate::PrivateElementRow>, Vec<String>)> {
        let rows: Vec<(i64, String, String, i64, i64)> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT id, element_key, spec_toml, created_at, updated_at FROM private_elements \
             WHERE organization_id = $1 ORDER BY id"
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        let inactive: Vec<(String,)> = on_pool!(&self.db, |pool| sqlx::query_as(
            "SELECT element_key FROM element_deactivations WHERE organization_id = $1 \
             ORDER BY element_key"
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)
        .map_err(db_err)?;
        Ok((
            rows.into_iter()
                .map(
                    |(row_id, key, spec_toml, created_at, updated_at)| crate::PrivateElementRow {
                        row_id,
                        key,
                        spec_toml,
                        created_at,
                        updated_at,
                    },
                )
                .collect(),
            inactive.into_iter().map(|(k,)| k).collect(),
        ))
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.insert_private_element",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "insert_private_element"))]
    async fn insert_private_element(
        &self,
        organization_id: i64,
        key: &str,
        spec_toml: &str,
    ) -> Result<crate::PrivateElementRow> {
        let now = now_millis();
        let (row_id,): (i64,) = on_pool!(&self.db, |pool| {
            sqlx::query_as(
            "INSERT INTO private_elements (organization_id, element_key, spec_toml, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING id"
        )
        .bind(organization_id)
        .bind(key)
        .bind(spec_toml)
        .bind(now)
        .fetch_one(pool)
        .await
        })
        .map_err(private_element_conflict)?;
        Ok(crate::PrivateElementRow {
            row_id,
            key: key.to_owned(),
            spec_toml: spec_toml.to_owned(),
            created_at: now,
            updated_at: now,
        })
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.update_private_element",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "update_private_element"))]
    async fn update_private_element(
        &self,
        organization_id: i64,
        row_id: i64,
        key: &str,
        spec_toml: &str,
    ) -> Result<bool> {
        on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE private_elements SET element_key = $1, spec_toml = $2, updated_at = $3 \
             WHERE id = $4 AND organization_id = $5"
        )
        .bind(key)
        .bind(spec_toml)
        .bind(now_millis())
        .bind(row_id)
        .bind(organization_id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected() > 0))
        .map_err(private_element_conflict)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.delete_private_element",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "delete_private_element"))]
    async fn delete_private_element(&self, organization_id: i64, row_id: i64) -> Result<bool> {
        on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let deleted: Option<(String,)> = sqlx::query_as(
                "DELETE FROM private_elements WHERE id = $1 AND organization_id = $2 \
                 RETURNING element_key",
            )
            .bind(row_id)
            .bind(organization_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((key,)) = &deleted {
                sqlx::query(
                    "DELETE FROM element_deactivations WHERE organization_id = $1 \
                     AND element_key = $2",
                )
                .bind(organization_id)
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(deleted.is_some())
        }
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.set_element_active",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "set_element_active"))]
    async fn set_element_active(
        &self,
        organization_id: i64,
        key: &str,
        active: bool,
    ) -> Result<()> {
        let result = if active {
            on_pool!(&self.db, |pool| sqlx::query(
                "DELETE FROM element_deactivations WHERE organization_id = $1 AND element_key = $2"
            )
            .bind(organization_id)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))
        } else {
            on_pool!(&self.db, |pool| sqlx::query(
                "INSERT INTO element_deactivations (organization_id, element_key, created_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (organization_id, element_key) DO NOTHING"
            )
            .bind(organization_id)
            .bind(key)
            .bind(now_millis())
            .execute(pool)
            .await
            .map(|_| ()))
        };
        result.map_err(db_err)
    }

    // ---- health: background checks, event retention, rewrap coverage ----

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.claim_health_checks",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "claim_health_checks"))]
    async fn claim_health_checks(
        &self,
        now_millis: i64,
        period_millis: i64,
        next_at: i64,
        spread_millis: i64,
        limit: i64,
    ) -> Result<Vec<i64>> {
        let lock = match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        // The outer condition is evaluated again on the row as locked: a
        // row another replica moved forward meanwhile is not claimed twice.
        let claim = format!(
            "UPDATE instances SET next_check_at = $1 + (id % $2) \
             WHERE id IN (SELECT id FROM instances WHERE disabled = FALSE \
             AND COALESCE(next_check_at, created_at + $3) <= $4 \
             ORDER BY COALESCE(next_check_at, created_at + $3), id LIMIT $5{lock}) \
             AND disabled = FALSE AND COALESCE(next_check_at, created_at + $3) <= $4 \
             RETURNING id"
        );
        let rows: Vec<(i64,)> = on_pool!(&self.db, |pool| sqlx::query_as(&claim)
            .bind(next_at)
            .bind(spread_millis.max(1))
            .bind(period_millis.max(0))
            .bind(now_millis)
            .bind(limit.max(0))
            .fetch_all(pool)
            .await)
        .map_err(db_err)?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.delete_old_events",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "delete_old_events"))]
    async fn delete_old_events(&self, before_millis: i64, limit: i64) -> Result<u64> {
        let pick = "SELECT seq FROM events e WHERE e.created_at < $1 AND e.fanned_out = TRUE \
                    AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d \
                    WHERE d.event_seq = e.seq AND d.state = 'pending') ORDER BY seq LIMIT $2";
        let deliveries = format!("DELETE FROM webhook_deliveries WHERE event_seq IN ({pick})");
        let events = format!("DELETE FROM events WHERE seq IN ({pick})");
        on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            sqlx::query(&deliveries)
                .bind(before_millis)
                .bind(limit.max(0))
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query(&events)
                .bind(before_millis)
                .bind(limit.max(0))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            Ok(n)
        }
        .await)
        .map_err(db_err)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.other_sealed_values",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "other_sealed_values"))]
    async fn other_sealed_values(&self) -> Result<Vec<crate::SealedValue>> {
        let (webhooks, sessions): (
            Vec<(i64, String)>,
            Vec<(i64, Option<String>, Option<String>)>,
        ) = on_pool!(&self.db, |pool| async {
            let w = sqlx::query_as("SELECT id, secret_enc FROM webhooks ORDER BY id")
                .fetch_all(pool)
                .await?;
            let c = sqlx::query_as(
                "SELECT id, configuration_enc, verifier_enc FROM connect_sessions ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            Ok((w, c))
        }
        .await)
        .map_err(db_err)?;
        let mut out = Vec::with_capacity(webhooks.len() + sessions.len());
        for (id, value) in webhooks {
            out.push(crate::SealedValue {
                column: "webhooks.secret_enc",
                id,
                aad: webhook_aad(id),
                value,
            });
        }
        for (id, configuration, verifier) in sessions {
            if let Some(value) = configuration {
                out.push(crate::SealedValue {
                    column: "connect_sessions.configuration_enc",
                    id,
                    aad: connect_aad(id, "configuration"),
                    value,
                });
            }
            if let Some(value) = verifier {
                out.push(crate::SealedValue {
                    column: "connect_sessions.verifier_enc",
                    id,
                    aad: connect_aad(id, "verifier"),
                    value,
                });
            }
        }
        Ok(out)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.replace_sealed_value",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "replace_sealed_value"))]
    async fn replace_sealed_value(
        &self,
        old: &crate::SealedValue,
        new_value: &str,
    ) -> Result<bool> {
        let sql = match old.column {
            "webhooks.secret_enc" => {
                "UPDATE webhooks SET secret_enc = $1 WHERE id = $2 AND secret_enc = $3"
            }
            "connect_sessions.configuration_enc" => {
                "UPDATE connect_sessions SET configuration_enc = $1 \
                 WHERE id = $2 AND configuration_enc = $3"
            }
            "connect_sessions.verifier_enc" => {
                "UPDATE connect_sessions SET verifier_enc = $1 WHERE id = $2 AND verifier_enc = $3"
            }
            other => {
                return Err(StoreError::Database(format!(
                    "no sealed column {other} outside the instances table"
                )))
            }
        };
        on_pool!(&self.db, |pool| sqlx::query(sql)
            .bind(new_value)
            .bind(old.id)
            .bind(&old.value)
            .execute(pool)
            .await
            .map(|r| r.rows_affected() == 1))
        .map_err(db_err)
    }

    // ---- speed (issue 19) ----

    /// `COUNT(*)` walks every index entry of the organization (milliseconds
    /// at tens of thousands of instances, on every `POST /instances`).
    /// Instead: `seq` values are distinct and positive within an
    /// organization (SQLite: its maximum plus one, by the single writer;
    /// PostgreSQL: an identity), so the organization holds at most
    /// `MAX(seq)` instances, one index lookup. Only when that bound reaches
    /// `cap` are the instances counted, and at most `cap` of them.
    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.has_at_least_instances",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "has_at_least_instances"))]
    async fn has_at_least_instances(&self, organization_id: i64, cap: u64) -> Result<bool> {
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let n: i64 = on_pool!(&self.db, |pool| sqlx::query(HELD_UP_TO_CAP)
            .bind(organization_id)
            .bind(cap)
            .fetch_one(pool)
            .await
            .and_then(|r| r.try_get(0)))
        .map_err(db_err)?;
        Ok(n >= cap)
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.create_instance",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "create_instance"))]
    async fn create_instance_by(&self, new: NewInstance, creator: &User) -> Result<Instance> {
        let creator = (creator.id == new.user_id).then_some(creator);
        self.insert_instance(new, creator, None).await
    }

    #[instrument(skip_all, level = "trace", target = "elements::otel", name = "store.create_instance",
        fields(otel.kind = "client", db.system = self.db.system(), db.operation.name = "create_instance"))]
    async fn create_instance_capped(
        &self,
        new: NewInstance,
        creator: Option<&User>,
        cap: u64,
    ) -> Result<Instance> {
        let creator = creator.filter(|c| c.id == new.user_id);
        self.insert_instance(new, creator, Some(cap)).await
    }

    // --- cache (issue 19) ---
    fn on_change(&self, hook: crate::notify::ChangeHook) {
        self.changes.add(hook);
    }
}

/// The instance `new` became once inserted with `id` at `now` by `user`:
/// what reading the row back answers (`tests/story.rs` compares the two).
fn written(id: i64, now: i64, new: NewInstance, user: User) -> Instance {
    let (valid, disabled, failures) = (true, false, 0);
    Instance {
        id,
        organization_id: new.organization_id,
        user,
        element_key: new.element_key,
        element_id: new.element_id,
        name: new.name,
        tags: new.tags,
        configuration: new.configuration,
        tokens: new.tokens,
        valid,
        invalid_reason: None,
        disabled,
        created_at: now,
        updated_at: now,
        token_version: 0,
        health: crate::events::Health::derive(valid, disabled, failures, None, now, None),
    }
}

/// private elements: a key the organization already uses is a conflict
/// naming the field.
fn private_element_conflict(e: sqlx::Error) -> StoreError {
    match unique_violation(&e) {
        Some(_) => StoreError::Conflict(
            "field `key`: this organization already has a private element with this key".into(),
        ),
        None => db_err(e),
    }
}

// ---- compat: instance paging ----

/// A paged row: the instance and its position.
#[derive(sqlx::FromRow)]
struct PagedRaw {
    #[sqlx(flatten)]
    raw: RawInstance,
    page_seq: i64,
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

// ---- events (issue 16): helpers ----

impl Conn<'_> {
    /// The same connection, borrowed again (to run several statements).
    pub(crate) fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Conn::Sqlite(c) => Conn::Sqlite(c),
            Conn::Postgres(c) => Conn::Postgres(c),
        }
    }
}

impl SqlStore {
    /// A transient failure (refresh or check): degraded, with an
    /// `instance.refresh_failed` event, in one transaction.
    async fn record_transient(&self, id: i64, error: &str, source: &str) -> Result<bool> {
        let now = now_millis();
        on_pool!(&self.db, |pool| async {
            let mut tx = pool.begin().await?;
            let changed: Option<(i64, String, i64)> = sqlx::query_as(
                "UPDATE instances SET health_failures = health_failures + 1, \
                 health_last_error = $1, \
                 health_since = CASE WHEN health_failures = 0 THEN $2 ELSE health_since END \
                 WHERE id = $3 AND valid = TRUE \
                 RETURNING organization_id, element_key, health_failures",
            )
            .bind(error)
            .bind(now)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((org, element, attempt)) = &changed {
                let event = NewEvent::instance(
                    EventKind::InstanceRefreshFailed,
                    *org,
                    id,
                    element,
                    serde_json::json!({ "attempt": attempt, "error": error, "source": source }),
                );
                insert_events(Conn::from(&mut *tx), &[event]).await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(changed.is_some())
        }
        .await)
        .map_err(db_err)
    }
}

/// The associated data of a webhook's sealed secret.
fn webhook_aad(id: i64) -> String {
    format!("webhook:{id}:secret")
}

fn parse_filter(id: i64, json: &str) -> Result<EventFilter> {
    serde_json::from_str(json)
        .map(EventFilter)
        .map_err(|e| StoreError::Database(format!("webhook {id}: malformed event filter: {e}")))
}

/// Writes `events` to the outbox on `conn` (a transaction's, so that they
/// commit with the change that caused them).
pub(crate) async fn insert_events(
    mut conn: Conn<'_>,
    events: &[NewEvent],
) -> Result<(), sqlx::Error> {
    for chunk in events.chunks(64) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = 5 * i;
                format!(
                    "(${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO events (id, organization_id, type, payload, created_at) VALUES {}",
            values.join(", ")
        );
        on_conn!(conn.reborrow(), |c| {
            let mut q = sqlx::query(&sql);
            for e in chunk {
                q = q
                    .bind(&e.id)
                    .bind(e.organization_id)
                    .bind(e.kind)
                    .bind(&e.payload)
                    .bind(e.now);
            }
            q.execute(&mut *c).await.map(|_| ())
        })?;
    }
    Ok(())
}

/// An instance's health before a refresh decision: (organization, element,
/// valid, failures).
pub(crate) struct HealthBefore {
    organization_id: i64,
    element_key: String,
    valid: bool,
    failures: i64,
}

async fn health_before(conn: Conn<'_>, id: i64) -> Result<Option<HealthBefore>, sqlx::Error> {
    let row: Option<(i64, String, bool, i64)> = on_conn!(conn, |c| {
        sqlx::query_as(
        "SELECT organization_id, element_key, valid, health_failures FROM instances WHERE id = $1"
    )
    .bind(id)
    .fetch_optional(&mut *c)
    .await
    })?;
    Ok(row.map(
        |(organization_id, element_key, valid, failures)| HealthBefore {
            organization_id,
            element_key,
            valid,
            failures,
        },
    ))
}

/// The health change and event a written refresh decision causes: new
/// tokens after failures -> `instance.recovered`; a dead grant of a valid
/// instance -> `instance.invalid`.
async fn decision_health(
    mut conn: Conn<'_>,
    id: i64,
    decision: &RefreshDecision,
    before: &HealthBefore,
    now: i64,
) -> Result<(), sqlx::Error> {
    let (sql, text, event) = match decision {
        RefreshDecision::Update(_) if before.failures > 0 => (
            "UPDATE instances SET health_failures = 0, health_last_error = NULL, \
             health_since = $2 WHERE id = $3 AND $1 IS NULL",
            None,
            NewEvent::instance(
                EventKind::InstanceRecovered,
                before.organization_id,
                id,
                &before.element_key,
                serde_json::json!({ "previousState": "degraded", "failures": before.failures }),
            ),
        ),
        RefreshDecision::Invalidate(reason) if before.valid => (
            "UPDATE instances SET health_last_error = $1, health_since = $2 WHERE id = $3",
            Some(reason.clone()),
            NewEvent::instance(
                EventKind::InstanceInvalid,
                before.organization_id,
                id,
                &before.element_key,
                serde_json::json!({ "reason": reason, "source": "refresh" }),
            ),
        ),
        _ => return Ok(()),
    };
    on_conn!(conn.reborrow(), |c| sqlx::query(sql)
        .bind(text)
        .bind(now)
        .bind(id)
        .execute(&mut *c)
        .await
        .map(|_| ()))?;
    insert_events(conn, &[event]).await
}

// connect: rows and sealing of `connect_sessions`

const CONNECT_COLUMNS: &str = "id, organization_id, user_id, element_key, name, tags, \
     redirect_url, end_user, popup, configuration_enc, verifier_enc, stage, expires_at";

fn connect_aad(id: i64, column: &str) -> String {
    format!("connect:{id}:{column}")
}

fn connect_seal_configuration(
    keyring: &Keyring,
    id: i64,
    config: &elements_core::Configuration,
) -> String {
    let map: std::collections::BTreeMap<&str, &str> = config.iter().collect();
    let json = serde_json::to_vec(&map).expect("a string map serializes");
    keyring.encrypt(&connect_aad(id, "configuration"), &json)
}

#[derive(sqlx::FromRow)]
struct ConnectRow {
    id: i64,
    organization_id: i64,
    user_id: i64,
    element_key: String,
    name: String,
    tags: String,
    redirect_url: String,
    end_user: Option<String>,
    popup: bool,
    configuration_enc: Option<String>,
    verifier_enc: Option<String>,
    stage: String,
    expires_at: i64,
}

impl ConnectRow {
    fn open(self, keyring: &Keyring) -> Result<(crate::ConnectSession, Option<Secret>)> {
        let mut configuration = elements_core::Configuration::new();
        if let Some(sealed) = &self.configuration_enc {
            let what = connect_aad(self.id, "configuration");
            let json = keyring.decrypt(&what, sealed)?;
            let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(&json)
                .map_err(|_| StoreError::Decrypt {
                    what,
                    reason: "the decrypted value is not a JSON object of strings".into(),
                })?;
            for (k, v) in map {
                configuration.insert(k, v);
            }
        }
        let verifier = match &self.verifier_enc {
            Some(sealed) => {
                let what = connect_aad(self.id, "verifier");
                let bytes = keyring.decrypt(&what, sealed)?;
                Some(Secret::new(String::from_utf8(bytes).map_err(|_| {
                    StoreError::Decrypt {
                        what,
                        reason: "the decrypted verifier is not UTF-8".into(),
                    }
                })?))
            }
            None => None,
        };
        let tags: Vec<String> = serde_json::from_str(&self.tags).map_err(|e| {
            StoreError::Database(format!("connect session {}: malformed tags: {e}", self.id))
        })?;
        Ok((
            crate::ConnectSession {
                id: self.id,
                organization_id: self.organization_id,
                user_id: self.user_id,
                element_key: self.element_key,
                name: self.name,
                tags,
                configuration,
                redirect_url: self.redirect_url,
                end_user: self.end_user,
                popup: self.popup,
                stage: crate::ConnectStage::parse(&self.stage),
                expires_at: self.expires_at,
            },
            verifier,
        ))
    }
}

// ---- leftovers (issues 13 and 17): configuration with refreshed tokens,
// re-provisioning under the refresh lock ----

/// How long a re-provisioning holds the refresh lock at most (SQLite lease).
const REPLACE_LEASE_SECONDS: i64 = 60;

/// Writes the whole configuration of instance `id` (still under the lease
/// `lease_owner` on SQLite; in the locking transaction on PostgreSQL).
async fn write_configuration(
    mut conn: Conn<'_>,
    keyring: &Keyring,
    id: i64,
    configuration: &elements_core::Configuration,
    lease_owner: Option<i64>,
) -> Result<u64> {
    let held = if lease_owner.is_some() {
        " AND refresh_lease_owner = $3"
    } else {
        ""
    };
    let sql = format!("UPDATE instances SET configuration_enc = $1 WHERE id = $2{held}");
    let sealed = seal_configuration(keyring, id, configuration);
    on_conn!(conn.reborrow(), |c| sqlx::query(&sql)
        .bind(&sealed)
        .bind(id)
        .bind(lease_owner)
        .execute(&mut *c)
        .await
        .map(|d| d.rows_affected()))
    .map_err(db_err)
}

/// Writes a re-provisioning (see [`Store::replace_instance`]) and, on
/// SQLite, releases the lease in the same statement.
async fn write_replace(
    mut conn: Conn<'_>,
    keyring: &Keyring,
    id: i64,
    replace: &crate::ReplaceInstance,
    lease_owner: Option<i64>,
) -> Result<u64> {
    let (release, held) = match lease_owner {
        Some(_) => (
            ", refresh_lease_until = NULL, refresh_lease_owner = NULL",
            " AND refresh_lease_owner = $11",
        ),
        None => ("", ""),
    };
    let configuration = replace
        .configuration
        .as_ref()
        .map(|c| seal_configuration(keyring, id, c));
    let tokens = replace.tokens.as_ref().map(|t| seal_tokens(keyring, id, t));
    let reprovision = tokens.is_some();
    let t = tokens.unwrap_or(crate::common::SealedTokens {
        access_token_enc: None,
        refresh_token_enc: None,
        token_type: None,
        expires_at: None,
    });
    // `$6` true: every token column is replaced (NULLs included), the
    // token version moves on and the instance is valid again.
    let sql = format!(
        "UPDATE instances SET name = COALESCE($1, name), tags = COALESCE($2, tags), \
         configuration_enc = COALESCE($3, configuration_enc), \
         access_token_enc = CASE WHEN $6 THEN $7 ELSE access_token_enc END, \
         refresh_token_enc = CASE WHEN $6 THEN $8 ELSE refresh_token_enc END, \
         token_type = CASE WHEN $6 THEN $9 ELSE token_type END, \
         expires_at = CASE WHEN $6 THEN $10 ELSE expires_at END, \
         token_version = CASE WHEN $6 THEN token_version + 1 ELSE token_version END, \
         valid = CASE WHEN $6 THEN TRUE ELSE valid END, \
         invalid_reason = CASE WHEN $6 THEN NULL ELSE invalid_reason END, \
         updated_at = $4{release} WHERE id = $5{held}"
    );
    on_conn!(conn.reborrow(), |c| sqlx::query(&sql)
        .bind(&replace.name)
        .bind(replace.tags.as_deref().map(tags_json))
        .bind(&configuration)
        .bind(now_millis())
        .bind(id)
        .bind(reprovision)
        .bind(&t.access_token_enc)
        .bind(&t.refresh_token_enc)
        .bind(&t.token_type)
        .bind(t.expires_at)
        .bind(lease_owner)
        .execute(&mut *c)
        .await
        .map(|d| d.rows_affected()))
    .map_err(db_err)
}

impl SqlStore {
    /// [`Store::replace_instance`] with tokens or configuration: run as a
    /// refresh job, so it waits for a refresher holding the lock and a
    /// refresher that comes after re-reads what it wrote.
    async fn replace_locked(
        &self,
        organization_id: i64,
        id: i64,
        replace: crate::ReplaceInstance,
    ) -> Result<Option<Instance>> {
        let mut owned = true;
        let found = &mut owned;
        let job: RefreshJob<'_> = Box::new(move |current: Instance| {
            Box::pin(async move {
                if current.organization_id == organization_id {
                    RefreshDecision::Replace(replace)
                } else {
                    *found = false;
                    RefreshDecision::Unchanged
                }
            })
        });
        let after = self.refresh_locked(id, REPLACE_LEASE_SECONDS, job).await?;
        Ok(after.filter(|_| owned))
    }
}
