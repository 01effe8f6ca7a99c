//! Validated protocol parameters of one virtual host (vhid).
//!
//! The newtypes keep the protocol meaning of the two wire timing fields
//! (`advbase` in seconds, `advskew` in 1/256 s) so that the conversion to a
//! [`Duration`] happens in exactly one place ([`interval`]).

use core::fmt;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// A virtual host id, 1..=255 (carp(4) `vhid`). Zero is never valid on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Vhid(u8);

impl Vhid {
    /// Return the vhid for `value`, or `None` for 0.
    pub const fn new(value: u8) -> Option<Vhid> {
        if value == 0 { None } else { Some(Vhid(value)) }
    }

    /// Return the raw vhid byte.
    pub const fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Vhid {
    type Error = ConfigError;
    fn try_from(value: u8) -> Result<Self, Self::Error> {
        Vhid::new(value).ok_or(ConfigError::VhidZero)
    }
}

impl From<Vhid> for u8 {
    fn from(v: Vhid) -> u8 {
        v.0
    }
}

impl fmt::Display for Vhid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The base advertisement interval in whole seconds (carp(4) `advbase`, 0..=255).
///
/// OpenBSD accepts 0 (sub-second operation, interval = advskew/256 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AdvBase(pub u8);

impl Default for AdvBase {
    /// `CARP_DFLTINTV`: one second.
    fn default() -> Self {
        AdvBase(1)
    }
}

/// The advertisement skew in 1/256 s (carp(4) `advskew`, 0..=254 when configured).
///
/// 255 only appears on the wire in a bow-out advertisement (spec 5.4).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct AdvSkew(pub u8);

/// The largest advskew an operator may configure (`carp_vhids_ioctl` rejects 255).
pub const MAX_CONFIG_ADVSKEW: u8 = 254;

/// The ceiling of the FreeBSD demoted advskew (`CARP_MAXSKEW`).
pub const MAX_DEMOTED_ADVSKEW: u8 = 240;

/// Return the advertisement interval `advbase + advskew/256` s.
///
/// Spec 4.2 (OpenBSD `carp_setrun`): microseconds are computed with integer
/// division, and an interval of 0 is raised to 1/256 s (3906 µs).
pub fn interval(advbase: AdvBase, advskew: AdvSkew) -> Duration {
    let micros = u64::from(advbase.0) * 1_000_000 + u64::from(advskew.0) * 1_000_000 / 256;
    Duration::from_micros(if micros == 0 { 1_000_000 / 256 } else { micros })
}

/// Return the (advbase, advskew) pair as one comparable number of 1/256 s.
///
/// Spec 4.1: comparing the two as timevals is the same as comparing
/// `advbase*256 + advskew`, because advskew < 256.
pub const fn timing_ticks(advbase: u8, advskew: u8) -> u32 {
    (advbase as u32) * 256 + advskew as u32
}

/// Which master-down formula a vhost uses (spec 4.3 and pitfall 12.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MasterDownFormula {
    /// OpenBSD rev 1.370: `3 * (advbase + advskew/256)`.
    #[default]
    Openbsd,
    /// FreeBSD and OpenBSD before 2016: `3 * advbase + advskew/256`.
    Freebsd,
}

/// The key fed to HMAC-SHA1: the passphrase bytes, at most 20 (spec 2.1).
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Passphrase(Vec<u8>);

/// `CARP_KEY_LEN`: the size of the key buffer in the kernels.
pub const KEY_LEN: usize = 20;

impl Passphrase {
    /// Return a passphrase, refusing more than [`KEY_LEN`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Passphrase, ConfigError> {
        if bytes.len() > KEY_LEN {
            return Err(ConfigError::PassphraseTooLong(bytes.len()));
        }
        Ok(Passphrase(bytes.to_vec()))
    }

    /// Return the key bytes (HMAC zero-pads them, which equals the kernels' 20-byte buffer).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Passphrase(<{} bytes>)", self.0.len())
    }
}

/// The protocol parameters of one vhost, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostConfig {
    /// The virtual host id.
    pub vhid: Vhid,
    /// Base advertisement interval.
    pub advbase: AdvBase,
    /// Advertisement skew; lower wins the election.
    pub advskew: AdvSkew,
    /// HMAC key.
    pub passphrase: Passphrase,
    /// Virtual IPv4 addresses (all enter the HMAC, sorted).
    pub ipv4: Vec<Ipv4Addr>,
    /// Virtual IPv6 addresses; link-local ones are only hashed in the
    /// alternative receive context (spec 2.2).
    pub ipv6: Vec<Ipv6Addr>,
    /// Interface groups this vhost belongs to besides `carp` (OpenBSD `ifconfig group`).
    pub groups: Vec<String>,
    /// Master-down timer formula.
    pub master_down: MasterDownFormula,
}

