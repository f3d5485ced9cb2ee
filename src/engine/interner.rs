//! Identifier strings stored once, each with one `u32` value beside it (the engine keeps there
//! the slot of a live row holding the identifier).
//!
//! One arena holds each string as `[value][length][text]`, and a symbol is the string's offset
//! in the arena: the text and the value of a symbol are one read away, with no table of ends and
//! no separate value array (at 10M identifiers each of those would cost 4 bytes a string and a
//! cache miss a lookup). The hash table holds symbols (4 bytes each) and hashes through the arena.
//!
//! The arena is a `String`, so handing out a text needs no UTF-8 check (that check was 5 to 8%
//! of an answer): the value and the length are written in 7-bit bytes, which are ASCII.
//!
//! A snapshot holds the arena and the table as they are, so loading one rehashes nothing. The
//! hash is foldhash with a seed drawn when the interner is made and saved with it.

use std::hash::BuildHasher;

use foldhash::fast::FixedState;
use std::borrow::Cow;

use super::symtable::{Group, Home, SymTable};

/// A number standing for one distinct string: its offset in the arena.
pub type Sym = u32;

/// No symbol: no string, or (as a value) no holder.
pub(crate) const NONE: u32 = u32::MAX;

/// Entries start at multiples of `1 << SHIFT` bytes and a symbol is its entry's offset shifted
/// right by `SHIFT`, so a `u32` symbol reaches 16 GiB of arena: more than the rest of the engine
/// leaves room for beside it on a machine of this class, so identifier storage is bounded by
/// memory, not by the symbol's width. The padding costs 1.5 bytes a string on average.
pub(crate) const SHIFT: u32 = 2;
const ALIGN: usize = 1 << SHIFT;

/// The most arena symbols can reach (the symbol NONE is never an entry's).
const MAX_ARENA: usize = (NONE as usize) << SHIFT;

/// Where the entry of `sym` starts in the arena.
fn offset(sym: Sym) -> usize {
    (sym as usize) << SHIFT
}

/// `at` rounded up to where an entry may start.
fn aligned(at: usize) -> usize {
    at.next_multiple_of(ALIGN)
}

/// A length below this takes one byte; a longer one is this byte, then the length in `WIDE`.
const LONG: u8 = 0x7F;
/// A `u32` in 7-bit bytes, least significant first.
const WIDE: usize = 5;
/// The value comes first in an entry, in `WIDE` bytes.
const VALUE: usize = WIDE;

/// One lookup in progress: what is sought, and what has been read so far.
struct Probe<'t> {
    text: &'t str,
    hash: u64,
    home: Option<Home>,
    /// The home group's first candidate and its length byte.
    guess: Option<(Sym, u8)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Interner {
    arena: String,
    table: SymTable,
    seed: u64,
}

impl Default for Interner {
    fn default() -> Interner {
        Interner {
            arena: String::new(),
            table: SymTable::default(),
            seed: std::collections::hash_map::RandomState::new().hash_one(0u8),
        }
    }
}

impl Interner {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// The symbol of `text`, if it was ever interned.
    pub fn lookup(&self, text: &str) -> Option<Sym> {
        let probe = self.probe(Some(text));
        self.settle(self.guess(probe))
    }

    /// Looks up `a` here and `b` in `other`, their cache misses overlapped. At 10M strings a
    /// lookup misses twice (its table line, then its string), so two lookups one after the other
    /// wait for four misses in a row; here both table lines are read before either is examined,
    /// then both strings' headers, so a request naming an email and a phone waits for two.
    pub fn lookup_pair(
        &self,
        a: Option<&str>,
        other: &Interner,
        b: Option<&str>,
    ) -> (Option<Sym>, Option<Sym>) {
        let (pa, pb) = (self.probe(a), other.probe(b));
        let (pa, pb) = (self.guess(pa), other.guess(pb));
        (self.settle(pa), other.settle(pb))
    }

