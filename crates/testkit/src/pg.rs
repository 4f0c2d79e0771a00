//! A throwaway PostgreSQL cluster, made with the machine's own binaries.
//!
//! [`PgCluster::start`] runs `initdb` in a fresh temporary directory and
//! starts a server listening on a free port of 127.0.0.1 (its unix socket in
//! the same directory), with trust authentication and `fsync=off`. Dropping
//! the cluster stops the server (`pg_ctl stop -m immediate`) and removes the
//! directory. Should the test process die without dropping it (a `SIGKILL`,
//! an abort), a small watchdog shell process does the same once it notices.
//!
//! Binaries are looked up on `PATH`, then in the newest
//! `/usr/lib/postgresql/<version>/bin`; `ELEMENTS_PG_BIN` names a directory
//! to use instead. As root (where `initdb` refuses to run) every server
//! command runs as the `postgres` user through `runuser`.
//!
//! ```no_run
//! let pg = elements_testkit::pg::PgCluster::start().unwrap();
//! let url = pg.create_database("story").unwrap();
//! assert!(url.starts_with("postgres://postgres@127.0.0.1:"));
//! ```

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

/// How many times a start is retried on a fresh port (another process may
/// take the free port between our probe and the server's bind).
const START_ATTEMPTS: usize = 4;

/// A running throwaway cluster; dropping it stops the server and deletes its
/// files.
pub struct PgCluster {
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    watchdog: Option<Child>,
}

/// The unprivileged account server commands run as when we are root.
#[derive(Clone)]
struct RunAs {
    user: String,
    uid: u32,
    gid: u32,
}

