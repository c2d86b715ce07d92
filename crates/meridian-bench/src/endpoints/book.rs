//! The probes' bookkeeping: which sampled change each Envoy has seen, and
//! when, so the first CLA that carries a probe times its push.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::address;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;

pub(super) struct Change {
    pub(super) k: u32,
    pub(super) health: i32,
    pub(super) weight: u32,
    pub(super) generated: Instant,
    pub(super) sample: Option<usize>,
}

pub(super) struct Sample {
    pub(super) k: u32,
    pub(super) address: String,
    pub(super) health: i32,
    pub(super) weight: u32,
    pub(super) generated: Instant,
    pub(super) sent: Option<Instant>,
    pub(super) acked: Option<Instant>,
    pub(super) seen: Vec<Option<Instant>>,
}

#[derive(Default)]
pub(super) struct Book {
    pub(super) samples: Vec<Sample>,
    /// Service -> samples not yet seen by every Envoy.
    pub(super) pending: HashMap<String, Vec<usize>>,
    /// Probe endpoints with a sample in flight.
    pub(super) busy: HashSet<u32>,
}

impl Book {
    /// Envoy `e` got this CLA at `now`.
    pub(super) fn check(&mut self, e: usize, cla: &ClusterLoadAssignment, now: Instant) {
        let Some(ids) = self.pending.get(&cla.cluster_name) else {
            return;
        };
        let mut done = Vec::new();
        for &id in ids {
            let s = &mut self.samples[id];
            if s.seen[e].is_some() {
                continue;
            }
            let found = cla
                .endpoints
                .iter()
                .flat_map(|l| &l.lb_endpoints)
                .find(|lb| match &lb.host_identifier {
                    Some(HostIdentifier::Endpoint(ep)) => matches!(
                        ep.address.as_ref().and_then(|a| a.address.as_ref()),
                        Some(address::Address::SocketAddress(sa)) if sa.address == s.address
                    ),
                    _ => false,
                });
            if let Some(lb) = found {
                let w = lb
                    .load_balancing_weight
                    .as_ref()
                    .map(|w| w.value)
                    .unwrap_or(1);
                // Envoy's HealthStatus numbers HEALTHY 1 and UNHEALTHY 2,
                // as the agent protocol does.
                if lb.health_status == s.health && w == s.weight {
                    s.seen[e] = Some(now);
                    if s.seen.iter().all(Option::is_some) {
                        done.push(id);
                    }
                }
            }
        }
        if !done.is_empty() {
            let svc = cla.cluster_name.clone();
            for id in done {
                let k = self.samples[id].k;
                self.busy.remove(&k);
                if let Some(v) = self.pending.get_mut(&svc) {
                    v.retain(|&x| x != id);
                }
            }
            if self.pending.get(&svc).is_some_and(Vec::is_empty) {
                self.pending.remove(&svc);
            }
        }
    }
}

