//! cache (issue 19): the credential read path without a database round trip.
//!
//! Two bounded in-process caches ([`quick_cache`], count-limited):
//!
//! - **instances** by id, each entry remembering the `Element` token hash it
//!   was read with (if any), plus an index from token hash to id. A token
//!   lookup is a hit only when the entry it leads to was read with that very
//!   token: after a rotation or revocation the old hash leads to an entry that
//!   does not carry it (or to none), so the read goes to the database, which
//!   refuses it.
//! - **accounts** by (user secret hash, organization secret hash).
//!
//! Nothing negative is cached (an unknown token or account always asks the
//! database), so a new instance or account is visible at once.
//!
//! **Invalidation.** Every write made through the store in this process
//! (delete, enable/disable, PUT/PATCH, refresh or exchange, `Element` token
//! rotation, account secret rotation, health changes) tells the cache as soon
//! as it returned (`Store::on_change`: a guard at the top of each write method
//! in `elements_store`), which drops the instance ([`Cache::instance_changed`])
//! or every account ([`Cache::accounts_changed`]). A read that raced with such a write cannot put
//! back what it read before the write: readers insert, then re-check a global
//! epoch bumped by every invalidation, and remove what they inserted if it
//! moved. Other processes: on PostgreSQL the database's triggers notify every
//! replica at commit ([`elements_store::notify`]); while that listener is down
//! the cache is bypassed entirely, and it is cleared when it comes back. On
//! both engines an entry older than `max_age` (default 1 s) is never used,
//! which bounds what a write from another process without notices (SQLite)
//! can leave behind.
//!
//! **Secrets.** Entries hold decrypted tokens and configuration; when an entry
//! is dropped (evicted, invalidated, expired) they are overwritten with zeros
//! ([`zeroize`]) before the memory is freed.

mod applied;
pub(crate) mod first;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use elements_store::notify::{Change, ListenEvent};
use elements_store::{Instance, Principal, SecretHash};
use quick_cache::sync::Cache as Lru;
use zeroize::Zeroize;

/// The cache's settings (`[cache]` in the configuration file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Most instances kept (and, separately, most accounts); 0 turns the
    /// cache off.
    pub capacity: u64,
    /// An entry older than this is never served.
    pub max_age: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            capacity: 10_000,
            max_age: Duration::from_secs(1),
        }
    }
}

/// A cached instance. Its secrets are zeroized on drop.
struct InstanceEntry {
    instance: Instance,
    /// The `Element` token hash it was read with, if read by token.
    token_hash: Option<SecretHash>,
    loaded: Instant,
    /// Its credential as applied, once a read applied it ([`applied`]).
    applied: std::sync::OnceLock<applied::Applied>,
}

impl InstanceEntry {
    fn new(instance: Instance, token_hash: Option<SecretHash>) -> Self {
        InstanceEntry {
            instance,
            token_hash,
            loaded: Instant::now(),
            applied: std::sync::OnceLock::new(),
        }
    }
}

impl Drop for InstanceEntry {
    fn drop(&mut self) {
        wipe(&mut self.instance);
    }
}

/// Overwrites an instance's decrypted tokens and configuration with zeros
/// and removes them.
fn wipe(instance: &mut Instance) {
    let tokens = &mut instance.tokens;
    for secret in [tokens.access_token.take(), tokens.refresh_token.take()]
        .into_iter()
        .flatten()
    {
        secret.into_inner().zeroize();
    }
    instance.configuration.zeroize();
}

/// A cached instance, shared with the cache: reading it clones one `Arc`,
/// not the instance's strings and configuration (issue 19's profile), and
/// its decrypted secrets are zeroized once the cache and every reader have
/// let go of it. Reads like an [`Instance`].
#[derive(Clone)]
pub struct SharedInstance(Arc<InstanceEntry>);

impl std::ops::Deref for SharedInstance {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.0.instance
    }
}

