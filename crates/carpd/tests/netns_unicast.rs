//! Unicast peers with real `carpd` processes in namespaces: routed across a
//! router (FreeBSD's `unicast_v4` / `unicast_v6` tests), on one segment
//! with IPv6 link-local peers, and with multicast blocked by nftables,
//! including `dual-path`.

mod common;

use std::time::Duration;

use common::Lab;
use common::daemon::{Carpd, state, view, wait_single_master};
use common::testbed::words::Words;

const PASS: &str = "unicast-secret";
/// Two first elections (master-down of the worst node, 3.4 s) with slack.
const ELECTION: Duration = Duration::from_secs(8);

fn vhost(carpdev: &str, vhid: u8, advskew: u8, vip: &str) -> Words {
    Words::new(carpdev, vhid)
        .advbase(1)
        .advskew(advskew)
        .pass(PASS)
        .addr(vip)
}

/// How many of `nodes` are MASTER of `vhid` right now.
fn masters(nodes: &[&Carpd], vhid: u8) -> usize {
    nodes
        .iter()
        .filter(|d| state(d, vhid).as_deref() == Some("MASTER"))
        .count()
}

/// Watch `nodes` for `secs` seconds: the most MASTERs seen at once.
fn most_masters(nodes: &[&Carpd], vhid: u8, secs: u64) -> usize {
    let mut most = 0;
    for _ in 0..secs * 5 {
        most = most.max(masters(nodes, vhid));
        std::thread::sleep(Duration::from_millis(200));
    }
    most
}

/// Input: A on LAN 192.0.2.0/24 with address 192.0.2.224, B on LAN
/// 203.0.113.0/24 with 203.0.113.224, a router R between them; each carpd
/// has the other's address as its peer (both end in .224, which FreeBSD
/// once took for multicast, PR 284872) and the VIP 198.51.100.50/32; the
/// adverts cross R, so they arrive with TTL 254. Output: exactly one
/// MASTER, no drops for TTL or source, and R reaches the VIP through a host
/// route to the MASTER.
#[test]
#[ignore = "needs root: network namespaces"]
fn routed_unicast_peers_ending_in_224() {
    let mut lab = Lab::new("ucroute", 3);
    let lan_b = lab.add_lan(&[1, 2]);
    let (a_ns, b_ns, r_ns) = (
        lab.ns(0).to_owned(),
        lab.ns(1).to_owned(),
        lab.ns(2).to_owned(),
    );
    // A keeps only eth0, B only eth1: different subnets, R in between.
    lab.exec_ok(&a_ns, &["ip", "addr", "flush", "dev", "eth0"]);
    lab.exec_ok(
        &a_ns,
        &["ip", "addr", "add", "192.0.2.224/24", "dev", "eth0"],
    );
    lab.exec_ok(
        &a_ns,
        &["ip", "route", "add", "203.0.113.0/24", "via", "192.0.2.12"],
    );
    lab.link_set(&b_ns, "eth0", false);
    lab.exec_ok(&b_ns, &["ip", "addr", "flush", "dev", &lan_b]);
    lab.exec_ok(
        &b_ns,
        &["ip", "addr", "add", "203.0.113.224/24", "dev", &lan_b],
    );
    lab.exec_ok(
        &b_ns,
        &["ip", "route", "add", "192.0.2.0/24", "via", "203.0.113.12"],
    );
    lab.sysctl(&r_ns, "net.ipv4.ip_forward", "1");

    let vip = "198.51.100.50/32";
    let a = lab.carpd(
        0,
        "a",
        &vhost("eth0", 3, 0, vip).peer("203.0.113.224").build(),
    );
    let b = lab.carpd(
        1,
        "b",
        &vhost(&lan_b, 3, 100, vip).peer("192.0.2.224").build(),
    );
    let master = wait_single_master(&[&a, &b], 3, ELECTION);
    assert_eq!(master, 0, "A (advskew 0) wins");
    assert_eq!(most_masters(&[&a, &b], 3, 3), 1, "two MASTERs over unicast");
    // The BACKUP hears the MASTER's adverts, which crossed R (TTL 254).
    let s = view(&b, 3).stats;
    assert!(s.accepted > 0, "b heard nothing: {s:?}");
    for d in [&a, &b] {
        let s = view(d, 3).stats;
        let drops = (s.bad_ttl, s.bad_peer, s.bad_auth);
        assert_eq!(drops, (0, 0, 0), "{}: {s:?}", d.name);
    }
    lab.exec_ok(
        &r_ns,
        &[
            "ip",
            "route",
            "add",
            "198.51.100.50/32",
            "via",
            "192.0.2.224",
        ],
    );
    lab.exec_ok(&r_ns, &["ping", "-c", "2", "-W", "2", "198.51.100.50"]);
}

