//! The snapshot image schema: how the engine's tables ([`Parts`]) are laid out in a snapshot,
//! owned here and versioned with the snapshot format, so that no change to the engine's structs
//! can change what is on disk. Encoded with bincode, fixed-width little-endian integers (see
//! `codec`); large arrays of fixed-size records in packed blocks (see `packed`).
//!
//! Format 3, in order:
//! - counters: `max_id u32`, `clock i64`, `contacts`, `deleted`, `clusters`, `joins` (u64 each);
//! - rows: blocks of 32-byte records `[id u32][email u32][phone u32][linked u32][created
//!   i64][updated i64]` (an identifier as its offset in its arena, `u32::MAX` for none);
//! - forest: blocks of 16-byte nodes `[parent u32][list u32][size u32][label u32]`, then the
//!   member arrays (a list of lists of slots) and the free member arrays (a list);
//! - emails, then phones: `seed u64`, `probe u64`, `len u64`, the arena (a string), and the hash
//!   table as blocks of 61-byte groups `[len u8][12 tags u8][12 symbols u32]`;
//! - displaced ids `(id u32, slot u32)`, deletion times `(slot u32, at i64)`, joins by email
//!   `(email, [phones])`, joins by phone `(phone, [emails])`, links `(slot, [slots])`: lists
//!   sorted by key;
//! - join times `(email << 32 | phone u64, at i64)`, sorted;
//! - the over-merge guards, for emails then phones: blocked values `(symbol u32, reason u8 (0
//!   admin, 1 generic), at i64, [holder slots, oldest first])`, exempt values `[symbol]`, shared
//!   counts `(symbol u32, holders u32)`, each sorted by symbol.
//!
//! A list is a `u64` count and its items; a string or a block of bytes a `u64` length and its
//! bytes. A new table is a new section at the end, and a new format number once the format
//! before it has shipped.
//!
//! Format 4 (written) is format 3 and then the erasure section:
//! - erasure times `(slot u32, at i64)`, sorted by slot;
//! - the ledger, oldest first: `(id u64, [contact ids u32, ascending], requested at i64, purge
//!   by i64, purged at: a u8 0 for none or 1 and an i64)`;
//! - the change feed's count of events, `u64`.
//!
//! Format 3 (read) has no erasure section: no row is erased, the ledger is empty and the count
//! of events 0.
//!
//! Format 2 (read): what `#[derive(Serialize)]` on the engine's structs wrote, the same records
//! in another order; its hash maps in any order.

use std::borrow::Cow;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use super::codec;
use super::packed::{i64_at, u32_at, Blocks, BlocksRef, Layout};
use crate::engine::image::{BlockedPart, GuardParts, Parts};
use crate::engine::{BlockReason, Erasure, Group, Node, Row, Stats, Strings, Timestamp};

/// The image format written.
pub(crate) const VERSION: u32 = 4;

/// A row: 32 bytes.
pub(crate) struct RowRecord;

impl Layout for RowRecord {
    type Item = Row;
    const SIZE: usize = 32;

    fn pack(row: &Row, out: &mut Vec<u8>) {
        for n in [row.id, row.email, row.phone, row.linked] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&row.created.to_le_bytes());
        out.extend_from_slice(&row.updated.to_le_bytes());
    }

    fn unpack(b: &[u8]) -> Row {
        Row {
            id: u32_at(b, 0),
            email: u32_at(b, 4),
            phone: u32_at(b, 8),
            linked: u32_at(b, 12),
            created: i64_at(b, 16),
            updated: i64_at(b, 24),
        }
    }
}

/// A forest node: 16 bytes.
pub(crate) struct NodeRecord;

impl Layout for NodeRecord {
    type Item = Node;
    const SIZE: usize = 16;

    fn pack(node: &Node, out: &mut Vec<u8>) {
        for n in [node.parent, node.list, node.size, node.label] {
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    fn unpack(b: &[u8]) -> Node {
        Node {
            parent: u32_at(b, 0),
            list: u32_at(b, 4),
            size: u32_at(b, 8),
            label: u32_at(b, 12),
        }
    }
}

/// A hash table group: its length, 12 tags, 12 symbols; 61 bytes.
pub(crate) struct GroupRecord;

const SLOTS: usize = 12;

impl Layout for GroupRecord {
    type Item = Group;
    const SIZE: usize = 1 + SLOTS + 4 * SLOTS;

    fn pack(group: &Group, out: &mut Vec<u8>) {
        out.push(group.len);
        out.extend_from_slice(&group.tags);
        for sym in group.syms {
            out.extend_from_slice(&sym.to_le_bytes());
        }
    }

    fn unpack(b: &[u8]) -> Group {
        let syms = &b[1 + SLOTS..];
        Group {
            len: b[0],
            tags: b[1..1 + SLOTS].try_into().expect("SLOTS tags"),
            syms: std::array::from_fn(|i| u32_at(syms, 4 * i)),
        }
    }
}

/// A key-sorted list of a map's entries.
type Entries<K, V> = Vec<(K, V)>;

#[derive(Serialize, Deserialize)]
struct Counters {
    max_id: u32,
    clock: i64,
    contacts: u64,
    deleted: u64,
    clusters: u64,
    joins: u64,
}

#[derive(Serialize)]
struct StringsRef<'a> {
    seed: u64,
    probe: u64,
    len: u64,
    arena: &'a str,
    groups: BlocksRef<'a, GroupRecord>,
}

impl<'a> StringsRef<'a> {
    fn of(s: &'a Strings<'_>) -> StringsRef<'a> {
        StringsRef {
            seed: s.seed,
            probe: s.probe,
            len: s.len as u64,
            arena: &s.arena,
            groups: BlocksRef(&s.groups),
        }
    }
}

