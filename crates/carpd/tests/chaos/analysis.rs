//! Judging a soak recording against the pass criteria 1, 2, 3 and 5 (see
//! `netns_chaos.rs`), and the figures printed at the end. Pure functions
//! of the recording, so they are unit-tested on synthetic ones below.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::faults::{Fault, Kind};
use super::recording::{Life, Sample};
use super::{HEAL_SLACK, NAMES, SAMPLE, VIP, VIP_SLACK, node_list, protocol_bound};
use crate::common::daemon::Record;

// ===== analysis =====

/// The state of node `i` at `t` as the samples say: `Some("MASTER")` etc. for
/// a running node (carried over a failed poll for up to 1 s), `None` for a
/// node that is not running or not known.
pub fn state_at(samples: &[Sample], t: f64) -> Option<&str> {
    let idx = samples.partition_point(|s| s.t <= t);
    let mut k = idx;
    while k > 0 {
        k -= 1;
        let s = &samples[k];
        if s.life != Life::Running {
            return None;
        }
        if let Some(st) = s.state.as_deref() {
            return Some(st);
        }
        if t - s.t > 1.0 {
            return None;
        }
    }
    None
}

/// Polls a node's own fault made unanswerable ([`Fault::blind`]: `exhaust`
/// fills its control socket, and the harness asks through the same socket)
/// carry the node's last answer, from the fault's start to its end plus one
/// poll timeout. The VIP is still sampled with `ip`, so criterion 3 keeps
/// watching. Returns the patched recording and how many polls were filled.
pub fn fill_blind(samples: &[Vec<Sample>; 3], faults: &[Fault]) -> ([Vec<Sample>; 3], usize) {
    let mut filled = 0;
    let out = std::array::from_fn(|i| {
        let windows: Vec<(f64, f64)> = faults
            .iter()
            .filter(|f| f.blind == Some(i))
            .map(|f| (f.start - SAMPLE.as_secs_f64(), f.end + 0.5))
            .collect();
        let mut last: Option<String> = None;
        let mut ss = samples[i].clone();
        for s in &mut ss {
            if s.life != Life::Running {
                last = None;
                continue;
            }
            if s.state.is_some() {
                last = s.state.clone();
            } else if windows.iter().any(|&(a, b)| s.t >= a && s.t <= b) && last.is_some() {
                s.state = last.clone();
                filled += 1;
            }
        }
        ss
    });
    (out, filled)
}

/// A maximal interval `[s, e)` with the same master count class.
#[derive(Debug, Clone)]
pub struct Episode {
    pub s: f64,
    pub e: f64,
    pub masters: Vec<usize>,
}

/// When the set of MASTERs changed, and to what.
pub type MasterChanges = Vec<(f64, Vec<usize>)>;

/// Episodes of two or more MASTERs and of none, on a 50 ms grid.
pub fn episodes(
    samples: &[Vec<Sample>; 3],
    end: f64,
) -> (Vec<Episode>, Vec<Episode>, MasterChanges) {
    let mut dual: Vec<Episode> = Vec::new();
    let mut none: Vec<Episode> = Vec::new();
    let mut changes: MasterChanges = Vec::new();
    let step = SAMPLE.as_secs_f64();
    let mut open_dual: Option<Episode> = None;
    let mut open_none: Option<Episode> = None;
    let mut g = 0.0;
    while g <= end {
        let masters: Vec<usize> = (0..3)
            .filter(|&i| state_at(&samples[i], g) == Some("MASTER"))
            .collect();
        if changes.last().is_none_or(|(_, m)| *m != masters) {
            changes.push((g, masters.clone()));
        }
        for (open, list, want) in [
            (&mut open_dual, &mut dual, masters.len() >= 2),
            (&mut open_none, &mut none, masters.is_empty()),
        ] {
            match (open.as_mut(), want) {
                (None, true) => {
                    *open = Some(Episode {
                        s: g,
                        e: g,
                        masters: masters.clone(),
                    })
                }
                (Some(ep), true) => {
                    for m in &masters {
                        if !ep.masters.contains(m) {
                            ep.masters.push(*m);
                        }
                    }
                }
                (Some(_), false) => {
                    let mut ep = open.take().expect("open episode");
                    ep.e = g;
                    list.push(ep);
                }
                (None, false) => {}
            }
        }
        g += step;
    }
    for (open, list) in [(open_dual, &mut dual), (open_none, &mut none)] {
        if let Some(mut ep) = open {
            ep.e = end;
            list.push(ep);
        }
    }
    (dual, none, changes)
}

