//! The CARP election rules and timer formulas, kept apart from the state
//! machine so that another protocol flavour (VRRPv3) can supply its own.
//!
//! Spec 5.3 (OpenBSD `carp_proto_input_c`) and 4.2-4.3 (`carp_setrun`).

use core::time::Duration;
use std::net::IpAddr;

use crate::action::{Cause, State};
use crate::config::{AdvBase, AdvSkew, Flavour, MasterDownFormula, timing_ticks};

/// What a vhost does with an authenticated advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// BACKUP: become MASTER now, for this reason.
    TakeOver(Cause),
    /// MASTER: step down to BACKUP; `farewell` when the other is strictly better.
    Yield {
        /// Why.
        cause: Cause,
        /// Tell the winner (carpd's farewell, see `Vhost::farewell`).
        farewell: bool,
    },
    /// MASTER: a worse master exists; announce the addresses again.
    Reassert,
    /// BACKUP: the master is alive; restart the master-down timer.
    RestartTimer,
    /// Nothing to do (INIT).
    Ignore,
}

impl Flavour {
    /// Return what a vhost in `state` standing at `ours` does on hearing `theirs`.
    ///
    /// `tie` says who wins if both are MASTERs of equal standing.
    pub(crate) fn decide(
        self,
        state: State,
        ours: Standing,
        theirs: Standing,
        preempt: bool,
        tie: Tie,
    ) -> Decision {
        match (self, state) {
            (_, State::Init) => Decision::Ignore,
            (Flavour::Carp, State::Master) if ours == theirs && tie == Tie::Ours => {
                Decision::Reassert
            }
            (Flavour::Carp, State::Master) => match master_yields_to(ours, theirs) {
                Some(cause) => Decision::Yield {
                    cause,
                    farewell: strictly_better(theirs, ours),
                },
                None => Decision::Reassert,
            },
            (Flavour::Carp, State::Backup) => match backup_takes_over(ours, theirs, preempt) {
                Some(cause) => Decision::TakeOver(cause),
                None => Decision::RestartTimer,
            },
            // A CARP advertisement never reaches a VRRP vhost (the node
            // drops it as bad_ver); VRRP ones are decided by `vrrp_decide`.
            (Flavour::Vrrp, _) => Decision::Ignore,
        }
    }
}

/// What a VRRP vhost does with an advertisement (RFC 9568 6.4.2, 6.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VrrpDecision {
    /// BACKUP: the master resigned (priority 0): take over after Skew_Time.
    TakeOverSoon,
    /// BACKUP: learn the master's interval and restart Master_Down_Timer.
    Follow,
    /// MASTER: a resigning peer asks for an advertisement now.
    AdvertiseNow,
    /// MASTER: a better master exists: become BACKUP.
    Yield,
    /// Nothing: a worse master is heard (it will yield) or we are INIT.
    Discard,
}

/// Decide as RFC 9568 does. `ours`/`theirs` are priorities; `theirs_wins_tie`
/// says whether their primary address is higher than ours (the tie-break on
/// equal priority, 6.4.3; FreeBSD has none, keepalived has it).
pub(crate) fn vrrp_decide(
    state: State,
    ours: u8,
    theirs: u8,
    preempt: bool,
    theirs_wins_tie: bool,
) -> VrrpDecision {
    match state {
        State::Init => VrrpDecision::Discard,
        State::Backup if theirs == 0 => VrrpDecision::TakeOverSoon,
        State::Backup if !preempt || theirs >= ours => VrrpDecision::Follow,
        // Preempting a lower priority: let Master_Down_Timer run out.
        State::Backup => VrrpDecision::Discard,
        State::Master if theirs == 0 => VrrpDecision::AdvertiseNow,
        State::Master if theirs > ours || (theirs == ours && theirs_wins_tie) => {
            VrrpDecision::Yield
        }
        State::Master => VrrpDecision::Discard,
    }
}

