//! Architecture invariants from docs/ARCHITECTURE.md, checked against the
//! real dependency graph (`cargo metadata`): a forbidden edge fails the build.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// crate -> the crates it must never depend on, directly or transitively.
const FORBIDDEN: &[(&str, &[&str])] = &[
    (
        "meridian-model",
        &[
            "tokio",
            "tonic",
            "sled",
            "openraft",
            "envoy-types",
            "meridian-store",
        ],
    ),
    // envoy-types carries tonic (and so tokio) for its service traits; the
    // translation itself must still not reach storage or consensus.
    (
        "meridian-translate",
        &["sled", "openraft", "meridian-store", "meridian-proto"],
    ),
    (
        "meridian-store",
        &["tonic", "meridian-model", "envoy-types", "meridian-proto"],
    ),
    (
        "meridian-xds",
        &[
            "sled",
            "openraft",
            "meridian-store",
            "meridian-model",
            "meridian-translate",
        ],
    ),
    ("meridian-peer", &["meridian-model", "envoy-types"]),
    // The product binary carries neither the benchmarks nor the test kit
    // (whose clusters and Envoy launchers are for tests and meridian-bench).
    ("meridian", &["meridian-testkit", "meridian-bench"]),
    // meridian-xds dev-depends on the test kit: an edge back would build
    // two copies of the xDS types.
    ("meridian-testkit", &["meridian-xds"]),
    (
        "meridian-pki",
        &["tokio", "tonic", "sled", "openraft", "envoy-types", "meridian-store", "meridian-model", "meridian-proto"],
    ),
    (
        "meridian-agent",
        &["openraft", "sled", "meridian-store", "meridian-model", "envoy-types", "meridian-translate", "meridian-xds", "meridian-node"],
    ),
];

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(meridian_tests::workspace_root())
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: BTreeMap<String, String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap().to_string(),
                p["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut g = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = names[node["id"].as_str().unwrap()].clone();
        // Normal (non-dev, non-build) dependencies only.
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| names[d["pkg"].as_str().unwrap()].clone())
            .collect();
        g.entry(name).or_insert_with(BTreeSet::new).extend(deps);
    }
    g
}

fn reachable(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_string()];
    while let Some(n) = stack.pop() {
        for d in g.get(&n).into_iter().flatten() {
            if seen.insert(d.clone()) {
                stack.push(d.clone());
            }
        }
    }
    seen
}

#[test]
fn crates_do_not_know_what_they_must_not_know() {
    let g = graph();
    let mut violations = Vec::new();
    for (krate, forbidden) in FORBIDDEN {
        assert!(g.contains_key(*krate), "{krate} is not in the workspace");
        let deps = reachable(&g, krate);
        for f in *forbidden {
            if deps.contains(*f) {
                violations.push(format!("{krate} depends on {f}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "architecture invariants broken (see docs/ARCHITECTURE.md): {violations:?}"
    );
}
