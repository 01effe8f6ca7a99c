//! The balancing datapaths of the carpdevs, keyed as the daemon keys them.
//!
//! One [`Datapath`](super::balance::Datapath) per carpdev, attached when its
//! first balancing carp interface is set and detached with the last.

use std::collections::BTreeMap;

use carp_proto::{CarpIfId, LinkId};

use super::{Balanced, OsError};

/// The datapaths, per carpdev.
#[derive(Debug, Default)]
pub struct Datapaths {
    links: BTreeMap<LinkId, ()>,
}

impl Datapaths {
    /// Attach to `link` (interface `index`) if needed and set `iface`'s part.
    pub fn set(
        &mut self,
        _link: LinkId,
        index: u32,
        _iface: CarpIfId,
        _set: &Balanced,
    ) -> Result<(), OsError> {
        Err(OsError::Netlink {
            op: "attach balancing datapath",
            detail: format!("ifindex {index}: not built yet"),
            errno: None,
        })
    }

    /// Write `iface`'s mask.
    pub fn set_mask(&mut self, _link: LinkId, _iface: CarpIfId, _mask: u32) -> Result<(), OsError> {
        Ok(())
    }

    /// Remove `iface`; the last one on a link detaches its datapath.
    pub fn remove(&mut self, link: LinkId, _iface: CarpIfId) {
        self.links.remove(&link);
    }

    /// The link's interface is gone: drop its datapath.
    pub fn forget_link(&mut self, link: LinkId) {
        self.links.remove(&link);
    }
}
