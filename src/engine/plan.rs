//! Planning: what a request implies, read from the state and returned as facts, or refused by a
//! guard or a limit before anything is logged. A plan holds every fact of its request or none,
//! and whatever it holds, `apply` can apply.

use super::change::{Change, NewContact};
use super::forest::Slot;
use super::guards::{BlockReason, Kind, Refusal, MAX_SLOTS};
use super::interner::Sym;
use super::types::{ContactId, Query, Timestamp};
use super::{held, Engine, EngineError, BLOCKED, NONE};

/// What a request implies: the facts to log and apply, and whose cluster to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyPlan {
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

/// A value as an import sees it (see [`Engine::value_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueState {
    pub blocked: bool,
    pub may_turn_generic: bool,
    pub holders: u32,
    pub cluster: Option<(ContactId, usize)>,
}

/// A request's identifier that counts: its text and its symbol if it was ever interned.
#[derive(Clone, Copy)]
struct Asked<'q> {
    text: &'q str,
    sym: Option<Sym>,
}

/// The identifiers of a request that are evidence (blocked ones dropped).
#[derive(Clone, Copy)]
struct Ask<'q> {
    email: Option<Asked<'q>>,
    phone: Option<Asked<'q>>,
}

impl Ask<'_> {
    fn get(&self, kind: Kind) -> Option<Asked<'_>> {
        match kind {
            Kind::Email => self.email,
            Kind::Phone => self.phone,
        }
    }

    fn drop(&mut self, kind: Kind) {
        match kind {
            Kind::Email => self.email = None,
            Kind::Phone => self.phone = None,
        }
    }

    fn is_empty(&self) -> bool {
        self.email.is_none() && self.phone.is_none()
    }
}

impl Engine {
    /// What `/identify` with `query` implies at wall-clock time `now` (docs/API.md, rules 2 to 4, under
    /// the over-merge guards), or why it changes nothing.
    pub fn plan_identify(&self, query: &Query, now: Timestamp) -> Result<IdentifyPlan, Refusal> {
        let now = Timestamp(now.0.max(self.clock));
        let (email_sym, phone_sym) = self.emails.lookup_pair(
            query.email().map(|e| e.as_str()),
            &self.phones,
            query.phone().map(|p| p.as_str()),
        );
        let mut ask = Ask {
            email: query.email().map(|e| Asked {
                text: e.as_str(),
                sym: email_sym,
            }),
            phone: query.phone().map(|p| Asked {
                text: p.as_str(),
                sym: phone_sym,
            }),
        };
        // A blocked value matches nothing, is not new, and is not stored.
        for kind in Kind::BOTH {
            if ask
                .get(kind)
                .and_then(|a| a.sym)
                .is_some_and(|s| self.is_blocked(kind, s))
            {
                ask.drop(kind);
            }
        }
        if ask.is_empty() {
            return Err(Refusal::Blocked);
        }
        let (plan, size) = self.plan_ask(&ask, now)?;
        let Some(kind) = self.turns_generic(&ask, &plan) else {
            self.within_cap(size)?;
            return Ok(plan);
        };
        // The request would give a value one holder too many: it blocks the value first, then
        // goes on as if it had been blocked. Such a request always names a new identifier
        // beside it (a row is only added for something new), so what remains is a new primary.
        let value = ask.get(kind).map(|a| a.text.to_owned()).unwrap_or_default();
        ask.drop(kind);
        if ask.is_empty() {
            return Err(Refusal::Blocked);
        }
        let (mut plan, size) = self.plan_ask(&ask, now)?;
        self.within_cap(size)?;
        plan.changes.insert(
            0,
            Change::Blocked {
                kind,
                value,
                reason: BlockReason::Generic,
                at: now,
            },
        );
        Ok(plan)
    }

