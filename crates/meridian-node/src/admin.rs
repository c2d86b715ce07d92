//! The admin HTTP listener: liveness, readiness, Prometheus metrics, the
//! status page (`/ui`, under the rule of `ui::Access`) and, when enabled,
//! fault injection for tests and chaos runs.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use meridian_peer::FaultConfig;
use meridian_store::DiskFaultConfig;

use crate::metrics::WriteMetrics;
use crate::status::LocalStatus;

/// What the admin listener reads, and the faults it may change.
pub(crate) struct Admin {
    pub status: LocalStatus,
    pub faults: meridian_peer::Faults,
    pub disk_faults: meridian_store::DiskFaults,
    pub incarnations: meridian_peer::Incarnations,
    pub fault_injection: bool,
    pub write_metrics: Arc<WriteMetrics>,
    pub xds: meridian_xds::XdsServer,
    pub sm: meridian_store::StateMachineStore,
    pub ui: Arc<crate::ui::Page>,
}

pub(crate) fn router(s: Arc<Admin>) -> Router {
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if s.fault_injection {
        r = r
            .route("/debug/faults", get(get_faults).put(put_faults))
            .route(
                "/debug/disk-faults",
                get(get_disk_faults).put(put_disk_faults),
            );
    }
    let ui = crate::ui::routes(s.ui.clone());
    r.with_state(s).merge(ui)
}

