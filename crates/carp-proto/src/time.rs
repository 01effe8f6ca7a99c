//! Time as the core sees it: an [`Instant`] passed in by the caller.
//!
//! The core never reads a clock. The daemon converts its monotonic clock into
//! an `Instant`; the simulator advances a virtual one. Like smoltcp's
//! `Instant`, the zero point is arbitrary and only differences matter.

use core::fmt;
use core::ops::{Add, Sub};
use core::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, in microseconds since an arbitrary zero.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Instant(u64);

impl Instant {
    /// The arbitrary zero.
    pub const ZERO: Instant = Instant(0);

    /// Return the instant `micros` microseconds after zero.
    pub const fn from_micros(micros: u64) -> Instant {
        Instant(micros)
    }

    /// Return the instant `millis` milliseconds after zero.
    pub const fn from_millis(millis: u64) -> Instant {
        Instant(millis.saturating_mul(1000))
    }

    /// Return the microseconds since zero.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Return the time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, rhs: Duration) -> Instant {
        let micros = u64::try_from(rhs.as_micros()).unwrap_or(u64::MAX);
        Instant(self.0.saturating_add(micros))
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, rhs: Instant) -> Duration {
        self.saturating_since(rhs)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn add_saturates_instead_of_overflowing() {
        let late = Instant::from_micros(u64::MAX - 1);
        assert_eq!(
            late + Duration::from_secs(10),
            Instant::from_micros(u64::MAX)
        );
    }

    #[test]
    fn display_is_seconds_with_micros() {
        assert_eq!(Instant::from_micros(3_004_000).to_string(), "3.004000s");
    }
}
