//! The engine: every contact row, the email and phone indexes, and the disjoint-set forest that
//! groups rows into clusters. Pure and synchronous: no I/O, no clock, no async.
//!
//! `plan_*` reads and returns the facts ([`Change`]) a request implies; [`Engine::apply`] is the
//! only mutator, used both live and when the log is replayed, so replay cannot drift from live.

mod answer;
mod apply;
mod change;
mod edit;
mod erase;
pub mod events;
pub(crate) mod evidence;
mod forest;
mod guards;
pub(crate) mod image;
pub mod import;
mod interner;
mod op;
mod plan;
mod queries;
mod regroup;
mod rekey;
mod symtable;
pub mod time;
mod types;

use hashbrown::HashMap;

pub use change::{Change, NewContact};
pub use edit::{EditPreview, Patch};
pub use erase::{Erasure, Target};
pub use events::{Event, EventKind};
use forest::Forest;
pub use forest::{Node, Slot};
pub use guards::{BlockReason, BlockedValue, GuardStats, Kind, Limits, Refusal};
use guards::{KindGuards, BLOCKED};
pub use import::{GivenLink, ImportRow, Rows};
use interner::Interner;
pub use interner::{Strings, Sym};
pub use op::{Cause, Op, Outcome, Plan};
pub use plan::{DeletePlan, IdentifyPlan, ValueState};
pub use symtable::Group;
pub use types::{
    Contact, ContactId, Email, IdentifierError, Identity, Phone, Precedence, Query, Timestamp,
};

/// Marks "no identifier" in a row and "no live holder" in an index.
use interner::NONE;

/// One contact in 32 bytes: identifiers as interned symbols, `linked` 0 for a primary. Whether
/// it is deleted is kept in the forest, and when in `Engine::deleted_at` (deletions are rare).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub id: ContactId,
    pub email: Sym,
    pub phone: Sym,
    pub linked: ContactId,
    pub created: i64,
    pub updated: i64,
}

impl Row {
    /// The order that decides who is oldest: `(createdAt, id)`.
    fn age(&self) -> (i64, ContactId) {
        (self.created, self.id)
    }

    fn linked_id(&self) -> Option<ContactId> {
        (self.linked != 0).then_some(self.linked)
    }

    fn holds(&self, email: Sym, phone: Sym) -> bool {
        self.email == email && self.phone == phone
    }
}

/// Why a change could not be planned or applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    #[error("no contact has id {0}")]
    UnknownContact(ContactId),
    #[error("contact {0} is already deleted")]
    AlreadyDeleted(ContactId),
    #[error("contact id {0} already exists")]
    DuplicateId(ContactId),
    #[error("contact id {0} is not a valid id (ids start at 1)")]
    InvalidId(ContactId),
    #[error("a join names an identifier that no live contact holds: {0}")]
    DanglingJoin(String),
    #[error("a merge of {0} into {1} does not match the clusters it names")]
    MismatchedMerge(ContactId, ContactId),
    #[error("{0} is already blocked")]
    AlreadyBlocked(String),
    #[error("{0} is not blocked")]
    NotBlocked(String),
    #[error("no room left for {0}")]
    Capacity(&'static str),
    #[error("no live contact holds {0}")]
    NotHeld(String),
    #[error("{0}")]
    Erasure(String),
}

/// Counts for metrics and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub contacts: usize,
    /// Rows that are no longer live: deleted, or erased while live.
    pub deleted: usize,
    pub clusters: usize,
    pub joins: usize,
    /// Rows erased (live or deleted when they were).
    pub erased: usize,
}

/// A snapshot holds the engine's tables as they are ([`image::Parts`], loaded with no
/// rehashing or replay); [`Engine::from_parts`] checks them whole before it builds an engine.
#[derive(Default, Debug, Clone)]
pub struct Engine {
    rows: Vec<Row>,
    /// The slots of ids whose row is not at slot `id - 1`. The service counts ids up from 1 and
    /// adds rows in that order, so this stays empty unless an import brings other ids.
    displaced: HashMap<ContactId, Slot>,
    /// When each deleted row was deleted, by slot.
    deleted_at: HashMap<Slot, i64>,
    /// Each identifier's value is the oldest live row holding it, or NONE, or BLOCKED (its
    /// holders then listed in its block). All holders of a value that is not blocked share a
    /// cluster, so an answer lists it at the member the index names.
    emails: Interner,
    phones: Interner,
    /// The clusters; a deleted row's slot is removed from it.
    forest: Forest,
    /// Remembered joins (request evidence), both ways. Invariant: both sides are held by live rows.
    joins_by_email: HashMap<Sym, Vec<Sym>>,
    joins_by_phone: HashMap<Sym, Vec<Sym>>,
    /// Remembered row-to-row links, both ways. Invariant: both rows are live.
    links: HashMap<Slot, Vec<Slot>>,
    max_id: ContactId,
    /// The latest timestamp applied: new facts never carry an earlier one.
    clock: i64,
    stats: Stats,
    /// When each remembered join was made, where known (logs of earlier versions did not say).
    join_times: HashMap<u64, i64>,
    /// Blocked, exempt and shared values, by kind (emails, then phones).
    guards: [KindGuards; 2],
    /// The guards' settings (not state: a snapshot does not keep them).
    limits: Limits,
    /// The contacts the facts applied since the last [`Engine::take_moves`] moved, when asked.
    moves: Moves,
    /// When each erased row was erased, by slot (its identifiers are NONE from then on).
    erased_at: HashMap<Slot, i64>,
    /// The erasure ledger, oldest first (an erasure's id is its place, from 1).
    erasures: Vec<Erasure>,
    /// The change feed's count of events made so far (the feed's own counter, kept in the
    /// image so that a restart goes on from it).
    events: u64,
}

