//! [Eventual consistency considerations] make-before-break on ADS,
//! [Resource warming], and replicas answering mid-warming.

use std::collections::HashMap;

use meridian_xds::testing::fixtures::{cluster, endpoints, listener, route, secret};
use meridian_xds::testing::TestServer;
use meridian_xds::types::{short_name, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use meridian_xds::MemorySource;

use super::support::{both, envoy, fast, s, source, start, start_ads, Flavor, Stream, QUIET};

both!(
    make_before_break_order_on_ads,
    new_clusters_get_endpoints_before_listeners_and_routes,
    cluster_update_resends_unchanged_endpoints,
    an_updated_cluster_beside_an_added_one_gets_its_endpoints_before_the_cds_ack,
    listener_warming_gets_its_new_route_at_once,
    another_replica_answers_a_subset_request_mid_warming,
    a_request_during_a_push_stage_waits_for_its_stage,
);

/// Subscribes an ADS client to everything in the base source, ACKing all.
async fn subscribed(c: &mut Stream) {
    for (t, ask) in [
        (CLUSTER, vec![]),
        (ENDPOINT, vec!["c1", "c2"]),
        (LISTENER, vec![]),
        (ROUTE, vec!["r1"]),
        (SECRET, vec!["s1"]),
    ] {
        c.ask(t, &ask).await;
        let r = c.expect().await;
        c.ack(&r).await;
    }
}

/// One change that adds c3, drops c1, edits the route and the secret.
fn replace_c1_by_c3(src: &MemorySource) {
    src.update(|v| {
        v.by_type.get_mut(CLUSTER).unwrap().remove("c1");
        v.by_type.get_mut(ENDPOINT).unwrap().remove("c1");
        v.insert("c3", cluster("c3", "v1"));
        v.insert("c3", endpoints("c3", "v1"));
        v.insert("r1", route("r1", "to-c3"));
        v.insert("s1", secret("s1", "rotated"));
    });
}

async fn make_before_break_order_on_ads(f: Flavor) {
    let (src, _srv, mut c) = start_ads(f).await;
    subscribed(&mut c).await;
    replace_c1_by_c3(&src);
    let want = match f {
        Flavor::Sotw => vec![
            ("SDS".to_string(), s(&["s1"]), s(&[])),
            ("CDS".to_string(), s(&["c1", "c2", "c3"]), s(&[])), // additions, c1 kept
            ("EDS".to_string(), s(&["c2"]), s(&[])),
            ("RDS".to_string(), s(&["r1"]), s(&[])),
            ("CDS".to_string(), s(&["c2", "c3"]), s(&[])), // c1 removed last
        ],
        Flavor::Delta => vec![
            ("SDS".to_string(), s(&["s1"]), s(&[])),
            ("CDS".to_string(), s(&["c3"]), s(&[])),
            ("EDS".to_string(), s(&["c2"]), s(&[])), // re-sent so updated clusters warm
            ("RDS".to_string(), s(&["r1"]), s(&[])),
            ("CDS".to_string(), s(&[]), s(&["c1"])),
            ("EDS".to_string(), s(&[]), s(&["c1"])),
        ],
    };
    let mut seen = Vec::new();
    for _ in 0..want.len() {
        let r = c.expect().await;
        // ACK like Envoy: the rest of the push waits for the CDS ACK.
        c.ack(&r).await;
        seen.push((short_name(&r.type_url).to_string(), r.names, r.removed));
    }
    c.expect_silence(QUIET).await;
    assert_eq!(seen, want);
}

async fn new_clusters_get_endpoints_before_listeners_and_routes(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    subscribed(&mut c).await;
    src.update(|v| {
        v.insert("c3", cluster("c3", "v1"));
        v.insert("c3", endpoints("c3", "v1"));
        v.insert("r1", route("r1", "to-c3"));
    });
    let cds = c.expect().await;
    match f {
        Flavor::Sotw => assert_eq!(cds.names, vec!["c1", "c2", "c3"]),
        Flavor::Delta => assert_eq!(cds.names, vec!["c3"]),
    }
    // Until Envoy took the new cluster, nothing may name it.
    c.expect_silence(QUIET).await;
    // Envoy asks for the new cluster's endpoints (SotW: with the last EDS
    // response's nonce), then ACKs CDS.
    let eds_nonce = srv.server.status()[0].types[ENDPOINT]
        .sent_nonce
        .clone()
        .unwrap();
    c.watch_at(ENDPOINT, &["c1", "c2", "c3"], "", &eds_nonce)
        .await;
    let eds = c.expect().await;
    let want = match f {
        Flavor::Sotw => s(&["c1", "c2", "c3"]),
        Flavor::Delta => s(&["c3"]),
    };
    assert_eq!((eds.type_url.as_str(), eds.names.clone()), (ENDPOINT, want));
    c.ack(&eds).await;
    c.ack(&cds).await;
    let rest: Vec<String> = [c.expect().await, c.expect().await]
        .iter()
        .map(|r| short_name(&r.type_url).to_string())
        .collect();
    assert_eq!(rest, vec!["EDS", "RDS"]);
}

async fn cluster_update_resends_unchanged_endpoints(f: Flavor) {
    let (src, _srv, mut c) = start_ads(f).await;
    subscribed(&mut c).await;
    src.upsert("c1", cluster("c1", "v2"));
    let cds = c.expect().await;
    let want = match f {
        Flavor::Sotw => s(&["c1", "c2"]),
        Flavor::Delta => s(&["c1"]),
    };
    assert_eq!((cds.type_url.as_str(), cds.names), (CLUSTER, want));
    let eds = c.expect().await;
    assert_eq!(
        (eds.type_url.as_str(), eds.names),
        (ENDPOINT, s(&["c1", "c2"]))
    );
    c.expect_silence(QUIET).await;
}

/// One change adds c3 and updates c1 (its endpoints unchanged). Envoy asks
/// for c3's endpoints itself; c1 warms until its endpoints come unasked,
/// and Envoy ACKs no CDS while any cluster warms: both must arrive before
/// the CDS ACK, or the stream waits for its gate and Envoy for its 15 s
/// initial fetch timeout (found by the chaos suite's convergence check).
async fn an_updated_cluster_beside_an_added_one_gets_its_endpoints_before_the_cds_ack(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    subscribed(&mut c).await;
    src.update(|v| {
        v.insert("c3", cluster("c3", "v1"));
        v.insert("c3", endpoints("c3", "v1"));
        v.insert("c1", cluster("c1", "v2"));
    });
    let cds = c.expect().await;
    assert_eq!(cds.type_url, CLUSTER);
    let eds_nonce = srv.server.status()[0].types[ENDPOINT]
        .sent_nonce
        .clone()
        .unwrap();
    c.watch_at(ENDPOINT, &["c1", "c2", "c3"], "", &eds_nonce)
        .await;
    // No CDS ACK, as Envoy while c1 warms: only EDS may come, and it must
    // cover both clusters well within the gate's wait.
    let mut warmed = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
    while !(warmed.contains("c1") && warmed.contains("c3")) {
        let r = tokio::time::timeout_at(deadline, c.expect())
            .await
            .unwrap_or_else(|_| panic!("only {warmed:?} got endpoints before the CDS ACK"));
        assert_eq!(r.type_url, ENDPOINT, "only endpoints before the CDS ACK");
        c.ack(&r).await;
        warmed.extend(r.names);
    }
}

async fn listener_warming_gets_its_new_route_at_once(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    subscribed(&mut c).await;
    src.update(|v| {
        v.insert("r2", route("r2", "v1"));
        v.insert("l1", listener("l1", "r2", "v2"));
    });
    let lds = c.expect().await;
    assert_eq!(lds.type_url, LISTENER);
    c.ack(&lds).await;
    // The warming listener asks for r2 (SotW's RDS nonce: the last RDS
    // response's; delta unsubscribes r1).
    let st = srv.server.status();
    let rds_nonce = st[0].types[ROUTE].sent_nonce.clone().unwrap();
    c.watch_at(ROUTE, &["r2"], "", &rds_nonce).await;
    let rds = c.expect().await;
    assert_eq!((rds.type_url.as_str(), rds.names), (ROUTE, s(&["r2"])));
}

async fn another_replica_answers_a_subset_request_mid_warming(f: Flavor) {
    let (_a_src, a) = start().await;
    let b = TestServer::start(source(), fast()).await;
    let mut on_a = Stream::ads(f, a.addr, envoy("n")).await;
    on_a.ask(ENDPOINT, &["c1"]).await;
    let from_a = on_a.expect().await;
    drop(on_a);
    let mut on_b = Stream::ads(f, b.addr, envoy("n")).await;
    match f {
        Flavor::Sotw => {
            // Reconnected to B in the middle of warming: only one EDS name, no CDS.
            on_b.sotw()
                .request(ENDPOINT, &["c1"], from_a.version(), "")
                .await;
            let from_b = on_b.expect().await;
            assert_eq!(from_b.names, vec!["c1"]);
            assert_eq!(
                from_b.version(),
                from_a.version(),
                "replicas agree on content-hash versions"
            );
        }
        Flavor::Delta => {
            let held: HashMap<String, String> = from_a
                .delta()
                .resources
                .iter()
                .map(|r| (r.name.clone(), r.version.clone()))
                .collect();
            on_b.delta().resume(ENDPOINT, &["c1", "c2"], held).await;
            let from_b = on_b.expect().await;
            assert_eq!(from_b.names, vec!["c2"], "c1 is held at the same version");
        }
    }
}

/// A request that arrives while a push waits for its new clusters to warm
/// is answered by the stage that sends its type, not at once from the new
/// view: a route naming the warming cluster must not reach Envoy first.
async fn a_request_during_a_push_stage_waits_for_its_stage(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    subscribed(&mut c).await;
    src.update(|v| {
        v.insert("c3", cluster("c3", "v1"));
        v.insert("c3", endpoints("c3", "v1"));
        v.insert("r2", route("r2", "to-c3"));
    });
    let cds = c.expect().await;
    assert_eq!(cds.type_url, CLUSTER);
    // Before Envoy took c3, something asks for route r2, which names it
    // (SotW: with the last RDS response's nonce).
    let st = srv.server.status();
    let rds_nonce = st[0].types[ROUTE].sent_nonce.clone().unwrap();
    let eds_nonce = st[0].types[ENDPOINT].sent_nonce.clone().unwrap();
    c.watch_at(ROUTE, &["r1", "r2"], "", &rds_nonce).await;
    c.expect_silence(QUIET).await;
    // Envoy warms c3 (asks for its endpoints, answered at once) and ACKs
    // CDS: now the route goes out, after the cluster's endpoints.
    c.watch_at(ENDPOINT, &["c1", "c2", "c3"], "", &eds_nonce)
        .await;
    let eds = c.expect().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert!(eds.names.contains(&"c3".to_string()), "{:?}", eds.names);
    c.ack(&eds).await;
    c.ack(&cds).await;
    let mut rest = Vec::new();
    for _ in 0..2 {
        let r = c.expect().await;
        c.ack(&r).await;
        rest.push((short_name(&r.type_url).to_string(), r.names));
    }
    c.expect_silence(QUIET).await;
    let rds = rest
        .iter()
        .find(|(t, _)| t == "RDS")
        .expect("RDS after the stage");
    assert!(rds.1.contains(&"r2".to_string()), "{rest:?}");
}

/// SotW: while a push waits to remove clusters, a CDS request that adds a
/// name is answered by the removal stage, not at once: its full-state
/// answer from the new view would drop a cluster the old route still uses.
#[tokio::test]
async fn sotw_cds_request_during_the_removal_wait_does_not_remove_early() {
    let (src, srv, mut c) = start_ads(Flavor::Sotw).await;
    for (t, ask) in [
        (CLUSTER, vec!["c1", "c2"]),
        (ENDPOINT, vec!["c1", "c2"]),
        (LISTENER, vec![]),
        (ROUTE, vec!["r1"]),
    ] {
        c.ask(t, &ask).await;
        let r = c.expect().await;
        c.ack(&r).await;
    }
    src.update(|v| {
        v.by_type.get_mut(CLUSTER).unwrap().remove("c1");
        v.by_type.get_mut(ENDPOINT).unwrap().remove("c1");
        v.insert("r1", route("r1", "to-c2"));
    });
    let mut stage = Vec::new();
    for _ in 0..2 {
        stage.push(c.expect().await);
    }
    assert_eq!(
        stage
            .iter()
            .map(|r| short_name(&r.type_url))
            .collect::<Vec<_>>(),
        vec!["EDS", "RDS"]
    );
    // Before Envoy took the new route, a CDS request adds a name.
    let cds_nonce = srv.server.status()[0].types[CLUSTER]
        .sent_nonce
        .clone()
        .unwrap();
    c.watch_at(CLUSTER, &["c1", "c2", "c9"], "", &cds_nonce)
        .await;
    c.expect_silence(QUIET).await;
    for r in &stage {
        c.ack(r).await;
    }
    let cds = c.expect().await;
    assert_eq!((cds.type_url.as_str(), cds.names), (CLUSTER, s(&["c2"])));
}
