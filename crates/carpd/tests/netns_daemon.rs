//! Root-only tests of the real `carpd` and `carpctl` binaries in network
//! namespaces joined by a bridge (issue "carpd on Linux"; spec sections 5,
//! 6, 10.3 and 11; STYLE 6.7 item 8).
//!
//! The tests need root and are ignored by default; run them with
//! `cargo test -p carpd --test netns_daemon -- --include-ignored
//! --test-threads=2`. Every daemon uses advbase 1, so master-down is
//! 3 s + advskew/256; waits are bounded by that plus slack. Timings are
//! printed (`--nocapture` shows them).

mod common;

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon::{
    Carpd, Pinger, carpctl, carpctl_ok, master_down, signed_advert, state, stats, view, wait_for,
    wait_single_master, wait_state, wait_state_fast, wall_now,
};
use common::testbed::words::Words;
use common::{Lab, in_netns};
use nix::sys::signal::Signal;

const VIP4: &str = "192.0.2.50";
const VIP6: &str = "2001:db8::50";
const PASS: &str = "netns-secret";
/// Slack added to protocol bounds for process scheduling on a busy machine.
const SLACK: Duration = Duration::from_secs(1);
/// Bound for a first election (master-down of the worst node + slack).
const ELECTION: Duration = Duration::from_secs(8);

/// ifconfig-style words for one vhost on eth0 with advbase 1.
fn vhost(vhid: u8, advskew: u8, addrs: &[&str]) -> Vec<String> {
    let w = Words::new("eth0", vhid)
        .advbase(1)
        .advskew(advskew)
        .pass(PASS);
    addrs.iter().fold(w, |w, a| w.addr(a)).build()
}

fn with_preempt(mut words: Vec<String>) -> Vec<String> {
    words.insert(0, "--preempt".to_owned());
    words
}

fn v4(a: &str) -> String {
    format!("{a}/24")
}

fn v6(a: &str) -> String {
    format!("{a}/64")
}

/// Assert that `vip` is held in exactly the namespace of `holder` among `nodes`.
fn assert_vip_only_on(lab: &Lab, vip: &str, holder: &Carpd, nodes: &[&Carpd]) {
    for d in nodes {
        let has = lab.has_addr(&d.ns, vip);
        if d.ns == holder.ns {
            assert!(has, "{vip} missing on MASTER {}", d.name);
        } else {
            assert!(!has, "{vip} present on non-MASTER {}", d.name);
        }
    }
}

/// Ping `dst` from `ns` until one echo is answered (bounded).
fn ping_ok(lab: &Lab, ns: &str, dst: &str) {
    wait_for(
        &format!("ping {dst} from {ns}"),
        Duration::from_secs(5),
        Duration::from_millis(100),
        || {
            lab.exec(ns, &["ping", "-n", "-c", "1", "-W", "1", dst])
                .status
                .success()
                .then_some(())
        },
    );
}

/// Input: A (advskew 0) and B (advskew 100), vhid 7 with an IPv4 and an IPv6
/// VIP, default lladdr virtual. Output: exactly one MASTER (A); both VIPs on
/// A only; the client pings both, and its neighbour entries for them show
/// the virtual MAC 00:00:5e:00:01:07 (spec 6, FB-T nd6_ns_source_mac).
#[test]
#[ignore = "needs root: network namespaces"]
fn election_two_nodes_ipv4_ipv6() {
    let lab = Lab::new("elect2", 3);
    let addrs = [v4(VIP4), v6(VIP6)];
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let a = lab.carpd(0, "a", &vhost(7, 0, &addrs));
    let b = lab.carpd(1, "b", &vhost(7, 100, &addrs));
    let m = wait_single_master(&[&a, &b], 7, ELECTION);
    assert_eq!(m, 0, "the advskew-0 node must win");
    for vip in [VIP4, VIP6] {
        assert_vip_only_on(&lab, vip, &a, &[&a, &b]);
    }
    let client = lab.ns(2);
    ping_ok(&lab, client, VIP4);
    ping_ok(&lab, client, VIP6);
    for vip in [VIP4, VIP6] {
        assert_eq!(
            lab.neigh_lladdr(client, vip).as_deref(),
            Some("00:00:5e:00:01:07"),
            "client's neighbour entry for {vip}"
        );
    }
    let v = view(&a, 7);
    assert_eq!((v.lladdr.as_str(), v.advskew), ("virtual", 0));
    assert_eq!(view(&b, 7).state, "BACKUP");
}

