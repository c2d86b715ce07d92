use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::envoy::service::metrics::v3::stream_metrics_message::Identifier;
use envoy_types::pb::envoy::service::metrics::v3::StreamMetricsMessage;
use envoy_types::pb::io::prometheus::client::{
    Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType,
};
use prost::Message;
use rand::{Rng, RngCore, SeedableRng};

use super::decode::{self, cluster_key, DecodeError};
use super::window::{Counts, Limits, Refused, Report, Table};

mod sink;

const XDS: &str = meridian_translate::bootstrap::XDS_CLUSTER;
pub(super) const S: u64 = 1000;

fn counts(requests: u64, errors: u64) -> Counts {
    Counts { requests, errors }
}

/// A report of `(cluster, requests, errors)`.
pub(super) fn rep(clusters: &[(&str, u64, u64)]) -> Report {
    clusters
        .iter()
        .map(|(c, r, e)| (cluster_key(c), counts(*r, *e)))
        .collect()
}

fn table() -> Table {
    Table::new(Limits::default())
}

/// The counts of `node` since `since` (none when it did not report).
fn of(t: &Table, node: &str, since: u64) -> Option<Counts> {
    t.since(None, None, since)
        .into_iter()
        .find(|w| w.node_id == node)
        .map(|w| w.counts)
}

#[test]
fn increases_are_differences_and_a_counter_that_went_down_was_reset() {
    assert_eq!(counts(10, 3).increase_from(counts(4, 1)), counts(6, 2));
    assert_eq!(counts(10, 3).increase_from(counts(10, 3)), counts(0, 0));
    // Envoy restarted: 7 requests since, not 7 - 100.
    assert_eq!(counts(7, 2).increase_from(counts(100, 50)), counts(7, 2));
    // Fields reset apart: only the one that went down is taken whole.
    assert_eq!(counts(120, 2).increase_from(counts(100, 50)), counts(20, 2));
}

#[test]
fn the_first_report_of_a_stream_is_a_baseline_and_later_ones_add_up() {
    let mut t = table();
    t.open("e1", "us", "default", 0).unwrap();
    // Counters from before the stream: not this window's traffic.
    t.report("e1", rep(&[("web", 1000, 10)]), 5 * S).unwrap();
    assert_eq!(of(&t, "e1", 0), Some(counts(0, 0)));
    t.report("e1", rep(&[("web", 1100, 15)]), 10 * S).unwrap();
    t.report("e1", rep(&[("web", 1300, 40), ("api", 0, 0)]), 15 * S)
        .unwrap();
    assert_eq!(of(&t, "e1", 0), Some(counts(300, 30)));
    // Since 10 s: from the sample at 10 s.
    assert_eq!(of(&t, "e1", 10 * S), Some(counts(200, 25)));
    // Since 12 s: the last sample at or before it is still the one at 10 s.
    assert_eq!(of(&t, "e1", 12 * S), Some(counts(200, 25)));
    // After its last report: it said nothing in that window.
    assert_eq!(of(&t, "e1", 16 * S), None);
}

#[test]
fn resets_new_and_readded_clusters_count_from_zero() {
    let mut t = table();
    t.open("e1", "us", "default", 0).unwrap();
    t.report("e1", rep(&[("web", 500, 5)]), S).unwrap();
    // A cluster first seen mid-stream: its counters were 0 before.
    t.report("e1", rep(&[("web", 510, 5), ("api", 30, 3)]), 2 * S)
        .unwrap();
    assert_eq!(of(&t, "e1", 0), Some(counts(40, 3)));
    // Removed (gone from the report), then added again with fresh counters.
    t.report("e1", rep(&[("web", 520, 5)]), 3 * S).unwrap();
    t.report("e1", rep(&[("web", 520, 5), ("api", 4, 4)]), 4 * S)
        .unwrap();
    assert_eq!(of(&t, "e1", 0), Some(counts(54, 7)));
    // Envoy restarted in place (same stream, counters down): new values.
    t.report("e1", rep(&[("web", 9, 1), ("api", 1, 0)]), 5 * S)
        .unwrap();
    assert_eq!(of(&t, "e1", 4 * S), Some(counts(10, 1)));
}

#[test]
fn a_new_stream_is_a_new_baseline_so_traffic_served_elsewhere_is_not_counted_twice() {
    let mut t = table();
    t.open("e1", "us", "default", 0).unwrap();
    t.report("e1", rep(&[("web", 100, 1)]), S).unwrap();
    t.report("e1", rep(&[("web", 150, 2)]), 2 * S).unwrap();
    t.close("e1", 3 * S);
    // Meanwhile another controller counted 1000 requests; back here:
    t.open("e1", "us", "default", 60 * S).unwrap();
    t.report("e1", rep(&[("web", 1150, 2)]), 61 * S).unwrap();
    t.report("e1", rep(&[("web", 1160, 3)]), 62 * S).unwrap();
    assert_eq!(of(&t, "e1", 0), Some(counts(60, 2)));
    let w = &t.since(None, None, 0)[0];
    assert!(w.connected);
}

