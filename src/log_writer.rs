//! The log writer: log lines go into one shared buffer that a writer thread
//! empties onto standard error every [`INTERVAL`] (or sooner when it fills
//! up), so a request never waits on a `write(2)` and never wakes a thread.
//!
//! This replaced `tracing_appender::non_blocking` (issue 19): its channel
//! woke the writer thread for nearly every line, and with one access-log
//! line per request those wake-ups and small writes cost about as much CPU
//! as serving the request (`GET /credentials`: 12.6 µs per request with
//! `ELEMENTS_LOG=warn`, 25.7 µs with the default `info`, same machine).
//!
//! Order: lines are appended under one lock, so the output keeps the order
//! in which they were logged. Nothing is dropped: above [`HIGH_WATER`] the
//! logging thread wakes the writer, and above [`LIMIT`] it writes the buffer
//! itself (back-pressure instead of unbounded memory). Dropping the
//! [`Guard`] writes what is left. A `kill -9` loses at most the last
//! [`INTERVAL`] of lines, as the channel it replaced lost its queue.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the writer thread empties the buffer.
pub const INTERVAL: Duration = Duration::from_millis(50);
/// Above this many buffered bytes the writer thread is woken at once.
pub const HIGH_WATER: usize = 256 * 1024;
/// Above this many buffered bytes the logging thread writes them itself.
pub const LIMIT: usize = 8 * 1024 * 1024;

struct State {
    buffer: Vec<u8>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a buffer of whole lines:
        // keep using it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands out writers into the shared buffer (a `MakeWriter`).
pub struct LogWriter<W: Write + Send + 'static> {
    shared: Arc<Shared>,
    out: Arc<Mutex<W>>,
}

// Not derived: that would ask `W: Clone` (standard error is not).
impl<W: Write + Send + 'static> Clone for LogWriter<W> {
    fn clone(&self) -> Self {
        LogWriter {
            shared: self.shared.clone(),
            out: self.out.clone(),
        }
    }
}

/// Stops the writer thread and writes what is buffered when dropped.
pub struct Guard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// A writer onto `out` and the guard that flushes it at the end.
pub fn new<W: Write + Send + 'static>(out: W) -> (LogWriter<W>, Guard) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            buffer: Vec::with_capacity(64 * 1024),
            stop: false,
        }),
        wake: Condvar::new(),
    });
    let out = Arc::new(Mutex::new(out));
    let thread = {
        let (shared, out) = (shared.clone(), out.clone());
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || run(&shared, &out))
            .ok()
    };
    (
        LogWriter {
            shared: shared.clone(),
            out,
        },
        Guard { shared, thread },
    )
}

/// The writer thread: every [`INTERVAL`] (or when woken), swap the buffer
/// out and write it.
fn run<W: Write>(shared: &Shared, out: &Mutex<W>) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let stop = {
            let mut state = shared.lock();
            if !state.stop && state.buffer.len() < HIGH_WATER {
                state = shared
                    .wake
                    .wait_timeout(state, INTERVAL)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.buffer, &mut spare);
            state.stop
        };
        write_out(out, &spare);
        spare.clear();
        if stop {
            return;
        }
    }
}

fn write_out<W: Write>(out: &Mutex<W>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
    // Standard error gone: nowhere to report it either.
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One event's writer: tracing-subscriber formats a line and writes it in
/// one `write_all`.
pub struct LineWriter<'a, W: Write + Send + 'static> {
    maker: &'a LogWriter<W>,
}

impl<W: Write + Send + 'static> Write for LineWriter<'_, W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let shared = &self.maker.shared;
        let mut state = shared.lock();
        if state.stop {
            // After the guard is gone (or the thread never started):
            // write through.
            drop(state);
            write_out(&self.maker.out, bytes);
            return Ok(bytes.len());
        }
        state.buffer.extend_from_slice(bytes);
        let len = state.buffer.len();
        if len >= LIMIT {
            let full = std::mem::take(&mut state.buffer);
            drop(state);
            write_out(&self.maker.out, &full);
        } else if len >= HIGH_WATER && len - bytes.len() < HIGH_WATER {
            drop(state);
            shared.wake.notify_one();
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + Send + 'static> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter<W> {
    type Writer = LineWriter<'a, W>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter { maker: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tracing_subscriber::fmt::MakeWriter as _;

    /// A shared in-memory output.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn lines_come_out_in_order_and_the_guard_writes_the_rest() {
        let sink = Sink::default();
        let (writer, guard) = new(sink.clone());
        for i in 0..1000 {
            writer
                .make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let text = sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert!(lines
            .iter()
            .enumerate()
            .all(|(i, l)| *l == format!("line {i}")));
        // After the guard: written through at once.
        writer.make_writer().write_all(b"late\n").unwrap();
        assert!(sink.text().ends_with("line 999\nlate\n"));
    }

    #[test]
    fn a_lone_line_is_written_by_the_thread_without_a_flush() {
        let sink = Sink::default();
        let (writer, _guard) = new(sink.clone());
        writer.make_writer().write_all(b"alone\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.text().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(sink.text(), "alone\n");
    }

    #[test]
    fn nothing_is_lost_past_the_limit() {
        let sink = Sink::default();
        let (writer, guard) = new(sink.clone());
        let line = vec![b'x'; 1024];
        let mut written = 0;
        while written <= LIMIT {
            writer.make_writer().write_all(&line).unwrap();
            written += line.len();
        }
        drop(guard);
        assert_eq!(sink.0.lock().unwrap().len(), written);
        assert!(writer.shared.lock().buffer.is_empty());
    }
}
