//! Fault injection inside the peer transport.
//!
//! A partition is modelled as a set of peers this node neither sends to nor
//! accepts from; delay and loss apply to every RPC. Faults are off unless a
//! test or the admin API turns them on.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meridian_store::NodeId;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Peers cut off from this node, in both directions.
    pub isolated_from: BTreeSet<NodeId>,
    /// Cut off from every peer.
    pub isolate_all: bool,
    /// Added to every RPC this node sends.
    pub delay_ms: u64,
    /// Probability in [0, 1] that an RPC is dropped.
    pub drop_rate: f64,
}

#[derive(Clone, Debug, Default)]
pub struct Faults {
    inner: Arc<RwLock<FaultConfig>>,
}

/// What to do with one RPC.
pub(crate) enum Verdict {
    Pass { delay: Option<Duration> },
    Drop,
}

/// An RPC the injected faults dropped. Callers on the peer listener answer it
/// as UNAVAILABLE, like a lost packet would look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dropped by fault injection")]
pub struct Dropped;

impl From<Dropped> for tonic::Status {
    fn from(d: Dropped) -> tonic::Status {
        tonic::Status::unavailable(d.to_string())
    }
}

impl Faults {
    pub fn set(&self, config: FaultConfig) {
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    pub fn get(&self) -> FaultConfig {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn clear(&self) {
        self.set(FaultConfig::default());
    }

    /// The faults applied to an RPC that arrived from `from`, on every
    /// service of the peer listener.
    pub fn admit(&self, from: NodeId) -> Result<(), Dropped> {
        match self.verdict(from) {
            Verdict::Drop => Err(Dropped),
            Verdict::Pass { .. } => Ok(()),
        }
    }

    /// The faults applied to an RPC about to go to `to`: waits the injected
    /// delay, or drops it.
    pub async fn send(&self, to: NodeId) -> Result<(), Dropped> {
        match self.verdict(to) {
            Verdict::Drop => Err(Dropped),
            Verdict::Pass { delay: Some(d) } => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Verdict::Pass { delay: None } => Ok(()),
        }
    }

    fn verdict(&self, peer: NodeId) -> Verdict {
        let cfg = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if cfg.isolate_all || cfg.isolated_from.contains(&peer) {
            return Verdict::Drop;
        }
        if cfg.drop_rate > 0.0 && rand::thread_rng().gen_bool(cfg.drop_rate.clamp(0.0, 1.0)) {
            return Verdict::Drop;
        }
        let delay = (cfg.delay_ms > 0).then(|| Duration::from_millis(cfg.delay_ms));
        Verdict::Pass { delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn isolation_drops_both_directions() {
        let f = Faults::default();
        assert_eq!(f.admit(2), Ok(()));
        assert_eq!(f.send(2).await, Ok(()));
        f.set(FaultConfig {
            isolated_from: BTreeSet::from([2]),
            ..Default::default()
        });
        assert_eq!(f.admit(2), Err(Dropped));
        assert_eq!(f.send(2).await, Err(Dropped));
        assert_eq!(f.admit(3), Ok(()));
        let st = tonic::Status::from(Dropped);
        assert_eq!(st.code(), tonic::Code::Unavailable);
    }
}
