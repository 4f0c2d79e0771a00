//! oauth-url: the seed's authorization URL call against the reference
//! server; memory: server RSS idle and after that load.

use super::*;
use crate::procs;
use crate::reference::SEED_OAUTH_ANSWER;

impl Bench {
    /// The seed's oauth/url call: the binary against the reference, in
    /// alternating rounds (best of each side).
    pub(super) fn oauth_url(&mut self) -> Res<()> {
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

    /// Server RSS idle and after the oauth/url load (measured during
    /// oauth-url if it ran; otherwise runs that load here).
    pub(super) fn memory(&mut self) -> Res<()> {
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
}
