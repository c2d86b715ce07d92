//! `meridian apply -f`: create or update every object of some files in one
//! transaction, all or nothing; with `--dry-run`, show what would change,
//! down to the Envoy resources of each region and proxy group.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use meridian_model::{ConfigSet, EndpointSet, Kind, Object};
use meridian_proto::v1 as pb;
use meridian_translate::{
    translate, Resources, TranslateOptions, Viewer, CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET,
};

use super::files::{self, FileArgs, FileObject};
use super::objects::request_id;
use super::Global;
use crate::client::{Servers, StatusError};
use crate::exit::{coded, INVALID};
use crate::output::plural;

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Validate on the server and show what would change (objects and Envoy
    /// resources per region and proxy group); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Id that makes a retried apply take effect once (default: random).
    #[arg(long)]
    pub request_id: Option<String>,
    /// After the write, wait until every connected Envoy ACKed it (or one
    /// NACKed it: exit 7; timeout: exit 8). TIMEOUT defaults to 60s.
    #[arg(long, value_name = "TIMEOUT", num_args = 0..=1, require_equals = true,
          default_missing_value = "60s", value_parser = super::parse_duration)]
    pub wait: Option<std::time::Duration>,
    /// Publish the change step by step under this `rollout` policy: Envoys
    /// of later steps keep the previous config until their step. With
    /// --wait, wait until the rollout completes (or halts: exit 12).
    #[arg(long, value_name = "POLICY")]
    pub rollout: Option<String>,
}

/// The objects in the cluster, as listed.
pub(super) struct Current {
    /// Global revision the list was read at.
    pub revision: u64,
    pub stored: BTreeMap<(Kind, String), pb::Object>,
    /// The stored objects that decode (all of them, unless an older build
    /// wrote something this one cannot read).
    pub set: ConfigSet,
}

