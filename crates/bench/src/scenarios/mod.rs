//! The scenarios. Each one starts what it needs (the real `elements serve`
//! binary over a fresh data directory, the reference server, the fake
//! provider), measures, stops everything and adds rows to the table.
//!
//! One module per scenario: [`oauth_url`] (oauth-url, memory),
//! [`instances`] (credentials, create), [`refresh_storm`], [`catalog`]; the
//! harness's view of the machine's load is in [`machine`].

mod catalog;
mod instances;
mod machine;
mod million;
mod oauth_url;
mod pg_credentials;
mod proxy;
mod refresh_storm;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http::{self, Request};
use crate::load::{self, LoadGen, LoadResult, LoadSpec};
use crate::procs::{ElementsServe, Memory, ServerProcess};
use crate::reference::{OAUTH_URL_PATH, SEED_OAUTH_QUERY};
use crate::report::{Row, Target};

pub use catalog::{element_toml, write_catalog};
pub use machine::machine_busy;
use machine::{proc_times, wait_for_quiet, CpuSample};

/// Every scenario name, in the order `all` runs them.
pub const SCENARIOS: &[&str] = &[
    "oauth-url",
    "memory",
    "credentials",
    "create",
    "refresh-storm",
    "catalog",
    "proxy",
];

/// cache (issue 19): scenarios run only when named (not by `all`):
/// `million` takes 2-3 minutes, `pg-credentials` needs PostgreSQL.
pub const OPT_IN_SCENARIOS: &[&str] = &["million", "pg-credentials"];

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
            "proxy" => self.proxy(),
            "million" => self.million(),
            "pg-credentials" => self.pg_credentials(),
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

    /// Notes every round's rate of both sides.
    fn note_rounds(&mut self, what: &str, reference: &[LoadResult], measured: &[LoadResult]) {
        let list = |v: &[LoadResult]| {
            v.iter()
                .map(|r| format!("{:.0}", r.ok_rps()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Some figures are bimodal (a fast scheduling regime now and then,
        // BENCHMARKS.md): the medians say what a typical round gives.
        let median_of = |v: &[LoadResult]| {
            crate::report::median(&v.iter().map(LoadResult::ok_rps).collect::<Vec<_>>())
        };
        let (m, r) = (median_of(measured), median_of(reference));
        let medians = if r > 0.0 {
            format!("; medians {m:.0} / {r:.0} = {:.2}x", m / r)
        } else {
            String::new()
        };
        self.notes.push(format!(
            "{what}: rounds (req/s) measured {} / reference {}; the best of each is in the table{medians}",
            list(measured),
            list(reference)
        ));
    }

    /// Creates an instance from `body`: (its id, its token).
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

    /// Prints the table and the notes.
    pub fn print(&self) -> String {
        let mut out = crate::report::markdown(&self.rows);
        for note in &self.notes {
            out.push_str(&format!("\n- {note}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_has_a_name_and_the_generated_catalog_is_valid() {
        assert_eq!(SCENARIOS.len(), 7);
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
