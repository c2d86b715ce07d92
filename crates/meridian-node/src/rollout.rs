//! Long because the transitions, the controller and the rule it applies
//! (with its unit tests against a fake error source) belong together: one
//! file shows every way a run moves.
//!
//! Progressive rollouts: the run records (`rolloutrun/<id>`, see
//! `meridian_model::rollout_run`), the transitions an operator or the
//! controller makes to them, and the controller itself, which runs on the
//! leader only. Every second it looks at each progressing run: an Envoy of
//! a step already reached that NACKed a view built since the run started,
//! or a step error rate above the policy's threshold, rolls the run back
//! (the previous values are written back as current ones, in the same
//! transaction as the run's new state); a step that baked is promoted; the
//! last one completes the run. Whether a step baked is decided on each
//! node's monotonic clock from when it saw the step start (`bake`), not on
//! the leader's wall clock.
//!
//! Every write is guarded by the run's revision and carries a request id
//! made of the run id, that revision and the action, so a leader change
//! halfway through applies a transition once, and the new leader resumes
//! from the step the log holds.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meridian_model::rollout_run::{RolloutRun, RunState, KIND_ROLLOUT_RUN};
use meridian_proto::v1 as pb;
use meridian_proto::v1::cluster_service_client::ClusterServiceClient;
use meridian_store::{ObjectKey, StateMachineStore, StoredObject, Txn, TxnOp};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::ApiError;
use crate::leadership::{LeaderIs, Leadership};
use crate::membership::Membership;
use crate::metrics::WriteMetrics;
use crate::proxy_status::Proxies;
use crate::request_ids;
use crate::routing::Router;
use crate::traffic_stats::{ErrorCounts, TrafficStats};
use crate::write::ConfigWrites;

mod bake;

/// How often the controller looks at progressing runs.
const TICK: Duration = Duration::from_secs(1);
/// Terminal runs kept for `meridian rollout status`; older ones are deleted
/// when a new run starts.
pub(crate) const KEEP_FINISHED: usize = 20;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time a leader writes into a run (`step_started_at_ms` and the
/// like): its wall clock, or the log's time where that is later
/// (`write::leader_time`), so a leader stepped back does not date a step
/// minutes in the past for the next leader to read.
pub(crate) fn leader_now_ms(sm: &StateMachineStore) -> u64 {
    crate::write::leader_time::proposed_at_ms(now_ms(), sm.last_batch(), Instant::now())
}

/// Where a step's error counts come from.
pub(crate) trait StepHealth: Send + Sync + 'static {
    fn errors(
        &self,
        region: &str,
        proxy_group: Option<&str>,
        since_unix_ms: u64,
    ) -> impl Future<Output = Result<ErrorCounts, ApiError>> + Send;
}

/// The stats the Envoys push to the controllers (`traffic_stats`), summed
/// over every controller: what a step is judged by besides NACKs.
impl StepHealth for TrafficStats {
    async fn errors(
        &self,
        region: &str,
        proxy_group: Option<&str>,
        since_unix_ms: u64,
    ) -> Result<ErrorCounts, ApiError> {
        self.region_errors(region, proxy_group, since_unix_ms).await
    }
}

/// What the controller does with a progressing run this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Wait,
    Advance,
    Complete,
    RollBack(String),
}

/// The controller's rule, pure: a NACK or an error rate above the
/// threshold (once the step saw `minRequests`) rolls back at any time; a
/// baked step ([`bake::Bakes`]) advances, the last one completes the run.
pub(crate) fn decide(
    run: &RolloutRun,
    baked: bool,
    nack: Option<String>,
    counts: ErrorCounts,
) -> Decision {
    if let Some(n) = nack {
        return Decision::RollBack(n);
    }
    let rate = run.spec.max_error_rate();
    if counts.requests >= run.spec.min_requests().max(1)
        && rate.exceeded_by(counts.errors, counts.requests)
    {
        return Decision::RollBack(format!(
            "step {} error rate {}/{} upstream requests is above maxErrorRate {rate}",
            run.step + 1,
            counts.errors,
            counts.requests
        ));
    }
    match (baked, run.step + 1 >= run.spec.steps.len()) {
        (false, _) => Decision::Wait,
        (true, false) => Decision::Advance,
        (true, true) => Decision::Complete,
    }
}

