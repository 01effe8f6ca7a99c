//! Start-up hygiene after a crash (issue "Hardening", item 4): carpd records
//! the addresses it configures in its state directory and, on the next
//! start, removes whatever a run that did not stop cleanly left behind,
//! including addresses no longer in the configuration.
//!
//! Root only: `cargo test -p carpd --test netns_restart -- --include-ignored`.

mod common;

use std::time::Duration;

use common::Lab;
use common::daemon::{Carpd, carpctl_ok, view, wait_single_master, wait_state};
use nix::sys::signal::Signal;

const VIP1: &str = "192.0.2.50";
const VIP2: &str = "192.0.2.51";
const ELECTION: Duration = Duration::from_secs(8);
/// master-down of B (3 x (1 + 100/256) s) plus slack.
const TAKEOVER: Duration = Duration::from_secs(6);

/// Flags and words for `vhids` on eth0 (advbase 1), state in the lab.
fn words(lab: &Lab, name: &str, advskew: u8, vhids: &[(u8, &str)]) -> Vec<String> {
    let state = lab.path(&format!("{name}-state"));
    // No guard: these crashes must leave the addresses for the restart to find.
    let mut w = vec![
        "--no-guard".to_owned(),
        "--state-dir".to_owned(),
        state.display().to_string(),
    ];
    w.extend(["carpdev".to_owned(), "eth0".to_owned()]);
    for (vhid, vip) in vhids {
        for s in [
            "vhid",
            &vhid.to_string(),
            "advbase",
            "1",
            "advskew",
            &advskew.to_string(),
            "pass",
            "restart",
            &format!("{vip}/24"),
        ] {
            w.push(s.to_owned());
        }
    }
    w
}

fn kill9(lab: &Lab, d: &Carpd) {
    lab.kill(d, Signal::SIGKILL);
    assert_eq!(
        lab.wait_exit(d, Duration::from_secs(5)),
        None,
        "killed by a signal"
    );
}

/// Input: A (advskew 0) and B (advskew 100) run vhids 1 and 2; A is MASTER
/// of both. (1) `kill -9` A and restart it unchanged. (2) Force A MASTER of
/// vhid 2 again, `kill -9` it, and restart it with vhid 1 only.
/// Output: after each crash A's addresses are still there (nothing ran to
/// remove them) and B takes over; each restarted A is BACKUP (B is MASTER,
/// no preempt) and holds neither VIP, including VIP2 of the vhid that is no
/// longer configured (only the record knew about it); the log says what was
/// removed. A clean stop leaves no record behind.
#[test]
#[ignore = "needs root: network namespaces"]
fn restart_after_kill9_removes_leftover_addresses() {
    let lab = Lab::new("restart", 2);
    let both = [(1, VIP1), (2, VIP2)];
    let mut a = lab.carpd(0, "a", &words(&lab, "a", 0, &both));
    let b = lab.carpd(1, "b", &words(&lab, "b", 100, &both));
    for vhid in [1, 2] {
        assert_eq!(wait_single_master(&[&a, &b], vhid, ELECTION), 0);
    }
    let record = || {
        std::fs::read_dir(lab.path("a-state"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("owned-"))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(record().len(), 1, "A records the addresses it holds");

    // (1) Crash, change nothing, restart.
    kill9(&lab, &a);
    assert!(
        lab.has_addr(&a.ns, VIP1) && lab.has_addr(&a.ns, VIP2),
        "kill -9 left the VIPs"
    );
    for vhid in [1, 2] {
        wait_state(&b, vhid, "MASTER", TAKEOVER);
    }
    lab.start(&mut a);
    for vhid in [1, 2] {
        assert_eq!(view(&a, vhid).state, "BACKUP");
    }
    assert!(
        !lab.has_addr(&a.ns, VIP1) && !lab.has_addr(&a.ns, VIP2),
        "BACKUP holds a VIP"
    );

    // (2) A takes vhid 2 back, crashes, and comes back without vhid 2.
    carpctl_ok(&a, &["state", "2", "master"]);
    wait_state(&b, 2, "BACKUP", Duration::from_secs(3));
    assert!(lab.has_addr(&a.ns, VIP2));
    kill9(&lab, &a);
    wait_state(&b, 2, "MASTER", TAKEOVER);
    assert!(lab.has_addr(&a.ns, VIP2), "kill -9 left VIP2");
    a.args = words(&lab, "a", 0, &[(1, VIP1)]);
    lab.start(&mut a);
    assert_eq!(view(&a, 1).state, "BACKUP");
    assert!(
        !lab.has_addr(&a.ns, VIP2),
        "VIP2 of the removed vhid is still on A"
    );
    assert!(!lab.has_addr(&a.ns, VIP1), "BACKUP holds VIP1");
    assert!(lab.has_addr(&b.ns, VIP1) && lab.has_addr(&b.ns, VIP2));
    let log = std::fs::read_to_string(&a.log).expect("a.log");
    assert!(
        log.contains(&format!("removed {VIP2}/24 from carp"))
            && log.contains("left by a previous run that did not stop cleanly"),
        "{log}"
    );

    // A clean stop releases everything and deletes the record.
    carpctl_ok(&a, &["state", "1", "master"]);
    wait_state(&a, 1, "MASTER", Duration::from_secs(3));
    assert_eq!(record().len(), 1);
    lab.kill(&a, Signal::SIGTERM);
    assert_eq!(lab.wait_exit(&a, Duration::from_secs(5)), Some(0));
    assert!(
        record().is_empty(),
        "a clean stop leaves no record: {:?}",
        record()
    );
}
