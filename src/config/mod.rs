//! Command-line options; each is also an environment variable `IDENTITY_ENGINE_<NAME>`.

pub mod addr;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::matching::canon::{EmailMatch, Modes, PhoneMatch};
use crate::storage::{Faults, FsyncPolicy, StorageOptions};

#[derive(Parser, Debug)]
#[command(
    name = "identity-engine",
    version,
    about = "Identity reconciliation over HTTP",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: Config,
}

// Parsed once; a box would only add noise to every match.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Start the server (what running with no subcommand does).
    Serve(Config),
    /// Verify every file of a data directory (or, given FILE, a backup) and print what it
    /// holds; change nothing.
    Check {
        #[arg(long, env = "IDENTITY_ENGINE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// A backup file to verify instead of the data directory.
        file: Option<PathBuf>,
        /// Cut the log at the first damaged record, after saying what that loses.
        #[arg(long)]
        repair: bool,
        /// With --repair: go ahead without asking (needed when standard input is a terminal).
        #[arg(long)]
        yes: bool,
    },
    /// Build a new data directory from a backup file (from GET /backup); refuses a non-empty one.
    Restore {
        #[arg(long, env = "IDENTITY_ENGINE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The backup file.
        file: PathBuf,
        /// The erasure ledger saved from GET /erasures: every erasure in it is applied again
        /// (by contact id) and the files purged before the directory can be served.
        #[arg(long)]
        erasures: Option<PathBuf>,
    },
    /// Erase a contact, or every contact holding a value, in a stopped data directory, and
    /// purge its files of the erased values before exiting.
    #[command(group(clap::ArgGroup::new("target").required(true).args(["contact_id", "email", "phone"])))]
    Erase {
        #[arg(long, env = "IDENTITY_ENGINE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The contact to erase (live or deleted).
        #[arg(long)]
        contact_id: Option<u32>,
        /// Erase every contact holding this email (keyed by the directory's matching modes).
        #[arg(long)]
        email: Option<String>,
        /// Erase every contact holding this phone number.
        #[arg(long)]
        phone: Option<String>,
    },
    /// Write every row (deleted ones too) in id order as CSV or NDJSON.
    Export {
        #[arg(long, env = "IDENTITY_ENGINE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = crate::tools::export::Format::Csv)]
        format: crate::tools::export::Format,
        /// File to write; standard output when absent.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Add the rows of a CSV or NDJSON file (the Contact table's columns, or with --format
    /// orders a shop's orders) to a data directory.
    Import {
        #[arg(long, env = "IDENTITY_ENGINE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// The file to read.
        file: PathBuf,
        /// csv or ndjson (Contact rows; guessed from the extension and the first byte when
        /// absent), or orders: rows of email, phoneNumber and an optional timestamp, run as
        /// /identify requests in timestamp order.
        #[arg(long, value_enum)]
        format: Option<crate::tools::orders::ImportFormat>,
        /// Import the valid rows and report the invalid ones, instead of importing nothing.
        #[arg(long)]
        skip_invalid: bool,
        /// A value held by more live contacts than this is blocked as generic (0: never).
        #[arg(long, env = "IDENTITY_ENGINE_GENERIC_THRESHOLD", default_value_t = crate::engine::Limits::DEFAULT_GENERIC_THRESHOLD)]
        generic_threshold: u32,
        /// An import that would leave a cluster of more live contacts than this is refused
        /// whole (0: no cap).
        #[arg(long, env = "IDENTITY_ENGINE_MAX_CLUSTER_SIZE", default_value_t = crate::engine::Limits::DEFAULT_MAX_CLUSTER_SIZE)]
        max_cluster_size: u32,
        /// Values to block before the rows are added, one a line: `email:VALUE` or `phone:VALUE`.
        #[arg(long, env = "IDENTITY_ENGINE_BLOCKLIST")]
        blocklist: Option<PathBuf>,
    },
    /// Recompute every live contact's matching keys with new modes (offline), merge the
    /// clusters that now share a key (under the over-merge guards), and record the modes.
    Rekey {
        #[arg(long, env = "IDENTITY_ENGINE_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        #[command(flatten)]
        matching: MatchArgs,
        /// A value held by more live contacts than this is blocked as generic (0: never).
        #[arg(long, env = "IDENTITY_ENGINE_GENERIC_THRESHOLD", default_value_t = crate::engine::Limits::DEFAULT_GENERIC_THRESHOLD)]
        generic_threshold: u32,
        /// No merge may leave a cluster of more live contacts than this (0: no cap).
        #[arg(long, env = "IDENTITY_ENGINE_MAX_CLUSTER_SIZE", default_value_t = crate::engine::Limits::DEFAULT_MAX_CLUSTER_SIZE)]
        max_cluster_size: u32,
    },
}

