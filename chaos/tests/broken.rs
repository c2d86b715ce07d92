//! The suite can fail: with a deliberately broken client (local reads
//! recorded as linearizable) and a minority cut off from the majority, the
//! runner must report stale reads and exit 1. Needs root, like the suite.

use std::process::Command;

#[test]
fn local_reads_recorded_as_linearizable_fail_the_suite() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian-chaos"))
        .args([
            "--scenario",
            "partition-minority",
            "--seed",
            "7",
            "--duration",
            "15s",
        ])
        .args(["--broken", "local-reads"])
        .output()
        .expect("run meridian-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a failed check\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("StaleRead"),
        "expected a stale read to be named\n{stdout}"
    );
    assert!(stdout.contains("1 failed"), "{stdout}");
}

#[test]
fn the_same_scenario_passes_with_linearizable_reads() {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian-chaos"))
        .args([
            "--scenario",
            "partition-minority",
            "--seed",
            "7",
            "--duration",
            "15s",
        ])
        .output()
        .expect("run meridian-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
}