/// Input: three nodes with advskew 200, 100, 0 started in that order.
/// Output: exactly one MASTER, the advskew-0 node (its master-down timer
/// fires first, the others hear it and stay BACKUP).
#[test]
#[ignore = "needs root: network namespaces"]
fn election_three_nodes() {
    let lab = Lab::new("elect3", 3);
    let vip = v4(VIP4);
    let c = lab.carpd(2, "c", &vhost(1, 200, &[&vip]));
    let b = lab.carpd(1, "b", &vhost(1, 100, &[&vip]));
    let a = lab.carpd(0, "a", &vhost(1, 0, &[&vip]));
    let m = wait_single_master(&[&a, &b, &c], 1, ELECTION);
    assert_eq!(m, 0, "the advskew-0 node must win");
    assert_vip_only_on(&lab, VIP4, &a, &[&a, &b, &c]);
}

/// Input: A (advskew 0) MASTER, B (advskew 100) BACKUP, both --preempt;
/// `ip link set eth0 down` on A, later up. Output: B MASTER within
/// 3 x interval(B) + 1 s and A in INIT without the VIP; after the link
/// returns A preempts back and B releases the VIP.
#[test]
#[ignore = "needs root: network namespaces"]
fn failover_on_master_link_down() {
    let lab = Lab::new("linkdown", 2);
    let vip = v4(VIP4);
    let a = lab.carpd(0, "a", &with_preempt(vhost(1, 0, &[&vip])));
    let b = lab.carpd(1, "b", &with_preempt(vhost(1, 100, &[&vip])));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);

    let t0 = Instant::now();
    lab.link_set(&a.ns, "eth0", false);
    // 3 x interval(B) = 3 x (advbase + advskew/256) from A's last advert.
    let bound = master_down(1, 100) + SLACK;
    let took = wait_state_fast(&b, 1, "MASTER", t0, bound);
    println!("link-down failover: B MASTER after {took:?} (bound {bound:?})");
    // A's last advert left at most one interval (1 s) before the link went down.
    assert!(
        took >= master_down(1, 100) - Duration::from_millis(1100),
        "B took over before its master-down interval ({took:?})"
    );
    assert_eq!(state(&a, 1).as_deref(), Some("INIT"));
    assert_vip_only_on(&lab, VIP4, &b, &[&a, &b]);

    let t1 = Instant::now();
    lab.link_set(&a.ns, "eth0", true);
    let took = wait_state_fast(&a, 1, "MASTER", t1, Duration::from_secs(5));
    println!("link-up preemption: A MASTER again after {took:?}");
    wait_state(&b, 1, "BACKUP", Duration::from_secs(3));
    assert_vip_only_on(&lab, VIP4, &a, &[&a, &b]);
}

/// Input: A (advskew 0, no guard) MASTER, B BACKUP, no preempt; kill -9 A,
/// then take A's link down to simulate a dead host. Output: the crashed
/// process left its VIP in A's namespace (netns_guard.rs shows the guard); B takes over within master-down + slack.
/// Then A's link comes back and carpd restarts: start-up hygiene removes
/// the stale VIP and A, now BACKUP (no preempt), does not hold it while B
/// stays MASTER.
#[test]
#[ignore = "needs root: network namespaces"]
fn failover_on_kill9() {
    let lab = Lab::new("kill9", 2);
    let addrs = [v4(VIP4), v6(VIP6)];
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let no_guard = std::iter::once("--no-guard".to_owned()).chain(vhost(1, 0, &addrs));
    let mut a = lab.carpd(0, "a", &no_guard.collect::<Vec<_>>());
    let b = lab.carpd(1, "b", &vhost(1, 100, &addrs));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);

    let t0 = Instant::now();
    lab.kill(&a, Signal::SIGKILL);
    assert_eq!(lab.wait_exit(&a, Duration::from_secs(5)), None);
    assert!(
        lab.has_addr(&a.ns, VIP4) && lab.has_addr(&a.ns, VIP6),
        "a SIGKILLed carpd cannot remove its VIPs"
    );
    lab.link_set(&a.ns, "eth0", false);
    let bound = master_down(1, 100) + SLACK;
    let took = wait_state_fast(&b, 1, "MASTER", t0, bound);
    println!("kill -9 failover: B MASTER after {took:?} (bound {bound:?})");
    assert!(lab.has_addr(&b.ns, VIP4) && lab.has_addr(&b.ns, VIP6));

    lab.link_set(&a.ns, "eth0", true);
    lab.start(&mut a);
    // The control socket answers only after start-up hygiene ran.
    wait_state(&a, 1, "BACKUP", Duration::from_secs(5));
    for vip in [VIP4, VIP6] {
        assert!(
            !lab.has_addr(&a.ns, vip),
            "stale {vip} survived the restart"
        );
    }
    // A better node without preempt stays BACKUP: watch it for 2 adverts of B.
    let until = Instant::now() + Duration::from_millis(2800);
    while Instant::now() < until {
        assert_eq!(state(&a, 1).as_deref(), Some("BACKUP"));
        assert_eq!(state(&b, 1).as_deref(), Some("MASTER"));
        assert!(!lab.has_addr(&a.ns, VIP4), "BACKUP holds the VIP");
        thread::sleep(Duration::from_millis(200));
    }
    assert_vip_only_on(&lab, VIP6, &b, &[&a, &b]);
}