pub(super) async fn list_current(servers: &Servers) -> Result<Current> {
    let req = pb::ListRequest {
        kind: String::new(),
        consistency: pb::Consistency::Linearizable as i32,
    };
    let r = servers
        .config_request(&req, |mut c, req| async move { c.list(req).await })
        .await?;
    let mut stored = BTreeMap::new();
    let mut set = ConfigSet::new();
    for o in r.objects {
        let Ok(kind) = o.kind.parse::<Kind>() else {
            continue;
        };
        if let Ok(obj) = Object::from_stored(&o.kind, &o.name, &o.value) {
            set.insert(obj);
        }
        stored.insert((kind, o.name.clone()), o);
    }
    Ok(Current {
        revision: r.revision,
        stored,
        set,
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Change {
    Created,
    Configured,
    Unchanged,
}

impl Change {
    fn verb(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        }
    }
}

pub(super) fn change_of(cur: &Current, fo: &FileObject) -> Change {
    let key = (fo.object.kind, fo.object.name.clone());
    match cur.stored.get(&key) {
        None => Change::Created,
        Some(s) => {
            // Reads show secrets redacted, so compare redacted forms. That
            // loses nothing: a private key must match its certificate, so
            // the same certificate chain means the same key.
            let live: Option<serde_json::Value> = serde_json::from_slice(&s.value).ok();
            let same = live.as_ref() == Some(&fo.object.to_redacted_json()["spec"]);
            if same {
                Change::Unchanged
            } else {
                Change::Configured
            }
        }
    }
}

/// Sends `req`; on failure prints the server's validation errors one per
/// line and the request id to retry with.
pub(super) async fn send_txn(
    servers: &Servers,
    req: &pb::TxnRequest,
    what: &str,
) -> Result<pb::TxnResponse> {
    let r = servers
        .config_request(req, |mut c, req| async move { c.txn(req).await })
        .await;
    match r {
        Ok(r) => Ok(r),
        Err(e) => {
            let e = invalid_one_per_line(e, what)?;
            if !req.dry_run {
                eprintln!(
                    "request id {id}: if the outcome is unknown, retry with --request-id {id} (it takes effect at most once)",
                    id = req.request_id
                );
            }
            Err(e)
        }
    }
}

/// A validation refusal (INVALID_ARGUMENT) is printed one error per line and
/// becomes exit `INVALID` naming `what`; any other error comes back as it was.
pub(super) fn invalid_one_per_line(e: anyhow::Error, what: &str) -> Result<anyhow::Error> {
    let invalid = e
        .downcast_ref::<StatusError>()
        .filter(|s| s.0.code() == tonic::Code::InvalidArgument)
        .map(|s| s.0.message().to_string());
    let Some(msg) = invalid else {
        return Ok(e);
    };
    let lines: Vec<&str> = msg.lines().filter(|l| !l.trim().is_empty()).collect();
    for l in &lines {
        eprintln!("error: {l}");
    }
    Err(coded(
        INVALID,
        format!(
            "the server rejected the {what} ({} error{}); nothing was changed",
            lines.len(),
            plural(lines.len())
        ),
    ))
}

pub async fn run(a: ApplyArgs, g: &Global) -> Result<()> {
    let objects = files::load(&a.files, true)?;
    let servers = g.servers();
    let cur = list_current(&servers).await?;
    let changes: Vec<(Change, &FileObject)> =
        objects.iter().map(|fo| (change_of(&cur, fo), fo)).collect();
    let suffix = if a.dry_run { " (dry run)" } else { "" };
    let ops: Vec<pb::TxnOp> = changes
        .iter()
        .filter(|(c, _)| *c != Change::Unchanged)
        .map(|(_, fo)| {
            let key = (fo.object.kind, fo.object.name.clone());
            pb::TxnOp {
                op: Some(pb::txn_op::Op::Put(pb::PutOp {
                    key: Some(pb::ObjectKey {
                        kind: fo.object.kind.as_str().to_string(),
                        name: fo.object.name.clone(),
                    }),
                    value: fo.object.spec_to_json_bytes(),
                    // Apply what was compared: a concurrent change makes this
                    // a conflict instead of being overwritten unseen.
                    expected_revision: Some(cur.stored.get(&key).map_or(0, |o| o.revision)),
                })),
            }
        })
        .collect();
    if let Some(policy) = &a.rollout {
        return with_rollout(&a, policy, &servers, &changes, ops).await;
    }
    if ops.is_empty() {
        for (c, fo) in &changes {
            println!("{} {}{suffix}", fo.key(), c.verb());
        }
        if let (Some(t), false) = (a.wait, a.dry_run) {
            super::wait::wait_for_envoys(&servers, cur.revision, t).await?;
        }
        return Ok(());
    }
    let req = pb::TxnRequest {
        request_id: request_id(a.request_id.clone()),
        ops,
        dry_run: a.dry_run,
    };
    if a.dry_run {
        send_txn(&servers, &req, "dry run").await?;
        for (c, fo) in &changes {
            println!("{} {}{suffix}", fo.key(), c.verb());
        }
        println!("the server accepts these changes; nothing was changed (dry run)");
        // Unchanged objects stay as listed (secrets redacted there), so
        // only real changes show.
        let mut after = cur.set.clone();
        for (_, fo) in changes.iter().filter(|(c, _)| *c != Change::Unchanged) {
            after.insert(fo.object.clone());
        }
        println!();
        print!("{}", envoy_changes(&cur.set, &after));
        return Ok(());
    }
    let r = send_txn(&servers, &req, "apply").await?;
    for (c, fo) in &changes {
        println!("{} {}", fo.key(), c.verb());
    }
    if r.duplicate {
        eprintln!(
            "note: request id {} was applied before; this is that write's answer",
            req.request_id
        );
    }
    if let Some(t) = a.wait {
        super::wait::wait_for_envoys(&servers, r.revision, t).await?;
    }
    Ok(())
}

/// `apply --rollout POLICY`: the objects and the rollout start in one
/// transaction; with --wait, until the rollout ends.
async fn with_rollout(
    a: &ApplyArgs,
    policy: &str,
    servers: &Servers,
    changes: &[(Change, &FileObject)],
    ops: Vec<pb::TxnOp>,
) -> Result<()> {
    let suffix = if a.dry_run { " (dry run)" } else { "" };
    if ops.is_empty() {
        for (c, fo) in changes {
            println!("{} {}{suffix}", fo.key(), c.verb());
        }
        println!("nothing changed, so no rollout was started");
        return Ok(());
    }
    let req = pb::StartRolloutRequest {
        policy: policy.to_string(),
        ops,
        request_id: request_id(a.request_id.clone()),
        dry_run: a.dry_run,
    };
    let r = match super::rollout::start(servers, req.clone()).await {
        Ok(r) => r,
        Err(e) => {
            if !a.dry_run && e.downcast_ref::<crate::exit::CodedError>().is_none() {
                eprintln!(
                    "request id {id}: if the outcome is unknown, retry with --request-id {id} (it takes effect at most once)",
                    id = req.request_id
                );
            }
            return Err(e);
        }
    };
    for (c, fo) in changes {
        println!("{} {}{suffix}", fo.key(), c.verb());
    }
    let ro = r.rollout.unwrap_or_default();
    let first = ro.steps.first().map(|s| {
        let mut t = s.regions.join(",");
        if !s.proxy_groups.is_empty() {
            t = format!(
                "{t}{}groups {}",
                if t.is_empty() { "" } else { "; " },
                s.proxy_groups.join(",")
            );
        }
        t
    });
    if a.dry_run {
        println!("the server accepts rollout of these changes under policy {policy}; nothing was changed (dry run)");
        return Ok(());
    }
    println!(
        "rollout {} started (policy {policy}, {} step{}): step 1 is {}",
        ro.id,
        ro.steps.len(),
        plural(ro.steps.len()),
        first.unwrap_or_default()
    );
    if r.duplicate {
        eprintln!(
            "note: request id {} was applied before; this is that write's answer",
            req.request_id
        );
    }
    if let Some(t) = a.wait {
        super::rollout::wait(servers, &ro.id, t).await?;
    }
    Ok(())
}

/// Every region the config knows of: Region objects and regions named in
/// failover lists. At least one, so a config without regions still shows
/// its changes.
fn regions(sets: &[&ConfigSet]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for set in sets {
        for (name, r) in set.regions() {
            out.insert(name.to_string());
            out.extend(r.failover.iter().cloned());
        }
        for (_, s) in set.services() {
            if let Some(f) = &s.failover {
                out.extend(f.regions.iter().flatten().cloned());
                out.extend(f.exclude_regions.iter().cloned());
            }
        }
    }
    if out.is_empty() {
        out.insert("default".to_string());
    }
    out.into_iter().collect()
}

/// Proxy groups named by listeners, and `None` (proxies without a group).
fn proxy_groups(sets: &[&ConfigSet]) -> Vec<Option<String>> {
    let mut groups = BTreeSet::new();
    for set in sets {
        for (_, l) in set.listeners() {
            groups.extend(l.proxy_groups.iter().cloned());
        }
    }
    std::iter::once(None)
        .chain(groups.into_iter().map(Some))
        .collect()
}

const TYPES: [(&str, &str); 5] = [
    (LISTENER, "listener"),
    (ROUTE, "route"),
    (CLUSTER, "cluster"),
    (ENDPOINT, "endpoint"),
    (SECRET, "secret"),
];

/// `+ cluster web` / `~ route edge` / `- listener old` lines between two
/// translations.
fn resource_changes(before: &Resources, after: &Resources) -> Vec<String> {
    let mut out = Vec::new();
    for (type_url, short) in TYPES {
        let b: BTreeMap<&str, &str> = before
            .of_type(type_url)
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        let a: BTreeMap<&str, &str> = after
            .of_type(type_url)
            .map(|r| (r.name.as_str(), r.version.as_str()))
            .collect();
        let names: BTreeSet<&str> = b.keys().chain(a.keys()).copied().collect();
        for name in names {
            match (b.get(name), a.get(name)) {
                (None, Some(_)) => out.push(format!("+ {short} {name}")),
                (Some(_), None) => out.push(format!("- {short} {name}")),
                (Some(x), Some(y)) if x != y => out.push(format!("~ {short} {name}")),
                _ => {}
            }
        }
    }
    out
}

/// The Envoy resources that change for each (region, proxy group),
/// translated with no endpoints.
pub(super) fn envoy_changes(before: &ConfigSet, after: &ConfigSet) -> String {
    let opts = TranslateOptions::default();
    let endpoints = EndpointSet::new();
    let mut out = String::from("Envoy resources that change (without endpoints):\n");
    for region in regions(&[before, after]) {
        for group in proxy_groups(&[before, after]) {
            let viewer = Viewer::new(region.clone(), group.as_deref());
            let label = format!(
                "region {region}, proxy group {}",
                group.as_deref().unwrap_or("default (no group)")
            );
            let b = match translate(before, &endpoints, &viewer, &opts) {
                Ok(r) => r,
                Err(e) => {
                    out.push_str(&format!(
                        "{label}: cannot translate the current config: {e}\n"
                    ));
                    continue;
                }
            };
            let a = match translate(after, &endpoints, &viewer, &opts) {
                Ok(r) => r,
                Err(e) => {
                    out.push_str(&format!("{label}: cannot translate the new config: {e}\n"));
                    continue;
                }
            };
            let lines = resource_changes(&b, &a);
            if lines.is_empty() {
                out.push_str(&format!("{label}: no changes\n"));
            } else {
                out.push_str(&format!("{label}:\n"));
                for l in lines {
                    out.push_str(&format!("  {l}\n"));
                }
            }
        }
    }
    out
}

/// `meridian delete -f`: deletes every object of the files in one
/// transaction. Objects already absent are reported (exit code NOT_FOUND)
/// and the others deleted.
pub async fn delete_files(
    files: FileArgs,
    revision: Option<u64>,
    given_request_id: Option<String>,
    g: &Global,
) -> Result<()> {
    if revision.is_some() {
        return Err(coded(
            files::USAGE,
            "--revision applies to one object: give KIND NAME, not -f",
        ));
    }
    let objects = files::load(&files, false)?;
    let servers = g.servers();
    let cur = list_current(&servers).await?;
    let mut missing = Vec::new();
    let mut ops = Vec::new();
    let mut deleted = Vec::new();
    for fo in &objects {
        let key = (fo.object.kind, fo.object.name.clone());
        match cur.stored.get(&key) {
            None => missing.push(fo.key()),
            Some(o) => {
                ops.push(pb::TxnOp {
                    op: Some(pb::txn_op::Op::Delete(pb::DeleteOp {
                        key: Some(pb::ObjectKey {
                            kind: o.kind.clone(),
                            name: o.name.clone(),
                        }),
                        expected_revision: Some(o.revision),
                    })),
                });
                deleted.push(fo.key());
            }
        }
    }
    if !ops.is_empty() {
        let req = pb::TxnRequest {
            request_id: request_id(given_request_id),
            ops,
            dry_run: false,
        };
        send_txn(&servers, &req, "delete").await?;
        for k in &deleted {
            println!("{k} deleted");
        }
    }
    if !missing.is_empty() {
        for k in &missing {
            eprintln!("error: {k}: not found");
        }
        return Err(coded(
            crate::exit::NOT_FOUND,
            format!(
                "{} object{} not found{}",
                missing.len(),
                plural(missing.len()),
                if deleted.is_empty() {
                    ""
                } else {
                    "; the others were deleted"
                }
            ),
        ));
    }
    Ok(())
}
