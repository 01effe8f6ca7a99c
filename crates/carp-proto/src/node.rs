//! A host's CARP: every carp interface on every parent interface, the
//! demultiplexer by (link, vhid), and the demotion counters they share.
//!
//! `Node` is the whole public driving API (STYLE 6.3):
//!
//! - inputs, which never fail (a bad packet is a counted drop):
//!   [`Node::handle_datagram`], [`Node::handle_timeout`], [`Node::handle_link`],
//!   [`Node::handle_send_result`], [`Node::demote_group`],
//!   [`Node::adjust_skew_demotion`], [`Node::force_state`],
//!   [`Node::set_enabled`], [`Node::begin_shutdown`];
//! - outputs, drained after **every** input: [`Node::poll_action`] until it
//!   returns `None`, then [`Node::poll_timeout`] to know when to call
//!   `handle_timeout` next.
//!
//! Demotion follows both kernels at once (spec 5.5): every automatic demotion
//! (parent link down, send errors) raises the OpenBSD demote byte by 1 in the
//! vhost's groups *and* the FreeBSD advskew demotion by
//! [`NodeConfig::skew_demotion_factor`], so that OpenBSD, FreeBSD and ucarp peers
//! all see it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::action::{Action, CarpIfId, Cause, DemoteReason, Family, LinkId, State, VhostId};
use crate::carpif::{CarpIf, Shared};
use crate::config::{AdvSkew, CarpIfConfig, Flavour, Vhid, VhostConfig};
use crate::stats::{DropReason, Stats};
use crate::time::Instant;
use crate::vhost::{Context, Outbox, Vhost};
use crate::wire::{Advert, ParseError};

pub use crate::status::{CarpIfStatus, ControlError, RxMeta, VhostStatus};

/// The group every vhost belongs to (OpenBSD `carpattach` creates group `carp`).
pub const DEFAULT_GROUP: &str = "carp";

/// The TTL / hop limit every advertisement is sent and checked with.
pub const CARP_TTL: u8 = 255;

/// Host-wide settings (the `net.inet.carp.*` sysctls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// `net.inet.carp.preempt`: take over from a slower master.
    pub preempt: bool,
    /// FreeBSD `ifdown_demotion_factor` / `senderr_demotion_factor` (240);
    /// 0 demotes through the OpenBSD demote byte only.
    pub skew_demotion_factor: u8,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            preempt: false,
            skew_demotion_factor: 240,
        }
    }
}

/// Every carp interface of a host.
///
/// `Clone` serves probes such as [`Node::bow_out_preview`]: a copy is worked
/// on and thrown away, so the node itself never changes.
#[derive(Debug, Clone)]
pub struct Node {
    config: NodeConfig,
    ifaces: BTreeMap<CarpIfId, CarpIf>,
    /// Where each vhost lives: its interface and its slot there.
    index: BTreeMap<VhostId, (CarpIfId, usize)>,
    links_down: BTreeMap<LinkId, bool>,
    /// OpenBSD `ifg_carp_demoted` per interface group.
    groups: BTreeMap<String, u8>,
    /// FreeBSD `net.inet.carp.demotion`.
    skew_demotion: i32,
    /// Drops before a vhost was found.
    stats: Stats,
    out: Outbox,
}

impl Node {
    /// Return an empty node.
    pub fn new(config: NodeConfig) -> Node {
        Node {
            config,
            ifaces: BTreeMap::new(),
            index: BTreeMap::new(),
            links_down: BTreeMap::new(),
            groups: BTreeMap::new(),
            skew_demotion: 0,
            stats: Stats::default(),
            out: Outbox::default(),
        }
    }

    /// Return the host-wide settings.
    pub fn config(&self) -> NodeConfig {
        self.config
    }

    /// Change the host-wide settings (takes effect on the next event).
    pub fn set_config(&mut self, config: NodeConfig) {
        self.config = config;
    }

    /// Add a one-node carp interface on `link` with a random `cookie` (spec 3);
    /// it leaves INIT at once if the link is up and it has addresses.
    pub fn add_vhost(
        &mut self,
        now: Instant,
        link: LinkId,
        config: VhostConfig,
        cookie: [u8; 8],
    ) -> Result<VhostId, ControlError> {
        let id = self.add_interface(now, link, config.into(), &[cookie])?;
        Ok(VhostId {
            link,
            vhid: id.vhid,
        })
    }

