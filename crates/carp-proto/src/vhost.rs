//! The state machine of one vhid (spec section 5).
//!
//! OpenBSD writes it as three switches plus one setter: `carp_proto_input_c`
//! (an advertisement arrived), `carp_master_down` (a timer expired) and
//! `carp_setrun` (arm timers for the state), all changing state only through
//! `carp_set_state`. Here they are [`Vhost::receive`], [`Vhost::master_down`],
//! [`Vhost::setrun`] and [`Vhost::transition`]; nothing else assigns `state`.

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::action::{Action, Cause, DemoteReason, Family, State, VhostId};
use crate::auth::Auth;
use crate::config::{AdvSkew, VhostConfig, interval};
use crate::election::{self, Standing};
use crate::stats::{DropReason, Stats};
use crate::time::Instant;
use crate::timer::{Timer, TimerTable};
use crate::wire::carp::{AUTHLEN, Repr, TYPE_ADVERTISEMENT, VERSION};

/// Consecutive send errors that demote, and successes that undo it
/// (`CARP_SENDAD_MAX_ERRORS` / `CARP_SENDAD_MIN_SUCCESS` for one vhost).
pub(crate) const SENDAD_THRESHOLD: u32 = 3;

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

/// Where a vhost puts its outputs.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) actions: VecDeque<Action>,
    /// Automatic demotion adjustments for the node to apply: (vhost, +1/-1, why).
    pub(crate) demotions: Vec<(VhostId, i32, DemoteReason)>,
}

/// One vhid on one parent interface.
#[derive(Debug)]
pub(crate) struct Vhost {
    pub(crate) id: VhostId,
    pub(crate) config: VhostConfig,
    auth: Auth,
    /// The OpenBSD-style constant counter, chosen by the caller (spec 3).
    cookie: [u8; 8],
    pub(crate) state: State,
    pub(crate) since: Instant,
    pub(crate) last_cause: Cause,
    timers: TimerTable,
    /// OpenBSD `sc_delayed_arp`: adverts left before the repeated announcement, -1 for none.
    delayed_arp: i8,
    /// Parent link down (OpenBSD "suppressed"): stay in INIT.
    pub(crate) link_down: bool,
    /// Disabled by the operator or shutting down: stay in INIT.
    pub(crate) disabled: bool,
    sendad_errors: u32,
    sendad_success: u32,
    /// Demotion this vhost contributes itself (OpenBSD `sc_demote_cnt`).
    pub(crate) own_demote: u8,
    pub(crate) stats: Stats,
    /// Source address and time of the last accepted advertisement.
    pub(crate) last_master: Option<(IpAddr, Instant)>,
    /// Timing the last accepted advertisement carried: (advbase, advskew, demote).
    pub(crate) last_master_timing: Option<(u8, u8, u8)>,
}

impl Vhost {
    pub(crate) fn new(id: VhostId, config: VhostConfig, cookie: [u8; 8], now: Instant) -> Vhost {
        let auth = Auth::new(&config.passphrase, config.vhid, &config.ipv4, &config.ipv6);
        Vhost {
            id,
            config,
            auth,
            cookie,
            state: State::Init,
            since: now,
            last_cause: Cause::Init,
            timers: TimerTable::default(),
            delayed_arp: -1,
            link_down: false,
            disabled: false,
            sendad_errors: 0,
            sendad_success: 0,
            own_demote: 0,
            stats: Stats::default(),
            last_master: None,
            last_master_timing: None,
        }
    }

    /// Return the advskew we advertise and compare with (FreeBSD `DEMOTE_ADVSKEW`).
    pub(crate) fn effective_advskew(&self, ctx: &Context) -> AdvSkew {
        election::demoted_advskew(self.config.advskew, ctx.skew_demotion)
    }

    fn standing(&self, ctx: &Context) -> Standing {
        Standing {
            advbase: self.config.advbase.0,
            advskew: self.effective_advskew(ctx).0,
            demote: ctx.demote,
        }
    }

