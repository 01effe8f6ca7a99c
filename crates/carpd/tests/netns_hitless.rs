//! Root-only tests of planned switch-overs (issue 11, defect 1): SIGTERM,
//! `demote`, `maintenance on`/`off`, `disable` and `state N backup` move the
//! MASTER without the client losing a probe, on an IPv4-only and on a
//! dual-stack vhid.
//!
//! Two carpd nodes (A advskew 0, B advskew 100) and a client on one bridge;
//! the client pings the IPv4 VIP (and on dual-stack the IPv6 VIP) every
//! 10 ms. The loss is the testbed's outage computation over a window from
//! before the command to 3 s after the new MASTER is up: long enough for the
//! old master's late frames (MLD retransmissions come up to 1 s later) and
//! for the next advertisements to have had their effect.
//!
//! The criterion is 0 lost probes. On a loaded machine a single probe may
//! be late by scheduling alone, so [`MAX_LOST`] allows one.
mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::Lab;
use common::daemon::{
    Carpd, Pinger, carpctl_ok, state, wait_single_master, wait_state, wait_state_fast, wall_now,
};
use common::testbed::words::Words;
use nix::sys::signal::Signal;

const VIP4: &str = "192.0.2.50";
const VIP6: &str = "2001:db8::50";
/// Bound for a first election (master-down of the worst node + slack).
const ELECTION: Duration = Duration::from_secs(8);
/// Probes the client may lose on a planned path (see the module doc).
const MAX_LOST: u64 = 1;
/// How long after the switch-over the client keeps being watched.
const AFTER: Duration = Duration::from_secs(3);

/// A planned path: what the operator does, and who is MASTER afterwards.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Path {
    Sigterm,
    Demote,
    MaintenanceOn,
    /// `maintenance on`, then (measured) `maintenance off`: A preempts back.
    MaintenanceOff,
    Disable,
    StateBackup,
}

fn words(advskew: u8, dual: bool) -> Words {
    let w = Words::new("eth0", 1)
        .advbase(1)
        .advskew(advskew)
        .pass("hitless")
        .addr(&format!("{VIP4}/24"));
    if dual {
        w.addr(&format!("{VIP6}/64"))
    } else {
        w
    }
}

fn args(advskew: u8, dual: bool, preempt: bool) -> Vec<String> {
    let mut a = words(advskew, dual).build();
    if preempt {
        a.insert(0, "--preempt".to_owned());
    }
    a
}

/// Run `path` once on a fresh lab; return the probes lost per pinged VIP.
fn planned(tag: &str, path: Path, dual: bool) -> Vec<(String, u64)> {
    let lab = Lab::new(tag, 3);
    // `state backup` is sticky only without preempt on A (with it, A
    // would take the vhid back at B's first slower advertisement).
    let preempt = path != Path::StateBackup;
    let a = lab.carpd(0, "a", &args(0, dual, preempt));
    let b = lab.carpd(1, "b", &args(100, dual, preempt));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    if path == Path::MaintenanceOff {
        carpctl_ok(&a, &["maintenance", "on"]);
        wait_state(&b, 1, "MASTER", Duration::from_secs(3));
        wait_state(&a, 1, "BACKUP", Duration::from_secs(3));
        // Let every late frame of the first switch-over pass.
        thread::sleep(AFTER);
    }
    // CARPD_HITLESS_CAPTURE=DIR: record what A sends on eth0.
    if let Some(dir) = std::env::var_os("CARPD_HITLESS_CAPTURE") {
        let file = std::path::Path::new(&dir).join(format!("{tag}-{path:?}.pcap"));
        let file = file.to_string_lossy().into_owned();
        lab.spawn(
            lab.ns(0),
            &["tcpdump", "-i", "eth0", "-Q", "out", "-U", "-w", &file],
        );
        thread::sleep(Duration::from_millis(300));
    }
    let client = lab.ns(2);
    let mut vips = vec![VIP4];
    if dual {
        vips.push(VIP6);
    }
    for vip in &vips {
        lab.exec_ok(client, &["ping", "-c", "1", "-W", "2", vip]);
    }
    let pingers: Vec<Pinger> = vips
        .iter()
        .map(|vip| Pinger::start(client, vip, Duration::from_millis(10)).expect("ping"))
        .collect();
    thread::sleep(Duration::from_millis(500));
    let wall0 = wall_now();
    let t0 = Instant::now();
    let (new_master, old): (&Carpd, &Carpd) = match path {
        Path::MaintenanceOff => (&a, &b),
        _ => (&b, &a),
    };
    match path {
        Path::Sigterm => lab.kill(&a, Signal::SIGTERM),
        Path::Demote => drop(carpctl_ok(&a, &["demote"])),
        Path::MaintenanceOn => drop(carpctl_ok(&a, &["maintenance", "on"])),
        Path::MaintenanceOff => drop(carpctl_ok(&a, &["maintenance", "off"])),
        Path::Disable => drop(carpctl_ok(&a, &["disable"])),
        Path::StateBackup => drop(carpctl_ok(&a, &["state", "1", "backup"])),
    }
    let took = wait_state_fast(new_master, 1, "MASTER", t0, Duration::from_secs(5));
    thread::sleep(AFTER);
    let wall1 = wall_now() - 0.05;
    if path != Path::Sigterm {
        let want = if path == Path::Disable {
            "INIT"
        } else {
            "BACKUP"
        };
        assert_eq!(
            state(old, 1).as_deref(),
            Some(want),
            "{} after {path:?}",
            old.name
        );
    }
    assert_eq!(state(new_master, 1).as_deref(), Some("MASTER"));
    let mut lost = Vec::new();
    for (vip, p) in vips.iter().zip(pingers) {
        let seen = p.finish().outage(wall0 - 0.3, wall1);
        println!(
            "{path:?} {}: {} MASTER after {took:?}; client to {vip}: {seen}",
            if dual { "dual-stack" } else { "IPv4" },
            new_master.name
        );
        lost.push((vip.to_string(), seen.lost));
    }
    lost
}

/// Run every planned path on one address family and assert the loss.
fn all_paths(tag: &str, dual: bool) {
    let paths = [
        Path::Sigterm,
        Path::Demote,
        Path::MaintenanceOn,
        Path::MaintenanceOff,
        Path::Disable,
        Path::StateBackup,
    ];
    let mut bad = Vec::new();
    // CARPD_HITLESS_PATH=Disable: run that path only.
    let only = std::env::var("CARPD_HITLESS_PATH").ok();
    for path in paths {
        if only.as_ref().is_some_and(|p| *p != format!("{path:?}")) {
            continue;
        }
        for (vip, lost) in planned(tag, path, dual) {
            if lost > MAX_LOST {
                bad.push(format!("{path:?} to {vip}: {lost} lost"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "planned switch-overs lost probes: {}",
        bad.join("; ")
    );
}

/// Input: each planned path in turn on an IPv4-only vhid, the client
/// pinging the VIP every 10 ms. Output: at most [`MAX_LOST`] lost probes
/// each, the new MASTER up, the old node BACKUP (INIT after `disable`).
#[test]
#[ignore = "needs root: network namespaces"]
fn planned_paths_are_hitless_ipv4() {
    all_paths("hitl4", false);
}

/// Input: as [`planned_paths_are_hitless_ipv4`] on a dual-stack vhid,
/// pinging both VIPs. Output: the same; in particular the old master's
/// macvlan sends no MLD report from the virtual MAC that would re-point the
/// bridge at it.
#[test]
#[ignore = "needs root: network namespaces"]
fn planned_paths_are_hitless_dual_stack() {
    all_paths("hitl6", true);
}
