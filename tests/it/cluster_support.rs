//! Test support for cluster mode: real `identity-engine` node processes on 127.0.0.1 (started,
//! killed with SIGKILL, paused with SIGSTOP, restarted with the same options), an HTTP client
//! whose failures are answers rather than panics (a dead or paused node is part of the test),
//! and waits with deadlines for a leader and for members to converge.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Response;
use crate::tls_support::Ca;

pub type NodeId = u64;

/// Cluster tests run one at a time: each starts three or four debug processes with sub-second
/// election timeouts, and two clusters sharing two cores would call elections of their own.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// How long a client waits for one answer unless told otherwise.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Options every node of a cluster is started with, besides the fast test timeouts.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub token: Option<String>,
    /// HTTPS, each node with a certificate this CA signs for it (`--tls-cert`, `--tls-key`).
    pub tls: Option<Arc<Ca>>,
    /// With `tls`: mutual TLS between the members (`--peer-ca` the CA's certificate).
    pub peer_ca: bool,
    /// With `tls`: this node's certificate and peer CA are another CA's.
    pub stranger: Option<(NodeId, Arc<Ca>)>,
    /// `--raft-snapshot-entries`.
    pub snapshot_entries: Option<u64>,
    /// `--raft-keep-entries`.
    pub keep_entries: Option<u64>,
    /// More options, as given on the command line.
    pub extra: Vec<String>,
}

impl Options {
    /// The CA that signs node `id`'s certificate (and that it trusts), with TLS.
    fn ca_of(&self, id: NodeId) -> Option<&Arc<Ca>> {
        match &self.stranger {
            Some((stranger, ca)) if *stranger == id => Some(ca),
            _ => self.tls.as_ref(),
        }
    }
}

/// One node process and what it takes to start it again the same way.
pub struct Node {
    pub id: NodeId,
    pub addr: SocketAddr,
    dir: PathBuf,
    log: PathBuf,
    peers: String,
    /// Behind a lock so that a wait can notice, through `&self`, a node that exited.
    child: Mutex<Option<Child>>,
    /// The client side of HTTPS when the cluster runs with TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Node {
    pub fn get(&self, path: &str) -> Result<Response, String> {
        self.call("GET", path, "", CLIENT_TIMEOUT)
    }