/// A contact a fact created, took away or gave another primary: its primary after the fact
/// (its own id for a primary), or None once deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Moved {
    pub id: ContactId,
    pub primary: Option<ContactId>,
}

/// Moves recorded by `apply`, only while someone collects them (never during a replay).
#[derive(Clone, Debug, Default)]
struct Moves {
    on: bool,
    list: Vec<Moved>,
}

impl Moves {
    fn record(&mut self, id: ContactId, primary: Option<ContactId>) {
        if self.on {
            self.list.push(Moved { id, primary });
        }
    }
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
    }

    /// An empty engine whose plans obey `limits`.
    pub fn with_limits(limits: Limits) -> Engine {
        Engine {
            limits,
            ..Engine::default()
        }
    }

    /// From now on `apply` records every contact it moves, for [`Engine::take_moves`].
    pub(crate) fn track_moves(&mut self) {
        self.moves.on = true;
    }

    /// The contacts moved since the last call, in the order the facts moved them (a contact
    /// moved twice comes twice; the later says where it ended).
    pub(crate) fn take_moves(&mut self) -> Vec<Moved> {
        std::mem::take(&mut self.moves.list)
    }

    /// The guards' settings: they decide plans, never how a fact applies.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Makes room for `contacts` more rows with their own identifiers, so that loading a
    /// snapshot of known size never regrows a table (a regrowth rereads every identifier).
    pub fn reserve(&mut self, contacts: usize) {
        self.rows.reserve(contacts);
        self.forest.reserve(contacts);
        self.emails.reserve(contacts);
        self.phones.reserve(contacts);
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The change feed's count of events made so far (0 in an image of an older format).
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Counts `n` more events of the change feed.
    #[cfg(test)]
    pub fn advance_events(&mut self, n: u64) {
        self.events += n;
    }

    /// The highest id ever used (0 when empty); the next contact gets one more.
    pub fn max_id(&self) -> ContactId {
        self.max_id
    }

    /// The number of live contacts in the largest cluster (0 when there is none).
    pub fn largest_cluster(&self) -> usize {
        self.forest.largest()
    }

    fn index(&self, kind: Kind) -> &Interner {
        match kind {
            Kind::Email => &self.emails,
            Kind::Phone => &self.phones,
        }
    }

    fn index_mut(&mut self, kind: Kind) -> &mut Interner {
        match kind {
            Kind::Email => &mut self.emails,
            Kind::Phone => &mut self.phones,
        }
    }

    fn guards(&self, kind: Kind) -> &KindGuards {
        &self.guards[kind as usize]
    }

    fn guards_mut(&mut self, kind: Kind) -> &mut KindGuards {
        &mut self.guards[kind as usize]
    }

    /// The symbol a row holds for `kind`.
    fn sym_of(row: &Row, kind: Kind) -> Sym {
        match kind {
            Kind::Email => row.email,
            Kind::Phone => row.phone,
        }
    }

    fn union(&mut self, a: Slot, b: Slot) {
        let rows = &self.rows;
        if self.forest.union(a, b, |x, y| older(rows, x, y)) {
            self.stats.clusters -= 1;
        }
    }

    fn older(&self, a: Slot, b: Slot) -> bool {
        older(&self.rows, a, b)
    }

    /// The slot of `id`'s row: `id - 1` unless the id was displaced.
    fn slot(&self, id: ContactId) -> Result<Slot, EngineError> {
        let natural = id.wrapping_sub(1);
        if self.rows.get(natural as usize).is_some_and(|r| r.id == id) {
            return Ok(natural);
        }
        self.displaced
            .get(&id)
            .copied()
            .ok_or(EngineError::UnknownContact(id))
    }

    fn is_live(&self, slot: Slot) -> bool {
        !self.forest.is_removed(slot)
    }

    fn live_slot(&self, id: ContactId) -> Result<Slot, EngineError> {
        let slot = self.slot(id)?;
        if self.is_live(slot) {
            Ok(slot)
        } else {
            Err(EngineError::AlreadyDeleted(id))
        }
    }
}

/// The `/identify` answer, borrowing the engine's strings (serialize it before the lock drops).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityRef<'a> {
    pub primary_contact_id: ContactId,
    pub emails: Vec<&'a str>,
    pub phone_numbers: Vec<&'a str>,
    pub secondary_contact_ids: Vec<ContactId>,
}

impl IdentityRef<'_> {
    pub fn to_owned(&self) -> Identity {
        Identity {
            primary_contact_id: self.primary_contact_id,
            emails: self.emails.iter().map(|s| s.to_string()).collect(),
            phone_numbers: self.phone_numbers.iter().map(|s| s.to_string()).collect(),
            secondary_contact_ids: self.secondary_contact_ids.clone(),
        }
    }
}

fn older(rows: &[Row], a: Slot, b: Slot) -> bool {
    rows[a as usize].age() < rows[b as usize].age()
}

/// The live row holding `sym` that stands for all its holders, if any: none when nobody
/// holds it, and none when it is blocked (a blocked value links nobody).
fn held(index: &Interner, sym: Sym) -> Option<Slot> {
    let h = index.value(sym);
    (h != NONE && h != BLOCKED).then_some(h)
}

/// The key of a join (email, phone) in `join_times`.
fn join_key(email: Sym, phone: Sym) -> u64 {
    (u64::from(email) << 32) | u64::from(phone)
}

#[cfg(test)]
mod tests;
