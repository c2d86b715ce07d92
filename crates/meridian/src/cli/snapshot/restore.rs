//! `meridian snapshot restore`: a backup's config into a new cluster,
//! complete or not at all.
//!
//! Only config kinds are restored. Agents' claims and leases belong to
//! sessions of the old cluster, and their endpoints are reported again in
//! full by every agent when it connects to the new one; pushed through the
//! config lane they were refused ("unknown kind"), which is how a restore of
//! a real backup used to fail.
//!
//! The config goes in as few transactions as the store's byte bound allows,
//! kinds in dependency order (an object refers only to kinds restored before
//! its own, or to its own kind in the same transaction), so each one
//! validates against what the earlier ones committed. Should one fail, the
//! ones before it are deleted again, newest first, and the cluster is empty
//! as it was. Request ids come from the file's digest: running the same
//! restore again resumes it, the transactions already applied answered as
//! duplicates.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use meridian_model::Kind;
use meridian_proto::v1 as pb;
use meridian_store::limits::MAX_TXN_BYTES;
use meridian_store::{ObjectKey, StateData, Txn, TxnOp};
use sha2::{Digest, Sha256};

use super::super::Global;
use crate::client::Servers;

/// Most operations in one transaction of the config lane (the node's
/// limit).
const MAX_OPS: usize = 10_000;

/// Bytes of one restore transaction as the store counts them
/// ([`Txn::size_bytes`]): a quarter of its limit. A transaction at the
/// limit takes seconds to validate, replicate and apply on a slow node,
/// close to the write timeout; a quarter keeps each well inside it, and a
/// large config still takes only a few.
const MAX_BYTES: usize = MAX_TXN_BYTES / 4;

/// Tries of one transaction whose outcome is unknown (a timeout, a leader
/// change): the same request id makes a retry apply at most once.
const TRIES: u32 = 5;

/// Kinds in the order they are restored: each refers only to kinds before
/// it. Regions refer to each other (failover) and may form a cycle, so they
/// must all be in the first transaction. A new kind must be placed here.
fn rank(kind: Kind) -> u8 {
    match kind {
        Kind::Region => 0,
        Kind::Secret => 1,
        Kind::Service => 2,
        Kind::Cluster => 3,
        Kind::Route => 4,
        Kind::Listener => 5,
        // Policies refer to nothing; a run's state is not restored as config.
        Kind::Rollout => 6,
    }
}

fn config_kind(kind: &str) -> Option<Kind> {
    Kind::ALL.into_iter().find(|k| k.as_str() == kind)
}

/// What a restore will write, decided before anything is sent.
struct Plan {
    /// Each chunk is one transaction.
    chunks: Vec<Vec<(ObjectKey, Vec<u8>)>>,
    objects: usize,
    /// Objects of other kinds (agents' claims, leases, endpoints), by kind.
    skipped: BTreeMap<String, usize>,
    /// From the file's digest: the same backup restores with the same ids.
    id: String,
}

fn plan(state: &StateData, bytes: &[u8]) -> Result<Plan> {
    let digest = hex::encode(&Sha256::digest(bytes)[..8]);
    let mut config = Vec::new();
    let mut skipped = BTreeMap::new();
    for (key, obj) in &state.objects {
        match config_kind(&key.kind) {
            Some(kind) => config.push((rank(kind), key, obj)),
            None => *skipped.entry(key.kind.clone()).or_default() += 1,
        }
    }
    config.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let id = format!("restore-{digest}");
    // The longest request id a chunk can get, counted once per chunk.
    let id_bytes = id.len() + 24;
    let mut chunks: Vec<Vec<(ObjectKey, Vec<u8>)>> = Vec::new();
    let mut size = 0;
    for (_, key, obj) in &config {
        let op = TxnOp::Put {
            key: (*key).clone(),
            value: obj.value.clone(),
            expected_revision: None,
        };
        let op_bytes = Txn {
            request_id: String::new(),
            ops: vec![op],
        }
        .size_bytes();
        if id_bytes + op_bytes > MAX_BYTES {
            bail!(
                "{key}: {op_bytes} bytes, more than one transaction takes ({MAX_BYTES}); \
                 nothing was restored"
            );
        }
        let full = chunks
            .last()
            .is_none_or(|c| c.len() >= MAX_OPS || id_bytes + size + op_bytes > MAX_BYTES);
        if full {
            chunks.push(Vec::new());
            size = 0;
        }
        size += op_bytes;
        if let Some(c) = chunks.last_mut() {
            c.push(((*key).clone(), obj.value.clone()));
        }
    }
    let regions_split = chunks
        .iter()
        .skip(1)
        .flatten()
        .any(|(k, _)| k.kind == Kind::Region.as_str());
    if regions_split {
        bail!(
            "the backup's regions do not fit in one transaction ({MAX_BYTES} bytes), which \
             their failover references need; nothing was restored"
        );
    }
    Ok(Plan {
        objects: config.len(),
        chunks,
        skipped,
        id,
    })
}

