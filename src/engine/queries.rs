//! Read-only lookups for the admin endpoints: rows by identifier, and rows page by page in id
//! order. Each costs the size of what it returns (plus one cluster), never the whole table.

use super::forest::Slot;
use super::{held, Contact, ContactId, Email, Engine, Kind, Phone};

impl Engine {
    /// The live rows holding `email` or `phone`, oldest first.
    pub(crate) fn contacts_holding(
        &self,
        email: Option<&Email>,
        phone: Option<&Phone>,
    ) -> Vec<Contact> {
        let e = email.and_then(|e| self.emails.lookup(e.as_str()));
        let p = phone.and_then(|p| self.phones.lookup(p.as_str()));
        let holders = [
            e.and_then(|s| held(&self.emails, s)),
            p.and_then(|s| held(&self.phones, s)),
        ];
        let mut slots: Vec<Slot> = Vec::new();
        for holder in holders.into_iter().flatten() {
            if slots.contains(&holder)
                || slots
                    .iter()
                    .any(|&s| self.forest.find(s) == self.forest.find(holder))
            {
                continue;
            }
            slots.extend(self.forest.members(holder).iter().copied().filter(|&s| {
                let row = &self.rows[s as usize];
                e.is_some_and(|e| row.email == e) || p.is_some_and(|p| row.phone == p)
            }));
        }
        // A blocked value's holders sit in any clusters: listed from its block.
        let blocked = [(Kind::Email, e), (Kind::Phone, p)]
            .into_iter()
            .filter_map(|(kind, sym)| self.guards(kind).blocked.get(&sym?))
            .flat_map(|block| block.holders.iter().copied());
        slots.extend(blocked);
        slots.sort_unstable_by_key(|&s| self.rows[s as usize].age());
        slots.dedup();
        slots.into_iter().map(|s| self.contact_at(s)).collect()
    }

    /// Up to `limit` rows (deleted ones too) with ids above `after`, in id order, and the cursor
    /// for the next page if more rows follow.
    pub fn contacts_page(
        &self,
        after: ContactId,
        limit: usize,
    ) -> (Vec<Contact>, Option<ContactId>) {
        let mut ids = self.ids_after(after, limit);
        ids.truncate(limit);
        let next = ids
            .last()
            .copied()
            .filter(|&last| last < self.max_id && ids.len() == limit);
        let rows = ids
            .iter()
            .map(|&id| self.contact_at(self.slot(id).expect("a listed id has a row")))
            .collect();
        (rows, next)
    }

    /// The smallest `limit` ids above `after`. Ids are dense in practice (the service counts up
    /// from 1), so probing them one by one is the fast path; a sparse imported range falls back
    /// to one scan of the table.
    fn ids_after(&self, after: ContactId, limit: usize) -> Vec<ContactId> {
        let budget = limit.saturating_mul(4).saturating_add(1024);
        let mut ids = Vec::with_capacity(limit.min(4096));
        let mut id = after;
        for _ in 0..budget {
            if ids.len() == limit || id >= self.max_id {
                return ids;
            }
            id += 1;
            if self.slot(id).is_ok() {
                ids.push(id);
            }
        }
        let mut rest: Vec<ContactId> = self
            .rows
            .iter()
            .map(|r| r.id)
            .filter(|&i| i > after)
            .collect();
        if rest.len() > limit {
            rest.select_nth_unstable(limit);
            rest.truncate(limit);
        }
        rest.sort_unstable();
        rest
    }
}
