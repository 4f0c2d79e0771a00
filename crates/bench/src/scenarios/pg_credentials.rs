//! pg-credentials (cache, issue 19): the credential read on PostgreSQL with
//! two replicas of the binary behind the bench (half the connections on
//! each, at the same time), against the bare-axum reference in the same run.
//! The PostgreSQL cluster is a throwaway one (`elements_testkit::pg`, the
//! machine's own `initdb`/`pg_ctl`). Not in `all` (it needs PostgreSQL).

use std::process::{Command, Stdio};

use elements_store::Keyring;
use elements_testkit::pg::PgCluster;

use super::*;
use crate::procs;

const ORG: &str = "bench-org-secret-pg";
const USER: &str = "bench-user-secret-pg";

impl Bench {
    pub(super) fn pg_credentials(&mut self) -> Res<()> {
        let connections = self.settings.connections.max(2);
        let pg = PgCluster::start().map_err(err("starting PostgreSQL (run scripts/setup.sh)"))?;
        let url = pg
            .create_database("bench_credentials")
            .map_err(err("creating the database"))?;
        let key = Keyring::encode_key(&Keyring::generate_key());
        let replica = |name: &str| -> Res<procs::ServerProcess> {
            let dir = self.dir(name)?;
            let log = std::fs::File::create(dir.join("server.log")).map_err(err("server log"))?;
            let mut command = Command::new(&self.settings.binary);
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("ELEMENTS_") {
                    command.env_remove(k);
                }
            }
            command
                .arg("serve")
                .arg("--data-dir")
                .arg(&dir)
                .args(["--database-url", &url, "--listen", "127.0.0.1:0"])
                .env("ELEMENTS_MASTER_KEY", &key)
                // The seed instance names no real HubSpot: no [verify] call.
                .env("ELEMENTS_VERIFY_ON_CREATE", "false")
                .env("ELEMENTS_ORGANIZATION_SECRET", ORG)
                .env("ELEMENTS_USER_SECRET", USER)
                .stderr(Stdio::from(log));
            procs::ServerProcess::start(command, name)
        };
        let a = replica("pg-replica-a")?;
        let b = replica("pg-replica-b")?;
        let body = instance_body(
            "bench-access-token",
            "bench-refresh-token",
            "123456",
            31_536_000,
        );
        let create = Request::post_json("/elements/api-v2/instances", &body)
            .header("Authorization", format!("User {USER}, Organization {ORG}"));
        let created = self.expect(a.addr, &create, 200)?.json();
        let id = created["id"].as_i64().ok_or("POST /instances: no id")?;
        let token = created["token"].as_str().ok_or("no token")?.to_owned();
        let request = credentials_request(id, &token);
        self.expect(a.addr, &request, 200)?;
        self.expect(b.addr, &request, 200)?;
        let reference = procs::start_reference()?;
        self.expect(reference.addr, &request, 200)?;

        let (mut bases, mut results) = (Vec::new(), Vec::new());
        for _ in 0..self.settings.rounds {
            bases.push(self.load(&reference, &request, connections)?);
            results.push(self.both(&a, &b, &request, connections)?);
        }
        reference.stop();
        a.stop();
        b.stop();
        drop(pg);
        let (base, result) = (best(&bases), best(&results));
        let s = format!("GET credentials on PostgreSQL, 2 replicas ({connections} conns in all)");
        self.note_failures(&s, &result);
        self.note_rounds(&s, &bases, &results);
        let r = self.row(&s, "requests/s (both replicas)", result.ok_rps(), "req/s");
        r.reference = Some((base.ok_rps(), "bare axum, one process".into()));
        let r = self.row(&s, "p99 latency", result.p99_ms, "ms");
        r.reference = Some((base.p99_ms, "bare axum".into()));
        let r = self.row(
            &s,
            "server CPU per request (both)",
            result.server_cpu_us,
            "µs",
        );
        r.reference = Some((base.server_cpu_us, "bare axum".into()));
        Ok(())
    }

    /// Loads both replicas at once, half the connections each: the summed
    /// rate, the worse p99, the summed server CPU per request.
    fn both(
        &self,
        a: &procs::ServerProcess,
        b: &procs::ServerProcess,
        request: &Request,
        connections: usize,
    ) -> Res<LoadResult> {
        let spec = |addr| LoadSpec {
            addr,
            request: request.clone(),
            connections: connections / 2,
            threads: (self.settings.threads / 2).max(1),
            duration: Duration::from_secs(self.settings.seconds),
        };
        let (sa, sb) = (spec(a.addr), spec(b.addr));
        let stats = [
            format!("/proc/{}/stat", a.pid()),
            format!("/proc/{}/stat", b.pid()),
        ];
        let ticks = || stats.iter().map(|s| proc_times(s)).sum::<u64>();
        let scratch = self.tmp.path();
        for side in ["a", "b"] {
            std::fs::create_dir_all(scratch.join(side)).map_err(err("scratch directory"))?;
        }
        let loadgen = &self.settings.loadgen;
        let before = ticks();
        let (ra, rb) = std::thread::scope(|scope| {
            let ha = scope.spawn(|| load::run(loadgen, &sa, &scratch.join("a")));
            let hb = scope.spawn(|| load::run(loadgen, &sb, &scratch.join("b")));
            (ha.join(), hb.join())
        });
        let used = ticks().saturating_sub(before);
        let (ra, rb) = (
            ra.map_err(|_| "load generator panicked")??,
            rb.map_err(|_| "load generator panicked")??,
        );
        let mut sum = ra.clone();
        sum.requests = ra.requests + rb.requests;
        sum.non_2xx = ra.non_2xx + rb.non_2xx;
        sum.errors = ra.errors + rb.errors;
        sum.seconds = ra.seconds.max(rb.seconds);
        sum.rps = ra.rps + rb.rps;
        sum.p50_ms = ra.p50_ms.max(rb.p50_ms);
        sum.p99_ms = ra.p99_ms.max(rb.p99_ms);
        sum.server_cpu_us = used as f64 * 10_000.0 / sum.requests.max(1) as f64;
        eprintln!(
            "bench:   2 replicas GET credentials x{connections}: {:.0} req/s, p99 {:.3} ms, {} non-2xx; server CPU {:.1} µs/request",
            sum.ok_rps(),
            sum.p99_ms,
            sum.non_2xx,
            sum.server_cpu_us
        );
        Ok(sum)
    }
}
