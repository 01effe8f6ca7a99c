//! Faults of the environment, and their repair.
//!
//! A carp interface that cannot hold its addresses (its macvlan deleted, an
//! add refused) would be a MASTER that black-holes its addresses: it steps
//! down with demotion (`Node::handle_interface_fault`), so a peer takes
//! over, and is rebuilt here after a wait that doubles while the fault keeps
//! coming back. A carpdev deleted and re-created, also under a new index,
//! gets its sockets, macvlans and link state back; until then the core holds
//! it down as for a lost carrier.

use std::time::Duration;

use carp_proto::{LinkId, VhostId};
use tokio::time::Instant;

use super::{Daemon, Realised};
use crate::carplog;
use crate::config::Lladdr;
use crate::log::chain;
use crate::os::{LinkInfo, Os};

/// The first wait before rebuilding a faulted carp interface.
pub(super) const REPAIR_FIRST: Duration = Duration::from_secs(1);
/// The longest wait; a fault this long after a rebuild starts again at the first.
const REPAIR_MAX: Duration = Duration::from_secs(30);

impl<O: Os> Daemon<O> {
    /// The carp interface of `id` cannot hold its addresses (`why`): step down
    /// with demotion and rebuild it later. Repeats while faulted are ignored.
    pub(super) fn fault(&mut self, id: VhostId, why: &str) {
        let label = self.label(id);
        let Some(iface) = self.node.interface_of(id) else {
            return;
        };
        let Some(r) = self.vhosts.get_mut(&id) else {
            return;
        };
        if r.repair_at.is_none() {
            let now = Instant::now();
            r.repair_delay = match r.repaired_at {
                Some(t) if now.saturating_duration_since(t) < REPAIR_MAX => {
                    (r.repair_delay * 2).min(REPAIR_MAX)
                }
                _ => REPAIR_FIRST,
            };
            r.repair_at = Some(now + r.repair_delay);
            carplog!(
                Err,
                "{label}: {why}; stepping down, rebuilding in {:?}",
                r.repair_delay
            );
        }
        let now = self.now();
        self.node.handle_interface_fault(now, iface, true);
    }

    /// When the next faulted carp interface is due for a rebuild.
    pub(super) fn next_repair(&self) -> Option<Instant> {
        self.vhosts.values().filter_map(|r| r.repair_at).min()
    }

