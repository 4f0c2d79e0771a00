//! Which serving thread takes a new connection (issue 19).
//!
//! A connection stays on the serving thread it is given ([`crate::serving`]),
//! so the choice is made once, at accept. Round robin spreads connections
//! evenly but ignores where their packets arrive: a client thread's
//! connections end up split over every serving thread, and each of its
//! requests then wakes a thread on another core. Measured with wrk's two
//! threads on the server's two cores (BENCHMARKS.md, eleventh session): in
//! the rounds where each wrk thread's connections happened to land on one
//! serving thread, `oauth/url` ran at the bare handler's rate (~130,000 to
//! ~140,000 requests/s); in the rounds where they were mixed, at ~100,000.
//!
//! So a connection goes to the thread of the CPU its packets arrive on (the
//! socket's `SO_INCOMING_CPU`, which Linux sets from the CPU that processed
//! its latest packet: at accept, its handshake's or its first request's;
//! CPU `c` maps to thread `c % threads`), the locality that
//! servers reading RSS/RPS receive queues use, with two guards:
//!
//! - **Balance.** A thread takes its CPU's connection only while it holds
//!   at most [`SLACK`] more open connections than the least busy thread;
//!   past that, the least busy thread takes it. So no signal can pile more
//!   than [`SLACK`] extra connections on one thread. Measured with 20
//!   rounds each (`scripts/profile/split.sh`): a slack of 4 kept almost no
//!   client thread's connections together (0 of 20 rounds at 120,000
//!   requests/s or more, median 102,250), 8 gave 9 of 20 (median 106,611),
//!   16 gave 5 of 20 (median 105,088) with up to twice the imbalance;
//!   round robin 1 of 20 (median 102,032). What makes a round fast is one
//!   serving thread holding only one wrk thread's connections.
//! - **A signal worth following.** When the recent connections all came
//!   in on one thread's CPUs (one receive queue, one client thread: more
//!   than 3/4 of the last [`WINDOW`]), the CPU says nothing about where the
//!   clients are, and connections go to the least busy thread instead: the
//!   even spread round robin gave.
//!
//! Where the CPU is not known (not Linux, or the option fails), round
//! robin, as before.

use std::collections::VecDeque;

/// How many more open connections than the least busy thread the thread of
/// a connection's CPU may hold and still take it.
pub const SLACK: usize = 8;

/// How many recent connections the signal check looks at.
pub const WINDOW: usize = 64;

/// The fewest recent connections the signal check judges on: before that,
/// the CPU is followed (under [`SLACK`]).
const MIN_JUDGED: usize = 8;

/// The placement policy's memory: the serving-thread buckets of the last
/// [`WINDOW`] connections' CPUs, and the round robin position.
#[derive(Debug)]
pub struct Policy {
    threads: usize,
    recent: VecDeque<usize>,
    per_bucket: Vec<usize>,
    next: usize,
}