#[derive(Deserialize)]
struct StringsV3 {
    seed: u64,
    probe: u64,
    len: u64,
    arena: String,
    groups: Blocks<GroupRecord>,
}

/// Format 4, to write.
#[derive(Serialize)]
struct ImageRef<'a> {
    counters: Counters,
    rows: BlocksRef<'a, RowRecord>,
    nodes: BlocksRef<'a, NodeRecord>,
    lists: &'a [Vec<u32>],
    free: &'a [u32],
    emails: StringsRef<'a>,
    phones: StringsRef<'a>,
    displaced: &'a [(u32, u32)],
    deleted_at: &'a [(u32, i64)],
    joins_by_email: &'a [(u32, Vec<u32>)],
    joins_by_phone: &'a [(u32, Vec<u32>)],
    links: &'a [(u32, Vec<u32>)],
    join_times: &'a [(u64, i64)],
    guards: [GuardsV3; 2],
}

/// The guards of one kind of identifier, as format 3 lays them out.
#[derive(Serialize, Deserialize)]
struct GuardsV3 {
    blocked: Vec<(u32, u8, i64, Vec<u32>)>,
    exempt: Vec<u32>,
    shared: Vec<(u32, u32)>,
}

impl GuardsV3 {
    fn of(parts: &GuardParts) -> GuardsV3 {
        let reason = |r: BlockReason| match r {
            BlockReason::Admin => 0,
            BlockReason::Generic => 1,
        };
        GuardsV3 {
            blocked: (parts.blocked.iter())
                .map(|b| (b.sym, reason(b.reason), b.at, b.holders.clone()))
                .collect(),
            exempt: parts.exempt.clone(),
            shared: parts.shared.clone().unwrap_or_default(),
        }
    }

    fn into_parts(self) -> io::Result<GuardParts> {
        let blocked = (self.blocked.into_iter())
            .map(|(sym, reason, at, holders)| {
                let reason = match reason {
                    0 => BlockReason::Admin,
                    1 => BlockReason::Generic,
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("no block reason {other}"),
                        ))
                    }
                };
                Ok(BlockedPart {
                    sym,
                    reason,
                    at,
                    holders,
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(GuardParts {
            blocked,
            exempt: self.exempt,
            shared: Some(self.shared),
        })
    }
}

/// The section format 4 adds after format 3's.
#[derive(Serialize, Deserialize)]
struct ErasureSection {
    erased_at: Entries<u32, i64>,
    ledger: Vec<ErasureV4>,
    events: u64,
}

#[derive(Serialize, Deserialize)]
struct ErasureV4 {
    id: u64,
    contacts: Vec<u32>,
    requested_at: i64,
    purge_by: i64,
    purged_at: Option<i64>,
}

impl ErasureSection {
    fn of(parts: &Parts<'_>) -> ErasureSection {
        ErasureSection {
            erased_at: parts.erased_at.clone(),
            ledger: (parts.erasures.iter())
                .map(|e| ErasureV4 {
                    id: e.id,
                    contacts: e.contacts.clone(),
                    requested_at: e.requested_at.0,
                    purge_by: e.purge_by.0,
                    purged_at: e.purged_at.map(|t| t.0),
                })
                .collect(),
            events: parts.events,
        }
    }