/// Skew_Time: `((256 - priority) * Master_Adver_Interval) / 256` (RFC 9568 6.1).
pub(crate) fn vrrp_skew(interval_cs: u16, priority: u8) -> Duration {
    let cs = (256 - u32::from(priority)) * u32::from(interval_cs.max(1)) / 256;
    Duration::from_millis(u64::from(cs) * 10)
}

/// Master_Down_Interval: `3 * Master_Adver_Interval + Skew_Time` (RFC 9568 6.1;
/// FreeBSD's `3*interval + (256-prio)*interval/256`).
pub(crate) fn vrrp_master_down(interval_cs: u16, priority: u8) -> Duration {
    Duration::from_millis(u64::from(interval_cs.max(1)) * 30) + vrrp_skew(interval_cs, priority)
}

/// DEVIATION: between two MASTERs of equal standing the kernels both step
/// down and let the master-down timers race. Where the timers fire together
/// (hosts that heard the old master's last advertisement at the same moment,
/// as on one switch or bridge) the race repeats every 3 intervals and never
/// settles (seen with three hosts in namespaces). carpd lets the lower
/// source address stay MASTER, the direction ucarp uses (`packethandler`:
/// step down if the other's address is lower). ucarp compares the raw
/// `s_addr`, which on little-endian hosts orders by the last octet first, so
/// an IPv4 address wins only if it is lower in both orders (network and
/// byte-swapped): a carpd and a ucarp can then never both stay. A BSD peer
/// steps down whatever the addresses, so every pair converges and nothing
/// on the wire changes.
///
/// One family decides, or the two families could pick different winners
/// and both would step down: with IPv4 configured its addresses decide and
/// an IPv6 tie is ignored; IPv6 addresses decide only an IPv6-only interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tie {
    /// Our address wins: stay MASTER.
    Ours,
    /// Theirs wins, or either is unknown: step down (the kernels).
    Theirs,
}

impl Tie {
    /// Break a tie between our source `local` and their source `remote`;
    /// `has_v4` says whether the interface has IPv4 addresses.
    pub(crate) fn between(local: Option<IpAddr>, remote: IpAddr, has_v4: bool) -> Tie {
        let ours = match (local, remote) {
            (Some(IpAddr::V4(l)), IpAddr::V4(r)) => {
                let (l, r) = (l.octets(), r.octets());
                l < r && u32::from_le_bytes(l) < u32::from_le_bytes(r)
            }
            // The IPv4 adverts decide; this one changes nothing.
            (Some(IpAddr::V6(_)), IpAddr::V6(_)) if has_v4 => true,
            (Some(IpAddr::V6(l)), IpAddr::V6(r)) => l.octets() < r.octets(),
            _ => false,
        };
        if ours { Tie::Ours } else { Tie::Theirs }
    }
}

/// One side of a comparison: the advertised timing and demote count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) advbase: u8,
    pub(crate) advskew: u8,
    pub(crate) demote: u8,
}

impl Standing {
    fn ticks(&self) -> u32 {
        timing_ticks(self.advbase, self.advskew)
    }
}

/// As MASTER, return why to step down on hearing `theirs`, or `None` to stay.
///
/// OpenBSD: step down if `(ours >= theirs AND D_theirs <= D_ours) OR D_theirs < D_ours`.
/// Equal timing and demote makes *both* masters step down; the master-down
/// timer race then elects one (the kernels have no address tie-break).
pub(crate) fn master_yields_to(ours: Standing, theirs: Standing) -> Option<Cause> {
    if theirs.demote < ours.demote {
        Some(Cause::LowerDemote)
    } else if ours.ticks() >= theirs.ticks() && theirs.demote <= ours.demote {
        Some(Cause::Superseded)
    } else {
        None
    }
}

/// Return true if `a` wins against `b` outright: less demoted, or equally
/// demoted and advertising more often.
pub(crate) fn strictly_better(a: Standing, b: Standing) -> bool {
    a.demote < b.demote || (a.demote == b.demote && a.ticks() < b.ticks())
}

