//! Identifier strings stored once: one arena of bytes, and a hash table of symbol numbers that
//! hashes through the arena, so the index holds 4 bytes a string instead of a copy of it.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

/// A number standing for one distinct string.
pub type Sym = u32;

#[derive(Default, Debug, Clone)]
pub struct Interner {
    arena: String,
    /// `ends[s]` is where symbol `s` ends in `arena`; it starts where `s - 1` ends.
    ends: Vec<u32>,
    table: HashTable<Sym>,
    hasher: DefaultHashBuilder,
}

impl Interner {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// The symbol of `text`, if it was ever interned.
    pub fn lookup(&self, text: &str) -> Option<Sym> {
        let hash = self.hasher.hash_one(text);
        self.table.find(hash, |&s| self.resolve(s) == text).copied()
    }

    /// The symbol of `text`, interning it if it is new.
    pub fn intern(&mut self, text: &str) -> Sym {
        if let Some(sym) = self.lookup(text) {
            return sym;
        }
        let sym = self.ends.len() as Sym;
        self.arena.push_str(text);
        let end = u32::try_from(self.arena.len()).expect("identifier arena exceeds 4 GiB");
        self.ends.push(end);
        let (arena, ends, hasher) = (&self.arena, &self.ends, &self.hasher);
        let text_of = |s: &Sym| span(arena, ends, *s);
        self.table
            .insert_unique(hasher.hash_one(text), sym, |s| hasher.hash_one(text_of(s)));
        sym
    }

    /// The string of `sym`.
    pub fn resolve(&self, sym: Sym) -> &str {
        span(&self.arena, &self.ends, sym)
    }
}

fn span<'a>(arena: &'a str, ends: &[u32], sym: Sym) -> &'a str {
    let s = sym as usize;
    let start = if s == 0 { 0 } else { ends[s - 1] as usize };
    &arena[start..ends[s] as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_string_gets_the_same_symbol() {
        let mut i = Interner::default();
        let a = i.intern("a@x.io");
        let b = i.intern("b@x.io");
        assert_ne!(a, b);
        assert_eq!(i.intern("a@x.io"), a);
        assert_eq!(i.resolve(b), "b@x.io");
        assert_eq!(i.lookup("c@x.io"), None);
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn many_strings_survive_table_growth() {
        let mut i = Interner::default();
        let syms: Vec<_> = (0..10_000).map(|n| i.intern(&n.to_string())).collect();
        for (n, s) in syms.into_iter().enumerate() {
            assert_eq!(i.lookup(&n.to_string()), Some(s));
        }
    }
}
