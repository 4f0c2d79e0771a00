//! Closed-loop HTTP load: `wrk` when it is installed (or installable), else
//! the in-process generator over [`crate::http::Conn`]. Every run is bounded
//! by its duration.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{Conn, Request};

/// Which load generator runs the load.
#[derive(Debug, Clone)]
pub enum LoadGen {
    /// `wrk` at this path.
    Wrk(PathBuf),
    /// The in-process generator.
    Builtin,
}

impl LoadGen {
    /// A name for reports.
    pub fn describe(&self) -> String {
        match self {
            LoadGen::Wrk(path) => {
                let version = Command::new(path)
                    .arg("-v")
                    .output()
                    .ok()
                    .map(|o| {
                        let text = String::from_utf8_lossy(&o.stdout).into_owned()
                            + &String::from_utf8_lossy(&o.stderr);
                        let first = text.lines().next().unwrap_or("");
                        first
                            .split(" Copyright")
                            .next()
                            .unwrap_or("")
                            .trim()
                            .to_owned()
                    })
                    .unwrap_or_default();
                if version.is_empty() {
                    format!("wrk ({})", path.display())
                } else {
                    version
                }
            }
            LoadGen::Builtin => "in-process generator (tokio, keep-alive HTTP/1.1)".into(),
        }
    }
}

/// Finds `wrk`, installing it with apt-get if it is missing and we are root.
/// Falls back to the in-process generator, saying why.
pub fn ensure_wrk() -> LoadGen {
    if let Some(path) = which("wrk") {
        return LoadGen::Wrk(path);
    }
    eprintln!("bench: wrk is missing; trying `apt-get install -y wrk`");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .is_ok_and(|s| s.success())
    };
    let installed = install()
        || (Command::new("apt-get")
            .arg("update")
            .stdout(Stdio::from(std::io::stderr()))
            .status()
            .is_ok_and(|s| s.success())
            && install());
    match (installed, which("wrk")) {
        (true, Some(path)) => LoadGen::Wrk(path),
        _ => {
            eprintln!("bench: could not install wrk; using the in-process load generator");
            LoadGen::Builtin
        }
    }
}

/// The first executable named `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The server.
    pub addr: SocketAddr,
    /// The request, repeated.
    pub request: Request,
    /// Concurrent connections.
    pub connections: usize,
    /// Generator threads.
    pub threads: usize,
    /// How long.
    pub duration: Duration,
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Completed requests (any status).
    pub requests: u64,
    /// Responses that were not 2xx or 3xx.
    pub non_2xx: u64,
    /// Socket errors and timeouts.
    pub errors: u64,
    /// Wall time of the run.
    pub seconds: f64,
    /// Requests per second (any status).
    pub rps: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// CPU time of the server process per request, µs (0 if not measured).
    pub server_cpu_us: f64,
}

