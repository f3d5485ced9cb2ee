//! Every integration test in one binary, so that `cargo test` compiles and links the crate once
//! for all of them. One module per area; `common`, `model` and `storage_support` are the shared
//! fixtures and builders; `process_support` runs a server as a process of its own and
//! `tls_support` makes certificates and speaks HTTPS.

// The shared modules offer more than any one area uses.
#[allow(dead_code)]
mod cluster_support;
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod model;
#[allow(dead_code)]
mod process_support;
#[allow(dead_code)]
mod storage_support;
#[allow(dead_code)]
mod tls_support;

mod answer_key;
mod backup;
mod browser;
mod canon;
mod changes;
mod cluster;
mod console_api;
mod container;
mod crash;
mod disk_full;
mod durability;
mod edits;
mod engine_model;
mod erasure;
mod exposure;
mod feed_rebuild;
mod file_modes;
mod first_hour;
mod golden;
mod golden_raft;
mod guards;
mod http_identify;
mod imports;
mod layout;
mod lifecycle;
mod malformed;
mod member_auth;
mod notify;
mod operations;
mod orders;
mod roles;
mod smoke;
mod tls;
mod walkthrough;
