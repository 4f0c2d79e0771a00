//! The SQLite engine: one file, WAL, `synchronous=FULL`.
//!
//! SQLite has no row locks that would not block every writer, so the refresh
//! lock is a lease: a column saying until when (and by whom) the instance is
//! being refreshed. A crashed holder's lease simply expires.
//!
//! **Group commit of new instances.** With `synchronous=FULL` every commit
//! is an `fsync` of the WAL, and SQLite has one writer at a time: one insert
//! per transaction caps `POST /instances` at the disk's `fsync` rate however
//! many clients there are. So `create_instance` draws the id and encrypts in
//! the caller's task, then hands the sealed row to a single writer (a thread
//! started at connect, fed by a channel). The writer takes the first
//! request, drains what else is queued (up to
//! [`MAX_BATCH`](group_commit::MAX_BATCH)) without waiting, inserts them all
//! in one `BEGIN IMMEDIATE` ... `COMMIT`, and answers every caller only after
//! `COMMIT` returned: an `Ok` still means the row is on disk, and one `fsync`
//! now covers every insert that queued up during the previous one. It never
//! waits to fill a batch, so under no load nothing changes. Rows go in
//! multi-row `INSERT`s of up to 64; a constraint violation fails only its
//! own row (statement-level abort, that chunk redone row by row); any other
//! error rolls back and rewrites the batch without the failing row. Details
//! in [`group_commit`]. The caller then reads its row back through the pool,
//! as before (reads run in parallel with the writer under WAL).
//!
//! `seq` (newest first within an organization) is the organization's
//! maximum plus one: an index lookup on `(organization_id, seq)`. The
//! maximum over the whole table scanned that index on every insert (23 ms
//! at 200,000 rows), inside the single writer.
//!
//! Other writes (accounts, patches, deletes, refresh leases) still commit one
//! by one through the pool; they are rare next to instance creation and
//! reads. The same writer could take them (a request enum instead of a row)
//! if they ever become hot; the lease `UPDATE`s in particular must then keep
//! their compare-and-set `WHERE`.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Row as _;
use subtle::ConstantTimeEq as _;

use crate::common::{
    conflict, db_err, has_tags, lease_millis, lock_wait_millis, migrate_err, random_id,
    random_owner, seal_configuration, seal_tokens, tags_json, unique_violation, RawInstance,
    ID_ATTEMPTS, INSTANCE_COLUMNS, INSTANCE_FROM,
};
use crate::{
    now_millis, Instance, InstancePatch, Keyring, NewAccount, NewInstance, Principal,
    RefreshDecision, RefreshJob, Result, SealedRow, SecretHash, Store, StoreError, User,
};

mod group_commit;
use group_commit::{GroupCommit, Inserted, InstanceRow};

/// How long a writer waits for SQLite's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite store.
pub(crate) struct SqliteStore {
    pool: SqlitePool,
    keyring: Arc<Keyring>,
    /// The group-commit writer of new instances.
    writer: GroupCommit,
}

impl SqliteStore {
    /// Opens (creating if missing, with its directory) the database file named
    /// by `url` (`sqlite:///abs/path.db`, `sqlite://relative.db`,
    /// `sqlite:path.db`, or `sqlite::memory:`) and runs the migrations.
    pub(crate) async fn connect(url: &str, keyring: Arc<Keyring>) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::InvalidUrl("malformed sqlite URL".into()))?;
        let filename = options.get_filename().to_path_buf();
        let in_memory = is_in_memory(url, &filename);
        if !in_memory && filename.as_os_str().is_empty() {
            return Err(StoreError::InvalidUrl(
                "the sqlite URL names no file (e.g. sqlite:///var/lib/elements/elements.db)".into(),
            ));
        }
        if !in_memory {
            prepare_file(&filename)?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // No ping before handing out a connection: a local file does not
        // drop connections, and the ping is a round trip to sqlx's worker
        // thread on every query (measured: a large share of a credential read).
        let mut pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false);
        if in_memory {
            // The database lives only as long as a connection to it.
            pool = pool
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        }
        let pool = pool.connect_with(options).await.map_err(db_err)?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(migrate_err)?;
        tracing::debug!(
            path = %filename.display(),
            key_id = keyring.current_key_id(),
            "sqlite store ready"
        );
        let writer = GroupCommit::start(pool.clone())?;
        Ok(SqliteStore {
            pool,
            keyring,
            writer,
        })
    }

    async fn fetch(&self, id: i64) -> Result<Option<Instance>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.id = ?");
        let raw: Option<RawInstance> = sqlx::query_as(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    async fn exists(&self, id: i64) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM instances WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(row.is_some())
    }

    /// Takes instance `id`'s refresh lease, waiting for another holder's to
    /// end or expire. `None` if the instance does not exist.
    async fn take_lease(&self, id: i64, owner: i64, lease_seconds: i64) -> Result<Option<()>> {
        let started = Instant::now();
        let give_up = Duration::from_millis(lock_wait_millis(lease_seconds) as u64);
        loop {
            let now = now_millis();
            let taken = sqlx::query(
                "UPDATE instances SET refresh_lease_until = ?, refresh_lease_owner = ? \
                 WHERE id = ? AND (refresh_lease_until IS NULL OR refresh_lease_until < ?)",
            )
            .bind(now.saturating_add(lease_millis(lease_seconds)))
            .bind(owner)
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
            if taken.rows_affected() == 1 {
                return Ok(Some(()));
            }
            if !self.exists(id).await? {
                return Ok(None);
            }
            if started.elapsed() > give_up {
                return Err(StoreError::Database(format!(
                    "timed out after {} ms waiting for the refresh lease of instance {id}",
                    give_up.as_millis()
                )));
            }
            let pause = rand::random_range(20..50);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
    }
}

