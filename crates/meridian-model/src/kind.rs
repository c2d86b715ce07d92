use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{suggest::did_you_mean, ModelError};

/// The kinds of object operators write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Service,
    Route,
    Listener,
    Secret,
    Region,
    Cluster,
    Rollout,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Service,
        Kind::Route,
        Kind::Listener,
        Kind::Secret,
        Kind::Region,
        Kind::Cluster,
        Kind::Rollout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Route => "route",
            Kind::Listener => "listener",
            Kind::Secret => "secret",
            Kind::Region => "region",
            Kind::Cluster => "cluster",
            Kind::Rollout => "rollout",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ModelError;

    /// Case-insensitive; the plural (`services`) is accepted so CLIs can say
    /// `get services`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let singular = lower.strip_suffix('s').unwrap_or(&lower);
        for kind in Kind::ALL {
            if kind.as_str() == lower || kind.as_str() == singular {
                return Ok(kind);
            }
        }
        let names = Kind::ALL.map(Kind::as_str);
        Err(ModelError::bare(
            "kind",
            format!(
                "unknown kind \"{s}\"{}",
                did_you_mean(&lower, names.iter().copied())
            ),
        ))
    }
}
