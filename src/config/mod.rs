//! Command-line options; each is also an environment variable `IDENTITY_ENGINE_<NAME>`.

pub mod addr;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::http::AnswerKey;
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
    /// Print a running server's change feed as NDJSON, one event a line, from after --after;
    /// with --follow, keep waiting for new events (resume later with the last seq printed).
    Changes {
        /// The server, such as http://127.0.0.1:3000.
        #[arg(long, env = "IDENTITY_ENGINE_URL")]
        url: String,
        /// A token with the read role (sent as Authorization: Bearer).
        #[arg(long, env = "IDENTITY_ENGINE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the events after this seq (default 0: from the oldest kept).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Keep following: wait for new events instead of stopping at the newest.
        #[arg(long)]
        follow: bool,
        /// With an https URL: trust this CA (a PEM file) instead of the system's roots.
        #[arg(long)]
        ca: Option<PathBuf>,
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
    /// The primary's key in answers: correct (`primaryContactId`), typo (only
    /// `primaryContatctId`, the task statement's spelling) or both. Default correct.
    #[arg(long, env = "IDENTITY_ENGINE_ANSWER_KEY", value_enum)]
    pub answer_key: Option<AnswerKey>,
    /// Also send `primaryContatctId` beside `primaryContactId`: the same as --answer-key both.
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
    /// An admin token named `admin` (`Authorization: Bearer <token>`); without any token
    /// (this or --tokens) every endpoint but the public ones answers loopback clients only.
    #[arg(long, env = "IDENTITY_ENGINE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file of tokens, one a line: `NAME ROLE SECRET`, ROLE one of client, read, operate,
    /// admin, SECRET the token itself or `sha256:HEX` of it; blank lines and `#` comments are
    /// skipped (docs/API.md, "Exposure").
    #[arg(long, env = "IDENTITY_ENGINE_TOKENS")]
    pub tokens: Option<PathBuf>,
    /// `/identify` wants a token too (of any role).
    #[arg(long, env = "IDENTITY_ENGINE_IDENTIFY_NEEDS_TOKEN", action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub identify_needs_token: bool,
    /// A connection that has not sent its first request's headers this many milliseconds after
    /// it was accepted (TLS handshake included) is closed.
    #[arg(long, env = "IDENTITY_ENGINE_HEADER_TIMEOUT_MS", default_value_t = crate::edge::DEFAULT_HEADER_TIMEOUT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// A kept-alive connection that has not sent the headers of its next request this many
    /// milliseconds after the last answer is closed.
    #[arg(long, env = "IDENTITY_ENGINE_IDLE_TIMEOUT_MS", default_value_t = crate::edge::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
        value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Connections open at once; past it, new ones wait in the kernel's backlog. Default: the
    /// open-file limit (raised to its hard limit at start-up) less the server's own files.
    #[arg(long, env = "IDENTITY_ENGINE_MAX_CONNECTIONS",
        value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Serve HTTPS only, with this certificate chain (PEM; the server's certificate first).
    /// SIGHUP reads it and --tls-key again.
    #[arg(long, env = "IDENTITY_ENGINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "IDENTITY_ENGINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
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
        value_parser = parse_duration)]
    pub erasure_purge_within: std::time::Duration,
    #[command(flatten)]
    pub matching: MatchArgs,
    #[command(flatten)]
    pub cluster: RaftArgs,
    /// How long the change feed's history is kept: `7d`, `12h`, `30m`, `0` (only the newest file).
    #[arg(long, env = "IDENTITY_ENGINE_CHANGES_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub changes_retention: Duration,
    /// The change feed's history is kept to about this many bytes at most.
    #[arg(long, env = "IDENTITY_ENGINE_CHANGES_RETENTION_BYTES", default_value_t = crate::feed::DEFAULT_RETENTION_BYTES)]
    pub changes_retention_bytes: u64,
    /// A change feed stream that has had nothing to send for this long sends a comment.
    #[arg(
        long,
        env = "IDENTITY_ENGINE_CHANGES_HEARTBEAT_MS",
        default_value_t = 15_000
    )]
    pub changes_heartbeat_ms: u64,
    /// Log line format.
    #[arg(long, env = "IDENTITY_ENGINE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log a line for every request (method, route, status, microseconds) at `info`; without
    /// it only answers of 500 and up are logged, at `warn` (docs/performance.md).
    #[arg(long, env = "IDENTITY_ENGINE_ACCESS_LOG", action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub access_log: bool,
    /// Test hook: storage faults to inject.
    #[arg(skip)]
    pub faults: Option<Arc<Faults>>,
}

