use std::time::Duration;

use super::*;

fn key(service: &str, address: &str, port: u16) -> EndpointKey {
    EndpointKey {
        service: service.into(),
        address: address.into(),
        port,
    }
}

fn must_parse(name: &str, text: &str) -> Declared {
    parse_snapshot(&vec![(PathBuf::from(name), text.as_bytes().to_vec())]).expect("parses")
}

fn must_fail(name: &str, text: &str) -> String {
    parse_snapshot(&vec![(PathBuf::from(name), text.as_bytes().to_vec())])
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn parses_yaml_with_defaults_and_overrides() {
    let d = must_parse(
        "eps.yaml",
        r#"
endpoints:
  - {service: web, address: 10.0.0.5, port: 8080, zone: a, weight: 1, health: healthy}
  - service: web
    address: "fd00:0:0::6"
    port: 8080
    weight: 5
    health: draining
    healthCheck: tcp
  - service: api
    address: 10.0.0.7
    healthCheck: none
"#,
    );
    assert_eq!(d.endpoints.len(), 3);
    assert_eq!(
        d.endpoints[&key("web", "10.0.0.5", 8080)],
        EndpointState {
            zone: "a".into(),
            weight: 1,
            health: Health::Healthy
        }
    );
    // IPv6 addresses are stored in canonical form.
    let v6 = &d.endpoints[&key("web", "fd00::6", 8080)];
    assert_eq!(
        (v6.weight, v6.health, v6.zone.as_str()),
        (5, Health::Draining, "")
    );
    let api = &d.endpoints[&key("api", "10.0.0.7", 0)];
    assert_eq!((api.weight, api.health), (1, Health::Healthy));
    assert_eq!(d.checks[&key("web", "fd00::6", 8080)], Some(Probe::Tcp));
    assert_eq!(d.checks[&key("api", "10.0.0.7", 0)], None);
    assert!(!d.checks.contains_key(&key("web", "10.0.0.5", 8080)));
}

#[test]
fn parses_json_and_empty_files() {
    let d = must_parse(
        "eps.json",
        r#"{"endpoints": [{"service": "web", "address": "10.0.0.1", "port": 80, "healthCheck": "http:/ready"}]}"#,
    );
    assert_eq!(d.endpoints.len(), 1);
    assert_eq!(
        d.checks[&key("web", "10.0.0.1", 80)],
        Some(Probe::Http {
            path: "/ready".into()
        })
    );
    assert!(must_parse("empty.yaml", "").endpoints.is_empty());
    assert!(must_parse("empty.yaml", "endpoints: []")
        .endpoints
        .is_empty());
}

#[test]
fn errors_name_the_file_and_the_field() {
    let cases = [
        ("endpoints:\n  - {service: web, address: not-an-ip, port: 80}", "bad.yaml: endpoints[0].address: \"not-an-ip\" is not an IP address"),
        ("endpoints:\n  - {service: web, address: 10.0.0.1}\n  - {service: web, address: 10.0.0.2, port: 70000}", "bad.yaml: endpoints[1].port: 70000 is out of range"),
        ("endpoints:\n  - {service: web, address: 10.0.0.1, weight: 0}", "bad.yaml: endpoints[0].weight: 0 is out of range 1-128"),
        ("endpoints:\n  - {service: web, address: 10.0.0.1, weight: 129}", "bad.yaml: endpoints[0].weight: 129 is out of range"),
        ("endpoints:\n  - {address: 10.0.0.1}", "bad.yaml: endpoints[0].service: missing"),
        ("endpoints:\n  - {service: web, address: 10.0.0.1, helth: healthy}", "bad.yaml: endpoints[0].helth: unknown field"),
        ("endpoints:\n  - {service: web, address: 10.0.0.1, health: sick}", "bad.yaml: endpoints[0].health: \"sick\""),
        ("endpoints:\n  - {service: web, address: 10.0.0.1, healthCheck: udp}", "bad.yaml: endpoints[0].healthCheck: invalid health check \"udp\""),
        ("endpoints:\n  - {service: web, address: 10.0.0.1, port: \"80\"}", "bad.yaml: endpoints[0].port: expected a number, found a string"),
        ("endpoint: []", "bad.yaml: endpoint: unknown field"),
        ("endpoints: {service: web}", "bad.yaml: endpoints: expected a list"),
        ("endpoints: [\n", "bad.yaml: (syntax):"),
        ("- a\n- b", "bad.yaml: (root): expected a mapping"),
    ];
    for (text, want) in cases {
        let got = must_fail("bad.yaml", text);
        assert!(
            got.starts_with(want),
            "{text:?}\n got: {got}\nwant: {want}..."
        );
    }
}

#[test]
fn duplicate_endpoints_across_files_are_refused() {
    let snap = vec![
        (
            PathBuf::from("a.yaml"),
            b"endpoints: [{service: web, address: 10.0.0.1, port: 80}]".to_vec(),
        ),
        (
            PathBuf::from("b.yaml"),
            b"endpoints: [{service: web, address: 10.0.0.1, port: 80, zone: z}]".to_vec(),
        ),
    ];
    let err = parse_snapshot(&snap).unwrap_err().to_string();
    assert_eq!(
        err,
        "b.yaml: endpoints[0]: duplicate endpoint web/10.0.0.1:80 (first declared in a.yaml)"
    );
}

#[test]
fn a_directory_is_every_declaration_file_in_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "endpoints: [{service: web, address: 10.0.0.1, port: 80}]",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("b.json"),
        r#"{"endpoints": [{"service": "api", "address": "10.0.0.2", "port": 81}]}"#,
    )
    .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not endpoints").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
    let d = FileSource::new(dir.path(), Duration::from_millis(10))
        .load()
        .unwrap();
    assert_eq!(
        d.endpoints.keys().cloned().collect::<Vec<_>>(),
        vec![key("api", "10.0.0.2", 81), key("web", "10.0.0.1", 80)]
    );
}

