//! The engine's tables as plain data ([`Parts`]), for a snapshot to store, and the one way back
//! from them to an engine: [`Engine::from_parts`], which checks them whole first.
//!
//! The engine owns what the tables mean; storage owns how they are laid out on disk (its
//! schema, with its own version) and converts to and from `Parts`. An image is checksummed, so
//! damage on disk is caught before this; what is checked here is everything that would
//! otherwise surface later as a panic, a hang or a wrong answer on some request: every slot,
//! string and member array the tables name exists, the forest is whole (see `Forest::check`),
//! every index agrees with the rows, both halves of every join and link are kept, and every
//! counter equals what the tables hold.
//!
//! To add a table: a field here, its place in `parts` and `from_parts` (with its checks), and a
//! new section in storage's schema (a new format version once the old one has shipped).

use std::borrow::Cow;

use hashbrown::HashMap;

use super::forest::{Census, Forest, Node, Slot};
use super::guards::{Block, BlockReason, Kind, KindGuards, Limits, BLOCKED};
use super::interner::{Interner, Strings, Sym, SymbolSet, NONE};
use super::{ContactId, Engine, Erasure, Moves, Row, Stats};

/// The engine's tables: borrowed when taken from an engine, owned when read from a file.
/// Hash maps are key-sorted lists of their entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts<'a> {
    /// Every row, by slot.
    pub rows: Cow<'a, [Row]>,
    /// The forest: a node per slot, the member arrays, the free member arrays.
    pub nodes: Cow<'a, [Node]>,
    pub lists: Cow<'a, [Vec<Slot>]>,
    pub free: Cow<'a, [u32]>,
    pub emails: Strings<'a>,
    pub phones: Strings<'a>,
    /// The slot of each id not at slot `id - 1`.
    pub displaced: Vec<(ContactId, Slot)>,
    /// When each deleted row was deleted, by slot.
    pub deleted_at: Vec<(Slot, i64)>,
    /// Remembered joins, both ways: email to phones, phone to emails.
    pub joins_by_email: Vec<(Sym, Vec<Sym>)>,
    pub joins_by_phone: Vec<(Sym, Vec<Sym>)>,
    /// Remembered row-to-row links, both ways.
    pub links: Vec<(Slot, Vec<Slot>)>,
    pub max_id: ContactId,
    pub clock: i64,
    pub stats: Stats,
    /// When each join was made, where known: `(email << 32 | phone, at)`, sorted.
    pub join_times: Vec<(u64, i64)>,
    /// The guards' state for emails, then phones.
    pub guards: [GuardParts; 2],
    /// When each erased row was erased, by slot.
    pub erased_at: Vec<(Slot, i64)>,
    /// The erasure ledger, oldest first.
    pub erasures: Vec<Erasure>,
    /// The change feed's events so far (0 from formats before 4).
    pub events: u64,
}

/// The over-merge guards' state for one kind of identifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardParts {
    /// Blocked values, sorted by symbol.
    pub blocked: Vec<BlockedPart>,
    /// Values an admin unblocked, sorted.
    pub exempt: Vec<Sym>,
    /// Live holders of each value held by two or more, sorted by symbol; None from a format
    /// that did not keep them (they are counted from the rows on load).
    pub shared: Option<Vec<(Sym, u32)>>,
}

/// One blocked value: its symbol, why and when, and its live holders (slots, oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockedPart {
    pub sym: Sym,
    pub reason: BlockReason,
    pub at: i64,
    pub holders: Vec<Slot>,
}

impl Parts<'_> {
    pub fn into_owned(self) -> Parts<'static> {
        Parts {
            rows: Cow::Owned(self.rows.into_owned()),
            nodes: Cow::Owned(self.nodes.into_owned()),
            lists: Cow::Owned(self.lists.into_owned()),
            free: Cow::Owned(self.free.into_owned()),
            emails: self.emails.into_owned(),
            phones: self.phones.into_owned(),
            displaced: self.displaced,
            deleted_at: self.deleted_at,
            joins_by_email: self.joins_by_email,
            joins_by_phone: self.joins_by_phone,
            links: self.links,
            max_id: self.max_id,
            clock: self.clock,
            stats: self.stats,
            join_times: self.join_times,
            guards: self.guards,
            erased_at: self.erased_at,
            erasures: self.erasures,
            events: self.events,
        }
    }
}

/// Why an image's tables cannot be an engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the image is not a whole engine: {0}")]
pub struct ImageError(pub String);

type Checked<T = ()> = Result<T, ImageError>;

fn refuse<T>(why: impl Into<String>) -> Checked<T> {
    Err(ImageError(why.into()))
}

