//! Root-only tests of daemon behaviours around the election: hooks, address
//! repair, local reachability of the VIP, link state. Same harness and gating
//! as `netns_daemon.rs` (root, `-- --include-ignored`).

mod common;

use std::time::{Duration, Instant};

use common::Lab;
use common::daemon::{carpctl_ok, view, wait_for, wait_single_master, wait_state};
use common::testbed::words::Words;

const VIP4: &str = "192.0.2.60";
const ELECTION: Duration = Duration::from_secs(8);
const POLL: Duration = Duration::from_millis(20);

fn words(vhid: u8, advskew: u8, extra: &[&str]) -> Vec<String> {
    let w = Words::new("eth0", vhid)
        .advbase(1)
        .advskew(advskew)
        .pass("behave");
    extra
        .iter()
        .fold(w, |w, x| w.raw(x))
        .addr(&format!("{VIP4}/24"))
        .build()
}

/// Write an executable shell script at `path`.
fn script(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Input: node A with `up` and `down` hooks that append their arguments and
/// CARP_* variables to a file; A becomes MASTER, is forced to BACKUP, then
/// MASTER again. Output: the file holds up, down, up in that order, each with
/// ucarp's `<interface> <vip>` arguments and the right state, previous state,
/// vhid and addresses.
#[test]
#[ignore = "needs root: network namespaces"]
fn hooks_run_in_order_with_environment() {
    let lab = Lab::new("hooks", 2);
    let log = lab.path("hooks.log");
    let line = format!(
        "echo \"$0 $1 $2 state=$CARP_STATE from=$CARP_FROM vhid=$CARP_VHID dev=$CARP_CARPDEV addrs=$CARP_ADDRESSES\" >> {}",
        log.display()
    );
    let up = lab.path("up.sh");
    let down = lab.path("down.sh");
    script(&up, &line);
    script(&down, &line);
    let (up_s, down_s) = (up.to_str().unwrap(), down.to_str().unwrap());
    let a = lab.carpd(0, "a", &words(11, 0, &["up", up_s, "down", down_s]));
    wait_state(&a, 11, "MASTER", ELECTION);
    carpctl_ok(&a, &["state", "11", "backup"]);
    wait_state(&a, 11, "BACKUP", Duration::from_secs(2));
    carpctl_ok(&a, &["state", "11", "master"]);
    wait_state(&a, 11, "MASTER", Duration::from_secs(2));
    let (lines, _) = wait_for("three hook runs", Duration::from_secs(5), POLL, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(String::from).collect();
        (lines.len() >= 3).then_some(lines)
    });
    assert!(lines[0].starts_with(&format!("{up_s} carp")), "{lines:?}");
    assert!(
        lines[0].contains(&format!(
            " {VIP4} state=MASTER from=BACKUP vhid=11 dev=eth0 addrs={VIP4}/24"
        )),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with(down_s) && lines[1].contains("state=BACKUP from=MASTER"),
        "{lines:?}"
    );
    assert!(
        lines[2].starts_with(up_s) && lines[2].contains("state=MASTER"),
        "{lines:?}"
    );
}

