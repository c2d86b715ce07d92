use std::collections::BTreeMap;

/// Health of one endpoint as its home cluster reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Health {
    Healthy,
    Unhealthy,
    Draining,
    Unknown,
}

/// One backend instance of a Service, as discovered in one Kubernetes
/// cluster. Until federation agents exist, tests fill these in directly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub service: String,
    /// Kubernetes cluster name the endpoint was discovered in.
    pub cluster: String,
    pub region: String,
    pub zone: String,
    /// An IP address; Envoy's EDS does not resolve hostnames.
    pub address: String,
    /// 0 means "the Service's port".
    pub port: u16,
    /// Load-balancing weight, 1-128 in Envoy terms; 0 is treated as 1.
    pub weight: u32,
    pub health: Health,
}

/// All known endpoints, kept sorted so translation output does not depend on
/// discovery order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointSet {
    by_service: BTreeMap<String, Vec<Endpoint>>,
}

impl EndpointSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, endpoint: Endpoint) {
        let list = self.by_service.entry(endpoint.service.clone()).or_default();
        if let Err(at) = list.binary_search(&endpoint) {
            list.insert(at, endpoint);
        }
    }

    /// Endpoints of one service, sorted.
    pub fn for_service(&self, service: &str) -> &[Endpoint] {
        self.by_service
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.by_service.values().flatten()
    }

    pub fn len(&self) -> usize {
        self.by_service.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromIterator<Endpoint> for EndpointSet {
    fn from_iter<T: IntoIterator<Item = Endpoint>>(iter: T) -> Self {
        let mut set = Self::new();
        for e in iter {
            set.insert(e);
        }
        set
    }
}
