//! The invariant checker itself must catch what it claims to catch.

use carp_proto::{Instant, Passphrase};
use carp_sim::{NodeSpec, Sim, SimConfig, vhost};

/// Input: two nodes with equal advskew booting at the same instant, all checks on.
/// Output: the first round of the race (both MASTER, both step down) happens
/// before the settle window, but the race repeats after it, which (a) or (c) reports.
#[test]
fn equal_timing_race_is_reported_when_checks_are_on() {
    let mut sim = Sim::new(SimConfig::seeded(3));
    sim.add_node(NodeSpec::new(false).with_vhost(vhost(1, 1, 0)));
    sim.add_node(NodeSpec::new(false).with_vhost(vhost(1, 1, 0)));
    let err = sim.run_until(Instant::from_millis(60_000)).unwrap_err();
    assert!(
        err.what.starts_with("(a)") || err.what.starts_with("(c)"),
        "{err}"
    );
    assert!(err.to_string().contains("--- trace ---"));
}

/// Input: two nodes whose passphrases differ, so each drops the other's adverts.
/// Output: both become MASTER on one segment; (a) reports it once quiet.
#[test]
fn two_masters_on_one_segment_are_reported() {
    let mut sim = Sim::new(SimConfig::seeded(1));
    sim.add_node(NodeSpec::new(false).with_vhost(vhost(1, 1, 0)));
    let mut other = vhost(1, 1, 100);
    other.passphrase = Passphrase::new(b"other").unwrap();
    sim.add_node(NodeSpec::new(false).with_vhost(other));
    let err = sim.run_until(Instant::from_millis(60_000)).unwrap_err();
    assert!(err.what.starts_with("(a) single master"), "{err}");
    assert!(err.at >= Instant::ZERO + sim.settle_window());
}
