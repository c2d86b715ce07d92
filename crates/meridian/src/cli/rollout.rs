//! `meridian rollout status|promote|pause|resume|abort [NAME]`, and the
//! calls `apply --rollout` makes: start a rollout, wait for its end.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Subcommand;
use meridian_proto::v1 as pb;
use meridian_proto::v1::rollout_service_client::RolloutServiceClient;
use serde_json::{json, Value};

use super::Global;
use crate::client::Servers;
use crate::exit::{coded, ROLLOUT_HALTED, WAIT_TIMEOUT};
use crate::output::{age, print_value, table, Format};

#[derive(Subcommand, Debug)]
pub enum RolloutCmd {
    /// Every rollout the cluster keeps (newest first), or one, step by step.
    Status { name: Option<String> },
    /// Promote the next step now, without waiting for the bake time.
    Promote { name: Option<String> },
    /// Stop advancing; steps reached keep the new config.
    Pause { name: Option<String> },
    /// Resume a paused rollout (its step bakes again from now), or retry
    /// the rollback of a halted one.
    Resume { name: Option<String> },
    /// Write every previous value back: every Envoy gets the old config.
    Abort { name: Option<String> },
}

async fn call<T, F, Fut>(servers: &Servers, mut f: F) -> Result<T>
where
    F: FnMut(RolloutServiceClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    servers
        .call(|ch| {
            let fut = f(RolloutServiceClient::new(ch).max_decoding_message_size(64 * 1024 * 1024));
            async move { fut.await.map(|r| r.into_inner()) }
        })
        .await
}

fn step_target(s: &pb::RolloutStepInfo) -> String {
    let mut parts = Vec::new();
    if !s.regions.is_empty() {
        parts.push(format!("regions {}", s.regions.join(",")));
    }
    if !s.proxy_groups.is_empty() {
        parts.push(format!("groups {}", s.proxy_groups.join(",")));
    }
    parts.join("; ")
}

pub(super) fn to_json(r: &pb::Rollout) -> Value {
    json!({
        "id": r.id, "policy": r.policy, "state": r.state,
        "step": r.step + 1, "steps": r.steps.iter().map(|s| json!({
            "regions": s.regions, "proxy_groups": s.proxy_groups, "bake_time_ms": s.bake_time_ms,
        })).collect::<Vec<_>>(),
        "objects": r.objects.iter().map(|o| json!({"kind": o.kind, "name": o.name, "created": o.created})).collect::<Vec<_>>(),
        "started_at_ms": r.started_at_ms, "step_started_at_ms": r.step_started_at_ms,
        "updated_at_ms": r.updated_at_ms, "reason": r.reason, "revision": r.revision,
        "max_error_rate": r.max_error_rate, "min_requests": r.min_requests,
    })
}

/// One line per rollout, for `rollout status` and `meridian status`.
pub(super) fn rows(list: &[pb::Rollout]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            let target = r
                .steps
                .get(r.step as usize)
                .map(step_target)
                .unwrap_or_default();
            vec![
                r.id.clone(),
                r.policy.clone(),
                r.state.clone(),
                format!("{}/{}", r.step + 1, r.steps.len()),
                target,
                r.objects.len().to_string(),
                age(r.started_at_ms),
                r.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "POLICY", "STATE", "STEP", "TARGET", "OBJECTS", "AGE", "REASON",
        ],
        &rows,
    )
}

/// Every rollout the cluster keeps; an old server without the service
/// answers none.
pub(super) async fn list(servers: &Servers, id: &str) -> Result<Vec<pb::Rollout>> {
    let req = pb::ListRolloutsRequest {
        id: id.to_string(),
        consistency: pb::Consistency::Linearizable as i32,
    };
    Ok(call(servers, |mut c| {
        let req = req.clone();
        async move { c.list_rollouts(req).await }
    })
    .await?
    .rollouts)
}

