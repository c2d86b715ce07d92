//! The load generator behind `meridian bench xds`: many simulated Envoys on
//! one server, measuring time to first full sync.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::envoy::{run_delta, run_sotw, Held};
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
