//! A full disk, made for the test as a small tmpfs: the log uses the space left (no fill-ahead
//! when there is no room for it), then fails closed with messages that say what to do; a restart
//! on the still-full disk says it is full; with space freed, nothing acknowledged is lost.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{spawn_app_in, TestApp};

/// A tmpfs of `size` mounted for as long as this lives.
struct Tmpfs {
    path: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let parent = tempfile::tempdir().expect("temp dir");
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Tmpfs {
            path,
            _parent: parent,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// Fills the disk under `dir` with one file, then gives `keep` bytes of it back.
fn fill_leaving(dir: &Path, keep: u64) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![1u8; 64 << 10];
    while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
    let len = std::fs::metadata(&path).unwrap().len();
    file.set_len(len.saturating_sub(keep)).unwrap();
    path
}

fn body(k: usize) -> String {
    format!(
        r#"{{"email":"{}{k}@shop.test","phoneNumber":"{k}"}}"#,
        "x".repeat(180)
    )
}

fn log_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("wal-"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

#[test]
#[ignore = "needs root to mount a tmpfs; .ci/run includes it when run as root"]
fn a_full_disk_fails_closed_says_what_to_do_and_loses_nothing() {
    let disk = Tmpfs::mount("2m");
    let dir = disk.path.join("data");
    let mut app: TestApp = spawn_app_in(&dir, |_| {}).expect("start on an empty disk");
    // The writer reserved its zeros at start-up; leave less than its next reserve free.
    let filler = fill_leaving(&disk.path, 300 << 10);
    let mut acked = Vec::new();
    let refused = loop {
        let k = acked.len();
        let answer = app.identify(&body(k));
        if answer.status != 200 {
            break answer;
        }
        acked.push(answer.text);
        assert!(k < 100_000, "the disk never filled");
    };
    assert_eq!(refused.status, 503);
    assert!(refused.text.contains("nothing changed"), "{}", refused.text);
    assert!(
        log_bytes(&dir) > (1 << 20) + (100 << 10),
        "the log used the space past its reserve: {} bytes",
        log_bytes(&dir)
    );
    let read = app.get("/contacts/1");
    assert_eq!(read.status, 503);
    assert!(read.text.contains("reads are refused"), "{}", read.text);
    let ready = app.get("/readyz");
    assert_eq!(ready.status, 503);
    let why = ready.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(why.contains("is full"), "{why}");
    assert!(why.contains(&dir.display().to_string()), "{why}");
    assert!(why.contains("free at least"), "{why}");
    let _ = app.stop();

    let still_full = spawn_app_in(&dir, |_| {})
        .err()
        .expect("a full disk refuses start-up");
    let message = still_full.to_string();
    assert!(
        message.contains("is full") && message.contains("free at least"),
        "{message}"
    );
    assert!(message.contains(&dir.display().to_string()), "{message}");

    std::fs::remove_file(filler).unwrap();
    let restarted = spawn_app_in(&dir, |_| {}).expect("start once space is free");
    assert_eq!(restarted.get("/readyz").status, 200);
    for (k, answer) in acked.iter().enumerate() {
        assert_eq!(&restarted.identify(&body(k)).text, answer, "request {k}");
    }
    let rows = restarted.get("/contacts/export?format=ndjson").text;
    assert_eq!(
        rows.lines().count(),
        acked.len(),
        "every acknowledged contact and nothing else"
    );
}
