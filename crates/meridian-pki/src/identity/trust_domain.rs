//! The trust domain: the part of every identity URI that says which
//! deployment it belongs to.

use std::fmt;
use std::str::FromStr;

use super::{IdError, SCHEME};

/// The trust domain used when none is configured.
pub const DEFAULT_TRUST_DOMAIN: &str = "meridian.local";

/// A SPIFFE trust domain: 1-255 characters of `a-z`, `0-9`, `.`, `-`, `_`.
/// Every certificate of one Meridian deployment shares it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(domain: &str) -> Result<Self, IdError> {
        let bad = |reason: String| IdError::TrustDomain {
            domain: domain.to_string(),
            reason,
        };
        if domain.is_empty() {
            return Err(bad("must not be empty".into()));
        }
        if domain.len() > 255 {
            return Err(bad(format!(
                "is {} characters long, at most 255 allowed",
                domain.len()
            )));
        }
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-_".contains(c);
        if let Some(c) = domain.chars().find(|c| !allowed(*c)) {
            return Err(bad(format!(
                "contains {c:?}; use lowercase letters, digits, '.', '-' and '_' (no port, user or path)"
            )));
        }
        Ok(TrustDomain(domain.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://DOMAIN`: the URI a CA of this domain carries.
    pub fn uri(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        TrustDomain(DEFAULT_TRUST_DOMAIN.to_string())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        TrustDomain::new(s)
    }
}
