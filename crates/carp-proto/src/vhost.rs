//! The state machine of one vhid, a node of a carp interface (spec section 5).
//!
//! OpenBSD writes it as three switches plus one setter: `carp_proto_input_c`
//! (an advertisement arrived), `carp_master_down` (a timer expired) and
//! `carp_setrun` (arm timers for the state), all changing state only through
//! `carp_set_state`. Here they are [`Vhost::receive`], [`Vhost::master_down`],
//! [`Vhost::setrun`] and [`Vhost::transition`]; nothing else assigns `state`.
//! A vhost only elects: what follows for the addresses is its interface's
//! business ([`crate::carpif`]), told through `Cx::shared`.

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::action::{Action, CarpIfId, Cause, DemoteReason, Family, LinkId, State, VhostId};
use crate::auth::Auth;
use crate::balance::Balancing;
use crate::carpif::Cx;
use crate::config::{AdvSkew, CarpIfConfig, CarpNode, Flavour, Lladdr, interval};
use crate::election::{self, Decision, Standing, Tie, VrrpDecision};
use crate::stats::{DropReason, Stats};
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};
use crate::wire::carp::{AUTHLEN, Repr, TYPE_ADVERTISEMENT, VERSION};

/// Consecutive send errors that demote, and successes that undo it
/// (`CARP_SENDAD_MAX_ERRORS` / `CARP_SENDAD_MIN_SUCCESS` for one vhost).
pub(crate) const SENDAD_THRESHOLD: u32 = 3;

/// How many farewells a yielding MASTER sends the winner (see `Vhost::farewell`).
pub(crate) const FAREWELLS: u8 = 3;

/// The longest gap between two farewells; shorter when the interval is.
pub(crate) const FAREWELL_GAP: core::time::Duration = core::time::Duration::from_millis(200);

/// What the node tells a vhost about the host-wide situation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context {
    /// `net.inet.carp.preempt`.
    pub(crate) preempt: bool,
    /// The OpenBSD demote count for this vhost (sum of its groups).
    pub(crate) demote: u8,
    /// The FreeBSD `net.inet.carp.demotion` added to advskew.
    pub(crate) skew_demotion: i32,
}

/// Where the core puts its outputs.
#[derive(Debug, Default, Clone)]
pub(crate) struct Outbox {
    pub(crate) actions: VecDeque<Action>,
    /// Automatic demotion adjustments for the node to apply: (interface, +1/-1, why).
    pub(crate) demotions: Vec<(CarpIfId, i32, DemoteReason)>,
}

/// One node (vhid) of a carp interface.
#[derive(Debug, Clone)]
pub(crate) struct Vhost {
    pub(crate) id: VhostId,
    /// Position in the interface's vhid order: bit `slot` of the load-share mask.
    slot: u8,
    /// The configured advskew.
    advskew: AdvSkew,
    auth: Auth,
    /// The OpenBSD-style constant counter, chosen by the caller (spec 3).
    cookie: [u8; 8],
    pub(crate) state: State,
    pub(crate) since: Instant,
    pub(crate) last_cause: Cause,
    timers: TimerTable,
    /// OpenBSD `sc_delayed_arp`: adverts left before the repeated announcement, -1 for none.
    delayed_arp: i8,
    sendad_errors: u32,
    sendad_success: u32,
    pub(crate) stats: Stats,
    /// Source address and time of the last accepted advertisement.
    pub(crate) last_master: Option<(IpAddr, Instant)>,
    /// Timing the last accepted advertisement carried: (advbase, advskew, demote).
    pub(crate) last_master_timing: Option<(u8, u8, u8)>,
    /// A takeover waiting for the pre-master gate, with the cause it will carry.
    pending: Option<Cause>,
    /// Source and time of the last advertisement whose HMAC failed.
    pub(crate) last_bad_auth: Option<(IpAddr, Instant)>,
    /// VRRP: the master's priority and Max Adver Int (centiseconds) last
    /// heard; the interval is Master_Adver_Interval (RFC 9568 6.1).
    pub(crate) vrrp_master: Option<(u8, u16)>,
    /// The master yielded to and how many farewells are still to go to it.
    farewell: Option<(IpAddr, u8)>,
}

