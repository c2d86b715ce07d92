//! Reading objects from YAML (many documents per file) and JSON (one object
//! or an array). Errors name the file, the line where known, the object and
//! the field path.

use std::collections::BTreeSet;

use serde::{Deserialize, Deserializer};

use crate::{
    spec::{
        ClusterSpec, ListenerSpec, RegionSpec, RolloutSpec, RouteSpec, SecretSpec, ServiceSpec,
    },
    suggest::did_you_mean,
    Kind, ModelError, Object, Spec,
};

/// Parses every object in `text`. `source` (usually the file name) prefixes
/// error messages. JSON is recognised by a leading `{` or `[`; anything else
/// is YAML. Either all objects are returned or all errors found.
pub fn parse_documents(text: &str, source: &str) -> Result<Vec<Object>, Vec<ModelError>> {
    let (located, mut errors) = parse_documents_located(text, source);
    let mut objects = Vec::with_capacity(located.len());
    let mut seen = BTreeSet::new();
    for (obj, line) in located {
        if !seen.insert((obj.kind, obj.name.clone())) {
            let e = ModelError::new(obj.kind, &obj.name, "", "defined twice in this file");
            errors.push(e.at(source, line));
        } else {
            objects.push(obj);
        }
    }
    if errors.is_empty() {
        Ok(objects)
    } else {
        errors.sort_by_key(|e| e.location.as_ref().and_then(|l| l.line));
        Err(errors)
    }
}

/// Parses every document of `text` on its own, so that an error in one does
/// not hide the errors of the others: the objects that parsed, each with the
/// 1-based line of its first meaningful line, and the errors.
/// Objects defined twice are left to the caller, which may check across files.
pub fn parse_documents_located(
    text: &str,
    source: &str,
) -> (Vec<(Object, Option<usize>)>, Vec<ModelError>) {
    let docs = match split(text) {
        Ok(d) => d,
        Err(e) => {
            let line = e.location.as_ref().and_then(|l| l.line);
            return (Vec::new(), vec![e.at(source, line)]);
        }
    };
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for doc in docs {
        match parse_one(&doc) {
            Ok(obj) => objects.push((obj, Some(doc.content_line()))),
            Err(mut e) => {
                let line = e.location.take().and_then(|l| l.line);
                errors.push(e.at(source, line));
            }
        }
    }
    (objects, errors)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Yaml,
}

struct Doc<'a> {
    text: &'a str,
    /// 1-based line of the document's first line in the file.
    first_line: usize,
    format: Format,
}

impl Doc<'_> {
    /// The line of the document's first line that is neither blank nor a
    /// comment: where a reader looks for the object.
    fn content_line(&self) -> usize {
        if self.format == Format::Json {
            return self.first_line;
        }
        let padding = self
            .text
            .lines()
            .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
            .count();
        self.first_line + padding
    }
}

fn line_of(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

fn split(text: &str) -> Result<Vec<Doc<'_>>, ModelError> {
    let trimmed = text.trim_start();
    let start = text.len() - trimmed.len();
    if trimmed.starts_with('[') {
        let raws: Vec<&serde_json::value::RawValue> =
            serde_json::from_str(text).map_err(json_syntax)?;
        return Ok(raws
            .into_iter()
            .map(|raw| {
                // RawValue borrows from `text`, so its offset gives the line.
                let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
                Doc {
                    text: raw.get(),
                    first_line: line_of(text, offset),
                    format: Format::Json,
                }
            })
            .collect());
    }
    if trimmed.starts_with('{') {
        return Ok(vec![Doc {
            text,
            first_line: line_of(text, start),
            format: Format::Json,
        }]);
    }
    // YAML documents are separated by `---` lines. Splitting by hand (rather
    // than letting the YAML parser iterate) lets each document be parsed
    // twice, once for its kind and once into the right spec type, while
    // keeping line numbers.
    let mut docs = Vec::new();
    let mut doc_start = 0;
    let mut doc_line = 1;
    let mut offset = 0;
    for (line_no, line) in (1..).zip(text.split_inclusive('\n')) {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- #") || bare == "..." {
            docs.push(Doc {
                text: &text[doc_start..offset],
                first_line: doc_line,
                format: Format::Yaml,
            });
            doc_start = offset + line.len();
            doc_line = line_no + 1;
        }
        offset += line.len();
    }
    docs.push(Doc {
        text: &text[doc_start..],
        first_line: doc_line,
        format: Format::Yaml,
    });
    docs.retain(|d| {
        d.text
            .lines()
            .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
    });
    Ok(docs)
}

fn json_syntax(e: serde_json::Error) -> ModelError {
    let line = e.line();
    let mut err = ModelError::bare("", clean_message(&e.to_string()));
    err.location = Some(crate::Location {
        source: String::new(),
        line: Some(line),
    });
    err
}

