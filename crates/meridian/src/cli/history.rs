//! `meridian history [KIND[/NAME]]` and `meridian rollback [KIND/NAME] --to
//! REV`: the store's retained changes, and restoring objects as they were at
//! a revision (computed and validated by the leader, as one new write).

use anyhow::Result;
use meridian_proto::v1 as pb;
use serde_json::json;

use super::objects::request_id;
use super::Global;
use crate::exit::{coded, INVALID};
use crate::output::{age, print_value, table, Format};

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// `KIND` or `KIND/NAME` (also `KIND NAME`); none: the whole config.
    pub target: Option<String>,
    pub name: Option<String>,
    /// Newest changes to show (0: every retained change).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Also the agents' internal kinds (claim, lease, endpoints).
    #[arg(long)]
    pub internal: bool,
}

#[derive(clap::Args, Debug)]
pub struct RollbackArgs {
    /// `KIND/NAME` (also `KIND NAME`); none: the whole config.
    pub target: Option<String>,
    pub name: Option<String>,
    /// The global revision to restore (see `meridian history`).
    #[arg(long = "to", value_name = "REV")]
    pub to: u64,
    /// Validate on the server and show what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Id that makes a retried rollback take effect once (default: random).
    #[arg(long)]
    pub request_id: Option<String>,
    /// After the write, wait until every connected Envoy ACKed it, as
    /// `apply --wait` (exit 7: NACKed, 8: timeout). TIMEOUT defaults to 60s.
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true,
          default_missing_value = "60s", value_parser = super::parse_duration)]
    pub wait: Option<std::time::Duration>,
}

fn usage(message: String) -> anyhow::Error {
    coded(2, message)
}

/// `KIND/NAME`, `KIND NAME` or `KIND` into (kind, name).
fn split_target(target: Option<String>, name: Option<String>) -> Result<(String, String)> {
    let Some(t) = target else {
        return Ok((String::new(), String::new()));
    };
    let (kind, n) = match t.split_once('/') {
        Some((k, n)) => {
            if name.is_some() {
                return Err(usage(format!("give {t} or KIND NAME, not both")));
            }
            (k.to_string(), n.to_string())
        }
        None => (t, name.unwrap_or_default()),
    };
    if kind.is_empty() {
        return Err(usage("empty kind: give KIND or KIND/NAME".into()));
    }
    Ok((kind, n))
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub(super) fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn spec(v: &[u8]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(v).unwrap_or_else(|_| json!(String::from_utf8_lossy(v)))
}

fn key_str(k: &Option<pb::ObjectKey>) -> String {
    k.as_ref()
        .map(|k| format!("{}/{}", k.kind, k.name))
        .unwrap_or_default()
}

pub async fn history(a: HistoryArgs, g: &Global) -> Result<()> {
    let (kind, name) = split_target(a.target, a.name)?;
    let req = pb::HistoryRequest {
        kind,
        name,
        limit: a.limit,
        internal: a.internal,
    };
    let r = g
        .servers()
        .config_request(&req, |mut c, req| async move { c.get_history(req).await })
        .await?;
    match g.output {
        Format::Json | Format::Yaml => {
            let items: Vec<_> = r
                .entries
                .iter()
                .map(|e| {
                    let k = e.key.clone().unwrap_or_default();
                    json!({
                        "revision": e.revision, "time": utc(e.updated_at_ms),
                        "updated_at_ms": e.updated_at_ms, "action": e.action,
                        "kind": k.kind, "name": k.name,
                        "value": spec(&e.value), "prev_value": spec(&e.prev_value),
                    })
                })
                .collect();
            print_value(
                &json!({"revision": r.revision, "oldest_revision": r.oldest_revision, "items": items}),
                g.output,
            )?;
        }
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = r
                .entries
                .iter()
                .map(|e| {
                    vec![
                        e.revision.to_string(),
                        utc(e.updated_at_ms),
                        age(e.updated_at_ms),
                        e.action.to_uppercase(),
                        key_str(&e.key),
                    ]
                })
                .collect();
            if rows.is_empty() {
                eprintln!("no retained changes (current revision {})", r.revision);
            } else {
                print!(
                    "{}",
                    table(&["REVISION", "TIME", "AGE", "ACTION", "OBJECT"], &rows)
                );
            }
            if r.oldest_revision > 0 {
                eprintln!(
                    "history up to revision {} was compacted; older changes are not shown",
                    r.oldest_revision
                );
            }
        }
    }
    Ok(())
}