impl SharedInstance {
    /// An owned copy (for the paths that change it: a refresh).
    pub fn to_owned_instance(&self) -> Instance {
        self.0.instance.clone()
    }
}

impl From<Instance> for SharedInstance {
    fn from(instance: Instance) -> Self {
        SharedInstance(Arc::new(InstanceEntry::new(instance, None)))
    }
}

struct AccountEntry {
    principal: Principal,
    loaded: Instant,
}

/// The credential read path's cache. Cheap to share (`Arc`).
pub struct Cache {
    settings: CacheSettings,
    instances: Option<Lru<i64, Arc<InstanceEntry>>>,
    tokens: Option<Lru<SecretHash, i64>>,
    accounts: Option<Lru<(SecretHash, SecretHash), Arc<AccountEntry>>>,
    /// Bumped by every invalidation.
    epoch: AtomicU64,
    /// False while changes from other processes may go unseen (the
    /// PostgreSQL listener is not connected): then nothing is read or kept.
    live: AtomicBool,
    /// What the store calls on each change made through it (it holds only
    /// a weak reference).
    local_hook: std::sync::OnceLock<LocalHook>,
    /// SQLite: the database's `-shm` file, whose WAL-index header changes on
    /// every commit by any process (its change counter, last frame, salts).
    /// Read (48 bytes) before a lookup at most every [`SHM_CHECK_EVERY`]: a
    /// change since the last look clears the cache, so another process's
    /// write (the CLI's rotations, a second server) is seen within that
    /// time (this process's own writes invalidate at once, by the store's
    /// guard). One `pread` per lookup was ~5% of a cached read's CPU.
    shm: std::sync::OnceLock<Shm>,
    /// When the cache was made: the clock of `Shm::checked`.
    born: Instant,
    /// This cache among the process's (for the per-thread first level of
    /// token lookups, [`first`]).
    id: u64,
}

thread_local! {
    /// Token lookups' first level ([`first`]).
    static FIRST: std::cell::RefCell<first::FirstLevel<SecretHash, Arc<InstanceEntry>>> =
        const { std::cell::RefCell::new(first::FirstLevel::new()) };
}

type LocalHook = Arc<dyn Fn(Change) + Send + Sync>;

/// How often, at most, the SQLite `-shm` header is read.
pub const SHM_CHECK_EVERY: Duration = Duration::from_millis(20);

/// The watched `-shm` file: its header's hash when last read, and when it
/// was last read (nanoseconds since `Cache::born`).
struct Shm {
    file: std::fs::File,
    seen: AtomicU64,
    checked: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("settings", &self.settings)
            .field("instances", &self.instances.as_ref().map(Lru::len))
            .field("accounts", &self.accounts.as_ref().map(Lru::len))
            .field("live", &self.live.load(Ordering::Relaxed))
            .finish()
    }
}

/// What a reader holds between its miss and its insert.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

impl Cache {
    /// A cache with these settings. `live` false: bypassed until
    /// [`Cache::on_listen_event`] reports the change listener connected
    /// (PostgreSQL); true when no other process's changes are notified anyway
    /// (SQLite, where `max_age` is the only bound).
    pub fn new(settings: CacheSettings, live: bool) -> Self {
        let on = settings.capacity > 0;
        let cap = usize::try_from(settings.capacity).unwrap_or(usize::MAX);
        Cache {
            settings,
            instances: on.then(|| Lru::new(cap)),
            tokens: on.then(|| Lru::new(cap)),
            accounts: on.then(|| Lru::new(cap)),
            epoch: AtomicU64::new(0),
            live: AtomicBool::new(live),
            local_hook: std::sync::OnceLock::new(),
            shm: std::sync::OnceLock::new(),
            born: Instant::now(),
            id: first::cache_id(),
        }
    }

