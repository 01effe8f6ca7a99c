//! Scenario tests of the CARP core on the simulated LAN (STYLE 6.7 items 5-6,
//! spec sections 4, 5 and 11).
//!
//! Every test runs with all invariants of `carp_sim::Checks` enforced after
//! every step unless it says otherwise, and compares its trace with
//! `tests/golden/<name>.trace` (`UPDATE_GOLDEN=1 cargo test -p carp-sim` rewrites
//! them; review the diff as the behavioural change).
//!
//! Node N has source address 192.0.2.N; vhid V has VIP 198.51.100.V; advbase
//! is 1 s unless said; latency is 100 µs..2 ms.

use core::time::Duration;
use std::path::PathBuf;

use carp_proto::{Cause, Family, Instant, LinkId, State, Vhid, VhostId};
use carp_sim::{
    Checks, Event, NodeSpec, Sim, SimConfig, Violation, master_down_interval, vhost, vhost46,
};

// ===== helpers =====

/// `secs` seconds of virtual time.
fn t(secs: f64) -> Instant {
    Instant::from_micros((secs * 1e6).round() as u64)
}

fn id(vhid: u8, link: u32) -> VhostId {
    VhostId {
        link: LinkId(link),
        vhid: Vhid::new(vhid).unwrap(),
    }
}

fn node(preempt: bool, vhid: u8, advbase: u8, advskew: u8) -> NodeSpec {
    NodeSpec::new(preempt).with_vhost(vhost(vhid, advbase, advskew))
}

/// Compare `trace` with the golden file, or rewrite it under `UPDATE_GOLDEN=1`.
fn golden(name: &str, trace: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{name}.trace"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, trace).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run UPDATE_GOLDEN=1 cargo test -p carp-sim",
            path.display()
        )
    });
    if want != trace {
        let line = want
            .lines()
            .zip(trace.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(trace.lines().count()));
        panic!(
            "trace differs from {} at line {}\n--- golden\n{want}--- got\n{trace}",
            path.display(),
            line + 1
        );
    }
}

/// Return how long after `at` the first MASTER of `id` appeared.
fn takeover_after(sim: &Sim, at: Instant, id: VhostId) -> (usize, Duration) {
    let tr = sim
        .first_master_after(at, id)
        .unwrap_or_else(|| panic!("nobody became MASTER after {at}\n{}", sim.trace()));
    (tr.node, tr.at - at)
}

/// The bound of invariant (b): master-down of the fastest backup + one
/// advertisement interval + the largest latency.
fn failover_bound(sim: &Sim, backup_advskew: u8, advbase: u8) -> Duration {
    let cfg = vhost(1, advbase, backup_advskew);
    master_down_interval(&cfg)
        + carp_proto::config::interval(cfg.advbase, cfg.advskew)
        + sim.max_latency()
}

// ===== cold start =====

/// Input: n1 advskew 0, n2 advskew 100, both boot at t=0, no preempt.
/// Output: both BACKUP at once; n1 MASTER at exactly 3 s (its master-down
/// interval 3 x 1 s, OpenBSD regress "sleep 3.1"); n2 stays BACKUP because
/// n1's first advertisement arrives before its own 4.17 s timer.
#[test]
fn cold_start_two_nodes() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(1));
    sim.add_node(node(false, 1, 1, 0));
    sim.add_node(node(false, 1, 1, 100));
    sim.run_until(t(3.1))?;
    assert_eq!(sim.state(1, 1), Some(State::Master));
    assert_eq!(sim.state(2, 1), Some(State::Backup));
    let (who, after) = takeover_after(&sim, t(0.0), id(1, 1));
    assert_eq!((who, after), (1, Duration::from_secs(3)));
    sim.run_until(t(20.0))?;
    assert_eq!(sim.masters(1), vec![1]);
    assert!(sim.holds_vip(1, id(1, 1)) && !sim.holds_vip(2, id(1, 1)));
    golden("cold_start_two_nodes", sim.trace());
    Ok(())
}

/// Input: n1/n2/n3 with advskew 0/50/100 boot at t=0.
/// Output: n1 MASTER at 3 s; n2 (3.59 s timer) and n3 (4.17 s) stay BACKUP.
#[test]
fn cold_start_three_nodes() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(2));
    for skew in [0, 50, 100] {
        sim.add_node(node(false, 1, 1, skew));
    }
    sim.run_until(t(20.0))?;
    assert_eq!(sim.masters(1), vec![1]);
    assert_eq!(
        sim.transitions().len(),
        4,
        "3 x INIT->BACKUP + 1 x BACKUP->MASTER"
    );
    golden("cold_start_three_nodes", sim.trace());
    Ok(())
}