/// How identifiers are matched; a data directory records the modes it was built with.
#[derive(Args, Debug, Clone, Default)]
pub struct MatchArgs {
    /// as-given: the trimmed string; digits: a leading + and the digits; e164: E.164 by
    /// libphonenumber's rules (numbers it does not take as valid: digits).
    #[arg(long, env = "IDENTITY_ENGINE_PHONE_MATCH", value_enum, default_value_t = PhoneMatch::AsGiven)]
    pub phone_match: PhoneMatch,
    /// as-given: trimmed and lowercased; provider: also the rules providers document for their
    /// own domains (Gmail's dots and +tags, googlemail.com, Outlook.com's +tags, ...).
    #[arg(long, env = "IDENTITY_ENGINE_EMAIL_MATCH", value_enum, default_value_t = EmailMatch::AsGiven)]
    pub email_match: EmailMatch,
    /// With --phone-match e164: the region (ISO 3166 code, e.g. US) of numbers written
    /// without +; without it, such numbers are matched as digits.
    #[arg(long, env = "IDENTITY_ENGINE_DEFAULT_REGION")]
    pub default_region: Option<String>,
}

impl MatchArgs {
    /// The modes, or why the region is not one libphonenumber knows.
    pub fn modes(&self) -> Result<Modes, String> {
        Modes::new(
            self.phone_match,
            self.email_match,
            self.default_region.as_deref(),
        )
    }
}

/// The server's settings, with the contract's defaults (docs/API.md).
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address to listen on: host:port (a name works), :port (every interface) or a port
    /// (loopback); port 0 picks a free one. Default 127.0.0.1:3000, or 0.0.0.0:$PORT when PORT
    /// is set.
    #[arg(long, env = "IDENTITY_ENGINE_ADDR", value_parser = crate::config::addr::parse_addr,
        default_value_t = crate::config::addr::default_addr())]
    pub addr: SocketAddr,
    /// Directory for the log and snapshots; one server per directory.
    #[arg(long, env = "IDENTITY_ENGINE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// always: answer after fsync; interval: fsync about once a second; never: leave it to the OS.
    #[arg(long, env = "IDENTITY_ENGINE_FSYNC", value_enum, default_value_t = FsyncPolicy::Always)]
    pub fsync: FsyncPolicy,
    /// Also send the key `primaryContatctId` (the task statement's spelling) in answers.
    #[arg(long, env = "IDENTITY_ENGINE_COMPAT_KEY_TYPO", action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub compat_key_typo: bool,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "IDENTITY_ENGINE_BODY_LIMIT", default_value_t = crate::http::DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Answer 503 `timeout` to a request still running after this many milliseconds.
    #[arg(long, env = "IDENTITY_ENGINE_REQUEST_TIMEOUT_MS", default_value_t = crate::http::DEFAULT_TIMEOUT.as_millis() as u64)]
    pub request_timeout_ms: u64,
    /// Requests served at once; more get 503 `overloaded` immediately.
    #[arg(long, env = "IDENTITY_ENGINE_MAX_CONCURRENT_REQUESTS", default_value_t = crate::http::DEFAULT_CONCURRENT_REQUESTS)]
    pub max_concurrent_requests: usize,
    /// Seal the log segment after this many bytes; the least log between two snapshots.
    #[arg(long, env = "IDENTITY_ENGINE_SNAPSHOT_EVERY_BYTES", default_value_t = 64 << 20)]
    pub snapshot_every_bytes: u64,
    /// Take a snapshot once the log since the last one is at least this percentage of that
    /// snapshot's size (and at least --snapshot-every-bytes); 0 snapshots at every sealed segment.
    #[arg(long, env = "IDENTITY_ENGINE_SNAPSHOT_LOG_PERCENT", default_value_t = crate::storage::DEFAULT_SNAPSHOT_LOG_PERCENT)]
    pub snapshot_log_percent: u64,
    /// Token for admin endpoints (`Authorization: Bearer <token>`); without one they answer
    /// loopback clients only.
    #[arg(long, env = "IDENTITY_ENGINE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A value held by more live contacts than this is blocked as generic (0: never).
    #[arg(long, env = "IDENTITY_ENGINE_GENERIC_THRESHOLD", default_value_t = crate::engine::Limits::DEFAULT_GENERIC_THRESHOLD)]
    pub generic_threshold: u32,
    /// No change may leave a cluster of more live contacts than this (0: no cap).
    #[arg(long, env = "IDENTITY_ENGINE_MAX_CLUSTER_SIZE", default_value_t = crate::engine::Limits::DEFAULT_MAX_CLUSTER_SIZE)]
    pub max_cluster_size: u32,
    /// A file of values to block at start-up, one a line: `email:VALUE` or `phone:VALUE`.
    #[arg(long, env = "IDENTITY_ENGINE_BLOCKLIST")]
    pub blocklist: Option<PathBuf>,
    /// How long an erased value may stay in the files (log, snapshots, staging, every member's
    /// Raft log and snapshots) after its erasure: 0 (before the answer), or 30m, 24h, 7d, ...
    #[arg(long, env = "IDENTITY_ENGINE_ERASURE_PURGE_WITHIN", default_value = "24h",
        value_parser = crate::erasure::parse_within)]
    pub erasure_purge_within: std::time::Duration,
    #[command(flatten)]
    pub matching: MatchArgs,
    #[command(flatten)]
    pub cluster: RaftArgs,
    /// Log line format.
    #[arg(long, env = "IDENTITY_ENGINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Test hook: storage faults to inject.
    #[arg(skip)]
    pub faults: Option<Arc<Faults>>,
}

