use std::fmt;

use crate::Kind;

/// Where in a file a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub source: String,
    /// 1-based line, when the parser could tell.
    pub line: Option<usize>,
}

/// One problem with the model. Displays as `kind/name: path: reason`, with a
/// `file:line: ` prefix when it comes from parsing a file; parts that are not
/// known are left out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ModelError {
    pub location: Option<Location>,
    pub object: Option<(Kind, String)>,
    /// Field path inside the spec, e.g. `rules[2].backends[0].weight`; empty
    /// when the problem is about the object as a whole.
    pub path: String,
    pub reason: String,
}

impl ModelError {
    pub fn new(kind: Kind, name: &str, path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            location: None,
            object: Some((kind, name.to_string())),
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn bare(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            location: None,
            object: None,
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn at(mut self, source: &str, line: Option<usize>) -> Self {
        self.location = Some(Location {
            source: source.to_string(),
            line,
        });
        self
    }

    fn render(&self) -> String {
        let mut out = String::new();
        if let Some(loc) = &self.location {
            out.push_str(&loc.source);
            if let Some(line) = loc.line {
                out.push_str(&format!(":{line}"));
            }
            out.push_str(": ");
        }
        if let Some((kind, name)) = &self.object {
            out.push_str(&format!("{}/{}: ", kind.as_str(), name));
        }
        if !self.path.is_empty() {
            out.push_str(&self.path);
            out.push_str(": ");
        }
        out.push_str(&self.reason);
        out
    }
}

/// Collects errors for one object while walking its spec.
pub(crate) struct Errors<'a> {
    kind: Kind,
    name: &'a str,
    pub(crate) list: Vec<ModelError>,
}

impl<'a> Errors<'a> {
    pub(crate) fn new(kind: Kind, name: &'a str) -> Self {
        Self {
            kind,
            name,
            list: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, path: impl fmt::Display, reason: impl Into<String>) {
        self.list.push(ModelError::new(
            self.kind,
            self.name,
            path.to_string(),
            reason,
        ));
    }
}
