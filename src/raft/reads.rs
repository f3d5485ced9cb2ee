//! Linearizable reads on the leader (docs/raft-reads.md): before it answers a read from its own
//! state, the leader must know that no other member has become leader since the read arrived,
//! or a change another leader acknowledged could be missing from the answer.
//!
//! - **Read index** (`--raft-reads index`): a heartbeat round to a majority confirms it still
//!   leads, then it waits until it has applied everything committed before the round began.
//!   Batched: one round serves every read that was waiting when it started; reads that arrive
//!   during it wait for the next, since a round proves nothing about a read that came after it
//!   began.
//! - **Leader lease** (`--raft-reads lease`, the default): a follower that acknowledged a
//!   heartbeat refuses to vote for anyone else for openraft's leader lease (1.5 election
//!   timeouts) after it received it. A round that began at `t` and was acknowledged by a
//!   majority therefore means no other leader can exist before `t` + 1.5 election timeouts.
//!   The leader trusts it until `t` + one election timeout: the other half covers clocks that
//!   run at different rates. While that holds, a read is answered at once; when it has run
//!   out, the read waits for a round as with read index, and that round renews the lease. A
//!   background task renews it before it runs out while this member leads, so reads under load
//!   never wait. The check is made after the read arrived, so a leader paused between the check
//!   and the answer still answers with a state at least as new as that moment, which is all a
//!   linearizable read needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{Raft, ServerState};
use tokio::sync::{mpsc, oneshot};

use super::TypeConfig;
use crate::config::RaftReads;

/// Someone waiting for a read barrier.
type Reader = oneshot::Sender<Result<(), String>>;

/// Where reads wait for the leader to confirm it leads (see the module's documentation).
#[derive(Clone)]
pub(super) struct Reads {
    queue: mpsc::UnboundedSender<Reader>,
    lease: Arc<Lease>,
}

impl Reads {
    /// Starts the task that batches confirmations and, with leases, the one that renews them.
    pub(super) fn start(raft: Raft<TypeConfig>, mode: RaftReads, election_ms: u64) -> Reads {
        let lease = Arc::new(Lease::new(match mode {
            RaftReads::Lease => Some(Duration::from_millis(election_ms)),
            RaftReads::Index => None,
        }));
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(batch_confirmations(raft.clone(), lease.clone(), waiting));
        let reads = Reads { queue, lease };
        if let Some(length) = reads.lease.length {
            tokio::spawn(renew_lease(raft, reads.clone(), length));
        }
        reads
    }

    /// Returns once a read made after it sees every change acknowledged before it was called:
    /// at once under a valid lease, otherwise after the next confirmation round (and, if this
    /// member no longer leads, with why not).
    pub(super) async fn confirm(&self) -> Result<(), String> {
        if self.lease.holds() {
            return Ok(());
        }
        self.next_round().await
    }

    /// Waits for the next confirmation round, lease or not.
    async fn next_round(&self) -> Result<(), String> {
        let stopped = || "this member's Raft stopped".to_owned();
        let (tx, rx) = oneshot::channel();
        self.queue.send(tx).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Until when a majority's acknowledgement lets this member answer reads without a round, as
/// nanoseconds after `epoch` (0: no lease). Only ever extended, by a round that succeeded.
struct Lease {
    /// None with `--raft-reads index`: no lease is ever granted.
    length: Option<Duration>,
    epoch: Instant,
    until: AtomicU64,
}

impl Lease {
    fn new(length: Option<Duration>) -> Lease {
        Lease {
            length,
            epoch: Instant::now(),
            until: AtomicU64::new(0),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn holds(&self) -> bool {
        self.nanos(Instant::now()) < self.until.load(Ordering::Acquire)
    }

    /// What is left of the lease (zero if there is none).
    fn remaining(&self) -> Duration {
        let left = self.until.load(Ordering::Acquire);
        Duration::from_nanos(left.saturating_sub(self.nanos(Instant::now())))
    }

    /// A round that began at `began` was acknowledged by a majority.
    fn granted(&self, began: Instant) {
        if let Some(length) = self.length {
            self.until
                .fetch_max(self.nanos(began + length), Ordering::AcqRel);
        }
    }

    /// A round failed: this member may no longer lead, so nothing is answered on its word.
    fn revoke(&self) {
        self.until.store(0, Ordering::Release);
    }
}

/// Confirmation rounds, batched like proposals: one heartbeat round to a majority (no fsync)
/// serves every read waiting when it began.
async fn batch_confirmations(
    raft: Raft<TypeConfig>,
    lease: Arc<Lease>,
    mut queue: mpsc::UnboundedReceiver<Reader>,
) {
    while let Some(first) = queue.recv().await {
        let mut waiters = vec![first];
        while let Ok(waiter) = queue.try_recv() {
            waiters.push(waiter);
        }
        // Taken before the round: the followers' acknowledgements come from heartbeats sent
        // after it, so their leases run from later than this.
        let began = Instant::now();
        let result = raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        match &result {
            Ok(()) => lease.granted(began),
            Err(_) => lease.revoke(),
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// While this member leads, renews the lease when a third of it is left, so that reads find
/// it valid; a member that does not lead waits for its state to change.
async fn renew_lease(raft: Raft<TypeConfig>, reads: Reads, length: Duration) {
    let mut metrics = raft.metrics();
    loop {
        let leads = metrics.borrow_and_update().state == ServerState::Leader;
        if !leads {
            reads.lease.revoke();
            if metrics.changed().await.is_err() {
                return;
            }
            continue;
        }
        let sleep = reads.lease.remaining().saturating_sub(length / 3);
        if !sleep.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(sleep) => {}
                changed = metrics.changed() => if changed.is_err() { return },
            }
            continue;
        }
        if reads.next_round().await.is_err() {
            // Not a majority this time (or no longer leading): try again a heartbeat later.
            tokio::time::sleep(length / 10).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_from_the_round_it_was_granted_on_for_its_length_and_only_grows() {
        let lease = Lease::new(Some(Duration::from_secs(60)));
        assert!(!lease.holds(), "no lease before a round");
        lease.granted(Instant::now());
        assert!(lease.holds());
        let remaining = lease.remaining();
        assert!(remaining > Duration::from_secs(59) && remaining <= Duration::from_secs(60));
        // An older round does not shorten it.
        lease.granted(lease.epoch);
        assert!(lease.remaining() > Duration::from_secs(59));
        lease.revoke();
        assert!(!lease.holds());
    }

    #[test]
    fn a_round_that_began_a_lease_length_ago_grants_nothing() {
        let lease = Lease::new(Some(Duration::from_millis(5)));
        let began = Instant::now();
        std::thread::sleep(Duration::from_millis(10));
        lease.granted(began);
        assert!(!lease.holds());
    }

    #[test]
    fn read_index_mode_never_grants_a_lease() {
        let lease = Lease::new(None);
        lease.granted(Instant::now());
        assert!(!lease.holds());
        assert_eq!(lease.remaining(), Duration::ZERO);
    }
}
