use openraft::testing::log_id;
use openraft::{EntryPayload, Membership};
use proptest::prelude::*;

use super::*;
use crate::types::*;

fn sample_entry(payload: EntryPayload<TypeConfig>) -> Entry {
    Entry {
        log_id: log_id(3, 1, 42),
        payload,
    }
}

fn sample_state() -> StateData {
    let mut s = StateData {
        revision: 7,
        config_seq: 2,
        ..Default::default()
    };
    s.objects.insert(
        ObjectKey::new("cluster", "web"),
        StoredObject {
            value: b"{}".to_vec(),
            revision: 7,
            created_revision: 5,
            updated_at_ms: 9,
        },
    );
    s.dedup.push(DedupEntry {
        request_id: "req-1".into(),
        outcome: TxnOutcome::Committed { revision: 7 },
        at_ms: 5,
    });
    s.retired_ids.push(4);
    s
}

fn sample_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(2, 1, 7)),
        last_membership: StoredMembership::default(),
        snapshot_id: "2-1-7-0".into(),
    }
}

#[test]
fn entries_round_trip() {
    let batch = Request::Batch(Batch {
        base_config_seq: Some(3),
        proposed_at_ms: 1_700_000_000_000,
        txns: vec![Txn {
            request_id: "r".into(),
            ops: vec![
                TxnOp::Put {
                    key: ObjectKey::new("a", "b"),
                    value: vec![1, 2, 3],
                    expected_revision: Some(0),
                },
                TxnOp::Delete {
                    key: ObjectKey::new("a", "c"),
                    expected_revision: None,
                },
            ],
        }],
    });
    let members = Membership::new(vec![[1u64, 2].into_iter().collect()], None);
    for payload in [
        EntryPayload::Blank,
        EntryPayload::Normal(batch),
        EntryPayload::Normal(Request::RetireNode { node_id: 9 }),
        EntryPayload::Membership(members),
    ] {
        let e = sample_entry(payload);
        let bytes = encode_entry(&e).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_entry(&bytes).unwrap(), e);
    }
}

#[test]
fn vote_and_log_id_round_trip() {
    let v = Vote::new_committed(5, 2);
    assert_eq!(decode_vote(&encode_vote(&v).unwrap()).unwrap(), v);
    for id in [None, Some(log_id(1, 2, 3))] {
        assert_eq!(decode_log_id(&encode_log_id(&id).unwrap()).unwrap(), id);
    }
}

#[test]
fn snapshot_round_trip() {
    let meta = sample_meta();
    let state = sample_state();
    let bytes = encode_snapshot(&meta, &state).unwrap();
    assert_eq!(&bytes[..8], SNAPSHOT_MAGIC);
    assert_eq!(bytes[8], FORMAT_VERSION);
    assert_eq!(decode_snapshot(&bytes).unwrap(), (meta, state));
}

#[test]
fn unknown_version_is_named() {
    let mut bytes = encode_vote(&Vote::new(1, 1)).unwrap();
    bytes[0] = 7;
    let err = decode_vote(&bytes).unwrap_err();
    assert_eq!(
        err,
        CodecError::UnknownVersion {
            found: 7,
            supported: 3
        }
    );
    assert_eq!(
        err.to_string(),
        "unsupported format version 7 (this build reads versions 1 to 3); upgrade meridian"
    );
}

/// The state of a version 1 snapshot, laid out as version 1 wrote it.
#[derive(serde::Serialize)]
struct StateV1 {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    objects: std::collections::BTreeMap<ObjectKey, StoredObject>,
    revision: u64,
    config_seq: u64,
    dedup: Vec<(String, TxnOutcome)>,
    events: Vec<Event>,
    retired_ids: Vec<NodeId>,
}

#[test]
fn a_version_1_snapshot_and_entry_still_decode() {
    let meta = sample_meta();
    let current = sample_state();
    let event = Event {
        key: ObjectKey::new("cluster", "web"),
        revision: 7,
        updated_at_ms: 9,
        value: Some(b"{}".to_vec()),
        prev_value: None,
    };
    let old = StateV1 {
        last_applied: current.last_applied,
        last_membership: current.last_membership.clone(),
        objects: current.objects.clone(),
        revision: current.revision,
        config_seq: current.config_seq,
        dedup: vec![("req-1".into(), TxnOutcome::Committed { revision: 7 })],
        events: vec![event.clone()],
        retired_ids: current.retired_ids.clone(),
    };
    let mut bytes = SNAPSHOT_MAGIC.to_vec();
    bytes.push(1);
    bincode::serde::encode_into_std_write((&meta, &old), &mut bytes, bincode::config::standard())
        .unwrap();
    let (decoded_meta, state) = decode_snapshot(&bytes).unwrap();
    assert_eq!(decoded_meta, meta);
    // The shared table and history are the config class's now.
    let expected = StateData {
        dedup: vec![DedupEntry {
            request_id: "req-1".into(),
            outcome: TxnOutcome::Committed { revision: 7 },
            at_ms: 0,
        }],
        events: vec![event],
        ..current
    };
    assert_eq!(state, expected);

    // Entries are laid out as in version 1.
    let e = sample_entry(EntryPayload::Normal(Request::RetireNode { node_id: 9 }));
    let mut bytes = encode_entry(&e).unwrap();
    bytes[0] = 1;
    assert_eq!(decode_entry(&bytes).unwrap(), e);
}

