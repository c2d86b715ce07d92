//! Reading the objects named by `-f FILE|DIR|-` for `apply`, `diff` and
//! `delete -f`: every file is parsed and every object validated on its own,
//! and all problems are reported together, each with its file, line where
//! known, object and field path.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use meridian_model::{parse_documents_located, Kind, Location, ModelError, Object};

use crate::exit::{coded, FAILURE, INVALID};
use crate::output::plural;

/// Exit code of a bad command line (clap's).
pub const USAGE: u8 = 2;

/// The `-f` options shared by the commands that read object files.
#[derive(clap::Args, Debug, Clone)]
pub struct FileArgs {
    /// A YAML or JSON file of objects, a directory (its *.yaml, *.yml and
    /// *.json files, in name order), or `-` for stdin. Repeatable.
    #[arg(long = "filename", short = 'f', value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// With a directory, also read its subdirectories.
    #[arg(long, short = 'R')]
    pub recursive: bool,
}

/// One object read from a file, with where it was found.
#[derive(Debug, Clone)]
pub struct FileObject {
    pub object: Object,
    pub source: String,
    /// 1-based line of the object's first line, when known.
    pub line: Option<usize>,
}

impl FileObject {
    pub fn key(&self) -> String {
        format!("{}/{}", self.object.kind, self.object.name)
    }
}

/// Reads, parses and (with `validate`) validates every object the `-f`
/// options name. On any problem, prints every one of them to stderr and
/// returns an error with the INVALID exit code (FAILURE when a file could not
/// be read at all).
pub fn load(args: &FileArgs, validate: bool) -> Result<Vec<FileObject>> {
    if args.files.is_empty() {
        return Err(coded(USAGE, "give the objects with -f FILE|DIR|- (repeatable)"));
    }
    let mut inputs: Vec<(String, String)> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut io_failed = false;
    let mut stdin_used = false;
    for path in &args.files {
        if path.as_os_str() == "-" {
            if stdin_used {
                problems.push("-f -: stdin can be given only once".into());
                io_failed = true;
                continue;
            }
            stdin_used = true;
            let mut s = String::new();
            match std::io::stdin().read_to_string(&mut s) {
                Ok(_) => inputs.push(("<stdin>".into(), s)),
                Err(e) => {
                    problems.push(format!("<stdin>: cannot read: {e}"));
                    io_failed = true;
                }
            }
            continue;
        }
        let mut files = Vec::new();
        if let Err(e) = expand(path, args.recursive, true, &mut files) {
            problems.push(e);
            io_failed = true;
            continue;
        }
        if files.is_empty() {
            problems.push(format!(
                "{}: no *.yaml, *.yml or *.json files in this directory{}",
                path.display(),
                if args.recursive {
                    ""
                } else {
                    " (use -R for subdirectories)"
                }
            ));
            io_failed = true;
        }
        for f in files {
            match std::fs::read_to_string(&f) {
                Ok(s) => inputs.push((f.display().to_string(), s)),
                Err(e) => {
                    problems.push(format!("{}: cannot read: {e}", f.display()));
                    io_failed = true;
                }
            }
        }
    }

    let mut objects: Vec<FileObject> = Vec::new();
    let mut model_errors: Vec<ModelError> = Vec::new();
    for (source, text) in &inputs {
        let (objs, errs) = parse_file(text, source);
        objects.extend(objs);
        model_errors.extend(errs);
    }
    // The same object twice, in one file or across files.
    let mut first_seen: BTreeMap<(Kind, String), String> = BTreeMap::new();
    let mut unique = Vec::with_capacity(objects.len());
    for fo in objects {
        let key = (fo.object.kind, fo.object.name.clone());
        let here = where_(&fo.source, fo.line);
        if let Some(first) = first_seen.get(&key) {
            let mut e = ModelError::new(
                fo.object.kind,
                &fo.object.name,
                "",
                format!("defined twice (first at {first})"),
            );
            e.location = Some(Location {
                source: fo.source.clone(),
                line: fo.line,
            });
            model_errors.push(e);
            continue;
        }
        first_seen.insert(key, here);
        unique.push(fo);
    }
    for fo in unique.iter().filter(|_| validate) {
        for mut e in fo.object.validate() {
            e.location = Some(Location {
                source: fo.source.clone(),
                line: fo.line,
            });
            model_errors.push(e);
        }
    }
    problems.extend(model_errors.iter().map(ToString::to_string));
    if unique.is_empty() && problems.is_empty() {
        problems.push("no objects found in the given files".into());
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        let n = problems.len();
        let code = if io_failed { FAILURE } else { INVALID };
        return Err(coded(
            code,
            format!("{n} problem{} in the input; nothing was sent", plural(n)),
        ));
    }
    Ok(unique)
}

fn where_(source: &str, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{source}:{l}"),
        None => source.to_string(),
    }
}

fn is_object_file(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// A file as itself; a directory as its object files in name order (and
/// its subdirectories' with `recursive`).
fn expand(path: &Path, recursive: bool, top: bool, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        if top || is_object_file(path) {
            out.push(path.to_path_buf());
        }
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive {
                expand(&p, recursive, false, out)?;
            }
        } else if is_object_file(&p) {
            out.push(p);
        }
    }
    Ok(())
}

/// Parses one file document by document (the model's parser), so an error
/// in one document does not hide the errors of the others, and each object
/// knows its line. Returns the objects that parsed and the errors.
fn parse_file(text: &str, source: &str) -> (Vec<FileObject>, Vec<ModelError>) {
    let (located, errors) = parse_documents_located(text, source);
    let objects = located
        .into_iter()
        .map(|(object, line)| FileObject {
            object,
            source: source.to_string(),
            line,
        })
        .collect();
    (objects, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_documents_keep_lines() {
        let text = "# c\nkind: region\nname: a\nspec: {}\n---\n\n# x\nkind: region\nname: b\nspec: {}\n---\n";
        let (objs, errs) = parse_file(text, "f.yaml");
        assert!(errs.is_empty(), "{errs:?}");
        let lines: Vec<_> = objs.iter().map(|o| (o.object.name.as_str(), o.line)).collect();
        assert_eq!(lines, [("a", Some(2)), ("b", Some(8))]);
    }

    #[test]
    fn errors_of_every_document_with_lines() {
        let text = "kind: region\nname: a\nspec:\n  failover: [b]\n  bogus: 1\n---\nkind: servce\nname: s\nspec: {}\n";
        let (objs, errs) = parse_file(text, "f.yaml");
        assert!(objs.is_empty());
        let msgs: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].starts_with("f.yaml:5: region/a: bogus"), "{msgs:?}");
        assert!(
            msgs[1].starts_with("f.yaml:7: kind: unknown kind"),
            "{msgs:?}"
        );
    }
}
