//! Validated protocol parameters of one virtual host (vhid).
//!
//! The newtypes keep the protocol meaning of the two wire timing fields
//! (`advbase` in seconds, `advskew` in 1/256 s) so that the conversion to a
//! [`Duration`] happens in two places only: [`interval`] and
//! [`MasterDownFormula::master_down`].

use core::fmt;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::balance::Balancing;

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
    /// FreeBSD's for advbase >= 1, OpenBSD's for advbase 0 (see [`resolve`](Self::resolve)).
    #[default]
    Auto,
    /// OpenBSD rev 1.370: `3 * (advbase + advskew/256)`.
    Openbsd,
    /// FreeBSD and OpenBSD before 2016: `3 * advbase + advskew/256`.
    Freebsd,
}

impl MasterDownFormula {
    /// The formula in effect at `advbase`.
    ///
    /// `Auto` picks FreeBSD's `3 * advbase + advskew/256`, which FreeBSD,
    /// pfSense/OPNsense, ucarp, keepalived's VRRPv2 and OpenBSD before rev
    /// 1.370 use, so a backup with advskew 100 takes over 0.78 s sooner than
    /// with OpenBSD's. FreeBSD has no advbase 0, and there the FreeBSD sum
    /// (advskew/256 alone) would be shorter than one advertisement interval,
    /// so advbase 0 keeps OpenBSD's `3 * interval`.
    pub const fn resolve(self, advbase: AdvBase) -> MasterDownFormula {
        match self {
            MasterDownFormula::Auto if advbase.0 == 0 => MasterDownFormula::Openbsd,
            MasterDownFormula::Auto => MasterDownFormula::Freebsd,
            other => other,
        }
    }

    /// The master-down interval of a backup with this timing (spec 4.3).
    pub fn master_down(self, advbase: AdvBase, advskew: AdvSkew) -> Duration {
        match self.resolve(advbase) {
            MasterDownFormula::Openbsd | MasterDownFormula::Auto => interval(advbase, advskew) * 3,
            MasterDownFormula::Freebsd => {
                let d = Duration::from_secs(3 * u64::from(advbase.0))
                    + Duration::from_micros(u64::from(advskew.0) * 1_000_000 / 256);
                d.max(interval(AdvBase(0), AdvSkew(0)) * 3)
            }
        }
    }

    /// The word used in the configuration and in reports.
    pub const fn as_str(self) -> &'static str {
        match self {
            MasterDownFormula::Auto => "auto",
            MasterDownFormula::Openbsd => "openbsd",
            MasterDownFormula::Freebsd => "freebsd",
        }
    }
}

/// Which context advertisements are signed with (spec 2.2): the two kernels
/// differ only for scoped (link-local) IPv6 addresses of the vhid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HmacContext {
    /// OpenBSD `carp_prepare_ad` (`HMAC_NOV6LL`): scoped addresses left out.
    #[default]
    Openbsd,
    /// FreeBSD `carp_hmac_prepare`: scoped addresses included, embedded
    /// scope zeroed; a FreeBSD vhid with an fe80:: address needs it.
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
    /// The HMAC context advertisements are signed with.
    pub hmac: HmacContext,
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
            hmac: HmacContext::default(),
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

/// One virtual address with its prefix length, as the shell configures it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AddrSpec {
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length (the core never reads it; the shell needs it).
    pub prefix_len: u8,
}

impl AddrSpec {
    /// Return `addr` as a host address (/32 or /128).
    pub fn host(addr: IpAddr) -> AddrSpec {
        let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
        AddrSpec { addr, prefix_len }
    }
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// One node of a carp interface (OpenBSD `carpnodes vhid:advskew`, `struct carp_vhost_entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CarpNode {
    /// The node's vhid.
    pub vhid: Vhid,
    /// The node's advskew.
    pub advskew: AdvSkew,
}

/// The link-layer address a carp interface answers and advertises with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lladdr {
    /// `00:00:5e:00:01:<vhid>`, as the kernels use (carp(4) `lladdr` unset).
    #[default]
    Virtual,
    /// The parent interface's own MAC (ucarp, or `lladdr` set to the parent's).
    Parent,
}

/// The multicast MAC `01:00:5e:00:01:<vhid>` of a leader in `balancing ip`
/// (spec section 7), so that switches flood frames to it to every host.
pub const fn multicast_virtual_mac(vhid: Vhid) -> [u8; 6] {
    [0x01, 0x00, 0x5e, 0x00, 0x01, vhid.0]
}

/// Return the virtual MAC of `vhid` (spec 6.1, RFC 5798's IPv4 VRRP prefix).
pub const fn virtual_mac(vhid: Vhid) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vhid.0]
}

/// The protocol a carp interface speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// CARP v2 (OpenBSD/FreeBSD carp(4)).
    #[default]
    Carp,
    /// VRRPv3 (RFC 9568), FreeBSD 14's `carpver 3`: no authentication, a
    /// priority instead of advbase/advskew, one address family.
    Vrrp,
}

