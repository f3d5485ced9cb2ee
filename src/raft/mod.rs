//! Cluster mode: members that agree, through Raft (openraft), on one log of requests.
//!
//! Every change a client asks for is proposed as a [`Command`] (the request, with a time the
//! proposing member chose), replicated to a majority's logs (each fsynced) and only then
//! applied, by every member, to the same [`Store`] a single node uses: each plans it against
//! the state the log before it made, so all reach the same state (planning before commit, on
//! a state that lacks entries not yet applied, would give different facts). The member that
//! proposed it renders the answer as it applies it.
//!
//! Any member takes any request: a follower forwards it to the leader (see [`http`]). Reads
//! are linearizable (under a leader lease, or after the leader confirms it still leads: see
//! [`reads`]) unless `?stale=true` asks for this member's own state.

mod files;
pub mod http;
mod log;
mod machine;
mod network;
mod purge;
mod reads;

pub use network::Transport;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState, SnapshotPolicy};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::config::RaftArgs;
use crate::engine::Limits;
use crate::http::auth::{digests_equal, sha256};
use crate::storage::raft_files::Command;
use crate::store::{Propose, Store, StoreError};

pub type NodeId = u64;
pub type Node = BasicNode;

openraft::declare_raft_types!(
    /// The cluster's Raft types: a log entry carries a batch of [`Command`]s (see
    /// [`batch_proposals`]); what a command answers is rendered by the member that proposed
    /// it, so the state machine returns nothing.
    pub TypeConfig:
        D = Vec<Command>,
        R = (),
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// The header a member sends with Raft's messages (and checks on them) when a cluster token
/// is set.
pub(crate) const TOKEN_HEADER: &str = "x-cluster-token";
/// Marks a request a follower forwarded, so that it is never forwarded twice.
pub(crate) const FORWARDED_HEADER: &str = "x-forwarded-by-node";

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("{0}")]
    Options(String),
    #[error("the cluster's files in {dir}: {error}")]
    Files { dir: PathBuf, error: std::io::Error },
    #[error("raft: {0}")]
    Raft(String),
}

/// A running member.
pub struct Member {
    pub raft: Raft<TypeConfig>,
    pub id: NodeId,
    pub store: Store,
    log: log::LogStore,
    client: network::HttpClient,
    /// `http` or `https`, for calling peers.
    scheme: &'static str,
    token: Option<String>,
    /// Raft's messages come only over connections with a certificate the peer CA signed.
    member_certificates: bool,
    peers: BTreeMap<NodeId, String>,
    /// How long a forwarded request may take.
    pub forward_timeout: Duration,
    /// The shortest election timeout, in milliseconds.
    election_ms: u64,
    /// Where reads wait until this member knows it leads.
    reads: reads::Reads,
    /// The data directory (the cluster's files are under `raft/`).
    data_dir: PathBuf,
    /// The newest erasure this member has purged its files of since it started (see `purge`).
    purged_through: std::sync::atomic::AtomicU64,
}

/// The member's view of the cluster, as `GET /cluster` shows it.
#[derive(Serialize, Debug, Clone, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub node_id: NodeId,
    /// leader, follower, candidate or learner (shutdown once stopped).
    pub role: &'static str,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub members: Vec<Peer>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The last log index this member's latest snapshot covers.
    pub snapshot_index: Option<u64>,
}

#[derive(Serialize, Debug, Clone, utoipa::ToSchema)]
pub struct Peer {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

/// A command waiting to be proposed, and who waits for it to be committed and applied.
type Proposal = (Command, oneshot::Sender<Result<(), String>>);

struct Proposer {
    queue: mpsc::UnboundedSender<Proposal>,
    reads: reads::Reads,
}

impl Propose for Proposer {
    fn propose(
        &self,
        command: Command,
    ) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move {
            let stopped = || StoreError::NoLeader("this member's Raft stopped".into());
            let (tx, rx) = oneshot::channel();
            self.queue.send((command, tx)).map_err(|_| stopped())?;
            rx.await
                .map_err(|_| stopped())?
                .map_err(StoreError::NoLeader)
        })
    }

    fn read_barrier(&self) -> Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send + '_>> {
        Box::pin(async move { self.reads.confirm().await.map_err(StoreError::NoLeader) })
    }
}

