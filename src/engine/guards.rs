//! Over-merge guards: blocked values, generic values and the cluster cap, and the capacity
//! limits every plan checks before anything is logged.
//!
//! A blocked value is evidence of nothing. Its strings stay interned and rows keep holding them,
//! but its index value is [`BLOCKED`] instead of a holder, so no lookup finds a holder and no
//! regroup links by it; its live holders are listed in its [`Block`] instead (a blocked value's
//! holders may sit in many clusters, so no single holder can stand for them).

use hashbrown::{HashMap, HashSet};
use serde::{Deserialize, Serialize};

use super::forest::Slot;
use super::interner::Sym;
use super::types::Timestamp;

/// The index value of a blocked identifier: no holder, and no evidence.
pub(super) const BLOCKED: u32 = u32::MAX - 1;

/// Slots stay below the index's two markers (NONE and BLOCKED).
pub(super) const MAX_SLOTS: usize = BLOCKED as usize;

/// Which identifier a value is. In JSON, the request field's name; in the log (bincode), the
/// variant's index, so the names may change but the order may not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    #[serde(rename = "email")]
    Email,
    #[serde(rename = "phoneNumber")]
    Phone,
}

impl Kind {
    pub(crate) const BOTH: [Kind; 2] = [Kind::Email, Kind::Phone];

    /// The request field's name: `email` or `phoneNumber`.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phoneNumber",
        }
    }
}

/// Why a value is blocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockReason {
    /// An admin blocked it (the API, a blocklist file).
    Admin,
    /// More live contacts held it than the generic threshold allows.
    Generic,
}

impl BlockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::Admin => "admin",
            BlockReason::Generic => "generic",
        }
    }
}

/// The guards' settings. They decide plans only: facts record what was decided, so a log
/// replays the same whatever the settings at replay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// A value held by more live contacts than this is blocked as generic; 0 turns it off.
    pub generic_threshold: u32,
    /// No change may leave a cluster of more live contacts than this; 0 means no cap.
    pub max_cluster_size: u32,
}

impl Limits {
    pub(crate) const DEFAULT_GENERIC_THRESHOLD: u32 = 100;
    pub(crate) const DEFAULT_MAX_CLUSTER_SIZE: u32 = 1000;

    /// No guard at all (tests of the bare rules).
    pub const OFF: Limits = Limits {
        generic_threshold: 0,
        max_cluster_size: 0,
    };

    /// Whether a cluster of `size` live contacts is over the cap.
    pub fn over_cap(&self, size: usize) -> bool {
        self.max_cluster_size != 0 && size > self.max_cluster_size as usize
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            generic_threshold: Self::DEFAULT_GENERIC_THRESHOLD,
            max_cluster_size: Self::DEFAULT_MAX_CLUSTER_SIZE,
        }
    }
}

/// Why a change was refused by a guard or a limit; nothing was logged or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the identity would have {size} contacts, more than the cap of {cap}")]
    ClusterLimit { size: usize, cap: u32 },
    #[error("every identifier in the request is blocked")]
    Blocked,
    #[error("no room left for {0}")]
    Capacity(&'static str),
    /// No contact has the id named.
    #[error("no live contact has id {0}")]
    UnknownContact(super::types::ContactId),
    /// The contact named is deleted.
    #[error("no live contact has id {0} (it is deleted)")]
    DeletedContact(super::types::ContactId),
    /// An unblock of a value that is not blocked.
    #[error("{} {value:?} is not blocked", kind.field())]
    NotBlocked { kind: Kind, value: String },
    /// An imported row's id is taken (by a request made since the file was checked).
    #[error("line {line}: id {id} already exists")]
    IdTaken {
        line: u64,
        id: super::types::ContactId,
    },
    /// An import would leave an identity over the cap: nothing is imported.
    #[error("the import would leave an identity of {size} contacts, more than the cap of {cap}; its values include {}", values.join(", "))]
    ImportOverCap {
        size: usize,
        cap: u32,
        values: Vec<String>,
    },
    /// An edit would leave its contact with neither an email nor a phone number.
    #[error("contact {0} must keep an email or a phone number")]
    NoIdentifierLeft(super::types::ContactId),
    /// An edit's new value is blocked, or this one more holder would make it generic.
    #[error("{} {value:?} {}", kind.field(), if *generic { "already has as many live holders as the generic threshold allows, so one more would block it as generic; an edit does not block a value for everyone" } else { "is blocked (evidence of nothing), so no contact can be given it" })]
    BlockedValue {
        kind: Kind,
        value: String,
        generic: bool,
    },
    /// An erasure that names no contact there is (or no value any row holds: an erased value
    /// is no longer known either).
    #[error("{0}")]
    NothingToErase(String),
    /// An erasure by a blocked value: shared junk, whose every holder it would erase.
    #[error("this {} is blocked: it is shared by unrelated contacts (a shop's own phone, say), and erasing by it would erase every one of them; erase the person's contacts by contactId instead", kind.field())]
    ErasureOfBlocked { kind: Kind },
}

/// One blocked value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Block {
    pub reason: BlockReason,
    pub at: i64,
    /// The live rows holding it, oldest first.
    pub holders: Vec<Slot>,
}

/// The guards' state for one kind of identifier.
#[derive(Clone, Debug, Default)]
pub(super) struct KindGuards {
    pub blocked: HashMap<Sym, Block>,
    /// Values an admin unblocked: never blocked as generic again.
    pub exempt: HashSet<Sym>,
    /// The number of live holders of each value held by two or more (not blocked); one holder
    /// is told by the index alone, so most values cost nothing here.
    pub shared: HashMap<Sym, u32>,
}

/// A blocked value as the blocklist shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedValue {
    pub kind: Kind,
    pub value: String,
    pub reason: BlockReason,
    pub blocked_at: Timestamp,
    /// Live contacts holding it.
    pub holders: usize,
}

/// Counts for metrics: blocked values by reason and the largest cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuardStats {
    pub blocked_admin: usize,
    pub blocked_generic: usize,
    pub largest_cluster: usize,
}
