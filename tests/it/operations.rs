//! Operations: the OpenAPI document covers every route, metrics parse and move, readiness follows
//! storage health, and the time and concurrency limits answer with JSON while the server stays up.

use crate::common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{request, spawn_app, spawn_app_with};
use identity_engine::storage::Faults;
use serde_json::Value;

/// Every route the server serves, with the statuses its documentation must list.
const ROUTES: &[(&str, &str, &[&str])] = &[
    (
        "post",
        "/identify",
        &["200", "400", "409", "413", "422", "503", "507"],
    ),
    ("get", "/healthz", &["200"]),
    ("get", "/health", &["200"]),
    ("get", "/readyz", &["200", "503"]),
    ("get", "/metrics", &["200"]),
    ("get", "/contacts", &["200", "400", "401", "403"]),
    ("get", "/contacts/export", &["200", "400", "401", "403"]),
    ("get", "/contacts/{id}", &["200", "401", "403", "404"]),
    (
        "delete",
        "/contacts/{id}",
        &["200", "401", "403", "404", "503"],
    ),
    (
        "patch",
        "/contacts/{id}",
        &[
            "200", "400", "401", "403", "404", "409", "413", "422", "503", "507",
        ],
    ),
    (
        "get",
        "/contacts/{id}/identity",
        &["200", "401", "403", "404"],
    ),
    ("get", "/openapi.json", &["200"]),
    ("get", "/backup", &["200", "401", "403", "409", "503"]),
    ("get", "/docs", &["200"]),
    ("get", "/blocklist", &["200", "401", "403"]),
    ("post", "/blocklist", &["200", "400", "401", "403", "507"]),
    (
        "delete",
        "/blocklist",
        &["200", "400", "401", "403", "404", "409"],
    ),
    (
        "post",
        "/contacts/import",
        &["200", "400", "401", "403", "409", "413", "503"],
    ),
    ("get", "/contacts/{id}/graph", &["200", "401", "403", "404"]),
    (
        "get",
        "/contacts/{a}/why/{b}",
        &["200", "401", "403", "404"],
    ),
    ("get", "/stats", &["200", "401", "403"]),
    ("get", "/whoami", &["200", "401", "403"]),
    ("get", "/console", &["200"]),
    ("get", "/console/{file}", &["200", "404"]),
    ("get", "/", &["303"]),
    ("get", "/cluster", &["200", "401", "403", "409"]),
    ("post", "/cluster/members", &["200", "400", "409", "503"]),
    ("delete", "/cluster/members/{id}", &["200", "409", "503"]),
    ("get", "/changes", &["200", "400", "401", "403", "410"]),
    (
        "post",
        "/erasures",
        &["200", "400", "401", "403", "404", "422", "503"],
    ),
    ("get", "/erasures", &["200", "401", "403"]),
    ("get", "/erasures/{id}", &["200", "401", "403", "404"]),
];

#[test]
fn the_openapi_document_lists_every_route_with_its_statuses() {
    let app = spawn_app();
    let doc = app.get("/openapi.json").json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for (method, path, statuses) in ROUTES {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} is missing from the document"
        );
        for status in *statuses {
            assert!(
                op["responses"][status].is_object(),
                "{method} {path} does not document {status}"
            );
        }
    }
    let documented: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(
        documented,
        ROUTES.len(),
        "the document lists a route the test does not know"
    );
}