/// As BACKUP, return why to take over on hearing `theirs`, or `None` to keep waiting.
///
/// OpenBSD, checked in this order:
/// 1. preempt, we are faster, and they are not less demoted;
/// 2. they are more demoted, whatever preempt says;
/// 3. our advbase is not 0 and they advertise slower than `(3*advbase, our skew)`:
///    "If the master is going to advertise at such a low frequency that he's
///    guaranteed to time out, we'd might as well just treat him as timed out now."
pub(crate) fn backup_takes_over(ours: Standing, theirs: Standing, preempt: bool) -> Option<Cause> {
    if preempt && ours.ticks() < theirs.ticks() && theirs.demote >= ours.demote {
        return Some(Cause::Preempted);
    }
    if theirs.demote > ours.demote {
        return Some(Cause::HigherDemote);
    }
    let three_times = timing_ticks(0, ours.advskew) + u32::from(ours.advbase) * 3 * 256;
    if ours.advbase != 0 && theirs.ticks() > three_times {
        if theirs.advbase == 255 && theirs.advskew == 255 {
            return Some(Cause::BowOut);
        }
        return Some(Cause::SlowMaster);
    }
    None
}

/// Return the master-down interval for a vhost's own timing (spec 4.3).
pub(crate) fn master_down_interval(
    advbase: AdvBase,
    advskew: AdvSkew,
    formula: MasterDownFormula,
) -> Duration {
    formula.master_down(advbase, advskew)
}

