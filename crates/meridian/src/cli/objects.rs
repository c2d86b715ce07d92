//! `meridian get`, `put` and `delete`: single objects through the config API.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use meridian_proto::v1 as pb;
use serde_json::json;

use super::Global;
use crate::client::{status, Servers};
use crate::output::{age, print_value, table, Format};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Consistency {
    /// Confirmed with a quorum (default).
    Linearizable,
    /// This controller's replica as it is: fast, may be stale.
    Local,
}

impl From<Consistency> for i32 {
    fn from(c: Consistency) -> i32 {
        match c {
            Consistency::Linearizable => pb::Consistency::Linearizable as i32,
            Consistency::Local => pb::Consistency::Local as i32,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// Kind of object (service, route, listener, secret, region), or `all`.
    pub kind: String,
    pub name: Option<String>,
    #[arg(long, value_enum, default_value_t = Consistency::Linearizable)]
    pub consistency: Consistency,
    /// After printing, stream every change.
    #[arg(long, short = 'w')]
    pub watch: bool,
}

#[derive(clap::Args, Debug)]
pub struct PutArgs {
    pub kind: String,
    pub name: String,
    /// File with the object's spec as JSON (`-` for stdin).
    #[arg(long, short = 'f', conflicts_with = "value")]
    pub file: Option<PathBuf>,
    /// The object's spec as inline JSON.
    #[arg(long)]
    pub value: Option<String>,
    /// Only if the object is at this revision (0: only if it does not exist).
    #[arg(long)]
    pub revision: Option<u64>,
    /// Id that makes a retried write apply once (default: random).
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// Kind of the object (or give the objects with -f instead).
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub kind: Option<String>,
    #[arg(required_unless_present = "files", conflicts_with = "files")]
    pub name: Option<String>,
    /// Delete every object in these files (YAML/JSON, a directory, or `-`),
    /// all in one transaction.
    #[command(flatten)]
    pub files: super::files::FileArgs,
    /// Only if the object is at this revision.
    #[arg(long)]
    pub revision: Option<u64>,
    #[arg(long)]
    pub request_id: Option<String>,
}

pub fn request_id(given: Option<String>) -> String {
    given.unwrap_or_else(|| format!("cli-{:032x}", rand::random::<u128>()))
}

fn object_json(o: &pb::Object) -> serde_json::Value {
    let spec: serde_json::Value = serde_json::from_slice(&o.value)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&o.value)));
    json!({
        "kind": o.kind,
        "name": o.name,
        "revision": o.revision,
        "created_revision": o.created_revision,
        "updated_at_ms": o.updated_at_ms,
        "spec": spec,
    })
}

pub async fn get(a: GetArgs, g: &Global) -> Result<()> {
    let servers = g.servers();
    let kind = if a.kind == "all" {
        String::new()
    } else {
        a.kind.clone()
    };
    let (objects, revision) = match &a.name {
        Some(name) => {
            let req = pb::GetRequest {
                key: Some(pb::ObjectKey {
                    kind: kind.clone(),
                    name: name.clone(),
                }),
                consistency: a.consistency.into(),
            };
            let r = servers
                .config_request(&req, |mut c, req| async move { c.get(req).await })
                .await?;
            (r.object.into_iter().collect::<Vec<_>>(), r.revision)
        }
        None => {
            let req = pb::ListRequest {
                kind: kind.clone(),
                consistency: a.consistency.into(),
            };
            let r = servers
                .config_request(&req, |mut c, req| async move { c.list(req).await })
                .await?;
            (r.objects, r.revision)
        }
    };
    match g.output {
        Format::Json | Format::Yaml => {
            if a.name.is_some() && objects.len() == 1 {
                print_value(&object_json(&objects[0]), g.output)?;
            } else {
                let items: Vec<_> = objects.iter().map(object_json).collect();
                print_value(&json!({"revision": revision, "items": items}), g.output)?;
            }
        }
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = objects
                .iter()
                .map(|o| {
                    let mut r = vec![
                        o.kind.clone(),
                        o.name.clone(),
                        o.revision.to_string(),
                        age(o.updated_at_ms),
                    ];
                    if g.output == Format::Wide {
                        r.push(o.created_revision.to_string());
                        r.push(format!("{} bytes", o.value.len()));
                    }
                    r
                })
                .collect();
            let mut headers = vec!["KIND", "NAME", "REVISION", "AGE"];
            if g.output == Format::Wide {
                headers.extend(["CREATED", "SIZE"]);
            }
            if rows.is_empty() && !a.watch {
                eprintln!("no objects found (revision {revision})");
            } else {
                print!("{}", table(&headers, &rows));
            }
        }
    }
    if a.watch {
        let mut stream = servers
            .config()
            .await?
            .watch(pb::WatchRequest {
                from_revision: revision,
                kind,
            })
            .await
            .map_err(status)?
            .into_inner();
        while let Some(msg) = stream.message().await.map_err(status)? {
            for e in msg.events {
                if let Some(name) = &a.name {
                    if e.key.as_ref().map(|k| &k.name) != Some(name) {
                        continue;
                    }
                }
                let k = e.key.clone().unwrap_or_default();
                match g.output {
                    Format::Json | Format::Yaml => {
                        let spec: serde_json::Value =
                            serde_json::from_slice(&e.value).unwrap_or(serde_json::Value::Null);
                        println!(
                            "{}",
                            json!({"type": if e.deleted {"DELETED"} else {"PUT"}, "kind": k.kind, "name": k.name, "revision": e.revision, "spec": spec})
                        );
                    }
                    _ => println!(
                        "{:<8} {}/{}   revision {}",
                        if e.deleted { "DELETED" } else { "PUT" },
                        k.kind,
                        k.name,
                        e.revision
                    ),
                }
            }
        }
    }
    Ok(())
}

