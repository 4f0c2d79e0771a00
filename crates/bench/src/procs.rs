//! Servers as child processes: the real `elements serve` binary and the
//! reference server (this binary, `reference-server`). Both print
//! `listening on http://ADDR` on standard output.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server process, killed on drop.
pub struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The `{"firstAccount": ...}` line, if it printed one.
    pub first_account: Option<serde_json::Value>,
    /// What it is, for messages.
    pub name: String,
}

impl ServerProcess {
    /// Starts `command` and waits (at most 60 s) for its `listening on` line.
    pub fn start(mut command: Command, name: &str) -> Result<ServerProcess, String> {
        command.stdin(Stdio::null()).stdout(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("starting {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Nobody listens any more: keep draining the pipe.
                    continue;
                }
            }
        });
        let mut first_account = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let status = child.wait().ok();
                    return Err(format!(
                        "{name} did not print `listening on http://ADDR` (exit: {status:?})"
                    ));
                }
            };
            if line.starts_with("{\"firstAccount\"") {
                first_account = serde_json::from_str(&line).ok();
            } else if let Some(addr) = line.strip_prefix("listening on http://") {
                let addr: SocketAddr = addr
                    .trim()
                    .parse()
                    .map_err(|_| format!("{name}: bad address in {line:?}"))?;
                return Ok(ServerProcess {
                    child,
                    addr,
                    first_account,
                    name: name.to_owned(),
                });
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory now.
    pub fn memory(&self) -> Result<Memory, String> {
        Memory::of(self.pid())
    }

    /// Stops it (SIGKILL: nothing of it is measured after this).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `VmRSS` and `VmHWM` of a process, from `/proc/PID/status`.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// Resident set size now, KiB.
    pub rss_kib: u64,
    /// Peak resident set size, KiB.
    pub hwm_kib: u64,
}

impl Memory {
    /// Reads the memory of process `pid`.
    pub fn of(pid: u32) -> Result<Memory, String> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
                .ok_or_else(|| format!("{path}: no {name}"))
        };
        Ok(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    /// RSS in MB (10^6 bytes).
    pub fn rss_mb(&self) -> f64 {
        self.rss_kib as f64 * 1024.0 / 1e6
    }

    /// Peak RSS in MB (10^6 bytes).
    pub fn hwm_mb(&self) -> f64 {
        self.hwm_kib as f64 * 1024.0 / 1e6
    }
}

/// How to start `elements serve`.
pub struct ElementsServe<'a> {
    /// The binary.
    pub binary: &'a Path,
    /// `--data-dir`.
    pub data_dir: &'a Path,
    /// `--config`, if any.
    pub config: Option<&'a Path>,
    /// `ELEMENTS_LOG`, if not the default.
    pub log_level: Option<&'a str>,
}

impl ElementsServe<'_> {
    /// Starts it; its log goes to `<data dir>/server.log`.
    pub fn start(&self) -> Result<ServerProcess, String> {
        std::fs::create_dir_all(self.data_dir)
            .map_err(|e| format!("{}: {e}", self.data_dir.display()))?;
        let log = std::fs::File::create(self.data_dir.join("server.log"))
            .map_err(|e| format!("server log: {e}"))?;
        let mut command = Command::new(self.binary);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ELEMENTS_") {
                command.env_remove(key);
            }
        }
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(self.data_dir)
            .args(["--listen", "127.0.0.1:0"])
            // health: no `[verify]` requests to real providers from benchmarks.
            .env("ELEMENTS_VERIFY_ON_CREATE", "false")
            .stderr(Stdio::from(log));
        if let Some(config) = self.config {
            command.arg("--config").arg(config);
        }
        if let Some(level) = self.log_level {
            command.env("ELEMENTS_LOG", level);
        }
        ServerProcess::start(command, "elements serve")
    }
}

/// Starts the reference server: this very binary, `reference-server`.
pub fn start_reference() -> Result<ServerProcess, String> {
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut command = Command::new(me);
    command.arg("reference-server").stderr(Stdio::inherit());
    ServerProcess::start(command, "reference server")
}

/// Starts the reference forwarder to `upstream` (`http://host:port`): this
/// very binary, `reference-forwarder`.
pub fn start_forwarder(upstream: &str) -> Result<ServerProcess, String> {
    let me = std::env::current_exe().map_err(|e| format!("current exe: {e}"))?;
    let mut command = Command::new(me);
    command
        .arg("reference-forwarder")
        .arg(upstream)
        .stderr(Stdio::inherit());
    ServerProcess::start(command, "reference forwarder")
}

/// The `elements` binary next to this one (both in `target/release`).
pub fn default_elements_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("elements")))
        .unwrap_or_else(|| PathBuf::from("target/release/elements"))
}