impl Engine {
    /// The tables, borrowed (the hash maps copied into sorted lists).
    pub fn parts(&self) -> Parts<'_> {
        let (nodes, lists, free) = self.forest.parts();
        Parts {
            rows: Cow::Borrowed(&self.rows),
            nodes: Cow::Borrowed(nodes),
            lists: Cow::Borrowed(lists),
            free: Cow::Borrowed(free),
            emails: self.emails.parts(),
            phones: self.phones.parts(),
            displaced: sorted(self.displaced.iter().map(|(&k, &v)| (k, v))),
            deleted_at: sorted(self.deleted_at.iter().map(|(&k, &v)| (k, v))),
            joins_by_email: sorted(self.joins_by_email.iter().map(|(&k, v)| (k, v.clone()))),
            joins_by_phone: sorted(self.joins_by_phone.iter().map(|(&k, v)| (k, v.clone()))),
            links: sorted(self.links.iter().map(|(&k, v)| (k, v.clone()))),
            max_id: self.max_id,
            clock: self.clock,
            stats: self.stats,
            join_times: sorted(self.join_times.iter().map(|(&k, &v)| (k, v))),
            guards: Kind::BOTH.map(|kind| {
                let g = self.guards(kind);
                GuardParts {
                    blocked: {
                        let mut b: Vec<BlockedPart> = (g.blocked.iter())
                            .map(|(&sym, block)| BlockedPart {
                                sym,
                                reason: block.reason,
                                at: block.at,
                                holders: block.holders.clone(),
                            })
                            .collect();
                        b.sort_unstable_by_key(|b| b.sym);
                        b
                    },
                    exempt: {
                        let mut e: Vec<Sym> = g.exempt.iter().copied().collect();
                        e.sort_unstable();
                        e
                    },
                    shared: Some(sorted(g.shared.iter().map(|(&k, &v)| (k, v)))),
                }
            }),
            erased_at: sorted(self.erased_at.iter().map(|(&k, &v)| (k, v))),
            erasures: self.erasures.clone(),
            events: self.events,
        }
    }

    /// An engine from an image's tables, if they are whole: the only way to build one from an
    /// image. Whatever the tables hold, this never panics, and an engine it returns never
    /// panics later on account of them.
    pub fn from_parts(parts: Parts<'_>) -> Result<Engine, ImageError> {
        let parts = realigned(parts)?;
        let rows = parts.rows.into_owned();
        if rows.len() >= NONE as usize {
            return refuse(format!("{} rows, more than slots can number", rows.len()));
        }
        let forest = Forest::from_parts(
            parts.nodes.into_owned(),
            parts.lists.into_owned(),
            parts.free.into_owned(),
        );
        let census = forest
            .check(rows.len(), |a, b| super::older(&rows, a, b))
            .map_err(ImageError)?;
        // An identifier's holder is NONE, BLOCKED for a value the blocklist names, or a live
        // row holding it.
        let blocked_syms = |g: &GuardParts| -> hashbrown::HashSet<Sym> {
            g.blocked.iter().map(|b| b.sym).collect()
        };
        let blocked = [
            blocked_syms(&parts.guards[0]),
            blocked_syms(&parts.guards[1]),
        ];
        let holds = |field: fn(&Row) -> Sym, blocked: &hashbrown::HashSet<Sym>| {
            let (rows, forest) = (&rows, &forest);
            let blocked = blocked.clone();
            move |sym: Sym, holder: u32| {
                holder == NONE
                    || (holder == BLOCKED && blocked.contains(&sym))
                    || rows
                        .get(holder as usize)
                        .is_some_and(|row| field(row) == sym)
                        && !forest.is_removed(holder)
            }
        };
        let (emails, email_set) =
            Interner::from_parts(parts.emails, holds(|r| r.email, &blocked[0]))
                .map_err(|e| ImageError(format!("emails: {e}")))?;
        let (phones, phone_set) =
            Interner::from_parts(parts.phones, holds(|r| r.phone, &blocked[1]))
                .map_err(|e| ImageError(format!("phones: {e}")))?;
        let counted = parts.guards.iter().all(|g| g.shared.is_some());
        let [email_guards, phone_guards] = parts.guards;
        let guards = [guards_of(email_guards)?, guards_of(phone_guards)?];
        let mut engine = Engine {
            rows,
            displaced: map("displaced ids", parts.displaced)?,
            deleted_at: map("deletion times", parts.deleted_at)?,
            emails,
            phones,
            forest,
            joins_by_email: map("joins by email", parts.joins_by_email)?,
            joins_by_phone: map("joins by phone", parts.joins_by_phone)?,
            links: map("links", parts.links)?,
            max_id: parts.max_id,
            clock: parts.clock,
            stats: parts.stats,
            join_times: map("join times", parts.join_times)?,
            guards,
            limits: Limits::default(),
            moves: Moves::default(),
            erased_at: map("erasure times", parts.erased_at)?,
            erasures: parts.erasures,
            events: parts.events,
        };
        engine.check_tables(census, &email_set, &phone_set)?;
        if !counted {
            engine.count_shared();
        }
        engine.check_guards(&email_set, &phone_set)?;
        engine.forest.recount();
        Ok(engine)
    }

    /// Counts the live holders of every value held by two or more (not blocked), for an image
    /// whose format did not keep them. Walks every row.
    fn count_shared(&mut self) {
        for kind in Kind::BOTH {
            let mut counts: HashMap<Sym, u32> = HashMap::new();
            for (slot, row) in self.rows.iter().enumerate() {
                let sym = Engine::sym_of(row, kind);
                if sym != NONE
                    && !self.forest.is_removed(slot as Slot)
                    && !self.is_blocked(kind, sym)
                {
                    *counts.entry(sym).or_insert(0) += 1;
                }
            }
            counts.retain(|_, n| *n >= 2);
            self.guards_mut(kind).shared = counts;
        }
    }

    /// The guards agree with the rows: each blocked value is a string whose index says
    /// BLOCKED, its holders exactly the live rows holding it, oldest first; an exempt value is
    /// a string (blocked again or not); a shared count is that of the live rows holding a value (two or
    /// more, not blocked); a join's time is a remembered join's.
    fn check_guards(&self, emails: &SymbolSet, phones: &SymbolSet) -> Checked {
        let mut counts: HashMap<(Kind, Sym), u32> = HashMap::new();
        for kind in Kind::BOTH {
            let (g, set) = (self.guards(kind), [emails, phones][kind as usize]);
            for (&sym, block) in &g.blocked {
                if !set.contains(sym) || self.index(kind).value(sym) != BLOCKED {
                    return refuse(format!(
                        "a blocked {} is not indexed as blocked",
                        kind.field()
                    ));
                }
                let ordered = block.holders.windows(2).all(|w| {
                    (w[0] as usize) < self.rows.len()
                        && (w[1] as usize) < self.rows.len()
                        && self.older(w[0], w[1])
                });
                if !ordered {
                    return refuse("a blocked value's holders are not live rows, oldest first");
                }
                counts.insert((kind, sym), 0);
            }
            for &sym in g.shared.keys() {
                if !set.contains(sym) || g.blocked.contains_key(&sym) {
                    return refuse(format!(
                        "a shared {} is no string, or blocked",
                        kind.field()
                    ));
                }
                counts.insert((kind, sym), 0);
            }
            // A value unblocked once stays exempt, even if an admin blocks it again.
            if g.exempt.iter().any(|&s| !set.contains(s)) {
                return refuse(format!("an exempt {} is no string", kind.field()));
            }
        }
        if !counts.is_empty() {
            for (slot, row) in self.rows.iter().enumerate() {
                if self.forest.is_removed(slot as Slot) {
                    continue;
                }
                for kind in Kind::BOTH {
                    if let Some(n) = counts.get_mut(&(kind, Engine::sym_of(row, kind))) {
                        *n += 1;
                    }
                }
            }
        }
        for kind in Kind::BOTH {
            let g = self.guards(kind);
            for (&sym, block) in &g.blocked {
                let live_holding = |&h: &Slot| {
                    (h as usize) < self.rows.len()
                        && !self.forest.is_removed(h)
                        && Engine::sym_of(&self.rows[h as usize], kind) == sym
                };
                if !block.holders.iter().all(live_holding)
                    || counts[&(kind, sym)] as usize != block.holders.len()
                {
                    return refuse("a blocked value's holders are not the live rows holding it");
                }
            }
            for (&sym, &n) in &g.shared {
                if n < 2 || counts[&(kind, sym)] != n {
                    return refuse(format!("a shared {} is miscounted", kind.field()));
                }
            }
        }
        for &key in self.join_times.keys() {
            let (e, p) = ((key >> 32) as Sym, key as Sym);
            if !self
                .joins_by_email
                .get(&e)
                .is_some_and(|ps| ps.contains(&p))
            {
                return refuse("a join time names no remembered join");
            }
        }
        Ok(())
    }

    /// Everything but the forest and the arenas, which were checked as they were built.
    fn check_tables(&self, census: Census, emails: &SymbolSet, phones: &SymbolSet) -> Checked {
        let slots = self.rows.len();
        let live = |s: u32| (s as usize) < slots && !self.forest.is_removed(s);
        self.check_rows(emails, phones)?;
        self.check_deletions(census, &live)?;
        let joins = self.check_joins(emails, phones)?;
        let links = self.check_links(&live)?;
        self.check_ledger()?;
        let counted = Stats {
            contacts: slots,
            deleted: census.removed,
            clusters: census.sets,
            joins: joins + links,
            erased: self.erased_at.len(),
        };
        if counted != self.stats {
            return refuse(format!(
                "the counters say {:?}, the tables hold {counted:?}",
                self.stats
            ));
        }
        Ok(())
    }

    /// Every row has an id (found at its slot: natural, or through `displaced`, which lists
    /// nothing else), identifiers that start strings, and times no later than the clock.
    fn check_rows(&self, emails: &SymbolSet, phones: &SymbolSet) -> Checked {
        let mut displaced = 0;
        for (slot, row) in self.rows.iter().enumerate() {
            let id = row.id;
            if id == 0 || id > self.max_id {
                return refuse(format!(
                    "contact {id} at slot {slot}: ids run from 1 to max_id {}",
                    self.max_id
                ));
            }
            if u64::from(id) != slot as u64 + 1 {
                displaced += 1;
                if self.displaced.get(&id) != Some(&(slot as Slot)) {
                    return refuse(format!(
                        "contact {id} at slot {slot} is not found by its id"
                    ));
                }
            }
            let named = |set: &SymbolSet, sym| sym == NONE || set.contains(sym);
            if !named(emails, row.email) || !named(phones, row.phone) {
                return refuse(format!(
                    "contact {id} names an identifier that is no string"
                ));
            }
            if row.created > self.clock || row.updated > self.clock {
                return refuse(format!("contact {id} is later than the clock"));
            }
        }
        let natural_too = self.displaced.keys().any(|&id| {
            let natural = self.rows.get(id.wrapping_sub(1) as usize);
            natural.is_some_and(|row| row.id == id)
        });
        if displaced != self.displaced.len() || natural_too {
            return refuse("the displaced ids do not match the rows' slots");
        }
        Ok(())
    }

    /// Deletion times are kept for exactly the removed slots, and are no later than the clock.
    fn check_deletions(&self, census: Census, live: &impl Fn(u32) -> bool) -> Checked {
        let slots = self.rows.len();
        for (&slot, &at) in &self.deleted_at {
            if (slot as usize) >= slots || live(slot) {
                return refuse(format!(
                    "a deletion time for slot {slot}, which is no deleted row"
                ));
            }
            if at > self.clock {
                return refuse(format!("slot {slot} was deleted later than the clock"));
            }
        }
        for (&slot, &at) in &self.erased_at {
            let row = self.rows.get(slot as usize);
            if !row.is_some_and(|r| r.email == NONE && r.phone == NONE) || live(slot) {
                return refuse(format!(
                    "an erasure time for slot {slot}, which is no erased row"
                ));
            }
            if at > self.clock {
                return refuse(format!("slot {slot} was erased later than the clock"));
            }
        }
        let erased_live = (self.erased_at.keys())
            .filter(|&s| !self.deleted_at.contains_key(s))
            .count();
        if self.deleted_at.len() + erased_live != census.removed {
            return refuse(format!(
                "{} deleted rows, {} deletion times and {erased_live} erasures of live rows",
                census.removed,
                self.deleted_at.len()
            ));
        }
        Ok(())
    }

    /// The ledger numbers its erasures from 1, each naming erased contacts in order, every
    /// erased contact once, at the time its row says; none later than the clock.
    fn check_ledger(&self) -> Checked {
        let mut named = hashbrown::HashSet::new();
        for (at, erasure) in self.erasures.iter().enumerate() {
            let what = format!("erasure {}", erasure.id);
            if erasure.id != at as u64 + 1 || erasure.requested_at.0 > self.clock {
                return refuse(format!("{what} is out of turn in the ledger"));
            }
            let ordered = erasure.contacts.windows(2).all(|w| w[0] < w[1]);
            if erasure.contacts.is_empty() || !ordered {
                return refuse(format!("{what} names its contacts out of order"));
            }
            for &id in &erasure.contacts {
                let when = self.slot(id).ok().and_then(|slot| self.erased_at(slot));
                if when != Some(erasure.requested_at) || !named.insert(id) {
                    return refuse(format!("{what} names contact {id}, not erased then"));
                }
            }
        }
        if named.len() != self.erased_at.len() {
            return refuse(format!(
                "the ledger names {} erased contacts, the rows hold {}",
                named.len(),
                self.erased_at.len()
            ));
        }
        Ok(())
    }

    /// Every join is kept both ways, once, between an email and a phone that live rows hold,
    /// in one cluster unless a side is blocked (a join naming a blocked value joins nothing
    /// while it is blocked, and its value must still have a holder). Returns how many there are.
    fn check_joins(&self, emails: &SymbolSet, phones: &SymbolSet) -> Checked<usize> {
        let holder = |kind: Kind, set: &SymbolSet, sym: Sym| {
            let value = Some(sym)
                .filter(|&s| s != NONE && set.contains(s))
                .map(|s| self.index(kind).value(s))
                .filter(|&h| h != NONE)?;
            let held = value != BLOCKED
                || (self.guards(kind).blocked.get(&sym)).is_some_and(|b| !b.holders.is_empty());
            held.then_some(value)
        };
        let mut pairs = 0;
        for (&e, phones_of) in &self.joins_by_email {
            for &p in distinct(phones_of, "joins of an email")? {
                let (Some(a), Some(b)) = (
                    holder(Kind::Email, emails, e),
                    holder(Kind::Phone, phones, p),
                ) else {
                    return refuse(format!(
                        "join {e}/{p} names an identifier no live row holds"
                    ));
                };
                let back = self.joins_by_phone.get(&p);
                if !back.is_some_and(|es| es.contains(&e)) {
                    return refuse(format!("join {e}/{p} is kept only one way"));
                }
                let dormant = a == BLOCKED || b == BLOCKED;
                if !dormant && self.forest.find(a) != self.forest.find(b) {
                    return refuse(format!("join {e}/{p} joins two clusters"));
                }
                pairs += 1;
            }
        }
        let mut back = 0;
        for emails_of in self.joins_by_phone.values() {
            back += distinct(emails_of, "joins of a phone")?.len();
        }
        if back != pairs {
            return refuse(format!(
                "{pairs} joins by email, {back} by phone: some kept only one way"
            ));
        }
        Ok(pairs)
    }

    /// Every link is kept both ways, once, between two live rows of one cluster. Returns how
    /// many there are.
    fn check_links(&self, live: &impl Fn(u32) -> bool) -> Checked<usize> {
        let mut halves = 0;
        for (&a, others) in &self.links {
            for &b in distinct(others, "links of a row")? {
                if a == b || !live(a) || !live(b) {
                    return refuse(format!("a link {a}-{b} names a row that is not live"));
                }
                if !self.links.get(&b).is_some_and(|l| l.contains(&a)) {
                    return refuse(format!("the link {a}-{b} is kept only one way"));
                }
                if self.forest.find(a) != self.forest.find(b) {
                    return refuse(format!("the link {a}-{b} joins two clusters"));
                }
                halves += 1;
            }
        }
        Ok(halves / 2)
    }
}