pub async fn put(a: PutArgs, g: &Global) -> Result<()> {
    let raw = match (&a.file, &a.value) {
        (Some(p), _) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the spec from stdin")?;
            s
        }
        (Some(p), _) => {
            std::fs::read_to_string(p).with_context(|| format!("-f {}", p.display()))?
        }
        (None, Some(v)) => v.clone(),
        (None, None) => bail!("give the spec with -f FILE or --value JSON"),
    };
    let value: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| crate::exit::CodedError {
            code: crate::exit::INVALID,
            message: format!("spec: not valid JSON: {e}"),
        })?;
    let op = pb::txn_op::Op::Put(pb::PutOp {
        key: Some(pb::ObjectKey {
            kind: a.kind.clone(),
            name: a.name.clone(),
        }),
        value: serde_json::to_vec(&value)?,
        expected_revision: a.revision,
    });
    let r = write_one(&g.servers(), op, a.request_id).await?;
    println!("{}/{} written at revision {}", a.kind, a.name, r.revision);
    Ok(())
}

pub async fn delete(a: DeleteArgs, g: &Global) -> Result<()> {
    if !a.files.files.is_empty() {
        return super::apply::delete_files(a.files, a.revision, a.request_id, g).await;
    }
    let (Some(kind), Some(name)) = (a.kind, a.name) else {
        bail!("give KIND NAME, or the objects with -f FILE");
    };
    let servers = g.servers();
    let key = pb::ObjectKey {
        kind: kind.clone(),
        name: name.clone(),
    };
    // kubectl habit: deleting what is not there is an error, not a silent no-op.
    let get = pb::GetRequest {
        key: Some(key.clone()),
        consistency: pb::Consistency::Linearizable as i32,
    };
    servers
        .config_request(&get, |mut c, get| async move { c.get(get).await })
        .await?;
    let op = pb::txn_op::Op::Delete(pb::DeleteOp {
        key: Some(key),
        expected_revision: a.revision,
    });
    let r = write_one(&servers, op, a.request_id).await?;
    println!("{kind}/{name} deleted at revision {}", r.revision);
    Ok(())
}

/// Writes one object in a transaction of its own.
async fn write_one(
    servers: &Servers,
    op: pb::txn_op::Op,
    given_request_id: Option<String>,
) -> Result<pb::TxnResponse> {
    let req = pb::TxnRequest {
        request_id: request_id(given_request_id),
        ops: vec![pb::TxnOp { op: Some(op) }],
        dry_run: false,
    };
    let result = servers
        .config_request(&req, |mut c, req| async move { c.txn(req).await })
        .await;
    if let Err(e) = &result {
        if outcome_unknown(e) {
            eprintln!(
                "request id {id}: if the outcome is unknown, retry with --request-id {id} (it takes effect at most once)",
                id = req.request_id
            );
        }
    }
    result
}

/// Whether a failed write may have been applied all the same: it reached
/// a controller (the CLI's own errors, such as no controller reachable,
/// mean it was never sent), and the answer was not a refusal that changed
/// nothing, so only a retry with the same request id tells.
pub fn outcome_unknown(e: &anyhow::Error) -> bool {
    use tonic::Code;
    if e.downcast_ref::<crate::exit::CodedError>().is_some() {
        return false;
    }
    let code = e
        .downcast_ref::<crate::client::StatusError>()
        .map(|s| s.0.code());
    !matches!(
        code,
        Some(
            Code::InvalidArgument
                | Code::NotFound
                | Code::AlreadyExists
                | Code::FailedPrecondition
                | Code::Aborted
                | Code::OutOfRange
                | Code::PermissionDenied
                | Code::Unauthenticated
        )
    )
}