    /// Add a carp interface on `link`, with one random cookie per node.
    pub fn add_interface(
        &mut self,
        now: Instant,
        link: LinkId,
        config: CarpIfConfig,
        cookies: &[[u8; 8]],
    ) -> Result<CarpIfId, ControlError> {
        config.validate().map_err(ControlError::Invalid)?;
        if let Some(dup) = config
            .nodes
            .iter()
            .map(|n| VhostId { link, vhid: n.vhid })
            .find(|id| self.index.contains_key(id))
        {
            return Err(ControlError::Duplicate(dup));
        }
        if cookies.len() != config.nodes.len() {
            return Err(ControlError::Invalid(crate::config::ConfigError::NoNodes));
        }
        let id = CarpIfId {
            link,
            vhid: config.nodes[0].vhid,
        };
        for group in std::iter::once(DEFAULT_GROUP).chain(config.groups.iter().map(String::as_str))
        {
            self.groups.entry(group.to_string()).or_insert(0);
        }
        let link_down = self.links_down.get(&link).copied().unwrap_or(false);
        let mut iface = CarpIf::new(id, config, cookies, link_down, now);
        for (slot, v) in iface.vhosts.iter().enumerate() {
            self.index.insert(v.id, (id, slot));
        }
        let ctx = self.context(&iface.shared);
        iface.each(ctx, &mut self.out, |v, cx| v.refresh(now, Cause::Init, cx));
        self.ifaces.insert(id, iface);
        self.apply_demotions(now);
        Ok(id)
    }

    /// Remove the carp interface of vhost `id`: bow out if MASTER, release its addresses.
    pub fn remove_vhost(&mut self, now: Instant, id: VhostId) -> Result<(), ControlError> {
        let iface = self
            .interface_of(id)
            .ok_or(ControlError::UnknownVhost(id))?;
        self.remove_interface(now, iface)
    }

    /// Remove a carp interface: bow out of its MASTER nodes, release its addresses.
    pub fn remove_interface(&mut self, now: Instant, id: CarpIfId) -> Result<(), ControlError> {
        self.stop_interface(now, id, Cause::Reconfigured)?;
        if let Some(iface) = self.ifaces.remove(&id) {
            for v in &iface.vhosts {
                self.stats += &v.stats;
                self.index.remove(&v.id);
            }
            // Undo what this interface added to its groups (OpenBSD interface detach).
            if iface.shared.own_demote > 0 {
                let adj = -i32::from(iface.shared.own_demote);
                self.adjust_groups(&iface.shared.config.groups, adj);
            }
        }
        Ok(())
    }

    /// Replace the configuration of vhost `id`'s one-node interface (SIGHUP).
    pub fn reconfigure_vhost(
        &mut self,
        now: Instant,
        id: VhostId,
        config: VhostConfig,
    ) -> Result<(), ControlError> {
        let iface = self
            .interface_of(id)
            .ok_or(ControlError::UnknownVhost(id))?;
        self.reconfigure_interface(now, iface, config.into())
    }

    /// Replace a carp interface's configuration (SIGHUP); state and addresses
    /// are kept when key and addresses are unchanged. The nodes' vhids must stay.
    pub fn reconfigure_interface(
        &mut self,
        now: Instant,
        id: CarpIfId,
        config: CarpIfConfig,
    ) -> Result<(), ControlError> {
        config.validate().map_err(ControlError::Invalid)?;
        let iface = self
            .ifaces
            .get(&id)
            .ok_or(ControlError::UnknownInterface(id))?;
        let same_nodes = iface.vhosts.len() == config.nodes.len()
            && iface
                .vhosts
                .iter()
                .zip(&config.nodes)
                .all(|(v, n)| v.id.vhid == n.vhid);
        if !same_nodes {
            return Err(ControlError::NodesChanged(id));
        }
        let ctx = self.context(&iface.shared);
        if let Some(iface) = self.ifaces.get_mut(&id) {
            iface.reconfigure(now, config, ctx, &mut self.out);
        }
        self.apply_demotions(now);
        Ok(())
    }

    // ===== inputs =====

