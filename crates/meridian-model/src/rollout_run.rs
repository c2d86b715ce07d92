//! The run of one rollout, as the store keeps it (`rolloutrun/<id>`): not
//! operator config but replicated state, written only by the leader through
//! the config lane, in the same transaction as the objects it changes. It
//! carries every time it needs (leader time, from the command that wrote
//! it), so the state machine's apply stays free of clocks.

use serde::{Deserialize, Serialize};

use crate::spec::RolloutSpec;
use crate::{Kind, ModelError, Object};

pub const KIND_ROLLOUT_RUN: &str = "rolloutrun";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    /// Steps up to `step` serve the new values; the controller advances it.
    Progressing,
    /// As progressing, but the controller leaves it where it is.
    Paused,
    /// Stopped on a failure whose rollback could not be written: every
    /// proxy is served the previous values, the objects stay locked.
    Halted,
    /// Stopped on a failure; the previous values were written back.
    RolledBack,
    /// Every step promoted: every proxy serves the new values.
    Complete,
    /// Stopped by an operator; the previous values were written back.
    Aborted,
}

impl RunState {
    pub const ALL: [RunState; 6] = [
        RunState::Progressing,
        RunState::Paused,
        RunState::Halted,
        RunState::RolledBack,
        RunState::Complete,
        RunState::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Progressing => "progressing",
            RunState::Paused => "paused",
            RunState::Halted => "halted",
            RunState::RolledBack => "rolled-back",
            RunState::Complete => "complete",
            RunState::Aborted => "aborted",
        }
    }

    /// Whether the run still holds its objects: no other write may touch
    /// them until it ends.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RunState::Progressing | RunState::Paused | RunState::Halted
        )
    }
}

/// One object a rollout changed, with the value it had before (`None`: it
/// did not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledObject {
    pub kind: Kind,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<serde_json::Value>,
}

impl RolledObject {
    /// The previous value as an object; `Ok(None)` when it did not exist.
    pub fn previous_object(&self) -> Result<Option<Object>, ModelError> {
        let Some(v) = &self.previous else {
            return Ok(None);
        };
        let bytes = serde_json::to_vec(v).unwrap_or_default();
        Object::from_stored(self.kind.as_str(), &self.name, &bytes).map(Some)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRun {
    /// The policy's name, and its spec as it was when the run started: a
    /// policy edited mid-run changes later runs only.
    pub policy: String,
    pub spec: RolloutSpec,
    pub objects: Vec<RolledObject>,
    /// Index of the step reached: proxies of steps `0..=step` serve the new
    /// values while the run progresses.
    pub step: usize,
    pub state: RunState,
    pub started_at_ms: u64,
    /// When the current step started (or was resumed): its bake time runs
    /// from here.
    pub step_started_at_ms: u64,
    pub updated_at_ms: u64,
    /// Why the run stopped or last changed state (a NACK, an error rate,
    /// an operator), empty while nothing happened.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl RolloutRun {
    /// Whether the proxies of (region, group) are served the new values.
    /// Once a run ends, what is stored is what everyone is served.
    pub fn serves_new(&self, region: &str, proxy_group: &str) -> bool {
        match self.state {
            RunState::Progressing | RunState::Paused => self
                .spec
                .step_of(region, proxy_group)
                .is_some_and(|s| s <= self.step),
            RunState::Halted => false,
            RunState::RolledBack | RunState::Complete | RunState::Aborted => true,
        }
    }

    pub fn holds(&self, kind: Kind, name: &str) -> bool {
        self.state.is_active()
            && self
                .objects
                .iter()
                .any(|o| o.kind == kind && o.name == name)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and checks a stored run: a run the controller could not act
    /// on (no steps, a step past the end) is refused before it is stored.
    pub fn from_bytes(bytes: &[u8]) -> Result<RolloutRun, String> {
        let run: RolloutRun = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if run.spec.steps.is_empty() {
            return Err("spec.steps: a run needs at least one step".into());
        }
        if run.step >= run.spec.steps.len() {
            return Err(format!(
                "step: {} is past the last of {} steps",
                run.step,
                run.spec.steps.len()
            ));
        }
        for o in &run.objects {
            if o.kind == Kind::Secret || o.kind == Kind::Rollout {
                return Err(format!(
                    "objects: {}/{} cannot be rolled out progressively",
                    o.kind, o.name
                ));
            }
            o.previous_object().map_err(|e| e.to_string())?;
        }
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RolloutStep;

    fn run(state: RunState, step: usize) -> RolloutRun {
        let steps = ["us-east", "eu-west", "ap-south"]
            .iter()
            .map(|r| RolloutStep {
                regions: vec![r.to_string()],
                ..Default::default()
            })
            .collect();
        RolloutRun {
            policy: "regions".into(),
            spec: RolloutSpec {
                steps,
                bake_time: None,
                max_error_rate: None,
                min_requests: None,
            },
            objects: vec![RolledObject {
                kind: Kind::Route,
                name: "web".into(),
                previous: None,
            }],
            step,
            state,
            started_at_ms: 1,
            step_started_at_ms: 1,
            updated_at_ms: 1,
            reason: String::new(),
        }
    }

    #[test]
    fn steps_up_to_the_current_one_are_served_the_new_values() {
        let r = run(RunState::Progressing, 1);
        assert!(r.serves_new("us-east", "edge"));
        assert!(r.serves_new("eu-west", "edge"));
        assert!(!r.serves_new("ap-south", "edge"));
        assert!(
            !r.serves_new("elsewhere", "edge"),
            "unnamed proxies wait for completion"
        );
        assert!(!run(RunState::Halted, 1).serves_new("us-east", "edge"));
        assert!(run(RunState::Complete, 2).serves_new("elsewhere", "edge"));
        assert!(r.holds(Kind::Route, "web"));
        assert!(!run(RunState::RolledBack, 0).holds(Kind::Route, "web"));
    }

    #[test]
    fn stored_runs_round_trip_and_bad_ones_are_refused() {
        let r = run(RunState::Paused, 2);
        assert_eq!(RolloutRun::from_bytes(&r.to_bytes()).unwrap(), r);
        let past = run(RunState::Progressing, 3);
        assert!(RolloutRun::from_bytes(&past.to_bytes())
            .unwrap_err()
            .starts_with("step:"));
    }
}
