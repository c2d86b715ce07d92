use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, KeyPair};

use super::*;
use crate::{Ca, Identity, LeafRequest, Validity};

struct Files {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Files {
    fn new() -> Files {
        let ca = Ca::generate(&TrustDomain::default(), Validity::ca_default()).unwrap();
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
            ca,
        };
        files.write("ca.pem", files.ca.cert_pem());
        files
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn leaf(&self, stem: &str, identity: Identity) -> (PathBuf, PathBuf) {
        let issued = self.ca.issue(&LeafRequest::new(identity)).unwrap();
        let cert = self.write(&format!("{stem}.pem"), &issued.cert_pem);
        let key = self.write(&format!("{stem}-key.pem"), &issued.key_pem);
        (cert, key)
    }

    fn load(&self, cert: &Path, key: &Path) -> Result<Loaded, Error> {
        load(cert, key, &self.path("ca.pem"), &TrustDomain::default())
    }
}

#[test]
fn loads_a_leaf_its_key_and_the_roots() {
    let f = Files::new();
    let (cert, key) = f.leaf("node-1", Identity::Node { id: 1 });
    let loaded = f.load(&cert, &key).unwrap();
    assert_eq!(loaded.info.identity, Identity::Node { id: 1 });
    assert_eq!(loaded.chain.len(), 1);
    assert_eq!(loaded.roots, vec![f.ca.cert_der().to_vec()]);
    assert_eq!(loaded.key.format, PrivateKeyFormat::Pkcs8);
    assert_eq!(format!("{:?}", loaded.key), "PrivateKey(Pkcs8, <redacted>)");
}

#[test]
fn every_error_names_its_file() {
    let f = Files::new();
    let (cert, key) = f.leaf("node-1", Identity::Node { id: 1 });
    let (_, other_key) = f.leaf("node-2", Identity::Node { id: 2 });
    let garbage = f.write("garbage.pem", "not pem at all\n");
    let missing = f.path("missing.pem");

    let err = f.load(&cert, &other_key).unwrap_err().to_string();
    assert!(
        err.starts_with(&other_key.display().to_string()) && err.contains("does not belong"),
        "{err}"
    );
    let err = f.load(&missing, &key).unwrap_err().to_string();
    assert!(err.starts_with(&missing.display().to_string()), "{err}");
    let err = f.load(&garbage, &key).unwrap_err().to_string();
    assert!(
        err.starts_with(&garbage.display().to_string()) && err.contains("no CERTIFICATE"),
        "{err}"
    );
    let err = f.load(&cert, &cert).unwrap_err().to_string();
    assert!(err.contains("no private key block"), "{err}");
    let two_keys = f.write(
        "two-keys.pem",
        &format!(
            "{}{}",
            std::fs::read_to_string(&key).unwrap(),
            std::fs::read_to_string(&other_key).unwrap()
        ),
    );
    let err = f.load(&cert, &two_keys).unwrap_err().to_string();
    assert!(err.contains("more than one private key"), "{err}");
}

#[test]
fn a_leaf_of_another_ca_or_domain_does_not_load() {
    let f = Files::new();
    let other = Ca::generate(&TrustDomain::default(), Validity::ca_default()).unwrap();
    let issued = other
        .issue(&LeafRequest::new(Identity::Node { id: 1 }))
        .unwrap();
    let cert = f.write("foreign.pem", &issued.cert_pem);
    let key = f.write("foreign-key.pem", &issued.key_pem);
    let err = f.load(&cert, &key).unwrap_err().to_string();
    assert!(err.contains("not issued by any CA in"), "{err}");

    let (cert, key) = f.leaf("node-1", Identity::Node { id: 1 });
    let err = load(
        &cert,
        &key,
        &f.path("ca.pem"),
        &TrustDomain::new("prod.example").unwrap(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("trusts only \"prod.example\""), "{err}");
}

/// Certificates from some other CA tooling: no URI SAN, or several.
#[test]
fn a_leaf_needs_exactly_one_uri_san() {
    let f = Files::new();
    let cases: [(&str, Vec<&str>, &str); 2] = [
        ("none", vec!["node1.example"], "has no URI SAN"),
        (
            "two",
            vec![
                "spiffe://meridian.local/node/1",
                "spiffe://meridian.local/operator/admin/eve",
            ],
            "has 2 URI SANs",
        ),
    ];
    for (stem, sans, want) in cases {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        for san in sans {
            let san = if san.starts_with("spiffe://") {
                rcgen::SanType::URI(san.to_string().try_into().unwrap())
            } else {
                rcgen::SanType::DnsName(san.to_string().try_into().unwrap())
            };
            params.subject_alt_names.push(san);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = f.write(&format!("{stem}.pem"), &cert.pem());
        let key_path = f.write(&format!("{stem}-key.pem"), &key.serialize_pem());
        let err = f.load(&cert_path, &key_path).unwrap_err().to_string();
        assert!(err.contains(want), "{stem}: {err}");
        assert!(err.starts_with(&cert_path.display().to_string()), "{err}");
    }
}

#[test]
fn an_expired_leaf_loads_and_says_so() {
    let f = Files::new();
    let now = std::time::SystemTime::now();
    let mut req = LeafRequest::new(Identity::Proxy {
        group: "edge".into(),
    });
    req.validity = Validity {
        not_before: now - std::time::Duration::from_secs(100),
        not_after: now - std::time::Duration::from_secs(10),
    };
    let issued = f.ca.issue(&req).unwrap();
    let cert = f.write("old.pem", &issued.cert_pem);
    let key = f.write("old-key.pem", &issued.key_pem);
    assert!(f.load(&cert, &key).unwrap().info.expired_at(now));
}
