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
    if enabled(level) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "<{}>carpd: {}", level as u8, args);
    }
}

/// Log a formatted message at a [`Level`].
#[macro_export]
macro_rules! carplog {
    ($level:ident, $($arg:tt)*) => {
        $crate::log::log($crate::log::Level::$level, format_args!($($arg)*))
    };
}
