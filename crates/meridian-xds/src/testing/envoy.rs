//! A simulated Envoy on ADS: subscribes to CDS and LDS by wildcard, follows
//! clusters to EDS names and listeners to RDS names, and ACKs every response
//! the way Envoy does (last nonce, last accepted version).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::watch;
use tonic::transport::Channel;

use super::client::channel;
use super::fixtures::{eds_name, rds_names, resource_name};
use super::{Client, DeltaClient, DeltaWire, SotwClient, SotwWire, Wire};
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
    run_sotw_on(channel(addr).await?, node, held, stop).await
}

/// [`run_sotw`] on an existing channel (streams share its connection).
pub async fn run_sotw_on(
    ch: Channel,
    node: Node,
    held: Arc<Mutex<Held>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let c = SotwClient::ads_on(ch, node).await?;
    follow(SotwEnvoy::new(c), held, stop).await
}

/// Runs a delta ADS Envoy until `stop` turns true or the stream ends.
pub async fn run_delta(
    addr: SocketAddr,
    node: Node,
    held: Arc<Mutex<Held>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    run_delta_on(channel(addr).await?, node, held, stop).await
}

/// [`run_delta`] on an existing channel (streams share its connection).
pub async fn run_delta_on(
    ch: Channel,
    node: Node,
    held: Arc<Mutex<Held>>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    let c = DeltaClient::ads_on(ch, node).await?;
    follow(c, held, stop).await
}

/// What a simulated Envoy does differently per variant: how it asks, how a
/// response changes what it holds, and how it ACKs.
trait Follower: Send {
    type W: Wire<Resp = Self::Resp>;
    type Resp: Message + Send;

    fn client(&mut self) -> &mut Client<Self::W>;
    fn type_url(resp: &Self::Resp) -> &str;
    /// Subscribes to everything of a type.
    async fn wildcard(&mut self, type_url: &str);
    /// Applies a response to what is held of its type (`watched`: the
    /// names subscribed, for types that follow others), noting the content
    /// versions of what changed in `vs`.
    fn absorb(
        &mut self,
        resp: &Self::Resp,
        state: &mut BTreeMap<String, Any>,
        vs: &mut BTreeMap<String, String>,
        watched: Option<&BTreeSet<String>>,
    );
    async fn ack(&mut self, resp: &Self::Resp, watched: Option<&BTreeSet<String>>);
    /// Moves a following type's subscription from `old` to `new`.
    async fn watch(&mut self, type_url: &str, old: &BTreeSet<String>, new: &BTreeSet<String>);
}

/// The Envoy loop both variants share: wildcard CDS and LDS, then follow
/// clusters to EDS names and listeners to RDS names.
async fn follow<F: Follower>(
    mut f: F,
    held: Arc<Mutex<Held>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), tonic::Status> {
    f.wildcard(CLUSTER).await;
    f.wildcard(LISTENER).await;
    let mut full: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
    // Content versions of `full`, kept incrementally: hashing every held
    // resource on every response would make the load generator, not the
    // server, the bottleneck of a 10k-stream push.
    let mut vers: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut subs: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    loop {
        let resp = tokio::select! {
            _ = stop.wait_for(|s| *s) => return Ok(()),
            r = f.client().next() => match r? { Some(r) => r, None => return Ok(()) },
        };
        let t = F::type_url(&resp).to_string();
        let size = resp.encoded_len();
        let state = full.entry(t.clone()).or_default();
        let vs = vers.entry(t.clone()).or_default();
        f.absorb(&resp, state, vs, subs.get(t.as_str()));
        f.ack(&resp, subs.get(t.as_str())).await;
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
                f.watch(dt, &old, &names).await;
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

/// A SotW Envoy also remembers, per type, the version and nonce it
/// accepted last: it sends them when it changes a subscription.
struct SotwEnvoy {
    c: SotwClient,
    accepted: BTreeMap<String, (String, String)>,
}

impl SotwEnvoy {
    fn new(c: SotwClient) -> SotwEnvoy {
        SotwEnvoy {
            c,
            accepted: BTreeMap::new(),
        }
    }
}

fn listed(names: Option<&BTreeSet<String>>) -> Vec<&str> {
    names
        .map(|s| s.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

impl Follower for SotwEnvoy {
    type W = SotwWire;
    type Resp = DiscoveryResponse;

    fn client(&mut self) -> &mut SotwClient {
        &mut self.c
    }

    fn type_url(resp: &DiscoveryResponse) -> &str {
        &resp.type_url
    }

    async fn wildcard(&mut self, type_url: &str) {
        self.c.request(type_url, &[], "", "").await;
    }

    fn absorb(
        &mut self,
        resp: &DiscoveryResponse,
        state: &mut BTreeMap<String, Any>,
        vs: &mut BTreeMap<String, String>,
        watched: Option<&BTreeSet<String>>,
    ) {
        let got: BTreeMap<String, Any> = resp
            .resources
            .iter()
            .map(|a| (resource_name(a), a.clone()))
            .collect();
        note_versions(vs, state, got.iter());
        if types::is_full_state(&resp.type_url) {
            *state = got;
        } else {
            state.extend(got);
            if let Some(names) = watched {
                state.retain(|n, _| names.contains(n));
            }
        }
        self.accepted.insert(
            resp.type_url.clone(),
            (resp.version_info.clone(), resp.nonce.clone()),
        );
    }

    async fn ack(&mut self, resp: &DiscoveryResponse, watched: Option<&BTreeSet<String>>) {
        self.c.ack(resp, &listed(watched)).await;
    }

    async fn watch(&mut self, type_url: &str, _old: &BTreeSet<String>, new: &BTreeSet<String>) {
        let (v, n) = self.accepted.get(type_url).cloned().unwrap_or_default();
        self.c.request(type_url, &listed(Some(new)), &v, &n).await;
    }
}

impl Follower for DeltaClient {
    type W = DeltaWire;
    type Resp = DeltaDiscoveryResponse;

    fn client(&mut self) -> &mut DeltaClient {
        self
    }

    fn type_url(resp: &DeltaDiscoveryResponse) -> &str {
        &resp.type_url
    }

    async fn wildcard(&mut self, type_url: &str) {
        self.subscribe(type_url, &[], &[], "").await;
    }

    fn absorb(
        &mut self,
        resp: &DeltaDiscoveryResponse,
        state: &mut BTreeMap<String, Any>,
        vs: &mut BTreeMap<String, String>,
        _watched: Option<&BTreeSet<String>>,
    ) {
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
    }

    async fn ack(&mut self, resp: &DeltaDiscoveryResponse, _watched: Option<&BTreeSet<String>>) {
        DeltaClient::ack(self, resp).await;
    }

    async fn watch(&mut self, type_url: &str, old: &BTreeSet<String>, new: &BTreeSet<String>) {
        let add: Vec<&str> = new.difference(old).map(String::as_str).collect();
        let del: Vec<&str> = old.difference(new).map(String::as_str).collect();
        self.subscribe(type_url, &add, &del, "").await;
    }
}
