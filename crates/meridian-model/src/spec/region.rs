use serde::{Deserialize, Serialize};

use super::check_ref_name;
use crate::error::Errors;

/// A known region and the order in which its proxies fall back to others.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegionSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<String>,
}

impl RegionSpec {
    pub(crate) fn validate(&self, own_name: &str, errs: &mut Errors<'_>) {
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in self.failover.iter().enumerate() {
            let path = format!("failover[{i}]");
            check_ref_name(errs, &path, r);
            if r == own_name {
                errs.push(
                    &path,
                    "a region does not fail over to itself; it is always first",
                );
            }
            if !seen.insert(r) {
                errs.push(&path, format!("region \"{r}\" is listed twice"));
            }
        }
    }
}