/// Input: a hook that sleeps far longer than `hook-timeout 1`. Output: it is
/// killed (its process is gone) shortly after the timeout, and the daemon
/// keeps answering meanwhile.
#[test]
#[ignore = "needs root: network namespaces"]
fn hung_hook_is_killed_after_its_timeout() {
    let lab = Lab::new("hookto", 1);
    let pidfile = lab.path("hook.pid");
    let up = lab.path("slow-up.sh");
    script(
        &up,
        &format!("echo $$ > {}\nexec sleep 60", pidfile.display()),
    );
    let a = lab.carpd(
        0,
        "a",
        &words(12, 0, &["up", up.to_str().unwrap(), "hook-timeout", "1"]),
    );
    wait_state(&a, 12, "MASTER", ELECTION);
    let (pid, _): (i32, _) = wait_for("hook started", Duration::from_secs(5), POLL, || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    let started = Instant::now();
    // The loop is not blocked by the hook.
    assert_eq!(view(&a, 12).state, "MASTER");
    wait_for("hook killed", Duration::from_secs(5), POLL, || {
        (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "hook lived {took:?} after start"
    );
}

/// Input: A is MASTER; someone deletes the VIP from its interface. Output:
/// carpd puts it back (and logs it) without a state change.
#[test]
#[ignore = "needs root: network namespaces"]
fn address_removed_by_someone_else_is_restored() {
    let lab = Lab::new("repair", 2);
    let a = lab.carpd(0, "a", &words(13, 0, &[]));
    wait_state(&a, 13, "MASTER", ELECTION);
    let (dev, _) = wait_for("VIP configured", Duration::from_secs(3), POLL, || {
        let out = lab.exec_ok(&a.ns, &["ip", "-o", "-4", "addr", "show"]);
        out.lines()
            .find(|l| l.contains(&format!("{VIP4}/24")))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(|d| {
                d.trim_end_matches(':')
                    .split('@')
                    .next()
                    .unwrap_or(d)
                    .to_string()
            })
    });
    let since = view(&a, 13).since_secs;
    lab.exec_ok(
        &a.ns,
        &["ip", "addr", "del", &format!("{VIP4}/24"), "dev", &dev],
    );
    wait_for("VIP restored", Duration::from_secs(3), POLL, || {
        lab.has_addr(&a.ns, VIP4).then_some(())
    });
    let v = view(&a, 13);
    assert_eq!(v.state, "MASTER");
    assert!(v.since_secs >= since, "no transition happened");
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(
        log.contains("removed by someone else"),
        "restoration is logged:\n{log}"
    );
}

/// Input: A MASTER and B BACKUP of one VIP. Output: the VIP is a local
/// address on A (A reaches its own VIP) and not on B, which routes it to the
/// LAN instead and reaches it through A.
#[test]
#[ignore = "needs root: network namespaces"]
fn master_reaches_own_vip_and_backup_does_not_own_it() {
    let lab = Lab::new("ownvip", 2);
    let a = lab.carpd(0, "a", &words(14, 0, &[]));
    let b = lab.carpd(1, "b", &words(14, 100, &[]));
    assert_eq!(wait_single_master(&[&a, &b], 14, ELECTION), 0);
    let route_a = lab.exec_ok(&a.ns, &["ip", "route", "get", VIP4]);
    assert!(route_a.starts_with("local "), "on the MASTER: {route_a}");
    let route_b = lab.exec_ok(&b.ns, &["ip", "route", "get", VIP4]);
    assert!(!route_b.starts_with("local "), "on the BACKUP: {route_b}");
    for ns in [&a.ns, &b.ns] {
        let out = lab.exec(ns, &["ping", "-c", "1", "-W", "2", VIP4]);
        assert!(out.status.success(), "ping {VIP4} from {ns}");
    }
}

/// Input: A MASTER; its eth0 goes down, then up. Output: A is INIT with cause
/// "hardware interface down" and releases the VIP; after link up it returns
/// to BACKUP ("hardware interface up") and, alone, becomes MASTER again.
#[test]
#[ignore = "needs root: network namespaces"]
fn link_down_goes_init_and_back() {
    let lab = Lab::new("linkst", 1);
    let a = lab.carpd(0, "a", &words(15, 0, &[]));
    wait_state(&a, 15, "MASTER", ELECTION);
    lab.exec_ok(&a.ns, &["ip", "link", "set", "eth0", "down"]);
    wait_state(&a, 15, "INIT", Duration::from_secs(2));
    assert_eq!(view(&a, 15).cause, "hardware interface down");
    assert!(!lab.has_addr(&a.ns, VIP4), "VIP released in INIT");
    lab.exec_ok(&a.ns, &["ip", "link", "set", "eth0", "up"]);
    wait_state(&a, 15, "BACKUP", Duration::from_secs(3));
    wait_state(&a, 15, "MASTER", ELECTION);
}