impl Vhost {
    pub(crate) fn new(
        link: LinkId,
        slot: u8,
        node: &CarpNode,
        shared: &CarpIfConfig,
        cookie: [u8; 8],
        now: Instant,
    ) -> Vhost {
        Vhost {
            id: VhostId {
                link,
                vhid: node.vhid,
            },
            slot,
            advskew: node.advskew,
            auth: Self::auth_for(node, shared),
            cookie,
            state: State::Init,
            since: now,
            last_cause: Cause::Init,
            timers: TimerTable::default(),
            delayed_arp: -1,
            sendad_errors: 0,
            sendad_success: 0,
            stats: Stats::default(),
            last_master: None,
            last_master_timing: None,
            pending: None,
            last_bad_auth: None,
            vrrp_master: None,
            farewell: None,
        }
    }

    fn auth_for(node: &CarpNode, shared: &CarpIfConfig) -> Auth {
        Auth::with_context(
            &shared.passphrase,
            node.vhid,
            &shared.ipv4(),
            &shared.ipv6(),
            shared.hmac,
        )
    }

    /// Return the configured advskew.
    pub(crate) fn advskew(&self) -> AdvSkew {
        self.advskew
    }

    /// Take a new configured advskew (SIGHUP); it is advertised from the next advert on.
    pub(crate) fn set_advskew(&mut self, advskew: AdvSkew) {
        self.advskew = advskew;
    }

    /// Recompute the HMAC context after the key or the addresses changed.
    pub(crate) fn rekey(&mut self, shared: &CarpIfConfig) {
        let node = CarpNode {
            vhid: self.id.vhid,
            advskew: self.advskew,
        };
        self.auth = Self::auth_for(&node, shared);
    }

    /// Return the advskew we advertise and compare with (FreeBSD `DEMOTE_ADVSKEW`).
    pub(crate) fn effective_advskew(&self, ctx: &Context) -> AdvSkew {
        election::demoted_advskew(self.advskew, ctx.skew_demotion)
    }

    fn standing(&self, cx: &Cx<'_>) -> Standing {
        Standing {
            advbase: cx.shared.config.advbase.0,
            advskew: self.effective_advskew(&cx.ctx).0,
            demote: cx.ctx.demote,
        }
    }

    fn families(config: &CarpIfConfig) -> impl Iterator<Item = Family> + use<> {
        let v4 = config.has(Family::V4).then_some(Family::V4);
        let v6 = config.has(Family::V6).then_some(Family::V6);
        v4.into_iter().chain(v6)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Return true if `counter`/`md` is an authentic advertisement of a peer.
    pub(crate) fn authentic(&self, counter: &[u8; 8], md: &[u8; 20]) -> bool {
        *counter != self.cookie && self.auth.verify(counter, md)
    }

    /// Return true if the preconditions to leave INIT hold (spec 5.1).
    fn can_run(cx: &Cx<'_>) -> bool {
        !cx.shared.link_down
            && !cx.shared.disabled
            && !cx.shared.faulted
            && Self::families(&cx.shared.config).next().is_some()
    }

    // ===== inputs =====

    /// Spec 8 steps 9-11 and 5.3: the vhid matched; check HMAC and cookie,
    /// then let the flavour's election decide.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        src: IpAddr,
        local: Option<IpAddr>,
        repr: &Repr,
        cx: &mut Cx<'_>,
    ) -> Result<(), DropReason> {
        if !self.auth.verify(&repr.counter, &repr.md) {
            self.last_bad_auth = Some((src, now));
            return Err(DropReason::BadAuth);
        }
        if repr.counter == self.cookie {
            return Err(DropReason::Replay);
        }
        self.stats.accepted += 1;
        if repr.kind != TYPE_ADVERTISEMENT || repr.authlen != AUTHLEN {
            self.stats.odd_header += 1;
        }
        self.last_master = Some((src, now));
        self.last_master_timing = Some((repr.advbase, repr.advskew, repr.demote));

        let ours = self.standing(cx);
        let theirs = Standing {
            advbase: repr.advbase,
            advskew: repr.advskew,
            demote: repr.demote,
        };
        let tie = Tie::between(local, src, cx.shared.config.has(Family::V4));
        let decision =
            cx.shared
                .config
                .flavour
                .decide(self.state, ours, theirs, cx.ctx.preempt, tie);
        match decision {
            Decision::Ignore => {}
            Decision::Yield { cause, farewell } => {
                self.transition(now, State::Backup, cause, cx);
                if farewell {
                    self.farewell(now, src, cx);
                }
            }
            // DEVIATION: a second master exists (a healed partition). The
            // kernels send nothing here, since their advertisements carry
            // the virtual MAC and move the switches back by themselves;
            // carpd re-announces now and two advertisements later, as ucarp
            // does ("reasserting control"), which also covers `lladdr` real.
            Decision::Reassert => {
                cx.shared.announce(self.slot, cx.out);
                self.delayed_arp = 2;
            }
            Decision::TakeOver(cause) => self.master_down(now, cause, cx),
            Decision::RestartTimer => self.master_alive(now, Family::of(&src), cx),
        }
        Ok(())
    }