/// Cluster mode (README "Running a cluster"): without --peers the server is a single node.
#[derive(Args, Debug, Clone)]
pub struct RaftArgs {
    /// This member's id in the cluster (a positive number, unique in it).
    #[arg(long, env = "IDENTITY_ENGINE_NODE_ID", requires = "peers")]
    pub node_id: Option<u64>,
    /// Every voting member's HTTP address, this one's included: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT`.
    /// Used to form the cluster the first time; afterwards the membership is the cluster's.
    #[arg(long, env = "IDENTITY_ENGINE_PEERS", requires = "node_id")]
    pub peers: Option<String>,
    /// A secret every member shares: Raft's messages without it are refused.
    #[arg(long, env = "IDENTITY_ENGINE_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,
    /// How often the leader tells the others it leads, in milliseconds.
    #[arg(long, env = "IDENTITY_ENGINE_RAFT_HEARTBEAT_MS", default_value_t = 250)]
    pub raft_heartbeat_ms: u64,
    /// Election timeout, in milliseconds: a follower that hears nothing from the leader for
    /// the leader's lease (1.5 times this) and then a random time between this and 1.5 times
    /// this starts an election.
    #[arg(long, env = "IDENTITY_ENGINE_RAFT_ELECTION_MS", default_value_t = 1000)]
    pub raft_election_ms: u64,
    /// A member snapshots its state after this many log entries since its last snapshot.
    #[arg(
        long,
        env = "IDENTITY_ENGINE_RAFT_SNAPSHOT_ENTRIES",
        default_value_t = 100_000
    )]
    pub raft_snapshot_entries: u64,
    /// Log entries kept behind a snapshot, so that a member a little behind catches up from
    /// the log; one further behind is sent the snapshot.
    #[arg(
        long,
        env = "IDENTITY_ENGINE_RAFT_KEEP_ENTRIES",
        default_value_t = 1000
    )]
    pub raft_keep_entries: u64,
}

impl RaftArgs {
    pub(crate) fn enabled(&self) -> bool {
        self.peers.is_some()
    }

