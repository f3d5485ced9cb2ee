//! The engine: every contact row, the email and phone indexes, and the disjoint-set forest that
//! groups rows into clusters. Pure and synchronous: no I/O, no clock, no async.
//!
//! `plan_*` reads and returns the facts ([`Change`]) a request implies; [`Engine::apply`] is the
//! only mutator, used both live and when the log is replayed, so replay cannot drift from live.

pub mod change;
pub mod evidence;
mod forest;
mod image;
mod interner;
mod packed;
mod queries;
mod regroup;
mod symtable;
pub mod time;
pub mod types;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

pub use change::{Change, NewContact};
use forest::{Forest, Slot};
use interner::{Interner, Sym};
pub use types::{
    Contact, ContactId, Email, IdentifierError, Identity, Phone, Precedence, Query, Timestamp,
};

/// Marks "no identifier" in a row and "no live holder" in an index.
use interner::NONE;

/// One contact in 32 bytes: identifiers as interned symbols, `linked` 0 for a primary. Whether
/// it is deleted is kept in the forest, and when in `Engine::deleted_at` (deletions are rare).
#[derive(Clone, Debug)]
struct Row {
    id: ContactId,
    email: Sym,
    phone: Sym,
    linked: ContactId,
    created: i64,
    updated: i64,
}

impl packed::Packed for Row {
    const SIZE: usize = 32;

    fn pack(&self, out: &mut Vec<u8>) {
        for n in [self.id, self.email, self.phone, self.linked] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&self.created.to_le_bytes());
        out.extend_from_slice(&self.updated.to_le_bytes());
    }

    fn unpack(b: &[u8]) -> Row {
        use packed::{i64_at, u32_at};
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
}

/// What a request implies: the facts to log and apply, and whose cluster to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub changes: Vec<Change>,
    /// A contact of the cluster to answer with (once the changes are applied).
    pub answer: ContactId,
}

/// What a deletion implies: the facts, and one contact of each group its cluster splits into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletePlan {
    pub changes: Vec<Change>,
    /// The primary of each resulting group, oldest first.
    pub groups: Vec<ContactId>,
}

/// Counts for metrics and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub contacts: usize,
    pub deleted: usize,
    pub clusters: usize,
    pub joins: usize,
}

/// Serialized, the engine is its tables as they are (a snapshot's image, loaded with no
/// rehashing or replay); a deserialized engine must pass [`Engine::check_image`] before use.
#[derive(Default, Debug, Clone, Serialize, Deserialize)]
pub struct Engine {
    #[serde(with = "packed")]
    rows: Vec<Row>,
    /// The slots of ids whose row is not at slot `id - 1`. The service counts ids up from 1 and
    /// adds rows in that order, so this stays empty unless an import brings other ids.
    displaced: HashMap<ContactId, Slot>,
    /// When each deleted row was deleted, by slot.
    deleted_at: HashMap<Slot, i64>,
    /// Each identifier's value is the oldest live row holding it, or NONE. All holders share a
    /// cluster, so an answer lists an identifier at the member the index names.
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
}