/// The client's longest outage for probes sent within `[from, to]` (soak
/// seconds) and when it began (the test bed's one computation).
pub fn longest_gap_in(replies: &Record, w0: f64, from: f64, to: f64) -> (f64, f64) {
    let o = replies.outage(w0 + from, w0 + to);
    (o.outage.as_secs_f64(), o.at.map_or(from, |t| t - w0))
}

/// Copy the daemons' logs and the ARP captures to `dir` (the lab's own

#[derive(Default, Debug, Clone, Copy)]
pub struct KindFigures {
    pub count: usize,
    pub failover_max: f64,
    pub dual_max: f64,
    pub dual_after_heal_max: f64,
    pub ping_gap_max: f64,
}

/// Everything recorded during one soak; times in seconds since its start.
pub struct Input<'a> {
    pub samples: &'a [Vec<Sample>; 3],
    pub faults: &'a [Fault],
    /// End of the recording.
    pub end: f64,
    /// The client's pings, and the epoch time of the soak's start.
    pub replies: &'a Record,
    pub w0: f64,
    /// Gratuitous ARPs at the switch (time, ingress node) and at the client.
    pub sw_garps: &'a [(f64, usize)],
    pub client_garps: &'a [f64],
}

/// The verdict and the figures.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Failed criteria 1-3.
    pub failures: Vec<String>,
    /// Failed criterion 5 (fails the test unless lenient).
    pub known: Vec<String>,
    /// One line per fault.
    pub report: String,
    pub changes: MasterChanges,
    pub per_kind: BTreeMap<Kind, KindFigures>,
    pub heals_checked: usize,
    pub bound: f64,
    pub none_max: f64,
    pub dual_max: f64,
    pub dual_after_max: f64,
    pub vip_bad_max: f64,
    pub dead_vip: [f64; 3],
    pub failed_polls: usize,
    /// Unanswered polls carried over by [`fill_blind`].
    pub blind_polls: usize,
    pub gap_all: f64,
    pub gap_all_at: f64,
}

