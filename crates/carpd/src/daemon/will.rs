//! The last will the guard executes should the daemon die (see
//! [`crate::guard`]): rebuilt after anything that may change it, and handed
//! to the [`Os`] only when it did change.
//!
//! What to send is asked of the core, one carp interface at a time
//! ([`carp_proto::Node::bow_out_preview_of`]: the transmits a shutdown would
//! queue now) and routed as [`Daemon::route`] routes every advertisement;
//! what to remove is each live interface's addresses and every macvlan made
//! here.

use std::collections::{BTreeMap, BTreeSet};

use carp_proto::{Action, CarpIfId, Instant};

use super::perform::Route;
use super::{Daemon, vhost_of};
use crate::guard::will::{Will, WillAddress, WillAdvert, WillLink};
use crate::os::Os;

/// What must be rebuilt of the will, its parts and the one handed on last.
///
/// The will is kept in parts, one per carp interface, and a change rebuilds
/// only the parts it touched: each takeover changes the will before its
/// addresses go live, and rebuilding every part each time made taking over
/// 1,000 vhosts quadratic (seconds of CPU at 1,000).
#[derive(Debug, Default)]
pub(super) struct WillState {
    /// Every part must be rebuilt (a link event, a control request...).
    all_dirty: bool,
    /// The interfaces whose part must be rebuilt.
    dirty: BTreeSet<CarpIfId>,
    /// Shutting down: the will of the running daemon stays (a death in the
    /// middle of the stop still removes everything).
    frozen: bool,
    parts: BTreeMap<CarpIfId, WillPart>,
    /// The macvlans of the will handed on last (the parts are the rest of
    /// it: no second copy of the whole is kept).
    macvlans: Vec<WillLink>,
    /// A will was handed on at least once.
    handed_on: bool,
}

/// One carp interface's share of the will.
#[derive(Debug, Default, PartialEq, Eq)]
struct WillPart {
    addresses: Vec<WillAddress>,
    adverts: Vec<WillAdvert>,
}

impl WillPart {
    fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.adverts.is_empty()
    }
}

impl<O: Os> Daemon<O> {
    /// Something any part of the last will may depend on may have changed.
    pub(super) fn will_changed(&mut self) {
        self.will.all_dirty = true;
    }

    /// Something carp interface `iface`'s part of the will depends on may
    /// have changed.
    pub(super) fn will_changed_for(&mut self, iface: CarpIfId) {
        self.will.dirty.insert(iface);
    }

    /// Rebuild the will if needed and hand it on if it changed.
    pub(super) fn refresh_will(&mut self) {
        if self.will.frozen || (!self.will.all_dirty && self.will.dirty.is_empty()) {
            return;
        }
        let now = self.now();
        let mut changed = !self.will.handed_on;
        let dirty: Vec<CarpIfId> = if std::mem::take(&mut self.will.all_dirty) {
            self.will.dirty.clear();
            let live: BTreeSet<CarpIfId> = self.node.interfaces().iter().map(|i| i.id).collect();
            let before = self.will.parts.len();
            self.will.parts.retain(|id, _| live.contains(id));
            changed |= self.will.parts.len() != before;
            live.into_iter().collect()
        } else {
            std::mem::take(&mut self.will.dirty).into_iter().collect()
        };
        for iface in dirty {
            // A BACKUP's part is empty: it is not kept.
            let old = match self.will_part(iface, now).filter(|p| !p.is_empty()) {
                Some(part) => self.will.parts.insert(iface, part),
                None => self.will.parts.remove(&iface),
            };
            changed |= old.as_ref() != self.will.parts.get(&iface);
        }
        let macvlans = self.will_macvlans();
        changed |= macvlans != self.will.macvlans;
        if changed {
            self.will.macvlans = macvlans;
            let will = self.assemble_will();
            self.os.set_will(&will);
            self.will.handed_on = true;
        }
    }

    /// An orderly stop begins: keep the current will until [`Daemon::retire_will`].
    pub(super) fn freeze_will(&mut self) {
        self.refresh_will();
        self.will.frozen = true;
    }

    /// The orderly stop is done: nothing is left to undo.
    pub(super) async fn retire_will(&mut self) {
        self.will.frozen = true;
        self.os.retire_will().await;
    }

    /// The parts one after another, in carp interface order, and the
    /// macvlans.
    fn assemble_will(&self) -> Will {
        let parts = self.will.parts.values();
        Will {
            addresses: parts
                .clone()
                .flat_map(|p| p.addresses.iter().cloned())
                .collect(),
            adverts: parts.flat_map(|p| p.adverts.iter().cloned()).collect(),
            macvlans: self.will.macvlans.clone(),
            ..Will::default()
        }
    }

    /// Every macvlan made here.
    fn will_macvlans(&self) -> Vec<WillLink> {
        self.vhosts
            .values()
            .filter_map(|r| {
                r.macvlan.map(|ifindex| WillLink {
                    ifindex,
                    name: r.addr_ifname.clone(),
                })
            })
            .collect()
    }

    /// Carp interface `iface`'s addresses, when live, and the bow-outs it
    /// would send now ([`carp_proto::Node::bow_out_preview_of`]), routed as
    /// [`Daemon::route`] routes every advertisement. `None` when it is gone.
    fn will_part(&self, iface: CarpIfId, now: Instant) -> Option<WillPart> {
        let status = self.node.interface(iface)?;
        let mut part = WillPart::default();
        if status.live
            && let Some(r) = self.vhosts.get(&vhost_of(iface))
        {
            part.addresses = status
                .addresses
                .iter()
                .map(|a| WillAddress {
                    ifindex: r.addr_index,
                    ifname: r.addr_ifname.clone(),
                    addr: a.addr,
                    prefix_len: a.prefix_len,
                })
                .collect();
        }
        for action in self.node.bow_out_preview_of(iface, now) {
            let Action::Transmit {
                id,
                family,
                bytes,
                dst,
                src_mac,
            } = action
            else {
                continue;
            };
            let Some(dev) = self.carpdevs.get(&id.link) else {
                continue;
            };
            let Some(ifindex) = dev.index else {
                continue;
            };
            if let Route::Send { bytes, via } = self.route(id, family, &bytes, dst, src_mac) {
                part.adverts.push(WillAdvert {
                    vhid: id.vhid.get(),
                    carpdev: WillLink {
                        ifindex,
                        name: dev.name.clone(),
                    },
                    dst,
                    via,
                    bytes,
                });
            }
        }
        Some(part)
    }
}
