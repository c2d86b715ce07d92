//! `meridian snapshot save|restore|inspect`: backups and disaster recovery.

use std::path::PathBuf;

use anyhow::{Context, Result};
use meridian_proto::v1 as pb;

use super::Global;
use crate::client::status;

mod restore;

#[derive(clap::Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Save a consistent snapshot of the running cluster to FILE.
    Save { file: PathBuf },
    /// Load a saved snapshot's config into a new, empty cluster (disaster
    /// recovery); all of it or, on failure, none. Agents' claims, leases and
    /// endpoints are not restored: agents report them again on reconnect.
    /// Run it again with the same file to resume an interrupted restore.
    Restore {
        file: PathBuf,
        /// Restore even if the cluster already holds objects (they are kept or overwritten).
        #[arg(long)]
        force: bool,
    },
    /// Describe a saved snapshot without connecting anywhere.
    Inspect { file: PathBuf },
}

pub async fn run(cmd: SnapshotCmd, g: &Global) -> Result<()> {
    match cmd {
        SnapshotCmd::Save { file } => {
            let mut stream = g
                .servers()
                .cluster()
                .await?
                .snapshot(pb::SnapshotRequest {})
                .await
                .map_err(status)?
                .into_inner();
            let mut bytes = Vec::new();
            while let Some(chunk) = stream.message().await.map_err(status)? {
                bytes.extend_from_slice(&chunk.data);
            }
            // Check before writing: a truncated backup is worse than none.
            let (meta, state) = meridian_store::codec::decode_snapshot(&bytes)
                .context("the snapshot received does not decode")?;
            let tmp = file.with_extension("partial");
            std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all())?;
            std::fs::rename(&tmp, &file).with_context(|| format!("writing {}", file.display()))?;
            println!(
                "saved {} objects at revision {} (log index {}) to {} ({} bytes)",
                state.objects.len(),
                state.revision,
                meta.last_log_id.map(|l| l.index).unwrap_or(0),
                file.display(),
                bytes.len()
            );
        }
        SnapshotCmd::Inspect { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let (meta, state) = meridian_store::codec::decode_snapshot(&bytes)?;
            let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
            for k in state.objects.keys() {
                *kinds.entry(k.kind.as_str()).or_default() += 1;
            }
            println!("snapshot {}", meta.snapshot_id);
            println!("  revision   {}", state.revision);
            println!(
                "  log index  {}",
                meta.last_log_id.map(|l| l.index).unwrap_or(0)
            );
            println!("  objects    {}", state.objects.len());
            for (k, n) in kinds {
                println!("    {k:<10} {n}");
            }
        }
        SnapshotCmd::Restore { file, force } => restore::run(g, &file, force).await?,
    }
    Ok(())
}
