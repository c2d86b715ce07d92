//! A rollout policy: the order in which a change reaches the fleet (steps of
//! regions or proxy groups), how long each step bakes, and the error rate
//! that halts it. The run of one rollout (what it changed, where it is) is
//! not config: see [`crate::rollout_run`].

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use super::{check_duration, check_ref_name};
use crate::{error::Errors, Duration};

/// Most steps of one policy; a fleet has far fewer regions than this.
pub const MAX_STEPS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutSpec {
    /// In order; the change reaches step `i + 1` only after step `i` baked.
    pub steps: Vec<RolloutStep>,
    /// Bake time of every step that sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_time: Option<Duration>,
    /// Fraction of a step's requests (upstream 5xx and resets) above which
    /// the step halts and rolls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<Fraction>,
    /// Requests a step must have seen before its error rate is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
}

/// One step: the proxies whose region is one of `regions` (any region when
/// empty) and whose proxy group is one of `proxyGroups` (any group when
/// empty); at least one of the two is given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutStep {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub proxy_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_time: Option<Duration>,
}

impl RolloutStep {
    pub fn matches(&self, region: &str, proxy_group: &str) -> bool {
        (self.regions.is_empty() || self.regions.iter().any(|r| r == region))
            && (self.proxy_groups.is_empty() || self.proxy_groups.iter().any(|g| g == proxy_group))
    }
}

impl fmt::Display for RolloutStep {
    /// `regions us-east,eu-west; groups edge`, for tables and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.regions.is_empty() {
            parts.push(format!("regions {}", self.regions.join(",")));
        }
        if !self.proxy_groups.is_empty() {
            parts.push(format!("groups {}", self.proxy_groups.join(",")));
        }
        f.write_str(&parts.join("; "))
    }
}

impl RolloutSpec {
    pub const DEFAULT_BAKE_TIME: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_ERROR_RATE: Fraction = Fraction::from_basis_points(500);
    pub const DEFAULT_MIN_REQUESTS: u64 = 100;

    pub fn bake_time(&self, step: usize) -> Duration {
        self.steps
            .get(step)
            .and_then(|s| s.bake_time)
            .or(self.bake_time)
            .unwrap_or(Self::DEFAULT_BAKE_TIME)
    }

    pub fn max_error_rate(&self) -> Fraction {
        self.max_error_rate.unwrap_or(Self::DEFAULT_MAX_ERROR_RATE)
    }

    pub fn min_requests(&self) -> u64 {
        self.min_requests.unwrap_or(Self::DEFAULT_MIN_REQUESTS)
    }

    /// The first step whose proxies include (region, group); `None` for
    /// proxies no step names: they get the change when the rollout completes.
    pub fn step_of(&self, region: &str, proxy_group: &str) -> Option<usize> {
        self.steps
            .iter()
            .position(|s| s.matches(region, proxy_group))
    }

    pub(crate) fn validate(&self, errs: &mut Errors<'_>) {
        if self.steps.is_empty() {
            errs.push("steps", "at least one step is required");
        }
        if self.steps.len() > MAX_STEPS {
            errs.push("steps", format!("at most {MAX_STEPS} steps"));
        }
        // A region named by two steps without proxy groups would be promoted
        // by the first: the second step could never change anything.
        let mut whole_regions = std::collections::BTreeMap::new();
        for (i, s) in self.steps.iter().enumerate() {
            let path = format!("steps[{i}]");
            if s.regions.is_empty() && s.proxy_groups.is_empty() {
                errs.push(&path, "name at least one of regions or proxyGroups");
            }
            for (j, r) in s.regions.iter().enumerate() {
                check_ref_name(errs, &format!("{path}.regions[{j}]"), r);
                if s.proxy_groups.is_empty() {
                    if let Some(first) = whole_regions.insert(r.clone(), i) {
                        errs.push(
                            format!("{path}.regions[{j}]"),
                            format!("region \"{r}\" is already the whole of steps[{first}]"),
                        );
                    }
                }
            }
            for (j, g) in s.proxy_groups.iter().enumerate() {
                check_ref_name(errs, &format!("{path}.proxyGroups[{j}]"), g);
            }
            check_duration(
                errs,
                &format!("{path}.bakeTime"),
                s.bake_time,
                1_000,
                86_400_000,
            );
        }
        check_duration(errs, "bakeTime", self.bake_time, 1_000, 86_400_000);
        if let Some(n) = self.min_requests {
            if n > 1_000_000_000 {
                errs.push("minRequests", "at most 1000000000");
            }
        }
    }
}

