//! Group commit of new instances: one writer, one transaction (and so one
//! `fsync`) for every insert queued while the previous commit ran.
//!
//! Callers send an [`InstanceRow`](crate::common::InstanceRow) (already encrypted, id already drawn) with
//! a oneshot reply over a bounded channel (a full queue makes senders wait).
//! The writer takes the first request, drains whatever else
//! is queued (up to [`MAX_BATCH`]) without waiting, runs them all between
//! `BEGIN IMMEDIATE` and `COMMIT`, and answers each caller only after `COMMIT`
//! returned. It never waits to fill a batch: alone, a request is a
//! transaction of one, as before.
//!
//! Inside the transaction, rows go in multi-row `INSERT`s of up to
//! [`MAX_CHUNK`] rows (power-of-two sizes, so a handful of cached
//! statements): every statement is a round trip to SQLx's connection thread,
//! and those wake-ups, not SQLite, were most of a batch's CPU time.
//!
//! **Instance caps.** A row may carry its organization's cap
//! ([`InstanceRow::cap`](crate::common::InstanceRow)): right after `BEGIN
//! IMMEDIATE` the writer checks each organization of the batch once (see
//! `over_cap`), under the write lock, so the cap is exact however many
//! requests race, and `POST /instances` needs no round trip of its own to
//! check it. A row over the cap is not written; its caller gets
//! `Inserted::AtCap`.
//!
//! Each caller gets its own result:
//! - A constraint violation (a taken id or instance token, a user of another
//!   organization) aborts only its own statement, never the transaction
//!   (SQLite's default `ABORT` conflict resolution). A multi-row statement
//!   that hits one has inserted nothing; its rows are then inserted one
//!   statement each, so the violation is that one caller's answer and the
//!   batch goes on.
//! - Any other error of a statement may have ended the transaction: it is
//!   rolled back. A single-row statement's row gets the error and the others
//!   are written again without it (at most once per row in the batch); after
//!   a multi-row statement the batch is written again one row per statement
//!   to find the culprit.
//! - An error of `BEGIN` or `COMMIT` concerns the batch as a whole (a lock
//!   held too long by another process, a full disk): every caller in it
//!   gets it. Nothing of the batch was committed... except what the engine
//!   cannot take back after an `fsync` failure, as with single inserts.
//!
//! **Its own thread.** The writer runs on a dedicated OS thread with a
//! current-thread Tokio runtime, not as a task among the request handlers:
//! on a busy runtime each wake-up of the writer (one per statement) waits
//! behind the ready handler tasks. On 2 cores with 64 clients, as a Tokio
//! task, a batch of about 32 rows took 6-7 ms where the thread takes 4-5 ms
//! (on a disk whose `fsync` took 1-3 ms then). The channels work across
//! runtimes; the pool is only used to take the writer's connection.
//!
//! **What is left.** Instance ids are random, so each row lands on its own
//! page of the table's b-tree (and of the token-hash index): a batch writes
//! about as many WAL pages as rows, and that volume (plus the checkpoints it
//! triggers) is most of what a batch costs beyond the `fsync`.
//!
//! If the writer is gone (a panic), a caller's send or its reply fails and
//! it gets a [`StoreError::Database`]; it never hangs. The thread ends when
//! the store (the only sender) is dropped, after answering what was queued.

use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Connection as _;
use tokio::sync::{mpsc, oneshot};

use super::durability_settings;
use crate::common::{bind_instance_row, db_err, insert_outcome, Inserted, InstanceRow};
use crate::events::{created_event, NewEvent};
use crate::sql::{insert_events, Conn};
use crate::{DurabilitySetting, Result, StoreError};

/// The most inserts committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;

/// How many requests may wait for the writer before senders wait too.
const QUEUE: usize = 4 * MAX_BATCH;

/// What the writer is asked to do. Not boxed: inserts are the traffic, a
/// settings request is rare, and a box would be an allocation per insert.
#[allow(clippy::large_enum_variant)]
enum Request {
    /// Insert a row.
    Insert(Insert),
    /// Report the durability settings of the writer's own connection.
    Settings(oneshot::Sender<Result<Vec<DurabilitySetting>>>),
}