/// Input: A (advskew 0) MASTER, B BACKUP; the client pings the VIP every
/// 10 ms; SIGTERM to A. Output: A bows out (advbase 255 / advskew 255,
/// spec 5.4), so B is MASTER within ~100 ms, far under one advert interval;
/// A removes its VIP and exits 0; the client's longest gap between
/// replies stays under 250 ms (in practice one ping interval).
#[test]
#[ignore = "needs root: network namespaces"]
fn bow_out_on_sigterm() {
    let lab = Lab::new("bowout", 3);
    let vip = v4(VIP4);
    let a = lab.carpd(0, "a", &vhost(1, 0, &[&vip]));
    let b = lab.carpd(1, "b", &vhost(1, 100, &[&vip]));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    let client = lab.ns(2);
    ping_ok(&lab, client, VIP4);

    let pinger = Pinger::start(client, VIP4, Duration::from_millis(10)).expect("ping");
    // A baseline of replies before the switch-over.
    thread::sleep(Duration::from_millis(500));
    let wall0 = wall_now();
    let t0 = Instant::now();
    lab.kill(&a, Signal::SIGTERM);
    let took = wait_state_fast(&b, 1, "MASTER", t0, Duration::from_secs(5));
    let code = lab.wait_exit(&a, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(700));
    // The window ends a little before ping is stopped, so the last reply
    // is not missing just because it was still in flight.
    let wall1 = wall_now() - 0.05;
    let seen = pinger.finish().outage(wall0 - 0.3, wall1);
    let outage = seen.outage;
    println!("bow-out: B MASTER after {took:?}; client {seen}");
    assert!(
        took < Duration::from_millis(250),
        "bow-out failover took {took:?}; it must not wait for master-down"
    );
    assert_eq!(code, Some(0), "carpd must exit 0 on SIGTERM");
    assert!(!lab.has_addr(&a.ns, VIP4), "A kept its VIP after exiting");
    assert!(lab.has_addr(&b.ns, VIP4));
    assert!(
        outage < Duration::from_millis(250),
        "client outage {outage:?} on a planned stop"
    );
}

/// Input: B (advskew 100) alone becomes MASTER; A (advskew 0) starts later,
/// first without --preempt, then restarted with it. Output: without preempt
/// A stays BACKUP over several of B's adverts; with preempt A takes over at
/// B's next advert (spec 5.3 rule 1).
#[test]
#[ignore = "needs root: network namespaces"]
fn preemption_on_off() {
    let lab = Lab::new("preempt", 2);
    let vip = v4(VIP4);
    let b = lab.carpd(1, "b", &vhost(1, 100, &[&vip]));
    wait_state(&b, 1, "MASTER", ELECTION);

    let mut a = lab.carpd(0, "a", &vhost(1, 0, &[&vip]));
    wait_state(&a, 1, "BACKUP", Duration::from_secs(3));
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(state(&a, 1).as_deref(), Some("BACKUP"), "A preempted");
        assert_eq!(state(&b, 1).as_deref(), Some("MASTER"));
        thread::sleep(Duration::from_millis(200));
    }
    assert!(view(&a, 1).last_master.is_some(), "A never heard B");

    lab.kill(&a, Signal::SIGTERM);
    assert_eq!(lab.wait_exit(&a, Duration::from_secs(5)), Some(0));
    a.args.insert(0, "--preempt".to_owned());
    let t0 = Instant::now();
    lab.start(&mut a);
    let took = wait_state_fast(&a, 1, "MASTER", t0, Duration::from_secs(4));
    println!(
        "preempt: A MASTER {took:?} after start ({})",
        view(&a, 1).cause
    );
    wait_state(&b, 1, "BACKUP", Duration::from_secs(3));
    assert_vip_only_on(&lab, VIP4, &a, &[&a, &b]);
}

