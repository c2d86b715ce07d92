use std::path::Path;

use clap::Parser;
use meridian_pki::{load, Identity, Role, TrustDomain};

use super::*;

/// The subcommand with the global flags, without the rest of the command
/// tree.
#[derive(Parser)]
struct Certs {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: CertsCommand,
}

fn certs(dir: &Path, args: &[&str]) -> Result<()> {
    let dir = dir.to_str().unwrap();
    let mut argv = vec!["certs"];
    argv.extend_from_slice(&args[..1]);
    argv.extend(["--dir", dir]);
    argv.extend_from_slice(&args[1..]);
    let parsed = Certs::try_parse_from(argv)?;
    run(parsed.command, &parsed.global)
}

fn identity(dir: &Path, stem: &str) -> Identity {
    let loaded = load(
        &dir.join(format!("{stem}.pem")),
        &dir.join(format!("{stem}-key.pem")),
        &dir.join("ca.pem"),
        &TrustDomain::default(),
    )
    .unwrap();
    loaded.info.identity
}

#[test]
fn a_ca_then_one_certificate_of_each_kind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir, &["init-ca"]).unwrap();
    certs(
        dir,
        &[
            "node",
            "--id",
            "3",
            "--host",
            "127.0.0.1",
            "--host",
            "node3.us-east.svc",
        ],
    )
    .unwrap();
    certs(dir, &["agent", "--cluster", "us-east"]).unwrap();
    certs(dir, &["envoy", "--group", "edge", "--valid-for", "90d"]).unwrap();
    certs(
        dir,
        &[
            "operator", "--name", "alice", "--role", "admin", "-o", "json",
        ],
    )
    .unwrap();

    assert_eq!(identity(dir, "node-3"), Identity::Node { id: 3 });
    assert_eq!(
        identity(dir, "cluster-us-east"),
        Identity::Agent {
            cluster: "us-east".into()
        }
    );
    assert_eq!(
        identity(dir, "proxy-edge"),
        Identity::Proxy {
            group: "edge".into()
        }
    );
    assert_eq!(
        identity(dir, "operator-alice"),
        Identity::Operator {
            name: "alice".into(),
            role: Role::Admin
        }
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for key in ["ca-key.pem", "node-3-key.pem", "operator-alice-key.pem"] {
            let mode = std::fs::metadata(dir.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
    }
}

#[test]
fn existing_keys_stay_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    certs(dir, &["init-ca", "--trust-domain", "dev.example"]).unwrap();
    let key = std::fs::read(dir.join("ca-key.pem")).unwrap();
    let err = certs(dir, &["init-ca"]).unwrap_err().to_string();
    assert!(err.contains("ca.pem already exists"), "{err}");
    assert_eq!(std::fs::read(dir.join("ca-key.pem")).unwrap(), key);
    certs(dir, &["init-ca", "--force"]).unwrap();
    assert_ne!(std::fs::read(dir.join("ca-key.pem")).unwrap(), key);
}

#[test]
fn leaves_need_a_ca_and_valid_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let err = certs(dir, &["agent", "--cluster", "east"])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no CA; create one first with `meridian certs init-ca"),
        "{err}"
    );
    certs(dir, &["init-ca"]).unwrap();
    let err = certs(dir, &["agent", "--cluster", "East"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("cluster name \"East\""), "{err}");
    let err = certs(dir, &["node", "--id", "0", "--host", "localhost"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("node id \"0\""), "{err}");
    assert!(
        certs(dir, &["node", "--id", "1"]).is_err(),
        "a node needs --host"
    );
    let err = certs(dir, &["operator", "--name", "eve", "--role", "root"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not one of viewer, editor, admin"), "{err}");
}

#[test]
fn dev_setup_writes_a_three_region_set() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let args = [
        "dev-setup",
        "--nodes",
        "9",
        "--cluster",
        "us-east",
        "--cluster",
        "eu-west",
        "--cluster",
        "ap-south",
        "--operator",
        "admin=admin",
        "--operator",
        "ci=editor",
    ];
    certs(dir, &args).unwrap();
    assert_eq!(identity(dir, "node-9"), Identity::Node { id: 9 });
    assert_eq!(
        identity(dir, "cluster-ap-south"),
        Identity::Agent {
            cluster: "ap-south".into()
        }
    );
    assert_eq!(
        identity(dir, "proxy-default"),
        Identity::Proxy {
            group: "default".into()
        }
    );
    assert_eq!(
        identity(dir, "operator-ci"),
        Identity::Operator {
            name: "ci".into(),
            role: Role::Editor
        }
    );
    assert!(
        certs(dir, &args).is_err(),
        "a second run refuses to replace the keys"
    );
    certs(dir, &["dev-setup", "--force", "--nodes", "1"]).unwrap();
}

#[test]
fn operator_flags() {
    assert_eq!(
        parse_operator("alice=viewer").unwrap(),
        ("alice".to_string(), Role::Viewer)
    );
    assert!(parse_operator("alice")
        .unwrap_err()
        .contains("expected NAME=ROLE"));
    assert!(parse_operator("alice=boss")
        .unwrap_err()
        .contains("\"boss\""));
}
