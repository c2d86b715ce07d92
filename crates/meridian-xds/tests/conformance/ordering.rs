//! [Eventual consistency considerations] make-before-break on ADS,
//! [Resource warming], and replicas answering mid-warming.

use std::collections::HashMap;

use meridian_xds::testing::fixtures::{cluster, endpoints, listener, route, secret};
use meridian_xds::testing::{delta_names, names, DeltaClient, SotwClient, TestServer};
use meridian_xds::types::{short_name, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use meridian_xds::MemorySource;

use super::support::{envoy, fast, source, start, QUIET};

/// Subscribes a SotW ADS client to everything in the base source, ACKing all.
async fn sotw_subscribed(c: &mut SotwClient) {
    for (t, ask) in [
        (CLUSTER, vec![]),
        (ENDPOINT, vec!["c1", "c2"]),
        (LISTENER, vec![]),
        (ROUTE, vec!["r1"]),
        (SECRET, vec!["s1"]),
    ] {
        c.request(t, &ask, "", "").await;
        let r = c.expect_response().await;
        c.ack(&r, &ask).await;
    }
}

async fn delta_subscribed(c: &mut DeltaClient) {
    for (t, ask) in [
        (CLUSTER, vec![]),
        (ENDPOINT, vec!["c1", "c2"]),
        (LISTENER, vec![]),
        (ROUTE, vec!["r1"]),
        (SECRET, vec!["s1"]),
    ] {
        c.subscribe(t, &ask, &[], "").await;
        let r = c.expect_response().await;
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

#[tokio::test]
async fn make_before_break_order_on_ads_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    sotw_subscribed(&mut c).await;
    replace_c1_by_c3(&src);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = c.expect_response().await;
        // ACK like Envoy: the rest of the push waits for the CDS ACK.
        let keep: Vec<&str> = match r.type_url.as_str() {
            ENDPOINT => vec!["c1", "c2"],
            ROUTE => vec!["r1"],
            SECRET => vec!["s1"],
            _ => vec![],
        };
        c.ack(&r, &keep).await;
        seen.push((short_name(&r.type_url).to_string(), names(&r)));
    }
    c.expect_silence(QUIET).await;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            ("SDS".to_string(), s(&["s1"])),
            ("CDS".to_string(), s(&["c1", "c2", "c3"])), // additions, c1 kept
            ("EDS".to_string(), s(&["c2"])),
            ("RDS".to_string(), s(&["r1"])),
            ("CDS".to_string(), s(&["c2", "c3"])), // c1 removed last
        ]
    );
}

#[tokio::test]
async fn make_before_break_order_on_ads_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    delta_subscribed(&mut c).await;
    replace_c1_by_c3(&src);
    let mut seen = Vec::new();
    for _ in 0..6 {
        let r = c.expect_response().await;
        c.ack(&r).await;
        seen.push((
            short_name(&r.type_url).to_string(),
            delta_names(&r),
            r.removed_resources.clone(),
        ));
    }
    c.expect_silence(QUIET).await;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    assert_eq!(
        seen,
        vec![
            ("SDS".to_string(), s(&["s1"]), s(&[])),
            ("CDS".to_string(), s(&["c3"]), s(&[])),
            ("EDS".to_string(), s(&["c2"]), s(&[])), // re-sent so updated clusters warm
            ("RDS".to_string(), s(&["r1"]), s(&[])),
            ("CDS".to_string(), s(&[]), s(&["c1"])),
            ("EDS".to_string(), s(&[]), s(&["c1"])),
        ]
    );
}

#[tokio::test]
async fn new_clusters_get_endpoints_before_listeners_and_routes_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    sotw_subscribed(&mut c).await;
    src.update(|v| {
        v.insert("c3", cluster("c3", "v1"));
        v.insert("c3", endpoints("c3", "v1"));
        v.insert("r1", route("r1", "to-c3"));
    });
    let cds = c.expect_response().await;
    assert_eq!(names(&cds), vec!["c1", "c2", "c3"]);
    // Until Envoy took the new cluster, nothing may name it.
    c.expect_silence(QUIET).await;
    // Envoy asks for the new cluster's endpoints, then ACKs CDS.
    let eds_nonce = srv.server.status()[0].types[ENDPOINT]
        .sent_nonce
        .clone()
        .unwrap();
    c.request(ENDPOINT, &["c1", "c2", "c3"], "", &eds_nonce)
        .await;
    let eds = c.expect_response().await;
    assert_eq!(
        (eds.type_url.as_str(), names(&eds)),
        (
            ENDPOINT,
            vec!["c1".to_string(), "c2".to_string(), "c3".to_string()]
        )
    );
    c.ack(&eds, &["c1", "c2", "c3"]).await;
    c.ack(&cds, &[]).await;
    let rest: Vec<String> = [c.expect_response().await, c.expect_response().await]
        .iter()
        .map(|r| short_name(&r.type_url).to_string())
        .collect();
    assert_eq!(rest, vec!["EDS", "RDS"]);
}

