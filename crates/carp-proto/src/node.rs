//! A host's CARP: every vhost on every parent interface, the demultiplexer,
//! and the demotion counters they share.
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

use crate::action::{Action, Cause, DemoteReason, Family, LinkId, State, VhostId};
use crate::config::{AdvBase, AdvSkew, Vhid, VhostConfig};
use crate::stats::{DropReason, Stats};
use crate::time::Instant;
use crate::vhost::{Context, Outbox, Vhost};
use crate::wire::carp::{Packet, Repr};

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

/// What the receive path knows about a datagram besides its CARP bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxMeta {
    /// The interface it arrived on.
    pub link: LinkId,
    /// The IP source address.
    pub src: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
}

/// A read-only view of one vhost for status displays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostStatus {
    /// Identity.
    pub id: VhostId,
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
    /// Next timer deadline.
    pub next_timeout: Option<Instant>,
    /// This vhost's counters.
    pub stats: Stats,
}

/// Why a control request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// No such vhost.
    UnknownVhost(VhostId),
    /// The vhost is in INIT (link down, disabled) and cannot be forced.
    NotRunning(VhostId),
    /// Only MASTER or BACKUP can be forced.
    BadState(State),
    /// A vhost with this id exists already.
    Duplicate(VhostId),
}

impl core::fmt::Display for ControlError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ControlError::UnknownVhost(id) => write!(f, "no vhid {} on that interface", id.vhid),
            ControlError::NotRunning(id) => {
                write!(f, "vhid {} is in INIT and cannot be forced", id.vhid)
            }
            ControlError::BadState(s) => write!(f, "cannot force state {s}; use master or backup"),
            ControlError::Duplicate(id) => {
                write!(f, "vhid {} is configured twice on one interface", id.vhid)
            }
        }
    }
}

impl std::error::Error for ControlError {}

