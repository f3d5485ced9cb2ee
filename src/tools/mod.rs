//! The offline commands over a data directory no server is using (import, orders, rekey,
//! export, check and repair, erase), the backup container and restore, and a follower of a
//! running server's change feed.

pub mod backup;
pub mod blocklist;
pub mod changes;
pub mod check;
pub mod erase;
pub mod export;
pub mod import;
pub mod orders;
pub mod rekey;
