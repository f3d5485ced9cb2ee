//! The one place that knows the payload encoding (bincode 1.3.3), so it can be swapped.
//! Decoding has a size limit, so a damaged length cannot make it allocate without bound.

use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

/// The largest payload a frame may carry. A change holds at most two identifiers of a few
/// hundred bytes, so anything near this is damage, not data.
pub const MAX_PAYLOAD: u32 = 1 << 20;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_varint_encoding()
        .with_little_endian()
        .with_limit(u64::from(MAX_PAYLOAD))
        .reject_trailing_bytes()
}

/// Appends the encoding of `value` to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    options()
        .serialize_into(out, value)
        .expect("encoding into memory fails only past MAX_PAYLOAD, which no change reaches");
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
    options().deserialize(bytes)
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