    /// Handle one received datagram (the bytes after the IP header).
    ///
    /// Checks run in OpenBSD's order (spec 8), except that the version nibble
    /// is read before the length and checksum (FreeBSD `carp_input`), and each
    /// failure increments one counter: interface, TTL, version, length,
    /// checksum, vhid, HMAC, own cookie.
    pub fn handle_datagram(&mut self, now: Instant, meta: RxMeta, bytes: &[u8]) {
        match Family::of(&meta.src) {
            Family::V4 => self.stats.ipackets += 1,
            Family::V6 => self.stats.ipackets6 += 1,
        }
        if let Err(reason) = self.receive(now, meta, bytes) {
            match reason {
                // Counted by the vhost that checked them.
                DropReason::BadAuth
                | DropReason::BadSource
                | DropReason::NotPeer
                | DropReason::Replay => {}
                _ => self.stats.count_drop(reason),
            }
        }
        self.apply_demotions(now);
    }

    fn receive(&mut self, now: Instant, meta: RxMeta, bytes: &[u8]) -> Result<(), DropReason> {
        if !self.index.keys().any(|id| id.link == meta.link) {
            return Err(DropReason::BadIf);
        }
        if meta.ttl != CARP_TTL && self.ttl_checked(&meta, bytes) {
            return Err(DropReason::BadTtl(meta.ttl));
        }
        let advert = Advert::parse_from(bytes, meta.src, meta.dst).map_err(|e| match e {
            ParseError::Truncated(n) => DropReason::BadLen(n),
            ParseError::BadChecksum => DropReason::BadSum,
            ParseError::BadVersion(v) => DropReason::BadVersion(v),
        })?;
        let (vhid, version) = match &advert {
            Advert::Carp(r) => (r.vhid, crate::wire::carp::VERSION),
            // RFC 9568 7.1: a type other than ADVERTISEMENT is discarded.
            Advert::Vrrp(r) if r.kind != crate::wire::vrrp::TYPE_ADVERTISEMENT => {
                return Err(DropReason::BadVersion(crate::wire::vrrp::VERSION));
            }
            Advert::Vrrp(r) => (r.vrid, crate::wire::vrrp::VERSION),
        };
        let (iface_id, slot) = self.running(meta.link, vhid)?;
        let ctx = self.context_of(iface_id).ok_or(DropReason::BadVhid(vhid))?;
        let iface = self
            .ifaces
            .get_mut(&iface_id)
            .ok_or(DropReason::BadVhid(vhid))?;
        // Each interface speaks one flavour (FreeBSD `carp_input`: `badver`).
        let flavour = iface.shared.config.flavour;
        if !matches!(
            (&advert, flavour),
            (Advert::Carp(_), Flavour::Carp) | (Advert::Vrrp(_), Flavour::Vrrp)
        ) {
            return Err(DropReason::BadVersion(version));
        }
        iface
            .with(slot, ctx, &mut self.out, |v, cx| {
                let config = &cx.shared.config;
                let allowed = &config.allowed_sources;
                let family = Family::of(&meta.src);
                let from_peer = config.peers_of(family).next().is_none()
                    || config.peers_of(family).any(|p| p == meta.src);
                let result = if !allowed.is_empty() && !allowed.contains(&meta.src) {
                    Err(DropReason::BadSource)
                } else if !from_peer {
                    Err(DropReason::NotPeer)
                } else {
                    match &advert {
                        Advert::Carp(repr) => v.receive(now, meta.src, meta.local, repr, cx),
                        Advert::Vrrp(repr) => v.receive_vrrp(now, meta.src, meta.local, repr, cx),
                    }
                };
                if let Err(reason) = result {
                    v.stats.count_drop(reason);
                }
                result
            })
            .unwrap_or(Err(DropReason::BadVhid(vhid)))
    }