    /// This member's id and every peer's address, checked.
    pub fn membership(&self) -> Result<(u64, std::collections::BTreeMap<u64, String>), String> {
        let (Some(id), Some(list)) = (self.node_id, &self.peers) else {
            return Err("cluster mode needs both --node-id and --peers".into());
        };
        let mut peers = std::collections::BTreeMap::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (peer, addr) = item
                .split_once('=')
                .ok_or_else(|| format!("--peers: {item:?} is not ID=HOST:PORT"))?;
            let peer: u64 = peer
                .trim()
                .parse()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("--peers: {peer:?} is not a positive node id"))?;
            let addr = addr.trim();
            let port = addr.rsplit_once(':').and_then(|(host, port)| {
                (!host.is_empty()).then_some(())?;
                port.parse::<u16>().ok().filter(|&p| p > 0)
            });
            if port.is_none() {
                return Err(format!("--peers: {addr:?} is not HOST:PORT"));
            }
            if peers.insert(peer, addr.to_owned()).is_some() {
                return Err(format!("--peers: node {peer} is listed twice"));
            }
        }
        if id == 0 {
            return Err("--node-id must be a positive number".into());
        }
        if !peers.contains_key(&id) {
            return Err(format!(
                "--peers must list this member too (node {id}, with the address the others reach it at)"
            ));
        }
        Ok((id, peers))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Config {
    /// Defaults for a server on `addr` with its data in `data_dir`.
    pub fn new(addr: SocketAddr, data_dir: impl Into<PathBuf>) -> Config {
        let mut config = Cli::parse_from(["identity-engine"]).serve;
        config.addr = addr;
        config.data_dir = data_dir.into();
        config
    }

    /// The over-merge guards' settings.
    pub fn guards(&self) -> crate::engine::Limits {
        crate::engine::Limits {
            generic_threshold: self.generic_threshold,
            max_cluster_size: self.max_cluster_size,
        }
    }

    pub fn storage(&self) -> StorageOptions {
        StorageOptions {
            dir: self.data_dir.clone(),
            fsync: self.fsync,
            snapshot_every_bytes: self.snapshot_every_bytes,
            snapshot_log_percent: self.snapshot_log_percent,
            faults: self.faults.clone(),
            observer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_spec() {
        let config = Cli::try_parse_from(["identity-engine"]).unwrap().serve;
        assert_eq!(config.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.fsync, FsyncPolicy::Always);
        assert!(!config.compat_key_typo);
        assert_eq!(config.body_limit, 16 * 1024);
    }

    #[test]
    fn options_parse_and_unknown_ones_are_refused() {
        let cli = Cli::try_parse_from([
            "identity-engine",
            "--fsync",
            "interval",
            "--compat-key-typo",
            "--addr",
            "0.0.0.0:0",
        ])
        .unwrap();
        assert_eq!(
            (cli.serve.fsync, cli.serve.compat_key_typo),
            (FsyncPolicy::Interval, true)
        );
        assert!(Cli::try_parse_from(["identity-engine", "--bogus"]).is_err());
        assert!(Cli::try_parse_from(["identity-engine", "--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn subcommands_take_their_own_options() {
        let cli = Cli::try_parse_from(["identity-engine", "check", "--data-dir", "d", "--repair"])
            .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Check { repair: true, .. })
        ));
        let erase = |args: &[&str]| {
            Cli::try_parse_from([&["identity-engine", "erase"], args].concat()).map(|c| c.command)
        };
        assert!(matches!(
            erase(&["--email", "a@b.c"]),
            Ok(Some(Command::Erase {
                email: Some(_),
                contact_id: None,
                phone: None,
                ..
            }))
        ));
        assert!(erase(&[]).is_err(), "one of the three is needed");
        assert!(
            erase(&["--contact-id", "3", "--phone", "5"]).is_err(),
            "only one"
        );
        let restore = ["identity-engine", "restore", "f", "--erasures", "l.json"];
        assert!(matches!(
            Cli::try_parse_from(restore).unwrap().command,
            Some(Command::Restore {
                erasures: Some(_),
                ..
            })
        ));
        let within = ["identity-engine", "--erasure-purge-within", "30m"];
        let config = Cli::try_parse_from(within).unwrap().serve;
        assert_eq!(config.erasure_purge_within.as_secs(), 1800);
        assert!(
            Cli::try_parse_from(["identity-engine", "--erasure-purge-within", "soon"]).is_err()
        );
        let cli =
            Cli::try_parse_from(["identity-engine", "import", "f.csv", "--skip-invalid"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Import {
                skip_invalid: true,
                ..
            })
        ));
    }
}
