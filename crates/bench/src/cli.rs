//! The command line:
//!
//! ```text
//! elements-bench [all | SCENARIO ...] [--seconds N] [--connections N]
//!                [--create-connections N] [--threads N] [--runs N] [--rounds N]
//!                [--storm N]
//!                [--loadgen wrk|builtin] [--binary PATH] [--no-build]
//!                [--tmp-dir DIR]
//! ```
//!
//! Scenarios: `oauth-url`, `memory`, `credentials`, `create`,
//! `refresh-storm`, `catalog`. `reference-server` (internal) runs the
//! reference server, `reference-forwarder UPSTREAM` (internal) the proxy
//! bench's bare forwarder.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use crate::load::{self, LoadGen};
use crate::scenarios::{Bench, Settings, OPT_IN_SCENARIOS, SCENARIOS};

const USAGE: &str = "usage: elements-bench [all | SCENARIO ...] [--seconds N] [--connections N]
       [--create-connections N] [--threads N] [--runs N] [--rounds N] [--storm N]
       [--loadgen wrk|builtin] [--binary PATH] [--no-build] [--tmp-dir DIR]

scenarios: oauth-url, memory, credentials, create, refresh-storm, catalog, proxy (all: every one)
           million, pg-credentials (only when named)
defaults:  --seconds 10 --connections 32 --create-connections 64 --threads 2
           --runs 21 --rounds 2 --storm 1000, wrk (installed with apt-get if missing,
           else the in-process generator), the binary target/release/elements
           built first with `cargo build --release -p elements`";

struct Args {
    scenarios: Vec<String>,
    seconds: u64,
    connections: usize,
    create_connections: usize,
    threads: usize,
    runs: usize,
    rounds: usize,
    storm: usize,
    loadgen: Option<String>,
    binary: Option<PathBuf>,
    build: bool,
    tmp_dir: Option<PathBuf>,
}

fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        scenarios: Vec::new(),
        seconds: 10,
        connections: 32,
        create_connections: 64,
        threads: 2,
        runs: 21,
        rounds: 2,
        storm: 1000,
        loadgen: None,
        binary: None,
        build: true,
        tmp_dir: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{what} needs a value"))
        };
        fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String> {
            v.parse().map_err(|_| format!("{name}: not a number: {v}"))
        }
        match name.as_str() {
            "--seconds" => out.seconds = number::<u64>(&name, value(&name)?)?.clamp(1, 600),
            "--connections" => out.connections = number::<usize>(&name, value(&name)?)?.max(1),
            "--create-connections" => {
                out.create_connections = number::<usize>(&name, value(&name)?)?.max(1)
            }
            "--threads" => out.threads = number::<usize>(&name, value(&name)?)?.max(1),
            "--runs" => out.runs = number::<usize>(&name, value(&name)?)?.max(1),
            "--rounds" => out.rounds = number::<usize>(&name, value(&name)?)?.clamp(1, 20),
            "--storm" => out.storm = number::<usize>(&name, value(&name)?)?.clamp(1, 10_000),
            "--loadgen" => out.loadgen = Some(value(&name)?),
            "--binary" => out.binary = Some(PathBuf::from(value(&name)?)),
            "--tmp-dir" => out.tmp_dir = Some(PathBuf::from(value(&name)?)),
            "--no-build" => out.build = false,
            "-h" | "--help" => return Err(USAGE.into()),
            "all" => out
                .scenarios
                .extend(SCENARIOS.iter().map(|s| s.to_string())),
            s if SCENARIOS.contains(&s) || OPT_IN_SCENARIOS.contains(&s) => {
                out.scenarios.push(s.to_owned())
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    if out.scenarios.is_empty() {
        return Err(format!("name a scenario or `all`\n{USAGE}"));
    }
    Ok(out)
}

/// The workspace root (this crate is `crates/bench`).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `target/release/elements` (cargo decides whether anything changed).
fn build_elements() -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p elements --bin elements");
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "elements", "--bin", "elements"])
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("running cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo build failed: {status}"))
    }
}

