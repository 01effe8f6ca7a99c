//! The per-vhost timer table (quinn-proto's `TimerTable` shape).
//!
//! OpenBSD has three `timeout`s per vhost: `ad_tmo`, `md_tmo`, `md6_tmo`;
//! carpd adds the deadline of the pre-master gate and the farewell's repeats.
//! Here they are slots in an array; nothing fires by itself, the owner asks
//! which are expired when `handle_timeout` is called.

use crate::time::Instant;

/// One timer of a vhost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// When to send the next advertisement (MASTER).
    Advertise = 0,
    /// When to declare the master dead for want of IPv4 advertisements (BACKUP).
    MasterDownV4 = 1,
    /// When to declare the master dead for want of IPv6 advertisements (BACKUP).
    MasterDownV6 = 2,
    /// When to stop waiting for the pre-master gate (BACKUP taking over).
    Prepare = 3,
    /// When to repeat the farewell to the master yielded to (BACKUP).
    Farewell = 4,
}

impl Timer {
    /// Every timer, in the order expired ones are handled.
    pub(crate) const VALUES: [Timer; 5] = [
        Timer::Advertise,
        Timer::MasterDownV4,
        Timer::MasterDownV6,
        Timer::Prepare,
        Timer::Farewell,
    ];
}

/// Deadlines of a vhost's timers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimerTable {
    data: [Option<Instant>; Timer::VALUES.len()],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.data[timer as usize] = Some(at);
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.data[timer as usize]
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.data[timer as usize] = None;
    }

    pub(crate) fn stop_all(&mut self) {
        self.data = [None; Timer::VALUES.len()];
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.data.iter().flatten().min().copied()
    }

    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn next_timeout_is_the_earliest() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::MasterDownV6, Instant::from_millis(30));
        t.set(Timer::MasterDownV4, Instant::from_millis(20));
        assert_eq!(t.next_timeout(), Some(Instant::from_millis(20)));
        assert!(t.is_expired(Timer::MasterDownV4, Instant::from_millis(20)));
        assert!(!t.is_expired(Timer::MasterDownV6, Instant::from_millis(20)));
        t.stop_all();
        assert_eq!(t.next_timeout(), None);
    }
}