/// Input: n1 and n2 both advskew 0, both boot at t=0 (the worst case: their
/// master-down timers expire at the same microsecond).
/// Output: one round of "both MASTER": the first equal advert heard makes the
/// higher address (n2) step down and the lower (n1) stay (carpd's tie-break;
/// the kernels step both down and race again every 3 s until latency jitter
/// separates the timers). Then exactly one MASTER forever. Invariants (a) and
/// (c) are off until convergence, because the round is a legitimate
/// dual-MASTER instant; (b) and (d) stay on.
#[test]
fn equal_advskew_cold_start_converges() -> Result<(), Violation> {
    let relaxed = Checks {
        single_master: false,
        no_flapping: false,
        ..Checks::default()
    };
    let mut sim = Sim::new(SimConfig {
        checks: relaxed,
        ..SimConfig::seeded(3)
    });
    sim.add_node(node(false, 1, 1, 0));
    sim.add_node(node(false, 1, 1, 0));
    sim.run_until(t(60.0))?;
    let last = sim.transitions().last().unwrap().at;
    assert!(last < t(50.0), "still racing at {last}\n{}", sim.trace());
    assert_eq!(sim.masters(1).len(), 1);
    let rounds = sim
        .transitions()
        .iter()
        .filter(|tr| tr.cause == Cause::Superseded)
        .count()
        / 2;
    println!("equal advskew: converged at {last} after {rounds} dual-master rounds");
    // From here on a quiet network must not change at all.
    sim.set_checks(Checks::default());
    sim.run_until(t(300.0))?;
    assert_eq!(sim.transitions().last().unwrap().at, last);
    golden("equal_advskew_cold_start", sim.trace());
    Ok(())
}

// ===== failover =====

/// Input: n1/n2/n3 advskew 0/50/100; n1 (MASTER) crashes at 10 s.
/// Output: n2, the fastest backup, becomes MASTER 3.59 s after n1's last
/// advertisement (spec 4.3: 3 x (1 + 50/256) s), well within the bound of
/// master-down + one interval + max latency; n3 stays BACKUP.
#[test]
fn master_crash_backup_takes_over() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(4));
    for skew in [0, 50, 100] {
        sim.add_node(node(false, 1, 1, skew));
    }
    sim.run_until(t(10.0))?;
    sim.crash_node(1);
    sim.run_until(t(30.0))?;
    let (who, gap) = takeover_after(&sim, t(10.0), id(1, 1));
    println!("master crash: n{who} MASTER after {gap:?}");
    assert_eq!(who, 2);
    assert!(gap <= failover_bound(&sim, 50, 1), "{gap:?}");
    assert_eq!(sim.masters(1), vec![2]);
    golden("master_crash", sim.trace());
    Ok(())
}

/// Input: n1 advskew 0 (MASTER) shuts down gracefully at 10 s; n2 advskew 100.
/// Output: n1 sends the bow-out advert (advbase=advskew=255) before going to
/// INIT; n2 takes over on receipt ("master bowed out", spec 5.4) within one
/// delivery latency, instead of 4.17 s.
#[test]
fn bow_out_on_graceful_shutdown() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(5));
    sim.add_node(node(false, 1, 1, 0));
    sim.add_node(node(false, 1, 1, 100));
    sim.run_until(t(10.0))?;
    sim.shutdown_node(1);
    sim.run_until(t(20.0))?;
    let tr = sim.first_master_after(t(10.0), id(1, 1)).unwrap();
    println!("bow-out: n{} MASTER after {:?}", tr.node, tr.at - t(10.0));
    assert_eq!((tr.node, tr.cause), (2, Cause::BowOut));
    assert!(tr.at - t(10.0) <= sim.max_latency());
    golden("bow_out", sim.trace());
    Ok(())
}

