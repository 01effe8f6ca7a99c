//! The balancing datapaths of the carpdevs, keyed as the daemon keys them.
//!
//! One [`Datapath`] per carpdev, attached when its first balancing carp
//! interface is set and detached (dropped) with the last. A carp interface's
//! slot in the datapath is its leader's vhid, unique on a carpdev.

use std::collections::{BTreeMap, BTreeSet};

use carp_proto::{Balancing, CarpIfId, LinkId};

use super::balance::{BalanceSet, Datapath};
use super::{Balanced, OsError};

/// One carpdev's datapath and the carp interfaces set in it.
#[derive(Debug)]
struct LinkPath {
    datapath: Datapath,
    ifaces: BTreeSet<CarpIfId>,
}

/// The datapaths, per carpdev.
#[derive(Debug, Default)]
pub struct Datapaths {
    links: BTreeMap<LinkId, LinkPath>,
}

/// The datapath's set for `b`: the leader's MAC first (multicast in `ip`).
pub fn balance_set(b: &Balanced) -> BalanceSet {
    let mut node_macs = b.node_macs.clone();
    if let Some(first) = node_macs.first_mut()
        && b.mode != Balancing::Arp
    {
        *first = b.leader_mac;
    }
    BalanceSet {
        mode: b.mode,
        mask: b.mask,
        node_macs,
        addresses: b.addresses.clone(),
    }
}

impl Datapaths {
    /// Attach to `link` (interface `index`) if needed and set `iface`'s part.
    /// A datapath left on an older index of the link is replaced.
    pub fn set(
        &mut self,
        link: LinkId,
        index: u32,
        iface: CarpIfId,
        set: &Balanced,
    ) -> Result<(), OsError> {
        if self
            .links
            .get(&link)
            .is_some_and(|p| p.datapath.ifindex() != index)
        {
            self.links.remove(&link);
        }
        let path = match self.links.entry(link) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let name = nix::net::if_::if_indextoname(index)
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| format!("ifindex {index}"));
                e.insert(LinkPath {
                    datapath: Datapath::attach(index, &name)?,
                    ifaces: BTreeSet::new(),
                })
            }
        };
        let result = path
            .datapath
            .set(u32::from(iface.vhid.get()), &balance_set(set));
        if result.is_ok() {
            path.ifaces.insert(iface);
        } else if path.ifaces.is_empty() {
            self.links.remove(&link);
        }
        result
    }

    /// Write `iface`'s mask (one atomic store, see [`Datapath::set_mask`]).
    pub fn set_mask(&mut self, link: LinkId, iface: CarpIfId, mask: u32) -> Result<(), OsError> {
        match self.links.get_mut(&link) {
            Some(p) if p.ifaces.contains(&iface) => {
                p.datapath.set_mask(u32::from(iface.vhid.get()), mask)
            }
            _ => Err(OsError::LinkNotFound {
                link: format!("{} (no balancing datapath)", link.0),
            }),
        }
    }

    /// Remove `iface`; the last one on a link detaches its datapath.
    pub fn remove(&mut self, link: LinkId, iface: CarpIfId) {
        let Some(path) = self.links.get_mut(&link) else {
            return;
        };
        if path.ifaces.remove(&iface) {
            // Errors here are the kernel's; the drop below detaches anyway.
            let _ = path.datapath.remove(u32::from(iface.vhid.get()));
        }
        if path.ifaces.is_empty() {
            self.links.remove(&link);
        }
    }

    /// The link's interface is gone: drop its datapath.
    pub fn forget_link(&mut self, link: LinkId) {
        self.links.remove(&link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_mac_leads_except_in_arp_mode() {
        let mut b = Balanced {
            mode: Balancing::Ip,
            mask: 1,
            node_macs: vec![[0, 0, 0x5e, 0, 1, 1], [0, 0, 0x5e, 0, 1, 2]],
            leader_mac: [1, 0, 0x5e, 0, 1, 1],
            addresses: Vec::new(),
        };
        assert_eq!(balance_set(&b).node_macs[0], [1, 0, 0x5e, 0, 1, 1]);
        assert_eq!(balance_set(&b).node_macs[1], [0, 0, 0x5e, 0, 1, 2]);
        b.mode = Balancing::Arp;
        assert_eq!(balance_set(&b).node_macs[0], [0, 0, 0x5e, 0, 1, 1]);
    }
}
