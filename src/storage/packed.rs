//! Large arrays of fixed-size records in a snapshot image: written as blocks of packed bytes,
//! not field by field. A 10M-contact engine holds about 150M such fields (rows, forest nodes,
//! table groups), and decoding them one at a time through the reader was most of a load.
//!
//! On disk: a sequence of byte blocks (about 64 KiB each), each a whole number of records in the
//! record's [`Layout`].

use std::marker::PhantomData;

use serde::de::{Error, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How an `Item` is laid out as a record of `SIZE` bytes, little-endian.
pub(crate) trait Layout {
    type Item;
    const SIZE: usize;
    fn pack(item: &Self::Item, out: &mut Vec<u8>);
    /// Reads a record from exactly `SIZE` bytes.
    fn unpack(bytes: &[u8]) -> Self::Item;
}

/// Items to write as blocks of records.
pub(crate) struct BlocksRef<'a, L: Layout>(pub &'a [L::Item]);

/// Items read from blocks of records.
pub struct Blocks<L: Layout>(pub Vec<L::Item>);

impl<L: Layout> Serialize for BlocksRef<'_, L> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize::<L, S>(self.0, s)
    }
}

impl<'de, L: Layout> Deserialize<'de> for Blocks<L> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blocks<L>, D::Error> {
        d.deserialize_seq(BlocksVisitor::<L>(PhantomData))
            .map(Blocks)
    }
}

/// About this many bytes a block.
const BLOCK: usize = 1 << 16;

fn serialize<L: Layout, S: Serializer>(items: &[L::Item], s: S) -> Result<S::Ok, S::Error> {
    let per_block = BLOCK / L::SIZE;
    let mut seq = s.serialize_seq(Some(items.len().div_ceil(per_block)))?;
    let mut block = Vec::with_capacity(per_block * L::SIZE);
    for chunk in items.chunks(per_block) {
        block.clear();
        for item in chunk {
            L::pack(item, &mut block);
        }
        seq.serialize_element(&Bytes(&block))?;
    }
    seq.end()
}

struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct BlocksVisitor<L>(PhantomData<L>);

impl<'de, L: Layout> Visitor<'de> for BlocksVisitor<L> {
    type Value = Vec<L::Item>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "blocks of {}-byte records", L::SIZE)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut blocks: A) -> Result<Vec<L::Item>, A::Error> {
        let mut items = Vec::new();
        while let Some(Block(bytes)) = blocks.next_element()? {
            if bytes.len() % L::SIZE != 0 {
                return Err(A::Error::custom("a block ends inside a record"));
            }
            items.extend(bytes.chunks_exact(L::SIZE).map(L::unpack));
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
}

/// The `u32` at `at` in `bytes`.
pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The `i64` at `at` in `bytes`.
pub(crate) fn i64_at(bytes: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}
