//! Encoding of openraft messages for the peer transport: one format-version
//! byte, then bincode. A peer that speaks another version gets a clear error
//! instead of a garbled message.
//!
//! Decoding goes through the store's input-bounded decoder: a length prefix
//! that claims more bytes than the message holds is refused before anything
//! is allocated, so a short malformed message (or a bad reply to a leader)
//! cannot make a node try to allocate exabytes and abort.

use serde::{de::DeserializeOwned, Serialize};

/// Version of the peer wire format. Bump together with a decoder for the old one.
pub const WIRE_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("empty peer message")]
    Empty,
    #[error("peer speaks wire format version {found}, this build speaks version {supported}; run the same meridian version on every node")]
    UnknownVersion { found: u8, supported: u8 },
    #[error("malformed peer message: {0}")]
    Malformed(String),
}

pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![WIRE_VERSION];
    // Encoding into a Vec cannot fail for the plain serde types openraft uses.
    let body = bincode::serde::encode_to_vec(msg, bincode::config::standard())
        .expect("openraft messages are always encodable");
    out.extend_from_slice(&body);
    out
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
    if version != WIRE_VERSION {
        return Err(WireError::UnknownVersion {
            found: version,
            supported: WIRE_VERSION,
        });
    }
    meridian_store::codec::decode_bounded(body).map_err(|e| WireError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests;
