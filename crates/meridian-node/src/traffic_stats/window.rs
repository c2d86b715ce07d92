//! The bounded table of what each Envoy's pushed counters say, and the
//! delta math over it. Pure: every call takes the time, so the tests drive
//! the clock.
//!
//! Envoy sends cumulative counters (`report_counters_as_deltas` is off, so
//! a lost message loses nothing). Per stream, the first report is only a
//! baseline: its values include traffic from before the stream, which
//! another controller may already have counted. After that, each cluster's
//! increase is added to the Envoy's running sums; a counter that went down
//! was reset (Envoy restarted, or the cluster was removed and added again)
//! and its new value is the increase. A ring of timestamped running sums
//! answers "since T" by subtraction.

use std::collections::{HashMap, VecDeque};

/// What the table keeps, at most.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// How far back a question may reach; samples and disconnected Envoys
    /// older than this are dropped.
    pub retention_ms: u64,
    /// One sample per this many ms and Envoy (later reports in the same
    /// slot replace it), so a fast-flushing Envoy cannot grow its ring.
    pub sample_ms: u64,
    pub max_envoys: usize,
    /// Upstream clusters per Envoy; a report naming more is refused.
    pub max_clusters: usize,
    /// Bytes of one StreamMetricsMessage (gRPC decoding limit).
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            retention_ms: 10 * 60 * 1000,
            sample_ms: 1000,
            max_envoys: 20_000,
            max_clusters: 4096,
            max_message_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Requests and 5xx, as running sums or as a difference of two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub requests: u64,
    pub errors: u64,
}

impl Counts {
    /// The increase from `prev` to `self`, per field; a field that went
    /// down was reset, and its whole new value is the increase.
    pub(crate) fn increase_from(self, prev: Counts) -> Counts {
        let d = |now: u64, before: u64| if now >= before { now - before } else { now };
        Counts {
            requests: d(self.requests, prev.requests),
            errors: d(self.errors, prev.errors),
        }
    }

    fn add(&mut self, d: Counts) {
        self.requests = self.requests.saturating_add(d.requests);
        self.errors = self.errors.saturating_add(d.errors);
    }

    fn minus(self, base: Counts) -> Counts {
        Counts {
            requests: self.requests.saturating_sub(base.requests),
            errors: self.errors.saturating_sub(base.errors),
        }
    }
}

/// One report's counters: upstream cluster (a hash of its name, 8 bytes
/// instead of the name) -> its cumulative counts.
pub(crate) type Report = HashMap<u64, Counts>;

#[derive(Clone, Copy, Debug)]
struct Sample {
    at_ms: u64,
    /// Running sums of increases since the table first saw the Envoy.
    sums: Counts,
}

struct Envoy {
    region: String,
    group: String,
    /// Open stats streams (a reconnect may overlap the old stream).
    streams: u32,
    /// The next report starts a stream: a baseline only.
    baseline_next: bool,
    /// Last values per cluster on the current stream; clusters missing
    /// from a report are gone (Envoy sends every used counter each flush).
    clusters: Report,
    sums: Counts,
    samples: VecDeque<Sample>,
    last_report_ms: u64,
    /// Reports or stream ends: when a disconnected Envoy was last heard of.
    last_activity_ms: u64,
}

/// One Envoy's traffic over a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct EnvoyWindow {
    pub node_id: String,
    pub region: String,
    pub group: String,
    pub counts: Counts,
    pub last_report_ms: u64,
    pub connected: bool,
}

/// Why a stream or report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    #[error("this controller already holds stats of {0} Envoys (its limit); connect to another controller")]
    Full(usize),
    #[error("the report names {found} upstream clusters, more than the {limit} a controller keeps per Envoy")]
    TooManyClusters { found: usize, limit: usize },
}

pub(crate) struct Table {
    limits: Limits,
    envoys: HashMap<String, Envoy>,
    last_sweep_ms: u64,
}

/// How often stream ends and questions sweep the table: a sweep visits
/// every Envoy, and a mass reconnect ends thousands of streams at once.
const SWEEP_EVERY_MS: u64 = 10_000;