/// Every vhost of a host.
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    vhosts: BTreeMap<VhostId, Vhost>,
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
            vhosts: BTreeMap::new(),
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

    /// Add a vhost on `link` with a random `cookie` (spec 3); it leaves INIT at once
    /// if the link is up and it has addresses.
    pub fn add_vhost(
        &mut self,
        now: Instant,
        link: LinkId,
        config: VhostConfig,
        cookie: [u8; 8],
    ) -> Result<VhostId, ControlError> {
        let id = VhostId {
            link,
            vhid: config.vhid,
        };
        if self.vhosts.contains_key(&id) {
            return Err(ControlError::Duplicate(id));
        }
        for group in std::iter::once(DEFAULT_GROUP).chain(config.groups.iter().map(String::as_str))
        {
            self.groups.entry(group.to_string()).or_insert(0);
        }
        let mut vhost = Vhost::new(id, config, cookie, now);
        vhost.link_down = self.links_down.get(&link).copied().unwrap_or(false);
        let ctx = self.context(&vhost);
        vhost.refresh(now, Cause::Init, &ctx, &mut self.out);
        self.vhosts.insert(id, vhost);
        self.apply_demotions(now);
        Ok(id)
    }

    /// Remove a vhost: bow out if MASTER, release its addresses.
    pub fn remove_vhost(&mut self, now: Instant, id: VhostId) -> Result<(), ControlError> {
        self.stop_vhost(now, id, Cause::Reconfigured)?;
        if let Some(v) = self.vhosts.remove(&id) {
            self.stats += &v.stats;
            // Undo what this vhost added to its groups (OpenBSD interface detach).
            if v.own_demote > 0 {
                self.adjust_groups(&v.config.groups, -i32::from(v.own_demote));
            }
        }
        Ok(())
    }

    /// Replace a vhost's configuration (SIGHUP); state and addresses are kept
    /// when key and addresses are unchanged.
    pub fn reconfigure_vhost(
        &mut self,
        now: Instant,
        id: VhostId,
        config: VhostConfig,
    ) -> Result<(), ControlError> {
        let ctx = self.context_of(id)?;
        if let Some(v) = self.vhosts.get_mut(&id) {
            v.reconfigure(now, config, &ctx, &mut self.out);
        }
        self.apply_demotions(now);
        Ok(())
    }

    // ===== inputs =====

    /// Handle one received CARP datagram (the bytes after the IP header).
    ///
    /// Checks run in OpenBSD's order (spec 8) and each failure increments one
    /// counter: interface, TTL, length, checksum, vhid, version, HMAC, own cookie.
    pub fn handle_datagram(&mut self, now: Instant, meta: RxMeta, bytes: &[u8]) {
        match Family::of(&meta.src) {
            Family::V4 => self.stats.ipackets += 1,
            Family::V6 => self.stats.ipackets6 += 1,
        }
        if let Err(reason) = self.receive(now, meta, bytes) {
            match reason {
                DropReason::BadVersion(_) | DropReason::BadAuth | DropReason::Replay => {}
                _ => self.stats.count_drop(reason),
            }
        }
        self.apply_demotions(now);
    }

    fn receive(&mut self, now: Instant, meta: RxMeta, bytes: &[u8]) -> Result<(), DropReason> {
        if !self.vhosts.keys().any(|id| id.link == meta.link) {
            return Err(DropReason::BadIf);
        }
        if meta.ttl != CARP_TTL {
            return Err(DropReason::BadTtl(meta.ttl));
        }
        let packet = Packet::new_checked(bytes).map_err(|_| DropReason::BadLen(bytes.len()))?;
        if !packet.verify_checksum() {
            return Err(DropReason::BadSum);
        }
        let repr = Repr::parse(&packet).map_err(|_| DropReason::BadLen(bytes.len()))?;
        let id = Vhid::new(repr.vhid)
            .map(|vhid| VhostId {
                link: meta.link,
                vhid,
            })
            .filter(|id| self.vhosts.get(id).is_some_and(|v| v.state != State::Init))
            .ok_or(DropReason::BadVhid(repr.vhid))?;
        let ctx = self
            .context_of(id)
            .map_err(|_| DropReason::BadVhid(repr.vhid))?;
        let Some(vhost) = self.vhosts.get_mut(&id) else {
            return Err(DropReason::BadVhid(repr.vhid));
        };
        let result = vhost.receive(now, meta.src, &repr, &ctx, &mut self.out);
        if let Err(reason) = result {
            vhost.stats.count_drop(reason);
        }
        result
    }

    /// Handle every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<VhostId> = self
            .vhosts
            .iter()
            .filter(|(_, v)| v.poll_timeout().is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Ok(ctx) = self.context_of(id) else {
                continue;
            };
            if let Some(v) = self.vhosts.get_mut(&id) {
                v.handle_timeout(now, &ctx, &mut self.out);
            }
        }
        self.apply_demotions(now);
    }

    /// Handle a parent link going down or up (OpenBSD `carp_carpdev_state`).
    ///
    /// Down: every vhost on it goes to INIT and demotes its groups by 1 ("carpdev").
    /// Up: the demotion is undone and the vhosts return to BACKUP.
    pub fn handle_link(&mut self, now: Instant, link: LinkId, up: bool) {
        self.links_down.insert(link, !up);
        let ids: Vec<VhostId> = self
            .vhosts
            .keys()
            .filter(|id| id.link == link)
            .copied()
            .collect();
        for id in ids {
            let Some(v) = self.vhosts.get_mut(&id) else {
                continue;
            };
            if v.link_down != up {
                continue;
            }
            v.link_down = !up;
            let Ok(ctx) = self.context_of(id) else {
                continue;
            };
            if let Some(v) = self.vhosts.get_mut(&id) {
                let cause = if up { Cause::LinkUp } else { Cause::LinkDown };
                v.refresh(now, cause, &ctx, &mut self.out);
            }
            // The vhosts on other links advertise the new demotion at once.
            let adj = if up { -1 } else { 1 };
            self.out.demotions.push((id, adj, DemoteReason::Carpdev));
            self.apply_demotions(now);
        }
        self.apply_demotions(now);
    }

    /// Report whether one `Action::Transmit` of `id` reached the wire.
    pub fn handle_send_result(&mut self, now: Instant, id: VhostId, ok: bool) {
        if let Some(v) = self.vhosts.get_mut(&id) {
            v.handle_send_result(ok, &mut self.out);
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
        let ctx = self.context_of(id)?;
        let Some(v) = self.vhosts.get_mut(&id) else {
            return Err(ControlError::UnknownVhost(id));
        };
        if v.state == State::Init {
            return Err(ControlError::NotRunning(id));
        }
        v.force(now, to, &ctx, &mut self.out);
        self.apply_demotions(now);
        Ok(())
    }

    /// Disable (bow out, release addresses, stay in INIT) or re-enable a vhost.
    pub fn set_enabled(
        &mut self,
        now: Instant,
        id: VhostId,
        enabled: bool,
    ) -> Result<(), ControlError> {
        if !enabled {
            return self.stop_vhost(now, id, Cause::Disabled);
        }
        let ctx = self.context_of(id)?;
        if let Some(v) = self.vhosts.get_mut(&id) {
            v.disabled = false;
            v.refresh(now, Cause::Init, &ctx, &mut self.out);
        }
        self.apply_demotions(now);
        Ok(())
    }

    /// Bow out of every MASTER vhost and move all to INIT, releasing addresses.
    ///
    /// The actions come out in the order to perform them: the bow-out
    /// advertisements first, then the address removals.
    pub fn begin_shutdown(&mut self, now: Instant) {
        let ids: Vec<VhostId> = self.vhosts.keys().copied().collect();
        for id in &ids {
            let Ok(ctx) = self.context_of(*id) else {
                continue;
            };
            if let Some(v) = self.vhosts.get_mut(id) {
                v.bow_out(now, &ctx, &mut self.out);
            }
        }
        for id in ids {
            let Ok(ctx) = self.context_of(id) else {
                continue;
            };
            if let Some(v) = self.vhosts.get_mut(&id) {
                v.disabled = true;
                v.refresh(now, Cause::Shutdown, &ctx, &mut self.out);
            }
        }
        self.out.demotions.clear();
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
        self.vhosts.values().filter_map(Vhost::poll_timeout).min()
    }

    /// Return the host-wide counters (every vhost's plus the pre-lookup drops).
    pub fn stats(&self) -> Stats {
        let mut total = self.stats;
        for v in self.vhosts.values() {
            total += &v.stats;
        }
        total
    }

    /// Return the status of every vhost, ordered by link and vhid.
    pub fn status(&self) -> Vec<VhostStatus> {
        self.vhosts.values().map(|v| self.status_of(v)).collect()
    }

    /// Return the state of one vhost.
    pub fn state(&self, id: VhostId) -> Option<State> {
        self.vhosts.get(&id).map(|v| v.state)
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

    fn status_of(&self, v: &Vhost) -> VhostStatus {
        let ctx = self.context(v);
        VhostStatus {
            id: v.id,
            state: v.state,
            since: v.since,
            cause: v.last_cause,
            advbase: v.config.advbase,
            advskew: v.config.advskew,
            effective_advskew: v.effective_advskew(&ctx),
            demote: ctx.demote,
            addresses: v.config.addresses(),
            last_master: v.last_master,
            next_timeout: v.poll_timeout(),
            stats: v.stats,
        }
    }

    fn stop_vhost(&mut self, now: Instant, id: VhostId, cause: Cause) -> Result<(), ControlError> {
        let ctx = self.context_of(id)?;
        if let Some(v) = self.vhosts.get_mut(&id) {
            v.bow_out(now, &ctx, &mut self.out);
            v.disabled = true;
            v.refresh(now, cause, &ctx, &mut self.out);
        }
        self.apply_demotions(now);
        Ok(())
    }

    /// The demote byte of a vhost: the sum of its groups' counters, or its own
    /// count when that sum is 0, capped at 255 (OpenBSD `carp_group_demote_count`).
    fn context(&self, v: &Vhost) -> Context {
        let sum: u32 = std::iter::once(DEFAULT_GROUP)
            .chain(v.config.groups.iter().map(String::as_str))
            .filter_map(|g| self.groups.get(g))
            .map(|&d| u32::from(d))
            .sum();
        let demote = if sum == 0 {
            u32::from(v.own_demote)
        } else {
            sum
        };
        Context {
            preempt: self.config.preempt,
            demote: demote.min(255) as u8,
            skew_demotion: self.skew_demotion,
        }
    }

    fn context_of(&self, id: VhostId) -> Result<Context, ControlError> {
        self.vhosts
            .get(&id)
            .map(|v| self.context(v))
            .ok_or(ControlError::UnknownVhost(id))
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

    /// Apply automatic demotions queued by vhosts (OpenBSD `carp_group_demote_adj`
    /// plus the FreeBSD demotion factor), then let MASTERs advertise the change.
    fn apply_demotions(&mut self, now: Instant) {
        if self.out.demotions.is_empty() {
            return;
        }
        let before = self.demote_snapshot();
        for (id, adj, reason) in std::mem::take(&mut self.out.demotions) {
            let Some(v) = self.vhosts.get_mut(&id) else {
                continue;
            };
            v.own_demote = (i32::from(v.own_demote) + adj).clamp(0, 255) as u8;
            let groups = v.config.groups.clone();
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
        self.vhosts
            .values()
            .map(|v| {
                let ctx = self.context(v);
                (v.id, ctx.demote, v.effective_advskew(&ctx))
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
            let id = new.0;
            let Ok(ctx) = self.context_of(id) else {
                continue;
            };
            if let Some(v) = self.vhosts.get_mut(&id) {
                v.advertise_now(now, &ctx, &mut self.out);
            }
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
