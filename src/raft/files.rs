//! openraft's types to and from the storage formats of the Raft back-end's files
//! ([`crate::storage::raft_files`]): what is on disk is ours and versioned, whatever openraft's
//! own serde layout becomes.

use std::collections::BTreeMap;

use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta,
    StoredMembership, Vote,
};

use super::{NodeId, TypeConfig};
use crate::storage::raft_files::{self as files, RAFT_FORMAT};

pub fn log_id(id: &LogId<NodeId>) -> files::LogId {
    files::LogId {
        term: id.leader_id.term,
        node: id.leader_id.node_id,
        index: id.index,
    }
}

pub(crate) fn raft_log_id(id: files::LogId) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(id.term, id.node), id.index)
}

pub fn membership(m: &Membership<NodeId, BasicNode>) -> files::Membership {
    files::Membership {
        configs: m.get_joint_config().clone(),
        nodes: m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
    }
}

pub(crate) fn raft_membership(m: files::Membership) -> Membership<NodeId, BasicNode> {
    let nodes: BTreeMap<NodeId, BasicNode> = (m.nodes.into_iter())
        .map(|(id, addr)| (id, BasicNode { addr }))
        .collect();
    Membership::new(m.configs, nodes)
}

/// The bytes of one entry of the log, in the current format.
pub(crate) fn encode_entry(entry: &Entry<TypeConfig>) -> Result<Vec<u8>, String> {
    let payload = match &entry.payload {
        EntryPayload::Blank => files::PayloadRef::Blank,
        EntryPayload::Normal(commands) => files::PayloadRef::Commands(commands),
        EntryPayload::Membership(m) => files::PayloadRef::Membership(membership(m)),
    };
    files::encode_entry(&files::EntryRef {
        log_id: log_id(&entry.log_id),
        payload,
    })
}

/// One record of a segment of `format`, as openraft's entry.
pub fn decode_entry(format: u32, bytes: &[u8]) -> Result<Entry<TypeConfig>, String> {
    let entry = files::decode_entry(format, bytes)?;
    let payload = match entry.payload {
        files::Payload::Blank => EntryPayload::Blank,
        files::Payload::Commands(commands) => EntryPayload::Normal(commands),
        files::Payload::Membership(m) => EntryPayload::Membership(raft_membership(m)),
    };
    Ok(Entry {
        log_id: raft_log_id(entry.log_id),
        payload,
    })
}

pub fn vote(v: &Vote<NodeId>) -> files::Vote {
    files::Vote {
        format: RAFT_FORMAT,
        term: v.leader_id.term,
        node: v.leader_id.node_id,
        committed: v.committed,
    }
}

pub(crate) fn raft_vote(v: files::Vote) -> Vote<NodeId> {
    if v.committed {
        Vote::new_committed(v.term, v.node)
    } else {
        Vote::new(v.term, v.node)
    }
}

/// `snapshot.json` for the snapshot `meta` in `file`.
pub(crate) fn snapshot_meta(
    meta: &SnapshotMeta<NodeId, BasicNode>,
    file: &str,
) -> files::SnapshotMeta {
    files::SnapshotMeta {
        format: RAFT_FORMAT,
        last_log_id: meta.last_log_id.as_ref().map(log_id),
        membership_log_id: meta.last_membership.log_id().as_ref().map(log_id),
        membership: membership(meta.last_membership.membership()),
        snapshot_id: meta.snapshot_id.clone(),
        file: file.to_owned(),
    }
}

pub(crate) fn raft_snapshot_meta(saved: files::SnapshotMeta) -> SnapshotMeta<NodeId, BasicNode> {
    SnapshotMeta {
        last_log_id: saved.last_log_id.map(raft_log_id),
        last_membership: StoredMembership::new(
            saved.membership_log_id.map(raft_log_id),
            raft_membership(saved.membership),
        ),
        snapshot_id: saved.snapshot_id,
    }
}