/// The VRRPv3 settings of an interface (FreeBSD `vrrpprio`, `vrrpinterval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrrpParams {
    /// 1..254, or 255 for the address owner (RFC 9568 6.1). Higher wins.
    pub priority: u8,
    /// Advertisement_Interval in centiseconds, 1..4095.
    pub interval_cs: u16,
    /// The virtual MAC of an IPv6 instance: RFC 9568's `00:00:5e:00:02:VRID`,
    /// or FreeBSD's `:01:` (it sends IPv6 VRRP from the IPv4 prefix).
    pub v6_mac_freebsd: bool,
}

impl Default for VrrpParams {
    /// FreeBSD's and RFC 9568's defaults: priority 100, one second.
    fn default() -> VrrpParams {
        VrrpParams {
            priority: 100,
            interval_cs: 100,
            v6_mac_freebsd: false,
        }
    }
}

/// RFC 9568 7.3: the IPv6 virtual MAC `00:00:5e:00:02:<vrid>`.
pub const fn virtual_mac_v6(vrid: Vhid) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x02, vrid.0]
}

/// A pre-master gate: becoming MASTER waits for `Node::handle_prepared` or the deadline.
///
/// carpd's own (no kernel has it): connection-state sync commits its cache here,
/// before any address goes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gate {
    /// How long to wait for the external "prepared" input.
    pub deadline: Duration,
    /// On failure or timeout stay BACKUP (`true`) or go live anyway (`false`).
    pub strict: bool,
}

/// A carp interface (OpenBSD `struct carp_softc`): what its nodes share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarpIfConfig {
    /// The nodes, sorted by vhid; the first is the leader.
    pub nodes: Vec<CarpNode>,
    /// Base advertisement interval of every node.
    pub advbase: AdvBase,
    /// HMAC key of every node.
    pub passphrase: Passphrase,
    /// The shared virtual addresses, in configuration order.
    pub addresses: Vec<AddrSpec>,
    /// Unicast peers: a family with peers advertises to each of them instead
    /// of 224.0.0.18 / ff02::12, and hears only them (FreeBSD 14 `peer` /
    /// `peer6`, which takes one of each).
    #[serde(default)]
    pub peers: Vec<IpAddr>,
    /// Also advertise to the group when peers are configured, so a switch
    /// that drops one path does not split the brain.
    #[serde(default)]
    pub dual_path: bool,
    /// Whether a TTL / hop limit other than 255 drops an advertisement;
    /// `None`: only one sent to a multicast group (FreeBSD `carp_input`:
    /// routed unicast peers arrive with less).
    #[serde(default)]
    pub ttl_check: Option<bool>,
    /// Interface groups besides `carp`.
    pub groups: Vec<String>,
    /// Master-down timer formula.
    pub master_down: MasterDownFormula,
    /// The MAC announced and advertised from.
    pub lladdr: Lladdr,
    /// The protocol.
    pub flavour: Flavour,
    /// An optional pre-master gate.
    pub gate: Option<Gate>,
    /// If not empty, the only source addresses whose advertisements are
    /// considered; others are dropped as `bad_src`. The CARP header leaves
    /// advbase, advskew and demote outside the HMAC, so a replayed advert with
    /// advbase 0 keeps every node BACKUP; this list limits who can do that.
    pub allowed_sources: Vec<IpAddr>,
    /// The balancing mode asked for; [`CarpIfConfig::balancing`] is the one run.
    #[serde(default)]
    pub requested_balancing: Balancing,
    /// The HMAC context advertisements are signed with.
    #[serde(default)]
    pub hmac: HmacContext,
    /// With [`Flavour::Vrrp`]: priority and interval.
    #[serde(default)]
    pub vrrp: VrrpParams,
}

impl CarpIfConfig {
    /// Return the virtual MAC of node `vhid`: CARP's and VRRP's IPv4 one, or
    /// for a VRRP interface of IPv6 addresses RFC 9568's IPv6 one (unless
    /// FreeBSD's is asked for).
    pub fn node_virtual_mac(&self, vhid: Vhid) -> [u8; 6] {
        let v6_only = !self.addresses.is_empty() && self.addresses.iter().all(|a| a.addr.is_ipv6());
        if self.flavour == Flavour::Vrrp && v6_only && !self.vrrp.v6_mac_freebsd {
            virtual_mac_v6(vhid)
        } else {
            virtual_mac(vhid)
        }
    }

    /// Return the balancing mode this interface runs (OpenBSD: one node forces
    /// `none`, several nodes with `none` asked for run `ip`).
    pub fn balancing(&self) -> Balancing {
        Balancing::effective(self.requested_balancing, self.nodes.len())
    }

    /// Return the MAC ARP requests / NS for the addresses are answered with
    /// when node `slot` answers, in a balancing mode (spec section 7): the
    /// leader's multicast MAC in `ip`, its virtual MAC in `ip-stealth` and
    /// `ip-unicast`, node `slot`'s virtual MAC in `arp`.
    pub fn answer_mac(&self, slot: usize) -> Option<[u8; 6]> {
        let vhid = self.nodes.get(slot)?.vhid;
        match self.balancing() {
            Balancing::None => None,
            Balancing::Ip => Some(multicast_virtual_mac(self.nodes[0].vhid)),
            Balancing::IpStealth | Balancing::IpUnicast => Some(virtual_mac(self.nodes[0].vhid)),
            Balancing::Arp => Some(virtual_mac(vhid)),
        }
    }

