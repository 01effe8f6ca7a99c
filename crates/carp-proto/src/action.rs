//! What the core asks its owner to do ([`Action`]) and why states change ([`Cause`]).

use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::config::{AddrSpec, Vhid};
use crate::time::Instant;

/// An opaque interface identifier chosen by the owner (the daemon uses the ifindex).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LinkId(pub u32);

/// A vhost's identity: its parent interface (carpdev) and vhid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VhostId {
    /// The parent interface.
    pub link: LinkId,
    /// The vhid, unique per parent interface.
    pub vhid: Vhid,
}

impl fmt::Display for VhostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.vhid, self.link.0)
    }
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IPv4: advertisements to 224.0.0.18.
    V4,
    /// IPv6: advertisements to ff02::12.
    V6,
}

impl Family {
    /// Return the family of `addr`.
    pub fn of(addr: &IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

/// The CARP states (`CARP_STATES` in OpenBSD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    /// Not running: no link, no addresses, disabled or shutting down.
    Init,
    /// Listening for the master.
    Backup,
    /// Owning the addresses and advertising.
    Master,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        })
    }
}

/// Why a state changed; the FreeBSD log reasons are given in each doc line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cause {
    /// "initialization complete": preconditions met, INIT -> BACKUP.
    Init,
    /// "master timed out": a master-down timer expired.
    MasterDown,
    /// "preempting a slower master": preempt on and we advertise more often.
    Preempted,
    /// The master is more demoted than we are (OpenBSD demote byte).
    HigherDemote,
    /// "master will time out": it advertises slower than 3x our advbase.
    SlowMaster,
    /// The master sent a bow-out advertisement (advbase = advskew = 255).
    BowOut,
    /// "more frequent advertisement received": a better master is present.
    Superseded,
    /// A master less demoted than us is present (OpenBSD demote byte).
    LowerDemote,
    /// "hardware interface down".
    LinkDown,
    /// "hardware interface up".
    LinkUp,
    /// The interface cannot hold its addresses (its macvlan vanished, an add failed).
    AddressFault,
    /// The interface can hold its addresses again.
    AddressRepaired,
    /// "user requested": a forced `state master|backup`.
    Forced,
    /// The vhost was disabled by the operator.
    Disabled,
    /// The daemon is shutting down (after the bow-out).
    Shutdown,
    /// The vhost was removed or its configuration changed incompatibly.
    Reconfigured,
    /// A master-down timer expired while the only advertisements heard failed
    /// the HMAC: a peer with another passphrase or address set is probably
    /// MASTER too.
    AuthFailing,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cause::Init => "initialization complete",
            Cause::MasterDown => "master timed out",
            Cause::Preempted => "preempting a slower master",
            Cause::HigherDemote => "master is more demoted",
            Cause::SlowMaster => "master will time out",
            Cause::BowOut => "master bowed out",
            Cause::Superseded => "more frequent advertisement received",
            Cause::LowerDemote => "less demoted master present",
            Cause::LinkDown => "hardware interface down",
            Cause::LinkUp => "hardware interface up",
            Cause::AddressFault => "cannot hold the addresses",
            Cause::AddressRepaired => "addresses can be held again",
            Cause::Forced => "user requested",
            Cause::Disabled => "disabled",
            Cause::Shutdown => "shutting down",
            Cause::Reconfigured => "reconfigured",
            Cause::AuthFailing => "master's advertisements fail authentication",
        })
    }
}

/// Why a demotion counter changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DemoteReason {
    /// The parent interface went down or came back ("carpdev").
    Carpdev,
    /// Consecutive send errors ("> snderrors" / "< snderrors").
    SendErrors,
    /// The operator (`carpctl demote`).
    Operator,
    /// A carp interface could not hold its addresses, or can again ("address fault").
    AddressFault,
}

