#![forbid(unsafe_code)]
//! `elements-bench`: see `elements_bench::cli`.

fn main() -> std::process::ExitCode {
    elements_bench::cli::main()
}
