//! Chaos soak (issue "Hardening", item "Chaos soak"): three carpd nodes
//! (advbase 1, advskew 0/50/100, `--preempt`, one vhid, one IPv4 VIP) and a
//! client on one bridge, under random faults from a seeded RNG for a
//! configurable time, while the whole system is recorded continuously.
//!
//! Faults, one at a time, each held for a random time and then undone:
//! - `kill9`: `kill -9` a daemon, restart it later (same state directory);
//! - `stop`: SIGSTOP, later SIGCONT (a stalled master when it hits A);
//! - `flap`: `ip link set eth0 down`, later up, in a node's namespace;
//! - `partition`: the nodes split in two groups, the client on one side
//!   (nftables `bridge` forward rules in the switch namespace, so the
//!   bridge still learns where frames come from, as a real switch would);
//! - `isolate`: bridge port isolation of two or three node ports (those
//!   nodes cannot hear each other, but everybody hears the others and the
//!   client hears everyone: a non-transitive split);
//! - `netem`: loss, duplication (and, when the kernel has `sch_netem`,
//!   delay and reordering) on a node's link. Without `sch_netem` (no module
//!   in the development VM's kernel) it is emulated with nftables: random
//!   loss of frames from the node (netdev ingress of its bridge port) and to
//!   it (netdev ingress of its `eth0`), and `dup` on its `eth0` egress; delay
//!   and reordering are then not injected (the run says so);
//! - faults of the environment (`chaos/envfaults.rs`, issue 10), each on
//!   one node: `macvlan` (its macvlan deleted, the daemon must rebuild it),
//!   `carpdev` (`eth0` deleted, re-created under a new ifindex), `flush`
//!   (its carpdev's addresses flushed, then restored), `sighup` (a SIGHUP
//!   storm while the config file is swapped for a variant, garbage, a FIFO),
//!   `hook` (its hooks hang past their timeout or print 100 MB while it is
//!   made to change state), `exhaust` (slow HTTP clients and partial
//!   control lines). The nodes run from config files, with hooks, for these.
//!
//! `CARPD_SOAK_FAULTS` chooses the kinds: `all` (default), a comma list, or
//! `all,-hook` to leave one out. During `exhaust` the node's own control
//! socket is full, so its unanswered polls carry its last answer.
//!
//! Recorded every 50 ms per node: the vhid's state straight from the control
//! socket (`Request::Status`), and whether the node's namespace holds the VIP
//! (`ip -n NS -j addr`). The client pings the VIP 20 times a second
//! (`ping -D`); tcpdump in the client namespace and in the switch namespace
//! (which port a frame came in on) records every gratuitous ARP for the VIP.
//!
//! Pass criteria (evaluated after the run; all bounds include `SLACK`):
//! 1. two or more MASTERs never last longer than master-down + one interval
//!    after the fault that caused them was undone ("after a heal"), or after
//!    they appeared outside a fault;
//! 2. no MASTER at all never lasts longer than master-down + one interval;
//! 3. no running node holds the VIP while not MASTER for more than 300 ms
//!    (plus one sampling period); a daemon killed with -9 leaves its VIP in
//!    its namespace until it is restarted (documented): counted, not failed;
//! 4. no daemon exits unless the harness killed it, every daemon stops
//!    cleanly (exit 0) with SIGTERM at the end, and no log says "panicked";
//! 5. after every fault whose recovery left two MASTERs (a heal, a resumed
//!    stalled master, ...), the last gratuitous ARP for the VIP on the wire
//!    since the dual MASTER began comes from the surviving MASTER, and the
//!    client sees one of its announcements (time stamps allow 0.5 s of slack
//!    for the 50 ms polling and the heal commands);
//!    otherwise the switch keeps sending the virtual MAC to the node that
//!    yielded (`CARPD_SOAK_LENIENT_GARP=1` only prints these, for bisecting);
//! 6. after every fault the lab settles (one MASTER, node A, the only holder
//!    of the VIP, the others BACKUP) within 15 s.
//!
//! ```sh
//! cargo test -p carpd --test netns_chaos -- --include-ignored --nocapture   # 60 s (CI runs 300 s)
//! CARPD_SOAK_SECS=300 cargo test -p carpd --test netns_chaos -- --include-ignored --nocapture
//! CARPD_SOAK_SECS=3600 ...            # the long run
//! CARPD_SOAK_SEED=42 ...              # replay a schedule (the seed is printed)
//! CARPD_SOAK_FAULTS=kill9,carpdev ... # only these kinds (`all,-exhaust`: all but one)
//! CARPD_SOAK_LENIENT_GARP=1 ...       # criterion 5 is only printed
//! CARPD_SOAK_ARTIFACTS=/tmp/soak ...  # keep the daemons' logs and the ARP captures
//! ```