impl Engine {
    pub fn new() -> Engine {
        Engine::default()
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

    /// The highest id ever used (0 when empty); the next contact gets one more.
    pub fn max_id(&self) -> ContactId {
        self.max_id
    }

    /// What `/identify` with `query` implies at wall-clock time `now` (SPEC rules 2 to 4).
    pub fn plan_identify(&self, query: &Query, now: Timestamp) -> Plan {
        let now = Timestamp(now.0.max(self.clock));
        let (email_sym, phone_sym) = self.emails.lookup_pair(
            query.email().map(Email::as_str),
            &self.phones,
            query.phone().map(Phone::as_str),
        );
        let by_email = email_sym.and_then(|s| held(&self.emails, s));
        let by_phone = phone_sym.and_then(|s| held(&self.phones, s));
        // Read the email holder's row before the forest, so that the two reads overlap: on the
        // read path (one row holds both) it is the primary's row, all the answer needs.
        let holder_has_both = match (email_sym, phone_sym, by_email) {
            (Some(e), Some(p), Some(holder)) => self.rows[holder as usize].holds(e, p),
            _ => false,
        };
        let roots = (
            by_email.map(|s| self.forest.find(s)),
            by_phone.map(|s| self.forest.find(s)),
        );
        let root = match roots {
            (None, None) => return self.plan_new_contact(query, None, now),
            (Some(a), Some(b)) if a != b => return self.plan_merge(query, a, b, now),
            (Some(root), _) | (None, Some(root)) => root,
        };
        let primary = self.rows[self.forest.primary(root) as usize].id;
        let lacks_email = query.email().is_some() && by_email.is_none();
        let lacks_phone = query.phone().is_some() && by_phone.is_none();
        if lacks_email || lacks_phone {
            return self.plan_new_contact(query, Some(primary), now);
        }
        let mut changes = Vec::new();
        if let (Some(e), Some(p)) = (email_sym, phone_sym) {
            if !holder_has_both && self.is_new_join(e, p, root) {
                changes.push(joined(query));
            }
        }
        Plan {
            changes,
            answer: primary,
        }
    }

    fn plan_new_contact(&self, query: &Query, primary: Option<ContactId>, now: Timestamp) -> Plan {
        let id = self.max_id + 1;
        let contact = NewContact {
            id,
            email: query.email().map(|e| e.as_str().to_owned()),
            phone: query.phone().map(|p| p.as_str().to_owned()),
            linked_id: primary,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        Plan {
            changes: vec![Change::Created(contact)],
            answer: primary.unwrap_or(id),
        }
    }

    /// Rule 3: the cluster with the older primary absorbs the other; every row of the younger
    /// one is relinked to the older primary.
    fn plan_merge(&self, query: &Query, a: Slot, b: Slot, now: Timestamp) -> Plan {
        let (pa, pb) = (self.forest.primary(a), self.forest.primary(b));
        let (winner, loser) = if self.older(pa, pb) {
            (pa, pb)
        } else {
            (pb, pa)
        };
        let primary = self.rows[winner as usize].id;
        let mut changes = vec![joined(query)];
        changes.extend(
            self.forest
                .members(loser)
                .iter()
                .map(|&slot| Change::Relinked {
                    id: self.rows[slot as usize].id,
                    primary: Some(primary),
                    at: now,
                }),
        );
        Plan {
            changes,
            answer: primary,
        }
    }

    /// A request naming a known email and phone of one cluster (whose email holder does not
    /// hold both) is new evidence unless another live row holds both, or the join is already
    /// remembered.
    fn is_new_join(&self, email: Sym, phone: Sym, root: Slot) -> bool {
        let known = self
            .joins_by_email
            .get(&email)
            .is_some_and(|ps| ps.contains(&phone));
        !known
            && !self
                .forest
                .members(root)
                .iter()
                .any(|&s| self.rows[s as usize].holds(email, phone))
    }

    /// What deleting `id` at `now` implies: the deletion, then a relink of every row of the
    /// former cluster whose primary changes when it regroups by the evidence that remains.
    pub fn plan_delete(&self, id: ContactId, now: Timestamp) -> Result<DeletePlan, EngineError> {
        let at = Timestamp(now.0.max(self.clock));
        let slot = self.live_slot(id)?;
        let groups = self.regroup(slot).groups;
        let mut changes = vec![Change::Deleted { id, at }];
        let mut primaries = Vec::with_capacity(groups.len());
        for group in &groups {
            let primary = self.rows[group[0] as usize].id;
            primaries.push(primary);
            for &slot in group {
                let row = &self.rows[slot as usize];
                let want = (row.id != primary).then_some(primary);
                if row.linked_id() != want {
                    changes.push(Change::Relinked {
                        id: row.id,
                        primary: want,
                        at,
                    });
                }
            }
        }
        Ok(DeletePlan {
            changes,
            groups: primaries,
        })
    }

    /// Applies one fact. Checks before it changes anything, so an error leaves the engine as it
    /// was (replay reports it as corruption rather than running on).
    pub fn apply(&mut self, change: &Change) -> Result<(), EngineError> {
        match change {
            Change::Created(contact) => self.apply_created(contact),
            Change::Relinked { id, primary, at } => {
                let slot = self.slot(*id)?;
                let row = &mut self.rows[slot as usize];
                row.linked = primary.unwrap_or(0);
                row.updated = at.0;
                self.clock = self.clock.max(at.0);
                Ok(())
            }
            Change::Joined { email, phone } => self.apply_joined(email, phone),
            Change::Deleted { id, at } => self.apply_deleted(*id, *at),
            Change::Linked { a, b } => self.apply_linked(*a, *b),
        }
    }

    fn apply_created(&mut self, c: &NewContact) -> Result<(), EngineError> {
        if c.id == 0 {
            return Err(EngineError::InvalidId(c.id));
        }
        if self.slot(c.id).is_ok() {
            return Err(EngineError::DuplicateId(c.id));
        }
        let slot = self.forest.push();
        // A new identifier of a live row is held by it from the start.
        let holder = if c.deleted_at.is_some() { NONE } else { slot };
        let (email, phone) = self.emails.intern_pair(
            c.email.as_deref(),
            &mut self.phones,
            c.phone.as_deref(),
            holder,
        );
        self.rows.push(Row {
            id: c.id,
            email,
            phone,
            linked: c.linked_id.unwrap_or(0),
            created: c.created_at.0,
            updated: c.updated_at.0,
        });
        if u64::from(slot) + 1 != u64::from(c.id) {
            self.displaced.insert(c.id, slot);
        }
        self.max_id = self.max_id.max(c.id);
        self.clock = self
            .clock
            .max(c.created_at.0)
            .max(c.updated_at.0)
            .max(c.deleted_at.map_or(0, |t| t.0));
        self.stats.contacts += 1;
        if let Some(at) = c.deleted_at {
            self.forest.remove(slot);
            self.deleted_at.insert(slot, at.0);
            self.stats.deleted += 1;
            return Ok(());
        }
        self.stats.clusters += 1;
        self.hold(true, email, slot);
        self.hold(false, phone, slot);
        Ok(())
    }

    /// Live row `slot` holds `sym` (an email if `email`, else a phone): it joins the cluster of
    /// the identifier's holder, and is its holder if it is older (or the only one).
    fn hold(&mut self, email: bool, sym: Sym, slot: Slot) {
        if sym == NONE {
            return;
        }
        let index = if email { &self.emails } else { &self.phones };
        let holder = held(index, sym);
        if let Some(holder) = holder.filter(|&h| h != slot) {
            self.union(slot, holder);
        }
        if holder.is_none_or(|h| self.older(slot, h)) {
            let index = if email {
                &mut self.emails
            } else {
                &mut self.phones
            };
            index.set_value(sym, slot);
        }
    }

    fn apply_joined(&mut self, email: &str, phone: &str) -> Result<(), EngineError> {
        let e = self.emails.lookup(email);
        let p = self.phones.lookup(phone);
        let holders = (
            e.and_then(|s| held(&self.emails, s)),
            p.and_then(|s| held(&self.phones, s)),
        );
        let (Some(a), Some(b), Some(e), Some(p)) = (holders.0, holders.1, e, p) else {
            return Err(EngineError::DanglingJoin(format!("{email} / {phone}")));
        };
        self.union(a, b);
        let phones = self.joins_by_email.entry(e).or_default();
        if !phones.contains(&p) {
            phones.push(p);
            self.joins_by_phone.entry(p).or_default().push(e);
            self.stats.joins += 1;
        }
        Ok(())
    }

    fn apply_linked(&mut self, a: ContactId, b: ContactId) -> Result<(), EngineError> {
        let (sa, sb) = (self.live_slot(a)?, self.live_slot(b)?);
        if sa == sb || self.links.get(&sa).is_some_and(|l| l.contains(&sb)) {
            return Ok(());
        }
        self.union(sa, sb);
        self.links.entry(sa).or_default().push(sb);
        self.links.entry(sb).or_default().push(sa);
        self.stats.joins += 1;
        Ok(())
    }

    fn apply_deleted(&mut self, id: ContactId, at: Timestamp) -> Result<(), EngineError> {
        let slot = self.live_slot(id)?;
        let former: Vec<Slot> = self.forest.members(slot).to_vec();
        let regrouped = self.regroup(slot);
        self.forest.isolate(&former);
        for group in &regrouped.groups {
            for pair in group.windows(2) {
                let rows = &self.rows;
                self.forest
                    .union(pair[0], pair[1], |x, y| older(rows, x, y));
            }
        }
        self.forest.remove(slot);
        self.deleted_at.insert(slot, at.0);
        let row = &self.rows[slot as usize];
        let (email, phone) = (row.email, row.phone);
        if email != NONE && self.emails.value(email) == slot {
            let next = regrouped.email_holder.get(&email).copied();
            self.emails.set_value(email, next.unwrap_or(NONE));
            if next.is_none() {
                forget_joins(
                    &mut self.joins_by_email,
                    &mut self.joins_by_phone,
                    email,
                    &mut self.stats,
                );
            }
        }
        if phone != NONE && self.phones.value(phone) == slot {
            let next = regrouped.phone_holder.get(&phone).copied();
            self.phones.set_value(phone, next.unwrap_or(NONE));
            if next.is_none() {
                forget_joins(
                    &mut self.joins_by_phone,
                    &mut self.joins_by_email,
                    phone,
                    &mut self.stats,
                );
            }
        }
        for other in self.links.remove(&slot).unwrap_or_default() {
            self.stats.joins -= 1;
            let back = self
                .links
                .get_mut(&other)
                .expect("links are kept both ways");
            back.retain(|&s| s != slot);
            if back.is_empty() {
                self.links.remove(&other);
            }
        }
        self.clock = self.clock.max(at.0);
        self.stats.deleted += 1;
        self.stats.clusters = self.stats.clusters - 1 + regrouped.groups.len();
        Ok(())
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

    /// The `/identify` answer for the cluster of `id`; None if `id` is unknown or deleted.
    ///
    /// One walk over the members, oldest first: each identifier is listed at its oldest live
    /// holder, which is the one the index names, so it comes once and in order with no set.
    pub fn identity(&self, id: ContactId) -> Option<IdentityRef<'_>> {
        let slot = self.live_slot(id).ok()?;
        let members = self.forest.members(slot);
        let primary = self.rows[members[0] as usize].id;
        let mut emails = Vec::with_capacity(members.len());
        let mut phones = Vec::with_capacity(members.len());
        let mut secondaries = Vec::with_capacity(members.len() - 1);
        for &slot in members {
            let row = &self.rows[slot as usize];
            if row.email != NONE && self.emails.value(row.email) == slot {
                emails.push(self.emails.resolve(row.email));
            }
            if row.phone != NONE && self.phones.value(row.phone) == slot {
                phones.push(self.phones.resolve(row.phone));
            }
            if row.id != primary {
                secondaries.push(row.id);
            }
        }
        Some(IdentityRef {
            primary_contact_id: primary,
            emails,
            phone_numbers: phones,
            secondary_contact_ids: secondaries,
        })
    }

    /// The row of `id`, deleted or not.
    pub fn contact(&self, id: ContactId) -> Option<Contact> {
        let slot = self.slot(id).ok()?;
        Some(self.contact_at(slot))
    }

    fn contact_at(&self, slot: Slot) -> Contact {
        let row = &self.rows[slot as usize];
        let text =
            |interner: &Interner, sym: Sym| (sym != NONE).then(|| interner.resolve(sym).to_owned());
        Contact {
            id: row.id,
            phone_number: text(&self.phones, row.phone),
            email: text(&self.emails, row.email),
            linked_id: row.linked_id(),
            link_precedence: if row.linked == 0 {
                Precedence::Primary
            } else {
                Precedence::Secondary
            },
            created_at: Timestamp(row.created),
            updated_at: Timestamp(row.updated),
            deleted_at: self.deleted_at.get(&slot).map(|&t| Timestamp(t)),
        }
    }

    /// Every row, in the order they were added.
    pub fn contacts(&self) -> impl Iterator<Item = Contact> + '_ {
        (0..self.rows.len() as Slot).map(|slot| self.contact_at(slot))
    }

    /// The facts that rebuild this state from nothing: every row as it stands, then the joins.
    pub fn facts(&self) -> impl Iterator<Item = Change> + '_ {
        let rows = self.contacts().map(|c| {
            Change::Created(NewContact {
                id: c.id,
                email: c.email,
                phone: c.phone_number,
                linked_id: c.linked_id,
                created_at: c.created_at,
                updated_at: c.updated_at,
                deleted_at: c.deleted_at,
            })
        });
        let joins = self.joins_by_email.iter().flat_map(move |(&e, phones)| {
            phones.iter().map(move |&p| Change::Joined {
                email: self.emails.resolve(e).to_owned(),
                phone: self.phones.resolve(p).to_owned(),
            })
        });
        let links = self.links.iter().flat_map(move |(&a, others)| {
            others
                .iter()
                .filter(move |&&b| a < b)
                .map(move |&b| Change::Linked {
                    a: self.rows[a as usize].id,
                    b: self.rows[b as usize].id,
                })
        });
        rows.chain(joins).chain(links)
    }

