//! The request limits as one tower layer: at most `concurrent_requests` requests at once (more
//! are answered 503 `overloaded` at once, never queued) and a time limit (503 `timeout`).
//!
//! This replaces tower's load-shed, global concurrency limit and timeout layers under axum's
//! `HandleErrorLayer`: per request those took a semaphore permit, built a timer and boxed an
//! error-handling future. Here a request takes a slot from one atomic counter, and a timer is
//! made only if the request is still waiting after its first poll; a read (answered on its
//! first poll) never makes one, nor reads the clock. The limit runs from that first wait, which
//! follows the call at once (hyper polls a request's future as soon as it makes it).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

use super::{ApiError, Limits};

#[derive(Clone)]
pub struct LimitLayer {
    shared: Arc<Shared>,
}

struct Shared {
    in_flight: AtomicUsize,
    max: usize,
    timeout: Duration,
}

impl LimitLayer {
    pub fn new(limits: &Limits) -> LimitLayer {
        LimitLayer {
            shared: Arc::new(Shared {
                in_flight: AtomicUsize::new(0),
                max: limits.concurrent_requests,
                timeout: limits.timeout,
            }),
        }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;

    fn layer(&self, inner: S) -> Limit<S> {
        Limit {
            inner,
            shared: self.shared.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Limit<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request> for Limit<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = LimitFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let max = self.shared.max;
        // Counted only if there is room: a request turned away never takes a slot, even briefly.
        let taken =
            (self.shared.in_flight).fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        if taken.is_err() {
            return LimitFuture {
                inner: None,
                slot: None,
                timeout: self.shared.timeout,
                sleep: None,
            };
        }
        // Held before the inner service runs, so that even a panic there gives the slot back.
        let slot = Slot(self.shared.clone());
        LimitFuture {
            inner: Some(self.inner.call(request)),
            slot: Some(slot),
            timeout: self.shared.timeout,
            sleep: None,
        }
    }
}

/// One request's place among those served at once, given back when it is dropped.
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project! {
    pub struct LimitFuture<F> {
        // None: shed, answered `overloaded` at the first poll.
        #[pin]
        inner: Option<F>,
        slot: Option<Slot>,
        timeout: Duration,
        // Made when the request first has to wait.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Future for LimitFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Ok(ApiError::Overloaded.into_response()));
        };
        if let Poll::Ready(response) = inner.poll(cx) {
            this.slot.take();
            return Poll::Ready(response);
        }
        let timeout = *this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.slot.take();
                Poll::Ready(Ok(ApiError::Timeout.into_response()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use tower::ServiceExt;

    /// A service that answers 200 at once, or never when the path is `/wait`.
    fn service(
        limits: Limits,
    ) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send> + Clone {
        let inner = tower::service_fn(|request: Request| async move {
            if request.uri().path() == "/wait" {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(StatusCode::OK.into_response())
        });
        LimitLayer::new(&limits).layer(inner)
    }

    fn request(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .body(Default::default())
            .unwrap()
    }

    #[tokio::test]
    async fn a_slot_is_given_back_when_a_request_ends_times_out_or_is_dropped() {
        let limits = Limits {
            concurrent_requests: 1,
            timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let svc = service(limits);
        let status = |r: Response| r.status();
        for _ in 0..3 {
            let answer = svc.clone().oneshot(request("/")).await.unwrap();
            assert_eq!(status(answer), StatusCode::OK, "served one after another");
        }
        // A waiting request holds the only slot: another is shed at once.
        let mut waiting = Box::pin(svc.clone().oneshot(request("/wait")));
        let still_waiting = tokio::time::timeout(Duration::from_millis(20), &mut waiting).await;
        assert!(still_waiting.is_err());
        let shed = svc.clone().oneshot(request("/")).await.unwrap();
        assert_eq!(status(shed), StatusCode::SERVICE_UNAVAILABLE);
        // Dropped (the client went away): the slot is free again.
        drop(waiting);
        let answer = svc.clone().oneshot(request("/")).await.unwrap();
        assert_eq!(status(answer), StatusCode::OK);
        // Timed out: answered 503 after the limit, and the slot is free again.
        let timed_out = svc.clone().oneshot(request("/wait")).await.unwrap();
        assert_eq!(status(timed_out), StatusCode::SERVICE_UNAVAILABLE);
        let answer = svc.clone().oneshot(request("/")).await.unwrap();
        assert_eq!(status(answer), StatusCode::OK);
    }
}