impl Policy {
    /// A policy for `threads` serving threads (at least one).
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        Policy {
            threads,
            recent: VecDeque::with_capacity(WINDOW),
            per_bucket: vec![0; threads],
            next: 0,
        }
    }

    /// The thread for a new connection whose packets arrive on
    /// `incoming_cpu`, given each thread's open connections (`open`, one
    /// count per thread).
    pub fn choose(&mut self, incoming_cpu: Option<usize>, open: &[usize]) -> usize {
        debug_assert_eq!(open.len(), self.threads);
        let Some(cpu) = incoming_cpu else {
            let i = self.next % self.threads;
            self.next = self.next.wrapping_add(1);
            return i;
        };
        let preferred = cpu % self.threads;
        let followed = self.signal_is_spread();
        self.remember(preferred);
        let least = self.least_busy(open);
        if followed && open[preferred] <= open[least] + SLACK {
            preferred
        } else {
            least
        }
    }

    /// Whether the recent CPUs are spread over threads: fewer than
    /// [`MIN_JUDGED`] seen, or no thread's share above 3/4.
    fn signal_is_spread(&self) -> bool {
        let seen = self.recent.len();
        if seen < MIN_JUDGED || self.threads == 1 {
            return true;
        }
        let most = self.per_bucket.iter().copied().max().unwrap_or(0);
        most * 4 <= seen * 3
    }

    fn remember(&mut self, bucket: usize) {
        if self.recent.len() == WINDOW {
            if let Some(old) = self.recent.pop_front() {
                self.per_bucket[old] -= 1;
            }
        }
        self.recent.push_back(bucket);
        self.per_bucket[bucket] += 1;
    }

    /// The thread with the fewest open connections; ties go round robin,
    /// so an idle server does not fill thread 0 first.
    fn least_busy(&mut self, open: &[usize]) -> usize {
        let fewest = open.iter().copied().min().unwrap_or(0);
        let start = self.next % self.threads;
        self.next = self.next.wrapping_add(1);
        (0..self.threads)
            .map(|k| (start + k) % self.threads)
            .find(|&i| open[i] == fewest)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places connections with these CPUs, all staying open; the open
    /// counts per thread, and each connection's thread.
    fn place(policy: &mut Policy, cpus: &[usize]) -> (Vec<usize>, Vec<usize>) {
        let mut open = vec![0; policy.threads];
        let mut chosen = Vec::new();
        for &cpu in cpus {
            let i = policy.choose(Some(cpu), &open);
            open[i] += 1;
            chosen.push(i);
        }
        (open, chosen)
    }

    #[test]
    fn two_client_threads_on_two_cpus_keep_their_connections_apart() {
        let mut policy = Policy::new(2);
        // Earlier connections came in on both CPUs (and are closed).
        let earlier: Vec<usize> = (0..32).map(|k| k % 2).collect();
        place(&mut policy, &earlier);
        // One client thread opens 16 connections from CPU 1, then another
        // 16 from CPU 0 (how wrk -t2 -c32 connects).
        let cpus: Vec<usize> = [1; 16].into_iter().chain([0; 16]).collect();
        let (open, chosen) = place(&mut policy, &cpus);
        // Thread 1 serves the first client only, as many of its
        // connections as the slack allows; the second client's all go to
        // thread 0, with the rest of the first's.
        let first_on_1 = chosen[..16].iter().filter(|&&i| i == 1).count();
        assert_eq!(open, [32 - first_on_1, first_on_1]);
        assert!(first_on_1 > SLACK, "{chosen:?}");
        assert!(chosen[16..].iter().all(|&i| i == 0), "{chosen:?}");
        assert!(open[0].abs_diff(open[1]) <= SLACK, "{open:?}");
    }

    #[test]
    fn one_cpu_for_every_connection_spreads_them_evenly() {
        // One receive queue: every connection comes in on CPU 0.
        let mut policy = Policy::new(2);
        let (open, _) = place(&mut policy, &[0; 32]);
        assert!(open[0].abs_diff(open[1]) <= MIN_JUDGED, "{open:?}");
        let (open, _) = place(&mut Policy::new(2), &[0; 1000]);
        assert!(open[0].abs_diff(open[1]) <= MIN_JUDGED, "{open:?}");
    }

    #[test]
    fn no_thread_gets_more_than_the_slack_over_the_least_busy() {
        // A spread signal whose CPUs nonetheless favour thread 1: 3 of 4.
        let cpus: Vec<usize> = (0..400).map(|k| usize::from(k % 4 != 0)).collect();
        let mut policy = Policy::new(2);
        let mut open = [0usize; 2];
        for cpu in cpus {
            let i = policy.choose(Some(cpu), &open);
            open[i] += 1;
            assert!(open[i] <= open[1 - i] + SLACK + 1, "{open:?}");
        }
    }

    #[test]
    fn cpus_map_onto_threads_modulo_their_count() {
        let mut policy = Policy::new(2);
        let (_, chosen) = place(&mut policy, &[3, 2, 5, 4]);
        assert_eq!(chosen, [1, 0, 1, 0]);
        // One thread: everything on it.
        let (open, _) = place(&mut Policy::new(1), &[0, 1, 2, 3]);
        assert_eq!(open, [4]);
    }

    #[test]
    fn without_a_cpu_connections_go_round_robin() {
        let mut policy = Policy::new(3);
        let chosen: Vec<usize> = (0..6).map(|_| policy.choose(None, &[0, 0, 0])).collect();
        assert_eq!(chosen, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn closed_connections_free_their_thread() {
        // Thread 1 is far over the slack only while its connections are open.
        let mut policy = Policy::new(2);
        assert_eq!(policy.choose(Some(1), &[0, 40]), 0);
        assert_eq!(policy.choose(Some(1), &[0, SLACK]), 1);
    }
}