/// The runs in the store and the writes that move them.
#[derive(Clone)]
pub(crate) struct Runs {
    pub(crate) sm: StateMachineStore,
    writes: ConfigWrites,
    metrics: Arc<WriteMetrics>,
}

fn run_key(id: &str) -> ObjectKey {
    ObjectKey::new(KIND_ROLLOUT_RUN, id)
}

impl Runs {
    pub(crate) fn new(
        sm: StateMachineStore,
        writes: ConfigWrites,
        metrics: Arc<WriteMetrics>,
    ) -> Self {
        Runs {
            sm,
            writes,
            metrics,
        }
    }

    pub(crate) fn writes(&self) -> &ConfigWrites {
        &self.writes
    }

    /// Every run that decodes, with its stored record, newest first.
    pub(crate) fn list(&self) -> Vec<(String, RolloutRun, StoredObject)> {
        let mut out: Vec<_> = self
            .sm
            .list(Some(KIND_ROLLOUT_RUN))
            .into_iter()
            .filter_map(|(k, o)| match RolloutRun::from_bytes(&o.value) {
                Ok(r) => Some((k.name, r, o)),
                Err(e) => {
                    warn!(rollout = %k.name, error = %e, "stored rollout run does not parse");
                    None
                }
            })
            .collect();
        out.sort_by(|a, b| {
            b.1.started_at_ms
                .cmp(&a.1.started_at_ms)
                .then(a.0.cmp(&b.0))
        });
        out
    }