    fn families(&self) -> impl Iterator<Item = Family> + use<> {
        let v4 = (!self.config.ipv4.is_empty()).then_some(Family::V4);
        let v6 = (!self.config.ipv6.is_empty()).then_some(Family::V6);
        v4.into_iter().chain(v6)
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_timeout()
    }

    /// Return true if the preconditions to leave INIT hold (spec 5.1).
    fn can_run(&self) -> bool {
        !self.link_down && !self.disabled && self.families().next().is_some()
    }

    // ===== inputs =====

    /// Spec 8 steps 8-11 and 5.3: the vhid matched; check version, HMAC and
    /// cookie, then apply the election rules.
    pub(crate) fn receive(
        &mut self,
        now: Instant,
        src: IpAddr,
        repr: &Repr,
        ctx: &Context,
        out: &mut Outbox,
    ) -> Result<(), DropReason> {
        if repr.version != VERSION {
            return Err(DropReason::BadVersion(repr.version));
        }
        if !self.auth.verify(&repr.counter, &repr.md) {
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

        let ours = self.standing(ctx);
        let theirs = Standing {
            advbase: repr.advbase,
            advskew: repr.advskew,
            demote: repr.demote,
        };
        match self.state {
            State::Init => {}
            State::Master => match election::master_yields_to(ours, theirs) {
                Some(cause) => {
                    self.transition(now, State::Backup, cause, ctx, out);
                    if election::strictly_better(theirs, ours) {
                        self.farewell(src, ctx, out);
                    }
                }
                None => {
                    // DEVIATION: a second master exists (a healed partition). The
                    // kernels send nothing here, since their advertisements carry
                    // the virtual MAC and move the switches back by themselves;
                    // carpd's leave with the real MAC, so it re-announces now and
                    // two advertisements later, as ucarp does ("reasserting control").
                    self.announce(out);
                    self.delayed_arp = 2;
                }
            },
            State::Backup => match election::backup_takes_over(ours, theirs, ctx.preempt) {
                Some(cause) => self.master_down(now, cause, ctx, out),
                // Only the family the advertisement came in on is restarted (spec 4.3).
                None => self.arm_master_down(now, Family::of(&src)),
            },
        }
        Ok(())
    }

    /// Walk the expired timers in a fixed order (quinn `handle_timeout`).
    pub(crate) fn handle_timeout(&mut self, now: Instant, ctx: &Context, out: &mut Outbox) {
        for timer in Timer::VALUES {
            if !self.timers.is_expired(timer, now) {
                continue;
            }
            self.timers.stop(timer);
            match timer {
                Timer::Advertise => {
                    if self.state == State::Master {
                        self.send_advert(now, false, ctx, out);
                    }
                }
                Timer::MasterDownV4 | Timer::MasterDownV6 => {
                    self.master_down(now, Cause::MasterDown, ctx, out);
                }
            }
        }
    }

    /// Count the outcome of one `Transmit` (OpenBSD `carp_send_ad` error handling).
    pub(crate) fn handle_send_result(&mut self, ok: bool, out: &mut Outbox) {
        if ok {
            if self.sendad_errors >= SENDAD_THRESHOLD {
                self.sendad_success += 1;
                if self.sendad_success >= SENDAD_THRESHOLD {
                    out.demotions.push((self.id, -1, DemoteReason::SendErrors));
                    self.sendad_errors = 0;
                }
            } else {
                self.sendad_errors = 0;
            }
        } else {
            self.stats.send_errors += 1;
            self.sendad_errors = self.sendad_errors.saturating_add(1);
            if self.sendad_errors == SENDAD_THRESHOLD {
                out.demotions.push((self.id, 1, DemoteReason::SendErrors));
            }
            self.sendad_success = 0;
        }
    }

    /// Leave INIT if the preconditions now hold, or go to INIT if they do not.
    pub(crate) fn refresh(&mut self, now: Instant, cause: Cause, ctx: &Context, out: &mut Outbox) {
        if self.can_run() {
            if self.state == State::Init {
                self.transition(now, State::Backup, cause, ctx, out);
            }
        } else if self.state != State::Init {
            self.transition(now, State::Init, cause, ctx, out);
        }
    }

    /// A forced `state master|backup` (OpenBSD SIOCSVH, FreeBSD `carp_ioctl_set`).
    pub(crate) fn force(&mut self, now: Instant, to: State, ctx: &Context, out: &mut Outbox) {
        match (self.state, to) {
            (State::Backup, State::Master) => self.master_down(now, Cause::Forced, ctx, out),
            (State::Master, State::Backup) => {
                self.transition(now, State::Backup, Cause::Forced, ctx, out)
            }
            _ => {}
        }
    }

    /// Send the bow-out advertisement if MASTER (spec 5.4); the caller then moves us to INIT.
    pub(crate) fn bow_out(&mut self, now: Instant, ctx: &Context, out: &mut Outbox) {
        if self.state == State::Master {
            self.send_advert(now, true, ctx, out);
        }
    }

    /// Send an advertisement now if MASTER (after a demotion change).
    pub(crate) fn advertise_now(&mut self, now: Instant, ctx: &Context, out: &mut Outbox) {
        if self.state == State::Master {
            self.send_advert(now, false, ctx, out);
        }
    }

    /// Replace the configuration, keeping state when the vhid, key and addresses are unchanged.
    pub(crate) fn reconfigure(
        &mut self,
        now: Instant,
        config: VhostConfig,
        ctx: &Context,
        out: &mut Outbox,
    ) {
        let same_identity = config.passphrase == self.config.passphrase
            && config.ipv4 == self.config.ipv4
            && config.ipv6 == self.config.ipv6;
        if same_identity {
            self.config = config;
            return;
        }
        let old = self.config.addresses();
        self.auth = Auth::new(&config.passphrase, config.vhid, &config.ipv4, &config.ipv6);
        self.config = config;
        if self.state == State::Master {
            let new = self.config.addresses();
            let gone: Vec<IpAddr> = old.iter().filter(|a| !new.contains(a)).copied().collect();
            if !gone.is_empty() {
                out.actions.push_back(Action::RemoveAddresses {
                    id: self.id,
                    addresses: gone,
                });
            }
            out.actions.push_back(Action::AddAddresses {
                id: self.id,
                addresses: new,
            });
            self.announce(out);
            self.send_advert(now, false, ctx, out);
        }
        // A family may have appeared or vanished: re-arm for the current state.
        self.setrun(now, ctx);
        self.refresh(now, Cause::Reconfigured, ctx, out);
    }

    // ===== the OpenBSD verbs =====

    /// OpenBSD `carp_master_down`: BACKUP becomes MASTER; a no-op in INIT and MASTER.
    fn master_down(&mut self, now: Instant, cause: Cause, ctx: &Context, out: &mut Outbox) {
        if self.state == State::Backup {
            self.transition(now, State::Master, cause, ctx, out);
        }
    }

    /// OpenBSD `carp_set_state` plus the entry/exit actions of `carp_master_down`.
    fn transition(
        &mut self,
        now: Instant,
        to: State,
        cause: Cause,
        ctx: &Context,
        out: &mut Outbox,
    ) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.since = now;
        self.last_cause = cause;
        self.stats.transitions += 1;
        out.actions.push_back(Action::StateChanged {
            id: self.id,
            from,
            to,
            cause,
        });
        if from == State::Master {
            let addresses = self.config.addresses();
            out.actions.push_back(Action::RemoveAddresses {
                id: self.id,
                addresses,
            });
            self.delayed_arp = -1;
        }
        if to == State::Master {
            let addresses = self.config.addresses();
            out.actions.push_back(Action::AddAddresses {
                id: self.id,
                addresses,
            });
            self.stats.preempt += 1;
            // DEVIATION: OpenBSD advertises first, then sends the gratuitous ARP.
            // Announcing first moves the switches to us before the old master,
            // hearing our advertisement, drops the addresses.
            self.announce(out);
            self.send_advert(now, false, ctx, out);
            // "Schedule a delayed ARP to deal w/ some L3 switches."
            self.delayed_arp = 2;
        }
        self.setrun(now, ctx);
    }

