//! Large arrays of fixed-size records in a snapshot image: written as blocks of packed bytes,
//! not field by field. A 10M-contact engine holds about 150M such fields (rows, forest nodes,
//! table groups), and decoding them one at a time through the reader was most of a load.
//!
//! For `#[serde(with = "packed")]`: a sequence of byte blocks, each a whole number of records.

use std::marker::PhantomData;

use serde::de::{Error, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A record of `SIZE` bytes, little-endian.
pub trait Packed: Sized {
    const SIZE: usize;
    fn pack(&self, out: &mut Vec<u8>);
    /// Reads a record from exactly `SIZE` bytes.
    fn unpack(bytes: &[u8]) -> Self;
}

/// About this many bytes a block.
const BLOCK: usize = 1 << 16;

pub fn serialize<T: Packed, S: Serializer>(items: &[T], s: S) -> Result<S::Ok, S::Error> {
    let per_block = BLOCK / T::SIZE;
    let mut seq = s.serialize_seq(Some(items.len().div_ceil(per_block)))?;
    let mut block = Vec::with_capacity(per_block * T::SIZE);
    for chunk in items.chunks(per_block) {
        block.clear();
        for item in chunk {
            item.pack(&mut block);
        }
        seq.serialize_element(&Bytes(&block))?;
    }
    seq.end()
}

pub fn deserialize<'de, T: Packed, D: Deserializer<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    d.deserialize_seq(Blocks(PhantomData))
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct Blocks<T>(PhantomData<T>);

impl<'de, T: Packed> Visitor<'de> for Blocks<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "blocks of {}-byte records", T::SIZE)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut blocks: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(Block(bytes)) = blocks.next_element()? {
            if bytes.len() % T::SIZE != 0 {
                return Err(A::Error::custom("a block ends inside a record"));
            }
            items.extend(bytes.chunks_exact(T::SIZE).map(T::unpack));
        }
        items.shrink_to_fit();
        Ok(items)
    }
}

/// One block's bytes, however the format hands them over.
struct Block(Vec<u8>);

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Block, D::Error> {
        d.deserialize_byte_buf(BlockVisitor)
    }
}

struct BlockVisitor;

impl<'de> Visitor<'de> for BlockVisitor {
    type Value = Block;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a block of bytes")
    }

    fn visit_byte_buf<E: Error>(self, bytes: Vec<u8>) -> Result<Block, E> {
        Ok(Block(bytes))
    }

    fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Block, E> {
        Ok(Block(bytes.to_vec()))
    }

    /// Formats without a byte type (JSON, in tests) give a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Block, A::Error> {
        let mut bytes = Vec::new();
        while let Some(b) = seq.next_element()? {
            bytes.push(b);
        }
        Ok(Block(bytes))
    }
}

/// The `u32` at `at` in `bytes`.
pub fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The `i64` at `at` in `bytes`.
pub fn i64_at(bytes: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
