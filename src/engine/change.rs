//! Changes are facts about what happened, not requests: the log records them and `apply` replays
//! them, so old logs stay valid when the rules that produced them evolve.

use serde::{Deserialize, Serialize};

use super::guards::{BlockReason, Kind};
use super::op::Cause;
use super::types::{ContactId, Timestamp};

/// One fact. Appending a variant at the end keeps old logs readable; reordering breaks them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A row was added (by a request, or by an import, which may bring deleted rows too).
    Created(NewContact),
    /// A row's link changed: `primary` None makes it a primary.
    Relinked {
        id: ContactId,
        primary: Option<ContactId>,
        at: Timestamp,
    },
    /// A request named this email and phone together and added no row: the only record of why
    /// their holders belong to one cluster, needed when a deletion regroups it.
    Joined { email: String, phone: String },
    /// A row was soft-deleted; its former cluster regroups by the evidence that remains, each
    /// row whose primary changes relinked at `at` (earlier versions also logged those relinks
    /// as `Relinked`, which then set what is already set).
    Deleted { id: ContactId, at: Timestamp },
    /// Two rows belong together on evidence no identifier shows: an imported secondary's
    /// `linkedId`. Holds while both rows are live.
    Linked { a: ContactId, b: ContactId },
    /// A request named `email`, held in one cluster, and `phone`, held in another: the two
    /// merge into the one whose primary is `survivor`, every row of the cluster of `absorbed`
    /// relinked at `at`, and the join is remembered. One record whatever the clusters' sizes
    /// (earlier versions logged `Joined` and a `Relinked` per row).
    Merged {
        email: String,
        phone: String,
        survivor: ContactId,
        absorbed: ContactId,
        at: Timestamp,
    },
    /// `Joined` with the time it was made.
    JoinedAt {
        email: String,
        phone: String,
        at: Timestamp,
    },
    /// A value stopped being evidence: the clusters that held it regroup by what remains, each
    /// row whose primary changes relinked at `at`.
    Blocked {
        kind: Kind,
        value: String,
        reason: BlockReason,
        at: Timestamp,
    },
    /// A blocked value is evidence again (and never blocked as generic after): the clusters of
    /// its holders merge, the oldest primary first, each row relinked at `at`.
    Unblocked {
        kind: Kind,
        value: String,
        at: Timestamp,
    },
    /// `rekey`: every live holder of `from` now holds `to` (its key under new matching modes),
    /// the joins naming `from` name `to`, and the clusters that now share `to` merge, the oldest
    /// primary first, each row whose primary changes relinked at `at`. When `to` is blocked,
    /// the cluster `from` held together regroups by what remains instead.
    Rekeyed {
        kind: Kind,
        from: String,
        to: String,
        at: Timestamp,
    },
    /// An import's rows are in: every live row of the clusters of `ids` points at its
    /// cluster's oldest member, each whose link changes stamped `at` (earlier versions logged
    /// a `Relinked` per row instead).
    Settled { ids: Vec<ContactId>, at: Timestamp },
    /// Who made the change of its group, when the facts do not say it themselves (see
    /// [`Cause::inferred`]): the change feed names the same cause and token after a replay.
    /// Changes nothing.
    Origin { cause: Cause, by: Option<String> },
    /// A live row's identifiers are now `email` and `phone` (id and `createdAt` kept, its
    /// `updatedAt` set to `at`): its former cluster regroups by the evidence that remains, the
    /// clusters its new values tie it to merge with its group, the oldest primary first, and
    /// each row whose primary changes is relinked at `at`.
    Edited {
        id: ContactId,
        email: Option<String>,
        phone: Option<String>,
        at: Timestamp,
    },
    /// Erasure `erasure` (the ledger's next): every row of `ids` (ascending) loses its email
    /// and phone for good and is stamped erased at `at`; a live one leaves its cluster as by a
    /// deletion, which regroups, each row whose primary changes relinked at `at`. No value is
    /// named, so the log never repeats one. Its purge is due by `purge_by`.
    Erased {
        erasure: u64,
        ids: Vec<ContactId>,
        at: Timestamp,
        purge_by: Timestamp,
    },
    /// A purge rewrote every file that held what the erasures `erasures` erased.
    Purged { erasures: Vec<u64>, at: Timestamp },
}

/// Every field of a new row, identifiers already normalized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewContact {
    pub id: ContactId,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub linked_id: Option<ContactId>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub deleted_at: Option<Timestamp>,
}
