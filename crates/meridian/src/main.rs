//! The `meridian` binary: the controller node (`server`, `dev`), the operator
//! CLI and the benchmarks. Each subcommand lives in its own module under
//! `cli/`; this file only parses flags and dispatches.

mod cli;
mod client;
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    match rt.block_on(cli::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = exit::code_for(&e);
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}
