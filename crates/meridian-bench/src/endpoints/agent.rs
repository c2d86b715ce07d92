//! One simulated agent: the real upward protocol (`AgentService.Report`:
//! Hello, Welcome, a full update with `replace`, then deltas, one in flight,
//! ACK per version), folding the changes that arrive while an update is in
//! flight into the next one, like the real agent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use meridian_proto::v1 as pb;
use meridian_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;

use super::book::{Book, Change};
use super::report::us;
use super::{HEALTHY, INITIAL_WEIGHT, REGIONS};
use crate::setup::channel;

pub(super) fn svc_name(s: u32) -> String {
    format!("svc-{s:05}")
}

pub(super) fn cluster_name(c: u32) -> String {
    format!("bench-c{c}")
}

pub(super) fn addr_of(k: u32) -> String {
    format!("10.{}.{}.{}", (k >> 16) & 255, (k >> 8) & 255, k & 255)
}

/// Endpoint `k` in the agent protocol.
pub(super) fn agent_ep(k: u32, per_svc: u32, health: i32, weight: u32) -> pb::AgentEndpoint {
    pb::AgentEndpoint {
        service: svc_name(k / per_svc),
        address: addr_of(k),
        port: 0,
        zone: String::new(),
        weight,
        health,
    }
}

/// What an agent brings back.
#[derive(Default)]
pub(super) struct AgentOut {
    /// Per update: (acked at, changes in it, send -> ack µs).
    pub(super) updates: Vec<(Instant, u32, u32)>,
    /// Per change: generated -> ack µs.
    pub(super) commit_us: Vec<u32>,
    pub(super) nacks: u64,
    pub(super) error: Option<String>,
}

pub(super) struct AgentCfg {
    pub(super) cluster: u32,
    pub(super) clusters: u32,
    pub(super) services: u32,
    pub(super) per_svc: u32,
    pub(super) api: String,
    pub(super) token: String,
}

pub(super) async fn run_agent(
    cfg: AgentCfg,
    mut changes: mpsc::UnboundedReceiver<Change>,
    ready: oneshot::Sender<Result<()>>,
    book: Arc<Mutex<Book>>,
    acked: Arc<AtomicU64>,
) -> AgentOut {
    let mut out = AgentOut::default();
    let mut ready = Some(ready);
    let r = agent_loop(&cfg, &mut changes, &mut ready, &book, &acked, &mut out).await;
    if let Err(e) = r {
        let msg = format!("agent {}: {e:#}", cluster_name(cfg.cluster));
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(anyhow::anyhow!(msg.clone())));
        }
        out.error = Some(msg);
    }
    out
}