impl fmt::Display for DemoteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DemoteReason::Carpdev => "carpdev",
            DemoteReason::SendErrors => "snderrors",
            DemoteReason::Operator => "operator",
            DemoteReason::AddressFault => "address fault",
        })
    }
}

/// A carp interface's identity: its parent interface and the vhid of its leader
/// (the first node). A one-node interface has the same identity as its vhost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CarpIfId {
    /// The parent interface.
    pub link: LinkId,
    /// The leader's vhid.
    pub vhid: Vhid,
}

impl CarpIfId {
    /// Return the interface a one-node vhost `id` forms.
    pub fn of(id: VhostId) -> CarpIfId {
        CarpIfId {
            link: id.link,
            vhid: id.vhid,
        }
    }
}

impl fmt::Display for CarpIfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.vhid, self.link.0)
    }
}

/// IPv4 destination of multicast advertisements (spec 6.1).
pub const CARP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 destination of multicast advertisements (spec 6.1).
pub const CARP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// Something the owner of the core must do, drained with `Node::poll_action`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Send `bytes` (the protocol header after the IP header) to `dst`.
    /// Report the outcome with `Node::handle_send_result`.
    Transmit {
        /// The sending vhost.
        id: VhostId,
        /// IPv4 or IPv6.
        family: Family,
        /// The advertisement.
        #[serde(with = "serde_hex")]
        bytes: Vec<u8>,
        /// The group, a configured peer, or a unicast farewell to a new master.
        dst: IpAddr,
        /// Send as an Ethernet frame from this MAC (virtual lladdr, multicast
        /// destination), as the kernels do; `None` sends through the IP stack.
        src_mac: Option<[u8; 6]>,
    },
    /// Configure these addresses on the interface (it became live).
    /// Report the outcome with `Node::handle_address_result`.
    AddAddresses {
        /// The carp interface.
        iface: CarpIfId,
        /// Every address, or the ones a reconfiguration added.
        addresses: Vec<AddrSpec>,
    },
    /// Remove these addresses from the interface.
    RemoveAddresses {
        /// The carp interface.
        iface: CarpIfId,
        /// The addresses to remove.
        addresses: Vec<AddrSpec>,
    },
    /// Send gratuitous ARP for each IPv4 and an unsolicited NA for each IPv6 address.
    Announce {
        /// The carp interface.
        iface: CarpIfId,
        /// The MAC to announce, or `None` for the parent's own.
        mac: Option<[u8; 6]>,
        /// IPv4 addresses to announce.
        ipv4: Vec<Ipv4Addr>,
        /// IPv6 addresses to announce.
        ipv6: Vec<Ipv6Addr>,
    },
    /// The load-share mask changed: bit i is set when node i (vhid order) is MASTER here
    /// (OpenBSD `sc_lsmask`).
    LoadShare {
        /// The carp interface.
        iface: CarpIfId,
        /// The new mask.
        mask: u32,
        /// How many nodes the interface has (OpenBSD `sc_lscount`).
        nodes: u8,
    },
    /// A node wants to become MASTER: prepare (commit state), then call
    /// `Node::handle_prepared` before `deadline`. Addresses wait for it.
    PrepareMaster {
        /// The carp interface.
        iface: CarpIfId,
        /// When the core stops waiting.
        deadline: Instant,
    },
    /// A state transition happened.
    StateChanged {
        /// The vhost.
        id: VhostId,
        /// Previous state.
        from: State,
        /// New state.
        to: State,
        /// Why.
        cause: Cause,
    },
    /// A demotion counter changed (OpenBSD logs this at LOG_ERR).
    DemotionChanged {
        /// The interface group, or `None` for the FreeBSD-style advskew demotion.
        group: Option<String>,
        /// The new value.
        value: i32,
        /// Why.
        reason: DemoteReason,
    },
}

mod serde_hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 || !s.is_ascii() {
            return Err(serde::de::Error::custom(
                "expected an even number of hex digits",
            ));
        }
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)
    }
}
