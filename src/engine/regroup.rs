//! Regrouping a cluster after a deletion or a block: the remaining members are joined again only
//! by the evidence that remains (shared identifiers that are not blocked, remembered joins whose
//! email and phone are both still held and not blocked, and row-to-row links between remaining
//! rows). The work is the size of the one cluster, never of the table.

use hashbrown::{HashMap, HashSet};

use super::forest::Slot;
use super::guards::Kind;
use super::interner::{Interner, Sym};
use super::{Engine, BLOCKED, NONE};

pub(super) struct Regrouped {
    /// Each group oldest first (so its primary first); groups ordered by their primary's age.
    pub groups: Vec<Vec<Slot>>,
    /// A remaining holder of each identifier the remaining members hold.
    pub email_holder: HashMap<Sym, Slot>,
    pub phone_holder: HashMap<Sym, Slot>,
}

impl Engine {
    /// How the rows of `members` (one cluster, oldest first) group without `gone` and without
    /// the values blocked now. Reads only.
    pub(super) fn regroup(&self, members: &[Slot], gone: Option<Slot>) -> Regrouped {
        self.regroup_unless(members, gone, None)
    }

    /// [`Engine::regroup`] as if the values `blocked` were blocked too (what an import that
    /// blocks them will leave).
    pub(super) fn regroup_excluding(
        &self,
        members: &[Slot],
        gone: Option<Slot>,
        blocked: &HashSet<(Kind, Sym)>,
    ) -> Regrouped {
        self.regroup_unless(members, gone, Some(blocked))
    }

    fn regroup_unless(
        &self,
        members: &[Slot],
        gone: Option<Slot>,
        blocked: Option<&HashSet<(Kind, Sym)>>,
    ) -> Regrouped {
        let mut members = members.to_vec();
        members.retain(|&s| Some(s) != gone);
        let mut sets = LocalSets::new(members.len());
        let mut email_first = HashMap::new();
        let mut phone_first = HashMap::new();
        for (i, &slot) in members.iter().enumerate() {
            let row = &self.rows[slot as usize];
            let evidence = |kind: Kind, index: &Interner, sym: Sym| {
                sym != NONE
                    && index.value(sym) != BLOCKED
                    && blocked.is_none_or(|b| !b.contains(&(kind, sym)))
            };
            if evidence(Kind::Email, &self.emails, row.email) {
                link_by_identifier(&mut email_first, row.email, i, &mut sets);
            }
            if evidence(Kind::Phone, &self.phones, row.phone) {
                link_by_identifier(&mut phone_first, row.phone, i, &mut sets);
            }
        }
        for (email, &i) in &email_first {
            for phone in self.joins_by_email.get(email).into_iter().flatten() {
                if let Some(&j) = phone_first.get(phone) {
                    sets.union(i, j);
                }
            }
        }
        if !self.links.is_empty() {
            let local: HashMap<Slot, usize> =
                members.iter().enumerate().map(|(i, &s)| (s, i)).collect();
            for (i, &slot) in members.iter().enumerate() {
                for other in self.links.get(&slot).into_iter().flatten() {
                    if let Some(&j) = local.get(other) {
                        sets.union(i, j);
                    }
                }
            }
        }
        let mut group_of_root = HashMap::new();
        let mut groups: Vec<Vec<Slot>> = Vec::new();
        for (i, &slot) in members.iter().enumerate() {
            let group = *group_of_root.entry(sets.find(i)).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(slot);
        }
        let to_slots =
            |first: HashMap<Sym, usize>| first.into_iter().map(|(s, i)| (s, members[i])).collect();
        Regrouped {
            groups,
            email_holder: to_slots(email_first),
            phone_holder: to_slots(phone_first),
        }
    }
}

fn link_by_identifier(first: &mut HashMap<Sym, usize>, sym: Sym, i: usize, sets: &mut LocalSets) {
    match first.get(&sym) {
        Some(&j) => sets.union(i, j),
        None => {
            first.insert(sym, i);
        }
    }
}

/// A throwaway union-find over the members of one cluster.
struct LocalSets(Vec<usize>);

impl LocalSets {
    fn new(n: usize) -> LocalSets {
        LocalSets((0..n).collect())
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        self.0[ra.max(rb)] = ra.min(rb);
    }
}
