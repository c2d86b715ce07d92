//! The versioned on-disk and on-wire encoding of log entries, votes, log ids
//! and snapshots.
//!
//! Every blob is `[FORMAT_VERSION][bincode 2 (serde, standard config)]`;
//! snapshots additionally start with [`SNAPSHOT_MAGIC`]. Decoding never panics
//! on arbitrary input: a length prefix is never trusted beyond what the input
//! could hold (see [`decode_bounded`]).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{Entry, LogId, SnapshotMeta, StateData, Vote};

mod v1;

/// The version written by this build. It also reads versions 1 (see
/// [`v1`]) and 2: version 2 split the de-duplication table and event
/// history of the snapshot's state per write class; version 3 gives each
/// transaction its own revision ([`crate::Request::Batch`]), and its logs
/// carry a command an older build cannot apply, so it says "upgrade"
/// rather than misreading them.
pub const FORMAT_VERSION: u8 = 3;

/// Entries and snapshots of version 2 are laid out as in version 3; a
/// batch in a version 2 entry decodes as [`crate::Request::IndexedBatch`].
const V2: u8 = 2;

/// First bytes of every snapshot, so that a stray file is never taken for one.
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"MRDNSNAP";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("unsupported format version {found} (this build reads versions 1 to {supported}); upgrade meridian")]
    UnknownVersion { found: u8, supported: u8 },
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("empty data where an encoded value was expected")]
    Empty,
    #[error("not a meridian snapshot (bad magic bytes)")]
    BadMagic,
    #[error("cannot encode value: {0}")]
    Encode(String),
}

pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    encode_versioned(entry)
}

pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    decode_versioned(bytes)
}

pub fn encode_vote(vote: &Vote) -> Result<Vec<u8>, CodecError> {
    encode_versioned(vote)
}

pub fn decode_vote(bytes: &[u8]) -> Result<Vote, CodecError> {
    decode_versioned(bytes)
}

/// Encodes an optional log id (the purged and committed markers).
pub fn encode_log_id(log_id: &Option<LogId>) -> Result<Vec<u8>, CodecError> {
    encode_versioned(log_id)
}

pub fn decode_log_id(bytes: &[u8]) -> Result<Option<LogId>, CodecError> {
    decode_versioned(bytes)
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    meta: &'a SnapshotMeta,
    state: &'a StateData,
}

#[derive(Deserialize)]
struct SnapshotOwned {
    meta: SnapshotMeta,
    state: StateData,
}

/// Encodes a snapshot: `[SNAPSHOT_MAGIC][FORMAT_VERSION][bincode(meta, state)]`.
/// The same bytes are the snapshot file and what a leader streams to a follower.
pub fn encode_snapshot(meta: &SnapshotMeta, state: &StateData) -> Result<Vec<u8>, CodecError> {
    let mut out = SNAPSHOT_MAGIC.to_vec();
    out.push(FORMAT_VERSION);
    bincode::serde::encode_into_std_write(
        SnapshotRef { meta, state },
        &mut out,
        bincode::config::standard(),
    )
    .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, StateData), CodecError> {
    if bytes.is_empty() {
        return Err(CodecError::Empty);
    }
    let rest = bytes
        .strip_prefix(SNAPSHOT_MAGIC.as_slice())
        .ok_or(CodecError::BadMagic)?;
    match rest.first() {
        Some(&v1::VERSION) => Ok(decode_bounded::<v1::Snapshot>(&rest[1..])?.upgrade()),
        _ => {
            let s: SnapshotOwned = decode_versioned(rest)?;
            Ok((s.meta, s.state))
        }
    }
}

fn encode_versioned<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(out)
}

fn decode_versioned<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    // Entries, votes and log ids are the same in versions 1 and 2;
    // snapshots of version 1 are read by [`decode_snapshot`] before they
    // get here.
    if version != FORMAT_VERSION && version != V2 && version != v1::VERSION {
        return Err(CodecError::UnknownVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    decode_bounded(body)
}

/// Decodes one bincode value that must fill `body` exactly, with a byte
/// limit chosen from the input size. Every decoder of untrusted bytes (disk,
/// peers) goes through here.
///
/// bincode allocates a byte buffer or string as soon as it reads its length
/// prefix; without a limit a corrupt prefix asks for exabytes and aborts the
/// process. Every such byte must come from the input, so a limit a little
/// above the input size rejects the lie before the allocation. The limit is a
/// type parameter in bincode, hence the tiers.
pub fn decode_bounded<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    const GIB: usize = 1 << 30;
    let n = body.len();
    if n <= 64 * KIB {
        decode_limited::<T, { 128 * KIB }>(body)
    } else if n <= 16 * MIB {
        decode_limited::<T, { 32 * MIB }>(body)
    } else if n <= GIB {
        decode_limited::<T, { 2 * GIB }>(body)
    } else {
        decode_limited::<T, { 1 << 40 }>(body)
    }
}

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(body: &[u8]) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice::<T, _>(body, config)
        .map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Corrupt(format!(
            "{} trailing bytes after the encoded value",
            body.len() - used
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
