//! Endpoint declarations in a YAML or JSON file, or a directory of them,
//! re-read when their contents change.
//!
//! Polling (rather than inotify) keeps the agent free of platform watchers
//! and works on ConfigMap volumes, whose files are swapped through symlinks.
//! Contents, not mtimes, decide whether anything changed: two writes within
//! one mtime tick are still seen.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::endpoints::{EndpointKey, EndpointMap, EndpointState, Health};
use crate::error::AgentError;
use crate::health::Probe;

/// The endpoints declared in files, and the per-endpoint health check
/// overrides (`Some(None)`: checks disabled for that endpoint).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Declared {
    pub endpoints: EndpointMap,
    pub checks: BTreeMap<EndpointKey, Option<Probe>>,
}

/// Where declarations are read from.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub path: PathBuf,
    pub poll_interval: Duration,
}

/// One file's raw contents, the unit of change detection.
type Snapshot = Vec<(PathBuf, Vec<u8>)>;

impl FileSource {
    pub fn new(path: impl Into<PathBuf>, poll_interval: Duration) -> Self {
        Self {
            path: path.into(),
            poll_interval,
        }
    }

    /// Reads and parses everything once.
    pub fn load(&self) -> Result<Declared, AgentError> {
        parse_snapshot(&read_snapshot(&self.path)?)
    }

    /// Loads the declarations (an error here stops the agent: there is no
    /// last good set yet), then watches them on a background task. A later
    /// bad edit is logged and the last good set stays published.
    pub fn spawn(self) -> Result<watch::Receiver<Declared>, AgentError> {
        let mut last = read_snapshot(&self.path)?;
        let first = parse_snapshot(&last)?;
        tracing::info!(path = %self.path.display(), endpoints = first.endpoints.len(), "loaded endpoint declarations");
        let (tx, rx) = watch::channel(first);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.poll_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = tx.closed() => return,
                }
                let snap = match read_snapshot(&self.path) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read endpoint declarations; keeping the last good set");
                        continue;
                    }
                };
                if snap == last {
                    continue;
                }
                match parse_snapshot(&snap) {
                    Ok(d) => {
                        tracing::info!(path = %self.path.display(), endpoints = d.endpoints.len(), "reloaded endpoint declarations");
                        tx.send_if_modified(|cur| {
                            let changed = *cur != d;
                            *cur = d;
                            changed
                        });
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "bad endpoint declarations; keeping the last good set");
                    }
                }
                last = snap;
            }
        });
        Ok(rx)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |source| AgentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_declaration(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// The file, or the directory's `*.yaml`, `*.yml` and `*.json` files
/// (not recursive, hidden files skipped), sorted by name.
fn read_snapshot(path: &Path) -> Result<Snapshot, AgentError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if !meta.is_dir() {
        return Ok(vec![(
            path.to_path_buf(),
            std::fs::read(path).map_err(io(path))?,
        )]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io(path))? {
        let p = entry.map_err(io(path))?.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && is_declaration(&p) && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).map_err(io(&p))?;
            Ok((p, bytes))
        })
        .collect()
}

fn parse_snapshot(snap: &Snapshot) -> Result<Declared, AgentError> {
    let mut out = Declared::default();
    let mut origin: BTreeMap<EndpointKey, PathBuf> = BTreeMap::new();
    for (path, bytes) in snap {
        for (field, key, state, check) in parse_file(path, bytes)? {
            if let Some(first) = origin.get(&key) {
                return Err(AgentError::Duplicate {
                    path: path.clone(),
                    field,
                    key: key.to_string(),
                    first: first.clone(),
                });
            }
            origin.insert(key.clone(), path.clone());
            if let Some(c) = check {
                out.checks.insert(key.clone(), c);
            }
            out.endpoints.insert(key, state);
        }
    }
    Ok(out)
}

type Parsed = (String, EndpointKey, EndpointState, Option<Option<Probe>>);