struct Insert {
    row: InstanceRow,
    reply: oneshot::Sender<Result<Inserted>>,
}

/// The sending side; the writer thread ends when it is dropped.
pub(crate) struct GroupCommit {
    queue: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Starts the writer thread.
    pub(super) fn start(pool: SqlitePool) -> Result<Self> {
        let (queue, requests) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start the SQLite writer: {e}")))?;
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || runtime.block_on(writer(pool, requests)))
            .map_err(|e| StoreError::Database(format!("cannot start the SQLite writer: {e}")))?;
        Ok(GroupCommit { queue })
    }

    /// Inserts `row` durably: `Ok(Done)` once its transaction is committed.
    pub(crate) async fn insert(&self, row: InstanceRow) -> Result<Inserted> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request::Insert(Insert { row, reply }))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// The durability settings of the writer's own connection (the one
    /// every new instance is committed on), as SQLite reports them.
    pub(super) async fn settings(&self) -> Result<Vec<DurabilitySetting>> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Request::Settings(reply))
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

fn gone() -> StoreError {
    StoreError::Database("the SQLite writer is not running".into())
}

/// The writer: batches until every sender is gone.
async fn writer(pool: SqlitePool, mut requests: mpsc::Receiver<Request>) {
    let mut conn = None;
    let mut requests_in = Vec::with_capacity(MAX_BATCH);
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while requests.recv_many(&mut requests_in, MAX_BATCH).await > 0 {
        for request in requests_in.drain(..) {
            match request {
                // A caller that gave up (a cancelled request) will never
                // learn the id: do not write its row.
                Request::Insert(insert) if insert.reply.is_closed() => {}
                Request::Insert(insert) => batch.push(insert),
                Request::Settings(reply) => {
                    let _ = reply.send(settings(&pool, &mut conn).await);
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let rows: Vec<&InstanceRow> = batch.iter().map(|r| &r.row).collect();
        let outcomes = write_batch(&pool, &mut conn, &rows).await;
        if rows.len() > 1 {
            tracing::trace!(rows = rows.len(), "group commit");
        }
        for (request, outcome) in batch.drain(..).zip(outcomes) {
            let _ = request.reply.send(outcome);
        }
    }
}

/// Writes `rows` in as few transactions as it takes, on the writer's own
/// connection (taken from the pool once and kept; replaced after a failed
/// rollback). One outcome per row, in order.
async fn write_batch(
    pool: &SqlitePool,
    conn: &mut Option<SqliteConnection>,
    rows: &[&InstanceRow],
) -> Vec<Result<Inserted>> {
    let mut outcomes: Vec<Option<Result<Inserted>>> = rows.iter().map(|_| None).collect();
    let mut pending: Vec<usize> = (0..rows.len()).collect();
    let mut one_by_one = false;
    while !pending.is_empty() {
        let c = match conn {
            Some(c) => c,
            None => match writer_connection(pool).await {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    fail_all(&mut outcomes, &pending, e);
                    break;
                }
            },
        };
        match attempt(c, rows, &pending, one_by_one).await {
            Attempt::Committed(done) => {
                for (i, outcome) in pending.iter().zip(done) {
                    outcomes[*i] = Some(outcome);
                }
                break;
            }
            Attempt::ChunkFailed { clean } => {
                // Find the culprit: the same rows again, one statement each.
                one_by_one = true;
                if !clean {
                    *conn = None;
                }
            }
            Attempt::RowFailed { at, error, clean } => {
                outcomes[pending[at]] = Some(Err(db_err(error)));
                pending.remove(at);
                if !clean {
                    *conn = None;
                }
            }
            Attempt::BatchFailed { error, clean } => {
                fail_all(&mut outcomes, &pending, error);
                if !clean {
                    *conn = None;
                }
                break;
            }
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(StoreError::Database("insert not attempted".into()))))
        .collect()
}

/// The writer's own connection: taken from the pool and detached (the pool
/// opens another for the readers).
async fn writer_connection(pool: &SqlitePool) -> Result<SqliteConnection, sqlx::Error> {
    let mut conn = pool.acquire().await?.detach();
    // A multi-row INSERT keeps a statement journal (the pages it changed, to
    // undo it alone on a constraint violation); past 64 KiB SQLite spills it
    // to a temporary file. In memory it is only the batch's pages.
    sqlx::query("PRAGMA temp_store = MEMORY")
        .execute(&mut conn)
        .await?;
    Ok(conn)
}

/// The writer connection's durability settings (opening it if need be).
async fn settings(
    pool: &SqlitePool,
    conn: &mut Option<SqliteConnection>,
) -> Result<Vec<DurabilitySetting>> {
    let c = match conn {
        Some(c) => c,
        None => conn.insert(writer_connection(pool).await.map_err(db_err)?),
    };
    durability_settings(c, "writer").await
}

/// Every pending row gets (a copy of) the same error.
fn fail_all(outcomes: &mut [Option<Result<Inserted>>], pending: &[usize], error: sqlx::Error) {
    let message = match db_err(error) {
        StoreError::Database(m) => m,
        other => other.to_string(),
    };
    for i in pending {
        outcomes[*i] = Some(Err(StoreError::Database(message.clone())));
    }
}

enum Attempt {
    /// Committed; one outcome per pending row.
    Committed(Vec<Result<Inserted>>),
    /// A multi-row statement failed other than by a constraint; nothing was
    /// committed, and which row is to blame is unknown.
    ChunkFailed { clean: bool },
    /// The statement of pending row `at` failed other than by a constraint;
    /// nothing was committed. `clean`: the rollback worked, the connection
    /// can be reused.
    RowFailed {
        at: usize,
        error: sqlx::Error,
        clean: bool,
    },
    /// `BEGIN` or `COMMIT` failed; nothing was committed.
    BatchFailed { error: sqlx::Error, clean: bool },
}

/// One transaction over the pending rows: multi-row statements of up to
/// [`MAX_CHUNK`] rows, a chunk that hits a constraint again row by row (the
/// failed statement left nothing behind); only single-row statements if
/// `one_by_one`.
async fn attempt(
    conn: &mut SqliteConnection,
    rows: &[&InstanceRow],
    pending: &[usize],
    one_by_one: bool,
) -> Attempt {
    // IMMEDIATE: take the write lock now (waiting up to the busy timeout),
    // never fail later on upgrading a read transaction.
    let mut tx = match conn.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(error) => {
            return Attempt::BatchFailed {
                error,
                clean: false,
            }
        }
    };
    // The instance caps, under the write lock: exact.
    let admitted = match over_cap(&mut tx, rows, pending).await {
        Ok(admitted) => admitted,
        Err(error) => {
            let clean = tx.rollback().await.is_ok();
            return Attempt::BatchFailed { error, clean };
        }
    };
    // Positions in `pending` of the rows to write.
    let todo: Vec<usize> = (0..pending.len()).filter(|&p| admitted[p]).collect();
    let mut done: Vec<Result<Inserted>> = admitted
        .iter()
        .map(|&ok| Ok(if ok { Inserted::Done } else { Inserted::AtCap }))
        .collect();
    let mut at = 0;
    while at < todo.len() {
        let len = if one_by_one {
            1
        } else {
            chunk_len(todo.len() - at)
        };
        if len > 1 {
            let chunk: Vec<&InstanceRow> = todo[at..at + len]
                .iter()
                .map(|&p| rows[pending[p]])
                .collect();
            match insert_many(&mut tx, &chunk).await {
                // `done` already says `Done` for these.
                Ok(true) => {
                    at += len;
                    continue;
                }
                // A constraint: this chunk row by row, below.
                Ok(false) => {}
                Err(error) => {
                    tracing::debug!(error = %db_err(error), "multi-row insert failed; retrying row by row");
                    let clean = tx.rollback().await.is_ok();
                    return Attempt::ChunkFailed { clean };
                }
            }
        }
        for _ in 0..len {
            let p = todo[at];
            match insert(&mut tx, rows[pending[p]]).await {
                Ok(outcome) => done[p] = outcome,
                Err(error) => {
                    let clean = tx.rollback().await.is_ok();
                    return Attempt::RowFailed {
                        at: p,
                        error,
                        clean,
                    };
                }
            }
            at += 1;
        }
    }
    // Issue 16: each new instance's `instance.created` event, in the same
    // transaction (one multi-row statement per 64 events).
    let events: Vec<NewEvent> = pending
        .iter()
        .zip(&done)
        .filter(|(_, outcome)| matches!(outcome, Ok(Inserted::Done)))
        .map(|(&i, _)| created_event(rows[i]))
        .collect();
    if let Err(error) = insert_events(Conn::from(&mut *tx), &events).await {
        let clean = tx.rollback().await.is_ok();
        return Attempt::BatchFailed { error, clean };
    }
    match tx.commit().await {
        Ok(()) => Attempt::Committed(done),
        // The transaction is dropped unfinished: its rollback is queued on
        // the connection, which is replaced anyway to be safe.
        Err(error) => Attempt::BatchFailed {
            error,
            clean: false,
        },
    }
}

/// Which pending rows fit under their organization's cap
/// ([`InstanceRow::cap`]), in batch order: one statement per organization
/// with capped rows in the batch. `seq` values are distinct and positive
/// within an organization, so it holds at most `MAX(seq)` instances: while
/// that bound plus the batch's rows stays within the cap, nothing is
/// counted (the usual case); otherwise its instances are counted, up to the
/// cap, and rows are admitted in order while the count stays below.
/// (A row admitted here that then fails on a constraint still took a
/// place: at the cap's edge, a later row of the same batch may be refused
/// although it would have fit. Conservative, and rare.)
async fn over_cap(
    conn: &mut SqliteConnection,
    rows: &[&InstanceRow],
    pending: &[usize],
) -> Result<Vec<bool>, sqlx::Error> {
    let mut admitted = vec![true; pending.len()];
    // organization -> (capped rows, smallest cap, largest cap)
    let mut orgs: std::collections::BTreeMap<i64, (i64, i64, i64)> = Default::default();
    for row in pending.iter().map(|&i| rows[i]) {
        if let Some(cap) = row.cap {
            let e = orgs.entry(row.organization_id).or_insert((0, cap, cap));
            *e = (e.0 + 1, e.1.min(cap), e.2.max(cap));
        }
    }
    for (org, (n, min_cap, max_cap)) in orgs {
        // -1: every row fits without counting.
        let mut held: i64 = sqlx::query_scalar(
            "SELECT CASE \
             WHEN COALESCE((SELECT MAX(seq) FROM instances WHERE organization_id = ?1), 0) \
             + ?2 <= ?3 THEN -1 \
             ELSE (SELECT COUNT(*) FROM \
             (SELECT 1 FROM instances WHERE organization_id = ?1 LIMIT ?4)) \
             END",
        )
        .bind(org)
        .bind(n)
        .bind(min_cap)
        .bind(max_cap)
        .fetch_one(&mut *conn)
        .await?;
        if held < 0 {
            continue;
        }
        for (p, row) in pending.iter().map(|&i| rows[i]).enumerate() {
            match row.cap {
                Some(cap) if row.organization_id == org => {
                    if held < cap {
                        held += 1;
                    } else {
                        admitted[p] = false;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(admitted)
}

/// One row's insert, inside the batch's transaction. `Err` only for an
/// error that may have ended the transaction.
async fn insert(
    conn: &mut SqliteConnection,
    row: &InstanceRow,
) -> Result<Result<Inserted>, sqlx::Error> {
    // `seq` orders an organization's instances (newest first); the maximum
    // per organization is an index lookup on (organization_id, seq), where
    // the maximum over the whole table would scan the index on every insert.
    let query = sqlx::query(
        "INSERT INTO instances (id, seq, organization_id, user_id, element_key, \
         element_id, name, tags, configuration_enc, token_hash, access_token_enc, \
         refresh_token_enc, token_type, expires_at, valid, disabled, created_at, \
         updated_at, token_version) \
         SELECT ?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM instances \
         WHERE organization_id = u.organization_id), u.organization_id, \
         u.id, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, 1, 0, ?14, ?14, 0 \
         FROM users u WHERE u.id = ?3 AND u.organization_id = ?2",
    );
    let inserted = bind_instance_row!(query, row).execute(&mut *conn).await;
    match insert_outcome(row, inserted.map(|done| done.rows_affected())) {
        Err(e) if is_constraint(&e) => Ok(Err(db_err(e))),
        other => other,
    }
}

/// The most rows in one multi-row `INSERT` (14 parameters each).
const MAX_CHUNK: usize = 64;

/// The largest power of two up to `MAX_CHUNK` and `remaining`: few distinct
/// statements to prepare and cache (1, 2, 4, ..., 64 rows).
fn chunk_len(remaining: usize) -> usize {
    let n = remaining.clamp(1, MAX_CHUNK);
    1 << n.ilog2()
}

/// The multi-row `INSERT` of `rows` rows: `VALUES` rows of (ordinal, then
/// the 14 parameters of a row), each row's organization taken from its user
/// only if the user belongs to it, NULL otherwise (a NOT NULL violation that
/// aborts the statement, so the chunk is redone row by row and that row gets
/// its `Conflict`). `seq` is the organization's maximum plus the ordinal, so
/// the chunk's rows follow each other in order.
fn insert_many_sql(rows: usize) -> String {
    let params = ", ?".repeat(14);
    let values: Vec<String> = (1..=rows).map(|n| format!("({n}{params})")).collect();
    format!(
        "INSERT INTO instances (id, seq, organization_id, user_id, element_key, \
         element_id, name, tags, configuration_enc, token_hash, access_token_enc, \
         refresh_token_enc, token_type, expires_at, valid, disabled, created_at, \
         updated_at, token_version) \
         SELECT v.column2, \
         (SELECT COALESCE(MAX(i.seq), 0) FROM instances i \
         WHERE i.organization_id = v.column3) + v.column1, \
         (SELECT u.organization_id FROM users u \
         WHERE u.id = v.column4 AND u.organization_id = v.column3), \
         v.column4, v.column5, v.column6, v.column7, v.column8, v.column9, v.column10, \
         v.column11, v.column12, v.column13, v.column14, 1, 0, v.column15, v.column15, 0 \
         FROM (VALUES {}) AS v ORDER BY v.column1",
        values.join(", ")
    )
}

/// Inserts `rows` in one statement. `Ok(false)`: a constraint aborted it,
/// nothing was inserted, the transaction goes on.
async fn insert_many(
    conn: &mut SqliteConnection,
    rows: &[&InstanceRow],
) -> Result<bool, sqlx::Error> {
    let sql = insert_many_sql(rows.len());
    let mut query = sqlx::query(&sql);
    for row in rows {
        query = bind_instance_row!(query, row);
    }
    match query.execute(&mut *conn).await {
        Ok(done) if done.rows_affected() == rows.len() as u64 => Ok(true),
        Ok(done) => Err(sqlx::Error::Protocol(format!(
            "a multi-row insert of {} rows inserted {}",
            rows.len(),
            done.rows_affected()
        ))),
        Err(e) if is_constraint(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A constraint violation, which aborts only its statement.
fn is_constraint(e: &sqlx::Error) -> bool {
    use sqlx::error::ErrorKind;
    matches!(e, sqlx::Error::Database(d) if matches!(
        d.kind(),
        ErrorKind::UniqueViolation
            | ErrorKind::ForeignKeyViolation
            | ErrorKind::NotNullViolation
            | ErrorKind::CheckViolation
    ))
}

#[cfg(test)]
mod tests {
    //! The batch itself, driven directly so that the rows are known to share
    //! one transaction (through the store, batching depends on timing).

    use std::sync::Arc;

    use super::*;
    use crate::common::SealedTokens;
    use crate::sql::{Db, SqlStore};
    use crate::{hash_secret, Keyring, NewAccount, Store as _};

    /// The store and its SQLite pool.
    struct SqliteStore {
        pool: SqlitePool,
        _store: SqlStore,
    }

    fn row(id: i64, organization_id: i64, user_id: i64, name: &str, token: &str) -> InstanceRow {
        InstanceRow {
            id,
            organization_id,
            user_id,
            element_key: "hubspot".into(),
            element_id: 3166,
            name: name.into(),
            tags: "[]".into(),
            configuration_enc: "not-decrypted-here".into(),
            token_hash: hash_secret(token).to_vec(),
            tokens: SealedTokens {
                access_token_enc: None,
                refresh_token_enc: None,
                token_type: None,
                expires_at: None,
            },
            now: 1,
            cap: None,
        }
    }

    /// A migrated database with one account; (store, org id, user id).
    async fn store(dir: &tempfile::TempDir) -> (SqliteStore, i64, i64) {
        let url = format!("sqlite://{}", dir.path().join("gc.db").display());
        let keyring = Arc::new(Keyring::new(vec![Keyring::generate_key()]).unwrap());
        let store = crate::sqlite::connect(&url, keyring).await.unwrap();
        let who = store
            .create_account(NewAccount {
                organization_name: "Org".into(),
                organization_secret_hash: hash_secret("org"),
                email: "u@example.com".into(),
                first_name: "U".into(),
                last_name: "V".into(),
                user_secret_hash: hash_secret("user"),
            })
            .await
            .unwrap();
        let Db::Sqlite(engine) = &store.db else {
            unreachable!("a sqlite URL")
        };
        let pool = engine.pool.clone();
        let store = SqliteStore {
            pool,
            _store: store,
        };
        (store, who.organization_id, who.user.id)
    }

    async fn names(store: &SqliteStore) -> Vec<String> {
        sqlx::query_scalar("SELECT name FROM instances ORDER BY seq")
            .fetch_all(&store.pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_gone_writer_is_an_error_not_a_hang() {
        // No writer at all: the send fails.
        let (queue, requests) = mpsc::channel(1);
        drop(requests);
        let gc = GroupCommit { queue };
        let err = gc.insert(row(1, 1, 1, "x", "t")).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Database(m) if m.contains("writer")),
            "{err:?}"
        );

        // A writer that dies holding the request: the reply fails.
        let (queue, mut requests) = mpsc::channel::<Request>(1);
        let dying = tokio::spawn(async move {
            let _held = requests.recv().await;
            panic!("the writer dies");
        });
        let gc = GroupCommit { queue };
        let err = gc.insert(row(1, 1, 1, "x", "t")).await.unwrap_err();
        assert!(
            matches!(&err, StoreError::Database(m) if m.contains("writer")),
            "{err:?}"
        );
        assert!(dying.await.unwrap_err().is_panic());
    }

    #[tokio::test]
    async fn constraint_violations_fail_only_their_own_row() {
        let dir = tempfile::tempdir().unwrap();
        let (store, org, user) = store(&dir).await;
        let rows = [
            row(11, org, user, "a", "token-a"),
            row(11, org, user, "same id", "token-b"),
            row(12, org, user, "same token", "token-a"),
            row(13, org + 1, user, "not a member", "token-c"),
            row(14, org, user, "e", "token-e"),
        ];
        let mut conn = None;
        let out = write_batch(&store.pool, &mut conn, &rows.iter().collect::<Vec<_>>()).await;
        assert_eq!(out.len(), 5);
        assert_eq!(out[0].as_ref().unwrap(), &Inserted::Done);
        assert_eq!(out[1].as_ref().unwrap(), &Inserted::IdTaken);
        assert!(
            matches!(&out[2], Err(StoreError::Conflict(m)) if m.contains("instance token")),
            "{:?}",
            out[2]
        );
        assert!(
            matches!(&out[3], Err(StoreError::Conflict(m)) if m.contains("not a member")),
            "{:?}",
            out[3]
        );
        assert_eq!(out[4].as_ref().unwrap(), &Inserted::Done);
        assert_eq!(names(&store).await, ["a", "e"]);

        // The writer's connection is the pool's kind: a commit is an fsync.
        let c = conn.as_mut().expect("the connection is kept");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL");
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *c)
            .await
            .unwrap();
        assert_eq!(journal, "wal");
    }

    #[tokio::test]
    async fn multi_row_chunks_keep_order_and_per_row_results() {
        let dir = tempfile::tempdir().unwrap();
        let (store, org, user) = store(&dir).await;
        let first = [row(1, org, user, "before", "t-before")];
        let out = write_batch(&store.pool, &mut None, &first.iter().collect::<Vec<_>>()).await;
        assert_eq!(out[0].as_ref().unwrap(), &Inserted::Done);

        // 100 rows: chunks of 64, 32 and 4; a violation in the second and
        // in the last chunk.
        let mut rows: Vec<InstanceRow> = (0..100)
            .map(|n| row(100 + n, org, user, &format!("r{n:03}"), &format!("t{n}")))
            .collect();
        rows[70].token_hash = hash_secret("t3").to_vec();
        rows[97].organization_id = org + 1;
        let mut conn = None;
        let out = write_batch(&store.pool, &mut conn, &rows.iter().collect::<Vec<_>>()).await;
        for (n, outcome) in out.iter().enumerate() {
            match n {
                70 | 97 => assert!(matches!(outcome, Err(StoreError::Conflict(_))), "{n}"),
                _ => assert_eq!(outcome.as_ref().unwrap(), &Inserted::Done, "row {n}"),
            }
        }
        let mut expected = vec!["before".to_owned()];
        expected.extend(
            (0..100)
                .filter(|n| *n != 70 && *n != 97)
                .map(|n| format!("r{n:03}")),
        );
        assert_eq!(names(&store).await, expected, "seq follows the batch order");
        let seqs: Vec<i64> = sqlx::query_scalar("SELECT seq FROM instances ORDER BY seq")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "distinct: {seqs:?}");
    }

    #[tokio::test]
    async fn a_row_that_breaks_the_transaction_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (store, org, user) = store(&dir).await;
        // RAISE(ROLLBACK) ends the whole transaction; RAISE(ABORT) is an
        // error that is not one of the constraint kinds.
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON instances BEGIN \
             SELECT RAISE(ROLLBACK, 'poisoned row') WHERE NEW.name = 'rollback'; \
             SELECT RAISE(ABORT, 'aborted row') WHERE NEW.name = 'abort'; END",
        )
        .execute(&store.pool)
        .await
        .unwrap();
        let rows = [
            row(21, org, user, "first", "t1"),
            row(22, org, user, "rollback", "t2"),
            row(23, org, user, "second", "t3"),
            row(24, org, user, "abort", "t4"),
            row(25, org, user, "third", "t5"),
        ];
        let mut conn = None;
        let out = write_batch(&store.pool, &mut conn, &rows.iter().collect::<Vec<_>>()).await;
        for i in [0, 2, 4] {
            assert_eq!(out[i].as_ref().unwrap(), &Inserted::Done, "row {i}");
        }
        assert!(
            matches!(&out[1], Err(StoreError::Database(m)) if m.contains("poisoned row")),
            "{:?}",
            out[1]
        );
        assert!(
            matches!(&out[3], Err(StoreError::Database(m)) if m.contains("aborted row")),
            "{:?}",
            out[3]
        );
        assert_eq!(names(&store).await, ["first", "second", "third"]);

        // The writer's connection (replaced after the failed rollback) works.
        let more = [row(26, org, user, "fourth", "t6")];
        let out = write_batch(&store.pool, &mut conn, &more.iter().collect::<Vec<_>>()).await;
        assert_eq!(out[0].as_ref().unwrap(), &Inserted::Done);
        assert_eq!(names(&store).await, ["first", "second", "third", "fourth"]);
    }
}