    /// A BACKUP heard its master: restart the master-down timer of `family`
    /// (only the family the advertisement came in on, spec 4.3), or call off
    /// a takeover waiting at the pre-master gate.
    fn master_alive(&mut self, now: Instant, family: Family, cx: &mut Cx<'_>) {
        if self.pending.take().is_some() {
            self.timers.stop(Timer::Prepare);
            cx.shared.preparing = false;
            self.setrun(now, cx);
        } else {
            self.arm_master_down(now, family, cx);
        }
    }

    /// RFC 9568 6.4.2 / 6.4.3: a VRRPv3 advertisement for this vrid (no
    /// authentication; the checksum was checked by the parser).
    pub(crate) fn receive_vrrp(
        &mut self,
        now: Instant,
        src: IpAddr,
        local: Option<IpAddr>,
        repr: &crate::wire::vrrp::Repr,
        cx: &mut Cx<'_>,
    ) -> Result<(), DropReason> {
        if local == Some(src) {
            return Err(DropReason::Replay);
        }
        self.stats.accepted += 1;
        self.last_master = Some((src, now));
        let ours = self.vrrp_priority(cx);
        // The tie-break: the higher primary address stays (6.4.3).
        let theirs_wins_tie = local.is_some_and(|l| src > l);
        // Preempt_Mode is RFC 9568's default, True.
        match election::vrrp_decide(self.state, ours, repr.priority, true, theirs_wins_tie) {
            VrrpDecision::Discard => {}
            VrrpDecision::AdvertiseNow => self.send_advert(now, false, cx),
            VrrpDecision::TakeOverSoon => {
                self.vrrp_master = Some((repr.priority, repr.interval_cs));
                if self.pending.is_none() {
                    let mai = self.master_adver_interval(&cx.shared.config);
                    let timer = self.master_down_timer(cx);
                    self.timers.set(timer, now + election::vrrp_skew(mai, ours));
                }
            }
            VrrpDecision::Follow => {
                self.vrrp_master = Some((repr.priority, repr.interval_cs));
                self.master_alive(now, Family::of(&src), cx);
            }
            VrrpDecision::Yield => {
                self.vrrp_master = Some((repr.priority, repr.interval_cs));
                self.transition(now, State::Backup, Cause::Superseded, cx);
            }
        }
        Ok(())
    }

    /// VRRP: the priority advertised and compared, the group demotion taken
    /// off it (as keepalived's tracking lowers it), never below 1.
    pub(crate) fn vrrp_priority(&self, cx: &Cx<'_>) -> u8 {
        vrrp_priority_of(&cx.shared.config, &cx.ctx)
    }

    /// VRRP: Master_Adver_Interval, learned from the master or our own.
    fn master_adver_interval(&self, config: &CarpIfConfig) -> u16 {
        self.vrrp_master
            .map_or(config.vrrp.interval_cs, |(_, i)| i)
            .max(1)
    }

    /// The master-down timer of the interface's family (VRRP has one).
    fn master_down_timer(&self, cx: &Cx<'_>) -> Timer {
        if cx.shared.config.has(Family::V4) {
            Timer::MasterDownV4
        } else {
            Timer::MasterDownV6
        }
    }

    /// The master-down interval of this vhost's flavour (spec 4.3; RFC 9568 6.1).
    fn master_down_interval(&self, cx: &Cx<'_>) -> core::time::Duration {
        self.master_down_in(&cx.shared.config, &cx.ctx)
    }

