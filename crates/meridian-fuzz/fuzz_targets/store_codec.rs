//! Every blob the store reads back from disk or from a leader's snapshot:
//! log entries, votes, log-id markers and whole snapshots.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_store::codec;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode_entry(data);
    let _ = codec::decode_vote(data);
    let _ = codec::decode_log_id(data);
    if let Ok((meta, state)) = codec::decode_snapshot(data) {
        // What decodes must encode again and decode to the same value.
        let bytes = codec::encode_snapshot(&meta, &state).expect("a decoded snapshot encodes");
        let (meta2, state2) = codec::decode_snapshot(&bytes).expect("re-encoded snapshot decodes");
        assert_eq!((meta, state), (meta2, state2));
    }
});
