//! Re-keying: a value's live holders move to its key under new matching modes (`rekey`). One
//! fact per value, [`Change::Rekeyed`]: the holders now hold the key, the joins naming the value
//! name the key, and the clusters that now share the key merge (the oldest primary first), under
//! the over-merge guards decided in the plan.

use super::change::Change;
use super::forest::Slot;
use super::guards::{BlockReason, Kind, Refusal};
use super::interner::Sym;
use super::types::Timestamp;
use super::{held, join_key, Engine, EngineError, Row, NONE};

impl Engine {
    /// What moving the live holders of `from` to `to` at `now` implies: nothing if nobody
    /// holds `from`; else the fact, after a block of `to` when `from` is blocked (a block holds
    /// in every spelling) or when the two together pass the generic threshold; or a refusal when
    /// the merge would pass the cluster cap or `to` does not fit.
    pub fn plan_rekey(
        &self,
        kind: Kind,
        from: &str,
        to: &str,
        now: Timestamp,
    ) -> Result<Vec<Change>, Refusal> {
        let at = Timestamp(now.0.max(self.clock));
        let Some(from_sym) = self.index(kind).lookup(from) else {
            return Ok(Vec::new());
        };
        let moving = self.holders(kind, from_sym);
        if moving == 0 || from == to {
            return Ok(Vec::new());
        }
        let to_sym = self.index(kind).lookup(to);
        if to_sym.is_none() && !self.index(kind).has_room(to) {
            return Err(Refusal::Capacity("identifier storage"));
        }
        let to_blocked = to_sym.is_some_and(|s| self.is_blocked(kind, s));
        let mut changes = Vec::new();
        let block_reason = if to_blocked {
            None
        } else if let Some(block) = self.guards(kind).blocked.get(&from_sym) {
            Some(block.reason)
        } else if self.turns_generic_by_rekey(kind, moving, to_sym) {
            Some(BlockReason::Generic)
        } else {
            None
        };
        if let Some(reason) = block_reason {
            changes.push(Change::Blocked {
                kind,
                value: to.to_owned(),
                reason,
                at,
            });
        } else if !to_blocked {
            self.within_cap(self.rekey_merge_size(kind, from_sym, to_sym))?;
        }
        changes.push(Change::Rekeyed {
            kind,
            from: from.to_owned(),
            to: to.to_owned(),
            at,
        });
        Ok(changes)
    }

    /// Whether an admin unblocked `value`: it is never blocked as generic again.
    pub(crate) fn is_exempt(&self, kind: Kind, value: &str) -> bool {
        let sym = self.index(kind).lookup(value);
        sym.is_some_and(|s| self.guards(kind).exempt.contains(&s))
    }

    /// Whether `to` would be held by more live contacts than the generic threshold allows.
    fn turns_generic_by_rekey(&self, kind: Kind, moving: u32, to: Option<Sym>) -> bool {
        let threshold = self.limits.generic_threshold;
        let (held, exempt) = to.map_or((0, false), |s| {
            (self.holders(kind, s), self.guards(kind).exempt.contains(&s))
        });
        threshold != 0 && !exempt && moving + held > threshold
    }

    /// The live contacts of the cluster that moving `from`'s holders to `to` makes.
    fn rekey_merge_size(&self, kind: Kind, from: Sym, to: Option<Sym>) -> usize {
        let index = self.index(kind);
        let a = held(index, from).map(|s| self.forest.find(s));
        let b = to.and_then(|s| held(index, s)).map(|s| self.forest.find(s));
        let size = |root: Option<Slot>| root.map_or(0, |r| self.forest.size(r));
        if a == b {
            size(a)
        } else {
            size(a) + size(b)
        }
    }

    pub(super) fn apply_rekeyed(
        &mut self,
        kind: Kind,
        from: &str,
        to: &str,
        at: Timestamp,
    ) -> Result<(), EngineError> {
        let not_held = || EngineError::NotHeld(from.to_owned());
        let from_sym = self.index(kind).lookup(from).ok_or_else(not_held)?;
        let holders = self.live_holders(kind, from_sym);
        if holders.is_empty() || from == to {
            return Err(not_held());
        }
        let to_sym = match self.index(kind).lookup(to) {
            Some(sym) => sym,
            None if self.index(kind).has_room(to) => self.index_mut(kind).intern(to, NONE),
            None => return Err(EngineError::Capacity("identifier storage")),
        };
        // The cluster `from` held together, in case `to` holds nothing together.
        let former: Vec<Slot> = match held(self.index(kind), from_sym) {
            Some(h) => self.forest.members(h).to_vec(),
            None => Vec::new(),
        };
        self.unhold_all(kind, from_sym);
        for &slot in &holders {
            let row = &mut self.rows[slot as usize];
            *sym_mut(row, kind) = to_sym;
            self.hold(kind, to_sym, slot);
        }
        self.rename_joins(kind, from_sym, to_sym);
        if self.is_blocked(kind, to_sym) {
            if !former.is_empty() {
                let regrouped = self.regroup(&former, None);
                self.reform(&former, &regrouped.groups, at);
            }
        } else {
            let members = self.forest.members(holders[0]).to_vec();
            self.relink(&[members], at);
        }
        Ok(())
    }

    /// The live rows holding `sym`, oldest first.
    fn live_holders(&self, kind: Kind, sym: Sym) -> Vec<Slot> {
        if let Some(block) = self.guards(kind).blocked.get(&sym) {
            return block.holders.clone();
        }
        let Some(h) = held(self.index(kind), sym) else {
            return Vec::new();
        };
        let rows = &self.rows;
        let members = self.forest.members(h).iter().copied();
        members
            .filter(|&s| Engine::sym_of(&rows[s as usize], kind) == sym)
            .collect()
    }

    /// `sym` loses every holder (they are about to hold another value). A blocked value stays
    /// blocked, with no holder.
    fn unhold_all(&mut self, kind: Kind, sym: Sym) {
        if let Some(block) = self.guards_mut(kind).blocked.get_mut(&sym) {
            block.holders.clear();
            return;
        }
        self.guards_mut(kind).shared.remove(&sym);
        self.index_mut(kind).set_value(sym, NONE);
    }

    /// Every join naming `from` names `to` instead (keeping when it was made), and unites its
    /// sides if both are evidence.
    fn rename_joins(&mut self, kind: Kind, from: Sym, to: Sym) {
        let (this_side, other_side) = match kind {
            Kind::Email => (&mut self.joins_by_email, &mut self.joins_by_phone),
            Kind::Phone => (&mut self.joins_by_phone, &mut self.joins_by_email),
        };
        let partners = this_side.remove(&from).unwrap_or_default();
        for &other in &partners {
            if let Some(list) = other_side.get_mut(&other) {
                list.retain(|&s| s != from);
                if list.is_empty() {
                    other_side.remove(&other);
                }
            }
        }
        let pair = |mine: Sym, other: Sym| match kind {
            Kind::Email => (mine, other),
            Kind::Phone => (other, mine),
        };
        for other in partners {
            self.stats.joins -= 1;
            let (e, p) = pair(from, other);
            let made = self.join_times.remove(&join_key(e, p)).map(Timestamp);
            let (e, p) = pair(to, other);
            self.remember_join(e, p, made);
            if let (Some(a), Some(b)) = (held(&self.emails, e), held(&self.phones, p)) {
                self.union(a, b);
            }
        }
    }
}

fn sym_mut(row: &mut Row, kind: Kind) -> &mut Sym {
    match kind {
        Kind::Email => &mut row.email,
        Kind::Phone => &mut row.phone,
    }
}

#[cfg(test)]
mod tests;
