//! Logging: tracing-subscriber's formatter (text without colours, or JSON) writing through
//! tracing-appender's non-blocking writer, so a request hands its line to a background thread and
//! never waits on stderr. Measured against a format and buffer of our own in alternating perfbench
//! rounds: equal within the noise (BENCHMARKS.md), so the well-kept crates'.

use std::io::BufWriter;

use tracing::Subscriber;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines waiting for the writer thread beyond which new ones are dropped.
pub const BUFFERED_LINES: usize = 128_000;

/// Writes out what is buffered, and stops the writer thread, when dropped.
pub type FlushGuard = WorkerGuard;

/// Installs the process's subscriber: `RUST_LOG` (default `info`), `format`, stderr. Keep the
/// guard until exit: dropping it writes out what is buffered.
pub fn init(format: LogFormat) -> FlushGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("log-writer")
        .finish(BufWriter::new(std::io::stderr()));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    subscriber(format, filter, writer).init();
    guard
}

/// The subscriber that writes lines in `format` through `writer`.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn Subscriber + Send + Sync>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .with_current_span(false)
                .with_span_list(true)
                .finish(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs in `format`.
    fn lines(format: LogFormat, emit: impl FnOnce()) -> Vec<String> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = subscriber(format, "info".into(), move || writer.clone());
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.0.lock().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    fn request_line() {
        let method = "POST";
        tracing::info!(method = %method, route = "/identify", status = 200u16, micros = 17u64, "request");
    }

    #[test]
    fn text_lines_have_time_level_target_message_and_fields() {
        let got = lines(LogFormat::Text, request_line);
        assert_eq!(got.len(), 1);
        let (time, rest) = got[0].split_once(' ').unwrap();
        assert_eq!(time.len(), "2026-11-21T19:03:36.123456Z".len(), "{time}");
        assert!(crate::engine::time::parse_rfc3339(time).is_some(), "{time}");
        assert_eq!(
            rest,
            " INFO identity_engine::logging::tests: request method=POST route=\"/identify\" status=200 micros=17"
        );
    }

    #[test]
    fn text_lines_name_their_spans() {
        let got = lines(LogFormat::Text, || {
            let _span = tracing::info_span!("recovery", dir = "d").entered();
            tracing::warn!("cut");
        });
        assert!(
            got[0].ends_with(" WARN recovery{dir=\"d\"}: identity_engine::logging::tests: cut"),
            "{}",
            got[0]
        );
    }

    #[test]
    fn json_lines_parse_and_escape_anything() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
        let got = lines(LogFormat::Json, || {
            request_line();
            let _span = tracing::info_span!("outer").entered();
            tracing::error!(text = nasty, debug = ?nasty, ratio = 0.5, inf = f64::INFINITY, ok = true, delta = -3i64, "{nasty}");
        });
        assert_eq!(got.len(), 2);
        let first: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["target"], "identity_engine::logging::tests");
        assert_eq!(
            first["fields"],
            serde_json::json!({"message": "request", "method": "POST", "route": "/identify", "status": 200, "micros": 17})
        );
        assert!(first.get("spans").is_none());
        let time = first["timestamp"].as_str().unwrap();
        assert!(crate::engine::time::parse_rfc3339(time).is_some(), "{time}");
        let second: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
        let fields = &second["fields"];
        assert_eq!(fields["message"], nasty);
        assert_eq!(fields["text"], nasty);
        assert_eq!(fields["debug"], format!("{nasty:?}"));
        assert_eq!(fields["ratio"], 0.5);
        // JSON has no infinity: serde_json writes it as null (our own format wrote "inf").
        assert!(fields["inf"].is_null());
        assert_eq!(fields["ok"], true);
        assert_eq!(fields["delta"], -3);
        assert_eq!(second["spans"], serde_json::json!([{"name": "outer"}]));
    }
}