    /// Whether a TTL other than 255 drops this datagram: by the vhid's
    /// `ttl_check` if its byte names a known vhid, else (and by default) only
    /// when it was sent to a multicast group. FreeBSD `carp_input` checks the
    /// TTL only for multicast, so routed unicast peers work; the check comes
    /// before the vhid lookup as in OpenBSD `carp_proto_input_if`.
    fn ttl_checked(&self, meta: &RxMeta, bytes: &[u8]) -> bool {
        let configured = bytes
            .get(1)
            .and_then(|&vhid| Vhid::new(vhid))
            .and_then(|vhid| {
                self.index.get(&VhostId {
                    link: meta.link,
                    vhid,
                })
            })
            .and_then(|(iface, _)| self.ifaces.get(iface))
            .and_then(|i| i.shared.config.ttl_check);
        configured.unwrap_or(meta.dst.is_multicast())
    }

    /// Find the running (not INIT) vhost `vhid` on `link`.
    fn running(&self, link: LinkId, vhid: u8) -> Result<(CarpIfId, usize), DropReason> {
        Vhid::new(vhid)
            .and_then(|vhid| self.index.get(&VhostId { link, vhid }).copied())
            .filter(|(iface, slot)| {
                self.ifaces
                    .get(iface)
                    .and_then(|i| i.vhosts.get(*slot))
                    .is_some_and(|v| v.state != State::Init)
            })
            .ok_or(DropReason::BadVhid(vhid))
    }

    /// Return the vhost an authentic, non-bow-out advertisement in `bytes`
    /// (from `src` to `dst`) is for, without changing anything: the shutdown
    /// path waits for a successor. For VRRP: a valid advertisement of the
    /// vrid with a priority above 0 (there is no HMAC to check).
    pub fn successor_advert(
        &self,
        link: LinkId,
        src: IpAddr,
        dst: IpAddr,
        bytes: &[u8],
    ) -> Option<VhostId> {
        let advert = Advert::parse_from(bytes, src, dst).ok()?;
        let id = VhostId {
            link,
            vhid: Vhid::new(advert.vhid())?,
        };
        let (iface, slot) = self.index.get(&id)?;
        let i = self.ifaces.get(iface)?;
        let v = i.vhosts.get(*slot)?;
        let successor = match (&advert, i.shared.config.flavour) {
            (Advert::Carp(repr), Flavour::Carp) => {
                !(repr.advbase == 255 && repr.advskew == 255)
                    && v.authentic(&repr.counter, &repr.md)
            }
            (Advert::Vrrp(repr), Flavour::Vrrp) => repr.priority > 0,
            _ => false,
        };
        successor.then_some(id)
    }

