//! catalog: registry load time and a cold `elements list` over 1,000
//! generated elements.

use std::process::{Command, Stdio};
use std::time::Instant;

use super::*;

impl Bench {
    /// 1,000 generated TOML elements: registry load time and a cold
    /// `elements list` process.
    pub(super) fn catalog(&mut self) -> Res<()> {
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
        let mut decoding = Vec::new();
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
            // The built-in specs are decoded on first use (issue 19): what
            // the first `GET /elements` pays once.
            let t = Instant::now();
            let entries: usize = registry.iter().map(|e| e.spec().configuration.len()).sum();
            let took_decoding = t.elapsed();
            if entries == 0 {
                return Err("the built-in catalog has no configuration entries".into());
            }
            drop(registry);
            if i > 0 {
                with_dir.push(ms(took));
                without.push(ms(took_builtin));
                reading.push(ms(took_reading));
                decoding.push(ms(took_decoding));
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
        self.row(
            &s,
            &format!("decoding every built-in spec once (first `GET /elements`, median of {runs})"),
            median(decoding),
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
        // Issue 19.
        r.target = Target::AtMost(25.0);
        self.row(
            &s,
            "spawn + wait of `true` (process floor)",
            median(spawn),
            "ms",
        );
        Ok(())
    }
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
