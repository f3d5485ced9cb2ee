//! The offline commands over a data directory no server is using (import, orders, rekey,
//! export, check and repair, erase), and the backup container and restore.

pub mod backup;
pub mod blocklist;
pub mod check;
pub mod erase;
pub mod export;
pub mod import;
pub mod orders;
pub mod rekey;
