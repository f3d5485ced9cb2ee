//! Test support: one `identity-engine` server as a process of its own (for what only a process
//! shows: signals, the umask, resource limits, refusing to start), its log in a file, killed on
//! drop.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct ServerProcess {
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A free port on 127.0.0.1: bound, read, and released for the server to take.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address")
}

/// The binary with `args`, its standard output and error going to `log`.
pub fn command(args: &[&str], log: &Path) -> Command {
    let out = File::create(log).expect("log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_identity-engine"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log file"))
        .stderr(out);
    command
}

impl ServerProcess {
    /// Starts the server on a free port with `args` (which must not name --addr), its log in
    /// `log`; returns once `ready` says it answers (or panics with the log after 20 s).
    pub fn start(args: &[&str], log: &Path, ready: impl Fn(SocketAddr) -> bool) -> ServerProcess {
        let addr = free_addr();
        let addr_arg = addr.to_string();
        let mut all = vec!["--addr", addr_arg.as_str()];
        all.extend_from_slice(args);
        Self::spawn(command(&all, log), addr, log, ready)
    }

    /// Like `start`, with `ulimit LIMIT` (e.g. `-n 64`) applied by a shell first.
    pub fn start_with_ulimit(
        limit: &str,
        args: &[&str],
        log: &Path,
        ready: impl Fn(SocketAddr) -> bool,
    ) -> ServerProcess {
        let addr = free_addr();
        let script = format!("ulimit {limit} && exec \"$0\" \"$@\"");
        let addr_arg = addr.to_string();
        let mut all = vec![
            "-c",
            script.as_str(),
            env!("CARGO_BIN_EXE_identity-engine"),
            "--addr",
            addr_arg.as_str(),
        ];
        all.extend_from_slice(args);
        let out = File::create(log).expect("log file");
        let mut sh = Command::new("sh");
        sh.args(&all)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out);
        Self::spawn(sh, addr, log, ready)
    }

    /// Runs `command` (whose server listens on `addr`) until `ready` says it answers.
    pub fn spawn(
        mut command: Command,
        addr: SocketAddr,
        log: &Path,
        ready: impl Fn(SocketAddr) -> bool,
    ) -> ServerProcess {
        let child = command.spawn().expect("the server starts");
        let mut server = ServerProcess {
            addr,
            log: log.to_owned(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready(addr) {
            if let Some(status) = server.exited() {
                panic!("the server exited ({status}):\n{}", server.log_text());
            }
            if Instant::now() > deadline {
                panic!(
                    "the server did not answer within 20 s:\n{}",
                    server.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` (a `kill` option such as `-HUP`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// `kill -9`, and reaps it.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }

    /// SIGTERM, then waits for the process to end (the server drains and syncs first).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("-TERM");
        let status = self.child.take().expect("running").wait().expect("waits");
        assert!(status.success(), "stopped: {status}\n{}", self.log_text());
        status
    }

    /// Polls `check` until it holds, or panics with `what` and the log after `within`.
    pub fn wait_until(&self, within: Duration, what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + within;
        while !check() {
            if Instant::now() > deadline {
                panic!(
                    "{what} did not happen within {within:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if std::thread::panicking() {
                eprintln!("--- server log:\n{}", self.log_text());
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether plain HTTP `GET /healthz` answers 200 at `addr`.
pub fn healthy(addr: SocketAddr) -> bool {
    crate::cluster_support::call(addr, "GET", "/healthz", "", &[], Duration::from_secs(2))
        .is_ok_and(|r| r.status == 200)
}