    /// Handle every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<CarpIfId> = self
            .ifaces
            .iter()
            .filter(|(_, i)| i.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(ctx) = self.context_of(id) else {
                continue;
            };
            if let Some(iface) = self.ifaces.get_mut(&id) {
                iface.each(ctx, &mut self.out, |v, cx| {
                    if v.poll_timeout().is_some_and(|t| t <= now) {
                        v.handle_timeout(now, cx);
                    }
                });
                iface.handle_timeout(now, &mut self.out);
            }
        }
        self.apply_demotions(now);
    }

    /// Handle a parent link going down or up (OpenBSD `carp_carpdev_state`).
    ///
    /// Down: every interface on it goes to INIT and demotes its groups by 1 ("carpdev").
    /// Up: the demotion is undone and the nodes return to BACKUP.
    pub fn handle_link(&mut self, now: Instant, link: LinkId, up: bool) {
        self.links_down.insert(link, !up);
        let ids: Vec<CarpIfId> = self
            .ifaces
            .keys()
            .filter(|id| id.link == link)
            .copied()
            .collect();
        for id in ids {
            let Some(ctx) = self.context_of(id) else {
                continue;
            };
            let Some(iface) = self.ifaces.get_mut(&id) else {
                continue;
            };
            if iface.shared.link_down != up {
                continue;
            }
            iface.shared.link_down = !up;
            let cause = if up { Cause::LinkUp } else { Cause::LinkDown };
            iface.each(ctx, &mut self.out, |v, cx| v.refresh(now, cause, cx));
            // The interfaces on other links advertise the new demotion at once.
            let adj = if up { -1 } else { 1 };
            self.out.demotions.push((id, adj, DemoteReason::Carpdev));
            self.apply_demotions(now);
        }
        self.apply_demotions(now);
    }

    /// Report that the shell cannot (`faulted`) or can again hold the addresses
    /// of carp interface `iface`: its macvlan vanished, an address add failed,
    /// or that was repaired. Repeats are ignored.
    ///
    /// OpenBSD `carp_carpdev_state` for this one interface: a fault moves every
    /// node to INIT and demotes the interface's groups by 1; clearing it undoes
    /// the demotion and the nodes return to BACKUP.
    // DEVIATION: a MASTER bows out first (its carpdev still works), so a peer
    // takes over within one delivery rather than after master-down.
    pub fn handle_interface_fault(&mut self, now: Instant, iface: CarpIfId, faulted: bool) {
        let Some(ctx) = self.context_of(iface) else {
            return;
        };
        let Some(i) = self.ifaces.get_mut(&iface) else {
            return;
        };
        if i.shared.faulted == faulted {
            return;
        }
        if faulted {
            i.each(ctx, &mut self.out, |v, cx| v.bow_out(now, cx));
        }
        i.shared.faulted = faulted;
        let (cause, adj) = if faulted {
            (Cause::AddressFault, 1)
        } else {
            (Cause::AddressRepaired, -1)
        };
        i.each(ctx, &mut self.out, |v, cx| v.refresh(now, cause, cx));
        self.out
            .demotions
            .push((iface, adj, DemoteReason::AddressFault));
        self.apply_demotions(now);
    }

    /// Return true while carp interface `iface` is faulted (see
    /// [`Node::handle_interface_fault`]).
    pub fn interface_faulted(&self, iface: CarpIfId) -> bool {
        self.ifaces.get(&iface).is_some_and(|i| i.shared.faulted)
    }

    /// Report whether one `Action::Transmit` of `id` reached the wire.
    pub fn handle_send_result(&mut self, now: Instant, id: VhostId, ok: bool) {
        if let Some(&(iface, slot)) = self.index.get(&id)
            && let Some(v) = self
                .ifaces
                .get_mut(&iface)
                .and_then(|i| i.vhosts.get_mut(slot))
        {
            v.handle_send_result(ok, iface, &mut self.out);
        }
        self.apply_demotions(now);
    }

    /// Report whether one `Action::AddAddresses` of `iface` succeeded entirely.
    /// A failure is counted, shown in the status, and asked for again in 1 s.
    pub fn handle_address_result(&mut self, now: Instant, iface: CarpIfId, ok: bool) {
        if let Some(i) = self.ifaces.get_mut(&iface) {
            i.handle_address_result(now, ok);
        }
    }

    /// Report the end of an `Action::PrepareMaster`: `ok` if every step succeeded.
    pub fn handle_prepared(&mut self, now: Instant, iface: CarpIfId, ok: bool) {
        let Some(ctx) = self.context_of(iface) else {
            return;
        };
        if let Some(i) = self.ifaces.get_mut(&iface) {
            i.handle_prepared(now, ok, ctx, &mut self.out);
        }
        self.apply_demotions(now);
    }

    /// Add `adj` to the demote counter of `group` (`ifconfig -g GROUP carpdemote N`),
    /// clamped to 0..=255. MASTERs in the group advertise the new value at once.
    pub fn demote_group(&mut self, now: Instant, group: &str, adj: i32) -> u8 {
        let before = self.demote_snapshot();
        let entry = self.groups.entry(group.to_string()).or_insert(0);
        *entry = (i32::from(*entry) + adj).clamp(0, 255) as u8;
        let value = *entry;
        self.out.actions.push_back(Action::DemotionChanged {
            group: Some(group.to_string()),
            value: i32::from(value),
            reason: DemoteReason::Operator,
        });
        self.advertise_changed(now, &before);
        value
    }

    /// Add `adj` to the FreeBSD advskew demotion (`sysctl net.inet.carp.demotion=N` adds N).
    pub fn adjust_skew_demotion(&mut self, now: Instant, adj: i32) -> i32 {
        let before = self.demote_snapshot();
        self.skew_demotion = self.skew_demotion.saturating_add(adj);
        self.out.actions.push_back(Action::DemotionChanged {
            group: None,
            value: self.skew_demotion,
            reason: DemoteReason::Operator,
        });
        self.advertise_changed(now, &before);
        self.skew_demotion
    }

    /// Force a vhost to MASTER or BACKUP (`ifconfig carpN state master|backup`).
    pub fn force_state(
        &mut self,
        now: Instant,
        id: VhostId,
        to: State,
    ) -> Result<(), ControlError> {
        if to == State::Init {
            return Err(ControlError::BadState(to));
        }
        let &(iface, slot) = self.index.get(&id).ok_or(ControlError::UnknownVhost(id))?;
        let ctx = self
            .context_of(iface)
            .ok_or(ControlError::UnknownVhost(id))?;
        let i = self
            .ifaces
            .get_mut(&iface)
            .ok_or(ControlError::UnknownVhost(id))?;
        let result = i.with(slot, ctx, &mut self.out, |v, cx| {
            if v.state == State::Init {
                return Err(ControlError::NotRunning(id));
            }
            v.force(now, to, cx);
            Ok(())
        });
        self.apply_demotions(now);
        result.unwrap_or(Err(ControlError::UnknownVhost(id)))
    }

    /// Disable (bow out, release addresses, stay in INIT) or re-enable the carp
    /// interface of vhost `id`.
    pub fn set_enabled(
        &mut self,
        now: Instant,
        id: VhostId,
        enabled: bool,
    ) -> Result<(), ControlError> {
        let iface = self
            .interface_of(id)
            .ok_or(ControlError::UnknownVhost(id))?;
        if !enabled {
            return self.stop_interface(now, iface, Cause::Disabled);
        }
        let ctx = self
            .context_of(iface)
            .ok_or(ControlError::UnknownVhost(id))?;
        if let Some(i) = self.ifaces.get_mut(&iface) {
            i.shared.disabled = false;
            i.each(ctx, &mut self.out, |v, cx| v.refresh(now, Cause::Init, cx));
        }
        self.apply_demotions(now);
        Ok(())
    }

    /// Bow out of every MASTER vhost and move all to INIT, releasing addresses.
    ///
    /// The actions come out in the order to perform them: the bow-out
    /// advertisements first, then the address removals.
    pub fn begin_shutdown(&mut self, now: Instant) {
        let ids: Vec<CarpIfId> = self.ifaces.keys().copied().collect();
        for id in &ids {
            let Some(ctx) = self.context_of(*id) else {
                continue;
            };
            if let Some(i) = self.ifaces.get_mut(id) {
                i.each(ctx, &mut self.out, |v, cx| v.bow_out(now, cx));
            }
        }
        for id in ids {
            let Some(ctx) = self.context_of(id) else {
                continue;
            };
            if let Some(i) = self.ifaces.get_mut(&id) {
                i.shared.disabled = true;
                i.each(ctx, &mut self.out, |v, cx| {
                    v.refresh(now, Cause::Shutdown, cx)
                });
            }
        }
        self.out.demotions.clear();
    }

    /// Return the bow-out advertisements [`Node::begin_shutdown`] would send
    /// now (one `Transmit` per MASTER vhost, family and destination), without
    /// changing anything: a guard process keeps them to send should the
    /// daemon die without stopping.
    ///
    /// Only the interfaces with a MASTER are copied and only their bow-outs
    /// run: the daemon asks after every change, and copying the whole node
    /// each time made taking over 1,000 vhosts quadratic. A bow-out changes
    /// nothing another interface's advertisement depends on (the context is
    /// the groups' demotion and the interface's own state), so this is what
    /// the first half of `begin_shutdown` sends.
    pub fn bow_out_preview(&self, now: Instant) -> Vec<Action> {
        self.ifaces
            .keys()
            .flat_map(|id| self.bow_out_preview_of(*id, now))
            .collect()
    }

    /// Return the part of [`Node::bow_out_preview`] that interface `iface`
    /// sends: nothing unless one of its nodes is MASTER.
    pub fn bow_out_preview_of(&self, iface: CarpIfId, now: Instant) -> Vec<Action> {
        let Some(i) = self.ifaces.get(&iface) else {
            return Vec::new();
        };
        if !i.vhosts.iter().any(|v| v.state == State::Master) {
            return Vec::new();
        }
        let Some(ctx) = self.context_of(iface) else {
            return Vec::new();
        };
        let mut out = Outbox::default();
        let mut probe = i.clone();
        probe.each(ctx, &mut out, |v, cx| v.bow_out(now, cx));
        out.actions
            .into_iter()
            .filter(|a| matches!(a, Action::Transmit { .. }))
            .collect()
    }

    // ===== outputs =====

    /// Return the next action to perform. Call after every input until `None`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.out.actions.pop_front()
    }

    /// Return when `handle_timeout` must next be called. Calling it earlier is
    /// harmless; later delays advertisements. Call after draining `poll_action`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.ifaces.values().filter_map(CarpIf::poll_timeout).min()
    }

    /// Return the host-wide counters (every vhost's plus the pre-lookup drops).
    pub fn stats(&self) -> Stats {
        let mut total = self.stats;
        for v in self.vhosts() {
            total += &v.stats;
        }
        total
    }

    /// Return the status of every vhost, ordered by interface, then vhid.
    pub fn status(&self) -> Vec<VhostStatus> {
        self.ifaces
            .values()
            .flat_map(|i| i.vhosts.iter().map(move |v| self.status_of(&i.shared, v)))
            .collect()
    }

    /// Answer an ARP request or an NS with a source link-layer address
    /// (`sender_mac`) for `target` received on `link`: the MAC to reply with,
    /// or `None` to stay silent (no balancing interface there holds `target`,
    /// or another host serves this requester). OpenBSD 1.270 `carp_iamatch` /
    /// `carp_iamatch6`; the kernel must not answer for balanced addresses.
    pub fn solicitation_answer(
        &self,
        link: LinkId,
        sender_mac: [u8; 6],
        target: std::net::IpAddr,
    ) -> Option<[u8; 6]> {
        self.ifaces
            .values()
            .filter(|i| i.shared.id.link == link && i.shared.live())
            .find(|i| i.shared.config.addresses.iter().any(|a| a.addr == target))
            .and_then(|i| i.shared.solicitation_answer(sender_mac))
    }

    /// Return the status of every carp interface.
    pub fn interfaces(&self) -> Vec<CarpIfStatus> {
        self.ifaces.values().map(CarpIf::status).collect()
    }

    /// Return the status of carp interface `iface`.
    pub fn interface(&self, iface: CarpIfId) -> Option<CarpIfStatus> {
        self.ifaces.get(&iface).map(CarpIf::status)
    }

    /// Return the state of one vhost.
    pub fn state(&self, id: VhostId) -> Option<State> {
        let (iface, slot) = self.index.get(&id)?;
        Some(self.ifaces.get(iface)?.vhosts.get(*slot)?.state)
    }

    /// Return the carp interface vhost `id` is a node of.
    pub fn interface_of(&self, id: VhostId) -> Option<CarpIfId> {
        self.index.get(&id).map(|(iface, _)| *iface)
    }

    /// Return the OpenBSD demote counters of the interface groups.
    pub fn groups(&self) -> &BTreeMap<String, u8> {
        &self.groups
    }

    /// Return the FreeBSD advskew demotion.
    pub fn skew_demotion(&self) -> i32 {
        self.skew_demotion
    }

    // ===== internals =====

    fn vhosts(&self) -> impl Iterator<Item = &Vhost> {
        self.ifaces.values().flat_map(|i| i.vhosts.iter())
    }

    fn status_of(&self, shared: &Shared, v: &Vhost) -> VhostStatus {
        let ctx = self.context(shared);
        VhostStatus {
            id: v.id,
            iface: shared.id,
            state: v.state,
            since: v.since,
            cause: v.last_cause,
            advbase: shared.config.advbase,
            advskew: v.advskew(),
            effective_advskew: v.effective_advskew(&ctx),
            demote: ctx.demote,
            addresses: shared.config.addresses.iter().map(|a| a.addr).collect(),
            last_master: v.last_master,
            last_bad_auth: v.last_bad_auth,
            next_timeout: v.poll_timeout(),
            stats: v.stats,
            flavour: shared.config.flavour,
            vrrp_priority: (shared.config.flavour == Flavour::Vrrp)
                .then(|| crate::vhost::vrrp_priority_of(&shared.config, &ctx)),
            vrrp_master: v.vrrp_master,
            master_down: v.master_down_in(&shared.config, &ctx),
        }
    }

    fn stop_interface(
        &mut self,
        now: Instant,
        id: CarpIfId,
        cause: Cause,
    ) -> Result<(), ControlError> {
        let ctx = self
            .context_of(id)
            .ok_or(ControlError::UnknownInterface(id))?;
        if let Some(i) = self.ifaces.get_mut(&id) {
            i.each(ctx, &mut self.out, |v, cx| v.bow_out(now, cx));
            i.shared.disabled = true;
            i.each(ctx, &mut self.out, |v, cx| v.refresh(now, cause, cx));
        }
        self.apply_demotions(now);
        Ok(())
    }

    /// The demote byte of an interface: the sum of its groups' counters, or its own
    /// count when that sum is 0, capped at 255 (OpenBSD `carp_group_demote_count`).
    fn context(&self, shared: &Shared) -> Context {
        let sum: u32 = std::iter::once(DEFAULT_GROUP)
            .chain(shared.config.groups.iter().map(String::as_str))
            .filter_map(|g| self.groups.get(g))
            .map(|&d| u32::from(d))
            .sum();
        let demote = if sum == 0 {
            u32::from(shared.own_demote)
        } else {
            sum
        };
        Context {
            preempt: self.config.preempt,
            demote: demote.min(255) as u8,
            skew_demotion: self.skew_demotion,
        }
    }

    fn context_of(&self, id: CarpIfId) -> Option<Context> {
        self.ifaces.get(&id).map(|i| self.context(&i.shared))
    }

    fn adjust_groups(&mut self, groups: &[String], adj: i32) -> Vec<(String, u8)> {
        let mut changed = Vec::new();
        for g in std::iter::once(DEFAULT_GROUP).chain(groups.iter().map(String::as_str)) {
            let entry = self.groups.entry(g.to_string()).or_insert(0);
            let new = (i32::from(*entry) + adj).clamp(0, 255) as u8;
            if new != *entry {
                *entry = new;
                changed.push((g.to_string(), new));
            }
        }
        changed
    }

    /// Apply automatic demotions queued by interfaces (OpenBSD `carp_group_demote_adj`
    /// plus the FreeBSD demotion factor), then let MASTERs advertise the change.
    fn apply_demotions(&mut self, now: Instant) {
        if self.out.demotions.is_empty() {
            return;
        }
        let before = self.demote_snapshot();
        for (id, adj, reason) in std::mem::take(&mut self.out.demotions) {
            let Some(i) = self.ifaces.get_mut(&id) else {
                continue;
            };
            i.shared.own_demote = (i32::from(i.shared.own_demote) + adj).clamp(0, 255) as u8;
            let groups = i.shared.config.groups.clone();
            for (group, value) in self.adjust_groups(&groups, adj) {
                self.out.actions.push_back(Action::DemotionChanged {
                    group: Some(group),
                    value: i32::from(value),
                    reason: reason.clone(),
                });
            }
            let factor = i32::from(self.config.skew_demotion_factor);
            if factor != 0 {
                self.skew_demotion = self.skew_demotion.saturating_add(adj * factor);
                self.out.actions.push_back(Action::DemotionChanged {
                    group: None,
                    value: self.skew_demotion,
                    reason,
                });
            }
        }
        self.advertise_changed(now, &before);
    }

    fn demote_snapshot(&self) -> Vec<(VhostId, u8, AdvSkew)> {
        self.ifaces
            .values()
            .flat_map(|i| {
                let ctx = self.context(&i.shared);
                i.vhosts
                    .iter()
                    .map(move |v| (v.id, ctx.demote, v.effective_advskew(&ctx)))
            })
            .collect()
    }

    /// Every MASTER whose advertised demote or advskew changed advertises at once,
    /// so peers react within one delivery (OpenBSD regress: 100 ms).
    fn advertise_changed(&mut self, now: Instant, before: &[(VhostId, u8, AdvSkew)]) {
        let after = self.demote_snapshot();
        for (old, new) in before.iter().zip(after.iter()) {
            if old == new {
                continue;
            }
            let Some(&(iface, slot)) = self.index.get(&new.0) else {
                continue;
            };
            let Some(ctx) = self.context_of(iface) else {
                continue;
            };
            if let Some(i) = self.ifaces.get_mut(&iface) {
                i.with(slot, ctx, &mut self.out, |v, cx| v.advertise_now(now, cx));
            }
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