    /// A cache that keeps nothing.
    pub fn disabled() -> Self {
        Cache::new(
            CacheSettings {
                capacity: 0,
                max_age: Duration::ZERO,
            },
            false,
        )
    }

    fn usable(&self) -> bool {
        if !self.live.load(Ordering::Acquire) {
            return false;
        }
        if let Some(shm) = self.shm.get() {
            let now = u64::try_from(self.born.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let last = shm.checked.load(Ordering::Acquire);
            let due = now.saturating_sub(last) >= SHM_CHECK_EVERY.as_nanos() as u64;
            // One reader checks; the others go on with what was checked
            // less than SHM_CHECK_EVERY ago.
            if due
                && shm
                    .checked
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                use std::os::unix::fs::FileExt;
                let mut header = [0u8; 48];
                if shm.file.read_exact_at(&mut header, 0).is_err() {
                    self.clear();
                    // Look again on the next lookup.
                    shm.checked.store(0, Ordering::Release);
                    return false;
                }
                let hash = fnv(&header);
                if shm.seen.swap(hash, Ordering::SeqCst) != hash {
                    self.clear();
                }
            }
        }
        true
    }

    fn fresh(&self, loaded: Instant) -> bool {
        loaded.elapsed() < self.settings.max_age
    }

    /// Taken before reading the database on a miss; hand it back to the
    /// `put_*` call.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.epoch.load(Ordering::SeqCst))
    }

    /// The instance whose `Element` token hashes to `hash`, if cached.
    pub fn instance_by_token(&self, hash: &SecretHash) -> Option<SharedInstance> {
        if !self.usable() {
            return None;
        }
        // Before the lookups: an invalidation after this makes what they
        // find unusable in the first level.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let found = FIRST
            .with_borrow_mut(|first| first.get(self.id, epoch, hash, |e| self.fresh(e.loaded)));
        if let Some(entry) = found {
            return Some(SharedInstance(entry));
        }
        let id = self.tokens.as_ref()?.get(hash)?;
        let entry = self.instances.as_ref()?.get(&id)?;
        if entry.token_hash.as_ref() != Some(hash) || !self.fresh(entry.loaded) {
            return None;
        }
        FIRST.with_borrow_mut(|first| first.keep(self.id, epoch, *hash, entry.clone()));
        Some(SharedInstance(entry))
    }

    /// Instance `id` of organization `organization_id`, if cached.
    pub fn instance(&self, organization_id: i64, id: i64) -> Option<SharedInstance> {
        if !self.usable() {
            return None;
        }
        let entry = self.instances.as_ref()?.get(&id)?;
        (entry.instance.organization_id == organization_id && self.fresh(entry.loaded))
            .then_some(SharedInstance(entry))
    }

    /// Keeps `instance`, read from the database after `ticket` was taken
    /// (with the `Element` token hashing to `token_hash`, if by token), and
    /// hands it back shared.
    pub fn put_instance(
        &self,
        ticket: Ticket,
        instance: Instance,
        token_hash: Option<SecretHash>,
    ) -> SharedInstance {
        let id = instance.id;
        let entry = Arc::new(InstanceEntry::new(instance, token_hash));
        let (Some(instances), Some(tokens)) = (&self.instances, &self.tokens) else {
            return SharedInstance(entry);
        };
        if !self.usable() {
            return SharedInstance(entry);
        }
        instances.insert(id, entry.clone());
        if let Some(hash) = token_hash {
            tokens.insert(hash, id);
        }
        // An invalidation since the ticket may have come before the insert
        // (and removed nothing): undo it, the next read goes to the database.
        if self.epoch.load(Ordering::SeqCst) != ticket.0 || !self.usable() {
            instances.remove(&id);
            // A lookup may have found it in the meantime and kept it in its
            // thread's first level: moving the epoch drops it there too.
            self.epoch.fetch_add(1, Ordering::SeqCst);
        }
        SharedInstance(entry)
    }

    /// The account with these secret hashes, if cached.
    pub fn account(&self, user: &SecretHash, organization: &SecretHash) -> Option<Principal> {
        if !self.usable() {
            return None;
        }
        let entry = self.accounts.as_ref()?.get(&(*user, *organization))?;
        self.fresh(entry.loaded).then(|| entry.principal.clone())
    }

    /// Keeps an account read from the database after `ticket` was taken.
    pub fn put_account(
        &self,
        ticket: Ticket,
        user: &SecretHash,
        organization: &SecretHash,
        principal: &Principal,
    ) {
        let Some(accounts) = &self.accounts else {
            return;
        };
        if !self.usable() {
            return;
        }
        let key = (*user, *organization);
        accounts.insert(
            key,
            Arc::new(AccountEntry {
                principal: principal.clone(),
                loaded: Instant::now(),
            }),
        );
        if self.epoch.load(Ordering::SeqCst) != ticket.0 || !self.usable() {
            accounts.remove(&key);
        }
    }

    /// Instance `id` changed (updated, deleted, enabled or disabled, its
    /// tokens or `Element` token replaced): forget it, at once.
    pub fn instance_changed(&self, id: i64) {
        // Before the removal, for the readers' tickets (`put_instance`);
        // after it, for the threads' first levels: a lookup that read the
        // epoch in between may have found the entry still there.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(instances) = &self.instances {
            instances.remove(&id);
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// An account secret changed (or a user or organization went away):
    /// forget every account.
    pub fn accounts_changed(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(accounts) = &self.accounts {
            accounts.clear();
        }
    }

    /// Forgets everything.
    pub fn clear(&self) {
        // Before and after, as in `instance_changed`.
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Some(i) = &self.instances {
            i.clear();
        }
        if let Some(t) = &self.tokens {
            t.clear();
        }
        if let Some(a) = &self.accounts {
            a.clear();
        }
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// What the PostgreSQL change listener reports.
    pub fn on_listen_event(&self, event: ListenEvent) {
        match event {
            ListenEvent::Connected => {
                // Listening now: whatever changed before is dropped, then
                // the cache is used again.
                self.clear();
                self.live.store(true, Ordering::Release);
                tracing::debug!("cache: change listener connected");
            }
            ListenEvent::Disconnected => {
                self.live.store(false, Ordering::Release);
                self.clear();
                tracing::warn!("cache: change listener lost; the cache is bypassed");
            }
            ListenEvent::Change(Some(Change::Instance(id))) => self.instance_changed(id),
            ListenEvent::Change(Some(Change::User(_) | Change::Organization(_))) => {
                self.accounts_changed()
            }
            ListenEvent::Change(None) => self.clear(),
        }
    }

    /// Entries held now: (instances, accounts).
    pub fn len(&self) -> (usize, usize) {
        (
            self.instances.as_ref().map_or(0, Lru::len),
            self.accounts.as_ref().map_or(0, Lru::len),
        )
    }

    /// Whether reads may be served from the cache now.
    pub fn is_live(&self) -> bool {
        self.usable() && self.instances.is_some()
    }
}

/// Starts the cache over `store` (at `database_url`): told by the store of
/// every change made through it in this process; on PostgreSQL, bypassed
/// until a change listener (spawned here, on the current tokio runtime) is
/// connected; elsewhere live at once, bounded by `max_age`.
pub fn start(
    settings: CacheSettings,
    database_url: &str,
    store: &dyn elements_store::Store,
) -> Arc<Cache> {
    if settings.capacity == 0 {
        return Arc::new(Cache::disabled());
    }
    let pg = elements_store::notify::notices_available(database_url);
    let cache = Arc::new(Cache::new(settings, !pg));
    let weak = Arc::downgrade(&cache);
    let hook: LocalHook = Arc::new(move |change| {
        if let Some(cache) = weak.upgrade() {
            cache.on_listen_event(ListenEvent::Change(Some(change)));
        }
    });
    store.on_change(Arc::downgrade(&hook));
    let _ = cache.local_hook.set(hook);
    if !pg {
        let path = database_url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        match std::fs::File::open(format!("{path}-shm")) {
            Ok(file) => {
                let _ = cache.shm.set(Shm {
                    file,
                    seen: AtomicU64::new(0),
                    checked: AtomicU64::new(0),
                });
            }
            Err(e) => {
                // Another process's writes could not be seen: keep nothing.
                tracing::warn!(error = %e, "cache: no SQLite -shm file to watch; the cache is off");
                cache.live.store(false, Ordering::Release);
            }
        }
        return cache;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            let weak = Arc::downgrade(&cache);
            let url = database_url.to_owned();
            runtime.spawn(async move {
                let listen = elements_store::notify::listen(
                    url,
                    Duration::from_millis(250),
                    // Stops listening once the cache is gone.
                    move |event| match weak.upgrade() {
                        Some(cache) => {
                            cache.on_listen_event(event);
                            true
                        }
                        None => false,
                    },
                );
                listen.await;
            });
        }
        // No runtime to listen on: never live, never stale.
        Err(_) => tracing::warn!("cache: no runtime for the change listener; the cache is off"),
    }
    cache
}