fn print_detail(r: &pb::Rollout) {
    println!(
        "rollout {} (policy {}): {}, step {} of {}",
        r.id,
        r.policy,
        r.state,
        r.step + 1,
        r.steps.len()
    );
    if !r.reason.is_empty() {
        println!("reason: {}", r.reason);
    }
    let rows: Vec<Vec<String>> = r
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let state = match (r.state.as_str(), (i as u32).cmp(&r.step)) {
                ("complete", _) => "promoted",
                ("progressing" | "paused", std::cmp::Ordering::Less) => "promoted",
                ("progressing", std::cmp::Ordering::Equal) => "baking",
                ("paused", std::cmp::Ordering::Equal) => "paused",
                ("progressing" | "paused", std::cmp::Ordering::Greater) => "waiting",
                _ => "old config",
            };
            vec![
                (i + 1).to_string(),
                step_target(s),
                format!("{}s", s.bake_time_ms / 1000),
                state.to_string(),
            ]
        })
        .collect();
    print!("{}", table(&["STEP", "TARGET", "BAKE", "STATE"], &rows));
    let objects: Vec<String> = r
        .objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}{}",
                o.kind,
                o.name,
                if o.created { " (new)" } else { "" }
            )
        })
        .collect();
    println!("objects: {}", objects.join(", "));
}

pub async fn run(cmd: RolloutCmd, g: &Global) -> Result<()> {
    let servers = g.servers();
    let (name, action) = match cmd {
        RolloutCmd::Status { name } => {
            let list = list(&servers, name.as_deref().unwrap_or("")).await?;
            match g.output {
                Format::Json | Format::Yaml => print_value(
                    &json!({"rollouts": list.iter().map(to_json).collect::<Vec<_>>()}),
                    g.output,
                )?,
                Format::Table | Format::Wide if name.is_some() => {
                    list.iter().for_each(print_detail)
                }
                Format::Table | Format::Wide if list.is_empty() => println!("no rollouts"),
                Format::Table | Format::Wide => print!("{}", rows(&list)),
            }
            return Ok(());
        }
        RolloutCmd::Promote { name } => (name, "promote"),
        RolloutCmd::Pause { name } => (name, "pause"),
        RolloutCmd::Resume { name } => (name, "resume"),
        RolloutCmd::Abort { name } => (name, "abort"),
    };
    let req = pb::RolloutActionRequest {
        id: name.unwrap_or_default(),
        request_id: super::objects::request_id(None),
    };
    let r = call(&servers, |mut c| {
        let req = req.clone();
        async move {
            match action {
                "promote" => c.promote_rollout(req).await,
                "pause" => c.pause_rollout(req).await,
                "resume" => c.resume_rollout(req).await,
                _ => c.abort_rollout(req).await,
            }
        }
    })
    .await?;
    let r = r.rollout.unwrap_or_default();
    match g.output {
        Format::Json | Format::Yaml => print_value(&to_json(&r), g.output)?,
        Format::Table | Format::Wide => println!(
            "rollout {}: {}, step {} of {}{}",
            r.id,
            r.state,
            r.step + 1,
            r.steps.len(),
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.reason)
            }
        ),
    }
    Ok(())
}

/// Starts a rollout of `ops` under `policy`; validation errors are printed
/// one per line, like `apply`'s.
pub(super) async fn start(
    servers: &Servers,
    req: pb::StartRolloutRequest,
) -> Result<pb::StartRolloutResponse> {
    let r = call(servers, |mut c| {
        let req = req.clone();
        async move { c.start_rollout(req).await }
    })
    .await;
    r.map_err(|e| super::apply::invalid_one_per_line(e, "rollout").unwrap_or_else(|e| e))
}

/// Waits until rollout `id` completes (exit 0), halts or is rolled back or
/// aborted (exit 12), or `timeout` passes (exit 8); prints each step reached.
pub(super) async fn wait(servers: &Servers, id: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = (String::new(), u32::MAX);
    loop {
        if let Some(r) = list(servers, id).await?.into_iter().next() {
            if (r.state.clone(), r.step) != last {
                let target = r
                    .steps
                    .get(r.step as usize)
                    .map(step_target)
                    .unwrap_or_default();
                eprintln!(
                    "rollout {id}: {}, step {} of {} ({target})",
                    r.state,
                    r.step + 1,
                    r.steps.len()
                );
                last = (r.state.clone(), r.step);
            }
            match r.state.as_str() {
                "complete" => return Ok(()),
                "rolled-back" | "halted" | "aborted" => {
                    return Err(coded(
                        ROLLOUT_HALTED,
                        format!(
                            "rollout {id} {} at step {}: {}",
                            r.state,
                            r.step + 1,
                            r.reason
                        ),
                    ))
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(coded(WAIT_TIMEOUT, format!("rollout {id} did not finish within {timeout:?}; see `meridian rollout status {id}`")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
