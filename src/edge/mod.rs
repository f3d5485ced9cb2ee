//! The network edge (docs/API.md, "Exposure"): the accept loop over hyper's HTTP/1 server, with
//! its timeouts, the connection limit, TLS, and the graceful stop.
//!
//! - At most `max_connections` connections are open at once: a semaphore permit is taken before
//!   each `accept`, so past the limit the loop stops accepting and new connections wait in the
//!   kernel's backlog instead of failing the ones already open.
//! - The first request's headers must be in within `header_timeout` of the accept (the TLS
//!   handshake included). Later requests on a kept-alive connection are bounded by hyper's own
//!   `header_read_timeout`, which hyper 1.x starts when the connection goes idle after an
//!   answer and stops when the next request's headers are in: set to `idle_timeout`, it is the
//!   idle timeout. (hyper has no separate idle timer; the one it has starts at the accept too,
//!   so the first request is bounded by the shorter of the two.)
//! - `half_close`: a client that shuts its sending side after a whole request still gets its
//!   answer.
//! - Errors from `accept` never end the loop: running out of file descriptors is logged (at
//!   most once a second) and waited out briefly, so the loop neither spins nor dies.

pub mod limits;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use tls::Tls;

/// The contract's default for `--header-timeout-ms`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The contract's default for `--idle-timeout-ms`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How the edge treats connections.
#[derive(Clone, Debug)]
pub struct Settings {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// TCP_NODELAY on every connection (cluster members: see `App::run`).
    pub nodelay: bool,
}

/// In a request's extensions when its connection presented a client certificate that the peer
/// CA signed (`--peer-ca`): the connection comes from a cluster member.
#[derive(Clone, Copy, Debug)]
pub struct MemberCertificate;

/// What every connection task shares.
struct Shared {
    router: Router,
    http: hyper::server::conn::http1::Builder,
    tls: Option<Arc<Tls>>,
    header_timeout: Duration,
    nodelay: bool,
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets every
/// request in flight finish (hyper closes idle connections at once) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: Settings,
    tls: Option<Arc<Tls>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.idle_timeout)
        .keep_alive(true)
        .half_close(true);
    let shared = Arc::new(Shared {
        router,
        http,
        tls,
        header_timeout: settings.header_timeout,
        nodelay: settings.nodelay,
    });
    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    let mut errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Made before the stop can begin, so that the stop waits for this connection.
                let watcher = graceful.watcher();
                tokio::spawn(connection(shared.clone(), stream, peer, permit, watcher));
            }
            Err(error) => errors.wait_out(error).await,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// One connection: the TLS handshake if any, then HTTP/1 until either side ends it.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _permit: OwnedSemaphorePermit,
    watcher: Watcher,
) {
    let deadline = tokio::time::Instant::now() + shared.header_timeout;
    if shared.nodelay {
        let _ = stream.set_nodelay(true);
    }
    let Some(tls) = &shared.tls else {
        return serve_http(&shared, stream, peer, None, deadline, watcher).await;
    };
    let handshake = tls.acceptor().accept(stream);
    match tokio::time::timeout_at(deadline, handshake).await {
        Ok(Ok(stream)) => {
            let member =
                tls.member_certificates() && stream.get_ref().1.peer_certificates().is_some();
            let member = member.then_some(MemberCertificate);
            serve_http(&shared, stream, peer, member, deadline, watcher).await;
        }
        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "no TLS handshake within the header timeout"),
    }
}

/// Serves HTTP/1 on `io`; closes it if no request's headers are in by `deadline`.
async fn serve_http<I>(
    shared: &Shared,
    io: I,
    peer: SocketAddr,
    member: Option<MemberCertificate>,
    deadline: tokio::time::Instant,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let (router, started) = (shared.router.clone(), started.clone());
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            started.store(true, Ordering::Relaxed);
            let extensions = request.extensions_mut();
            extensions.insert(ConnectInfo(peer));
            if let Some(member) = member {
                extensions.insert(member);
            }
            tower::ServiceExt::oneshot(router.clone(), request)
        })
    };
    let connection = watcher.watch(shared.http.serve_connection(TokioIo::new(io), service));
    let header_timeout = async {
        tokio::time::sleep_until(deadline).await;
        if started.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        }
        () = header_timeout => tracing::debug!(%peer, "no request headers within the header timeout"),
    }
}

/// What the accept loop does with an error of `accept`.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// How long to wait after running out of descriptors (or memory) before accepting again:
    /// long enough not to spin, short enough that a freed descriptor is soon used.
    const BACK_OFF: Duration = Duration::from_millis(50);
    const LOG_EVERY: Duration = Duration::from_secs(1);

    async fn wait_out(&mut self, error: std::io::Error) {
        use std::io::ErrorKind;
        // A connection that failed before it was accepted: the next one is unaffected.
        if matches!(
            error.kind(),
            ErrorKind::ConnectionAborted
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionRefused
        ) {
            return;
        }
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= Self::LOG_EVERY)
        {
            let more_since_last_line = std::mem::take(&mut self.unlogged);
            tracing::error!(%error, more_since_last_line, "accept failed (new connections wait in the backlog; raise the open-file limit or lower --max-connections)");
            self.last_logged = Some(now);
        } else {
            self.unlogged += 1;
        }
        tokio::time::sleep(Self::BACK_OFF).await;
    }
}
