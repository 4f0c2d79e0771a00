#![forbid(unsafe_code)]
//! `elements`: the connector registry and OAuth broker.

use std::process::ExitCode;

mod access_log;
mod cli;
mod log_writer;
mod otel;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
