//! The change feed over HTTP: each kind of change as its events (ids only), pages and cursors,
//! the long poll, server-sent events with Last-Event-ID and heartbeats, retention, and the
//! command-line follower.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{request, spawn_app_with, TestApp};

pub fn changes(app: &TestApp, query: &str) -> Value {
    let answer = app.get(&format!("/changes?{query}"));
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.json()
}

/// Every event after `after`, paged.
pub fn all_after(app: &TestApp, mut after: u64) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page = changes(app, &format!("after={after}&limit=7"));
        let events = page["changes"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        after = page["last"].as_u64().unwrap();
        out.extend(events);
    }
}

fn contacts_of(event: &Value) -> Vec<(u64, Option<u64>)> {
    (event["contacts"].as_array().unwrap().iter())
        .map(|c| (c["id"].as_u64().unwrap(), c["primary"].as_u64()))
        .collect()
}

fn kinds(events: &[Value]) -> Vec<String> {
    (events.iter())
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn each_kind_of_change_is_its_events_with_ids_and_never_a_value() {
    let app = spawn_app_with(|_| {});
    app.identify(r#"{"email":"george@hillvalley.edu","phoneNumber":"919191"}"#);
    app.identify(r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}"#);
    app.identify(r#"{"email":"george@hillvalley.edu","phoneNumber":"717171"}"#);
    app.identify(r#"{"email":"lorraine@hillvalley.edu","phoneNumber":"919191"}"#);
    let events = all_after(&app, 0);
    assert_eq!(kinds(&events), ["created", "created", "merged", "created"]);
    assert_eq!(contacts_of(&events[0]), [(1, Some(1))]);
    assert_eq!(events[2]["into"], 1);
    assert_eq!(events[2]["primaries"], json!([2]));
    assert_eq!(contacts_of(&events[2]), [(2, Some(1))]);
    assert_eq!(contacts_of(&events[3]), [(3, Some(1))]);
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["seq"], i as u64 + 1);
        assert_eq!(event["cause"], "identify");
        assert!(event["by"].is_null());
        assert!(event["at"].as_str().unwrap().ends_with('Z'));
    }
    // Deleting 1 splits its cluster: the join (george, 717171) dies with george's email, and
    // 3 shared 919191 with 1 only, so 2 and 3 become primaries of their own.
    assert_eq!(app.delete("/contacts/1").status, 200);
    let after_delete = all_after(&app, 4);
    assert_eq!(kinds(&after_delete), ["deleted", "split"]);
    assert_eq!(contacts_of(&after_delete[0]), [(1, None)]);
    assert_eq!(after_delete[0]["cause"], "delete");
    let mut split = contacts_of(&after_delete[1]);
    split.sort();
    assert_eq!(split, [(2, Some(2)), (3, Some(3))]);
    let block = app.post("/blocklist", r#"{"phoneNumber":"717171"}"#);
    assert_eq!(block.status, 200, "{}", block.text);
    let unblock = app.delete("/blocklist?phoneNumber=717171");
    assert_eq!(unblock.status, 200, "{}", unblock.text);
    let rows = "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n\
                50,555,doc@hillvalley.edu,,primary,2023-01-01T00:00:00.000Z,2023-01-01T00:00:00.000Z,\n\
                51,555,emmett@hillvalley.edu,,primary,2023-01-02T00:00:00.000Z,2023-01-02T00:00:00.000Z,\n";
    let imported = request(app.addr, "POST", "/contacts/import", rows.as_bytes(), &[]);
    assert_eq!(imported.status, 200, "{}", imported.text);
    let rest = all_after(&app, 6);
    assert_eq!(kinds(&rest), ["blocked", "unblocked", "imported"]);
    assert!(rest
        .iter()
        .all(|e| e["cause"] == "blocklist" || e["cause"] == "import"));
    assert_eq!(contacts_of(&rest[2]), [(50, Some(50)), (51, Some(50))]);
    let text = app.get("/changes?limit=1000").text;
    for value in ["hillvalley", "919191", "717171", "doc@", "emmett"] {
        assert!(!text.contains(value), "an event shows {value}: {text}");
    }
}

#[test]
fn pages_follow_the_cursor_and_last_saves_an_idle_consumers_place() {
    let app = spawn_app_with(|_| {});
    for k in 0..5 {
        app.identify(&format!(r#"{{"email":"c{k}@shop.test"}}"#));
    }
    let page = changes(&app, "after=1&limit=2");
    let seqs: Vec<u64> = (page["changes"].as_array().unwrap().iter())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!((seqs, page["last"].as_u64()), (vec![2, 3], Some(3)));
    let idle = changes(&app, "after=5");
    assert_eq!(
        (
            idle["changes"].as_array().unwrap().len(),
            idle["last"].as_u64()
        ),
        (0, Some(5))
    );
    for bad in ["limit=0", "limit=1001", "wait=61", "after=x", "since=3"] {
        let answer = app.get(&format!("/changes?{bad}"));
        assert_eq!(
            (answer.status, answer.error_code()),
            (400, "invalid_query".into()),
            "{bad}"
        );
    }
}

#[test]
fn a_long_poll_answers_with_the_event_that_comes_while_it_waits() {
    let app = spawn_app_with(|_| {});
    let addr = app.addr;
    let poll = std::thread::spawn(move || {
        request(addr, "GET", "/changes?after=0&wait=30", b"", &[]).json()
    });
    // The poll must be waiting before the change, or it would not be a test of the wait.
    crate::common::wait_until(Duration::from_secs(10), || {
        metric(&app, "identity_engine_changes_consumers") == Some(1.0)
    });
    app.identify(r#"{"email":"late@shop.test"}"#);
    let page = poll.join().unwrap();
    assert_eq!(page["changes"][0]["type"], "created", "{page}");
    assert_eq!(page["last"], 1);
}

fn metric(app: &TestApp, name: &str) -> Option<f64> {
    crate::cluster_support::metric_value(&app.get("/metrics").text, name)
}

/// Opens a stream of server-sent events, with `headers` beside Accept.
fn open_stream(app: &TestApp, path: &str, headers: &str) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(app.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{headers}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.contains("200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            return reader;
        }
    }
}

/// The next server-sent event (id, type, data) or comment, skipping chunk framing.
fn next_message(reader: &mut BufReader<TcpStream>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the stream ended");
        let line = line.trim_end_matches(['\r', '\n']).to_owned();
        // Chunk sizes (hex) and empty framing lines are not part of the stream.
        let framing = !line.is_empty() && line.chars().all(|c| c.is_ascii_hexdigit());
        if framing {
            continue;
        }
        if line.is_empty() {
            if !lines.is_empty() {
                return lines;
            }
            continue;
        }
        lines.push(line);
    }
}

#[test]
fn a_stream_starts_after_its_last_event_id_and_sends_each_event_as_it_comes() {
    let app = spawn_app_with(|c| c.changes_heartbeat_ms = 200);
    for k in 0..3 {
        app.identify(&format!(r#"{{"email":"s{k}@shop.test"}}"#));
    }
    let mut stream = open_stream(&app, "/changes", "Last-Event-ID: 1\r\n");
    assert!(
        next_message(&mut stream)[0].starts_with(':'),
        "an opening comment"
    );
    let second = next_message(&mut stream);
    assert_eq!(second[0], "id: 2");
    assert_eq!(second[1], "event: created");
    let data: Value = serde_json::from_str(second[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["seq"], 2);
    assert_eq!(next_message(&mut stream)[0], "id: 3");
    // Idle: a comment at least every heartbeat.
    assert_eq!(next_message(&mut stream), [": keepalive"]);
    app.identify(r#"{"email":"s9@shop.test"}"#);
    loop {
        let message = next_message(&mut stream);
        if message[0].starts_with(':') {
            continue;
        }
        assert_eq!(message[0], "id: 4");
        break;
    }
    let mut from_after = open_stream(&app, "/changes?after=3", "");
    next_message(&mut from_after);
    assert_eq!(next_message(&mut from_after)[0], "id: 4");
}

#[test]
fn a_cursor_older_than_the_history_kept_is_410_with_the_oldest_seq_kept() {
    // Small segments and a small size bound: the oldest go as new ones come.
    let app = spawn_app_with(|c| c.changes_retention_bytes = 16 << 10);
    let long = "x".repeat(100);
    for k in 0..600 {
        app.identify(&format!(r#"{{"email":"{long}{k}@shop.test"}}"#));
    }
    let gone = app.get("/changes?after=0");
    assert_eq!(gone.status, 410, "{}", gone.text);
    let body = gone.json();
    assert_eq!(body["error"]["code"], "changes_compacted");
    let oldest = body["oldest"].as_u64().unwrap();
    assert!(oldest > 1 && oldest <= 600, "{body}");
    assert_eq!(body["error"]["oldest"], oldest);
    let kept = changes(&app, &format!("after={}", oldest - 1));
    assert_eq!(kept["changes"][0]["seq"], oldest);
    let metrics = app.get("/metrics").text;
    let seen = crate::cluster_support::metric_value(&metrics, "identity_engine_changes_oldest_seq");
    assert_eq!(seen, Some(oldest as f64), "{metrics}");
}

#[test]
fn the_same_events_with_the_same_seqs_after_a_restart_and_more_follow_on() {
    let app = spawn_app_with(|_| {});
    for k in 0..4 {
        app.identify(&format!(
            r#"{{"email":"r{k}@shop.test","phoneNumber":"{}"}}"#,
            k % 2
        ));
    }
    let before = all_after(&app, 0);
    let app = app.restart(|_| {});
    assert_eq!(all_after(&app, 0), before);
    app.identify(r#"{"email":"after@shop.test"}"#);
    let next = all_after(&app, before.len() as u64);
    assert_eq!(next[0]["seq"], before.len() as u64 + 1);
}

#[test]
fn the_command_line_prints_the_events_as_ndjson_and_resumes_from_a_seq() {
    let app = spawn_app_with(|_| {});
    for k in 0..3 {
        app.identify(&format!(r#"{{"email":"cli{k}@shop.test"}}"#));
    }
    let run = |after: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_identity-engine"))
            .args([
                "changes",
                "--url",
                &format!("http://{}", app.addr),
                "--after",
                after,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        lines
    };
    let all = run("0");
    assert_eq!(all.len(), 3);
    assert_eq!(all, all_after(&app, 0));
    let rest = run("2");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["seq"], 3);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_identity-engine"))
        .args([
            "changes",
            "--url",
            &format!("http://{}", app.addr),
            "--after",
            "3",
            "--follow",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    app.identify(r#"{"email":"followed@shop.test"}"#);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["seq"], 4);
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
}

#[test]
fn a_change_made_with_a_token_names_it_as_by_and_still_does_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        "support operate s3cret-operate\nwatcher read s3cret-read\n",
    )
    .unwrap();
    let tokens_file = tokens.clone();
    let app = spawn_app_with(move |c| c.tokens = Some(tokens_file));
    let operate = [("Authorization", "Bearer s3cret-operate")];
    let read = [("Authorization", "Bearer s3cret-read")];
    request(
        app.addr,
        "POST",
        "/identify",
        br#"{"email":"by@shop.test"}"#,
        &[],
    );
    let deleted = request(app.addr, "DELETE", "/contacts/1", b"", &operate);
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    let feed = |app: &TestApp| request(app.addr, "GET", "/changes", b"", &read).json();
    let events = feed(&app)["changes"].clone();
    assert_eq!(events[0]["by"], Value::Null, "/identify names no token");
    assert_eq!(events[1]["type"], "deleted");
    assert_eq!(events[1]["by"], "support");
    let tokens_file = tokens.clone();
    let app = app.restart(move |c| c.tokens = Some(tokens_file));
    assert_eq!(feed(&app)["changes"], events, "the same after a restart");
    let unread = request(app.addr, "GET", "/changes", b"", &[]);
    assert_eq!(
        unread.status, 401,
        "the feed wants a token when the server has them"
    );
}

#[test]
fn a_contacts_own_changes_are_the_events_that_name_it() {
    let app = spawn_app_with(|_| {});
    app.identify(r#"{"email":"george@hillvalley.edu","phoneNumber":"919191"}"#);
    app.identify(r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}"#);
    app.identify(r#"{"email":"doc@hillvalley.edu"}"#);
    app.identify(r#"{"email":"george@hillvalley.edu","phoneNumber":"717171"}"#);
    let own = changes(&app, "contact=2");
    assert_eq!(
        kinds(own["changes"].as_array().unwrap()),
        ["created", "merged"]
    );
    assert_eq!(own["last"], 4);
    let one = changes(&app, "contact=2&limit=1");
    assert_eq!(one["changes"][0]["type"], "merged", "the newest");
    assert_eq!(changes(&app, "contact=99")["changes"], json!([]));
    for bad in ["contact=x", "contact=2&after=1", "contact=2&wait=1"] {
        assert_eq!(app.get(&format!("/changes?{bad}")).status, 400, "{bad}");
    }
}
