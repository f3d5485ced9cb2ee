//! identity-engine: links contacts that share an email or a phone number into one identity whose
//! primary is the oldest contact, and serves `POST /identify` over HTTP.
//!
//! - [`engine`]: pure and synchronous; rows, indexes, the disjoint-set forest, `plan` and `apply`.
//! - [`store`]: the shared handle: one lock around the engine, the log behind it.
#![forbid(unsafe_code)]

pub mod addr;
pub mod app;
pub mod backup;
pub mod blocklist;
pub mod canon;
pub mod check;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod export;
pub mod http;
pub mod import;
pub mod logging;
pub mod matching;
pub mod metrics;
pub mod orders;
pub mod rekey;
pub mod storage;
pub mod store;