    /// Rebuild every faulted carp interface that is due.
    pub(super) async fn repair_due(&mut self) {
        // A rebuild may move addresses, macvlans and sockets.
        self.will_changed();
        let now = Instant::now();
        let due: Vec<VhostId> = self
            .vhosts
            .iter()
            .filter(|(_, r)| r.repair_at.is_some_and(|t| t <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.repair(id).await;
        }
    }

    /// Rebuild what vhost `id` needs to hold its addresses (its macvlan) and
    /// clear its fault; on failure, try again after a longer wait.
    pub(super) async fn repair(&mut self, id: VhostId) {
        let Some(r) = self.vhosts.get(&id) else {
            return;
        };
        let result = match r.spec.lladdr {
            Lladdr::Virtual => self.ensure_vhost_macvlan(id).await,
            Lladdr::Real => match self.carpdevs.get(&id.link).and_then(|d| d.index) {
                Some(index) => {
                    if let Some(r) = self.vhosts.get_mut(&id) {
                        r.addr_index = index;
                    }
                    Ok(())
                }
                None => Err(anyhow::anyhow!("its carpdev is gone")),
            },
        };
        let label = self.label(id);
        let Some(r) = self.vhosts.get_mut(&id) else {
            return;
        };
        let faulted = r.repair_at.is_some();
        match result {
            Ok(()) => {
                if faulted {
                    carplog!(
                        Warning,
                        "{label}: rebuilt on {}; can hold its addresses again",
                        r.addr_ifname
                    );
                    r.repair_at = None;
                    r.repaired_at = Some(Instant::now());
                    if let Some(iface) = self.node.interface_of(id) {
                        let now = self.now();
                        self.node.handle_interface_fault(now, iface, false);
                    }
                }
            }
            Err(e) => {
                back_off(r);
                carplog!(
                    Warning,
                    "{label}: cannot rebuild ({}); next try in {:?}",
                    format!("{e:#}"),
                    r.repair_delay
                );
                if !faulted && let Some(iface) = self.node.interface_of(id) {
                    let now = self.now();
                    self.node.handle_interface_fault(now, iface, true);
                }
            }
        }
    }

    /// Carpdev `link` was deleted: its sockets go, and the core holds its
    /// vhosts in INIT with demotion (OpenBSD `carp_carpdev_state`) until it returns.
    pub(super) fn carpdev_gone(&mut self, link: LinkId) {
        let Some(dev) = self.carpdevs.get_mut(&link) else {
            return;
        };
        if dev.index.take().is_none() {
            return;
        }
        carplog!(
            Warning,
            "carpdev {} was deleted; waiting for it to come back",
            dev.name
        );
        dev.src4 = None;
        dev.src6 = None;
        self.os.close_link(link);
        let now = self.now();
        self.node.handle_link(now, link, false);
    }

    /// Carpdev `link` exists (again) as `info`, maybe under a new index:
    /// reopen its sockets, rebuild its macvlans, then report its link state.
    /// A failure leaves it gone; its next link event tries again.
    pub(super) async fn carpdev_returned(&mut self, link: LinkId, info: &LinkInfo) {
        let Some(dev) = self.carpdevs.get(&link) else {
            return;
        };
        let (name, want4, want6) = (dev.name.clone(), dev.has4, dev.has6);
        // Sockets bound to the old index hear nothing on the new one.
        self.os.close_link(link);
        let mut opened = self.os.open_l2(link, info.index);
        for (family, wanted) in [
            (carp_proto::Family::V4, want4),
            (carp_proto::Family::V6, want6),
        ] {
            if wanted && opened.is_ok() {
                opened =
                    self.os
                        .open_carp_socket(link, info.index, &name, family, self.rx_tx.clone());
            }
        }
        if let Err(e) = opened {
            carplog!(
                Err,
                "carpdev {name} is back but its sockets cannot open: {}",
                chain(&e)
            );
            self.os.close_link(link);
            return;
        }
        let src4 = self.source_v4(info.index, None).await;
        let src6 = self.source_v6(info.index).await;
        if let Some(dev) = self.carpdevs.get_mut(&link) {
            dev.index = Some(info.index);
            dev.mac = info.mac;
            dev.src4 = src4;
            dev.src6 = src6;
        }
        carplog!(
            Warning,
            "carpdev {name} is back as index {}; sockets reopened",
            info.index
        );
        // The datapath and the solicitation reader went with the old index.
        if let Some(dev) = self.carpdevs.get_mut(&link) {
            dev.solicitations = false;
        }
        let balanced: Vec<_> = self
            .vhosts
            .iter()
            .filter(|(id, r)| id.link == link && r.spec.balancing() != carp_proto::Balancing::None)
            .map(|(_, r)| r.spec.clone())
            .collect();
        for spec in balanced {
            if let Err(e) = self.start_balancing(link, info.index, &spec) {
                carplog!(Err, "carpdev {name}: {}", chain(&*e));
            }
        }
        // Its macvlans went with the old interface.
        let ids: Vec<VhostId> = self
            .vhosts
            .keys()
            .filter(|id| id.link == link)
            .copied()
            .collect();
        for id in ids {
            if let Some(r) = self.vhosts.get_mut(&id) {
                r.macvlan = None;
            }
            self.repair(id).await;
        }
        let now = self.now();
        self.node
            .handle_link(now, link, info.admin_up && info.carrier);
    }
}

/// Double the wait of a failed rebuild and schedule the next attempt.
fn back_off(r: &mut Realised) {
    r.repair_delay = (r.repair_delay * 2).min(REPAIR_MAX);
    r.repair_at = Some(Instant::now() + r.repair_delay);
}
