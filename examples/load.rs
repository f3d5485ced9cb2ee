//! The load test: `/identify` throughput and latency of the server against an echo ceiling, side
//! by side in one run. Needs nothing but this repository:
//!
//! ```sh
//! cargo build --release && cargo run --release --example load -- [SECONDS] [CONNECTIONS]
//! ```
//!
//! The ceiling is this same program run as `load echo ADDR`: the same axum + serde_json stack
//! reading the request and writing an answer of the same shape, with no engine and no log: the
//! most `/identify` could reach on this machine with this client. The client is ours too: keep-
//! alive HTTP/1.1 connections, each sending its next request when the answer arrives. Runs
//! alternate ceiling and server (twice each) to cancel drift; the last line gives the ratios.
//!
//! Workloads: `read` (1,000 known pairs, asked again and again), `write` (a new contact each),
//! `link` (clusters of four: a primary, then three secondaries sharing its phone).
//! `WORKLOADS=read,write` picks some; `SERVER_ARGS="--phone-match e164 --default-region US"`
//! passes more options to the server, and `SERVER_LOG=FILE` keeps what the processes print.
//! The server runs with its defaults (`--fsync always`) on a
//! temporary data directory. `CLUSTER=3` runs a cluster of three members on this machine
//! instead (sharing its cores with each other and with this client) and spreads the
//! connections over them, as clients that do not know the leader would. `TLS=1` serves the
//! server (not the ceiling) over HTTPS with a certificate made for the run, and the client
//! speaks TLS to it (rustls, as the server): the same client, so the ratios with and without it
//! show what TLS costs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The client side of TLS, when the servers speak it (`TLS=1`).
static TLS: std::sync::OnceLock<TlsConnector> = std::sync::OnceLock::new();

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("echo") {
        return echo(
            args.get(1)
                .expect("load echo ADDR")
                .parse()
                .expect("an address"),
        );
    }
    let seconds: u64 = args.first().map_or(5, |s| s.parse().expect("SECONDS"));
    let connections: usize = args.get(1).map_or(64, |s| s.parse().expect("CONNECTIONS"));
    let workloads = std::env::var("WORKLOADS").unwrap_or_else(|_| "read,write,link".into());
    // More server options, e.g. SERVER_ARGS="--phone-match e164 --default-region US".
    let server_args = std::env::var("SERVER_ARGS").unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let data = std::env::temp_dir().join(format!("identity-engine-load-{}", std::process::id()));
    let members: usize = std::env::var("CLUSTER").map_or(1, |n| n.parse().expect("CLUSTER=N"));
    let echo_addr = free_addr();
    let servers: Vec<SocketAddr> = (0..members).map(|_| free_addr()).collect();
    let peers = (servers.iter().enumerate())
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let me = std::env::current_exe().expect("this program's path");
    let tls_args = match std::env::var("TLS").is_ok_and(|v| v == "1") {
        true => tls_files(&data),
        false => vec![],
    };
    let mut children = Children(vec![]);
    children.0.push(spawn(
        Command::new(&me).args(["echo", &echo_addr.to_string()]),
    ));
    for (i, addr) in servers.iter().enumerate() {
        let mut command = Command::new(server_binary(&me));
        command
            .args(["--addr", &addr.to_string()])
            .args([
                "--data-dir",
                &data.join(i.to_string()).display().to_string(),
            ])
            .args(server_args.split_whitespace())
            .args(&tls_args);
        if members > 1 {
            command.args(["--node-id", &(i + 1).to_string(), "--peers", &peers]);
        }
        children.0.push(spawn(&mut command));
    }
    runtime.block_on(async {
        wait_up(echo_addr).await;
        for &addr in &servers {
            wait_up(addr).await;
        }
        seed(servers[0]).await;
        let tls = if TLS.get().is_some() { ", the server over TLS" } else { "" };
        println!("{seconds} s per run, {connections} connections, two runs each, ceiling and server alternating{tls}");
        let mut ratios = vec![];
        for workload in workloads.split(',') {
            let (mut ceiling, mut server) = (vec![], vec![]);
            for _ in 0..2 {
                ceiling.push(run(&[echo_addr], true, workload, seconds, connections).await);
                server.push(run(&servers, false, workload, seconds, connections).await);
            }
            let (c, s) = (Outcome::mean(&ceiling), Outcome::mean(&server));
            println!(
                "{workload:6} ceiling {:8.0} req/s | server {:8.0} req/s, p50 {:.2} ms, p99 {:.2} ms, non-200 {} | ratio {:.2}",
                c.rps, s.rps, s.p50_ms, s.p99_ms, s.errors, s.rps / c.rps
            );
            ratios.push(format!("{workload} {:.2}", s.rps / c.rps));
        }
        println!("ratios server/ceiling: {}", ratios.join(", "));
    });
    drop(children);
    let _ = std::fs::remove_dir_all(&data);
}