pub(super) async fn agent_loop(
    cfg: &AgentCfg,
    changes: &mut mpsc::UnboundedReceiver<Change>,
    ready: &mut Option<oneshot::Sender<Result<()>>>,
    book: &Mutex<Book>,
    acked: &AtomicU64,
    out: &mut AgentOut,
) -> Result<()> {
    use pb::agent_message::Msg as Out;
    use pb::controller_message::Msg as In;
    let ch = channel(&cfg.api, Duration::from_secs(3600)).await?;
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(16);
    let send = |m: Out| {
        let tx = tx.clone();
        async move {
            tx.send(pb::AgentMessage { msg: Some(m) })
                .await
                .map_err(|_| anyhow::anyhow!("request stream closed"))
        }
    };
    send(Out::Hello(pb::AgentHello {
        cluster: cluster_name(cfg.cluster),
        region: REGIONS[cfg.cluster as usize % 3].into(),
        zone: String::new(),
        token: cfg.token.clone(),
        session: format!("bench-{:016x}", rand::random::<u64>()),
        agent: "meridian bench endpoints".into(),
    }))
    .await?;
    let mut inbound = AgentServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
        .report(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("Report: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let welcome = match inbound.message().await? {
        Some(pb::ControllerMessage {
            msg: Some(In::Welcome(w)),
        }) => w,
        other => bail!("expected Welcome, got {other:?}"),
    };
    // The full set, replace.
    let upserts: Vec<pb::AgentEndpoint> = (0..cfg.services * cfg.per_svc)
        .filter(|k| k % cfg.clusters == cfg.cluster)
        .map(|k| agent_ep(k, cfg.per_svc, HEALTHY, INITIAL_WEIGHT))
        .collect();
    let mut version = 1u64;
    send(upserts_only(version, true, upserts)).await?;
    match inbound.message().await? {
        Some(pb::ControllerMessage {
            msg: Some(In::Ack(a)),
        }) if a.version == version => {}
        other => bail!("full update: expected Ack 1, got {other:?}"),
    }
    if let Some(r) = ready.take() {
        let _ = r.send(Ok(()));
    }

    let mut heartbeat = tokio::time::interval(Duration::from_millis(
        welcome.heartbeat_interval_ms.max(100),
    ));
    heartbeat.tick().await;
    // Latest state of each changed endpoint, and the changes folded into it.
    let mut pending: HashMap<u32, (i32, u32)> = HashMap::new();
    let mut pending_changes: Vec<(Instant, Option<usize>)> = Vec::new();
    let mut in_flight: Option<(u64, Instant, Vec<(Instant, Option<usize>)>)> = None;
    let mut closed = false;
    loop {
        if in_flight.is_none() && !pending.is_empty() {
            version += 1;
            let upserts: Vec<pb::AgentEndpoint> = pending
                .drain()
                .map(|(k, (h, w))| agent_ep(k, cfg.per_svc, h, w))
                .collect();
            let batch = std::mem::take(&mut pending_changes);
            let now = Instant::now();
            if batch.iter().any(|c| c.1.is_some()) {
                let mut b = book.lock().expect("book");
                for id in batch.iter().filter_map(|c| c.1) {
                    b.samples[id].sent = Some(now);
                }
            }
            send(upserts_only(version, false, upserts)).await?;
            in_flight = Some((version, now, batch));
        }
        if closed && in_flight.is_none() && pending.is_empty() {
            return Ok(());
        }
        tokio::select! {
            biased;
            m = inbound.message() => {
                let m = m.map_err(|s| anyhow::anyhow!("stream: {:?}: {}", s.code(), s.message()))?;
                match m.and_then(|m| m.msg) {
                    Some(In::Ack(a)) => {
                        let now = Instant::now();
                        match in_flight.take() {
                            Some((v, sent, batch)) if v == a.version => {
                                out.updates.push((now, batch.len() as u32, us(now - sent)));
                                let mut samples = Vec::new();
                                for (generated, sample) in &batch {
                                    out.commit_us.push(us(now - *generated));
                                    samples.extend(*sample);
                                }
                                if !samples.is_empty() {
                                    let mut b = book.lock().expect("book");
                                    for id in samples {
                                        b.samples[id].acked = Some(now);
                                    }
                                }
                                acked.fetch_add(batch.len() as u64, Ordering::Relaxed);
                            }
                            other => bail!("Ack {} while {:?} was in flight", a.version, other.map(|o| o.0)),
                        }
                    }
                    Some(In::Nack(n)) => {
                        out.nacks += 1;
                        bail!("Nack {}: {}", n.version, n.reason);
                    }
                    Some(In::Superseded(s)) => bail!("superseded by {}", s.by_session),
                    Some(In::Welcome(_)) => bail!("a second Welcome"),
                    None => bail!("the controller ended the stream"),
                }
            }
            c = changes.recv(), if !closed => match c {
                Some(c) => {
                    pending.insert(c.k, (c.health, c.weight));
                    pending_changes.push((c.generated, c.sample));
                    while let Ok(c) = changes.try_recv() {
                        pending.insert(c.k, (c.health, c.weight));
                        pending_changes.push((c.generated, c.sample));
                    }
                }
                None => closed = true,
            },
            _ = heartbeat.tick() => send(Out::Heartbeat(pb::AgentHeartbeat {})).await?,
        }
    }
}

/// An update that only upserts: the simulated churn changes health and
/// weight, it never removes an endpoint.
fn upserts_only(version: u64, replace: bool, upserts: Vec<pb::AgentEndpoint>) -> pb::agent_message::Msg {
    pb::agent_message::Msg::Update(pb::EndpointUpdate {
        version,
        replace,
        upserts,
        removals: vec![],
    })
}
