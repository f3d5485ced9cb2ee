//! `identity-engine changes --url URL [--token T] [--after SEQ] [--follow]`: a running
//! server's change feed as NDJSON on standard output, one event a line, so it can be piped into
//! anything (a queue, a file, a script). Pages of up to 1000 events; with `--follow` it waits
//! for new ones (a long poll) and, when the server is unreachable, tries again with a growing
//! pause, from the last seq it printed. Given the last seq printed, it resumes there.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// How long one long poll waits for events.
const WAIT_SECONDS: u64 = 30;
/// The longest pause between attempts while the server is unreachable.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Follows the feed at `url` (http or https; `ca` is the CA to trust instead of the system's
/// roots) from `after`; returns once caught up (or, following, only on an error it cannot go
/// past: a cursor past the history kept, or a refused token).
pub fn follow(
    url: &str,
    token: Option<&str>,
    after: u64,
    forever: bool,
    ca: Option<&std::path::Path>,
) -> Result<String, String> {
    let tls = crate::edge::tls::client_trusting(ca).map_err(|e| e.to_string())?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = Client::builder(TokioExecutor::new()).build(connector);
    runtime.block_on(run(
        &client,
        url.trim_end_matches('/'),
        token,
        after,
        forever,
    ))
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

async fn run(
    client: &HttpsClient,
    url: &str,
    token: Option<&str>,
    mut after: u64,
    forever: bool,
) -> Result<String, String> {
    let mut pause = Duration::from_millis(250);
    let mut printed = 0u64;
    loop {
        let wait = if forever { WAIT_SECONDS } else { 0 };
        let page = match fetch(client, url, token, after, wait).await {
            Ok(page) => page,
            Err(Failure::Fatal(why)) => return Err(why),
            Err(Failure::Retry(why)) if forever => {
                eprintln!(
                    "{why}; trying again in {} ms from after={after}",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
            Err(Failure::Retry(why)) => return Err(why),
        };
        pause = Duration::from_millis(250);
        let events = page["changes"].as_array().cloned().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for event in &events {
            writeln!(out, "{event}").map_err(|e| e.to_string())?;
        }
        out.flush().map_err(|e| e.to_string())?;
        printed += events.len() as u64;
        let last = page["last"].as_u64().unwrap_or(after);
        if events.is_empty() && !forever {
            // Standard output is the events alone; the summary goes beside it.
            eprintln!("printed {printed} event(s); the last seq is {last}");
            return Ok(String::new());
        }
        after = last.max(after);
    }
}

enum Failure {
    /// Worth trying again (the server is down or busy).
    Retry(String),
    /// Not: the cursor is past the history kept, or the request is refused.
    Fatal(String),
}

async fn fetch(
    client: &HttpsClient,
    url: &str,
    token: Option<&str>,
    after: u64,
    wait: u64,
) -> Result<Value, Failure> {
    let target = format!("{url}/changes?after={after}&limit=1000&wait={wait}");
    let mut request = hyper::Request::get(&target);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(Bytes::new()))
        .map_err(|e| Failure::Fatal(format!("{target}: {e}")))?;
    let timeout = Duration::from_secs(wait + 30);
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| Failure::Retry(format!("{url} did not answer in {} s", timeout.as_secs())))?
        .map_err(|e| Failure::Retry(format!("{url}: {e}")))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| Failure::Retry(format!("{url}: {e}")))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| Failure::Retry(format!("{url} answered {status} with no JSON: {e}")))?;
    match status.as_u16() {
        200 => Ok(value),
        410 => Err(Failure::Fatal(format!(
            "the events after {after} are no longer kept (the oldest is {}): read the rows again (GET /contacts/export) and follow on from there",
            value["oldest"]
        ))),
        400 | 401 | 403 | 404 => Err(Failure::Fatal(format!(
            "{status}: {}",
            value["error"]["message"].as_str().unwrap_or("refused")
        ))),
        _ => Err(Failure::Retry(format!(
            "{status}: {}",
            value["error"]["message"].as_str().unwrap_or("refused")
        ))),
    }
}
