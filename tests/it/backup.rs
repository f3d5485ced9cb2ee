//! Backups: taken from a running server while clients write, restored into a new directory that
//! starts with every change acknowledged before the backup began; damaged files are refused.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use identity_engine::tools::backup;

use crate::common::{spawn_app_in, spawn_app_with, TestApp};

const CLIENTS: usize = 8;

/// `GET /backup`, the body as bytes.
pub fn fetch_backup(addr: SocketAddr) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!("GET /backup HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the backup");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header end");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content length");
    let body = raw[end + 4..].to_vec();
    assert_eq!(body.len(), length, "the whole backup arrived");
    body
}

/// Rows of a server's export, one NDJSON line each.
fn rows(app: &TestApp) -> Vec<String> {
    let export = app.get("/contacts/export?format=ndjson");
    assert_eq!(export.status, 200);
    export.text.lines().map(str::to_owned).collect()
}

/// A request acknowledged before the backup began and what the original answered.
struct Acked {
    body: String,
    answer: String,
}

#[test]
fn a_backup_taken_during_writes_restores_every_change_acknowledged_before_it() {
    // Small segments, so segments are sealed and snapshots taken (and files removed) while the
    // backup is staged and sent.
    let original = spawn_app_with(|c| c.snapshot_every_bytes = 4096);
    let mut before: Vec<Acked> = Vec::new();
    let setup = [
        r#"{"email":"lorraine@hillvalley.edu","phoneNumber":"123456"}"#,
        r#"{"email":"mcfly@hillvalley.edu","phoneNumber":"123456"}"#,
        r#"{"email":"george@hillvalley.edu","phoneNumber":"919191"}"#,
        r#"{"email":"biffsucks@hillvalley.edu","phoneNumber":"717171"}"#,
        r#"{"email":"george@hillvalley.edu","phoneNumber":"717171"}"#,
    ];
    for body in setup {
        assert_eq!(original.identify(body).status, 200);
    }
    // Asked again once the setup is done: its clusters do not change afterwards.
    for body in setup {
        before.push(Acked {
            body: body.to_owned(),
            answer: original.identify(body).text,
        });
    }
    let started = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (started, stop, done) = (started.clone(), stop.clone(), done.clone());
            let addr = original.addr;
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for k in 0.. {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let body = format!(
                        r#"{{"email":"c{client}-{k}@shop.test","phoneNumber":"{client}{k:06}"}}"#
                    );
                    let answer =
                        crate::common::request(addr, "POST", "/identify", body.as_bytes(), &[]);
                    assert_eq!(answer.status, 200, "{}", answer.text);
                    // Answered before the backup was asked for: it must be in the backup.
                    if !started.load(Ordering::Acquire) {
                        acked.push(Acked {
                            body,
                            answer: answer.text,
                        });
                    }
                    done.fetch_add(1, Ordering::Release);
                }
                acked
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::Acquire) < CLIENTS * 30 {
        assert!(Instant::now() < deadline, "the clients are stuck");
        std::thread::yield_now();
    }
    started.store(true, Ordering::Release);
    let file_bytes = fetch_backup(original.addr);
    let after_backup = done.load(Ordering::Acquire);
    while done.load(Ordering::Acquire) < after_backup + CLIENTS * 10 {
        assert!(Instant::now() < deadline, "the clients are stuck");
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Release);
    for client in clients {
        before.extend(client.join().expect("a client does not panic"));
    }

    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("server.backup");
    std::fs::write(&file, &file_bytes).unwrap();
    let report = backup::check(&file).expect("the backup checks");
    assert!(report.contains("every checksum matches"), "{report}");
    let restored_dir = work.path().join("restored");
    backup::restore_dir(&file, &restored_dir).expect("restore");
    let restored = spawn_app_in(&restored_dir, |_| {}).expect("the restored directory starts");

    // The restored rows are the original's first rows: the log up to some point at or after
    // the backup began.
    let (original_rows, restored_rows) = (rows(&original), rows(&restored));
    assert!(restored_rows.len() <= original_rows.len());
    assert_eq!(restored_rows[..], original_rows[..restored_rows.len()]);
    for acked in &before {
        let again = restored.identify(&acked.body);
        assert_eq!(again.status, 200);
        assert_eq!(again.text, acked.answer, "{}", acked.body);
    }
    assert_eq!(
        rows(&restored).len(),
        restored_rows.len(),
        "asking again created nothing: every acknowledged change was there"
    );
}

fn a_backup_of_a_few_contacts(dir: &Path) -> Vec<u8> {
    let app = spawn_app_in(dir, |_| {}).expect("start");
    for k in 0..20 {
        let body = format!(r#"{{"email":"p{k}@shop.test","phoneNumber":"{}"}}"#, k / 2);
        assert_eq!(app.identify(&body).status, 200);
    }
    fetch_backup(app.addr)
}

#[test]
fn a_damaged_backup_is_refused_by_check_and_restore() {
    let work = tempfile::tempdir().unwrap();
    let bytes = a_backup_of_a_few_contacts(&work.path().join("live"));
    let middle = bytes.len() / 2;
    let mut flipped = bytes.clone();
    flipped[middle] ^= 0x04;
    let cases = [
        ("a flipped byte", flipped),
        ("cut short", bytes[..middle].to_vec()),
        ("no trailer", bytes[..bytes.len() - 4].to_vec()),
        ("not a backup", b"hello".to_vec()),
    ];
    for (case, damaged) in cases {
        let file = work.path().join("damaged.backup");
        std::fs::write(&file, &damaged).unwrap();
        let refused = backup::check(&file).expect_err(case).to_string();
        assert!(refused.contains("damaged"), "{case}: {refused}");
        let target = work
            .path()
            .join(format!("restored-{}", case.replace(' ', "-")));
        let refused = backup::restore_dir(&file, &target)
            .expect_err(case)
            .to_string();
        assert!(refused.contains("damaged"), "{case}: {refused}");
        let left = std::fs::read_dir(&target).map_or(0, |d| d.count());
        assert_eq!(left, 0, "{case}: a refused restore leaves nothing behind");
    }
    let file = work.path().join("good.backup");
    std::fs::write(&file, &bytes).unwrap();
    let occupied = work.path().join("occupied");
    std::fs::create_dir(&occupied).unwrap();
    std::fs::write(occupied.join("notes.txt"), "mine").unwrap();
    let refused = backup::restore_dir(&file, &occupied)
        .unwrap_err()
        .to_string();
    assert!(refused.contains("not empty"), "{refused}");
    assert_eq!(
        std::fs::read_to_string(occupied.join("notes.txt")).unwrap(),
        "mine"
    );
    let report = backup::restore_dir(&file, &work.path().join("fresh")).expect("restore");
    assert!(report.contains("20 contact(s)"), "{report}");
}