    /// Interns `a` here and `b` in `other` (either may be absent: NONE), new ones with `value`,
    /// their table reads overlapped as in `lookup_pair`.
    pub fn intern_pair(
        &mut self,
        a: Option<&str>,
        other: &mut Interner,
        b: Option<&str>,
        value: u32,
    ) -> (Sym, Sym) {
        self.make_room(a.is_some());
        other.make_room(b.is_some());
        let (pa, pb) = (self.probe(a), other.probe(b));
        let (pa, pb) = (self.guess(pa), other.guess(pb));
        (
            self.settle_or_add(pa, value),
            other.settle_or_add(pb, value),
        )
    }

    /// Whether `text` can be added: symbols reach `MAX_ARENA` bytes of arena (see `SHIFT`).
    /// Plans check this before anything is logged.
    pub fn has_room(&self, text: &str) -> bool {
        let entry = VALUE + 1 + WIDE + text.len();
        aligned(self.arena.len()) + entry <= MAX_ARENA
    }

    /// Whether every text of `texts`, none of them interned yet, fits beside what is.
    pub fn has_room_for<'a>(&self, texts: impl IntoIterator<Item = &'a str>) -> bool {
        let mut at = aligned(self.arena.len());
        for text in texts {
            at = aligned(at + VALUE + 1 + WIDE + text.len());
            if at > MAX_ARENA {
                return false;
            }
        }
        true
    }

    /// The symbol of `text`, interning it with `value` if it is new.
    pub fn intern(&mut self, text: &str, value: u32) -> Sym {
        self.make_room(true);
        let probe = self.probe(Some(text));
        self.settle_or_add(self.guess(probe), value)
    }

    /// Hashes `text` and copies its home group: the first read of a lookup.
    fn probe<'t>(&self, text: Option<&'t str>) -> Option<Probe<'t>> {
        let text = text?;
        let hash = self.hash(text.as_bytes());
        Some(Probe {
            text,
            hash,
            home: self.table.home(hash),
            guess: None,
        })
    }

    /// Reads the header of the home group's first candidate: the second read of a lookup.
    fn guess<'t>(&self, probe: Option<Probe<'t>>) -> Option<Probe<'t>> {
        let mut probe = probe?;
        let sym = probe.home.and_then(|home| home.first_match());
        probe.guess = sym.map(|s| (s, self.arena.as_bytes()[offset(s) + VALUE]));
        Some(probe)
    }

    /// The symbol the probe names: its guess if that is the string, none if its home group
    /// proves it absent, else what a full search finds.
    fn settle(&self, probe: Option<Probe<'_>>) -> Option<Sym> {
        let Probe {
            text,
            hash,
            home,
            guess,
        } = probe?;
        match (guess, home) {
            (Some((sym, len)), _)
                if (len == LONG || len as usize == text.len()) && self.resolve(sym) == text =>
            {
                Some(sym)
            }
            (None, Some(home)) if !home.is_full() => None,
            (_, None) => None,
            _ => self.table.find(hash, |s| self.resolve(s) == text),
        }
    }

    /// The probe's symbol, adding its string with `value` if it is new; NONE for no probe.
    fn settle_or_add(&mut self, probe: Option<Probe<'_>>, value: u32) -> Sym {
        let Some(probe) = probe else { return NONE };
        let (text, hash) = (probe.text, probe.hash);
        if let Some(sym) = self.settle(Some(probe)) {
            return sym;
        }
        assert!(self.has_room(text), "plans check the arena's room first");
        let start = aligned(self.arena.len());
        self.arena
            .extend(std::iter::repeat_n('\0', start - self.arena.len()));
        let sym = (start >> SHIFT) as Sym;
        self.arena.push_str(ascii(&wide(value)));
        match u8::try_from(text.len()) {
            Ok(len) if len < LONG => self.arena.push(char::from(len)),
            _ => {
                let len = u32::try_from(text.len()).expect("an identifier under 4 GiB");
                self.arena.push(char::from(LONG));
                self.arena.push_str(ascii(&wide(len)));
            }
        }
        self.arena.push_str(text);
        self.table.insert(hash, sym);
        sym
    }

    /// Grows the table if it is full and a string may be added.
    fn make_room(&mut self, adding: bool) {
        if adding && self.table.len() == self.table.capacity() {
            self.grow_to(self.table.capacity() * 2);
        }
    }

    /// Makes room for `additional` more strings (of the average length so far) without
    /// growing the table or the arena again.
    pub fn reserve(&mut self, additional: usize) {
        let needed = self.table.len() + additional;
        if needed > self.table.capacity() {
            self.grow_to(needed);
        }
        let average = self.arena.len().checked_div(self.table.len()).unwrap_or(32);
        self.arena.reserve(additional * average);
    }

    /// Rebuilds the table with room for `capacity` strings, inserting every symbol in arena
    /// order: reading the arena front to back, where a rehash in table order would read it at
    /// random, one cache miss a string.
    fn grow_to(&mut self, capacity: usize) {
        let mut table = SymTable::with_capacity(capacity.max(64));
        for sym in self.symbols() {
            table.insert(self.hash(self.resolve(sym).as_bytes()), sym);
        }
        self.table = table;
    }

    fn hash(&self, bytes: &[u8]) -> u64 {
        hash_with(self.seed, bytes)
    }

    /// Saved with a snapshot's tables, to tell on load whether this build hashes as the one that
    /// built them: the hashes of texts of every length class, folded together.
    fn probe_hash(&self) -> u64 {
        PROBE_LENGTHS.iter().fold(0, |folded: u64, &len| {
            let text: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            folded.rotate_left(7) ^ self.hash(&text)
        })
    }

    /// Every symbol, in the order the strings were added.
    pub fn symbols(&self) -> impl Iterator<Item = Sym> + '_ {
        let arena = self.arena.as_bytes();
        let mut at = 0;
        std::iter::from_fn(move || {
            let sym = (at < arena.len()).then_some((at >> SHIFT) as Sym)?;
            at = aligned(span(arena, sym).end);
            Some(sym)
        })
    }

    /// An interner from an image's parts, once they are shown to be whole: every entry of the
    /// arena in bounds with 7-bit headers and a value (holder) that `value_ok(sym, value)`
    /// accepts, and the table holding exactly the entries' symbols (as many, with the same
    /// fingerprint: a sum of each symbol mixed). Returns it with the set of its symbols, for
    /// checking what the other tables name. The table is rebuilt if this build hashes the probe
    /// texts differently (another version of foldhash), since a table from another hash would
    /// find nothing.
    pub fn from_parts(
        parts: Strings<'_>,
        value_ok: impl Fn(Sym, u32) -> bool,
    ) -> Result<(Interner, SymbolSet), String> {
        let Strings {
            arena,
            groups,
            len,
            seed,
            probe,
            aligned: is_aligned,
        } = parts;
        if !is_aligned {
            return Err("a packed arena must be realigned first".into());
        }
        let arena = arena.into_owned();
        let bytes = arena.as_bytes();
        if bytes.len() > MAX_ARENA {
            return Err("identifier arena larger than symbols can reach".into());
        }
        let mut starts = vec![0u64; ((bytes.len() >> SHIFT) + 1).div_ceil(64)];
        let (mut entries, mut fingerprint, mut at) = (0, 0u64, 0);
        while at < bytes.len() {
            let sym = (at >> SHIFT) as Sym;
            fingerprint = fingerprint.wrapping_add(mix(u64::from(sym)));
            let end = checked_end(bytes, at)
                .ok_or_else(|| format!("identifier arena damaged at byte {at}"))?;
            if !value_ok(sym, unwide(&bytes[at..at + VALUE])) {
                return Err(format!(
                    "the identifier at offset {at} names a holder that is not a live row holding it"
                ));
            }
            let next = aligned(end).min(bytes.len());
            if bytes[end..next].iter().any(|&b| b != 0) {
                return Err(format!("identifier arena damaged at byte {end}: padding"));
            }
            starts[sym as usize / 64] |= 1 << (sym % 64);
            entries += 1;
            at = aligned(end);
        }
        let table = SymTable::from_parts(groups.into_owned(), len);
        if table.check(entries, |sym| mix(u64::from(sym)))? != fingerprint {
            return Err("the identifier table names offsets that start no string".into());
        }
        let mut interner = Interner { arena, table, seed };
        if interner.probe_hash() != probe {
            interner.grow_to(entries);
        }
        Ok((interner, SymbolSet(starts)))
    }

    /// The interner's tables as they are, for an image.
    pub fn parts(&self) -> Strings<'_> {
        Strings {
            arena: Cow::Borrowed(&self.arena),
            groups: Cow::Borrowed(self.table.groups()),
            len: self.table.len(),
            seed: self.seed,
            probe: self.probe_hash(),
            aligned: true,
        }
    }

    /// The string of `sym`.
    pub fn resolve(&self, sym: Sym) -> &str {
        &self.arena[span(self.arena.as_bytes(), sym)]
    }

    /// The value kept with `sym`.
    pub fn value(&self, sym: Sym) -> u32 {
        let at = offset(sym);
        unwide(&self.arena.as_bytes()[at..at + VALUE])
    }

    /// Overwrites the text of `sym` with zero bytes in place and files the symbol under the
    /// hash of that blank text, its value NONE: the string can never be found again (no
    /// identifier holds a zero byte: emails refuse control characters, phones take digits and
    /// punctuation), and no image or memory dump taken afterwards holds its bytes or its hash.
    /// The entry keeps its length, so the arena stays one walk of entries; symbols stay valid.
    pub fn wipe(&mut self, sym: Sym) {
        let text = span(self.arena.as_bytes(), sym);
        let blank = "\0".repeat(text.len());
        let (seed, arena) = (self.seed, &self.arena);
        let home_of = |s: Sym| hash_with(seed, arena[span(arena.as_bytes(), s)].as_bytes());
        let old = home_of(sym);
        let removed = self.table.remove(old, sym, home_of);
        debug_assert!(removed, "a symbol is in the table");
        self.arena.replace_range(text, &blank);
        self.table.insert(self.hash(blank.as_bytes()), sym);
        self.set_value(sym, NONE);
    }

    pub fn set_value(&mut self, sym: Sym, value: u32) {
        let at = offset(sym);
        self.arena
            .replace_range(at..at + VALUE, ascii(&wide(value)));
    }
}

