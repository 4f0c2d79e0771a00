//! million (cache, issue 19): the credential read with 1,000 instances in
//! the database, then with 1,000,000, and the server's memory after it; plus
//! what the credential cache costs in memory per entry.
//!
//! The filler rows are copied by SQL from one real instance in big
//! transactions, straight into the SQLite file beside the running server (WAL
//! lets both write): a new id, `seq` and a random token hash each, the rest
//! (ciphertexts included) as is. They are never read (their ciphertexts are
//! bound to the template's id), and their tokens expire in a year, so the
//! background refresher leaves them alone. Not in `all`: about 2-3 minutes.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions as _;

use super::*;
use crate::procs;

/// Rows per INSERT ... SELECT (one transaction each).
const CHUNK: i64 = 100_000;
/// Filler ids start here (random ids are below 2^53 and spread over all of
/// it: a collision is as unlikely as between two random ids).
const FILLER_BASE: i64 = 8_000_000_000_000_000;
/// Instances read once each to measure the cache's memory per entry.
const CACHE_PROBE: usize = 2_000;

impl Bench {
    pub(super) fn million(&mut self) -> Res<()> {
        let connections = self.settings.connections;
        let dir = self.dir("million")?;
        let server = self.start_elements(&dir, None)?;
        let body = instance_body(
            "bench-access-token",
            "bench-refresh-token",
            "123456",
            31_536_000,
        );
        let (id, token) = self.provision(&server, &body)?;
        let request = credentials_request(id, &token);
        self.expect(server.addr, &request, 200)?;

        // The cache's memory: RSS before and after reading CACHE_PROBE
        // distinct instances once each (by Element token).
        let mut probes = Vec::with_capacity(CACHE_PROBE);
        for _ in 0..CACHE_PROBE {
            probes.push(self.provision(&server, &body)?);
        }
        let before = server.memory()?;
        for (pid, ptoken) in &probes {
            self.expect(server.addr, &credentials_request(*pid, ptoken), 200)?;
        }
        let after = server.memory()?;
        let per_entry_kib =
            after.rss_kib.saturating_sub(before.rss_kib) as f64 / CACHE_PROBE as f64;

        let db = dir.join("elements.db");
        let have = 1 + CACHE_PROBE as i64;
        let started = Instant::now();
        self.rt.block_on(fill(&db, id, have, 1_000))?;
        eprintln!(
            "bench:   1,000 instances in the database ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let reference = procs::start_reference()?;
        self.expect(reference.addr, &request, 200)?;
        let thousand = self.load(&server, &request, connections)?;
        let base_thousand = self.load(&reference, &request, connections)?;

        let started = Instant::now();
        self.rt.block_on(fill(&db, id, 1_000, 1_000_000))?;
        let filled = started.elapsed().as_secs_f64();
        eprintln!("bench:   1,000,000 instances in the database ({filled:.1} s)");
        let million = self.load(&server, &request, connections)?;
        let base_million = self.load(&reference, &request, connections)?;
        let memory = server.memory()?;
        let count = self.rt.block_on(count(&db))?;
        reference.stop();
        server.stop();

        let s = format!("GET credentials, 1,000,000 instances vs 1,000 ({connections} conns)");
        self.note_failures(&s, &million);
        self.notes.push(format!(
            "{s}: {count} instances at the end; filling 999,000 rows took {filled:.1} s; \
             reference {:.0} req/s (1,000 phase) and {:.0} req/s (1,000,000 phase)",
            base_thousand.ok_rps(),
            base_million.ok_rps()
        ));
        let r = self.row(&s, "requests/s", million.ok_rps(), "req/s");
        r.reference = Some((thousand.ok_rps(), "same read, 1,000 instances".into()));
        r.target = Target::RatioAtLeast(0.9);
        let r = self.row(&s, "server CPU per request", million.server_cpu_us, "µs");
        r.reference = Some((thousand.server_cpu_us, "1,000 instances".into()));
        let r = self.row(&s, "p99 latency", million.p99_ms, "ms");
        r.reference = Some((thousand.p99_ms, "1,000 instances".into()));
        let r = self.row(&s, "server RSS after the run", memory.rss_mb(), "MB");
        r.target = Target::AtMost(80.0);
        self.row(&s, "server peak RSS", memory.hwm_mb(), "MB");
        self.row(
            "credential cache (issue 19)",
            "RSS per cached instance (2,000 read once each)",
            per_entry_kib,
            "KiB",
        );
        self.row(
            "credential cache (issue 19)",
            "at the default limit (10,000 instances)",
            per_entry_kib * 10_000.0 / 1024.0,
            "MiB",
        );
        Ok(())
    }
}

/// Copies instance `template` until the table holds `to` rows (it holds
/// `from`), CHUNK rows per transaction.
async fn fill(db: &Path, template: i64, from: i64, to: i64) -> Res<()> {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(err("opening the database"))?;
    let mut next = from;
    while next < to {
        let n = CHUNK.min(to - next);
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             INSERT INTO instances (id, seq, organization_id, user_id, element_key, element_id, \
               name, tags, configuration_enc, token_hash, access_token_enc, refresh_token_enc, \
               token_type, expires_at, valid, invalid_reason, disabled, created_at, updated_at, \
               token_version) \
             SELECT $2 + i, (SELECT max(seq) FROM instances) + i, t.organization_id, t.user_id, \
               t.element_key, t.element_id, t.name, t.tags, t.configuration_enc, randomblob(32), \
               t.access_token_enc, t.refresh_token_enc, t.token_type, t.expires_at, t.valid, \
               t.invalid_reason, t.disabled, t.created_at, t.updated_at, t.token_version \
             FROM n, instances t WHERE t.id = $3",
        )
        .bind(n)
        .bind(FILLER_BASE + next)
        .bind(template)
        .execute(&mut conn)
        .await
        .map_err(err("copying instances"))?;
        next += n;
    }
    Ok(())
}

async fn count(db: &Path) -> Res<i64> {
    use sqlx::Row as _;
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .map_err(err("opening the database"))?;
    let row = sqlx::query("SELECT count(*) FROM instances")
        .fetch_one(&mut conn)
        .await
        .map_err(err("counting instances"))?;
    row.try_get::<i64, _>(0).map_err(err("counting instances"))
}