/// Commands in one log entry at most.
const MAX_BATCH: usize = 512;

/// Group commit in front of Raft: openraft 0.9 waits for each entry's fsync before it takes
/// the next one, so one entry per request would allow one request per fsync. One batch is in
/// flight at a time; the commands that arrive meanwhile go together as the next entry: one
/// fsync and one replication round for all of them. (Measured against 2, 4 and 16 batches in
/// flight with the load test: one gave the most requests a second and the lowest latency.)
/// Within a batch commands apply in order; requests that were concurrent had no order to keep.
async fn batch_proposals(raft: Raft<TypeConfig>, mut queue: mpsc::UnboundedReceiver<Proposal>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(proposal) => batch.push(proposal),
                Err(_) => break,
            }
        }
        let (commands, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let result = raft
            .client_write(commands)
            .await
            .map(|_| ())
            .map_err(describe);
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

fn describe(e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> String {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
            Some(id) => format!("leadership moved to node {id} while the change was in flight"),
            None => "this member is not the leader and knows none".into(),
        },
        RaftError::APIError(e) => e.to_string(),
        RaftError::Fatal(e) => format!("this member's Raft stopped: {e}"),
    }
}

impl Member {
    /// Opens the member's files in `data_dir/raft` (or, on a first start over a single node's
    /// data, seeds a one-member cluster from it), starts Raft, and starts forming the cluster
    /// if it has never been formed.
    pub async fn start(
        storage: &crate::storage::StorageOptions,
        args: &RaftArgs,
        limits: Limits,
        forward_timeout: Duration,
        transport: Transport,
    ) -> Result<Arc<Member>, MemberError> {
        let (id, peers) = args.membership().map_err(MemberError::Options)?;
        let data_dir = &storage.dir;
        let dir = data_dir.join("raft");
        let files = |error| MemberError::Files {
            dir: dir.clone(),
            error,
        };
        purge::remove_partial(&dir);
        let log = log::LogStore::open(&dir).map_err(files)?;
        let loaded_dir = dir.clone();
        let (engine, loaded) =
            tokio::task::spawn_blocking(move || machine::StateMachine::load(&loaded_dir))
                .await
                .map_err(|e| {
                    files(std::io::Error::other(format!(
                        "loading a snapshot stopped: {e}"
                    )))
                })?
                .map_err(files)?;
        let store = Store::replicated(engine, limits, id, storage)
            .map_err(|e| MemberError::Options(e.to_string()))?;
        let machine = machine::StateMachine::new(store.clone(), &dir, loaded);
        let config = openraft::Config {
            cluster_name: "identity-engine".into(),
            heartbeat_interval: args.raft_heartbeat_ms,
            election_timeout_min: args.raft_election_ms,
            election_timeout_max: args.raft_election_ms * 3 / 2,
            install_snapshot_timeout: 30_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(args.raft_snapshot_entries),
            max_in_snapshot_log_to_keep: args.raft_keep_entries,
            snapshot_max_chunk_size: 8 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| MemberError::Options(format!("raft timeouts: {e}")))?;
        let client = transport.client();
        let factory = network::Factory {
            client: client.clone(),
            scheme: transport.scheme(),
            token: args.cluster_token.clone(),
        };
        let raft = Raft::new(id, Arc::new(config), factory, log.clone(), machine)
            .await
            .map_err(|e| MemberError::Raft(e.to_string()))?;
        let (queue, proposals) = mpsc::unbounded_channel();
        tokio::spawn(batch_proposals(raft.clone(), proposals));
        let reads = reads::Reads::start(raft.clone(), args.raft_reads, args.raft_election_ms);
        store.set_proposer(Arc::new(Proposer {
            queue,
            reads: reads.clone(),
        }));
        let cluster = Arc::new(Member {
            raft,
            id,
            store,
            log,
            client,
            scheme: transport.scheme(),
            token: args.cluster_token.clone(),
            member_certificates: transport.member_certificates,
            peers,
            forward_timeout,
            election_ms: args.raft_election_ms,
            reads,
            data_dir: data_dir.to_owned(),
            purged_through: std::sync::atomic::AtomicU64::new(0),
        });
        tokio::spawn(watch_metrics(cluster.clone()));
        tokio::spawn(purge::run(cluster.clone()));
        tokio::spawn(form(cluster.clone()));
        Ok(cluster)
    }

