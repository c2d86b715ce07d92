//! `apply --wait`: after a write committed at revision R, polls
//! `GetProxyStatus` (which asks every controller) until every connected Envoy
//! runs R or later with every subscribed type ACKed, or rejected it (NACK).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Result;
use meridian_proto::v1 as pb;

use crate::client::Servers;
use crate::exit::{coded, NACKED, WAIT_TIMEOUT};
use crate::output::plural;

const POLL: Duration = Duration::from_millis(200);

#[derive(Clone, Debug, PartialEq)]
enum State {
    Pending(String),
    Done,
    Nacked(Vec<String>),
}

fn state_of(p: &pb::ProxyInfo, revision: u64) -> State {
    if p.view_revision < revision {
        return State::Pending(format!("serves revision {}", p.view_revision));
    }
    let nacks: Vec<String> = p
        .types
        .iter()
        .filter(|t| t.state == "NACKED")
        .map(|t| {
            let res = if t.nack_resources.is_empty() {
                String::new()
            } else {
                format!(" {}", t.nack_resources.join(","))
            };
            format!("{}{res}: {}", t.r#type, t.nack_message.trim())
        })
        .collect();
    if !nacks.is_empty() {
        return State::Nacked(nacks);
    }
    if p.types.is_empty() {
        return State::Pending("subscribed to nothing yet".into());
    }
    // The controller decides when an Envoy runs a revision (the same
    // answer proxy-status shows); the types only explain the wait.
    if p.synced_revision >= revision {
        return State::Done;
    }
    let waiting: Vec<String> = p
        .types
        .iter()
        .filter(|t| t.state != "SYNCED" && t.state != "NOT_SENT")
        .map(|t| format!("{} {}", t.r#type, t.state))
        .collect();
    State::Pending(if waiting.is_empty() {
        format!("runs revision {}", p.synced_revision)
    } else {
        waiting.join(", ")
    })
}

fn label(p: &pb::ProxyInfo) -> String {
    format!(
        "{} (region {}, controller {})",
        p.node_id, p.region, p.controller_id
    )
}

/// Waits until every connected Envoy ACKed `revision` (or NACKed it).
pub(super) async fn wait_for_envoys(
    servers: &Servers,
    revision: u64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:30}] {pos}/{len} Envoys",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(format!("waiting for revision {revision}"));
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    if bar.is_none() {
        eprintln!("waiting up to {timeout:?} for every Envoy to ACK revision {revision}");
    }
    let mut announced: BTreeMap<String, State> = BTreeMap::new();
    let mut last: Option<pb::ProxyStatusResponse> = None;
    let mut last_err: Option<String> = None;
    loop {
        match servers
            .cluster_call(|mut c| async move {
                c.get_proxy_status(pb::ProxyStatusRequest { local_only: false })
                    .await
            })
            .await
        {
            Ok(r) => {
                let states: Vec<(String, State)> = r
                    .proxies
                    .iter()
                    .map(|p| (label(p), state_of(p, revision)))
                    .collect();
                let terminal = states
                    .iter()
                    .filter(|(_, s)| !matches!(s, State::Pending(_)))
                    .count();
                if let Some(b) = &bar {
                    b.set_length(states.len() as u64);
                    b.set_position(terminal as u64);
                } else {
                    for (l, s) in &states {
                        if matches!(s, State::Pending(_)) || announced.get(l) == Some(s) {
                            continue;
                        }
                        match s {
                            State::Done => eprintln!("envoy {l}: ACKed"),
                            State::Nacked(_) => eprintln!("envoy {l}: NACKed"),
                            State::Pending(_) => {}
                        }
                        announced.insert(l.clone(), s.clone());
                    }
                }
                let all_terminal = terminal == states.len();
                last = Some(r);
                if all_terminal {
                    break;
                }
            }
            Err(e) => last_err = Some(format!("{e:#}")),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let Some(r) = last else {
        return Err(coded(
            WAIT_TIMEOUT,
            format!(
                "the write committed at revision {revision}, but the Envoys' status could not be read within {timeout:?}: {}",
                last_err.unwrap_or_default()
            ),
        ));
    };
    for e in &r.errors {
        eprintln!("warning: {e}: the Envoys of that controller are not counted");
    }
    let (mut done, mut nacked, mut pending) = (Vec::new(), Vec::new(), Vec::new());
    for p in &r.proxies {
        match state_of(p, revision) {
            State::Done => done.push(label(p)),
            State::Nacked(m) => nacked.push((label(p), m)),
            State::Pending(why) => pending.push((label(p), why)),
        }
    }
    if r.proxies.is_empty() {
        println!("no Envoys connected: nothing to wait for");
        return Ok(());
    }
    println!(
        "{} of {} Envoy{} ACKed revision {revision}",
        done.len(),
        r.proxies.len(),
        plural(r.proxies.len())
    );
    for (l, msgs) in &nacked {
        for m in msgs {
            eprintln!("error: envoy {l} NACKed {m}");
        }
    }
    for (l, why) in &pending {
        eprintln!("error: envoy {l} did not ACK revision {revision} within {timeout:?} ({why})");
    }
    if !nacked.is_empty() {
        return Err(coded(
            NACKED,
            format!(
                "{} Envoy{} rejected (NACKed) the config of revision {revision}; the write is committed, the Envoy keeps its previous config",
                nacked.len(),
                plural(nacked.len())
            ),
        ));
    }
    if !pending.is_empty() {
        return Err(coded(
            WAIT_TIMEOUT,
            format!(
                "{} Envoy{} did not ACK revision {revision} within {timeout:?}; the write is committed",
                pending.len(),
                plural(pending.len())
            ),
        ));
    }
    Ok(())
}
