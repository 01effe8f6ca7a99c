//! `carp-sim [--seed N] [SCENARIO]`: run a simulated CARP election and print
//! the trace and a summary. The default scenario is `failover`.

use std::process::ExitCode;

use carp_proto::{Instant, LinkId, State, Vhid, VhostId};
use carp_sim::{Event, NodeSpec, Sim, SimConfig, vhost};

/// One demo: its name, what it shows, the hosts (preempt, advskew) and the timed faults.
struct Scenario {
    name: &'static str,
    about: &'static str,
    hosts: &'static [(bool, u8)],
    faults: fn() -> Vec<(u64, Event)>,
    end_secs: u64,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "failover",
        about: "n1 is killed at 10 s (no goodbye) and boots again at 20 s; with preempt it takes the address back",
        hosts: &[(true, 0), (false, 50), (false, 100)],
        faults: || vec![(10, Event::Crash(1)), (20, Event::Restart(1))],
        end_secs: 30,
    },
    Scenario {
        name: "bowout",
        about: "n1 shuts down cleanly at 10 s and sends a bow-out advertisement (advbase=advskew=255); n2 takes over at once",
        hosts: &[(true, 0), (false, 50), (false, 100)],
        faults: || vec![(10, Event::Shutdown(1)), (20, Event::Restart(1))],
        end_secs: 30,
    },
    Scenario {
        name: "demote",
        about: "`ifconfig -g carp carpdemote` on n1 at 10 s moves the address within a delivery; undemoting at 20 s moves it back (preempt)",
        hosts: &[(true, 0), (true, 50), (true, 100)],
        faults: || vec![(10, demote(1, 1)), (20, demote(1, -1))],
        end_secs: 30,
    },
    Scenario {
        name: "partition",
        about: "n1 is cut off from n2 and n3 at 10 s (two MASTERs, one per side); healed at 20 s, the slower MASTER steps down",
        hosts: &[(false, 0), (false, 50), (false, 100)],
        faults: || vec![(10, Event::Partition(vec![vec![1]])), (20, Event::Heal)],
        end_secs: 30,
    },
    Scenario {
        name: "linkdown",
        about: "n1's network link fails at 10 s (INIT, no advertisement can leave) and returns at 20 s",
        hosts: &[(true, 0), (false, 50), (false, 100)],
        faults: || {
            vec![
                (
                    10,
                    Event::Link {
                        node: 1,
                        link: LinkId(1),
                        up: false,
                    },
                ),
                (
                    20,
                    Event::Link {
                        node: 1,
                        link: LinkId(1),
                        up: true,
                    },
                ),
            ]
        },
        end_secs: 30,
    },
];

fn demote(node: usize, adj: i32) -> Event {
    Event::Demote {
        node,
        group: "carp".to_string(),
        adj,
    }
}

fn usage() -> String {
    let mut s = String::from(
        "usage: carp-sim [--seed N] [SCENARIO]\n\n\
         Simulates CARP hosts (the real carp-proto state machine) on a virtual LAN\n\
         with a virtual clock and seeded random latency (100 us..2 ms).\n\nScenarios:\n",
    );
    for sc in SCENARIOS {
        s += &format!("  {:<10} {}\n", sc.name, sc.about);
    }
    s
}

fn main() -> ExitCode {
    let mut seed = 1u64;
    let mut name = "failover".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seed" => match args.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = s,
                None => {
                    eprintln!("--seed needs a number\n\n{}", usage());
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" | "help" | "list" => {
                print!("{}", usage());
                return ExitCode::SUCCESS;
            }
            other if !other.starts_with('-') => name = other.to_string(),
            other => {
                eprintln!("unknown option {other}\n\n{}", usage());
                return ExitCode::from(2);
            }
        }
    }
    let Some(sc) = SCENARIOS.iter().find(|s| s.name == name) else {
        eprintln!("unknown scenario {name:?}\n\n{}", usage());
        return ExitCode::from(2);
    };
    run(sc, seed)
}

fn run(sc: &Scenario, seed: u64) -> ExitCode {
    let mut sim = Sim::new(SimConfig::seeded(seed));
    println!("carp-sim: scenario {:?}, seed {seed}\n", sc.name);
    println!(
        "{} hosts share the virtual address 198.51.100.1 (vhid 1, advertisement every 1 s).",
        sc.hosts.len()
    );
    println!("The host advertising most often (lowest advskew) should be MASTER and hold it.");
    for (k, &(preempt, skew)) in sc.hosts.iter().enumerate() {
        println!(
            "  n{} 192.0.2.{}  advskew {skew:<3}  preempt {}",
            k + 1,
            k + 1,
            if preempt { "on" } else { "off" }
        );
    }
    println!("What happens: {}.", sc.about);
    println!(
        "A BACKUP declares the MASTER dead 3 x (1 + advskew/256) s after the last advertisement\n\
         it heard (n1 3.000 s, n2 3.586 s, n3 4.172 s), so the fastest backup wins a failover.\n"
    );
    for &(preempt, skew) in sc.hosts {
        sim.add_node(NodeSpec::new(preempt).with_vhost(vhost(1, 1, skew)));
    }
    for (secs, ev) in (sc.faults)() {
        sim.schedule(Instant::from_millis(secs * 1000), ev);
    }
    let result = sim.run_until(Instant::from_millis(sc.end_secs * 1000));
    println!("Trace (virtual time; state changes and injected faults):");
    print!("{}", sim.trace());
    println!();
    println!("Summary:");
    print_measurements(&sim);
    println!("\nWho was MASTER when:");
    print!("{}", sim.summary());
    match result {
        Ok(()) => {
            println!(
                "\nInvariants checked after every step: OK (one MASTER once quiet, failover within \
                 the master-down bound, no flapping, address only on the MASTER)."
            );
            println!("Try another seed (--seed N) or scenario (carp-sim list).");
            ExitCode::SUCCESS
        }
        Err(v) => {
            println!("\nINVARIANT VIOLATED at t={}: {}", v.at, v.what);
            ExitCode::FAILURE
        }
    }
}

/// For every injected fault, say who became MASTER next and how long it took.
fn print_measurements(sim: &Sim) {
    let Some(vhid) = Vhid::new(1) else { return };
    let id = VhostId {
        link: LinkId(1),
        vhid,
    };
    if let Some(first) = sim.first_master_after(Instant::ZERO, id) {
        println!(
            "  election: n{} became MASTER at t={} ({})",
            first.node, first.at, first.cause
        );
    }
    for (at, ev) in sim.events() {
        let next = sim.first_master_after(*at, id);
        match next {
            Some(tr) => println!(
                "  after \"{ev}\" at t={at}: n{} became MASTER {} s later ({})",
                tr.node,
                secs(tr.at - *at),
                tr.cause
            ),
            None => {
                let holder = sim.masters(1);
                println!("  after \"{ev}\" at t={at}: no new MASTER (MASTER now: {holder:?})")
            }
        }
    }
    let end: Vec<String> = (1..=sim.node_count())
        .map(|n| match sim.state(n, 1) {
            Some(State::Master) => format!("n{n} MASTER"),
            Some(s) => format!("n{n} {s}"),
            None => format!("n{n} down"),
        })
        .collect();
    println!("  at the end: {}", end.join(", "));
}

fn secs(d: core::time::Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}