    /// The run `id`; an empty id names the one active run.
    pub(crate) fn get(&self, id: &str) -> Result<(String, RolloutRun, StoredObject), ApiError> {
        let all = self.list();
        if id.is_empty() {
            let active: Vec<_> = all
                .into_iter()
                .filter(|(_, r, _)| r.state.is_active())
                .collect();
            return match active.len() {
                1 => Ok(active.into_iter().next().expect("one")),
                0 => Err(ApiError::NotFound(
                    "no rollout is active; name one (see `meridian rollout status`)".into(),
                )),
                _ => Err(ApiError::Invalid(format!(
                    "several rollouts are active ({}); name one",
                    active
                        .iter()
                        .map(|(i, _, _)| i.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            };
        }
        all.into_iter().find(|(i, _, _)| i == id).ok_or_else(|| {
            ApiError::NotFound(format!(
                "rollout {id:?}: not found; see `meridian rollout status`"
            ))
        })
    }

    /// Writes `next` for the run stored at `stored`, with `extra` ops in the
    /// same transaction.
    async fn write(
        &self,
        id: &str,
        stored: &StoredObject,
        next: &RolloutRun,
        mut extra: Vec<TxnOp>,
        action: &str,
    ) -> Result<u64, ApiError> {
        extra.push(TxnOp::Put {
            key: run_key(id),
            value: next.to_bytes(),
            expected_revision: Some(stored.revision),
        });
        let txn = Txn {
            request_id: format!("{}{id}-{}-{action}", request_ids::ROLLOUT, stored.revision),
            ops: extra,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        Ok(self.writes.submit(txn, false, deadline).await?.revision)
    }

    /// The ops that put every object of `run` back to its previous value.
    fn restore_ops(&self, run: &RolloutRun) -> Vec<TxnOp> {
        let mut ops = Vec::new();
        for o in &run.objects {
            let key = ObjectKey::new(o.kind.as_str(), o.name.clone());
            match &o.previous {
                Some(v) => ops.push(TxnOp::Put {
                    key,
                    value: serde_json::to_vec(v).unwrap_or_default(),
                    expected_revision: None,
                }),
                None if self.sm.get(&key).is_some() => ops.push(TxnOp::Delete {
                    key,
                    expected_revision: None,
                }),
                None => {}
            }
        }
        ops
    }

    /// Ends the run in `state` (rolled back or aborted) with the previous
    /// values written back. If the config refuses them (an object they
    /// name is gone), the run is halted instead: every proxy is served the
    /// previous values, and the objects stay held until an operator acts.
    pub(crate) async fn roll_back(
        &self,
        id: &str,
        stored: &StoredObject,
        run: &RolloutRun,
        state: RunState,
        reason: String,
    ) -> Result<(RolloutRun, u64), ApiError> {
        let now = leader_now_ms(&self.sm);
        let mut next = RolloutRun {
            state,
            reason: reason.clone(),
            updated_at_ms: now,
            ..run.clone()
        };
        let result = self
            .write(id, stored, &next, self.restore_ops(run), state.as_str())
            .await;
        // Counted once the halt is written (as a rollback, or a halt below).
        if state == RunState::RolledBack && matches!(result, Ok(_) | Err(ApiError::Invalid(_))) {
            self.metrics.rollout_halts.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(rev) => {
                info!(rollout = %id, policy = %run.policy, step = run.step + 1, state = state.as_str(), reason = %reason, revision = rev, "rollout rolled back");
                Ok((next, rev))
            }
            Err(ApiError::Invalid(why)) => {
                next.state = RunState::Halted;
                next.reason =
                    format!("{reason}; writing the previous values back was refused: {why}");
                let rev = self.write(id, stored, &next, Vec::new(), "halt").await?;
                warn!(rollout = %id, policy = %run.policy, reason = %next.reason, "rollout halted; the previous values are served, the objects stay held");
                Ok((next, rev))
            }
            Err(e) => Err(e),
        }
    }

    /// Moves the run one step on (or completes it).
    pub(crate) async fn promote(
        &self,
        id: &str,
        stored: &StoredObject,
        run: &RolloutRun,
        reason: &str,
    ) -> Result<(RolloutRun, u64), ApiError> {
        let now = leader_now_ms(&self.sm);
        let next = if run.step + 1 >= run.spec.steps.len() {
            RolloutRun {
                state: RunState::Complete,
                updated_at_ms: now,
                reason: reason.to_string(),
                ..run.clone()
            }
        } else {
            RolloutRun {
                step: run.step + 1,
                step_started_at_ms: now,
                updated_at_ms: now,
                reason: reason.to_string(),
                ..run.clone()
            }
        };
        let rev = self.write(id, stored, &next, Vec::new(), "promote").await?;
        info!(rollout = %id, policy = %run.policy, step = next.step + 1, steps = run.spec.steps.len(), state = next.state.as_str(), reason = %reason, revision = rev, "rollout promoted");
        Ok((next, rev))
    }

    /// Pauses or resumes; a resumed step bakes again from now.
    pub(crate) async fn set_state(
        &self,
        id: &str,
        stored: &StoredObject,
        run: &RolloutRun,
        state: RunState,
        reason: &str,
    ) -> Result<(RolloutRun, u64), ApiError> {
        let now = leader_now_ms(&self.sm);
        let next = RolloutRun {
            state,
            updated_at_ms: now,
            step_started_at_ms: if state == RunState::Progressing {
                now
            } else {
                run.step_started_at_ms
            },
            reason: reason.to_string(),
            ..run.clone()
        };
        let rev = self
            .write(id, stored, &next, Vec::new(), state.as_str())
            .await?;
        info!(rollout = %id, policy = %run.policy, state = state.as_str(), revision = rev, "rollout state changed");
        Ok((next, rev))
    }
}

/// The run as the API shows it.
pub(crate) fn to_pb(id: &str, run: &RolloutRun, revision: u64) -> pb::Rollout {
    pb::Rollout {
        id: id.to_string(),
        policy: run.policy.clone(),
        state: run.state.as_str().to_string(),
        step: run.step as u32,
        steps: run
            .spec
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| pb::RolloutStepInfo {
                regions: s.regions.clone(),
                proxy_groups: s.proxy_groups.clone(),
                bake_time_ms: run.spec.bake_time(i).as_millis(),
            })
            .collect(),
        objects: run
            .objects
            .iter()
            .map(|o| pb::RolloutObject {
                kind: o.kind.as_str().to_string(),
                name: o.name.clone(),
                created: o.previous.is_none(),
            })
            .collect(),
        started_at_ms: run.started_at_ms,
        step_started_at_ms: run.step_started_at_ms,
        updated_at_ms: run.updated_at_ms,
        reason: run.reason.clone(),
        revision,
        max_error_rate: run.spec.max_error_rate().as_f64(),
        min_requests: run.spec.min_requests(),
    }
}

/// `/metrics`: runs by state, the step of each active run, halts.
pub(crate) fn render_metrics(sm: &StateMachineStore, m: &WriteMetrics, out: &mut String) {
    use std::fmt::Write as _;
    let runs: Vec<(String, RolloutRun)> = sm
        .list(Some(KIND_ROLLOUT_RUN))
        .into_iter()
        .filter_map(|(k, o)| RolloutRun::from_bytes(&o.value).ok().map(|r| (k.name, r)))
        .collect();
    let _ = writeln!(out, "# HELP meridian_rollouts Rollout runs the store keeps, by state.\n# TYPE meridian_rollouts gauge");
    for s in RunState::ALL {
        let n = runs.iter().filter(|(_, r)| r.state == s).count();
        let _ = writeln!(out, "meridian_rollouts{{state=\"{}\"}} {n}", s.as_str());
    }
    let _ = writeln!(out, "# HELP meridian_rollout_step Step reached (1-based) by each active rollout.\n# TYPE meridian_rollout_step gauge");
    for (id, r) in runs.iter().filter(|(_, r)| r.state.is_active()) {
        let _ = writeln!(
            out,
            "meridian_rollout_step{{rollout=\"{id}\",policy=\"{}\"}} {}",
            r.policy,
            r.step + 1
        );
    }
    let _ = writeln!(
        out,
        "# HELP meridian_rollout_halts_total Rollouts this node halted and rolled back as leader.\n# TYPE meridian_rollout_halts_total counter\nmeridian_rollout_halts_total {}",
        m.rollout_halts.load(Ordering::Relaxed)
    );
}

/// Asks every controller which Envoys it serves: a step's Envoys may be
/// connected anywhere.
#[derive(Clone)]
pub(crate) struct Fleet {
    pub(crate) router: Router,
    pub(crate) membership: Membership,
    pub(crate) proxies: Proxies,
    pub(crate) me: u64,
}

impl Fleet {
    /// Every connected Envoy, and the controllers that did not answer.
    async fn proxies(&self) -> (Vec<pb::ProxyInfo>, Vec<String>) {
        let mut all = self.proxies.local();
        let mut missing = Vec::new();
        let mem = self.membership.current();
        let asks = mem
            .nodes()
            .filter(|(id, _)| **id != self.me)
            .map(|(id, info)| {
                let (id, ch) = (*id, self.router.api_channel(info));
                async move {
                    let mut c =
                        ClusterServiceClient::new(ch.map_err(|e| format!("node {id}: {e}"))?)
                            .max_decoding_message_size(64 * 1024 * 1024);
                    match tokio::time::timeout(
                        Duration::from_secs(2),
                        c.get_proxy_status(pb::ProxyStatusRequest { local_only: true }),
                    )
                    .await
                    {
                        Ok(Ok(r)) => Ok(r.into_inner().proxies),
                        Ok(Err(st)) => Err(format!("node {id}: {}", st.message())),
                        Err(_) => Err(format!("node {id}: no answer within 2s")),
                    }
                }
            });
        for r in futures::future::join_all(asks).await {
            match r {
                Ok(p) => all.extend(p),
                Err(e) => missing.push(e),
            }
        }
        (all, missing)
    }
}

/// The first NACK of an Envoy that `run` has reached, on a view built
/// since the run started (`since_revision`).
pub(crate) fn first_nack(
    run: &RolloutRun,
    since_revision: u64,
    proxies: &[pb::ProxyInfo],
) -> Option<String> {
    proxies
        .iter()
        .filter(|p| run.serves_new(&p.region, &p.proxy_group) && p.view_revision >= since_revision)
        .find_map(|p| {
            let t = p.types.iter().find(|t| t.state == "NACKED")?;
            Some(format!(
                "Envoy {} (region {}, proxy group {}) NACKed {}: {}",
                p.node_id, p.region, p.proxy_group, t.r#type, t.nack_message
            ))
        })
}

/// The error counts of the run's current step since it started.
async fn step_counts<H: StepHealth>(
    health: &H,
    run: &RolloutRun,
    proxies: &[pb::ProxyInfo],
) -> Result<ErrorCounts, ApiError> {
    let step = &run.spec.steps[run.step];
    let regions: BTreeSet<String> = if step.regions.is_empty() {
        proxies
            .iter()
            .filter(|p| step.matches(&p.region, &p.proxy_group))
            .map(|p| p.region.clone())
            .collect()
    } else {
        step.regions.iter().cloned().collect()
    };
    let groups: Vec<Option<&str>> = if step.proxy_groups.is_empty() {
        vec![None]
    } else {
        step.proxy_groups.iter().map(|g| Some(g.as_str())).collect()
    };
    let mut sum = ErrorCounts::default();
    for r in &regions {
        for g in &groups {
            let c = health.errors(r, *g, run.step_started_at_ms).await?;
            sum.requests += c.requests;
            sum.errors += c.errors;
            sum.envoys += c.envoys;
        }
    }
    Ok(sum)
}

pub(crate) async fn run<H: StepHealth>(
    leadership: Leadership,
    runs: Runs,
    fleet: Fleet,
    health: H,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut tick = tokio::time::interval(TICK);
    let mut said_no_stats = BTreeSet::new();
    let mut bakes = bake::Bakes::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return Ok(()),
        }
        // Every node notes when it saw each step start, so that a new
        // leader judges bakes by what it saw (bake.rs).
        let all = runs.list();
        bakes.observe(
            all.iter().map(|(id, r, _)| (id.as_str(), r)),
            leadership.replayed_log_found_at_start(),
            now_ms(),
            runs.sm.last_batch(),
            Instant::now(),
        );
        if !matches!(leadership.leader(), LeaderIs::Me) {
            continue;
        }
        let progressing: Vec<_> = all
            .into_iter()
            .filter(|(_, r, _)| r.state == RunState::Progressing)
            .collect();
        if progressing.is_empty() {
            continue;
        }
        let (proxies, missing) = fleet.proxies().await;
        if !missing.is_empty() {
            warn!(unanswered = %missing.join("; "), "rollout controller: some controllers did not say which Envoys they serve; judging by the others");
        }
        for (id, run, stored) in progressing {
            let nack = first_nack(&run, stored.created_revision, &proxies);
            let counts = match step_counts(&health, &run, &proxies).await {
                Ok(c) => c,
                Err(e) => {
                    warn!(rollout = %id, error = %e, "rollout controller: no error counts for the step; judging by NACKs and time");
                    ErrorCounts::default()
                }
            };
            if counts.envoys == 0 && said_no_stats.insert((id.clone(), run.step)) {
                info!(rollout = %id, step = run.step + 1, "no traffic statistics for this step: it can halt on NACKs only, not on its error rate");
            }
            let baked = bakes.baked(&id, &run, Instant::now());
            let result = match decide(&run, baked, nack, counts) {
                Decision::Wait => continue,
                Decision::Advance => runs.promote(&id, &stored, &run, "baked").await,
                Decision::Complete => runs.promote(&id, &stored, &run, "every step baked").await,
                Decision::RollBack(why) => {
                    warn!(rollout = %id, policy = %run.policy, step = run.step + 1, reason = %why, "rollout step failed; rolling back");
                    runs.roll_back(&id, &stored, &run, RunState::RolledBack, why)
                        .await
                }
            };
            if let Err(e) = result {
                // A conflict means an operator moved the run meanwhile: the
                // next tick sees the new state.
                warn!(rollout = %id, error = %e, "rollout controller: the transition was not written; trying again next tick");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use meridian_model::rollout_run::RolledObject;
    use meridian_model::spec::{Fraction, RolloutSpec, RolloutStep};
    use meridian_model::Kind;

    use super::*;

    pub(super) fn run(step: usize) -> RolloutRun {
        RolloutRun {
            policy: "p".into(),
            spec: RolloutSpec {
                steps: vec![
                    RolloutStep {
                        regions: vec!["us-east".into()],
                        ..Default::default()
                    },
                    RolloutStep {
                        regions: vec!["eu-west".into()],
                        ..Default::default()
                    },
                ],
                bake_time: Some(meridian_model::Duration::from_secs(2)),
                max_error_rate: Some(Fraction::from_basis_points(1000)),
                min_requests: Some(20),
            },
            objects: vec![RolledObject {
                kind: Kind::Route,
                name: "web".into(),
                previous: None,
            }],
            step,
            state: RunState::Progressing,
            started_at_ms: 1_000,
            step_started_at_ms: 1_000,
            updated_at_ms: 1_000,
            reason: String::new(),
        }
    }

    fn counts(requests: u64, errors: u64) -> ErrorCounts {
        ErrorCounts {
            requests,
            errors,
            envoys: 1,
        }
    }

    #[test]
    fn a_step_advances_after_its_bake_time_and_the_last_completes() {
        assert_eq!(decide(&run(0), false, None, counts(0, 0)), Decision::Wait);
        assert_eq!(decide(&run(0), true, None, counts(0, 0)), Decision::Advance);
        assert_eq!(
            decide(&run(1), true, None, counts(100, 10)),
            Decision::Complete,
            "10% is not above 10%"
        );
    }

    #[test]
    fn a_nack_or_an_error_rate_above_the_threshold_rolls_back() {
        let d = decide(
            &run(0),
            false,
            Some("Envoy e NACKed lds".into()),
            counts(0, 0),
        );
        assert_eq!(d, Decision::RollBack("Envoy e NACKed lds".into()));
        let d = decide(&run(0), false, None, counts(100, 11));
        assert!(
            matches!(d, Decision::RollBack(ref why) if why.contains("11/100")),
            "{d:?}"
        );
        // Below minRequests the rate is not judged, however bad.
        assert_eq!(decide(&run(0), false, None, counts(19, 19)), Decision::Wait);
        // No data (the default source) never halts.
        assert_eq!(
            decide(&run(0), true, None, ErrorCounts::default()),
            Decision::Advance
        );
    }

    struct Fake(ErrorCounts);
    impl StepHealth for Fake {
        async fn errors(
            &self,
            region: &str,
            group: Option<&str>,
            since: u64,
        ) -> Result<ErrorCounts, ApiError> {
            assert_eq!((region, group, since), ("eu-west", None, 1_000));
            Ok(self.0)
        }
    }

    #[tokio::test]
    async fn the_step_is_judged_by_its_own_regions_counts() {
        let c = step_counts(&Fake(counts(50, 30)), &run(1), &[])
            .await
            .unwrap();
        assert!(matches!(
            decide(&run(1), false, None, c),
            Decision::RollBack(_)
        ));
    }

    #[test]
    fn only_nacks_of_envoys_the_run_reached_count() {
        let proxy = |region: &str, rev: u64, state: &str| pb::ProxyInfo {
            node_id: format!("envoy-{region}"),
            region: region.into(),
            proxy_group: "edge".into(),
            view_revision: rev,
            types: vec![pb::ProxyTypeStatus {
                r#type: "lds".into(),
                state: state.into(),
                nack_message: "cannot bind".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = run(0);
        assert_eq!(
            first_nack(&r, 10, &[proxy("eu-west", 12, "NACKED")]),
            None,
            "not reached yet"
        );
        assert_eq!(
            first_nack(&r, 10, &[proxy("us-east", 9, "NACKED")]),
            None,
            "a NACK from before the run"
        );
        assert_eq!(first_nack(&r, 10, &[proxy("us-east", 12, "SYNCED")]), None);
        let n = first_nack(&r, 10, &[proxy("us-east", 12, "NACKED")]).unwrap();
        assert!(
            n.contains("envoy-us-east") && n.contains("cannot bind"),
            "{n}"
        );
    }
}