/// An image whose arenas are packed (from before aligned arenas) with its strings laid out
/// aligned and every symbol the tables name renumbered; an aligned one as it is. The
/// renumbering keeps order, so sorted lists stay sorted.
fn realigned(parts: Parts<'_>) -> Checked<Parts<'_>> {
    if parts.emails.aligned && parts.phones.aligned {
        return Ok(parts);
    }
    let mut parts = parts;
    let renumber = |strings: &mut Strings<'_>| -> Checked<Option<Vec<(Sym, Sym)>>> {
        if strings.aligned {
            return Ok(None);
        }
        let old = std::mem::replace(strings, Strings::empty());
        let (new, map) = old.realigned().map_err(ImageError)?;
        *strings = new;
        Ok(Some(map))
    };
    let maps = [renumber(&mut parts.emails)?, renumber(&mut parts.phones)?];
    let remap = |kind: Kind, sym: Sym| -> Checked<Sym> {
        match &maps[kind as usize] {
            Some(map) if sym != NONE => map
                .binary_search_by_key(&sym, |&(old, _)| old)
                .map(|i| map[i].1)
                .or_else(|_| refuse(format!("an {} names no string", kind.field()))),
            _ => Ok(sym),
        }
    };
    for row in parts.rows.to_mut() {
        row.email = remap(Kind::Email, row.email)?;
        row.phone = remap(Kind::Phone, row.phone)?;
    }
    let joins = |list: &mut Vec<(Sym, Vec<Sym>)>, key: Kind, value: Kind| -> Checked {
        for (k, vs) in list {
            *k = remap(key, *k)?;
            for v in vs {
                *v = remap(value, *v)?;
            }
        }
        Ok(())
    };
    joins(&mut parts.joins_by_email, Kind::Email, Kind::Phone)?;
    joins(&mut parts.joins_by_phone, Kind::Phone, Kind::Email)?;
    for (key, _) in &mut parts.join_times {
        let (e, p) = ((*key >> 32) as Sym, *key as Sym);
        *key = super::join_key(remap(Kind::Email, e)?, remap(Kind::Phone, p)?);
    }
    for kind in Kind::BOTH {
        let g = &mut parts.guards[kind as usize];
        for b in &mut g.blocked {
            b.sym = remap(kind, b.sym)?;
        }
        for e in &mut g.exempt {
            *e = remap(kind, *e)?;
        }
        for (sym, _) in g.shared.iter_mut().flatten() {
            *sym = remap(kind, *sym)?;
        }
    }
    Ok(parts)
}