/// A fraction from 0 to 1 with four decimals (`0.05` is 5%), kept as basis
/// points so the canonical JSON and equality never depend on float rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fraction {
    basis_points: u32,
}

impl Fraction {
    pub const fn from_basis_points(basis_points: u32) -> Self {
        Fraction { basis_points }
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.basis_points) / 10_000.0
    }

    /// Whether `errors` out of `requests` is more than this fraction, in
    /// integers (no float rounding at the threshold).
    pub fn exceeded_by(self, errors: u64, requests: u64) -> bool {
        requests > 0
            && u128::from(errors) * 10_000 > u128::from(self.basis_points) * u128::from(requests)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_f64())
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        let bp = (v * 10_000.0).round();
        if !(0.0..=1.0).contains(&v) || ((v * 10_000.0) - bp).abs() > 1e-6 {
            return Err(de::Error::custom(format!(
                "{v} is not a fraction from 0 to 1 with at most four decimals (0.05 is 5%)"
            )));
        }
        Ok(Fraction {
            basis_points: bp as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Kind, Object, Spec};

    fn spec(v: serde_json::Value) -> Result<RolloutSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    fn errors(s: RolloutSpec) -> Vec<String> {
        Object::new("canary", Spec::Rollout(s))
            .validate()
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn steps_match_regions_and_groups_in_order() {
        let s = spec(serde_json::json!({
            "steps": [{"regions": ["us-east"], "proxyGroups": ["canary"]}, {"regions": ["us-east"]}, {"proxyGroups": ["edge"]}],
            "bakeTime": "2s", "maxErrorRate": 0.05, "minRequests": 10
        }))
        .unwrap();
        assert_eq!(s.step_of("us-east", "canary"), Some(0));
        assert_eq!(s.step_of("us-east", "edge"), Some(1));
        assert_eq!(s.step_of("eu-west", "edge"), Some(2));
        assert_eq!(s.step_of("eu-west", "web"), None);
        assert_eq!(s.bake_time(1), Duration::from_secs(2));
        assert_eq!(s.max_error_rate(), Fraction::from_basis_points(500));
        assert!(errors(s.clone()).is_empty(), "{:?}", errors(s));
    }

    #[test]
    fn the_error_rate_is_compared_in_integers() {
        let f = Fraction::from_basis_points(500);
        assert!(!f.exceeded_by(5, 100), "exactly 5% is not above 5%");
        assert!(f.exceeded_by(6, 100));
        assert!(!f.exceeded_by(0, 0), "no requests: nothing to judge");
        assert!(spec(serde_json::json!({"steps": [], "maxErrorRate": 1.5})).is_err());
        assert!(spec(serde_json::json!({"steps": [], "maxErrorRate": 0.00001})).is_err());
        let back = serde_json::to_string(
            &spec(serde_json::json!({"steps": [], "maxErrorRate": 0.05})).unwrap(),
        )
        .unwrap();
        assert_eq!(back, r#"{"steps":[],"maxErrorRate":0.05}"#);
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let errs = errors(spec(serde_json::json!({"steps": []})).unwrap());
        assert_eq!(
            errs,
            vec!["rollout/canary: steps: at least one step is required"]
        );
        let errs = errors(
            spec(serde_json::json!({
                "steps": [{"regions": ["us-east"]}, {}, {"regions": ["us-east"], "bakeTime": "10ms"}],
            }))
            .unwrap(),
        );
        assert!(
            errs.contains(
                &"rollout/canary: steps[1]: name at least one of regions or proxyGroups"
                    .to_string()
            ),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e
                .starts_with("rollout/canary: steps[2].regions[0]: region \"us-east\" is already")),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.starts_with("rollout/canary: steps[2].bakeTime: must be between 1s and")), "{errs:?}");
        assert_eq!(Kind::Rollout.as_str(), "rollout");
    }
}
