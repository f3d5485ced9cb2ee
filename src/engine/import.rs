//! Importing rows: checked rows ([`Rows`]) planned whole against the state. The ids must be
//! free; the values of a blocklist are blocked first (as an admin's blocks); a value the rows
//! give more live holders than the generic threshold is blocked once they are in; and the cap
//! is checked exactly on the clusters the rows will be in, counting the clusters such blocks
//! split by what evidence remains. One plan serves the command-line import and the online one,
//! so the same file gets the same verdict from both.

use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use super::change::{Change, NewContact};
use super::forest::Slot;
use super::guards::{BlockReason, Kind, Refusal, MAX_SLOTS};
use super::interner::Sym;
use super::op::{Outcome, Plan};
use super::types::{ContactId, Precedence, Timestamp};
use super::{held, Engine};

/// Live contacts a `Settled` fact names at most, so that a record stays small.
const SETTLED_CHUNK: usize = 16_384;
/// Values a refusal names at most.
const NAMED_VALUES: usize = 20;

/// One checked row: its line in the file, the row as its `Created` fact, and the precedence
/// the file gave it (which the evidence may correct).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRow {
    pub line: u64,
    pub contact: NewContact,
    pub precedence: Precedence,
}

/// Rows read and checked, in id order, with each distinct value the live rows hold (found
/// once, when the rows are made, never under the store's lock), and the values to block
/// before they are added. A Raft group's log carries the rows and the blocklist; the values
/// are found again when an entry is read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "RowsOnWire", into = "RowsOnWire")]
pub struct Rows {
    rows: Vec<ImportRow>,
    blocklist: Vec<(Kind, String)>,
    distinct: Vec<Distinct>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RowsOnWire {
    rows: Vec<ImportRow>,
    blocklist: Vec<(Kind, String)>,
}

impl From<RowsOnWire> for Rows {
    fn from(wire: RowsOnWire) -> Rows {
        Rows::new(wire.rows, wire.blocklist)
    }
}

impl From<Rows> for RowsOnWire {
    fn from(rows: Rows) -> RowsOnWire {
        RowsOnWire {
            rows: rows.rows,
            blocklist: rows.blocklist,
        }
    }
}

/// A value of the file: its kind, and the live rows holding it (indexes into `rows`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Distinct {
    kind: Kind,
    rows: Vec<usize>,
}

/// What a report needs of a row once it is in: what the file said of its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GivenLink {
    pub id: ContactId,
    pub linked_id: Option<ContactId>,
    pub precedence: Precedence,
    pub deleted: bool,
}

impl Rows {
    /// `rows` (sorted here by id) and the values to block before they are added.
    pub fn new(mut rows: Vec<ImportRow>, blocklist: Vec<(Kind, String)>) -> Rows {
        rows.sort_by_key(|r| r.contact.id);
        let distinct = distinct_values(&rows);
        Rows {
            rows,
            blocklist,
            distinct,
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn rows(&self) -> &[ImportRow] {
        &self.rows
    }

    /// What the file said of each row's link, for the report made once the rows are in.
    pub(crate) fn given_links(&self) -> Vec<GivenLink> {
        (self.rows.iter())
            .map(|r| GivenLink {
                id: r.contact.id,
                linked_id: r.contact.linked_id,
                precedence: r.precedence,
                deleted: r.contact.deleted_at.is_some(),
            })
            .collect()
    }

    fn text(&self, d: &Distinct) -> &str {
        let c = &self.rows[d.rows[0]].contact;
        let value = match d.kind {
            Kind::Email => &c.email,
            Kind::Phone => &c.phone,
        };
        value.as_deref().unwrap_or_default()
    }

    fn is_live(&self, i: usize) -> bool {
        self.rows[i].contact.deleted_at.is_none()
    }
}

/// Each distinct value the live rows hold, with the rows holding it, first seen first.
fn distinct_values(rows: &[ImportRow]) -> Vec<Distinct> {
    let mut seen: HashMap<(Kind, &str), usize> = HashMap::new();
    let mut distinct: Vec<Distinct> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if row.contact.deleted_at.is_some() {
            continue;
        }
        let c = &row.contact;
        for (kind, value) in [(Kind::Email, &c.email), (Kind::Phone, &c.phone)] {
            let Some(value) = value.as_deref() else {
                continue;
            };
            let at = *seen.entry((kind, value)).or_insert_with(|| {
                distinct.push(Distinct {
                    kind,
                    rows: Vec::new(),
                });
                distinct.len() - 1
            });
            distinct[at].rows.push(i);
        }
    }
    distinct
}

/// How the guards see the rows before they are added: the values blocked from the list,
/// those the rows make generic, and every value that is evidence of nothing once they are in.
struct Guarded {
    listed: Vec<(Kind, String)>,
    generic: Vec<usize>,
    /// The values held now that the import blocks: the clusters they hold together split.
    newly_blocked: HashSet<(Kind, Sym)>,
    /// Whether each distinct value unites anyone once the rows are in.
    unites: Vec<bool>,
}

impl Engine {
    /// What importing `rows` at `now` implies: every row as a fact, the links of live
    /// secondaries to live primaries, the blocks, and the settling of every cluster an
    /// imported row is in on its oldest member; or why nothing is imported.
    pub(super) fn plan_import(&self, rows: &Rows, now: Timestamp) -> Result<Plan, Refusal> {
        if let Some(r) = rows.rows.iter().find(|r| self.slot(r.contact.id).is_ok()) {
            return Err(Refusal::IdTaken {
                line: r.line,
                id: r.contact.id,
            });
        }
        self.import_fits(rows)?;
        let guarded = self.guard_import(rows);
        self.import_within_cap(rows, &guarded)?;
        let latest = (rows.rows.iter())
            .flat_map(|r| {
                let c = &r.contact;
                [Some(c.created_at), Some(c.updated_at), c.deleted_at]
            })
            .flatten()
            .map(|t| t.0)
            .max()
            .unwrap_or(i64::MIN);
        let at = Timestamp(now.0.max(self.clock).max(latest));
        let block = |(kind, value): &(Kind, String), reason| Change::Blocked {
            kind: *kind,
            value: value.clone(),
            reason,
            at,
        };
        let mut facts: Vec<Change> = (guarded.listed.iter())
            .map(|v| block(v, BlockReason::Admin))
            .collect();
        facts.extend(rows.rows.iter().map(|r| Change::Created(r.contact.clone())));
        facts.extend(self.import_links(rows));
        let generic: Vec<(Kind, String)> = (guarded.generic.iter())
            .map(|&i| {
                (
                    rows.distinct[i].kind,
                    rows.text(&rows.distinct[i]).to_owned(),
                )
            })
            .collect();
        facts.extend(generic.iter().map(|v| block(v, BlockReason::Generic)));
        let live: Vec<ContactId> = (rows.rows.iter())
            .filter(|r| r.contact.deleted_at.is_none())
            .map(|r| r.contact.id)
            .collect();
        facts.extend(live.chunks(SETTLED_CHUNK).map(|ids| Change::Settled {
            ids: ids.to_vec(),
            at,
        }));
        Ok(Plan {
            facts,
            outcome: Outcome::Imported {
                listed: guarded.listed,
                generic,
            },
        })
    }

