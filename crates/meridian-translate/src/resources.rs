use std::collections::BTreeMap;

use prost::Message;
use sha2::{Digest, Sha256};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// One encoded resource.
#[derive(Clone, PartialEq, Eq)]
pub struct Resource {
    pub name: String,
    /// Hex SHA-256 of `encoded`: equal content, equal version, on every
    /// control-plane node.
    pub version: String,
    /// The prost-encoded resource message (not wrapped in Any).
    pub encoded: Vec<u8>,
    pub type_url: &'static str,
}

impl std::fmt::Debug for Resource {
    // Secrets carry private keys: never print the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("type_url", &self.type_url)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("bytes", &self.encoded.len())
            .finish()
    }
}

/// Every resource for one viewer, by type URL then name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub by_type: BTreeMap<&'static str, BTreeMap<String, Resource>>,
}

impl Resources {
    pub(crate) fn add<M: Message>(&mut self, type_url: &'static str, name: &str, msg: &M) {
        let encoded = msg.encode_to_vec();
        let version = hex::encode(Sha256::digest(&encoded));
        let r = Resource {
            name: name.to_string(),
            version,
            encoded,
            type_url,
        };
        self.by_type
            .entry(type_url)
            .or_default()
            .insert(name.to_string(), r);
    }

    /// Resources of one type, by name (empty when there are none).
    pub fn of_type(&self, type_url: &str) -> impl Iterator<Item = &Resource> {
        self.by_type
            .get(type_url)
            .into_iter()
            .flat_map(|m| m.values())
    }

    pub fn get(&self, type_url: &str, name: &str) -> Option<&Resource> {
        self.by_type.get(type_url)?.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_type.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
