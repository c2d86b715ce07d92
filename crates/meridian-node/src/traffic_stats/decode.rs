//! From one `StreamMetricsMessage` to the few counters the table keeps.
//! Everything else Envoy sends (gauges, histograms, other counters) is
//! skipped; a counter we keep whose value is not a count refuses the
//! message.

use std::hash::{Hash, Hasher};

use envoy_types::pb::io::prometheus::client::{Metric, MetricFamily, MetricType};

use super::window::{Counts, Report};

/// The two counters per upstream cluster, under Envoy's full stat names
/// (`cluster.NAME.upstream_rq_total`) or, with `emit_tags_as_labels`, the
/// tag-extracted names and labels.
const TOTAL: &str = "upstream_rq_total";
/// Resets and timeouts before a response are charged as 503/504 here too.
const ERRORS: &str = "upstream_rq_5xx";
const TAGGED_TOTAL: &str = "cluster.upstream_rq_total";
const TAGGED_CLASS: &str = "cluster.upstream_rq_xx";
const CLUSTER_LABEL: &str = "envoy_cluster_name";
const CLASS_LABEL: &str = "envoy_response_code_class";

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("metric {name:?}: counter value {value} is not a count")]
    NotACount { name: String, value: String },
    #[error("metric {name:?}: a counter without a counter value")]
    NoValue { name: String },
}

#[derive(Clone, Copy)]
enum Which {
    Total,
    Errors,
}

/// The upstream cluster's name hashed: two Envoys' or two reports' names
/// agree on it, and the table does not keep names it never shows.
pub(crate) fn cluster_key(name: &str) -> u64 {
    // SipHash with fixed keys: stable across reports and processes.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    name.hash(&mut h);
    h.finish()
}

fn label<'a>(m: &'a Metric, name: &str) -> Option<&'a str> {
    m.label
        .iter()
        .find(|l| l.name.as_deref() == Some(name))
        .and_then(|l| l.value.as_deref())
}

/// Which cluster and counter a metric of `family` is, if one we keep.
fn classify<'a>(family: &'a str, m: &'a Metric) -> Option<(&'a str, Which)> {
    if family == TAGGED_TOTAL {
        return label(m, CLUSTER_LABEL).map(|c| (c, Which::Total));
    }
    if family == TAGGED_CLASS {
        return (label(m, CLASS_LABEL) == Some("5"))
            .then(|| label(m, CLUSTER_LABEL).map(|c| (c, Which::Errors)))
            .flatten();
    }
    // Meridian's cluster names have no dots (the model's name rule), so the
    // first dot ends the name and `cluster.web.internal.upstream_rq_5xx`
    // (a subset of the same requests) is not taken for cluster
    // `web.internal`.
    let rest = family.strip_prefix("cluster.")?;
    let (cluster, stat) = rest.split_once('.')?;
    let which = match stat {
        TOTAL => Which::Total,
        ERRORS => Which::Errors,
        _ => return None,
    };
    (!cluster.is_empty()).then_some((cluster, which))
}

/// A counter's value as a count: Envoy sends integers as doubles.
fn count(name: &str, v: f64) -> Result<u64, DecodeError> {
    // 2^53: beyond it a double no longer holds every integer.
    if (0.0..=9_007_199_254_740_992.0).contains(&v) && v.fract() == 0.0 {
        Ok(v as u64)
    } else {
        Err(DecodeError::NotACount {
            name: name.to_string(),
            value: v.to_string(),
        })
    }
}

/// The kept counters of `families`, per upstream cluster, leaving out
/// `skip_cluster` (the controllers' own xDS cluster: control traffic).
pub(crate) fn report(families: &[MetricFamily], skip_cluster: &str) -> Result<Report, DecodeError> {
    let mut out = Report::new();
    for f in families {
        let Some(name) = f.name.as_deref() else {
            continue;
        };
        if f.r#type.is_some_and(|t| t != MetricType::Counter as i32) {
            continue;
        }
        for m in &f.metric {
            let Some((cluster, which)) = classify(name, m) else {
                continue;
            };
            if cluster == skip_cluster {
                continue;
            }
            let v =
                m.counter
                    .as_ref()
                    .and_then(|c| c.value)
                    .ok_or_else(|| DecodeError::NoValue {
                        name: name.to_string(),
                    })?;
            let v = count(name, v)?;
            let c: &mut Counts = out.entry(cluster_key(cluster)).or_default();
            match which {
                Which::Total => c.requests = c.requests.saturating_add(v),
                Which::Errors => c.errors = c.errors.saturating_add(v),
            }
        }
    }
    Ok(out)
}
