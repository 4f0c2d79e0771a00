//! Provider calls whose answers change state (a refresh that rotates the
//! refresh token, a code exchange that consumes the code, and later a
//! revocation or a client-credentials renewal) must run to completion and
//! store their result whatever happens to the request that started them.
//!
//! [`detached`] runs such work on a task of its own: the caller awaits it,
//! and if the caller is dropped (the client hung up) the task goes on.
//! [`SingleFlight`] adds sharing: one task per key, and every caller that
//! arrives while it runs awaits the same result instead of queueing for a
//! call of its own.
//!
//! The locks here are `parking_lot` locks: they are never held across an
//! `.await` and cannot be poisoned, so a panic in one task cannot turn every
//! later caller into a panic.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

/// The task stopped without a result: it panicked (logged), or the runtime
/// is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the task stopped before it finished")]
pub struct Aborted;

/// Runs `work` on a task of its own and waits for its result. Dropping the
/// returned future does not stop `work`.
pub async fn detached<F>(work: F) -> Result<F::Output, Aborted>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    use tracing::Instrument as _;
    let span = crate::trace::current();
    let task = if span.is_none() {
        tokio::spawn(work)
    } else {
        tokio::spawn(work.instrument(span))
    };
    task.await.map_err(|e| {
        if e.is_panic() {
            tracing::error!("a detached provider task panicked");
        }
        Aborted
    })
}

/// Counts running detached work, so that shutdown can wait for it: each
/// piece of work holds a clone while it runs.
#[derive(Debug, Clone, Default)]
pub struct Tracker(Arc<()>);

impl Tracker {
    /// Whether no clone other than this one is alive.
    pub fn is_idle(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// Waits (polling every 10 ms, at most `limit`) until no work holds a
    /// clone; whether that happened.
    pub async fn idle(&self, limit: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.is_idle() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        true
    }
}

type Running<K, V> = Arc<Mutex<HashMap<K, watch::Receiver<Option<V>>>>>;

/// At most one task per key; callers arriving while it runs share its
/// result (which is why `V` is cheap to clone, e.g. an `Arc`).
pub struct SingleFlight<K, V> {
    running: Running<K, V>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl<K, V> std::fmt::Debug for SingleFlight<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleFlight")
            .field("running", &self.running.lock().len())
            .finish()
    }
}

/// Removes a finished (or panicked) flight from the map.
struct Landed<K: Hash + Eq, V> {
    running: Running<K, V>,
    key: Option<K>,
}

impl<K: Hash + Eq, V> Drop for Landed<K, V> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.running.lock().remove(&key);
        }
    }
}

impl<K, V> SingleFlight<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Awaits the task running for `key`, starting it with `start` if there
    /// is none. The task runs to completion even if every caller is dropped.
    pub async fn run<F, Fut>(&self, key: K, start: F) -> Result<V, Aborted>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let mut answer = {
            let mut running = self.running.lock();
            if let Some(answer) = running.get(&key) {
                answer.clone()
            } else {
                let (tx, answer) = watch::channel(None);
                running.insert(key.clone(), answer.clone());
                let work = start();
                let landed = Landed {
                    running: self.running.clone(),
                    key: Some(key),
                };
                let flight = async move {
                    let value = work.await;
                    // Land first: a caller arriving after the answer starts
                    // a new flight (which sees the stored result).
                    drop(landed);
                    let _ = tx.send(Some(value));
                };
                // The flight's spans are children of the first caller's.
                let span = crate::trace::current();
                if span.is_none() {
                    tokio::spawn(flight);
                } else {
                    use tracing::Instrument as _;
                    tokio::spawn(flight.instrument(span));
                }
                answer
            }
        };
        let value = match answer.wait_for(Option::is_some).await {
            Ok(value) => value.clone(),
            Err(_) => None,
        };
        value.ok_or_else(|| {
            tracing::error!("a shared provider task stopped without an answer");
            Aborted
        })
    }

    /// How many flights are running.
    pub fn len(&self) -> usize {
        self.running.lock().len()
    }

    /// Whether no flight is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn callers_share_one_run_and_the_map_empties() {
        let flights: Arc<SingleFlight<i64, u32>> = Arc::default();
        let starts = Arc::new(AtomicU32::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let released = Arc::new(Mutex::new(Some(released)));
        let mut callers = Vec::new();
        for _ in 0..8 {
            let (flights, starts, released) = (flights.clone(), starts.clone(), released.clone());
            callers.push(tokio::spawn(async move {
                flights
                    .run(1, || {
                        let n = starts.fetch_add(1, Ordering::SeqCst) + 1;
                        let wait = released.lock().take();
                        async move {
                            if let Some(wait) = wait {
                                let _ = wait.await;
                            }
                            n * 10
                        }
                    })
                    .await
            }));
        }
        // One thread: yielding lets every caller join before the release.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(flights.len(), 1);
        release.send(()).unwrap();
        for caller in callers {
            assert_eq!(caller.await.unwrap(), Ok(10));
        }
        assert_eq!(starts.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_caller_does_not_stop_the_work() {
        let flights: SingleFlight<&'static str, ()> = SingleFlight::default();
        let done = Arc::new(AtomicU32::new(0));
        let counter = done.clone();
        let caller = flights.run("k", move || async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            counter.fetch_add(1, Ordering::SeqCst);
        });
        // The caller gives up long before the work ends.
        assert!(tokio::time::timeout(Duration::from_millis(1), caller)
            .await
            .is_err());
        for _ in 0..500 {
            if done.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_panicking_run_is_aborted_and_forgotten() {
        let flights: SingleFlight<u8, u8> = SingleFlight::default();
        let first = flights
            .run(7, || async {
                panic!("boom");
            })
            .await;
        assert_eq!(first, Err(Aborted));
        assert!(flights.is_empty());
        assert_eq!(flights.run(7, || async { 3 }).await, Ok(3));
        assert_eq!(
            detached(async { panic!("boom") }).await,
            Err::<(), _>(Aborted)
        );
    }

    #[tokio::test]
    async fn the_tracker_waits_for_work() {
        let tracker = Tracker::default();
        assert!(tracker.is_idle());
        let held = tracker.clone();
        assert!(!tracker.is_idle());
        assert!(!tracker.idle(Duration::from_millis(20)).await);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(held);
        });
        assert!(tracker.idle(Duration::from_secs(10)).await);
    }
}
