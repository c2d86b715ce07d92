//! Architecture invariants from docs/ARCHITECTURE.md, checked against the
//! real dependency graph (`cargo metadata`) and the tree: a forbidden edge, a
//! crate missing from the code map, or a long file without a reason fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// crate -> the crates it must never depend on, directly or transitively
/// (normal dependencies: what ships).
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
    // translation itself must still not reach storage, consensus or the
    // xDS server's streams.
    (
        "meridian-translate",
        &[
            "sled",
            "openraft",
            "meridian-store",
            "meridian-proto",
            "meridian-xds",
        ],
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
            "meridian-node",
            "meridian-peer",
        ],
    ),
    (
        "meridian-peer",
        &[
            "meridian-model",
            "envoy-types",
            "meridian-translate",
            "meridian-xds",
        ],
    ),
    (
        "meridian-agent",
        &[
            "openraft",
            "sled",
            "meridian-store",
            "meridian-model",
            "envoy-types",
            "meridian-translate",
            "meridian-xds",
            "meridian-node",
        ],
    ),
    (
        "meridian-pki",
        &[
            "tokio",
            "tonic",
            "sled",
            "openraft",
            "envoy-types",
            "meridian-store",
            "meridian-model",
            "meridian-proto",
        ],
    ),
    // The TLS layer knows certificates and connections, never what flows
    // over them.
    (
        "meridian-tls",
        &[
            "openraft",
            "sled",
            "envoy-types",
            "meridian-store",
            "meridian-model",
            "meridian-translate",
            "meridian-xds",
            "meridian-node",
            "meridian-proto",
        ],
    ),
    // meridian-xds dev-depends on the test kit: an edge back would build
    // two copies of the xDS types.
    ("meridian-testkit", &["meridian-xds"]),
];

/// crate -> what its own code must not use (direct dependencies: openraft
/// itself pulls in clap, and prost's derive macro anyhow).
const FORBIDDEN_DIRECT: &[(&str, &[&str])] = &[
    // The node takes a `NodeConfig`; flags and files are the binary's job.
    ("meridian-node", &["clap"]),
];

/// What ships: the `meridian` binary and every library it is built from.
const PRODUCT: &[&str] = &[
    "meridian",
    "meridian-proto",
    "meridian-store",
    "meridian-peer",
    "meridian-model",
    "meridian-translate",
    "meridian-node",
    "meridian-xds",
    "meridian-agent",
    "meridian-pki",
    "meridian-tls",
    "meridian-cli-output",
];

/// Binaries and test-only crates: the only places `anyhow` may live.
const NOT_LIBRARIES: &[&str] = &[
    "meridian",
    "meridian-bench",
    "meridian-testkit",
    "meridian-tests",
    "meridian-xds-conformance",
];

/// Test and benchmark crates: never a normal dependency of what ships.
const LAB: &[&str] = &[
    "meridian-bench",
    "meridian-testkit",
    "meridian-tests",
    "meridian-chaos",
    "meridian-xds-conformance",
];

/// Crates that may read both the traffic model and the store's types: the
/// node (it joins them), and the binary (it decodes snapshot files for
/// `snapshot inspect|restore` and translates for `apply --dry-run`).
const MODEL_AND_STORE: &[&str] = &["meridian-node", "meridian"];

struct Workspace {
    members: BTreeMap<String, PathBuf>,
    /// What a bare `cargo run` / `cargo build` at the root builds.
    default_members: BTreeSet<String>,
    /// package -> its normal dependencies (names).
    normal: BTreeMap<String, BTreeSet<String>>,
    /// (package, direct normal dependency) -> the features the package turns on for it.
    features: BTreeMap<(String, String), Vec<String>>,
}

