//! The edge under slow, idle and half-closed clients (docs/API.md, "Exposure"): the header
//! timeout, the connection limit and the kernel's backlog, the idle timeout, half-close, and an
//! accept loop that outlives running out of file descriptors.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::common::{spawn_app_with, try_parse_response};
use crate::process_support::{healthy, ServerProcess};

/// Connects and sends half a request's headers, never the rest.
fn half_open(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("the kernel takes the connection");
    stream
        .write_all(b"POST /identify HTTP/1.1\r\nHost: x\r\nContent-Le")
        .unwrap();
    stream
}

/// Whether the server closed `stream` (read gives EOF or a reset) within `within`.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// `POST /identify` on a new connection whose answer must come within `within`; None if it
/// does not (the socket's read timeout is the deadline).
fn identify_within(addr: SocketAddr, body: &str, within: Duration) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(within)).unwrap();
    let head = format!(
        "POST /identify HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    try_parse_response(&raw).map(|r| r.status)
}

#[test]
fn half_open_connections_past_the_limit_wait_time_out_and_a_fresh_client_is_answered() {
    let header_timeout = Duration::from_millis(1000);
    let app = spawn_app_with(|c| {
        c.max_connections = Some(20);
        c.header_timeout_ms = header_timeout.as_millis() as u64;
    });
    assert_eq!(app.identify(r#"{"email":"before@x.io"}"#).status, 200);

    // Twice the limit: 20 are accepted and stall; the kernel holds the other 20 in the backlog.
    let mut attackers: Vec<TcpStream> = (0..40).map(|_| half_open(app.addr)).collect();
    let answered = identify_within(
        app.addr,
        r#"{"email":"fresh@x.io"}"#,
        header_timeout + Duration::from_secs(2),
    );
    assert_eq!(
        answered,
        Some(200),
        "a fresh client is answered within the header timeout plus two seconds"
    );
    // Every stalled connection, those accepted late included, is closed by the server.
    for (i, stream) in attackers.iter_mut().enumerate() {
        assert!(
            closed_by_server(stream, Duration::from_secs(10)),
            "half-open connection {i} was closed"
        );
    }
    // The same server, never restarted: it still holds what it had before.
    let found = app.get("/contacts?email=before@x.io").json();
    assert_eq!(found["contacts"][0]["id"], 1);
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    let app = spawn_app_with(|_| {});
    let mut stream = TcpStream::connect(app.addr).unwrap();
    let body = r#"{"email":"nc@x.io"}"#;
    let head = format!(
        "POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let answer = try_parse_response(&raw).expect("an answer");
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.json()["contact"]["emails"][0], "nc@x.io");
}

#[test]
fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|c| c.idle_timeout_ms = 300);
    let mut stream = TcpStream::connect(app.addr).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 1024];
    while crate::tls_support::whole_answer(&raw).is_none() {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the answer");
        raw.extend_from_slice(&buf[..n]);
    }
    assert_eq!(crate::tls_support::whole_answer(&raw).unwrap().status, 200);
    assert!(
        closed_by_server(&mut stream, Duration::from_secs(10)),
        "the idle connection was closed"
    );
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit_and_sets_the_default_connection_limit() {
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    let Some(hard) = hard else {
        return; // an unlimited hard limit: the cap applies, nothing to compare
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let log = tmp.path().join("server.log");
    let mut server =
        ServerProcess::start_with_ulimit("-Sn 512", &["--data-dir", &data], &log, healthy);
    let expected = hard - identity_engine::edge::limits::RESERVED_FILES;
    let line = format!("max_connections={expected}");
    server.wait_until(Duration::from_secs(10), "the listening line", || {
        server.log_text().contains(&line)
    });
    server.stop();
}

#[test]
fn running_out_of_file_descriptors_neither_stops_nor_spins_the_accept_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data").display().to_string();
    let log = tmp.path().join("server.log");
    // 64 descriptors in all, and a connection limit far above: accept runs out of descriptors.
    let args = [
        "--data-dir",
        &data,
        "--max-connections",
        "1000",
        "--header-timeout-ms",
        "1000",
    ];
    let started = Instant::now();
    let mut server = ServerProcess::start_with_ulimit("-n 64", &args, &log, healthy);
    let addr = server.addr;
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(addr).expect("the kernel takes the connection"))
        .collect();
    server.wait_until(Duration::from_secs(10), "an accept error logged", || {
        server.log_text().contains("accept failed")
    });
    // The stalled connections time out, descriptors come free, and a new client is served.
    assert_eq!(
        identify_within(addr, r#"{"email":"after@x.io"}"#, Duration::from_secs(15)),
        Some(200)
    );
    drop(idle);
    assert!(server.exited().is_none(), "the server is still running");
    let logged = server.log_text().matches("accept failed").count() as u64;
    assert!(
        logged <= started.elapsed().as_secs() + 1,
        "accept errors are logged at most once a second ({logged} lines)"
    );
    server.stop();
}