    /// Return the IPv4 addresses, in configuration order.
    pub fn ipv4(&self) -> Vec<Ipv4Addr> {
        self.addresses
            .iter()
            .filter_map(|a| match a.addr {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// Return the IPv6 addresses, in configuration order.
    pub fn ipv6(&self) -> Vec<Ipv6Addr> {
        self.addresses
            .iter()
            .filter_map(|a| match a.addr {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            })
            .collect()
    }

    /// Return the unicast peers of `family`.
    pub fn peers_of(&self, family: crate::action::Family) -> impl Iterator<Item = IpAddr> + '_ {
        self.peers
            .iter()
            .copied()
            .filter(move |p| crate::action::Family::of(p) == family)
    }

    /// Return true if some address is of `family`.
    pub fn has(&self, family: crate::action::Family) -> bool {
        self.addresses
            .iter()
            .any(|a| crate::action::Family::of(&a.addr) == family)
    }

    /// Check what a carp interface needs beyond each node's ranges.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }
        if self.nodes.len() > MAX_NODES {
            return Err(ConfigError::TooManyNodes(self.nodes.len()));
        }
        if self.nodes.windows(2).any(|w| w[0].vhid >= w[1].vhid) {
            return Err(ConfigError::NodesUnsorted);
        }
        if self.flavour == Flavour::Vrrp {
            if self.nodes.len() != 1 {
                return Err(ConfigError::VrrpOneNode);
            }
            let v4 = self.addresses.iter().any(|a| a.addr.is_ipv4());
            let v6 = self.addresses.iter().any(|a| a.addr.is_ipv6());
            if v4 && v6 {
                return Err(ConfigError::VrrpOneFamily);
            }
            if self.vrrp.priority == 0 {
                return Err(ConfigError::VrrpPriority);
            }
            if !(1..=crate::wire::vrrp::MAX_INTERVAL_CS).contains(&self.vrrp.interval_cs) {
                return Err(ConfigError::VrrpInterval(self.vrrp.interval_cs));
            }
        }
        for n in &self.nodes {
            let mut probe = VhostConfig::new(n.vhid, &[]);
            probe.advskew = n.advskew;
            probe.ipv4 = self.ipv4();
            probe.ipv6 = self.ipv6();
            probe.validate()?;
        }
        Ok(())
    }
}

/// The most nodes one carp interface may have (the load-share mask is 32 bits).
pub const MAX_NODES: usize = 32;

impl From<VhostConfig> for CarpIfConfig {
    /// A one-node interface: host prefixes, no peers, virtual MAC, no gate.
    fn from(c: VhostConfig) -> CarpIfConfig {
        let addresses = c.addresses().into_iter().map(AddrSpec::host).collect();
        CarpIfConfig {
            nodes: vec![CarpNode {
                vhid: c.vhid,
                advskew: c.advskew,
            }],
            advbase: c.advbase,
            passphrase: c.passphrase,
            addresses,
            peers: Vec::new(),
            dual_path: false,
            ttl_check: None,
            groups: c.groups,
            master_down: c.master_down,
            lladdr: Lladdr::default(),
            flavour: Flavour::default(),
            gate: None,
            allowed_sources: Vec::new(),
            requested_balancing: Balancing::None,
            hmac: c.hmac,
            vrrp: VrrpParams::default(),
        }
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
    /// A carp interface without nodes.
    NoNodes,
    /// More than [`MAX_NODES`] nodes.
    TooManyNodes(usize),
    /// Nodes must be sorted by vhid, each vhid once.
    NodesUnsorted,
    /// A VRRP interface has one node (no carpnodes).
    VrrpOneNode,
    /// A VRRP instance is of one address family (RFC 9568).
    VrrpOneFamily,
    /// VRRP priority 0 is reserved for the resigning master.
    VrrpPriority,
    /// The VRRP interval is 1..4095 centiseconds.
    VrrpInterval(u16),
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
            ConfigError::NoNodes => write!(f, "a carp interface needs at least one node"),
            ConfigError::VrrpOneNode => {
                write!(f, "a VRRP (carpver 3) vhost has one vrid, not carpnodes")
            }
            ConfigError::VrrpOneFamily => write!(
                f,
                "a VRRP (carpver 3) vhost is of one address family: give IPv4 and IPv6 addresses \
                 separate vhids"
            ),
            ConfigError::VrrpPriority => {
                write!(f, "vrrpprio 0 is reserved (a resigning master sends it)")
            }
            ConfigError::VrrpInterval(v) => {
                write!(f, "vrrpinterval {v} is out of range 1..4095 (centiseconds)")
            }
            ConfigError::TooManyNodes(n) => {
                write!(f, "{n} nodes, at most {MAX_NODES} are allowed")
            }
            ConfigError::NodesUnsorted => {
                write!(f, "nodes must be sorted by vhid and use each vhid once")
            }
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
