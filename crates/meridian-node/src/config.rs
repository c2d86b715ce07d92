//! Everything a node is started with. Built by the binary from flags and/or a
//! config file; the node itself never reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub node_id: u64,
    pub region: String,
    pub data_dir: PathBuf,
    pub listen: Listeners,
    /// Addresses other nodes and clients use to reach this node; default to
    /// the listen addresses.
    #[serde(default)]
    pub advertise: Option<Listeners>,
    #[serde(default)]
    pub raft: RaftTimings,
    /// Take a snapshot (and purge the log before it) every this many entries.
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_logs: u64,
    /// How long a write may wait for a quorum before it is answered
    /// "no quorum" (its outcome is then unknown; retry with the same id).
    #[serde(default = "default_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// Start as a single-node cluster if the data dir is new.
    #[serde(default)]
    pub bootstrap: bool,
    /// API addresses of existing members to ask to admit this node when its
    /// data dir is new.
    #[serde(default)]
    pub join: Vec<String>,
    /// Serve the fault-injection endpoint on the admin listener (tests, chaos).
    #[serde(default)]
    pub enable_fault_injection: bool,
    #[serde(default)]
    pub xds: XdsOptions,
    /// Mutual TLS on the peer, API and xDS listeners. `None` is plaintext:
    /// the binary allows that only with `--insecure` or for `meridian dev`.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// Certificate, key and trusted CA bundle (PEM files) of one listener;
/// each unset field falls back to the shared one in [`TlsConfig`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsListenerFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The CAs clients' certificates must chain to (for the peer listener
    /// also the CAs other nodes' servers must chain to).
    pub ca: Option<PathBuf>,
}

/// The node's TLS files: one shared set (typically `node-ID.pem`,
/// `node-ID-key.pem`, `ca.pem` from `meridian certs`), overridden per
/// listener where a listener has its own trust root. The peer listener's
/// set is also what the node presents when it dials other nodes.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub peer: TlsListenerFiles,
    #[serde(default)]
    pub api: TlsListenerFiles,
    #[serde(default)]
    pub xds: TlsListenerFiles,
    /// How often the files are checked for changes (rotation without restart).
    #[serde(default = "default_tls_reload_ms")]
    pub reload_interval_ms: u64,
}

fn default_tls_reload_ms() -> u64 {
    5_000
}

impl TlsConfig {
    /// The shared set for every listener.
    pub fn shared(cert: PathBuf, key: PathBuf, ca: PathBuf) -> TlsConfig {
        TlsConfig {
            cert: Some(cert),
            key: Some(key),
            ca: Some(ca),
            peer: Default::default(),
            api: Default::default(),
            xds: Default::default(),
            reload_interval_ms: default_tls_reload_ms(),
        }
    }

    /// The files `listener` (`peer`, `api` or `xds`) uses; the error names
    /// the field that is missing.
    pub fn files(&self, listener: &str) -> Result<meridian_tls::TlsFiles, String> {
        let own = match listener {
            "peer" => &self.peer,
            "api" => &self.api,
            _ => &self.xds,
        };
        let pick = |field: &str, own: &Option<PathBuf>, shared: &Option<PathBuf>| {
            own.clone().or_else(|| shared.clone()).ok_or_else(|| {
                format!("tls.{listener}.{field}: not set, and no shared tls.{field} either")
            })
        };
        Ok(meridian_tls::TlsFiles {
            cert: pick("cert", &own.cert, &self.cert)?,
            key: pick("key", &own.key, &self.key)?,
            ca: pick("ca", &own.ca, &self.ca)?,
        })
    }
}

/// xDS push and connection tunables (defaults follow Istio where it has one).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct XdsOptions {
    /// Push once changes were quiet this long...
    pub debounce_ms: u64,
    /// ...or once the first unpushed change is this old.
    pub debounce_max_ms: u64,
    /// The same bound while only endpoints changed (agents' reports, lease
    /// expiries): endpoint churn never goes quiet, and failover needs it
    /// in Envoy well within a second. The smaller of this and
    /// `debounce_max_ms` applies.
    pub debounce_max_endpoints_ms: u64,
    /// Streams computing a push at the same time.
    pub push_concurrency: usize,
    /// End each Envoy's connection after this many seconds so Envoys spread
    /// over the controllers again (0: never).
    pub max_connection_age_s: u64,
    /// With no leader reachable this long (quorum lost), a controller that
    /// holds data serves its persisted state to new Envoys; before that,
    /// and always on an empty data dir, it refuses them.
    pub serve_persisted_after_ms: u64,
}

