//! Set-up: carpdevs with their sockets, macvlans and vhosts, and the removal
//! of addresses a previous run left behind.

use std::cell::Cell;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, bail};
use carp_proto::{Balancing, CarpIfId, Family, Flavour, LinkId, VhostId};

use super::{Carpdev, Daemon, Realised, vhost_of};
use crate::carplog;
use crate::config::{Lladdr, VhostSpec};
use crate::hooks::HookQueue;
use crate::log::chain;
use crate::os::bpf::{Accept, Proto, TtlRule};
use crate::os::l2::virtual_mac;
use crate::os::{Balanced, Os};
use crate::owned::OwnedAddress;

/// The link of datagrams that arrived on another interface than their
/// socket's; never assigned to a carpdev, so the core counts them `bad_if`.
pub(super) const NO_LINK: LinkId = LinkId(u32::MAX);

impl<O: Os> Daemon<O> {
    /// Make sure carpdev `name` is known, with the sockets of the families needed.
    pub(super) async fn carpdev(
        &mut self,
        name: &str,
        need4: bool,
        need6: bool,
    ) -> anyhow::Result<LinkId> {
        let info = self
            .os
            .link_by_name(name)
            .await
            .with_context(|| format!("carpdev {name} not found"))?;
        let link = match self.link_of(name) {
            Some(link) => {
                if self.carpdevs[&link].index != Some(info.index) {
                    // Re-created before its event arrived.
                    self.carpdev_returned(link, &info).await;
                }
                link
            }
            None => {
                let link = self.new_link_id(info.index);
                self.os
                    .open_l2(link, info.index)
                    .with_context(|| format!("{name}: packet socket"))?;
                let src4 = self.source_v4(info.index, None).await;
                let src6 = self.source_v6(info.index).await;
                self.carpdevs.insert(
                    link,
                    Carpdev {
                        name: name.to_string(),
                        index: Some(info.index),
                        mac: info.mac,
                        has4: false,
                        has6: false,
                        src4,
                        src6,
                        warned_src4: Cell::new(None),
                        warned_rx_unspecified: None,
                        solicitations: false,
                    },
                );
                let now = self.now();
                self.node
                    .handle_link(now, link, info.admin_up && info.carrier);
                link
            }
        };
        let Some(dev) = self.carpdevs.get_mut(&link) else {
            bail!("carpdev vanished")
        };
        let Some(index) = dev.index else {
            bail!("carpdev {name} is being re-created")
        };
        if need4 && !dev.has4 {
            self.os
                .open_carp_socket(link, index, name, Family::V4, self.rx_tx.clone())
                .with_context(|| format!("{name}: IPv4 CARP socket"))?;
            dev.has4 = true;
        }
        if need6 && !dev.has6 {
            self.os
                .open_carp_socket(link, index, name, Family::V6, self.rx_tx.clone())
                .with_context(|| format!("{name}: IPv6 CARP socket"))?;
            dev.has6 = true;
        }
        Ok(link)
    }

    /// The link of carpdev `name`, if it is known.
    pub(super) fn link_of(&self, name: &str) -> Option<LinkId> {
        self.carpdevs
            .iter()
            .find(|(_, d)| d.name == name)
            .map(|(link, _)| *link)
    }

    /// A new carpdev's link: its index when no carpdev holds that id yet (so
    /// logs read naturally), else the next free one; never [`NO_LINK`].
    fn new_link_id(&self, index: u32) -> LinkId {
        let mut id = index.max(1);
        while id == NO_LINK.0 || self.carpdevs.contains_key(&LinkId(id)) {
            id = id.wrapping_add(1).max(1);
        }
        LinkId(id)
    }

    /// Make sure the macvlan of vhost `id` exists on its carpdev's current
    /// interface and holds its addresses' sysctls; record its index.
    pub(super) async fn ensure_vhost_macvlan(&mut self, id: VhostId) -> anyhow::Result<()> {
        let Some(dev) = self.carpdevs.get(&id.link) else {
            bail!("no carpdev")
        };
        let Some(parent) = dev.index else {
            bail!("carpdev {} is gone", dev.name)
        };
        let parent_name = dev.name.clone();
        let vhid = id.vhid.get();
        let name = macvlan_name(parent, vhid);
        let mac = self
            .vhosts
            .get(&id)
            .map_or(virtual_mac(vhid), |r| vhost_mac(&r.spec));
        let index = self
            .os
            .ensure_macvlan(parent, &name, mac)
            .await
            .with_context(|| format!("{parent_name}: cannot create macvlan {name}"))?;
        self.macvlan_sysctls(&parent_name, &name);
        if let Some(r) = self.vhosts.get_mut(&id) {
            r.addr_index = index;
            r.addr_ifname = name;
            r.macvlan = Some(index);
        }
        // Where its addresses go, and a macvlan to delete.
        self.will_changed_for(CarpIfId::of(id));
        Ok(())
    }

