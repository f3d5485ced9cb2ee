//! identity-engine: links contacts that share an email or a phone number into one identity whose
//! primary is the oldest contact, and serves `POST /identify` over HTTP.
//!
//! - [`engine`]: pure and synchronous; rows, indexes, the disjoint-set forest, `plan` and `apply`.
//! - [`store`]: the shared handle: one lock around the engine, a durability back-end behind it.
//! - [`erasure`]: when erased values leave a single node's files (the purge's schedule).
//! - [`storage`]: the local back-end: the write-ahead log, snapshots, recovery, on-disk formats.
//! - [`raft`]: the replicated back-end (openraft): its log, state machine and network.
//! - [`feed`]: the change feed: every change's events, kept in files, paged and waited for.
//! - [`http`]: the axum router, handlers, errors and the console.
//! - [`matching`]: the keys identifiers are matched by, and the directory's record of them.
//! - [`tools`]: the offline commands (import, export, rekey, check, backup and restore).
//! - [`telemetry`]: log lines and metrics.
//! - [`config`]: options and listen addresses; [`app`]: start-up, serving, shutdown.
//! - [`edge`]: the accept loop, its timeouts and connection limit, TLS.
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod edge;
pub mod engine;
pub mod erasure;
pub mod feed;
pub mod http;
pub mod matching;
pub mod raft;
pub mod storage;
pub mod store;
pub mod telemetry;
pub mod tools;
