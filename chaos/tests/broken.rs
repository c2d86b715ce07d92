//! The suite can fail: with a deliberately broken client (local reads
//! recorded as linearizable) and a minority cut off from the majority, the
//! runner must report stale reads and exit 1. Either way it deletes every
//! namespace it made. Needs root, like the suite.

use std::process::{Command, Output, Stdio};

const SCENARIO: &[&str] = &[
    "--scenario",
    "partition-minority",
    "--seed",
    "7",
    "--duration",
    "15s",
];

/// Runs the suite; returns its output and the namespaces it left behind.
fn run(extra: &[&str]) -> (Output, Vec<String>) {
    run_with(SCENARIO, extra)
}

fn run_with(scenario: &[&str], extra: &[&str]) -> (Output, Vec<String>) {
    let child = Command::new(env!("CARGO_BIN_EXE_meridian-chaos"))
        .args(scenario)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meridian-chaos");
    let prefix = format!("mch{}", child.id());
    let out = child.wait_with_output().expect("wait for meridian-chaos");
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let left = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    (out, left)
}

/// Runs the suite, which must report a failed check (exit 1) and delete
/// every namespace it made; returns its standard output.
fn must_fail(scenario: &[&str], extra: &[&str]) -> String {
    let (out, left) = run_with(scenario, extra);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failed check\n{stdout}\n{stderr}"
    );
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    stdout
}

#[test]
fn local_reads_recorded_as_linearizable_fail_the_suite() {
    let stdout = must_fail(SCENARIO, &["--broken", "local-reads"]);
    assert!(
        stdout.contains("StaleRead"),
        "expected a stale read to be named\n{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
}

#[test]
fn the_same_scenario_passes_with_linearizable_reads() {
    let (out, left) = run(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
}

/// The data-plane check can fail: the agent knows node 1 only and has a
/// 5 s lease; node 1 (the leader) is killed for 5.8 s (seed 15), so the
/// new leader expires the lease, the `drop` policy takes the endpoints out
/// of Envoy's EDS, and requests through Envoy fail; the runner must say so
/// and exit 1.
#[test]
fn an_agent_pinned_to_a_dead_controller_fails_the_data_plane_check() {
    let stdout = must_fail(
        &[
            "--scenario",
            "kill-leader",
            "--seed",
            "15",
            "--duration",
            "10s",
        ],
        &["--broken", "pinned-agent"],
    );
    assert!(
        stdout.contains("requests through Envoy failed"),
        "expected failed requests to be named\n{stdout}"
    );
}
