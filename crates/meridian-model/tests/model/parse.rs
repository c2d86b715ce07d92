use meridian_model::{parse_documents, parse_documents_located, spec::LoadBalancing, Kind, Object, Spec};

use crate::{example, messages, must_parse};

#[test]
fn yaml_many_documents() {
    let set = must_parse(
        "kind: service\nname: a\nspec:\n  port: 80\n---\n# comment only\n---\nkind: Region\nname: us-east\nspec: {}\n",
    );
    assert_eq!(set.len(), 2);
    assert!(set.get(Kind::Region, "us-east").is_some());
    let Spec::Service(s) = &set.get(Kind::Service, "a").unwrap().spec else {
        panic!()
    };
    assert_eq!(s.port, 80);
    assert_eq!(s.load_balancing, LoadBalancing::RoundRobin);
}

#[test]
fn json_object_and_array() {
    let one = parse_documents(
        r#"{"kind":"service","name":"a","spec":{"port":80}}"#,
        "a.json",
    )
    .unwrap();
    assert_eq!(one.len(), 1);
    let many = parse_documents(
        "[\n {\"kind\":\"service\",\"name\":\"a\",\"spec\":{\"port\":80}},\n {\"kind\":\"region\",\"name\":\"b\",\"spec\":{}}\n]",
        "a.json",
    )
    .unwrap();
    assert_eq!(many.len(), 2);
    let err = parse_documents(
        "[\n {\"kind\":\"service\",\"name\":\"a\",\"spec\":{\"port\":80}},\n {\"kind\":\"service\",\"name\":\"b\",\n \"spec\":{\"prot\":80}}\n]",
        "a.json",
    )
    .unwrap_err();
    assert_eq!(
        messages(&err),
        vec!["a.json:4: service/b: prot: unknown field \"prot\", did you mean \"port\"?"]
    );
}

#[test]
fn unknown_field_suggests_and_names_line() {
    let yaml = "kind: region\nname: r\nspec: {}\n---\nkind: route\nname: frontend\nspec:\n  hosts: [\"*\"]\n  rules:\n    - backends:\n        - service: web\n          weigth: 3\n";
    let err = parse_documents(yaml, "f.yaml").unwrap_err();
    assert_eq!(
        messages(&err),
        vec!["f.yaml:12: route/frontend: rules[0].backends[0].weigth: unknown field \"weigth\", did you mean \"weight\"?"]
    );
}

#[test]
fn unknown_value_and_kind_suggest() {
    let err = parse_documents(
        "kind: service\nname: a\nspec:\n  port: 80\n  loadBalancing: leastRequests\n",
        "f.yaml",
    )
    .unwrap_err();
    assert_eq!(
        messages(&err),
        vec!["f.yaml:5: service/a: loadBalancing: unknown value \"leastRequests\", did you mean \"leastRequest\"?"]
    );
    let err = parse_documents("kind: servise\nname: a\nspec: {}\n", "f.yaml").unwrap_err();
    assert_eq!(
        messages(&err),
        vec!["f.yaml:1: kind: unknown kind \"servise\", did you mean \"service\"?"]
    );
}

#[test]
fn missing_field_and_bad_duration() {
    let err = parse_documents(
        "kind: service\nname: a\nspec:\n  protocol: grpc\n",
        "f.yaml",
    )
    .unwrap_err();
    assert_eq!(
        messages(&err),
        vec!["f.yaml:4: service/a: missing field \"port\""]
    );
    let err = parse_documents(
        "kind: service\nname: a\nspec:\n  port: 1\n  connectTimeout: 5 sec\n",
        "f.yaml",
    )
    .unwrap_err();
    assert!(
        messages(&err)[0]
            .starts_with("f.yaml:4: service/a: connectTimeout: invalid duration \"5 sec\""),
        "{err:?}"
    );
}

#[test]
fn duplicate_in_one_file() {
    let err = parse_documents(
        "kind: region\nname: r\nspec: {}\n---\nkind: region\nname: r\nspec: {}\n",
        "f.yaml",
    )
    .unwrap_err();
    assert_eq!(
        messages(&err),
        vec!["f.yaml:5: region/r: defined twice in this file"]
    );
}

#[test]
fn located_parse_keeps_good_documents_and_their_lines() {
    let text = "# c\nkind: region\nname: a\nspec: {}\n---\nkind: servce\nname: s\nspec: {}\n---\n\n# x\nkind: region\nname: b\nspec: {}\n";
    let (objs, errs) = parse_documents_located(text, "f.yaml");
    let lines: Vec<_> = objs.iter().map(|(o, l)| (o.name.as_str(), *l)).collect();
    assert_eq!(lines, [("a", Some(2)), ("b", Some(12))]);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].to_string().starts_with("f.yaml:6: kind: unknown kind"), "{errs:?}");

    let (objs, errs) = parse_documents_located(
        "\n\n[\n {\"kind\":\"region\",\"name\":\"a\",\"spec\":{}},\n {\"kind\":\"region\",\"name\":\"b\",\"spec\":{}}\n]",
        "f.json",
    );
    assert!(errs.is_empty(), "{errs:?}");
    let lines: Vec<_> = objs.iter().map(|(o, l)| (o.name.as_str(), *l)).collect();
    assert_eq!(lines, [("a", Some(4)), ("b", Some(5))]);
}

#[test]
fn kind_names() {
    assert_eq!("Services".parse::<Kind>().unwrap(), Kind::Service);
    assert_eq!("LISTENER".parse::<Kind>().unwrap(), Kind::Listener);
    assert_eq!(Kind::Route.as_str(), "route");
    assert_eq!(
        "rout".parse::<Kind>().unwrap_err().to_string(),
        "kind: unknown kind \"rout\", did you mean \"route\"?"
    );
}

#[test]
fn stored_form_round_trips_and_is_canonical() {
    let objs = parse_documents(&example(), "multi-region.yaml").unwrap();
    for o in &objs {
        let bytes = o.spec_to_json_bytes();
        let back = Object::from_stored(o.kind.as_str(), &o.name, &bytes).unwrap();
        assert_eq!(&back, o);
        assert_eq!(back.spec_to_json_bytes(), bytes);
    }
    let err = Object::from_stored("service", "a", br#"{"port":80,"colour":1}"#).unwrap_err();
    assert_eq!(err.to_string(), "service/a: colour: unknown field \"colour\"; expected one of: protocol, port, loadBalancing, connectTimeout, circuitBreakers, outlierDetection, healthCheck, failover, updateMergeWindow, panicThresholdPercent, endpoints");
}

#[test]
fn secrets_are_redacted_for_output() {
    let objs = parse_documents(&example(), "multi-region.yaml").unwrap();
    let secret = objs.iter().find(|o| o.kind == Kind::Secret).unwrap();
    let debug = format!("{secret:?}");
    assert!(!debug.contains("PRIVATE KEY"), "{debug}");
    assert!(debug.contains("<redacted>"));
    let json = secret.to_redacted_json().to_string();
    assert!(!json.contains("PRIVATE KEY"));
    assert!(json.contains("\"privateKey\":\"<redacted>\""));
    assert!(json.contains("BEGIN CERTIFICATE"));
    // The stored form keeps the key: it is what SDS delivers.
    assert!(String::from_utf8(secret.spec_to_json_bytes())
        .unwrap()
        .contains("PRIVATE KEY"));
}

#[test]
fn example_parses_and_validates() {
    let set = must_parse(&example());
    assert_eq!(crate::messages(&set.validate()), Vec::<String>::new());
    assert_eq!(set.regions().count(), 3);
    assert_eq!(set.listeners().count(), 3);
}