    /// Checks that rows, indexes and forest agree; for tests and `check`. Costs a full scan.
    pub fn check_invariants(&self) -> Result<(), String> {
        for (slot, row) in self.rows.iter().enumerate() {
            if !self.is_live(slot as Slot) {
                continue;
            }
            let primary = &self.rows[self.forest.primary(slot as Slot) as usize];
            let want = (primary.id != row.id).then_some(primary.id);
            if row.linked_id() != want {
                return Err(format!(
                    "contact {} links to {:?}, its cluster's primary is {}",
                    row.id,
                    row.linked_id(),
                    primary.id
                ));
            }
            if row.age() < primary.age() {
                return Err(format!(
                    "contact {} is older than its primary {}",
                    row.id, primary.id
                ));
            }
            for (holders, sym) in [(&self.emails, row.email), (&self.phones, row.phone)] {
                let holder = (sym != NONE).then(|| held(holders, sym));
                if let Some(h) = holder {
                    let same =
                        h.is_some_and(|h| self.forest.find(h) == self.forest.find(slot as Slot));
                    if !same {
                        return Err(format!(
                            "contact {}'s identifier is not indexed to its cluster",
                            row.id
                        ));
                    }
                    if h.is_some_and(|h| self.older(slot as Slot, h)) {
                        return Err(format!(
                            "contact {} is older than its identifier's indexed holder",
                            row.id
                        ));
                    }
                }
            }
            if self.forest.find(slot as Slot) == slot as Slot {
                let members = self.forest.members(slot as Slot);
                if members.windows(2).any(|w| !self.older(w[0], w[1])) {
                    return Err(format!("the cluster of {} is not in age order", row.id));
                }
            }
        }
        Ok(())
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

/// The live row holding `sym`, if any.
fn held(index: &Interner, sym: Sym) -> Option<Slot> {
    let h = index.value(sym);
    (h != NONE).then_some(h)
}

fn joined(query: &Query) -> Change {
    Change::Joined {
        email: query
            .email()
            .map(|e| e.as_str().to_owned())
            .unwrap_or_default(),
        phone: query
            .phone()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
    }
}

/// Drops every join naming `gone`, which no live row holds any more.
fn forget_joins(
    this_side: &mut HashMap<Sym, Vec<Sym>>,
    other_side: &mut HashMap<Sym, Vec<Sym>>,
    gone: Sym,
    stats: &mut Stats,
) {
    for other in this_side.remove(&gone).unwrap_or_default() {
        stats.joins -= 1;
        if let Some(list) = other_side.get_mut(&other) {
            list.retain(|&s| s != gone);
            if list.is_empty() {
                other_side.remove(&other);
            }
        }
    }
}

#[cfg(test)]
mod tests;
