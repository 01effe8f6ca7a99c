//! Executing the core's actions: transmit, addresses, announcements, and
//! the reporting of transitions and demotions.
//!
//! Each `Action` variant maps onto one method here. Actions carry what the
//! shell needs (addresses with prefixes, destination, source MAC), so the
//! only lookup is from the carp interface to the Linux interface holding
//! its addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::{Action, AddrSpec, CarpIfId, Cause, Family, State, VhostId};

use super::events::{NO_SOURCE_V4, SOURCE_WARNING_EVERY};
use super::{Daemon, vhost_of};
use crate::carplog;
use crate::control::types::Transition;
use crate::guard::will::Via;
use crate::hooks::{HookKind, HookRun};
use crate::log::{self, Level, chain};
use crate::os::Os;
use crate::owned::OwnedAddress;

impl<O: Os> Daemon<O> {
    /// Perform every queued action; actions may queue more (send results).
    pub(super) async fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.perform(action).await;
        }
        self.refresh_will();
        // Only now: a master hook runs once the addresses are live.
        for (owner, run) in std::mem::take(&mut self.deferred_hooks) {
            if let Some(r) = self.vhosts.get(&owner) {
                r.hooks.push(run);
            }
        }
    }

    pub(super) async fn perform(&mut self, action: Action) {
        // Every action but an advertisement may change the last will: an
        // interface's own actions its own part, a demotion every MASTER's
        // bow-out.
        match &action {
            Action::Transmit { .. } => {}
            Action::AddAddresses { iface, .. }
            | Action::RemoveAddresses { iface, .. }
            | Action::Announce { iface, .. }
            | Action::LoadShare { iface, .. }
            | Action::PrepareMaster { iface, .. } => self.will_changed_for(*iface),
            Action::StateChanged { id, .. } => match self.node.interface_of(*id) {
                Some(iface) => self.will_changed_for(iface),
                None => self.will_changed(),
            },
            _ => self.will_changed(),
        }
        match action {
            Action::Transmit {
                id,
                family,
                bytes,
                dst,
                src_mac,
            } => {
                let ok = self.transmit(id, family, &bytes, dst, src_mac).await;
                let now = self.now();
                self.node.handle_send_result(now, id, ok);
            }
            Action::AddAddresses { iface, addresses } => {
                let ok = self.add_addresses(iface, &addresses).await;
                let now = self.now();
                self.node.handle_address_result(now, iface, ok);
                if !ok {
                    // A MASTER without its addresses black-holes them: hand over.
                    self.fault(vhost_of(iface), "cannot add its addresses");
                }
            }
            Action::RemoveAddresses { iface, addresses } => {
                self.remove_addresses(iface, &addresses).await;
            }
            Action::Announce {
                iface,
                mac,
                ipv4,
                ipv6,
            } => self.announce(vhost_of(iface), mac, &ipv4, &ipv6),
            Action::LoadShare { iface, mask, nodes } => self.load_share(iface, mask, nodes),
            Action::PrepareMaster { iface, deadline } => {
                let deadline = self.to_tokio(deadline);
                self.prepare_master(iface, deadline);
            }
            Action::StateChanged {
                id,
                from,
                to,
                cause,
            } => {
                if to == State::Backup
                    && let Some(iface) = self.node.interface_of(id)
                {
                    self.sync_backup(iface);
                }
                self.state_changed(id, from, to, cause)
            }
            Action::DemotionChanged {
                group,
                value,
                reason,
            } => {
                let what = group.map_or("advskew demotion".to_string(), |g| format!("group {g}"));
                carplog!(Err, "demoted {what} to {value} ({reason})");
            }
        }
    }

    /// Record, then add, `addresses` on the interface holding `iface`'s
    /// addresses; the requests go out in batches, each address keeping its own
    /// result. Return true if all succeeded.
    async fn add_addresses(&mut self, iface: CarpIfId, addresses: &[AddrSpec]) -> bool {
        let id = vhost_of(iface);
        let Some(r) = self.vhosts.get(&id) else {
            return false;
        };
        let chosen = addresses;
        let record: Vec<OwnedAddress> = chosen
            .iter()
            .map(|v| owned_address(&r.addr_ifname, v))
            .collect();
        let index = r.addr_index;
        if r.macvlan.is_some() && chosen.iter().any(|va| va.addr.is_ipv6()) {
            self.macvlan_ipv6(&r.addr_ifname, true);
        }
        if r.macvlan.is_some() && chosen.iter().any(|va| va.addr.is_ipv4()) {
            self.macvlan_forwarding(&r.addr_ifname, true);
        }
        if let Err(e) = self.os.hold_addresses(&record) {
            carplog!(Warning, "{}", chain(&e));
        }
        // The guard learns of the addresses (and of the MASTER, already
        // recorded in the core) before they go live.
        self.refresh_will();
        let requests: Vec<(IpAddr, u8)> =
            chosen.iter().map(|va| (va.addr, va.prefix_len)).collect();
        let results = self.os.add_addresses(index, &requests).await;
        let mut ok = true;
        for (va, result) in chosen.iter().zip(results) {
            if let Err(e) = result {
                carplog!(Err, "{}: cannot add {va}: {}", self.label(id), chain(&e));
                ok = false;
            }
        }
        ok
    }

    /// Remove `addresses` from `iface`'s interface, then forget those gone.
    async fn remove_addresses(&mut self, iface: CarpIfId, addresses: &[AddrSpec]) {
        let id = vhost_of(iface);
        let Some(r) = self.vhosts.get(&id) else {
            return;
        };
        let chosen = addresses;
        let ifname = r.addr_ifname.clone();
        let index = r.addr_index;
        if r.macvlan.is_some() && chosen.iter().any(|va| va.addr.is_ipv6()) {
            // Before the removals: their MLD reports would leave from the
            // virtual MAC of a node that is no longer MASTER.
            self.macvlan_ipv6(&ifname, false);
        }
        // Leaving MASTER (not a reload dropping one address): before the
        // removals, no more forwarding for the virtual MAC, which another
        // host may take over now.
        let live = self
            .node
            .interfaces()
            .iter()
            .any(|i| i.id == iface && i.live);
        if r.macvlan.is_some() && !live {
            self.macvlan_forwarding(&ifname, false);
        }
        let requests: Vec<(IpAddr, u8)> =
            chosen.iter().map(|va| (va.addr, va.prefix_len)).collect();
        let results = self.os.del_addresses(index, &requests).await;
        let mut gone = Vec::new();
        for (va, result) in chosen.iter().zip(results) {
            // Gone (or never there): forget it; otherwise the next start retries.
            let errno = result.as_ref().err().and_then(|e| e.raw_os_error());
            let absent = matches!(errno, Some(libc::EADDRNOTAVAIL | libc::ENODEV));
            if let Err(e) = &result {
                // Absent is the expected end after a deleted macvlan or carpdev.
                let level = if absent { Level::Debug } else { Level::Err };
                let label = self.label(id);
                log::log(
                    level,
                    format_args!("{label}: cannot remove {va}: {}", chain(e)),
                );
            }
            if result.is_ok() || absent {
                gone.push(owned_address(&ifname, va));
            }
        }
        if gone.is_empty() {
            return;
        }
        if let Err(e) = self.os.release_addresses(&gone) {
            carplog!(Warning, "{}", chain(&e));
        }
    }

    async fn transmit(
        &self,
        id: VhostId,
        family: Family,
        packet: &[u8],
        dst: IpAddr,
        src_mac: Option<[u8; 6]>,
    ) -> bool {
        let Some(dev) = self.carpdevs.get(&id.link) else {
            return false;
        };
        // Without an IPv4 address on the carpdev, OpenBSD `carp_send_ad`
        // (ifaof_ifpforaddr finds none) and FreeBSD `carp_send_ad_locked`
        // (carp_best_ifa finds none) set ip_src to 0 and still send: the
        // MASTER keeps its role and peers keep hearing it. So do we, and say so.
        if family == Family::V4 && dev.src4.is_none() {
            let now = tokio::time::Instant::now();
            let last = dev.warned_src4.get();
            if last.is_none_or(|t| now.saturating_duration_since(t) >= SOURCE_WARNING_EVERY) {
                dev.warned_src4.set(Some(now));
                carplog!(Warning, "{}: {}", dev.name, NO_SOURCE_V4);
            }
        }
        let result = match self.route(id, family, packet, dst, src_mac) {
            Route::Send {
                bytes,
                via: Via::Frame { mac, src },
            } => self.os.send_advert_frame(id.link, mac, src, dst, &bytes),
            Route::Send {
                bytes,
                via: Via::Socket { src },
            } => self.os.send_advert(id.link, family, src, dst, &bytes).await,
            Route::NoLinkLocal => {
                carplog!(
                    Warning,
                    "{}: no link-local address to send from",
                    self.label(id)
                );
                return false;
            }
            Route::Unsendable => return false,
        };
        match result {
            Ok(()) => true,
            Err(e) => {
                carplog!(
                    Warning,
                    "{}: send to {dst} failed: {}",
                    self.label(id),
                    chain(&e)
                );
                false
            }
        }
    }

    /// How an advertisement leaves, with its final bytes: also what the
    /// guard's will keeps (`will.rs`), so a dead daemon's bow-out is the
    /// same as a living one's.
    pub(super) fn route(
        &self,
        id: VhostId,
        family: Family,
        packet: &[u8],
        dst: IpAddr,
        src_mac: Option<[u8; 6]>,
    ) -> Route {
        let Some(dev) = self.carpdevs.get(&id.link) else {
            return Route::Unsendable;
        };
        let (has_socket, src) = match family {
            Family::V4 => (dev.has4, dev.src4.map(IpAddr::V4)),
            Family::V6 => (dev.has6, None),
        };
        // VRRPv3's checksum covers the pseudo-header: the core emitted it
        // over the unspecified source, the one sent from is known here.
        let vrrp_src = match family {
            Family::V4 => dev.src4.map(IpAddr::V4),
            Family::V6 => dev.src6.map(IpAddr::V6),
        };
        let mut bytes = packet.to_vec();
        let vrrp = packet
            .first()
            .is_some_and(|b| b >> 4 == carp_proto::wire::vrrp::VERSION);
        if vrrp {
            let from = vrrp_src.unwrap_or(match family {
                Family::V4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                Family::V6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
            carp_proto::wire::vrrp::fill_checksum(&mut bytes, from, dst);
        }
        // The source the VRRP checksum was computed for must be the one sent.
        let src = if vrrp { vrrp_src.or(src) } else { src };
        if let Some(mac) = src_mac {
            // Like the kernels: multicast advertisements leave from the virtual
            // MAC, so every advertisement refreshes the switches' MAC tables.
            let src = match dst {
                IpAddr::V4(_) => IpAddr::V4(dev.src4.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                IpAddr::V6(_) => match dev.src6 {
                    Some(src) => IpAddr::V6(src),
                    None => return Route::NoLinkLocal,
                },
            };
            Route::Send {
                bytes,
                via: Via::Frame { mac, src },
            }
        } else if has_socket {
            Route::Send {
                bytes,
                via: Via::Socket { src },
            }
        } else {
            Route::Unsendable
        }
    }

    fn announce(&self, id: VhostId, mac: Option<[u8; 6]>, ipv4: &[Ipv4Addr], ipv6: &[Ipv6Addr]) {
        let Some(dev) = self.carpdevs.get(&id.link) else {
            return;
        };
        let mac = mac.unwrap_or(dev.mac);
        let router = !ipv6.is_empty()
            && self
                .os
                .read_sysctl("net/ipv6/conf/all/forwarding")
                .is_some_and(|v| v == "1");
        for (ip, e) in self.os.announce(id.link, mac, ipv4, ipv6, router) {
            let what = if ip.is_ipv4() {
                "gratuitous ARP"
            } else {
                "neighbour advertisement"
            };
            carplog!(
                Warning,
                "{}: {what} for {ip}: {}",
                self.label(id),
                chain(&e)
            );
        }
    }

    fn state_changed(&mut self, id: VhostId, from: State, to: State, cause: Cause) {
        // OpenBSD carp_set_state: LOG_CRIT between BACKUP and MASTER, LOG_WARNING with INIT.
        let level = if from == State::Init || to == State::Init {
            Level::Warning
        } else {
            Level::Crit
        };
        log::log(
            level,
            format_args!(
                "{}: state transition: {from} -> {to} ({cause})",
                self.label(id)
            ),
        );
        // A node of a carp interface: the interface is realised under its leader.
        let owner = self.node.interface_of(id).map_or(id, vhost_of);
        let Some(r) = self.vhosts.get_mut(&owner) else {
            return;
        };
        r.transitions += 1;
        let _ = self.transitions.send(Transition {
            carpdev: r.spec.carpdev.clone(),
            vhid: id.vhid.get(),
            from: from.into(),
            to: to.into(),
            cause: cause.into(),
            at_secs: self.start.elapsed().as_secs_f64(),
        });
        let hooks = &r.spec.hooks;
        // The ucarp-style hook first, as before the state hooks existed.
        let legacy = match (from, to) {
            (_, State::Master) => hooks.up.as_ref().map(|p| (HookKind::Up, p)),
            (State::Master, _) => hooks.down.as_ref().map(|p| (HookKind::Down, p)),
            _ => None,
        };
        let state = match to {
            State::Master => hooks.master.as_ref().map(|p| (HookKind::Master, p)),
            State::Backup => hooks.backup.as_ref().map(|p| (HookKind::Backup, p)),
            // A planned INIT (disabled, shutdown, reconfigured) is no fault.
            State::Init if matches!(cause, Cause::LinkDown | Cause::AddressFault) => {
                hooks.fault.as_ref().map(|p| (HookKind::Fault, p))
            }
            State::Init => None,
        };
        let runs: Vec<HookRun> = [legacy, state]
            .into_iter()
            .flatten()
            .map(|(kind, program)| HookRun {
                kind,
                program: program.clone(),
                vhid: id.vhid.get(),
                sequence: r.transitions,
                state: to.to_string(),
                from: from.to_string(),
                cause: cause.to_string(),
                carpdev: r.spec.carpdev.clone(),
                interface: r.addr_ifname.clone(),
                addresses: r.spec.addresses.iter().map(ToString::to_string).collect(),
                timeout: hooks.timeout,
                deadline: None,
                report: None,
            })
            .collect();
        self.deferred_hooks
            .extend(runs.into_iter().map(|run| (owner, run)));
    }
}

/// Where [`Daemon::route`] sends an advertisement.
pub(super) enum Route {
    /// These bytes, this way.
    Send { bytes: Vec<u8>, via: Via },
    /// A frame from the virtual MAC needs a link-local source.
    NoLinkLocal,
    /// No carpdev or no socket of the family.
    Unsendable,
}

fn owned_address(ifname: &str, a: &AddrSpec) -> OwnedAddress {
    OwnedAddress {
        ifname: ifname.to_string(),
        addr: a.addr,
        prefix_len: a.prefix_len,
    }
}
