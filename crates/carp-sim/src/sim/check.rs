//! The invariants checked after every step (STYLE 6.7 item 5).
//!
//! "Reachable" is per vhost: two live nodes whose link of that vhost is up and
//! who are in the same partition. (a) and (b) are checked per such component,
//! which is stronger than a global check and still true during partitions.

use carp_proto::config::interval;
use carp_proto::{State, VhostId};

use super::Sim;
use crate::setup::master_down_interval;

impl Sim {
    pub(super) fn check(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let checks = self.cfg.checks;
        if checks.vip_matches_state {
            self.check_vip();
        }
        if checks.single_master && self.is_quiet() {
            self.check_single_master();
        }
        if checks.liveness {
            self.check_liveness();
        }
    }

    /// Every (live node, vhost) with its state, in a fixed order.
    fn vhost_states(&self) -> Vec<(usize, VhostId, State)> {
        let mut out = Vec::new();
        for (i, sn) in self.nodes.iter().enumerate() {
            let Some(nd) = sn.node.as_ref() else { continue };
            for st in nd.status() {
                out.push((i, st.id, st.state));
            }
        }
        out
    }

    /// (d) per carp interface: the load-share mask is the set of its nodes that are
    /// MASTER, and the addresses are held exactly while that set is not empty
    /// (balancing `none`) or while some node is out of INIT (a balancing mode,
    /// where every host holds them and the datapath splits by the mask).
    fn check_vip(&mut self) {
        for (i, sn) in self.nodes.iter().enumerate() {
            if sn.node.is_none() && !sn.holds.is_empty() {
                let what = format!("(d) VIP: dead n{} still holds addresses", i + 1);
                self.fail(what);
                return;
            }
        }
        let mut failure = None;
        for (i, sn) in self.nodes.iter().enumerate() {
            let Some(nd) = sn.node.as_ref() else { continue };
            for iface in nd.interfaces() {
                let masters = iface
                    .nodes
                    .iter()
                    .enumerate()
                    .filter(|(_, id)| nd.state(**id) == Some(State::Master))
                    .fold(0u32, |m, (slot, _)| m | 1 << slot);
                let holds = sn.holds.contains(&iface.id);
                let should_hold = if iface.balancing.shares_addresses() {
                    iface
                        .nodes
                        .iter()
                        .any(|id| nd.state(*id).is_some_and(|s| s != State::Init))
                } else {
                    masters != 0
                };
                if masters != iface.mask {
                    failure = Some(format!(
                        "(d) VIP: n{} carp interface {} has mask {:#x} but its MASTER nodes are {masters:#x}",
                        i + 1,
                        iface.id,
                        iface.mask
                    ));
                } else if holds != should_hold {
                    let state = if masters == 0 {
                        State::Backup
                    } else {
                        State::Master
                    };
                    let state = nd
                        .state(iface.nodes[0])
                        .filter(|_| iface.nodes.len() == 1)
                        .unwrap_or(state);
                    failure = Some(format!(
                        "(d) VIP: n{} vhid {} is {state} but {} its addresses",
                        i + 1,
                        iface.id.vhid,
                        if holds { "holds" } else { "does not hold" }
                    ));
                }
                if failure.is_some() {
                    break;
                }
            }
            if failure.is_some() {
                break;
            }
        }
        if let Some(what) = failure {
            self.fail(what);
        }
    }

    /// (a) at most one MASTER per vhost among mutually reachable nodes.
    fn check_single_master(&mut self) {
        let masters: Vec<(usize, VhostId)> = self
            .vhost_states()
            .into_iter()
            .filter(|(_, _, s)| *s == State::Master)
            .map(|(i, id, _)| (i, id))
            .collect();
        for (k, &(a, id)) in masters.iter().enumerate() {
            for &(b, id2) in &masters[k + 1..] {
                if id == id2 && self.connected(a, b, id.link) {
                    let what = format!(
                        "(a) single master: n{} and n{} are both MASTER of vhid {} on a network quiet since t={}",
                        a + 1,
                        b + 1,
                        id.vhid,
                        self.last_disturbance
                    );
                    self.fail(what);
                    return;
                }
            }
        }
    }

    /// (b) a BACKUP with no reachable MASTER gets one within its own
    /// master-down interval + advertisement interval + largest latency.
    fn check_liveness(&mut self) {
        let states = self.vhost_states();
        let mut orphans = Vec::new();
        for &(i, id, state) in &states {
            if state != State::Backup {
                continue;
            }
            let has_master = states.iter().any(|&(j, id2, s)| {
                id2 == id && s == State::Master && self.connected(i, j, id.link)
            });
            if !has_master {
                orphans.push((i, id));
            }
        }
        self.orphan_since.retain(|key, _| orphans.contains(key));
        for key in orphans {
            let since = *self.orphan_since.entry(key).or_insert(self.now);
            let Some(cfg) = self.nodes[key.0]
                .spec
                .timings()
                .iter()
                .find(|(l, c)| *l == key.1.link && c.vhid == key.1.vhid)
                .map(|(_, c)| c.clone())
            else {
                continue;
            };
            let bound = master_down_interval(&cfg)
                + interval(cfg.advbase, cfg.advskew)
                + self.cfg.latency_max;
            let deadline = since.max(self.last_event) + bound;
            if self.now > deadline {
                let what = format!(
                    "(b) liveness: n{} vhid {} has been BACKUP with no reachable MASTER since t={} (bound {:?})",
                    key.0 + 1,
                    key.1.vhid,
                    since,
                    bound
                );
                self.fail(what);
                return;
            }
        }
    }
}
