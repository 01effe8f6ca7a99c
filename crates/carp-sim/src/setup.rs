//! What a simulation is made of: network parameters, checks, node specs and scenario events.

use core::fmt;
use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::config::{MasterDownFormula, interval};
use carp_proto::{
    AdvBase, AdvSkew, CarpIfConfig, Family, Instant, LinkId, NodeConfig, Passphrase, Vhid,
    VhostConfig,
};

use crate::sim::link_suffix;

/// Network and checking parameters of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of the ChaCha8 RNG that draws every latency, loss, duplicate, send failure and cookie.
    pub seed: u64,
    /// Smallest one-way latency of a delivery.
    pub latency_min: Duration,
    /// Largest one-way latency of a delivery (drawn uniformly in between).
    pub latency_max: Duration,
    /// Probability that one delivery (one sender, one receiver) is lost.
    pub loss: f64,
    /// Probability that one delivery arrives twice (each copy with its own latency).
    pub duplicate: f64,
    /// Probability that a `Transmit` fails locally (reported with `handle_send_result`).
    pub send_failure: f64,
    /// Which invariants are enforced after every step.
    pub checks: Checks,
}

impl Default for SimConfig {
    /// Seed 0, 100 µs..2 ms latency, no loss, no duplicates, no send failures, all checks on.
    fn default() -> Self {
        SimConfig {
            seed: 0,
            latency_min: Duration::from_micros(100),
            latency_max: Duration::from_millis(2),
            loss: 0.0,
            duplicate: 0.0,
            send_failure: 0.0,
            checks: Checks::default(),
        }
    }
}

impl SimConfig {
    /// Return the default configuration with `seed`.
    pub fn seeded(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            ..SimConfig::default()
        }
    }
}

/// The invariants checked after every step; a scenario may switch one off and
/// must then say why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checks {
    /// (a) At most one MASTER per vhid among nodes that can reach each other,
    /// once the network has been quiet for [`Sim::settle_window`](crate::Sim::settle_window).
    pub single_master: bool,
    /// (b) A live BACKUP that can reach no MASTER sees one (or becomes one)
    /// within its master-down interval + its advertisement interval + the
    /// largest latency, counted from the later of "no master reachable" and
    /// the last scenario event.
    pub liveness: bool,
    /// (c) No state change at all once the network has been quiet for
    /// [`Sim::settle_window`](crate::Sim::settle_window).
    pub no_flapping: bool,
    /// (d) After every drain, a node holds a vhost's addresses exactly when
    /// that vhost is MASTER (and a dead node holds none).
    pub vip_matches_state: bool,
}

impl Default for Checks {
    /// Every check on.
    fn default() -> Self {
        Checks {
            single_master: true,
            liveness: true,
            no_flapping: true,
            vip_matches_state: true,
        }
    }
}

/// What one simulated host runs: its host-wide settings and its vhosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Host-wide settings (preempt, demotion factor).
    pub config: NodeConfig,
    /// The vhosts, each on a parent link; `LinkId(n)` of every node is
    /// attached to the same virtual segment n.
    pub vhosts: Vec<(LinkId, VhostConfig)>,
    /// Carp interfaces with several nodes (`carpnodes`), booted after the vhosts.
    pub interfaces: Vec<(LinkId, CarpIfConfig)>,
}

impl NodeSpec {
    /// Return a host with no vhosts and the default settings except `preempt`.
    pub fn new(preempt: bool) -> NodeSpec {
        NodeSpec {
            config: NodeConfig {
                preempt,
                ..NodeConfig::default()
            },
            vhosts: Vec::new(),
            interfaces: Vec::new(),
        }
    }

    /// Add a carp interface with several nodes on `link`.
    pub fn with_interface_on(mut self, link: LinkId, config: CarpIfConfig) -> NodeSpec {
        self.interfaces.push((link, config));
        self
    }

    /// Return every vhost this host runs with (link, vhid, advbase, advskew, formula).
    pub(crate) fn timings(&self) -> Vec<(LinkId, VhostConfig)> {
        let mut out = self.vhosts.clone();
        for (link, c) in &self.interfaces {
            for n in &c.nodes {
                let mut v = VhostConfig::new(n.vhid, &[]);
                v.advbase = c.advbase;
                v.advskew = n.advskew;
                v.master_down = c.master_down;
                out.push((*link, v));
            }
        }
        out
    }

    /// Add a vhost on `link`.
    pub fn with_vhost_on(mut self, link: LinkId, config: VhostConfig) -> NodeSpec {
        self.vhosts.push((link, config));
        self
    }

    /// Add a vhost on `LinkId(1)`.
    pub fn with_vhost(self, config: VhostConfig) -> NodeSpec {
        self.with_vhost_on(LinkId(1), config)
    }

    pub(crate) fn describe(&self) -> String {
        let mut s = format!("preempt={}", if self.config.preempt { "on" } else { "off" });
        for (link, v) in &self.vhosts {
            s += &format!(
                " vhid={}{} advbase={} advskew={}",
                v.vhid,
                link_suffix(*link),
                v.advbase.0,
                v.advskew.0
            );
        }
        for (link, c) in &self.interfaces {
            let nodes: Vec<String> = c
                .nodes
                .iter()
                .map(|n| format!("{}:{}", n.vhid, n.advskew.0))
                .collect();
            s += &format!(
                " carpnodes={}{} advbase={}",
                nodes.join(","),
                link_suffix(*link),
                c.advbase.0
            );
        }
        s
    }
}

