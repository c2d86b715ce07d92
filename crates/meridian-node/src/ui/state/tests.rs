use super::*;

fn obj(kind: &str, name: &str, value: serde_json::Value, at: u64) -> pb::Object {
    pb::Object {
        kind: kind.into(),
        name: name.into(),
        value: serde_json::to_vec(&value).unwrap(),
        revision: 1,
        created_revision: 1,
        updated_at_ms: at,
    }
}

fn member(id: u64, region: &str, role: &str, lag: &[(u64, u64)]) -> pb::MemberStatus {
    let node = pb::NodeInfo {
        id,
        region: region.into(),
        api_addr: format!("127.0.0.1:{}", 7000 + id),
        ..Default::default()
    };
    pb::MemberStatus {
        node: Some(node.clone()),
        voter: true,
        status: Some(pb::NodeStatus {
            node: Some(node),
            role: role.into(),
            ready: true,
            applied_index: 40,
            revision: 12,
            replication_lag: lag.iter().copied().collect(),
            certificates: if id == 1 {
                vec![pb::CertificateStatus {
                    listener: "api".into(),
                    identity: "node/1".into(),
                    not_after_unix: 1_900_000_000,
                    expires_in_seconds: 100,
                }]
            } else {
                vec![]
            },
            ..Default::default()
        }),
        error: String::new(),
    }
}

