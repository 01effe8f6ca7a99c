//! Logging with the meaning of OpenBSD's `net.inet.carp.log` (spec 8).
//!
//! Messages go to stderr, one line each, prefixed with the syslog priority in
//! the `<N>` form that journald and systemd understand. A message is printed
//! when its level is at or below the configured threshold (0..=7, default 2:
//! only BACKUP<->MASTER transitions and worse).
//!
//! Logging never blocks the caller (the protocol loop): a line goes into a
//! bounded queue that a writer thread drains into stderr. When stderr is
//! slow (a stalled journal, a pipe nobody reads) and the queue is full, the
//! line is dropped and counted, and the count is written as soon as the
//! sink takes lines again.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

static THRESHOLD: AtomicU8 = AtomicU8::new(2);

/// Lines queued for the writer before new ones are dropped.
const QUEUE_LINES: usize = 4096;

/// A bounded, never-blocking line queue to a writer thread.
pub struct Queue {
    tx: SyncSender<String>,
    /// Lines queued and not yet written.
    pending: std::sync::Arc<AtomicUsize>,
    /// Lines dropped since the last report.
    dropped: std::sync::Arc<AtomicU64>,
}

impl Queue {
    /// Start a writer thread that writes each queued line to `sink`.
    pub fn spawn(mut sink: Box<dyn Write + Send>, capacity: usize) -> std::io::Result<Queue> {
        let (tx, rx): (SyncSender<String>, Receiver<String>) = sync_channel(capacity);
        let pending = std::sync::Arc::new(AtomicUsize::new(0));
        let dropped = std::sync::Arc::new(AtomicU64::new(0));
        let (p, d) = (pending.clone(), dropped.clone());
        std::thread::Builder::new()
            .name("carpd-log".into())
            .spawn(move || {
                for line in rx {
                    let lost = d.swap(0, Ordering::Relaxed);
                    if lost > 0 {
                        let _ = writeln!(
                            sink,
                            "<{}>carpd: {lost} log message(s) dropped: the log was too slow",
                            Level::Warning as u8
                        );
                    }
                    let _ = sink.write_all(line.as_bytes());
                    let _ = sink.flush();
                    p.fetch_sub(1, Ordering::Release);
                }
            })?;
        Ok(Queue {
            tx,
            pending,
            dropped,
        })
    }

    /// Queue `line` (with its newline); drop and count it when the queue is full.
    pub fn push(&self, line: String) {
        self.pending.fetch_add(1, Ordering::Acquire);
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Release);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Return the number of lines dropped and not yet reported.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Wait up to `timeout` until every queued line is written; return
    /// whether it was.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.pending.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

static QUEUE: OnceLock<Queue> = OnceLock::new();

/// Send stderr lines through a queue and a writer thread from now on;
/// until then they are written directly (start-up, before the loop runs).
///
/// Call it after privileges are dropped: capabilities are per thread, and
/// a thread started before would keep them all (and the drop refuses to
/// run while another thread exists).
pub fn start_queue() {
    if QUEUE.get().is_none()
        && let Ok(q) = Queue::spawn(Box::new(std::io::stderr()), QUEUE_LINES)
    {
        let _ = QUEUE.set(q);
    }
}

/// Write what is queued before the process exits (at most `timeout`).
pub fn flush(timeout: Duration) {
    if let Some(q) = QUEUE.get() {
        q.flush(timeout);
    }
}

/// Syslog priorities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// LOG_CRIT: BACKUP <-> MASTER transitions.
    Crit = 2,
    /// LOG_ERR: demotion changes, start-up failures.
    Err = 3,
    /// LOG_WARNING: transitions to or from INIT, loops, send failures, repairs.
    Warning = 4,
    /// LOG_NOTICE: bad TTL, bad version.
    Notice = 5,
    /// LOG_INFO: other bad packets, start and stop.
    Info = 6,
    /// LOG_DEBUG: everything else.
    Debug = 7,
}

/// Set the threshold (values above 7 are treated as 7).
pub fn set_threshold(level: u8) {
    THRESHOLD.store(level.min(7), Ordering::Relaxed);
}

/// Return true if messages of `level` are printed.
pub fn enabled(level: Level) -> bool {
    level as u8 <= THRESHOLD.load(Ordering::Relaxed)
}