/// Cluster mode (docs/cluster.md): without --peers the server is a single node.
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
    /// Mutual TLS between members (with --tls-cert and --tls-key): each member presents its
    /// certificate to the others, and Raft's messages are taken only from a member whose
    /// certificate this CA (PEM) signed.
    #[arg(long, env = "IDENTITY_ENGINE_PEER_CA", requires = "tls_cert")]
    pub peer_ca: Option<PathBuf>,
    /// How often the leader tells the others it leads, in milliseconds.
    #[arg(long, env = "IDENTITY_ENGINE_RAFT_HEARTBEAT_MS", default_value_t = 250)]
    pub raft_heartbeat_ms: u64,
    /// Election timeout, in milliseconds: a follower that hears nothing from the leader for
    /// the leader's lease (1.5 times this) and then a random time between this and 1.5 times
    /// this starts an election.
    #[arg(long, env = "IDENTITY_ENGINE_RAFT_ELECTION_MS", default_value_t = 750)]
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
    /// How the leader makes a read linearizable (docs/raft-reads.md): `lease` answers at once
    /// while a majority's acknowledgement of its leadership is younger than the election
    /// timeout, and confirms with a heartbeat round otherwise; `index` confirms with a
    /// heartbeat round for every batch of reads, trusting no clock. `?stale=true` skips both.
    #[arg(long, env = "IDENTITY_ENGINE_RAFT_READS", value_enum, default_value_t = RaftReads::Lease)]
    pub raft_reads: RaftReads,
}

/// See [`RaftArgs::raft_reads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RaftReads {
    Lease,
    Index,
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

    /// The answer key from --answer-key and the older --compat-key-typo (which means `both`), or
    /// why the two disagree.
    pub fn answer_key(&self) -> Result<AnswerKey, String> {
        match (self.answer_key, self.compat_key_typo) {
            (None, false) => Ok(AnswerKey::default()),
            (Some(key), false) => Ok(key),
            (None | Some(AnswerKey::Both), true) => Ok(AnswerKey::Both),
            (Some(key), true) => Err(format!(
                "--compat-key-typo (IDENTITY_ENGINE_COMPAT_KEY_TYPO) means --answer-key both, but \
                 --answer-key {key} (IDENTITY_ENGINE_ANSWER_KEY) was given too: keep one of them"
            )),
        }
    }

    pub fn storage(&self) -> StorageOptions {
        StorageOptions {
            dir: self.data_dir.clone(),
            fsync: self.fsync,
            snapshot_every_bytes: self.snapshot_every_bytes,
            snapshot_log_percent: self.snapshot_log_percent,
            faults: self.faults.clone(),
            changes_retention: self.changes_retention,
            changes_retention_bytes: self.changes_retention_bytes,
            ..StorageOptions::new(&self.data_dir)
        }
    }
}

/// A duration as people write one: `7d`, `24h`, `30m`, `90s`, `1h30m`, or `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration such as 7d, 24h, 30m or 0: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_zero_or_numbers_with_units() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("24h"), Ok(h(24)));
        assert_eq!(parse_duration("7d"), Ok(h(168)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "h", "24", "-1h", "24x", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let config = Cli::try_parse_from(["identity-engine"]).unwrap().serve;
        assert_eq!(config.addr.to_string(), "127.0.0.1:3000");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.fsync, FsyncPolicy::Always);
        assert_eq!(config.answer_key(), Ok(AnswerKey::Correct));
        assert_eq!(config.body_limit, 16 * 1024);
        assert!(!config.access_log, "the access log is opt-in");
    }

    #[test]
    fn the_access_log_is_turned_on_by_its_flag() {
        let cli = Cli::try_parse_from(["identity-engine", "--access-log"]).unwrap();
        assert!(cli.serve.access_log);
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
    fn the_answer_key_is_chosen_once_and_the_old_flag_means_both() {
        let key = |args: &[&str]| {
            let cli = Cli::try_parse_from(["identity-engine"].iter().chain(args)).unwrap();
            cli.serve.answer_key()
        };
        assert_eq!(key(&["--answer-key", "typo"]), Ok(AnswerKey::Typo));
        assert_eq!(key(&["--answer-key", "both"]), Ok(AnswerKey::Both));
        assert_eq!(key(&["--answer-key", "correct"]), Ok(AnswerKey::Correct));
        assert_eq!(key(&["--compat-key-typo"]), Ok(AnswerKey::Both));
        assert_eq!(
            key(&["--compat-key-typo", "--answer-key", "both"]),
            Ok(AnswerKey::Both)
        );
        for other in ["typo", "correct"] {
            let error = key(&["--compat-key-typo", "--answer-key", other]).unwrap_err();
            assert!(error.contains(&format!("--answer-key {other}")), "{error}");
        }
        assert!(Cli::try_parse_from(["identity-engine", "--answer-key", "primary"]).is_err());
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