/// Return the FreeBSD demoted advskew: `clamp(advskew + demotion, 0, 240)`.
///
/// DEVIATION: FreeBSD clamps to 240 even with no demotion; carpd leaves an
/// undemoted advskew as configured so that OpenBSD peers see the same value.
pub(crate) fn demoted_advskew(advskew: AdvSkew, demotion: i32) -> AdvSkew {
    if demotion == 0 {
        return advskew;
    }
    let max = i32::from(crate::config::MAX_DEMOTED_ADVSKEW);
    let v = (i32::from(advskew.0) + demotion).clamp(0, max);
    AdvSkew(v as u8)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn vrrp_decisions_follow_rfc_9568() {
        use VrrpDecision::*;
        // BACKUP: a resigning master, a better or equal one, a worse one.
        assert_eq!(
            vrrp_decide(State::Backup, 100, 0, true, false),
            TakeOverSoon
        );
        assert_eq!(vrrp_decide(State::Backup, 100, 150, true, false), Follow);
        assert_eq!(vrrp_decide(State::Backup, 100, 100, true, false), Follow);
        assert_eq!(vrrp_decide(State::Backup, 100, 50, true, false), Discard);
        assert_eq!(vrrp_decide(State::Backup, 100, 50, false, false), Follow);
        // MASTER: a resigning peer, a better one, a tie both ways, a worse one.
        assert_eq!(
            vrrp_decide(State::Master, 100, 0, true, false),
            AdvertiseNow
        );
        assert_eq!(vrrp_decide(State::Master, 100, 150, true, false), Yield);
        assert_eq!(vrrp_decide(State::Master, 100, 100, true, true), Yield);
        assert_eq!(vrrp_decide(State::Master, 100, 100, true, false), Discard);
        assert_eq!(vrrp_decide(State::Master, 100, 50, true, true), Discard);
        assert_eq!(vrrp_decide(State::Init, 100, 150, true, true), Discard);
    }

    #[test]
    fn vrrp_timers_are_rfc_9568_formulas() {
        // Interval 1 s, priority 100: skew (156 * 100 / 256) cs = 60 cs.
        assert_eq!(vrrp_skew(100, 100), Duration::from_millis(600));
        assert_eq!(vrrp_master_down(100, 100), Duration::from_millis(3600));
        // The owner's skew rounds down to nothing.
        assert_eq!(vrrp_skew(100, 255), Duration::ZERO);
        // A zero interval on the wire is taken as one centisecond.
        assert_eq!(vrrp_master_down(0, 255), Duration::from_millis(30));
    }

    fn s(advbase: u8, advskew: u8, demote: u8) -> Standing {
        Standing {
            advbase,
            advskew,
            demote,
        }
    }

    #[test]
    fn carp_decisions_follow_the_rules_per_state() {
        let carp = Flavour::Carp;
        assert_eq!(
            carp.decide(State::Master, s(1, 0, 0), s(1, 100, 0), false, Tie::Theirs),
            Decision::Reassert
        );
        assert_eq!(
            carp.decide(State::Master, s(1, 100, 0), s(1, 0, 0), false, Tie::Theirs),
            Decision::Yield {
                cause: Cause::Superseded,
                farewell: true
            }
        );
        // Equal standing, addresses unknown: both step down, and neither is
        // the better one to tell (the kernels' rule).
        assert_eq!(
            carp.decide(State::Master, s(1, 0, 0), s(1, 0, 0), false, Tie::Theirs),
            Decision::Yield {
                cause: Cause::Superseded,
                farewell: false
            }
        );
        // Equal standing with both addresses known: the lower address stays.
        let (low, high) = (
            IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 2)),
            IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 10)),
        );
        assert_eq!(
            carp.decide(
                State::Master,
                s(1, 100, 0),
                s(1, 100, 0),
                true,
                Tie::between(Some(low), high, true)
            ),
            Decision::Reassert
        );
        assert_eq!(
            carp.decide(
                State::Master,
                s(1, 100, 0),
                s(1, 100, 0),
                true,
                Tie::between(Some(high), low, true)
            ),
            Decision::Yield {
                cause: Cause::Superseded,
                farewell: false
            }
        );
        // Dual stack: the IPv4 addresses decide, an IPv6 tie keeps us MASTER
        // (else the families could pick different winners and both step down).
        let (ll_low, ll_high): (IpAddr, IpAddr) =
            ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        assert_eq!(Tie::between(Some(ll_low), ll_high, true), Tie::Ours);
        assert_eq!(Tie::between(Some(ll_low), ll_high, false), Tie::Ours);
        assert_eq!(Tie::between(Some(ll_high), ll_low, false), Tie::Theirs);
        // Lower in network order but higher byte-swapped (ucarp's order on
        // little-endian hosts): no win, as ucarp would stay too.
        let a: IpAddr = "10.0.1.9".parse().unwrap();
        let b: IpAddr = "10.0.2.1".parse().unwrap();
        assert_eq!(Tie::between(Some(a), b, true), Tie::Theirs);
        assert_eq!(Tie::between(Some(b), a, true), Tie::Theirs);
        assert_eq!(Tie::between(None, low, true), Tie::Theirs);
        // Only a tie: a faster peer still wins whatever the addresses.
        assert!(matches!(
            carp.decide(
                State::Master,
                s(1, 100, 0),
                s(1, 0, 0),
                true,
                Tie::between(Some(low), high, true)
            ),
            Decision::Yield { .. }
        ));
        assert_eq!(
            carp.decide(State::Backup, s(1, 0, 0), s(1, 100, 0), true, Tie::Theirs),
            Decision::TakeOver(Cause::Preempted)
        );
        assert_eq!(
            carp.decide(State::Backup, s(1, 100, 0), s(1, 0, 0), true, Tie::Theirs),
            Decision::RestartTimer
        );
        assert_eq!(
            carp.decide(State::Init, s(1, 0, 0), s(1, 100, 0), true, Tie::Theirs),
            Decision::Ignore
        );
    }

    #[test]
    fn master_steps_down_on_equal_timing_and_demote() {
        assert_eq!(
            master_yields_to(s(1, 0, 0), s(1, 0, 0)),
            Some(Cause::Superseded)
        );
    }

    #[test]
    fn master_steps_down_to_faster_master() {
        assert_eq!(
            master_yields_to(s(1, 100, 0), s(1, 0, 0)),
            Some(Cause::Superseded)
        );
    }

    #[test]
    fn master_keeps_role_against_slower_master() {
        assert_eq!(master_yields_to(s(1, 0, 0), s(1, 100, 0)), None);
    }

    #[test]
    fn master_steps_down_to_less_demoted_master_even_if_slower() {
        assert_eq!(
            master_yields_to(s(1, 0, 1), s(1, 100, 0)),
            Some(Cause::LowerDemote)
        );
    }

    #[test]
    fn master_keeps_role_against_more_demoted_faster_master() {
        assert_eq!(master_yields_to(s(1, 100, 0), s(1, 0, 1)), None);
    }

    #[test]
    fn backup_preempts_slower_master_only_with_preempt() {
        assert_eq!(
            backup_takes_over(s(1, 0, 0), s(1, 100, 0), true),
            Some(Cause::Preempted)
        );
        assert_eq!(backup_takes_over(s(1, 0, 0), s(1, 100, 0), false), None);
    }

    #[test]
    fn backup_never_preempts_equal_master() {
        assert_eq!(backup_takes_over(s(1, 0, 0), s(1, 0, 0), true), None);
    }

    #[test]
    fn backup_does_not_preempt_less_demoted_master() {
        assert_eq!(backup_takes_over(s(1, 0, 1), s(1, 100, 0), true), None);
    }

    #[test]
    fn backup_takes_over_higher_demote_master_regardless_of_preempt() {
        assert_eq!(
            backup_takes_over(s(1, 100, 0), s(1, 0, 1), false),
            Some(Cause::HigherDemote)
        );
    }

    #[test]
    fn backup_treats_master_slower_than_3x_advbase_as_down() {
        assert_eq!(
            backup_takes_over(s(1, 0, 0), s(4, 0, 0), false),
            Some(Cause::SlowMaster)
        );
        // Exactly 3x (plus our own skew) is not slower.
        assert_eq!(backup_takes_over(s(1, 10, 0), s(3, 10, 0), false), None);
        assert_eq!(
            backup_takes_over(s(1, 10, 0), s(3, 11, 0), false),
            Some(Cause::SlowMaster)
        );
    }

    #[test]
    fn backup_with_advbase_0_skips_the_slow_master_rule() {
        assert_eq!(backup_takes_over(s(0, 50, 0), s(200, 0, 0), false), None);
    }

    #[test]
    fn bow_out_advert_uses_255_255() {
        assert_eq!(
            backup_takes_over(s(1, 100, 0), s(255, 255, 0), false),
            Some(Cause::BowOut)
        );
    }

    #[test]
    fn master_down_is_three_intervals_on_openbsd() {
        let d = master_down_interval(AdvBase(1), AdvSkew(128), MasterDownFormula::Openbsd);
        assert_eq!(d, Duration::from_micros(4_500_000));
    }

    #[test]
    fn master_down_adds_skew_once_on_freebsd() {
        let d = master_down_interval(AdvBase(1), AdvSkew(128), MasterDownFormula::Freebsd);
        assert_eq!(d, Duration::from_micros(3_500_000));
    }

    #[test]
    fn default_master_down_is_freebsd_from_advbase_1_and_openbsd_at_advbase_0() {
        let auto = MasterDownFormula::default();
        // 3 * 1 + 100/256 s = 3.390625 s, not OpenBSD's 4.171875 s.
        let d = master_down_interval(AdvBase(1), AdvSkew(100), auto);
        assert_eq!(d, Duration::from_micros(3_390_625));
        // advbase 0: three intervals of advskew/256 s, never advskew/256 s alone.
        let d = master_down_interval(AdvBase(0), AdvSkew(3), auto);
        assert_eq!(d, Duration::from_micros(3 * 11_718));
    }

    #[test]
    fn master_down_floor_with_advbase_0_and_advskew_0() {
        let d = master_down_interval(AdvBase(0), AdvSkew(0), MasterDownFormula::Openbsd);
        assert_eq!(d, Duration::from_micros(3 * 3906));
    }

    #[test]
    fn freebsd_demotion_clamps_to_0_and_240() {
        assert_eq!(demoted_advskew(AdvSkew(100), 240), AdvSkew(240));
        assert_eq!(demoted_advskew(AdvSkew(100), -200), AdvSkew(0));
        assert_eq!(demoted_advskew(AdvSkew(250), 0), AdvSkew(250));
        assert_eq!(demoted_advskew(AdvSkew(10), 5), AdvSkew(15));
    }
}