/// A kind's guards from an image, refused if a value is listed twice.
fn guards_of(parts: GuardParts) -> Checked<KindGuards> {
    let blocked_len = parts.blocked.len();
    let blocked: HashMap<Sym, Block> = (parts.blocked.into_iter())
        .map(|b| {
            let block = Block {
                reason: b.reason,
                at: b.at,
                holders: b.holders,
            };
            (b.sym, block)
        })
        .collect();
    let exempt_len = parts.exempt.len();
    let exempt: hashbrown::HashSet<Sym> = parts.exempt.into_iter().collect();
    if blocked.len() != blocked_len || exempt.len() != exempt_len {
        return refuse("the guards name a value twice");
    }
    Ok(KindGuards {
        blocked,
        exempt,
        shared: map("shared counts", parts.shared.unwrap_or_default())?,
    })
}

/// `entries` sorted by key.
fn sorted<K: Ord, V>(entries: impl Iterator<Item = (K, V)>) -> Vec<(K, V)> {
    let mut entries: Vec<_> = entries.collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// A map of `entries`, refused if a key comes twice.
fn map<K: std::hash::Hash + Eq + std::fmt::Debug, V>(
    what: &str,
    entries: Vec<(K, V)>,
) -> Checked<HashMap<K, V>> {
    let len = entries.len();
    let map: HashMap<K, V> = entries.into_iter().collect();
    if map.len() != len {
        return refuse(format!("the {what} name a key twice"));
    }
    Ok(map)
}

/// `list`, refused if it is empty or holds a value twice.
fn distinct<'l>(list: &'l [u32], what: &str) -> Checked<&'l [u32]> {
    let twice = if list.len() <= 16 {
        list.iter().enumerate().any(|(i, x)| list[..i].contains(x))
    } else {
        let mut copy = list.to_vec();
        copy.sort_unstable();
        copy.windows(2).any(|w| w[0] == w[1])
    };
    if list.is_empty() || twice {
        return refuse(format!("the {what} are empty or name one twice"));
    }
    Ok(list)
}