impl VhostConfig {
    /// Return a config with defaults (advbase 1, advskew 0, empty key) for `vhid` and `addrs`.
    pub fn new(vhid: Vhid, addrs: &[IpAddr]) -> VhostConfig {
        let mut cfg = VhostConfig {
            vhid,
            advbase: AdvBase::default(),
            advskew: AdvSkew::default(),
            passphrase: Passphrase::default(),
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            groups: Vec::new(),
            master_down: MasterDownFormula::default(),
        };
        for a in addrs {
            match a {
                IpAddr::V4(v4) => cfg.ipv4.push(*v4),
                IpAddr::V6(v6) => cfg.ipv6.push(*v6),
            }
        }
        cfg
    }

    /// Check the ranges the kernels enforce; `Ok` means the core will accept it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.advskew.0 > MAX_CONFIG_ADVSKEW {
            return Err(ConfigError::AdvSkewRange(self.advskew.0));
        }
        if self.ipv4.is_empty() && self.ipv6.is_empty() {
            return Err(ConfigError::NoAddresses);
        }
        if self
            .ipv4
            .iter()
            .any(|a| a.is_unspecified() || a.is_broadcast())
        {
            return Err(ConfigError::UnusableAddress);
        }
        if self.ipv6.iter().any(|a| a.is_unspecified()) {
            return Err(ConfigError::UnusableAddress);
        }
        Ok(())
    }

    /// Return every virtual address, IPv4 first.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let v4 = self.ipv4.iter().map(|a| IpAddr::V4(*a));
        v4.chain(self.ipv6.iter().map(|a| IpAddr::V6(*a))).collect()
    }
}

/// A reason a configuration value is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// vhid 0 is reserved.
    VhidZero,
    /// advskew above 254.
    AdvSkewRange(u8),
    /// The passphrase is longer than 20 bytes.
    PassphraseTooLong(usize),
    /// A vhost needs at least one address to run (spec 5.1).
    NoAddresses,
    /// 0.0.0.0, 255.255.255.255 or `::` can never be hashed (spec 2.2).
    UnusableAddress,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::VhidZero => write!(f, "vhid must be between 1 and 255"),
            ConfigError::AdvSkewRange(v) => write!(f, "advskew {v} is out of range 0..254"),
            ConfigError::PassphraseTooLong(n) => {
                write!(f, "passphrase is {n} bytes, at most {KEY_LEN} are allowed")
            }
            ConfigError::NoAddresses => write!(f, "a vhost needs at least one address"),
            ConfigError::UnusableAddress => {
                write!(
                    f,
                    "0.0.0.0, 255.255.255.255 and :: cannot be virtual addresses"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn interval_is_advbase_plus_skew_over_256() {
        assert_eq!(interval(AdvBase(1), AdvSkew(0)), Duration::from_secs(1));
        assert_eq!(
            interval(AdvBase(1), AdvSkew(128)),
            Duration::from_micros(1_500_000)
        );
        assert_eq!(
            interval(AdvBase(0), AdvSkew(100)),
            Duration::from_micros(390_625)
        );
    }

    #[test]
    fn interval_zero_is_floored_to_one_tick() {
        assert_eq!(
            interval(AdvBase(0), AdvSkew(0)),
            Duration::from_micros(3906)
        );
    }

    #[test]
    fn vhid_zero_is_refused() {
        assert!(Vhid::new(0).is_none());
        assert_eq!(Vhid::try_from(0), Err(ConfigError::VhidZero));
    }

    #[test]
    fn passphrase_longer_than_key_len_is_refused() {
        assert!(Passphrase::new(&[b'x'; 20]).is_ok());
        assert_eq!(
            Passphrase::new(&[b'x'; 21]),
            Err(ConfigError::PassphraseTooLong(21))
        );
    }

    #[test]
    fn advskew_255_is_refused() {
        let mut cfg = VhostConfig::new(Vhid(1), &["192.0.2.1".parse().unwrap()]);
        cfg.advskew = AdvSkew(255);
        assert_eq!(cfg.validate(), Err(ConfigError::AdvSkewRange(255)));
    }
}