/// Input: n1 advskew 0 with preempt, n2 advskew 100; n1's link goes down at 10 s
/// and up at 20 s.
/// Output: n1 goes MASTER->INIT at once (no bow-out: the link is gone), n2
/// takes over by timeout 4.17 s after n1's last advertisement; on link up n1
/// goes INIT->BACKUP and preempts at n2's next advertisement (< 1.4 s).
#[test]
fn link_down_on_master() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(6));
    sim.add_node(node(true, 1, 1, 0));
    sim.add_node(node(false, 1, 1, 100));
    sim.run_until(t(10.0))?;
    sim.set_link(1, LinkId(1), false);
    assert_eq!(sim.state(1, 1), Some(State::Init));
    sim.run_until(t(20.0))?;
    let (who, gap) = takeover_after(&sim, t(10.0), id(1, 1));
    println!("link down: n{who} MASTER after {gap:?}");
    assert_eq!(who, 2);
    assert!(gap <= failover_bound(&sim, 100, 1));
    sim.set_link(1, LinkId(1), true);
    sim.run_until(t(30.0))?;
    let back = sim.first_master_after(t(20.0), id(1, 1)).unwrap();
    println!("link up: n1 MASTER again after {:?}", back.at - t(20.0));
    assert_eq!((back.node, back.cause), (1, Cause::Preempted));
    assert_eq!(sim.masters(1), vec![1]);
    golden("link_down_on_master", sim.trace());
    Ok(())
}

/// Input: n1/n2/n3 advskew 0/50/100, no preempt; at 10 s n1 is cut off from
/// {n2, n3}; healed at 30 s.
/// Output: during the partition n1 stays MASTER and n2 becomes MASTER of the
/// other side (two MASTERs, each alone in its component); after the heal n2
/// hears n1's faster advertisement and steps down (spec 5.3: "ours >= theirs"),
/// n1 ignores n2's slower one: exactly one MASTER, no further changes.
#[test]
fn partition_and_heal() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(7));
    for skew in [0, 50, 100] {
        sim.add_node(node(false, 1, 1, skew));
    }
    sim.run_until(t(10.0))?;
    sim.partition(&[&[1], &[2, 3]]);
    sim.run_until(t(30.0))?;
    assert_eq!(sim.masters(1), vec![1, 2]);
    sim.heal();
    sim.run_until(t(90.0))?;
    assert_eq!(sim.masters(1), vec![1]);
    let after_heal: Vec<_> = sim
        .transitions()
        .iter()
        .filter(|tr| tr.at >= t(30.0))
        .collect();
    assert_eq!(after_heal.len(), 1, "only n2 steps down");
    println!(
        "heal: n2 stepped down {:?} after the heal",
        after_heal[0].at - t(30.0)
    );
    golden("partition_and_heal", sim.trace());
    Ok(())
}

// ===== demotion =====

/// Input (OpenBSD regress carp_1): n1 advskew 0, n2 advskew 100, both preempt;
/// at 5 s `ifconfig -g carp carpdemote` on n1; at 10 s `-carpdemote`.
/// Output: at 3.1 s n1 MASTER, n2 BACKUP; on demotion n1 advertises demote 1
/// at once, n2 takes over ("master is more demoted") and n1 steps down ("less
/// demoted master present") within 100 ms; after the undemotion n1 preempts
/// back at n2's next advertisement.
#[test]
fn demotion_failover() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(8));
    sim.add_node(node(true, 1, 1, 0));
    sim.add_node(node(true, 1, 1, 100));
    sim.run_until(t(3.1))?;
    assert_eq!(sim.state(1, 1), Some(State::Master));
    assert_eq!(sim.state(2, 1), Some(State::Backup));
    sim.run_until(t(5.0))?;
    sim.demote(1, "carp", 1);
    sim.run_until(t(5.1))?;
    assert_eq!(sim.state(1, 1), Some(State::Backup));
    assert_eq!(sim.state(2, 1), Some(State::Master));
    let tr = sim.first_master_after(t(5.0), id(1, 1)).unwrap();
    println!("demotion: n2 MASTER after {:?}", tr.at - t(5.0));
    assert_eq!((tr.node, tr.cause), (2, Cause::HigherDemote));
    sim.run_until(t(10.0))?;
    sim.demote(1, "carp", -1);
    sim.run_until(t(20.0))?;
    let back = sim.first_master_after(t(10.0), id(1, 1)).unwrap();
    println!("undemotion: n1 MASTER again after {:?}", back.at - t(10.0));
    assert_eq!((back.node, back.cause), (1, Cause::Preempted));
    assert_eq!(sim.masters(1), vec![1]);
    golden("demotion_failover", sim.trace());
    Ok(())
}