#[test]
fn filters_by_region_and_group() {
    let mut t = table();
    for (id, region, group) in [
        ("a", "us", "edge"),
        ("b", "us", "mesh"),
        ("c", "eu", "edge"),
    ] {
        t.open(id, region, group, 0).unwrap();
        t.report(id, rep(&[("web", 0, 0)]), S).unwrap();
        t.report(id, rep(&[("web", 10, 1)]), 2 * S).unwrap();
    }
    let ids = |r: Option<&str>, g: Option<&str>| -> Vec<String> {
        t.since(r, g, 0).into_iter().map(|w| w.node_id).collect()
    };
    assert_eq!(ids(Some("us"), None), ["a", "b"]);
    assert_eq!(ids(Some("us"), Some("edge")), ["a"]);
    assert_eq!(ids(None, Some("edge")), ["a", "c"]);
    assert_eq!(ids(Some("ap"), None), Vec::<String>::new());
}

#[test]
fn the_ring_keeps_one_sample_per_slot_and_only_the_retention() {
    let limits = Limits {
        retention_ms: 60 * S,
        ..Limits::default()
    };
    let mut t = Table::new(limits);
    t.open("e1", "us", "default", 0).unwrap();
    // A flood: 10 reports per second for 5 minutes.
    let mut n = 0;
    for i in 0..3000u64 {
        n += 1;
        t.report("e1", rep(&[("web", n, 0)]), i * 100).unwrap();
    }
    let now = 2999 * 100;
    assert_eq!(
        t.samples_of("e1"),
        61,
        "one per second over 60 s, plus the one at the window's start"
    );
    // The longest window still has its baseline: 60 s of 10 requests/s.
    let c = of(&t, "e1", now - 60 * S).unwrap();
    assert_eq!(c.requests, 600);
}

#[test]
fn a_full_table_evicts_the_longest_silent_disconnected_envoy_or_refuses() {
    let mut t = Table::new(Limits {
        max_envoys: 2,
        ..Limits::default()
    });
    t.open("a", "us", "g", 0).unwrap();
    t.open("b", "us", "g", S).unwrap();
    assert_eq!(t.open("c", "us", "g", 2 * S), Err(Refused::Full(2)));
    // A known Envoy reconnecting is never refused.
    t.open("a", "us", "g", 3 * S).unwrap();
    t.close("b", 4 * S);
    t.close("a", 5 * S);
    t.close("a", 5 * S);
    t.open("c", "us", "g", 6 * S).unwrap();
    assert_eq!(t.len(), 2);
    assert!(t.has("a") && t.has("c"), "b, silent the longest, made room");
}

#[test]
fn disconnected_envoys_are_dropped_after_the_retention() {
    let limits = Limits {
        retention_ms: 60 * S,
        ..Limits::default()
    };
    let mut t = Table::new(limits);
    t.open("gone", "us", "g", 0).unwrap();
    t.open("here", "us", "g", 0).unwrap();
    t.close("gone", S);
    t.sweep(61 * S);
    assert!(
        t.has("gone"),
        "within the retention a window can still reach it"
    );
    t.sweep(62 * S);
    assert!(!t.has("gone"));
    assert!(t.has("here"), "a connected Envoy stays, however quiet");
    // Stream ends and questions sweep at most every 10 s.
    t.open("gone", "us", "g", 70 * S).unwrap();
    t.close("gone", 71 * S);
    t.maybe_sweep(130 * S);
    assert!(t.has("gone"), "silent 59 s");
    t.maybe_sweep(135 * S);
    assert!(t.has("gone"), "swept 5 s ago: not yet again");
    t.maybe_sweep(140 * S);
    assert!(!t.has("gone"));
}

#[test]
fn a_report_with_too_many_clusters_is_refused_and_changes_nothing() {
    let mut t = Table::new(Limits {
        max_clusters: 2,
        ..Limits::default()
    });
    t.open("e1", "us", "g", 0).unwrap();
    t.report("e1", rep(&[("a", 1, 0)]), S).unwrap();
    let big = rep(&[("a", 5, 0), ("b", 1, 0), ("c", 1, 0)]);
    assert_eq!(
        t.report("e1", big, 2 * S),
        Err(Refused::TooManyClusters { found: 3, limit: 2 })
    );
    t.report("e1", rep(&[("a", 2, 0)]), 3 * S).unwrap();
    assert_eq!(of(&t, "e1", 0), Some(counts(1, 0)));
}

#[test]
fn a_clock_that_steps_back_keeps_samples_in_order() {
    let mut t = table();
    t.open("e1", "us", "g", 0).unwrap();
    t.report("e1", rep(&[("web", 0, 0)]), 100 * S).unwrap();
    t.report("e1", rep(&[("web", 10, 1)]), 50 * S).unwrap();
    assert_eq!(of(&t, "e1", 0), Some(counts(10, 1)));
}