fn put(key: &ObjectKey, value: &[u8]) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Put(pb::PutOp {
            key: Some(pb::ObjectKey {
                kind: key.kind.clone(),
                name: key.name.clone(),
            }),
            value: value.to_vec(),
            expected_revision: None,
        })),
    }
}

fn delete(key: &ObjectKey) -> pb::TxnOp {
    pb::TxnOp {
        op: Some(pb::txn_op::Op::Delete(pb::DeleteOp {
            key: Some(pb::ObjectKey {
                kind: key.kind.clone(),
                name: key.name.clone(),
            }),
            expected_revision: None,
        })),
    }
}

async fn commit(servers: &Servers, request_id: String, ops: Vec<pb::TxnOp>) -> Result<()> {
    let req = pb::TxnRequest {
        request_id,
        ops,
        dry_run: false,
    };
    let mut tries = 0;
    loop {
        tries += 1;
        match servers
            .config_request(&req, |mut c, req| async move { c.txn(req).await })
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if tries < TRIES && crate::cli::objects::outcome_unknown(&e) => {
                eprintln!("{}: {e:#}; trying again", req.request_id);
                tokio::time::sleep(std::time::Duration::from_secs(tries.into())).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the cluster's config is empty (`false`), or holds only objects of
/// this backup, as an interrupted restore of it leaves them (`true`);
/// refuses anything else unless `force`.
async fn check_target(servers: &Servers, state: &StateData, force: bool) -> Result<bool> {
    let existing = servers
        .config_call(|mut c| async move {
            c.list(pb::ListRequest {
                kind: String::new(),
                consistency: pb::Consistency::Linearizable as i32,
            })
            .await
        })
        .await?;
    // Agents of restored clusters may already have connected: their
    // objects are not config and say nothing of the restore.
    let config: Vec<&pb::Object> = existing
        .objects
        .iter()
        .filter(|o| config_kind(&o.kind).is_some())
        .collect();
    if config.is_empty() || force {
        return Ok(false);
    }
    // Secrets are read back redacted: their presence is all that compares.
    let ours = |o: &&pb::Object| {
        state
            .objects
            .get(&ObjectKey::new(o.kind.clone(), o.name.clone()))
            .is_some_and(|b| o.kind == Kind::Secret.as_str() || b.value == o.value)
    };
    if config.iter().all(ours) {
        return Ok(true);
    }
    bail!(
        "the cluster already holds {} config objects, not all from this backup; restore \
         into a new cluster, or pass --force",
        config.len()
    );
}

pub(super) async fn run(g: &Global, file: &Path, force: bool) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let (_, state) = meridian_store::codec::decode_snapshot(&bytes)
        .with_context(|| format!("{}: not a readable snapshot", file.display()))?;
    let plan = plan(&state, &bytes)?;
    let servers = g.servers();
    let resuming = check_target(&servers, &state, force).await?;
    if resuming {
        eprintln!(
            "the cluster holds part of this backup already: resuming its restore from {}",
            file.display()
        );
    }
    let n = plan.chunks.len();
    let mut done = 0;
    for (i, chunk) in plan.chunks.iter().enumerate() {
        let ops = chunk.iter().map(|(k, v)| put(k, v)).collect();
        let result = commit(&servers, format!("{}-{i}of{n}", plan.id), ops).await;
        if let Err(e) = result {
            let what = format!(
                "restoring objects {}..{} of {} failed",
                done,
                done + chunk.len(),
                plan.objects
            );
            if force {
                return Err(e.context(format!(
                    "{what}; with --force nothing is rolled back (the restored objects may \
                     have replaced existing ones)"
                )));
            }
            // The failed one may have committed all the same (a lost answer):
            // it is deleted too; deleting what is absent changes nothing.
            return match roll_back(&servers, &plan, i).await {
                Ok(()) => {
                    Err(e.context(format!("{what}; rolled back: the cluster is empty again")))
                }
                Err(undo) => Err(e.context(format!(
                    "{what}, and rolling it back failed too ({undo:#}); run the same \
                     restore again to resume it"
                ))),
            };
        }
        done += chunk.len();
    }
    let skipped: usize = plan.skipped.values().sum();
    println!(
        "restored {} objects in {} transaction{} from {} (saved at revision {})",
        plan.objects,
        n,
        if n == 1 { "" } else { "s" },
        file.display(),
        state.revision
    );
    if skipped > 0 {
        let kinds: Vec<String> = plan
            .skipped
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        println!(
            "not restored: {} (agents' state; each agent reports its endpoints again when it \
             connects to this cluster)",
            kinds.join(", ")
        );
    }
    Ok(())
}

/// Deletes the objects of chunks `0..=failed`, newest first: an object is
/// deleted only after everything restored after it, which may refer to it.
async fn roll_back(servers: &Servers, plan: &Plan, failed: usize) -> Result<()> {
    for i in (0..=failed).rev() {
        let ops = plan.chunks[i]
            .iter()
            .rev()
            .map(|(k, _)| delete(k))
            .collect();
        commit(servers, format!("{}-undo-{i}", plan.id), ops)
            .await
            .with_context(|| format!("deleting the objects of transaction {i}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use meridian_store::StoredObject;

    use super::*;

    fn state(objects: &[(&str, &str, usize)]) -> StateData {
        let mut s = StateData::default();
        for (kind, name, len) in objects {
            s.objects.insert(
                ObjectKey::new(*kind, *name),
                StoredObject {
                    value: vec![b'x'; *len],
                    revision: 1,
                    created_revision: 1,
                    updated_at_ms: 0,
                },
            );
        }
        s
    }

    #[test]
    fn config_goes_in_dependency_order_within_the_byte_bound_and_agents_state_stays_out() {
        let mb = 1 << 20;
        let s = state(&[
            ("listener", "l", 10),
            ("route", "r", 10),
            ("service", "a", mb - 100),
            ("service", "b", mb - 100),
            ("service", "c", mb - 100),
            ("service", "d", mb - 100),
            ("service", "e", mb - 100),
            ("service", "f", mb - 100),
            ("service", "g", mb - 100),
            ("service", "h", mb - 100),
            ("region", "us", 10),
            ("region", "eu", 10),
            ("claim", "east-1", 10),
            ("lease", "east-1", 10),
            ("endpoints", "east-1.a", 10),
        ]);
        let p = plan(&s, b"file").unwrap();
        let order: Vec<String> = p
            .chunks
            .iter()
            .flatten()
            .map(|(k, _)| k.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "region/eu",
                "region/us",
                "service/a",
                "service/b",
                "service/c",
                "service/d",
                "service/e",
                "service/f",
                "service/g",
                "service/h",
                "route/r",
                "listener/l"
            ]
        );
        assert!(p.chunks.len() > 2, "8 MiB of services do not fit one");
        for c in &p.chunks {
            let txn = Txn {
                request_id: format!("{}-0of2", p.id),
                ops: c
                    .iter()
                    .map(|(k, v)| TxnOp::Put {
                        key: k.clone(),
                        value: v.clone(),
                        expected_revision: None,
                    })
                    .collect(),
            };
            assert!(txn.size_bytes() <= MAX_BYTES);
        }
        assert_eq!(p.objects, 12);
        assert_eq!(p.skipped.values().sum::<usize>(), 3);
    }

    #[test]
    fn an_object_no_transaction_takes_is_refused_before_anything_is_sent() {
        let s = state(&[("service", "huge", MAX_BYTES)]);
        let err = plan(&s, b"file").err().unwrap().to_string();
        assert!(err.starts_with("service/huge: "), "{err}");
        assert!(err.contains("nothing was restored"), "{err}");
    }
}
