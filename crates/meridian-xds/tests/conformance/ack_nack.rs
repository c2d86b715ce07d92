//! [ACK and NACK semantics], stale nonces, NACK back-off, no unprompted resends.

use meridian_xds::testing::fixtures::cluster;
use meridian_xds::types::CLUSTER;
use meridian_xds::{SyncState, XdsMetrics};

use super::support::{both, envoy, s, start, start_ads, Flavor, Stream, QUIET};

both!(
    stale_nonce_is_not_answered,
    nack_is_detected_by_error_detail,
    nacked_config_is_not_resent_until_it_changes,
    identical_response_is_never_resent_unprompted,
);

async fn stale_nonce_is_not_answered(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    c.ask(CLUSTER, &[]).await;
    let first = c.expect().await;
    src.upsert("c3", cluster("c3", "v1"));
    let second = c.expect().await;
    match f {
        Flavor::Sotw => {
            // Envoy's ACK of the first response crosses the second one: stale.
            c.sotw()
                .request(CLUSTER, &["c1"], first.version(), &first.nonce)
                .await;
        }
        Flavor::Delta => {
            assert_eq!(second.names, vec!["c3"]);
            // Acks of older responses are fine in delta, but never answered.
            c.ack(&first).await;
            c.delta().subscribe(CLUSTER, &[], &[], "not-a-nonce").await;
        }
    }
    c.expect_silence(QUIET).await;
    let st = &srv.server.status()[0].types[CLUSTER];
    if f == Flavor::Sotw {
        assert!(st.wildcard, "a stale request changes nothing");
    }
    assert_eq!(st.state, SyncState::Stale);
    if f == Flavor::Sotw {
        assert_eq!(XdsMetrics::get(&srv.server.metrics().stale_requests), 1);
    }
    c.ack(&second).await;
    c.expect_silence(QUIET).await;
    assert_eq!(
        srv.server.status()[0].types[CLUSTER].state,
        SyncState::Synced
    );
}

async fn nack_is_detected_by_error_detail(f: Flavor) {
    let (_src, srv) = start().await;
    let mut c = Stream::ads(f, srv.addr, envoy("envoy-7")).await;
    c.ask(CLUSTER, &[]).await;
    let r = c.expect().await;
    // SotW: version_info equal to the response's; a version heuristic
    // would call it an ACK.
    c.nack(&r, r.version(), "cluster c2: bad lb policy").await;
    c.expect_silence(QUIET).await;
    let st = &srv.server.status()[0].types[CLUSTER];
    assert_eq!(st.state, SyncState::Nacked);
    let n = st.last_nack.clone().expect("nack recorded");
    match f {
        Flavor::Sotw => assert_eq!(
            (n.node_id.as_str(), n.type_url.as_str(), n.message.as_str()),
            ("envoy-7", CLUSTER, "cluster c2: bad lb policy")
        ),
        Flavor::Delta => assert_eq!(
            (n.node_id.as_str(), n.message.as_str()),
            ("envoy-7", "cluster c2: bad lb policy")
        ),
    }
    assert_eq!(n.resource_names, vec!["c1", "c2"]);
    match f {
        Flavor::Sotw => {
            assert_eq!(srv.server.recent_nacks(), vec![n]);
            assert_eq!(XdsMetrics::get(&srv.server.metrics().nacks), 1);
            assert_eq!(XdsMetrics::get(&srv.server.metrics().acks), 0);
        }
        Flavor::Delta => assert_eq!(srv.server.recent_nacks().len(), 1),
    }
}

async fn nacked_config_is_not_resent_until_it_changes(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    c.ask(CLUSTER, &[]).await;
    let good = c.expect().await;
    c.ack(&good).await;
    src.upsert("c2", cluster("c2", "broken"));
    let bad = c.expect().await;
    c.nack(&bad, good.version(), "rejected").await;
    c.expect_silence(QUIET).await;
    src.touch(); // a revision without a content change
    c.expect_silence(QUIET).await;
    src.upsert("c2", cluster("c2", "fixed"));
    let fixed = c.expect().await;
    match f {
        Flavor::Sotw => {
            assert_ne!(fixed.version(), bad.version());
            assert_eq!(fixed.names, vec!["c1", "c2"]);
        }
        Flavor::Delta => {
            assert_eq!(fixed.names, s(&["c2"]));
            assert_ne!(
                fixed.delta().resources[0].version,
                bad.delta().resources[0].version
            );
        }
    }
    let _ = srv;
}

async fn identical_response_is_never_resent_unprompted(f: Flavor) {
    let (src, srv, mut c) = start_ads(f).await;
    c.ask(CLUSTER, &[]).await;
    let r = c.expect().await;
    c.ack(&r).await;
    for _ in 0..3 {
        src.touch();
        // Re-inserting identical content is not a change either.
        src.upsert("c1", cluster("c1", "v1"));
    }
    c.expect_silence(QUIET).await;
    let _ = srv;
}