fn hash_with(seed: u64, bytes: &[u8]) -> u64 {
    FixedState::with_seed(seed).hash_one(bytes)
}

/// The lengths of the texts hashed into every snapshot's probe: foldhash hashes short, medium
/// and long strings by different paths, and a change to any of them must show.
const PROBE_LENGTHS: [usize; 10] = [0, 3, 8, 15, 16, 17, 64, 255, 256, 1000];

/// An interner's tables as an image holds them: the arena of entries `[value][length][text]`,
/// the hash table's groups and count, the hash seed, and the probe hash of the build that wrote
/// them (see `probe_hash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Strings<'a> {
    pub arena: Cow<'a, str>,
    pub groups: Cow<'a, [Group]>,
    pub len: usize,
    pub seed: u64,
    pub probe: u64,
    /// Whether entries start at multiples of `1 << SHIFT` (symbols are offsets shifted by
    /// `SHIFT`), as since format 3; before, entries were packed and symbols byte offsets.
    pub aligned: bool,
}

impl Strings<'_> {
    pub fn into_owned(self) -> Strings<'static> {
        Strings {
            arena: Cow::Owned(self.arena.into_owned()),
            groups: Cow::Owned(self.groups.into_owned()),
            len: self.len,
            seed: self.seed,
            probe: self.probe,
            aligned: self.aligned,
        }
    }

    /// No strings.
    pub fn empty() -> Strings<'static> {
        Interner::default().parts().into_owned()
    }

    /// Packed strings (an image from before aligned arenas) laid out aligned, with their table
    /// built anew, and each old symbol (a byte offset) with its new one, in order. Damage in
    /// the old arena is refused.
    pub fn realigned(self) -> Result<(Strings<'static>, Vec<(Sym, Sym)>), String> {
        let bytes = self.arena.as_bytes();
        if bytes.len() >= NONE as usize {
            return Err("identifier arena larger than 4 GiB".into());
        }
        let mut arena = String::with_capacity(bytes.len() + bytes.len() / 8);
        let (mut map, mut at) = (Vec::new(), 0);
        while at < bytes.len() {
            let end = checked_end(bytes, at)
                .ok_or_else(|| format!("identifier arena damaged at byte {at}"))?;
            let start = aligned(arena.len());
            arena.extend(std::iter::repeat_n('\0', start - arena.len()));
            arena.push_str(ascii_or_text(&self.arena, at, end)?);
            map.push((at as Sym, (start >> SHIFT) as Sym));
            at = end;
        }
        let mut interner = Interner {
            arena,
            table: SymTable::default(),
            seed: self.seed,
        };
        interner.grow_to(map.len());
        let strings = interner.parts().into_owned();
        Ok((strings, map))
    }
}