/// Judge one recording.
pub fn analyse(input: &Input) -> Analysis {
    let Input {
        samples,
        faults,
        end,
        replies,
        w0,
        sw_garps,
        client_garps,
    } = *input;
    let (filled, blind_polls) = fill_blind(samples, faults);
    let samples = &filled;
    let mut failures: Vec<String> = Vec::new();
    let (dual, none, changes) = episodes(samples, end);
    let bound = protocol_bound();
    let mut known: Vec<String> = Vec::new();
    let mut report = String::new();
    let fault_at = |t: f64| {
        faults
            .iter()
            .find(|f| t >= f.start - 0.1 && t <= f.until() + 0.1)
    };

    // Criterion 1.
    let mut dual_max = 0.0f64;
    let mut dual_after_max = 0.0f64;
    for ep in &dual {
        let len = ep.e - ep.s;
        dual_max = dual_max.max(len);
        // Allowed while a fault that overlaps the episode is in place; the
        // bound runs from the last such fault's end (its heal).
        let f = faults
            .iter()
            .filter(|f| f.start <= ep.e && f.end >= ep.s)
            .max_by(|x, y| x.end.total_cmp(&y.end))
            .or_else(|| fault_at(ep.s));
        let anchor = f.map_or(ep.s, |f| f.end.max(ep.s));
        let after = (ep.e - anchor).max(0.0);
        dual_after_max = dual_after_max.max(after);
        if after > bound {
            failures.push(format!(
                "criterion 1: MASTERs {} from t={:.2}s to {:.2}s, {after:.2}s after {} (bound {bound:.2}s)",
                node_list(&ep.masters),
                ep.s,
                ep.e,
                f.map_or("they appeared".to_owned(), |f| format!("{} {} was undone", f.kind.name(), f.what))
            ));
        }
    }
    // Criterion 2.
    let mut none_max = 0.0f64;
    for ep in &none {
        let len = ep.e - ep.s;
        none_max = none_max.max(len);
        if len > bound {
            failures.push(format!(
                "criterion 2: no MASTER from t={:.2}s to {:.2}s ({len:.2}s, bound {bound:.2}s){}",
                ep.s,
                ep.e,
                fault_at(ep.s).map_or(String::new(), |f| format!(
                    " during {} {}",
                    f.kind.name(),
                    f.what
                ))
            ));
        }
    }
    // Criterion 3.
    let mut dead_vip = [0.0f64; 3];
    let mut vip_bad_max = 0.0f64;
    for (i, ss) in samples.iter().enumerate() {
        let mut open: Option<(f64, String)> = None;
        for (k, s) in ss.iter().enumerate() {
            if s.life == Life::Dead && s.vip == Some(true) {
                let next = ss.get(k + 1).map_or(s.t, |n| n.t);
                dead_vip[i] += next - s.t;
            }
            let bad = s.life == Life::Running
                && s.vip == Some(true)
                && s.state.as_deref().is_some_and(|st| st != "MASTER");
            match (&open, bad) {
                (None, true) => open = Some((s.t, s.state.clone().unwrap_or_default())),
                (Some((from, st)), false) => {
                    let len = s.t - from;
                    vip_bad_max = vip_bad_max.max(len);
                    if len > VIP_SLACK {
                        failures.push(format!(
                            "criterion 3: {} held {VIP} while {st} from t={from:.2}s for {len:.2}s{}",
                            NAMES[i],
                            fault_at(*from).map_or(String::new(), |f| format!(" ({} {})", f.kind.name(), f.what))
                        ));
                    }
                    open = None;
                }
                _ => {}
            }
        }
    }
    let failed_polls: usize = samples
        .iter()
        .map(|ss| {
            ss.iter()
                .filter(|s| s.life == Life::Running && s.state.is_none())
                .count()
        })
        .sum();

    // Criterion 5.
    let mut heals_checked = 0;
    let mut per_kind: BTreeMap<Kind, KindFigures> = BTreeMap::new();
    for (n, f) in faults.iter().enumerate() {
        let until = f.until();
        let next_start = faults.get(n + 1).map_or(end, |g| g.start);
        let failover = none
            .iter()
            .filter(|ep| ep.s >= f.start - 0.1 && ep.s <= until)
            .map(|ep| ep.e - ep.s)
            .fold(0.0, f64::max);
        let duals: Vec<&Episode> = dual
            .iter()
            .filter(|ep| ep.e > f.start && ep.s <= until)
            .collect();
        let dual_len = duals.iter().map(|ep| ep.e - ep.s).fold(0.0, f64::max);
        let dual_after = duals
            .iter()
            .map(|ep| (ep.e - ep.s.max(f.end)).max(0.0))
            .fold(0.0, f64::max);
        let (gap, gap_at) = longest_gap_in(replies, w0, f.start, next_start);
        let k = per_kind.entry(f.kind).or_default();
        k.count += 1;
        k.failover_max = k.failover_max.max(failover);
        k.dual_max = k.dual_max.max(dual_len);
        k.dual_after_heal_max = k.dual_after_heal_max.max(dual_after);
        k.ping_gap_max = k.ping_gap_max.max(gap);
        let mut garp_note = "no dual MASTER: no re-announcement needed".to_owned();
        if let (Some(last_dual), Some(settled)) = (duals.last(), f.settled) {
            heals_checked += 1;
            // The dual MASTER is seen by polling (50 ms, and a stopped daemon's
            // status only after it resumes), and `f.end` is taken after the heal
            // command returned, so both lag the real events by up to HEAL_SLACK.
            let heal = match f.kind {
                Kind::Partition | Kind::Isolate | Kind::Stop => f.end.max(last_dual.s),
                _ => last_dual.s,
            } - HEAL_SLACK;
            // Up to 1 s after settling, but never into the next fault, whose
            // own takeovers announce too (a demote or a macvlan deletion of a
            // right after the settle makes b and c announce at once).
            let window_end = (settled + 1.0).min(next_start);
            let window: Vec<&(f64, usize)> = sw_garps
                .iter()
                .filter(|(t, _)| *t >= last_dual.s - HEAL_SLACK && *t <= window_end)
                .collect();
            let winner_after: Vec<f64> = sw_garps
                .iter()
                .filter(|(t, h)| *h == 0 && *t >= heal && *t <= window_end)
                .map(|(t, _)| *t)
                .collect();
            // The winner announced last since the dual MASTER began, and the
            // client heard one of its announcements from then on.
            let ok = match window.last() {
                Some(&&(_, h)) => {
                    h == 0
                        && window.iter().any(|&&(t, h)| {
                            h == 0 && client_garps.iter().any(|c| (c - t).abs() < 0.2)
                        })
                }
                None => false,
            };
            let last_desc = window.last().map_or_else(
                || {
                    let before = sw_garps.iter().rfind(|(t, _)| *t < last_dual.s);
                    before.map_or("no GARP at all".to_owned(), |(t, h)| {
                        format!("the last GARP before was {}'s at t={t:.2}s", NAMES[*h])
                    })
                },
                |(t, h)| format!("the last GARP was {}'s at t={t:.2}s", NAMES[*h]),
            );
            let (after_gap, after_at) = longest_gap_in(replies, w0, heal, next_start);
            let seen: Vec<String> = sw_garps
                .iter()
                .filter(|(t, _)| *t >= last_dual.s - 0.05 && *t <= window_end)
                .map(|(t, h)| format!("{}@{t:.2}", NAMES[*h]))
                .collect();
            garp_note = if ok {
                format!("winner a re-announced (GARPs [{}])", seen.join(" "))
            } else {
                let msg = format!(
                    "criterion 5: after {} {} (dual MASTER {} from t={:.2}s, heal at t={heal:.2}s, settled t={settled:.2}s) the surviving MASTER a sent no gratuitous ARP after the heal ({} from a since); {}; GARPs at the switch in the window: [{}]; client's longest outage from the heal to the next fault (t={next_start:.2}s): {after_gap:.2}s from t={after_at:.2}s",
                    f.kind.name(),
                    f.what,
                    node_list(&last_dual.masters),
                    last_dual.s,
                    winner_after.len(),
                    last_desc,
                    seen.join(" ")
                );
                known.push(msg);
                "winner did NOT re-announce".to_owned()
            };
        }
        let _ = writeln!(
            report,
            "  t={:7.2}s {:9} {:40} held {:5.2}s  no-master {:5.2}s  dual {:5.2}s (after heal {:5.2}s)  ping gap {:5.2}s at t={:.2}s  {garp_note}",
            f.start,
            f.kind.name(),
            f.what,
            f.end - f.start,
            failover,
            dual_len,
            dual_after,
            gap,
            gap_at,
        );
    }
    let (gap_all, gap_all_at) = longest_gap_in(replies, w0, 0.0, end);
    Analysis {
        failures,
        known,
        report,
        changes,
        per_kind,
        heals_checked,
        bound,
        none_max,
        dual_max,
        dual_after_max,
        vip_bad_max,
        dead_vip,
        failed_polls,
        blind_polls,
        gap_all,
        gap_all_at,
    }
}