impl Default for XdsOptions {
    fn default() -> Self {
        XdsOptions {
            debounce_ms: 100,
            debounce_max_ms: 1_000,
            debounce_max_endpoints_ms: 300,
            push_concurrency: 100,
            max_connection_age_s: 0,
            serve_persisted_after_ms: 30_000,
        }
    }
}

fn default_snapshot_logs() -> u64 {
    10_000
}

fn default_write_timeout_ms() -> u64 {
    5_000
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listeners {
    pub peer: SocketAddr,
    pub api: SocketAddr,
    pub xds: SocketAddr,
    pub admin: SocketAddr,
}

/// Raft timings. openraft's own defaults (50 ms heartbeat, 150-300 ms
/// election) are too tight once fsync and cross-region links are involved.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub install_snapshot_timeout_ms: u64,
}

impl RaftTimings {
    /// Nodes in one region or data center (RTT under 5 ms).
    pub fn lan() -> Self {
        RaftTimings {
            heartbeat_ms: 100,
            election_min_ms: 750,
            election_max_ms: 1500,
            install_snapshot_timeout_ms: 10_000,
        }
    }

    /// Voters spread across regions (RTT 100-300 ms): elections must not fire
    /// on one slow round trip plus an fsync.
    pub fn wan() -> Self {
        RaftTimings {
            heartbeat_ms: 300,
            election_min_ms: 2_500,
            election_max_ms: 5_000,
            install_snapshot_timeout_ms: 60_000,
        }
    }

    pub fn profile(name: &str) -> Option<Self> {
        match name {
            "lan" => Some(Self::lan()),
            "wan" => Some(Self::wan()),
            _ => None,
        }
    }
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self::lan()
    }
}

impl NodeConfig {
    pub fn advertised(&self) -> &Listeners {
        self.advertise.as_ref().unwrap_or(&self.listen)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }

    /// Checks that do not need the disk. Each error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id: must be greater than 0".into());
        }
        if let Err(e) = check_region(&self.region) {
            return Err(format!("region: {e}"));
        }
        let t = &self.raft;
        if t.heartbeat_ms == 0 {
            return Err("raft.heartbeat_ms: must be greater than 0".into());
        }
        if t.election_min_ms <= t.heartbeat_ms * 2 {
            return Err(format!(
                "raft.election_min_ms: must be more than twice raft.heartbeat_ms ({}), got {}",
                t.heartbeat_ms, t.election_min_ms
            ));
        }
        if t.election_max_ms <= t.election_min_ms {
            return Err("raft.election_max_ms: must be greater than raft.election_min_ms".into());
        }
        if self.xds.debounce_max_ms < self.xds.debounce_ms {
            return Err("xds.debounce_max_ms: must be at least xds.debounce_ms".into());
        }
        // Not tied to debounce_ms/debounce_max_ms: the debouncer uses the
        // smaller of it and debounce_max, so raising debounce_ms alone never
        // turns a working config into a refused one.
        if self.xds.debounce_max_endpoints_ms == 0 {
            return Err("xds.debounce_max_endpoints_ms: must be at least 1 ms".into());
        }
        if self.xds.push_concurrency == 0 {
            return Err("xds.push_concurrency: must be at least 1".into());
        }
        if self.snapshot_logs < 10 {
            return Err("snapshot_logs: must be at least 10".into());
        }
        if let Some(tls) = &self.tls {
            for l in ["peer", "api", "xds"] {
                tls.files(l)?;
            }
            if tls.reload_interval_ms < 100 {
                return Err("tls.reload_interval_ms: must be at least 100".into());
            }
        }
        Ok(())
    }

    pub(crate) fn openraft_config(&self) -> Result<openraft::Config, String> {
        let t = &self.raft;
        let cfg = openraft::Config {
            cluster_name: "meridian".into(),
            heartbeat_interval: t.heartbeat_ms,
            election_timeout_min: t.election_min_ms,
            election_timeout_max: t.election_max_ms,
            install_snapshot_timeout: t.install_snapshot_timeout_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            // Keep enough log after a snapshot that a briefly slow follower
            // catches up from the log, not with a second snapshot.
            max_in_snapshot_log_to_keep: self.snapshot_logs / 2,
            // Must stay above the snapshot interval (dependencies.md).
            replication_lag_threshold: self.snapshot_logs * 2,
            max_payload_entries: 512,
            ..Default::default()
        };
        cfg.validate().map_err(|e| format!("raft: {e}"))
    }
}

/// Region names: 1-63 of a-z, 0-9 and '-', starting with a letter.
pub fn check_region(region: &str) -> Result<(), String> {
    let ok = !region.is_empty()
        && region.len() <= 63
        && region.starts_with(|c: char| c.is_ascii_lowercase())
        && region
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{region:?} is not a valid region name (1-63 characters of a-z, 0-9 and '-', starting with a letter)"
        ))
    }
}