fn workspace() -> Workspace {
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
    let packages = meta["packages"].as_array().unwrap();
    let names: BTreeMap<&str, &str> = packages
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let member_ids: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    let default_ids: BTreeSet<&str> = meta["workspace_default_members"]
        .as_array()
        .map(|a| a.iter().map(|m| m.as_str().unwrap()).collect())
        .unwrap_or_default();
    let default_members = default_ids.iter().map(|id| names[id].to_string()).collect();
    let mut members = BTreeMap::new();
    let mut features = BTreeMap::new();
    for p in packages
        .iter()
        .filter(|p| member_ids.contains(p["id"].as_str().unwrap()))
    {
        let name = p["name"].as_str().unwrap().to_string();
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
        members.insert(name.clone(), manifest.parent().unwrap().to_path_buf());
        for d in p["dependencies"].as_array().unwrap() {
            if d["kind"].is_null() {
                let feats = d["features"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .collect();
                features.insert(
                    (name.clone(), d["name"].as_str().unwrap().to_string()),
                    feats,
                );
            }
        }
    }
    let mut normal = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let name = names[node["id"].as_str().unwrap()].to_string();
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
            .map(|d| names[d["pkg"].as_str().unwrap()].to_string())
            .collect();
        normal
            .entry(name)
            .or_insert_with(BTreeSet::new)
            .extend(deps);
    }
    Workspace {
        members,
        default_members,
        normal,
        features,
    }
}

impl Workspace {
    fn uses_directly(&self, krate: &str, dep: &str) -> bool {
        self.features
            .contains_key(&(krate.to_string(), dep.to_string()))
    }

    fn reachable(&self, from: &str) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(n) = stack.pop() {
            for d in self.normal.get(&n).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    stack.push(d.clone());
                }
            }
        }
        seen
    }
}

fn check(violations: Vec<String>) {
    assert!(
        violations.is_empty(),
        "architecture invariants broken (see docs/ARCHITECTURE.md):\n  {}",
        violations.join("\n  ")
    );
}

#[test]
fn crates_do_not_know_what_they_must_not_know() {
    let ws = workspace();
    let mut violations = Vec::new();
    for (krate, forbidden) in FORBIDDEN {
        assert!(
            ws.members.contains_key(*krate),
            "{krate} is not in the workspace"
        );
        let deps = ws.reachable(krate);
        violations.extend(
            forbidden
                .iter()
                .filter(|f| deps.contains(**f))
                .map(|f| format!("{krate} depends on {f}")),
        );
    }
    for (krate, forbidden) in FORBIDDEN_DIRECT {
        violations.extend(
            forbidden
                .iter()
                .filter(|f| ws.uses_directly(krate, f))
                .map(|f| format!("{krate} uses {f}")),
        );
    }
    check(violations);
}

#[test]
fn anyhow_lives_only_in_binaries_and_tests() {
    let ws = workspace();
    let violations = ws
        .members
        .keys()
        .filter(|m| !NOT_LIBRARIES.contains(&m.as_str()))
        .filter(|m| ws.uses_directly(m, "anyhow"))
        .map(|m| format!("library {m} depends on anyhow (use thiserror)"))
        .collect();
    check(violations);
}

#[test]
fn the_product_links_no_test_lab() {
    let ws = workspace();
    let mut violations = Vec::new();
    for krate in PRODUCT {
        assert!(
            ws.members.contains_key(*krate),
            "{krate} is not in the workspace"
        );
        let deps = ws.reachable(krate);
        violations.extend(
            LAB.iter()
                .filter(|l| deps.contains(**l))
                .map(|l| format!("{krate} depends on {l}")),
        );
        // Product crates only reach product crates (checked above), so a
        // direct edge is the only way to turn the xDS test client on.
        if let Some(f) = ws
            .features
            .get(&(krate.to_string(), "meridian-xds".to_string()))
        {
            if f.iter().any(|f| f == "testing") {
                violations.push(format!("{krate} turns on meridian-xds/testing"));
            }
        }
    }
    check(violations);
}

/// README's first command is `cargo run --release -- dev`: with a second
/// binary in the workspace (meridian-bench), only `default-members` keeps it
/// unambiguous.
#[test]
fn a_bare_cargo_run_runs_the_product() {
    let ws = workspace();
    assert_eq!(
        ws.default_members,
        BTreeSet::from(["meridian".to_string()]),
        "the root Cargo.toml's default-members must be exactly crates/meridian"
    );
}

#[test]
fn only_the_node_and_the_binary_read_both_model_and_store() {
    let ws = workspace();
    let violations = ws
        .members
        .keys()
        .filter(|m| !MODEL_AND_STORE.contains(&m.as_str()) && !LAB.contains(&m.as_str()))
        .filter(|m| {
            let deps = ws.reachable(m);
            deps.contains("meridian-model") && deps.contains("meridian-store")
        })
        .map(|m| format!("{m} depends on both meridian-model and meridian-store"))
        .collect();
    check(violations);
}

