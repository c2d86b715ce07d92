//! What the clients record: one [`Op`] per request, with the times it was
//! sent and answered (nanoseconds since the run's start) and its outcome.

use std::fmt;

/// What an operation asked for, and (for reads and CAS) what it was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// A linearizable get; `saw` is the value read (`None`: not found).
    Read { saw: Option<String> },
    /// A put without a precondition, of a value no other op writes.
    Write { value: String },
    /// A put guarded by the revision at which `expect` was read (`None`: the
    /// object must not exist). `swapped` is the answer of an `Ok` CAS: false
    /// when the server said the precondition did not hold.
    Cas {
        expect: Option<String>,
        value: String,
        swapped: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered: the op took effect (or, for a read or a failed CAS, observed
    /// what it says).
    Ok,
    /// Definitely did not take effect (refused before anything was proposed).
    Failed,
    /// No answer in time, or an answer that does not say: it may or may not
    /// have taken effect, at any time after its call.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: usize,
    pub key: String,
    pub kind: OpKind,
    /// When the request was sent, in ns since the run began.
    pub call: u64,
    /// When it was answered (for an unknown op: when the client gave up).
    pub ret: u64,
    pub outcome: Outcome,
    /// Which node the client sent it to.
    pub node: u64,
    /// The revision an acknowledged write was committed at, or the global
    /// revision of the state a read was answered from (0: none).
    pub revision: u64,
}

impl Op {
    /// The value this op writes, if it writes.
    pub fn written(&self) -> Option<&str> {
        match &self.kind {
            OpKind::Write { value } | OpKind::Cas { value, .. } => Some(value),
            OpKind::Read { .. } => None,
        }
    }

    pub fn is_write(&self) -> bool {
        self.written().is_some()
    }
}

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("<absent>")
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.kind {
            OpKind::Read { saw } => format!("read {} -> {}", self.key, show(saw)),
            OpKind::Write { value } => format!("write {} := {value}", self.key),
            OpKind::Cas {
                expect,
                value,
                swapped,
            } => {
                let ans = match (self.outcome, swapped) {
                    (Outcome::Ok, true) => " (swapped)",
                    (Outcome::Ok, false) => " (precondition failed)",
                    _ => "",
                };
                format!("cas {} {} -> {value}{ans}", self.key, show(expect))
            }
        };
        let outcome = match self.outcome {
            Outcome::Ok => "ok",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        };
        let rev = if self.revision > 0 {
            format!(" @{}", self.revision)
        } else {
            String::new()
        };
        write!(
            f,
            "client {} via node {}: {what} [{outcome}{rev}, {:.3}s..{:.3}s]",
            self.client,
            self.node,
            self.call as f64 / 1e9,
            self.ret as f64 / 1e9
        )
    }
}