/// Input: n1 has vhid 1 on link 1 and vhid 2 on link 2, advskew 0; n2 has the
/// same vhids with advskew 100; both preempt. n1's link 1 goes down at 10 s,
/// up at 20 s.
/// Output: vhid 1 on n1 goes INIT; the "carpdev" demotion (+1 in group carp,
/// +240 advskew) makes n1's vhid 2 advertise at once, so n2 takes vhid 2 within
/// one delivery and vhid 1 by timeout (4.17 s). The cause on n2 is "preempting
/// a slower master" (advskew 100 < 240), which OpenBSD checks before "master is
/// more demoted" (demote 0 < 1); without preempt the demote byte alone would
/// do it. On link up the demotion is undone and n1 preempts both vhids back.
#[test]
fn group_failover_on_link_down() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(9));
    for skew in [0, 100] {
        sim.add_node(
            NodeSpec::new(true)
                .with_vhost_on(LinkId(1), vhost(1, 1, skew))
                .with_vhost_on(LinkId(2), vhost(2, 1, skew)),
        );
    }
    let (v1, v2) = (id(1, 1), id(2, 2));
    sim.run_until(t(10.0))?;
    assert_eq!((sim.masters_of(v1), sim.masters_of(v2)), (vec![1], vec![1]));
    sim.set_link(1, LinkId(1), false);
    sim.run_until(t(20.0))?;
    assert_eq!((sim.masters_of(v1), sim.masters_of(v2)), (vec![2], vec![2]));
    let (_, gap1) = takeover_after(&sim, t(10.0), v1);
    let tr2 = sim.first_master_after(t(10.0), v2).unwrap();
    println!(
        "group failover: vhid 1 after {gap1:?}, vhid 2 after {:?}",
        tr2.at - t(10.0)
    );
    assert_eq!(tr2.cause, Cause::Preempted);
    assert!(tr2.at - t(10.0) <= sim.max_latency());
    sim.set_link(1, LinkId(1), true);
    sim.run_until(t(30.0))?;
    assert_eq!((sim.masters_of(v1), sim.masters_of(v2)), (vec![1], vec![1]));
    golden("group_failover", sim.trace());
    Ok(())
}

// ===== preempt =====

/// Input: n2 advskew 100 boots alone at 0 s; n1 advskew 0 joins at 10 s,
/// run once with preempt off and once with preempt on.
/// Output: off: n1 stays BACKUP (a better host joining later does not take
/// over, spec 5.3); on: n1 takes over at n2's first advertisement after it
/// joined ("preempting a slower master") and n2 steps down.
#[test]
fn preempt_on_vs_off() -> Result<(), Violation> {
    for preempt in [false, true] {
        let mut sim = Sim::new(SimConfig::seeded(10));
        sim.add_node(node(false, 1, 1, 100));
        sim.run_until(t(10.0))?;
        assert_eq!(sim.masters(1), vec![1]);
        sim.add_node(node(preempt, 1, 1, 0));
        sim.run_until(t(30.0))?;
        if preempt {
            let tr = sim.first_master_after(t(10.0), id(1, 1)).unwrap();
            println!("preempt on: n2 MASTER {:?} after joining", tr.at - t(10.0));
            assert_eq!((tr.node, tr.cause), (2, Cause::Preempted));
            assert_eq!(sim.masters(1), vec![2]);
            golden("preempt_on", sim.trace());
        } else {
            assert_eq!(sim.masters(1), vec![1]);
            golden("preempt_off", sim.trace());
        }
    }
    Ok(())
}

// ===== advbase 0 =====

/// Input: advbase 0 on n1/n2/n3 with advskew 0/2/4 (intervals 3.9, 7.8 and
/// 15.6 ms; master-down 11.7, 23.4 and 46.9 ms); n1 crashes at 1 s, n2 at 2 s.
/// Output: sub-second failover: n2 takes over < 50 ms after n1's crash, and n3
/// < 50 ms after n2's.
#[test]
fn advbase_zero_fast_failover() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(11));
    for skew in [0, 2, 4] {
        sim.add_node(node(false, 1, 0, skew));
    }
    sim.run_until(t(1.0))?;
    assert_eq!(sim.masters(1), vec![1]);
    sim.crash_node(1);
    sim.run_until(t(2.0))?;
    sim.crash_node(2);
    sim.run_until(t(3.0))?;
    let (a, gap_a) = takeover_after(&sim, t(1.0), id(1, 1));
    let (b, gap_b) = takeover_after(&sim, t(2.0), id(1, 1));
    println!("advbase 0: n{a} after {gap_a:?}, n{b} after {gap_b:?}");
    assert_eq!((a, b), (2, 3));
    assert!(gap_a < Duration::from_millis(50) && gap_b < Duration::from_millis(50));
    golden("advbase_zero", sim.trace());
    Ok(())
}

