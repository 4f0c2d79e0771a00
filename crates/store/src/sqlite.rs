//! The SQLite engine: one file, WAL, `synchronous=FULL`. Its queries are
//! shared with PostgreSQL ([`crate::sql`]); here is what only SQLite does:
//! connecting, the group-commit writer, the refresh lease, and reading the
//! durability settings back.
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
//! in [`group_commit`]. The caller then answers the instance from what it
//! wrote when it knows the creating user (`Store::create_instance_by`, what
//! `POST /instances` uses), or reads its row back through the pool
//! (`create_instance`; reads run in parallel with the writer under WAL).
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

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::common::{db_err, lease_millis, lock_wait_millis, migrate_err, random_owner};
use crate::sql::{write_decision, Conn, Db, SqlStore};
use crate::{
    now_millis, Durability, DurabilitySetting, Instance, Keyring, RefreshDecision, RefreshJob,
    Result, StoreError,
};

mod group_commit;
use group_commit::GroupCommit;

/// How long a writer waits for SQLite's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the SQLite engine holds.
pub(crate) struct Sqlite {
    pub(crate) pool: SqlitePool,
    /// The group-commit writer of new instances.
    pub(crate) writer: GroupCommit,
}

/// Opens (creating if missing, with its directory) the database file named
/// by `url` (`sqlite:///abs/path.db`, `sqlite://relative.db`,
/// `sqlite:path.db`, or `sqlite::memory:`) and runs the migrations.
pub(crate) async fn connect(url: &str, keyring: Arc<Keyring>) -> Result<SqlStore> {
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
    // Every connection, the writer's included, gets these.
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
    Ok(SqlStore {
        db: Db::Sqlite(Sqlite { pool, writer }),
        keyring,
        changes: Default::default(),
    })
}

/// `PRAGMA journal_mode` and `PRAGMA synchronous` of `conn`, as SQLite
/// reports them (`synchronous`: 2 is FULL).
pub(crate) async fn durability_settings(
    conn: &mut SqliteConnection,
    connection: &'static str,
) -> Result<Vec<DurabilitySetting>> {
    let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(vec![
        DurabilitySetting::new(connection, "journal_mode", journal_mode),
        DurabilitySetting::new(connection, "synchronous", synchronous.to_string()),
    ])
}

impl Sqlite {
    /// The durability settings of a pool connection and of the writer's.
    pub(crate) async fn durability(&self) -> Result<Durability> {
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        let mut settings = durability_settings(&mut conn, "pool").await?;
        drop(conn);
        settings.extend(self.writer.settings().await?);
        Ok(Durability {
            engine: "sqlite",
            settings,
        })
    }

    /// Runs `job` under instance `id`'s refresh lease (see the module doc).
    pub(crate) async fn refresh_locked<'a>(
        &'a self,
        store: &'a SqlStore,
        id: i64,
        lease_seconds: i64,
        job: RefreshJob<'a>,
    ) -> Result<Option<Instance>> {
        let owner = random_owner();
        if self
            .take_lease(store, id, owner, lease_seconds)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        // From here on, the guard releases the lease on every early exit,
        // including a panicking or cancelled job.
        let mut guard = LeaseGuard {
            pool: Some(self.pool.clone()),
            keyring: store.keyring.clone(),
            id,
            owner,
        };
        let Some(instance) = store.fetch(id).await? else {
            return Ok(None);
        };
        let decision = job(instance).await;
        let mut conn = self.pool.acquire().await.map_err(db_err)?;
        // One transaction: the decision and the events it causes (issue 16).
        let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        let written = write_decision(
            Conn::from(&mut *tx),
            &store.keyring,
            id,
            &decision,
            Some(owner),
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        drop(conn);
        guard.disarm();
        if written == 0 {
            if !store.exists(id).await? {
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
        store.fetch(id).await
    }

    /// Takes instance `id`'s refresh lease, waiting for another holder's to
    /// end or expire. `None` if the instance does not exist.
    async fn take_lease(
        &self,
        store: &SqlStore,
        id: i64,
        owner: i64,
        lease_seconds: i64,
    ) -> Result<Option<()>> {
        let started = Instant::now();
        let give_up = Duration::from_millis(lock_wait_millis(lease_seconds) as u64);
        loop {
            let now = now_millis();
            let taken = sqlx::query(
                "UPDATE instances SET refresh_lease_until = $1, refresh_lease_owner = $2 \
                 WHERE id = $3 AND (refresh_lease_until IS NULL OR refresh_lease_until < $4)",
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
            if !store.exists(id).await? {
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
    keyring: Arc<Keyring>,
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
        let (keyring, id, owner) = (self.keyring.clone(), self.id, self.owner);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let released = async {
                    let mut conn = pool.acquire().await.map_err(db_err)?;
                    let release = RefreshDecision::Unchanged;
                    write_decision(Conn::from(&mut *conn), &keyring, id, &release, Some(owner))
                        .await
                }
                .await;
                if let Err(e) = released {
                    tracing::warn!(instance = id, error = %e, "could not release refresh lease");
                }
            });
        }
    }
}
