//! Every integration test in one binary, so that `cargo test` compiles and links the crate once
//! for all of them. One module per area; `common`, `model` and `storage_support` are the shared
//! fixtures and builders.

// The shared modules offer more than any one area uses.
#[allow(dead_code)]
mod cluster_support;
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod model;
#[allow(dead_code)]
mod storage_support;

mod backup;
mod browser;
mod canon;
mod cluster;
mod console_api;
mod crash;
mod disk_full;
mod durability;
mod engine_model;
mod erasure;
mod first_hour;
mod golden;
mod golden_raft;
mod guards;
mod http_identify;
mod imports;
mod lifecycle;
mod operations;
mod orders;
mod smoke;
mod walkthrough;