    /// [`master_down_interval`](Self::master_down_interval) from the
    /// interface's configuration and the host context (also for the status).
    pub(crate) fn master_down_in(
        &self,
        config: &CarpIfConfig,
        ctx: &Context,
    ) -> core::time::Duration {
        match config.flavour {
            // Both kernels use the configured (undemoted) advskew for this timer.
            Flavour::Carp => {
                election::master_down_interval(config.advbase, self.advskew, config.master_down)
            }
            Flavour::Vrrp => {
                let priority = vrrp_priority_of(config, ctx);
                election::vrrp_master_down(self.master_adver_interval(config), priority)
            }
        }
    }

    /// Walk the expired timers in a fixed order (quinn `handle_timeout`).
    pub(crate) fn handle_timeout(&mut self, now: Instant, cx: &mut Cx<'_>) {
        for timer in Timer::VALUES {
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            self.timers.stop(timer);
            match timer {
                Timer::Advertise => {
                    if self.state == State::Master {
                        self.send_advert(now, false, cx);
                    }
                }
                Timer::MasterDownV4 | Timer::MasterDownV6 => {
                    let cause = if self.auth_failing(now, cx) {
                        Cause::AuthFailing
                    } else {
                        Cause::MasterDown
                    };
                    self.master_down(now, cause, cx);
                }
                Timer::Prepare => self.finish_gate(now, false, cx),
                Timer::Farewell => self.repeat_farewell(now, cx),
            }
        }
    }

    /// Count the outcome of one `Transmit` (OpenBSD `carp_send_ad` error handling).
    pub(crate) fn handle_send_result(&mut self, ok: bool, iface: CarpIfId, out: &mut Outbox) {
        if ok {
            if self.sendad_errors >= SENDAD_THRESHOLD {
                self.sendad_success += 1;
                if self.sendad_success >= SENDAD_THRESHOLD {
                    out.demotions.push((iface, -1, DemoteReason::SendErrors));
                    self.sendad_errors = 0;
                }
            } else {
                self.sendad_errors = 0;
            }
        } else {
            self.stats.send_errors += 1;
            self.sendad_errors = self.sendad_errors.saturating_add(1);
            if self.sendad_errors == SENDAD_THRESHOLD {
                out.demotions.push((iface, 1, DemoteReason::SendErrors));
            }
            self.sendad_success = 0;
        }
    }

    /// Leave INIT if the preconditions now hold, or go to INIT if they do not.
    pub(crate) fn refresh(&mut self, now: Instant, cause: Cause, cx: &mut Cx<'_>) {
        if Self::can_run(cx) {
            if self.state == State::Init {
                self.transition(now, State::Backup, cause, cx);
            }
        } else if self.state != State::Init {
            self.transition(now, State::Init, cause, cx);
        }
    }

    /// A forced `state master|backup` (OpenBSD SIOCSVH, FreeBSD `carp_ioctl_set`).
    pub(crate) fn force(&mut self, now: Instant, to: State, cx: &mut Cx<'_>) {
        match (self.state, to) {
            (State::Backup, State::Master) => self.master_down(now, Cause::Forced, cx),
            (State::Master, State::Backup) => {
                // Hand over as a planned stop does: the bow-out advertisement
                // (spec 5.4) makes a BACKUP peer take over at once, instead of
                // leaving no MASTER until a master-down timer runs out (ours,
                // the shortest, would even take the vhid back).
                self.send_advert(now, true, cx);
                self.transition(now, State::Backup, Cause::Forced, cx)
            }
            _ => {}
        }
    }

    /// Send the bow-out advertisement if MASTER (spec 5.4); the caller then moves us to INIT.
    pub(crate) fn bow_out(&mut self, now: Instant, cx: &mut Cx<'_>) {
        if self.state == State::Master {
            self.send_advert(now, true, cx);
        }
    }

    /// Send an advertisement now if MASTER (after a demotion change).
    pub(crate) fn advertise_now(&mut self, now: Instant, cx: &mut Cx<'_>) {
        if self.state == State::Master {
            self.send_advert(now, false, cx);
        }
    }

