//! Answers: the `/identify` answer of a cluster, rows, the blocklist, and the facts that
//! rebuild the state. Each costs the size of what it returns (one cluster, one row), never the
//! table, except `contacts`, `facts` and `check_invariants`, which walk everything.

use super::change::{Change, NewContact};
use super::forest::Slot;
use super::guards::{BlockReason, BlockedValue, GuardStats, Kind};
use super::interner::{Interner, Sym};
use super::types::{Contact, ContactId, Timestamp};
use super::{held, join_key, Engine, IdentityRef, BLOCKED, NONE};

impl Engine {
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
        // A blocked value's holders may sit in several clusters, so the index cannot name the
        // one to list it at: it is listed at its first holder in this walk (rare).
        let (mut blocked_emails, mut blocked_phones) = (Vec::new(), Vec::new());
        for &slot in members {
            let row = &self.rows[slot as usize];
            if listed_at(&self.emails, row.email, slot, &mut blocked_emails) {
                emails.push(self.emails.resolve(row.email));
            }
            if listed_at(&self.phones, row.phone, slot, &mut blocked_phones) {
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

    pub(super) fn contact_at(&self, slot: Slot) -> Contact {
        let row = &self.rows[slot as usize];
        let text =
            |interner: &Interner, sym: Sym| (sym != NONE).then(|| interner.resolve(sym).to_owned());
        let mut contact = Contact::from(NewContact {
            id: row.id,
            email: text(&self.emails, row.email),
            phone: text(&self.phones, row.phone),
            linked_id: row.linked_id(),
            created_at: Timestamp(row.created),
            updated_at: Timestamp(row.updated),
            deleted_at: self.deleted_at.get(&slot).map(|&t| Timestamp(t)),
        });
        contact.erased_at = self.erased_at(slot);
        contact
    }

    /// Every row, in the order they were added.
    pub fn contacts(&self) -> impl Iterator<Item = Contact> + '_ {
        (0..self.rows.len() as Slot).map(|slot| self.contact_at(slot))
    }

    /// The facts that rebuild this state from nothing: the values an admin unblocked (blocked
    /// and unblocked before any row holds them, which leaves them exempt), the values blocked
    /// now (before any row holds them, so that no cluster forms by them and no row is
    /// relinked), every row as it stands (an erased one with no identifiers), then the joins
    /// and links, then the ledger: each erasure (of rows that hold nothing by then, so it only
    /// takes them away and stamps them) and each purge.
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
            phones.iter().map(move |&p| {
                let (email, phone) = (
                    self.emails.resolve(e).to_owned(),
                    self.phones.resolve(p).to_owned(),
                );
                match self.join_times.get(&join_key(e, p)) {
                    Some(&at) => Change::JoinedAt {
                        email,
                        phone,
                        at: Timestamp(at),
                    },
                    None => Change::Joined { email, phone },
                }
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
        let exempt = Kind::BOTH.into_iter().flat_map(move |kind| {
            self.guards(kind).exempt.iter().flat_map(move |&sym| {
                let value = self.index(kind).resolve(sym).to_owned();
                [
                    Change::Blocked {
                        kind,
                        value: value.clone(),
                        reason: BlockReason::Admin,
                        at: Timestamp(0),
                    },
                    Change::Unblocked {
                        kind,
                        value,
                        at: Timestamp(0),
                    },
                ]
            })
        });
        let blocked = Kind::BOTH.into_iter().flat_map(move |kind| {
            self.guards(kind)
                .blocked
                .iter()
                .map(move |(&sym, block)| Change::Blocked {
                    kind,
                    value: self.index(kind).resolve(sym).to_owned(),
                    reason: block.reason,
                    at: Timestamp(block.at),
                })
        });
        let ledger = self.erasures.iter().flat_map(|e| {
            let purged = e.purged_at.map(|at| Change::Purged {
                erasures: vec![e.id],
                at,
            });
            std::iter::once(Change::Erased {
                erasure: e.id,
                ids: e.contacts.clone(),
                at: e.requested_at,
                purge_by: e.purge_by,
            })
            .chain(purged)
        });
        (exempt.chain(blocked).chain(rows).chain(joins).chain(links)).chain(ledger)
    }

    /// Every blocked value, by kind then value.
    pub fn blocklist(&self) -> Vec<BlockedValue> {
        let mut values: Vec<BlockedValue> = Kind::BOTH
            .into_iter()
            .flat_map(|kind| {
                self.guards(kind)
                    .blocked
                    .iter()
                    .map(move |(&sym, block)| BlockedValue {
                        kind,
                        value: self.index(kind).resolve(sym).to_owned(),
                        reason: block.reason,
                        blocked_at: Timestamp(block.at),
                        holders: block.holders.len(),
                    })
            })
            .collect();
        values.sort_by(|a, b| (a.kind, &a.value).cmp(&(b.kind, &b.value)));
        values
    }

    /// What the guards' metrics show.
    pub(crate) fn guard_stats(&self) -> GuardStats {
        let mut stats = GuardStats {
            largest_cluster: self.forest.largest(),
            ..GuardStats::default()
        };
        for block in Kind::BOTH
            .iter()
            .flat_map(|&k| self.guards(k).blocked.values())
        {
            match block.reason {
                BlockReason::Admin => stats.blocked_admin += 1,
                BlockReason::Generic => stats.blocked_generic += 1,
            }
        }
        stats
    }

    /// The blocked value `value` of `kind`, if it is blocked.
    pub fn blocked(&self, kind: Kind, value: &str) -> Option<BlockedValue> {
        let sym = self.index(kind).lookup(value)?;
        let block = self.guards(kind).blocked.get(&sym)?;
        Some(BlockedValue {
            kind,
            value: value.to_owned(),
            reason: block.reason,
            blocked_at: Timestamp(block.at),
            holders: block.holders.len(),
        })
    }

    /// The primary of each cluster holding `value`, oldest first: where a block or an unblock
    /// left its holders.
    pub fn primaries_holding(&self, kind: Kind, value: &str) -> Vec<ContactId> {
        let Some(sym) = self.index(kind).lookup(value) else {
            return Vec::new();
        };
        let holders: Vec<Slot> = match self.guards(kind).blocked.get(&sym) {
            Some(block) => block.holders.clone(),
            None => held(self.index(kind), sym).into_iter().collect(),
        };
        let mut primaries: Vec<Slot> = holders.iter().map(|&s| self.forest.primary(s)).collect();
        primaries.sort_unstable_by_key(|&s| self.rows[s as usize].age());
        primaries.dedup();
        primaries
            .into_iter()
            .map(|s| self.rows[s as usize].id)
            .collect()
    }

    /// Checks that rows, indexes and forest agree; for tests and `check`. Costs a full scan.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held_by = hashbrown::HashMap::new();
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
            for kind in Kind::BOTH {
                let sym = Engine::sym_of(row, kind);
                if sym != NONE {
                    *held_by.entry((kind, sym)).or_insert(0u32) += 1;
                    self.check_holder(kind, sym, slot as Slot)
                        .map_err(|e| format!("contact {}: {e}", row.id))?;
                }
            }
            if self.forest.find(slot as Slot) == slot as Slot {
                let members = self.forest.members(slot as Slot);
                if members.windows(2).any(|w| !self.older(w[0], w[1])) {
                    return Err(format!("the cluster of {} is not in age order", row.id));
                }
            }
        }
        for (&(kind, sym), &n) in &held_by {
            if self.holders(kind, sym) != n {
                return Err(format!(
                    "{} is held by {n} live contacts, counted {}",
                    self.index(kind).resolve(sym),
                    self.holders(kind, sym)
                ));
            }
        }
        for kind in Kind::BOTH {
            let counted = |sym| held_by.get(&(kind, sym)).copied().unwrap_or(0);
            if let Some(sym) = self.guards(kind).shared.keys().find(|&&s| counted(s) < 2) {
                return Err(format!(
                    "{} is counted as shared",
                    self.index(kind).resolve(*sym)
                ));
            }
        }
        Ok(())
    }

