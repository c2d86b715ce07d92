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
        .on_thread_start(block_sigpipe)
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

/// With SIGPIPE's default disposition (above), a write to a socket the
/// server closed would kill the CLI without a word: a server that refuses
/// the client's certificate closes the TLS connection, and the writev of
/// the next record raises SIGPIPE (writev has no MSG_NOSIGNAL). The
/// runtime's threads, which do the network I/O, block it, so the write
/// fails with EPIPE and the CLI reports the refusal; only printing from
/// the main thread still ends quietly on a closed pipe.
fn block_sigpipe() {
    // SAFETY: a sigset_t filled by sigemptyset/sigaddset, applied to the
    // calling thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
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