impl Table {
    pub(crate) fn new(limits: Limits) -> Table {
        Table {
            limits,
            envoys: HashMap::new(),
            last_sweep_ms: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.envoys.len()
    }

    #[cfg(test)]
    pub(crate) fn has(&self, node_id: &str) -> bool {
        self.envoys.contains_key(node_id)
    }

    #[cfg(test)]
    pub(crate) fn samples_of(&self, node_id: &str) -> usize {
        self.envoys.get(node_id).map_or(0, |e| e.samples.len())
    }

    /// A stats stream of `node_id` opened. When the table is full, the
    /// longest-silent disconnected Envoy makes room; with none, refused.
    pub(crate) fn open(
        &mut self,
        node_id: &str,
        region: &str,
        group: &str,
        now_ms: u64,
    ) -> Result<(), Refused> {
        if !self.envoys.contains_key(node_id) && self.envoys.len() >= self.limits.max_envoys {
            self.sweep(now_ms);
            if self.envoys.len() >= self.limits.max_envoys {
                let evict = self
                    .envoys
                    .iter()
                    .filter(|(_, e)| e.streams == 0)
                    .min_by_key(|(_, e)| e.last_activity_ms)
                    .map(|(id, _)| id.clone());
                match evict {
                    Some(id) => {
                        self.envoys.remove(&id);
                    }
                    None => return Err(Refused::Full(self.limits.max_envoys)),
                }
            }
        }
        let e = self
            .envoys
            .entry(node_id.to_string())
            .or_insert_with(|| Envoy {
                region: String::new(),
                group: String::new(),
                streams: 0,
                baseline_next: true,
                clusters: Report::new(),
                sums: Counts::default(),
                samples: VecDeque::new(),
                last_report_ms: 0,
                last_activity_ms: now_ms,
            });
        e.region = region.to_string();
        e.group = group.to_string();
        e.streams += 1;
        e.baseline_next = true;
        e.last_activity_ms = now_ms;
        Ok(())
    }

    /// A stats stream of `node_id` ended.
    pub(crate) fn close(&mut self, node_id: &str, now_ms: u64) {
        if let Some(e) = self.envoys.get_mut(node_id) {
            e.streams = e.streams.saturating_sub(1);
            e.last_activity_ms = now_ms;
        }
    }

    /// One flush of `node_id`'s counters (on a stream that is open).
    pub(crate) fn report(
        &mut self,
        node_id: &str,
        report: Report,
        now_ms: u64,
    ) -> Result<(), Refused> {
        if report.len() > self.limits.max_clusters {
            return Err(Refused::TooManyClusters {
                found: report.len(),
                limit: self.limits.max_clusters,
            });
        }
        let limits = self.limits;
        let Some(e) = self.envoys.get_mut(node_id) else {
            return Ok(());
        };
        // A clock that stepped back must not put samples out of order.
        let now_ms = now_ms.max(e.samples.back().map_or(0, |s| s.at_ms));
        if e.baseline_next {
            e.baseline_next = false;
        } else {
            for (cluster, now) in &report {
                let prev = e.clusters.get(cluster).copied().unwrap_or_default();
                e.sums.add(now.increase_from(prev));
            }
        }
        e.clusters = report;
        e.last_report_ms = now_ms;
        e.last_activity_ms = now_ms;
        let sample = Sample {
            at_ms: now_ms,
            sums: e.sums,
        };
        let slot = |t: u64| t / limits.sample_ms.max(1);
        // The first sample is the baseline of everything after it: never
        // replaced.
        let n = e.samples.len();
        match e.samples.back_mut() {
            Some(last) if n > 1 && slot(last.at_ms) == slot(now_ms) => *last = sample,
            _ => e.samples.push_back(sample),
        }
        // Keep one sample at or before the retention's start: the baseline
        // of the longest question.
        let oldest = now_ms.saturating_sub(limits.retention_ms);
        while e.samples.len() > 1 && e.samples[1].at_ms <= oldest {
            e.samples.pop_front();
        }
        Ok(())
    }

    /// [`Table::sweep`], unless one ran within the last 10 s.
    pub(crate) fn maybe_sweep(&mut self, now_ms: u64) {
        if now_ms >= self.last_sweep_ms.saturating_add(SWEEP_EVERY_MS) {
            self.sweep(now_ms);
        }
    }

    /// Drops disconnected Envoys silent for longer than the retention: no
    /// window can reach what they said.
    pub(crate) fn sweep(&mut self, now_ms: u64) {
        self.last_sweep_ms = now_ms;
        let keep = self.limits.retention_ms;
        self.envoys
            .retain(|_, e| e.streams > 0 || e.last_activity_ms.saturating_add(keep) >= now_ms);
    }

    /// Every Envoy of `region` (any when `None`) and `group` (any when
    /// `None`) that reported at or after `since_ms`, with its counts since
    /// then: the latest running sums minus those of the last sample at or
    /// before `since_ms` (or the oldest kept, for an Envoy first seen later).
    pub(crate) fn since(
        &self,
        region: Option<&str>,
        group: Option<&str>,
        since_ms: u64,
    ) -> Vec<EnvoyWindow> {
        let mut out: Vec<EnvoyWindow> = self
            .envoys
            .iter()
            .filter(|(_, e)| region.is_none_or(|r| e.region == r))
            .filter(|(_, e)| group.is_none_or(|g| e.group == g))
            .filter_map(|(id, e)| {
                let last = e.samples.back()?;
                if last.at_ms < since_ms {
                    return None;
                }
                let base = e
                    .samples
                    .iter()
                    .rev()
                    .find(|s| s.at_ms <= since_ms)
                    .or(e.samples.front())?;
                Some(EnvoyWindow {
                    node_id: id.clone(),
                    region: e.region.clone(),
                    group: e.group.clone(),
                    counts: last.sums.minus(base.sums),
                    last_report_ms: e.last_report_ms,
                    connected: e.streams > 0,
                })
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }
}