    /// Refuses an import the tables have no room for (slots, or identifier storage).
    fn import_fits(&self, rows: &Rows) -> Result<(), Refusal> {
        if self.rows.len() + rows.len() > MAX_SLOTS {
            return Err(Refusal::Capacity("contact rows"));
        }
        for kind in Kind::BOTH {
            let new_values = (rows.rows.iter())
                .filter_map(|r| match kind {
                    Kind::Email => r.contact.email.as_deref(),
                    Kind::Phone => r.contact.phone.as_deref(),
                })
                .chain(
                    (rows.blocklist.iter())
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, v)| v.as_str()),
                )
                .filter(|v| self.index(kind).lookup(v).is_none());
            if !self.index(kind).has_room_for(new_values) {
                return Err(Refusal::Capacity("identifier storage"));
            }
        }
        Ok(())
    }

    /// Which values the import blocks (from its list, and as generic) and which unite anyone.
    fn guard_import(&self, rows: &Rows) -> Guarded {
        let mut listed = Vec::new();
        let mut newly_blocked = HashSet::new();
        let mut listed_set: HashSet<(Kind, &str)> = HashSet::new();
        for (kind, value) in &rows.blocklist {
            let sym = self.index(*kind).lookup(value);
            if sym.is_some_and(|s| self.is_blocked(*kind, s)) || !listed_set.insert((*kind, value))
            {
                continue;
            }
            listed.push((*kind, value.clone()));
            if let Some(sym) = sym {
                newly_blocked.insert((*kind, sym));
            }
        }
        let threshold = self.limits.generic_threshold;
        let mut generic = Vec::new();
        let mut unites = Vec::with_capacity(rows.distinct.len());
        for (i, d) in rows.distinct.iter().enumerate() {
            let text = rows.text(d);
            let state = self.value_state(d.kind, text);
            if state.is_some_and(|s| s.blocked) || listed_set.contains(&(d.kind, text)) {
                unites.push(false);
                continue;
            }
            let holders = state.map_or(0, |s| s.holders) as usize + d.rows.len();
            let may = state.is_none_or(|s| s.may_turn_generic);
            if threshold > 0 && may && holders > threshold as usize {
                generic.push(i);
                if let Some(sym) = self.index(d.kind).lookup(text) {
                    newly_blocked.insert((d.kind, sym));
                }
                unites.push(false);
                continue;
            }
            unites.push(true);
        }
        Guarded {
            listed,
            generic,
            newly_blocked,
            unites,
        }
    }

    /// The live secondaries' links to live contacts (in the file or already here).
    fn import_links<'r>(&'r self, rows: &'r Rows) -> impl Iterator<Item = Change> + 'r {
        let in_file: HashMap<ContactId, bool> = (rows.rows.iter())
            .map(|r| (r.contact.id, r.contact.deleted_at.is_none()))
            .collect();
        let live = move |id: ContactId| match in_file.get(&id) {
            Some(&live) => live,
            None => self.live_slot(id).is_ok(),
        };
        (rows.rows.iter())
            .filter(|r| r.contact.deleted_at.is_none())
            .filter_map(move |r| {
                let b = r
                    .contact
                    .linked_id
                    .filter(|&b| b != r.contact.id && live(b))?;
                Some(Change::Linked { a: r.contact.id, b })
            })
    }

    /// Refuses an import that would leave a cluster over the cap: the clusters the imported
    /// rows will be in, counted exactly (an existing cluster that a new block holds together
    /// counts as the groups it splits into).
    fn import_within_cap(&self, rows: &Rows, guarded: &Guarded) -> Result<(), Refusal> {
        let cap = self.limits.max_cluster_size;
        if cap == 0 {
            return Ok(());
        }
        let mut sets = Weighted::default();
        for i in 0..rows.len() {
            sets.add(usize::from(rows.is_live(i)));
        }
        let mut pieces = Pieces::new(self, &guarded.newly_blocked);
        for (d, _) in (rows.distinct.iter().zip(&guarded.unites)).filter(|(_, &u)| u) {
            for pair in d.rows.windows(2) {
                sets.union(pair[0], pair[1]);
            }
            let holder = (self.index(d.kind).lookup(rows.text(d)))
                .and_then(|sym| held(self.index(d.kind), sym));
            if let Some(slot) = holder {
                let node = pieces.node(slot, &mut sets);
                sets.union(d.rows[0], node);
            }
        }
        let index: HashMap<ContactId, usize> = (rows.rows.iter().enumerate())
            .map(|(i, r)| (r.contact.id, i))
            .collect();
        for (i, row) in rows
            .rows
            .iter()
            .enumerate()
            .filter(|&(i, _)| rows.is_live(i))
        {
            let Some(linked) = row.contact.linked_id.filter(|&l| l != row.contact.id) else {
                continue;
            };
            match index.get(&linked) {
                Some(&other) if rows.is_live(other) => sets.union(i, other),
                Some(_) => {}
                None => {
                    if let Ok(slot) = self.live_slot(linked) {
                        let node = pieces.node(slot, &mut sets);
                        sets.union(i, node);
                    }
                }
            }
        }
        let largest = (0..rows.len())
            .filter(|&i| rows.is_live(i))
            .map(|i| {
                let root = sets.find(i);
                (sets.weight[root], root)
            })
            .max();
        match largest {
            Some((size, root)) if size > cap as usize => {
                let values = (rows.distinct.iter())
                    .filter(|d| sets.find(d.rows[0]) == root)
                    .take(NAMED_VALUES)
                    .map(|d| rows.text(d).to_owned())
                    .collect();
                Err(Refusal::ImportOverCap { size, cap, values })
            }
            _ => Ok(()),
        }
    }
}

