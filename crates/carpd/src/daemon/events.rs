//! Link and address events: carrier changes reach the core, a carpdev or
//! macvlan deleted or re-created is handed to `repair.rs`, a VIP removed
//! behind a MASTER's back is restored, and advertisement sources follow the
//! carpdev's addresses.

use std::net::IpAddr;
use std::time::Duration;

use carp_proto::{LinkId, State, VhostId};

use super::Daemon;
use crate::carplog;
use crate::log::chain;
use crate::os::{LinkEvent, LinkInfo, Os};

/// How often a continuing source problem is logged again.
pub(super) const SOURCE_WARNING_EVERY: Duration = Duration::from_secs(60);

impl<O: Os> Daemon<O> {
    pub(super) async fn handle_link_event(&mut self, event: LinkEvent) {
        // Indexes, MACs and macvlans may change with a link; an address
        // changes the will only if it changes a source (`refresh_sources`),
        // and every takeover brings its own addresses' events.
        if matches!(
            event,
            LinkEvent::Link(_) | LinkEvent::Removed(_) | LinkEvent::Resync
        ) {
            self.will_changed();
        }
        match event {
            LinkEvent::Link(info) => self.link_changed(&info).await,
            LinkEvent::Removed(info) => self.link_removed(&info),
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
                // A notice of our own removal can arrive after a quick
                // MASTER -> BACKUP -> MASTER has added the address again: only
                // an address really gone is "removed by someone else".
                let present = !ids.is_empty()
                    && self
                        .os
                        .addresses(index)
                        .await
                        .is_ok_and(|list| list.contains(&(addr, prefix_len)));
                for id in ids {
                    if present {
                        carplog!(
                            Debug,
                            "{}: stale removal notice for {addr}/{prefix_len}; it is configured",
                            self.label(id)
                        );
                        continue;
                    }
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
                            self.fault(id, "cannot restore its addresses");
                        }
                    }
                }
                if !self.never_a_source(addr) {
                    self.refresh_sources(index).await;
                }
            }
            LinkEvent::AddressAdded { index, addr, .. } => {
                if !self.never_a_source(addr) {
                    self.refresh_sources(index).await;
                }
            }
            LinkEvent::Resync => self.resync().await,
        }
    }

    /// A link appeared or changed: a carpdev's carrier, or a carpdev back
    /// under its name (maybe with a new index).
    async fn link_changed(&mut self, info: &LinkInfo) {
        if !info.admin_up {
            // A macvlan set down keeps its addresses but passes no traffic.
            let ids: Vec<VhostId> = self
                .vhosts
                .iter()
                .filter(|(_, r)| r.macvlan == Some(info.index))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                // Events lag: a macvlan is created down and then set up, and
                // is set down just before it is deleted. Ask for its state now.
                match self.os.link_by_index(info.index).await {
                    Ok(current) if current.admin_up => {}
                    _ => self.fault(id, &format!("its macvlan {} is down", info.name)),
                }
            }
        }
        if let Some(link) = self.link_at(info.index) {
            if !info.admin_up {
                // Setting a link down flushes its neighbours, pins included:
                // pin the requesters again as they ask.
                self.pinned.retain(|(l, _), _| *l != link);
            }
            let now = self.now();
            self.node
                .handle_link(now, link, info.admin_up && info.carrier);
        } else if let Some(link) = self.link_of(&info.name) {
            self.carpdev_returned(link, info).await;
        }
    }

    /// A link was deleted: a carpdev, or the macvlan holding a vhost's addresses.
    fn link_removed(&mut self, info: &LinkInfo) {
        if let Some(link) = self.link_at(info.index) {
            self.carpdev_gone(link);
        }
        let ids: Vec<VhostId> = self
            .vhosts
            .iter()
            .filter(|(_, r)| r.macvlan == Some(info.index))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(r) = self.vhosts.get_mut(&id) {
                // Gone with its addresses: nothing to delete on exit.
                r.macvlan = None;
            }
            self.fault(id, &format!("its macvlan {} was deleted", info.name));
        }
    }

    /// Events were lost: re-read every carpdev and macvlan.
    async fn resync(&mut self) {
        let devs: Vec<(LinkId, String)> = self
            .carpdevs
            .iter()
            .map(|(link, d)| (*link, d.name.clone()))
            .collect();
        for (link, name) in devs {
            match self.os.link_by_name(&name).await {
                Ok(info) => self.link_changed(&info).await,
                Err(e) => {
                    carplog!(Warning, "resync: cannot read link {name}: {}", chain(&e));
                    self.carpdev_gone(link);
                }
            }
        }
        let macvlans: Vec<(VhostId, u32)> = self
            .vhosts
            .iter()
            .filter_map(|(id, r)| r.macvlan.map(|m| (*id, m)))
            .collect();
        for (id, index) in macvlans {
            if self.os.link_by_index(index).await.is_err() {
                if let Some(r) = self.vhosts.get_mut(&id) {
                    r.macvlan = None;
                }
                self.fault(id, "its macvlan is gone");
            }
        }
    }

    /// The carpdev whose current index is `index`.
    fn link_at(&self, index: u32) -> Option<LinkId> {
        self.carpdevs
            .iter()
            .find(|(_, d)| d.index == Some(index))
            .map(|(link, _)| *link)
    }

    /// A virtual address other than an IPv6 link-local one: `source_v4`
    /// skips those and `source_v6` takes link-locals only, so its coming or
    /// going cannot change a source. Taking over 1,000 vhosts adds 1,000 of
    /// them, and a dump of the carpdev for each was quadratic.
    fn never_a_source(&self, addr: IpAddr) -> bool {
        let link_local6 = matches!(addr, IpAddr::V6(a) if a.is_unicast_link_local());
        !link_local6 && self.vip_addresses().any(|v| v == addr)
    }

    async fn refresh_sources(&mut self, index: u32) {
        let Some(link) = self.link_at(index) else {
            return;
        };
        let src4 = self.source_v4(index, None).await;
        let src6 = self.source_v6(index).await;
        let Some(dev) = self.carpdevs.get_mut(&link) else {
            return;
        };
        if dev.has4 && src4 != dev.src4 {
            match src4 {
                Some(a) => carplog!(Warning, "{}: IPv4 source is {a}", dev.name),
                None => {
                    dev.warned_src4.set(Some(tokio::time::Instant::now()));
                    carplog!(Warning, "{}: {}", dev.name, NO_SOURCE_V4);
                }
            }
        }
        let changed = (dev.src4, dev.src6) != (src4, src6);
        dev.src4 = src4;
        dev.src6 = src6;
        if changed {
            // Unicast bow-outs go from the source.
            self.will_changed();
        }
    }

    /// A datagram from 0.0.0.0 arrived on carpdev `link`. It goes on to the
    /// core's checks like any other, as in OpenBSD `carp_proto_input` and
    /// FreeBSD `carp_input`, which check no source: dropping it would make a
    /// MASTER that lost its carpdev's addresses look dead and put its VIPs on
    /// two hosts. Logged, rate-limited (before the checks, so also for junk).
    pub(super) fn note_unspecified_source(&mut self, link: LinkId) {
        let Some(dev) = self.carpdevs.get_mut(&link) else {
            return;
        };
        let now = tokio::time::Instant::now();
        if dev
            .warned_rx_unspecified
            .is_some_and(|t| now.saturating_duration_since(t) < SOURCE_WARNING_EVERY)
        {
            return;
        }
        dev.warned_rx_unspecified = Some(now);
        carplog!(
            Warning,
            "{}: advertisement from 0.0.0.0 (its sender's carpdev has no IPv4 address); \
             not dropped, as by the BSDs",
            dev.name
        );
    }
}

/// What is logged while a carpdev with IPv4 vhosts has no IPv4 address.
pub(super) const NO_SOURCE_V4: &str =
    "no IPv4 address to send from; advertising from 0.0.0.0, as the BSDs do";
