//! The one place that knows the payload encoding (bincode 1.3.3), so it can be swapped.
//! Decoding has a size limit, so a damaged length cannot make it allocate without bound.
//!
//! Log records and snapshot facts are varint-encoded (small). A snapshot image (the engine's
//! tables, gigabytes at 10M contacts) is fixed-width: decoding it is a copy per field.

use std::io::{Read, Write};

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

/// The largest payload a frame may carry. A change holds at most two identifiers of a few
/// hundred bytes, so anything near this is damage, not data.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 20;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .with_limit(u64::from(MAX_PAYLOAD))
        .reject_trailing_bytes()
}

/// Appends the encoding of `value` to `out`.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    options()
        .serialize_into(out, value)
        .expect("encoding into memory fails only past MAX_PAYLOAD, which no change reaches");
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
}

fn image_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
}

/// Writes the image encoding of `value` to `out`; only writing can fail.
pub(crate) fn encode_image<T: Serialize>(value: &T, out: impl Write) -> std::io::Result<()> {
    image_options()
        .serialize_into(out, value)
        .map_err(|e| match *e {
            bincode::ErrorKind::Io(e) => e,
            other => std::io::Error::other(other),
        })
}

/// Decodes an image from `input`, reading at most `limit` bytes: a declared length can never
/// make it allocate more than the input holds. A failure to read is the reader's error as it
/// was; bytes that are not an image are `InvalidData` (an early end, `UnexpectedEof`).
pub(crate) fn decode_image<T: DeserializeOwned>(
    input: impl Read,
    limit: u64,
) -> std::io::Result<T> {
    image_options()
        .with_limit(limit)
        .deserialize_from(input)
        .map_err(|e| match *e {
            bincode::ErrorKind::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        })
}

/// The largest message between cluster members (a Raft entry, an RPC, a snapshot chunk): an
/// import carries up to 64 MiB of rows.
pub(crate) const MAX_MESSAGE: u64 = 256 << 20;

fn message_options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .with_limit(MAX_MESSAGE)
        .reject_trailing_bytes()
}

/// Encodes a message between cluster members, or an entry of the Raft log.
pub fn encode_message<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
    message_options().serialize(value)
}

pub(crate) fn decode_message<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    message_options().deserialize(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Change, Timestamp};

    #[test]
    fn changes_round_trip() {
        let change = Change::Relinked {
            id: 7,
            primary: Some(3),
            at: Timestamp(1_680_307_200_374),
        };
        let mut bytes = Vec::new();
        encode_into(&change, &mut bytes);
        assert_eq!(decode::<Change>(&bytes).unwrap(), change);
    }

    #[test]
    fn a_huge_declared_string_length_is_refused_before_allocating() {
        // Variant 2 (Joined), then a string length of 2^62 in varint form.
        let bytes = [2u8, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0x40];
        assert!(decode::<Change>(&bytes).is_err());
    }
}
