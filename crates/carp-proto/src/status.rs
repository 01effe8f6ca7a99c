//! What the core reports about itself and what it takes with a datagram:
//! status views, the receive metadata and the control errors.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::action::{CarpIfId, Cause, LinkId, State, VhostId};
use crate::config::{AddrSpec, AdvBase, AdvSkew};
use crate::stats::Stats;
use crate::time::Instant;

/// What the receive path knows about a datagram besides its protocol bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// The interface it arrived on.
    pub link: LinkId,
    /// The IP source address.
    pub src: IpAddr,
    /// The IP destination address (the group, or ours for unicast).
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    /// This host's own advertisement source on that link and family, when
    /// known: it breaks ties between two MASTERs of equal standing.
    pub local: Option<IpAddr>,
}

/// A read-only view of one vhost (node) for status displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostStatus {
    /// Identity.
    pub id: VhostId,
    /// The carp interface it is a node of.
    pub iface: CarpIfId,
    /// Current state.
    pub state: State,
    /// When the state was entered.
    pub since: Instant,
    /// Why.
    pub cause: Cause,
    /// Configured advbase.
    pub advbase: AdvBase,
    /// Configured advskew.
    pub advskew: AdvSkew,
    /// The advskew actually advertised (FreeBSD demotion applied).
    pub effective_advskew: AdvSkew,
    /// The demote byte advertised.
    pub demote: u8,
    /// Virtual addresses.
    pub addresses: Vec<IpAddr>,
    /// Source of the last accepted advertisement and when it arrived.
    pub last_master: Option<(IpAddr, Instant)>,
    /// Source of the last advertisement that failed the HMAC and when it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_bad_auth: Option<(IpAddr, Instant)>,
    /// Next timer deadline.
    pub next_timeout: Option<Instant>,
    /// This vhost's counters.
    pub stats: Stats,
    /// The protocol its interface speaks.
    #[serde(default)]
    pub flavour: crate::config::Flavour,
    /// VRRP: the priority advertised (demotion applied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_priority: Option<u8>,
    /// VRRP: the master's priority and interval (centiseconds) last heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_master: Option<(u8, u16)>,
    /// How long a BACKUP waits for a silent master (spec 4.3; RFC 9568 6.1):
    /// from the formula in effect, or the VRRP interval learned.
    pub master_down: core::time::Duration,
}

/// A read-only view of one carp interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarpIfStatus {
    /// Identity.
    pub id: CarpIfId,
    /// The nodes in vhid order.
    pub nodes: Vec<VhostId>,
    /// Bit i set when node i is MASTER here.
    pub mask: u32,
    /// The balancing mode the interface runs.
    pub balancing: crate::balance::Balancing,
    /// The addresses are configured here.
    pub live: bool,
    /// The addresses with their prefixes.
    pub addresses: Vec<AddrSpec>,
    /// Failed `AddAddresses` reported with `handle_address_result`.
    pub address_failures: u64,
    /// Pre-master gates that failed or timed out.
    pub gate_failures: u64,
    /// A `PrepareMaster` is outstanding.
    pub preparing: bool,
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// No such vhost.
    UnknownVhost(VhostId),
    /// No such carp interface.
    UnknownInterface(CarpIfId),
    /// The vhost is in INIT (link down, disabled) and cannot be forced.
    NotRunning(VhostId),
    /// Only MASTER or BACKUP can be forced.
    BadState(State),
    /// A vhost with this id exists already.
    Duplicate(VhostId),
    /// The configuration is invalid (nodes, addresses, ranges).
    Invalid(crate::config::ConfigError),
    /// A reconfiguration changed the nodes; remove and add the interface instead.
    NodesChanged(CarpIfId),
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ControlError::UnknownVhost(id) => write!(f, "no vhid {} on that interface", id.vhid),
            ControlError::UnknownInterface(id) => {
                write!(f, "no carp interface led by vhid {}", id.vhid)
            }
            ControlError::NotRunning(id) => {
                write!(f, "vhid {} is in INIT and cannot be forced", id.vhid)
            }
            ControlError::BadState(s) => write!(f, "cannot force state {s}; use master or backup"),
            ControlError::Duplicate(id) => {
                write!(f, "vhid {} is configured twice on one interface", id.vhid)
            }
            ControlError::Invalid(e) => write!(f, "{e}"),
            ControlError::NodesChanged(id) => {
                write!(f, "the nodes of carp interface {id} changed")
            }
        }
    }
}

impl std::error::Error for ControlError {}
