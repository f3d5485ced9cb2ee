//! File modes (docs/API.md, "Exposure"): the data directory is made 0700 and everything in it,
//! a cluster member's `raft/` folder included, is private to the server's user; a start on a
//! directory (or a tokens file) others can read warns how to fix it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::common::request;
use crate::process_support::{free_addr, healthy, ServerProcess};

/// Every file and directory under `dir` (itself included) whose mode lets others in.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        let expected = if meta.is_dir() { 0o700 } else { 0o600 };
        if mode != expected {
            found.push(format!("{} is {mode:o}", path.display()));
        }
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    found
}

#[test]
fn a_new_data_directory_and_every_file_in_it_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("new").join("data");
    let data_arg = data.display().to_string();
    let log = tmp.path().join("server.log");
    let mut server = ServerProcess::start(
        &[
            "--data-dir",
            &data_arg,
            "--snapshot-every-bytes",
            "4096",
            "--snapshot-log-percent",
            "0",
        ],
        &log,
        healthy,
    );
    for i in 0..200 {
        let body = format!(r#"{{"email":"c{i}@x.io","phoneNumber":"{i}"}}"#);
        assert_eq!(
            request(server.addr, "POST", "/identify", body.as_bytes(), &[]).status,
            200
        );
    }
    // A backup stages its files in the data directory.
    assert_eq!(request(server.addr, "GET", "/backup", b"", &[]).status, 200);
    server.stop();
    assert!(data.join("LOCK").exists());
    assert_eq!(open_to_others(&data), Vec::<String>::new());
    assert!(
        !server.log_text().contains("chmod 700"),
        "no warning on a directory it made"
    );
}

#[test]
fn a_cluster_members_files_are_private_too() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("member");
    let data_arg = data.display().to_string();
    let addr = free_addr();
    let peers = format!("1={addr}");
    let args = [
        "--addr",
        &addr.to_string(),
        "--data-dir",
        &data_arg,
        "--node-id",
        "1",
        "--peers",
        &peers,
        "--raft-snapshot-entries",
        "5",
    ]
    .map(str::to_owned);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let log = tmp.path().join("member.log");
    let command = crate::process_support::command(&args, &log);
    let mut member = ServerProcess::spawn(command, addr, &log, |a| {
        let ready =
            crate::cluster_support::call(a, "GET", "/readyz", "", &[], Duration::from_secs(2));
        ready.is_ok_and(|r| r.status == 200)
    });
    for i in 0..20 {
        let body = format!(r#"{{"email":"m{i}@x.io"}}"#);
        assert_eq!(
            request(addr, "POST", "/identify", body.as_bytes(), &[]).status,
            200
        );
    }
    member.wait_until(Duration::from_secs(10), "a Raft snapshot", || {
        std::fs::read_dir(data.join("raft/snapshots")).is_ok_and(|d| d.count() > 0)
    });
    member.stop();
    assert!(data.join("raft").is_dir());
    assert_eq!(open_to_others(&data), Vec::<String>::new());
}

#[test]
fn a_start_on_a_directory_or_a_tokens_file_others_can_read_warns_how_to_fix_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shared");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "ops operate s3cret\n").unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (data_arg, tokens_arg) = (data.display().to_string(), tokens.display().to_string());
    let args = ["--data-dir", &data_arg, "--tokens", &tokens_arg];
    let mut server = ServerProcess::start(&args, &tmp.path().join("log"), healthy);
    for fix in [
        format!("chmod 700 {data_arg}"),
        format!("chmod 600 {tokens_arg}"),
    ] {
        server.wait_until(Duration::from_secs(10), &fix, || {
            server.log_text().contains(&fix)
        });
    }
    server.stop();
    assert!(
        !server.log_text().contains("s3cret"),
        "the secret is never logged"
    );
}
