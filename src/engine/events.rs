//! What a change looks like to the change feed: the events one op's facts make, derived from
//! the facts and the contacts each moved, in one place for every kind of change, live and in
//! replay alike (so the same change is the same events, with the same sequence numbers, on
//! every member and after every restart). Events name contacts and primaries, never an email
//! or a phone.
//!
//! The rules, per fact, in the order the facts applied:
//! - `Created`: `created`, the new contact with its primary.
//! - `Merged`: `merged`, `into` the surviving primary, `primaries` the absorbed one, and every
//!   contact relinked.
//! - `Deleted`: `deleted` (the contact, primary null), then `split` for the rows its former
//!   cluster relinked, if any.
//! - `Blocked`: `blocked` (no contacts), then `split` for the rows relinked, if any.
//! - `Unblocked`: `unblocked` with the rows relinked.
//! - `Rekeyed`: `rekeyed` with the rows relinked, if any.
//! - `Edited`: `edited` (the contact, with its primary), then `split` for the other rows the
//!   edit relinked (its former cluster's pieces, or the clusters it joined), if any.
//! - `Erased`: `erased` (the contacts erased, primary null, deleted ones too), then `split` for
//!   the rows their former clusters relinked, if any.
//! - `Purged`: none (the erased values left the files; no identity changed).
//! - An import (a group with `Settled`): every contact it created or moved, once each with
//!   where it ended, as `imported`.
//! - Anything else that moves a contact (only logs of earlier versions do): `split`.
//!
//! At most [`MAX_CONTACTS`] contacts an event: a change that touches more is several events
//! with consecutive sequence numbers.

use hashbrown::HashMap;

use super::change::Change;
use super::op::Cause;
use super::types::{ContactId, Timestamp};
use super::{Engine, Moved};

/// The most contacts one event names.
pub const MAX_CONTACTS: usize = 1000;

/// What kind of change an event reports (its `type`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Merged {
        into: ContactId,
        primaries: Vec<ContactId>,
    },
    Split,
    Deleted,
    Blocked,
    Unblocked,
    Imported,
    Rekeyed,
    Edited,
    Erased,
}

impl EventKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Merged { .. } => "merged",
            EventKind::Split => "split",
            EventKind::Deleted => "deleted",
            EventKind::Blocked => "blocked",
            EventKind::Unblocked => "unblocked",
            EventKind::Imported => "imported",
            EventKind::Rekeyed => "rekeyed",
            EventKind::Edited => "edited",
            EventKind::Erased => "erased",
        }
    }
}

/// One event of the feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub at: Timestamp,
    pub kind: EventKind,
    pub cause: Cause,
    /// The name of the token that made the change, if any.
    pub by: Option<String>,
    /// Every contact the event created, moved or took away, with its primary after it.
    pub contacts: Vec<Moved>,
}

/// One applied fact and the contacts it moved.
pub type Applied<'a> = (&'a Change, Vec<Moved>);

