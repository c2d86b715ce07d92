//! A simulated Envoy on ADS: subscribes to CDS and LDS by wildcard, follows
//! clusters to EDS names and listeners to RDS names, and ACKs every response
//! the way Envoy does (last nonce, last accepted version).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::fixtures::{eds_name, rds_names, resource_name};
use super::{DeltaClient, SotwClient};
use crate::source::content_version;
use crate::types::{self, CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// What a simulated Envoy holds and did.
#[derive(Debug, Default, Clone)]
pub struct Held {
    /// Type URL, then name, then content version.
    pub by_type: BTreeMap<String, BTreeMap<String, String>>,
    /// Names subscribed per type (EDS, RDS); CDS and LDS are wildcard.
    pub subscribed: BTreeMap<String, BTreeSet<String>>,
    pub responded: BTreeSet<String>,
    pub responses: u64,
    pub acks: u64,
    /// Encoded size of every response received (protobuf bytes, without
    /// HTTP/2 and gRPC framing).
    pub bytes: u64,
    pub first_synced: Option<Instant>,
    /// When the last response was ACKed (the ACK is queued before this is
    /// noted).
    pub last_ack: Option<Instant>,
}

impl Held {
    /// Has CDS and LDS, and every EDS and RDS name it follows.
    pub fn synced(&self) -> bool {
        let has_all = |t: &str| {
            self.subscribed.get(t).is_none_or(|names| {
                let held = self.by_type.get(t);
                names
                    .iter()
                    .all(|n| held.is_some_and(|h| h.contains_key(n)))
            })
        };
        self.responded.contains(CLUSTER)
            && self.responded.contains(LISTENER)
            && has_all(ENDPOINT)
            && has_all(ROUTE)
    }

    fn note(&mut self, type_url: &str, bytes: usize) {
        let now = Instant::now();
        self.responses += 1;
        self.acks += 1;
        self.bytes += bytes as u64;
        self.last_ack = Some(now);
        self.responded.insert(type_url.to_string());
        if self.first_synced.is_none() && self.synced() {
            self.first_synced = Some(now);
        }
    }
}

/// Records the content version of each incoming resource, hashing only
/// those whose bytes differ from what `state` (before the update) holds.
fn note_versions<'a>(
    vs: &mut BTreeMap<String, String>,
    state: &BTreeMap<String, Any>,
    incoming: impl Iterator<Item = (&'a String, &'a Any)>,
) {
    for (n, a) in incoming {
        if state.get(n) != Some(a) || !vs.contains_key(n) {
            vs.insert(n.clone(), content_version(a));
        }
    }
}

fn dependents(
    type_url: &str,
    resources: &BTreeMap<String, Any>,
) -> Option<(&'static str, BTreeSet<String>)> {
    match type_url {
        CLUSTER => Some((ENDPOINT, resources.values().filter_map(eds_name).collect())),
        LISTENER => Some((ROUTE, resources.values().flat_map(rds_names).collect())),
        _ => None,
    }
}

/// Runs a SotW ADS Envoy until `stop` turns true or the stream ends.
pub async fn run_sotw(
    addr: SocketAddr,
    node: Node,
    held: Arc<Mutex<Held>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let c = SotwClient::ads(addr, node).await?;
    sotw_loop(c, held, stop).await
}

/// [`run_sotw`] on an existing channel (streams share its connection).
pub async fn run_sotw_on(
    ch: Channel,
    node: Node,
    held: Arc<Mutex<Held>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let c = SotwClient::ads_on(ch, node).await?;
    sotw_loop(c, held, stop).await
}

