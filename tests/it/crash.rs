//! `kill -9` of the real binary under concurrent writes (or right after an edit) never loses an
//! acknowledged answer, and a second server on the same data directory refuses to start.
//!
//! Kept apart from the in-process tests of `durability.rs`: a child being spawned holds copies
//! of the test process's descriptors until it execs, the data directory's lock among them, so a
//! store reopened meanwhile would find its own directory "in use".

use crate::storage_support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use storage_support::{free_port, try_request};

/// The identify answers a client saw as 200s: what it asked and the `contact` it was told.
type Acknowledged = Vec<(Value, Value)>;

/// The real binary on `dir`, with its log lines in `log`.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Starts the binary and waits until it accepts connections; tries another port if the
    /// free one was taken meanwhile.
    fn start(dir: &Path, log: &Path, extra: &[&str]) -> Server {
        for _ in 0..5 {
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let mut server = Server {
                child: binary(dir, addr, log, extra),
                addr,
                log: log.to_owned(),
            };
            match server.wait_until_listening() {
                Ok(()) => return server,
                Err(said) if said.contains("cannot listen") => continue,
                Err(said) => panic!("the server exited: {said}"),
            }
        }
        panic!("no free port after five tries");
    }

    /// Polls until the server accepts connections; if it exits first, says what it logged.
    fn wait_until_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(self.addr).is_err() {
            if self.child.try_wait().unwrap().is_some() {
                return Err(self.log_text());
            }
            assert!(Instant::now() < deadline, "the server never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary(dir: &Path, addr: SocketAddr, log: &Path, extra: &[&str]) -> Child {
    let log = std::fs::File::create(log).expect("create the log file");
    Command::new(env!("CARGO_BIN_EXE_identity-engine"))
        .args(["--addr", &addr.to_string(), "--data-dir"])
        .arg(dir)
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn the server")
}

/// Writes from `threads` clients until `killed`; returns the answers acknowledged (200).
fn load(
    addr: SocketAddr,
    threads: usize,
    round: usize,
    acknowledged: &AtomicUsize,
    killed: &AtomicBool,
) -> Acknowledged {
    let seen = Mutex::new(Acknowledged::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let seen = &seen;
            scope.spawn(move || {
                for n in 0.. {
                    let body = request_body(round, t, n);
                    match try_request(addr, "POST", "/identify", &body.to_string()) {
                        Ok(reply) if reply.status == 200 => {
                            let answer: Value = serde_json::from_str(&reply.body).unwrap();
                            seen.lock().unwrap().push((body, answer["contact"].clone()));
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(reply) => panic!("{body}: {} {}", reply.status, reply.body),
                        Err(_) if killed.load(Ordering::SeqCst) => return,
                        Err(e) => panic!("{body}: {e} while the server was up"),
                    }
                }
            });
        }
    });
    seen.into_inner().unwrap()
}

/// Pools small enough that clients keep merging each other's clusters, large enough that most
/// requests still create a contact; now and then only one identifier.
fn request_body(round: usize, thread: usize, n: usize) -> Value {
    let x = (round * 7919 + thread * 104_729 + n * 7_727) % 30_011;
    let email = format!("c{}@example.com", x % 211);
    let phone = format!("555-{:03}", (x / 211) % 163);
    match x % 5 {
        0 => serde_json::json!({ "email": email }),
        1 => serde_json::json!({ "phoneNumber": phone }),
        _ => serde_json::json!({ "email": email, "phoneNumber": phone }),
    }
}

fn ids(contact: &Value) -> BTreeSet<u64> {
    let primary = contact["primaryContactId"].as_u64().unwrap();
    let secondaries = contact["secondaryContactIds"].as_array().unwrap();
    let secondaries = secondaries.iter().map(|v| v.as_u64().unwrap());
    std::iter::once(primary).chain(secondaries).collect()
}