    /// Live row `slot` holds `sym`: a blocked value lists it among its holders; any other is
    /// indexed to an older-or-same holder in the same cluster.
    fn check_holder(&self, kind: Kind, sym: Sym, slot: Slot) -> Result<(), String> {
        let index: &Interner = self.index(kind);
        if index.value(sym) == BLOCKED {
            let listed = self.guards(kind).blocked.get(&sym);
            return match listed {
                Some(b)
                    if b.holders.contains(&slot)
                        && b.holders.is_sorted_by(|&x, &y| self.older(x, y)) =>
                {
                    Ok(())
                }
                _ => Err("a holder of a blocked value is not listed in order".into()),
            };
        }
        let Some(h) = held(index, sym) else {
            return Err("its identifier is indexed to no holder".into());
        };
        if self.forest.find(h) != self.forest.find(slot) {
            return Err("its identifier is not indexed to its cluster".into());
        }
        if self.older(slot, h) {
            return Err("it is older than its identifier's indexed holder".into());
        }
        Ok(())
    }
}

/// Whether an answer lists `sym` at the member `slot`: at the holder the index names, or for a
/// blocked value at the first member holding it (`seen` holds those already listed).
fn listed_at(index: &Interner, sym: Sym, slot: Slot, seen: &mut Vec<Sym>) -> bool {
    if sym == NONE {
        return false;
    }
    match index.value(sym) {
        holder if holder == slot => true,
        BLOCKED if !seen.contains(&sym) => {
            seen.push(sym);
            true
        }
        _ => false,
    }
}
