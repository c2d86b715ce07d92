use std::time::{Duration, SystemTime};

use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::{inspect, verify_issued_by, Error, Role, LEAF_VALIDITY};

fn domain() -> TrustDomain {
    TrustDomain::default()
}

fn ca() -> Ca {
    Ca::generate(&domain(), Validity::ca_default()).unwrap()
}

fn kinds() -> Vec<Identity> {
    vec![
        Identity::Node { id: 1 },
        Identity::Agent {
            cluster: "east".into(),
        },
        Identity::Proxy {
            group: "default".into(),
        },
        Identity::Operator {
            name: "alice".into(),
            role: Role::Editor,
        },
    ]
}

#[test]
fn each_leaf_kind_carries_its_identity_and_chains_to_the_ca() {
    let ca = ca();
    assert_eq!(crate::ca_trust_domain(ca.cert_der()).unwrap(), domain());
    for identity in kinds() {
        let issued = ca.issue(&LeafRequest::new(identity.clone())).unwrap();
        let info = inspect(&issued.cert_der, &domain()).unwrap();
        assert_eq!(info.identity, identity);
        assert_eq!(info.not_after, issued.not_after);
        let lifetime = info.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(lifetime > LEAF_VALIDITY - Duration::from_secs(60) && lifetime <= LEAF_VALIDITY);
        assert!(!info.expired_at(SystemTime::now()));
        verify_issued_by(&issued.cert_der, ca.cert_der()).unwrap();
        assert!(issued.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{issued:?}").contains("BEGIN PRIVATE KEY"));
    }
}

#[test]
fn a_node_names_its_hosts_and_serves_and_dials() {
    let ca = ca();
    let mut req = LeafRequest::new(Identity::Node { id: 3 });
    req.hosts = vec!["127.0.0.1".into(), "node3.us-east.svc".into(), "::1".into()];
    let issued = ca.issue(&req).unwrap();
    let cert = crate::x509::parse(&issued.cert_der).unwrap();
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    let rendered: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    assert_eq!(names.len(), 4, "{rendered:?}");
    assert!(matches!(
        names[0],
        GeneralName::URI("spiffe://meridian.local/node/3")
    ));
    assert!(names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName("node3.us-east.svc"))));
    assert_eq!(
        names
            .iter()
            .filter(|n| matches!(n, GeneralName::IPAddress(_)))
            .count(),
        2
    );
    assert!(!cert.is_ca());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
    let has_aki = cert.extensions().iter().any(|e| {
        matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )
    });
    assert!(has_aki);
}

#[test]
fn bad_hosts_and_identities_are_refused() {
    let ca = ca();
    let mut req = LeafRequest::new(Identity::Node { id: 1 });
    req.hosts = vec!["not a host".into()];
    let err = ca.issue(&req).unwrap_err().to_string();
    assert!(
        err.contains("\"not a host\" is neither an IP address nor a DNS name"),
        "{err}"
    );
    let err = ca
        .issue(&LeafRequest::new(Identity::Node { id: 0 }))
        .unwrap_err();
    assert!(matches!(err, Error::Id(_)), "{err}");
}

#[test]
fn a_certificate_of_another_ca_is_told_apart() {
    let (ours, theirs) = (ca(), ca());
    let foreign = theirs
        .issue(&LeafRequest::new(Identity::Node { id: 1 }))
        .unwrap();
    let err = verify_issued_by(&foreign.cert_der, ours.cert_der()).unwrap_err();
    // Both CAs have the same subject: only the signature tells them apart.
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );

    let other_domain = Ca::generate(
        &TrustDomain::new("other.example").unwrap(),
        Validity::ca_default(),
    )
    .unwrap();
    let stranger = other_domain
        .issue(&LeafRequest::new(Identity::Node { id: 1 }))
        .unwrap();
    let err = verify_issued_by(&stranger.cert_der, ours.cert_der()).unwrap_err();
    assert!(err.to_string().contains("its issuer is"), "{err}");
    let err = inspect(&stranger.cert_der, &domain()).unwrap_err();
    assert!(
        matches!(err, Error::Id(crate::IdError::OtherTrustDomain { .. })),
        "{err}"
    );
}

#[test]
fn an_expired_certificate_can_be_made_and_is_detected() {
    let ca = ca();
    let now = SystemTime::now();
    let mut req = LeafRequest::new(Identity::Agent {
        cluster: "east".into(),
    });
    req.validity = Validity {
        not_before: now - Duration::from_secs(7200),
        not_after: now - Duration::from_secs(3600),
    };
    let issued = ca.issue(&req).unwrap();
    let info = inspect(&issued.cert_der, &domain()).unwrap();
    assert!(info.expired_at(now));
    assert!(info.not_after < now);
    assert!(info.not_after_unix() > 0);

    req.validity.not_after = req.validity.not_before;
    assert!(ca.issue(&req).is_err());
}

#[test]
fn a_ca_survives_its_pem_round_trip() {
    let ca = ca();
    let again = Ca::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
    assert_eq!(again.trust_domain(), &domain());
    let issued = again
        .issue(&LeafRequest::new(Identity::Proxy {
            group: "edge".into(),
        }))
        .unwrap();
    verify_issued_by(&issued.cert_der, ca.cert_der()).unwrap();

    let other = super::Ca::generate(&domain(), Validity::ca_default()).unwrap();
    let err = Ca::from_pem(ca.cert_pem(), &other.key_pem())
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not belong"), "{err}");
    assert!(!format!("{ca:?}").contains("PRIVATE"));
}

#[test]
fn a_leaf_is_not_a_ca_and_has_no_ca_trust_domain() {
    let ca = ca();
    let leaf = ca
        .issue(&LeafRequest::new(Identity::Node { id: 2 }))
        .unwrap();
    assert!(crate::ca_trust_domain(&leaf.cert_der).is_err());
    // And a CA is no identity: its one URI names only the trust domain.
    assert!(inspect(ca.cert_der(), &domain()).is_err());
}
