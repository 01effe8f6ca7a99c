//! The carp interface (OpenBSD `struct carp_softc`): what its nodes share.
//!
//! A carp interface owns the addresses, the leader's announcements and the
//! load-share mask. Its nodes ([`Vhost`]s, OpenBSD `carp_vhost_entry`) only
//! elect; when one enters or leaves MASTER it tells the interface through
//! [`Shared::node_entered_master`] / [`Shared::node_left_master`], and the
//! interface decides which address and announcement actions follow.
//!
//! Invariant: with balancing `none` the addresses are live (added and not
//! removed) exactly while the mask is not zero, that is while some node is
//! MASTER here. In a balancing mode every host holds them while some node
//! runs (is out of INIT), and the datapath splits the traffic by the mask.

use core::time::Duration;

use crate::action::{Action, CarpIfId};
use crate::balance::{ArpHashKey, Balancing, arp_slot};
use crate::config::{CarpIfConfig, Lladdr};
use crate::status::CarpIfStatus;
use crate::time::Instant;
use crate::vhost::{Context, Outbox, Vhost};

/// How long after a failed address add the core asks again.
pub(crate) const ADDRESS_RETRY: Duration = Duration::from_secs(1);

/// The state a carp interface's nodes share, apart from the nodes themselves
/// so that a node can be borrowed mutably beside it.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) id: CarpIfId,
    pub(crate) config: CarpIfConfig,
    /// Parent link down (OpenBSD "suppressed"): every node stays in INIT.
    pub(crate) link_down: bool,
    /// Disabled by the operator or shutting down: every node stays in INIT.
    pub(crate) disabled: bool,
    /// The shell cannot hold the addresses (`Node::handle_interface_fault`).
    pub(crate) faulted: bool,
    /// Demotion this interface contributes itself (OpenBSD `sc_demote_cnt`).
    pub(crate) own_demote: u8,
    /// OpenBSD `sc_lsmask`: bit i set when node i is MASTER here.
    mask: u32,
    /// Bit i set when node i is out of INIT.
    running: u32,
    /// The addresses are configured.
    live: bool,
    /// A `PrepareMaster` is outstanding.
    pub(crate) preparing: bool,
    /// When to ask again for the addresses after a failed add.
    retry_at: Option<Instant>,
    pub(crate) address_failures: u64,
    pub(crate) gate_failures: u64,
}

/// What a node works with: the host-wide context, its interface and the outbox.
pub(crate) struct Cx<'a> {
    pub(crate) ctx: Context,
    pub(crate) shared: &'a mut Shared,
    pub(crate) out: &'a mut Outbox,
}

impl Shared {
    fn new(id: CarpIfId, config: CarpIfConfig, link_down: bool) -> Shared {
        Shared {
            id,
            config,
            link_down,
            disabled: false,
            faulted: false,
            own_demote: 0,
            mask: 0,
            running: 0,
            live: false,
            preparing: false,
            retry_at: None,
            address_failures: 0,
            gate_failures: 0,
        }
    }

    /// Return the load-share mask.
    pub(crate) fn mask(&self) -> u32 {
        self.mask
    }

    /// Return true while the addresses are configured.
    pub(crate) fn live(&self) -> bool {
        self.live
    }

    /// Node `slot` left or entered INIT. In a balancing mode the addresses
    /// follow whether any node runs (OpenBSD keeps them on the carp interface
    /// whatever the node states; `carp_lsdrop` splits the traffic).
    pub(crate) fn node_running(&mut self, slot: u8, running: bool, out: &mut Outbox) {
        if running {
            self.running |= 1 << slot;
        } else {
            self.running &= !(1 << slot);
        }
        if !self.config.balancing().shares_addresses() {
            return;
        }
        if self.running != 0 {
            self.bring_up(out);
        } else {
            self.take_down(out);
        }
    }

    /// Node `slot` became MASTER: with balancing `none` the first one brings
    /// the addresses up, and the leader announces them (OpenBSD
    /// `carp_master_down` → `carp_send_arp`).
    pub(crate) fn node_entered_master(&mut self, slot: u8, out: &mut Outbox) {
        if !self.config.balancing().shares_addresses() {
            self.bring_up(out);
        }
        self.announce(slot, out);
        self.set_mask(self.mask | 1 << slot, out);
    }

