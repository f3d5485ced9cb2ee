//! The log line format, text or JSON. tracing-subscriber's own formatters cost about 1.5 us a
//! line (a calendar date computed and padded field by field, styles even without colours, every
//! value through `Debug`); at tens of thousands of requests a second that was a tenth of a core.
//! This one keeps the same layout and caches the date and time to the second per thread.
//!
//! Text: `2026-11-21T19:03:36.123456Z  INFO target: span{fields}: message key=value ...`, strings
//! quoted and escaped as Rust's `Debug` does. JSON: one object per line with `timestamp`,
//! `level`, `target`, `fields` (the message under `message`) and `spans` (names) when in one.

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

use crate::engine::time::write_rfc3339;

/// Formats events as text lines or JSON objects.
#[derive(Debug, Clone, Copy)]
pub struct LineFormat {
    json: bool,
}

impl LineFormat {
    pub fn text() -> LineFormat {
        LineFormat { json: false }
    }

    pub fn json() -> LineFormat {
        LineFormat { json: true }
    }
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if self.json {
            w.write_str("{\"timestamp\":\"")?;
            write_now(&mut w)?;
            w.write_str("\",\"level\":\"")?;
            w.write_str(meta.level().as_str())?;
            w.write_str("\",\"target\":")?;
            write_json_str(&mut w, meta.target())?;
            w.write_str(",\"fields\":{")?;
            Fields::record(event, &mut w, true)?;
            w.write_char('}')?;
            if let Some(scope) = ctx.event_scope() {
                w.write_str(",\"spans\":[")?;
                for (i, span) in scope.from_root().enumerate() {
                    if i > 0 {
                        w.write_char(',')?;
                    }
                    write_json_str(&mut w, span.name())?;
                }
                w.write_char(']')?;
            }
            w.write_str("}\n")
        } else {
            write_now(&mut w)?;
            w.write_str(padded(meta.level()))?;
            w.write_str(meta.target())?;
            w.write_str(": ")?;
            if let Some(scope) = ctx.event_scope() {
                for span in scope.from_root() {
                    w.write_str(span.name())?;
                    let extensions = span.extensions();
                    if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                        if !fields.fields.is_empty() {
                            write!(w, "{{{}}}", fields.fields)?;
                        }
                    }
                    w.write_str(": ")?;
                }
            }
            Fields::record(event, &mut w, false)?;
            w.write_char('\n')
        }
    }
}

/// Writes the wall-clock time as `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`; the part up to the second is
/// formatted once a second per thread.
fn write_now(w: &mut Writer<'_>) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            let mut text = String::with_capacity(24);
            write_rfc3339(&mut text, (secs as i64).saturating_mul(1000))?;
            text.truncate(text.len().saturating_sub(".000Z".len()));
            *cached = (secs, text);
        }
        w.write_str(&cached.1)
    })?;
    let micros = now.subsec_micros();
    let mut fraction = *b".000000Z";
    for (i, digit) in fraction[1..7].iter_mut().enumerate() {
        *digit = b'0' + (micros / 10u32.pow(5 - i as u32) % 10) as u8;
    }
    w.write_str(std::str::from_utf8(&fraction).expect("ASCII digits"))
}

/// The level between spaces, right-aligned to five characters.
fn padded(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => " TRACE ",
        Level::DEBUG => " DEBUG ",
        Level::INFO => "  INFO ",
        Level::WARN => "  WARN ",
        Level::ERROR => " ERROR ",
    }
}

/// Writes an event's fields: `name=value` separated by spaces (the message bare), or in JSON
/// `"name":value` separated by commas.
struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    json: bool,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn record(event: &Event<'_>, w: &mut Writer<'_>, json: bool) -> fmt::Result {
        let mut fields = Fields {
            w,
            json,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result
    }

    /// Writes the separator and the name, then the value.
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = match (self.first, self.json) {
            (true, _) => "",
            (false, true) => ",",
            (false, false) => " ",
        };
        self.first = false;
        self.result = self.w.write_str(separator).and_then(|()| {
            if self.json {
                write_json_str(self.w, field.name())?;
                self.w.write_char(':')?;
            } else if field.name() != "message" {
                self.w.write_str(field.name())?;
                self.w.write_char('=')?;
            }
            value(self.w)
        });
    }
}

impl Visit for Fields<'_, '_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match (self.json, value.is_finite()) {
            (true, true) => self.field(field, |w| write!(w, "{value}")),
            (true, false) => self.field(field, |w| write!(w, "\"{value}\"")),
            (false, _) => self.record_debug(field, &value),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let plain = |b: u8| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\';
        if self.json {
            self.field(field, |w| write_json_str(w, value));
        } else if field.name() == "message" {
            self.field(field, |w| w.write_str(value));
        } else if value.bytes().all(plain) {
            self.field(field, |w| {
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.json {
            self.field(field, |w| {
                w.write_char('"')?;
                write!(JsonEscaped(w), "{value:?}")?;
                w.write_char('"')
            });
        } else {
            self.field(field, |w| write!(w, "{value:?}"));
        }
    }
}

fn write_json_str(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    w.write_char('"')?;
    JsonEscaped(w).write_str(text)?;
    w.write_char('"')
}

/// Escapes what is written through it as the inside of a JSON string.
struct JsonEscaped<'a, 'w>(&'a mut Writer<'w>);

impl Write for JsonEscaped<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in text.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&text[plain..])
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
    fn lines(format: LineFormat, emit: impl FnOnce()) -> Vec<String> {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .event_format(format)
            .finish();
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
        let got = lines(LineFormat::text(), request_line);
        assert_eq!(got.len(), 1);
        let (time, rest) = got[0].split_once(' ').unwrap();
        assert_eq!(time.len(), "2026-11-21T19:03:36.123456Z".len(), "{time}");
        assert!(crate::engine::time::parse_rfc3339(time).is_some(), "{time}");
        assert_eq!(
            rest,
            " INFO identity_engine::telemetry::logging::format::tests: request method=POST route=\"/identify\" status=200 micros=17"
        );
    }

    #[test]
    fn text_lines_name_their_spans() {
        let got = lines(LineFormat::text(), || {
            let _span = tracing::info_span!("recovery", dir = "d").entered();
            tracing::warn!("cut");
        });
        assert!(
            got[0].ends_with(
                " WARN identity_engine::telemetry::logging::format::tests: recovery{dir=\"d\"}: cut"
            ),
            "{}",
            got[0]
        );
    }

    #[test]
    fn json_lines_parse_and_escape_anything() {
        let nasty = "quote \" backslash \\ newline \n tab \t bell \u{7} é";
        let got = lines(LineFormat::json(), || {
            request_line();
            let _span = tracing::info_span!("outer").entered();
            tracing::error!(text = nasty, debug = ?nasty, ratio = 0.5, inf = f64::INFINITY, ok = true, delta = -3i64, "{nasty}");
        });
        assert_eq!(got.len(), 2);
        let first: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
        assert_eq!(first["level"], "INFO");
        assert_eq!(
            first["target"],
            "identity_engine::telemetry::logging::format::tests"
        );
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
        assert_eq!(fields["inf"], "inf");
        assert_eq!(fields["ok"], true);
        assert_eq!(fields["delta"], -3);
        assert_eq!(second["spans"], serde_json::json!(["outer"]));
    }
}
