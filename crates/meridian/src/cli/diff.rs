//! `meridian diff -f`: a unified diff, per object, between the cluster's
//! objects and the files' (YAML, secrets redacted). Exit 0 without
//! differences, 1 with differences, more than 1 on error (like kubectl diff).

use std::io::Write as _;

use anyhow::Result;
use meridian_model::Object;

use super::apply::{change_of, list_current, Change};
use super::files::{self, FileArgs};
use super::Global;
use crate::exit::{code_for, coded, FAILURE};

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    #[command(flatten)]
    pub files: FileArgs,
}

/// Exit code of an error that would otherwise be FAILURE (1): 1 means
/// "differences found" for diff.
const DIFF_ERROR: u8 = 2;

pub async fn run(a: DiffArgs, g: &Global) -> Result<()> {
    match diff(a, g).await {
        Ok(false) => Ok(()),
        Ok(true) => {
            let _ = std::io::stdout().flush();
            std::process::exit(1);
        }
        Err(e) if code_for(&e) == FAILURE => Err(coded(DIFF_ERROR, format!("{e:#}"))),
        Err(e) => Err(e),
    }
}

fn redacted_yaml(o: &Object) -> Result<String> {
    let v = o.to_redacted_json();
    Ok(serde_yaml_ng::to_string(&v["spec"])?)
}

/// Prints the diffs; true when anything differs.
async fn diff(a: DiffArgs, g: &Global) -> Result<bool> {
    let objects = files::load(&a.files, true)?;
    let cur = list_current(&g.servers()).await?;
    let mut differ = false;
    let mut out = String::new();
    for fo in &objects {
        let key = fo.key();
        let live = cur.set.get(fo.object.kind, &fo.object.name);
        let change = change_of(&cur, fo);
        if change == Change::Unchanged {
            continue;
        }
        differ = true;
        let old = match (live, change) {
            (Some(o), _) => redacted_yaml(o)?,
            (None, Change::Created) => String::new(),
            // Stored but not readable by this build: show its raw JSON.
            (None, _) => cur
                .stored
                .get(&(fo.object.kind, fo.object.name.clone()))
                .map(|o| format!("{}\n", String::from_utf8_lossy(&o.value)))
                .unwrap_or_default(),
        };
        let new = redacted_yaml(&fo.object)?;
        let from = if change == Change::Created {
            format!("{key} (not in the cluster)")
        } else {
            format!("{key} (cluster)")
        };
        let to = match fo.line {
            Some(l) => format!("{key} ({}:{l})", fo.source),
            None => format!("{key} ({})", fo.source),
        };
        let d = similar::TextDiff::from_lines(&old, &new);
        out.push_str(
            &d.unified_diff()
                .context_radius(3)
                .header(&from, &to)
                .to_string(),
        );
    }
    print!("{out}");
    Ok(differ)
}