impl PgCluster {
    /// Creates and starts a cluster; blocks until it accepts connections.
    pub fn start() -> io::Result<PgCluster> {
        let bin = find_bin_dir()?;
        let run_as = if effective_uid()? == 0 {
            Some(postgres_account()?)
        } else {
            None
        };
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&bin, run_as.clone()) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    /// A cluster shared by every test of this process, started on first use.
    /// It is never dropped; the watchdog stops it after the process exits.
    /// Use [`PgCluster::create_database`] to keep tests apart.
    pub fn shared() -> io::Result<&'static PgCluster> {
        static SHARED: OnceLock<Result<PgCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| PgCluster::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))
    }

    fn start_once(bin: &Path, run_as: Option<RunAs>) -> io::Result<PgCluster> {
        let parent = if run_as.is_some() {
            // The postgres account must be able to reach the directory;
            // root's TMPDIR may be private.
            PathBuf::from("/tmp")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("elements-pg-")
            .tempdir_in(&parent)?;
        let data = dir.path().join("data");
        let sock = dir.path().join("sock");
        fs::create_dir(&sock)?;
        if let Some(r) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(r.uid), Some(r.gid))?;
            std::os::unix::fs::chown(&sock, Some(r.uid), Some(r.gid))?;
        }
        let port = free_port()?;
        let mut cluster = PgCluster {
            dir: Some(dir),
            bin: bin.to_path_buf(),
            port,
            run_as,
            watchdog: None,
        };

        // From now on, clean up even if this process dies without dropping
        // the cluster (stopping a cluster that is not running is harmless).
        cluster.watchdog = cluster.spawn_watchdog(&data).ok();

        let initdb = cluster
            .server_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output();
        check("initdb", initdb)?;

        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            sock.display()
        );
        let log = cluster.root().join("server.log");
        let started = cluster
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output();
        if let Err(e) = check("pg_ctl start", started) {
            let tail = fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(io::Error::other(format!(
                "{e}\nserver log ({}):\n{}",
                log.display(),
                tail.join("\n")
            )));
        }
        Ok(cluster)
    }

    /// Stops the server (fast shutdown: open connections are cut), keeping
    /// its files, to test what happens while the database is unreachable.
    pub fn stop_server(&self) -> io::Result<()> {
        let data = self.root().join("data");
        let out = self
            .server_command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(&data)
            .args(["-m", "fast", "-w", "-t", "60"])
            .output();
        check("pg_ctl stop", out)
    }

    /// Starts the server again after [`PgCluster::stop_server`], on the
    /// same port; blocks until it accepts connections.
    pub fn start_server(&self) -> io::Result<()> {
        let data = self.root().join("data");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.root().join("sock").display()
        );
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(self.root().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output();
        check("pg_ctl start", out)
    }

    /// The port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of the `postgres` database:
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `name` on this cluster.
    pub fn url_for(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` (ASCII letters, digits and `_`) and returns its
    /// URL.
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("database name {name:?}: use ASCII letters, digits and _ only"),
            ));
        }
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg(name)
            .stdin(Stdio::null())
            .output();
        check("createdb", out)?;
        Ok(self.url_for(name))
    }

    fn root(&self) -> &Path {
        self.dir.as_ref().expect("cluster directory").path()
    }

    /// A command for one of the server binaries, run as the postgres account
    /// when we are root, from the cluster directory (which that account can
    /// read, unlike perhaps our working directory).
    fn server_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(r) => {
                let mut c = Command::new("runuser");
                c.args(["-u", &r.user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        };
        cmd.current_dir(self.root()).stdin(Stdio::null());
        cmd
    }

    /// Starts a shell that stops the server and removes the directory once
    /// this process is gone.
    fn spawn_watchdog(&self, data: &Path) -> io::Result<Child> {
        let stop = match &self.run_as {
            Some(r) => format!(
                "runuser -u {} -- \"$2\" stop -D \"$3\" -m immediate",
                r.user
            ),
            None => "\"$2\" stop -D \"$3\" -m immediate".to_owned(),
        };
        // An initdb or pg_ctl we started may outlive us by a moment and
        // recreate the directory: repeat until it stays gone.
        let script = format!(
            "while kill -0 \"$1\" 2>/dev/null; do sleep 1; done; \
             for i in 1 2 3 4 5 6 7 8 9 10; do \
             {stop} >/dev/null 2>&1; rm -rf \"$4\"; sleep 1; \
             [ -e \"$4\" ] || break; done"
        );
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("elements-pg-watchdog")
            .arg(std::process::id().to_string())
            .arg(self.bin.join("pg_ctl"))
            .arg(data)
            .arg(self.root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if self.dir.is_some() {
            let data = self.root().join("data");
            let _ = self
                .server_command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("port", &self.port)
            .field("dir", &self.dir.as_ref().map(|d| d.path()))
            .finish()
    }
}

/// Turns a command's result into an error naming the program and quoting its
/// output.
fn check(what: &str, out: io::Result<Output>) -> io::Result<()> {
    let out = out.map_err(|e| io::Error::new(e.kind(), format!("cannot run {what}: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// The directory holding `initdb`, `pg_ctl` and `createdb`.
fn find_bin_dir() -> io::Result<PathBuf> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "createdb"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("ELEMENTS_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_all(&dir) {
            Ok(dir)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "ELEMENTS_PG_BIN={} does not hold initdb, pg_ctl and createdb",
                    dir.display()
                ),
            ))
        };
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if has_all(&dir) {
                // Debian links these into PATH; resolve to the versioned
                // directory so every binary comes from the same version.
                let resolved = fs::canonicalize(dir.join("initdb"))
                    .ok()
                    .and_then(|p| p.parent().map(Path::to_path_buf))
                    .filter(|d| has_all(d));
                return Ok(resolved.unwrap_or(dir));
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Vec<u32> = name
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            has_all(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under \
             /usr/lib/postgresql/*/bin: install the postgresql package \
             (e.g. `apt-get install postgresql`) or set ELEMENTS_PG_BIN",
        )
    })
}

/// This process's effective user id, from `/proc/self/status` (or `id -u`).
fn effective_uid() -> io::Result<u32> {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        if let Some(line) = status.lines().find(|l| l.starts_with("Uid:")) {
            if let Some(euid) = line.split_whitespace().nth(2).and_then(|s| s.parse().ok()) {
                return Ok(euid);
            }
        }
    }
    id_of(&["-u"])
}

/// The `postgres` account, which must exist when we run as root.
fn postgres_account() -> io::Result<RunAs> {
    let user = "postgres";
    let lookup = |flag: &str| {
        id_of(&[flag, user]).map_err(|e| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "running as root, and initdb refuses to: need a `{user}` account to run \
                     the test cluster as ({e}); install the postgresql package, which creates it"
                ),
            )
        })
    };
    Ok(RunAs {
        user: user.to_owned(),
        uid: lookup("-u")?,
        gid: lookup("-g")?,
    })
}

fn id_of(args: &[&str]) -> io::Result<u32> {
    let out = Command::new("id")
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "id {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| io::Error::other(format!("id {}: unexpected output", args.join(" "))))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_creates_databases_and_cleans_up() {
        let pg = PgCluster::start().expect("start a throwaway PostgreSQL cluster");
        let dir = pg.root().to_path_buf();
        let url = pg.create_database("testkit_one").unwrap();
        assert_eq!(
            url,
            format!("postgres://postgres@127.0.0.1:{}/testkit_one", pg.port())
        );
        assert!(pg.create_database("bad-name; DROP").is_err());
        // The server answers on its TCP port.
        std::net::TcpStream::connect(("127.0.0.1", pg.port())).unwrap();
        drop(pg);
        assert!(!dir.exists(), "cluster directory removed");
    }
}