/// Print one message at `level` if enabled.
pub fn log(level: Level, args: fmt::Arguments<'_>) {
    #[cfg(test)]
    capture::push(level, &args);
    if enabled(level) {
        let line = format!("<{}>carpd: {}\n", level as u8, args);
        match QUEUE.get() {
            Some(q) => q.push(line),
            // Not started (or no thread could be): write it directly.
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

/// An error and its sources, `op: cause: errno text`, for log lines.
///
/// OS errors name the operation in `Display` and keep the kernel's error
/// (with its errno) as the source, so printing only the top loses the reason.
pub struct Chain<'a>(&'a dyn std::error::Error);

/// Return `e` with its whole source chain for printing.
pub fn chain(e: &dyn std::error::Error) -> Chain<'_> {
    Chain(e)
}

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Log a formatted message at a [`Level`].
#[macro_export]
macro_rules! carplog {
    ($level:ident, $($arg:tt)*) => {
        $crate::log::log($crate::log::Level::$level, format_args!($($arg)*))
    };
}

#[cfg(test)]
mod queue_tests {
    use std::io;
    use std::sync::mpsc::{self, Sender};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// How long a condition may take on a loaded machine before the test fails.
    const WAIT: Duration = Duration::from_secs(30);

    /// A sink whose first write says so and then waits for the gate; it
    /// collects everything.
    struct Stalled {
        entered: Option<Sender<()>>,
        gate: Receiver<()>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(entered) = self.entered.take() {
                let _ = entered.send(());
                // Released by a send, or by the test dropping the sender.
                let _ = self.gate.recv();
            }
            self.out.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Input: the writer takes line 0 and its sink stalls; lines 1..=99 are
    /// pushed into a queue of 4; the sink resumes; one more line.
    /// Output: the pushes return with lines 1..=4 queued and 95 dropped; every
    /// queued line is written in order, the drop report before the first line
    /// written after the stall.
    #[test]
    fn a_stalled_sink_never_blocks_the_caller_and_drops_are_reported() {
        let (entered_tx, entered) = mpsc::channel();
        let (release, gate) = mpsc::channel();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Stalled {
            entered: Some(entered_tx),
            gate,
            out: out.clone(),
        };
        let q = Arc::new(Queue::spawn(Box::new(sink), 4).unwrap());
        q.push("line 0\n".into());
        entered
            .recv_timeout(WAIT)
            .expect("the writer never took line 0");
        let (done_tx, done) = mpsc::channel();
        let pusher = q.clone();
        std::thread::spawn(move || {
            for i in 1..100 {
                pusher.push(format!("line {i}\n"));
            }
            let _ = done_tx.send(pusher.dropped());
        });
        assert_eq!(done.recv_timeout(WAIT), Ok(95), "push blocked");
        release.send(()).unwrap();
        assert!(q.flush(WAIT));
        q.push("after\n".into());
        assert!(q.flush(WAIT));
        let text = String::from_utf8(out.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "line 0\n\
             <4>carpd: 95 log message(s) dropped: the log was too slow\n\
             line 1\nline 2\nline 3\nline 4\n\
             after\n"
        );
    }
}

/// Every message logged on this thread, whatever the threshold, for tests
/// that check what the daemon reported.
#[cfg(test)]
pub(crate) mod capture {
    use std::cell::RefCell;
    use std::fmt;

    use super::Level;

    thread_local! {
        static LINES: RefCell<Option<Vec<(Level, String)>>> = const { RefCell::new(None) };
    }

    /// Start capturing on this thread (a current-thread runtime runs its tasks here).
    pub(crate) fn start() {
        LINES.with(|l| *l.borrow_mut() = Some(Vec::new()));
    }

    /// Return what was captured since [`start`].
    pub(crate) fn lines() -> Vec<(Level, String)> {
        LINES.with(|l| l.borrow().clone().unwrap_or_default())
    }

    pub(super) fn push(level: Level, args: &fmt::Arguments<'_>) {
        LINES.with(|l| {
            if let Some(lines) = l.borrow_mut().as_mut() {
                lines.push((level, args.to_string()));
            }
        });
    }
}