#[tokio::test]
async fn new_clusters_get_endpoints_before_listeners_and_routes_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    delta_subscribed(&mut c).await;
    src.update(|v| {
        v.insert("c3", cluster("c3", "v1"));
        v.insert("c3", endpoints("c3", "v1"));
        v.insert("r1", route("r1", "to-c3"));
    });
    let cds = c.expect_response().await;
    assert_eq!(delta_names(&cds), vec!["c3"]);
    c.expect_silence(QUIET).await;
    c.subscribe(ENDPOINT, &["c3"], &[], "").await;
    let eds = c.expect_response().await;
    assert_eq!(
        (eds.type_url.as_str(), delta_names(&eds)),
        (ENDPOINT, vec!["c3".to_string()])
    );
    c.ack(&eds).await;
    c.ack(&cds).await;
    let rest: Vec<String> = [c.expect_response().await, c.expect_response().await]
        .iter()
        .map(|r| short_name(&r.type_url).to_string())
        .collect();
    assert_eq!(rest, vec!["EDS", "RDS"]);
}

#[tokio::test]
async fn cluster_update_resends_unchanged_endpoints_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    sotw_subscribed(&mut c).await;
    src.upsert("c1", cluster("c1", "v2"));
    let cds = c.expect_response().await;
    assert_eq!(
        (cds.type_url.as_str(), names(&cds)),
        (CLUSTER, vec!["c1".to_string(), "c2".to_string()])
    );
    let eds = c.expect_response().await;
    assert_eq!(
        (eds.type_url.as_str(), names(&eds)),
        (ENDPOINT, vec!["c1".to_string(), "c2".to_string()])
    );
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn cluster_update_resends_unchanged_endpoints_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    delta_subscribed(&mut c).await;
    src.upsert("c1", cluster("c1", "v2"));
    let cds = c.expect_response().await;
    assert_eq!(
        (cds.type_url.as_str(), delta_names(&cds)),
        (CLUSTER, vec!["c1".to_string()])
    );
    let eds = c.expect_response().await;
    assert_eq!(
        (eds.type_url.as_str(), delta_names(&eds)),
        (ENDPOINT, vec!["c1".to_string(), "c2".to_string()])
    );
    c.expect_silence(QUIET).await;
}

#[tokio::test]
async fn listener_warming_gets_its_new_route_at_once_sotw() {
    let (src, srv) = start().await;
    let mut c = SotwClient::ads(srv.addr, envoy("n")).await.unwrap();
    sotw_subscribed(&mut c).await;
    src.update(|v| {
        v.insert("r2", route("r2", "v1"));
        v.insert("l1", listener("l1", "r2", "v2"));
    });
    let lds = c.expect_response().await;
    assert_eq!(lds.type_url, LISTENER);
    c.ack(&lds, &[]).await;
    // The warming listener asks for r2 (RDS nonce: the last RDS response's).
    let st = srv.server.status();
    let rds_nonce = st[0].types[ROUTE].sent_nonce.clone().unwrap();
    c.request(ROUTE, &["r2"], "", &rds_nonce).await;
    let rds = c.expect_response().await;
    assert_eq!(
        (rds.type_url.as_str(), names(&rds)),
        (ROUTE, vec!["r2".to_string()])
    );
}

#[tokio::test]
async fn listener_warming_gets_its_new_route_at_once_delta() {
    let (src, srv) = start().await;
    let mut c = DeltaClient::ads(srv.addr, envoy("n")).await.unwrap();
    delta_subscribed(&mut c).await;
    src.update(|v| {
        v.insert("r2", route("r2", "v1"));
        v.insert("l1", listener("l1", "r2", "v2"));
    });
    let lds = c.expect_response().await;
    assert_eq!(lds.type_url, LISTENER);
    c.ack(&lds).await;
    c.subscribe(ROUTE, &["r2"], &["r1"], "").await;
    let rds = c.expect_response().await;
    assert_eq!(
        (rds.type_url.as_str(), delta_names(&rds)),
        (ROUTE, vec!["r2".to_string()])
    );
}

#[tokio::test]
async fn another_replica_answers_a_subset_request_mid_warming_sotw() {
    let (_a_src, a) = start().await;
    let b = TestServer::start(source(), fast()).await;
    let mut on_a = SotwClient::ads(a.addr, envoy("n")).await.unwrap();
    on_a.request(ENDPOINT, &["c1"], "", "").await;
    let from_a = on_a.expect_response().await;
    drop(on_a);
    // Reconnected to B in the middle of warming: only one EDS name, no CDS.
    let mut on_b = SotwClient::ads(b.addr, envoy("n")).await.unwrap();
    on_b.request(ENDPOINT, &["c1"], &from_a.version_info, "")
        .await;
    let from_b = on_b.expect_response().await;
    assert_eq!(names(&from_b), vec!["c1"]);
    assert_eq!(
        from_b.version_info, from_a.version_info,
        "replicas agree on content-hash versions"
    );
}

#[tokio::test]
async fn another_replica_answers_a_subset_request_mid_warming_delta() {
    let (_a_src, a) = start().await;
    let b = TestServer::start(source(), fast()).await;
    let mut on_a = DeltaClient::ads(a.addr, envoy("n")).await.unwrap();
    on_a.subscribe(ENDPOINT, &["c1"], &[], "").await;
    let from_a = on_a.expect_response().await;
    drop(on_a);
    let held: HashMap<String, String> = from_a
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    let mut on_b = DeltaClient::ads(b.addr, envoy("n")).await.unwrap();
    on_b.resume(ENDPOINT, &["c1", "c2"], held).await;
    let from_b = on_b.expect_response().await;
    assert_eq!(
        delta_names(&from_b),
        vec!["c2"],
        "c1 is held at the same version"
    );
}