    /// The node's data directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn post(&self, path: &str, body: &str) -> Result<Response, String> {
        self.call("POST", path, body, CLIENT_TIMEOUT)
    }

    pub fn delete(&self, path: &str) -> Result<Response, String> {
        self.call("DELETE", path, "", CLIENT_TIMEOUT)
    }

    /// One request over HTTP, or HTTPS when the cluster has TLS.
    fn call(
        &self,
        method: &str,
        path: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Response, String> {
        match &self.tls {
            None => call(self.addr, method, path, body, &[], timeout),
            Some(tls) => {
                let request = (method, path, body.as_bytes(), &[][..]);
                crate::tls_support::https_within(self.addr, tls, request, timeout)
                    .map_err(|e| format!("{method} {path} on {}: {e}", self.addr))
            }
        }
    }

    /// `GET /cluster` as JSON, or why there is none.
    pub fn status(&self) -> Result<Value, String> {
        let response = self.call("GET", "/cluster", "", Duration::from_secs(3))?;
        match response.status {
            200 => {
                serde_json::from_str(&response.text).map_err(|e| format!("{e}: {}", response.text))
            }
            status => Err(format!("GET /cluster answered {status}: {}", response.text)),
        }
    }

    /// This member's own rows (`?stale=true`), as NDJSON.
    pub fn export(&self) -> Result<String, String> {
        let response = self.get("/contacts/export?format=ndjson&stale=true")?;
        match response.status {
            200 => Ok(response.text),
            status => Err(format!("stale export answered {status}: {}", response.text)),
        }
    }

    /// The value of a metric without labels (or the first of its label sets) on `GET /metrics`.
    pub fn metric(&self, name: &str) -> Result<Option<f64>, String> {
        let response = self.get("/metrics")?;
        if response.status != 200 {
            return Err(format!("GET /metrics answered {}", response.status));
        }
        Ok(metric_value(&response.text, name))
    }

    /// The process, if it runs (paused or not).
    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_running(&self) -> bool {
        self.child().is_some()
    }

    /// Why the process ended, if it ended by itself.
    fn exit_status(&self) -> Option<std::process::ExitStatus> {
        self.child()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

/// The value of `name` in Prometheus text: its first sample, labelled or not.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A cluster of node processes in one temporary directory; every process is killed on drop,
/// and on a panic the tail of each node's log is printed first.
pub struct Cluster {
    nodes: Vec<Node>,
    options: Options,
    tmp: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts nodes 1..=size, each listing all of them as peers.
    pub fn start(size: NodeId, options: Options) -> Cluster {
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Every port is chosen before any node starts: each must know all the others.
        let addrs: Vec<SocketAddr> = (0..size).map(|_| free_addr()).collect();
        let peers = peer_list(addrs.iter().enumerate().map(|(i, a)| (i as NodeId + 1, *a)));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            options,
            tmp: tempfile::tempdir().expect("temp dir"),
            _turn: turn,
        };
        for (i, addr) in addrs.into_iter().enumerate() {
            cluster.add_process(i as NodeId + 1, addr, peers.clone());
        }
        cluster
    }

    /// Starts node 1 alone (`--peers` naming only itself) over a data directory `prepare`
    /// fills first: a single node's data becoming a cluster's first member.
    pub fn start_seeded(prepare: impl FnOnce(&std::path::Path)) -> Cluster {
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut cluster = Cluster {
            nodes: Vec::new(),
            options: Options::default(),
            tmp: tempfile::tempdir().expect("temp dir"),
            _turn: turn,
        };
        prepare(&cluster.tmp.path().join("node-1"));
        let addr = free_addr();
        cluster.add_process(1, addr, peer_list([(1, addr)].into_iter()));
        cluster
    }

    /// Starts node `id` as a new process that lists every node started so far and itself as
    /// peers; `POST /cluster/members` is the caller's business.
    pub fn start_new_node(&mut self, id: NodeId) -> SocketAddr {
        let addr = free_addr();
        let known = self.nodes.iter().map(|n| (n.id, n.addr));
        let peers = peer_list(known.chain([(id, addr)]));
        self.add_process(id, addr, peers);
        addr
    }

    fn add_process(&mut self, id: NodeId, addr: SocketAddr, peers: String) {
        let dir = self.tmp.path().join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).expect("node dir");
        let log = self.tmp.path().join(format!("node-{id}.log"));
        let tls = self.options.ca_of(id).map(|ca| ca.client());
        self.nodes.push(Node {
            id,
            addr,
            dir,
            log,
            peers,
            child: Mutex::new(None),
            tls,
        });
        self.spawn(id);
    }

    fn spawn(&mut self, id: NodeId) {
        let options = self.options.clone();
        let node = self.node_mut(id);
        assert!(!node.is_running(), "node {id} is already running");
        let mut args = vec![
            "--data-dir".to_owned(),
            node.dir.display().to_string(),
            "--addr".to_owned(),
            node.addr.to_string(),
            "--node-id".to_owned(),
            id.to_string(),
            "--peers".to_owned(),
            node.peers.clone(),
            "--raft-heartbeat-ms".to_owned(),
            "100".to_owned(),
            "--raft-election-ms".to_owned(),
            "800".to_owned(),
        ];
        if let Some(ca) = options.ca_of(id) {
            let issued = ca.issue(&format!("node-{id}"));
            args.extend([
                "--tls-cert".to_owned(),
                issued.cert.display().to_string(),
                "--tls-key".to_owned(),
                issued.key.display().to_string(),
            ]);
            if options.peer_ca {
                args.extend(["--peer-ca".to_owned(), ca.ca_file().display().to_string()]);
            }
        }
        let optional = [
            ("--cluster-token", options.token),
            (
                "--raft-snapshot-entries",
                options.snapshot_entries.map(|n| n.to_string()),
            ),
            (
                "--raft-keep-entries",
                options.keep_entries.map(|n| n.to_string()),
            ),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                args.extend([flag.to_owned(), value]);
            }
        }
        args.extend(options.extra.iter().cloned());
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("node log");
        let mut banner = log.try_clone().expect("node log");
        let _ = writeln!(banner, "=== started: identity-engine {}", args.join(" "));
        let child = Command::new(env!("CARGO_BIN_EXE_identity-engine"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("node log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
        *node.child() = Some(child);
    }

    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    /// The ids of the nodes whose processes run (paused ones included).
    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// Every node's address, running or not, in id order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// `kill -9`, then reaps the process.
    pub fn kill(&mut self, id: NodeId) {
        let mut child = self.node(id).child().take();
        let child = child
            .as_mut()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        signal(child.id(), "-KILL");
        let _ = child.wait();
    }

    /// Starts a killed node again with the options it had.
    pub fn restart(&mut self, id: NodeId) {
        self.spawn(id);
    }

    /// SIGSTOP: the process holds its sockets but answers nothing.
    pub fn pause(&self, id: NodeId) {
        signal(self.pid(id), "-STOP");
    }

    pub fn resume(&self, id: NodeId) {
        signal(self.pid(id), "-CONT");
    }

    fn pid(&self, id: NodeId) -> u32 {
        let child = self.node(id).child();
        let child = child.as_ref();
        child
            .unwrap_or_else(|| panic!("node {id} is not running"))
            .id()
    }

    /// Fails at once, rather than at a deadline, when one of `among` exited by itself.
    fn assert_none_exited(&self, among: &[NodeId]) {
        for &id in among {
            if let Some(status) = self.node(id).exit_status() {
                panic!("node {id} exited by itself ({status}); its log is below");
            }
        }
    }

    /// Waits until every one of `among` answers `GET /cluster` naming the same leader, that
    /// leader is one of them and the only one calling itself leader; returns it.
    pub fn wait_for_leader(&self, among: &[NodeId], within: Duration) -> NodeId {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<(NodeId, Result<Value, String>)> = among
                .iter()
                .map(|&id| (id, self.node(id).status()))
                .collect();
            self.assert_none_exited(among);
            if let Some(leader) = agreed_leader(&seen) {
                return leader;
            }
            if Instant::now() > deadline {
                panic!(
                    "no leader agreed on by nodes {among:?} within {within:?}; last seen:\n{}",
                    describe(&seen)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every one of `among` has applied the same index and their own exports
    /// (`?stale=true`) were read while it did not move; returns the export, which must then be
    /// the same on every member (anything else is divergence, reported at once).
    pub fn converged_export(&self, among: &[NodeId], within: Duration) -> String {
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.assert_none_exited(among);
            match self.settled_exports(among) {
                Ok(Some(exports)) => return same_export(&exports),
                Ok(None) => last = "applied indexes still differ or moved".to_owned(),
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(100));
        }
        let seen: Vec<_> = among
            .iter()
            .map(|&id| (id, self.node(id).status()))
            .collect();
        panic!(
            "nodes {among:?} did not converge within {within:?} ({last}); last seen:\n{}",
            describe(&seen)
        );
    }

    /// Each member's export if their applied indexes were equal before and after reading them.
    fn settled_exports(&self, among: &[NodeId]) -> Result<Option<Vec<(NodeId, String)>>, String> {
        let before = self.applied_indexes(among)?;
        if before.windows(2).any(|w| w[0] != w[1]) {
            return Ok(None);
        }
        let exports = among
            .iter()
            .map(|&id| {
                Ok((
                    id,
                    self.node(id)
                        .export()
                        .map_err(|e| format!("node {id}: {e}"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let after = self.applied_indexes(among)?;
        Ok((before == after).then_some(exports))
    }

    fn applied_indexes(&self, among: &[NodeId]) -> Result<Vec<u64>, String> {
        among
            .iter()
            .map(|&id| {
                let status = self
                    .node(id)
                    .status()
                    .map_err(|e| format!("node {id}: {e}"))?;
                status["appliedIndex"]
                    .as_u64()
                    .ok_or_else(|| format!("node {id}: no appliedIndex in {status}"))
            })
            .collect()
    }

    /// The last lines of every node's log (its stdout and stderr).
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            let mut text = String::new();
            let _ = File::open(&node.log).and_then(|mut f| f.read_to_string(&mut text));
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!(
                "--- node {} ({}), last lines of its log:\n",
                node.id, node.addr
            ));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child().take() {
                // SIGKILL ends a paused process too.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The leader `seen` agree on, if they all answered and agree.
fn agreed_leader(seen: &[(NodeId, Result<Value, String>)]) -> Option<NodeId> {
    let statuses: Vec<(NodeId, &Value)> = seen
        .iter()
        .map(|(id, s)| s.as_ref().ok().map(|s| (*id, s)))
        .collect::<Option<_>>()?;
    let leader = statuses[0].1["leader"].as_u64()?;
    let all_agree = statuses
        .iter()
        .all(|(_, s)| s["leader"].as_u64() == Some(leader));
    let leaders: Vec<NodeId> = statuses
        .iter()
        .filter(|(_, s)| s["role"] == "leader")
        .map(|(id, _)| *id)
        .collect();
    (all_agree && leaders == [leader]).then_some(leader)
}

fn describe(seen: &[(NodeId, Result<Value, String>)]) -> String {
    seen.iter()
        .map(|(id, s)| match s {
            Ok(status) => format!("  node {id}: {status}\n"),
            Err(e) => format!("  node {id}: {e}\n"),
        })
        .collect()
}

/// The one export every member holds; panics naming the first line where two differ.
fn same_export(exports: &[(NodeId, String)]) -> String {
    let (first_id, first) = &exports[0];
    for (id, other) in &exports[1..] {
        if other == first {
            continue;
        }
        let (a, b): (Vec<&str>, Vec<&str>) = (first.lines().collect(), other.lines().collect());
        let at = a
            .iter()
            .zip(&b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        panic!(
            "divergence: nodes {first_id} and {id} applied the same index but their exports \
             differ ({} and {} rows); first difference at row {}:\n  node {first_id}: {:?}\n  \
             node {id}: {:?}",
            a.len(),
            b.len(),
            at + 1,
            a.get(at),
            b.get(at)
        );
    }
    first.clone()
}

/// A free port on 127.0.0.1: bound, read, and released for the node to take.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

fn peer_list(peers: impl Iterator<Item = (NodeId, SocketAddr)>) -> String {
    peers
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Sends a signal with `kill(1)` (the crate has no binding to `kill(2)` among its dependencies).
fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {which} {pid} failed");
}

/// Sends one request on a new connection and reads the whole answer; any failure to connect,
/// send or read within `timeout` is an `Err` saying which.
pub fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, String> {
    let failed = |what: &str, e: std::io::Error| format!("{method} {path} on {addr}: {what}: {e}");
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| failed("connect", e))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| failed("timeout", e))?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| failed("timeout", e))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()))
        .map_err(|e| failed("send", e))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| failed("read", e))?;
    crate::common::try_parse_response(&raw)
        .ok_or_else(|| format!("{method} {path} on {addr}: not an HTTP answer: {raw:?}"))
}