    /// Rules 2 to 4 for the identifiers that are evidence, within the capacity limits; with
    /// the size of the cluster the answer names once the plan is applied (the cap is checked
    /// by the caller, after the generic rule, which may make the cluster smaller).
    fn plan_ask(&self, ask: &Ask<'_>, now: Timestamp) -> Result<(IdentifyPlan, usize), Refusal> {
        let holder = |kind| {
            ask.get(kind)
                .and_then(|a| a.sym)
                .and_then(|s| held(self.index(kind), s))
        };
        let (by_email, by_phone) = (holder(Kind::Email), holder(Kind::Phone));
        // Read the email holder's row before the forest, so that the two reads overlap: on the
        // read path (one row holds both) it is the primary's row, all the answer needs.
        let syms = (ask.email.and_then(|a| a.sym), ask.phone.and_then(|a| a.sym));
        let holder_has_both = match (syms, by_email) {
            ((Some(e), Some(p)), Some(holder)) => self.rows[holder as usize].holds(e, p),
            _ => false,
        };
        let roots = (
            by_email.map(|s| self.forest.find(s)),
            by_phone.map(|s| self.forest.find(s)),
        );
        let root = match roots {
            (None, None) => return self.plan_new_contact(ask, None, 0, now),
            (Some(a), Some(b)) if a != b => return self.plan_merge(ask, a, b, now),
            (Some(root), _) | (None, Some(root)) => root,
        };
        let primary = self.rows[self.forest.primary(root) as usize].id;
        let size = self.forest.size(root);
        let lacks_email = ask.email.is_some() && by_email.is_none();
        let lacks_phone = ask.phone.is_some() && by_phone.is_none();
        if lacks_email || lacks_phone {
            return self.plan_new_contact(ask, Some(primary), size, now);
        }
        let mut changes = Vec::new();
        if let ((Some(e), Some(p)), Some(email), Some(phone)) = (syms, ask.email, ask.phone) {
            if !holder_has_both && self.is_new_join(e, p, root) {
                changes.push(Change::JoinedAt {
                    email: email.text.to_owned(),
                    phone: phone.text.to_owned(),
                    at: now,
                });
            }
        }
        let plan = IdentifyPlan {
            changes,
            answer: primary,
        };
        Ok((plan, size))
    }