#[test]
fn a_missing_path_is_an_io_error_naming_it() {
    let err = FileSource::new("/nonexistent/meridian/eps.yaml", Duration::from_millis(10))
        .load()
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("/nonexistent/meridian/eps.yaml: "), "{err}");
}

/// `eps.yaml` holding `text`, in a directory that lives as long as the
/// returned guard.
fn endpoints_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("eps.yaml");
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

async fn must_change(rx: &mut watch::Receiver<Declared>) -> Declared {
    tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("a change within 5s")
        .expect("source alive");
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn watch_sees_edits_and_keeps_the_last_good_set_on_errors() {
    let (_dir, file) = endpoints_file("endpoints: [{service: web, address: 10.0.0.1, port: 80}]");
    let mut rx = FileSource::new(&file, Duration::from_millis(20))
        .spawn()
        .unwrap();
    assert_eq!(rx.borrow_and_update().endpoints.len(), 1);

    std::fs::write(&file, "endpoints: [{service: web, address: 10.0.0.1, port: 80}, {service: web, address: 10.0.0.2, port: 80}]").unwrap();
    assert_eq!(must_change(&mut rx).await.endpoints.len(), 2);

    // A bad edit changes nothing that is published.
    std::fs::write(
        &file,
        "endpoints: [{service: web, address: 10.0.0.300, port: 80}]",
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!rx.has_changed().unwrap());
    assert_eq!(rx.borrow().endpoints.len(), 2);

    // The file disappearing (as during a non-atomic rewrite) also keeps it.
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!rx.has_changed().unwrap());

    std::fs::write(&file, "endpoints: []").unwrap();
    assert!(must_change(&mut rx).await.endpoints.is_empty());
}

#[tokio::test]
async fn a_bad_file_at_start_is_an_error() {
    let (_dir, file) = endpoints_file("endpoints: [{service: web, address: 10.0.0.1, port: -1}]");
    let err = FileSource::new(&file, Duration::from_millis(20))
        .spawn()
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with("eps.yaml: endpoints[0].port: -1 is out of range 0-65535"),
        "{err}"
    );
}