fn strings(contact: &Value, key: &str) -> BTreeSet<String> {
    let list = contact[key].as_array().unwrap();
    list.iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Without deletions a cluster only grows and its primary only gets older: every acknowledged
/// answer must be contained in today's answer for the same identifier.
fn assert_still_true(server: &Server, acknowledged: &Acknowledged) {
    for (asked, told) in acknowledged {
        let key = if asked["email"].is_string() {
            "email"
        } else {
            "phoneNumber"
        };
        let again = serde_json::json!({ key: asked[key] }).to_string();
        let reply = try_request(server.addr, "POST", "/identify", &again).expect("answer");
        assert_eq!(reply.status, 200, "{again}: {}", reply.body);
        let now: Value = serde_json::from_str(&reply.body).unwrap();
        let now = &now["contact"];
        let case = format!("{asked} was told {told}, now {now}");
        let primary = |c: &Value| c["primaryContactId"].as_u64().unwrap();
        assert!(primary(now) <= primary(told), "a newer primary: {case}");
        assert!(ids(told).is_subset(&ids(now)), "lost contacts: {case}");
        for key in ["emails", "phoneNumbers"] {
            assert!(
                strings(told, key).is_subset(&strings(now, key)),
                "lost {key}: {case}"
            );
        }
    }
}

#[test]
fn kill_9_under_concurrent_writes_never_loses_an_acknowledged_answer() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let mut acknowledged = Acknowledged::new();
    // Every policy answers only after the write, so each survives `kill -9` (not power loss).
    for (round, fsync) in ["always", "interval", "never"].into_iter().enumerate() {
        // Tiny segments, so that kills also land in the middle of background snapshots.
        let options = ["--snapshot-every-bytes", "4096", "--fsync", fsync];
        let mut server = Server::start(&data, &log, &options);
        assert_still_true(&server, &acknowledged);
        let (count, killed) = (AtomicUsize::new(0), AtomicBool::new(false));
        let target = 150 + 100 * round;
        let addr = server.addr;
        let seen = std::thread::scope(|scope| {
            let clients = scope.spawn(|| load(addr, 4, round, &count, &killed));
            let deadline = Instant::now() + Duration::from_secs(30);
            while count.load(Ordering::SeqCst) < target
                && !clients.is_finished()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            // Killed whatever happened, so that the clients always stop.
            killed.store(true, Ordering::SeqCst);
            server.kill();
            clients.join().expect("the clients do not panic")
        });
        assert!(
            seen.len() >= target,
            "round {round}: only {} answers: {}",
            seen.len(),
            server.log_text()
        );
        acknowledged.extend(seen);
    }
    let server = Server::start(&data, &log, &[]);
    assert_still_true(&server, &acknowledged);
}

#[test]
fn kill_9_right_after_an_acknowledged_edit_keeps_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let mut server = Server::start(&data, &log, &[]);
    for body in [
        r#"{"email":"doc@hillvalley.edu","phoneNumber":"111"}"#,
        r#"{"email":"marty@hillvalley.edu","phoneNumber":"111"}"#,
    ] {
        let reply = try_request(server.addr, "POST", "/identify", body).expect("answer");
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let edit = r#"{"email":"MARTY@gmail.com","phoneNumber":"222"}"#;
    let reply = try_request(server.addr, "PATCH", "/contacts/2", edit).expect("answer");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let edited: Value = serde_json::from_str(&reply.body).unwrap();
    server.kill();
    let server = Server::start(&data, &log, &[]);
    let row = try_request(server.addr, "GET", "/contacts/2", "").expect("answer");
    let row: Value = serde_json::from_str(&row.body).unwrap();
    assert_eq!(
        row, edited["contact"],
        "the acknowledged edit survived kill -9"
    );
    let doc = try_request(server.addr, "GET", "/contacts/1/identity", "").expect("answer");
    let doc: Value = serde_json::from_str(&doc.body).unwrap();
    assert_eq!(
        doc["contact"], edited["identities"][1],
        "and so did the split"
    );
}

#[test]
fn a_second_server_on_the_same_data_dir_refuses_to_start_because_it_is_in_use() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let first = Server::start(&data, &tmp.path().join("first.log"), &[]);
    let second_log = tmp.path().join("second.log");
    let addr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut second = binary(&data, addr, &second_log, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            panic!("the second server did not refuse to start");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let said = std::fs::read_to_string(&second_log).unwrap();
    assert!(
        !status.success(),
        "the second server exits with failure: {said}"
    );
    assert!(
        said.contains("in use"),
        "it says the data dir is in use: {said}"
    );
    let reply = try_request(first.addr, "POST", "/identify", r#"{"email":"a@b.c"}"#).unwrap();
    assert_eq!(
        reply.status, 200,
        "the first server still serves: {}",
        reply.body
    );
}

/// A small generator of numbers, so that the kill points are the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = (self.0.wrapping_mul(6364136223846793005)).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn post(server: &Server, path: &str, body: &Value) -> storage_support::Reply {
    let reply = try_request(server.addr, "POST", path, &body.to_string()).expect("an answer");
    assert_eq!(reply.status, 200, "{path} {body}: {}", reply.body);
    reply
}