pub(super) fn counter(name: &str, v: f64) -> MetricFamily {
    MetricFamily {
        name: Some(name.into()),
        r#type: Some(MetricType::Counter as i32),
        metric: vec![Metric {
            counter: Some(Counter {
                value: Some(v),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn tagged(name: &str, labels: &[(&str, &str)], v: f64) -> MetricFamily {
    let mut f = counter(name, v);
    f.metric[0].label = labels
        .iter()
        .map(|(k, v)| LabelPair {
            name: Some(k.to_string()),
            value: Some(v.to_string()),
        })
        .collect();
    f
}

#[test]
fn decoding_keeps_only_upstream_totals_and_5xx_per_cluster() {
    let families = vec![
        counter("cluster.web.upstream_rq_total", 100.0),
        counter("cluster.web.upstream_rq_5xx", 7.0),
        // Subsets of the same requests, and other stats: not counted again.
        counter("cluster.web.internal.upstream_rq_5xx", 7.0),
        counter("cluster.web.upstream_rq_503", 7.0),
        counter("cluster.web.upstream_rq_2xx", 93.0),
        counter("http.ingress.downstream_rq_5xx", 7.0),
        counter("vhost.v.vcluster.c.upstream_rq_5xx", 7.0),
        // The controllers' own cluster is control traffic.
        counter(&format!("cluster.{XDS}.upstream_rq_total"), 5.0),
        MetricFamily {
            name: Some("cluster.web.upstream_rq_total".into()),
            r#type: Some(MetricType::Gauge as i32),
            metric: vec![Metric {
                gauge: Some(Gauge { value: Some(1.0) }),
                ..Default::default()
            }],
            ..Default::default()
        },
        // Tagged names (emit_tags_as_labels).
        tagged(
            "cluster.upstream_rq_total",
            &[("envoy_cluster_name", "api")],
            50.0,
        ),
        tagged(
            "cluster.upstream_rq_xx",
            &[
                ("envoy_cluster_name", "api"),
                ("envoy_response_code_class", "5"),
            ],
            4.0,
        ),
        tagged(
            "cluster.upstream_rq_xx",
            &[
                ("envoy_cluster_name", "api"),
                ("envoy_response_code_class", "2"),
            ],
            46.0,
        ),
    ];
    let r = decode::report(&families, XDS).unwrap();
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[&cluster_key("web")], counts(100, 7));
    assert_eq!(r[&cluster_key("api")], counts(50, 4));
}

#[test]
fn a_kept_counter_that_is_not_a_count_refuses_the_message() {
    for v in [f64::NAN, f64::INFINITY, -1.0, 1.5, 1e300] {
        let f = vec![counter("cluster.web.upstream_rq_total", v)];
        assert!(
            matches!(decode::report(&f, XDS), Err(DecodeError::NotACount { .. })),
            "{v} taken as a count"
        );
    }
    let mut f = counter("cluster.web.upstream_rq_5xx", 1.0);
    f.metric[0].counter = None;
    assert!(matches!(
        decode::report(&[f], XDS),
        Err(DecodeError::NoValue { .. })
    ));
    // A bad value of a counter we do not keep is not our business.
    let f = vec![counter("cluster.web.upstream_rq_2xx", f64::NAN)];
    assert!(decode::report(&f, XDS).unwrap().is_empty());
}

pub(super) fn message(
    node: Option<(&str, &str, &str)>,
    families: Vec<MetricFamily>,
) -> StreamMetricsMessage {
    StreamMetricsMessage {
        identifier: node.map(|(id, region, group)| Identifier {
            node: Some(Node {
                id: id.into(),
                cluster: group.into(),
                locality: Some(Locality {
                    region: region.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        envoy_metrics: families,
    }
}

/// Property: no byte string makes the decoder or the table panic; random
/// bytes, and valid messages with bytes flipped, are either refused or
/// taken.
#[test]
fn random_and_mutated_bytes_never_panic_the_decoder() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    let valid = message(
        Some(("e1", "us", "g")),
        vec![
            counter("cluster.web.upstream_rq_total", 100.0),
            counter("cluster.web.upstream_rq_5xx", 7.0),
            tagged(
                "cluster.upstream_rq_xx",
                &[
                    ("envoy_cluster_name", "api"),
                    ("envoy_response_code_class", "5"),
                ],
                4.0,
            ),
        ],
    )
    .encode_to_vec();
    let mut t = table();
    t.open("e1", "us", "g", 0).unwrap();
    let (mut decoded, mut refused) = (0, 0);
    for i in 0..20_000u64 {
        let bytes = if i % 2 == 0 {
            let mut b = vec![0u8; rng.gen_range(0..512)];
            rng.fill_bytes(&mut b);
            b
        } else {
            let mut b = valid.clone();
            for _ in 0..rng.gen_range(1..8) {
                let at = rng.gen_range(0..b.len());
                b[at] = rng.gen();
            }
            b.truncate(rng.gen_range(0..=b.len()));
            b
        };
        match StreamMetricsMessage::decode(bytes.as_slice()) {
            Ok(m) => match decode::report(&m.envoy_metrics, XDS) {
                Ok(r) => {
                    decoded += 1;
                    let _ = t.report("e1", r, i);
                }
                Err(_) => refused += 1,
            },
            Err(_) => refused += 1,
        }
    }
    assert!(
        decoded > 100 && refused > 100,
        "{decoded} taken, {refused} refused"
    );
    let _ = t.since(None, None, 0);
}