    /// The leader this member knows, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// How long ago a majority last answered this member, if it leads and that is longer than
    /// an election timeout: a leader cut off from the others cannot commit anything, so it
    /// says so at once rather than let requests wait.
    pub(crate) fn quorum_lost(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leads = m.state == ServerState::Leader;
        let since = m
            .millis_since_quorum_ack
            .filter(|&ms| ms > self.election_ms);
        since.filter(|_| leads && m.membership_config.membership().voter_ids().count() > 1)
    }

    /// The HTTP address of member `id`, from the membership (or `--peers`).
    pub(crate) fn addr_of(&self, id: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .or_else(|| self.peers.get(&id).cloned())
    }

    pub(crate) fn token_ok(&self, given: Option<&str>) -> bool {
        match &self.token {
            None => true,
            // Digests compared in constant time: neither the time taken nor the length tells
            // how much of a guess matched.
            Some(token) => given
                .is_some_and(|g| digests_equal(&sha256(g.as_bytes()), &sha256(token.as_bytes()))),
        }
    }

    /// Whether Raft's messages must come with a certificate the peer CA signed.
    pub fn needs_member_certificate(&self) -> bool {
        self.member_certificates
    }

    pub fn status(&self) -> Status {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| Peer {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        Status {
            node_id: self.id,
            role: role(m.state),
            leader: m.current_leader,
            term: m.current_term,
            members,
            committed_index: self.log.committed().map(|l| l.index),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
        }
    }

    /// Whether this member can serve: it knows a leader and has applied every entry it knows
    /// to be committed.
    pub fn ready(&self) -> Result<(), String> {
        let status = self.status();
        if status.leader.is_none() {
            return Err("no leader is known yet".into());
        }
        if status.applied_index < status.committed_index {
            return Err(format!(
                "catching up: applied {:?} of {:?} committed entries",
                status.applied_index, status.committed_index
            ));
        }
        Ok(())
    }

    /// Adds member `id` at `addr`: a learner first, which catches up (from the log, or a
    /// snapshot), then a voter. openraft's own wait for the learner can end while a snapshot
    /// is still on its way, so this waits until the leader sees the learner's log reach the
    /// entry that added it.
    pub(crate) async fn add_member(
        self: Arc<Self>,
        id: NodeId,
        addr: String,
    ) -> Result<Status, String> {
        // A task of its own: a client that gives up does not leave a learner never promoted.
        let cluster = self.clone();
        tokio::spawn(async move {
            let added = cluster
                .raft
                .add_learner(id, BasicNode { addr }, true)
                .await
                .map_err(describe)?;
            let target = added.log_id.index;
            let mut metrics = cluster.raft.metrics();
            loop {
                let caught_up = {
                    let m = metrics.borrow_and_update();
                    if m.state != ServerState::Leader {
                        return Err(
                            "this member stopped leading while the learner caught up".into()
                        );
                    }
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).copied().flatten());
                    matched.is_some_and(|l| l.index >= target)
                };
                if caught_up {
                    break;
                }
                metrics
                    .changed()
                    .await
                    .map_err(|_| "this member's Raft stopped".to_owned())?;
            }
            let voters = BTreeSet::from([id]);
            cluster
                .raft
                .change_membership(ChangeMembers::AddVoterIds(voters), false)
                .await
                .map_err(describe)?;
            Ok(cluster.status())
        })
        .await
        .map_err(|e| format!("adding the member failed: {e}"))?
    }

    /// Removes member `id` (a voter or a learner).
    pub(crate) async fn remove_member(&self, id: NodeId) -> Result<Status, String> {
        let status = self.status();
        let member = status.members.iter().find(|m| m.id == id);
        let change = match member {
            None => return Err(format!("node {id} is not a member")),
            Some(m) if m.voter => ChangeMembers::RemoveVoters(BTreeSet::from([id])),
            Some(_) => ChangeMembers::RemoveNodes(BTreeSet::from([id])),
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(describe)?;
        Ok(self.status())
    }

    /// Returns once a read made after it sees every change acknowledged before it was called
    /// (see [`reads`]), or why this member cannot know that.
    pub(crate) async fn linearize(&self) -> Result<(), String> {
        self.reads.confirm().await
    }

    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// Refuses a member that anyone beyond this host could reach, or that would call peers beyond
/// it, when nothing authenticates members: without `--cluster-token` or `--peer-ca` any
/// client that reaches the port could send Raft's messages (docs/API.md, "Exposure"). Checked
/// before anything is bound, opened or called.
pub fn check_member_auth(addr: std::net::SocketAddr, args: &RaftArgs) -> Result<(), MemberError> {
    if args.cluster_token.as_deref().is_some_and(|t| !t.is_empty()) || args.peer_ca.is_some() {
        return Ok(());
    }
    let (_, peers) = args.membership().map_err(MemberError::Options)?;
    let exposed = std::iter::once(addr.to_string())
        .chain(peers.into_values())
        .find(|a| !is_loopback(a));
    match exposed {
        None => Ok(()),
        Some(a) => Err(MemberError::Options(format!(
            "{a} is not a loopback address, and nothing authenticates this cluster's members: \
             start every member with --cluster-token (a shared secret) or --peer-ca (mutual TLS, \
             with --tls-cert and --tls-key), or keep --addr and every --peers address on loopback"
        ))),
    }
}

/// Whether `addr` (HOST:PORT, as in --peers) names this host: a loopback IP or `localhost`.
/// Any other name counts as not loopback, whatever it resolves to now.
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// A first start over a single node's data directory (and no cluster files yet) makes that
/// data the state of a one-member cluster, written as its first snapshot; the others are then
/// added with `POST /cluster/members` and catch up from it. Refused when `--peers` names other
/// members: they could form a cluster without this data before this member joins.
/// Called before the member takes the directory's lock (opening the single node's storage
/// takes it too).
pub(crate) fn seed_from_single_node(data_dir: &Path, args: &RaftArgs) -> Result<bool, MemberError> {
    let (id, peers) = args.membership().map_err(MemberError::Options)?;
    let dir = &data_dir.join("raft");
    let files = |error| MemberError::Files {
        dir: dir.to_owned(),
        error,
    };
    if dir.exists() || !crate::storage::holds_data(data_dir) {
        return Ok(false);
    }
    if peers.len() > 1 {
        return Err(MemberError::Options(format!(
            "{} holds a single node's data: to make it a cluster's first member, start it with --peers naming only itself ({id}={}), then add the others with POST /cluster/members",
            data_dir.display(),
            peers[&id]
        )));
    }
    let options = crate::storage::StorageOptions::new(data_dir);
    let (storage, engine, _) =
        crate::storage::Storage::open(options).map_err(|e| MemberError::Options(e.to_string()))?;
    // Index 1, as if this member had led and written it: openraft takes index 0 with no
    // leader for the entry every log starts with, which a new member would then think it
    // already has, and it would never be sent the seeded state.
    let log_id = openraft::LogId::new(openraft::CommittedLeaderId::new(0, id), 1);
    let members = BTreeSet::from([id]);
    let nodes = peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect::<BTreeMap<_, _>>();
    let membership = openraft::Membership::new(vec![members], nodes);
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(log_id),
        last_membership: openraft::StoredMembership::new(Some(log_id), membership),
        snapshot_id: "seeded-from-single-node".into(),
    };
    let building = dir.with_extension("seeding");
    let _ = std::fs::remove_dir_all(&building);
    std::fs::create_dir_all(&building).map_err(files)?;
    machine::seed(&building, &engine, &meta).map_err(files)?;
    log::LogStore::seeded(&building, log_id).map_err(files)?;
    drop(storage);
    std::fs::rename(&building, dir).map_err(files)?;
    tracing::info!("this member's single-node data now seeds a one-member cluster");
    Ok(true)
}

