//! Serving threads: one single-threaded tokio runtime per core, each serving
//! the connections the listener hands it (issue 19).
//!
//! With tokio's work-stealing runtime, the workers of a busy server wake
//! each other to steal tasks: measured on 2 cores, one worker instead of
//! two cost 19% less CPU per `GET /credentials` (BENCHMARKS.md, sixth
//! session). Here each accepted connection is moved to one serving thread
//! (round robin) and stays there: its requests never change threads, and a
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
    next: AtomicUsize,
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
        Ok(ServingThreads {
            handles,
            routers: Vec::new(),
            next: AtomicUsize::new(0),
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

    /// The runtime of the next connection (round robin), and its thread's
    /// router if [`ServingThreads::with_routers`] gave it one.
    pub fn next(&self) -> (&Handle, Option<&Router>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        (&self.handles[i], self.routers.get(i))
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
                threads.next().0.spawn(async move {
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
}
