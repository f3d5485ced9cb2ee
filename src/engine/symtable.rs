//! The interner's hash table: symbols in groups of 12, each group one 64-byte cache line holding
//! the 12 symbols and an 8-bit tag of each one's hash.
//!
//! A general table (hashbrown) keeps its control bytes and its entries in two arrays, so at 10M
//! strings a lookup misses the cache twice before it reads the string, and an insert writes two
//! random lines. Here a lookup reads one line, then the string; an insert writes one line. Nothing
//! is ever removed, and a group fills from its first slot, so a group with room ends a probe.

use super::interner::Sym;

const SLOTS: usize = 12;

/// One cache line of the table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(align(64))]
pub struct Group {
    /// Slots `0..len` are in use.
    pub len: u8,
    pub tags: [u8; SLOTS],
    pub syms: [Sym; SLOTS],
}

#[derive(Clone, Debug, Default)]
pub(crate) struct SymTable {
    /// A power of two of groups, or none before the first insert.
    groups: Vec<Group>,
    len: usize,
}

impl SymTable {
    /// An empty table with room for `capacity` symbols.
    pub fn with_capacity(capacity: usize) -> SymTable {
        // At most 7/8 full, so that probes stay short.
        let groups = (capacity * 8 / 7).div_ceil(SLOTS).next_power_of_two();
        SymTable {
            groups: vec![Group::default(); groups],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// A table from an image's groups and count, unchecked: [`SymTable::check`] it before use.
    pub fn from_parts(groups: Vec<Group>, len: usize) -> SymTable {
        SymTable { groups, len }
    }

    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// How many symbols fit before the table must grow.
    pub fn capacity(&self) -> usize {
        self.groups.len() * SLOTS * 7 / 8
    }

    /// The symbol with `hash` for which `is` holds.
    pub fn find(&self, hash: u64, is: impl Fn(Sym) -> bool) -> Option<Sym> {
        if self.groups.is_empty() {
            return None;
        }
        let (mask, tag) = (self.groups.len() - 1, tag(hash));
        let mut at = hash as usize & mask;
        loop {
            let group = &self.groups[at];
            let used = group.len as usize;
            for (&t, &sym) in group.tags[..used].iter().zip(&group.syms[..used]) {
                if t == tag && is(sym) {
                    return Some(sym);
                }
            }
            if used < SLOTS {
                return None;
            }
            at = (at + 1) & mask;
        }
    }

    /// Checks a table read from a snapshot: a power of two of groups (or none), no group over
    /// full, `len` symbols in all, `entries` of them. Returns the wrapping sum of `mixed` over
    /// its symbols, for the caller to hold against the symbols it expects.
    pub fn check(&self, entries: usize, mixed: impl Fn(Sym) -> u64) -> Result<u64, String> {
        let groups = self.groups.len();
        if groups != 0 && !groups.is_power_of_two() {
            return Err(format!("identifier table of {groups} groups"));
        }
        let (mut count, mut sum) = (0, 0u64);
        for group in &self.groups {
            let used = group
                .syms
                .get(..group.len as usize)
                .ok_or("overfull group")?;
            sum = used
                .iter()
                .fold(sum, |sum, &sym| sum.wrapping_add(mixed(sym)));
            count += used.len();
        }
        if count != self.len || count != entries || count > self.capacity() {
            return Err(format!(
                "identifier table holds {count} symbols, says {}, arena has {entries}",
                self.len
            ));
        }
        Ok(sum)
    }

    /// The first group `hash` probes, copied: reading it is the point (see `Home`).
    pub(crate) fn home(&self, hash: u64) -> Option<Home> {
        let at = hash as usize & self.groups.len().wrapping_sub(1);
        let group = *self.groups.get(at)?;
        Some(Home {
            group,
            tag: tag(hash),
        })
    }

    /// Adds `sym`, which must not be in the table, and for which there must be room.
    pub fn insert(&mut self, hash: u64, sym: Sym) {
        assert!(self.len < self.capacity(), "the table is full");
        let mask = self.groups.len() - 1;
        let mut at = hash as usize & mask;
        while self.groups[at].len as usize == SLOTS {
            at = (at + 1) & mask;
        }
        let group = &mut self.groups[at];
        let slot = group.len as usize;
        group.tags[slot] = tag(hash);
        group.syms[slot] = sym;
        group.len += 1;
        self.len += 1;
    }
}

/// A copy of the group a lookup starts in. Taking copies for two lookups before examining either
/// puts both cache misses in flight at once.
#[derive(Clone, Copy)]
pub(crate) struct Home {
    group: Group,
    tag: u8,
}

impl Home {
    /// Whether the search may go on past this group (a group with room ends it).
    pub(crate) fn is_full(&self) -> bool {
        self.group.len as usize == SLOTS
    }

    /// The first symbol of the group whose tag matches: almost always the one sought, if any.
    pub(crate) fn first_match(&self) -> Option<Sym> {
        let used = self.group.len as usize;
        let at = self.group.tags[..used]
            .iter()
            .position(|&t| t == self.tag)?;
        Some(self.group.syms[at])
    }
}

/// The top byte of the hash; the low bits choose the group.
fn tag(hash: u64) -> u8 {
    (hash >> 56) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Group>(), 64);
    }

    #[test]
    fn colliding_hashes_overflow_into_the_next_groups() {
        let mut table = SymTable::with_capacity(100);
        // Every symbol in the same group with the same tag: the worst case.
        for sym in 0..50 {
            table.insert(7, sym);
        }
        for sym in 0..50 {
            assert_eq!(table.find(7, |s| s == sym), Some(sym));
        }
        assert_eq!(table.find(7, |_| false), None);
        assert_eq!(table.len(), 50);
    }
}