/// The entry `at..end` of `arena` (its header 7-bit, checked; its text a whole `str`).
fn ascii_or_text(arena: &str, at: usize, end: usize) -> Result<&str, String> {
    arena
        .get(at..end)
        .ok_or_else(|| format!("identifier arena damaged at byte {at}"))
}

/// The symbols of an arena's strings.
pub struct SymbolSet(Vec<u64>);

impl SymbolSet {
    pub fn contains(&self, sym: Sym) -> bool {
        let at = sym as usize;
        self.0
            .get(at / 64)
            .is_some_and(|word| word >> (at % 64) & 1 == 1)
    }
}

/// SplitMix64's finalizer: spreads a symbol over 64 bits for a set's fingerprint.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where the entry at `at` ends, if its header is 7-bit and it lies within `arena`.
fn checked_end(arena: &[u8], at: usize) -> Option<usize> {
    let header = arena.get(at..at + VALUE + 1)?;
    let (text, len) = match header[VALUE] {
        LONG => {
            let wide = arena.get(at + VALUE + 1..at + VALUE + 1 + WIDE)?;
            if wide.iter().any(|&b| b > 0x7F) {
                return None;
            }
            (at + VALUE + 1 + WIDE, unwide(wide) as usize)
        }
        len => (at + VALUE + 1, len as usize),
    };
    if header.iter().any(|&b| b > 0x7F) || text + len > arena.len() {
        return None;
    }
    Some(text + len)
}

