//! cache (issue 19): change notices between replicas on PostgreSQL.
//!
//! Migration `0700_cache_notify.sql` puts triggers on `instances`, `users`
//! and `organizations` that call `pg_notify('elements_cache', ...)` inside
//! the writing transaction, so a notice is delivered at commit (and never for
//! a rolled-back write), whichever process or code path wrote. [`listen`]
//! holds one `LISTEN` connection and reports every notice, and every loss and
//! regain of that connection, to a callback: while it is down the caller must
//! not trust what it cached (notices sent meanwhile are lost).
//!
//! SQLite has no such channel: a cache over it relies on its own maximum
//! entry age for changes made by other processes.

use std::time::Duration;

use sqlx::postgres::PgListener;

/// The channel the triggers notify on.
pub const CHANGE_CHANNEL: &str = "elements_cache";

/// A committed change to a cached row. Ids only: never a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// An instance was updated or deleted.
    Instance(i64),
    /// A user was updated (its secret rotated) or deleted.
    User(i64),
    /// An organization was updated (its secret rotated) or deleted.
    Organization(i64),
}

impl Change {
    /// Parses a trigger's payload (`i:<id>`, `u:<id>`, `o:<id>`).
    pub fn parse(payload: &str) -> Option<Change> {
        let (kind, id) = payload.split_once(':')?;
        let id: i64 = id.parse().ok()?;
        match kind {
            "i" => Some(Change::Instance(id)),
            "u" => Some(Change::User(id)),
            "o" => Some(Change::Organization(id)),
            _ => None,
        }
    }
}

/// What the listener reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenEvent {
    /// `LISTEN` is active: every commit from now on is reported. Whatever
    /// was cached before may be stale (notices were not being received).
    Connected,
    /// The listening connection was lost: notices may be missed until the
    /// next [`ListenEvent::Connected`].
    Disconnected,
    /// A committed change. `None` for a payload this version does not know
    /// (the caller should then drop everything).
    Change(Option<Change>),
}

/// Whether `url` names a PostgreSQL database (the only engine with notices).
pub fn notices_available(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Listens for [`Change`]s on the PostgreSQL database at `url` until the
/// task is dropped, reconnecting after `retry` when the connection fails.
/// Every event goes to `on_event`, in order; the first is `Connected` (once
/// the database is reachable). Returns when `on_event` returns false.
pub async fn listen<F>(url: String, retry: Duration, mut on_event: F)
where
    F: FnMut(ListenEvent) -> bool + Send,
{
    loop {
        let mut listener = match connect(&url).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cache: cannot listen for changes; retrying");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        if !on_event(ListenEvent::Connected) {
            return;
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    if !on_event(ListenEvent::Change(Change::parse(n.payload()))) {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cache: change listener failed");
                    break;
                }
            }
        }
        if !on_event(ListenEvent::Disconnected) {
            return;
        }
        drop(listener);
        tokio::time::sleep(retry).await;
    }
}

async fn connect(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANGE_CHANNEL).await?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_payloads() {
        assert_eq!(Change::parse("i:42"), Some(Change::Instance(42)));
        assert_eq!(Change::parse("u:7"), Some(Change::User(7)));
        assert_eq!(Change::parse("o:9"), Some(Change::Organization(9)));
        assert_eq!(Change::parse("x:9"), None);
        assert_eq!(Change::parse("i:"), None);
        assert_eq!(Change::parse("i"), None);
    }
}

/// Something told of every change this process makes through a store.
pub type ChangeHook = std::sync::Weak<dyn Fn(Change) + Send + Sync>;

/// cache (issue 19): the hooks registered on a store ([`crate::Store::on_change`]),
/// told of each change made through it as soon as the write returned (or was
/// abandoned): the writing process's caches drop what changed at once.
#[derive(Default)]
pub(crate) struct LocalHooks(std::sync::RwLock<Vec<ChangeHook>>);

impl LocalHooks {
    pub(crate) fn add(&self, hook: ChangeHook) {
        let mut hooks = self.0.write().unwrap_or_else(|e| e.into_inner());
        hooks.retain(|h| h.strong_count() > 0);
        hooks.push(hook);
    }

    fn tell(&self, change: Change) {
        let hooks = self.0.read().unwrap_or_else(|e| e.into_inner());
        for hook in hooks.iter().filter_map(std::sync::Weak::upgrade) {
            hook(change);
        }
    }

    /// A guard that reports `change` when dropped: put it first in a write
    /// method, so the report comes after the write, however it ends.
    pub(crate) fn guard(&self, change: Change) -> ChangeGuard<'_> {
        ChangeGuard(self, change)
    }
}

/// See [`LocalHooks::guard`].
pub(crate) struct ChangeGuard<'a>(&'a LocalHooks, Change);

impl Drop for ChangeGuard<'_> {
    fn drop(&mut self) {
        self.0.tell(self.1);
    }
}