/// Input: A (advskew 0) MASTER, B (advskew 100) BACKUP, both --preempt;
/// `carpctl demote` on A, later `carpctl undemote`. Output: A advertises
/// demote 1 at once and B, seeing a higher demote count, takes over within
/// 100 ms (OB-REG carp_1); after undemote A preempts back.
#[test]
#[ignore = "needs root: network namespaces"]
fn demotion_via_carpctl() {
    let lab = Lab::new("demote", 2);
    let vip = v4(VIP4);
    let a = lab.carpd(0, "a", &with_preempt(vhost(1, 0, &[&vip])));
    let b = lab.carpd(1, "b", &with_preempt(vhost(1, 100, &[&vip])));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);

    let t0 = Instant::now();
    carpctl_ok(&a, &["demote"]);
    let took = wait_state_fast(&b, 1, "MASTER", t0, Duration::from_secs(5));
    let down = wait_state_fast(&a, 1, "BACKUP", t0, Duration::from_secs(5));
    println!("demotion: B MASTER after {took:?}, A BACKUP after {down:?}");
    assert!(
        took < Duration::from_millis(100),
        "demotion failover took {took:?} (OB-REG: 0.1 s)"
    );
    assert_eq!(view(&a, 1).demote, 1);
    assert_vip_only_on(&lab, VIP4, &b, &[&a, &b]);

    let t1 = Instant::now();
    carpctl_ok(&a, &["undemote"]);
    let took = wait_state_fast(&a, 1, "MASTER", t1, Duration::from_secs(4));
    println!("undemote: A MASTER again after {took:?}");
    wait_state(&b, 1, "BACKUP", Duration::from_secs(3));
    assert_eq!(view(&a, 1).demote, 0);
    assert_vip_only_on(&lab, VIP4, &a, &[&a, &b]);
}

/// Input: a client captures IPv4 protocol 112 for 3 s with tshark while A
/// is MASTER of vhid 9. Output: tshark's CARP dissector decodes our
/// adverts as version 2, vhid 9, checksum good, advbase 1.
#[test]
#[ignore = "needs root: network namespaces"]
fn tshark_decodes_our_adverts() {
    let lab = Lab::new("tshark", 2);
    let vip = v4(VIP4);
    let a = lab.carpd(0, "a", &vhost(9, 0, &[&vip]));
    wait_state(&a, 9, "MASTER", ELECTION);
    let out = lab.exec(
        lab.ns(1),
        &[
            "tshark",
            "-n",
            "-i",
            "eth0",
            "-a",
            "duration:3",
            "-f",
            "ip proto 112",
            "-d",
            "ip.proto==112,carp",
            "-T",
            "fields",
            "-e",
            "carp.version",
            "-e",
            "carp.vhid",
            "-e",
            "carp.checksum.status",
            "-e",
            "carp.adver_int",
            "-e",
            "ip.ttl",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split('\t').collect())
        .collect();
    println!("tshark rows: {rows:?}");
    assert!(
        rows.len() >= 2,
        "expected >= 2 adverts in 3 s, got {rows:?}"
    );
    for r in &rows {
        // checksum.status: 1 = good in Wireshark's proto_checksum_enum_e.
        assert_eq!(r, &["2", "9", "1", "1", "255"], "decoded advert");
    }
}

// ===== crafted packets =====

/// A CARP advert with a valid checksum and an HMAC under `pass`.
fn advert(vhid: u8, advbase: u8, advskew: u8, pass: &str, vips: &[Ipv4Addr]) -> [u8; 36] {
    signed_advert(
        vhid,
        advbase,
        advskew,
        pass.as_bytes(),
        vips,
        rand::random(),
    )
}

/// Send `bytes` as IP protocol 112 to 224.0.0.18 from namespace `ns`
/// (source `src`) with IP TTL `ttl`.
fn send_raw(ns: &str, src: Ipv4Addr, ttl: u32, bytes: Vec<u8>) {
    in_netns(ns, move || {
        use socket2::{Domain, Protocol, SockAddr, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).expect("raw");
        s.set_multicast_if_v4(&src).expect("IP_MULTICAST_IF");
        s.set_multicast_ttl_v4(ttl).expect("IP_MULTICAST_TTL");
        s.set_ttl_v4(ttl).expect("IP_TTL");
        s.set_multicast_loop_v4(false).expect("IP_MULTICAST_LOOP");
        let dst = SockAddr::from(std::net::SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 18), 0));
        s.send_to(&bytes, &dst).expect("send");
    });
}