#[cfg(test)]
impl Engine {
    /// The facts, rendered and sorted, to compare two engines' state (joins and links come out
    /// of hash maps in any order).
    pub(crate) fn sorted_facts(&self) -> Vec<String> {
        let mut facts: Vec<String> = self.facts().map(|f| format!("{f:?}")).collect();
        facts.sort();
        facts
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_same, engine_with_every_kind_of_state};
    use super::super::{Email, Phone, Query, Timestamp};
    use super::*;

    /// Every kind of state, and a cluster of four made by merging two of two (so one member
    /// array is free).
    fn image() -> Parts<'static> {
        let mut engine = engine_with_every_kind_of_state();
        let requests = [
            ("t1@x.io", "301"),
            ("t2@x.io", "301"),
            ("t3@x.io", "401"),
            ("t4@x.io", "401"),
            ("t3@x.io", "301"),
        ];
        for (email, phone) in requests {
            let email = Email::parse(email).unwrap();
            let query = Query::new(email, Phone::parse(phone).unwrap()).unwrap();
            let plan = engine
                .plan_identify(&query, Timestamp(i64::MAX / 2))
                .unwrap();
            for change in &plan.changes {
                engine.apply(change).unwrap();
            }
        }
        engine.parts().into_owned()
    }

    type Damage = (&'static str, &'static str, fn(&mut Parts<'static>));

    /// Slots of the roots of sets with a member array, and the arrays.
    fn roots_with_arrays(parts: &Parts) -> Vec<(usize, u32)> {
        (parts.nodes.iter().enumerate())
            .filter(|(x, n)| n.parent as usize == *x && n.list != u32::MAX)
            .map(|(x, n)| (x, n.list))
            .collect()
    }

    fn live_slots(parts: &Parts) -> Vec<u32> {
        (0..parts.rows.len() as u32)
            .filter(|&s| parts.deleted_at.iter().all(|&(d, _)| d != s))
            .collect()
    }

    /// Sets the value (holder) of the first string of `strings` to `holder`.
    fn set_first_holder(strings: &mut Strings, holder: u32) {
        let mut arena = strings.arena.to_string();
        let wide: String = (0..5)
            .map(|i| char::from(((holder >> (7 * i)) & 0x7F) as u8))
            .collect();
        arena.replace_range(0..5, &wide);
        strings.arena = Cow::Owned(arena);
    }

    const DAMAGE: [Damage; 27] = [
        (
            "two roots sharing one member array",
            "share member array",
            |p| {
                let roots = roots_with_arrays(p);
                assert!(roots.len() >= 2, "the state has two merged clusters");
                p.nodes.to_mut()[roots[1].0].list = roots[0].1;
            },
        ),
        (
            "members out of age order",
            "exactly its members in age order",
            |p| {
                let (_, list) = (roots_with_arrays(p).into_iter())
                    .find(|&(_, l)| p.lists[l as usize].len() >= 3)
                    .expect("a cluster of three");
                p.lists.to_mut()[list as usize].swap(1, 2);
            },
        ),
        ("a member of another cluster", "exactly its members", |p| {
            let roots = roots_with_arrays(p);
            let other = p.lists[roots[1].1 as usize][1];
            p.lists.to_mut()[roots[0].1 as usize][1] = other;
        }),
        (
            "a member array naming no slot",
            "names what does not exist",
            |p| {
                let (_, list) = roots_with_arrays(p)[0];
                p.lists.to_mut()[list as usize][1] = 999;
                p.nodes.to_mut()[0].label = 999;
            },
        ),
        ("an emptied member array", "members", |p| {
            let (_, list) = roots_with_arrays(p)[0];
            p.lists.to_mut()[list as usize].clear();
        }),
        ("a root's size", "members", |p| {
            let (root, _) = roots_with_arrays(p)[0];
            p.nodes.to_mut()[root].size += 1;
        }),
        ("a cycle of parents", "a cycle", |p| {
            let children: Vec<usize> = (0..p.nodes.len())
                .filter(|&x| p.nodes[x].parent as usize != x)
                .collect();
            assert!(children.len() >= 2, "the state has merged clusters");
            let nodes = p.nodes.to_mut();
            nodes[children[0]].parent = children[1] as u32;
            nodes[children[1]].parent = children[0] as u32;
        }),
        ("a free list naming a used array", "not a free one", |p| {
            let (_, list) = roots_with_arrays(p)[0];
            p.free.to_mut().push(list);
        }),
        ("a free list naming an array twice", "not a free one", |p| {
            let first = *p.free.first().expect("the state has a free member array");
            p.free.to_mut().push(first);
        }),
        ("a free list naming no array", "not a free one", |p| {
            p.free.to_mut().push(p.lists.len() as u32);
        }),
        ("a free array left out of the free list", "free", |p| {
            p.free.to_mut().pop().expect("a free member array");
        }),
        ("a link kept one way", "only one way", |p| {
            let (_, others) = p.links.first().expect("the state has a link").clone();
            p.links.retain(|(a, _)| *a != others[0]);
        }),
        ("a link to a row that does not exist", "not live", |p| {
            p.links.push((999, vec![0]));
        }),
        ("a join kept one way", "only one way", |p| {
            let (_, phones) = p.joins_by_email.first().expect("a join").clone();
            p.joins_by_phone.retain(|(phone, _)| *phone != phones[0]);
        }),
        ("max_id below an id", "max_id", |p| p.max_id -= 1),
        ("a count of contacts", "counters", |p| p.stats.contacts += 1),
        ("a count of deleted contacts", "counters", |p| {
            p.stats.deleted -= 1
        }),
        ("a count of clusters", "counters", |p| p.stats.clusters += 1),
        ("a count of joins", "counters", |p| p.stats.joins += 1),
        (
            "a displaced id at another slot",
            "not found by its id",
            |p| {
                p.displaced[0].1 += 1;
            },
        ),
        (
            "a displaced id that is at its own slot",
            "displaced ids",
            |p| {
                p.displaced.push((1, 5));
                p.displaced.sort();
            },
        ),
        ("a deletion time of a live row", "no deleted row", |p| {
            let live = live_slots(p)[0];
            p.deleted_at.push((live, 0));
        }),
        ("a clock behind a timestamp", "later than the clock", |p| {
            p.clock = p.rows.iter().map(|r| r.created).max().unwrap() - 1;
        }),
        (
            "a holder that does not hold",
            "not a live row holding it",
            |p| {
                let first = p.rows[0].phone;
                let other = live_slots(p)
                    .into_iter()
                    .find(|&s| p.rows[s as usize].phone != first);
                set_first_holder(&mut p.phones, other.unwrap());
            },
        ),
        ("a deleted holder", "not a live row holding it", |p| {
            let (deleted, _) = p.deleted_at[0];
            set_first_holder(&mut p.emails, deleted);
        }),
        ("a row's email inside a string", "no string", |p| {
            // A deleted row's, so that no index names the row for it.
            let deleted = (p.deleted_at.iter())
                .map(|&(slot, _)| slot as usize)
                .find(|&slot| p.rows[slot].email != u32::MAX);
            p.rows.to_mut()[deleted.unwrap()].email += 1;
        }),
        ("a row with id 0", "ids run from 1", |p| {
            p.rows.to_mut()[1].id = 0
        }),
    ];

    #[test]
    fn every_kind_of_crafted_image_is_refused_with_a_clear_error() {
        let image = image();
        assert!(Engine::from_parts(image.clone()).is_ok());
        for (what, says, damage) in DAMAGE {
            let mut damaged = image.clone();
            damage(&mut damaged);
            assert_ne!(damaged, image, "{what}: changes nothing");
            let error = Engine::from_parts(damaged).err();
            let message = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(says), "{what}: {message:?}");
        }
    }

    /// An engine whose guards hold every kind of state: a value blocked as generic, one blocked
    /// by an admin, an exempt one, shared counts and a join's time.
    fn guarded_image() -> Parts<'static> {
        let mut engine = Engine::with_limits(crate::engine::Limits {
            generic_threshold: 2,
            max_cluster_size: 0,
        });
        let requests = [
            ("a@x.io", "9"),
            ("b@x.io", "9"),
            ("c@x.io", "9"),
            ("d@x.io", "5"),
            ("e@x.io", "5"),
            ("f@x.io", "7"),
            ("f@x.io", "8"),
            ("g@x.io", "6"),
            ("g@x.io", "5"),
        ];
        let mut now = 1_000;
        for (email, phone) in requests {
            let query = Query::new(Email::parse(email).unwrap(), Phone::parse(phone).unwrap());
            now += 1;
            let plan = engine
                .plan_identify(&query.unwrap(), Timestamp(now))
                .unwrap();
            for change in &plan.changes {
                engine.apply(change).unwrap();
            }
        }
        let act = |engine: &mut Engine, changes: Vec<crate::engine::Change>| {
            for change in &changes {
                engine.apply(change).unwrap();
            }
        };
        let block = engine.plan_block(Kind::Email, "a@x.io", BlockReason::Admin, Timestamp(2_000));
        act(&mut engine, block.unwrap());
        let block = engine.plan_block(Kind::Email, "z@x.io", BlockReason::Admin, Timestamp(2_001));
        act(&mut engine, block.unwrap());
        let unblock = engine.plan_unblock(Kind::Email, "z@x.io", Timestamp(2_002));
        act(&mut engine, vec![unblock.unwrap().unwrap()]);
        engine.check_invariants().unwrap();
        engine.parts().into_owned()
    }

    /// States the live path reaches that an image must carry across a restart.
    #[test]
    fn an_image_keeps_a_join_naming_a_blocked_value_and_a_value_blocked_again() {
        let mut engine = Engine::new();
        let run = |engine: &mut Engine, changes: Vec<crate::engine::Change>| {
            for change in &changes {
                engine.apply(change).unwrap();
            }
        };
        for (n, (email, phone)) in [("a@x.io", "111"), ("b@x.io", "222"), ("a@x.io", "222")]
            .into_iter()
            .enumerate()
        {
            let query = Query::new(Email::parse(email).unwrap(), Phone::parse(phone).unwrap());
            let plan =
                (engine.plan_identify(&query.unwrap(), Timestamp(1_000 + n as i64))).unwrap();
            run(&mut engine, plan.changes);
        }
        // The join of a@x.io and 222 is dormant once 222 is blocked; 111 is blocked, unblocked
        // (exempt from then on) and blocked again.
        for (kind, value, at) in [(Kind::Phone, "222", 2_000), (Kind::Phone, "111", 2_001)] {
            let block = engine.plan_block(kind, value, BlockReason::Admin, Timestamp(at));
            run(&mut engine, block.unwrap());
        }
        let unblock = engine
            .plan_unblock(Kind::Phone, "111", Timestamp(2_002))
            .unwrap();
        run(&mut engine, vec![unblock.unwrap()]);
        let block = engine.plan_block(Kind::Phone, "111", BlockReason::Admin, Timestamp(2_003));
        run(&mut engine, block.unwrap());
        engine.check_invariants().unwrap();
        let copy = Engine::from_parts(engine.parts().into_owned()).expect("the image loads");
        assert_eq!(copy.parts(), engine.parts());
        assert_eq!(copy.blocklist(), engine.blocklist());
        // Unblocking 222 makes the join evidence again: the two clusters merge.
        let mut copy = copy;
        let unblock = copy
            .plan_unblock(Kind::Phone, "222", Timestamp(3_000))
            .unwrap();
        run(&mut copy, vec![unblock.unwrap()]);
        assert_eq!(copy.identity(2).unwrap().primary_contact_id, 1);
    }

    #[test]
    fn crafted_guard_state_is_refused() {
        let image = guarded_image();
        let (emails, phones) = (&image.guards[0], &image.guards[1]);
        assert!(
            !phones.blocked.is_empty() && !emails.blocked.is_empty(),
            "both kinds blocked"
        );
        assert!(!emails.exempt.is_empty() && phones.shared.as_ref().is_some_and(|s| !s.is_empty()));
        assert!(!image.join_times.is_empty());
        assert!(Engine::from_parts(image.clone()).is_ok());
        let crafts: [Damage; 6] = [
            (
                "a blocked value's holder left out",
                "live rows holding it",
                |p| {
                    p.guards[1].blocked[0].holders.pop();
                },
            ),
            ("a blocked value's holder twice", "oldest first", |p| {
                let holder = p.guards[1].blocked[0].holders[0];
                p.guards[1].blocked[0].holders.push(holder);
            }),
            ("a shared count off by one", "miscounted", |p| {
                p.guards[1].shared.as_mut().unwrap()[0].1 += 1;
            }),
            ("an exempt value that is no string", "exempt", |p| {
                p.guards[0].exempt.push(u32::MAX - 7);
            }),
            ("a join time of no join", "join time", |p| {
                p.join_times.push((u64::MAX, 0));
            }),
            (
                "a value indexed as blocked with no entry",
                "not a live row",
                |p| {
                    p.guards[0].blocked.clear();
                },
            ),
        ];
        for (what, says, damage) in crafts {
            let mut damaged = image.clone();
            damage(&mut damaged);
            let message = Engine::from_parts(damaged).err().map(|e| e.to_string());
            let message = message.unwrap_or_default();
            assert!(message.contains(says), "{what}: {message:?}");
        }
    }

    #[test]
    fn an_identifier_table_or_arena_that_disagrees_is_refused() {
        let image = image();
        let damage: [fn(&mut Parts<'static>); 3] = [
            |p| p.phones.len = 1,
            |p| {
                let arena = p.emails.arena.to_string();
                p.emails.arena = Cow::Owned(arena[..arena.len() - 1].to_owned());
            },
            |p| {
                let groups = p.emails.groups.to_mut();
                let used = groups.iter_mut().find(|g| g.len > 0).unwrap();
                used.syms[0] ^= 1;
            },
        ];
        for damage in damage {
            let mut damaged = image.clone();
            damage(&mut damaged);
            let message = Engine::from_parts(damaged).err().unwrap().to_string();
            assert!(message.contains("identifier"), "{message}");
        }
    }

    #[test]
    fn an_engine_built_from_its_own_parts_is_the_same_engine() {
        let engine = engine_with_every_kind_of_state();
        let copy = Engine::from_parts(engine.parts()).unwrap();
        assert_same(&copy, &engine);
        assert_eq!(copy.parts(), engine.parts());
    }

    /// A small generator of numbers, so that the mutations are the same on every run.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, n: usize) -> usize {
            self.0 = (self.0.wrapping_mul(6364136223846793005)).wrapping_add(1442695040888963407);
            ((self.0 >> 33) as usize) % n.max(1)
        }

        /// A value a field might be given: near the table sizes, or at the edges.
        fn value(&mut self, near: usize) -> u32 {
            match self.below(4) {
                0 => u32::MAX,
                1 => 0,
                _ => self.below(near + 2) as u32,
            }
        }
    }

    fn mutate(p: &mut Parts<'static>, rng: &mut Lcg) {
        let (slots, n) = (p.rows.len(), p.rows.len());
        let at = rng.below(n);
        let v = rng.value(slots);
        match rng.below(12) {
            0 => p.rows.to_mut()[at].id = v,
            1 => p.rows.to_mut()[at].email = v,
            2 => p.rows.to_mut()[at].phone = v,
            3 => p.rows.to_mut()[at].created = i64::from(v),
            4 => p.nodes.to_mut()[at].parent = v,
            5 => p.nodes.to_mut()[at].list = v,
            6 => p.nodes.to_mut()[at].size = v,
            7 => p.nodes.to_mut()[at].label = v,
            8 => {
                let lists = p.lists.to_mut();
                let list = rng.below(lists.len());
                if let Some(slot) = lists[list].first_mut() {
                    *slot = v;
                }
            }
            9 => p.free.to_mut().push(v),
            10 => p.links.push((v, vec![rng.value(slots)])),
            _ => p.displaced.push((v, rng.value(slots))),
        }
    }

    /// Everything a request can make the engine do, on `engine` as it is.
    fn exercise(engine: &Engine) {
        let contacts: Vec<_> = engine.contacts().collect();
        for id in 0..=engine.max_id().saturating_add(1).min(10_000) {
            let _ = engine.identity(id);
            let _ = engine.contact(id);
            if let Ok(plan) = engine.plan_delete(id, Timestamp(i64::MAX / 4)) {
                let mut copy = engine.clone();
                for change in &plan.changes {
                    let _ = copy.apply(change);
                }
            }
        }
        for c in &contacts {
            let email = c
                .email
                .as_deref()
                .and_then(|e| Email::parse(e).ok().flatten());
            let phone = c
                .phone_number
                .as_deref()
                .and_then(|p| Phone::parse(p).ok().flatten());
            let other = Phone::parse("999").unwrap();
            for query in [Query::new(email.clone(), phone), Query::new(email, other)]
                .into_iter()
                .flatten()
            {
                let mut copy = engine.clone();
                let plan = copy.plan_identify(&query, Timestamp(i64::MAX / 4));
                let changes = plan.map(|p| p.changes).unwrap_or_default();
                for change in &changes {
                    let _ = copy.apply(change);
                }
            }
        }
    }

    #[test]
    fn an_image_that_passes_the_check_never_makes_the_engine_panic() {
        let image = image();
        let mut rng = Lcg(11);
        let mut accepted = 0;
        for _ in 0..400 {
            let mut damaged = image.clone();
            for _ in 0..1 + rng.below(2) {
                mutate(&mut damaged, &mut rng);
            }
            if let Ok(engine) = Engine::from_parts(damaged) {
                exercise(&engine);
                accepted += 1;
            }
        }
        // Some mutations change nothing the check can see (a creation time that keeps the
        // order, a value set to what it was): those engines were exercised. (61 of 400 today.)
        assert!(accepted > 0 && accepted < 400, "{accepted} accepted");
    }
}
