//! One simulated Envoy (delta ADS, `meridian_xds::testing`): follows CDS
//! and every service's EDS, counts what it gets, and checks each CLA
//! against the probes in flight.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use meridian_xds::testing::fixtures::eds_name;
use meridian_xds::testing::{node, DeltaClient};
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER};
use prost::Message;
use tokio::sync::watch;

use super::book::Book;

/// Per Envoy counters.
#[derive(Default)]
pub(super) struct EnvoyStats {
    pub(super) bytes: AtomicU64,
    pub(super) responses: AtomicU64,
    pub(super) eds_resources: AtomicU64,
    /// Endpoints held over all CLAs (kept only while warming up).
    pub(super) held: AtomicU64,
}

pub(super) async fn run_envoy(
    e: usize,
    addr: SocketAddr,
    book: Arc<Mutex<Book>>,
    stats: Arc<EnvoyStats>,
    warming: Arc<AtomicBool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let n = node(&format!("bench-endpoints-{e}"), "", "us-east");
    let mut c = DeltaClient::ads(addr, n).await?;
    c.subscribe(CLUSTER, &[], &[], "").await;
    c.subscribe(LISTENER, &[], &[], "").await;
    let mut subscribed: HashSet<String> = HashSet::new();
    let mut counts: HashMap<String, u64> = HashMap::new();
    loop {
        let resp = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = c.next() => match r? { Some(r) => r, None => return Ok(()) },
        };
        let now = Instant::now();
        stats
            .bytes
            .fetch_add(resp.encoded_len() as u64, Ordering::Relaxed);
        stats.responses.fetch_add(1, Ordering::Relaxed);
        if resp.type_url == ENDPOINT {
            stats
                .eds_resources
                .fetch_add(resp.resources.len() as u64, Ordering::Relaxed);
            if warming.load(Ordering::Relaxed) {
                for r in &resp.resources {
                    if let Some(a) = &r.resource {
                        if let Ok(cla) = ClusterLoadAssignment::decode(a.value.as_slice()) {
                            let n: usize = cla.endpoints.iter().map(|l| l.lb_endpoints.len()).sum();
                            counts.insert(r.name.clone(), n as u64);
                        }
                    }
                }
                stats.held.store(counts.values().sum(), Ordering::Relaxed);
            } else {
                let mut b = book.lock().expect("book");
                if !b.pending.is_empty() {
                    for r in &resp.resources {
                        if !b.pending.contains_key(&r.name) {
                            continue;
                        }
                        if let Some(a) = &r.resource {
                            if let Ok(cla) = ClusterLoadAssignment::decode(a.value.as_slice()) {
                                b.check(e, &cla, now);
                            }
                        }
                    }
                }
            }
        }
        c.ack(&resp).await;
        if resp.type_url == CLUSTER {
            let names: Vec<String> = resp
                .resources
                .iter()
                .filter_map(|r| r.resource.as_ref().and_then(eds_name))
                .filter(|n| !subscribed.contains(n))
                .collect();
            if !names.is_empty() {
                let list: Vec<&str> = names.iter().map(String::as_str).collect();
                c.subscribe(ENDPOINT, &list, &[], "").await;
                subscribed.extend(names);
            }
        }
    }
}