#[derive(Deserialize)]
struct Head {
    kind: Option<serde_json::Value>,
    name: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<S> {
    #[allow(dead_code)]
    kind: String,
    name: String,
    spec: S,
}

fn parse_one(doc: &Doc<'_>) -> Result<Object, ModelError> {
    let with_line = |mut e: ModelError, line: Option<usize>| {
        e.location = Some(crate::Location {
            source: String::new(),
            line: Some(doc.first_line + line.unwrap_or(1) - 1),
        });
        e
    };
    let head: Result<Head, (String, Option<usize>)> = match doc.format {
        Format::Json => serde_json::from_str(doc.text).map_err(|e| (e.to_string(), Some(e.line()))),
        Format::Yaml => serde_yaml_ng::from_str(doc.text)
            .map_err(|e| (e.to_string(), e.location().map(|l| l.line()))),
    };
    let head = head.map_err(|(msg, line)| {
        with_line(
            ModelError::bare(
                "",
                format!(
                    "expected an object with kind, name and spec: {}",
                    clean_message(&msg)
                ),
            ),
            line,
        )
    })?;
    let name = match head.name {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    let kind_text = match head.kind {
        Some(serde_json::Value::String(s)) => s,
        Some(other) => {
            return Err(with_line(
                ModelError::bare("kind", format!("must be a string, found {other}")),
                None,
            ))
        }
        None => {
            return Err(with_line(
                ModelError::bare(
                    "kind",
                    "missing; one of service, route, listener, secret, region",
                ),
                None,
            ))
        }
    };
    let kind: Kind = kind_text.parse().map_err(|e| with_line(e, None))?;
    let result = match doc.format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(doc.text);
            decode(kind, &mut de, true).map_err(|e| {
                let line = e.inner().line();
                (e.path().to_string(), e.into_inner().to_string(), Some(line))
            })
        }
        Format::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(doc.text);
            decode(kind, de, true).map_err(|e| {
                let line = e.inner().location().map(|l| l.line());
                (e.path().to_string(), e.into_inner().to_string(), line)
            })
        }
    };
    match result {
        Ok((name, spec)) => Ok(Object {
            kind,
            name: name.unwrap_or_default(),
            spec,
        }),
        Err((path, msg, line)) => {
            let path = path
                .strip_prefix("spec.")
                .or_else(|| path.strip_prefix("spec"))
                .unwrap_or(&path)
                .to_string();
            let path = if path == "." { String::new() } else { path };
            let err = ModelError {
                location: None,
                object: name.map(|n| (kind, n)),
                path,
                reason: clean_message(&msg),
            };
            Err(with_line(err, line))
        }
    }
}

/// Decodes a stored spec (JSON of the spec alone).
pub(crate) fn spec_from_json(kind: Kind, bytes: &[u8]) -> Result<Spec, (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let (_, spec) = decode(kind, &mut de, false)
        .map_err(|e| (e.path().to_string(), clean_message(&e.inner().to_string())))?;
    de.end()
        .map_err(|e| (String::new(), clean_message(&e.to_string())))?;
    Ok(spec)
}

type Decoded = (Option<String>, Spec);

fn decode<'de, D: Deserializer<'de>>(
    kind: Kind,
    de: D,
    envelope: bool,
) -> Result<Decoded, serde_path_to_error::Error<D::Error>> {
    macro_rules! go {
        ($t:ty, $variant:ident) => {
            if envelope {
                let e: Envelope<$t> = serde_path_to_error::deserialize(de)?;
                (Some(e.name), Spec::$variant(e.spec))
            } else {
                let s: $t = serde_path_to_error::deserialize(de)?;
                (None, Spec::$variant(s))
            }
        };
    }
    Ok(match kind {
        Kind::Service => go!(ServiceSpec, Service),
        Kind::Route => go!(RouteSpec, Route),
        Kind::Listener => go!(ListenerSpec, Listener),
        Kind::Secret => go!(SecretSpec, Secret),
        Kind::Region => go!(RegionSpec, Region),
        Kind::Cluster => go!(ClusterSpec, Cluster),
        Kind::Rollout => go!(RolloutSpec, Rollout),
    })
}

/// Turns serde's messages into ours: no position suffix (we print it as a
/// prefix), no repeated path, and a suggestion for misspelt fields and
/// values.
fn clean_message(msg: &str) -> String {
    let mut msg = msg.to_string();
    if let Some(at) = msg.rfind(" at line ") {
        msg.truncate(at);
    }
    if let Some((before, after)) = msg.split_once(": ") {
        if !before.contains(' ') {
            msg = after.to_string();
        }
    }
    for (prefix, what) in [("unknown field `", "field"), ("unknown variant `", "value")] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let Some((got, tail)) = rest.split_once('`') else {
                continue;
            };
            let expected: Vec<&str> = tail.split('`').skip(1).step_by(2).collect();
            let hint = did_you_mean(got, expected.iter().copied());
            return if !hint.is_empty() {
                format!("unknown {what} \"{got}\"{hint}")
            } else if expected.is_empty() {
                format!("unknown {what} \"{got}\"")
            } else {
                format!(
                    "unknown {what} \"{got}\"; expected one of: {}",
                    expected.join(", ")
                )
            };
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        return format!("missing field \"{}\"", rest.trim_end_matches('`'));
    }
    msg
}
