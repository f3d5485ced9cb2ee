//! The per-request middleware: the request metrics and the access log line (method, route,
//! status, latency): for every request with `--access-log`, else only for answers of 500 and up. A plain tower layer rather than `from_fn`: no boxed `Next` and no boxed future per
//! request, and each route's metric handles made once, when the router is built, so counting a
//! request looks nothing up. Logs name the route template, never the path or the body: emails
//! and phone numbers are personal data.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::store::Store;
use crate::telemetry::metrics::{RouteMetrics, METHODS};

/// Wraps each route (with `Router::layer`) so the route template is known.
#[derive(Clone)]
pub(crate) struct ObserveLayer {
    store: Store,
    /// The metrics of every route template.
    routes: Arc<[Arc<RouteMetrics>]>,
    /// The metrics of requests no route matched.
    unmatched: Arc<RouteMetrics>,
    /// Whether every request is logged, or only those answered 500 and up.
    access_log: bool,
}

impl ObserveLayer {
    pub fn new(
        store: Store,
        routes: impl IntoIterator<Item = String>,
        access_log: bool,
    ) -> ObserveLayer {
        let metrics = store.metrics();
        let routes = (routes.into_iter())
            .map(|route| Arc::new(metrics.route(Arc::from(route))))
            .collect();
        let unmatched = Arc::new(metrics.route(Arc::from("unmatched")));
        ObserveLayer {
            store,
            routes,
            unmatched,
            access_log,
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Observe<S> {
    inner: S,
    layer: ObserveLayer,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let method = method_label(request.method());
        let route = match request.extensions().get::<MatchedPath>() {
            Some(path) => self.route_label(path.as_str()),
            None => self.layer.unmatched.clone(),
        };
        ObserveFuture {
            inner: self.inner.call(request),
            started: Instant::now(),
            method,
            route,
            access_log: self.layer.access_log,
        }
    }
}

impl<S> Observe<S> {
    /// The metrics of `template`; a template the layer was not told of is still counted.
    fn route_label(&self, template: &str) -> Arc<RouteMetrics> {
        match self.layer.routes.iter().find(|r| r.route() == template) {
            Some(route) => route.clone(),
            None => Arc::new(self.layer.store.metrics().route(Arc::from(template))),
        }
    }
}

/// The index in [`METHODS`] of `method`'s label.
fn method_label(method: &Method) -> usize {
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::DELETE => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

pin_project! {
    pub(crate) struct ObserveFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: usize,
        route: Arc<RouteMetrics>,
        access_log: bool,
    }
}

impl<F, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        let took = this.started.elapsed();
        let status = response.status().as_u16();
        this.route.observe(*this.method, status, took);
        if *this.access_log {
            tracing::info!(
                method = %METHODS[*this.method],
                route = this.route.route(),
                status,
                micros = took.as_micros() as u64,
                "request"
            );
        } else if status >= 500 {
            // Without the access log, the answers an operator must hear of still are.
            tracing::warn!(
                method = %METHODS[*this.method],
                route = this.route.route(),
                status,
                micros = took.as_micros() as u64,
                "request failed"
            );
        }
        Poll::Ready(Ok(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_counted_under_their_own_names() {
        for method in [
            Method::GET,
            Method::POST,
            Method::DELETE,
            Method::PUT,
            Method::PATCH,
            Method::HEAD,
            Method::OPTIONS,
        ] {
            assert_eq!(METHODS[method_label(&method)], method.as_str());
        }
        assert_eq!(METHODS[method_label(&Method::TRACE)], "other");
    }
}