    /// Adds the section to the parts of the format 3 image before it.
    fn into(self, mut parts: Parts<'static>) -> Parts<'static> {
        parts.stats.erased = self.erased_at.len();
        parts.erased_at = self.erased_at;
        parts.erasures = (self.ledger.into_iter())
            .map(|e| Erasure {
                id: e.id,
                contacts: e.contacts,
                requested_at: Timestamp(e.requested_at),
                purge_by: Timestamp(e.purge_by),
                purged_at: e.purged_at.map(Timestamp),
            })
            .collect();
        parts.events = self.events;
        parts
    }
}

/// Format 3, read (and the first section of format 4).
#[derive(Deserialize)]
struct ImageV3 {
    counters: Counters,
    rows: Blocks<RowRecord>,
    nodes: Blocks<NodeRecord>,
    lists: Vec<Vec<u32>>,
    free: Vec<u32>,
    emails: StringsV3,
    phones: StringsV3,
    displaced: Entries<u32, u32>,
    deleted_at: Entries<u32, i64>,
    joins_by_email: Entries<u32, Vec<u32>>,
    joins_by_phone: Entries<u32, Vec<u32>>,
    links: Entries<u32, Vec<u32>>,
    join_times: Entries<u64, i64>,
    guards: [GuardsV3; 2],
}

/// Writes `parts` in the current format.
pub(crate) fn encode(parts: &Parts<'_>, out: impl Write) -> io::Result<()> {
    let image = ImageRef {
        counters: Counters {
            max_id: parts.max_id,
            clock: parts.clock,
            contacts: parts.stats.contacts as u64,
            deleted: parts.stats.deleted as u64,
            clusters: parts.stats.clusters as u64,
            joins: parts.stats.joins as u64,
        },
        rows: BlocksRef(&parts.rows),
        nodes: BlocksRef(&parts.nodes),
        lists: &parts.lists,
        free: &parts.free,
        emails: StringsRef::of(&parts.emails),
        phones: StringsRef::of(&parts.phones),
        displaced: &parts.displaced,
        deleted_at: &parts.deleted_at,
        joins_by_email: &parts.joins_by_email,
        joins_by_phone: &parts.joins_by_phone,
        links: &parts.links,
        join_times: &parts.join_times,
        guards: [
            GuardsV3::of(&parts.guards[0]),
            GuardsV3::of(&parts.guards[1]),
        ],
    };
    codec::encode_image(&(image, ErasureSection::of(parts)), out)
}

/// Reads an image of format `version` (2 to 4) from `input`, at most `limit` bytes.
pub fn decode(version: u32, input: impl Read, limit: u64) -> io::Result<Parts<'static>> {
    match version {
        2 => codec::decode_image::<ImageV2>(input, limit).map(ImageV2::into_parts),
        3 => codec::decode_image::<ImageV3>(input, limit).and_then(ImageV3::into_parts),
        4 => {
            let (image, erasure) = codec::decode_image::<(ImageV3, ErasureSection)>(input, limit)?;
            Ok(erasure.into(image.into_parts()?))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no image format {version}"),
        )),
    }
}

fn count(n: u64) -> usize {
    // A count past the address space holds what no table can: the check refuses it.
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl Counters {
    fn stats(&self) -> Stats {
        Stats {
            contacts: count(self.contacts),
            deleted: count(self.deleted),
            clusters: count(self.clusters),
            joins: count(self.joins),
            erased: 0,
        }
    }
}

impl StringsV3 {
    fn into_parts(self) -> Strings<'static> {
        Strings {
            arena: Cow::Owned(self.arena),
            groups: Cow::Owned(self.groups.0),
            len: count(self.len),
            seed: self.seed,
            probe: self.probe,
            aligned: true,
        }
    }
}

impl ImageV3 {
    fn into_parts(self) -> io::Result<Parts<'static>> {
        let [emails, phones] = self.guards;
        Ok(Parts {
            join_times: self.join_times,
            guards: [emails.into_parts()?, phones.into_parts()?],
            rows: Cow::Owned(self.rows.0),
            nodes: Cow::Owned(self.nodes.0),
            lists: Cow::Owned(self.lists),
            free: Cow::Owned(self.free),
            emails: self.emails.into_parts(),
            phones: self.phones.into_parts(),
            displaced: self.displaced,
            deleted_at: self.deleted_at,
            joins_by_email: self.joins_by_email,
            joins_by_phone: self.joins_by_phone,
            links: self.links,
            max_id: self.counters.max_id,
            clock: self.counters.clock,
            stats: self.counters.stats(),
            erased_at: Vec::new(),
            erasures: Vec::new(),
            events: 0,
        })
    }
}

/// Format 2: the engine's fields in their declaration order, as serde derived them; a hash map
/// is a count and its entries, which reads as a list of pairs.
#[derive(Deserialize)]
struct ImageV2 {
    rows: Blocks<RowRecord>,
    displaced: Entries<u32, u32>,
    deleted_at: Entries<u32, i64>,
    emails: StringsV2,
    phones: StringsV2,
    forest: ForestV2,
    joins_by_email: Entries<u32, Vec<u32>>,
    joins_by_phone: Entries<u32, Vec<u32>>,
    links: Entries<u32, Vec<u32>>,
    max_id: u32,
    clock: i64,
    stats: StatsV2,
}

#[derive(Deserialize)]
struct StringsV2 {
    arena: String,
    table: TableV2,
    seed: u64,
    probe: u64,
}

