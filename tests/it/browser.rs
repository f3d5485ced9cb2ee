//! The console in a real browser: headless Chromium driven by Playwright (tests/browser), against
//! the real server. Ignored by plain `cargo test`, which says so; `.ci/run` installs Chromium and
//! the Node packages and runs them with `--include-ignored`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{spawn_app, spawn_app_with, TestApp};

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
