//! A consumer that follows the change feed and applies every event's `contacts` to a map from id
//! to primary ends with the map the rows say (each live contact's `linkedId`, or its own id for
//! a primary; deleted ones gone), at checkpoints and at the end: under random requests,
//! deletes, blocks, unblocks, edits, erasures and imports with small guards, across a `kill -9` of the server,
//! and with the consumer going back to an earlier seq now and then (delivery is at least once:
//! applying an event twice is harmless).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::process_support::ServerProcess;
use crate::storage_support::try_request;

/// Id to primary (None once gone), as a consumer rebuilds it from the feed.
pub type Primaries = HashMap<u64, Option<u64>>;

/// Applies one event's contacts.
pub fn apply_event(map: &mut Primaries, event: &Value) {
    for c in event["contacts"].as_array().unwrap() {
        map.insert(c["id"].as_u64().unwrap(), c["primary"].as_u64());
    }
}

/// What the rows say the map must be: every row's primary, or None for a deleted or erased one.
pub fn primaries_of_rows(ndjson: &str) -> Primaries {
    (ndjson.lines())
        .map(|line| {
            let row: Value = serde_json::from_str(line).unwrap();
            let id = row["id"].as_u64().unwrap();
            let primary = match row["deletedAt"].is_null() && row["erasedAt"].is_null() {
                true => Some(row["linkedId"].as_u64().unwrap_or(id)),
                false => None,
            };
            (id, primary)
        })
        .collect()
}

/// The rows' map against the consumer's: every row's entry must be there and equal, except a
/// deleted row the feed never mentioned (a row imported deleted needs no event to be gone).
pub fn assert_rebuilt(rows: &Primaries, rebuilt: &Primaries, at: &str) {
    for (id, primary) in rows {
        let seen = rebuilt.get(id).copied();
        let agree = seen == Some(*primary) || (primary.is_none() && seen.is_none());
        assert!(
            agree,
            "{at}: contact {id}: the rows say {primary:?}, the feed {seen:?}"
        );
    }
    for (id, primary) in rebuilt {
        if primary.is_some() {
            assert!(
                rows.contains_key(id),
                "{at}: the feed names contact {id}, no row does"
            );
        }
    }
}

