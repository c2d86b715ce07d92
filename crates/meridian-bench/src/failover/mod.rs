//! `meridian-bench failover`: traffic failover between regions through one
//! real Envoy (bootstrap as `meridian bootstrap` makes it, /readyz checks
//! included), at the model's defaults for a service with `failover` and an
//! HTTP health check. For each failure mode (upstreams answering 503,
//! refusing connections, or hanging) and each run: the time from the fault
//! to sustained ≥ 99 % success, the failed requests, whether traffic ever
//! went back to the failing region before it healed, and the same for
//! healing. The bed is one controller and two regions with static
//! endpoints (`traffic::static_bed`), or with `--agents` one controller and
//! one `meridian agent` per region in three regions (`traffic::agents_bed`).
//! `--control-plane` measures controller failures instead
//! (`control_plane`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use meridian_testkit::http::http_get;
use serde_json::{json, Value};

use crate::output::{print_value, table, Format};
use crate::Global;

mod control_plane;
mod traffic;

#[derive(clap::Args, Debug, Clone)]
pub struct FailoverArgs {
    /// Requests per second through the Envoy (one client; each request on
    /// its own connection, sent on time even while others are pending).
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// How long each fault, and each healing, is watched.
    #[arg(long, default_value = "10s", value_parser = crate::output::parse_duration)]
    pub observe: Duration,
    /// Runs per failure mode.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The failure modes to measure, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "503,refused,hang"
    )]
    pub modes: Vec<Mode>,
    /// The service's health check interval (healthy threshold 2).
    #[arg(long, default_value = "1s", value_parser = crate::output::parse_duration)]
    pub hc_interval: Duration,
    /// The client gives up on a request after this long and counts it as
    /// failed (a hanging upstream is measured, not waited on).
    #[arg(long, default_value = "2s", value_parser = crate::output::parse_duration)]
    pub client_timeout: Duration,
    /// Three regions (us-east, eu-west, ap-south), one controller and one
    /// `meridian agent` per region reporting that region's upstreams
    /// (instead of one controller and static endpoints in two regions).
    #[arg(long)]
    pub agents: bool,
    /// Turn the route's retries off (`retries: {attempts: 0}`): the
    /// behaviour before failover services got retries by default, for a
    /// before/after comparison with one binary.
    #[arg(long, conflicts_with = "per_try_timeout")]
    pub no_retries: bool,
    /// What-if, not a default: the route's retries spelled out as the
    /// failover default (2 attempts on 5xx, reset, connect-failure,
    /// refused-stream) plus this per-try timeout.
    #[arg(long, value_parser = crate::output::parse_duration)]
    pub per_try_timeout: Option<Duration>,
    /// What-if, not a default: the service's `circuitBreakers.maxRetries`
    /// (Envoy's default allows 3 retries in flight per cluster).
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Measure control-plane failures instead (controllers in three regions,
    /// the Envoy's region's controller killed; all killed and restarted):
    /// the data plane's success rate and the time until the Envoy is
    /// SYNCED again in proxy-status.
    #[arg(long)]
    pub control_plane: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Upstreams answer 503.
    #[value(name = "503")]
    Http503,
    /// Upstreams closed: connections refused.
    Refused,
    /// Upstreams accept and read requests, and never answer.
    Hang,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Http503 => "503",
            Mode::Refused => "refused",
            Mode::Hang => "hang",
        }
    }
}

/// One request of the client.
#[derive(Clone, Debug)]
struct Sample {
    /// When it was sent.
    at: Instant,
    /// The body of its 200 (`None`: failed, timed out, or another status).
    body: Option<String>,
    /// Until the answer, or the failure.
    took: Duration,
}

/// A client sending `rate` GETs a second to the Envoy's listener, each on
/// its own connection and task, so a slow answer does not hold back the
/// next request; one without an answer within `timeout` failed.
struct Client {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
    timeout: Duration,
}

impl Client {
    fn start(port: u16, rate: u32, timeout: Duration) -> Client {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let out = samples.clone();
        let every = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let out = out.clone();
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let url = format!("http://127.0.0.1:{port}/");
                    let got = match tokio::time::timeout(timeout, http_get(&url)).await {
                        Ok(Ok((200, body))) => Some(body),
                        _ => None,
                    };
                    let took = sent.elapsed();
                    out.lock().unwrap().push(Sample {
                        at: sent,
                        body: got,
                        took,
                    });
                });
            }
        });
        Client {
            samples,
            task,
            timeout,
        }
    }

    /// The answered requests so far, by time sent.
    fn samples(&self) -> Vec<Sample> {
        let mut s = self.samples.lock().unwrap().clone();
        s.sort_by_key(|x| x.at);
        s
    }

    /// Stops sending, waits for the requests in flight; every request, by
    /// time sent.
    async fn stop(self) -> Vec<Sample> {
        self.task.abort();
        tokio::time::sleep(self.timeout + Duration::from_millis(300)).await;
        self.samples()
    }
}

pub async fn run(a: FailoverArgs, g: &Global) -> Result<()> {
    if a.control_plane {
        return control_plane::run(a, g).await;
    }
    let mut rows = Vec::new();
    for mode in a.modes.clone() {
        for run in 0..a.runs {
            eprintln!("{} run {} ...", mode.name(), run + 1);
            rows.push(traffic::one_run(mode, run, &a).await?);
        }
    }
    let regions: &[&str] = match a.agents {
        true => &traffic::REGIONS,
        false => &traffic::REGIONS[..2],
    };
    let report = json!({
        "rate": a.rate, "observe_s": a.observe.as_secs_f64(),
        "hc_interval_ms": a.hc_interval.as_millis() as u64,
        "client_timeout_ms": a.client_timeout.as_millis() as u64,
        "agents": a.agents, "regions": regions,
        "retries": !a.no_retries,
        "per_try_timeout_ms": a.per_try_timeout.map(|d| d.as_millis() as u64),
        "max_retries": a.max_retries,
        "runs": rows,
    });
    match g.output {
        Format::Json | Format::Yaml => print_value(&report, g.output)?,
        _ => {
            let f = |v: &Value| {
                v.as_f64()
                    .map(|x| format!("{x:.0}"))
                    .unwrap_or_else(|| v.to_string())
            };
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r["mode"].as_str().unwrap_or("").to_string(),
                        f(&r["failover_ms_99"]),
                        f(&r["failover_last_bad_ms"]),
                        format!(
                            "{} ({:.1}%)",
                            r["failed"],
                            r["failed_percent"].as_f64().unwrap_or(0.0)
                        ),
                        r["returned_before_healed"].to_string(),
                        f(&r["heal_ms_99"]),
                        r["heal_failed"].to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "MODE",
                        "TO 99% MS",
                        "LAST BAD MS",
                        "FAILED",
                        "RETURNED",
                        "HEAL 99% MS",
                        "HEAL FAILED"
                    ],
                    &body
                )
            );
        }
    }
    Ok(())
}
