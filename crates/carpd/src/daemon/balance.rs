//! Balancing carp interfaces on the host: ARP/NS answers from user space,
//! neighbour pins, and the datapath's mask (spec section 7).

use std::net::IpAddr;

use carp_proto::{Balancing, CarpIfId, VhostId};

use super::{Daemon, vhost_of};
use crate::carplog;
use crate::log::chain;
use crate::os::{Os, Solicitation};

/// The most requesters pinned per daemon; beyond it the kernel resolves
/// them itself (and may re-point them at this host), which is counted.
const MAX_PINNED: usize = 4096;

impl<O: Os> Daemon<O> {
    /// The balancing carp interface on `sol`'s link that holds its target.
    fn balanced_for(&self, sol: &Solicitation) -> Option<VhostId> {
        self.vhosts
            .iter()
            .find(|(id, r)| {
                id.link == sol.link
                    && r.spec.balancing() != Balancing::None
                    && r.spec.addresses.iter().any(|a| a.addr == sol.target)
            })
            .map(|(id, _)| *id)
    }

    /// An ARP request or NS arrived: pin the requester, then answer if this
    /// host serves it (`Node::solicitation_answer`).
    pub(super) async fn handle_solicitation(&mut self, sol: Solicitation) {
        let Some(id) = self.balanced_for(&sol) else {
            return;
        };
        carplog!(
            Debug,
            "{}: {} asks for {}",
            self.label(id),
            sol.sender_ip,
            sol.target
        );
        self.pin(id, &sol).await;
        let Some(answer) = self
            .node
            .solicitation_answer(sol.link, sol.sender_mac, sol.target)
        else {
            self.solicitations.entry(id).or_default().silent += 1;
            return;
        };
        let Some(dev) = self.carpdevs.get(&sol.link) else {
            return;
        };
        let mode = self.vhosts[&id].spec.balancing();
        // A multicast MAC cannot be a frame source, and a stealth MAC must
        // never be one (switches would learn it and stop flooding).
        let frame_src = match mode {
            Balancing::Arp | Balancing::IpUnicast => answer,
            _ => dev.mac,
        };
        let router = matches!(sol.target, IpAddr::V6(_))
            && self
                .os
                .read_sysctl("net/ipv6/conf/all/forwarding")
                .is_some_and(|v| v.trim() == "1");
        match self.os.answer_solicitation(&sol, answer, frame_src, router) {
            Ok(()) => self.solicitations.entry(id).or_default().answered += 1,
            Err(e) => carplog!(
                Warning,
                "{}: cannot answer for {}: {}",
                self.label(id),
                sol.target,
                chain(&e)
            ),
        }
    }

    /// Pin the requester of a balanced address in the neighbour table: the
    /// kernel's own request for it would carry the shared address as sender
    /// with this host's MAC, and the requester would send every host's
    /// share here.
    async fn pin(&mut self, id: VhostId, sol: &Solicitation) {
        if sol.sender_ip.is_unspecified() {
            return;
        }
        let key = (sol.link, sol.sender_ip);
        if self.pinned.get(&key) == Some(&sol.sender_mac) {
            return;
        }
        if !self.pinned.contains_key(&key) && self.pinned.len() >= MAX_PINNED {
            self.solicitations.entry(id).or_default().dropped_pins += 1;
            return;
        }
        let Some(index) = self.vhosts.get(&id).map(|r| r.addr_index) else {
            return;
        };
        match self
            .os
            .pin_neighbour(index, sol.sender_ip, sol.sender_mac)
            .await
        {
            Ok(()) => {
                self.pinned.insert(key, sol.sender_mac);
            }
            Err(e) => carplog!(
                Warning,
                "{}: cannot pin neighbour {}: {}",
                self.label(id),
                sol.sender_ip,
                chain(&e)
            ),
        }
    }

    /// The load-share mask of `iface` changed: write it to the datapath.
    pub(super) fn load_share(&mut self, iface: CarpIfId, mask: u32, nodes: u8) {
        let id = vhost_of(iface);
        carplog!(
            Debug,
            "{}: load-share mask {mask:#x} of {nodes} node(s)",
            self.label(id)
        );
        let balanced = self
            .vhosts
            .get(&id)
            .is_some_and(|r| r.spec.balancing() != Balancing::None);
        if !balanced {
            return;
        }
        if let Err(e) = self.os.balance_mask(iface.link, iface, mask) {
            // The datapath would split by a stale mask: hand the nodes over.
            carplog!(
                Err,
                "{}: cannot write the load-share mask: {}",
                self.label(id),
                chain(&e)
            );
            self.fault(id, "cannot write the load-share mask");
        }
    }
}