    /// The interface's key or addresses changed (its address actions are out):
    /// a MASTER announces and advertises at once, then timers follow the families.
    pub(crate) fn reconfigured(&mut self, now: Instant, cx: &mut Cx<'_>) {
        if self.state == State::Master {
            cx.shared.announce(self.slot, cx.out);
            self.send_advert(now, false, cx);
        }
        // A family may have appeared or vanished: re-arm for the current state.
        self.setrun(now, cx);
        self.refresh(now, Cause::Reconfigured, cx);
    }

    /// The pre-master gate opened (`ok`) or failed: a waiting takeover goes on,
    /// unless the gate is strict and failed.
    pub(crate) fn finish_gate(&mut self, now: Instant, ok: bool, cx: &mut Cx<'_>) {
        let Some(cause) = self.pending.take() else {
            return;
        };
        self.timers.stop(Timer::Prepare);
        cx.shared.preparing = false;
        if !ok {
            cx.shared.gate_failures += 1;
        }
        let strict = cx.shared.config.gate.is_some_and(|g| g.strict);
        if ok || !strict {
            self.transition(now, State::Master, cause, cx);
        } else {
            self.setrun(now, cx);
        }
    }

    // ===== the OpenBSD verbs =====

    /// OpenBSD `carp_master_down`: BACKUP becomes MASTER; a no-op in INIT and MASTER.
    /// With a pre-master gate the takeover first waits for `finish_gate`.
    fn master_down(&mut self, now: Instant, cause: Cause, cx: &mut Cx<'_>) {
        if self.state != State::Backup || self.pending.is_some() {
            return;
        }
        let Some(gate) = cx.shared.config.gate else {
            self.transition(now, State::Master, cause, cx);
            return;
        };
        self.pending = Some(cause);
        self.timers.stop(Timer::MasterDownV4);
        self.timers.stop(Timer::MasterDownV6);
        let deadline = now + gate.deadline;
        self.timers.set(Timer::Prepare, deadline);
        cx.shared.request_prepare(deadline, cx.out);
    }

    /// OpenBSD `carp_set_state` plus the entry/exit actions of `carp_master_down`.
    fn transition(&mut self, now: Instant, to: State, cause: Cause, cx: &mut Cx<'_>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.since = now;
        self.last_cause = cause;
        self.stats.transitions += 1;
        if self.pending.take().is_some() {
            self.timers.stop(Timer::Prepare);
            cx.shared.preparing = false;
        }
        cx.out.actions.push_back(Action::StateChanged {
            id: self.id,
            from,
            to,
            cause,
        });
        if (from == State::Init) != (to == State::Init) {
            cx.shared.node_running(self.slot, to != State::Init, cx.out);
        }
        if from == State::Master {
            cx.shared.node_left_master(self.slot, cx.out);
            self.delayed_arp = -1;
        }
        if to == State::Master {
            self.stats.preempt += 1;
            // DEVIATION: OpenBSD advertises first, then sends the gratuitous ARP.
            // Announcing first moves the switches to us before the old master,
            // hearing our advertisement, drops the addresses.
            cx.shared.node_entered_master(self.slot, cx.out);
            self.send_advert(now, false, cx);
            // "Schedule a delayed ARP to deal w/ some L3 switches."
            self.delayed_arp = 2;
        }
        self.setrun(now, cx);
    }

    /// OpenBSD `carp_setrun`: arm the timers the current state needs.
    fn setrun(&mut self, now: Instant, cx: &Cx<'_>) {
        match self.state {
            State::Init => self.timers.stop_all(),
            State::Backup => {
                self.timers.stop(Timer::Advertise);
                self.timers.stop(Timer::MasterDownV4);
                self.timers.stop(Timer::MasterDownV6);
                if self.pending.is_none() {
                    for family in Self::families(&cx.shared.config) {
                        self.arm_master_down(now, family, cx);
                    }
                    // RFC 9568 6.4.1: the address owner becomes MASTER at once.
                    let config = &cx.shared.config;
                    if config.flavour == Flavour::Vrrp && config.vrrp.priority == 255 {
                        let timer = self.master_down_timer(cx);
                        self.timers.set(timer, now);
                    }
                }
            }
            State::Master => {
                self.timers.stop(Timer::MasterDownV4);
                self.timers.stop(Timer::MasterDownV6);
                self.timers.stop(Timer::Farewell);
                self.farewell = None;
                if self.timers.get(Timer::Advertise).is_none() {
                    let at = now + self.interval(cx);
                    self.timers.set(Timer::Advertise, at);
                }
            }
        }
    }

