//! Changes are facts about what happened, not requests: the log records them and `apply` replays
//! them, so old logs stay valid when the rules that produced them evolve.

use serde::{Deserialize, Serialize};

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
    /// A row was soft-deleted; its former cluster regroups by the evidence that remains.
    Deleted { id: ContactId, at: Timestamp },
    /// Two rows belong together on evidence no identifier shows: an imported secondary's
    /// `linkedId`. Holds while both rows are live.
    Linked { a: ContactId, b: ContactId },
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