/// A certificate for 127.0.0.1 made for this run, written into `data`; sets the client's
/// side of TLS and returns the server's options for it.
fn tls_files(data: &std::path::Path) -> Vec<String> {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("a certificate");
    std::fs::create_dir_all(data).expect("the data directory");
    let (cert, key) = (data.join("load.pem"), data.join("load.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(made.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let _ = TLS.set(TlsConnector::from(Arc::new(config)));
    let path = |p: &std::path::Path| p.display().to_string();
    vec![
        "--tls-cert".into(),
        path(&cert),
        "--tls-key".into(),
        path(&key),
    ]
}

/// The server binary beside this example (`target/release/examples/load` ->
/// `target/release/identity-engine`).
fn server_binary(me: &std::path::Path) -> PathBuf {
    let path = me
        .parent()
        .and_then(|examples| examples.parent())
        .map(|dir| dir.join("identity-engine"))
        .expect("a target directory");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release` first",
        path.display()
    );
    path
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Starts a process; its output goes to the file `SERVER_LOG` names (appended), or nowhere.
fn spawn(command: &mut Command) -> Child {
    let log = || match std::env::var_os("SERVER_LOG") {
        Some(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_or_else(|_| Stdio::null(), Stdio::from),
        None => Stdio::null(),
    };
    command
        .stdout(log())
        .stderr(log())
        .spawn()
        .expect("start a process")
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn wait_up(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The body of request `n` of a connection `conn` in `workload`.
fn body(workload: &str, run: u64, conn: usize, n: u64) -> String {
    match workload {
        "read" => {
            let i = (conn as u64 * 7919 + n) % 1000;
            format!(r#"{{"email":"read-{i}@load.test","phoneNumber":"555{i:04}"}}"#)
        }
        "write" => format!(
            r#"{{"email":"w{run}-{conn}-{n}@load.test","phoneNumber":"7{run:03}{conn:04}{n:08}"}}"#
        ),
        "link" => format!(
            r#"{{"email":"l{run}-{conn}-{n}@load.test","phoneNumber":"8{run:03}{conn:04}{:08}"}}"#,
            n / 4
        ),
        other => panic!("unknown workload {other}: read, write or link"),
    }
}

/// Adds the pairs `read` asks about (first waiting, for a cluster, until it has a leader).
async fn seed(addr: SocketAddr) {
    let mut conn = Connection::open(addr, false).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while conn.identify(&body("read", 0, 0, 0)).await != 200 {
        assert!(Instant::now() < deadline, "the server never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..1000 {
        conn.identify(&body("read", 0, 0, i)).await;
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Outcome {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

impl Outcome {
    fn mean(runs: &[Outcome]) -> Outcome {
        let n = runs.len() as f64;
        Outcome {
            rps: runs.iter().map(|r| r.rps).sum::<f64>() / n,
            p50_ms: runs.iter().map(|r| r.p50_ms).fold(0.0, f64::max),
            p99_ms: runs.iter().map(|r| r.p99_ms).fold(0.0, f64::max),
            errors: runs.iter().map(|r| r.errors).sum(),
        }
    }
}

/// Runs `connections` clients for `seconds`; each sends its next request when the answer comes.
/// Connection `c` goes to `addrs[c % addrs.len()]`.
async fn run(
    addrs: &[SocketAddr],
    plain: bool,
    workload: &str,
    seconds: u64,
    connections: usize,
) -> Outcome {
    static RUN: AtomicU64 = AtomicU64::new(1);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (stop, errors, workload) = (stop.clone(), errors.clone(), workload.to_owned());
            let addr = addrs[c % addrs.len()];
            tokio::spawn(async move {
                let mut conn = Connection::open(addr, plain).await;
                let mut latencies = Vec::with_capacity(1 << 14);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    if conn.identify(&body(&workload, run, c, n)).await != 200 {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies.push(sent.elapsed().as_micros() as u32);
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = vec![];
    for task in tasks {
        latencies.extend(task.await.expect("a client"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    Outcome {
        rps: latencies.len() as f64 / elapsed,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// A connection's byte stream: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One keep-alive HTTP/1.1 connection.
struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
}

impl Connection {
    /// Over TLS when the servers speak it, except to the ceiling (`plain`).
    async fn open(addr: SocketAddr, plain: bool) -> Connection {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.set_nodelay(true).unwrap();
        let stream: Box<dyn Stream> = match TLS.get().filter(|_| !plain) {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
                Box::new(tls.connect(name, tcp).await.expect("a TLS handshake"))
            }
            None => Box::new(tcp),
        };
        Connection {
            stream,
            buf: Vec::with_capacity(4096),
        }
    }

    /// Sends `POST /identify` with `body`; returns the status once the whole answer is read.
    async fn identify(&mut self, body: &str) -> u16 {
        let request = format!(
            "POST /identify HTTP/1.1\r\nHost: load\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("send");
        self.buf.clear();
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).expect("an ASCII head");
                let status: u16 = head[9..12].parse().expect("a status");
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())?
                    })
                    .expect("a content length");
                while self.buf.len() < end + 4 + length {
                    self.read().await;
                }
                return status;
            }
            self.read().await;
        }
    }

    async fn read(&mut self) {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the server closed the connection");
        self.buf.extend_from_slice(&chunk[..n]);
    }
}

/// The ceiling: `/identify` answered by axum + serde_json with an answer of the same shape and
/// no engine behind it.
fn echo(addr: SocketAddr) {
    use axum::routing::post;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = axum::Router::new().route("/identify", post(echo_identify));
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
}

async fn echo_identify(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return axum::http::StatusCode::BAD_REQUEST.into_response(),
    };
    let answer = serde_json::json!({ "contact": {
        "primaryContactId": 1,
        "emails": [request["email"]],
        "phoneNumbers": [request["phoneNumber"]],
        "secondaryContactIds": [],
    }});
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer.to_string(),
    )
        .into_response()
}