/// FNV-1a of `bytes`.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The instance whose `Element` token hashes to `hash`, through the cache;
/// a 401 when there is none.
pub async fn instance_by_token(
    state: &crate::AppState,
    hash: &SecretHash,
) -> Result<SharedInstance, crate::error::ApiError> {
    let hash = *hash;
    if let Some(instance) = state.cache.instance_by_token(&hash) {
        return Ok(instance);
    }
    let ticket = state.cache.ticket();
    let instance = state
        .store
        .instance_by_token(&hash)
        .await?
        .ok_or(crate::error::ApiError::Unauthorized)?;
    Ok(state.cache.put_instance(ticket, instance, Some(hash)))
}

/// Instance `id` of `organization_id`, through the cache.
pub async fn instance(
    state: &crate::AppState,
    organization_id: i64,
    id: i64,
) -> Result<Option<SharedInstance>, crate::error::ApiError> {
    if let Some(instance) = state.cache.instance(organization_id, id) {
        return Ok(Some(instance));
    }
    let ticket = state.cache.ticket();
    let found = state.store.instance(organization_id, id).await?;
    Ok(found.map(|instance| state.cache.put_instance(ticket, instance, None)))
}

#[cfg(test)]
mod tests {
    use elements_core::{Configuration, Secret};
    use elements_store::{Health, HealthState, Tokens, User};

