//! The scenarios. Each one starts what it needs (the real `elements serve`
//! binary over a fresh data directory, the reference server, the fake
//! provider), measures, stops everything and adds rows to the table.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elements_store::{Keyring, RefreshDecision, RefreshJob, Store, Tokens};
use elements_testkit::provider::FakeProvider;
use serde_json::{json, Value};

use crate::http::{self, Conn, Request};
use crate::load::{self, LoadGen, LoadResult, LoadSpec};
use crate::procs::{self, ElementsServe, Memory, ServerProcess};
use crate::reference::{OAUTH_URL_PATH, SEED_OAUTH_ANSWER, SEED_OAUTH_QUERY};
use crate::report::{Row, Target};

/// Every scenario name, in the order `all` runs them.
pub const SCENARIOS: &[&str] = &[
    "oauth-url",
    "memory",
    "credentials",
    "create",
    "refresh-storm",
    "catalog",
];

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `elements` binary under test.
    pub binary: PathBuf,
    /// The load generator.
    pub loadgen: LoadGen,
    /// Seconds of each measured load run.
    pub seconds: u64,
    /// Connections of the GET load runs.
    pub connections: usize,
    /// Connections of the POST /instances run.
    pub create_connections: usize,
    /// Load generator threads.
    pub threads: usize,
    /// Runs of each timed process or load (catalog scenario).
    pub runs: usize,
    /// Alternating rounds of measured and reference load runs.
    pub rounds: usize,
    /// Concurrent readers of the refresh storm.
    pub storm: usize,
    /// Where temporary directories go (its file system is what SQLite
    /// syncs to).
    pub tmp_root: PathBuf,
}

/// A benchmark session: settings, a runtime for the harness's own async
/// work (fake provider, store access, set-up requests), and the rows.
pub struct Bench {
    /// The settings.
    pub settings: Settings,
    rt: tokio::runtime::Runtime,
    tmp: tempfile::TempDir,
    /// The table so far.
    pub rows: Vec<Row>,
    /// Remarks printed under the table.
    pub notes: Vec<String>,
    /// (idle, after load) of the binary and of the reference, from oauth-url.
    memory: Option<MemoryFigures>,
}

#[derive(Debug, Clone, Copy)]
struct MemoryFigures {
    idle: Memory,
    loaded: Memory,
    reference_idle: Memory,
    reference_loaded: Memory,
}

type Res<T> = Result<T, String>;

fn err<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// The seed's instance body, with tokens and a lifetime.
pub fn instance_body(access: &str, refresh: &str, secret: &str, expires_in: u64) -> Value {
    json!({
        "element": { "key": "hubspot" },
        "providerData": {
            "apikey": "test-client",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": expires_in.to_string()
        },
        "configuration": {
            "oauth.api.key": "test-client",
            "oauth.api.secret": secret,
            "oauth.callback.url": "www.samplecallbackurl.com",
            "oauth.scope": "contacts-rw+offline"
        },
        "tags": ["bench"],
        "name": "Bench"
    })
}

/// `User ..., Organization ...` from the `{"firstAccount": ...}` line.
fn account_header(server: &ServerProcess) -> Res<String> {
    let account = server
        .first_account
        .as_ref()
        .ok_or("the server printed no firstAccount line")?;
    let org = account["firstAccount"]["organization"]["secret"]
        .as_str()
        .ok_or("firstAccount without organization secret")?;
    let user = account["firstAccount"]["user"]["secret"]
        .as_str()
        .ok_or("firstAccount without user secret")?;
    Ok(format!("User {user}, Organization {org}"))
}

fn oauth_url_request() -> Request {
    Request::get(format!("{OAUTH_URL_PATH}?{SEED_OAUTH_QUERY}"))
}

fn credentials_request(id: i64, token: &str) -> Request {
    Request::get(format!("/elements/api-v2/instances/{id}/credentials"))
        .header("Authorization", format!("Element {token}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// CPU time counters: the machine's and ours (this process, its waited-for
/// children such as wrk, and the servers under test), in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
struct CpuSample {
    total: u64,
    /// user + nice + system (irq and softirq excluded: loopback traffic of
    /// our own runs is accounted there).
    task: u64,
    steal: u64,
    ours: u64,
}

fn proc_times(path: &str) -> u64 {
    // Fields 14-17 (utime, stime, cutime, cstime), after the `(comm)`.
    std::fs::read_to_string(path)
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            let fields: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|f| f.parse().ok())
                .collect();
            Some(fields.iter().sum())
        })
        .unwrap_or(0)
}