/// Return the vhost configuration the scenarios use: virtual address
/// 198.51.100.`vhid`, passphrase `carp-sim`, OpenBSD master-down formula.
///
/// Panics if `vhid` is 0 (not a valid vhid).
pub fn vhost(vhid: u8, advbase: u8, advskew: u8) -> VhostConfig {
    let vhid = Vhid::new(vhid).expect("vhid 0 is not a valid vhid");
    let vip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, vhid.get()));
    let mut cfg = VhostConfig::new(vhid, &[vip]);
    cfg.advbase = AdvBase(advbase);
    cfg.advskew = AdvSkew(advskew);
    // A constant key of 8 bytes, which is always within KEY_LEN.
    cfg.passphrase = Passphrase::new(b"carp-sim").unwrap_or_default();
    cfg
}

/// Return [`vhost`] with a second virtual address, 2001:db8:100::`vhid`, so that
/// advertisements go out on both IPv4 and IPv6 (two master-down timers).
///
/// Panics if `vhid` is 0.
pub fn vhost46(vhid: u8, advbase: u8, advskew: u8) -> VhostConfig {
    let mut cfg = vhost(vhid, advbase, advskew);
    cfg.ipv6.push(Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x100,
        0,
        0,
        0,
        0,
        u16::from(vhid),
    ));
    cfg
}

/// Return the master-down interval of a vhost (spec 4.3), the checker's own oracle.
pub fn master_down_interval(cfg: &VhostConfig) -> Duration {
    let floor = interval(AdvBase(0), AdvSkew(0)) * 3;
    // `auto`: FreeBSD's from advbase 1, OpenBSD's at advbase 0.
    let openbsd = match cfg.master_down {
        MasterDownFormula::Openbsd => true,
        MasterDownFormula::Freebsd => false,
        MasterDownFormula::Auto => cfg.advbase.0 == 0,
    };
    match openbsd {
        true => interval(cfg.advbase, cfg.advskew) * 3,
        false => (Duration::from_secs(3 * u64::from(cfg.advbase.0))
            + Duration::from_micros(u64::from(cfg.advskew.0) * 1_000_000 / 256))
        .max(floor),
    }
}

/// A scenario input, applied at once ([`Sim::apply`](crate::Sim::apply)) or at a virtual time
/// ([`Sim::schedule`](crate::Sim::schedule)). Nodes are numbered from 1, as in the trace (`n1`).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The node stops dead: no more processing, its timers and queued
    /// deliveries to it vanish, its addresses are gone.
    Crash(usize),
    /// A crashed or shut-down node boots again: a fresh `Node`, fresh cookies, cold start.
    Restart(usize),
    /// Graceful shutdown: `begin_shutdown`, the bow-out goes out, then the node stops.
    Shutdown(usize),
    /// A parent link of a node goes down or up (`handle_link`).
    Link {
        /// The node.
        node: usize,
        /// Its link.
        link: LinkId,
        /// New state.
        up: bool,
    },
    /// `demote_group(group, adj)` on a node (`ifconfig -g GROUP carpdemote`).
    Demote {
        /// The node.
        node: usize,
        /// The interface group, usually `carp`.
        group: String,
        /// The adjustment.
        adj: i32,
    },
    /// Split the segment: nodes in different lists cannot reach each other;
    /// unlisted nodes form one more partition together.
    Partition(Vec<Vec<usize>>),
    /// Undo every partition.
    Heal,
    /// Set the per-delivery loss probability.
    Loss(f64),
    /// Drop (`blocked`) or stop dropping every advertisement of one address
    /// family, e.g. a switch that filters IPv4 multicast but not IPv6.
    Block {
        /// IPv4 or IPv6.
        family: Family,
        /// Drop from now on (`true`) or deliver again (`false`).
        blocked: bool,
    },
    /// Make a node's `Transmit`s fail locally with this probability (on top of
    /// [`SimConfig::send_failure`]); 0 repairs it.
    SendFailure {
        /// The node.
        node: usize,
        /// Probability of failure per transmit.
        probability: f64,
    },
    /// Change a node's preempt setting (kept across restarts).
    Preempt {
        /// The node.
        node: usize,
        /// New setting.
        preempt: bool,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Crash(n) => write!(f, "n{n} crash"),
            Event::Restart(n) => write!(f, "n{n} restart"),
            Event::Shutdown(n) => write!(f, "n{n} shutdown"),
            Event::Link { node, link, up } => {
                write!(
                    f,
                    "n{node} link{} {}",
                    link.0,
                    if *up { "up" } else { "down" }
                )
            }
            Event::Demote { node, group, adj } => write!(f, "n{node} demote {group} {adj:+}"),
            Event::Partition(groups) => {
                f.write_str("partition")?;
                for g in groups {
                    let names: Vec<String> = g.iter().map(|n| format!("n{n}")).collect();
                    write!(f, " {{{}}}", names.join(" "))?;
                }
                Ok(())
            }
            Event::Heal => f.write_str("heal"),
            Event::Loss(p) => write!(f, "loss {:.1}%", p * 100.0),
            Event::Block { family, blocked } => {
                let fam = match family {
                    Family::V4 => "ipv4",
                    Family::V6 => "ipv6",
                };
                write!(f, "{} {fam}", if *blocked { "block" } else { "unblock" })
            }
            Event::SendFailure { node, probability } => {
                write!(f, "n{node} send failures {:.1}%", probability * 100.0)
            }
            Event::Preempt { node, preempt } => {
                write!(f, "n{node} preempt {}", if *preempt { "on" } else { "off" })
            }
        }
    }
}

/// An invariant violation: when, what, and the whole trace up to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time of detection.
    pub at: Instant,
    /// Which invariant, which node and vhid.
    pub what: String,
    /// The trace up to the violation.
    pub trace: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant violated at t={}: {}\n--- trace ---\n{}",
            self.at, self.what, self.trace
        )
    }
}

/// Debug prints the Display form so that a failing `-> Result<(), Violation>` test shows the trace.
impl fmt::Debug for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Violation {}
