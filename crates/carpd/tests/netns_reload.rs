//! A reload brings the running state to what a fresh start with the new file
//! would give (issue 10, defect 1), on real processes in namespaces.
//!
//! Input: A (advskew 0) and B (advskew 100), both started from config files
//! with vhid 1 and 192.0.2.50/24. Step 1: both files gain 198.51.100.51/24,
//! SIGHUP. Step 2: both gain 2001:db8::50/64, SIGHUP.
//! Output: after step 1 the MASTER holds the new address and nobody else
//! does; after step 2 the MASTER holds the IPv6 address too, and for the next
//! 6 s (more than one master-down of B) B stays BACKUP and A MASTER: no
//! flap, no address on two hosts. Before the carp interface layer, step 1
//! listed the address without configuring it, and step 2 left B without an
//! IPv6 socket, flapping every ~4 s.

mod common;

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use common::Lab;
use common::daemon::{Carpd, state, stats, wait_single_master};
use nix::sys::signal::Signal;

const PASS: &str = "reload-secret";
const ELECTION: Duration = Duration::from_secs(8);

fn write(file: &Path, advskew: u8, addresses: &[&str]) {
    let list: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
    std::fs::write(
        file,
        format!(
            "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\nadvbase = 1\nadvskew = {advskew}\n\
             pass = \"{PASS}\"\nlladdr = \"real\"\naddresses = [{}]\n",
            list.join(", ")
        ),
    )
    .expect("write config");
}

/// Wait until `f` holds, for at most `timeout`.
fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "{what} after {timeout:?}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn reload(lab: &Lab, nodes: [&Carpd; 2], files: [&Path; 2], addresses: &[&str]) {
    write(files[0], 0, addresses);
    write(files[1], 100, addresses);
    for d in nodes {
        lab.kill(d, Signal::SIGHUP);
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn reload_adds_addresses_and_families_without_a_flap() {
    let lab = Lab::new("reload", 2);
    let (fa, fb) = (lab.path("a.toml"), lab.path("b.toml"));
    write(&fa, 0, &["192.0.2.50/24"]);
    write(&fb, 100, &["192.0.2.50/24"]);
    let a = lab.carpd(0, "a", &["--config", fa.to_str().expect("utf-8")]);
    let b = lab.carpd(1, "b", &["--config", fb.to_str().expect("utf-8")]);
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    let (na, nb) = (lab.host(0).ns.clone(), lab.host(1).ns.clone());

    // Step 1: a second IPv4 address.
    let two = ["192.0.2.50/24", "198.51.100.51/24"];
    reload(&lab, [&a, &b], [&fa, &fb], &two);
    eventually(
        Duration::from_secs(3),
        "A does not hold 198.51.100.51",
        || lab.has_addr(&na, "198.51.100.51"),
    );
    assert!(
        !lab.has_addr(&nb, "198.51.100.51"),
        "B holds the new address"
    );

    // Step 2: an IPv6 address on a vhost that had none.
    let three = ["192.0.2.50/24", "198.51.100.51/24", "2001:db8::50/64"];
    reload(&lab, [&a, &b], [&fa, &fb], &three);
    eventually(
        Duration::from_secs(3),
        "A does not hold 2001:db8::50",
        || lab.has_addr(&na, "2001:db8::50"),
    );
    let before = (stats(&a).transitions, stats(&b).transitions);
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        assert_eq!(state(&a, 1).as_deref(), Some("MASTER"), "A left MASTER");
        assert_eq!(state(&b, 1).as_deref(), Some("BACKUP"), "B left BACKUP");
        assert!(
            !lab.has_addr(&nb, "192.0.2.50"),
            "the IPv4 address is on both hosts"
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        (stats(&a).transitions, stats(&b).transitions),
        before,
        "a transition after the IPv6 reload"
    );
    assert!(
        stats(&b).ipackets6 > 0,
        "B never heard an IPv6 advertisement"
    );
}