/// Input: A (advskew 0) MASTER and B (advskew 100) BACKUP of vhid 5; a third
/// namespace multicasts crafted bow-out adverts (advbase 255, advskew 255:
/// if accepted, B would take over at once): wrong password with a valid
/// checksum, TTL 64, unknown vhid, bad checksum. Output: wrong password
/// and bad checksum raise exactly their counter in B's `carpctl stats
/// --json` (bad_auth, bad_sum); TTL 64 and the unknown vhid die in the
/// kernel (the socket filter, `os/bpf.rs`): a bad-checksum marker sent
/// after each is the only drop B counts. Nothing else changes: B stays
/// BACKUP, A MASTER, no transition. Control: the same advert, correct,
/// makes B take over.
#[test]
#[ignore = "needs root: network namespaces"]
fn bad_packets_are_dropped_and_counted() {
    let lab = Lab::new("badpkt", 3);
    let vip = v4(VIP4);
    let a = lab.carpd(0, "a", &vhost(5, 0, &[&vip]));
    let b = lab.carpd(1, "b", &vhost(5, 100, &[&vip]));
    assert_eq!(wait_single_master(&[&a, &b], 5, ELECTION), 0);
    let vips = [VIP4.parse::<Ipv4Addr>().expect("vip")];
    let (ns, src) = (lab.ns(2).to_owned(), lab.host(2).v4);

    let good = advert(5, 255, 255, PASS, &vips);
    let mut bad_sum = good;
    bad_sum[6] ^= 0x5a;
    let cases: [(&str, u32, [u8; 36]); 2] = [
        ("bad_auth", 255, advert(5, 255, 255, "wrong-pass", &vips)),
        ("bad_sum", 255, bad_sum),
    ];
    let counter = |s: &carp_proto::Stats, name: &str| match name {
        "bad_auth" => s.bad_auth,
        "bad_sum" => s.bad_sum,
        _ => unreachable!(),
    };
    for (name, ttl, bytes) in cases {
        let before = stats(&b);
        send_raw(&ns, src, ttl, bytes.to_vec());
        let (after, _) = wait_for(
            &format!("{name} counted on B"),
            Duration::from_secs(3),
            Duration::from_millis(20),
            || {
                let s = stats(&b);
                (counter(&s, name) > counter(&before, name)).then_some(s)
            },
        );
        assert_eq!(counter(&after, name), counter(&before, name) + 1, "{name}");
        assert_eq!(
            after.dropped(),
            before.dropped() + 1,
            "{name}: exactly one drop, under its own counter ({before:?} -> {after:?})"
        );
        assert_eq!(after.transitions, before.transitions, "{name}: transition");
        assert_eq!(after.preempt, before.preempt, "{name}: preempt");
        assert_eq!(state(&b, 5).as_deref(), Some("BACKUP"), "{name}");
        assert_eq!(state(&a, 5).as_deref(), Some("MASTER"), "{name}");
        let v = view(&b, 5);
        assert_eq!(
            v.last_master.as_deref(),
            Some(lab.host(0).v4.to_string().as_str()),
            "{name}: B's master changed"
        );
    }

    // Filtered in the kernel: only the marker after each reaches carpd (the
    // same sender and path keep the two in order).
    let filtered: [(&str, u32, [u8; 36]); 2] = [
        ("TTL 64", 64, good),
        ("unknown vhid", 255, advert(99, 255, 255, PASS, &vips)),
    ];
    for (name, ttl, bytes) in filtered {
        let before = stats(&b);
        send_raw(&ns, src, ttl, bytes.to_vec());
        send_raw(&ns, src, 255, bad_sum.to_vec());
        let (after, _) = wait_for(
            &format!("the marker after {name} counted on B"),
            Duration::from_secs(3),
            Duration::from_millis(20),
            || {
                let s = stats(&b);
                (s.bad_sum > before.bad_sum).then_some(s)
            },
        );
        assert_eq!(
            after.dropped(),
            before.dropped() + 1,
            "{name} reached carpd ({before:?} -> {after:?})"
        );
        assert_eq!(after.transitions, before.transitions, "{name}: transition");
        assert_eq!(state(&b, 5).as_deref(), Some("BACKUP"), "{name}");
    }

    // Control: the correct bow-out from the same sender is accepted.
    let before = stats(&b);
    send_raw(&ns, src, 255, good.to_vec());
    wait_for(
        "the valid crafted bow-out makes B take over",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || (stats(&b).preempt > before.preempt).then_some(()),
    );
}

/// Input: FreeBSD handbook (carp(4) "Using CARP on FreeBSD"): hosta is
/// MASTER of vhid 1 (.50), hostb of vhid 2 (.51), provider backs both up
/// with advskew 100; everyone --preempt. hosta's link goes down, then up.
/// Output: .50 moves to provider within master-down + slack, .51 stays on
/// hostb; when hosta returns it takes .50 back.
#[test]
#[ignore = "needs root: network namespaces"]
fn freebsd_handbook_scenario() {
    let lab = Lab::new("handbook", 3);
    let (v50, v51) = (v4("192.0.2.50"), v4("192.0.2.51"));
    let hosta = lab.carpd(0, "hosta", &with_preempt(vhost(1, 0, &[&v50])));
    let hostb = lab.carpd(1, "hostb", &with_preempt(vhost(2, 0, &[&v51])));
    let mut words = with_preempt(vhost(1, 100, &[&v50]));
    words.extend(vhost(2, 100, &[&v51]).into_iter().skip(2)); // no second "carpdev eth0"
    let provider = lab.carpd(2, "provider", &words);
    wait_state(&hosta, 1, "MASTER", ELECTION);
    wait_state(&hostb, 2, "MASTER", ELECTION);
    wait_state(&provider, 1, "BACKUP", ELECTION);
    wait_state(&provider, 2, "BACKUP", ELECTION);
    assert_vip_only_on(&lab, "192.0.2.50", &hosta, &[&hosta, &hostb, &provider]);
    assert_vip_only_on(&lab, "192.0.2.51", &hostb, &[&hosta, &hostb, &provider]);

    let t0 = Instant::now();
    lab.link_set(&hosta.ns, "eth0", false);
    let took = wait_state_fast(&provider, 1, "MASTER", t0, master_down(1, 100) + SLACK);
    println!("handbook: provider MASTER of vhid 1 after {took:?}");
    assert_vip_only_on(&lab, "192.0.2.50", &provider, &[&hosta, &hostb, &provider]);
    assert_eq!(state(&provider, 2).as_deref(), Some("BACKUP"));
    assert_vip_only_on(&lab, "192.0.2.51", &hostb, &[&hosta, &hostb, &provider]);

    let t1 = Instant::now();
    lab.link_set(&hosta.ns, "eth0", true);
    let took = wait_state_fast(&hosta, 1, "MASTER", t1, Duration::from_secs(5));
    println!("handbook: hosta MASTER of vhid 1 again after {took:?}");
    wait_state(&provider, 1, "BACKUP", Duration::from_secs(3));
    assert_vip_only_on(&lab, "192.0.2.50", &hosta, &[&hosta, &hostb, &provider]);
    assert_eq!(state(&hostb, 2).as_deref(), Some("MASTER"));
}