impl LoadResult {
    /// Successful (2xx/3xx) requests per second.
    pub fn ok_rps(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests.saturating_sub(self.non_2xx) as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Non-2xx responses plus socket errors.
    pub fn failures(&self) -> u64 {
        self.non_2xx + self.errors
    }
}

/// Runs the load and returns what it measured.
pub fn run(generator: &LoadGen, spec: &LoadSpec, scratch: &Path) -> Result<LoadResult, String> {
    match generator {
        LoadGen::Wrk(path) => run_wrk(path, spec, scratch),
        LoadGen::Builtin => run_builtin(spec),
    }
}

/// Escapes `text` as a Lua long-bracket string.
fn lua_string(text: &str) -> String {
    let mut level = 0;
    loop {
        let eq = "=".repeat(level);
        let close = format!("]{eq}]");
        if !text.contains(&close) {
            return format!("[{eq}[{text}]{eq}]");
        }
        level += 1;
    }
}

fn run_wrk(wrk: &Path, spec: &LoadSpec, scratch: &Path) -> Result<LoadResult, String> {
    let request = &spec.request;
    let mut script = format!("wrk.method = {}\n", lua_string(&request.method));
    if !request.body.is_empty() {
        let body = String::from_utf8(request.body.clone()).map_err(|_| "a non-UTF-8 body")?;
        script.push_str(&format!("wrk.body = {}\n", lua_string(&body)));
    }
    for (name, value) in &request.headers {
        script.push_str(&format!(
            "wrk.headers[ {} ] = {}\n",
            lua_string(name),
            lua_string(value)
        ));
    }
    let script_path = scratch.join("wrk-request.lua");
    std::fs::File::create(&script_path)
        .and_then(|mut f| f.write_all(script.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", script_path.display()))?;
    let threads = spec.threads.clamp(1, spec.connections.max(1));
    let seconds = spec.duration.as_secs().max(1);
    let url = format!("http://{}{}", spec.addr, request.path);
    let output = Command::new(wrk)
        .arg(format!("-t{threads}"))
        .arg(format!("-c{}", spec.connections))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "--timeout", "10s", "-s"])
        .arg(&script_path)
        .arg(&url)
        .output()
        .map_err(|e| format!("running wrk: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    parse_wrk(&text).ok_or_else(|| format!("cannot parse wrk's output:\n{text}"))
}

/// `374.00us`, `1.23ms`, `2.00s`, `1.00m` in milliseconds.
fn wrk_duration_ms(text: &str) -> Option<f64> {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        return None;
    };
    number.trim().parse::<f64>().ok().map(|n| n * factor)
}

/// Parses `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Option<LoadResult> {
    let mut result = LoadResult::default();
    let mut have_rps = false;
    let mut have_count = false;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            result.rps = rest.trim().parse().ok()?;
            have_rps = true;
        } else if let Some(rest) = line.strip_prefix("50%") {
            result.p50_ms = wrk_duration_ms(rest)?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            result.p99_ms = wrk_duration_ms(rest)?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            result.non_2xx = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // connect 0, read 0, write 0, timeout 0
            result.errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if line.contains(" requests in ") {
            // 123456 requests in 10.00s, 45.67MB read
            let mut words = line.split_whitespace();
            result.requests = words.next()?.parse().ok()?;
            let took = line.split(" requests in ").nth(1)?.split(',').next()?;
            result.seconds = wrk_duration_ms(took)? / 1000.0;
            have_count = true;
        }
    }
    (have_rps && have_count).then_some(result)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[derive(Default)]
struct TaskTally {
    latencies_us: Vec<u32>,
    non_2xx: u64,
    errors: u64,
}

fn run_builtin(spec: &LoadSpec) -> Result<LoadResult, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(spec.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("load runtime: {e}"))?;
    let bytes = std::sync::Arc::new(spec.request.to_bytes(spec.addr));
    let addr = spec.addr;
    let duration = spec.duration;
    let connections = spec.connections.max(1);
    let (tallies, seconds) = runtime.block_on(async move {
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = Vec::with_capacity(connections);
        for _ in 0..connections {
            let bytes = bytes.clone();
            tasks.push(tokio::spawn(async move {
                let mut tally = TaskTally::default();
                let mut conn: Option<Conn> = None;
                while Instant::now() < deadline {
                    if conn.is_none() {
                        match Conn::connect(addr).await {
                            Ok(c) => conn = Some(c),
                            Err(_) => {
                                tally.errors += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        }
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let sent = Instant::now();
                    match tokio::time::timeout(Duration::from_secs(10), c.send(&bytes)).await {
                        Ok(Ok(response)) => {
                            let us = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                            tally.latencies_us.push(us);
                            if !(200..400).contains(&response.status) {
                                tally.non_2xx += 1;
                            }
                        }
                        _ => {
                            tally.errors += 1;
                            conn = None;
                        }
                    }
                }
                tally
            }));
        }
        let mut tallies = Vec::with_capacity(connections);
        for task in tasks {
            tallies.push(task.await.unwrap_or_default());
        }
        (tallies, start.elapsed().as_secs_f64())
    });
    let mut latencies: Vec<u32> = Vec::new();
    let mut result = LoadResult {
        seconds,
        ..Default::default()
    };
    for tally in tallies {
        latencies.extend(tally.latencies_us);
        result.non_2xx += tally.non_2xx;
        result.errors += tally.errors;
    }
    latencies.sort_unstable();
    result.requests = latencies.len() as u64;
    result.rps = result.requests as f64 / seconds.max(1e-9);
    result.p50_ms = percentile(&latencies, 50.0);
    result.p99_ms = percentile(&latencies, 99.0);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:4000/x
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.31us  400.12us  12.00ms   90.00%
    Req/Sec    26.12k     1.10k   28.00k    70.00%
  Latency Distribution
     50%  540.00us
     75%  700.00us
     90%  900.00us
     99%    1.98ms
  520000 requests in 10.00s, 150.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  51999.50
Transfer/sec:     15.00MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 520000);
        assert!((r.seconds - 10.0).abs() < 1e-9);
        assert!((r.rps - 51999.5).abs() < 1e-9);
        assert!((r.p50_ms - 0.54).abs() < 1e-9);
        assert!((r.p99_ms - 1.98).abs() < 1e-9);
        assert_eq!((r.non_2xx, r.errors), (7, 3));
    }

    #[test]
    fn lua_strings_are_closed_safely() {
        assert_eq!(lua_string("a"), "[[a]]");
        assert_eq!(lua_string("x]]y"), "[=[x]]y]=]");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
    }
}
