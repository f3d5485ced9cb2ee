//! The console in a real browser: headless Chromium driven by Playwright (tests/browser), against
//! the real server. Ignored by plain `cargo test`, which says so; `.ci/run` installs Chromium and
//! the Node packages and runs them with `--include-ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{request, spawn_app, spawn_app_with, TestApp};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Runs one scenario of tests/browser/console.mjs against `app`; fails on a non-zero exit or
/// after two minutes.
fn run_scenario(app: &TestApp, scenario: &str) {
    let dir = browser_dir();
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci` in {} first (.ci/run does)",
        dir.display()
    );
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/hillvalley.csv");
    let mut child = Command::new("node")
        .arg("console.mjs")
        .arg(scenario)
        .arg(format!("http://{}", app.addr))
        .arg(data)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .spawn()
        .expect("node runs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the {scenario} scenario ran past two minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the {scenario} scenario failed: {status}");
}

#[test]
#[ignore = "needs Chromium and tests/browser's Node packages: .ci/run installs them"]
fn the_console_shows_the_latest_changes_and_a_contacts_own() {
    run_scenario(&spawn_app(), "changes");
}

#[test]
#[ignore = "needs Chromium and Node packages; .ci/run installs them"]
fn support_staff_import_search_explain_and_delete_in_the_console() {
    run_scenario(&spawn_app(), "support");
}

#[test]
#[ignore = "needs Chromium and Node packages; .ci/run installs them"]
fn support_staff_block_and_unblock_a_value_in_the_console() {
    run_scenario(&spawn_app(), "block");
}

#[test]
#[ignore = "needs Chromium and Node packages; .ci/run installs them"]
fn support_staff_correct_an_email_in_the_console_and_see_the_identity_regrouped() {
    run_scenario(&spawn_app(), "edit");
}

#[test]
#[ignore = "needs Chromium and Node packages; .ci/run installs them"]
fn support_staff_erase_a_contact_and_a_value_after_confirming_and_see_the_ledger() {
    run_scenario(&spawn_app(), "erase");
}

#[test]
#[ignore = "needs Chromium and Node packages; .ci/run installs them"]
fn the_console_refuses_a_wrong_token_and_keeps_the_right_one() {
    run_scenario(
        &spawn_app_with(|c| c.admin_token = Some("sesame".into())),
        "signin",
    );
}

#[test]
#[ignore = "needs Chromium and Node packages; .ci/run installs them"]
fn a_read_token_sees_no_control_that_changes_anything_in_the_console() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let tokens = tmp.path().join("tokens");
    std::fs::write(&tokens, "support read r3ad\nboss admin sesame\n").unwrap();
    let app = spawn_app_with(|c| c.tokens = Some(tokens));
    for email in ["marty@hillvalley.edu", "jennifer@hillvalley.edu"] {
        let body = format!(r#"{{"email":"{email}","phoneNumber":"555"}}"#);
        assert_eq!(app.identify(&body).status, 200);
    }
    let admin = [("Authorization", "Bearer sesame")];
    let blocked = request(
        app.addr,
        "POST",
        "/blocklist",
        br#"{"phoneNumber":"000"}"#,
        &admin,
    );
    assert_eq!(blocked.status, 200, "{}", blocked.text);
    run_scenario(&app, "readonly");
}