async fn sotw_loop(
    mut c: SotwClient,
    held: Arc<Mutex<Held>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    c.request(CLUSTER, &[], "", "").await;
    c.request(LISTENER, &[], "", "").await;
    let mut accepted: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut full: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
    // Content versions of `full`, kept incrementally: hashing every held
    // resource on every response would make the load generator, not the
    // server, the bottleneck of a 10k-stream push.
    let mut vers: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut subs: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    loop {
        let resp = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = c.next() => match r? { Some(r) => r, None => return Ok(()) },
        };
        let t = resp.type_url.clone();
        let size = resp.encoded_len();
        let got: BTreeMap<String, Any> = resp
            .resources
            .iter()
            .map(|a| (resource_name(a), a.clone()))
            .collect();
        let state = full.entry(t.clone()).or_default();
        let vs = vers.entry(t.clone()).or_default();
        note_versions(vs, state, got.iter());
        if types::is_full_state(&t) {
            *state = got;
        } else {
            state.extend(got);
            if let Some(names) = subs.get(t.as_str()) {
                state.retain(|n, _| names.contains(n));
            }
        }
        accepted.insert(t.clone(), (resp.version_info.clone(), resp.nonce.clone()));
        let names: Vec<String> = subs
            .get(t.as_str())
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        c.ack(&resp, &names).await;
        let follow = dependents(&t, state);
        {
            let mut h = held.lock().expect("held lock");
            vs.retain(|n, _| state.contains_key(n));
            h.by_type.insert(t.clone(), vs.clone());
            if let Some((dt, names)) = &follow {
                h.subscribed.insert(dt.to_string(), names.clone());
            }
            h.note(&t, size);
        }
        if let Some((dt, names)) = follow {
            if subs.get(dt) != Some(&names) {
                subs.insert(dt, names.clone());
                let (v, n) = accepted.get(dt).cloned().unwrap_or_default();
                let list: Vec<&str> = names.iter().map(String::as_str).collect();
                c.request(dt, &list, &v, &n).await;
                if let Some(s) = full.get_mut(dt) {
                    // Envoy drops what it no longer watches.
                    s.retain(|k, _| names.contains(k));
                    let vs = vers.entry(dt.to_string()).or_default();
                    vs.retain(|k, _| names.contains(k));
                    let versions = vs.clone();
                    held.lock()
                        .expect("held lock")
                        .by_type
                        .insert(dt.to_string(), versions);
                }
            }
        }
    }
}

/// Runs a delta ADS Envoy until `stop` turns true or the stream ends.
pub async fn run_delta(
    addr: SocketAddr,
    node: Node,
    held: Arc<Mutex<Held>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let c = DeltaClient::ads(addr, node).await?;
    delta_loop(c, held, stop).await
}

/// [`run_delta`] on an existing channel (streams share its connection).
pub async fn run_delta_on(
    ch: Channel,
    node: Node,
    held: Arc<Mutex<Held>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let c = DeltaClient::ads_on(ch, node).await?;
    delta_loop(c, held, stop).await
}

async fn delta_loop(
    mut c: DeltaClient,
    held: Arc<Mutex<Held>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    c.subscribe(CLUSTER, &[], &[], "").await;
    c.subscribe(LISTENER, &[], &[], "").await;
    let mut full: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
    // Content versions of `full`, kept incrementally: hashing every held
    // resource on every response would make the load generator, not the
    // server, the bottleneck of a 10k-stream push.
    let mut vers: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut subs: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    loop {
        let resp = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = c.next() => match r? { Some(r) => r, None => return Ok(()) },
        };
        let t = resp.type_url.clone();
        let size = resp.encoded_len();
        let state = full.entry(t.clone()).or_default();
        let vs = vers.entry(t.clone()).or_default();
        note_versions(
            vs,
            state,
            resp.resources
                .iter()
                .filter_map(|r| r.resource.as_ref().map(|a| (&r.name, a))),
        );
        for r in &resp.resources {
            if let Some(a) = &r.resource {
                state.insert(r.name.clone(), a.clone());
            }
        }
        for n in &resp.removed_resources {
            state.remove(n);
        }
        c.ack(&resp).await;
        let follow = dependents(&t, state);
        {
            let mut h = held.lock().expect("held lock");
            vs.retain(|n, _| state.contains_key(n));
            h.by_type.insert(t.clone(), vs.clone());
            if let Some((dt, names)) = &follow {
                h.subscribed.insert(dt.to_string(), names.clone());
            }
            h.note(&t, size);
        }
        if let Some((dt, names)) = follow {
            let old = subs.get(dt).cloned().unwrap_or_default();
            if old != names {
                let add: Vec<&str> = names.difference(&old).map(String::as_str).collect();
                let del: Vec<&str> = old.difference(&names).map(String::as_str).collect();
                c.subscribe(dt, &add, &del, "").await;
                if let Some(s) = full.get_mut(dt) {
                    // Envoy drops what it no longer watches.
                    s.retain(|k, _| names.contains(k));
                    let vs = vers.entry(dt.to_string()).or_default();
                    vs.retain(|k, _| names.contains(k));
                    let versions = vs.clone();
                    held.lock()
                        .expect("held lock")
                        .by_type
                        .insert(dt.to_string(), versions);
                }
                subs.insert(dt, names);
            }
        }
    }
}
