//! The source allow-list against the replay the CARP header cannot stop.
//!
//! CARP's HMAC covers the counter, the vhid and the addresses, not advbase,
//! advskew or demote (spec 2.2). A captured advertisement replayed with
//! advbase 0 / advskew 1 is authentic and "faster than anyone", so every node
//! yields to it and the address is on no host, without the passphrase. The
//! hostile run saw 17.6 s of that. `allow ADDR` (repeatable) limits whose
//! advertisements are heard.
//!
//! Input: two carpd nodes (a: advskew 0, b: advskew 100) and an attacker
//! namespace sending such a replay every 50 ms. Phase 1, no allow-list: a
//! steps down and nobody is MASTER (the attack works; the test can fail).
//! Phase 2, each node allows only the other: a stays MASTER, b stays BACKUP,
//! and the replays are counted as `bad_src`.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use common::daemon::{Carpd, signed_advert, state, stats, wait_single_master};
use common::{Lab, spawn_in_netns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const VIP: &str = "192.0.2.50";
const PASS: &str = "allow-secret";
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
const ELECTION: Duration = Duration::from_secs(8);
/// How long the attacker replays.
const ATTACK: Duration = Duration::from_secs(5);

/// Send a replayed advertisement (advbase 0, advskew 1) from `src` every 50 ms
/// until `stop`.
fn replay(ns: &str, src: Ipv4Addr, stop: Arc<AtomicBool>) -> thread::JoinHandle<u64> {
    let vip: Ipv4Addr = VIP.parse().expect("vip");
    // A counter as a captured advert would carry; the HMAC still verifies.
    let carp = signed_advert(1, 0, 1, PASS.as_bytes(), &[vip], [0x5a; 8]);
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 255, 112, 0, 0];
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&GROUP.octets());
    packet.extend_from_slice(&carp);
    spawn_in_netns(ns, move || {
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .expect("raw socket");
        s.bind_device(Some(b"eth0")).expect("bind eth0");
        let dst = SockAddr::from(SocketAddrV4::new(GROUP, 0));
        let mut sent = 0;
        while !stop.load(Ordering::Relaxed) {
            if s.send_to(&packet, &dst).is_ok() {
                sent += 1;
            }
            thread::sleep(Duration::from_millis(50));
        }
        sent
    })
}

/// Run the attack for [`ATTACK`]; return how many packets went out and
/// whether a MASTER existed at its end.
fn attack(lab: &Lab, nodes: [&Carpd; 2]) -> (u64, Option<usize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sender = replay(&lab.host(2).ns, lab.host(2).v4, stop.clone());
    thread::sleep(ATTACK);
    let master = nodes
        .iter()
        .position(|d| state(d, 1).as_deref() == Some("MASTER"));
    stop.store(true, Ordering::Relaxed);
    (sender.join().expect("sender"), master)
}

fn words(skew: &str, allow: Option<Ipv4Addr>) -> Vec<String> {
    let mut w: Vec<String> = [
        "carpdev", "eth0", "vhid", "1", "advbase", "1", "advskew", skew, "pass", PASS,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(a) = allow {
        w.extend(["allow".to_owned(), a.to_string()]);
    }
    w.push(format!("{VIP}/24"));
    w
}

#[test]
#[ignore = "needs root: network namespaces"]
fn allow_list_stops_a_replay_with_advbase_0() {
    let lab = Lab::new("allow", 3);
    let (va, vb) = (lab.host(0).v4, lab.host(1).v4);

    // Phase 1: no allow-list, the replay silences the cluster.
    let mut a = lab.carpd(0, "a", &words("0", None));
    let mut b = lab.carpd(1, "b", &words("100", None));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    let (sent, master) = attack(&lab, [&a, &b]);
    assert!(sent > 50, "the attacker sent only {sent} packets");
    assert_eq!(
        master, None,
        "without an allow-list the replay leaves no MASTER (else this test proves nothing)"
    );
    lab.kill(&a, nix::sys::signal::Signal::SIGTERM);
    lab.kill(&b, nix::sys::signal::Signal::SIGTERM);
    lab.wait_exit(&a, Duration::from_secs(5));
    lab.wait_exit(&b, Duration::from_secs(5));

    // Phase 2: each node hears only the other.
    a.args = words("0", Some(vb));
    b.args = words("100", Some(va));
    lab.start(&mut a);
    lab.start(&mut b);
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    let before = (stats(&a).transitions, stats(&b).transitions);
    let (sent, master) = attack(&lab, [&a, &b]);
    assert_eq!(master, Some(0), "a must stay MASTER");
    assert_eq!(
        (stats(&a).transitions, stats(&b).transitions),
        before,
        "no transition during the attack"
    );
    let (sa, sb) = (stats(&a), stats(&b));
    assert!(
        sa.bad_src + 5 >= sent && sb.bad_src + 5 >= sent,
        "replays counted as bad_src: sent {sent}, a {}, b {}",
        sa.bad_src,
        sb.bad_src
    );
    assert!(sb.accepted > 0, "b still hears a");
}