    /// A new row holding the request's identifiers, joining a cluster of `size` under
    /// `primary` or (None) a primary of its own.
    fn plan_new_contact(
        &self,
        ask: &Ask<'_>,
        primary: Option<ContactId>,
        size: usize,
        now: Timestamp,
    ) -> Result<(IdentifyPlan, usize), Refusal> {
        let id = self.next_id()?;
        for kind in Kind::BOTH {
            if let Some(a) = ask.get(kind).filter(|a| a.sym.is_none()) {
                if !self.index(kind).has_room(a.text) {
                    return Err(Refusal::Capacity("identifier storage"));
                }
            }
        }
        let contact = NewContact {
            id,
            email: ask.email.map(|a| a.text.to_owned()),
            phone: ask.phone.map(|a| a.text.to_owned()),
            linked_id: primary,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        let plan = IdentifyPlan {
            changes: vec![Change::Created(contact)],
            answer: primary.unwrap_or(id),
        };
        Ok((plan, size + 1))
    }

    /// The id a new row gets, if ids and slots are not used up.
    pub fn next_id(&self) -> Result<ContactId, Refusal> {
        if self.rows.len() >= MAX_SLOTS {
            return Err(Refusal::Capacity("contact rows"));
        }
        self.max_id
            .checked_add(1)
            .ok_or(Refusal::Capacity("contact ids"))
    }

    /// Rule 3: the cluster with the older primary absorbs the other. One fact, whatever the
    /// sizes: applying it relinks the absorbed cluster's rows.
    fn plan_merge(
        &self,
        ask: &Ask<'_>,
        a: Slot,
        b: Slot,
        now: Timestamp,
    ) -> Result<(IdentifyPlan, usize), Refusal> {
        let size = self.forest.size(a) + self.forest.size(b);
        let (pa, pb) = (self.forest.primary(a), self.forest.primary(b));
        let (winner, loser) = if self.older(pa, pb) {
            (pa, pb)
        } else {
            (pb, pa)
        };
        let text = |a: Option<Asked<'_>>| a.map(|a| a.text.to_owned()).unwrap_or_default();
        let survivor = self.rows[winner as usize].id;
        let plan = IdentifyPlan {
            changes: vec![Change::Merged {
                email: text(ask.email),
                phone: text(ask.phone),
                survivor,
                absorbed: self.rows[loser as usize].id,
                at: now,
            }],
            answer: survivor,
        };
        Ok((plan, size))
    }

    pub(super) fn within_cap(&self, size: usize) -> Result<(), Refusal> {
        if self.limits.over_cap(size) {
            return Err(Refusal::ClusterLimit {
                size,
                cap: self.limits.max_cluster_size,
            });
        }
        Ok(())
    }

    /// The identifier (if any) that the plan's new row would give more live holders than the
    /// generic threshold allows.
    fn turns_generic(&self, ask: &Ask<'_>, plan: &IdentifyPlan) -> Option<Kind> {
        if !matches!(plan.changes.as_slice(), [Change::Created(_)]) {
            return None;
        }
        Kind::BOTH.into_iter().find(|&kind| {
            (ask.get(kind).and_then(|a| a.sym)).is_some_and(|sym| self.past_threshold(kind, sym, 1))
        })
    }

    /// Whether `sym`, given `added` more live holders, is held by more than the generic
    /// threshold allows (and may be blocked for it: not blocked yet, not exempt).
    pub(super) fn past_threshold(&self, kind: Kind, sym: Sym, added: u32) -> bool {
        let threshold = self.limits.generic_threshold;
        threshold > 0
            && !self.is_blocked(kind, sym)
            && !self.guards(kind).exempt.contains(&sym)
            && self.holders(kind, sym) + added > threshold
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

    /// What deleting `id` at `now` implies: one fact; applying it regroups the former cluster
    /// and relinks the rows whose primary changes.
    pub fn plan_delete(&self, id: ContactId, now: Timestamp) -> Result<DeletePlan, EngineError> {
        let at = Timestamp(now.0.max(self.clock));
        let slot = self.live_slot(id)?;
        let groups = self.regroup(self.forest.members(slot), Some(slot)).groups;
        Ok(DeletePlan {
            changes: vec![Change::Deleted { id, at }],
            groups: groups.iter().map(|g| self.rows[g[0] as usize].id).collect(),
        })
    }

    /// What blocking `value` implies: nothing if it is already blocked, else one fact.
    pub fn plan_block(
        &self,
        kind: Kind,
        value: &str,
        reason: BlockReason,
        now: Timestamp,
    ) -> Result<Vec<Change>, Refusal> {
        let sym = self.index(kind).lookup(value);
        if sym.is_some_and(|s| self.is_blocked(kind, s)) {
            return Ok(Vec::new());
        }
        if sym.is_none() && !self.index(kind).has_room(value) {
            return Err(Refusal::Capacity("identifier storage"));
        }
        Ok(vec![Change::Blocked {
            kind,
            value: value.to_owned(),
            reason,
            at: Timestamp(now.0.max(self.clock)),
        }])
    }

    /// What an import needs to know of a value, in one lookup: None if it was never seen;
    /// else whether it is blocked, whether it could turn generic (not blocked, not exempt), its
    /// live holders, and the primary and size of the cluster holding it (if not blocked).
    pub(crate) fn value_state(&self, kind: Kind, value: &str) -> Option<ValueState> {
        let sym = self.index(kind).lookup(value)?;
        let blocked = self.is_blocked(kind, sym);
        Some(ValueState {
            blocked,
            may_turn_generic: !blocked && !self.guards(kind).exempt.contains(&sym),
            holders: self.holders(kind, sym),
            cluster: held(self.index(kind), sym).map(|slot| self.cluster_at(slot)),
        })
    }

    fn cluster_at(&self, slot: Slot) -> (ContactId, usize) {
        let primary = self.rows[self.forest.primary(slot) as usize].id;
        (primary, self.forest.size(slot))
    }

    /// The size of `id`'s cluster if it is over the cap.
    pub fn over_cap(&self, id: ContactId) -> Option<usize> {
        let slot = self.live_slot(id).ok()?;
        let size = self.forest.size(slot);
        self.limits.over_cap(size).then_some(size)
    }

    /// What unblocking `value` implies: one fact, unless the merge of its holders' clusters
    /// would pass the cap. `Ok(None)` if it is not blocked.
    pub fn plan_unblock(
        &self,
        kind: Kind,
        value: &str,
        now: Timestamp,
    ) -> Result<Option<Change>, Refusal> {
        let Some(sym) = self
            .index(kind)
            .lookup(value)
            .filter(|&s| self.is_blocked(kind, s))
        else {
            return Ok(None);
        };
        let size = self
            .unblock_roots(kind, sym)
            .iter()
            .map(|&r| self.forest.size(r))
            .sum();
        self.within_cap(size)?;
        Ok(Some(Change::Unblocked {
            kind,
            value: value.to_owned(),
            at: Timestamp(now.0.max(self.clock)),
        }))
    }

    /// Whether `sym` of `kind` is blocked.
    pub(super) fn is_blocked(&self, kind: Kind, sym: Sym) -> bool {
        self.index(kind).value(sym) == BLOCKED
    }

    /// The number of live contacts holding `sym` (blocked or not).
    pub(super) fn holders(&self, kind: Kind, sym: Sym) -> u32 {
        let guards = self.guards(kind);
        match self.index(kind).value(sym) {
            NONE => 0,
            BLOCKED => guards
                .blocked
                .get(&sym)
                .map_or(0, |b| b.holders.len() as u32),
            _ => guards.shared.get(&sym).copied().unwrap_or(1),
        }
    }

    /// The roots of the clusters that unblocking `sym` merges: its holders' and, through the
    /// joins that name it, their partners' holders'.
    pub(super) fn unblock_roots(&self, kind: Kind, sym: Sym) -> Vec<Slot> {
        let holders = self
            .guards(kind)
            .blocked
            .get(&sym)
            .map(|b| b.holders.as_slice())
            .unwrap_or_default();
        let (joins, other) = match kind {
            Kind::Email => (&self.joins_by_email, Kind::Phone),
            Kind::Phone => (&self.joins_by_phone, Kind::Email),
        };
        let partners = joins
            .get(&sym)
            .into_iter()
            .flatten()
            .filter(|_| !holders.is_empty())
            .filter_map(|&s| held(self.index(other), s));
        let mut roots: Vec<Slot> = holders
            .iter()
            .copied()
            .chain(partners)
            .map(|s| self.forest.find(s))
            .collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }
}