impl Engine {
    /// The events of one op whose facts (each with its moves) were just applied, numbered from
    /// the engine's count on, which they advance.
    pub fn events_of(
        &mut self,
        applied: &[Applied<'_>],
        cause: Cause,
        by: Option<&str>,
    ) -> Vec<Event> {
        let at = (applied.iter())
            .filter_map(|(fact, _)| fact.at())
            .max()
            .unwrap_or(Timestamp(self.clock));
        let mut drafts: Vec<(EventKind, Vec<Moved>)> = Vec::new();
        if applied
            .iter()
            .any(|(f, _)| matches!(f, Change::Settled { .. }))
        {
            drafts.push((EventKind::Imported, last_of_each(applied)));
        } else {
            for (fact, moved) in applied {
                drafts.extend(drafts_of(fact, moved));
            }
        }
        let mut events = Vec::new();
        for (kind, contacts) in drafts {
            let chunks: Vec<Vec<Moved>> = if contacts.is_empty() {
                vec![Vec::new()]
            } else {
                contacts
                    .chunks(MAX_CONTACTS)
                    .map(<[Moved]>::to_vec)
                    .collect()
            };
            for contacts in chunks {
                self.events += 1;
                events.push(Event {
                    seq: self.events,
                    at,
                    kind: kind.clone(),
                    cause,
                    by: by.map(str::to_owned),
                    contacts,
                });
            }
        }
        events
    }
}

/// The events one fact makes (before numbering and chunking).
fn drafts_of(fact: &Change, moved: &[Moved]) -> Vec<(EventKind, Vec<Moved>)> {
    let split = |subject: Option<ContactId>| {
        let rest: Vec<Moved> = (moved.iter())
            .filter(|m| Some(m.id) != subject)
            .copied()
            .collect();
        (!rest.is_empty()).then_some((EventKind::Split, rest))
    };
    match fact {
        Change::Created(_) => vec![(EventKind::Created, moved.to_vec())],
        Change::Merged {
            survivor, absorbed, ..
        } => vec![(
            EventKind::Merged {
                into: *survivor,
                primaries: vec![*absorbed],
            },
            moved.to_vec(),
        )],
        Change::Deleted { id, .. } => {
            let subject = (moved.iter()).filter(|m| m.id == *id).copied().collect();
            let mut drafts = vec![(EventKind::Deleted, subject)];
            drafts.extend(split(Some(*id)));
            drafts
        }
        Change::Blocked { .. } => {
            let mut drafts = vec![(EventKind::Blocked, Vec::new())];
            drafts.extend(split(None));
            drafts
        }
        Change::Unblocked { .. } => vec![(EventKind::Unblocked, moved.to_vec())],
        Change::Edited { id, .. } => {
            let subject = (moved.iter()).filter(|m| m.id == *id).copied().collect();
            let mut drafts = vec![(EventKind::Edited, subject)];
            drafts.extend(split(Some(*id)));
            drafts
        }
        Change::Erased { ids, .. } => {
            let (subject, rest): (Vec<Moved>, Vec<Moved>) =
                moved.iter().partition(|m| ids.binary_search(&m.id).is_ok());
            let mut drafts = vec![(EventKind::Erased, subject)];
            if !rest.is_empty() {
                drafts.push((EventKind::Split, rest));
            }
            drafts
        }
        Change::Purged { .. } => Vec::new(),
        Change::Rekeyed { .. } if moved.is_empty() => Vec::new(),
        Change::Rekeyed { .. } => vec![(EventKind::Rekeyed, moved.to_vec())],
        _ => split(None).into_iter().collect(),
    }
}

/// Every contact the facts moved, once each, with where it ended, in id order.
fn last_of_each(applied: &[Applied<'_>]) -> Vec<Moved> {
    let mut last: HashMap<ContactId, Option<ContactId>> = HashMap::new();
    for (_, moved) in applied {
        for m in moved {
            last.insert(m.id, m.primary);
        }
    }
    let mut contacts: Vec<Moved> = (last.into_iter())
        .map(|(id, primary)| Moved { id, primary })
        .collect();
    contacts.sort_unstable_by_key(|m| m.id);
    contacts
}

impl Change {
    /// When the change happened, for the facts that say.
    pub fn at(&self) -> Option<Timestamp> {
        match self {
            Change::Created(c) => Some(c.created_at.max(c.updated_at)),
            Change::Relinked { at, .. }
            | Change::Deleted { at, .. }
            | Change::Merged { at, .. }
            | Change::JoinedAt { at, .. }
            | Change::Blocked { at, .. }
            | Change::Unblocked { at, .. }
            | Change::Rekeyed { at, .. }
            | Change::Settled { at, .. }
            | Change::Edited { at, .. }
            | Change::Erased { at, .. }
            | Change::Purged { at, .. } => Some(*at),
            Change::Joined { .. } | Change::Linked { .. } | Change::Origin { .. } => None,
        }
    }
}

impl Cause {
    /// The cause a group of facts shows by itself; an op of another cause is logged with an
    /// `Origin` fact saying so (and saying who), so replay names the same cause.
    pub fn inferred(facts: &[Change]) -> Cause {
        let has = |p: fn(&Change) -> bool| facts.iter().any(p);
        if has(|f| matches!(f, Change::Settled { .. })) {
            Cause::Import
        } else if has(|f| matches!(f, Change::Rekeyed { .. })) {
            Cause::Rekey
        } else if has(|f| matches!(f, Change::Erased { .. } | Change::Purged { .. })) {
            Cause::Erasure
        } else if has(|f| matches!(f, Change::Edited { .. })) {
            Cause::Edit
        } else if has(|f| matches!(f, Change::Deleted { .. })) {
            Cause::Delete
        } else if has(|f| {
            matches!(
                f,
                Change::Created(_) | Change::Merged { .. } | Change::JoinedAt { .. }
            )
        }) {
            Cause::Identify
        } else {
            Cause::Blocklist
        }
    }
}