/// Whether the URL names an in-memory database (no file to prepare).
fn is_in_memory(url: &str, filename: &Path) -> bool {
    url.contains(":memory:")
        || url.contains("mode=memory")
        || filename.to_string_lossy().starts_with("file:")
}

/// Creates the database's directory, and the file itself with owner-only
/// permissions, if they are missing.
fn prepare_file(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Database(format!("cannot create directory {}: {e}", dir.display()))
        })?;
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        open.mode(0o600);
    }
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(format!(
            "cannot create database file {}: {e}",
            path.display()
        ))),
    }
}

/// Releases a lease if the refresh job panics or is cancelled.
struct LeaseGuard {
    pool: Option<SqlitePool>,
    id: i64,
    owner: i64,
}

impl LeaseGuard {
    fn disarm(&mut self) {
        self.pool = None;
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        let Some(pool) = self.pool.take() else {
            return;
        };
        let (id, owner) = (self.id, self.owner);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let released = sqlx::query(
                    "UPDATE instances SET refresh_lease_until = NULL, refresh_lease_owner = NULL \
                     WHERE id = ? AND refresh_lease_owner = ?",
                )
                .bind(id)
                .bind(owner)
                .execute(&pool)
                .await;
                if let Err(e) = released {
                    tracing::warn!(instance = id, error = %db_err(e), "could not release refresh lease");
                }
            });
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn engine(&self) -> &'static str {
        "sqlite"
    }

    async fn create_account(&self, new: NewAccount) -> Result<Principal> {
        let now = now_millis();
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let inserted = async {
            let org_id: i64 = sqlx::query(
                "INSERT INTO organizations (name, secret_hash, created_at) VALUES (?, ?, ?) \
                 RETURNING id",
            )
            .bind(&new.organization_name)
            .bind(&new.organization_secret_hash[..])
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            let user_id: i64 = sqlx::query(
                "INSERT INTO users (organization_id, email, first_name, last_name, secret_hash, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            )
            .bind(org_id)
            .bind(&new.email)
            .bind(&new.first_name)
            .bind(&new.last_name)
            .bind(&new.user_secret_hash[..])
            .bind(now)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            Ok::<_, sqlx::Error>((org_id, user_id))
        }
        .await;
        let (org_id, user_id) = match inserted {
            Ok(ids) => ids,
            Err(e) => {
                return Err(match unique_violation(&e) {
                    Some(col) => conflict(&col),
                    None => db_err(e),
                })
            }
        };
        tx.commit().await.map_err(db_err)?;
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
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM organizations")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)?;
        Ok(n as u64)
    }

    async fn authenticate(
        &self,
        user_secret_hash: &SecretHash,
        organization_secret_hash: &SecretHash,
    ) -> Result<Option<Principal>> {
        let row = sqlx::query(
            "SELECT u.id, u.email, u.first_name, u.last_name, o.id, o.name, o.secret_hash \
             FROM users u JOIN organizations o ON o.id = u.organization_id \
             WHERE u.secret_hash = ?",
        )
        .bind(&user_secret_hash[..])
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let org_hash: Vec<u8> = row.try_get(6).map_err(db_err)?;
        if !bool::from(org_hash.as_slice().ct_eq(&organization_secret_hash[..])) {
            return Ok(None);
        }
        Ok(Some(Principal {
            organization_id: row.try_get(4).map_err(db_err)?,
            organization_name: row.try_get(5).map_err(db_err)?,
            user: User {
                id: row.try_get(0).map_err(db_err)?,
                email: row.try_get(1).map_err(db_err)?,
                first_name: row.try_get(2).map_err(db_err)?,
                last_name: row.try_get(3).map_err(db_err)?,
            },
        }))
    }

    async fn create_instance(&self, new: NewInstance) -> Result<Instance> {
        let tags = tags_json(&new.tags);
        for _ in 0..ID_ATTEMPTS {
            // The id is the associated data of the ciphertexts: draw it and
            // encrypt here, in the caller's task; the writer only does SQL.
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
            match self.writer.insert(row).await? {
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
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.id = ? AND i.organization_id = ?"
        );
        let raw: Option<RawInstance> = sqlx::query_as(&sql)
            .bind(id)
            .bind(organization_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    async fn instance_any(&self, id: i64) -> Result<Option<Instance>> {
        self.fetch(id).await
    }

    async fn instance_by_token(&self, token_hash: &SecretHash) -> Result<Option<Instance>> {
        let sql = format!("SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.token_hash = ?");
        let raw: Option<RawInstance> = sqlx::query_as(&sql)
            .bind(&token_hash[..])
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        raw.map(|r| r.open(&self.keyring)).transpose()
    }

    async fn instances(&self, organization_id: i64, tags: &[String]) -> Result<Vec<Instance>> {
        let sql = format!(
            "SELECT {INSTANCE_COLUMNS} {INSTANCE_FROM} WHERE i.organization_id = ? \
             ORDER BY i.seq DESC"
        );
        let raws: Vec<RawInstance> = sqlx::query_as(&sql)
            .bind(organization_id)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let instance = raw.open(&self.keyring)?;
            if has_tags(&instance, tags) {
                out.push(instance);
            }
        }
        Ok(out)
    }

    async fn update_instance(
        &self,
        organization_id: i64,
        id: i64,
        patch: InstancePatch,
    ) -> Result<Option<Instance>> {
        let updated = sqlx::query(
            "UPDATE instances SET name = COALESCE(?, name), tags = COALESCE(?, tags), \
             disabled = COALESCE(?, disabled), updated_at = ? \
             WHERE id = ? AND organization_id = ?",
        )
        .bind(patch.name)
        .bind(patch.tags.as_deref().map(tags_json))
        .bind(patch.disabled)
        .bind(now_millis())
        .bind(id)
        .bind(organization_id)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        self.instance(organization_id, id).await
    }

    async fn delete_instance(&self, organization_id: i64, id: i64) -> Result<bool> {
        let deleted = sqlx::query("DELETE FROM instances WHERE id = ? AND organization_id = ?")
            .bind(id)
            .bind(organization_id)
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(deleted.rows_affected() > 0)
    }

    async fn refresh_locked<'a>(
        &'a self,
        id: i64,
        lease_seconds: i64,
        job: RefreshJob<'a>,
    ) -> Result<Option<Instance>> {
        let owner = random_owner();
        if self.take_lease(id, owner, lease_seconds).await?.is_none() {
            return Ok(None);
        }
        // From here on, the guard releases the lease on every early exit,
        // including a panicking or cancelled job.
        let mut guard = LeaseGuard {
            pool: Some(self.pool.clone()),
            id,
            owner,
        };
        let Some(instance) = self.fetch(id).await? else {
            return Ok(None);
        };
        let decision = job(instance).await;
        let now = now_millis();
        let written =
            match &decision {
                RefreshDecision::Unchanged => sqlx::query(
                    "UPDATE instances SET refresh_lease_until = NULL, refresh_lease_owner = NULL \
                     WHERE id = ? AND refresh_lease_owner = ?",
                )
                .bind(id)
                .bind(owner)
                .execute(&self.pool)
                .await,
                RefreshDecision::Update(tokens) => {
                    let sealed = seal_tokens(&self.keyring, id, tokens);
                    sqlx::query(
                        "UPDATE instances SET access_token_enc = ?, \
                     refresh_token_enc = COALESCE(?, refresh_token_enc), token_type = ?, \
                     expires_at = ?, token_version = token_version + 1, updated_at = ?, \
                     refresh_lease_until = NULL, refresh_lease_owner = NULL \
                     WHERE id = ? AND refresh_lease_owner = ?",
                    )
                    .bind(sealed.access_token_enc)
                    .bind(sealed.refresh_token_enc)
                    .bind(sealed.token_type)
                    .bind(sealed.expires_at)
                    .bind(now)
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                }
                RefreshDecision::Invalidate(reason) => {
                    sqlx::query(
                        "UPDATE instances SET valid = 0, invalid_reason = ?, updated_at = ?, \
                     refresh_lease_until = NULL, refresh_lease_owner = NULL \
                     WHERE id = ? AND refresh_lease_owner = ?",
                    )
                    .bind(reason)
                    .bind(now)
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await
                }
            }
            .map_err(db_err)?;
        guard.disarm();
        if written.rows_affected() == 0 {
            if !self.exists(id).await? {
                return Ok(None);
            }
            if !matches!(decision, RefreshDecision::Unchanged) {
                tracing::warn!(
                    instance = id,
                    lease_seconds,
                    "refresh lease expired before the job finished; its result was not written"
                );
                return Err(StoreError::Conflict(format!(
                    "the refresh lease of instance {id} expired before the job finished \
                     ({lease_seconds} s); its result was not written"
                )));
            }
        }
        self.fetch(id).await
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| r.try_get::<String, _>(0).map_err(db_err))
            .transpose()
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn sealed_rows(&self) -> Result<Vec<SealedRow>> {
        let rows = sqlx::query(
            "SELECT id, configuration_enc, access_token_enc, refresh_token_enc FROM instances ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok(SealedRow {
                    id: r.try_get(0).map_err(db_err)?,
                    configuration: r.try_get(1).map_err(db_err)?,
                    access_token: r.try_get(2).map_err(db_err)?,
                    refresh_token: r.try_get(3).map_err(db_err)?,
                })
            })
            .collect()
    }

    async fn replace_sealed(&self, old: &SealedRow, new: &SealedRow) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE instances SET configuration_enc = ?, access_token_enc = ?, refresh_token_enc = ? \
             WHERE id = ? AND configuration_enc = ? AND access_token_enc IS ? AND refresh_token_enc IS ?",
        )
        .bind(&new.configuration)
        .bind(&new.access_token)
        .bind(&new.refresh_token)
        .bind(old.id)
        .bind(&old.configuration)
        .bind(&old.access_token)
        .bind(&old.refresh_token)
        .execute(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn callback_urls(&self, organization_id: i64) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT url FROM organization_callbacks WHERE organization_id = ? ORDER BY url",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(db_err))
            .collect()
    }

    async fn set_callback_urls(&self, organization_id: i64, urls: &[String]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        sqlx::query("DELETE FROM organization_callbacks WHERE organization_id = ?")
            .bind(organization_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for url in urls {
            sqlx::query(
                "INSERT INTO organization_callbacks (organization_id, url) VALUES (?, ?) ON CONFLICT DO NOTHING",
            )
            .bind(organization_id)
            .bind(url)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)
    }

    async fn expiring_before(&self, unix_seconds: i64, limit: i64) -> Result<Vec<i64>> {
        let rows = sqlx::query(
            "SELECT id FROM instances WHERE valid = 1 AND disabled = 0 \
             AND refresh_token_enc IS NOT NULL AND expires_at IS NOT NULL AND expires_at < ? \
             ORDER BY expires_at, id LIMIT ?",
        )
        .bind(unix_seconds)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| r.try_get::<i64, _>(0).map_err(db_err))
            .collect()
    }

    async fn expiring_page(
        &self,
        unix_seconds: i64,
        after: Option<(i64, i64)>,
        limit: i64,
    ) -> Result<Vec<(i64, i64, i64)>> {
        let (after_expires, after_id) = after.unwrap_or((i64::MIN, i64::MIN));
        let rows = sqlx::query(
            "SELECT id, organization_id, expires_at FROM instances WHERE valid = 1 AND disabled = 0 \
             AND refresh_token_enc IS NOT NULL AND expires_at IS NOT NULL AND expires_at < ? \
             AND (expires_at > ? OR (expires_at = ? AND id > ?)) \
             ORDER BY expires_at, id LIMIT ?",
        )
        .bind(unix_seconds)
        .bind(after_expires)
        .bind(after_expires)
        .bind(after_id)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(db_err)?,
                    r.try_get(1).map_err(db_err)?,
                    r.try_get(2).map_err(db_err)?,
                ))
            })
            .collect()
    }
}