/// Input: OpenBSD-style group failover. Hosts X and Y on two LANs, vhid 1
/// on eth0 (LAN 1) and vhid 2 on eth1 (LAN 2); Y has advskew 100; both
/// --preempt. X's eth1 goes down, then up. Output: X demotes group carp,
/// so Y takes vhid 1 at once (higher demote on X's advert) and vhid 2 at
/// master-down; when eth1 returns X takes both back.
#[test]
#[ignore = "needs root: network namespaces"]
fn openbsd_group_failover() {
    let mut lab = Lab::new("group", 2);
    let ifname = lab.add_lan(&[0, 1]);
    assert_eq!(ifname, "eth1");
    let (v1, v2) = (v4(VIP4), "203.0.113.50/24".to_owned());
    let words = |skew: u8| {
        let mut w = with_preempt(vhost(1, skew, &[&v1]));
        w.extend(["carpdev".to_owned(), "eth1".to_owned()]);
        w.extend(vhost(2, skew, &[&v2]).into_iter().skip(2));
        w
    };
    let x = lab.carpd(0, "x", &words(0));
    let y = lab.carpd(1, "y", &words(100));
    for vhid in [1, 2] {
        assert_eq!(wait_single_master(&[&x, &y], vhid, ELECTION), 0);
    }

    let t0 = Instant::now();
    lab.link_set(&x.ns, "eth1", false);
    let fast = wait_state_fast(&y, 1, "MASTER", t0, Duration::from_secs(5));
    let slow = wait_state_fast(&y, 2, "MASTER", t0, master_down(1, 100) + SLACK);
    println!("group failover: Y MASTER of vhid 1 after {fast:?}, of vhid 2 after {slow:?}");
    assert!(
        fast < Duration::from_millis(500),
        "vhid 1 must move on X's demoted advert, not on a timer ({fast:?})"
    );
    assert_eq!(state(&x, 1).as_deref(), Some("BACKUP"));
    assert_eq!(state(&x, 2).as_deref(), Some("INIT"));
    assert_eq!(view(&x, 1).demote, 1);
    assert_vip_only_on(&lab, VIP4, &y, &[&x, &y]);
    assert_vip_only_on(&lab, "203.0.113.50", &y, &[&x, &y]);

    let t1 = Instant::now();
    lab.link_set(&x.ns, "eth1", true);
    for vhid in [1, 2] {
        let took = wait_state_fast(&x, vhid, "MASTER", t1, Duration::from_secs(5));
        println!("group failback: X MASTER of vhid {vhid} after {took:?}");
        wait_state(&y, vhid, "BACKUP", Duration::from_secs(3));
    }
    assert_eq!(view(&x, 1).demote, 0);
    assert_vip_only_on(&lab, VIP4, &x, &[&x, &y]);
    assert_vip_only_on(&lab, "203.0.113.50", &x, &[&x, &y]);
}

/// Wait until `d`'s log contains `needle` (bounded).
fn wait_log(d: &Carpd, needle: &str) {
    wait_for(
        &format!("{} logs {needle:?}", d.name),
        Duration::from_secs(5),
        Duration::from_millis(50),
        || {
            std::fs::read_to_string(&d.log)
                .unwrap_or_default()
                .contains(needle)
                .then_some(())
        },
    );
}