// ===== lossy network =====

/// Input: n1/n2/n3 advskew 0/50/100, all preempt; 10 % independent loss per
/// delivery and 5 % duplicates for 600 s, then a clean network for 60 s.
/// Output: n2 only takes over after missing 3 advertisements in a row (its
/// master-down is 3.59 s; p = 0.1^3 per advertisement), n3 after 4, so at 10 %
/// spurious takeovers are rare (none with this seed) and each would end at
/// n1's next advertisement that gets through. Invariants (a) and (c) apply
/// automatically only after a loss-free settle window; on top we check that at
/// most 2 spurious takeovers happen and each ends within 4 s. At the end
/// exactly n1 is MASTER.
#[test]
fn lossy_network_ten_percent() -> Result<(), Violation> {
    let (takeovers, longest) = lossy(0.10, 12, 600.0)?;
    assert!(takeovers <= 2, "{takeovers} spurious takeovers");
    assert!(longest <= Duration::from_secs(4), "{longest:?}");
    Ok(())
}

/// Input: as above with 30 % loss (p = 0.3^3 per advertisement: about one
/// spurious takeover a minute).
/// Output: the weaker invariant. Spurious takeovers happen (a third of them
/// by n3, which n2 then preempts before n1's next advertisement reaches it),
/// but each dual-MASTER episode ends within 6 s (it takes 6 losses in a row of
/// n1's advertisement to the impostor, p = 7e-4), the VIP always follows the
/// state, invariant (b) holds throughout, and the network converges to n1
/// alone once the loss stops.
#[test]
fn lossy_network_thirty_percent() -> Result<(), Violation> {
    let (takeovers, longest) = lossy(0.30, 13, 600.0)?;
    assert!(
        takeovers >= 1,
        "expected some spurious takeovers at 30 % loss"
    );
    assert!(longest <= Duration::from_secs(6), "{longest:?}");
    Ok(())
}

/// Run the lossy scenario; return (spurious takeovers, longest dual-master episode).
fn lossy(loss: f64, seed: u64, secs: f64) -> Result<(usize, Duration), Violation> {
    let mut sim = Sim::new(SimConfig {
        duplicate: 0.05,
        ..SimConfig::seeded(seed)
    });
    for skew in [0, 50, 100] {
        sim.add_node(node(true, 1, 1, skew));
    }
    sim.run_until(t(5.0))?;
    sim.set_loss(loss);
    sim.run_until(t(5.0 + secs))?;
    sim.set_loss(0.0);
    sim.run_until(t(65.0 + secs))?;
    assert_eq!(sim.masters(1), vec![1]);
    let tenures = sim.tenures();
    let spurious: Vec<_> = tenures.iter().filter(|te| te.node != 1).collect();
    let longest = spurious
        .iter()
        .map(|te| te.end.unwrap_or(sim.now()) - te.start)
        .max()
        .unwrap_or_default();
    let (sent, delivered, lost, dup, _) = sim.wire_counts();
    println!(
        "loss {:.0}%: {} spurious takeovers, longest dual master {longest:?}; {sent} sent, {delivered} delivered, {lost} lost, {dup} duplicated",
        loss * 100.0,
        spurious.len()
    );
    if loss <= 0.1 {
        golden("lossy_network_10", sim.trace());
    } else {
        golden("lossy_network_30", sim.trace());
    }
    Ok((spurious.len(), longest))
}

// ===== per-family timers =====

