//! Root-only test of a vhost with thousands of addresses (issue 15): all of
//! them installed on takeover and removed on step-down, with the batched
//! netlink requests and announcement bursts of `carpd::os`. Same harness
//! and gating as `netns_daemon.rs` (root, `--include-ignored`); the lab
//! removes its namespaces and daemons on drop, also on failure.

mod common;

use std::time::{Duration, Instant};

use common::Lab;
use common::daemon::{Carpd, wait_for, wait_single_master, wait_state};
use common::testbed::words::Words;

const N4: usize = 1000;
const N6: usize = 1000;
const ELECTION: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);
/// Bounds only (no timing is asserted): master-down of advbase 1 /
/// advskew 100 (3.4 s), and a generous allowance for 2,000 addresses on a
/// loaded machine.
const TAKEOVER: Duration = Duration::from_secs(8);
const INSTALL: Duration = Duration::from_secs(10);

fn words(advskew: u8) -> Vec<String> {
    let mut w = Words::new("eth0", 31)
        .advbase(1)
        .advskew(advskew)
        .pass("many")
        .addr("192.0.2.31/24");
    for i in 0..N4 {
        w = w.addr(&format!("198.18.{}.{}/32", 4 + i / 250, 1 + i % 250));
    }
    for i in 0..N6 {
        w = w.addr(&format!("2001:db8:1::{:x}/128", i + 1));
    }
    w.build()
}

/// How many of the test's IPv4 and IPv6 addresses `ns` holds, on any link.
fn held(lab: &Lab, ns: &str) -> (usize, usize) {
    let out = lab.exec(ns, &["ip", "-o", "addr", "show"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let v4 = text.lines().filter(|l| l.contains(" 198.18.")).count();
    let v6 = text
        .lines()
        .filter(|l| l.contains(" 2001:db8:1::"))
        .filter(|l| !l.contains("tentative"))
        .count();
    (v4, v6)
}

fn wait_held(lab: &Lab, d: &Carpd, want: (usize, usize), what: &str) -> Duration {
    let t0 = Instant::now();
    wait_for(what, INSTALL, POLL, || {
        (held(lab, &d.ns) == want).then_some(())
    });
    t0.elapsed()
}

/// Input: A and B with one vhost of 1 + 1,000 IPv4 and 1,000 IPv6
/// addresses; A MASTER. Then A's carpdev goes down, then B gets SIGTERM.
/// Output: A holds all 2,000 and B none; after A's link goes down B holds
/// all 2,000 (IPv6 not tentative) and A none; after SIGTERM B holds none.
#[test]
#[ignore = "needs root: network namespaces"]
fn thousands_of_addresses_follow_the_master() {
    let lab = Lab::new("admany", 2);
    let a = lab.carpd(0, "a", &words(0));
    let b = lab.carpd(1, "b", &words(100));
    assert_eq!(wait_single_master(&[&a, &b], 31, ELECTION), 0);
    wait_held(&lab, &a, (N4, N6), "A holds all addresses");
    wait_state(&b, 31, "BACKUP", ELECTION);
    assert_eq!(held(&lab, &b.ns), (0, 0), "the BACKUP holds none");

    lab.exec_ok(&a.ns, &["ip", "link", "set", "eth0", "down"]);
    let took = wait_state(&b, 31, "MASTER", TAKEOVER);
    let installed = wait_held(&lab, &b, (N4, N6), "B holds all addresses");
    eprintln!("B MASTER {took:?} after A's link went down; all installed {installed:?} later");
    wait_held(
        &lab,
        &a,
        (0, 0),
        "A (link down, INIT) removed its addresses",
    );

    lab.kill(&b, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(lab.wait_exit(&b, Duration::from_secs(10)), Some(0));
    assert_eq!(held(&lab, &b.ns), (0, 0), "B removed all at shutdown");
}