/// Parses one file's text. Public so tools can check a file without running.
pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<Parsed>, AgentError> {
    let err = |field: &str, reason: String| AgentError::File {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| err("(file)", format!("not UTF-8: {e}")))?;
    let json = path.extension().and_then(|e| e.to_str()) == Some("json");
    let doc: Value = if json {
        serde_json::from_str(text).map_err(|e| err("(syntax)", e.to_string()))?
    } else if text.trim().is_empty() {
        Value::Null
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| err("(syntax)", e.to_string()))?
    };
    let root = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Object(m) => m,
        other => {
            return Err(err(
                "(root)",
                format!(
                    "expected a mapping with `endpoints`, found {}",
                    kind(&other)
                ),
            ))
        }
    };
    if let Some(k) = root.keys().find(|k| k.as_str() != "endpoints") {
        return Err(err(k, "unknown field (expected `endpoints`)".into()));
    }
    let list = match root.get("endpoints") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(other) => {
            return Err(err(
                "endpoints",
                format!("expected a list, found {}", kind(other)),
            ))
        }
    };
    list.iter()
        .enumerate()
        .map(|(i, v)| parse_endpoint(&format!("endpoints[{i}]"), v).map_err(|(f, r)| err(&f, r)))
        .collect()
}

const FIELDS: &[&str] = &[
    "service",
    "address",
    "port",
    "zone",
    "weight",
    "health",
    "healthCheck",
];

fn parse_endpoint(at: &str, v: &Value) -> Result<Parsed, (String, String)> {
    let field = |name: &str| format!("{at}.{name}");
    let m = v.as_object().ok_or_else(|| {
        (
            at.to_string(),
            format!("expected a mapping, found {}", kind(v)),
        )
    })?;
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err((
            field(k),
            format!("unknown field (expected one of {})", FIELDS.join(", ")),
        ));
    }
    let string = |name: &str, required: bool| -> Result<Option<String>, (String, String)> {
        match m.get(name) {
            None | Some(Value::Null) if required => Err((field(name), "missing".into())),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err((
                field(name),
                format!("expected a string, found {}", kind(other)),
            )),
        }
    };
    let number = |name: &str, max: u64| -> Result<Option<u64>, (String, String)> {
        match m.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(x) if x <= max => Ok(Some(x)),
                _ => Err((field(name), format!("{n} is out of range 0-{max}"))),
            },
            Some(other) => Err((
                field(name),
                format!("expected a number, found {}", kind(other)),
            )),
        }
    };
    let service = string("service", true)?.unwrap_or_default();
    if service.is_empty() || service.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err((
            field("service"),
            format!("{service:?} is not a service name"),
        ));
    }
    let address = string("address", true)?.unwrap_or_default();
    let ip: IpAddr = address.parse().map_err(|_| {
        (
            field("address"),
            format!("{address:?} is not an IP address (hostnames are not resolved)"),
        )
    })?;
    let port = number("port", u64::from(u16::MAX))?.unwrap_or(0) as u16;
    let weight = number("weight", 128)?.unwrap_or(1) as u32;
    if weight == 0 {
        return Err((field("weight"), "0 is out of range 1-128".into()));
    }
    let zone = string("zone", false)?.unwrap_or_default();
    let health = match string("health", false)?.as_deref() {
        None | Some("healthy") => Health::Healthy,
        Some("unhealthy") => Health::Unhealthy,
        Some("draining") => Health::Draining,
        Some("unknown") => Health::Unknown,
        Some(other) => {
            return Err((
                field("health"),
                format!("{other:?}: expected healthy, unhealthy, draining or unknown"),
            ))
        }
    };
    let check = match string("healthCheck", false)? {
        None => None,
        Some(s) if s == "none" => Some(None),
        Some(s) => Some(Some(
            Probe::parse(&s).map_err(|e| (field("healthCheck"), e.to_string()))?,
        )),
    };
    let key = EndpointKey {
        service,
        address: ip.to_string(),
        port,
    };
    Ok((
        at.to_string(),
        key,
        EndpointState {
            zone,
            weight,
            health,
        },
        check,
    ))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

#[cfg(test)]
mod tests;