    use super::*;

    fn user() -> User {
        User {
            id: 1,
            email: "a@b.test".into(),
            first_name: "A".into(),
            last_name: "B".into(),
        }
    }

    pub(super) fn instance(id: i64, access: &str) -> Instance {
        let mut configuration = Configuration::new();
        configuration.insert("oauth.api.secret", "s3cret");
        Instance {
            id,
            organization_id: 10,
            user: user(),
            element_key: "hubspot".into(),
            element_id: 1,
            name: "n".into(),
            tags: Vec::new(),
            configuration,
            tokens: Tokens {
                access_token: Some(Secret::new(access)),
                refresh_token: Some(Secret::new("rt")),
                token_type: None,
                expires_at: Some(i64::MAX / 2),
            },
            valid: true,
            invalid_reason: None,
            disabled: false,
            created_at: 0,
            updated_at: 0,
            token_version: 0,
            health: Health {
                state: HealthState::Active,
                failures: 0,
                last_error: None,
                since: 0,
            },
        }
    }

    fn cache(max_age: Duration, live: bool) -> Cache {
        Cache::new(
            CacheSettings {
                capacity: 100,
                max_age,
            },
            live,
        )
    }

    fn access(i: &Instance) -> &str {
        i.tokens.access_token.as_ref().unwrap().expose()
    }

