//! Start-up (recover storage, bind, serve) and graceful shutdown (stop accepting, finish the
//! requests in flight, sync the log, write a snapshot). Serving is the edge's (`crate::edge`):
//! its timeouts, connection limit and TLS.

mod notify;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::config::Config;
use crate::edge::tls::{Tls, TlsFiles};
use crate::http::auth::Auth;
use crate::http::{router, AppState, Limits};
use crate::matching::canon::Canon;
use crate::raft::Member;
use crate::storage::StorageError;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("{0}")]
    Tls(#[from] crate::edge::tls::TlsError),
    #[error("{0}")]
    Auth(String),
    #[error("blocklist: {0}")]
    Blocklist(String),
    #[error("{0}")]
    Matching(String),
    #[error("cluster: {0}")]
    Member(String),
    #[error("{0}")]
    Options(String),
}

/// A task that ended without finishing (a bug), as an error instead of a second panic.
fn stopped(what: &str, e: tokio::task::JoinError) -> StorageError {
    StorageError::Io(std::io::Error::other(format!(
        "{what} stopped unexpectedly: {e}"
    )))
}

/// A recovered store bound to its address, ready to serve.
pub struct App {
    listener: TcpListener,
    router: Router,
    store: Store,
    member: Option<Arc<Member>>,
    edge: crate::edge::Settings,
    tls: Option<Arc<Tls>>,
    /// A cluster member's hold on its data directory (a single node's store holds its own).
    _lock: Option<std::fs::File>,
}

