//! Counters named after OpenBSD's `struct carpstats` (spec 8), plus a few of carpd's own.
//!
//! Every received packet increments `ipackets`/`ipackets6` and then exactly one
//! of the drop counters or `accepted`, so `received == drops + accepted` holds.

use core::fmt;
use core::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// Packet and event counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Stats {
    /// IPv4 advertisements received (`carps_ipackets`).
    pub ipackets: u64,
    /// IPv6 advertisements received (`carps_ipackets6`).
    pub ipackets6: u64,
    /// Received on an interface with no vhost (`carps_badif`).
    pub bad_if: u64,
    /// TTL / hop limit not 255 (`carps_badttl`).
    pub bad_ttl: u64,
    /// Shorter than the CARP header (`carps_badlen`).
    pub bad_len: u64,
    /// Checksum failed (`carps_badsum`).
    pub bad_sum: u64,
    /// No running vhost with that vhid on the interface (`carps_badvhid`).
    pub bad_vhid: u64,
    /// Version not 2 (`carps_badver`).
    pub bad_ver: u64,
    /// HMAC did not verify (`carps_badauth`).
    pub bad_auth: u64,
    /// The source address is not in the interface's allow-list (carpd).
    #[serde(default)]
    pub bad_src: u64,
    /// Unicast peers are configured for the family and the source is none
    /// of them (carpd; FreeBSD does not check the source).
    #[serde(default)]
    pub bad_peer: u64,
    /// Our own cookie came back: a loop or a replay of our packets (OpenBSD logs
    /// "replay or network loop detected"; counted apart from `bad_auth` here).
    pub replay: u64,
    /// Passed every check and reached the state machine (carpd).
    pub accepted: u64,
    /// Accepted, but type was not 1 or authlen not 7 (the kernels accept these too).
    pub odd_header: u64,
    /// IPv4 advertisements sent (`carps_opackets`).
    pub opackets: u64,
    /// IPv6 advertisements sent (`carps_opackets6`).
    pub opackets6: u64,
    /// Advertisements the OS failed to send (OpenBSD `if_oerrors`).
    pub send_errors: u64,
    /// Transitions to MASTER (`carps_preempt`).
    pub preempt: u64,
    /// State transitions of any kind (carpd).
    pub transitions: u64,
}

impl Stats {
    /// Return the number of received packets (both families).
    pub fn received(&self) -> u64 {
        self.ipackets + self.ipackets6
    }

    /// Return the number of received packets that were dropped.
    pub fn dropped(&self) -> u64 {
        self.bad_if
            + self.bad_ttl
            + self.bad_len
            + self.bad_sum
            + self.bad_vhid
            + self.bad_ver
            + self.bad_auth
            + self.bad_src
            + self.bad_peer
            + self.replay
    }

    /// Increment the counter of `reason`.
    pub fn count_drop(&mut self, reason: DropReason) {
        let counter = match reason {
            DropReason::BadIf => &mut self.bad_if,
            DropReason::BadTtl(_) => &mut self.bad_ttl,
            DropReason::BadLen(_) => &mut self.bad_len,
            DropReason::BadSum => &mut self.bad_sum,
            DropReason::BadVhid(_) => &mut self.bad_vhid,
            DropReason::BadVersion(_) => &mut self.bad_ver,
            DropReason::BadAuth => &mut self.bad_auth,
            DropReason::BadSource => &mut self.bad_src,
            DropReason::NotPeer => &mut self.bad_peer,
            DropReason::Replay => &mut self.replay,
        };
        *counter += 1;
    }
}

impl AddAssign<&Stats> for Stats {
    fn add_assign(&mut self, o: &Stats) {
        self.ipackets += o.ipackets;
        self.ipackets6 += o.ipackets6;
        self.bad_if += o.bad_if;
        self.bad_ttl += o.bad_ttl;
        self.bad_len += o.bad_len;
        self.bad_sum += o.bad_sum;
        self.bad_vhid += o.bad_vhid;
        self.bad_ver += o.bad_ver;
        self.bad_auth += o.bad_auth;
        self.bad_src += o.bad_src;
        self.bad_peer += o.bad_peer;
        self.replay += o.replay;
        self.accepted += o.accepted;
        self.odd_header += o.odd_header;
        self.opackets += o.opackets;
        self.opackets6 += o.opackets6;
        self.send_errors += o.send_errors;
        self.preempt += o.preempt;
        self.transitions += o.transitions;
    }
}

/// Why a received packet was dropped; each maps onto one counter of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DropReason {
    /// Arrived on an interface without vhosts.
    BadIf,
    /// TTL / hop limit was not 255.
    BadTtl(u8),
    /// Too short.
    BadLen(usize),
    /// Checksum failed.
    BadSum,
    /// Unknown or not running vhid.
    BadVhid(u8),
    /// Version not 2.
    BadVersion(u8),
    /// HMAC mismatch.
    BadAuth,
    /// The source is not in the allow-list.
    BadSource,
    /// Peers are configured and the source is none of them.
    NotPeer,
    /// Our own cookie.
    Replay,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::BadIf => write!(f, "packet received on non-carp interface"),
            DropReason::BadTtl(t) => write!(f, "received ttl {t} != 255"),
            DropReason::BadLen(n) => write!(f, "packet too short ({n} bytes)"),
            DropReason::BadSum => write!(f, "checksum failed"),
            DropReason::BadVhid(v) => write!(f, "no running vhid {v}"),
            DropReason::BadVersion(v) => write!(f, "invalid version {v}"),
            DropReason::BadAuth => write!(f, "incorrect hash"),
            DropReason::BadSource => write!(f, "source address not allowed"),
            DropReason::NotPeer => write!(f, "source is not a configured peer"),
            DropReason::Replay => write!(f, "replay or network loop detected"),
        }
    }
}
