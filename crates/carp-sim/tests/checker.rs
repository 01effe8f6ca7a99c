//! The invariant checker itself must catch what it claims to catch.

use carp_proto::{Instant, Passphrase};
use carp_sim::{NodeSpec, Sim, SimConfig, vhost};

/// Input: two nodes with equal advskew booting at the same instant, all checks on.
/// Output: the first round of the race (both MASTER) ends at once with the
/// lower address MASTER (carpd's tie-break, see `election::Tie`);
/// before it, the race repeated every master-down interval and the checker
/// reported it as (a) or (c) after the settle window.
#[test]
fn equal_timing_race_settles_on_the_lower_address() {
    let mut sim = Sim::new(SimConfig::seeded(3));
    sim.add_node(NodeSpec::new(false).with_vhost(vhost(1, 1, 0)));
    sim.add_node(NodeSpec::new(false).with_vhost(vhost(1, 1, 0)));
    sim.run_until(Instant::from_millis(60_000)).unwrap();
    let states: Vec<_> = (0..2usize)
        .map(|n| sim.node(n + 1).unwrap().status()[0].state)
        .collect();
    assert_eq!(
        states,
        [carp_proto::State::Master, carp_proto::State::Backup]
    );
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