#[derive(Deserialize)]
struct TableV2 {
    groups: Blocks<GroupRecord>,
    len: u64,
}

#[derive(Deserialize)]
struct ForestV2 {
    nodes: Blocks<NodeRecord>,
    lists: Vec<Vec<u32>>,
    free: Vec<u32>,
}

#[derive(Deserialize)]
struct StatsV2 {
    contacts: u64,
    deleted: u64,
    clusters: u64,
    joins: u64,
}

impl StringsV2 {
    fn into_parts(self) -> Strings<'static> {
        Strings {
            arena: Cow::Owned(self.arena),
            groups: Cow::Owned(self.table.groups.0),
            len: count(self.table.len),
            seed: self.seed,
            probe: self.probe,
            aligned: false,
        }
    }
}

impl ImageV2 {
    fn into_parts(self) -> Parts<'static> {
        let by_key = |mut entries: Entries<u32, Vec<u32>>| {
            entries.sort_unstable_by_key(|e| e.0);
            entries
        };
        let mut displaced = self.displaced;
        displaced.sort_unstable();
        let mut deleted_at = self.deleted_at;
        deleted_at.sort_unstable();
        Parts {
            join_times: Vec::new(),
            guards: Default::default(),
            rows: Cow::Owned(self.rows.0),
            nodes: Cow::Owned(self.forest.nodes.0),
            lists: Cow::Owned(self.forest.lists),
            free: Cow::Owned(self.forest.free),
            emails: self.emails.into_parts(),
            phones: self.phones.into_parts(),
            displaced,
            deleted_at,
            joins_by_email: by_key(self.joins_by_email),
            joins_by_phone: by_key(self.joins_by_phone),
            links: by_key(self.links),
            max_id: self.max_id,
            clock: self.clock,
            stats: Stats {
                contacts: count(self.stats.contacts),
                deleted: count(self.stats.deleted),
                clusters: count(self.stats.clusters),
                joins: count(self.stats.joins),
                erased: 0,
            },
            erased_at: Vec::new(),
            erasures: Vec::new(),
            events: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Email, Phone};
    use crate::engine::{Engine, Query, Timestamp};

    fn small_engine() -> Engine {
        let mut engine = Engine::new();
        for n in 0..30u32 {
            let email = Email::parse(&format!("u{}@x.io", n % 11)).unwrap();
            let phone = Phone::parse(&format!("{}", 100 + n % 7)).unwrap();
            let query = Query::new(email, phone).unwrap();
            let plan = engine
                .plan_identify(&query, Timestamp(1_000 + i64::from(n)))
                .unwrap();
            for change in &plan.changes {
                engine.apply(change).unwrap();
            }
        }
        engine
    }

    #[test]
    fn an_image_decodes_to_the_parts_it_was_encoded_from() {
        let engine = small_engine();
        let mut bytes = Vec::new();
        encode(&engine.parts(), &mut bytes).unwrap();
        let parts = decode(VERSION, &bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(parts, engine.parts());
    }

    #[test]
    fn format_4_carries_the_erasures_and_the_count_of_events() {
        use crate::engine::{Op, Target};
        let mut engine = small_engine();
        for target in [Target::Contact(3), Target::Contact(4)] {
            let op = Op::Erase {
                target,
                purge_within_ms: 1000,
            };
            let plan = engine.plan(&op, Timestamp(5_000)).unwrap();
            for fact in &plan.facts {
                engine.apply(fact).unwrap();
            }
        }
        let plan = engine.plan(&Op::Purge { erasures: vec![1] }, Timestamp(6_000));
        engine.apply(&plan.unwrap().facts[0]).unwrap();
        engine.advance_events(7);
        let mut bytes = Vec::new();
        encode(&engine.parts(), &mut bytes).unwrap();
        let parts = decode(VERSION, &bytes[..], bytes.len() as u64).unwrap();
        assert_eq!(parts, engine.parts());
        assert_eq!(
            (parts.erasures.len(), parts.erased_at.len(), parts.events),
            (2, 2, 7)
        );
        let loaded = Engine::from_parts(parts).unwrap();
        assert_eq!(loaded.erasure(1).unwrap().purged_at, Some(Timestamp(6_000)));
    }

    #[test]
    fn a_block_that_ends_inside_a_record_is_refused() {
        let engine = small_engine();
        let mut bytes = Vec::new();
        encode(&engine.parts(), &mut bytes).unwrap();
        // Counters (44 bytes), the count of row blocks (8), the first block's length (8).
        let at = 44 + 8;
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        bytes[at..at + 8].copy_from_slice(&(len - 1).to_le_bytes());
        bytes.remove(at + 8);
        let error = decode(VERSION, &bytes[..], bytes.len() as u64)
            .err()
            .unwrap();
        assert!(error.to_string().contains("inside a record"), "{error}");
    }
}
