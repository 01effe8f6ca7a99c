//! Frames flooded to the virtual MAC: only the MASTER may act on them.
//!
//! Every node's macvlan carries the virtual MAC, and a switch floods frames
//! for a MAC it has no entry for (aged out, or just after a failover). Two
//! routers that both forwarded them would duplicate the client's packets,
//! and a stateful firewall on the BACKUP would see connections it does not
//! own. OpenBSD's `carp_ourether` takes such frames only in MASTER.

mod common;

use std::time::Duration;

use common::Lab;
use common::daemon::wait_single_master;
use common::testbed::words::Words;

const VIP: &str = "192.0.2.50";
const FAR: &str = "198.51.100.9";

/// `IpForwDatagrams` of namespace `ns` (from /proc/net/snmp).
fn forwarded(lab: &Lab, ns: &str) -> u64 {
    let snmp = lab.exec_ok(ns, &["cat", "/proc/net/snmp"]);
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
        panic!("no Ip: lines in /proc/net/snmp of {ns}: {snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ForwDatagrams")
        .and_then(|(_, v)| v.parse().ok())
        .expect("ForwDatagrams")
}

/// Input: routers A (MASTER) and B (BACKUP), both forwarding, each with a
/// far-side network 198.51.100.0/24 on a veth with nobody behind it; the client routes
/// it via the VIP; the bridge floods every frame (ageing time 0), so B's
/// macvlan gets each frame sent to the virtual MAC. The client sends 20
/// pings to 198.51.100.9. Output: A forwards them, B forwards none.
#[test]
#[ignore = "needs root: network namespaces"]
fn only_the_master_forwards_frames_flooded_to_the_virtual_mac() {
    let lab = Lab::new("flood", 3);
    for i in 0..2 {
        let ns = lab.ns(i).to_owned();
        lab.sysctl(&ns, "net.ipv4.ip_forward", "1");
        // The far side: a veth pair inside the router, nobody behind it.
        lab.exec_ok(
            &ns,
            &[
                "ip", "link", "add", "far0", "type", "veth", "peer", "name", "far1",
            ],
        );
        lab.exec_ok(&ns, &["ip", "link", "set", "far1", "up"]);
        lab.exec_ok(
            &ns,
            &["ip", "addr", "add", "198.51.100.1/24", "dev", "far0"],
        );
        lab.exec_ok(&ns, &["ip", "link", "set", "far0", "up"]);
    }
    let words = |skew: u8| {
        Words::new("eth0", 5)
            .advbase(1)
            .advskew(skew)
            .pass("flood-secret")
            .addr(&format!("{VIP}/24"))
            .build()
    };
    let a = lab.carpd(0, "a", &words(0));
    let b = lab.carpd(1, "b", &words(100));
    assert_eq!(wait_single_master(&[&a, &b], 5, Duration::from_secs(8)), 0);
    let client = lab.ns(2).to_owned();
    lab.exec_ok(
        &client,
        &["ip", "route", "add", "198.51.100.0/24", "via", VIP],
    );
    // A hub: the bridge forgets every MAC at once and floods every frame.
    lab.exec_ok(
        &lab.switch,
        &[
            "ip",
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "ageing_time",
            "0",
        ],
    );
    let before = (forwarded(&lab, lab.ns(0)), forwarded(&lab, lab.ns(1)));
    // No answers come back (nobody is on the far side): the exit status is moot.
    let _ = lab.exec(
        &client,
        &["ping", "-n", "-q", "-c", "20", "-i", "0.05", "-W", "1", FAR],
    );
    let after = (forwarded(&lab, lab.ns(0)), forwarded(&lab, lab.ns(1)));
    let (by_a, by_b) = (after.0 - before.0, after.1 - before.1);
    println!("forwarded: by the MASTER {by_a}, by the BACKUP {by_b}");
    assert!(by_a >= 20, "the MASTER forwarded only {by_a} of 20");
    assert_eq!(
        by_b, 0,
        "the BACKUP forwarded frames sent to the virtual MAC"
    );
}
