use super::*;

fn domain() -> TrustDomain {
    TrustDomain::default()
}

fn every_kind() -> Vec<Identity> {
    vec![
        Identity::Node { id: 3 },
        Identity::Node { id: u64::MAX },
        Identity::Agent {
            cluster: "us-east-1".into(),
        },
        Identity::Proxy {
            group: "default".into(),
        },
        Identity::Operator {
            name: "alice".into(),
            role: Role::Viewer,
        },
        Identity::Operator {
            name: "bob".into(),
            role: Role::Editor,
        },
        Identity::Operator {
            name: "ci-7".into(),
            role: Role::Admin,
        },
    ]
}

#[test]
fn every_kind_round_trips_as_uri_and_path() {
    for id in every_kind() {
        let uri = id.uri(&domain());
        assert!(uri.starts_with("spiffe://meridian.local/"), "{uri}");
        assert_eq!(Identity::from_uri(&uri, &domain()).unwrap(), id);
        let full: SpiffeId = uri.parse().unwrap();
        assert_eq!(full.to_string(), uri);
        assert_eq!(full.identity, id);
        assert_eq!(id.to_string().parse::<Identity>().unwrap(), id);
        id.validate().unwrap();
    }
}

#[test]
fn the_uri_scheme() {
    let d = domain();
    assert_eq!(
        Identity::Node { id: 3 }.uri(&d),
        "spiffe://meridian.local/node/3"
    );
    assert_eq!(
        Identity::Agent {
            cluster: "east".into()
        }
        .uri(&d),
        "spiffe://meridian.local/cluster/east"
    );
    assert_eq!(
        Identity::Proxy {
            group: "edge".into()
        }
        .uri(&d),
        "spiffe://meridian.local/proxy/edge"
    );
    assert_eq!(
        Identity::Operator {
            name: "alice".into(),
            role: Role::Admin
        }
        .uri(&d),
        "spiffe://meridian.local/operator/admin/alice"
    );
}

fn error(uri: &str) -> String {
    Identity::from_uri(uri, &domain()).unwrap_err().to_string()
}

#[test]
fn bad_uris_say_what_is_wrong() {
    let cases = [
        ("https://meridian.local/node/1", "must start with spiffe://"),
        (
            "SPIFFE://meridian.local/node/1",
            "must start with spiffe://",
        ),
        (
            "spiffe://other.example/node/1",
            "trust domain \"other.example\"; this cluster trusts only \"meridian.local\"",
        ),
        ("spiffe://meridian.local:8443/node/1", "contains ':'"),
        ("spiffe://user@meridian.local/node/1", "contains '@'"),
        ("spiffe:///node/1", "trust domain \"\": must not be empty"),
        (
            "spiffe://meridian.local",
            "no identity after the trust domain",
        ),
        ("spiffe://meridian.local/", "unknown identity type \"\""),
        (
            "spiffe://meridian.local/robot/r2",
            "unknown identity type \"robot\"",
        ),
        (
            "spiffe://meridian.local/cluster/",
            "cluster name \"\": must not be empty",
        ),
        (
            "spiffe://meridian.local/proxy/Edge",
            "proxy group \"Edge\": contains 'E'",
        ),
        (
            "spiffe://meridian.local/cluster/-east",
            "must start with a lowercase letter",
        ),
        (
            "spiffe://meridian.local/operator/root/alice",
            "role \"root\" is not one of viewer, editor, admin",
        ),
        (
            "spiffe://meridian.local/operator/alice",
            "operator/ROLE/NAME, got 2 path segments",
        ),
        (
            "spiffe://meridian.local/node/1/extra",
            "node/ID, got 3 path segments",
        ),
        (
            "spiffe://meridian.local/cluster/east/",
            "cluster/NAME, got 3 path segments",
        ),
        ("spiffe://meridian.local/node/0", "node id \"0\""),
        ("spiffe://meridian.local/node/03", "without leading zeros"),
        ("spiffe://meridian.local/node/x", "must be a decimal number"),
        (
            "spiffe://meridian.local/node/18446744073709551616",
            "must be a decimal number",
        ),
        (
            "spiffe://meridian.local/node/1?x=y",
            "a query or fragment is not allowed",
        ),
        (
            "spiffe://meridian.local/node/1#f",
            "a query or fragment is not allowed",
        ),
    ];
    for (uri, want) in cases {
        let got = error(uri);
        assert!(got.contains(want), "{uri}: {got:?} should contain {want:?}");
        assert!(
            got.contains(&format!("{uri:?}")) || got.contains("trust domain"),
            "{uri}: {got:?} quotes the input"
        );
    }
}

#[test]
fn names_follow_the_object_name_rule() {
    let long = "a".repeat(MAX_NAME_LEN);
    assert!(format!("cluster/{long}").parse::<Identity>().is_ok());
    let err = format!("cluster/{long}a")
        .parse::<Identity>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 63"), "{err}");
    let err = "proxy/edge-".parse::<Identity>().unwrap_err().to_string();
    assert!(err.contains("end with a letter or digit"), "{err}");
    let err = Identity::Agent {
        cluster: "Has Space".into(),
    }
    .validate()
    .unwrap_err()
    .to_string();
    assert!(err.contains("cluster name \"Has Space\""), "{err}");
}

#[test]
fn trust_domains() {
    for ok in ["meridian.local", "prod_1.example-corp.com", "x"] {
        TrustDomain::new(ok).unwrap();
    }
    for bad in ["", "Meridian.local", "a/b", "a b", &"a".repeat(256)] {
        assert!(TrustDomain::new(bad).is_err(), "{bad:?}");
    }
    assert_eq!(TrustDomain::default().uri(), "spiffe://meridian.local");
}

#[test]
fn roles_are_ordered() {
    assert!(Role::Admin.allows(Role::Editor) && Role::Admin.allows(Role::Viewer));
    assert!(Role::Editor.allows(Role::Viewer) && Role::Editor.allows(Role::Editor));
    assert!(!Role::Editor.allows(Role::Admin));
    assert!(!Role::Viewer.allows(Role::Editor));
    for role in Role::ALL {
        assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
    }
    assert!("Admin".parse::<Role>().is_err());
}
