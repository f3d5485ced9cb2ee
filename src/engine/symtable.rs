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

    /// Takes `sym`, stored under `hash`, out of the table (an erased value's symbol, which is
    /// put back under the hash of its blanked text). A group that was full may have ended no
    /// probe, so symbols that probed past it are moved back into the room made, the way
    /// backward-shift deletion does for linear probing: afterwards every symbol is still
    /// reached from its home without passing a group with room. `home_of` hashes a symbol's
    /// text. Whether it was there.
    pub fn remove(&mut self, hash: u64, sym: Sym, home_of: impl Fn(Sym) -> u64) -> bool {
        if self.groups.is_empty() {
            return false;
        }
        let mask = self.groups.len() - 1;
        let mut at = hash as usize & mask;
        let slot = loop {
            let group = &self.groups[at];
            let used = group.len as usize;
            if let Some(slot) = group.syms[..used].iter().position(|&s| s == sym) {
                break slot;
            }
            if used < SLOTS {
                return false;
            }
            at = (at + 1) & mask;
        };
        let was_full = self.groups[at].len as usize == SLOTS;
        self.take(at, slot);
        self.len -= 1;
        if was_full {
            self.shift_back(at, mask, home_of);
        }
        true
    }

    /// Fills the room at group `hole` (full until a symbol left it) from the groups after it.
    fn shift_back(&mut self, mut hole: usize, mask: usize, home_of: impl Fn(Sym) -> u64) {
        let mut at = (hole + 1) & mask;
        loop {
            let group = self.groups[at];
            let used = group.len as usize;
            // A symbol here whose probe passed through the hole: its home lies no nearer.
            let past = (at.wrapping_sub(hole)) & mask;
            let moved = (0..used).find(|&i| {
                let home = home_of(group.syms[i]) as usize & mask;
                (at.wrapping_sub(home) & mask) >= past
            });
            match moved {
                Some(i) => {
                    let into = &mut self.groups[hole];
                    let n = into.len as usize;
                    into.tags[n] = group.tags[i];
                    into.syms[n] = group.syms[i];
                    into.len += 1;
                    self.take(at, i);
                    if used < SLOTS {
                        return;
                    }
                    hole = at;
                }
                // Nothing after a group with room probed past it.
                None if used < SLOTS => return,
                None => {}
            }
            at = (at + 1) & mask;
        }
    }

    /// Empties slot `i` of group `at`, its last symbol taking its place.
    fn take(&mut self, at: usize, i: usize) {
        let group = &mut self.groups[at];
        let last = group.len as usize - 1;
        group.tags[i] = group.tags[last];
        group.syms[i] = group.syms[last];
        group.tags[last] = 0;
        group.syms[last] = 0;
        group.len -= 1;
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

    /// Symbols whose homes crowd a few groups, so that probes run long and wrap around.
    fn crowded(n: Sym, groups: u64) -> (SymTable, impl Fn(Sym) -> u64) {
        let hash = move |sym: Sym| {
            let home = (u64::from(sym) * 7) % groups;
            home | (u64::from(sym) << 56)
        };
        let mut table = SymTable::with_capacity(n as usize);
        for sym in 0..n {
            table.insert(hash(sym), sym);
        }
        (table, hash)
    }

    #[test]
    fn a_removed_symbol_is_gone_and_every_other_is_still_found() {
        let (mut table, hash) = crowded(300, 3);
        for gone in (0..300).step_by(7).chain([1, 2, 299]) {
            assert!(table.remove(hash(gone), gone, &hash), "{gone}");
            assert!(!table.remove(hash(gone), gone, &hash), "{gone} twice");
        }
        let gone = |s: Sym| s.is_multiple_of(7) || [1, 2, 299].contains(&s);
        for sym in 0..300 {
            let found = table.find(hash(sym), |s| s == sym);
            assert_eq!(found.is_some(), !gone(sym), "{sym}");
        }
        let left = (0..300).filter(|&s| !gone(s)).count();
        assert_eq!(table.len(), left);
        assert_eq!(table.check(left, |_| 0), Ok(0));
        // Room made is used again.
        for sym in 1000..1040 {
            table.insert(hash(sym), sym);
            assert_eq!(table.find(hash(sym), |s| s == sym), Some(sym));
        }
    }
}