#[cfg(test)]
mod tests {
    //! Synthetic recordings: each node's samples every 50 ms from segments
    //! of (from, to, life, state, holds the VIP).

    use super::*;

    type Segment = (f64, f64, Life, Option<&'static str>, bool);

    fn track(segments: &[Segment]) -> Vec<Sample> {
        let mut out = Vec::new();
        for &(from, to, life, state, vip) in segments {
            let mut t = from;
            while t < to - 1e-9 {
                out.push(Sample {
                    t,
                    life,
                    state: state.map(str::to_owned),
                    vip: Some(vip),
                });
                t += SAMPLE.as_secs_f64();
            }
        }
        out
    }

    const M: Option<&str> = Some("MASTER");
    const B: Option<&str> = Some("BACKUP");
    const R: Life = Life::Running;

    fn fault(kind: Kind, start: f64, end: f64, settled: f64) -> Fault {
        Fault {
            kind,
            what: "a".to_owned(),
            start,
            end,
            settled: Some(settled),
            blind: None,
        }
    }

    fn judge(
        samples: &[Vec<Sample>; 3],
        faults: &[Fault],
        end: f64,
        garps: &[(f64, usize)],
        client: &[f64],
    ) -> Analysis {
        let replies = Record::default();
        analyse(&Input {
            samples,
            faults,
            end,
            replies: &replies,
            w0: 0.0,
            sw_garps: garps,
            client_garps: client,
        })
    }

    fn failed(a: &Analysis, criterion: &str) -> bool {
        a.failures.iter().any(|f| f.starts_with(criterion))
    }

    #[test]
    fn failed_poll_carries_the_state_for_one_second() {
        let s = track(&[(0.0, 1.0, R, M, true), (1.0, 3.0, R, None, true)]);
        assert_eq!(state_at(&s, 1.5), Some("MASTER"));
        assert_eq!(state_at(&s, 2.5), None);
        let dead = track(&[(0.0, 1.0, R, M, true), (1.0, 2.0, Life::Dead, None, true)]);
        assert_eq!(state_at(&dead, 1.2), None);
    }

    #[test]
    fn crash_failover_within_bound_passes() {
        // a dies at 5 s, b MASTER from 9 s (4 s without MASTER < 6.56 s).
        let samples = [
            track(&[(0.0, 5.0, R, M, true), (5.0, 12.0, Life::Dead, None, true)]),
            track(&[(0.0, 9.0, R, B, false), (9.0, 12.0, R, M, true)]),
            track(&[(0.0, 12.0, R, B, false)]),
        ];
        let faults = [fault(Kind::Kill9, 5.0, 7.0, 11.0)];
        let a = judge(&samples, &faults, 12.0, &[], &[]);
        assert!(a.failures.is_empty(), "{:?}", a.failures);
        assert!((a.none_max - 4.0).abs() < 0.06, "{}", a.none_max);
        assert_eq!(a.dual_max, 0.0);
        // The dead a still holding its VIP is counted, not failed.
        assert!((a.dead_vip[0] - 7.0).abs() < 0.06, "{:?}", a.dead_vip);
        assert_eq!(a.changes.len(), 3, "{:?}", a.changes); // a, -, b
    }

    #[test]
    fn no_master_longer_than_bound_fails_criterion_2() {
        let samples = [
            track(&[(0.0, 2.0, R, M, true), (2.0, 12.0, R, B, false)]),
            track(&[(0.0, 12.0, R, B, false)]),
            track(&[(0.0, 12.0, R, B, false)]),
        ];
        let a = judge(&samples, &[], 12.0, &[], &[]);
        assert!(failed(&a, "criterion 2"), "{:?}", a.failures);
        assert!(!failed(&a, "criterion 1"));
    }

    #[test]
    fn dual_master_is_bounded_from_the_heal() {
        // Partition 10-12 s: a and b both MASTER from 10.5 s until `until`.
        let run = |until: f64| {
            let samples = [
                track(&[(0.0, 30.0, R, M, true)]),
                track(&[
                    (0.0, 10.5, R, B, false),
                    (10.5, until, R, M, true),
                    (until, 30.0, R, B, false),
                ]),
                track(&[(0.0, 30.0, R, B, false)]),
            ];
            let faults = [fault(Kind::Partition, 10.0, 12.0, until + 0.2)];
            // a re-announces after the heal and the client hears it.
            judge(
                &samples,
                &faults,
                30.0,
                &[(until - 0.1, 0)],
                &[until - 0.05],
            )
        };
        let short = run(15.0); // 3 s after the heal
        assert!(short.failures.is_empty(), "{:?}", short.failures);
        assert!(
            (short.dual_after_max - 3.0).abs() < 0.06,
            "{}",
            short.dual_after_max
        );
        assert!(short.known.is_empty(), "{:?}", short.known);
        let long = run(25.0); // 13 s after the heal
        assert!(failed(&long, "criterion 1"), "{:?}", long.failures);
    }

    #[test]
    fn vip_on_a_backup_fails_criterion_3_only_past_the_slack() {
        let run = |hold: f64| {
            let samples = [
                track(&[(0.0, 10.0, R, M, true)]),
                track(&[
                    (0.0, 5.0, R, B, false),
                    (5.0, 5.0 + hold, R, B, true),
                    (5.0 + hold, 10.0, R, B, false),
                ]),
                track(&[(0.0, 10.0, R, B, false)]),
            ];
            judge(&samples, &[], 10.0, &[], &[])
        };
        let brief = run(0.2);
        assert!(brief.failures.is_empty(), "{:?}", brief.failures);
        let long = run(1.0);
        assert!(failed(&long, "criterion 3"), "{:?}", long.failures);
        assert!(
            (long.vip_bad_max - 1.0).abs() < 0.06,
            "{}",
            long.vip_bad_max
        );
    }

    #[test]
    fn winner_must_announce_last_after_a_dual_master() {
        let samples = [
            track(&[(0.0, 20.0, R, M, true)]),
            track(&[
                (0.0, 10.5, R, B, false),
                (10.5, 13.0, R, M, true),
                (13.0, 20.0, R, B, false),
            ]),
            track(&[(0.0, 20.0, R, B, false)]),
        ];
        let faults = [fault(Kind::Isolate, 10.0, 12.0, 13.5)];
        // b announced last: the switch keeps sending the VIP's MAC to b.
        let a = judge(
            &samples,
            &faults,
            20.0,
            &[(12.5, 0), (12.8, 1)],
            &[12.5, 12.8],
        );
        assert_eq!(a.known.len(), 1, "{:?}", a.known);
        assert!(a.known[0].starts_with("criterion 5"), "{:?}", a.known);
        assert_eq!(a.heals_checked, 1);
        // a announced last and the client heard it: passes.
        let a = judge(&samples, &faults, 20.0, &[(12.5, 1), (12.8, 0)], &[12.8]);
        assert!(a.known.is_empty(), "{:?}", a.known);
        // a announced last but the client never heard it: fails.
        let a = judge(&samples, &faults, 20.0, &[(12.5, 1), (12.8, 0)], &[12.5]);
        assert_eq!(a.known.len(), 1, "{:?}", a.known);
    }

    #[test]
    fn polls_blinded_by_an_exhaust_fault_carry_the_last_answer() {
        // a's control socket is full from 5 s to 9 s: its polls fail from
        // 5 s to 9.2 s. Without the rule that is a 4 s gap with no MASTER.
        let samples = [
            track(&[
                (0.0, 5.0, R, M, true),
                (5.0, 9.2, R, None, true),
                (9.2, 20.0, R, M, true),
            ]),
            track(&[(0.0, 20.0, R, B, false)]),
            track(&[(0.0, 20.0, R, B, false)]),
        ];
        let mut f = fault(Kind::Exhaust, 5.0, 9.0, 9.5);
        let plain = judge(&samples, &[f.clone()], 20.0, &[], &[]);
        assert!(plain.none_max > 3.0, "{}", plain.none_max);
        assert_eq!(plain.blind_polls, 0);
        f.blind = Some(0);
        let a = judge(&samples, &[f.clone()], 20.0, &[], &[]);
        assert!(a.failures.is_empty(), "{:?}", a.failures);
        assert_eq!(a.none_max, 0.0);
        assert_eq!(a.failed_polls, 0);
        assert_eq!(a.blind_polls, 84);
        // Only inside the window (its end + 0.5 s), and only for that node.
        let (filled, n) = fill_blind(&samples, &[fault(Kind::Exhaust, 5.0, 6.0, 6.5)]);
        assert_eq!(n, 0);
        assert!(filled[0][110].state.is_none());
        let (filled, n) = fill_blind(
            &samples,
            &[Fault {
                blind: Some(0),
                ..fault(Kind::Exhaust, 5.0, 6.0, 6.5)
            }],
        );
        assert_eq!(n, 31, "5.0..=6.5 s");
        assert_eq!(filled[0][110].state.as_deref(), Some("MASTER"));
        assert!(filled[0][140].state.is_none());
        assert!(
            filled[1]
                .iter()
                .all(|s| s.state.as_deref() == Some("BACKUP"))
        );
    }

    #[test]
    fn announcements_of_the_next_fault_are_not_the_heals() {
        // Partition 10-12 s healed (a re-announced at 12.6 s, settled 12.8 s);
        // the next fault at 13.3 s (a's macvlan deleted) makes b announce
        // at 13.35 s, within 1 s of the settle but not about the heal.
        let samples = [
            track(&[(0.0, 13.3, R, M, true), (13.3, 20.0, R, B, false)]),
            track(&[
                (0.0, 10.5, R, B, false),
                (10.5, 12.5, R, M, true),
                (12.5, 13.3, R, B, false),
                (13.3, 20.0, R, M, true),
            ]),
            track(&[(0.0, 20.0, R, B, false)]),
        ];
        let faults = [
            fault(Kind::Partition, 10.0, 12.0, 12.8),
            fault(Kind::Macvlan, 13.3, 15.0, 19.0),
        ];
        let a = judge(
            &samples,
            &faults,
            20.0,
            &[(12.6, 0), (13.35, 1)],
            &[12.6, 13.35],
        );
        assert!(a.known.is_empty(), "{:?}", a.known);
        assert_eq!(a.heals_checked, 1);
    }
}
