//! The sink and the cluster-wide sums: identity, refusals over gRPC, the
//! stream's bookkeeping.

use std::sync::Arc;

use envoy_types::pb::io::prometheus::client::MetricFamily;
use meridian_pki::Identity;

use super::super::window::Limits;
use super::super::{sum, ErrorCounts, MetricsSink, TrafficStats};
use super::{counter, message, rep, S};
use crate::metrics::{StatsRejection, WriteMetrics};

fn stats(limits: Limits) -> (TrafficStats, Arc<WriteMetrics>) {
    let m = Arc::new(WriteMetrics::default());
    (
        TrafficStats::new(1, "us".into(), limits, m.clone(), None),
        m,
    )
}

#[test]
fn sums_count_an_envoy_held_by_two_controllers_once() {
    let e =
        |id: &str, controller: u64, requests: u64, errors: u64| meridian_proto::v1::EnvoyTraffic {
            node_id: id.into(),
            controller_id: controller,
            requests,
            errors,
            ..Default::default()
        };
    let s = sum(&[e("a", 1, 10, 1), e("a", 2, 5, 2), e("b", 2, 1, 0)]);
    assert_eq!(
        s,
        ErrorCounts {
            requests: 16,
            errors: 3,
            envoys: 2
        }
    );
}

#[tokio::test]
async fn region_errors_without_peers_are_this_nodes_envoys() {
    let (s, m) = stats(Limits::default());
    let open = s.open("e1", "us", "canary").unwrap();
    s.report("e1", rep(&[("web", 0, 0)])).unwrap();
    // Same slot, so give the second report a later one.
    s.table()
        .report("e1", rep(&[("web", 40, 4)]), super::super::now_ms() + 2 * S)
        .unwrap();
    let want = ErrorCounts {
        requests: 40,
        errors: 4,
        envoys: 1,
    };
    assert_eq!(s.local_errors("us", Some("canary"), 0), want);
    assert_eq!(s.region_errors("us", None, 0).await.unwrap(), want);
    assert_eq!(
        s.local_errors("us", Some("stable"), 0),
        ErrorCounts::default()
    );
    assert!(s.region_errors("", None, 0).await.is_err());
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(m.envoy_stats.streams.load(Relaxed), 1);
    drop(open);
    assert_eq!(m.envoy_stats.streams.load(Relaxed), 0);
    assert_eq!(m.envoy_stats.envoys.load(Relaxed), 1);
}

/// The sink, its metrics and its stop signal (streams end when it is
/// dropped).
fn sink(
    limits: Limits,
) -> (
    MetricsSink,
    Arc<WriteMetrics>,
    tokio::sync::watch::Sender<bool>,
) {
    let (s, m) = stats(limits);
    let (tx, rx) = tokio::sync::watch::channel(false);
    (MetricsSink::new(s, rx), m, tx)
}

#[test]
fn a_stream_names_its_envoy_and_a_proxy_certificate_its_group() {
    let (sink, m, _stop) = sink(Limits::default());
    let first = message(Some(("e1", "eu", "edge")), vec![]);
    assert_eq!(
        sink.identify(&first, None).unwrap(),
        ("e1".into(), "eu".into(), "edge".into())
    );
    let cert = Identity::Proxy {
        group: "edge".into(),
    };
    assert_eq!(sink.identify(&first, Some(&cert)).unwrap().2, "edge");
    // No group claimed: the certificate's.
    let bare = message(Some(("e1", "", "")), vec![]);
    assert_eq!(
        sink.identify(&bare, Some(&cert)).unwrap(),
        ("e1".into(), "us".into(), "edge".into()),
        "no locality: this controller's region"
    );
    let other = Identity::Proxy {
        group: "mesh".into(),
    };
    let st = sink.identify(&first, Some(&other)).unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied);
    assert!(st.message().contains("proxy/mesh"), "{}", st.message());
    assert_eq!(m.envoy_stats.rejected_count(StatsRejection::Identity), 1);
    for bad in [
        message(None, vec![]),
        message(Some(("", "us", "g")), vec![]),
        message(Some((&"x".repeat(300), "us", "g")), vec![]),
    ] {
        let st = sink.identify(&bad, None).unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{}", st.message());
    }
    assert_eq!(m.envoy_stats.rejected_count(StatsRejection::Invalid), 3);
}

/// Property: over gRPC, a message above the size limit ends the stream
/// with a refusal that is counted, and the server goes on serving.
#[tokio::test]
async fn an_oversized_message_is_refused_and_counted() {
    use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
    let (sink, m, _stop) = sink(Limits {
        max_message_bytes: 2048,
        ..Limits::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(sink.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut c = MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let big: Vec<MetricFamily> = (0..200)
        .map(|i| counter(&format!("cluster.c{i}.upstream_rq_total"), 1.0))
        .collect();
    let msgs = vec![message(Some(("e1", "us", "g")), big)];
    let st = c
        .stream_metrics(tokio_stream::iter(msgs))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::OutOfRange, "{st:?}");
    assert_eq!(m.envoy_stats.rejected_count(StatsRejection::Oversized), 1);
    // A small one on the same server is taken.
    let ok = vec![
        message(
            Some(("e2", "us", "g")),
            vec![counter("cluster.web.upstream_rq_total", 1.0)],
        ),
        message(None, vec![counter("cluster.web.upstream_rq_total", 3.0)]),
    ];
    c.stream_metrics(tokio_stream::iter(ok)).await.unwrap();
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(m.envoy_stats.reports.load(Relaxed), 2);
}

/// Property: an open stats stream ends when the node stops (every
/// long-lived stream has an owner that can stop it), and the Envoy is then
/// disconnected in the table.
#[tokio::test]
async fn an_open_stream_ends_on_shutdown() {
    use envoy_types::pb::envoy::service::metrics::v3::metrics_service_client::MetricsServiceClient;
    let (sink, m, stop) = sink(Limits::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(sink.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut c = MetricsServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(message(Some(("e1", "us", "g")), vec![]))
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        c.stream_metrics(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    use std::sync::atomic::Ordering::Relaxed;
    while m.envoy_stats.streams.load(Relaxed) == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), call)
        .await
        .expect("the stream did not end on shutdown")
        .unwrap()
        .expect("the stream ends cleanly");
    assert_eq!(m.envoy_stats.streams.load(Relaxed), 0);
    drop(tx);
}
