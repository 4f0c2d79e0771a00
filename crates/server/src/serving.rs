//! Serving threads: one single-threaded tokio runtime per core, each serving
//! the connections the listener hands it (issue 19).
//!
//! With tokio's work-stealing runtime, the workers of a busy server wake
//! each other to steal tasks: measured on 2 cores, one worker instead of
//! two cost 19% less CPU per `GET /credentials` (BENCHMARKS.md, sixth
//! session). Here each accepted connection is moved to one serving thread
//! (the one of the CPU its packets arrive on, within limits:
//! [`crate::placement`]) and stays there: its requests never change threads, and a
//! thread with nothing to do sleeps in `epoll_wait` until one of its own
//! connections has bytes. The accept loop, the background tasks (refresh,
//! webhooks, health checks) and the store's pools stay on the main
//! runtime.
//!
//! `TOKIO_WORKER_THREADS`, which tokio reads for the main runtime's
//! workers, sets the number of serving threads too.
//!
//! What this changes for code that runs in a request: `tokio::spawn` puts
//! the task on that request's serving thread (it runs while the thread
//! lives: the threads stop only when [`ServingThreads`] is dropped, after
//! the shutdown drained refreshes); nothing in a request may block its
//! thread (it would stall the thread's other connections, where a
//! work-stealing runtime would have moved them); `block_in_place` is not
//! available (a single-threaded runtime refuses it).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// The running serving threads; dropping it stops and joins them (tasks
/// still on them are dropped).
pub struct ServingThreads {
    handles: Vec<Handle>,
    /// Each thread's own router ([`ServingThreads::with_routers`]).
    routers: Vec<Router>,
    /// Which thread takes the next connection.
    policy: parking_lot::Mutex<crate::placement::Policy>,
    /// Connections open on each thread ([`Seat`]s not yet dropped).
    open: Arc<[AtomicUsize]>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl ServingThreads {
    /// Starts `count` threads (at least one), each running its own
    /// single-threaded runtime until dropped.
    pub fn start(count: usize) -> io::Result<ServingThreads> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("elements-http-{i}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            let _ = stopped.wait_for(|stop| *stop).await;
                        });
                    })?,
            );
        }
        let open = handles.iter().map(|_| AtomicUsize::new(0)).collect();
        let policy = parking_lot::Mutex::new(crate::placement::Policy::new(handles.len()));
        Ok(ServingThreads {
            handles,
            routers: Vec::new(),
            policy,
            open,
            stop,
            threads,
        })
    }

    /// One per available core, or as many as `TOKIO_WORKER_THREADS` says
    /// (the variable tokio's own runtime reads for its worker count).
    pub fn per_core() -> io::Result<ServingThreads> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self::start(count_from(
            std::env::var("TOKIO_WORKER_THREADS").ok().as_deref(),
            cores,
        ))
    }

    /// Gives each thread a router of its own: `first` to the first
    /// thread, one made by `make` (over [`crate::AppState::replica`]) to
    /// each other. The route table, the state and the reference counts a
    /// request clones and drops then stay with one thread instead of being
    /// memory every thread writes (issue 19).
    pub fn with_routers(mut self, first: Router, make: impl Fn() -> Router) -> Self {
        let others = self.handles.len().saturating_sub(1);
        self.routers = std::iter::once(first)
            .chain((0..others).map(|_| make()))
            .collect();
        self
    }

    /// Where a new connection is served: the thread
    /// [`crate::placement::Policy`] picks for the CPU its packets arrive on
    /// (`incoming_cpu`, the socket's `SO_INCOMING_CPU`; round robin when not
    /// known), given each thread's open connections. The [`Seat`] counts the
    /// connection on its thread until dropped.
    pub fn place(&self, incoming_cpu: Option<usize>) -> Placement<'_> {
        let open: Vec<usize> = self
            .open
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect();
        let i = self.policy.lock().choose(incoming_cpu, &open);
        self.open[i].fetch_add(1, Ordering::Relaxed);
        Placement {
            handle: &self.handles[i],
            router: self.routers.get(i),
            seat: Seat {
                open: self.open.clone(),
                index: i,
            },
        }
    }
}

/// A connection's thread ([`ServingThreads::place`]).
pub struct Placement<'a> {
    /// The thread's runtime.
    pub handle: &'a Handle,
    /// Its router, if [`ServingThreads::with_routers`] gave it one.
    pub router: Option<&'a Router>,
    /// Counts the connection on the thread while it lives.
    pub seat: Seat,
}

/// One open connection on a serving thread; dropping it frees the seat.
pub struct Seat {
    open: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.open[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The number of serving threads: `TOKIO_WORKER_THREADS` when it is a
/// positive number, else `cores`.
fn count_from(variable: Option<&str>, cores: usize) -> usize {
    variable
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(cores)
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_the_variable_when_it_is_a_positive_number() {
        assert_eq!(count_from(None, 2), 2);
        assert_eq!(count_from(Some("3"), 2), 3);
        assert_eq!(count_from(Some(" 1 "), 2), 1);
        assert_eq!(count_from(Some("0"), 2), 2);
        assert_eq!(count_from(Some("many"), 2), 2);
    }

    #[test]
    fn connections_go_round_robin_and_tasks_run_on_the_serving_threads() {
        let threads = ServingThreads::start(2).unwrap();
        let names: Vec<String> = (0..4)
            .map(|_| {
                let (tx, rx) = std::sync::mpsc::channel();
                threads.place(None).handle.spawn(async move {
                    let _ = tx.send(std::thread::current().name().map(str::to_owned));
                });
                rx.recv().unwrap().unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "elements-http-0",
                "elements-http-1",
                "elements-http-0",
                "elements-http-1"
            ]
        );
        drop(threads);
    }

    #[test]
    fn seats_count_open_connections_per_thread_until_dropped() {
        let threads = ServingThreads::start(2).unwrap();
        let counts = |t: &ServingThreads| -> Vec<usize> {
            t.open.iter().map(|o| o.load(Ordering::Relaxed)).collect()
        };
        // Packets on CPU 3: thread 1 (3 % 2), while within the slack.
        let seats: Vec<Seat> = (0..3).map(|_| threads.place(Some(3)).seat).collect();
        assert_eq!(counts(&threads), [0, 3]);
        drop(seats);
        assert_eq!(counts(&threads), [0, 0]);
    }
}
