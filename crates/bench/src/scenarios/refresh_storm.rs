//! refresh-storm: concurrent credential reads of one expired instance, one
//! provider refresh.

use std::sync::Arc;
use std::time::Instant;

use elements_store::{Keyring, RefreshDecision, RefreshJob, Store, Tokens};
use elements_testkit::provider::FakeProvider;

use super::*;
use crate::http::Conn;

impl Bench {
    /// 1,000 concurrent credential reads of one expired instance: exactly one
    /// provider refresh, no errors.
    pub(super) fn refresh_storm(&mut self) -> Res<()> {
        let n = self.settings.storm;
        let dir = self.dir("refresh-storm")?;
        let fake = self.rt.block_on(FakeProvider::start());
        // The default `max_connections` (512): connections over the cap
        // wait in the listen backlog (it was 128 before the listener raised
        // it, and the storm saw half its requests closed unanswered).
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
