//! The PostgreSQL engine, for several replicas sharing one database. Its
//! queries are shared with SQLite ([`crate::sql`]); here is what only
//! PostgreSQL does: connecting, inserting a new instance, the refresh lock,
//! and reading the durability setting back.
//!
//! **Durability.** Every connection of the store's pool is opened with
//! `synchronous_commit=on` (a start-up parameter), whatever the server's or
//! database's default: a commit that returned has been flushed to the WAL.
//!
//! The refresh lock is a row lock (`SELECT ... FOR UPDATE`) held in a
//! transaction for the length of the job: a crashed holder's connection drops
//! and the lock with it; a hung one is cut off by
//! `idle_in_transaction_session_timeout` after the lease length.

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::common::{
    bind_instance_row, db_err, insert_outcome, lease_millis, lock_wait_millis, migrate_err,
    Inserted, InstanceRow, RawInstance,
};
use crate::sql::{raw_instance, write_decision, Conn, Db, SqlStore};
use crate::{Durability, DurabilitySetting, Instance, Keyring, RefreshJob, Result, StoreError};

/// What the PostgreSQL engine holds.
pub(crate) struct Postgres {
    pub(crate) pool: PgPool,
}

/// Connects to the database named by `url` (`postgres://` or
/// `postgresql://`) and runs the migrations.
pub(crate) async fn connect(url: &str, keyring: Arc<Keyring>) -> Result<SqlStore> {
    let options = PgConnectOptions::from_str(url)
        .map_err(|_| StoreError::InvalidUrl("malformed postgres URL".into()))?
        // Set on every connection, overriding the server's default (and a
        // `options=` in the URL).
        .options([("synchronous_commit", "on")]);
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .connect_with(options)
        .await
        .map_err(db_err)?;
    sqlx::migrate!("./migrations/postgres")
        .run(&pool)
        .await
        .map_err(migrate_err)?;
    tracing::debug!(key_id = keyring.current_key_id(), "postgres store ready");
    Ok(SqlStore {
        db: Db::Postgres(Postgres { pool }),
        keyring,
        changes: Default::default(),
    })
}

impl Postgres {
    /// Inserts a new instance row (one transaction, one commit).
    pub(crate) async fn insert(&self, row: &InstanceRow) -> Result<Inserted> {
        let query = sqlx::query(
            "INSERT INTO instances (id, organization_id, user_id, element_key, element_id, \
             name, tags, configuration_enc, token_hash, access_token_enc, refresh_token_enc, \
             token_type, expires_at, valid, disabled, created_at, updated_at, token_version) \
             SELECT $1, u.organization_id, u.id, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
             TRUE, FALSE, $14, $14, 0 \
             FROM users u WHERE u.id = $3 AND u.organization_id = $2",
        );
        // One transaction: the row and its `instance.created` event (issue 16).
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        if let Some(cap) = row.cap {
            // In the insert's transaction; as before this change, two
            // concurrent inserts at `cap - 1` may both pass (READ COMMITTED).
            let held: i64 = sqlx::query_scalar(crate::common::HELD_UP_TO_CAP)
                .bind(row.organization_id)
                .bind(cap)
                .fetch_one(&mut *tx)
                .await
                .map_err(db_err)?;
            if held >= cap {
                return Ok(Inserted::AtCap);
            }
        }
        let inserted = bind_instance_row!(query, row)
            .execute(&mut *tx)
            .await
            .map(|done| done.rows_affected());
        let outcome = insert_outcome(row, inserted).map_err(db_err)?;
        if matches!(outcome, Ok(Inserted::Done)) {
            let event = crate::events::created_event(row);
            crate::sql::insert_events(Conn::from(&mut *tx), &[event])
                .await
                .map_err(db_err)?;
            tx.commit().await.map_err(db_err)?;
        }
        outcome
    }

    /// `synchronous_commit` as a connection of the pool reports it.
    pub(crate) async fn durability(&self) -> Result<Durability> {
        let value: String = sqlx::query_scalar("SHOW synchronous_commit")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(Durability {
            engine: "postgres",
            settings: vec![DurabilitySetting::new("pool", "synchronous_commit", value)],
        })
    }

    /// Runs `job` holding instance `id`'s row lock (see the module doc).
    pub(crate) async fn refresh_locked<'a>(
        &'a self,
        keyring: &'a Keyring,
        id: i64,
        lease_seconds: i64,
        job: RefreshJob<'a>,
    ) -> Result<Option<Instance>> {
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let Some(raw) = lock_row(&mut tx, id, lease_seconds).await? else {
            return Ok(None);
        };
        let instance = raw.open(keyring)?;
        let decision = job(instance).await;
        write_decision(Conn::from(&mut *tx), keyring, id, &decision, None).await?;
        let after = raw_instance(Conn::from(&mut *tx), id, "")
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        after.map(|r| r.open(keyring)).transpose()
    }
}

/// Takes instance `id`'s row lock in the transaction on `conn` and reads the
/// row. Waits for another holder at most as long as the SQLite engine would,
/// and cuts this session off if the job outlives its lease (the lock is then
/// released and nothing is written); both settings end with the transaction.
async fn lock_row(
    conn: &mut PgConnection,
    id: i64,
    lease_seconds: i64,
) -> Result<Option<RawInstance>> {
    let wait = lock_wait_millis(lease_seconds);
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, true), \
         set_config('idle_in_transaction_session_timeout', $2, true)",
    )
    .bind(wait.to_string())
    .bind(lease_millis(lease_seconds).to_string())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    raw_instance(Conn::from(&mut *conn), id, " FOR UPDATE OF i")
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.code().as_deref() == Some(LOCK_NOT_AVAILABLE) => {
                StoreError::Database(format!(
                    "timed out after {wait} ms waiting for the refresh lock of instance {id}"
                ))
            }
            _ => db_err(e),
        })
}

/// SQLSTATE `lock_not_available`, raised when `lock_timeout` expires.
const LOCK_NOT_AVAILABLE: &str = "55P03";
