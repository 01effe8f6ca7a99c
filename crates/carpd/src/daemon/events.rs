//! Link and address events: carrier changes reach the core, a VIP removed
//! behind a MASTER's back is restored, and advertisement sources follow the
//! carpdev's addresses.

use carp_proto::{LinkId, State, VhostId};

use super::Daemon;
use crate::carplog;
use crate::log::chain;
use crate::os::{LinkEvent, Os};

impl<O: Os> Daemon<O> {
    pub(super) async fn handle_link_event(&mut self, event: LinkEvent) {
        match event {
            LinkEvent::Link(info) => {
                let link = LinkId(info.index);
                if self.carpdevs.contains_key(&link) {
                    let now = self.now();
                    self.node
                        .handle_link(now, link, info.admin_up && info.carrier);
                }
            }
            LinkEvent::AddressRemoved {
                index,
                addr,
                prefix_len,
            } => {
                let ids: Vec<VhostId> = self
                    .vhosts
                    .iter()
                    .filter(|(_, r)| {
                        r.addr_index == index && r.spec.addresses.iter().any(|v| v.addr == addr)
                    })
                    .map(|(id, _)| *id)
                    .collect();
                for id in ids {
                    if self.node.state(id) == Some(State::Master) {
                        carplog!(
                            Warning,
                            "{}: {addr}/{prefix_len} was removed by someone else; restoring",
                            self.label(id)
                        );
                        if let Err(e) = self.os.add_address(index, addr, prefix_len).await {
                            carplog!(
                                Err,
                                "{}: cannot restore {addr}: {}",
                                self.label(id),
                                chain(&e)
                            );
                        }
                    }
                }
                self.refresh_sources(index).await;
            }
            LinkEvent::AddressAdded { index, .. } => self.refresh_sources(index).await,
            LinkEvent::Resync => {
                let links: Vec<LinkId> = self.carpdevs.keys().copied().collect();
                for link in links {
                    match self.os.link_by_index(link.0).await {
                        Ok(info) => {
                            let now = self.now();
                            self.node
                                .handle_link(now, link, info.admin_up && info.carrier);
                        }
                        Err(e) => carplog!(
                            Warning,
                            "resync: cannot read link {}: {}",
                            link.0,
                            chain(&e)
                        ),
                    }
                }
            }
        }
    }

    async fn refresh_sources(&mut self, index: u32) {
        if self.carpdevs.contains_key(&LinkId(index)) {
            let src4 = self.source_v4(index, None).await;
            let src6 = self.source_v6(index).await;
            if let Some(dev) = self.carpdevs.get_mut(&LinkId(index)) {
                dev.src4 = src4;
                dev.src6 = src6;
            }
        }
    }
}
