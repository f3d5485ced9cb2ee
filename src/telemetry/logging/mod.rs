//! Logging: tracing events formatted by [`format::LineFormat`] into a [`buffer`] that a
//! background thread writes to stderr, so a request's log line costs a few hundred nanoseconds
//! and never a system call.

pub(crate) mod buffer;
pub(crate) mod format;

pub use buffer::FlushGuard;
pub use format::LineFormat;

use crate::config::LogFormat;

/// Installs the process's subscriber: `RUST_LOG` (default `info`), `format`, stderr. Keep the
/// guard until exit: dropping it writes out what is buffered.
pub fn init(format: LogFormat) -> FlushGuard {
    let (writer, guard) =
        buffer::buffered(std::io::stderr(), buffer::FLUSH_INTERVAL, buffer::CAPACITY);
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let line_format = match format {
        LogFormat::Text => LineFormat::text(),
        LogFormat::Json => LineFormat::json(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .event_format(line_format)
        .with_writer(writer)
        .init();
    guard
}