    fn interval(&self, cx: &Cx<'_>) -> core::time::Duration {
        match cx.shared.config.flavour {
            Flavour::Carp => interval(cx.shared.config.advbase, self.effective_advskew(&cx.ctx)),
            Flavour::Vrrp => {
                core::time::Duration::from_millis(u64::from(cx.shared.config.vrrp.interval_cs) * 10)
            }
        }
    }

    /// Whether, within the last master-down interval, advertisements were
    /// heard that failed the HMAC, and none since that passed it.
    fn auth_failing(&self, now: Instant, cx: &Cx<'_>) -> bool {
        let Some((_, bad)) = self.last_bad_auth else {
            return false;
        };
        let window = self.master_down_interval(cx);
        let accepted_since = self.last_master.is_some_and(|(_, t)| t >= bad);
        now.saturating_since(bad) <= window && !accepted_since
    }

    fn arm_master_down(&mut self, now: Instant, family: Family, cx: &Cx<'_>) {
        let config = &cx.shared.config;
        let timer = match family {
            Family::V4 if config.has(Family::V4) => Timer::MasterDownV4,
            Family::V6 if config.has(Family::V6) => Timer::MasterDownV6,
            // An advert of a family we have no address of (a peer misconfigured,
            // caught by the HMAC anyway) restarts nothing.
            _ => return,
        };
        let d = self.master_down_interval(cx);
        self.timers.set(timer, now + d);
    }

    /// The advertisement this vhost sends now (a bow-out one if `bow_out`).
    fn advert(&self, bow_out: bool, cx: &Cx<'_>) -> Repr {
        let (advbase, advskew) = if bow_out {
            (255, 255)
        } else {
            (
                cx.shared.config.advbase.0,
                self.effective_advskew(&cx.ctx).0,
            )
        };
        Repr {
            version: VERSION,
            kind: TYPE_ADVERTISEMENT,
            vhid: self.id.vhid.get(),
            advskew,
            authlen: AUTHLEN,
            demote: cx.ctx.demote,
            advbase,
            counter: self.cookie,
            md: self.auth.generate(&self.cookie),
        }
    }

    /// The VRRPv3 advertisement of `family` (priority 0 to resign). Its
    /// checksum is over the group and the unspecified source: the shell,
    /// which knows the source, fills it in (`wire::vrrp::fill_checksum`).
    fn vrrp_advert(&self, resign: bool, family: Family, cx: &Cx<'_>) -> Vec<u8> {
        let config = &cx.shared.config;
        let (src, group) = match family {
            Family::V4 => (
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                IpAddr::V4(crate::action::CARP_GROUP_V4),
            ),
            Family::V6 => (
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                IpAddr::V6(crate::action::CARP_GROUP_V6),
            ),
        };
        let repr = crate::wire::vrrp::Repr {
            vrid: self.id.vhid.get(),
            priority: if resign { 0 } else { self.vrrp_priority(cx) },
            interval_cs: config.vrrp.interval_cs,
            kind: crate::wire::vrrp::TYPE_ADVERTISEMENT,
            addresses: config.addresses.iter().map(|a| a.addr).collect(),
        };
        repr.to_bytes(src, group).unwrap_or_default()
    }

    /// OpenBSD `carp_send_ad`: one advertisement per family that has addresses.
    fn send_advert(&mut self, now: Instant, bow_out: bool, cx: &mut Cx<'_>) {
        let carp = self.advert(bow_out, cx).to_bytes();
        for family in Self::families(&cx.shared.config) {
            match cx.shared.config.flavour {
                Flavour::Carp => self.transmit(family, &carp, None, cx),
                Flavour::Vrrp => {
                    let bytes = self.vrrp_advert(bow_out, family, cx);
                    self.transmit(family, &bytes, None, cx);
                }
            }
        }
        if bow_out {
            // The advertise timer is not re-armed after a bow-out.
            self.timers.stop(Timer::Advertise);
            return;
        }
        if self.delayed_arp > 0 {
            self.delayed_arp -= 1;
        }
        if self.delayed_arp == 0 {
            // DEVIATION: OpenBSD repeats only the ARP; carpd repeats the NA too,
            // since Linux neighbours may miss the first one in the same way.
            cx.shared.announce(self.slot, cx.out);
            self.delayed_arp = -1;
        }
        let at = now + self.interval(cx);
        self.timers.set(Timer::Advertise, at);
    }

