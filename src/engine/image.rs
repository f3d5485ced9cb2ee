//! The checks an engine read from a snapshot image passes before it is used.
//!
//! An image is checksummed, so damage on disk is caught before this. What is checked here is
//! what would otherwise surface later as a panic or a hang on some request: every slot, string
//! and member array the tables name exists (a symbol must start a string, not merely lie in the
//! arena), every member array agrees with its root, and every slot reaches a root. Deeper
//! invariants (ages, which rows share a cluster) are the writer's to keep: the image is exactly
//! the tables of an engine that kept them.

use super::{Engine, Slot, BLOCKED, NONE};

impl Engine {
    /// The facts, rendered and sorted, to compare two engines' state (joins and links come out
    /// of hash maps in any order).
    #[cfg(test)]
    pub(crate) fn sorted_facts(&self) -> Vec<String> {
        let mut facts: Vec<String> = self.facts().map(|f| format!("{f:?}")).collect();
        facts.sort();
        facts
    }

    pub fn check_image(&self) -> Result<(), String> {
        let slots = self.rows.len();
        if slots >= NONE as usize {
            return Err(format!("{slots} rows, more than slots can number"));
        }
        self.forest.check(slots)?;
        let slot_ok = |s: Slot| (s as usize) < slots;
        let holder_ok = |holder| holder == NONE || holder == BLOCKED || slot_ok(holder);
        let sets = (
            self.emails.symbol_set(holder_ok),
            self.phones.symbol_set(holder_ok),
        );
        let (Some(emails), Some(phones)) = sets else {
            return Err("an identifier's holder is not a row".into());
        };
        let email_ok = |s| s == NONE || emails.contains(s);
        let phone_ok = |s| s == NONE || phones.contains(s);
        if let Some(row) = self
            .rows
            .iter()
            .find(|r| r.id == 0 || !email_ok(r.email) || !phone_ok(r.phone))
        {
            return Err(format!("row of contact {} is damaged", row.id));
        }
        let joins_ok = self
            .joins_by_email
            .iter()
            .all(|(&e, ps)| email_ok(e) && ps.iter().all(|&p| phone_ok(p)))
            && self
                .joins_by_phone
                .iter()
                .all(|(&p, es)| phone_ok(p) && es.iter().all(|&e| email_ok(e)));
        let slots_ok = self.displaced.values().all(|&s| slot_ok(s))
            && self.deleted_at.keys().all(|&s| slot_ok(s))
            && self
                .links
                .iter()
                .all(|(&a, bs)| slot_ok(a) && bs.iter().all(|&b| slot_ok(b)));
        if joins_ok && slots_ok {
            Ok(())
        } else {
            Err("an index names a row or identifier that does not exist".into())
        }
    }
}
