//! Property-style test: random fault schedules on 3 nodes, all invariants on.
//!
//! Input: for each of 20 seeds, nodes with advskew 0/50/100 (distinct, so
//! that no equal-timing race is expected), preempt drawn per node, IPv4 only
//! or IPv4+IPv6 (two master-down timers) drawn per seed, 5 % duplicates. For
//! 150 s a fault every 1-8 s, drawn from: crash, restart, graceful shutdown,
//! partition into two random sides, heal, link down, link up, demote +1,
//! demote -1, loss 5-25 %, loss off, block or unblock IPv4 or IPv6 adverts,
//! send failures 30-100 % on one node, send failures off.
//! Then every fault is undone (heal, loss off, unblock, send failures off,
//! links up, dead nodes restarted, demotions removed).
//! Output: invariants (a)-(d) hold after every step, and 2 settle windows
//! after the repair exactly one node is MASTER and holds the VIP.

use carp_proto::{Family, Instant, LinkId};
use carp_sim::{Event, NodeSpec, Sim, SimConfig, Violation, vhost, vhost46};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const NODES: usize = 3;
const FAULT_UNTIL_SECS: u64 = 150;

/// Draw a schedule from `seed`, apply it, and return the simulator after the repair.
fn run_random(seed: u64) -> Result<Sim, Violation> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let dual = rng.random_bool(0.5);
    let mut sim = Sim::new(SimConfig {
        duplicate: 0.05,
        ..SimConfig::seeded(seed)
    });
    for skew in [0, 50, 100] {
        let cfg = if dual {
            vhost46(1, 1, skew)
        } else {
            vhost(1, 1, skew)
        };
        sim.add_node(NodeSpec::new(rng.random_bool(0.5)).with_vhost(cfg));
    }
    let mut alive = [true; NODES];
    let mut link_up = [true; NODES];
    let mut demoted = [0i32; NODES];
    let mut at_ms: u64 = 5_000;
    while at_ms < FAULT_UNTIL_SECS * 1000 {
        let kind = rng.random_range(0..15);
        // Pick a node the fault makes sense for, so that few draws are no-ops.
        let candidates: Vec<usize> = (1..=NODES)
            .filter(|&n| match kind {
                0 | 2 | 7 => alive[n - 1],
                1 => !alive[n - 1],
                5 => link_up[n - 1],
                6 => !link_up[n - 1],
                8 => alive[n - 1] && demoted[n - 1] > 0,
                _ => true,
            })
            .collect();
        let Some(&n) = candidates.get(rng.random_range(0..candidates.len().max(1))) else {
            at_ms += rng.random_range(1_000..8_000);
            continue;
        };
        let i = n - 1;
        let event = match kind {
            0 => Some(Event::Crash(n)),
            1 => Some(Event::Restart(n)),
            2 => Some(Event::Shutdown(n)),
            3 => {
                let mut side_a: Vec<usize> = (1..=NODES).filter(|_| rng.random_bool(0.5)).collect();
                if side_a.is_empty() || side_a.len() == NODES {
                    side_a = vec![n];
                }
                Some(Event::Partition(vec![side_a]))
            }
            4 => Some(Event::Heal),
            5 | 6 => Some(Event::Link {
                node: n,
                link: LinkId(1),
                up: kind == 6,
            }),
            7 | 8 => Some(Event::Demote {
                node: n,
                group: "carp".into(),
                adj: if kind == 7 { 1 } else { -1 },
            }),
            9 => Some(Event::Loss(rng.random_range(0.05..0.25))),
            10 => Some(Event::Loss(0.0)),
            _ => Some(Event::Block {
                family: if rng.random_bool(0.5) {
                    Family::V4
                } else {
                    Family::V6
                },
                blocked: kind == 11,
            }),
        };
        if let Some(ev) = event {
            match &ev {
                Event::Crash(_) | Event::Shutdown(_) => {
                    alive[i] = false;
                    // A restarted node boots with its demote counters at 0.
                    demoted[i] = 0;
                }
                Event::Restart(_) => alive[i] = true,
                Event::Link { up, .. } => link_up[i] = *up,
                Event::Demote { adj, .. } => demoted[i] += adj,
                _ => {}
            }
            sim.schedule(Instant::from_millis(at_ms), ev);
        }
        at_ms += rng.random_range(1_000..8_000);
    }
    let repair = Instant::from_millis(at_ms);
    sim.schedule(repair, Event::Heal);
    sim.schedule(repair, Event::Loss(0.0));
    for family in [Family::V4, Family::V6] {
        sim.schedule(
            repair,
            Event::Block {
                family,
                blocked: false,
            },
        );
    }
    for n in 1..=NODES {
        let i = n - 1;
        sim.schedule(
            repair,
            Event::SendFailure {
                node: n,
                probability: 0.0,
            },
        );
        if !link_up[i] {
            sim.schedule(
                repair,
                Event::Link {
                    node: n,
                    link: LinkId(1),
                    up: true,
                },
            );
        }
        if !alive[i] {
            sim.schedule(repair, Event::Restart(n));
        }
        if demoted[i] > 0 {
            sim.schedule(
                repair,
                Event::Demote {
                    node: n,
                    group: "carp".into(),
                    adj: -demoted[i],
                },
            );
        }
    }
    sim.run_until(repair + sim.settle_window() * 2)?;
    Ok(sim)
}

/// 20 seeds by default; `CARP_SIM_SEEDS=N` explores more locally.
#[test]
fn random_fault_schedules_keep_every_invariant() -> Result<(), Violation> {
    let seeds: u64 = std::env::var("CARP_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    for seed in 1..=seeds {
        let sim = run_random(seed)?;
        let masters = sim.masters(1);
        assert_eq!(
            masters.len(),
            1,
            "seed {seed}: masters {masters:?} after repair\n{}",
            sim.trace()
        );
        let m = masters[0];
        assert!(sim.holds_vip(m, sim.transitions()[0].id));
        let faults = sim.events().len();
        println!(
            "seed {seed}: {faults} events, {} transitions, final master n{m}",
            sim.transitions().len()
        );
    }
    Ok(())
}

#[test]
fn random_schedule_is_deterministic() -> Result<(), Violation> {
    let a = run_random(7)?.trace().to_string();
    let b = run_random(7)?.trace().to_string();
    assert_eq!(a, b);
    Ok(())
}