async fn readyz(State(s): State<Arc<Admin>>) -> impl IntoResponse {
    match s.status.readiness() {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "ready: a member, caught up with the leader at revision {}, serving xDS\n",
                s.sm.revision()
            ),
        ),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics(State(s): State<Arc<Admin>>) -> impl IntoResponse {
    let st = s.status.status();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge("meridian_raft_term", "Current Raft term.", st.term as f64);
    gauge(
        "meridian_raft_leader_id",
        "Id of the leader this node knows, 0 if none.",
        st.leader_id as f64,
    );
    gauge(
        "meridian_raft_is_leader",
        "1 if this node leads.",
        (st.role == "leader") as u8 as f64,
    );
    gauge(
        "meridian_raft_last_log_index",
        "Index of the last log entry on this node.",
        st.last_log_index as f64,
    );
    gauge(
        "meridian_raft_commit_index",
        "Highest index known committed.",
        st.commit_index as f64,
    );
    gauge(
        "meridian_raft_applied_index",
        "Highest index applied to the state machine.",
        st.applied_index as f64,
    );
    gauge(
        "meridian_raft_snapshot_index",
        "Index of the last snapshot.",
        st.snapshot_index as f64,
    );
    gauge(
        "meridian_raft_purged_index",
        "Highest purged log index.",
        st.purged_index as f64,
    );
    gauge(
        "meridian_raft_voters",
        "Number of voters in the membership.",
        st.voters.len() as f64,
    );
    gauge(
        "meridian_raft_learners",
        "Number of learners in the membership.",
        st.learners.len() as f64,
    );
    gauge(
        "meridian_store_revision",
        "Global revision of the replicated config.",
        st.revision as f64,
    );
    gauge(
        "meridian_ready",
        "1 if /readyz answers ready.",
        st.ready as u8 as f64,
    );
    gauge(
        "meridian_uptime_seconds",
        "Seconds since the process started.",
        st.uptime_ms as f64 / 1000.0,
    );
    let quorum_ack = s.status.millis_since_quorum_ack();
    if let Some(ms) = quorum_ack {
        gauge(
            "meridian_raft_millis_since_quorum_ack",
            "On the leader: ms since a quorum acknowledged it.",
            ms as f64,
        );
    }
    if let Some(rss) = resident_memory_bytes() {
        gauge(
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            rss as f64,
        );
    }
    let _ = writeln!(out, "# HELP meridian_raft_replication_lag Entries a follower is behind the leader.\n# TYPE meridian_raft_replication_lag gauge");
    for (peer, lag) in &st.replication_lag {
        let _ = writeln!(
            out,
            "meridian_raft_replication_lag{{peer=\"{peer}\"}} {lag}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP meridian_peer_incarnation_refused_total Peer messages refused because a node came back with a new data dir under a known id.\n# TYPE meridian_peer_incarnation_refused_total counter\nmeridian_peer_incarnation_refused_total {}",
        s.incarnations.refused()
    );
    s.write_metrics.render(&mut out);
    crate::rollout::render_metrics(&s.sm, &s.write_metrics, &mut out);
    render_xds(&s, &mut out);
    render_agents(&s, &mut out);
    ([("content-type", "text/plain; version=0.0.4")], out)
}

fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

async fn get_faults(State(s): State<Arc<Admin>>) -> Json<FaultConfig> {
    Json(s.faults.get())
}

async fn put_faults(
    State(s): State<Arc<Admin>>,
    Json(cfg): Json<FaultConfig>,
) -> impl IntoResponse {
    tracing::warn!(faults = ?cfg, "fault injection changed");
    s.faults.set(cfg.clone());
    Json(cfg)
}

async fn get_disk_faults(State(s): State<Arc<Admin>>) -> Json<DiskFaultConfig> {
    Json(s.disk_faults.get())
}

async fn put_disk_faults(
    State(s): State<Arc<Admin>>,
    Json(cfg): Json<DiskFaultConfig>,
) -> impl IntoResponse {
    tracing::warn!(faults = ?cfg, "disk fault injection changed");
    s.disk_faults.set(cfg.clone());
    Json(cfg)
}

fn render_xds(s: &Admin, out: &mut String) {
    use crate::xds_source::XdsReadiness;
    use meridian_xds::{Variant, XdsMetrics};
    let m = s.xds.metrics();
    let readiness = s.status.xds_readiness();
    let _ = writeln!(
        out,
        "# HELP meridian_xds_ready 1 if new xDS streams are served (caught up, or serving the persisted state).\n# TYPE meridian_xds_ready gauge\nmeridian_xds_ready {}",
        !matches!(readiness, XdsReadiness::NotReady(_)) as u8
    );
    let _ = writeln!(
        out,
        "# HELP meridian_xds_serving_persisted 1 while no leader is reachable and xDS serves the persisted state.\n# TYPE meridian_xds_serving_persisted gauge\nmeridian_xds_serving_persisted {}",
        matches!(readiness, XdsReadiness::Persisted(_)) as u8
    );
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    for (name, help, v) in [
        (
            "meridian_xds_pushes_total",
            "Pushes computed for a stream after a change.",
            XdsMetrics::get(&m.pushes),
        ),
        (
            "meridian_xds_responses_total",
            "Discovery responses sent.",
            XdsMetrics::get(&m.responses),
        ),
        (
            "meridian_xds_acks_total",
            "ACKs received.",
            XdsMetrics::get(&m.acks),
        ),
        (
            "meridian_xds_nacks_total",
            "NACKs received (requests with error_detail).",
            XdsMetrics::get(&m.nacks),
        ),
        (
            "meridian_xds_stale_requests_total",
            "SotW requests with a stale nonce, ignored.",
            XdsMetrics::get(&m.stale_requests),
        ),
        (
            "meridian_xds_refused_streams_total",
            "New xDS streams refused with UNAVAILABLE while not ready.",
            XdsMetrics::get(&m.refused_streams),
        ),
        (
            "meridian_xds_denied_streams_total",
            "New xDS streams refused with PERMISSION_DENIED (certificate and node.cluster disagree, or not a proxy).",
            XdsMetrics::get(&m.denied_streams),
        ),
        (
            "meridian_xds_debounce_merges_total",
            "Changes merged into a pending push by the debouncer.",
            XdsMetrics::get(&m.debounce_merges),
        ),
    ] {
        counter(name, help, v);
    }
    m.push_to_ack.render(
        out,
        "meridian_xds_push_to_ack_seconds",
        "From a change's commit to each Envoy's first ACK of each affected type.",
    );
    let _ = writeln!(out, "# HELP meridian_xds_streams Connected xDS streams by variant.\n# TYPE meridian_xds_streams gauge");
    for v in Variant::ALL {
        let _ = writeln!(
            out,
            "meridian_xds_streams{{variant=\"{}\"}} {}",
            crate::proxy_status::variant_name(v),
            m.streams(v)
        );
    }
    let _ = writeln!(out, "# HELP meridian_xds_subscribed_streams Streams subscribed to a type, by type and variant.\n# TYPE meridian_xds_subscribed_streams gauge");
    for t in [
        "Cluster",
        "ClusterLoadAssignment",
        "Listener",
        "RouteConfiguration",
        "Secret",
    ] {
        let url = match t {
            "Cluster" => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            "ClusterLoadAssignment" => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            "Listener" => "type.googleapis.com/envoy.config.listener.v3.Listener",
            "RouteConfiguration" => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            _ => "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        };
        for v in Variant::ALL {
            let _ = writeln!(
                out,
                "meridian_xds_subscribed_streams{{type=\"{}\",variant=\"{}\"}} {}",
                crate::proxy_status::short_type(url),
                crate::proxy_status::variant_name(v),
                m.subscribed(url, v)
            );
        }
    }
}

fn render_agents(s: &Admin, out: &mut String) {
    use meridian_model::reported::{Lease, ReportedEndpoint, KIND_ENDPOINTS, KIND_LEASE};
    let (mut active, mut expired) = (0u64, 0u64);
    for (_, o) in s.sm.list(Some(KIND_LEASE)) {
        match serde_json::from_slice::<Lease>(&o.value) {
            Ok(l) if l.expired => expired += 1,
            Ok(_) => active += 1,
            Err(_) => {}
        }
    }
    let mut endpoints = 0u64;
    for (_, o) in s.sm.list(Some(KIND_ENDPOINTS)) {
        endpoints += serde_json::from_slice::<Vec<ReportedEndpoint>>(&o.value)
            .map(|v| v.len() as u64)
            .unwrap_or(0);
    }
    let _ = writeln!(out, "# HELP meridian_agent_leases Agent leases in the replicated state, by state.\n# TYPE meridian_agent_leases gauge");
    let _ = writeln!(out, "meridian_agent_leases{{state=\"active\"}} {active}\nmeridian_agent_leases{{state=\"expired\"}} {expired}");
    let _ = writeln!(out, "# HELP meridian_agent_endpoints Endpoints reported by agents, in the replicated state.\n# TYPE meridian_agent_endpoints gauge\nmeridian_agent_endpoints {endpoints}");
}