    /// The first IPv4 address of `index` that is not a virtual address.
    pub(super) async fn source_v4(
        &self,
        index: u32,
        extra_vips: Option<&VhostSpec>,
    ) -> Option<Ipv4Addr> {
        let addrs = self.os.addresses(index).await.ok()?;
        // One set, not a scan of every vhost per address: with a few hundred
        // virtual addresses on the carpdev that scan was quadratic.
        let vips: HashSet<IpAddr> = self
            .vip_addresses()
            .chain(
                extra_vips
                    .into_iter()
                    .flat_map(|s| s.addresses.iter().map(|v| v.addr)),
            )
            .collect();
        addrs.into_iter().find_map(|(a, _)| match a {
            IpAddr::V4(v4) if !vips.contains(&a) => Some(v4),
            _ => None,
        })
    }

    /// Every virtual address of the running vhosts and of the configuration.
    pub(super) fn vip_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.vhosts
            .values()
            .flat_map(|r| r.spec.addresses.iter().map(|v| v.addr))
            .chain(
                self.config
                    .vhosts
                    .iter()
                    .flat_map(|s| s.addresses.iter().map(|v| v.addr)),
            )
    }

    /// The first link-local IPv6 address of `index` (the source the kernel
    /// would choose for ff02::12).
    pub(super) async fn source_v6(&self, index: u32) -> Option<Ipv6Addr> {
        let addrs = self.os.addresses(index).await.ok()?;
        addrs.into_iter().find_map(|(a, _)| match a {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(v6),
            _ => None,
        })
    }

    pub(super) async fn add_vhost(&mut self, spec: VhostSpec) -> anyhow::Result<()> {
        let need4 = !spec.proto.ipv4.is_empty();
        let need6 = !spec.proto.ipv6.is_empty();
        let link = self.carpdev(&spec.carpdev, need4, need6).await?;
        let parent_name = self.carpdevs[&link].name.clone();
        let parent = self.carpdevs[&link].index.unwrap_or(0);
        let vhid = spec.proto.vhid.get();
        let balancing = spec.balancing();
        // Balanced addresses sit on the carpdev itself, where the datapath
        // splits their traffic at tc ingress; there is no single virtual MAC.
        let on_parent = spec.lladdr == Lladdr::Real || balancing != Balancing::None;
        let (addr_index, addr_ifname, macvlan) = match on_parent {
            true => (parent, parent_name.clone(), None),
            false => {
                let name = macvlan_name(parent, vhid);
                let mac = vhost_mac(&spec);
                let index = self
                    .os
                    .ensure_macvlan(parent, &name, mac)
                    .await
                    .with_context(|| format!("{parent_name}: cannot create macvlan {name}"))?;
                self.macvlan_sysctls(&parent_name, &name);
                (index, name, Some(index))
            }
        };
        // Start-up hygiene: a previous run killed with -9 may have left VIPs behind,
        // and a node that is not MASTER must not hold them.
        let removals: Vec<(IpAddr, u8)> = spec
            .addresses
            .iter()
            .map(|va| (va.addr, va.prefix_len))
            .collect();
        let results = self.os.del_addresses(addr_index, &removals).await;
        for (va, result) in spec.addresses.iter().zip(results) {
            if let Err(e) = result {
                carplog!(
                    Debug,
                    "{parent_name}: cannot remove stale {va}: {}",
                    chain(&e)
                );
            }
        }
        if balancing != Balancing::None {
            self.start_balancing(link, parent, &spec)?;
        }
        let cookies: Vec<[u8; 8]> = spec.nodes.iter().map(|_| rand::random()).collect();
        let now = self.now();
        let iface = self
            .node
            .add_interface(now, link, self.core_config(&spec), &cookies)
            .map_err(|e| anyhow::anyhow!("{}: {e}", spec.carpdev))?;
        let id = vhost_of(iface);
        self.vhosts.insert(
            id,
            Realised {
                spec,
                addr_index,
                addr_ifname,
                macvlan,
                hooks: HookQueue::new(),
                transitions: 0,
                repair_at: None,
                repair_delay: super::repair::REPAIR_FIRST,
                repaired_at: None,
            },
        );
        self.will_changed_for(iface);
        self.refilter(link);
        Ok(())
    }

    /// Point carpdev `link`'s socket filter at the vhids now configured on
    /// it, each with its protocol and TTL rule (see [`crate::os::bpf`]).
    pub(super) fn refilter(&mut self, link: LinkId) {
        let mut accept: Vec<Accept> = self
            .vhosts
            .iter()
            .filter(|(id, _)| id.link == link)
            .flat_map(|(_, r)| {
                let c = r.spec.carp_if_config();
                let proto = match c.flavour {
                    Flavour::Carp => Proto::Carp,
                    Flavour::Vrrp => Proto::Vrrp,
                };
                let ttl = TtlRule::of(c.ttl_check);
                c.nodes.into_iter().map(move |n| Accept {
                    vhid: n.vhid.get(),
                    proto,
                    ttl,
                })
            })
            .collect();
        accept.sort();
        accept.dedup();
        if let Err(e) = self.os.filter_carp_sockets(link, &accept) {
            carplog!(
                Warning,
                "{}; carpd reads every protocol-112 packet",
                chain(&e)
            );
        }
    }

    /// Attach the balancing datapath for `spec` on carpdev `link` (interface
    /// `index`) and start answering its solicitations (spec section 7).
    pub(super) fn start_balancing(
        &mut self,
        link: LinkId,
        index: u32,
        spec: &VhostSpec,
    ) -> anyhow::Result<()> {
        let config = spec.carp_if_config();
        let iface = CarpIfId {
            link,
            vhid: spec.proto.vhid,
        };
        // Set up again (a re-created carpdev): the nodes keep their states.
        let mask = self
            .node
            .interfaces()
            .iter()
            .find(|i| i.id == iface)
            .map_or(0, |i| i.mask);
        let set = Balanced {
            mode: spec.balancing(),
            mask,
            node_macs: spec
                .nodes
                .iter()
                .map(|n| virtual_mac(n.vhid.get()))
                .collect(),
            leader_mac: config
                .answer_mac(0)
                .unwrap_or(virtual_mac(spec.proto.vhid.get())),
            addresses: spec.addresses.iter().map(|a| a.addr).collect(),
        };
        self.os
            .balance_set(link, index, iface, &set)
            .with_context(|| {
                format!(
                    "{}: balancing {} needs the eBPF datapath at tc ingress",
                    spec.carpdev,
                    spec.balancing()
                )
            })?;
        let Some(dev) = self.carpdevs.get_mut(&link) else {
            bail!("carpdev vanished")
        };
        if !dev.solicitations {
            self.os
                .open_solicitations(link, index, self.solicit_tx.clone())
                .with_context(|| format!("{}: ARP/NS packet socket", spec.carpdev))?;
            dev.solicitations = true;
        }
        Ok(())
    }

    /// Take carp interface `id` out of the datapath and forget the
    /// neighbours pinned for its addresses.
    pub(super) async fn stop_balancing(&mut self, id: VhostId) {
        let Some(r) = self.vhosts.get(&id) else {
            return;
        };
        if r.spec.balancing() == Balancing::None {
            return;
        }
        let index = r.addr_index;
        self.os.balance_remove(id.link, CarpIfId::of(id));
        let pinned: Vec<IpAddr> = self
            .pinned
            .keys()
            .filter(|(link, _)| *link == id.link)
            .map(|(_, ip)| *ip)
            .collect();
        // Pins are per link; keep them while another balanced interface uses the link.
        let others = self
            .vhosts
            .iter()
            .any(|(o, r)| *o != id && o.link == id.link && r.spec.balancing() != Balancing::None);
        if others {
            return;
        }
        for ip in pinned {
            self.pinned.remove(&(id.link, ip));
            if let Err(e) = self.os.unpin_neighbour(index, ip).await {
                carplog!(Debug, "cannot unpin neighbour {ip}: {}", chain(&e));
            }
        }
    }

    /// Remove the addresses a previous run recorded and did not release.
    pub(super) async fn remove_leftovers(&mut self, leftovers: Vec<OwnedAddress>) {
        for a in &leftovers {
            // A vanished interface took its addresses with it.
            let Ok(link) = self.os.link_by_name(&a.ifname).await else {
                continue;
            };
            match self.os.del_address(link.index, a.addr, a.prefix_len).await {
                Ok(()) => carplog!(
                    Warning,
                    "removed {}/{} from {}, left by a previous run that did not stop cleanly",
                    a.addr,
                    a.prefix_len,
                    a.ifname
                ),
                Err(e) => carplog!(
                    Err,
                    "cannot remove {}/{} from {}, left by a previous run: {}",
                    a.addr,
                    a.prefix_len,
                    a.ifname,
                    chain(&e)
                ),
            }
        }
        if let Err(e) = self.os.save_record() {
            carplog!(Warning, "{}", chain(&e));
        }
    }

    /// Delete the macvlan `index` this daemon created; failures are logged.
    pub(super) async fn delete_macvlan(&self, index: u32) {
        if let Err(e) = self.os.delete_link(index).await {
            carplog!(Warning, "cannot delete macvlan {index}: {}", chain(&e));
        }
    }

    fn macvlan_sysctls(&self, parent_name: &str, name: &str) {
        // Created (or rebuilt) while not MASTER: IPv6 stays off until the
        // macvlan holds addresses (see `macvlan_ipv6`).
        self.macvlan_ipv6(name, false);
        self.macvlan_forwarding(name, false);
        // Only the interface holding a VIP may answer ARP for it, or the
        // parent would answer with its real MAC (Linux's weak host model).
        self.set_sysctl(&format!("net/ipv4/conf/{parent_name}/arp_ignore"), "1");
        self.set_sysctl(&format!("net/ipv4/conf/{name}/arp_ignore"), "1");
        // Replies from a VIP leave through the parent (its route is as good
        // as the macvlan's); with the default arp_announce 0 the parent's
        // ARP request for the client then carries the VIP as sender IP and
        // its real MAC, and the client re-points the VIP at that MAC.
        self.set_sysctl(&format!("net/ipv4/conf/{parent_name}/arp_announce"), "2");
    }

    /// Turn IPv6 on the macvlan `name` on (before its IPv6 addresses are
    /// added, on becoming MASTER) or off (before they are removed, and while
    /// not MASTER).
    ///
    /// A non-MASTER must send no frame from the virtual MAC: one such frame
    /// re-points the switches' MAC tables at it, and the client's traffic
    /// goes to the old master until the new one sends its next frame. With
    /// addrgenmode none the macvlan has no link-local, sends no router
    /// solicitation and needs no DAD; what is left is MLD: removing an IPv6
    /// VIP leaves its solicited-node group, and the kernel sends MLDv2
    /// change reports (`:: > ff02::16`) from the macvlan at once and again
    /// up to a second later (robustness 2). `disable_ipv6` = 1 first stops
    /// the interface's MLD (ipv6_mc_down cancels the pending reports) and
    /// removes its IPv6 addresses in one step; measured on 6.1 with the
    /// namespace test `netns_hitless`, the old master then sends nothing
    /// from the virtual MAC, and a dual-stack `maintenance on` loses no
    /// probe (25-68 at 10 ms before). Other mechanisms were not needed:
    /// the IPv4 side of the macvlan sends nothing by itself (no IGMP report
    /// for 224.0.0.1, GARPs go out through the carpdev's packet socket only
    /// for the MASTER).
    ///
    /// A namespace whose new interfaces have IPv6 disabled
    /// (`default/disable_ipv6` = 1) keeps it disabled: the IPv6 VIP is then
    /// refused, as the administrator asked, and the interface faults.
    pub(super) fn macvlan_ipv6(&self, name: &str, on: bool) {
        if on
            && self
                .os
                .read_sysctl("net/ipv6/conf/default/disable_ipv6")
                .is_some_and(|v| v.trim() == "1")
        {
            return;
        }
        let value = if on { "0" } else { "1" };
        self.set_sysctl(&format!("net/ipv6/conf/{name}/disable_ipv6"), value);
    }

    /// IPv4 forwarding on the macvlan `name`: the host's own setting
    /// (`all/forwarding`) while it holds the addresses, off otherwise.
    ///
    /// A BACKUP's macvlan carries the virtual MAC too, and takes every frame
    /// sent to it that reaches this host: a switch floods them while its MAC
    /// table has no entry (aged out, or just after a failover). A router
    /// would forward those, so both routers of a pair forward the client's
    /// packets, and a stateful firewall on the BACKUP sees connections it
    /// does not own. OpenBSD's `carp_ourether` takes frames for the virtual
    /// MAC only in MASTER. The kernel checks the ingress device's
    /// `forwarding` (`ip_route_input_slow`), so 0 there drops them; IPv6 is
    /// off on the macvlan while it holds no IPv6 address (`macvlan_ipv6`).
    pub(super) fn macvlan_forwarding(&self, name: &str, on: bool) {
        let value = if on {
            self.os
                .read_sysctl("net/ipv4/conf/all/forwarding")
                .unwrap_or_else(|| "0".into())
        } else {
            "0".into()
        };
        self.set_sysctl(&format!("net/ipv4/conf/{name}/forwarding"), &value);
    }

    fn set_sysctl(&self, key: &str, value: &str) {
        if let Err(e) = self.os.write_sysctl(key, value) {
            carplog!(Warning, "cannot set {key} to {value}: {}", chain(&e));
        }
    }
}

/// The virtual MAC of a vhost's macvlan: CARP's, or VRRP's of its family.
fn vhost_mac(spec: &VhostSpec) -> [u8; 6] {
    spec.carp_if_config().node_virtual_mac(spec.proto.vhid)
}

/// Return the name of the macvlan of `vhid` on interface `parent` (at most 15 bytes).
pub fn macvlan_name(parent: u32, vhid: u8) -> String {
    let name = format!("carp{parent}v{vhid}");
    if name.len() <= 15 {
        name
    } else {
        format!("c{parent:x}v{vhid}")
    }
}
