//! The `meridian` binary: the controller node (`server`, `dev`), the agent
//! and the operator CLI (the benchmarks are `meridian-bench`). Each subcommand lives in its own module under
//! `cli/`; this file only parses flags and dispatches.

mod cli;
mod client;
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    if !args.command.is_long_running() {
        quiet_broken_pipe();
    }
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

/// Rust ignores SIGPIPE, so `println!` into a closed pipe (`meridian
/// completion bash | head -1`) panics. A command that only prints gets the
/// default disposition back and ends quietly, like any Unix tool. Servers
/// and agents keep the error instead: a closed log pipe must not kill a
/// controller, and their sockets need EPIPE as an error, not a signal.
fn quiet_broken_pipe() {
    // SAFETY: called before any thread is spawned; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