/// Input: n1 advskew 0 and n2 advskew 100, both with an IPv4 and an IPv6
/// virtual address (so each advertises on both families); from 10 s to 30 s
/// every IPv4 advertisement is dropped (a switch filtering IPv4 multicast).
/// Output (spec 4.3, OpenBSD `md_tmo`/`md6_tmo`): n2 keeps hearing n1 on IPv6,
/// but its IPv4 master-down timer is restarted only by IPv4 adverts, so it
/// expires and n2 becomes MASTER; n1's next IPv6 advertisement sends it back
/// to BACKUP, which re-arms both timers, and the cycle repeats every ~4.2 s
/// while IPv4 is broken. This is the kernels' behaviour, shown here so that
/// changing it is a visible decision. All invariants stay on: every dropped
/// advertisement counts as a disturbance, so (a) and (c) wait for a quiet
/// network; after the repair n1 alone is MASTER.
#[test]
fn ipv4_only_loss_makes_backup_flap() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(15));
    sim.add_node(NodeSpec::new(false).with_vhost(vhost46(1, 1, 0)));
    sim.add_node(NodeSpec::new(false).with_vhost(vhost46(1, 1, 100)));
    sim.run_until(t(10.0))?;
    sim.apply(Event::Block {
        family: Family::V4,
        blocked: true,
    });
    sim.run_until(t(30.0))?;
    sim.apply(Event::Block {
        family: Family::V4,
        blocked: false,
    });
    sim.run_until(t(60.0))?;
    let flaps: Vec<Instant> = sim
        .transitions()
        .iter()
        .filter(|tr| tr.node == 2 && tr.to == State::Master)
        .map(|tr| tr.at)
        .collect();
    println!("ipv4 blocked 10-30 s: n2 became MASTER at {flaps:?}");
    assert!(flaps.len() >= 4 && flaps.iter().all(|&at| at > t(10.0) && at < t(30.1)));
    assert_eq!(sim.masters(1), vec![1]);
    golden("ipv4_only_loss", sim.trace());
    Ok(())
}

// ===== send errors =====

/// Input: n1 advskew 0 and n2 advskew 100, both preempt; n1's transmits all
/// fail from 10 s to 20 s; n2 crashes at 30 s and restarts at 40 s.
/// Output: n1's third failed advertisement demotes it ("> snderrors", +1 in
/// group carp); n2 hears nothing and takes over by timeout (4.17 s after n1's
/// last delivered advert); n1 hears n2's demote 0 and steps down. After the
/// repair n1 stays BACKUP: its demotion is only undone by 3 successful sends
/// and a BACKUP sends nothing (as in OpenBSD `carp_send_ad`), so it cannot
/// preempt. When n2 dies n1 takes over by timeout, sends, and undemotes; the
/// restarted n2 then stays BACKUP.
#[test]
fn send_errors_demote_until_sending_again() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(16));
    sim.add_node(node(true, 1, 1, 0));
    sim.add_node(node(true, 1, 1, 100));
    sim.schedule(
        t(10.0),
        Event::SendFailure {
            node: 1,
            probability: 1.0,
        },
    );
    sim.schedule(
        t(20.0),
        Event::SendFailure {
            node: 1,
            probability: 0.0,
        },
    );
    sim.schedule(t(30.0), Event::Crash(2));
    sim.schedule(t(40.0), Event::Restart(2));
    sim.run_until(t(29.0))?;
    let (who, gap) = takeover_after(&sim, t(10.0), id(1, 1));
    println!("send errors: n{who} MASTER after {gap:?}");
    assert_eq!(who, 2);
    assert_eq!(sim.state(1, 1), Some(State::Backup));
    assert_eq!(sim.node(1).unwrap().groups()["carp"], 1, "still demoted");
    sim.run_until(t(60.0))?;
    assert_eq!(sim.masters(1), vec![1]);
    assert_eq!(
        sim.node(1).unwrap().groups()["carp"],
        0,
        "undemoted after sending"
    );
    golden("send_errors", sim.trace());
    Ok(())
}

// ===== several vhids =====

/// Input: n1 has vhid 1 advskew 0 and vhid 2 advskew 100; n2 the inverse; both
/// preempt. n1 crashes at 10 s and restarts at 20 s.
/// Output: load sharing: n1 MASTER of vhid 1, n2 of vhid 2; after the crash n2
/// holds both; after the restart n1 preempts vhid 1 back and vhid 2 stays on n2.
#[test]
fn multi_vhid_load_sharing() -> Result<(), Violation> {
    let mut sim = Sim::new(SimConfig::seeded(14));
    sim.add_node(
        NodeSpec::new(true)
            .with_vhost(vhost(1, 1, 0))
            .with_vhost(vhost(2, 1, 100)),
    );
    sim.add_node(
        NodeSpec::new(true)
            .with_vhost(vhost(1, 1, 100))
            .with_vhost(vhost(2, 1, 0)),
    );
    sim.run_until(t(10.0))?;
    assert_eq!((sim.masters(1), sim.masters(2)), (vec![1], vec![2]));
    sim.crash_node(1);
    sim.run_until(t(20.0))?;
    assert_eq!((sim.masters(1), sim.masters(2)), (vec![2], vec![2]));
    sim.restart_node(1);
    sim.run_until(t(30.0))?;
    assert_eq!((sim.masters(1), sim.masters(2)), (vec![1], vec![2]));
    golden("multi_vhid", sim.trace());
    Ok(())
}