/// A small deterministic generator (the test's seed is printed when it fails).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One random change, as an HTTP request: a method, a path and a body. Deletions pick among
/// `known` ids (those answers named) and, now and then, one no contact has.
pub fn random_change(
    rng: &mut Rng,
    next_import_id: &mut u64,
    known: &[u64],
) -> (&'static str, String, String) {
    let email = |r: &mut Rng| format!("e{}@shop.test", r.below(9));
    let phone = |r: &mut Rng| format!("{}", 100 + r.below(7));
    match rng.below(21) {
        0..=11 => {
            let body = match rng.below(3) {
                0 => format!(r#"{{"email":"{}"}}"#, email(rng)),
                1 => format!(r#"{{"phoneNumber":"{}"}}"#, phone(rng)),
                _ => format!(
                    r#"{{"email":"{}","phoneNumber":"{}"}}"#,
                    email(rng),
                    phone(rng)
                ),
            };
            ("POST", "/identify".into(), body)
        }
        12..=15 => {
            let pick = rng.below(known.len() as u64 + 2) as usize;
            let id = known.get(pick).copied().unwrap_or(7_000_000 + pick as u64);
            ("DELETE", format!("/contacts/{id}"), String::new())
        }
        16 => (
            "POST",
            "/blocklist".into(),
            format!(r#"{{"phoneNumber":"{}"}}"#, phone(rng)),
        ),
        17 => (
            "DELETE",
            format!("/blocklist?phoneNumber={}", phone(rng)),
            String::new(),
        ),
        18 => {
            let pick = rng.below(known.len() as u64 + 1) as usize;
            let id = known.get(pick).copied().unwrap_or(7_000_000);
            let body = match rng.below(3) {
                0 => format!(r#"{{"email":"{}"}}"#, email(rng)),
                1 => format!(r#"{{"phoneNumber":"{}"}}"#, phone(rng)),
                _ => format!(r#"{{"email":"{}","phoneNumber":null}}"#, email(rng)),
            };
            ("PATCH", format!("/contacts/{id}"), body)
        }
        19 => {
            let body = match rng.below(3) {
                0 => format!(r#"{{"email":"{}"}}"#, email(rng)),
                _ => {
                    let pick = rng.below(known.len() as u64 + 1) as usize;
                    let id = known.get(pick).copied().unwrap_or(7_000_000);
                    format!(r#"{{"contactId":{id}}}"#)
                }
            };
            ("POST", "/erasures".into(), body)
        }
        _ => {
            let mut rows = String::from(
                "id,phoneNumber,email,linkedId,linkPrecedence,createdAt,updatedAt,deletedAt\n",
            );
            for _ in 0..1 + rng.below(4) {
                let id = *next_import_id;
                *next_import_id += 1;
                let linked = if rng.below(3) == 0 && id > 1_000_001 {
                    (id - 1).to_string()
                } else {
                    String::new()
                };
                let precedence = if linked.is_empty() {
                    "primary"
                } else {
                    "secondary"
                };
                let at = "2023-01-01T00:00:00.000Z";
                rows += &format!(
                    "{id},{},{},{linked},{precedence},{at},{at},\n",
                    phone(rng),
                    email(rng)
                );
            }
            ("POST", "/contacts/import?format=csv".into(), rows)
        }
    }
}

/// The real binary on `dir`, restarted as the test asks (its log in a directory of its own).
pub struct Server {
    process: ServerProcess,
    pub addr: SocketAddr,
    _logs: tempfile::TempDir,
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        let logs = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--data-dir",
            dir.to_str().unwrap(),
            "--generic-threshold",
            "4",
            "--max-cluster-size",
            "12",
        ];
        args.extend_from_slice(extra);
        let log = logs.path().join("server.log");
        let process = ServerProcess::start(&args, &log, |addr| {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Server {
            addr: process.addr,
            process,
            _logs: logs,
        }
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// A consumer on its own thread: follows the feed of whatever address `target` holds,
/// through errors (a server that is down), applying events to its map; now and then it goes
/// back to a seq it saved earlier and applies the events again.
pub struct Consumer {
    pub map: Arc<Mutex<Primaries>>,
    pub cursor: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Consumer {
    pub fn follow(target: Arc<Mutex<Vec<SocketAddr>>>, seed: u64) -> Consumer {
        let map = Arc::new(Mutex::new(Primaries::new()));
        let cursor = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, c, s) = (map.clone(), cursor.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut rng = Rng::new(seed);
            let mut saved = 0;
            while !s.load(Ordering::SeqCst) {
                let addrs = target.lock().unwrap().clone();
                let addr = addrs[rng.below(addrs.len() as u64) as usize];
                let after = c.load(Ordering::SeqCst);
                let limit = 1 + rng.below(40);
                let path = format!("/changes?after={after}&limit={limit}&wait=1");
                let Ok(reply) = try_request(addr, "GET", &path, "") else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                if reply.status != 200 {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let page: Value = serde_json::from_str(&reply.body).unwrap();
                let mut map = m.lock().unwrap();
                for event in page["changes"].as_array().unwrap() {
                    let seq = event["seq"].as_u64().unwrap();
                    assert!(
                        seq > after,
                        "an event at or before the cursor: {seq} <= {after}"
                    );
                    apply_event(&mut map, event);
                }
                drop(map);
                let last = page["last"].as_u64().unwrap();
                if rng.below(10) == 0 {
                    // The consumer "crashes" and resumes from a seq it saved a while ago.
                    c.store(saved, Ordering::SeqCst);
                } else {
                    if rng.below(4) == 0 {
                        saved = last.max(after);
                    }
                    c.store(last.max(after), Ordering::SeqCst);
                }
            }
        });
        Consumer {
            map,
            cursor,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until the consumer has read up to `head`, then returns its map.
    pub fn caught_up(&self, head: u64) -> Primaries {
        crate::common::wait_until(Duration::from_secs(30), || {
            self.cursor.load(Ordering::SeqCst) >= head
        });
        self.map.lock().unwrap().clone()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The feed's newest seq at `addr`.
pub fn head(addr: SocketAddr) -> u64 {
    try_head(addr).expect("the server answers")
}

/// The feed's newest seq at `addr`, if it answers.
fn try_head(addr: SocketAddr) -> Option<u64> {
    let reply = try_request(addr, "GET", "/changes?after=18446744073709551615", "").ok()?;
    let page: Value = serde_json::from_str(&reply.body).ok()?;
    page["last"].as_u64()
}

/// Every row's primary (None when deleted), page by page.
pub fn rows(addr: SocketAddr) -> Primaries {
    let mut out = Primaries::new();
    let mut after = 0;
    loop {
        let path = format!("/contacts?after={after}&limit=1000");
        let reply = try_request(addr, "GET", &path, "").unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let page: Value = serde_json::from_str(&reply.body).unwrap();
        let lines: Vec<String> = (page["contacts"].as_array().unwrap().iter())
            .map(|row| row.to_string())
            .collect();
        out.extend(primaries_of_rows(&lines.join("\n")));
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// Sends one random change; any answer of the contract (a refusal too) is fine. Remembers the
/// ids an answer names, for later deletions.
fn change(addr: SocketAddr, rng: &mut Rng, next_import_id: &mut u64, known: &mut Vec<u64>) {
    let (method, path, body) = random_change(rng, next_import_id, known);
    let reply = try_request(addr, method, &path, &body).expect("the server answers");
    assert!(
        reply.status < 500,
        "{method} {path}: {} {}",
        reply.status,
        reply.body
    );
    if let Ok(answer) = serde_json::from_str::<Value>(&reply.body) {
        let contact = &answer["contact"];
        known.extend(contact["primaryContactId"].as_u64());
        known.extend(
            (contact["secondaryContactIds"]
                .as_array()
                .into_iter()
                .flatten())
            .filter_map(Value::as_u64),
        );
    }
    known.sort_unstable();
    known.dedup();
}

#[test]
fn a_consumer_rebuilds_every_primary_from_the_feed_across_a_kill_9() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let seed = now.unwrap().as_nanos() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    eprintln!("seed {seed}");
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Server::start(tmp.path(), &[]);
    let target = Arc::new(Mutex::new(vec![server.addr]));
    let consumer = Consumer::follow(target.clone(), seed);
    let mut rng = Rng::new(seed);
    let mut next_import_id = 1_000_000;
    let mut known = Vec::new();
    for round in 0..3 {
        for _ in 0..120 {
            change(server.addr, &mut rng, &mut next_import_id, &mut known);
        }
        let at = format!("checkpoint {round} (seed {seed})");
        assert_rebuilt(
            &rows(server.addr),
            &consumer.caught_up(head(server.addr)),
            &at,
        );
    }
    // kill -9 in the middle of a burst of requests from a second client.
    let addr = server.addr;
    let burst = std::thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 1);
        let mut ids = 2_000_000;
        for _ in 0..400 {
            let (method, path, body) = random_change(&mut rng, &mut ids, &[]);
            if try_request(addr, method, &path, &body).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(30 + rng.below(200)));
    server.kill();
    let _ = burst.join();
    let server = Server::start(tmp.path(), &[]);
    *target.lock().unwrap() = vec![server.addr];
    for _ in 0..120 {
        change(server.addr, &mut rng, &mut next_import_id, &mut known);
    }
    let at = format!("after the kill (seed {seed})");
    let rebuilt = consumer.caught_up(head(server.addr));
    assert_rebuilt(&rows(server.addr), &rebuilt, &at);
    // The run was worth checking: contacts merged into others, and contacts gone.
    let merged = rebuilt
        .iter()
        .filter(|(id, p)| p.is_some_and(|p| p != **id))
        .count();
    let gone = rebuilt.values().filter(|p| p.is_none()).count();
    assert!(
        merged > 0 && gone > 0,
        "{merged} merged, {gone} gone (seed {seed})"
    );
}

/// Every event a member serves, paged.
fn whole_feed(addr: SocketAddr) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let path = format!("/changes?after={after}&limit=1000");
        let reply = try_request(addr, "GET", &path, "").unwrap();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let page: Value = serde_json::from_str(&reply.body).unwrap();
        let events = page["changes"].as_array().unwrap().clone();
        if events.is_empty() {
            return out;
        }
        after = page["last"].as_u64().unwrap();
        out.extend(events);
    }
}

#[test]
fn on_three_members_the_feed_is_the_same_events_with_the_same_seqs_whichever_answers() {
    use crate::cluster_support::{Cluster, Options};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let seed = now.unwrap().as_nanos() as u64 | 1;
    eprintln!("seed {seed}");
    let group = Cluster::start(
        3,
        Options {
            // Each member snapshots often; the leader keeps enough log that a follower slowed
            // down catches up from it, not from a snapshot (which carries no events: cursors
            // before it get 410 on that member, as docs/API.md says).
            snapshot_entries: Some(40),
            keep_entries: Some(1000),
            ..Options::default()
        },
    );
    group.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let addrs = group.addrs();
    let consumer = Consumer::follow(Arc::new(Mutex::new(addrs.clone())), seed);
    let mut rng = Rng::new(seed);
    let mut next_import_id = 1_000_000;
    let mut known = Vec::new();
    for _ in 0..150 {
        let addr = addrs[rng.below(3) as usize];
        change(addr, &mut rng, &mut next_import_id, &mut known);
    }
    // Every member has applied everything: each serves the same head.
    let newest = head(addrs[0]).max(head(addrs[1])).max(head(addrs[2]));
    crate::common::wait_until(Duration::from_secs(20), || {
        addrs.iter().all(|&a| head(a) == newest)
    });
    let feeds: Vec<Vec<Value>> = addrs.iter().map(|&a| whole_feed(a)).collect();
    assert!(!feeds[0].is_empty());
    assert_eq!(feeds[0], feeds[1], "members 1 and 2 (seed {seed})");
    assert_eq!(feeds[0], feeds[2], "members 1 and 3 (seed {seed})");
    let at = format!("three members (seed {seed})");
    assert_rebuilt(&rows(addrs[0]), &consumer.caught_up(newest), &at);
    // A member killed and started again applies its log again: the same events, none twice.
    let mut group = group;
    let leader = group.wait_for_leader(&[1, 2, 3], Duration::from_secs(20));
    let follower = [1, 2, 3].into_iter().find(|&id| id != leader).unwrap();
    group.kill(follower);
    for _ in 0..20 {
        let addr = group.node(leader).addr;
        change(addr, &mut rng, &mut next_import_id, &mut known);
    }
    group.restart(follower);
    let addrs = group.addrs();
    let newest = head(group.node(leader).addr);
    crate::common::wait_until(Duration::from_secs(30), || {
        addrs.iter().all(|&a| try_head(a) == Some(newest))
    });
    let restarted = whole_feed(group.node(follower).addr);
    assert_eq!(
        restarted,
        whole_feed(group.node(leader).addr),
        "after a restart (seed {seed})"
    );
    // The newest events, which a member serves from memory: none twice there either.
    let tail = |addr| {
        let path = format!("/changes?after={}&limit=1000", newest.saturating_sub(30));
        try_request(addr, "GET", &path, "").unwrap().body
    };
    let (of_follower, of_leader) = (
        tail(group.node(follower).addr),
        tail(group.node(leader).addr),
    );
    assert_eq!(
        of_follower, of_leader,
        "the newest events after a restart (seed {seed})"
    );
}

/// The server's resident memory, from /proc.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `count` identify requests, each a new contact, from four keep-alive connections.
fn make_changes(addr: SocketAddr, count: usize) {
    use std::io::{BufRead, BufReader, Read, Write};
    std::thread::scope(|scope| {
        for t in 0..4 {
            scope.spawn(move || {
                let stream = std::net::TcpStream::connect(addr).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                for i in 0..count / 4 {
                    let body = format!(r#"{{"email":"m{t}x{i}@shop.test"}}"#);
                    let head = format!(
                        "POST /identify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    writer.write_all((head + &body).as_bytes()).unwrap();
                    let (mut line, mut length) = (String::new(), 0);
                    reader.read_line(&mut line).unwrap();
                    assert!(line.contains(" 200 "), "{line}");
                    loop {
                        line.clear();
                        reader.read_line(&mut line).unwrap();
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut answer = vec![0; length];
                    reader.read_exact(&mut answer).unwrap();
                }
            });
        }
    });
}

#[test]
#[ignore = "makes 100,000 changes on each of two servers (about a minute in a debug build); .ci/run includes it"]
fn a_stalled_stream_costs_the_server_a_page_never_the_changes_it_has_not_read() {
    let (with, without) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (stalled, control) = (
        Server::start(with.path(), &[]),
        Server::start(without.path(), &[]),
    );
    // A reader that asks for every event from the first and then reads nothing at all.
    let mut reader = std::net::TcpStream::connect(stalled.addr).unwrap();
    std::io::Write::write_all(
        &mut reader,
        b"GET /changes?after=0 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    )
    .unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| make_changes(stalled.addr, 100_000));
        scope.spawn(|| make_changes(control.addr, 100_000));
    });
    assert_eq!(head(stalled.addr), 100_000, "every change is an event");
    let (with_reader, without_reader) = (resident_kib(stalled.pid()), resident_kib(control.pid()));
    eprintln!("resident: {with_reader} KiB with the stalled reader, {without_reader} KiB without");
    // The bound: the reader's page (100 events, a few KiB) and the allocator's noise, well
    // under the ~20 MB the unread events would take.
    assert!(
        with_reader <= without_reader + 8 * 1024,
        "{with_reader} KiB with a stalled reader against {without_reader} KiB without"
    );
    drop(reader);
}

#[test]
fn the_feed_made_again_from_the_log_is_the_same_events_with_the_same_cause_and_token() {
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "support operate op3rate\n").unwrap();
    let data = tmp.path().join("data");
    let extra = ["--tokens", tokens.to_str().unwrap()];
    let mut server = Server::start(&data, &extra);
    let call = |addr, method, path: &str, body: &str| {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer op3rate\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        std::io::Write::write_all(&mut stream, head.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        answer
    };
    call(
        server.addr,
        "POST",
        "/identify",
        r#"{"email":"a@shop.test","phoneNumber":"1"}"#,
    );
    call(
        server.addr,
        "POST",
        "/identify",
        r#"{"email":"b@shop.test","phoneNumber":"1"}"#,
    );
    call(server.addr, "POST", "/blocklist", r#"{"phoneNumber":"1"}"#);
    call(
        server.addr,
        "PATCH",
        "/contacts/2",
        r#"{"email":"c@shop.test"}"#,
    );
    call(server.addr, "DELETE", "/contacts/1", "");
    call(server.addr, "POST", "/erasures", r#"{"contactId":2}"#);
    let feed = |addr| {
        let answer = call(addr, "GET", "/changes?limit=1000", "");
        let body = answer.split("\r\n\r\n").nth(1).unwrap().to_owned();
        serde_json::from_str::<Value>(&body).unwrap()["changes"].clone()
    };
    let before = feed(server.addr);
    let causes: Vec<&str> = (before.as_array().unwrap().iter())
        .map(|e| e["cause"].as_str().unwrap())
        .collect();
    assert!(
        ["blocklist", "edit", "delete", "erasure"]
            .iter()
            .all(|cause| causes.contains(cause)),
        "{causes:?}"
    );
    let last = &before.as_array().unwrap().last().unwrap();
    assert_eq!(last["type"], "erased");
    assert_eq!(
        last["contacts"],
        serde_json::json!([{"id": 2, "primary": null}])
    );
    server.kill();
    // The feed's files are gone: every event is made again from the log at start-up.
    std::fs::remove_dir_all(data.join("changes")).unwrap();
    let server = Server::start(&data, &extra);
    assert_eq!(feed(server.addr), before);
}
