//! A per-thread first level in front of a shared cache (issue 19): the
//! few entries a thread found in the shared maps last, kept as the same
//! `Arc`s (nothing is copied), usable only while the shared cache's
//! *epoch* is the one they were found at. The shared cache moves its epoch
//! on every invalidation, after removing what it invalidates, so a change
//! empties every thread's first level at that thread's next lookup. A hit
//! takes no lock of the shared maps: with requests spread over the serving
//! threads, those locks were memory that every read wrote.
//!
//! Each user keeps one in a `thread_local!` per kind of entry; `cache` (a
//! [`cache_id`]) tells apart the caches of one process (tests run many
//! servers in one process).

use std::sync::atomic::{AtomicU64, Ordering};

/// How many entries a thread keeps per first level.
pub const SIZE: usize = 8;

/// A new cache id (from 1: 0 is "none yet").
pub fn cache_id() -> u64 {
    static IDS: AtomicU64 = AtomicU64::new(1);
    IDS.fetch_add(1, Ordering::Relaxed)
}

/// One thread's first level: at most [`SIZE`] `(key, value)` pairs of one
/// cache at one epoch.
pub struct FirstLevel<K, V> {
    cache: u64,
    epoch: u64,
    entries: Vec<(K, V)>,
}

impl<K: PartialEq, V: Clone> FirstLevel<K, V> {
    /// Empty (for `thread_local!`'s `const` initializer).
    pub const fn new() -> Self {
        FirstLevel {
            cache: 0,
            epoch: 0,
            entries: Vec::new(),
        }
    }

    /// The value kept for `key` if it passes `usable`; `None` (and
    /// everything dropped) if the first level belongs to another cache or
    /// another epoch. `epoch` must be read before the shared maps are.
    pub fn get(
        &mut self,
        cache: u64,
        epoch: u64,
        key: &K,
        usable: impl Fn(&V) -> bool,
    ) -> Option<V> {
        if self.cache != cache || self.epoch != epoch {
            self.cache = cache;
            self.epoch = epoch;
            self.entries.clear();
            return None;
        }
        self.entries
            .iter()
            .find(|(k, v)| k == key && usable(v))
            .map(|(_, v)| v.clone())
    }

    /// Keeps `value`, found in the shared maps after `epoch` was read,
    /// unless the first level has moved to another cache or epoch since
    /// (the oldest entry makes room).
    pub fn keep(&mut self, cache: u64, epoch: u64, key: K, value: V) {
        if self.cache != cache || self.epoch != epoch {
            return;
        }
        self.entries.retain(|(k, _)| *k != key);
        if self.entries.len() >= SIZE {
            self.entries.remove(0);
        }
        self.entries.push((key, value));
    }

    /// How many entries it holds.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}
