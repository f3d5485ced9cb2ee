//! The container image (Dockerfile, docs/deploy.md), built and run for real with podman: the
//! `prebuilt` stage over a release binary answers /identify, keeps its data in its volume across
//! containers, runs as a non-root PID 1, passes its HEALTHCHECK, and stops on its STOPSIGNAL
//! (SIGTERM) with exit 0 and a snapshot written.
//!
//! No image registry is reachable where this runs, so the base image is made here: Debian
//! bookworm's minimal base by mmdebstrap with what the official slim image leaves out left out
//! too, imported as `debian:bookworm-slim` (kept for the next run). The release binary is brought
//! up to date by `cargo build --release`, which does nothing when it already is (.ci/run builds it
//! before the tests, so the suite does not share its cores with an LTO build). Every step is
//! bounded by a timeout. The default target, which needs the Rust image, is checked for its shape.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::request;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BASE_IMAGE: &str = "debian:bookworm-slim";
const IMAGE: &str = "localhost/identity-engine:container-test";

/// What podman needs on these machines: no default ulimits (the container may not raise them),
/// logs and events in files (no journald); given by CONTAINERS_CONF, /etc is left alone.
const CONTAINERS_CONF: &str = r#"[containers]
default_ulimits = []
log_driver = "k8s-file"

[engine]
events_logger = "file"
"#;