    /// Another process's commit (a change of the `-shm` header) empties
    /// the cache at the first lookup once the check interval has passed;
    /// an unchanged header keeps it.
    #[test]
    fn a_changed_shm_header_clears_the_cache_once_the_interval_passed() {
        use std::io::{Seek, Write};
        let path = std::env::temp_dir().join(format!(
            "elements-cache-shm-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&path, [1u8; 48]).unwrap();
        let c = cache(Duration::from_secs(60), true);
        let _ = c.shm.set(Shm {
            file: std::fs::File::open(&path).unwrap(),
            seen: AtomicU64::new(0),
            checked: AtomicU64::new(0),
        });
        std::thread::sleep(SHM_CHECK_EVERY);
        // The first check records the header (and clears an empty cache).
        assert!(c.instance(10, 5).is_none());
        c.put_instance(c.ticket(), instance(5, "at"), None);
        assert!(
            c.instance(10, 5).is_some(),
            "kept while the header is unchanged"
        );
        // Another process commits: the header changes.
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.rewind().unwrap();
        file.write_all(&[2u8; 48]).unwrap();
        file.sync_all().unwrap();
        std::thread::sleep(SHM_CHECK_EVERY + Duration::from_millis(5));
        assert!(
            c.instance(10, 5).is_none(),
            "the changed header emptied the cache"
        );
        // Unchanged since: kept again.
        c.put_instance(c.ticket(), instance(5, "at"), None);
        std::thread::sleep(SHM_CHECK_EVERY + Duration::from_millis(5));
        assert!(c.instance(10, 5).is_some());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn serves_by_token_and_by_organization_until_changed() {
        let c = cache(Duration::from_secs(60), true);
        let hash = [7u8; 32];
        c.put_instance(c.ticket(), instance(5, "at-1"), Some(hash));
        assert_eq!(access(&c.instance_by_token(&hash).unwrap()), "at-1");
        assert_eq!(access(&c.instance(10, 5).unwrap()), "at-1");
        assert!(c.instance(11, 5).is_none(), "another organization's id");
        assert!(c.instance_by_token(&[8u8; 32]).is_none());
        c.instance_changed(5);
        assert!(c.instance_by_token(&hash).is_none());
        assert!(c.instance(10, 5).is_none());
    }

    #[test]
    fn the_threads_first_level_obeys_every_invalidation_and_its_own_cache() {
        let c = cache(Duration::from_secs(60), true);
        let hash = [9u8; 32];
        c.put_instance(c.ticket(), instance(5, "at-1"), Some(hash));
        // The second and third reads come from this thread's first level.
        for _ in 0..3 {
            assert_eq!(access(&c.instance_by_token(&hash).unwrap()), "at-1");
        }
        // Another cache in the same thread sees nothing of it.
        let other = cache(Duration::from_secs(60), true);
        assert!(other.instance_by_token(&hash).is_none());
        other.put_instance(other.ticket(), instance(5, "at-other"), Some(hash));
        assert_eq!(access(&other.instance_by_token(&hash).unwrap()), "at-other");
        assert_eq!(access(&c.instance_by_token(&hash).unwrap()), "at-1");
        // A change to any instance empties it; so does a clear.
        c.instance_changed(99);
        c.put_instance(c.ticket(), instance(5, "at-2"), Some(hash));
        assert_eq!(access(&c.instance_by_token(&hash).unwrap()), "at-2");
        c.instance_changed(5);
        assert!(c.instance_by_token(&hash).is_none());
        c.put_instance(c.ticket(), instance(5, "at-3"), Some(hash));
        assert_eq!(access(&c.instance_by_token(&hash).unwrap()), "at-3");
        c.clear();
        assert!(c.instance_by_token(&hash).is_none());
        // Bounded: more tokens than it holds still all answer.
        for n in 0..(first::SIZE as u8 + 4) {
            c.put_instance(
                c.ticket(),
                instance(100 + i64::from(n), "many"),
                Some([n; 32]),
            );
        }
        for _ in 0..2 {
            for n in 0..(first::SIZE as u8 + 4) {
                assert_eq!(
                    c.instance_by_token(&[n; 32]).unwrap().id,
                    100 + i64::from(n)
                );
            }
        }
        FIRST.with_borrow(|first| assert!(first.len() <= first::SIZE));
    }

    #[test]
    fn an_old_token_does_not_reach_an_entry_read_with_another() {
        let c = cache(Duration::from_secs(60), true);
        let (old, new) = ([1u8; 32], [2u8; 32]);
        c.put_instance(c.ticket(), instance(5, "at"), Some(old));
        c.instance_changed(5);
        c.put_instance(c.ticket(), instance(5, "at"), Some(new));
        assert!(c.instance_by_token(&new).is_some());
        assert!(
            c.instance_by_token(&old).is_none(),
            "the rotated-away token"
        );
    }

    #[test]
    fn a_read_that_raced_with_a_change_is_not_kept() {
        let c = cache(Duration::from_secs(60), true);
        let ticket = c.ticket();
        // The write lands (and invalidates) after the read's database query.
        c.instance_changed(5);
        c.put_instance(ticket, instance(5, "stale"), Some([3u8; 32]));
        assert!(c.instance(10, 5).is_none());
        let ticket = c.ticket();
        c.accounts_changed();
        let p = Principal {
            organization_id: 10,
            organization_name: "o".into(),
            user: user(),
        };
        c.put_account(ticket, &[1; 32], &[2; 32], &p);
        assert!(c.account(&[1; 32], &[2; 32]).is_none());
        c.put_account(c.ticket(), &[1; 32], &[2; 32], &p);
        assert_eq!(c.account(&[1; 32], &[2; 32]), Some(p));
        c.accounts_changed();
        assert!(c.account(&[1; 32], &[2; 32]).is_none());
    }

    #[test]
    fn entries_older_than_the_maximum_age_are_not_served() {
        let c = cache(Duration::ZERO, true);
        c.put_instance(c.ticket(), instance(5, "at"), Some([4u8; 32]));
        assert!(c.instance(10, 5).is_none());
        assert!(c.instance_by_token(&[4u8; 32]).is_none());
    }

    #[test]
    fn without_the_listener_nothing_is_kept_or_served() {
        let c = cache(Duration::from_secs(60), false);
        c.put_instance(c.ticket(), instance(5, "at"), None);
        assert!(c.instance(10, 5).is_none());
        c.on_listen_event(ListenEvent::Connected);
        c.put_instance(c.ticket(), instance(5, "at"), None);
        assert!(c.instance(10, 5).is_some());
        c.on_listen_event(ListenEvent::Change(Some(Change::Instance(5))));
        assert!(c.instance(10, 5).is_none());
        c.put_instance(c.ticket(), instance(5, "at"), None);
        c.on_listen_event(ListenEvent::Disconnected);
        assert!(c.instance(10, 5).is_none());
        assert_eq!(c.len(), (0, 0), "cleared when the listener went away");
    }

    #[test]
    fn the_size_limit_holds() {
        let c = cache(Duration::from_secs(60), true);
        for id in 0..1_000 {
            c.put_instance(c.ticket(), instance(id, "at"), None);
        }
        assert!(c.len().0 <= 100, "{:?}", c.len());
        assert!(Cache::disabled().instance(10, 5).is_none());
    }

    #[test]
    fn a_dropped_entry_is_wiped() {
        let mut i = instance(5, "at");
        wipe(&mut i);
        assert_eq!(i.tokens.access_token, None);
        assert_eq!(i.tokens.refresh_token, None);
        assert!(i.configuration.is_empty());
        assert_eq!(i.configuration.get("oauth.api.secret"), None);
    }
}
