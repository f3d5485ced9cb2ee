//! Applying facts: the only way the engine changes, used live and when the log is replayed, so
//! replay cannot drift from live. Each fact is checked before anything changes, so an error
//! leaves the engine as it was.

use super::change::{Change, NewContact};
use super::forest::Slot;
use super::guards::{Block, BlockReason, Kind};
use super::interner::Sym;
use super::regroup::Regrouped;
use super::types::{ContactId, Timestamp};
use super::{held, join_key, older, Engine, EngineError, Row, BLOCKED, NONE};

impl Engine {
    /// Applies one fact.
    pub fn apply(&mut self, change: &Change) -> Result<(), EngineError> {
        match change {
            Change::Created(contact) => self.apply_created(contact),
            Change::Relinked { id, primary, at } => {
                let slot = self.slot(*id)?;
                let row = &mut self.rows[slot as usize];
                row.linked = primary.unwrap_or(0);
                row.updated = at.0;
                self.tick(*at);
                self.moves.record(*id, Some(primary.unwrap_or(*id)));
                Ok(())
            }
            Change::Joined { email, phone } => self.apply_joined(email, phone, None),
            Change::JoinedAt { email, phone, at } => self.apply_joined(email, phone, Some(*at)),
            Change::Deleted { id, at } => self.apply_deleted(*id, *at),
            Change::Linked { a, b } => self.apply_linked(*a, *b),
            Change::Merged {
                email,
                phone,
                survivor,
                absorbed,
                at,
            } => self.apply_merged(email, phone, (*survivor, *absorbed), *at),
            Change::Blocked {
                kind,
                value,
                reason,
                at,
            } => self.apply_blocked(*kind, value, *reason, *at),
            Change::Unblocked { kind, value, at } => self.apply_unblocked(*kind, value, *at),
            Change::Rekeyed { kind, from, to, at } => self.apply_rekeyed(*kind, from, to, *at),
            Change::Settled { ids, at } => self.apply_settled(ids, *at),
            Change::Origin { .. } => Ok(()),
            Change::Edited {
                id,
                email,
                phone,
                at,
            } => self.apply_edited(*id, [email.as_deref(), phone.as_deref()], *at),
            Change::Erased {
                erasure,
                ids,
                at,
                purge_by,
            } => self.apply_erased(*erasure, ids, *at, *purge_by),
            Change::Purged { erasures, at } => self.apply_purged(erasures, *at),
        }
    }

    /// Points every live row of the clusters of `ids` at its cluster's oldest member.
    fn apply_settled(&mut self, ids: &[ContactId], at: Timestamp) -> Result<(), EngineError> {
        let mut roots = hashbrown::HashSet::new();
        for &id in ids {
            roots.insert(self.forest.find(self.live_slot(id)?));
        }
        let groups: Vec<Vec<Slot>> = (roots.into_iter())
            .map(|root| self.forest.members(root).to_vec())
            .collect();
        self.relink(&groups, at);
        Ok(())
    }

    pub(super) fn tick(&mut self, at: Timestamp) {
        self.clock = self.clock.max(at.0);
    }