/// Input: A and B on one segment, each with the other's IPv6 link-local
/// address as `peer6` and an IPv6 VIP only. Output: exactly one MASTER, and
/// both hear each other with no drops (the link-local peer is reached on the
/// carpdev, with its scope).
#[test]
#[ignore = "needs root: network namespaces"]
fn same_segment_unicast_with_link_local_peers() {
    let lab = Lab::new("ucll", 2);
    let ll = |i: usize| lab.host(i).link_local.to_string();
    let vip = "2001:db8::50/64";
    let a = lab.carpd(0, "a", &vhost("eth0", 4, 0, vip).peer6(&ll(1)).build());
    let b = lab.carpd(1, "b", &vhost("eth0", 4, 100, vip).peer6(&ll(0)).build());
    assert_eq!(wait_single_master(&[&a, &b], 4, ELECTION), 0);
    assert_eq!(most_masters(&[&a, &b], 4, 3), 1);
    let (sa, sb) = (view(&a, 4).stats, view(&b, 4).stats);
    assert!(sa.opackets6 > 0 && sb.accepted > 0, "a {sa:?}, b {sb:?}");
    for s in [sa, sb] {
        assert_eq!((s.bad_peer, s.bad_auth, s.send_errors), (0, 0, 0), "{s:?}");
    }
}

/// nftables on the bridge between the nodes: drop CARP to the group
/// (`multicast`) or to anything else (`unicast`). On the bridge, since
/// multicast adverts leave the nodes as frames from a packet socket, which
/// a host's own output hook does not see.
fn block(lab: &Lab, what: &str) {
    let rule = match what {
        "multicast" => "ip protocol 112 ip daddr 224.0.0.18",
        _ => "ip protocol 112 ip daddr != 224.0.0.18",
    };
    lab.bridge_drop("carpt_block", &[rule]);
}

fn unblock(lab: &Lab) {
    lab.bridge_undrop("carpt_block");
}

/// Input: multicast CARP dropped by nftables on the bridge. Output: without
/// peers both become MASTER (so the blocking works and the test can fail);
/// with peers, exactly one MASTER.
#[test]
#[ignore = "needs root: network namespaces"]
fn blocked_multicast_splits_the_brain_unless_peers_are_set() {
    let lab = Lab::new("ucblock", 2);
    block(&lab, "multicast");
    let vip = "192.0.2.50/24";
    let (a_addr, b_addr) = (lab.host(0).v4.to_string(), lab.host(1).v4.to_string());
    {
        let a = lab.carpd(0, "a-mc", &vhost("eth0", 5, 0, vip).build());
        let b = lab.carpd(1, "b-mc", &vhost("eth0", 5, 100, vip).build());
        std::thread::sleep(ELECTION);
        assert_eq!(masters(&[&a, &b], 5), 2, "multicast was not blocked");
        for d in [&a, &b] {
            lab.kill(d, nix::sys::signal::Signal::SIGTERM);
            lab.wait_exit(d, Duration::from_secs(5));
        }
    }
    let a = lab.carpd(0, "a", &vhost("eth0", 6, 0, vip).peer(&b_addr).build());
    let b = lab.carpd(1, "b", &vhost("eth0", 6, 100, vip).peer(&a_addr).build());
    assert_eq!(wait_single_master(&[&a, &b], 6, ELECTION), 0);
    assert_eq!(most_masters(&[&a, &b], 6, 3), 1, "two MASTERs with peers");
}

/// Input: dual-path on both nodes (peers plus the group); first multicast
/// blocked, then unicast blocked instead. Output: exactly one MASTER
/// throughout, each path alone carrying the election.
#[test]
#[ignore = "needs root: network namespaces"]
fn dual_path_keeps_one_master_while_either_path_is_blocked() {
    let lab = Lab::new("ucdual", 2);
    let vip = "192.0.2.50/24";
    let (a_addr, b_addr) = (lab.host(0).v4.to_string(), lab.host(1).v4.to_string());
    let words = |skew: u8, peer: &str| {
        vhost("eth0", 7, skew, vip)
            .peer(peer)
            .raw("dual-path")
            .raw("on")
            .build()
    };
    let a = lab.carpd(0, "a", &words(0, &b_addr));
    let b = lab.carpd(1, "b", &words(100, &a_addr));
    assert_eq!(wait_single_master(&[&a, &b], 7, ELECTION), 0);
    for path in ["multicast", "unicast"] {
        block(&lab, path);
        // Longer than B's master-down (3.4 s): it would have taken over.
        assert_eq!(
            most_masters(&[&a, &b], 7, 5),
            1,
            "{path} blocked: two MASTERs"
        );
        assert_eq!(masters(&[&a], 7), 1, "{path} blocked: A lost MASTER");
        unblock(&lab);
    }
}
