//! The load generator behind `meridian bench xds`: many simulated Envoys on
//! one server, measuring time to first full sync.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::envoy::{run_delta, run_delta_on, run_sotw, run_sotw_on, Held};
use super::node;
use crate::metrics::Variant;

/// What to run.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub addr: SocketAddr,
    pub streams: usize,
    /// `SotwAds` or `DeltaAds` (the simulated Envoy speaks ADS only).
    pub variant: Variant,
    /// Give up on streams not synced after this long.
    pub timeout: Duration,
    /// Keep streams open this long after all synced (to observe pushes).
    pub hold: Duration,
    /// Envoys get `node.cluster` = this group and region = this region.
    pub proxy_group: String,
    pub region: String,
}

impl BenchConfig {
    pub fn new(addr: SocketAddr, streams: usize, variant: Variant) -> BenchConfig {
        BenchConfig {
            addr,
            streams,
            variant,
            timeout: Duration::from_secs(30),
            hold: Duration::ZERO,
            proxy_group: String::new(),
            region: String::new(),
        }
    }
}

/// What happened.
#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub streams: usize,
    pub synced: usize,
    /// Streams that failed to connect or ended with an error.
    pub failed: usize,
    pub sync_p50: Duration,
    pub sync_p99: Duration,
    pub sync_max: Duration,
    pub responses: u64,
    pub acks: u64,
    pub elapsed: Duration,
}

/// Runs `config.streams` simulated Envoys against `config.addr`.
pub async fn bench(config: BenchConfig) -> BenchReport {
    let start = Instant::now();
    let (stop_tx, stop) = watch::channel(false);
    let mut envoys = Vec::with_capacity(config.streams);
    for i in 0..config.streams {
        let held = Arc::new(Mutex::new(Held::default()));
        let n = node(&format!("bench-{i}"), &config.proxy_group, &config.region);
        let task = match config.variant {
            Variant::DeltaAds | Variant::DeltaPerType => {
                tokio::spawn(run_delta(config.addr, n, held.clone(), stop.clone()))
            }
            Variant::SotwAds | Variant::SotwPerType => {
                tokio::spawn(run_sotw(config.addr, n, held.clone(), stop.clone()))
            }
        };
        envoys.push((held, task));
    }
    let deadline = start + config.timeout;
    loop {
        let synced = envoys
            .iter()
            .filter(|(h, _)| h.lock().expect("held lock").first_synced.is_some())
            .count();
        let dead = envoys.iter().filter(|(_, t)| t.is_finished()).count();
        if synced + dead >= config.streams || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(config.hold).await;
    stop_tx.send_replace(true);
    let mut report = BenchReport {
        streams: config.streams,
        ..Default::default()
    };
    let mut times = Vec::new();
    for (held, task) in envoys {
        match task.await {
            Ok(Ok(())) => {}
            _ => report.failed += 1,
        }
        let h = held.lock().expect("held lock");
        report.responses += h.responses;
        report.acks += h.acks;
        if let Some(t) = h.first_synced {
            times.push(t.saturating_duration_since(start));
        }
    }
    times.sort();
    report.synced = times.len();
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    report.sync_p50 = pick(0.5);
    report.sync_p99 = pick(0.99);
    report.sync_max = times.last().copied().unwrap_or_default();
    report.elapsed = start.elapsed();
    report
}

/// A fleet of simulated Envoys that stays connected, so a benchmark can
/// change the config under it and watch every stream follow
/// (`meridian bench xds`). [`bench`] is the one-shot form.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// xDS servers; connection *c* goes to `addrs[c % addrs.len()]`.
    pub addrs: Vec<SocketAddr>,
    pub streams: usize,
    /// ADS streams multiplexed on one HTTP/2 connection (at most the
    /// server's `max_streams_per_connection`, or the rest queue in h2).
    pub streams_per_connection: usize,
    pub variant: Variant,
    pub proxy_group: String,
    pub region: String,
    /// Node ids are `<id_prefix><i>`.
    pub id_prefix: String,
}

/// One stream's counters at a point in time.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mark {
    pub responses: u64,
    pub bytes: u64,
    pub last_ack: Option<Instant>,
    pub first_synced: Option<Instant>,
    /// Resources held, all types together.
    pub resources: usize,
}

/// Running simulated Envoys; stopped by [`Fleet::stop`] or on drop.
pub struct Fleet {
    envoys: Vec<(Arc<Mutex<Held>>, JoinHandle<Result<(), tonic::Status>>)>,
    stop: watch::Sender<bool>,
    pub started: Instant,
    pub connections: usize,
}

/// What [`Fleet::stop`] found.
#[derive(Clone, Debug, Default)]
pub struct FleetTotals {
    pub failed: usize,
    pub first_error: Option<String>,
    pub responses: u64,
    pub acks: u64,
    pub bytes: u64,
}