impl App {
    /// Recovers the data directory and binds the address (port 0 works, for tests).
    pub async fn build(config: Config) -> Result<App, AppError> {
        let exposure = Exposure::check(&config)?;
        let modes = config.matching.modes().map_err(AppError::Matching)?;
        let answer_key = config.answer_key().map_err(AppError::Options)?;
        let unrecorded = crate::matching::record::check(&config.data_dir, &modes)
            .map_err(|e| AppError::Matching(e.to_string()))?;
        let (store, member, lock) = if config.cluster.enabled() {
            Self::join(&config, exposure.transport()?).await?
        } else {
            (Self::recover(&config).await?, None, None)
        };
        if unrecorded {
            // Only now, with the directory locked and opened, is it surely ours to mark.
            crate::matching::record::record(&config.data_dir, &modes)
                .map_err(|e| AppError::Matching(e.to_string()))?;
        }
        let canon =
            Canon::new(modes).with_fallback_counter(store.metrics().phone_e164_fallbacks.clone());
        if let Some(file) = &config.blocklist {
            let values =
                crate::tools::blocklist::read(file, &canon).map_err(AppError::Blocklist)?;
            let added = crate::tools::blocklist::apply(&store, &values)
                .await
                .map_err(|e| AppError::Blocklist(e.to_string()))?;
            tracing::info!(file = %file.display(), values = values.len(), added, "blocklist applied");
        }
        tracing::info!(matching = %canon.modes(), "matching modes");
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|e| AppError::Bind(config.addr, e))?;
        let state = AppState {
            store: store.clone(),
            answer_key,
            limits: Limits {
                body_bytes: config.body_limit,
                timeout: Duration::from_millis(config.request_timeout_ms),
                concurrent_requests: config.max_concurrent_requests,
                changes_heartbeat: Duration::from_millis(config.changes_heartbeat_ms),
            },
            auth: exposure.auth.clone(),
            canon,
            member: member.clone(),
            access_log: config.access_log,
            erasure_purge_within: config.erasure_purge_within,
        };
        if member.is_none() {
            tokio::spawn(crate::erasure::schedule(store.clone()));
        }
        let router = match &member {
            None => router(state),
            // The forwarding layer goes outside the request limits: a follower only relays. Raft's
            // own messages are outside both.
            Some(member) => router(state)
                .layer(axum::middleware::from_fn_with_state(
                    member.clone(),
                    crate::raft::http::route,
                ))
                .merge(crate::raft::http::raft_routes(member.clone())),
        };
        crate::storage::warn_if_open_to_others(
            &config.data_dir,
            "the data directory, which holds every contact,",
        );
        let edge = exposure.settings(&config, member.is_some());
        Ok(App {
            listener,
            router,
            store,
            member,
            edge,
            tls: exposure.tls,
            _lock: lock,
        })
    }

    /// Opens a single node's data directory: its snapshot and log.
    async fn recover(config: &Config) -> Result<Store, AppError> {
        let storage = config.storage();
        let guards = config.guards();
        let (store, report) =
            tokio::task::spawn_blocking(move || Store::open_with(storage, guards))
                .await
                .map_err(|e| stopped("recovery", e))??;
        let stats = store.stats();
        tracing::info!(
            records_replayed = report.records_replayed,
            snapshot_seq = report.snapshot_seq,
            last_seq = report.last_seq,
            contacts = stats.contacts,
            clusters = stats.clusters,
            tail_cut = report.tail_cut.is_some(),
            ms = report.elapsed.as_millis() as u64,
            "recovered"
        );
        Ok(store)
    }

    /// Starts a cluster member over the data directory's `raft/` files.
    async fn join(
        config: &Config,
        transport: crate::raft::Transport,
    ) -> Result<(Store, Option<Arc<Member>>, Option<std::fs::File>), AppError> {
        if config.blocklist.is_some() {
            return Err(AppError::Member(
                "--blocklist is for a single node; a cluster's blocklist is changed with POST /blocklist on any member".into(),
            ));
        }
        crate::storage::create_private_dir(&config.data_dir)
            .map_err(|e| StorageError::file(config.data_dir.clone(), e))?;
        crate::raft::seed_from_single_node(&config.data_dir, &config.cluster)
            .map_err(|e| AppError::Member(e.to_string()))?;
        let lock = crate::storage::lock_dir(&config.data_dir)?;
        let forward_timeout = Duration::from_millis(config.request_timeout_ms) * 2;
        let cluster = Member::start(
            &config.storage(),
            &config.cluster,
            config.guards(),
            forward_timeout,
            transport,
        )
        .await
        .map_err(|e| AppError::Member(e.to_string()))?;
        let stats = cluster.store.stats();
        let status = cluster.status();
        tracing::info!(
            node = cluster.id,
            applied = status.applied_index,
            contacts = stats.contacts,
            clusters = stats.clusters,
            "cluster member started"
        );
        Ok((cluster.store.clone(), Some(cluster), Some(lock)))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn store(&self) -> Store {
        self.store.clone()
    }

    /// Serves until `shutdown` completes, then drains requests, syncs the log and snapshots.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), AppError> {
        tracing::info!(
            addr = %self.local_addr(),
            tls = self.tls.is_some(),
            max_connections = self.edge.max_connections,
            "listening"
        );
        // SIGHUP's handler is in place before readiness is announced: its default action kills.
        if let Some(tls) = &self.tls {
            tokio::spawn(reload_on_hangup(tls.clone(), hangup_signals()));
        }
        // Recovered and bound: a service manager waiting for readiness (Type=notify) is told so.
        notify::ready(self.local_addr());
        let feed = self.store.feed().clone();
        tokio::spawn(keep_feed_retention(feed.clone()));
        // Readers waiting on the change feed (a long poll, a stream) end as shutdown begins,
        // or the drain would wait for them.
        let shutdown = async move {
            shutdown.await;
            notify::stopping();
            feed.close();
        };
        crate::edge::serve(self.listener, self.router, self.edge, self.tls, shutdown).await;
        if let Some(member) = &self.member {
            tracing::info!("requests drained; stopping this member's Raft");
            member.shutdown().await;
            return Ok(());
        }
        tracing::info!("requests drained; syncing the log and writing a snapshot");
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| stopped("closing the log", e))??;
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// Removes the change feed's history past its retention, at start and every minute.
async fn keep_feed_retention(feed: crate::feed::Feed) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        if feed.is_closing() {
            return;
        }
        let feed = feed.clone();
        let kept = tokio::task::spawn_blocking(move || feed.retain()).await;
        if let Ok(Err(error)) = kept {
            tracing::warn!(%error, "the change feed's retention could not be applied");
        }
    }
}

