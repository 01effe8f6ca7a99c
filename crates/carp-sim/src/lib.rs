//! carp-sim: a deterministic discrete-event simulator of many `carp-proto`
//! nodes on one virtual LAN (STYLE 6.7 item 5, 7 item 9).
//!
//! A [`Sim`] owns N real [`carp_proto::Node`]s, a virtual clock and a seeded
//! ChaCha RNG that draws every latency, loss, duplication and send failure.
//! [`Sim::run_until`] repeats one step:
//!
//! 1. apply the scenario [`Event`]s that are due (crash, partition, demote, ...);
//! 2. deliver every datagram that is due, draining the receiver's actions;
//! 3. call `handle_timeout` on every node whose `poll_timeout()` has passed;
//! 4. check the invariants (module `check`), then jump the clock to the
//!    earliest pending delivery, timer or scenario event.
//!
//! Everything observable is written to a compact trace, one line per state
//! change or scenario event, e.g.
//! `t=3.000000s n1 vhid=1 BACKUP->MASTER cause=master timed out`.
//! The same seed gives a byte-identical trace.
//!
//! - `cargo run -p carp-sim -- [--seed N] [failover|bowout|demote|partition|linkdown]`
//!   prints a readable election and failover with a summary;
//! - `cargo test -p carp-sim` runs the scenarios in `tests/scenarios.rs` against
//!   the golden traces in `tests/golden/` (`UPDATE_GOLDEN=1` rewrites them) and
//!   20 random fault schedules (`CARP_SIM_SEEDS=N` for more).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod report;
mod setup;
mod sim;

pub use report::{Tenure, Transition};
pub use setup::{
    Checks, Event, NodeSpec, SimConfig, Violation, master_down_interval, vhost, vhost46,
};
pub use sim::Sim;
