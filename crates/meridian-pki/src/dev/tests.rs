use std::path::Path;

use super::*;
use crate::{load, Loaded};

fn load_leaf(dir: &Path, stem: &str) -> Loaded {
    load(
        &dir.join(format!("{stem}.pem")),
        &dir.join(format!("{stem}-key.pem")),
        &dir.join(CA_CERT),
        &TrustDomain::default(),
    )
    .unwrap()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_ca_then_leaves_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = init_ca(
        dir.path(),
        &TrustDomain::default(),
        Validity::ca_default(),
        false,
    )
    .unwrap();
    assert_eq!(ca.uri, "spiffe://meridian.local");
    let req = LeafRequest {
        identity: Identity::Node { id: 3 },
        hosts: vec!["127.0.0.1".into(), "node3.us-east.svc".into()],
        validity: Validity::leaf_default(),
    };
    let node = issue(dir.path(), &req, false).unwrap();
    assert_eq!(node.uri, "spiffe://meridian.local/node/3");
    assert_eq!(node.cert, dir.path().join("node-3.pem"));
    assert_eq!(node.key, dir.path().join("node-3-key.pem"));
    assert_eq!(
        load_leaf(dir.path(), "node-3").info.not_after,
        node.not_after
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&node.key), 0o600);
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&node.cert), 0o644);
    }
}

#[test]
fn keys_are_never_replaced_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let domain = TrustDomain::default();
    init_ca(dir.path(), &domain, Validity::ca_default(), false).unwrap();
    let before = std::fs::read(dir.path().join(CA_KEY)).unwrap();
    let err = init_ca(dir.path(), &domain, Validity::ca_default(), false).unwrap_err();
    assert!(
        matches!(&err, Error::Exists { path } if path.ends_with("ca.pem")),
        "{err}"
    );
    assert_eq!(std::fs::read(dir.path().join(CA_KEY)).unwrap(), before);

    let req = LeafRequest::new(Identity::Agent {
        cluster: "east".into(),
    });
    issue(dir.path(), &req, false).unwrap();
    let err = issue(dir.path(), &req, false).unwrap_err().to_string();
    assert!(err.contains("cluster-east.pem already exists"), "{err}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = dir.path().join("cluster-east-key.pem");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        issue(dir.path(), &req, true).unwrap();
        assert_eq!(
            mode(&key),
            0o600,
            "a forced rewrite tightens the key's mode again"
        );
    }
    init_ca(dir.path(), &domain, Validity::ca_default(), true).unwrap();
    assert_ne!(std::fs::read(dir.path().join(CA_KEY)).unwrap(), before);
}

#[test]
fn leaves_need_a_ca_first() {
    let dir = tempfile::tempdir().unwrap();
    let err = issue(
        dir.path(),
        &LeafRequest::new(Identity::Node { id: 1 }),
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("ca.pem"), "{err}");
}

#[test]
fn a_whole_development_set() {
    let dir = tempfile::tempdir().unwrap();
    let set = DevSet {
        nodes: 9,
        clusters: vec!["us-east".into(), "eu-west".into(), "ap-south".into()],
        groups: vec!["default".into(), "edge".into()],
        operators: vec![
            ("admin".into(), Role::Admin),
            ("ci".into(), Role::Editor),
            ("dash".into(), Role::Viewer),
        ],
        ..DevSet::default()
    };
    let written = write_set(dir.path(), &set, false).unwrap();
    assert_eq!(written.len(), 1 + 9 + 3 + 2 + 3);
    for id in 1..=9 {
        assert_eq!(
            load_leaf(dir.path(), &format!("node-{id}")).info.identity,
            Identity::Node { id }
        );
    }
    assert_eq!(
        load_leaf(dir.path(), "cluster-eu-west").info.identity,
        Identity::Agent {
            cluster: "eu-west".into()
        }
    );
    assert_eq!(
        load_leaf(dir.path(), "proxy-edge").info.identity,
        Identity::Proxy {
            group: "edge".into()
        }
    );
    assert_eq!(
        load_leaf(dir.path(), "operator-dash").info.identity,
        Identity::Operator {
            name: "dash".into(),
            role: Role::Viewer
        }
    );

    // A second run changes nothing, not even the files that would be new.
    let node1 = std::fs::read(dir.path().join("node-1-key.pem")).unwrap();
    let more = DevSet {
        clusters: vec!["new-one".into()],
        ..set.clone()
    };
    assert!(matches!(
        write_set(dir.path(), &more, false),
        Err(Error::Exists { .. })
    ));
    assert!(!dir.path().join("cluster-new-one.pem").exists());
    assert_eq!(
        std::fs::read(dir.path().join("node-1-key.pem")).unwrap(),
        node1
    );
}

#[test]
fn a_bad_name_in_a_set_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let set = DevSet {
        clusters: vec!["Bad_Name".into()],
        ..DevSet::default()
    };
    let err = write_set(dir.path(), &set, false).unwrap_err().to_string();
    assert!(err.contains("cluster name \"Bad_Name\""), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