pub async fn rollback(a: RollbackArgs, g: &Global) -> Result<()> {
    let (kind, name) = split_target(a.target, a.name)?;
    if !kind.is_empty() && name.is_empty() {
        return Err(usage(format!(
            "give KIND/NAME for one object, or nothing for the whole config (not only {kind:?})"
        )));
    }
    let what = if kind.is_empty() {
        "the config".to_string()
    } else {
        format!("{kind}/{name}")
    };
    let req = pb::RollbackRequest {
        kind,
        name,
        to_revision: a.to,
        dry_run: a.dry_run,
        request_id: request_id(a.request_id.clone()),
    };
    let servers = g.servers();
    let r = servers
        .config_request(&req, |mut c, req| async move { c.rollback(req).await })
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            let invalid = e
                .downcast_ref::<crate::client::StatusError>()
                .filter(|s| s.0.code() == tonic::Code::InvalidArgument)
                .map(|s| s.0.message().to_string());
            if let Some(msg) = invalid {
                // Validation errors of the restored config, one per line.
                let lines: Vec<&str> = msg.lines().filter(|l| !l.trim().is_empty()).collect();
                if lines.len() > 1 {
                    for l in &lines {
                        eprintln!("error: {l}");
                    }
                    return Err(coded(
                        INVALID,
                        "the server rejected the rollback; nothing was changed",
                    ));
                }
                return Err(coded(INVALID, msg));
            }
            let code = e
                .downcast_ref::<crate::client::StatusError>()
                .map(|s| s.0.code());
            if !a.dry_run && !matches!(code, Some(tonic::Code::NotFound | tonic::Code::OutOfRange))
            {
                eprintln!(
                    "request id {id}: if the outcome is unknown, retry with --request-id {id} (it takes effect at most once)",
                    id = req.request_id
                );
            }
            return Err(e);
        }
    };
    match g.output {
        Format::Json | Format::Yaml => {
            let changes: Vec<_> = r
                .changes
                .iter()
                .map(|c| {
                    let k = c.key.clone().unwrap_or_default();
                    json!({"kind": k.kind, "name": k.name, "action": c.action, "from_revision": c.from_revision})
                })
                .collect();
            print_value(
                &json!({"revision": r.revision, "to_revision": a.to, "dry_run": a.dry_run,
                        "base_revision": r.base_revision, "duplicate": r.duplicate, "changes": changes}),
                g.output,
            )?;
        }
        Format::Table | Format::Wide => {
            let suffix = if a.dry_run { " (dry run)" } else { "" };
            for c in &r.changes {
                let verb = match c.action.as_str() {
                    "created" => "restored (re-created)",
                    "deleted" => "deleted (did not exist)",
                    _ => "restored",
                };
                println!("{} {verb}{suffix}", key_str(&c.key));
            }
            if a.dry_run {
                println!(
                    "the server accepts this rollback of {what} to revision {}; nothing was changed (dry run)",
                    a.to
                );
            } else if r.duplicate {
                eprintln!(
                    "note: request id {} was applied before (revision {}); this is that write's answer",
                    req.request_id, r.revision
                );
            } else {
                println!(
                    "rolled back {what} to revision {} as revision {} (undo: meridian rollback{} --to {})",
                    a.to,
                    r.revision,
                    if what == "the config" { String::new() } else { format!(" {what}") },
                    r.base_revision
                );
            }
        }
    }
    if let (Some(t), false) = (a.wait, a.dry_run) {
        super::wait::wait_for_envoys(&servers, r.revision, t).await?;
    }
    Ok(())
}
