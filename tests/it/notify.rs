//! The readiness protocol systemd's `Type=notify` waits for (packaging/identity-engine.service):
//! the built binary, started with `NOTIFY_SOCKET` naming a datagram socket this test listens on,
//! says `READY=1` only once it has recovered its data and can answer, and `STOPPING=1` when
//! SIGTERM starts its shutdown; without the variable, or with nobody listening, it serves the same.

use std::net::SocketAddr;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::common::{request, spawn_app_in};

/// Every wait is bounded by this (a debug build recovering a small directory needs well under it).
const PATIENCE: Duration = Duration::from_secs(30);

/// The binary, killed if a test fails before it exits.
struct Server(Child);

impl Server {
    fn start(data_dir: &Path, addr: &str, notify_socket: Option<&str>) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_identity-engine"));
        command
            .args(["--addr", addr, "--data-dir"])
            .arg(data_dir)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("PORT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(socket) = notify_socket {
            command.env("NOTIFY_SOCKET", socket);
        }
        Server(command.spawn().expect("start the binary"))
    }

    fn terminate(&self) {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// How the process ended, polled until `PATIENCE` runs out.
    fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next datagram's `KEY=VALUE` lines, waited for at most `PATIENCE`.
fn next_message(socket: &UnixDatagram) -> Vec<String> {
    socket.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buffer = [0u8; 4096];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification before the deadline");
    let text = std::str::from_utf8(&buffer[..n]).expect("notifications are text");
    text.lines().map(str::to_owned).collect()
}

/// The address a `READY=1` message's `STATUS=serving on ADDR` names.
fn serving_addr(message: &[String]) -> SocketAddr {
    let status = message
        .iter()
        .find_map(|l| l.strip_prefix("STATUS=serving on "))
        .unwrap_or_else(|| panic!("no serving status in {message:?}"));
    status.parse().expect("an address")
}

/// A data directory holding contact 1 (a@x.test, 555) and its secondary 2 (b@x.test, 555).
fn directory_with_two_contacts() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut app = spawn_app_in(&dir.path().join("data"), |_| {}).expect("server starts");
    for body in [
        r#"{"email":"a@x.test","phoneNumber":"555"}"#,
        r#"{"email":"b@x.test","phoneNumber":"555"}"#,
    ] {
        assert_eq!(app.identify(body).status, 200, "{body}");
    }
    app.stop().expect("clean stop");
    dir
}

#[test]
fn ready_is_sent_once_recovery_is_done_and_stopping_when_sigterm_arrives() {
    let dir = directory_with_two_contacts();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        "127.0.0.1:0",
        Some(socket_path.to_str().unwrap()),
    );

    let ready = next_message(&socket);

    assert!(ready.iter().any(|l| l == "READY=1"), "{ready:?}");
    // No waiting after READY=1: the recovered contacts answer at once.
    let addr = serving_addr(&ready);
    let answer = request(addr, "POST", "/identify", br#"{"email":"b@x.test"}"#, &[]);
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json()["contact"]["primaryContactId"], 1);
    assert_eq!(
        answer.json()["contact"]["secondaryContactIds"],
        serde_json::json!([2])
    );

    server.terminate();
    let stopping = next_message(&socket);
    assert!(stopping.iter().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert!(server.exit_status().success());
}

#[test]
fn an_abstract_notify_socket_is_reached_too() {
    let dir = tempfile::tempdir().unwrap();
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let name = format!("identity-engine-test-{}-{nanos}", std::process::id());
    let address = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&address).unwrap();
    let mut server = Server::start(
        &dir.path().join("data"),
        "127.0.0.1:0",
        Some(&format!("@{name}")),
    );

    let ready = next_message(&socket);

    assert!(ready.iter().any(|l| l == "READY=1"), "{ready:?}");
    let health = request(serving_addr(&ready), "GET", "/health", b"", &[]);
    assert_eq!(health.status, 200);
    server.terminate();
    assert!(server.exit_status().success());
}

/// Serves at a free port (not known from a notification) until `/health` answers, then stops.
fn serves_and_stops_cleanly(notify_socket: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut server = Server::start(&dir.path().join("data"), &addr.to_string(), notify_socket);
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(server.0.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "nothing answers at {addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let answer = request(addr, "POST", "/identify", br#"{"email":"a@x.test"}"#, &[]);
    assert_eq!(answer.status, 200, "{notify_socket:?}: {}", answer.text);
    server.terminate();
    assert!(server.exit_status().success(), "{notify_socket:?}");
}

#[test]
fn without_notify_socket_or_with_nobody_listening_the_server_works_the_same() {
    serves_and_stops_cleanly(None);
    let dir = tempfile::tempdir().unwrap();
    let nobody = dir.path().join("nobody-listens.sock");
    serves_and_stops_cleanly(Some(nobody.to_str().unwrap()));
    serves_and_stops_cleanly(Some("not-an-absolute-path"));
}