#[test]
#[ignore = "needs root, podman, runc and mmdebstrap: .ci/run installs them"]
fn the_image_serves_keeps_its_volume_runs_unprivileged_and_stops_cleanly_on_sigterm() {
    let podman = Podman::new();
    podman.make_base_image();
    build_release_binary();
    let _image = podman.build_prebuilt_image();
    let size = podman.output(
        &["image", "inspect", "--format", "{{.Size}}", IMAGE],
        MINUTE,
    );
    eprintln!("image {IMAGE}: {} bytes", size.trim());
    let volume = Volume::create(&podman);

    let mut first = Container::start(&podman, &volume);
    first.check_unprivileged_pid_1();
    first.check_healthcheck_and_stop_signal();
    assert_eq!(
        first.identify(r#"{"email":"a@x.test","phoneNumber":"555"}"#)["primaryContactId"],
        1
    );
    assert_eq!(
        first.identify(r#"{"email":"b@x.test","phoneNumber":"555"}"#)["primaryContactId"],
        1
    );
    assert_eq!(
        first.stop(),
        0,
        "exit status after SIGTERM; logs:\n{}",
        first.logs()
    );
    let after_first = volume.snapshots();
    assert!(
        !after_first.is_empty(),
        "a snapshot in the volume: {:?}",
        volume.files()
    );

    let mut second = Container::start(&podman, &volume);
    let found = second.identify(r#"{"email":"b@x.test"}"#);
    assert_eq!(
        found["primaryContactId"], 1,
        "the data is the volume's: {found}"
    );
    assert_eq!(
        found["secondaryContactIds"],
        serde_json::json!([2]),
        "{found}"
    );
    let grown = second.identify(r#"{"email":"c@x.test","phoneNumber":"555"}"#);
    assert_eq!(
        grown["secondaryContactIds"],
        serde_json::json!([2, 3]),
        "{grown}"
    );
    assert_eq!(
        second.stop(),
        0,
        "exit status after SIGTERM; logs:\n{}",
        second.logs()
    );
    let logs = second.logs();
    assert!(logs.contains("shut down cleanly"), "{logs}");
    let newest = volume.snapshots().pop().expect("snapshots");
    assert!(
        !after_first.contains(&newest),
        "the second stop wrote a new snapshot: {newest} after {after_first:?}"
    );
}

/// The default target (the last stage) is the runtime built from source, which needs the Rust
/// image and so is not built here; what can be checked without it is checked: its shape.
#[test]
fn the_default_target_is_the_runtime_from_the_build_stage_and_prebuilt_copies_target_release() {
    let dockerfile = std::fs::read_to_string(Path::new(REPO).join("Dockerfile")).unwrap();
    let stages: Vec<&str> = dockerfile.split("\nFROM ").skip(1).collect();
    let named = |name: &str| {
        (stages.iter())
            .find(|s| s.lines().next().unwrap().ends_with(&format!(" AS {name}")))
            .unwrap_or_else(|| panic!("no stage {name}"))
    };
    assert!(named("build").starts_with("rust:"), "{}", named("build"));
    assert!(named("base").starts_with("debian:bookworm-slim "));
    let last = stages.last().unwrap();
    assert!(
        last.starts_with("base AS runtime\n"),
        "the last stage: {last}"
    );
    assert!(last.contains("COPY --from=build /out/identity-engine /usr/local/bin/"));
    let prebuilt = named("prebuilt");
    assert!(prebuilt.starts_with("base AS prebuilt\n"), "{prebuilt}");
    assert!(prebuilt.contains("COPY target/release/identity-engine /usr/local/bin/"));
}

const MINUTE: Duration = Duration::from_secs(60);

/// Runs `command` to its end within `limit` (killed and reported past it); panics unless it
/// succeeds. Returns its output.
fn run(command: &mut Command, limit: Duration) -> Output {
    let what = format!("{command:?}");
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let output = finish(child, limit, &what);
    assert!(
        output.status.success(),
        "{what}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Waits for `child` within `limit`, reading its piped output meanwhile; kills it past the limit.
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let (stdout, stderr) = (drain(child.stdout.take()), drain(child.stderr.take()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap();
            panic!(
                "{what}: not done in {limit:?}\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `cargo build --release`: the binary the `prebuilt` stage copies, current with the sources.
fn build_release_binary() {
    run(
        Command::new(env!("CARGO"))
            .args(["build", "--release", "--locked", "--bin", "identity-engine"])
            .current_dir(REPO),
        Duration::from_secs(45 * 60),
    );
    assert!(Path::new(REPO)
        .join("target/release/identity-engine")
        .is_file());
}

/// podman as these machines run it: runc, cgroupfs, the test's containers.conf.
struct Podman {
    conf: tempfile::TempDir,
}

impl Podman {
    fn new() -> Podman {
        assert_eq!(
            std::fs::read_to_string("/proc/self/status")
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().next()),
            Some("0"),
            "the container test runs as root (.ci/run)"
        );
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(conf.path().join("containers.conf"), CONTAINERS_CONF).unwrap();
        Podman { conf }
    }

    fn command(&self) -> Command {
        let mut command = Command::new("podman");
        command
            .env("CONTAINERS_CONF", self.conf.path().join("containers.conf"))
            .args(["--runtime", "runc", "--cgroup-manager", "cgroupfs"]);
        command
    }

    /// podman's standard output, `args` having succeeded within `limit`.
    fn output(&self, args: &[&str], limit: Duration) -> String {
        let output = run(self.command().args(args), limit);
        String::from_utf8(output.stdout).expect("podman writes text")
    }

    /// Whether podman succeeds with `args` (for questions it answers with its exit status).
    fn succeeds(&self, args: &[&str]) -> bool {
        let child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman runs");
        finish(child, MINUTE, &format!("podman {args:?}"))
            .status
            .success()
    }

    /// `mmdebstrap --variant=minbase bookworm - | podman import - debian:bookworm-slim`, unless
    /// the image exists. Like the official slim image: documentation, manual pages and
    /// translations are left out (their copyright files kept) and /usr is merged without the
    /// usrmerge package (which would bring in perl).
    fn make_base_image(&self) {
        if self.succeeds(&["image", "exists", BASE_IMAGE]) {
            return;
        }
        let slim = [
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
            "path-exclude=/usr/share/man/*",
            "path-exclude=/usr/share/info/*",
            "path-exclude=/usr/share/locale/*",
            "path-include=/usr/share/locale/locale.alias",
        ];
        let mut mmdebstrap = Command::new("mmdebstrap");
        mmdebstrap.args([
            "--variant=minbase",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        ]);
        for option in slim {
            mmdebstrap.arg(format!("--dpkgopt={option}"));
        }
        let mut tarball = mmdebstrap
            .args(["bookworm", "-"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mmdebstrap runs");
        let stream = tarball.stdout.take().unwrap();
        let import = self
            .command()
            .args(["import", "-", BASE_IMAGE])
            .stdin(stream)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("podman runs");
        let limit = Duration::from_secs(15 * 60);
        let made = finish(tarball, limit, "mmdebstrap");
        assert!(
            made.status.success(),
            "mmdebstrap: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let imported = finish(import, limit, "podman import");
        assert!(
            imported.status.success(),
            "podman import: {}",
            String::from_utf8_lossy(&imported.stderr)
        );
    }

    /// `podman build --target prebuilt` from the repository (docker format: an OCI image has no
    /// HEALTHCHECK), keeping no intermediate images; the image is removed when the guard drops.
    fn build_prebuilt_image(&self) -> Image<'_> {
        let build = [
            "build",
            "--format",
            "docker",
            "--layers=false",
            "--target",
            "prebuilt",
            "--tag",
        ];
        let args: Vec<&str> = build.into_iter().chain([IMAGE, REPO]).collect();
        self.output(&args, Duration::from_secs(10 * 60));
        Image { podman: self }
    }
}

/// The image built, removed when the test ends (declared first, so dropped after its containers).
struct Image<'a> {
    podman: &'a Podman,
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _ = self.podman.succeeds(&["rmi", "--force", IMAGE]);
    }
}

/// A named volume of its own, removed when the test ends.
struct Volume<'a> {
    podman: &'a Podman,
    name: String,
}

impl Volume<'_> {
    fn create(podman: &Podman) -> Volume<'_> {
        let name = unique("identity-engine-test-data");
        podman.output(&["volume", "create", &name], MINUTE);
        Volume { podman, name }
    }

    fn mountpoint(&self) -> PathBuf {
        let path = self.podman.output(
            &[
                "volume",
                "inspect",
                "--format",
                "{{.Mountpoint}}",
                &self.name,
            ],
            MINUTE,
        );
        PathBuf::from(path.trim())
    }

    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.mountpoint())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// The snapshot files, oldest (lowest sequence number) first.
    fn snapshots(&self) -> Vec<String> {
        let mut snapshots: Vec<(u64, String)> = (self.files().into_iter())
            .filter_map(|f| {
                let seq = f.strip_prefix("snapshot-")?.strip_suffix(".snap")?;
                Some((seq.parse().ok()?, f))
            })
            .collect();
        snapshots.sort();
        snapshots.into_iter().map(|(_, f)| f).collect()
    }
}

impl Drop for Volume<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .succeeds(&["volume", "rm", "--force", &self.name]);
    }
}

/// A container of the image on the host's network at a free port, removed when dropped.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
    addr: SocketAddr,
}

impl<'a> Container<'a> {
    /// Starts one on `volume` and waits until `/health` answers.
    fn start(podman: &'a Podman, volume: &Volume) -> Container<'a> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let name = unique("identity-engine-test");
        podman.output(
            &[
                "run",
                "--detach",
                "--name",
                &name,
                "--network",
                "host",
                "--env",
                &format!("PORT={port}"),
                "--volume",
                &format!("{}:/data", volume.name),
                IMAGE,
            ],
            MINUTE,
        );
        let container = Container {
            podman,
            name,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        container.wait_until_healthy();
        container
    }

    fn wait_until_healthy(&self) {
        let deadline = Instant::now() + MINUTE;
        loop {
            if std::net::TcpStream::connect(self.addr).is_ok()
                && request(self.addr, "GET", "/health", b"", &[]).status == 200
            {
                return;
            }
            let running = self.inspect("{{.State.Running}}");
            assert_eq!(running, "true", "the container stopped:\n{}", self.logs());
            assert!(
                Instant::now() < deadline,
                "no /health at {}:\n{}",
                self.addr,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn inspect(&self, format: &str) -> String {
        let out = self
            .podman
            .output(&["inspect", "--format", format, &self.name], MINUTE);
        out.trim().to_owned()
    }

    fn logs(&self) -> String {
        let output = run(self.podman.command().args(["logs", &self.name]), MINUTE);
        String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr)
    }

    /// The server is the container's first process (so it gets the stop signal itself), and
    /// its real, effective, saved and file-system uids and gids are not root's.
    fn check_unprivileged_pid_1(&self) {
        let pid = self.inspect("{{.State.Pid}}");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            (status.lines())
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{name} in {status}"))
                .split_whitespace()
                .map(|v| v.parse::<u32>().unwrap())
                .collect::<Vec<u32>>()
        };
        assert!(status.contains("Name:\tidentity-engine"), "{status}");
        assert_eq!(
            field("NSpid:").last(),
            Some(&1),
            "PID 1 in the container: {status}"
        );
        assert!(
            field("Uid:").iter().all(|&id| id != 0),
            "not root: {status}"
        );
        assert!(
            field("Gid:").iter().all(|&id| id != 0),
            "not root's group: {status}"
        );
    }

    /// `podman healthcheck run`: the image's HEALTHCHECK, run in the container, says healthy;
    /// and the image stops containers with SIGTERM.
    fn check_healthcheck_and_stop_signal(&self) {
        assert!(
            self.podman.succeeds(&["healthcheck", "run", &self.name]),
            "the image's HEALTHCHECK fails:\n{}",
            self.logs()
        );
        let signal = self.inspect("{{.Config.StopSignal}}");
        assert!(
            signal == "15" || signal == "SIGTERM",
            "stop signal {signal}"
        );
    }

    /// `POST /identify` and the answer's `contact`.
    fn identify(&self, body: &str) -> serde_json::Value {
        let answer = request(self.addr, "POST", "/identify", body.as_bytes(), &[]);
        assert_eq!(answer.status, 200, "{body}: {}", answer.text);
        answer.json()["contact"].clone()
    }

    /// `podman stop`: the image's stop signal (SIGTERM), SIGKILL only after 60 s. Returns the
    /// exit status.
    fn stop(&mut self) -> i64 {
        self.podman.output(
            &["stop", "--time", "60", &self.name],
            Duration::from_secs(90),
        );
        self.inspect("{{.State.ExitCode}}").parse().unwrap()
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .succeeds(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}
