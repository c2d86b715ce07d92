//! The node's identity, persisted in its data dir so that a data dir can never
//! be started as another node or in another region (which would corrupt the
//! Raft membership the log records).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::NodeError;

const FILE: &str = "identity.json";

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Identity {
    node_id: u64,
    region: String,
}

/// Returns whether the data dir is new.
pub(crate) fn check_or_create(dir: &Path, node_id: u64, region: &str) -> Result<bool, NodeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| NodeError::io(format!("create data dir {}", dir.display()), e))?;
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| {
                NodeError::Config(format!("{}: unreadable identity file: {e}", path.display()))
            })?;
            if found.node_id != node_id || found.region != region {
                return Err(NodeError::Config(format!(
                    "data dir {} belongs to node {} in region {:?}, not node {} in region {:?}; \
                     start with --node-id {} --region {} or use another --data-dir",
                    dir.display(),
                    found.node_id,
                    found.region,
                    node_id,
                    region,
                    found.node_id,
                    found.region
                )));
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity {
                node_id,
                region: region.to_string(),
            };
            let tmp = dir.join("identity.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&id).expect("plain struct"))
                .map_err(|e| NodeError::io(format!("write {}", tmp.display()), e))?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| NodeError::io(format!("sync {}", tmp.display()), e))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| NodeError::io(format!("rename {}", path.display()), e))?;
            Ok(true)
        }
        Err(e) => Err(NodeError::io(format!("read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_dir_refuses_another_identity() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_or_create(dir.path(), 1, "us-east").unwrap());
        assert!(!check_or_create(dir.path(), 1, "us-east").unwrap());
        let err = check_or_create(dir.path(), 2, "us-east")
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to node 1"), "{err}");
        let err = check_or_create(dir.path(), 1, "eu-west")
            .unwrap_err()
            .to_string();
        assert!(err.contains("region \"us-east\""), "{err}");
    }
}