    /// OpenBSD `carp_setrun`: arm the timers the current state needs.
    fn setrun(&mut self, now: Instant, ctx: &Context) {
        match self.state {
            State::Init => self.timers.stop_all(),
            State::Backup => {
                self.timers.stop(Timer::Advertise);
                self.timers.stop(Timer::MasterDownV4);
                self.timers.stop(Timer::MasterDownV6);
                for family in self.families() {
                    self.arm_master_down(now, family);
                }
            }
            State::Master => {
                self.timers.stop(Timer::MasterDownV4);
                self.timers.stop(Timer::MasterDownV6);
                if self.timers.get(Timer::Advertise).is_none() {
                    let at = now + interval(self.config.advbase, self.effective_advskew(ctx));
                    self.timers.set(Timer::Advertise, at);
                }
            }
        }
    }

    fn arm_master_down(&mut self, now: Instant, family: Family) {
        let timer = match family {
            Family::V4 if !self.config.ipv4.is_empty() => Timer::MasterDownV4,
            Family::V6 if !self.config.ipv6.is_empty() => Timer::MasterDownV6,
            // An advert of a family we have no address of (a peer misconfigured,
            // caught by the HMAC anyway) restarts nothing.
            _ => return,
        };
        // Both kernels use the configured (undemoted) advskew for this timer.
        let d = election::master_down_interval(
            self.config.advbase,
            self.config.advskew,
            self.config.master_down,
        );
        self.timers.set(timer, now + d);
    }

