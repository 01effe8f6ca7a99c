//! Root-only tests of faults of the environment (issue 10, defects 2, 3
//! and 8): the macvlan holding the VIP deleted, the carpdev deleted and
//! re-created under a new ifindex, the carpdev's own addresses flushed.
//! Same harness and gating as `netns_daemon.rs` (root, `--include-ignored`);
//! the lab removes its namespaces and daemons on drop, also on failure.

mod common;

use std::time::Duration;

use carpd::daemon::macvlan_name;
use common::Lab;
use common::daemon::{Carpd, view, wait_for, wait_single_master, wait_state};
use common::testbed::words::Words;

const VIP4: &str = "192.0.2.70";
const ELECTION: Duration = Duration::from_secs(8);
const POLL: Duration = Duration::from_millis(20);
/// master-down of advbase 1 / advskew 100 (3.4 s) plus 1 s of slack.
const TAKEOVER: Duration = Duration::from_millis(4_400);

fn words(vhid: u8, advskew: u8) -> Vec<String> {
    Words::new("eth0", vhid)
        .advbase(1)
        .advskew(advskew)
        .pass("envfaults")
        .addr(&format!("{VIP4}/24"))
        .build()
}

/// How many of the lab's hosts hold the VIP.
fn holders(lab: &Lab, nodes: &[&Carpd]) -> usize {
    nodes.iter().filter(|d| lab.has_addr(&d.ns, VIP4)).count()
}

/// Wait until `log` of `d` contains `needle`.
fn wait_log(d: &Carpd, needle: &str, timeout: Duration) {
    wait_for(&format!("log line {needle:?}"), timeout, POLL, || {
        let text = std::fs::read_to_string(&d.log).unwrap_or_default();
        text.contains(needle).then_some(())
    });
}

/// Input: A MASTER, B BACKUP; the macvlan holding A's VIP is deleted.
/// Output: A steps down with demotion, B takes over within master-down + 1 s
/// and exactly one host holds the VIP; A rebuilds the macvlan and returns to
/// BACKUP undemoted; when B stops, A takes the VIP again.
#[test]
#[ignore = "needs root: network namespaces"]
fn deleted_macvlan_hands_over_and_is_rebuilt() {
    let lab = Lab::new("delmv", 2);
    let a = lab.carpd(0, "a", &words(21, 0));
    let b = lab.carpd(1, "b", &words(21, 100));
    assert_eq!(wait_single_master(&[&a, &b], 21, ELECTION), 0);
    let mv = macvlan_name(lab.host(0).ifindex, 21);
    lab.exec_ok(&a.ns, &["ip", "link", "del", &mv]);
    let took = wait_state(&b, 21, "MASTER", TAKEOVER);
    eprintln!("B MASTER {took:?} after the macvlan was deleted");
    wait_for("only B holds the VIP", Duration::from_secs(2), POLL, || {
        (holders(&lab, &[&a, &b]) == 1 && lab.has_addr(&b.ns, VIP4)).then_some(())
    });
    // A comes back: its macvlan exists again, and it is BACKUP, not demoted.
    wait_state(&a, 21, "BACKUP", Duration::from_secs(5));
    let link = lab.exec(&a.ns, &["ip", "link", "show", &mv]);
    assert!(link.status.success(), "macvlan {mv} re-created");
    wait_for("A undemoted", Duration::from_secs(3), POLL, || {
        (view(&a, 21).demote == 0).then_some(())
    });
    assert_eq!(view(&b, 21).state, "MASTER", "no flap back");
    assert_eq!(holders(&lab, &[&a, &b]), 1);
    lab.kill(&b, nix::sys::signal::Signal::SIGTERM);
    wait_state(&a, 21, "MASTER", TAKEOVER);
    wait_for("A holds the VIP", Duration::from_secs(2), POLL, || {
        lab.has_addr(&a.ns, VIP4).then_some(())
    });
}

/// Input: A MASTER, B BACKUP; A's eth0 is deleted, then re-created (a new
/// veth, so a new ifindex) with its address. Output: B takes over; A comes
/// back to BACKUP undemoted on the new interface; when B stops, A becomes
/// MASTER and holds the VIP within master-down + 1 s.
#[test]
#[ignore = "needs root: network namespaces"]
fn recreated_carpdev_is_picked_up_under_a_new_ifindex() {
    let lab = Lab::new("recdev", 2);
    let a = lab.carpd(0, "a", &words(22, 0));
    let b = lab.carpd(1, "b", &words(22, 100));
    assert_eq!(wait_single_master(&[&a, &b], 22, ELECTION), 0);
    let host = lab.host(0).clone();
    lab.exec_ok(&a.ns, &["ip", "link", "del", "eth0"]);
    let took = wait_state(&b, 22, "MASTER", TAKEOVER);
    eprintln!("B MASTER {took:?} after eth0 was deleted");
    wait_state(&a, 22, "INIT", Duration::from_secs(2));
    // Re-create eth0 as the lab made it: a veth into the switch's bridge.
    lab.exec_ok(
        &a.ns,
        &[
            "ip",
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &host.port,
            "netns",
            &lab.switch,
        ],
    );
    lab.exec_ok(
        &lab.switch,
        &["ip", "link", "set", &host.port, "master", "br0", "up"],
    );
    lab.exec_ok(
        &a.ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/24", host.v4),
            "dev",
            "eth0",
        ],
    );
    lab.exec_ok(&a.ns, &["ip", "link", "set", "eth0", "up"]);
    let new_index = lab.link_json(&a.ns, "eth0")["ifindex"]
        .as_u64()
        .unwrap_or(0) as u32;
    assert_ne!(new_index, host.ifindex, "a new ifindex");
    let took = wait_state(&a, 22, "BACKUP", Duration::from_secs(5));
    eprintln!("A BACKUP {took:?} after eth0 was re-created");
    wait_for("A undemoted", Duration::from_secs(3), POLL, || {
        (view(&a, 22).demote == 0).then_some(())
    });
    assert_eq!(view(&b, 22).state, "MASTER", "no flap back");
    lab.kill(&b, nix::sys::signal::Signal::SIGTERM);
    wait_state(&a, 22, "MASTER", TAKEOVER);
    wait_for("A holds the VIP", Duration::from_secs(2), POLL, || {
        lab.has_addr(&a.ns, VIP4).then_some(())
    });
    let mv = macvlan_name(new_index, 22);
    let out = lab.exec_ok(&a.ns, &["ip", "-o", "-4", "addr", "show", "dev", &mv]);
    assert!(out.contains(VIP4), "VIP on the new macvlan {mv}: {out}");
}