#[test]
fn every_documented_route_is_served() {
    let app = spawn_app();
    app.identify(r#"{"email":"a@b.c"}"#);
    app.identify(r#"{"email":"d@e.f"}"#);
    // Contact 3 is erased, so that erasure 1 exists (and erasing it again changes nothing).
    app.identify(r#"{"email":"g@h.i"}"#);
    assert_eq!(app.post("/erasures", r#"{"contactId":3}"#).status, 200);
    let doc = app.get("/openapi.json").json();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            // Contact 2 is the one deleted, so contact 1 answers every other route.
            let concrete = path
                .replace("{id}", if method == "delete" { "2" } else { "1" })
                .replace("{a}", "1")
                .replace("{b}", "1")
                .replace("{file}", "app.js");
            let body: &[u8] = if path == "/erasures" {
                br#"{"contactId":3}"#
            } else if method == "post" {
                br#"{"email":"a@b.c"}"#
            } else {
                b""
            };
            let answer = request(app.addr, &method.to_uppercase(), &concrete, body, &[]);
            assert!(
                answer.status != 404 && answer.status != 405,
                "{method} {concrete} answered {}",
                answer.status
            );
        }
    }
}

#[test]
fn a_row_answers_the_fields_its_schema_names() {
    let app = spawn_app();
    app.identify(r#"{"email":"a@b.c"}"#);
    let doc = app.get("/openapi.json").json();
    let schema = &doc["components"]["schemas"]["ContactRow"];
    let row = app.get("/contacts/1").json();
    let row = row.as_object().unwrap();
    let mut named: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
    let mut answered: Vec<&String> = row.keys().collect();
    named.sort_unstable();
    answered.sort_unstable();
    assert_eq!(named, answered);
    for field in schema["required"].as_array().unwrap() {
        assert!(
            !row[field.as_str().unwrap()].is_null(),
            "{field} is required"
        );
    }
}

#[test]
fn the_docs_page_renders_the_document_without_the_network() {
    let app = spawn_app();
    let page = app.get("/docs");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text.contains("openapi.json"));
    assert!(
        !page.text.contains("http://") && !page.text.contains("https://"),
        "the page loads nothing from elsewhere"
    );
}

/// Parses the text exposition into `name{labels}` → value; panics on a line that is not a
/// comment or a sample.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name {name:?}"
        );
        if name_end < series.len() {
            assert!(series.ends_with('}'), "unclosed labels in {line:?}");
        }
        samples.insert(series.to_owned(), value);
    }
    samples
}

fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[test]
fn metrics_parse_and_their_counters_move_with_requests() {
    let app = spawn_app();
    let before = parse_metrics(&app.get("/metrics").text);
    app.identify(r#"{"email":"a@b.c","phoneNumber":"1"}"#);
    app.identify(r#"{"email":"d@e.f","phoneNumber":"2"}"#);
    app.identify(r#"{"email":"a@b.c","phoneNumber":"2"}"#);
    app.identify("not json");
    let page = app.get("/metrics");
    assert!(page.header("content-type").unwrap().contains("text"));
    let after = parse_metrics(&page.text);
    let ok = r#"identity_engine_http_requests_total{method="POST",route="/identify",status="200"}"#;
    let bad =
        r#"identity_engine_http_requests_total{method="POST",route="/identify",status="400"}"#;
    assert_eq!(sample(&after, ok) - sample(&before, ok), 3.0);
    assert_eq!(sample(&after, bad) - sample(&before, bad), 1.0);
    assert_eq!(
        sample(&after, "identity_engine_contacts_created_total"),
        2.0
    );
    assert_eq!(sample(&after, "identity_engine_merges_total"), 1.0);
    assert_eq!(sample(&after, "identity_engine_contacts_live"), 2.0);
    assert_eq!(sample(&after, "identity_engine_clusters"), 1.0);
    assert!(sample(&after, "identity_engine_log_fsyncs_total") >= 3.0);
    assert!(sample(&after, "identity_engine_log_bytes_total") > 0.0);
    let latency = r#"identity_engine_http_request_duration_seconds_count{route="/identify"}"#;
    assert_eq!(sample(&after, latency), 4.0);
}

#[test]
fn readiness_turns_503_when_storage_fails_closed() {
    let faults = Arc::new(Faults::default());
    let app = spawn_app_with(|c| c.faults = Some(faults.clone()));
    assert_eq!(app.get("/readyz").status, 200);
    faults.fail_syncs.store(true, Ordering::SeqCst);
    let change = app.identify(r#"{"email":"a@b.c"}"#);
    assert_eq!(
        (change.status, change.error_code()),
        (503, "storage_unavailable".to_owned())
    );
    let ready = app.get("/readyz");
    assert_eq!(
        (ready.status, ready.error_code()),
        (503, "storage_unavailable".to_owned())
    );
    assert_eq!(app.get("/healthz").status, 200, "the process still answers");
}

/// Sends the head of a request whose body never comes, and reads the answer.
fn stalled_request(addr: std::net::SocketAddr) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let head = "POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"email\":";
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").unwrap().1;
    (status, serde_json::from_str(body).unwrap())
}

#[test]
fn a_request_over_the_time_limit_gets_its_timeout_answer_and_the_server_stays_up() {
    let app = spawn_app_with(|c| c.request_timeout_ms = 200);
    let (status, body) = stalled_request(app.addr);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("timeout"))
    );
    assert_eq!(app.identify(r#"{"email":"a@b.c"}"#).status, 200);
}

#[test]
fn requests_beyond_the_concurrency_limit_are_shed_at_once() {
    let app = spawn_app_with(|c| {
        c.max_concurrent_requests = 1;
        c.request_timeout_ms = 3000;
    });
    let addr = app.addr;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // The stalled request retries until it holds the only slot (a probe may hold it first).
    let stalled = std::thread::spawn(move || loop {
        let (status, body) = stalled_request(addr);
        if body["error"]["code"] != "overloaded" || std::time::Instant::now() > deadline {
            return (status, body);
        }
    });
    let shed = loop {
        let answer = app.identify(r#"{"email":"x@y.z"}"#);
        if answer.status == 503 || std::time::Instant::now() > deadline {
            break answer;
        }
    };
    assert_eq!(
        (shed.status, shed.error_code()),
        (503, "overloaded".to_owned())
    );
    let (status, body) = stalled.join().unwrap();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("timeout"))
    );
    assert_eq!(
        app.identify(r#"{"email":"a@b.c"}"#).status,
        200,
        "the server serves again"
    );
}

/// The log lines of the real binary (which owns its process's logging: a test of this binary
/// cannot, since other tests run in it at the same time and tracing's per-callsite interest is
/// process-wide) for four requests with personal data in their paths and bodies, with the
/// access log on or off.
fn logs_of_requests(access_log: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", crate::storage_support::free_port());
    let log = dir.path().join("server.log");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_identity-engine"));
    command
        .args(["--addr", &addr, "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    if access_log {
        command.arg("--access-log");
    }
    let mut child = command.spawn().unwrap();
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    common::wait_until(Duration::from_secs(30), || TcpStream::connect(addr).is_ok());
    for (method, uri, body) in [
        (
            "POST",
            "/identify",
            r#"{"email":"Secret.Person@Example.com","phoneNumber":"5550199"}"#,
        ),
        ("GET", "/contacts?email=secret.person@example.com", ""),
        ("GET", "/contacts?phoneNumber=5550199", ""),
        ("POST", "/identify", r#"{"email":"not an email 5550199"}"#),
        ("POST", "/erasures", r#"{"phoneNumber":"5550199"}"#),
        (
            "POST",
            "/erasures",
            r#"{"email":"Secret.Person@Example.com"}"#,
        ),
        ("GET", "/erasures", ""),
    ] {
        let answer = request(addr, method, uri, body.as_bytes(), &[]);
        assert_ne!(answer.status, 500);
    }
    // SIGTERM: a clean shutdown writes out every buffered line.
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap();
    std::fs::read_to_string(&log).unwrap().to_lowercase()
}

#[test]
fn request_logs_name_routes_but_never_emails_or_phone_numbers() {
    let text = logs_of_requests(true);
    assert!(
        text.contains("route=\"/identify\"") || text.contains("route=/identify"),
        "{text}"
    );
    assert!(text.contains("/contacts"), "{text}");
    for personal in ["secret", "example.com", "5550199"] {
        assert!(
            !text.contains(personal),
            "{personal:?} appears in the logs:\n{text}"
        );
    }
}

#[test]
fn without_the_access_log_answers_below_500_leave_no_request_line() {
    let text = logs_of_requests(false);
    assert!(text.contains("shut down cleanly"), "{text}");
    assert!(!text.contains("route="), "{text}");
}