impl Fleet {
    /// Opens the connections (all of them, before any stream) and starts
    /// every stream; does not wait for them to sync.
    pub async fn start(config: &FleetConfig) -> Result<Fleet, tonic::transport::Error> {
        assert!(!config.addrs.is_empty(), "FleetConfig::addrs is empty");
        let per = config.streams_per_connection.max(1);
        let connections = config.streams.div_ceil(per);
        let mut channels = Vec::with_capacity(connections);
        for c in 0..connections {
            let addr = config.addrs[c % config.addrs.len()];
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("valid uri")
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10))
                // Many streams on one connection: do not let h2's default
                // windows throttle the initial full-state responses.
                .initial_connection_window_size(Some(16 * 1024 * 1024))
                .initial_stream_window_size(Some(1024 * 1024))
                .connect()
                .await?;
            channels.push(ch);
        }
        let started = Instant::now();
        let (stop, rx) = watch::channel(false);
        let mut envoys = Vec::with_capacity(config.streams);
        for i in 0..config.streams {
            let ch = channels[i / per].clone();
            let held = Arc::new(Mutex::new(Held::default()));
            let n = node(
                &format!("{}{i}", config.id_prefix),
                &config.proxy_group,
                &config.region,
            );
            let task = match config.variant {
                Variant::DeltaAds | Variant::DeltaPerType => {
                    tokio::spawn(run_delta_on(ch, n, held.clone(), rx.clone()))
                }
                Variant::SotwAds | Variant::SotwPerType => {
                    tokio::spawn(run_sotw_on(ch, n, held.clone(), rx.clone()))
                }
            };
            envoys.push((held, task));
        }
        Ok(Fleet {
            envoys,
            stop,
            started,
            connections,
        })
    }

    pub fn len(&self) -> usize {
        self.envoys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.envoys.is_empty()
    }

    /// (synced, ended) streams right now.
    pub fn counts(&self) -> (usize, usize) {
        let synced = self
            .envoys
            .iter()
            .filter(|(h, _)| h.lock().expect("held lock").first_synced.is_some())
            .count();
        let ended = self.envoys.iter().filter(|(_, t)| t.is_finished()).count();
        (synced, ended)
    }

    /// Waits until every stream synced or ended, or `timeout`; returns the
    /// synced count.
    pub async fn wait_synced(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let (synced, ended) = self.counts();
            if synced + ended >= self.envoys.len() || Instant::now() >= deadline {
                return synced;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every stream's counters.
    pub fn marks(&self) -> Vec<Mark> {
        self.envoys
            .iter()
            .map(|(h, _)| {
                let h = h.lock().expect("held lock");
                Mark {
                    responses: h.responses,
                    bytes: h.bytes,
                    last_ack: h.last_ack,
                    first_synced: h.first_synced,
                    resources: h.by_type.values().map(|m| m.len()).sum(),
                }
            })
            .collect()
    }

    /// Waits until every live stream has ACKed at least one response more
    /// than in `before`, then until no stream has received anything for
    /// `quiet` (so multi-response pushes are counted whole), or `timeout`.
    /// Returns the marks at the end.
    pub async fn wait_pushed(
        &self,
        before: &[Mark],
        quiet: Duration,
        timeout: Duration,
    ) -> Vec<Mark> {
        let deadline = Instant::now() + timeout;
        // Only streams still waiting are polled, every 20 ms: each stream
        // stamps its own ACK time, so polling only decides when to stop, and
        // must not steal CPU from the server on the same cores.
        let mut pending: Vec<usize> = (0..self.envoys.len()).collect();
        while !pending.is_empty() && Instant::now() < deadline {
            pending.retain(|&i| {
                let (h, t) = &self.envoys[i];
                h.lock().expect("held lock").responses <= before[i].responses && !t.is_finished()
            });
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        loop {
            let now = self.marks();
            let last = now.iter().filter_map(|m| m.last_ack).max();
            let quiet_since = last.map(|l| l.elapsed()).unwrap_or(quiet);
            if quiet_since >= quiet || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(quiet - quiet_since).await;
        }
    }

    /// Stops every stream and sums what they saw.
    pub async fn stop(mut self) -> FleetTotals {
        self.stop.send_replace(true);
        let mut t = FleetTotals::default();
        for (held, task) in std::mem::take(&mut self.envoys) {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    t.failed += 1;
                    t.first_error
                        .get_or_insert_with(|| format!("{:?}: {}", e.code(), e.message()));
                }
                Err(e) => {
                    t.failed += 1;
                    t.first_error.get_or_insert_with(|| e.to_string());
                }
            }
            let h = held.lock().expect("held lock");
            t.responses += h.responses;
            t.acks += h.acks;
            t.bytes += h.bytes;
        }
        t
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}