/// Input: A MASTER, B BACKUP; A's eth0 loses all its addresses. Output: as
/// OpenBSD `carp_send_ad` and FreeBSD `carp_send_ad_locked` do, A keeps
/// advertising (from 0.0.0.0) and B, accepting them, stays BACKUP: one
/// holder. Both daemons log it at warning; when the address returns, A
/// says so.
#[test]
#[ignore = "needs root: network namespaces"]
fn flushed_carpdev_addresses_are_logged_and_keep_one_master() {
    let lab = Lab::new("flush", 2);
    let a = lab.carpd(0, "a", &words(23, 0));
    let b = lab.carpd(1, "b", &words(23, 100));
    assert_eq!(wait_single_master(&[&a, &b], 23, ELECTION), 0);
    lab.exec_ok(&a.ns, &["ip", "addr", "flush", "dev", "eth0"]);
    wait_log(&a, "no IPv4 address to send from", Duration::from_secs(3));
    wait_log(&b, "from 0.0.0.0", Duration::from_secs(3));
    // Longer than B's master-down: B keeps hearing A.
    std::thread::sleep(TAKEOVER);
    assert_eq!(view(&a, 23).state, "MASTER");
    assert_eq!(view(&b, 23).state, "BACKUP");
    assert_eq!(holders(&lab, &[&a, &b]), 1);
    let host = lab.host(0).clone();
    lab.exec_ok(
        &a.ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{}/24", host.v4),
            "dev",
            "eth0",
        ],
    );
    wait_log(&a, "IPv4 source is", Duration::from_secs(3));
}

/// Input: A MASTER, B BACKUP of an IPv4 and an IPv6 VIP; A's namespace
/// creates interfaces with IPv6 disabled, so the kernel refuses A's IPv6 VIP
/// on its macvlan. Output: A does not stay a MASTER without its addresses: B
/// takes over within master-down + 1 s, and afterwards exactly one host
/// holds the IPv4 VIP.
#[test]
#[ignore = "needs root: network namespaces"]
fn refused_address_add_hands_over() {
    let lab = Lab::new("addfail", 2);
    lab.sysctl(lab.ns(0), "net.ipv6.conf.default.disable_ipv6", "1");
    let both = |advskew: u8| {
        Words::new("eth0", 24)
            .advbase(1)
            .advskew(advskew)
            .pass("envfaults")
            .addr(&format!("{VIP4}/24"))
            .addr("2001:db8::70/64")
            .build()
    };
    // A, the better one, times out first and takes over; its add fails.
    let a = lab.carpd(0, "a", &both(0));
    let b = lab.carpd(1, "b", &both(100));
    wait_state(&b, 24, "MASTER", ELECTION + TAKEOVER);
    wait_for("one holder", Duration::from_secs(3), POLL, || {
        (holders(&lab, &[&a, &b]) == 1 && lab.has_addr(&b.ns, VIP4)).then_some(())
    });
    // It stays that way: A is never MASTER for long.
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(holders(&lab, &[&a, &b]), 1, "one holder");
    }
    assert_eq!(view(&b, 24).state, "MASTER");
}

/// Input: A MASTER, B BACKUP; someone sets A's macvlan down (it keeps the
/// VIP but passes no traffic). Output: B takes over at once; A sets the
/// macvlan up again and returns to BACKUP, undemoted.
#[test]
#[ignore = "needs root: network namespaces"]
fn macvlan_set_down_hands_over_and_is_set_up() {
    let lab = Lab::new("downmv", 2);
    let a = lab.carpd(0, "a", &words(25, 0));
    let b = lab.carpd(1, "b", &words(25, 100));
    assert_eq!(wait_single_master(&[&a, &b], 25, ELECTION), 0);
    let mv = macvlan_name(lab.host(0).ifindex, 25);
    lab.exec_ok(&a.ns, &["ip", "link", "set", &mv, "down"]);
    wait_state(&b, 25, "MASTER", TAKEOVER);
    wait_state(&a, 25, "BACKUP", Duration::from_secs(5));
    let link = lab.link_json(&a.ns, &mv);
    let flags = link["flags"].to_string();
    assert!(flags.contains("\"UP\""), "macvlan set up again: {flags}");
    wait_for("A undemoted", Duration::from_secs(3), POLL, || {
        (view(&a, 25).demote == 0).then_some(())
    });
    assert_eq!(holders(&lab, &[&a, &b]), 1);
}