/// Input: carpd run --config file.toml (one vhid, alone so MASTER); a
/// `carpctl watch` runs throughout. SIGHUP with the file unchanged, then
/// with advskew changed, then with a broken file. Output: the reloads are
/// logged ("1 unchanged", "1 changed", "reload failed"); the vhost stays
/// MASTER with no transition (watch prints nothing, `since` keeps growing,
/// the transition counter is unchanged); advskew becomes 50; the broken
/// file leaves the daemon running on the old configuration, and `carpctl
/// reload` reports the error. A forced `state backup` at the end proves the
/// watch was listening.
#[test]
#[ignore = "needs root: network namespaces"]
fn config_file_and_reload() {
    let lab = Lab::new("reload", 1);
    let file = lab.path("carpd.toml");
    let toml = |skew: u8| {
        format!(
            "preempt = false\nlog_level = 7\n\n[[vhost]]\ncarpdev = \"eth0\"\nvhid = 3\nadvbase = 1\n\
             advskew = {skew}\npass = \"{PASS}\"\naddresses = [\"192.0.2.53/24\"]\n"
        )
    };
    std::fs::write(&file, toml(0)).expect("write config");
    let a = lab.carpd(0, "a", &["--config", file.to_str().expect("utf-8")]);
    wait_state(&a, 3, "MASTER", ELECTION);
    assert!(lab.has_addr(&a.ns, "192.0.2.53"));
    let sock = a.sock.to_str().expect("utf-8").to_owned();
    let watch_log = lab.path("watch.log");
    let watch = lab.spawn_logged(
        &a.ns,
        &[common::daemon::CARPCTL, "--control", &sock, "watch"],
        &watch_log,
    );
    let transitions = stats(&a).transitions;
    let mut since = view(&a, 3).since_secs;

    let mut check_kept = |what: &str| {
        let v = view(&a, 3);
        assert_eq!(v.state, "MASTER", "{what}");
        assert!(v.since_secs > since, "{what}: state re-entered");
        since = v.since_secs;
        assert_eq!(stats(&a).transitions, transitions, "{what}: transition");
        assert!(lab.has_addr(&a.ns, "192.0.2.53"), "{what}: VIP lost");
        v
    };

    lab.kill(&a, Signal::SIGHUP);
    wait_log(&a, "reloaded: 1 unchanged, 0 changed, 0 added");
    check_kept("unchanged reload");

    std::fs::write(&file, toml(50)).expect("write config");
    lab.kill(&a, Signal::SIGHUP);
    wait_log(&a, "reloaded: 0 unchanged, 1 changed, 0 added");
    let v = check_kept("advskew reload");
    assert_eq!(v.advskew, 50);

    std::fs::write(&file, "[[vhost]]\ncarpdev = \"eth0\"\nvhid = \n").expect("write config");
    lab.kill(&a, Signal::SIGHUP);
    wait_log(&a, "reload failed, keeping the running configuration");
    assert!(
        lab.wait_child(a.pid, Duration::ZERO).is_none(),
        "carpd died on a broken config"
    );
    let v = check_kept("broken reload");
    assert_eq!(v.advskew, 50);
    let out = carpctl(&a, &["reload"]);
    assert!(!out.status.success(), "carpctl reload of a broken file");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("carpd.toml"), "error names the file: {err}");

    let watched = std::fs::read_to_string(&watch_log).unwrap_or_default();
    assert!(watched.is_empty(), "watch saw transitions: {watched}");
    carpctl_ok(&a, &["state", "3", "backup"]);
    wait_for(
        "watch prints the forced transition",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || {
            std::fs::read_to_string(&watch_log)
                .unwrap_or_default()
                .contains("MASTER -> BACKUP")
                .then_some(())
        },
    );
    lab.signal(watch, Signal::SIGTERM);
}