    fn apply_created(&mut self, c: &NewContact) -> Result<(), EngineError> {
        if c.id == 0 {
            return Err(EngineError::InvalidId(c.id));
        }
        if self.slot(c.id).is_ok() {
            return Err(EngineError::DuplicateId(c.id));
        }
        if self.rows.len() >= super::guards::MAX_SLOTS {
            return Err(EngineError::Capacity("contact rows"));
        }
        // Room is known without a lookup but near the arena's end (plans check the same).
        let fits = |index: &super::Interner, text: &Option<String>| {
            text.as_deref()
                .is_none_or(|t| index.has_room(t) || index.lookup(t).is_some())
        };
        if !fits(&self.emails, &c.email) || !fits(&self.phones, &c.phone) {
            return Err(EngineError::Capacity("identifier storage"));
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
        self.tick(c.created_at);
        self.tick(c.updated_at);
        self.stats.contacts += 1;
        if let Some(at) = c.deleted_at {
            self.tick(at);
            self.forest.remove(slot);
            self.deleted_at.insert(slot, at.0);
            self.stats.deleted += 1;
            self.moves.record(c.id, None);
            return Ok(());
        }
        self.moves.record(c.id, Some(c.linked_id.unwrap_or(c.id)));
        self.stats.clusters += 1;
        self.hold(Kind::Email, email, slot);
        self.hold(Kind::Phone, phone, slot);
        Ok(())
    }

    /// Live row `slot` holds `sym`: it joins the cluster of the identifier's holder, and is
    /// its holder if it is older (or the only one). A blocked value only counts it.
    pub(super) fn hold(&mut self, kind: Kind, sym: Sym, slot: Slot) {
        if sym == NONE {
            return;
        }
        let value = self.index(kind).value(sym);
        if value == BLOCKED {
            let rows = &self.rows;
            if let Some(block) = self.guards[kind as usize].blocked.get_mut(&sym) {
                let at = block.holders.partition_point(|&h| older(rows, h, slot));
                if block.holders.get(at) != Some(&slot) {
                    block.holders.insert(at, slot);
                }
            }
            return;
        }
        if value == slot {
            return;
        }
        if value != NONE {
            *self.guards_mut(kind).shared.entry(sym).or_insert(1) += 1;
            self.union(slot, value);
        }
        if value == NONE || self.older(slot, value) {
            self.index_mut(kind).set_value(sym, slot);
        }
    }

    /// A join unites its email's and phone's holders. One naming a blocked value (which only
    /// a rebuild from facts applies: plans drop blocked values) is remembered without uniting
    /// anyone, as long as the value has a live holder.
    fn apply_joined(
        &mut self,
        email: &str,
        phone: &str,
        at: Option<Timestamp>,
    ) -> Result<(), EngineError> {
        let dangling = || EngineError::DanglingJoin(format!("{email} / {phone}"));
        let e = self.emails.lookup(email).ok_or_else(dangling)?;
        let p = self.phones.lookup(phone).ok_or_else(dangling)?;
        let (a, b) = (
            self.join_side(Kind::Email, e),
            self.join_side(Kind::Phone, p),
        );
        let (Some(a), Some(b)) = (a, b) else {
            return Err(dangling());
        };
        if let (Some(a), Some(b)) = (a, b) {
            self.union(a, b);
        }
        self.remember_join(e, p, at);
        Ok(())
    }

    /// A join's side: its live holder, None (inside) if it is blocked but held, or None if it
    /// dangles.
    fn join_side(&self, kind: Kind, sym: Sym) -> Option<Option<Slot>> {
        if self.is_blocked(kind, sym) {
            let held = self.holders(kind, sym) > 0;
            return held.then_some(None);
        }
        held(self.index(kind), sym).map(Some)
    }

    /// The symbols of a join's email and phone and their live holders, or why it dangles.
    fn join_holders(
        &self,
        email: &str,
        phone: &str,
    ) -> Result<(Sym, Sym, Slot, Slot), EngineError> {
        let e = self.emails.lookup(email);
        let p = self.phones.lookup(phone);
        let holders = (
            e.and_then(|s| held(&self.emails, s)),
            p.and_then(|s| held(&self.phones, s)),
        );
        match (e, p, holders) {
            (Some(e), Some(p), (Some(a), Some(b))) => Ok((e, p, a, b)),
            _ => Err(EngineError::DanglingJoin(format!("{email} / {phone}"))),
        }
    }

    pub(super) fn remember_join(&mut self, e: Sym, p: Sym, at: Option<Timestamp>) {
        let phones = self.joins_by_email.entry(e).or_default();
        if !phones.contains(&p) {
            phones.push(p);
            self.joins_by_phone.entry(p).or_default().push(e);
            self.stats.joins += 1;
            if let Some(at) = at {
                self.join_times.insert(join_key(e, p), at.0);
            }
        }
    }

    fn apply_merged(
        &mut self,
        email: &str,
        phone: &str,
        (survivor, absorbed): (ContactId, ContactId),
        at: Timestamp,
    ) -> Result<(), EngineError> {
        let (e, p, a, b) = self.join_holders(email, phone)?;
        let primary_id = |slot| self.rows[self.forest.primary(slot) as usize].id;
        let loser = match (primary_id(a), primary_id(b)) {
            (x, y) if x == survivor && y == absorbed => b,
            (x, y) if x == absorbed && y == survivor => a,
            _ => return Err(EngineError::MismatchedMerge(absorbed, survivor)),
        };
        for &slot in self.forest.members(loser) {
            let row = &mut self.rows[slot as usize];
            row.linked = survivor;
            row.updated = at.0;
            self.moves.record(row.id, Some(survivor));
        }
        self.tick(at);
        self.union(a, b);
        self.remember_join(e, p, Some(at));
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
        let regrouped = self.regroup(&former, Some(slot));
        self.reform(&former, &regrouped.groups, at);
        self.forest.remove(slot);
        self.deleted_at.insert(slot, at.0);
        let row = &self.rows[slot as usize];
        let (email, phone) = (row.email, row.phone);
        self.release(Kind::Email, email, slot, &regrouped);
        self.release(Kind::Phone, phone, slot, &regrouped);
        self.unlink(slot);
        self.tick(at);
        self.stats.deleted += 1;
        self.moves.record(id, None);
        Ok(())
    }

    /// Drops the row-to-row links of `slot`, which is no longer live.
    pub(super) fn unlink(&mut self, slot: Slot) {
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
    }

    /// Deleted (edited, erased) row `slot` no longer holds `sym`: its count drops, the index
    /// names the next oldest holder, and with no holder left the joins naming it are forgotten.
    pub(super) fn release(&mut self, kind: Kind, sym: Sym, slot: Slot, regrouped: &Regrouped) {
        if sym == NONE {
            return;
        }
        let value = self.index(kind).value(sym);
        let guards = self.guards_mut(kind);
        let unheld = if value == BLOCKED {
            let block = guards
                .blocked
                .get_mut(&sym)
                .expect("a blocked value has an entry");
            block.holders.retain(|&h| h != slot);
            block.holders.is_empty()
        } else {
            if let Some(n) = guards.shared.get_mut(&sym) {
                *n -= 1;
                if *n == 1 {
                    guards.shared.remove(&sym);
                }
            }
            if value != slot {
                return;
            }
            let holders = match kind {
                Kind::Email => &regrouped.email_holder,
                Kind::Phone => &regrouped.phone_holder,
            };
            let next = holders.get(&sym).copied();
            self.index_mut(kind).set_value(sym, next.unwrap_or(NONE));
            next.is_none()
        };
        if unheld {
            self.forget_joins(kind, sym);
        }
    }

    /// Drops every join naming `gone`, which no live row holds any more.
    fn forget_joins(&mut self, kind: Kind, gone: Sym) {
        let (this_side, other_side) = match kind {
            Kind::Email => (&mut self.joins_by_email, &mut self.joins_by_phone),
            Kind::Phone => (&mut self.joins_by_phone, &mut self.joins_by_email),
        };
        for other in this_side.remove(&gone).unwrap_or_default() {
            self.stats.joins -= 1;
            let pair = match kind {
                Kind::Email => (gone, other),
                Kind::Phone => (other, gone),
            };
            self.join_times.remove(&join_key(pair.0, pair.1));
            if let Some(list) = other_side.get_mut(&other) {
                list.retain(|&s| s != gone);
                if list.is_empty() {
                    other_side.remove(&other);
                }
            }
        }
    }

    fn apply_blocked(
        &mut self,
        kind: Kind,
        value: &str,
        reason: BlockReason,
        at: Timestamp,
    ) -> Result<(), EngineError> {
        let sym = self.index(kind).lookup(value);
        if sym.is_some_and(|s| self.is_blocked(kind, s)) {
            return Err(EngineError::AlreadyBlocked(value.to_owned()));
        }
        if sym.is_none() && !self.index(kind).has_room(value) {
            return Err(EngineError::Capacity("identifier storage"));
        }
        let sym = self.index_mut(kind).intern(value, NONE);
        let former: Vec<Slot> = match held(self.index(kind), sym) {
            Some(h) => self.forest.members(h).to_vec(),
            None => Vec::new(),
        };
        let holders = former
            .iter()
            .copied()
            .filter(|&s| Engine::sym_of(&self.rows[s as usize], kind) == sym)
            .collect();
        self.index_mut(kind).set_value(sym, BLOCKED);
        let guards = self.guards_mut(kind);
        guards.shared.remove(&sym);
        guards.blocked.insert(
            sym,
            Block {
                reason,
                at: at.0,
                holders,
            },
        );
        if !former.is_empty() {
            let regrouped = self.regroup(&former, None);
            self.reform(&former, &regrouped.groups, at);
        }
        Ok(())
    }

    fn apply_unblocked(
        &mut self,
        kind: Kind,
        value: &str,
        at: Timestamp,
    ) -> Result<(), EngineError> {
        let Some(sym) = self
            .index(kind)
            .lookup(value)
            .filter(|&s| self.is_blocked(kind, s))
        else {
            return Err(EngineError::NotBlocked(value.to_owned()));
        };
        let roots = self.unblock_roots(kind, sym);
        let guards = self.guards_mut(kind);
        let block = guards
            .blocked
            .remove(&sym)
            .expect("a blocked value has an entry");
        guards.exempt.insert(sym);
        if block.holders.len() >= 2 {
            guards.shared.insert(sym, block.holders.len() as u32);
        }
        let holder = block.holders.first().copied().unwrap_or(NONE);
        self.index_mut(kind).set_value(sym, holder);
        for pair in roots.windows(2) {
            self.union(pair[0], pair[1]);
        }
        if let Some(&root) = roots.first() {
            let members = self.forest.members(root).to_vec();
            self.relink(&[members], at);
        }
        Ok(())
    }

    /// Makes the rows of `former` (whole clusters) the clusters `groups`, each oldest first,
    /// and relinks every row whose primary changes at `at`.
    pub(super) fn reform(&mut self, former: &[Slot], groups: &[Vec<Slot>], at: Timestamp) {
        self.forest.isolate(former);
        for group in groups {
            for pair in group.windows(2) {
                let rows = &self.rows;
                self.forest
                    .union(pair[0], pair[1], |x, y| older(rows, x, y));
            }
        }
        self.stats.clusters = self.stats.clusters + groups.len() - 1;
        self.relink(groups, at);
    }

    /// Points every row of each group (oldest first) at the group's oldest, those whose link
    /// changes stamped `at`. The clock counts row stamps only, so it moves only if one changes.
    pub(super) fn relink(&mut self, groups: &[Vec<Slot>], at: Timestamp) {
        let mut stamped = false;
        for group in groups {
            let primary = self.rows[group[0] as usize].id;
            for &slot in group {
                let row = &mut self.rows[slot as usize];
                let want = if row.id == primary { 0 } else { primary };
                if row.linked != want {
                    row.linked = want;
                    row.updated = at.0;
                    stamped = true;
                    self.moves.record(row.id, Some(primary));
                }
            }
        }
        if stamped {
            self.tick(at);
        }
    }
}
