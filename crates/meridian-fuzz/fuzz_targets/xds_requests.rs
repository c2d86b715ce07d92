//! Sequences of xDS requests from an Envoy that misbehaves (any type URL,
//! names, nonces stale or fresh, NACKs, wildcards, SotW and delta) against
//! the real xDS server over a loopback gRPC stream: the server may refuse or
//! end a stream, never panic (libFuzzer's panic hook turns a panic in any of
//! the server's tasks into a crash).
#![no_main]

#[path = "script.rs"]
mod script;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use envoy_types::pb::google::rpc::Status;
use libfuzzer_sys::fuzz_target;
use script::Script;
use meridian_xds::testing::fixtures::{cluster, endpoints, listener, route, secret};
use meridian_xds::testing::TestServer;
use meridian_xds::types::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};
use meridian_xds::{MemorySource, XdsConfig};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const TYPES: [&str; 7] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, "type.googleapis.com/x.Unknown", ""];
const NAMES: [&str; 8] = ["c1", "c2", "l1", "r1", "s1", "*", "", "missing"];

struct Fixture {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    _server: TestServer,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let src = Arc::new(MemorySource::new());
    src.update(|v| {
        for c in ["c1", "c2"] {
            v.insert(c, cluster(c, "v1"));
            v.insert(c, endpoints(c, "v1"));
        }
        v.insert("l1", listener("l1", "r1", "v1"));
        v.insert("r1", route("r1", "v1"));
        v.insert("s1", secret("s1", "v1"));
    });
    let config = XdsConfig {
        debounce_quiet: Duration::from_millis(1),
        debounce_max: Duration::from_millis(5),
        removal_grace: Duration::from_millis(1),
        max_request_bytes: 16 * 1024,
        ..Default::default()
    };
    let server = rt.block_on(TestServer::start(src, config));
    let addr = server.addr;
    let channel = rt.block_on(async {
        Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the fuzzed server")
    });
    Fixture { rt, channel, _server: server }
});

impl Script<'_> {
    fn names(&mut self) -> Vec<String> {
        let n = self.byte() % 5;
        (0..n)
            .map(|_| {
                let b = self.byte();
                match NAMES.get(usize::from(b % 9)) {
                    Some(n) => n.to_string(),
                    // Some bytes of the input as a name, odd characters included.
                    None => String::from_utf8_lossy(&[self.byte(), self.byte(), b]).into_owned(),
                }
            })
            .collect()
    }
    fn node(&mut self) -> Option<Node> {
        (self.byte() % 4 != 0).then(|| Node {
            id: format!("fuzz-{}", self.byte() % 3),
            cluster: ["", "group-a", "*"][usize::from(self.byte() % 3)].into(),
            ..Default::default()
        })
    }
}

fn error(b: u8) -> Option<Status> {
    (b % 3 == 0).then(|| Status { code: 3, message: "rejected by fuzz".into(), details: vec![] })
}

/// One stream: a request per op, built by `make` from the script, the
/// op byte, whether it is the first, and the nonce it answers; after some
/// requests, a short wait for a response whose nonce later requests use.
async fn drive<'a, Req, Resp, F>(
    s: &mut Script<'a>,
    open: impl FnOnce(ReceiverStream<Req>) -> F,
    mut make: impl FnMut(&mut Script<'a>, u8, bool, String) -> Req,
    nonce_of: impl Fn(&Resp) -> String,
) where
    F: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, tonic::Status>>,
{
    let (tx, rx) = mpsc::channel(16);
    let Ok(resp) = open(ReceiverStream::new(rx)).await else { return };
    let mut inbound = resp.into_inner();
    let mut nonce = String::new();
    let mut first = true;
    while let Some(op) = s.next() {
        let answers = match s.byte() % 4 {
            0 => "stale".to_string(),
            _ => nonce.clone(),
        };
        let req = make(s, op, first, answers);
        first = false;
        if tx.send(req).await.is_err() {
            return;
        }
        if s.byte() % 2 == 0 {
            match tokio::time::timeout(Duration::from_millis(5), inbound.message()).await {
                Ok(Ok(Some(r))) => nonce = nonce_of(&r),
                Ok(_) => return,
                Err(_) => {}
            }
        }
    }
}

async fn sotw(ch: Channel, s: &mut Script<'_>) {
    let mut client = AggregatedDiscoveryServiceClient::new(ch);
    let make = |s: &mut Script<'_>, op: u8, first: bool, nonce: String| DiscoveryRequest {
        node: if first { s.node() } else { None },
        type_url: TYPES[usize::from(op % 7)].into(),
        resource_names: s.names(),
        version_info: ["", "v", "0"][usize::from(s.byte() % 3)].into(),
        response_nonce: nonce,
        error_detail: error(s.byte()),
        ..Default::default()
    };
    drive(s, |rx| client.stream_aggregated_resources(rx), make, |r| r.nonce.clone()).await
}

async fn delta(ch: Channel, s: &mut Script<'_>) {
    let mut client = AggregatedDiscoveryServiceClient::new(ch);
    let make = |s: &mut Script<'_>, op: u8, first: bool, nonce: String| {
        let initial: HashMap<String, String> = if first {
            s.names().into_iter().map(|n| (n, "v1".to_string())).collect()
        } else {
            HashMap::new()
        };
        DeltaDiscoveryRequest {
            node: if first { s.node() } else { None },
            type_url: TYPES[usize::from(op % 7)].into(),
            resource_names_subscribe: s.names(),
            resource_names_unsubscribe: s.names(),
            initial_resource_versions: initial,
            response_nonce: nonce,
            error_detail: error(s.byte()),
            ..Default::default()
        }
    };
    drive(s, |rx| client.delta_aggregated_resources(rx), make, |r| r.nonce.clone()).await
}

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let mut s = Script(data.iter());
    let ch = f.channel.clone();
    f.rt.block_on(async {
        if s.byte() % 2 == 0 {
            sotw(ch, &mut s).await
        } else {
            delta(ch, &mut s).await
        }
    });
});
