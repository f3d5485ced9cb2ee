//! Start-up (recover storage, bind, serve) and graceful shutdown (stop accepting, finish the
//! requests in flight, sync the log, write a snapshot).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use std::sync::Arc;

use crate::config::Config;
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
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("blocklist: {0}")]
    Blocklist(String),
    #[error("{0}")]
    Matching(String),
    #[error("cluster: {0}")]
    Member(String),
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
    /// A cluster member's hold on its data directory (a single node's store holds its own).
    _lock: Option<std::fs::File>,
}

impl App {
    /// Recovers the data directory and binds the address (port 0 works, for tests).
    pub async fn build(config: Config) -> Result<App, AppError> {
        let modes = config.matching.modes().map_err(AppError::Matching)?;
        let unrecorded = crate::matching::record::check(&config.data_dir, &modes)
            .map_err(|e| AppError::Matching(e.to_string()))?;
        let (store, member, lock) = if config.cluster.enabled() {
            Self::join(&config).await?
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
            compat_key_typo: config.compat_key_typo,
            limits: Limits {
                body_bytes: config.body_limit,
                timeout: Duration::from_millis(config.request_timeout_ms),
                concurrent_requests: config.max_concurrent_requests,
            },
            admin_token: config
                .admin_token
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(Into::into),
            canon,
            member: member.clone(),
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
        Ok(App {
            listener,
            router,
            store,
            member,
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
    ) -> Result<(Store, Option<Arc<Member>>, Option<std::fs::File>), AppError> {
        if config.blocklist.is_some() {
            return Err(AppError::Member(
                "--blocklist is for a single node; a cluster's blocklist is changed with POST /blocklist on any member".into(),
            ));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StorageError::file(config.data_dir.clone(), e))?;
        crate::raft::seed_from_single_node(&config.data_dir, &config.cluster)
            .map_err(|e| AppError::Member(e.to_string()))?;
        let lock = crate::storage::lock_dir(&config.data_dir)?;
        let forward_timeout = Duration::from_millis(config.request_timeout_ms) * 2;
        let cluster = Member::start(
            &config.data_dir,
            &config.cluster,
            config.guards(),
            forward_timeout,
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
        tracing::info!(addr = %self.local_addr(), "listening");
        let service = self
            .router
            .into_make_service_with_connect_info::<SocketAddr>();
        if self.member.is_none() {
            axum::serve(self.listener, service)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(AppError::Serve)?;
        } else {
            // Members talk in small request-answer rounds (Raft's messages, forwarded
            // requests): without TCP_NODELAY an answer written in two parts waits for the
            // peer's delayed ACK, 40 ms a round.
            use axum::serve::ListenerExt;
            let listener = self.listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(AppError::Serve)?;
        }
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

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}