/// The file system type of the mount holding `path`.
fn filesystem_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let device = f.next()?;
            let point = f.next()?;
            let kind = f.next()?;
            path.starts_with(point).then(|| {
                (
                    point.len(),
                    format!("{kind} on {device}, mounted at {point}"),
                )
            })
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, d)| d)
}

/// The commit the binary was built from, `-dirty` if the tree has changes.
fn source_version() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// What machine this is.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {:.1} GiB RAM, Linux {}",
        mem_kib as f64 / (1024.0 * 1024.0),
        kernel.trim()
    )
}

/// Runs the command line; the exit code is non-zero if a scenario could not
/// run (a missed target is a result, not a failure).
pub fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("reference-server") {
        return match crate::reference::serve() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reference server: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if argv.first().map(String::as_str) == Some("reference-forwarder") {
        let Some(upstream) = argv.get(1) else {
            eprintln!("usage: elements-bench reference-forwarder http://HOST:PORT");
            return ExitCode::from(2);
        };
        return match crate::reference::serve_forwarder(upstream) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reference forwarder: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse(argv) {
        Ok(a) => a,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<bool, String> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => {
            if args.build {
                build_elements()?;
            }
            crate::procs::default_elements_binary()
        }
    };
    if !binary.is_file() {
        return Err(format!("no elements binary at {}", binary.display()));
    }
    let loadgen = match args.loadgen.as_deref() {
        None | Some("wrk") => load::ensure_wrk(),
        Some("builtin") => LoadGen::Builtin,
        Some(other) => return Err(format!("--loadgen: expected wrk or builtin, got {other}")),
    };
    let tmp_root = args.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let header = format!(
        "machine:   {} (load average at start: {})\nbinary:    {} (source {})\nload:      {} ({} threads; {} s per run after a 1 s warm-up; {} alternating rounds, best of each side)\ntemp dir:  {} ({})\ncommand:   elements-bench {}",
        machine(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        binary.display(),
        source_version(),
        loadgen.describe(),
        args.threads,
        args.seconds,
        args.rounds,
        tmp_root.display(),
        filesystem_of(&tmp_root),
        std::env::args().skip(1).collect::<Vec<_>>().join(" "),
    );
    eprintln!("{header}");
    let mut bench = Bench::new(Settings {
        binary,
        loadgen,
        seconds: args.seconds,
        connections: args.connections,
        create_connections: args.create_connections,
        threads: args.threads,
        runs: args.runs,
        rounds: args.rounds,
        storm: args.storm,
        tmp_root,
    })?;
    let mut all_ran = true;
    let mut seen = std::collections::BTreeSet::new();
    for scenario in &args.scenarios {
        if !seen.insert(scenario.clone()) {
            continue;
        }
        if let Err(e) = bench.run(scenario) {
            eprintln!("bench: scenario {scenario} failed: {e}");
            bench
                .notes
                .push(format!("scenario {scenario} could not run: {e}"));
            all_ran = false;
        }
    }
    let table = bench.print();
    println!("\n{header}\n\n{table}");
    if let Some(target) = crate::procs::default_elements_binary()
        .parent()
        .and_then(Path::parent)
    {
        let path = target.join("elements-bench-last.md");
        if std::fs::write(&path, format!("{header}\n\n{table}\n")).is_ok() {
            eprintln!("bench: table written to {}", path.display());
        }
    }
    Ok(all_ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_parse() {
        let a = parse(["all", "--seconds", "3", "--loadgen=builtin"].map(String::from)).unwrap();
        assert_eq!(a.scenarios.len(), SCENARIOS.len());
        assert_eq!(a.seconds, 3);
        assert_eq!(a.loadgen.as_deref(), Some("builtin"));
        assert!(parse(["nope"].map(String::from)).is_err());
        assert!(parse(Vec::<String>::new()).is_err());
    }
}
