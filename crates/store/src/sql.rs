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

use crate::common::{
    conflict, db_err, has_tags, random_id, seal_configuration, seal_tokens, tags_json,
    unique_violation, Inserted, InstanceRow, RawInstance, ID_ATTEMPTS, INSTANCE_COLUMNS,
    INSTANCE_FROM,
};
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
}

/// Writes a refresh decision on `conn`. `lease_owner`: SQLite's lease, also
/// released by the write, which happens only while `lease_owner` still holds
/// it; `None` under PostgreSQL's row lock. Returns the rows written (none for
/// `Unchanged` without a lease).
pub(crate) async fn write_decision(
    conn: Conn<'_>,
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
    };
    let (refresh, token_type, expires_at) = tokens
        .map(|t| (t.refresh_token_enc, t.token_type, t.expires_at))
        .unwrap_or_default();
    let now = now_millis();
    let done = on_conn!(conn, |c| sqlx::query(&sql)
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

#[async_trait]
impl Store for SqlStore {
    fn engine(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

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

    async fn create_instance(&self, new: NewInstance) -> Result<Instance> {
        let tags = tags_json(&new.tags);
        for _ in 0..ID_ATTEMPTS {
            // The id is the associated data of the ciphertexts: draw it and
            // encrypt here, in the caller's task; the engine only does SQL.
            let id = random_id();
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
                now: now_millis(),
            };
            let inserted = match &self.db {
                Db::Sqlite(engine) => engine.writer.insert(row).await?,
                Db::Postgres(engine) => engine.insert(&row).await?,
            };
            match inserted {
                Inserted::Done => {
                    return self.fetch(id).await?.ok_or_else(|| {
                        StoreError::Database(format!("instance {id} vanished after insert"))
                    });
                }
                Inserted::IdTaken => continue,
            }
        }
        Err(StoreError::Database(
            "could not draw an unused instance id".into(),
        ))
    }

    async fn instance(&self, organization_id: i64, id: i64) -> Result<Option<Instance>> {
        let raw = self
            .raw_where(
                "i.id = $1 AND i.organization_id = $2",
                Key::IdInOrganization(id, organization_id),
            )
            .await?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    async fn instance_any(&self, id: i64) -> Result<Option<Instance>> {
        self.fetch(id).await
    }

    async fn instance_by_token(&self, token_hash: &SecretHash) -> Result<Option<Instance>> {
        let raw = self
            .raw_where("i.token_hash = $1", Key::TokenHash(&token_hash[..]))
            .await?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

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

    async fn update_instance(
        &self,
        organization_id: i64,
        id: i64,
        patch: InstancePatch,
    ) -> Result<Option<Instance>> {
        let updated = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE instances SET name = COALESCE($1, name), tags = COALESCE($2, tags), \
             disabled = COALESCE($3, disabled), updated_at = $4 \
             WHERE id = $5 AND organization_id = $6",
        )
        .bind(&patch.name)
        .bind(patch.tags.as_deref().map(tags_json))
        .bind(patch.disabled)
        .bind(now_millis())
        .bind(id)
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

    async fn delete_instance(&self, organization_id: i64, id: i64) -> Result<bool> {
        let deleted = on_pool!(&self.db, |pool| sqlx::query(
            "DELETE FROM instances WHERE id = $1 AND organization_id = $2"
        )
        .bind(id)
        .bind(organization_id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(db_err)?;
        Ok(deleted > 0)
    }

    async fn refresh_locked<'a>(
        &'a self,
        id: i64,
        lease_seconds: i64,
        job: RefreshJob<'a>,
    ) -> Result<Option<Instance>> {
        match &self.db {
            Db::Sqlite(engine) => engine.refresh_locked(self, id, lease_seconds, job).await,
            Db::Postgres(engine) => {
                engine
                    .refresh_locked(&self.keyring, id, lease_seconds, job)
                    .await
            }
        }
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT value FROM meta WHERE key = $1"
        )
        .bind(key)
        .fetch_optional(pool)
        .await)
        .map_err(db_err)
    }

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

    async fn callback_urls(&self, organization_id: i64) -> Result<Vec<String>> {
        on_pool!(&self.db, |pool| sqlx::query_scalar(
            "SELECT url FROM organization_callbacks WHERE organization_id = $1 ORDER BY url",
        )
        .bind(organization_id)
        .fetch_all(pool)
        .await)
        .map_err(db_err)
    }

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

    async fn durability(&self) -> Result<Durability> {
        match &self.db {
            Db::Sqlite(engine) => engine.durability().await,
            Db::Postgres(engine) => engine.durability().await,
        }
    }

    // --- ops: secret rotation, readiness, metrics ---

    async fn set_organization_secret(
        &self,
        organization_id: i64,
        hash: &SecretHash,
    ) -> Result<bool> {
        let n = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE organizations SET secret_hash = $1 WHERE id = $2"
        )
        .bind(&hash[..])
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

    async fn set_user_secret(&self, user_id: i64, hash: &SecretHash) -> Result<bool> {
        let n = on_pool!(&self.db, |pool| sqlx::query(
            "UPDATE users SET secret_hash = $1 WHERE id = $2"
        )
        .bind(&hash[..])
        .bind(user_id)
        .execute(pool)
        .await
        .map(|d| d.rows_affected()))
        .map_err(|e| match unique_violation(&e) {
            Some(col) => conflict(&col),
            None => db_err(e),
        })?;
        Ok(n > 0)
    }

    async fn set_instance_token(
        &self,
        organization_id: i64,
        id: i64,
        hash: &SecretHash,
    ) -> Result<bool> {
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

    async fn replace_instance(
        &self,
        organization_id: i64,
        id: i64,
        replace: crate::ReplaceInstance,
    ) -> Result<Option<Instance>> {
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