/// `n` in `WIDE` 7-bit bytes, least significant first.
fn wide(n: u32) -> [u8; WIDE] {
    std::array::from_fn(|i| ((n >> (7 * i)) & 0x7F) as u8)
}

fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("7-bit bytes are ASCII")
}

fn unwide(bytes: &[u8]) -> u32 {
    bytes.iter().rev().fold(0, |n, &b| (n << 7) | u32::from(b))
}

/// Where the text of `sym` lies in the arena (the next entry starts at its end).
fn span(arena: &[u8], sym: Sym) -> std::ops::Range<usize> {
    let at = offset(sym) + VALUE;
    let (start, len) = match arena[at] {
        LONG => (
            at + 1 + WIDE,
            unwide(&arena[at + 1..at + 1 + WIDE]) as usize,
        ),
        len => (at + 1, len as usize),
    };
    start..start + len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_string_gets_the_same_symbol() {
        let mut i = Interner::default();
        let a = i.intern("a@x.io", 7);
        let b = i.intern("b@x.io", 8);
        assert_ne!(a, b);
        assert_eq!(i.intern("a@x.io", 9), a);
        assert_eq!(i.resolve(b), "b@x.io");
        assert_eq!(i.lookup("c@x.io"), None);
        assert_eq!(i.len(), 2);
        assert_eq!((i.value(a), i.value(b)), (7, 8));
    }

    #[test]
    fn values_change_in_place() {
        let mut i = Interner::default();
        let a = i.intern("a@x.io", 1);
        let b = i.intern("b@x.io", 2);
        i.set_value(a, u32::MAX);
        assert_eq!((i.value(a), i.value(b)), (u32::MAX, 2));
        assert_eq!(i.resolve(a), "a@x.io");
    }

    #[test]
    fn strings_of_every_length_and_script_read_back() {
        let mut i = Interner::default();
        let texts: Vec<String> = [0, 1, 126, 127, 128, 255, 300]
            .iter()
            .map(|&n| "x".repeat(n))
            .chain(["zoë@example.com".to_owned(), "電話@例え.jp".to_owned()])
            .collect();
        let syms: Vec<Sym> = texts.iter().map(|t| i.intern(t, 0)).collect();
        for (text, &sym) in texts.iter().zip(&syms) {
            assert_eq!(i.resolve(sym), text);
            assert_eq!(i.lookup(text), Some(sym));
        }
    }

    #[test]
    fn any_u32_is_a_value() {
        let mut i = Interner::default();
        let a = i.intern("a", 0);
        for v in [
            0,
            1,
            127,
            128,
            0x8000_0000,
            123_456_789,
            u32::MAX - 1,
            u32::MAX,
        ] {
            i.set_value(a, v);
            assert_eq!(i.value(a), v);
        }
        assert_eq!(i.resolve(a), "a");
    }

    #[test]
    fn a_pair_lookup_finds_what_single_lookups_find() {
        let (mut a, mut b) = (Interner::default(), Interner::default());
        for n in 0..2_000 {
            a.intern(&format!("a{n}"), n);
            b.intern(&format!("{n}"), n);
        }
        for n in (0..2_500).step_by(7) {
            let (x, y) = (format!("a{n}"), format!("{n}"));
            let want = (a.lookup(&x), b.lookup(&y));
            assert_eq!(a.lookup_pair(Some(&x), &b, Some(&y)), want);
            assert_eq!(a.lookup_pair(None, &b, Some(&y)), (None, want.1));
            assert_eq!(a.lookup_pair(Some(&x), &b, None), (want.0, None));
        }
        let empty = Interner::default();
        assert_eq!(
            empty.lookup_pair(Some("a1"), &b, Some("1")),
            (None, b.lookup("1"))
        );
    }

    #[test]
    fn a_pair_intern_adds_each_side_once() {
        let (mut a, mut b) = (Interner::default(), Interner::default());
        let (x, y) = a.intern_pair(Some("x@y.z"), &mut b, Some("123"), 5);
        assert_eq!(a.intern_pair(Some("x@y.z"), &mut b, None, 6), (x, NONE));
        assert_eq!(a.intern_pair(None, &mut b, Some("123"), 7), (NONE, y));
        assert_eq!((a.len(), b.len(), a.value(x), b.value(y)), (1, 1, 5, 5));
    }

    #[test]
    fn a_wiped_string_is_zeroed_unfindable_and_leaves_the_others_whole() {
        let mut i = Interner::default();
        let syms: Vec<Sym> = (0..3_000)
            .map(|n| i.intern(&format!("user{n}@x.io"), n))
            .collect();
        for n in (0..3_000).step_by(3) {
            i.wipe(syms[n]);
        }
        for (n, &sym) in syms.iter().enumerate() {
            let text = format!("user{n}@x.io");
            if n % 3 == 0 {
                assert_eq!(i.lookup(&text), None, "{text}");
                assert!(i.resolve(sym).bytes().all(|b| b == 0));
                assert_eq!(i.value(sym), NONE);
                assert!(!i.arena.contains(&text));
            } else {
                assert_eq!(i.lookup(&text), Some(sym), "{text}");
                assert_eq!(i.value(sym), n as u32);
            }
        }
        // The parts still make a whole interner, and a wiped text can come back as new.
        let parts = i.parts().into_owned();
        let (mut copy, _) = Interner::from_parts(parts, |_, _| true).unwrap();
        assert_eq!(copy.lookup("user1@x.io"), Some(syms[1]));
        let again = copy.intern("user0@x.io", 7);
        assert_ne!(again, syms[0]);
        assert_eq!(copy.lookup("user0@x.io"), Some(again));
    }

    #[test]
    fn many_strings_survive_table_growth() {
        let mut i = Interner::default();
        let syms: Vec<_> = (0..10_000).map(|n| i.intern(&n.to_string(), n)).collect();
        for (n, s) in syms.into_iter().enumerate() {
            assert_eq!(i.lookup(&n.to_string()), Some(s));
            assert_eq!(i.value(s), n as u32);
        }
    }
}