/// Forms the cluster the first time: once a majority of `--peers` answer and none of them
/// belongs to a cluster yet, each initializes it with the same members (which openraft allows:
/// the first entry is the same everywhere). A member that finds an existing cluster waits to be
/// added to it.
async fn form(cluster: Arc<Member>) {
    let mut tick = tokio::time::interval(Duration::from_millis(300));
    loop {
        tick.tick().await;
        match cluster.raft.is_initialized().await {
            Ok(true) | Err(_) => return,
            Ok(false) => {}
        }
        let mut up = 0;
        let mut formed = false;
        for (&peer, addr) in &cluster.peers {
            if peer == cluster.id {
                up += 1;
                continue;
            }
            if let Some(initialized) = http::hello(&cluster, addr).await {
                up += 1;
                formed |= initialized;
            }
        }
        if formed {
            tracing::info!("a peer already belongs to a cluster: waiting to be added to it");
            return;
        }
        if up * 2 > cluster.peers.len() {
            let nodes: BTreeMap<NodeId, Node> = cluster
                .peers
                .iter()
                .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
                .collect();
            match cluster.raft.initialize(nodes).await {
                Ok(()) => tracing::info!(members = cluster.peers.len(), "cluster formed"),
                Err(e) => tracing::info!(error = %e, "cluster already formed"),
            }
            return;
        }
    }
}

