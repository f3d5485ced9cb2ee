//! A newcomer's first hour: the address forms and `PORT`, `/health`, the public API description
//! and `/` leading to it, with an admin token set.

use crate::common::{request, spawn_app_with};

#[test]
fn health_answers_like_healthz() {
    let app = spawn_app_with(|_| {});
    let health = app.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.text, app.get("/healthz").text);
}

#[test]
fn docs_and_the_document_are_public_when_a_token_is_set() {
    let app = spawn_app_with(|c| c.admin_token = Some("s3cret".into()));
    assert_eq!(app.get("/docs").status, 200);
    assert_eq!(app.get("/openapi.json").status, 200);
    assert_eq!(
        app.get("/contacts?after=0").status,
        401,
        "rows stay guarded"
    );
    let root = app.get("/");
    assert_eq!(root.status, 303);
    assert_eq!(root.header("location"), Some("/console"), "to the console");
    let authorized = request(
        app.addr,
        "GET",
        "/contacts?after=0",
        b"",
        &[("Authorization", "Bearer s3cret")],
    );
    assert_eq!(authorized.status, 200);
}

/// Starts the built binary with `args` and `env` (and no inherited address settings), waits
/// until `/health` answers at `expect`, then stops it with SIGTERM; returns how it exited.
fn serves_at(args: &[&str], env: &[(&str, String)], expect: u16) -> std::process::ExitStatus {
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_identity-engine"));
    command
        .args(args)
        .args(["--data-dir", &dir.path().join("data").display().to_string()])
        .env_remove("PORT")
        .env_remove("IDENTITY_ENGINE_ADDR")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut server = command.spawn().expect("start the binary");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], expect));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.try_wait().unwrap() {
            panic!("{args:?} {env:?} exited: {status}");
        }
        if std::net::TcpStream::connect(addr).is_ok()
            && request(addr, "GET", "/health", b"", &[]).status == 200
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?} {env:?}: nothing answers at {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = server.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    server.wait().unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_address_takes_a_name_a_bare_port_or_a_colon_and_port_is_honoured() {
    let p = free_port();
    assert!(serves_at(&["--addr", &format!("localhost:{p}")], &[], p).success());
    let p = free_port();
    assert!(serves_at(&["--addr", &p.to_string()], &[], p).success());
    let p = free_port();
    assert!(serves_at(&["--addr", &format!(":{p}")], &[], p).success());
    let p = free_port();
    assert!(serves_at(&[], &[("PORT", p.to_string())], p).success());
    // An explicit address wins over PORT.
    let (p, ignored) = (free_port(), free_port());
    let env = [
        ("PORT", ignored.to_string()),
        ("IDENTITY_ENGINE_ADDR", format!("127.0.0.1:{p}")),
    ];
    assert!(serves_at(&[], &env, p).success());
}

#[test]
fn the_last_snapshots_time_is_known_after_a_restart() {
    let app = spawn_app_with(|_| {});
    assert_eq!(app.identify(r#"{"email":"a@b.test"}"#).status, 200);
    let app = app.restart(|_| {});
    let metrics = app.get("/metrics").text;
    let at: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("identity_engine_snapshot_last_timestamp_seconds "))
        .expect("the metric")
        .parse()
        .unwrap();
    assert!(at > 1.7e9, "the snapshot written at shutdown: {at}");
}
