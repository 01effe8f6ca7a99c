//! systemd readiness and watchdog notifications (`Type=notify`).
//!
//! Every call is a no-op when `NOTIFY_SOCKET` is unset, so the daemon behaves
//! the same outside systemd. READY=1 is sent once every configured vhost is
//! set up, WATCHDOG=1 from the event loop itself (so a stuck loop stops the
//! pings and systemd restarts the service), STOPPING=1 when shutdown begins.
//! Hook scripts inherit `NOTIFY_SOCKET`; they must not write to it.

use std::time::Duration;

use sd_notify::NotifyState;

use crate::carplog;

/// Tell systemd start-up is complete, with a one-line status.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tell systemd the daemon is shutting down (bow-out and address removal follow).
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("bowing out")]);
}

/// Ping the watchdog.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Return how often to ping the watchdog: half of `WATCHDOG_USEC`, as
/// sd_watchdog_enabled(3) advises; `None` when systemd set no watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .map(|d| d / 2)
        .filter(|d| !d.is_zero())
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        carplog!(Warning, "cannot notify systemd: {e}");
    }
}