#[test]
fn every_crate_has_a_code_map_entry() {
    let ws = workspace();
    let root = meridian_tests::workspace_root();
    let doc = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let violations = ws
        .members
        .values()
        .map(|dir| dir.strip_prefix(&root).unwrap().display().to_string())
        .filter(|rel| {
            !doc.contains(&format!("### `{rel}`")) && !doc.contains(&format!("### `{rel}/`"))
        })
        .map(|rel| format!("docs/ARCHITECTURE.md has no code map heading \"### `{rel}`\""))
        .collect();
    check(violations);
}

/// Files stay small enough to read in one sitting; a longer one says at its
/// top why it is long (a comment within its first lines that contains
/// "long because").
#[test]
fn long_files_say_why() {
    const MAX_LINES: usize = 500;
    let ws = workspace();
    let root = meridian_tests::workspace_root();
    let mut violations = Vec::new();
    for dir in ws.members.values() {
        let mut files = Vec::new();
        rust_files(&dir.join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let lines = text.lines().count();
            let says_why = text.lines().take(15).any(|l| {
                l.trim_start().starts_with("//") && l.to_lowercase().contains("long because")
            });
            if lines > MAX_LINES && !says_why {
                let rel = f.strip_prefix(&root).unwrap_or(&f).display().to_string();
                violations.push(format!(
                    "{rel} has {lines} lines and no \"long because\" at its top"
                ));
            }
        }
    }
    check(violations);
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The node's modules import only downwards (services → seams → core): its
/// module graph, read from `crate::` paths, has no cycle.
#[test]
fn the_nodes_modules_form_no_cycle() {
    let src = meridian_tests::workspace_root().join("crates/meridian-node/src");
    let graph = module_graph(&src);
    assert!(graph.len() > 5, "read the node's modules: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "meridian-node modules import each other in a circle: {}",
            cycle.join(" -> ")
        );
    }
    // The check can fail: a graph with a back edge is caught.
    let mut broken = graph.clone();
    broken
        .entry("error".into())
        .or_default()
        .insert("node".into());
    broken
        .entry("node".into())
        .or_default()
        .insert("error".into());
    assert!(find_cycle(&broken).is_some());
}

/// Top-level module -> the other top-level modules its files name as `crate::X`.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel.iter().next().unwrap().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let mut deps = BTreeSet::new();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                deps.extend(group.split(',').filter_map(|p| first_ident(p.trim())));
            } else {
                deps.extend(first_ident(rest));
            }
        }
        deps.remove(&top);
        graph.entry(top).or_default().extend(deps);
    }
    graph
}

fn first_ident(s: &str) -> Option<String> {
    let id: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == n) {
            let mut cycle = path[at..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

/// The documents are whole: an emptied or half-merged doc once landed
/// unnoticed (a merge kept neither side), and every doc a reader is sent to
/// from README or ARCHITECTURE.md exists.
#[test]
fn the_docs_are_whole() {
    let root = meridian_tests::workspace_root();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.push(root.join("crates/meridian-xds/PROTOCOL.md"));
    docs.push(root.join("README.md"));
    let mut violations = Vec::new();
    for doc in &docs {
        let rel = doc.strip_prefix(&root).unwrap().display().to_string();
        let text = std::fs::read_to_string(doc).unwrap();
        if text.lines().filter(|l| !l.trim().is_empty()).count() < 20 {
            violations.push(format!("{rel} has fewer than 20 lines of text"));
        }
        if !text.starts_with('#') {
            violations.push(format!("{rel} does not start with a heading"));
        }
        for marker in ["<<<<<<< ", ">>>>>>> ", "\n=======\n"] {
            if text.contains(marker) {
                violations.push(format!("{rel} holds a merge conflict marker {marker:?}"));
            }
        }
    }
    for source in ["README.md", "docs/ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(root.join(source)).unwrap();
        for (i, _) in text.match_indices("docs/") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/-_.".contains(*c))
                .collect();
            let name = name.trim_end_matches('.');
            if name.ends_with(".md") && !root.join(name).exists() {
                violations.push(format!("{source} links {name}, which does not exist"));
            }
        }
    }
    check(violations);
}
