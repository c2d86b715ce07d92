//! Architecture invariant: the xDS server knows nothing about Raft, sled or
//! Meridian's object model. Its only inputs are the `SnapshotSource` trait.

#[test]
fn xds_crate_does_not_depend_on_storage_or_the_model() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps: Vec<&str> = manifest
        .split("\n[")
        .filter(|section| section.starts_with("dependencies]"))
        .flat_map(|section| section.lines().skip(1))
        .filter_map(|line| line.split(['=', '.', ' ']).next())
        .filter(|name| !name.is_empty() && !name.starts_with('#'))
        .collect();
    assert!(!deps.is_empty(), "found the dependency list");
    for forbidden in [
        "openraft",
        "sled",
        "meridian-store",
        "meridian-model",
        "meridian-translate",
        "meridian-node",
        "meridian-peer",
    ] {
        assert!(
            !deps.contains(&forbidden),
            "meridian-xds must not depend on {forbidden}"
        );
    }
}