    /// The advertisement this vhost sends now (a bow-out one if `bow_out`).
    fn advert(&self, bow_out: bool, ctx: &Context) -> Repr {
        let (advbase, advskew) = if bow_out {
            (255, 255)
        } else {
            (self.config.advbase.0, self.effective_advskew(ctx).0)
        };
        Repr {
            version: VERSION,
            kind: TYPE_ADVERTISEMENT,
            vhid: self.config.vhid.get(),
            advskew,
            authlen: AUTHLEN,
            demote: ctx.demote,
            advbase,
            counter: self.cookie,
            md: self.auth.generate(&self.cookie),
        }
    }

    /// OpenBSD `carp_send_ad`: one advertisement per family that has addresses.
    fn send_advert(&mut self, now: Instant, bow_out: bool, ctx: &Context, out: &mut Outbox) {
        let repr = self.advert(bow_out, ctx);
        let packet = repr.to_bytes();
        for family in self.families() {
            self.transmit(family, packet, None, out);
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
            self.announce(out);
            self.delayed_arp = -1;
        }
        let at = now + interval(self.config.advbase, self.effective_advskew(ctx));
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
    fn farewell(&mut self, winner: IpAddr, ctx: &Context, out: &mut Outbox) {
        let packet = self.advert(false, ctx).to_bytes();
        self.transmit(Family::of(&winner), packet, Some(winner), out);
    }

    /// Queue one advertisement and count it (`carps_opackets` / `carps_opackets6`).
    fn transmit(&mut self, family: Family, packet: [u8; 36], to: Option<IpAddr>, out: &mut Outbox) {
        match family {
            Family::V4 => self.stats.opackets += 1,
            Family::V6 => self.stats.opackets6 += 1,
        }
        out.actions.push_back(Action::Transmit {
            id: self.id,
            family,
            packet,
            to,
        });
    }

    fn announce(&self, out: &mut Outbox) {
        out.actions.push_back(Action::Announce {
            id: self.id,
            ipv4: self.config.ipv4.clone(),
            ipv6: self.config.ipv6.clone(),
        });
    }
}
