use meridian_store::{Entry, NodeInfo, TypeConfig, Vote};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::*;

/// bincode's varint marker for "a u64 follows", then u64::MAX: a length
/// prefix that claims far more bytes than any message could hold.
const HUGE_LEN: [u8; 9] = [0xFD, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

fn with_version(body: &[u8]) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    out.extend_from_slice(body);
    out
}

#[test]
fn a_huge_length_prefix_is_refused_before_allocating() {
    // The vote's fields take a few bytes; then the entry list claims 2^64 entries.
    let vote = bincode::serde::encode_to_vec(Vote::new(1, 1), bincode::config::standard()).unwrap();
    let mut body = vote;
    body.push(0); // prev_log_id: None
    body.extend_from_slice(&HUGE_LEN);
    let err = decode::<AppendEntriesRequest<TypeConfig>>(&with_version(&body)).unwrap_err();
    assert!(matches!(err, WireError::Malformed(_)), "{err}");

    // Strings are where bincode allocates the claimed length at once: a
    // snapshot chunk whose id claims 2^64 bytes (vote, no last log id, an
    // empty membership, then the id).
    let mut snap = bincode::serde::encode_to_vec(Vote::new(1, 1), bincode::config::standard()).unwrap();
    snap.extend_from_slice(&[0, 0, 0, 0]);
    snap.extend_from_slice(&HUGE_LEN);
    let err = decode::<InstallSnapshotRequest<TypeConfig>>(&with_version(&snap)).unwrap_err();
    assert!(matches!(err, WireError::Malformed(_)), "{err}");
    let err = decode::<Vec<Entry>>(&with_version(&HUGE_LEN)).unwrap_err();
    assert!(matches!(err, WireError::Malformed(_)), "{err}");
    let err = decode::<NodeInfo>(&with_version(&HUGE_LEN)).unwrap_err();
    assert!(matches!(err, WireError::Malformed(_)), "{err}");
}

#[test]
fn truncated_trailing_and_foreign_messages_are_errors() {
    let req = VoteRequest::<u64>::new(Vote::new(3, 2), None);
    let bytes = encode(&req);
    assert_eq!(decode::<VoteRequest<u64>>(&bytes).unwrap(), req);

    for cut in 1..bytes.len() {
        assert!(decode::<VoteRequest<u64>>(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(decode::<VoteRequest<u64>>(&trailing), Err(WireError::Malformed(_))));
    assert!(matches!(decode::<VoteRequest<u64>>(&[]), Err(WireError::Empty)));
    let mut other = bytes;
    other[0] = WIRE_VERSION + 1;
    assert!(matches!(
        decode::<VoteRequest<u64>>(&other),
        Err(WireError::UnknownVersion { .. })
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic spread of inputs; the fuzz target covers the rest.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for len in 0..512usize {
        let mut buf = vec![WIRE_VERSION];
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf.push(x as u8);
        }
        let _ = decode::<AppendEntriesRequest<TypeConfig>>(&buf);
        let _ = decode::<InstallSnapshotRequest<TypeConfig>>(&buf);
        let _ = decode::<VoteRequest<u64>>(&buf);
    }
}