/// What start-up checks and builds before it touches the data directory: the member
/// authentication rule, the tokens, TLS (docs/API.md, "Exposure").
struct Exposure {
    auth: Arc<Auth>,
    tls: Option<Arc<Tls>>,
}

impl Exposure {
    fn check(config: &Config) -> Result<Exposure, AppError> {
        if config.cluster.enabled() {
            crate::raft::check_member_auth(config.addr, &config.cluster)
                .map_err(|e| AppError::Member(e.to_string()))?;
        }
        let auth = Auth::new(
            config.admin_token.as_deref(),
            config.tokens.as_deref(),
            config.identify_needs_token,
        )
        .map_err(AppError::Auth)?;
        for (path, what) in [
            (config.tokens.as_deref(), "the tokens file"),
            (config.tls_key.as_deref(), "the TLS key (--tls-key)"),
        ] {
            if let Some(path) = path {
                crate::storage::warn_if_open_to_others(path, what);
            }
        }
        for (name, role) in auth.summary() {
            tracing::info!(%name, %role, "token");
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Tls::load(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                peer_ca: config.cluster.peer_ca.clone(),
            })?)),
            _ => None,
        };
        Ok(Exposure {
            auth: Arc::new(auth),
            tls,
        })
    }

    /// How this member calls its peers.
    fn transport(&self) -> Result<crate::raft::Transport, AppError> {
        let Some(tls) = &self.tls else {
            return Ok(crate::raft::Transport::plain());
        };
        Ok(crate::raft::Transport {
            tls: Some(Arc::new(tls.client_config()?)),
            member_certificates: tls.member_certificates(),
        })
    }

    /// The edge's settings; the open-file limit is raised to its hard limit first, and the
    /// default connection limit is what it leaves (`edge::limits`).
    fn settings(&self, config: &Config, member: bool) -> crate::edge::Settings {
        let open_files = crate::edge::limits::raise_open_files();
        let forwarding = if member {
            config.max_concurrent_requests
        } else {
            0
        };
        let max_connections = config.max_connections.unwrap_or_else(|| {
            crate::edge::limits::default_max_connections(open_files, forwarding)
        });
        crate::edge::Settings {
            header_timeout: Duration::from_millis(config.header_timeout_ms),
            idle_timeout: Duration::from_millis(config.idle_timeout_ms),
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            // Members talk in small request-answer rounds (Raft's messages, forwarded
            // requests): without TCP_NODELAY an answer written in two parts waits for the
            // peer's delayed ACK, 40 ms a round.
            nodelay: member,
        }
    }
}

fn hangup_signals() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Reads the certificate and key again on each SIGHUP; a reload that fails keeps the old ones.
async fn reload_on_hangup(tls: Arc<Tls>, hangups: std::io::Result<tokio::signal::unix::Signal>) {
    let mut hangups = match hangups {
        Ok(hangups) => hangups,
        Err(error) => {
            tracing::warn!(%error, "no SIGHUP handler: certificates are read at start-up only");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        let cert = tls.files().cert.display().to_string();
        match tls.reload() {
            Ok(()) => tracing::info!(%cert, "TLS certificate and key reloaded"),
            Err(error) => {
                tracing::error!(%error, "TLS reload failed; still serving the certificate loaded before")
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a signal that arrives right after readiness is announced (the
/// `READY=1` a service manager acts on) is a shutdown, never the default action that kills.
/// Must be called inside a Tokio runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let terminate = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    async move {
        let next = |stream: std::io::Result<tokio::signal::unix::Signal>| async move {
            match stream {
                Ok(mut stream) => {
                    stream.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = next(terminate) => {},
            () = next(interrupt) => {},
        }
        tracing::info!("shutdown requested");
    }
}