/// Input: `carpctl state 9 master` against a daemon with only vhid 1;
/// `carpctl status` against a path nobody listens on and against the
/// leftover socket of a SIGKILLed daemon. Output: non-zero exits; the first
/// says no vhid 9 is configured, the others name the socket path.
#[test]
#[ignore = "needs root: network namespaces"]
fn carpctl_errors() {
    let lab = Lab::new("ctlerr", 1);
    let vip = v4(VIP4);
    let a = lab.carpd(0, "a", &vhost(1, 0, &[&vip]));
    let out = carpctl(&a, &["state", "9", "master"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unknown vhid must fail");
    assert!(err.contains("no vhid 9"), "message: {err}");
    let out = carpctl(&a, &["state", "1", "sideways"]);
    assert!(!out.status.success(), "bad state word must fail");

    let mut ghost = a.clone();
    ghost.sock = lab.path("nobody.sock");
    let out = carpctl(&ghost, &["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(ghost.sock.to_str().expect("utf-8")),
        "message names the path: {err}"
    );

    lab.kill(&a, Signal::SIGKILL);
    lab.wait_exit(&a, Duration::from_secs(5));
    assert!(a.sock.exists(), "a SIGKILLed daemon leaves its socket file");
    let out = carpctl(&a, &["status", "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(a.sock.to_str().expect("utf-8")),
        "message names the path: {err}"
    );
}

/// Input: A runs `carpd run --preempt --log-level 7 --config file` where
/// the file says `preempt = false` and sets no log level; B (advskew 100)
/// without preempt. A reloads the unchanged file (`carpctl reload`), then
/// is demoted and undemoted. Output: the command-line flags still apply
/// after the reload: A (preempt) takes the master role back from the
/// slower B after undemote, and a SIGHUP reload is logged at level 6.
#[test]
#[ignore = "needs root: network namespaces"]
fn reload_keeps_command_line_overrides() {
    let lab = Lab::new("override", 2);
    let file = lab.path("a.toml");
    std::fs::write(
        &file,
        format!(
            "preempt = false\n\n[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\nadvbase = 1\n\
             pass = \"{PASS}\"\naddresses = [\"{VIP4}/24\"]\n"
        ),
    )
    .expect("write config");
    let a = lab.carpd(
        0,
        "a",
        &["--preempt", "--config", file.to_str().expect("utf-8")],
    );
    let vip = v4(VIP4);
    let b = lab.carpd(1, "b", &vhost(1, 100, &[&vip]));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    let msg = carpctl_ok(&a, &["reload"]);
    assert!(msg.contains("1 unchanged"), "{msg}");

    carpctl_ok(&a, &["demote"]);
    wait_state(&b, 1, "MASTER", Duration::from_secs(2));
    let t0 = Instant::now();
    carpctl_ok(&a, &["undemote"]);
    // With --preempt, A takes over at B's next advert (<= 1.4 s).
    wait_state_fast(&a, 1, "MASTER", t0, Duration::from_secs(4));

    lab.kill(&a, Signal::SIGHUP);
    wait_log(&a, "reloaded: 1 unchanged");
}

/// Gratuitous ARPs for `vip` (sender = target = `vip`) from `mac` in a pcap.
fn garps(pcap: &std::path::Path, vip: &str, mac: &str) -> usize {
    let out = common::run_timeout(
        std::process::Command::new("tcpdump")
            .args(["-n", "-e", "-r"])
            .arg(pcap),
        common::CMD_TIMEOUT,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.contains(&format!("{mac} > ff:ff:ff:ff:ff:ff"))
                && l.contains(&format!("who-has {vip} tell {vip}"))
        })
        .count()
}

/// Input: A (advskew 0) MASTER, B (advskew 100) BACKUP, vhid 4 with an
/// IPv4 VIP; the client captures ARP; A is frozen with SIGSTOP (a silent
/// death: no bow-out, VIP still configured), later thawed with SIGCONT.
/// Output: B is MASTER within master-down + slack; the client sees B's
/// gratuitous ARP from the virtual MAC 00:00:5e:00:01:04, and the delayed
/// repeat two adverts later (spec 5.2/6); the client keeps reaching the
/// VIP. After SIGCONT the two masters resolve to exactly one, the better
/// A, and the VIP is held by A only.
#[test]
#[ignore = "needs root: network namespaces"]
fn sigstop_failover_and_gratuitous_arp() {
    let lab = Lab::new("sigstop", 3);
    let vip = v4(VIP4);
    let a = lab.carpd(0, "a", &vhost(4, 0, &[&vip]));
    let b = lab.carpd(1, "b", &vhost(4, 100, &[&vip]));
    assert_eq!(wait_single_master(&[&a, &b], 4, ELECTION), 0);
    let client = lab.ns(2).to_owned();
    ping_ok(&lab, &client, VIP4);

    let pcap = lab.path("arp.pcap");
    let capture = lab.capture(&client, &pcap, "arp");

    let t0 = Instant::now();
    lab.kill(&a, Signal::SIGSTOP);
    let bound = master_down(1, 100) + SLACK;
    let took = wait_state_fast(&b, 4, "MASTER", t0, bound);
    println!("SIGSTOP failover: B MASTER after {took:?} (bound {bound:?})");
    assert!(lab.has_addr(&a.ns, VIP4), "a frozen carpd keeps its VIP");
    let (n, when) = wait_for(
        "the client sees B's gratuitous ARP and its delayed repeat",
        Duration::from_secs(5),
        Duration::from_millis(200),
        || {
            let n = garps(&pcap, VIP4, "00:00:5e:00:01:04");
            (n >= 2).then_some(n)
        },
    );
    println!("client saw {n} gratuitous ARPs within {:?}", took + when);
    ping_ok(&lab, &client, VIP4);
    lab.signal(capture, Signal::SIGTERM);

    lab.kill(&a, Signal::SIGCONT);
    // A resumes as MASTER and hears the slower B; B hears the better A and
    // steps down: exactly one MASTER again.
    assert_eq!(wait_single_master(&[&a, &b], 4, Duration::from_secs(5)), 0);
    assert_vip_only_on(&lab, VIP4, &a, &[&a, &b]);
    ping_ok(&lab, &client, VIP4);
}
