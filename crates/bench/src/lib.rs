//! The benchmark harness of *elements*: load scenarios against the real
//! `elements serve` binary and a bare reference server, with figures and
//! ratios judged against the project's performance targets.
//!
//! `cargo run --release -p elements-bench -- all` runs everything (see
//! `BENCHMARKS.md` at the repository root); criterion micro-benchmarks are in
//! `benches/micro.rs` and one request through the full router, in-process,
//! in `benches/router.rs` (`cargo bench -p elements-bench`).
#![forbid(unsafe_code)]

pub mod cli;
pub mod http;
pub mod load;
pub mod procs;
pub mod reference;
pub mod report;
pub mod scenarios;