/// The command as versions 1 and 2 wrote it.
#[derive(serde::Serialize)]
enum RequestV2 {
    Batch(Batch),
    #[allow(dead_code)]
    Noop,
}

#[test]
fn a_version_2_batch_decodes_as_an_indexed_batch() {
    let b = Batch {
        base_config_seq: Some(1),
        proposed_at_ms: 5,
        txns: vec![Txn {
            request_id: "r".into(),
            ops: vec![TxnOp::Delete {
                key: ObjectKey::new("a", "b"),
                expected_revision: None,
            }],
        }],
    };
    let cfg = bincode::config::standard();
    let old = bincode::serde::encode_to_vec(RequestV2::Batch(b.clone()), cfg).unwrap();
    assert_eq!(
        decode_bounded::<Request>(&old).unwrap(),
        Request::IndexedBatch(b.clone())
    );
    // The same entry, versioned 2 as the old build wrote it.
    let e = sample_entry(EntryPayload::Normal(Request::IndexedBatch(b)));
    let mut bytes = encode_entry(&e).unwrap();
    bytes[0] = 2;
    assert_eq!(decode_entry(&bytes).unwrap(), e);
}

#[test]
fn malformed_inputs_are_errors() {
    assert_eq!(decode_entry(&[]).unwrap_err(), CodecError::Empty);
    assert_eq!(decode_snapshot(&[]).unwrap_err(), CodecError::Empty);
    assert_eq!(
        decode_snapshot(b"NOTASNAPSHOT").unwrap_err(),
        CodecError::BadMagic
    );
    let mut snap = SNAPSHOT_MAGIC.to_vec();
    snap.push(9);
    assert!(matches!(
        decode_snapshot(&snap),
        Err(CodecError::UnknownVersion { found: 9, .. })
    ));
    // A vote followed by garbage is not a vote.
    let mut bytes = encode_vote(&Vote::new(1, 1)).unwrap();
    bytes.push(0);
    assert!(matches!(decode_vote(&bytes), Err(CodecError::Corrupt(_))));
    // A length prefix claiming 2^64-1 bytes must not allocate them.
    let mut huge = vec![FORMAT_VERSION];
    huge.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    huge.extend_from_slice(&[253, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert!(decode_entry(&huge).is_err());
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut versioned = vec![FORMAT_VERSION];
        versioned.extend_from_slice(&body);
        let _ = decode_entry(&body);
        let _ = decode_entry(&versioned);
        let _ = decode_vote(&versioned);
        let _ = decode_log_id(&versioned);
        let mut snap = SNAPSHOT_MAGIC.to_vec();
        snap.extend_from_slice(&versioned);
        let _ = decode_snapshot(&snap);
        let _ = decode_snapshot(&body);
    }

    #[test]
    fn corrupting_one_byte_never_panics(pos in 0usize..4096, byte in any::<u8>()) {
        let meta = SnapshotMeta { last_log_id: Some(log_id(2, 1, 7)), ..Default::default() };
        let mut bytes = encode_snapshot(&meta, &sample_state()).unwrap();
        let i = pos % bytes.len();
        bytes[i] = byte;
        let _ = decode_snapshot(&bytes);
    }
}
#[test]
fn byte_values_encode_as_a_plain_vec_of_u8_did() {
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Fast(#[serde(with = "crate::bytes")] Vec<u8>);
    let cfg = bincode::config::standard();
    for v in [vec![], vec![1, 2, 3], vec![7; 70_000]] {
        let fast = bincode::serde::encode_to_vec(Fast(v.clone()), cfg).unwrap();
        assert_eq!(fast, bincode::serde::encode_to_vec(&v, cfg).unwrap());
        assert_eq!(decode_bounded::<Fast>(&fast).unwrap(), Fast(v));
    }
    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct FastOption(#[serde(with = "crate::bytes::option")] Option<Vec<u8>>);
    for v in [None, Some(vec![]), Some(vec![9; 300])] {
        let fast = bincode::serde::encode_to_vec(FastOption(v.clone()), cfg).unwrap();
        assert_eq!(fast, bincode::serde::encode_to_vec(&v, cfg).unwrap());
        assert_eq!(decode_bounded::<FastOption>(&fast).unwrap(), FastOption(v));
    }
}
