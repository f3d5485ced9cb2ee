//! Test support: `spawn_app()` starts the real server on port 0 with a temporary data dir, on a
//! runtime of its own, and a tiny blocking HTTP/1.1 client that can send anything (bad bodies,
//! duplicate keys, odd headers) and reads the whole answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use identity_engine::app::{App, AppError};
use identity_engine::config::Config;
use serde_json::Value;

/// A running server; stopped gracefully on `stop()`, or when dropped.
pub struct TestApp {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// Keeps the temporary directory alive when the app made its own.
    _tmp: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), AppError>>>,
}

/// Starts a server with default options on a fresh temporary data dir.
pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

/// Starts a server on a fresh temporary data dir after `tweak` adjusts its options.
pub fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_owned();
    let mut app = spawn_app_in(&dir, tweak).expect("server starts");
    app._tmp = Some(tmp);
    app
}

/// Starts a server on `dir` (which outlives it); start-up errors are returned, for recovery tests.
pub fn spawn_app_in(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Result<TestApp, AppError> {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap(), dir);
    tweak(&mut config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = runtime.block_on(App::build(config))?;
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        runtime.block_on(app.run(async {
            let _ = rx.await;
        }))
    });
    Ok(TestApp {
        addr,
        dir: dir.to_owned(),
        _tmp: None,
        shutdown: Some(tx),
        thread: Some(thread),
    })
}

impl TestApp {
    /// Graceful shutdown: drain, sync, snapshot. Returns how `run` ended.
    pub fn stop(&mut self) -> Result<(), AppError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("server thread does not panic"),
            None => Ok(()),
        }
    }

    /// Stops gracefully and starts again on the same data dir with the same tweak.
    pub fn restart(mut self, tweak: impl FnOnce(&mut Config)) -> TestApp {
        self.stop().expect("clean stop");
        let tmp = self._tmp.take();
        let mut app = spawn_app_in(&self.dir, tweak).expect("server restarts");
        app._tmp = tmp;
        app
    }

    pub fn post(&self, path: &str, body: &str) -> Response {
        request(self.addr, "POST", path, body.as_bytes(), &[])
    }

    pub fn identify(&self, body: &str) -> Response {
        self.post("/identify", body)
    }

    pub fn get(&self, path: &str) -> Response {
        request(self.addr, "GET", path, b"", &[])
    }

    pub fn delete(&self, path: &str) -> Response {
        request(self.addr, "DELETE", path, b"", &[])
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub text: String,
}

impl Response {
    /// The body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("no error code: {}", self.text))
            .to_owned()
    }
}

/// Sends one request on a new connection (`Connection: close`) and reads the whole answer.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Response {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read answer");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Response {
    try_parse_response(raw)
        .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(raw)))
}

/// The answer in `raw`, or None if it is not a whole HTTP answer.
pub fn try_parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let text = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some(Response {
        status,
        headers,
        text,
    })
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n + 2..)?;
    }
}

/// Polls `ready` until it holds, failing the test after `within`: a wait on a condition, never
/// a sleep of a guessed length.
pub fn wait_until(within: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "the condition did not hold within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
