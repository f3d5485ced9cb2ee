//! The per-request middleware: one log line (method, route, status, latency) and the request
//! metrics. A plain tower layer rather than `from_fn`: no boxed `Next` and no boxed future per
//! request, and labels that borrow (`&'static str` methods, shared route names) so counting a
//! request allocates nothing. Logs name the route template, never the path or the body: emails
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

/// Wraps each route (with `Router::layer`) so the route template is known.
#[derive(Clone)]
pub struct ObserveLayer {
    store: Store,
    /// Every route template, shared by the labels of every request.
    routes: Arc<[Arc<str>]>,
    /// The label of requests no route matched.
    unmatched: Arc<str>,
}

impl ObserveLayer {
    pub fn new(store: Store, routes: impl IntoIterator<Item = String>) -> ObserveLayer {
        ObserveLayer {
            store,
            routes: routes.into_iter().map(Arc::from).collect(),
            unmatched: Arc::from("unmatched"),
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
pub struct Observe<S> {
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
            store: self.layer.store.clone(),
        }
    }
}

impl<S> Observe<S> {
    /// The shared name of `template`; a template the layer was not told of is still counted.
    fn route_label(&self, template: &str) -> Arc<str> {
        self.layer
            .routes
            .iter()
            .find(|r| ***r == *template)
            .cloned()
            .unwrap_or_else(|| Arc::from(template))
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

pin_project! {
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        started: Instant,
        method: &'static str,
        route: Arc<str>,
        store: Store,
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
        this.store
            .metrics()
            .observe_request(this.method, this.route, status, took);
        tracing::info!(
            method = %this.method,
            route = &**this.route,
            status,
            micros = took.as_micros() as u64,
            "request"
        );
        Poll::Ready(Ok(response))
    }
}
