//! Read-only questions a scenario asks the simulation: states, masters,
//! addresses held, counters.

use core::time::Duration;

use carp_proto::{CarpIfId, Node, State, VhostId};

use super::{Sim, id1};

impl Sim {
    /// Return the state of vhid `vhid` on `LinkId(1)` of node `n`, `None` if dead or unknown.
    pub fn state(&self, n: usize, vhid: u8) -> Option<State> {
        self.state_of(n, id1(vhid)?)
    }

    /// Return the state of vhost `id` of node `n`, `None` if dead or unknown.
    pub fn state_of(&self, n: usize, id: VhostId) -> Option<State> {
        self.index(n)
            .and_then(|i| self.nodes[i].node.as_ref())
            .and_then(|nd| nd.state(id))
    }

    /// Return the numbers of the live nodes that are MASTER of vhost `id`.
    pub fn masters_of(&self, id: VhostId) -> Vec<usize> {
        (1..=self.nodes.len())
            .filter(|&n| self.state_of(n, id) == Some(State::Master))
            .collect()
    }

    /// Return the numbers of the live nodes that are MASTER of vhid `vhid` on `LinkId(1)`.
    pub fn masters(&self, vhid: u8) -> Vec<usize> {
        id1(vhid).map(|id| self.masters_of(id)).unwrap_or_default()
    }

    /// Return whether node `n` has the addresses of vhost `id`'s carp interface configured.
    pub fn holds_vip(&self, n: usize, id: VhostId) -> bool {
        self.index(n).is_some_and(|i| {
            let iface = self.nodes[i]
                .node
                .as_ref()
                .and_then(|nd| nd.interface_of(id))
                .unwrap_or(CarpIfId::of(id));
            self.nodes[i].holds.contains(&iface)
        })
    }

    /// Return how many `Announce` actions (gratuitous ARP / NA bursts) node `n` performed.
    pub fn announces(&self, n: usize) -> u64 {
        self.index(n).map_or(0, |i| self.nodes[i].announces)
    }

    /// Return the `Node` of `n` (for stats and status), `None` if dead.
    pub fn node(&self, n: usize) -> Option<&Node> {
        self.index(n).and_then(|i| self.nodes[i].node.as_ref())
    }

    /// Return the number of nodes ever added.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Return how long the network must be quiet before invariants (a) and (c)
    /// apply: the largest master-down interval + advertisement interval of any
    /// configured vhost, plus the largest latency.
    pub fn settle_window(&self) -> Duration {
        self.settle
    }

    /// Return the largest one-way latency.
    pub fn max_latency(&self) -> Duration {
        self.cfg.latency_max
    }

    /// Return whether nothing (event, loss, send failure) has disturbed the
    /// network for [`Sim::settle_window`].
    pub fn is_quiet(&self) -> bool {
        self.now.saturating_since(self.last_disturbance) >= self.settle
    }

    /// Return (sent, delivered, lost, duplicated, send failures) counts of the segment.
    pub fn wire_counts(&self) -> (u64, u64, u64, u64, u64) {
        let w = self.wire;
        (w.sent, w.delivered, w.lost, w.duplicated, w.send_failures)
    }
}