    /// Node `slot` left MASTER: with balancing `none` the last one takes the
    /// addresses down.
    pub(crate) fn node_left_master(&mut self, slot: u8, out: &mut Outbox) {
        let mask = self.mask & !(1 << slot);
        if mask == 0 && !self.config.balancing().shares_addresses() {
            self.take_down(out);
        }
        self.set_mask(mask, out);
    }

    fn bring_up(&mut self, out: &mut Outbox) {
        if !self.live {
            self.live = true;
            out.actions.push_back(Action::AddAddresses {
                iface: self.id,
                addresses: self.config.addresses.clone(),
            });
        }
    }

    fn take_down(&mut self, out: &mut Outbox) {
        if self.live {
            self.live = false;
            self.retry_at = None;
            out.actions.push_back(Action::RemoveAddresses {
                iface: self.id,
                addresses: self.config.addresses.clone(),
            });
        }
    }

    /// The MAC to answer an ARP request / NS from `sender_mac` for one of the
    /// addresses with, or `None` to stay silent (balancing modes only; with
    /// `none` the kernel answers on the MASTER).
    ///
    /// IP modes: the host that is MASTER of the leader answers with the
    /// leader's MAC. `arp` (OpenBSD 1.270 `carp_iamatch`): the MASTER of node
    /// `carp_hash(sender) % count` answers with that node's MAC.
    pub(crate) fn solicitation_answer(&self, sender_mac: [u8; 6]) -> Option<[u8; 6]> {
        let slot = match self.config.balancing() {
            Balancing::None => return None,
            Balancing::Arp => {
                let key = ArpHashKey::new(&self.config.passphrase);
                arp_slot(&key, sender_mac, self.config.nodes.len())?
            }
            Balancing::Ip | Balancing::IpStealth | Balancing::IpUnicast => 0,
        };
        if self.mask & (1 << slot) == 0 {
            return None;
        }
        self.config.answer_mac(slot)
    }

    /// Send gratuitous ARP / NA for the addresses if node `slot` is the leader
    /// and the interface does not balance (OpenBSD `carp_send_arp` runs only
    /// for `balancing none`).
    pub(crate) fn announce(&self, slot: u8, out: &mut Outbox) {
        if slot != 0 || self.config.balancing() != Balancing::None {
            return;
        }
        let mac = match self.config.lladdr {
            Lladdr::Virtual => Some(self.config.node_virtual_mac(self.config.nodes[0].vhid)),
            Lladdr::Parent => None,
        };
        out.actions.push_back(Action::Announce {
            iface: self.id,
            mac,
            ipv4: self.config.ipv4(),
            ipv6: self.config.ipv6(),
        });
    }

    /// Ask the owner to prepare for MASTER, once per takeover.
    pub(crate) fn request_prepare(&mut self, deadline: Instant, out: &mut Outbox) {
        if !self.preparing {
            self.preparing = true;
            out.actions.push_back(Action::PrepareMaster {
                iface: self.id,
                deadline,
            });
        }
    }

    fn set_mask(&mut self, mask: u32, out: &mut Outbox) {
        if mask != self.mask {
            self.mask = mask;
            out.actions.push_back(Action::LoadShare {
                iface: self.id,
                mask,
                nodes: self.config.nodes.len() as u8,
            });
        }
    }
}

/// A carp interface: its shared state and its nodes in vhid order.
#[derive(Debug, Clone)]
pub(crate) struct CarpIf {
    pub(crate) shared: Shared,
    pub(crate) vhosts: Vec<Vhost>,
}

impl CarpIf {
    /// Return an interface in INIT; `cookies` has one cookie per node.
    pub(crate) fn new(
        id: CarpIfId,
        config: CarpIfConfig,
        cookies: &[[u8; 8]],
        link_down: bool,
        now: Instant,
    ) -> CarpIf {
        let vhosts = config
            .nodes
            .iter()
            .zip(cookies)
            .enumerate()
            .map(|(slot, (node, cookie))| {
                Vhost::new(id.link, slot as u8, node, &config, *cookie, now)
            })
            .collect();
        CarpIf {
            shared: Shared::new(id, config, link_down),
            vhosts,
        }
    }