// ===== determinism =====

/// Input: the lossy 3-node scenario run twice with seed 21, once with seed 22.
/// Output: byte-identical traces for the same seed; a different seed gives a
/// different trace (latencies show in the timestamps of advert-driven changes).
#[test]
fn same_seed_same_trace() -> Result<(), Violation> {
    let run = |seed: u64| -> Result<String, Violation> {
        let mut sim = Sim::new(SimConfig {
            loss: 0.2,
            duplicate: 0.1,
            ..SimConfig::seeded(seed)
        });
        for skew in [0, 50, 100] {
            sim.add_node(node(true, 1, 1, skew));
        }
        sim.run_until(t(10.0))?;
        sim.crash_node(1);
        sim.run_until(t(20.0))?;
        sim.restart_node(1);
        sim.run_until(t(120.0))?;
        Ok(sim.trace().to_string())
    };
    let a = run(21)?;
    assert_eq!(a, run(21)?);
    assert_ne!(a, run(22)?);
    Ok(())
}

// ===== carp interfaces with several nodes =====

/// The load-share mask of host `n`'s only carp interface.
fn mask(sim: &Sim, n: usize) -> u32 {
    sim.node(n).unwrap().interfaces()[0].mask
}

/// A carp interface `carpnodes 1:a,2:b` sharing 198.51.100.1 (OpenBSD `carpnodes`).
fn two_node_interface(advskew1: u8, advskew2: u8) -> carp_proto::CarpIfConfig {
    let mut c: carp_proto::CarpIfConfig = vhost(1, 1, advskew1).into();
    c.nodes.push(carp_proto::CarpNode {
        vhid: Vhid::new(2).unwrap(),
        advskew: carp_proto::AdvSkew(advskew2),
    });
    c
}

/// Input: two hosts with one carp interface each, nodes `1:0,2:100` and `1:100,2:0`;
/// host 1 crashes at 10 s and returns at 20 s (preempt on).
/// Output: each host is MASTER of the node where its advskew is 0 and holds the shared
/// address; after the crash host 2 masters both nodes (its mask goes 0b10 -> 0b11),
/// and host 1 takes node 1 back after it returns. The per-interface invariants
/// (mask = MASTER nodes, addresses held while the mask is not 0) hold at every step.
#[test]
fn two_node_carp_interface_splits_and_fails_over() {
    let mut sim = Sim::new(SimConfig::seeded(7));
    let a =
        sim.add_node(NodeSpec::new(true).with_interface_on(LinkId(1), two_node_interface(0, 100)));
    let b =
        sim.add_node(NodeSpec::new(true).with_interface_on(LinkId(1), two_node_interface(100, 0)));
    sim.run_until(t(9.0)).unwrap();
    assert_eq!(sim.masters_of(id(1, 1)), vec![a]);
    assert_eq!(sim.masters_of(id(2, 1)), vec![b]);
    assert_eq!((mask(&sim, a), mask(&sim, b)), (0b01, 0b10));
    assert!(sim.holds_vip(a, id(1, 1)) && sim.holds_vip(b, id(2, 1)));

    sim.schedule(t(10.0), Event::Crash(a));
    sim.run_until(t(19.0)).unwrap();
    assert_eq!(sim.masters_of(id(1, 1)), vec![b]);
    assert_eq!(mask(&sim, b), 0b11);

    sim.schedule(t(20.0), Event::Restart(a));
    sim.run_until(t(30.0)).unwrap();
    assert_eq!(sim.masters_of(id(1, 1)), vec![a]);
    assert_eq!((mask(&sim, a), mask(&sim, b)), (0b01, 0b10));
    golden("two_node_carp_interface", sim.trace());
}
