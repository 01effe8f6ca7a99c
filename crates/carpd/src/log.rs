//! Logging with the meaning of OpenBSD's `net.inet.carp.log` (spec 8).
//!
//! Messages go to stderr, one line each, prefixed with the syslog priority in
//! the `<N>` form that journald and systemd understand. A message is printed
//! when its level is at or below the configured threshold (0..=7, default 2:
//! only BACKUP<->MASTER transitions and worse).

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

static THRESHOLD: AtomicU8 = AtomicU8::new(2);

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
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "<{}>carpd: {}", level as u8, args);
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
