//! The last will the guard executes should the daemon die (see
//! [`crate::guard`]): rebuilt after anything that may change it, and handed
//! to the [`Os`] only when it did change.
//!
//! What to send is asked of the core ([`carp_proto::Node::bow_out_preview`]:
//! the transmits a shutdown would queue now) and routed as [`Daemon::route`]
//! routes every advertisement; what to remove is each live interface's
//! addresses and every macvlan made here.

use carp_proto::Action;

use super::perform::Route;
use super::{Daemon, vhost_of};
use crate::guard::will::{Will, WillAddress, WillAdvert, WillLink};
use crate::os::Os;

/// Whether the will must be rebuilt, and the one handed on last.
#[derive(Debug, Default)]
pub(super) struct WillState {
    dirty: bool,
    /// Shutting down: the will of the running daemon stays (a death in the
    /// middle of the stop still removes everything).
    frozen: bool,
    last: Option<Will>,
}

impl<O: Os> Daemon<O> {
    /// Something the will depends on may have changed.
    pub(super) fn will_changed(&mut self) {
        self.will.dirty = true;
    }

    /// Rebuild the will if needed and hand it on if it changed.
    pub(super) fn refresh_will(&mut self) {
        if !self.will.dirty || self.will.frozen {
            return;
        }
        self.will.dirty = false;
        let will = self.build_will();
        if self.will.last.as_ref() != Some(&will) {
            self.os.set_will(&will);
            self.will.last = Some(will);
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

    fn build_will(&self) -> Will {
        let mut will = Will::default();
        for iface in self.node.interfaces().iter().filter(|i| i.live) {
            let Some(r) = self.vhosts.get(&vhost_of(iface.id)) else {
                continue;
            };
            will.addresses
                .extend(iface.addresses.iter().map(|a| WillAddress {
                    ifindex: r.addr_index,
                    ifname: r.addr_ifname.clone(),
                    addr: a.addr,
                    prefix_len: a.prefix_len,
                }));
        }
        will.macvlans = self
            .vhosts
            .values()
            .filter_map(|r| {
                r.macvlan.map(|ifindex| WillLink {
                    ifindex,
                    name: r.addr_ifname.clone(),
                })
            })
            .collect();
        let now = self.now();
        for action in self.node.bow_out_preview(now) {
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
                will.adverts.push(WillAdvert {
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
        will
    }
}
