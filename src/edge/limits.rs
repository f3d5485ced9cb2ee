//! The open-file limit and the connection limit it allows (docs/API.md, "Exposure").

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Descriptors kept for the server's own use, whatever the connections take: the log and its
/// segments, snapshots being written and read, a backup's staging files, an import's file, the
/// listener, the runtime's own (epoll, eventfd), standard streams, and the files a Raft member
/// keeps (its log, snapshots, the connections to its peers).
pub const RESERVED_FILES: u64 = 256;

/// The most a soft limit is raised to when the hard limit is "unlimited" (Linux refuses more
/// than `fs.nr_open`, whose default is 1,048,576).
const UNLIMITED_CAP: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard one and returns the soft limit now in force.
/// A refusal leaves the limit as it was (and says so).
pub fn raise_open_files() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(UNLIMITED_CAP);
    let soft = limit.current.unwrap_or(UNLIMITED_CAP);
    if soft >= hard {
        return soft;
    }
    let raised = Rlimit {
        current: Some(hard),
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => hard,
        Err(error) => {
            tracing::warn!(%error, soft, hard, "could not raise the open-file limit to its hard limit");
            soft
        }
    }
}

/// The default `--max-connections`: what `open_files` leaves after the server's own files
/// and, on a cluster member, one connection per concurrent request (a follower may forward
/// each to the leader over a connection of its own).
pub fn default_max_connections(open_files: u64, forwarding: usize) -> u64 {
    open_files
        .saturating_sub(RESERVED_FILES)
        .saturating_sub(forwarding as u64)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_the_servers_own_files() {
        assert_eq!(default_max_connections(20_000, 0), 20_000 - RESERVED_FILES);
        assert_eq!(
            default_max_connections(20_000, 1024),
            20_000 - RESERVED_FILES - 1024
        );
        assert_eq!(default_max_connections(100, 0), 1, "never zero");
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let soft = raise_open_files();
        let now = getrlimit(Resource::Nofile);
        assert_eq!(
            now.current.unwrap_or(UNLIMITED_CAP),
            soft,
            "what is in force"
        );
        if now.maximum.is_some() {
            assert_eq!(now.current, now.maximum, "raised to the hard limit");
        }
    }
}
