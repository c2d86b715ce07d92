//! The endpoint lane's admission: agents' reports and lease changes go into
//! the log as they come, without config validation and without the config
//! guard (`base_config_seq: None`), so endpoint churn never makes config
//! writes retry. Their own guards (the cluster's claim, a lease's revision)
//! are checked at apply, like any precondition.

use super::group_commit::{Admission, Admitted, Pending};
use crate::metrics::Lane;

pub(crate) struct Unvalidated;

impl Admission for Unvalidated {
    const LANE: Lane = Lane::Endpoint;
    const MAX_BATCH: usize = 4096;

    fn admit(&mut self, queued: Vec<Pending>, _later: &mut Vec<Pending>) -> Admitted {
        Admitted {
            base_config_seq: None,
            accepted: queued,
        }
    }
}