impl CpuSample {
    fn take(pids: &[u32]) -> CpuSample {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let at = |i: usize| fields.get(i).copied().unwrap_or(0);
        let ours = proc_times("/proc/self/stat")
            + pids
                .iter()
                .map(|pid| proc_times(&format!("/proc/{pid}/stat")))
                .sum::<u64>();
        CpuSample {
            total: fields.iter().take(8).sum(),
            task: at(0) + at(1) + at(2),
            steal: at(7),
            ours,
        }
    }

    /// The fraction of the machine used by other work (and stolen by the
    /// hypervisor) since `before`.
    fn others_since(&self, before: &CpuSample) -> f64 {
        let total = self.total.saturating_sub(before.total);
        if total == 0 {
            return 0.0;
        }
        let task = self.task.saturating_sub(before.task);
        let ours = self.ours.saturating_sub(before.ours);
        let steal = self.steal.saturating_sub(before.steal);
        (task.saturating_sub(ours) + steal) as f64 / total as f64
    }
}

/// Waits (at most `limit`) until the machine is less than 10% busy.
fn wait_for_quiet(limit: Duration) {
    let deadline = Instant::now() + limit;
    eprintln!("bench:   other work is running; waiting for a quieter machine");
    while Instant::now() < deadline {
        if machine_busy(Duration::from_secs(1)) < 0.10 {
            return;
        }
    }
}

/// The fraction of all CPUs busy (user, system, steal, ...) over `window`,
/// from `/proc/stat`.
pub fn machine_busy(window: Duration) -> f64 {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu = stat.lines().next()?.strip_prefix("cpu ")?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3)? + fields.get(4)?;
        Some((total, idle))
    }
    let Some((t0, i0)) = sample() else { return 0.0 };
    std::thread::sleep(window);
    let Some((t1, i1)) = sample() else { return 0.0 };
    let total = t1.saturating_sub(t0);
    if total == 0 {
        return 0.0;
    }
    1.0 - i1.saturating_sub(i0) as f64 / total as f64
}