/// The rows a server serves, as the model knows them: id, values, link, and gone or not.
fn rows_of(rows: impl Iterator<Item = Value>) -> Vec<Value> {
    rows.map(|r| {
        serde_json::json!([
            r["id"],
            r["email"],
            r["phoneNumber"],
            r["linkedId"],
            r["linkPrecedence"],
            r["deletedAt"].is_null(),
            r["erasedAt"].is_null()
        ])
    })
    .collect()
}

#[test]
fn kill_9_at_any_point_of_a_purge_delays_it_and_loses_nothing_else() {
    use crate::erasure::found_in_files;
    use crate::model::{Erase, Model};
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    // Tiny segments, so that a purge has sealed segments and snapshots to replace.
    let options = [
        "--snapshot-every-bytes",
        "4096",
        "--erasure-purge-within",
        "0",
    ];
    let mut server = Server::start(&data, &log, &options);
    let mut model = Model::new();
    let mut now = 0;
    let mut values: Vec<(String, String)> = Vec::new();
    for n in 0..60 {
        let phone = format!("555-{:04}", n - n % 4 / 3);
        let email = format!("p{n}@example.com");
        post(
            &server,
            "/identify",
            &serde_json::json!({ "email": email, "phoneNumber": phone }),
        );
        now += 1;
        model.identify(Some(&email), Some(&phone), now);
        values.push((email, phone));
    }
    // One purge with no kill: how long it takes bounds where the kills land.
    let started = Instant::now();
    post(&server, "/erasures", &serde_json::json!({ "contactId": 1 }));
    let took = started.elapsed().as_millis() as u64;
    now += 1;
    model.erase(&Erase::Contact(1), now).unwrap();
    let mut rng = Lcg(20_261_204);
    for round in 0..10u32 {
        let id = 4 + 5 * round;
        let delay = Duration::from_millis(rng.below(took * 3 / 2 + 2));
        let addr = server.addr;
        let body = serde_json::json!({ "contactId": id }).to_string();
        let asked = std::thread::spawn(move || try_request(addr, "POST", "/erasures", &body));
        // The kill point (not a wait for something): anywhere from before the erasure to
        // after its purge.
        std::thread::sleep(delay);
        server.kill();
        let _ = asked.join();
        server = Server::start(&data, &log, &options);
        // Whether or not the erasure was made before the kill, asking again finishes it.
        let reply = post(
            &server,
            "/erasures",
            &serde_json::json!({ "contactId": id }),
        );
        let answer: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            answer["erasure"]["status"], "done",
            "round {round}: {}",
            reply.body
        );
        now += 1;
        model.erase(&Erase::Contact(id), now).unwrap();
        let (mut erased, mut kept) = (Vec::new(), Vec::new());
        for (row, (email, phone)) in model.contacts().iter().zip(&values) {
            let list = if row.erased_at.is_some() {
                &mut erased
            } else {
                &mut kept
            };
            list.extend([email.as_str(), phone.as_str()]);
        }
        erased.retain(|v| !kept.contains(v));
        let found = found_in_files(&data, &erased);
        assert_eq!(
            found,
            vec![],
            "round {round}, killed after {delay:?}: {}",
            server.log_text()
        );
        assert_eq!(
            found_in_files(&data, &kept[..2]).len(),
            2,
            "the scan sees values"
        );
    }
    let page = try_request(server.addr, "GET", "/contacts?after=0&limit=1000", "").unwrap();
    let page: Value = serde_json::from_str(&page.body).unwrap();
    let served = page["contacts"].as_array().unwrap().iter().cloned();
    let expected = model
        .contacts()
        .into_iter()
        .map(|c| serde_json::to_value(c).unwrap());
    assert_eq!(rows_of(served), rows_of(expected), "nothing else is lost");
    let ledger = try_request(server.addr, "GET", "/erasures", "").unwrap();
    let ledger: Value = serde_json::from_str(&ledger.body).unwrap();
    assert_eq!(ledger["erasures"].as_array().unwrap().len(), 11);
}
