//! The chaos soak's three parts: [`faults`] and [`envfaults`] inject them, [`recording`]
//! records the lab while they act, [`analysis`] judges the recording (and is
//! unit-tested on synthetic recordings, without root).

pub mod analysis;
pub mod envfaults;
pub mod faults;
pub mod recording;

use std::time::Duration;

use crate::common::daemon::master_down;

/// How long a heal command may take effect before the harness notes its end (s).
pub const HEAL_SLACK: f64 = 0.5;
pub const VHID: u8 = 1;
pub const VIP: &str = "192.0.2.50";
pub const PASS: &str = "chaos-soak";
pub const SKEWS: [u8; 3] = [0, 50, 100];
pub const NAMES: [&str; 3] = ["a", "b", "c"];
/// Host index of the client.
pub const CLIENT: usize = 3;
/// How often each node is sampled.
pub const SAMPLE: Duration = Duration::from_millis(50);
/// Slack for process scheduling on a busy 2-core machine (seconds).
pub const SLACK: f64 = 1.0;
/// A VIP on a non-MASTER: 300 ms settling (bow-out grace) + one sample.
pub const VIP_SLACK: f64 = 0.350;
/// Bound for the lab to settle after a fault is undone.
pub const SETTLE_MAX: Duration = Duration::from_secs(15);

/// One advertisement interval of the slowest node (advskew 100), seconds.
pub fn interval_s() -> f64 {
    1.0 + f64::from(SKEWS[2]) / 256.0
}

/// Criteria 1 and 2: master-down of the slowest node + one interval + slack.
pub fn protocol_bound() -> f64 {
    master_down(1, u32::from(SKEWS[2])).as_secs_f64() + interval_s() + SLACK
}

pub fn node_list(nodes: &[usize]) -> String {
    let names: Vec<&str> = nodes.iter().map(|&i| NAMES[i]).collect();
    names.join(",")
}
