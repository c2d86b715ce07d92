//! An xDS client that behaves like Envoy on the wire, fixtures, and a load
//! generator. Compiled with the `testing` feature: the conformance tests use
//! it, and `meridian bench xds` drives [`bench::bench`].

pub mod bench;
mod client;
pub mod envoy;
pub mod fixtures;

pub use client::{delta_names, names, Client, DeltaClient, DeltaWire, SotwClient, SotwWire, Wire};

use std::net::SocketAddr;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{serve, MemorySource, SnapshotSource, XdsConfig, XdsError, XdsServer};

/// A server on 127.0.0.1:0, stopped when dropped or by [`TestServer::shutdown`].
pub struct TestServer {
    pub addr: SocketAddr,
    pub server: XdsServer,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), XdsError>>>,
}

impl TestServer {
    pub async fn start(source: Arc<MemorySource>, config: XdsConfig) -> TestServer {
        Self::start_with(source, config).await
    }

    pub async fn start_with(source: Arc<dyn SnapshotSource>, config: XdsConfig) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let server = XdsServer::new(source, config);
        let (stop, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, server.clone(), async move {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            server,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    /// Triggers shutdown (drain) and waits for the server to finish.
    pub async fn shutdown(mut self) -> Result<(), XdsError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.handle.take() {
            Some(h) => h.await.expect("serve task"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A node as Envoy sends it.
pub fn node(id: &str, cluster: &str, region: &str) -> Node {
    Node {
        id: id.to_string(),
        cluster: cluster.to_string(),
        locality: if region.is_empty() {
            None
        } else {
            Some(Locality {
                region: region.to_string(),
                ..Default::default()
            })
        },
        ..Default::default()
    }
}