/// Keeps the Raft metrics current as openraft reports changes.
async fn watch_metrics(cluster: Arc<Member>) {
    let Some(gauges) = &cluster.store.metrics().cluster else {
        return;
    };
    let mut metrics = cluster.raft.metrics();
    let mut leader = None;
    loop {
        {
            let m = metrics.borrow_and_update();
            gauges.term.set(m.current_term as i64);
            for name in ["leader", "follower", "candidate", "learner"] {
                let labels = crate::telemetry::metrics::RoleLabels { role: name };
                let now = i64::from(role(m.state) == name);
                gauges.role.get_or_create(&labels).set(now);
            }
            gauges
                .is_leader
                .set(i64::from(m.state == ServerState::Leader));
            if m.current_leader != leader {
                if m.current_leader.is_some() {
                    gauges.leader_changes.inc();
                }
                leader = m.current_leader;
            }
            if let Some(applied) = m.last_applied {
                gauges.applied_index.set(applied.index as i64);
            }
            if let Some(committed) = cluster.log.committed() {
                gauges.committed_index.set(committed.index as i64);
            }
            gauges.replication_lag.clear();
            if let (Some(replication), Some(last)) = (&m.replication, m.last_log_index) {
                for (follower, matched) in replication.iter() {
                    if *follower == cluster.id {
                        continue;
                    }
                    let matched = matched.map_or(0, |l| l.index + 1);
                    let lag = (last + 1).saturating_sub(matched);
                    let labels = crate::telemetry::metrics::FollowerLabels {
                        follower: *follower,
                    };
                    gauges
                        .replication_lag
                        .get_or_create(&labels)
                        .set(lag as i64);
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> RaftArgs {
        let mut all = vec!["identity-engine", "--node-id", "1"];
        all.extend_from_slice(extra);
        crate::config::Cli::try_parse_from(all)
            .unwrap()
            .serve
            .cluster
    }

    #[test]
    fn a_member_beyond_loopback_needs_a_token_or_a_peer_ca() {
        let local: std::net::SocketAddr = "127.0.0.1:7001".parse().unwrap();
        let public: std::net::SocketAddr = "0.0.0.0:7001".parse().unwrap();
        let loopback_peers = args(&["--peers", "1=127.0.0.1:7001,2=localhost:7002,3=[::1]:7003"]);
        assert!(check_member_auth(local, &loopback_peers).is_ok());
        let refused = check_member_auth(public, &loopback_peers)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("--cluster-token") && refused.contains("--peer-ca"),
            "{refused}"
        );
        for peer in ["10.0.0.2:7002", "node2.internal:7002", "[2001:db8::2]:7002"] {
            let list = format!("1=127.0.0.1:7001,2={peer}");
            let refused = check_member_auth(local, &args(&["--peers", &list]));
            assert!(refused.unwrap_err().to_string().starts_with(peer), "{peer}");
            let with_token = args(&["--peers", &list, "--cluster-token", "s"]);
            assert!(check_member_auth(public, &with_token).is_ok(), "{peer}");
        }
        let with_ca = args(&[
            "--peers",
            "1=10.0.0.1:7001",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--peer-ca",
            "ca",
        ]);
        assert!(check_member_auth(public, &with_ca).is_ok());
    }
}