    /// Tell a better master we just yielded to that we were MASTER too.
    ///
    /// DEVIATION: after a healed partition the loser may hear the winner first
    /// and yield silently; the winner then never learns that the network saw
    /// another master, and does not re-announce. ucarp sends one more
    /// advertisement before stepping down; carpd sends it to the winner only
    /// (unicast), so backups that preempt do not see a slower master and churn.
    /// The winner, hearing a worse master, re-announces.
    ///
    /// Sent [`FAREWELLS`] times, [`FAREWELL_GAP`] apart at most: under heavy
    /// loss a single one was lost in the chaos soak (docs/reliability.md).
    /// A repeat is harmless: the winner just re-announces once more.
    fn farewell(&mut self, now: Instant, winner: IpAddr, cx: &mut Cx<'_>) {
        self.farewell = Some((winner, FAREWELLS));
        self.repeat_farewell(now, cx);
    }

    /// Send the next farewell, while still BACKUP, and arm the one after.
    fn repeat_farewell(&mut self, now: Instant, cx: &mut Cx<'_>) {
        self.timers.stop(Timer::Farewell);
        let Some((winner, left)) = self.farewell.take() else {
            return;
        };
        if self.state != State::Backup || left == 0 {
            return;
        }
        let bytes = self.advert(false, cx).to_bytes();
        self.transmit(Family::of(&winner), &bytes, Some(winner), cx);
        if left > 1 {
            self.farewell = Some((winner, left - 1));
            let gap = self.interval(cx).min(FAREWELL_GAP);
            self.timers.set(Timer::Farewell, now + gap);
        }
    }

    /// Queue one advertisement and count it (`carps_opackets` / `carps_opackets6`).
    ///
    /// It goes to `to`, else to each configured peer of the family (and the
    /// group too with `dual_path`), else to the group; multicast from a
    /// virtual-lladdr interface leaves from the node's virtual MAC, as the
    /// kernels send it, and unicast from the parent's (FreeBSD).
    fn transmit(&mut self, family: Family, bytes: &[u8], to: Option<IpAddr>, cx: &mut Cx<'_>) {
        let config = &cx.shared.config;
        let group = match family {
            Family::V4 => IpAddr::V4(crate::action::CARP_GROUP_V4),
            Family::V6 => IpAddr::V6(crate::action::CARP_GROUP_V6),
        };
        let mut destinations: Vec<IpAddr> = match to {
            Some(to) => vec![to],
            None => config.peers_of(family).collect(),
        };
        if to.is_none() && (destinations.is_empty() || config.dual_path) {
            destinations.push(group);
        }
        // In `ip` / `ip-stealth` the leader's MAC must never be a frame source
        // (multicast, or stealth so that switches keep flooding it): those
        // interfaces advertise from the parent's MAC.
        let hidden_mac = matches!(config.balancing(), Balancing::Ip | Balancing::IpStealth);
        for dst in destinations {
            let src_mac = (config.lladdr == Lladdr::Virtual && dst.is_multicast() && !hidden_mac)
                .then(|| config.node_virtual_mac(self.id.vhid));
            match family {
                Family::V4 => self.stats.opackets += 1,
                Family::V6 => self.stats.opackets6 += 1,
            }
            cx.out.actions.push_back(Action::Transmit {
                id: self.id,
                family,
                bytes: bytes.to_vec(),
                dst,
                src_mac,
            });
        }
    }
}

/// VRRP: the configured priority with the group demotion taken off (as
/// keepalived's tracking lowers it), never below 1.
pub(crate) fn vrrp_priority_of(config: &CarpIfConfig, ctx: &Context) -> u8 {
    config.vrrp.priority.saturating_sub(ctx.demote).max(1)
}
