//! Log output that costs a request one short memory copy: lines are appended to a shared buffer
//! and a background thread writes the buffer out every few milliseconds, in one `write` per
//! interval whatever the number of lines. A request never makes a system call for its log line
//! and never wakes a thread (a channel per line did both, and cost a fifth of the read path).
//!
//! The buffer is bounded: when the output cannot keep up, lines are dropped rather than slow the
//! service down, and the number dropped is reported in the output. Dropping the [`FlushGuard`]
//! writes out what is buffered; a process killed outright loses at most one interval of lines.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tracing_subscriber::fmt::MakeWriter;

/// How often buffered lines are written out.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Buffered bytes beyond which new lines are dropped.
pub(crate) const CAPACITY: usize = 8 << 20;

struct Shared {
    lines: Mutex<Vec<u8>>,
    capacity: usize,
    dropped: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
}

/// The writer handed to the tracing subscriber; cheap to clone.
#[derive(Clone)]
pub(crate) struct LogBuffer {
    shared: Arc<Shared>,
}

/// Writes out what is buffered, and stops the writer thread, when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a thread writing buffered lines to `out` every `interval`; lines past `capacity`
/// buffered bytes are dropped and counted.
pub(crate) fn buffered<W: Write + Send + 'static>(
    out: W,
    interval: Duration,
    capacity: usize,
) -> (LogBuffer, FlushGuard) {
    let shared = Arc::new(Shared {
        lines: Mutex::new(Vec::with_capacity(64 * 1024)),
        capacity,
        dropped: AtomicU64::new(0),
        stop: Mutex::new(false),
        wake: Condvar::new(),
    });
    let thread = {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_out(&shared, out, interval))
            .expect("the log writer thread starts")
    };
    (
        LogBuffer {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    )
}

fn write_out<W: Write>(shared: &Shared, mut out: W, interval: Duration) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let stopping = {
            let mut stop = shared.stop.lock();
            if !*stop {
                shared.wake.wait_for(&mut stop, interval);
            }
            *stop
        };
        std::mem::swap(&mut *shared.lines.lock(), &mut spare);
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                spare,
                "{dropped} log lines dropped: the log output could not keep up"
            );
        }
        if !spare.is_empty() {
            // Nowhere to report a failure to write the log; the next interval tries again.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
        }
        if stopping {
            return;
        }
    }
}

/// What the subscriber writes one event through: a borrowed handle on the buffer.
pub(crate) struct LineWriter<'a>(&'a Shared);

impl Write for LineWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut lines = self.0.lines.lock();
        if lines.len() + line.len() > self.0.capacity {
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            lines.extend_from_slice(line);
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter(&self.shared)
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn text(c: &Captured) -> String {
        String::from_utf8(c.0.lock().clone()).unwrap()
    }

    #[test]
    fn lines_come_out_in_order_and_all_by_the_guard() {
        let out = Captured::default();
        let (buffer, guard) = buffered(out.clone(), Duration::from_secs(3600), 1 << 20);
        for i in 0..100 {
            writeln!(buffer.make_writer(), "line {i}").unwrap();
        }
        drop(guard);
        let expected: String = (0..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text(&out), expected);
    }

    #[test]
    fn lines_are_written_every_interval() {
        let out = Captured::default();
        let (buffer, _guard) = buffered(out.clone(), Duration::from_millis(5), 1 << 20);
        writeln!(buffer.make_writer(), "hello").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while text(&out).is_empty() {
            assert!(std::time::Instant::now() < deadline, "never written");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(text(&out), "hello\n");
    }

    #[test]
    fn lines_past_the_capacity_are_dropped_and_counted() {
        let out = Captured::default();
        let (buffer, guard) = buffered(out.clone(), Duration::from_secs(3600), 20);
        for _ in 0..5 {
            writeln!(buffer.make_writer(), "123456789").unwrap();
        }
        drop(guard);
        assert_eq!(
            text(&out),
            "123456789\n123456789\n3 log lines dropped: the log output could not keep up\n"
        );
    }
}
