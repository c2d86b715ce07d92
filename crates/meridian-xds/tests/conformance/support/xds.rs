//! One test body for both variants: a stream that speaks SotW or delta the
//! way Envoy does, and responses reduced to what both carry. Where the
//! variants' rules differ, the tests match on [`Flavor`] and keep each
//! variant's own assertions.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use meridian_xds::testing::{delta_names, names, DeltaClient, SotwClient};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Sotw,
    Delta,
}

/// Runs one `async fn(Flavor)` body as two tests, `<body>::sotw` and
/// `<body>::delta`, so a failure names its variant and both run in
/// parallel.
macro_rules! both {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::conformance::support::Flavor;

            #[tokio::test]
            async fn sotw() {
                super::$name(Flavor::Sotw).await
            }

            #[tokio::test]
            async fn delta() {
                super::$name(Flavor::Delta).await
            }
        }
    )*};
}
pub(crate) use both;

/// A response of either variant.
#[derive(Clone, Debug)]
pub struct Resp {
    pub type_url: String,
    /// Resource names, in order.
    pub names: Vec<String>,
    /// Delta only.
    pub removed: Vec<String>,
    pub nonce: String,
    pub raw: Raw,
}

#[derive(Clone, Debug)]
pub enum Raw {
    Sotw(DiscoveryResponse),
    Delta(DeltaDiscoveryResponse),
}

impl Resp {
    pub fn sotw(&self) -> &DiscoveryResponse {
        match &self.raw {
            Raw::Sotw(r) => r,
            Raw::Delta(_) => panic!("a SotW response expected"),
        }
    }

    pub fn delta(&self) -> &DeltaDiscoveryResponse {
        match &self.raw {
            Raw::Delta(r) => r,
            Raw::Sotw(_) => panic!("a delta response expected"),
        }
    }

    /// SotW `version_info`; empty for delta.
    pub fn version(&self) -> &str {
        match &self.raw {
            Raw::Sotw(r) => &r.version_info,
            Raw::Delta(_) => "",
        }
    }
}

enum Client {
    Sotw(SotwClient),
    Delta(DeltaClient),
}

/// An xDS stream of either variant. It remembers, per type, what it
/// subscribed to, so ACKs and subscription changes look like Envoy's:
/// SotW repeats the whole list, delta sends only the difference.
pub struct Stream {
    c: Client,
    subs: BTreeMap<String, BTreeSet<String>>,
}

impl Stream {
    pub async fn ads(f: Flavor, addr: SocketAddr, node: Node) -> Stream {
        let c = match f {
            Flavor::Sotw => Client::Sotw(SotwClient::ads(addr, node).await.unwrap()),
            Flavor::Delta => Client::Delta(DeltaClient::ads(addr, node).await.unwrap()),
        };
        Stream {
            c,
            subs: BTreeMap::new(),
        }
    }

    pub async fn per_type(f: Flavor, addr: SocketAddr, type_url: &str, node: Node) -> Stream {
        let c = match f {
            Flavor::Sotw => Client::Sotw(SotwClient::per_type(addr, type_url, node).await.unwrap()),
            Flavor::Delta => {
                Client::Delta(DeltaClient::per_type(addr, type_url, node).await.unwrap())
            }
        };
        Stream {
            c,
            subs: BTreeMap::new(),
        }
    }

    pub fn flavor(&self) -> Flavor {
        match self.c {
            Client::Sotw(_) => Flavor::Sotw,
            Client::Delta(_) => Flavor::Delta,
        }
    }

    pub fn sotw(&mut self) -> &mut SotwClient {
        match &mut self.c {
            Client::Sotw(c) => c,
            Client::Delta(_) => panic!("a SotW stream expected"),
        }
    }

    pub fn delta(&mut self) -> &mut DeltaClient {
        match &mut self.c {
            Client::Delta(c) => c,
            Client::Sotw(_) => panic!("a delta stream expected"),
        }
    }

    /// The first request for a type: `names` (empty: wildcard), no nonce.
    pub async fn ask(&mut self, type_url: &str, names: &[&str]) {
        self.subs.insert(type_url.to_string(), set(names));
        match &mut self.c {
            Client::Sotw(c) => c.request(type_url, names, "", "").await,
            Client::Delta(c) => c.subscribe(type_url, names, &[], "").await,
        }
    }

    /// ACKs `r`, keeping the subscription.
    pub async fn ack(&mut self, r: &Resp) {
        let names = self.subs.get(&r.type_url).cloned().unwrap_or_default();
        match &mut self.c {
            Client::Sotw(c) => c.ack(r.sotw(), &refs(&names)).await,
            Client::Delta(c) => c.ack(r.delta()).await,
        }
    }

    /// NACKs `r`; SotW reports `accepted` as the last good version.
    pub async fn nack(&mut self, r: &Resp, accepted: &str, message: &str) {
        let names = self.subs.get(&r.type_url).cloned().unwrap_or_default();
        match &mut self.c {
            Client::Sotw(c) => c.nack(r.sotw(), &refs(&names), accepted, message).await,
            Client::Delta(c) => c.nack(r.delta(), message).await,
        }
    }

    /// Changes the subscription to `names`, as Envoy does after `after`:
    /// SotW sends the new list with `after`'s version and nonce, delta
    /// subscribes and unsubscribes the difference.
    pub async fn watch(&mut self, after: &Resp, names: &[&str]) {
        self.watch_at(&after.type_url, names, after.version(), &after.nonce)
            .await
    }

    /// [`Stream::watch`] with the version and nonce SotW sends given
    /// explicitly (delta correlates nothing with it).
    pub async fn watch_at(&mut self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        let new = set(names);
        let old = self
            .subs
            .insert(type_url.to_string(), new.clone())
            .unwrap_or_default();
        match &mut self.c {
            Client::Sotw(c) => c.request(type_url, names, version, nonce).await,
            Client::Delta(c) => {
                let add: Vec<&str> = new.difference(&old).map(String::as_str).collect();
                let del: Vec<&str> = old.difference(&new).map(String::as_str).collect();
                c.subscribe(type_url, &add, &del, "").await
            }
        }
    }

    pub async fn expect(&mut self) -> Resp {
        match &mut self.c {
            Client::Sotw(c) => sotw_resp(c.expect_response().await),
            Client::Delta(c) => delta_resp(c.expect_response().await),
        }
    }

    pub async fn expect_silence(&mut self, wait: Duration) {
        match &mut self.c {
            Client::Sotw(c) => c.expect_silence(wait).await,
            Client::Delta(c) => c.expect_silence(wait).await,
        }
    }
}

fn sotw_resp(r: DiscoveryResponse) -> Resp {
    Resp {
        type_url: r.type_url.clone(),
        names: names(&r),
        removed: Vec::new(),
        nonce: r.nonce.clone(),
        raw: Raw::Sotw(r),
    }
}

fn delta_resp(r: DeltaDiscoveryResponse) -> Resp {
    Resp {
        type_url: r.type_url.clone(),
        names: delta_names(&r),
        removed: r.removed_resources.clone(),
        nonce: r.nonce.clone(),
        raw: Raw::Delta(r),
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn refs(names: &BTreeSet<String>) -> Vec<&str> {
    names.iter().map(String::as_str).collect()
}

/// `&[&str]` as owned strings, for comparing with response names.
pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}