fn proxy(node_id: &str, region: &str, states: &[(&str, &str)]) -> pb::ProxyInfo {
    pb::ProxyInfo {
        node_id: node_id.into(),
        controller_id: 2,
        controller_region: region.into(),
        region: region.into(),
        proxy_group: "edge".into(),
        variant: "delta-ads".into(),
        types: states
            .iter()
            .map(|(t, s)| pb::ProxyTypeStatus {
                r#type: t.to_string(),
                state: s.to_string(),
                nack_message: if *s == "NACKED" {
                    "bad route".into()
                } else {
                    String::new()
                },
                nack_resources: if *s == "NACKED" {
                    vec!["r1".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            })
            .collect(),
        connected_ms: 1000,
        view_revision: 12,
        ..Default::default()
    }
}

fn entry(
    rev: u64,
    kind: &str,
    name: &str,
    action: &str,
    prev: &str,
    value: &str,
) -> pb::HistoryEntry {
    pb::HistoryEntry {
        key: Some(pb::ObjectKey {
            kind: kind.into(),
            name: name.into(),
        }),
        revision: rev,
        updated_at_ms: rev * 1000,
        action: action.into(),
        value: value.as_bytes().to_vec(),
        prev_value: prev.as_bytes().to_vec(),
    }
}

fn parts() -> Parts {
    Parts {
        cluster: Some(Ok(pb::ClusterStatusResponse {
            leader_id: 1,
            term: 3,
            answered_by: 2,
            members: vec![
                member(1, "us-east", "leader", &[(2, 0), (3, 5)]),
                member(2, "eu-west", "follower", &[]),
                member(3, "ap-south", "follower", &[]),
                pb::MemberStatus {
                    node: Some(pb::NodeInfo {
                        id: 4,
                        region: "ap-south".into(),
                        ..Default::default()
                    }),
                    voter: true,
                    status: None,
                    error: "no answer within 1s".into(),
                },
            ],
        })),
        proxies: Some(Ok(pb::ProxyStatusResponse {
            proxies: vec![
                proxy(
                    "envoy-a",
                    "eu-west",
                    &[("cds", "SYNCED"), ("lds", "SYNCED")],
                ),
                proxy(
                    "envoy-b",
                    "eu-west",
                    &[("cds", "SYNCED"), ("rds", "NACKED")],
                ),
            ],
            errors: vec!["node 4: no answer within 2s".into()],
            ..Default::default()
        })),
        history: Some(Ok(pb::HistoryResponse {
            entries: vec![
                entry(
                    12,
                    "route",
                    "web",
                    "updated",
                    r#"{"hosts":["a"]}"#,
                    r#"{"hosts":["b"]}"#,
                ),
                entry(12, "service", "web", "created", "", r#"{"port":80}"#),
                entry(9, "region", "us-east", "created", "", r#"{}"#),
            ],
            revision: 12,
            oldest_revision: 0,
        })),
        objects: Some(Ok(Objects {
            regions: vec![obj("region", "us-east", serde_json::json!({}), 1)],
            clusters: vec![obj(
                "cluster",
                "k8s-eu",
                serde_json::json!({"region": "eu-west", "tokenSha256": "d1ce57", "leaseTtl": "30s"}),
                1,
            )],
            claims: vec![obj(
                "claim",
                "k8s-eu",
                serde_json::json!({"session": "s1", "agent": "host-a", "controller": 2}),
                5,
            )],
            leases: vec![obj(
                "lease",
                "k8s-eu",
                serde_json::json!({"session": "s1", "ttlMs": 30000, "onExpiry": "drop", "expired": false, "controller": 2}),
                77,
            )],
            endpoints: vec![obj(
                "endpoints",
                "k8s-eu.web",
                serde_json::json!([
                    {"address": "10.0.0.1", "port": 0, "weight": 1, "health": "healthy"},
                    {"address": "10.0.0.2", "port": 0, "weight": 1, "health": "unhealthy"}
                ]),
                1,
            )],
        })),
        rollouts: None,
    }
}

#[test]
fn regions_come_from_objects_controllers_clusters_and_envoys() {
    let st = build(parts(), 5);
    let names: Vec<&str> = st.regions.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ap-south", "eu-west", "us-east"]);
    let eu = st.regions.iter().find(|r| r.name == "eu-west").unwrap();
    assert_eq!(
        (
            eu.configured,
            eu.controllers,
            eu.clusters,
            eu.envoys,
            eu.envoys_synced,
            eu.envoys_nacked
        ),
        (false, 1, 1, 2, 1, 1)
    );
    let us = st.regions.iter().find(|r| r.name == "us-east").unwrap();
    assert!(us.configured && us.has_leader);
    let ap = st.regions.iter().find(|r| r.name == "ap-south").unwrap();
    assert_eq!((ap.controllers, ap.controllers_ready), (2, 1));
}

#[test]
fn controllers_show_lag_from_the_leader_expiry_and_who_did_not_answer() {
    let st = build(parts(), 5);
    let lag: Vec<Option<u64>> = st.controllers.iter().map(|c| c.lag).collect();
    assert_eq!(lag, [Some(0), Some(0), Some(5), None]);
    assert_eq!(st.controllers[0].cert_not_after_unix, Some(1_900_000_000));
    assert_eq!(st.controllers[1].cert_not_after_unix, None);
    assert_eq!(
        (st.leader_id, st.term, st.answered_by, st.revision),
        (1, 3, 2, 12)
    );
    assert!(
        st.errors
            .contains(&"node 4: no answer within 1s".to_string()),
        "{:?}",
        st.errors
    );
    assert!(
        st.errors
            .contains(&"node 4: no answer within 2s".to_string()),
        "{:?}",
        st.errors
    );
}

#[test]
fn envoys_take_their_worst_type_and_list_nacks() {
    let st = build(parts(), 5);
    assert_eq!(st.envoys[0].state, "SYNCED");
    assert_eq!(st.envoys[1].state, "NACKED");
    assert_eq!(st.envoys[1].nacks.len(), 1);
    assert_eq!(st.envoys[1].nacks[0].message, "bad route");
    assert_eq!(st.envoys[1].nacks[0].resources, ["r1"]);
}

#[test]
fn clusters_show_lease_agent_and_endpoint_counts_but_not_the_token_digest() {
    let st = build(parts(), 5);
    let c = &st.clusters[0];
    assert_eq!(c.region, "eu-west");
    assert_eq!(c.agent.as_deref(), Some("host-a"));
    assert_eq!(
        (c.lease, c.lease_renewed_unix_ms, c.controller),
        ("active", Some(77), Some(2))
    );
    assert_eq!((c.endpoints, c.healthy), (2, 1));
    let json = serde_json::to_string(&st).unwrap();
    assert!(
        !json.contains("d1ce57") && !json.contains("tokenSha256"),
        "{json}"
    );
    assert!(!json.contains("\"s1\""), "session ids stay out: {json}");
}

#[test]
fn history_groups_a_transaction_under_its_revision() {
    let st = build(parts(), 5);
    let revs: Vec<(u64, usize)> = st
        .history
        .iter()
        .map(|r| (r.revision, r.changes.len()))
        .collect();
    assert_eq!(revs, [(12, 2), (9, 1)]);
    assert_eq!(st.history[0].changes[1].name, "web");
    assert_eq!(st.history[0].changes[1].action, "created");
}

#[test]
fn history_lists_at_most_the_newest_revisions() {
    let mut p = parts();
    let entries = (1..=50)
        .rev()
        .map(|r| entry(r, "service", "s", "updated", "{}", "{}"))
        .collect();
    p.history = Some(Ok(pb::HistoryResponse {
        entries,
        revision: 50,
        oldest_revision: 0,
    }));
    let st = build(p, 5);
    assert_eq!(st.history.len(), HISTORY_REVISIONS);
    assert_eq!(st.history[0].revision, 50);
}

#[test]
fn a_failed_part_is_reported_and_the_rest_is_shown() {
    let mut p = parts();
    p.proxies = Some(Err("permission denied".into()));
    let st = build(p, 5);
    assert!(st.envoys.is_empty());
    assert_eq!(st.controllers.len(), 4);
    assert!(
        st.errors
            .contains(&"proxy status: permission denied".to_string()),
        "{:?}",
        st.errors
    );
}

#[test]
fn rollouts_have_the_documented_shape() {
    let mut p = parts();
    let step = |regions: &[&str]| pb::RolloutStepInfo {
        regions: regions.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    p.rollouts = Some(Ok(pb::ListRolloutsResponse {
        rollouts: vec![pb::Rollout {
            id: "web-v2".into(),
            policy: "by-region".into(),
            state: "progressing".into(),
            step: 1,
            steps: vec![
                step(&["us-east"]),
                step(&["eu-west", "ap-south"]),
                step(&["x"]),
            ],
            started_at_ms: 1234,
            ..Default::default()
        }],
        revision: 3,
    }));
    let v = serde_json::to_value(build(p, 5)).unwrap();
    assert_eq!(
        v["rollouts"],
        serde_json::json!([{
            "name": "web-v2", "policy": "by-region", "state": "progressing", "step": 1,
            "steps": [{"targets": ["us-east"], "state": "done"}, {"targets": ["eu-west", "ap-south"], "state": "progressing"}, {"targets": ["x"], "state": "pending"}],
            "started_unix_ms": 1234
        }])
    );
    assert_eq!(
        serde_json::to_value(build(parts(), 5)).unwrap()["rollouts"],
        serde_json::json!([])
    );
}

#[test]
fn a_revision_diff_shows_each_object_before_and_after() {
    let h = match parts().history {
        Some(Ok(h)) => h,
        _ => unreachable!(),
    };
    let d = revision_diff(&h, 12).unwrap();
    assert_eq!(d.changes.len(), 2);
    let route = &d.changes[0].diff;
    assert!(
        route.contains("-    \"a\"") && route.contains("+    \"b\""),
        "{route}"
    );
    assert!(route.contains("route/web @ 12"), "{route}");
    let created = &d.changes[1].diff;
    assert!(created.contains("+  \"port\": 80"), "{created}");
    assert!(revision_diff(&h, 10).is_none());
}