/// The run with the most successful requests per second: interference from
/// other work on the machine only ever slows a run down.
fn best(runs: &[LoadResult]) -> LoadResult {
    runs.iter()
        .max_by(|a, b| a.ok_rps().total_cmp(&b.ok_rps()))
        .cloned()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Bench {
    /// A session with these settings.
    pub fn new(settings: Settings) -> Res<Bench> {
        std::fs::create_dir_all(&settings.tmp_root).map_err(err("temporary directory"))?;
        let tmp = tempfile::Builder::new()
            .prefix("elements-bench-")
            .tempdir_in(&settings.tmp_root)
            .map_err(err("temporary directory"))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(err("runtime"))?;
        Ok(Bench {
            settings,
            rt,
            tmp,
            rows: Vec::new(),
            notes: Vec::new(),
            memory: None,
        })
    }

    /// Runs one scenario by name.
    pub fn run(&mut self, name: &str) -> Res<()> {
        eprintln!("bench: == {name} ==");
        if machine_busy(Duration::from_millis(500)) > 0.10 {
            wait_for_quiet(Duration::from_secs(60));
        }
        let started = Instant::now();
        let result = match name {
            "oauth-url" => self.oauth_url(),
            "memory" => self.memory(),
            "credentials" => self.credentials(),
            "create" => self.create(),
            "refresh-storm" => self.refresh_storm(),
            "catalog" => self.catalog(),
            other => Err(format!(
                "unknown scenario `{other}` (expected all, {})",
                SCENARIOS.join(", ")
            )),
        };
        eprintln!(
            "bench: {name} took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        result
    }

    fn dir(&self, name: &str) -> Res<PathBuf> {
        let dir = self.tmp.path().join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(err("clearing a scenario directory"))?;
        }
        std::fs::create_dir_all(&dir).map_err(err("scenario directory"))?;
        Ok(dir)
    }

    fn start_elements(&self, data_dir: &Path, config: Option<&Path>) -> Res<ServerProcess> {
        ElementsServe {
            binary: &self.settings.binary,
            data_dir,
            config,
            log_level: None,
        }
        .start()
    }

    fn request(&self, addr: SocketAddr, request: &Request) -> Res<http::Response> {
        self.rt
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(30), http::once(addr, request)).await
            })
            .map_err(|_| format!("{} {} timed out", request.method, request.path))?
            .map_err(err(&format!("{} {}", request.method, request.path)))
    }

    fn expect(&self, addr: SocketAddr, request: &Request, status: u16) -> Res<http::Response> {
        let response = self.request(addr, request)?;
        if response.status != status {
            return Err(format!(
                "{} {} answered {} (expected {status}): {}",
                request.method,
                request.path,
                response.status,
                response.text()
            ));
        }
        Ok(response)
    }

    /// A warm-up run (discarded) and a measured run against `server`. A run
    /// during which other work took more than 10% of the machine is retried
    /// (twice at most, after waiting up to 60 s for the machine to calm
    /// down); one still disturbed is kept and noted.
    fn load(
        &mut self,
        server: &ServerProcess,
        request: &Request,
        connections: usize,
    ) -> Res<LoadResult> {
        let spec = |seconds: u64| LoadSpec {
            addr: server.addr,
            request: request.clone(),
            connections,
            threads: self.settings.threads,
            duration: Duration::from_secs(seconds),
        };
        let path = request.path.split('?').next().unwrap_or("").to_owned();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let scratch = self.tmp.path();
            if self.settings.seconds >= 5 {
                load::run(&self.settings.loadgen, &spec(1), scratch)?;
            }
            let server_stat = format!("/proc/{}/stat", server.pid());
            let server_before = proc_times(&server_stat);
            let before = CpuSample::take(&[server.pid()]);
            let mut result = load::run(
                &self.settings.loadgen,
                &spec(self.settings.seconds),
                scratch,
            )?;
            let others = CpuSample::take(&[server.pid()]).others_since(&before);
            // /proc counts in USER_HZ (100 per second on Linux).
            let server_ticks = proc_times(&server_stat).saturating_sub(server_before);
            result.server_cpu_us = server_ticks as f64 * 10_000.0 / result.requests.max(1) as f64;
            eprintln!(
                "bench:   {} {} {path} x{connections}: {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms, {} requests, {} non-2xx, {} socket errors; server CPU {:.1} µs/request; other work {:.0}% of the machine",
                server.name,
                request.method,
                result.rps,
                result.p50_ms,
                result.p99_ms,
                result.requests,
                result.non_2xx,
                result.errors,
                result.server_cpu_us,
                others * 100.0
            );
            if others <= 0.10 {
                return Ok(result);
            }
            if attempt >= 3 {
                self.notes.push(format!(
                    "{} {} {path} x{connections}: other work took {:.0}% of the machine during the kept run (3 attempts)",
                    server.name,
                    request.method,
                    others * 100.0
                ));
                return Ok(result);
            }
            wait_for_quiet(Duration::from_secs(60));
        }
    }

    fn note_failures(&mut self, what: &str, result: &LoadResult) {
        if result.failures() > 0 {
            self.notes.push(format!(
                "{what}: {} non-2xx responses and {} socket errors out of {} requests",
                result.non_2xx, result.errors, result.requests
            ));
        }
    }

    fn row(&mut self, scenario: &str, figure: &str, value: f64, unit: &'static str) -> &mut Row {
        self.rows.push(Row {
            scenario: scenario.into(),
            figure: figure.into(),
            value,
            unit,
            reference: None,
            target: Target::Report,
        });
        self.rows.last_mut().expect("just pushed")
    }

    // ---- oauth/url -------------------------------------------------------

    /// The seed's oauth/url call: the binary against the reference, in
    /// alternating rounds (best of each side).
    fn oauth_url(&mut self) -> Res<()> {
        let request = oauth_url_request();
        let connections = self.settings.connections;

        let reference = procs::start_reference()?;
        let dir = self.dir("oauth-url")?;
        let server = self.start_elements(&dir, None)?;
        // The same binary with the per-request log line off: how much of
        // the gap is logging.
        let quiet_dir = self.dir("oauth-url-quiet")?;
        let quiet_server = ElementsServe {
            binary: &self.settings.binary,
            data_dir: &quiet_dir,
            config: None,
            log_level: Some("warn"),
        }
        .start()?;
        std::thread::sleep(Duration::from_secs(1));
        let idle = server.memory()?;
        let reference_idle = reference.memory()?;
        for (name, addr) in [
            ("the reference", reference.addr),
            ("elements", server.addr),
            ("elements (warn)", quiet_server.addr),
        ] {
            let body = self.expect(addr, &request, 200)?;
            if body.text() != SEED_OAUTH_ANSWER {
                return Err(format!("{name} answered {}", body.text()));
            }
        }
        let (mut bases, mut results, mut quiets) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.settings.rounds {
            bases.push(self.load(&reference, &request, connections)?);
            results.push(self.load(&server, &request, connections)?);
            quiets.push(self.load(&quiet_server, &request, connections)?);
        }
        let loaded = server.memory()?;
        let reference_loaded = reference.memory()?;
        reference.stop();
        server.stop();
        quiet_server.stop();
        self.memory = Some(MemoryFigures {
            idle,
            loaded,
            reference_idle,
            reference_loaded,
        });
        let (base, result, quiet) = (best(&bases), best(&results), best(&quiets));

        let s = format!("GET oauth/url (seed query, {connections} conns)");
        self.note_failures(&s, &result);
        self.note_failures("reference oauth/url", &base);
        self.note_failures("oauth/url with ELEMENTS_LOG=warn", &quiet);
        self.note_rounds(&s, &bases, &results);
        let r = self.row(&s, "requests/s", result.ok_rps(), "req/s");
        r.reference = Some((base.ok_rps(), "bare axum".into()));
        r.target = Target::RatioAtLeast(0.9);
        let r = self.row(&s, "p50 latency", result.p50_ms, "ms");
        r.reference = Some((base.p50_ms, "bare axum".into()));
        let r = self.row(&s, "p99 latency", result.p99_ms, "ms");
        r.reference = Some((base.p99_ms, "bare axum".into()));
        let r = self.row(&s, "server CPU per request", result.server_cpu_us, "µs");
        r.reference = Some((base.server_cpu_us, "bare axum".into()));
        let r = self.row(
            &s,
            "requests/s with ELEMENTS_LOG=warn (no per-request log line)",
            quiet.ok_rps(),
            "req/s",
        );
        r.reference = Some((base.ok_rps(), "bare axum".into()));
        let r = self.row(
            &s,
            "server CPU per request with ELEMENTS_LOG=warn",
            quiet.server_cpu_us,
            "µs",
        );
        r.reference = Some((base.server_cpu_us, "bare axum".into()));
        Ok(())
    }

    /// Notes every round's rate of both sides.
    fn note_rounds(&mut self, what: &str, reference: &[LoadResult], measured: &[LoadResult]) {
        let list = |v: &[LoadResult]| {
            v.iter()
                .map(|r| format!("{:.0}", r.ok_rps()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.notes.push(format!(
            "{what}: rounds (req/s) measured {} / reference {}; the best of each is in the table",
            list(measured),
            list(reference)
        ));
    }

    /// Server RSS idle and after the oauth/url load (measured during
    /// oauth-url if it ran; otherwise runs that load here).
    fn memory(&mut self) -> Res<()> {
        if self.memory.is_none() {
            let rows = self.rows.len();
            self.oauth_url()?;
            self.rows.truncate(rows);
        }
        let m = self.memory.ok_or("no memory figures")?;
        let s = "memory (real binary, /proc/PID/status)";
        let r = self.row(s, "VmRSS idle (1 s after start)", m.idle.rss_mb(), "MB");
        r.reference = Some((m.reference_idle.rss_mb(), "bare axum idle".into()));
        r.target = Target::AtMost(15.0);
        let r = self.row(s, "VmRSS at end of oauth/url load", m.loaded.rss_mb(), "MB");
        r.reference = Some((m.reference_loaded.rss_mb(), "bare axum, same load".into()));
        r.target = Target::AtMost(60.0);
        let r = self.row(
            s,
            "VmHWM (peak) during oauth/url load",
            m.loaded.hwm_mb(),
            "MB",
        );
        r.reference = Some((m.reference_loaded.hwm_mb(), "bare axum peak".into()));
        Ok(())
    }

    // ---- credentials -----------------------------------------------------

    fn provision(&self, server: &ServerProcess, body: &Value) -> Res<(i64, String)> {
        let request = Request::post_json("/elements/api-v2/instances", body)
            .header("Authorization", account_header(server)?);
        let created = self.expect(server.addr, &request, 200)?.json();
        let id = created["id"].as_i64().ok_or("POST /instances: no id")?;
        let token = created["token"]
            .as_str()
            .ok_or("POST /instances: no token")?
            .to_owned();
        Ok((id, token))
    }

    /// Credential reads of a fresh (not expiring) instance.
    fn credentials(&mut self) -> Res<()> {
        let connections = self.settings.connections;
        let dir = self.dir("credentials")?;
        let server = self.start_elements(&dir, None)?;
        let body = instance_body(
            "bench-access-token",
            "bench-refresh-token",
            "123456",
            31_536_000,
        );
        let (id, token) = self.provision(&server, &body)?;
        let request = credentials_request(id, &token);
        let answer = self.expect(server.addr, &request, 200)?.json();
        if answer["accessToken"] != "bench-access-token" {
            return Err(format!("credentials answered {answer}"));
        }

        let reference = procs::start_reference()?;
        self.expect(reference.addr, &request, 200)?;
        let (mut bases, mut results, mut base_ones, mut ones) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..self.settings.rounds {
            bases.push(self.load(&reference, &request, connections)?);
            results.push(self.load(&server, &request, connections)?);
            base_ones.push(self.load(&reference, &request, 1)?);
            ones.push(self.load(&server, &request, 1)?);
        }
        reference.stop();
        server.stop();
        let (base, result, base_one, one) =
            (best(&bases), best(&results), best(&base_ones), best(&ones));

        let s = format!("GET credentials (Element token, {connections} conns)");
        self.note_failures(&s, &result);
        self.note_rounds(&s, &bases, &results);
        let r = self.row(&s, "requests/s", result.ok_rps(), "req/s");
        r.reference = Some((base.ok_rps(), "bare axum".into()));
        r.target = Target::RatioAtLeast(0.5);
        let r = self.row(&s, "p50 latency", result.p50_ms, "ms");
        r.reference = Some((base.p50_ms, "bare axum".into()));
        let r = self.row(&s, "p99 latency", result.p99_ms, "ms");
        r.reference = Some((base.p99_ms, "bare axum".into()));
        r.target = Target::AtMost(2.0);
        let r = self.row(&s, "server CPU per request", result.server_cpu_us, "µs");
        r.reference = Some((base.server_cpu_us, "bare axum".into()));
        let s = "GET credentials (1 connection, no queueing)";
        self.note_failures(s, &one);
        let r = self.row(s, "requests/s", one.ok_rps(), "req/s");
        r.reference = Some((base_one.ok_rps(), "bare axum".into()));
        let r = self.row(s, "p99 latency", one.p99_ms, "ms");
        r.reference = Some((base_one.p99_ms, "bare axum".into()));
        Ok(())
    }

    // ---- POST /instances -------------------------------------------------

    /// Instances created per second by 64 concurrent clients, against the
    /// rate of one fsync per insert measured on the same file system.
    fn create(&mut self) -> Res<()> {
        let connections = self.settings.create_connections;
        let dir = self.dir("create")?;
        let server = self.start_elements(&dir, None)?;
        let base_dir = self.dir("fsync-baseline")?;
        let seconds = self.settings.seconds;
        let body = instance_body("bench-access-token", "bench-refresh-token", "123456", 1800);
        self.provision(&server, &body)?;
        let request = Request::post_json("/elements/api-v2/instances", &body)
            .header("Authorization", account_header(&server)?);
        // Alternating rounds: the shared disk's fsync rate drifts by several
        // times within a minute.
        let (mut baselines, mut results) = (Vec::new(), Vec::new());
        for round in 0..self.settings.rounds {
            let (inserts, took) = self.rt.block_on(one_fsync_per_insert(
                &base_dir.join(format!("round-{round}.db")),
                seconds,
            ))?;
            baselines.push(inserts as f64 / took);
            eprintln!(
                "bench:   one fsync per insert: {:.0}/s",
                inserts as f64 / took
            );
            results.push(self.load(&server, &request, connections)?);
        }
        server.stop();
        let rows_written = self
            .rt
            .block_on(count_instances(&dir.join("elements.db")))?;
        eprintln!("bench:   instances in the database: {rows_written}");
        let baseline = baselines.iter().copied().fold(0.0, f64::max);
        let result = best(&results);
        let (syncs, took) = fdatasync_loop(&base_dir.join("fdatasync.bin"), seconds.min(5))?;
        let fdatasync = syncs as f64 / took;

        let s = format!("POST /instances (SQLite, synchronous=FULL, {connections} clients)");
        self.note_failures(&s, &result);
        self.notes.push(format!(
            "{s}: {rows_written} instances in the database after the runs (incl. warm-ups); \
             rounds: server {} /s, one-fsync-per-insert baseline {} /s (best of each in the table)",
            results
                .iter()
                .map(|r| format!("{:.0}", r.ok_rps()))
                .collect::<Vec<_>>()
                .join(", "),
            baselines
                .iter()
                .map(|b| format!("{b:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let r = self.row(&s, "instances/s", result.ok_rps(), "/s");
        r.reference = Some((baseline, "1 fsync per insert, sqlx, WAL+FULL".into()));
        r.target = Target::RatioAtLeast(3.0);
        self.row(&s, "p50 latency", result.p50_ms, "ms");
        self.row(&s, "p99 latency", result.p99_ms, "ms");
        self.row(&s, "server CPU per instance", result.server_cpu_us, "µs");
        self.row(
            "disk (same file system)",
            "overwrite 4 KiB in place + fdatasync, sequential",
            fdatasync,
            "/s",
        );
        Ok(())
    }

    // ---- refresh storm ---------------------------------------------------

    /// 1,000 concurrent credential reads of one expired instance: exactly one
    /// provider refresh, no errors.
    fn refresh_storm(&mut self) -> Res<()> {
        let n = self.settings.storm;
        let dir = self.dir("refresh-storm")?;
        let fake = self.rt.block_on(FakeProvider::start());
        let config = dir.join("elements.toml");
        std::fs::write(
            &config,
            format!(
                "refresh_interval_seconds = 3600\n\n[elements.hubspot.oauth]\n\
                 authorization_url = \"{}\"\ntoken_url = \"{}\"\nrefresh_url = \"{}\"\n\
                 endpoints = {{ current_authorization_url = \"{}\" }}\n",
                fake.legacy_authenticate_url(),
                fake.token_url(),
                fake.legacy_refresh_url(),
                fake.authorize_url()
            ),
        )
        .map_err(err("config file"))?;
        let data = dir.join("data");
        let server = self.start_elements(&data, Some(&config))?;
        let (access, refresh) = fake.issue_tokens("test-client");
        let (id, token) = self.provision(
            &server,
            &instance_body(&access, &refresh, "test-secret", 1800),
        )?;
        let request = credentials_request(id, &token);
        let before = self.expect(server.addr, &request, 200)?.json();
        if before["accessToken"] != access.as_str() || fake.refresh_calls() != 0 {
            return Err(format!("unexpected first answer {before}"));
        }

        // Expire the stored access token through the store, from this
        // process, as tests/tokens.rs does in-process: the SQLite refresh
        // lease excludes the server's refreshers meanwhile.
        let key = std::fs::read_to_string(data.join("master.key")).map_err(err("master.key"))?;
        let keyring = Keyring::parse(key.trim()).map_err(err("master.key"))?;
        let url = format!("sqlite://{}", data.join("elements.db").display());
        self.rt.block_on(async {
            let store = elements_store::connect(&url, keyring)
                .await
                .map_err(err("opening the server's database"))?;
            expire(store.as_ref(), id).await
        })?;

        let bytes = Arc::new(request.to_bytes(server.addr));
        let stormy = self.rt.block_on(run_storm(server.addr, bytes.clone(), n))?;
        let refreshes = fake.refresh_calls();
        // The same storm again, now that the token is fresh: the reference.
        let calm = self.rt.block_on(run_storm(server.addr, bytes, n))?;
        server.stop();
        self.rt.block_on(fake.shutdown());

        let new_tokens: std::collections::BTreeSet<&str> =
            stormy.answers.iter().filter_map(|t| t.as_deref()).collect();
        let errors = stormy.errors + stormy.answers.iter().filter(|t| t.is_none()).count() as u64;
        if new_tokens.len() > 1 {
            self.notes.push(format!(
                "refresh storm: callers got {} different access tokens",
                new_tokens.len()
            ));
        }
        if new_tokens.contains(access.as_str()) {
            self.notes
                .push("refresh storm: some callers got the expired token".into());
        }
        eprintln!(
            "bench:   storm: {} answered in {:.1} ms, {} refreshes, {} errors; calm: {:.1} ms",
            n,
            ms(stormy.took),
            refreshes,
            errors,
            ms(calm.took)
        );
        let s = format!("refresh storm ({n} concurrent reads, 1 expired instance)");
        let r = self.row(&s, "provider refreshes", refreshes as f64, "");
        r.target = Target::Exactly(1.0);
        let r = self.row(&s, "errors (non-200 or no answer)", errors as f64, "");
        r.target = Target::Exactly(0.0);
        let r = self.row(&s, "time until all answered", ms(stormy.took), "ms");
        r.reference = Some((ms(calm.took), "same storm, token fresh".into()));
        Ok(())
    }

    // ---- catalog ---------------------------------------------------------

    /// 1,000 generated TOML elements: registry load time and a cold
    /// `elements list` process.
    fn catalog(&mut self) -> Res<()> {
        let runs = self.settings.runs.max(1);
        let dir = self.dir("catalog")?;
        let count = 1000;
        write_catalog(&dir, count)?;
        let builtin = elements_catalog::builtin()
            .map_err(|e| format!("built-in catalog: {e}"))?
            .len();

        let dirs = vec![dir.clone()];
        let mut with_dir = Vec::new();
        let mut without = Vec::new();
        let mut reading = Vec::new();
        for i in 0..=runs {
            let t = Instant::now();
            let files = elements_catalog::read_dir(&dir).map_err(|e| format!("catalog: {e}"))?;
            let took_reading = t.elapsed();
            drop(files);
            let t = Instant::now();
            let registry =
                elements_catalog::load(&dirs, []).map_err(|e| format!("catalog: {e}"))?;
            let took = t.elapsed();
            if registry.len() != builtin + count {
                return Err(format!(
                    "loaded {} elements, expected {}",
                    registry.len(),
                    builtin + count
                ));
            }
            drop(registry);
            let t = Instant::now();
            let registry = elements_catalog::builtin().map_err(|e| format!("catalog: {e}"))?;
            let took_builtin = t.elapsed();
            drop(registry);
            if i > 0 {
                with_dir.push(ms(took));
                without.push(ms(took_builtin));
                reading.push(ms(took_reading));
            }
        }

        let binary = &self.settings.binary;
        let list = |dir: Option<&Path>| {
            let mut c = Command::new(binary);
            c.arg("list");
            if let Some(dir) = dir {
                c.arg("--elements-dir").arg(dir);
            }
            c.env_remove("ELEMENTS_ELEMENTS_DIR");
            c
        };
        let out = list(Some(&dir)).output().map_err(err("elements list"))?;
        let lines = String::from_utf8_lossy(&out.stdout).lines().count();
        if !out.status.success() || lines != builtin + count + 1 {
            return Err(format!(
                "elements list --elements-dir printed {lines} lines (expected {}): {}",
                builtin + count + 1,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let time = |mut command: Command| -> Res<f64> {
            command.stdout(Stdio::null()).stderr(Stdio::null());
            let t = Instant::now();
            let status = command.status().map_err(err("spawn"))?;
            let took = ms(t.elapsed());
            if !status.success() {
                return Err(format!("{command:?} failed: {status}"));
            }
            Ok(took)
        };
        let mut cold = Vec::new();
        let mut cold_builtin = Vec::new();
        let mut spawn = Vec::new();
        for i in 0..runs + 2 {
            let a = time(list(Some(&dir)))?;
            let b = time(list(None))?;
            let c = time(Command::new("true"))?;
            if i >= 2 {
                cold.push(a);
                cold_builtin.push(b);
                spawn.push(c);
            }
        }
        let s = format!("catalog ({count} generated TOML elements + {builtin} built-in)");
        let r = self.row(
            &s,
            &format!("registry load, in-process (median of {runs})"),
            median(with_dir),
            "ms",
        );
        r.reference = Some((median(without), "built-in catalog only".into()));
        r.target = Target::AtMost(50.0);
        self.row(
            &s,
            &format!("of which reading the {count} files (`read_dir`, median of {runs})"),
            median(reading),
            "ms",
        );
        let r = self.row(
            &s,
            &format!("`elements list --elements-dir`, new process (median of {runs})"),
            median(cold),
            "ms",
        );
        r.reference = Some((
            median(cold_builtin),
            "`elements list`, built-in only".into(),
        ));
        r.target = Target::AtMost(30.0);
        self.row(
            &s,
            "spawn + wait of `true` (process floor)",
            median(spawn),
            "ms",
        );
        Ok(())
    }

    /// Prints the table and the notes.
    pub fn print(&self) -> String {
        let mut out = crate::report::markdown(&self.rows);
        for note in &self.notes {
            out.push_str(&format!("\n- {note}"));
        }
        out
    }
}

async fn count_instances(db: &Path) -> Res<i64> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions as _, Row as _};
    let options = SqliteConnectOptions::new().filename(db).read_only(true);
    let mut conn = options
        .connect()
        .await
        .map_err(err("opening the database"))?;
    let row = sqlx::query("SELECT count(*) FROM instances")
        .fetch_one(&mut conn)
        .await
        .map_err(err("counting instances"))?;
    row.try_get::<i64, _>(0).map_err(err("counting instances"))
}

/// Single-row transactions in a SQLite file with WAL and synchronous=FULL,
/// one after another, for `seconds`: (inserts, seconds taken).
async fn one_fsync_per_insert(db: &Path, seconds: u64) -> Res<(u64, f64)> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    use sqlx::ConnectOptions as _;
    let options = SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full);
    let mut conn = options.connect().await.map_err(err("baseline database"))?;
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        .execute(&mut conn)
        .await
        .map_err(err("baseline table"))?;
    // About the size of an instance row (encrypted configuration and tokens).
    let payload = vec![0x5au8; 1024];
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds.max(1));
    let mut n = 0u64;
    while Instant::now() < deadline {
        sqlx::query("INSERT INTO t (v) VALUES (?)")
            .bind(&payload[..])
            .execute(&mut conn)
            .await
            .map_err(err("baseline insert"))?;
        n += 1;
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

/// Overwrites one of 256 4 KiB blocks in place and fdatasyncs, in a loop,
/// for `seconds` (what a commit to a WAL that has wrapped costs at least).
fn fdatasync_loop(path: &Path, seconds: u64) -> Res<(u64, f64)> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::create(path).map_err(err("fdatasync file"))?;
    let block = vec![0xa5u8; 4096];
    for i in 0..256u64 {
        file.write_all_at(&block, i * 4096).map_err(err("write"))?;
    }
    file.sync_all().map_err(err("fsync"))?;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds.max(1));
    let mut n = 0u64;
    while Instant::now() < deadline {
        file.write_all_at(&block, (n % 256) * 4096)
            .map_err(err("write"))?;
        file.sync_data().map_err(err("fdatasync"))?;
        n += 1;
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

async fn expire(store: &dyn Store, id: i64) -> Res<()> {
    let job: RefreshJob<'_> = Box::new(|current| {
        Box::pin(async move {
            RefreshDecision::Update(Tokens {
                expires_at: Some(elements_store::now_millis() / 1000 - 10),
                ..current.tokens
            })
        })
    });
    store
        .refresh_locked(id, 60, job)
        .await
        .map_err(err("expiring the instance"))?
        .ok_or("the instance is gone")?;
    Ok(())
}

struct Storm {
    /// The access token each caller got (None: not a 200 with one).
    answers: Vec<Option<String>>,
    /// Connections or requests that failed outright.
    errors: u64,
    /// From the release of all callers to the last answer.
    took: Duration,
}

/// `n` callers, each on its own connection, connected first, then released
/// together; bounded by 60 s.
async fn run_storm(addr: SocketAddr, bytes: Arc<Vec<u8>>, n: usize) -> Res<Storm> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n + 1));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let barrier = barrier.clone();
        let bytes = bytes.clone();
        tasks.push(tokio::spawn(async move {
            let conn = tokio::time::timeout(Duration::from_secs(30), Conn::connect(addr)).await;
            barrier.wait().await;
            let mut conn = match conn {
                Ok(Ok(c)) => c,
                _ => return (None, Instant::now()),
            };
            let answer = match tokio::time::timeout(Duration::from_secs(60), conn.send(&bytes))
                .await
            {
                Ok(Ok(r)) if r.status == 200 => r.json()["accessToken"].as_str().map(str::to_owned),
                _ => None,
            };
            (answer, Instant::now())
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut answers = Vec::with_capacity(n);
    let mut last = start;
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok((answer, at)) => {
                last = last.max(at);
                answers.push(answer);
            }
            Err(_) => errors += 1,
        }
    }
    Ok(Storm {
        answers,
        errors,
        took: last - start,
    })
}

/// Writes `count` standard OAuth 2.0 elements (ids 900001.., keys
/// `bench-0001`..) into `dir`, each like a real catalog file.
pub fn write_catalog(dir: &Path, count: usize) -> Res<()> {
    for i in 1..=count {
        std::fs::write(dir.join(format!("bench-{i:04}.toml")), element_toml(i))
            .map_err(err("writing the generated catalog"))?;
    }
    Ok(())
}

/// The `i`th generated element: standard OAuth 2.0, four configuration
/// entries, about the size of a real catalog file.
pub fn element_toml(i: usize) -> String {
    format!(
        r#"# Generated by elements-bench.
id = {id}
key = "bench-{i:04}"
name = "Bench {i}"
description = "A generated element for the catalog-scale benchmark, number {i}."
image = "elements/provider_bench_{i}.png"
hub = "general"
authentication = "oauth2"
existing_account_description = "Give your application access to your existing Bench {i} account"
config_description = "If you do not have a Bench {i} account, you can create one at Bench Signup"

[oauth]
authorization_url = "https://bench{i}.example.com/oauth/authorize"
token_url = "https://bench{i}.example.com/oauth/token"
scope_separator = " "
client_auth = "body"
default_scope = "read"

[[configuration]]
key = "oauth.api.key"
name = "Client ID"
description = "The Client ID of your Bench {i} app"

[[configuration]]
key = "oauth.api.secret"
name = "Client Secret"
description = "The Client Secret of your Bench {i} app"
secret = true

[[configuration]]
key = "oauth.callback.url"
name = "Callback URL"
description = "The redirect URI registered with your Bench {i} app"

[[configuration]]
key = "oauth.scope"
name = "Scope"
required = false
default_value = "read"
description = "Space-separated scopes"
"#,
        id = 900_000 + i
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_name_and_the_generated_catalog_is_valid() {
        assert_eq!(SCENARIOS.len(), 6);
        let dir = tempfile::tempdir().unwrap();
        write_catalog(dir.path(), 3).unwrap();
        let registry = elements_catalog::load(&[dir.path().to_path_buf()], []).unwrap();
        assert!(registry.get("bench-0003").is_some());
    }

    #[test]
    fn median_is_the_middle() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
    }
}
