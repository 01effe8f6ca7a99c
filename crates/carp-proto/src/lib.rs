//! carp-proto: the sans-IO core of CARP v2 as OpenBSD and FreeBSD speak it.
//!
//! This crate performs no syscalls, has no async, never reads a clock and has
//! no global RNG: time is passed in as [`time::Instant`], the replay cookie of
//! each vhost is passed in by the caller. A host's carp interfaces each own
//! some addresses and one or more nodes (vhids) that elect. The owner drives a
//! [`node::Node`]:
//!
//! 1. call one `handle_*` input (a datagram, a timeout, a link change, ...);
//! 2. drain `poll_action()` until `None`, performing each [`action::Action`];
//! 3. sleep until `poll_timeout()` or the next input, then repeat.
//!
//! The protocol reference is OpenBSD `sys/netinet/ip_carp.c` (rev 1.370) as
//! summarised in the project's `spec/carp-protocol.md`; section numbers in
//! comments refer to that file. Deviations are marked `DEVIATION:`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod action;
pub mod auth;
pub mod balance;
mod carpif;
pub mod config;
mod election;
pub mod node;
pub mod stats;
mod status;
pub mod time;
mod timer;
mod vhost;
pub mod wire;

pub use action::{Action, CarpIfId, Cause, Family, LinkId, State, VhostId};
pub use balance::Balancing;
pub use config::{
    AddrSpec, AdvBase, AdvSkew, CarpIfConfig, CarpNode, Flavour, Gate, HmacContext, Lladdr,
    Passphrase, Vhid, VhostConfig, VrrpParams,
};
pub use node::{CarpIfStatus, ControlError, Node, NodeConfig, RxMeta, VhostStatus};
pub use stats::{DropReason, Stats};
pub use time::Instant;