mod chaos;
mod common;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use chaos::analysis::{Analysis, Input, analyse};
use chaos::envfaults::write_config;
use chaos::faults::{Injector, Rng, enabled_kinds, netem_available, nft};
use chaos::recording::{Life, Sample, Shared, StopOnDrop, capture, garps, sampler};
use chaos::{CLIENT, NAMES, VHID, VIP, VIP_SLACK, node_list};
use common::Lab;
use common::daemon::{Carpd, Pinger, wait_single_master, wall_now};
use nix::sys::signal::Signal;

// ===== the lab =====

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// directory goes with the lab).
fn keep_artifacts(lab: &Lab, dir: &Path) {
    let _ = std::fs::create_dir_all(dir);
    for entry in std::fs::read_dir(lab.dir()).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "log" || x == "txt") {
            let _ = std::fs::copy(&p, dir.join(entry.file_name()));
        }
    }
    println!("logs and captures copied to {}", dir.display());
}

#[test]
#[ignore = "needs root: network namespaces"]
fn chaos_soak() {
    let soak = env_u64("CARPD_SOAK_SECS").unwrap_or(60) as f64;
    let seed = env_u64("CARPD_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let strict_garp = !std::env::var("CARPD_SOAK_LENIENT_GARP").is_ok_and(|v| v == "1");
    let kinds = enabled_kinds();
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    println!("chaos soak: {soak} s, seed {seed} (replay with CARPD_SOAK_SEED={seed})");
    println!("fault kinds (CARPD_SOAK_FAULTS): {}", kind_names.join(","));

    let lab = Lab::new("chaos", 4);
    let sw = lab.switch.clone();
    nft(&lab, &sw, "add table bridge chaos");
    nft(
        &lab,
        &sw,
        "add chain bridge chaos chaos_part { type filter hook forward priority 0 ; policy accept ; }",
    );
    let netem = netem_available(&lab, lab.ns(0));
    if !netem {
        println!(
            "netem: this kernel has no sch_netem; loss and duplication are emulated with nftables, delay and reordering are NOT injected"
        );
    }
    let client_cap = lab.path("client-arp.txt");
    let switch_cap = lab.path("switch-arp.txt");
    let client_ns = lab.ns(CLIENT).to_owned();
    let cap_pids = [
        capture(&lab, &client_ns, &["-i", "eth0"], &client_cap),
        capture(&lab, &sw, &["-i", "any", "-e"], &switch_cap),
    ];

    let mut nodes: Vec<Carpd> = (0..3)
        .map(|i| lab.carpd(i, NAMES[i], &write_config(&lab, i)))
        .collect();
    let refs: Vec<&Carpd> = nodes.iter().collect();
    let first = wait_single_master(&refs, VHID, Duration::from_secs(10));
    assert_eq!(first, 0, "the advskew-0 node must win the first election");

    let shared = Shared {
        t0: Instant::now(),
        lives: Mutex::new([(Life::Running, 0); 3]),
        samples: [
            Mutex::new(Vec::new()),
            Mutex::new(Vec::new()),
            Mutex::new(Vec::new()),
        ],
        stop: AtomicBool::new(false),
    };
    let w0 = wall_now();
    let pinger = Pinger::start(&client_ns, VIP, Duration::from_millis(50)).expect("ping");
    let targets: Vec<(String, std::path::PathBuf)> = nodes
        .iter()
        .map(|d| (d.ns.clone(), d.sock.clone()))
        .collect();

    let mut inj = Injector {
        lab: &lab,
        shared: &shared,
        nodes: std::mem::take(&mut nodes),
        rng: Rng(seed),
        netem,
        soak,
        kinds,
        faults: Vec::new(),
        failures: Vec::new(),
    };
    thread::scope(|s| {
        let _stop = StopOnDrop(&shared.stop);
        for (i, (ns, sock)) in targets.iter().enumerate() {
            let shared = &shared;
            s.spawn(move || sampler(shared, i, ns, sock));
        }
        // Let the samplers record the starting state first.
        thread::sleep(Duration::from_secs(1));
        inj.run();
    });
    let end = shared.now();
    let replies = pinger.finish();
    for pid in cap_pids {
        lab.signal(pid, Signal::SIGINT);
        let _ = lab.wait_child(pid, Duration::from_secs(3));
    }
    let Injector {
        nodes,
        faults,
        mut failures,
        ..
    } = inj;

    // Criterion 4: a clean stop, and no panic in any log.
    for d in &nodes {
        if lab.wait_child(d.pid, Duration::ZERO).is_some() {
            failures.push(format!(
                "criterion 4: {} was not running at the end",
                d.name
            ));
            continue;
        }
        lab.kill(d, Signal::SIGTERM);
        match lab.wait_child(d.pid, Duration::from_secs(10)) {
            Some(out) if out.status.code() == Some(0) => {}
            Some(out) => failures.push(format!(
                "criterion 4: {} exited with {} after SIGTERM",
                d.name, out.status
            )),
            None => failures.push(format!("criterion 4: {} ignored SIGTERM for 10 s", d.name)),
        }
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        if log.contains("panicked") {
            failures.push(format!("criterion 4: {}'s log says \"panicked\"", d.name));
        }
    }

    let samples: [Vec<Sample>; 3] = std::array::from_fn(|i| {
        std::mem::take(&mut *shared.samples[i].lock().unwrap_or_else(|p| p.into_inner()))
    });
    let ports: Vec<&str> = (0..3).map(|h| lab.host(h).port.as_str()).collect();
    let (sw_garps, client_garps) = garps(&ports, &switch_cap, &client_cap, w0);
    let Analysis {
        failures: judged,
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
    } = analyse(&Input {
        samples: &samples,
        faults: &faults,
        end,
        replies: &replies,
        w0,
        sw_garps: &sw_garps,
        client_garps: &client_garps,
    });
    failures.extend(judged);

    println!("\n===== chaos soak timeline ({end:.1} s, seed {seed}) =====");
    print!("{report}");
    println!("master set changes (50 ms grid):");
    for (t, m) in changes.iter().take(400) {
        println!(
            "  t={t:7.2}s  MASTER: {}",
            if m.is_empty() {
                "-".to_owned()
            } else {
                node_list(m)
            }
        );
    }
    if changes.len() > 400 {
        println!("  ... {} more", changes.len() - 400);
    }
    println!("\n===== figures =====");
    println!(
        "faults injected: {} (netem {})",
        faults.len(),
        if netem {
            "tc netem"
        } else {
            "nft emulation, no delay/reorder"
        }
    );
    println!("  kind        count  max no-MASTER  max dual  max dual after heal  max client gap");
    for (kind, k) in &per_kind {
        println!(
            "  {:10} {:6}  {:12.2}s {:8.2}s {:19.2}s {:14.2}s",
            kind.name(),
            k.count,
            k.failover_max,
            k.dual_max,
            k.dual_after_heal_max,
            k.ping_gap_max
        );
    }
    println!("max time without a MASTER: {none_max:.2}s (bound {bound:.2}s)");
    println!(
        "max dual MASTER: {dual_max:.2}s, max after a heal: {dual_after_max:.2}s (bound {bound:.2}s)"
    );
    println!("max VIP on a running non-MASTER: {vip_bad_max:.2}s (bound {VIP_SLACK:.2}s)");
    println!(
        "VIP left by a kill -9 while dead (documented): a {:.1}s, b {:.1}s, c {:.1}s",
        dead_vip[0], dead_vip[1], dead_vip[2]
    );
    println!(
        "max client outage: {gap_all:.2}s at t={gap_all_at:.2}s ({} replies)",
        replies.answered()
    );
    println!(
        "samples: {} / {} / {}, control queries without an answer while running: {failed_polls} (and {blind_polls} while an exhaust fault filled the node's control socket, carried over)",
        samples[0].len(),
        samples[1].len(),
        samples[2].len()
    );
    println!(
        "gratuitous ARPs for {VIP}: {} at the switch, {} at the client; heals with a dual MASTER checked: {heals_checked}",
        sw_garps.len(),
        client_garps.len()
    );
    if !known.is_empty() {
        println!(
            "\ncriterion 5 (no re-announcement when a dual MASTER resolves) failed after {} of {heals_checked} heals:",
            known.len()
        );
        for k in &known {
            println!("  {k}");
        }
        if strict_garp {
            failures.extend(known);
        } else {
            println!("  (not failing the test: CARPD_SOAK_LENIENT_GARP=1)");
        }
    }
    if let Ok(dir) = std::env::var("CARPD_SOAK_ARTIFACTS") {
        keep_artifacts(&lab, Path::new(&dir));
    }
    if failures.is_empty() {
        println!("\nchaos soak: PASS");
    } else {
        lab.dump_logs();
    }
    assert!(
        failures.is_empty(),
        "chaos soak failed:\n  {}",
        failures.join("\n  ")
    );
}
