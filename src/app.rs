//! Start-up (recover storage, bind, serve) and graceful shutdown (stop accepting, finish the
//! requests in flight, sync the log, write a snapshot).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::canon::Canon;
use crate::config::Config;
use crate::http::{router, AppState, Limits};
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
}

/// A recovered store bound to its address, ready to serve.
pub struct App {
    listener: TcpListener,
    router: Router,
    store: Store,
}

impl App {
    /// Recovers the data directory and binds the address (port 0 works, for tests).
    pub async fn build(config: Config) -> Result<App, AppError> {
        let storage = config.storage();
        let guards = config.guards();
        let modes = config.matching.modes().map_err(AppError::Matching)?;
        let unrecorded = crate::matching::check(&config.data_dir, &modes)
            .map_err(|e| AppError::Matching(e.to_string()))?;
        let (store, report) =
            tokio::task::spawn_blocking(move || Store::open_with(storage, guards))
                .await
                .expect("recovery does not panic")?;
        if unrecorded {
            // Only now, with the directory locked and opened, is it surely ours to mark.
            crate::matching::record(&config.data_dir, &modes)
                .map_err(|e| AppError::Matching(e.to_string()))?;
        }
        let canon =
            Canon::new(modes).with_fallback_counter(store.metrics().phone_e164_fallbacks.clone());
        if let Some(file) = &config.blocklist {
            let values = crate::blocklist::read(file, &canon).map_err(AppError::Blocklist)?;
            let added = crate::blocklist::apply(&store, &values)
                .await
                .map_err(|e| AppError::Blocklist(e.to_string()))?;
            tracing::info!(file = %file.display(), values = values.len(), added, "blocklist applied");
        }
        tracing::info!(matching = %canon.modes(), "matching modes");
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
        };
        Ok(App {
            listener,
            router: router(state),
            store,
        })
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
        axum::serve(self.listener, service)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(AppError::Serve)?;
        tracing::info!("requests drained; syncing the log and writing a snapshot");
        let store = self.store;
        tokio::task::spawn_blocking(move || store.close())
            .await
            .expect("close does not panic")?;
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
