//! Who a certificate speaks for, and its SPIFFE-style URI form
//! `spiffe://TRUST_DOMAIN/KIND/...` (the scheme is in docs/SECURITY.md).

mod name;
#[cfg(test)]
mod tests;
mod trust_domain;

use std::fmt;
use std::str::FromStr;

pub use name::MAX_NAME_LEN;
pub use trust_domain::{TrustDomain, DEFAULT_TRUST_DOMAIN};

pub(crate) const SCHEME: &str = "spiffe://";

/// Why a string is not a Meridian identity. Every message quotes the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{uri:?} is not a Meridian identity: it must start with spiffe://")]
    Scheme { uri: String },
    #[error("trust domain {domain:?}: {reason}")]
    TrustDomain { domain: String, reason: String },
    #[error("{uri:?} belongs to trust domain {found:?}; this cluster trusts only {expected:?}")]
    OtherTrustDomain {
        uri: String,
        found: String,
        expected: String,
    },
    #[error("{uri:?}: {reason}")]
    Path { uri: String, reason: String },
}

/// An operator's role. Ordered: each role may do everything the ones before
/// it may (admin ⊇ editor ⊇ viewer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Reads, watches, proxy status.
    Viewer,
    /// Writes, apply, rollback.
    Editor,
    /// Membership, snapshot save/restore, cluster registration.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Editor, Role::Admin];

    /// Whether this role covers what `needed` may do.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("role {s:?} is not one of viewer, editor, admin"))
    }
}

/// What a certificate's holder is. Nodes are named by their Raft node id,
/// so the peer layer can check that a node speaks only for itself.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// A controller node (`node/ID`, ID > 0).
    Node { id: u64 },
    /// A federation agent, bound to one registered cluster (`cluster/NAME`).
    Agent { cluster: String },
    /// An Envoy of one proxy group (`proxy/GROUP`).
    Proxy { group: String },
    /// A person or tool using the CLI/API (`operator/ROLE/NAME`).
    Operator { name: String, role: Role },
}

impl Identity {
    /// `spiffe://DOMAIN/PATH`.
    pub fn uri(&self, domain: &TrustDomain) -> String {
        format!("{}/{self}", domain.uri())
    }

    /// Parses a URI and insists on `domain`: an identity from another trust
    /// domain is never this cluster's, however well-formed.
    pub fn from_uri(uri: &str, domain: &TrustDomain) -> Result<Identity, IdError> {
        let id: SpiffeId = uri.parse()?;
        if id.trust_domain != *domain {
            return Err(IdError::OtherTrustDomain {
                uri: uri.to_string(),
                found: id.trust_domain.as_str().to_string(),
                expected: domain.as_str().to_string(),
            });
        }
        Ok(id.identity)
    }

    /// Checks the names of a value built by hand (the fields are public).
    pub fn validate(&self) -> Result<(), IdError> {
        let path = self.to_string();
        path.parse::<Identity>().map(|_| ())
    }

    /// The path's first segment: `node`, `cluster`, `proxy` or `operator`.
    pub fn kind(&self) -> &'static str {
        match self {
            Identity::Node { .. } => "node",
            Identity::Agent { .. } => "cluster",
            Identity::Proxy { .. } => "proxy",
            Identity::Operator { .. } => "operator",
        }
    }
}

/// The path form, `node/3`, `cluster/NAME`, `proxy/GROUP`,
/// `operator/ROLE/NAME`: short enough for logs and tables.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { id } => write!(f, "node/{id}"),
            Identity::Agent { cluster } => write!(f, "cluster/{cluster}"),
            Identity::Proxy { group } => write!(f, "proxy/{group}"),
            Identity::Operator { name, role } => write!(f, "operator/{role}/{name}"),
        }
    }
}

impl FromStr for Identity {
    type Err = IdError;
    fn from_str(path: &str) -> Result<Self, IdError> {
        parse_path(path).map_err(|reason| IdError::Path {
            uri: path.to_string(),
            reason,
        })
    }
}

fn parse_path(path: &str) -> Result<Identity, String> {
    let segments: Vec<&str> = path.split('/').collect();
    let (shape, want) = match segments[0] {
        "node" => ("node/ID", 2),
        "cluster" => ("cluster/NAME", 2),
        "proxy" => ("proxy/GROUP", 2),
        "operator" => ("operator/ROLE/NAME", 3),
        other => {
            return Err(format!(
                "unknown identity type {other:?}; expected node, cluster, proxy or operator"
            ))
        }
    };
    if segments.len() != want {
        return Err(format!(
            "a {} identity is {shape}, got {} path segments",
            segments[0],
            segments.len()
        ));
    }
    let named = |what: &str, value: &str| {
        name::check(value).map_err(|reason| format!("{what} {value:?}: {reason}"))
    };
    Ok(match segments[0] {
        "node" => Identity::Node {
            id: parse_node_id(segments[1])?,
        },
        "cluster" => {
            named("cluster name", segments[1])?;
            Identity::Agent {
                cluster: segments[1].to_string(),
            }
        }
        "proxy" => {
            named("proxy group", segments[1])?;
            Identity::Proxy {
                group: segments[1].to_string(),
            }
        }
        _ => {
            let role = segments[1].parse::<Role>()?;
            named("operator name", segments[2])?;
            Identity::Operator {
                name: segments[2].to_string(),
                role,
            }
        }
    })
}

/// Only the canonical decimal form, so each node has exactly one URI.
fn parse_node_id(s: &str) -> Result<u64, String> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
    match s.parse::<u64>() {
        Ok(id) if canonical => Ok(id),
        _ => Err(format!(
            "node id {s:?} must be a decimal number greater than 0, without leading zeros"
        )),
    }
}

/// A full identity URI: trust domain and identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    pub trust_domain: TrustDomain,
    pub identity: Identity,
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.identity.uri(&self.trust_domain))
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(uri: &str) -> Result<Self, IdError> {
        let path_error = |reason: &str| IdError::Path {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        let rest = uri.strip_prefix(SCHEME).ok_or_else(|| IdError::Scheme {
            uri: uri.to_string(),
        })?;
        if rest.contains(['?', '#']) {
            return Err(path_error("a query or fragment is not allowed"));
        }
        let (domain, path) = rest.split_once('/').ok_or_else(|| {
            path_error("no identity after the trust domain; expected e.g. spiffe://DOMAIN/node/1")
        })?;
        let trust_domain = TrustDomain::new(domain)?;
        let identity = parse_path(path).map_err(|reason| path_error(&reason))?;
        Ok(SpiffeId {
            trust_domain,
            identity,
        })
    }
}
