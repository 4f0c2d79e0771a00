//! proxy: a GET proxied by `elements serve` to a local upstream (the
//! testkit's fake API) against the same GET sent straight to it.

use elements_testkit::api::FakeApi;

use super::*;

impl Bench {
    /// Proxied vs direct GET: throughput ratio, added p50 and p99 latency.
    pub(super) fn proxy(&mut self) -> Res<()> {
        let dir = self.dir("proxy")?;
        let api = self.rt.block_on(FakeApi::start());
        let config = dir.join("elements.toml");
        std::fs::write(
            &config,
            format!(
                "[elements.sendgrid]\napi_base_url = \"{}\"\n",
                api.base_url()
            ),
        )
        .map_err(err("config file"))?;
        let server = self.start_elements(&dir.join("data"), Some(&config))?;
        let body = json!({
            "element": { "key": "sendgrid" },
            "name": "bench",
            "configuration": { "api.key": "SG.bench" },
        });
        let (id, token) = self.provision(&server, &body)?;
        let proxied = Request::get(format!("/elements/api-v2/instances/{id}/proxy/v3/ping"))
            .header("Authorization", format!("Element {token}"));
        self.expect(server.addr, &proxied, 200)?;
        let direct = Request::get("/v3/ping").header("Authorization", "Bearer SG.bench");
        let api_addr: SocketAddr = api
            .base_url()
            .trim_start_matches("http://")
            .parse()
            .map_err(err("fake API address"))?;
        // The floor of any proxy here: a bare forwarder with the same client.
        let forwarder = crate::procs::start_forwarder(&api.base_url())?;
        self.expect(forwarder.addr, &direct, 200)?;
        let connections = self.settings.connections;
        let mut measured = Vec::new();
        let mut reference = Vec::new();
        let mut bare = Vec::new();
        for _ in 0..self.settings.rounds.max(1) {
            measured.push(self.load(&server, &proxied, connections)?);
            bare.push(self.load(&forwarder, &direct, connections)?);
            reference.push(load::run(
                &self.settings.loadgen,
                &LoadSpec {
                    addr: api_addr,
                    request: direct.clone(),
                    connections,
                    threads: self.settings.threads,
                    duration: Duration::from_secs(self.settings.seconds),
                },
                self.tmp.path(),
            )?);
        }
        server.stop();
        forwarder.stop();
        let (m, r, f) = (best(&measured), best(&reference), best(&bare));
        self.note_failures("forwarded GET", &f);
        self.note_failures("proxied GET", &m);
        self.note_rounds("proxy", &reference, &measured);
        let s = format!("proxy (GET x{connections}, apikey header, local upstream)");
        let row = self.row(&s, "proxied throughput", m.ok_rps(), "req/s");
        row.reference = Some((r.ok_rps(), "same GET straight to the upstream".into()));
        row.target = Target::RatioAtLeast(0.7);
        let row = self.row(
            &s,
            "added p50 latency",
            (m.p50_ms - r.p50_ms) * 1000.0,
            "µs",
        );
        row.target = Target::AtMost(150.0);
        self.row(
            &s,
            "added p99 latency",
            (m.p99_ms - r.p99_ms) * 1000.0,
            "µs",
        );
        self.row(&s, "server CPU per proxied request", m.server_cpu_us, "µs");
        // What a second HTTP hop costs by itself on this machine (load
        // generator, forwarder and upstream share its cores): the bare
        // forwarder's throughput bounds any proxy's.
        let row = self.row(&s, "bare forwarder throughput", f.ok_rps(), "req/s");
        row.reference = Some((r.ok_rps(), "same GET straight to the upstream".into()));
        let row = self.row(&s, "proxied throughput", m.ok_rps(), "req/s");
        row.reference = Some((f.ok_rps(), "same GET through the bare forwarder".into()));
        self.row(&s, "bare forwarder CPU per request", f.server_cpu_us, "µs");
        self.row(
            &s,
            "bare forwarder added p50 latency",
            (f.p50_ms - r.p50_ms) * 1000.0,
            "µs",
        );
        Ok(())
    }
}
