//! Root-only interoperability tests: the real `carpd` against Debian's
//! `ucarp` (1.5.2) on one bridge, in network namespaces.
//!
//! Root only, ignored by default: `cargo test -p carpd --test netns_interop
//! -- --include-ignored`.
//! ucarp is IPv4-only and always uses the real MAC, so carpd runs with
//! `lladdr real` and one IPv4 VIP; same vhid, password and advbase 1.
//! ucarp's up/down scripts add and remove the VIP with `ip addr`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use common::Lab;
use common::daemon::{master_down, state, stats, view, wait_for, wait_state, wait_state_fast};
use nix::sys::signal::Signal;

const VIP: &str = "198.51.100.50";
const VHID: u8 = 7;
const PASS: &str = "interop-pass";
const SLACK: Duration = Duration::from_secs(1);

/// Write ucarp's up and down scripts into the lab directory.
fn scripts(lab: &Lab) -> (String, String) {
    let mut paths = Vec::new();
    for (name, verb) in [("up", "add"), ("down", "del")] {
        let path = lab.path(&format!("ucarp-{name}.sh"));
        // ucarp calls: <script> <interface> <vip> [xparam]
        let text = format!(
            "#!/bin/sh\nip addr {verb} \"$2/24\" dev \"$1\" 2>/dev/null\necho \"ucarp {name} $2\"\nexit 0\n"
        );
        std::fs::write(&path, text).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        paths.push(path.to_str().expect("utf-8").to_owned());
    }
    (paths[0].clone(), paths[1].clone())
}

/// Start ucarp on host `i` with `advskew`; returns its pid.
fn ucarp(lab: &Lab, i: usize, advskew: u8) -> u32 {
    let (up, down) = scripts(lab);
    let src = lab.host(i).v4.to_string();
    let skew = advskew.to_string();
    let vhid = VHID.to_string();
    let log = lab.path("ucarp.log");
    lab.spawn_logged(
        lab.ns(i),
        &[
            "ucarp", "-i", "eth0", "-s", &src, "-v", &vhid, "-p", PASS, "-a", VIP, "-b", "1", "-k",
            &skew, "-u", &up, "-d", &down, "-z",
        ],
        &log,
    )
}

/// carpd's words: same vhid/pass/advbase, the real MAC, one IPv4 VIP /24.
fn carpd_words(advskew: u8) -> Vec<String> {
    let skew = advskew.to_string();
    let vhid = VHID.to_string();
    let vip = format!("{VIP}/24");
    [
        "carpdev", "eth0", "vhid", &vhid, "advbase", "1", "advskew", &skew, "pass", PASS, "lladdr",
        "real", &vip,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Input: ucarp (advskew 0) and carpd (advskew 100, lladdr real) on one
/// LAN. Output: ucarp is MASTER (it holds the VIP), carpd is BACKUP and
/// accepts ucarp's adverts (last master = ucarp's address, no bad_auth),
/// stably over 2.5 s. Then ucarp is stopped (SIGTERM; -z runs its down
/// script; ucarp sends no bow-out): carpd takes over within its
/// master-down interval + slack and adds the VIP to eth0.
#[test]
#[ignore = "needs root: network namespaces"]
fn interop_ucarp_master_carpd_backup() {
    let lab = Lab::new("ucarpm", 2);
    let u = ucarp(&lab, 0, 0);
    let c = lab.carpd(1, "carpd", &carpd_words(100));
    wait_for(
        "ucarp holds the VIP",
        Duration::from_secs(8),
        Duration::from_millis(100),
        || lab.has_addr(lab.ns(0), VIP).then_some(()),
    );
    wait_state(&c, VHID, "BACKUP", Duration::from_secs(3));
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(state(&c, VHID).as_deref(), Some("BACKUP"));
        assert!(!lab.has_addr(lab.ns(1), VIP), "carpd BACKUP holds the VIP");
        assert!(lab.has_addr(lab.ns(0), VIP), "ucarp dropped the VIP");
        thread::sleep(Duration::from_millis(250));
    }
    let v = view(&c, VHID);
    assert_eq!(
        v.last_master.as_deref(),
        Some(lab.host(0).v4.to_string().as_str()),
        "carpd must accept ucarp's adverts"
    );
    let s = stats(&c);
    assert_eq!((s.bad_auth, s.bad_sum, s.bad_ttl), (0, 0, 0), "{s:?}");
    assert!(s.accepted >= 2, "{s:?}");

    let t0 = Instant::now();
    lab.signal(u, Signal::SIGTERM);
    let bound = master_down(1, 100) + SLACK;
    let took = wait_state_fast(&c, VHID, "MASTER", t0, bound);
    println!("ucarp stopped: carpd MASTER after {took:?} (bound {bound:?})");
    wait_for(
        "VIP moves to carpd's eth0",
        Duration::from_secs(2),
        Duration::from_millis(50),
        || (lab.has_addr(lab.ns(1), VIP) && !lab.has_addr(lab.ns(0), VIP)).then_some(()),
    );
    assert!(
        lab.addrs(lab.ns(1), "eth0").iter().any(|a| a.local == VIP),
        "lladdr real puts the VIP on the carpdev"
    );
}

/// Input: carpd (advskew 0, lladdr real) and ucarp (advskew 100). Output:
/// carpd is MASTER, ucarp stays BACKUP (never runs its up script) over
/// 2.5 s, i.e. ucarp accepts carpd's adverts. Then carpd gets SIGTERM: it
/// removes the VIP and bows out (advbase 255 / advskew 255), and ucarp
/// takes over and adds the VIP.
#[test]
#[ignore = "needs root: network namespaces"]
fn interop_carpd_master_ucarp_backup() {
    let lab = Lab::new("carpdm", 2);
    let c = lab.carpd(0, "carpd", &carpd_words(0));
    let _u = ucarp(&lab, 1, 100);
    wait_state(&c, VHID, "MASTER", Duration::from_secs(8));
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        assert_eq!(state(&c, VHID).as_deref(), Some("MASTER"));
        assert!(lab.has_addr(lab.ns(0), VIP), "carpd MASTER lacks the VIP");
        assert!(!lab.has_addr(lab.ns(1), VIP), "ucarp took the VIP too");
        thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(lab.path("ucarp.log")).unwrap_or_default();
    assert!(!log.contains("ucarp up"), "ucarp became MASTER:\n{log}");

    lab.kill(&c, Signal::SIGTERM);
    let (_, took) = wait_for(
        "ucarp takes the VIP",
        master_down(1, 100) + SLACK,
        Duration::from_millis(5),
        || lab.has_addr(lab.ns(1), VIP).then_some(()),
    );
    assert_eq!(lab.wait_exit(&c, Duration::from_secs(5)), Some(0));
    assert!(!lab.has_addr(lab.ns(0), VIP), "carpd left its VIP");
    println!("carpd stopped: ucarp holds the VIP after {took:?}");
}
