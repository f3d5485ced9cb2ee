//! Waiting for the log to be durable. A request whose change (or whose answer's reads) must be
//! durable first parks here with the sequence number it needs; after each batch the writer wakes
//! exactly the requests that batch covers, in one pass, and no others.
//!
//! This replaced a `tokio::sync::watch`: its every publish woke every waiter, so the requests
//! queued for the next batch were woken by the current one only to park again, a wake-up and a
//! poll per request per batch for nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

use super::StorageError;

/// How far the log is durable, and the requests waiting for more of it.
pub(crate) struct Durability {
    /// Every record up to this sequence number is durable (per the fsync policy).
    durable: AtomicU64,
    /// The log failed: nothing past `durable` ever will be.
    failed: AtomicBool,
    /// Held only to add a waiter or take the covered ones; never across a wake.
    waiting: Mutex<Vec<Waiter>>,
}

struct Waiter {
    seq: u64,
    waker: Waker,
}

impl Durability {
    pub fn new(durable: u64) -> Durability {
        Durability {
            durable: AtomicU64::new(durable),
            failed: AtomicBool::new(false),
            waiting: Mutex::new(Vec::new()),
        }
    }

    pub fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Marks the log failed without waking anyone (the writer does, when it stops).
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Everything up to `seq` is durable: wakes the requests waiting for no more than that.
    /// `woken` is the caller's buffer, kept between batches so that waking allocates nothing.
    /// Writer threads may publish out of order; the durable number never goes back.
    pub fn publish(&self, seq: u64, woken: &mut Vec<Waker>) {
        // Stored before the list is taken: a waiter that misses this value in its check under
        // the lock is in the list by the time it is looked at here.
        self.durable.fetch_max(seq, Ordering::AcqRel);
        self.wake(woken, |w| w.seq <= seq);
    }

    /// The log failed: wakes every waiter, to be answered from `durable` and `failed`.
    pub fn fail(&self) {
        self.set_failed();
        self.wake(&mut Vec::new(), |_| true);
    }

    fn wake(&self, woken: &mut Vec<Waker>, covered: impl Fn(&Waiter) -> bool) {
        {
            let mut waiting = self.waiting.lock();
            woken.extend(waiting.extract_if(.., |w| covered(w)).map(|w| w.waker));
        }
        for waker in woken.drain(..) {
            waker.wake();
        }
    }

    /// Completes once every record up to `seq` is durable, or with `Unavailable` once the log
    /// has failed short of it.
    pub fn wait(&self, seq: u64) -> WaitDurable<'_> {
        WaitDurable {
            durability: self,
            seq,
            registered: None,
        }
    }

    fn check(&self, seq: u64) -> Option<Result<(), StorageError>> {
        if self.durable() >= seq {
            Some(Ok(()))
        } else if self.is_failed() {
            Some(Err(StorageError::Unavailable))
        } else {
            None
        }
    }
}

/// The future of [`Durability::wait`].
pub(crate) struct WaitDurable<'a> {
    durability: &'a Durability,
    seq: u64,
    /// The waker in the list, so that polling again without a wake (a connection's task is
    /// polled for its socket too) does not add the request twice.
    registered: Option<Waker>,
}

impl Future for WaitDurable<'_> {
    type Output = Result<(), StorageError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(done) = this.durability.check(this.seq) {
            return Poll::Ready(done);
        }
        if this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let mut waiting = this.durability.waiting.lock();
        // Checked again under the lock: see `publish`.
        if let Some(done) = this.durability.check(this.seq) {
            return Poll::Ready(done);
        }
        waiting.push(Waiter {
            seq: this.seq,
            waker: cx.waker().clone(),
        });
        this.registered = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Lets spawned tasks run until `n` requests wait (a current-thread runtime runs them only
    /// when this task yields).
    async fn parked(durability: &Durability, n: usize) {
        for _ in 0..1000 {
            if durability.waiting.lock().len() >= n {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("{n} waiters never parked");
    }

    #[tokio::test]
    async fn a_waiter_completes_once_its_sequence_number_is_published() {
        let durability = Arc::new(Durability::new(4));
        durability.wait(4).await.expect("already durable");
        let waiter = {
            let durability = durability.clone();
            tokio::spawn(async move { durability.wait(6).await })
        };
        parked(&durability, 1).await;
        let mut woken = Vec::new();
        durability.publish(5, &mut woken);
        assert_eq!(durability.waiting.lock().len(), 1, "5 does not cover 6");
        durability.publish(6, &mut woken);
        waiter.await.unwrap().expect("durable at 6");
        assert!(durability.waiting.lock().is_empty());
    }

    #[tokio::test]
    async fn a_publication_out_of_order_never_takes_durability_back() {
        let durability = Durability::new(0);
        let mut woken = Vec::new();
        durability.publish(6, &mut woken);
        durability.publish(5, &mut woken);
        assert_eq!(durability.durable(), 6);
        durability.wait(6).await.expect("6 stays durable");
    }

    #[tokio::test]
    async fn a_failed_log_refuses_what_it_had_not_made_durable() {
        let durability = Arc::new(Durability::new(4));
        let waiter = {
            let durability = durability.clone();
            tokio::spawn(async move { durability.wait(5).await })
        };
        parked(&durability, 1).await;
        durability.fail();
        assert!(matches!(
            waiter.await.unwrap(),
            Err(StorageError::Unavailable)
        ));
        durability
            .wait(4)
            .await
            .expect("4 was durable before the failure");
        assert!(durability.wait(5).await.is_err());
    }
}
