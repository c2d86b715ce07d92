//! The resource types this server knows how to order, and their properties.

/// `envoy.config.listener.v3.Listener`
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
/// `envoy.config.route.v3.RouteConfiguration`
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
/// `envoy.config.cluster.v3.Cluster`
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// `envoy.config.endpoint.v3.ClusterLoadAssignment`
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
/// `envoy.extensions.transport_sockets.tls.v3.Secret`
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The five types in the order a push sends their additions and updates
/// (make-before-break): secrets before the clusters and listeners that use
/// them, clusters before their endpoints, listeners before their routes.
pub const PUSH_ORDER: [&str; 5] = [SECRET, CLUSTER, ENDPOINT, LISTENER, ROUTE];

/// Types whose removals wait until the referring types were sent: endpoints
/// and clusters only go once the routes that named them are gone, secrets once
/// nothing that used them remains.
pub const REMOVE_LAST: [&str; 3] = [CLUSTER, ENDPOINT, SECRET];

/// A type whose SotW responses carry the full state (an omission deletes).
pub fn is_full_state(type_url: &str) -> bool {
    type_url == LISTENER || type_url == CLUSTER
}

/// Sort key for push ordering; unknown types go after the known five.
pub fn order_of(type_url: &str) -> usize {
    PUSH_ORDER
        .iter()
        .position(|t| *t == type_url)
        .unwrap_or(PUSH_ORDER.len())
}

/// Index for per-type metrics: the five, then "other".
pub fn metric_index(type_url: &str) -> usize {
    order_of(type_url)
}

/// Short names used in logs, metrics and status.
pub fn short_name(type_url: &str) -> &str {
    match type_url {
        LISTENER => "LDS",
        ROUTE => "RDS",
        CLUSTER => "CDS",
        ENDPOINT => "EDS",
        SECRET => "SDS",
        other => other.rsplit('.').next().unwrap_or(other),
    }
}