    /// Return what [`crate::Node::interfaces`] reports of this interface.
    pub(crate) fn status(&self) -> CarpIfStatus {
        CarpIfStatus {
            id: self.shared.id,
            nodes: self.vhosts.iter().map(|v| v.id).collect(),
            mask: self.shared.mask(),
            balancing: self.shared.config.balancing(),
            live: self.shared.live(),
            addresses: self.shared.config.addresses.clone(),
            address_failures: self.shared.address_failures,
            gate_failures: self.shared.gate_failures,
            preparing: self.shared.preparing,
        }
    }

    /// Return the earliest deadline of the interface and its nodes.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let nodes = self.vhosts.iter().filter_map(Vhost::poll_timeout);
        nodes.chain(self.shared.retry_at).min()
    }

    /// Run `f` on every node with the context and the shared state.
    pub(crate) fn each(
        &mut self,
        ctx: Context,
        out: &mut Outbox,
        mut f: impl FnMut(&mut Vhost, &mut Cx<'_>),
    ) {
        let CarpIf { shared, vhosts } = self;
        for v in vhosts.iter_mut() {
            f(v, &mut Cx { ctx, shared, out });
        }
    }

    /// Run `f` on node `slot`.
    pub(crate) fn with<R>(
        &mut self,
        slot: usize,
        ctx: Context,
        out: &mut Outbox,
        f: impl FnOnce(&mut Vhost, &mut Cx<'_>) -> R,
    ) -> Option<R> {
        let CarpIf { shared, vhosts } = self;
        let v = vhosts.get_mut(slot)?;
        Some(f(v, &mut Cx { ctx, shared, out }))
    }

    /// Handle the interface's own timer: retry a failed address add.
    pub(crate) fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        if self.shared.retry_at.is_some_and(|t| t <= now) {
            self.shared.retry_at = None;
            if self.shared.live {
                out.actions.push_back(Action::AddAddresses {
                    iface: self.shared.id,
                    addresses: self.shared.config.addresses.clone(),
                });
            }
        }
    }

    /// Count the outcome of one `AddAddresses`; a failure is retried while live.
    pub(crate) fn handle_address_result(&mut self, now: Instant, ok: bool) {
        if ok {
            self.shared.retry_at = None;
        } else {
            self.shared.address_failures += 1;
            if self.shared.live {
                self.shared.retry_at = Some(now + ADDRESS_RETRY);
            }
        }
    }

    /// The prepare step ended: every node waiting for the gate goes on.
    pub(crate) fn handle_prepared(
        &mut self,
        now: Instant,
        ok: bool,
        ctx: Context,
        out: &mut Outbox,
    ) {
        self.each(ctx, out, |v, cx| v.finish_gate(now, ok, cx));
        self.shared.preparing = false;
    }

    /// Replace the configuration of the same nodes (SIGHUP). State and addresses
    /// are kept when the key and the address set are unchanged.
    pub(crate) fn reconfigure(
        &mut self,
        now: Instant,
        config: CarpIfConfig,
        ctx: Context,
        out: &mut Outbox,
    ) {
        for (v, node) in self.vhosts.iter_mut().zip(&config.nodes) {
            v.set_advskew(node.advskew);
        }
        let same_identity = config.passphrase == self.shared.config.passphrase
            && config.addresses == self.shared.config.addresses;
        if same_identity {
            self.shared.config = config;
            return;
        }
        let old = std::mem::replace(&mut self.shared.config, config);
        for v in &mut self.vhosts {
            v.rekey(&self.shared.config);
        }
        if self.shared.live {
            let new = &self.shared.config.addresses;
            let gone: Vec<_> = old
                .addresses
                .iter()
                .filter(|a| !new.contains(a))
                .copied()
                .collect();
            if !gone.is_empty() {
                out.actions.push_back(Action::RemoveAddresses {
                    iface: self.shared.id,
                    addresses: gone,
                });
            }
            out.actions.push_back(Action::AddAddresses {
                iface: self.shared.id,
                addresses: new.clone(),
            });
        }
        self.each(ctx, out, |v, cx| v.reconfigured(now, cx));
    }
}

#[cfg(test)]
#[path = "carpif_tests.rs"]
mod tests;