/// The existing clusters an import touches, as nodes of its union-find: a cluster whole, or,
/// when a value the import blocks holds it together, each group it splits into.
struct Pieces<'e> {
    engine: &'e Engine,
    newly_blocked: &'e HashSet<(Kind, Sym)>,
    /// The roots of the clusters that hold a value the import blocks.
    splitting: HashSet<Slot>,
    node_of_root: HashMap<Slot, usize>,
    node_of_slot: HashMap<Slot, usize>,
}

impl<'e> Pieces<'e> {
    fn new(engine: &'e Engine, newly_blocked: &'e HashSet<(Kind, Sym)>) -> Pieces<'e> {
        let splitting = (newly_blocked.iter())
            .filter_map(|&(kind, sym)| held(engine.index(kind), sym))
            .map(|slot| engine.forest.find(slot))
            .collect();
        Pieces {
            engine,
            newly_blocked,
            splitting,
            node_of_root: HashMap::new(),
            node_of_slot: HashMap::new(),
        }
    }

    /// The node of the piece holding live `slot`.
    fn node(&mut self, slot: Slot, sets: &mut Weighted) -> usize {
        let engine = self.engine;
        let root = engine.forest.find(slot);
        if !self.splitting.contains(&root) {
            return *(self.node_of_root)
                .entry(root)
                .or_insert_with(|| sets.add(engine.forest.size(root)));
        }
        if !self.node_of_root.contains_key(&root) {
            self.node_of_root.insert(root, usize::MAX);
            let members = engine.forest.members(root);
            for group in engine
                .regroup_excluding(members, None, self.newly_blocked)
                .groups
            {
                let node = sets.add(group.len());
                self.node_of_slot
                    .extend(group.into_iter().map(|s| (s, node)));
            }
        }
        self.node_of_slot[&slot]
    }
}

/// A small union-find with a weight per node (live contacts), union by size, path halving.
#[derive(Default)]
struct Weighted {
    parent: Vec<usize>,
    size: Vec<usize>,
    weight: Vec<usize>,
}

impl Weighted {
    fn add(&mut self, weight: usize) -> usize {
        self.parent.push(self.parent.len());
        self.size.push(1);
        self.weight.push(weight);
        self.parent.len() - 1
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a] < self.size[b] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b] = a;
        self.size[a] += self.size[b];
        self.weight[a] += self.weight[b];
    }
}
