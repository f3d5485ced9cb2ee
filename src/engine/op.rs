//! `Op`: the one description of a change a client or a tool asks for, and what planning it
//! decides. [`Engine::plan`] reads only: it returns the facts to make durable and apply, and
//! what the answer is about, or the refusal that changes nothing. The store does the rest, in
//! one order for every op and every durability back-end: plan, make durable, apply, render.
//!
//! A Raft group's log carries ops (each member plans them when they are committed, against
//! the same state), so the variants are only ever appended, never reordered: the log's format
//! version pins their encoding.

use serde::{Deserialize, Serialize};

use super::change::Change;
use super::edit::Patch;
use super::erase::Target;
use super::guards::{BlockReason, Kind, Refusal};
use super::import::Rows;
use super::types::{ContactId, Email, Phone, Query, Timestamp};
use super::{Engine, EngineError};

/// A change someone asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `POST /identify` (and each order of an order-history import).
    Identify(Query),
    /// A soft delete.
    Delete(ContactId),
    /// A value stops being evidence: an admin's block, or (by `rekey`) a key blocked as generic.
    Block {
        kind: Kind,
        value: String,
        reason: BlockReason,
    },
    /// A blocked value is evidence again.
    Unblock { kind: Kind, value: String },
    /// Checked rows, added whole or not at all.
    Import(Rows),
    /// One value's live holders move to its key under new matching modes.
    Rekey {
        kind: Kind,
        from: String,
        to: String,
    },
    /// `PATCH /contacts/{id}`: a live contact's identifiers replaced (values already normalized
    /// and keyed by the matching modes).
    Edit {
        id: ContactId,
        email: Patch<Email>,
        phone: Patch<Phone>,
    },
    /// The contacts `target` names are erased; their purge is due `purge_within_ms` later (the
    /// option of the server that made the op, on a Raft group the leader, so that every member
    /// plans the same).
    Erase {
        target: Target,
        purge_within_ms: u64,
    },
    /// A purge rewrote every file up to now: the erasures `erasures` that are pending are done.
    Purge { erasures: Vec<u64> },
}

/// What made a change, as the change feed names it (`cause`). Usually the op's own kind; a
/// tool names itself for the ops it runs (the generic blocks `rekey` makes, say).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cause {
    Identify,
    Delete,
    Blocklist,
    Import,
    Rekey,
    Edit,
    Erasure,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Identify => "identify",
            Cause::Delete => "delete",
            Cause::Blocklist => "blocklist",
            Cause::Import => "import",
            Cause::Rekey => "rekey",
            Cause::Edit => "edit",
            Cause::Erasure => "erasure",
        }
    }
}

impl Op {
    /// The cause of a change this op makes, unless a tool says otherwise.
    pub fn cause(&self) -> Cause {
        match self {
            Op::Identify(_) => Cause::Identify,
            Op::Delete(_) => Cause::Delete,
            Op::Block { .. } | Op::Unblock { .. } => Cause::Blocklist,
            Op::Import(_) => Cause::Import,
            Op::Rekey { .. } => Cause::Rekey,
            Op::Edit { .. } => Cause::Edit,
            Op::Erase { .. } | Op::Purge { .. } => Cause::Erasure,
        }
    }
}

/// What a planned op is about, for its answer (read once its facts are applied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A contact of the cluster the answer shows.
    Identity(ContactId),
    /// The deleted contact and the primary of each group its cluster became, oldest first.
    Deleted {
        id: ContactId,
        groups: Vec<ContactId>,
    },
    /// The value is blocked (now, or it already was).
    Blocked { kind: Kind, value: String },
    /// The value is evidence again.
    Unblocked { kind: Kind, value: String },
    /// The rows are in: the listed values blocked first, and those the rows made generic.
    Imported {
        listed: Vec<(Kind, String)>,
        generic: Vec<(Kind, String)>,
    },
    /// The value's holders hold its key (or nobody held it: nothing to do).
    Rekeyed,
    /// The edited contact and the members of every cluster the edit leaves among those it
    /// touched, each oldest first: the edited contact's cluster, then each other group its
    /// former cluster split into, oldest primary first.
    Edited {
        id: ContactId,
        groups: Vec<Vec<ContactId>>,
    },
    /// Erasure `erasure` holds the contacts named (made now, or earlier when they were erased
    /// already); `groups`: the primary of each group the clusters it touched became, oldest
    /// first.
    Erased {
        erasure: u64,
        groups: Vec<ContactId>,
    },
    /// These erasures are done now.
    Purged { erasures: Vec<u64> },
}

/// What an op implies: every fact of it or none, and whatever it holds, `apply` can apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub facts: Vec<Change>,
    pub outcome: Outcome,
}

impl Engine {
    /// What `op` implies at wall-clock time `now` (the engine never stamps a time before its
    /// own clock), or why it changes nothing.
    pub fn plan(&self, op: &Op, now: Timestamp) -> Result<Plan, Refusal> {
        match op {
            Op::Identify(query) => {
                let plan = self.plan_identify(query, now)?;
                Ok(Plan {
                    facts: plan.changes,
                    outcome: Outcome::Identity(plan.answer),
                })
            }
            Op::Delete(id) => {
                let plan = self.plan_delete(*id, now).map_err(|e| match e {
                    EngineError::AlreadyDeleted(id) => Refusal::DeletedContact(id),
                    _ => Refusal::UnknownContact(*id),
                })?;
                Ok(Plan {
                    facts: plan.changes,
                    outcome: Outcome::Deleted {
                        id: *id,
                        groups: plan.groups,
                    },
                })
            }
            Op::Block {
                kind,
                value,
                reason,
            } => Ok(Plan {
                facts: self.plan_block(*kind, value, *reason, now)?,
                outcome: Outcome::Blocked {
                    kind: *kind,
                    value: value.clone(),
                },
            }),
            Op::Unblock { kind, value } => {
                let fact =
                    self.plan_unblock(*kind, value, now)?
                        .ok_or_else(|| Refusal::NotBlocked {
                            kind: *kind,
                            value: value.clone(),
                        })?;
                Ok(Plan {
                    facts: vec![fact],
                    outcome: Outcome::Unblocked {
                        kind: *kind,
                        value: value.clone(),
                    },
                })
            }
            Op::Import(rows) => self.plan_import(rows, now),
            Op::Rekey { kind, from, to } => Ok(Plan {
                facts: self.plan_rekey(*kind, from, to, now)?,
                outcome: Outcome::Rekeyed,
            }),
            Op::Edit { id, email, phone } => self.plan_edit(*id, email, phone, now),
            Op::Erase {
                target,
                purge_within_ms,
            } => self.plan_erase(target, *purge_within_ms, now),
            Op::Purge { erasures } => Ok(self.plan_purge(erasures, now)),
        }
    }
}
