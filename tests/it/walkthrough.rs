//! The README's quick start, run as written: every `cargo run --release` line with the built
//! binary (in a fresh directory holding only the example data), every `curl` line with a small
//! client, each `# ...` line under a command checked against what it printed. Ports 3000 and
//! 3001 become free ports, so the test never collides with a server already running.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::request;

const DEADLINE: Duration = Duration::from_secs(60);

/// The shell lines of the README's "Quick start" section, each with the `# ` lines under it.
fn quick_start() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Quick start"))
        .expect("a Quick start section");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for block in section.split("```sh\n").skip(1) {
        let block = block.split("```").next().unwrap();
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            match line.strip_prefix("# ") {
                Some(expected) => steps.last_mut().unwrap().1.push(expected.to_owned()),
                None => steps.push((line.to_owned(), vec![])),
            }
        }
    }
    steps
}

/// Words as a POSIX shell splits them, for the simple lines of the README (single quotes only).
fn words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted, mut started) = (vec![], String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => (quoted, started) = (!quoted, true),
            ' ' if !quoted => {
                if started {
                    words.push(std::mem::take(&mut word));
                }
                started = false;
            }
            c => (word, started) = (word + &c.to_string(), true),
        }
    }
    if started {
        words.push(word);
    }
    words
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Servers started by the walk-through; killed if the test fails before it stops them.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn binary(dir: &Path, args: &[String]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_identity-engine"));
    command.args(args).current_dir(dir);
    for (name, _) in std::env::vars() {
        if name == "PORT" || name.starts_with("IDENTITY_ENGINE_") {
            command.env_remove(name);
        }
    }
    command
}

fn wait_ready(addr: SocketAddr, server: &mut Child) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("the server exited: {status}");
        }
        let up = std::net::TcpStream::connect(addr).is_ok();
        if up && request(addr, "GET", "/readyz", b"", &[]).status == 200 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the server at {addr} never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a subcommand to its end (bounded), returning what it printed on stdout.
fn run_tool(dir: &Path, args: &[String]) -> String {
    let out = dir.join(".tool-output");
    let mut child = binary(dir, args)
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the binary");
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(status.success(), "{args:?} failed: {printed}");
    printed
}

fn assert_printed(line: &str, printed: &str, expected: &[String]) {
    for want in expected {
        let found = match want.strip_suffix("...") {
            Some(prefix) => printed.lines().any(|l| l.starts_with(prefix)),
            None => printed.lines().any(|l| l == want),
        };
        assert!(found, "`{line}` should print {want:?}, printed:\n{printed}");
    }
}

#[test]
fn the_readme_quick_start_works_as_written() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
    std::fs::create_dir_all(dir.join("examples/data")).unwrap();
    for entry in std::fs::read_dir(&examples).unwrap().flatten() {
        std::fs::copy(
            entry.path(),
            dir.join("examples/data").join(entry.file_name()),
        )
        .unwrap();
    }
    let ports = [("3000", free_port()), ("3001", free_port())];
    let port_of = |text: &str| -> u16 {
        let (_, port) = ports
            .iter()
            .find(|(p, _)| text.contains(p))
            .expect("a known port");
        *port
    };
    let mut servers = Servers(vec![]);
    let steps = quick_start();
    assert!(
        steps.len() >= 8,
        "the quick start lost its steps: {steps:?}"
    );
    for (line, expected) in &steps {
        let words = words(line);
        match words[0].as_str() {
            "cargo" => {
                assert_eq!(words[1..3], ["run", "--release"], "{line}");
                let mut args: Vec<String> = words.iter().skip(4).cloned().collect();
                let tool = args.first().is_some_and(|a| {
                    ["import", "export", "check", "restore"].contains(&a.as_str())
                });
                if tool {
                    assert_printed(line, &run_tool(dir, &args), expected);
                    continue;
                }
                let port = match args.iter().position(|a| a == "--addr") {
                    Some(i) => {
                        let port = port_of(&args[i + 1]);
                        args[i + 1] = format!("localhost:{port}");
                        port
                    }
                    None => {
                        args.extend(["--addr".into(), format!("127.0.0.1:{}", ports[0].1)]);
                        ports[0].1
                    }
                };
                let mut server = binary(dir, &args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start the server");
                wait_ready(SocketAddr::from(([127, 0, 0, 1], port)), &mut server);
                servers.0.push(server);
            }
            "curl" => {
                let url = words.last().unwrap();
                let addr = SocketAddr::from(([127, 0, 0, 1], port_of(url)));
                let path = &url[url.find('/').expect("a path")..];
                if words[1] == "-d" {
                    let answer = request(addr, "POST", path, words[2].as_bytes(), &[]);
                    assert_eq!(answer.status, 200, "{line}: {}", answer.text);
                    assert_eq!(expected, &[answer.text], "{line}");
                } else {
                    assert_eq!(words[1], "-o", "{line}");
                    let body = crate::backup::fetch_backup(addr);
                    std::fs::write(dir.join(&words[2]), body).unwrap();
                }
            }
            other => panic!("the quick start runs {other}, which this test does not know"),
        }
    }
    stop_gracefully(std::mem::take(&mut servers.0));
    for data in ["data", "hillvalley", "hillvalley-copy"] {
        assert!(dir.join(data).is_dir(), "{data} was made");
    }
    assert!(
        dir.join("examples/data/hillvalley.csv").is_file(),
        "the example data is where it was"
    );
}

/// SIGTERM, as Ctrl-C would: each server exits 0 after syncing and snapshotting.
fn stop_gracefully(servers: Vec<Child>) {
    for mut server in servers {
        let pid = server.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + DEADLINE;
        let status = loop {
            if let Some(status) = server.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "a server did not stop");
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(status.success(), "a graceful stop exits 0: {status}");
    }
}
