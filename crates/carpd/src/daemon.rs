//! The daemon loop: the imperative shell around `carp_proto::Node`.
//!
//! One task owns the `Node` and every piece of protocol state. It waits in
//! one `select!` on received advertisements (from one reader task per
//! socket), the node's next timer, netlink link/address events, control
//! requests and signals; after every input it drains `poll_action()` into
//! OS calls. On shutdown the node bows out first, then the addresses go.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use carp_proto::node::RxMeta;
use carp_proto::{
    Action, AddrSpec, CarpIfId, Cause, Family, Instant, LinkId, Node, NodeConfig, State, Vhid,
    VhostId, VhostStatus,
};
use tokio::sync::{broadcast, mpsc};

use crate::carplog;
use crate::config::{ConfigSource, DaemonConfig, Lladdr, Overrides, VhostSpec};
use crate::control::types::{Reply, Request, Transition, VhostView};
use crate::control::{self, Envelope};
use crate::hooks::{HookQueue, HookRun};
use crate::log::{self, Level};
use crate::maintenance::{MAINTENANCE_DEMOTE, Maintenance};
use crate::os::l2::{
    ETH_P_IP, ETH_P_IPV6, L2Sender, carp_advert_frame_v4, carp_advert_frame_v6, multicast_mac,
    virtual_mac,
};
use crate::os::netlink::{LinkEvent, LinkMonitor, Netlink};
use crate::os::privs;
use crate::os::raw::CarpSocket;
use crate::owned::{Owned, OwnedAddress};
use crate::systemd;

/// What the binary (or a test) tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM / SIGINT: bow out, release the addresses, return.
    Terminate,
    /// SIGHUP: reload the configuration file.
    Reload,
}

/// One parent interface and its sockets.
struct Carpdev {
    name: String,
    mac: [u8; 6],
    sock4: Option<Arc<CarpSocket>>,
    sock6: Option<Arc<CarpSocket>>,
    l2: L2Sender,
    /// Source of IPv4 advertisements: the first non-virtual IPv4 address.
    src4: Option<Ipv4Addr>,
    /// Source of IPv6 advertisements sent as frames: the link-local address.
    src6: Option<Ipv6Addr>,
}

/// One vhost as realised on Linux.
struct Realised {
    spec: VhostSpec,
    /// Interface that holds the addresses: the macvlan or the carpdev.
    addr_index: u32,
    addr_ifname: String,
    /// A macvlan we created and delete on exit.
    macvlan: Option<u32>,
    hooks: HookQueue,
}

/// A datagram read by a socket task.
struct Datagram {
    link: LinkId,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    ifindex: u32,
    bytes: Vec<u8>,
}

struct Daemon {
    config: DaemonConfig,
    node: Node,
    start: tokio::time::Instant,
    netlink: Netlink,
    carpdevs: BTreeMap<LinkId, Carpdev>,
    vhosts: BTreeMap<VhostId, Realised>,
    rx_tx: mpsc::Sender<Datagram>,
    transitions: broadcast::Sender<Transition>,
    maintenance: Maintenance,
    /// The addresses this run has configured, for the next run's hygiene.
    owned: Owned,
    /// Command-line flags re-applied on every reload.
    overrides: Overrides,
}

/// Run the daemon until `signals` yields `Terminate` (or closes).
pub async fn run(
    config: DaemonConfig,
    overrides: Overrides,
    mut signals: mpsc::Receiver<Signal>,
) -> anyhow::Result<()> {
    log::set_threshold(config.log_level);
    let user = match &overrides.user {
        Some(name) => Some(privs::lookup_user(name)?),
        None => None,
    };
    let netlink = Netlink::connect().await.context("cannot open rtnetlink")?;
    let mut monitor = LinkMonitor::open().context("cannot monitor links")?;
    let (rx_tx, mut rx) = mpsc::channel::<Datagram>(1024);
    let (transitions, _) = broadcast::channel(256);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Envelope>(16);
    let state_dir = config
        .state_dir
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_STATE_DIR.into());
    let maintenance = Maintenance::load(&state_dir)
        .with_context(|| format!("cannot read maintenance state in {}", state_dir.display()))?;

    if let Some(addr) = config.http {
        let http = crate::http::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        let (to_daemon, token) = (ctl_tx.clone(), config.http_token.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(http, to_daemon, token).await {
                carplog!(Err, "HTTP server stopped: {e}");
            }
        });
        carplog!(Info, "status page on http://{addr}/");
    }
    let control_path = config.control.clone().unwrap_or_else(control::default_path);
    let listener = control::bind(&control_path)
        .with_context(|| format!("cannot bind control socket {}", control_path.display()))?;
    tokio::spawn(control::serve(listener, ctl_tx, transitions.clone()));
    let (owned, leftovers) = Owned::open(&state_dir, &control_path);

    let mut d = Daemon {
        node: Node::new(NodeConfig {
            preempt: config.preempt,
            ..NodeConfig::default()
        }),
        config: config.clone(),
        start: tokio::time::Instant::now(),
        netlink,
        carpdevs: BTreeMap::new(),
        vhosts: BTreeMap::new(),
        rx_tx,
        transitions,
        maintenance,
        owned,
        overrides,
    };
    // Before joining: a previous run that did not stop cleanly may have left
    // addresses behind, also ones no longer in the configuration.
    d.remove_leftovers(leftovers).await;
    if d.maintenance.is_on() {
        // Before joining any vhid, so a maintained host never takes one over.
        let now = d.now();
        let group = carp_proto::node::DEFAULT_GROUP;
        d.node.demote_group(now, group, MAINTENANCE_DEMOTE);
        carplog!(
            Warning,
            "maintenance mode is on ({}): group {group} demoted by {MAINTENANCE_DEMOTE}",
            d.maintenance.path().display()
        );
    }
    for spec in &config.vhosts {
        if let Err(e) = d.add_vhost(spec.clone()).await {
            // Nothing half-started: release what was set up, then fail.
            d.shutdown(None).await;
            let _ = std::fs::remove_file(&control_path);
            return Err(e);
        }
    }
    // Set-up is done: keep CAP_NET_ADMIN and CAP_NET_RAW only.
    let dropped = match privs::drop_privileges(user.as_ref(), &state_dir) {
        Ok(dropped) => dropped,
        Err(e) => {
            d.shutdown(None).await;
            let _ = std::fs::remove_file(&control_path);
            return Err(anyhow::Error::new(e).context("cannot drop privileges"));
        }
    };
    if !dropped.bounding_left.is_empty() {
        carplog!(
            Warning,
            "no CAP_SETPCAP: the bounding set keeps {} (set CapabilityBoundingSet=)",
            dropped.bounding_left.len()
        );
    }
    carplog!(
        Info,
        "started with {} vhost(s), control socket {}, capabilities {:?}{}",
        d.vhosts.len(),
        control_path.display(),
        dropped.kept,
        dropped
            .user
            .map(|u| format!(", user {u}"))
            .unwrap_or_default()
    );
    d.drain().await;
    systemd::ready(&format!("{} vhost(s)", d.vhosts.len()));
    let mut watchdog = systemd::watchdog_interval().map(tokio::time::interval);

    loop {
        let deadline = d.node.poll_timeout().map(|t| d.to_tokio(t));
        tokio::select! {
            Some(dgram) = rx.recv() => {
                let meta = RxMeta { link: dgram.link, src: dgram.src, dst: dgram.dst, ttl: dgram.ttl };
                let link = if dgram.ifindex == dgram.link.0 || dgram.ifindex == 0 {
                    meta.link
                } else {
                    // Arrived on another interface than the socket's: OpenBSD `badif`.
                    LinkId(dgram.ifindex)
                };
                let now = d.now();
                d.node.handle_datagram(now, RxMeta { link, ..meta }, &dgram.bytes);
            }
            _ = sleep_until(deadline) => {
                let now = d.now();
                d.node.handle_timeout(now);
            }
            event = monitor.next() => match event {
                Some(event) => d.handle_link_event(event).await,
                None => {
                    carplog!(Err, "link monitor closed; reopening");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(m) = LinkMonitor::open() { monitor = m; }
                }
            },
            Some((request, reply)) = ctl_rx.recv() => {
                let answer = d.handle_request(request).await;
                let _ = reply.send(answer);
            }
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => d.reload().await,
                Some(Signal::Terminate) | None => break,
            },
            // From the loop itself: a stuck loop stops the pings.
            _ = tick(watchdog.as_mut()) => systemd::watchdog(),
        }
        d.drain().await;
    }
    systemd::stopping();
    d.shutdown(Some(&mut rx)).await;
    let _ = std::fs::remove_file(&control_path);
    carplog!(Info, "stopped");
    Ok(())
}

async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The core's time at `at`: microseconds since `start` on tokio's clock, which
/// is std's monotonic `Instant` (CLOCK_MONOTONIC) and never follows the wall clock.
/// Nothing else feeds the core a time.
fn core_time(start: tokio::time::Instant, at: tokio::time::Instant) -> Instant {
    let us = u64::try_from(at.saturating_duration_since(start).as_micros()).unwrap_or(u64::MAX);
    Instant::from_micros(us)
}

/// The tokio deadline of the core's time `t`.
fn tokio_time(start: tokio::time::Instant, t: Instant) -> tokio::time::Instant {
    start + Duration::from_micros(t.as_micros())
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    /// The core's time: microseconds on the monotonic clock since start.
    fn now(&self) -> Instant {
        core_time(self.start, tokio::time::Instant::now())
    }

    fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        tokio_time(self.start, t)
    }

    // ===== set-up =====

    async fn carpdev(&mut self, name: &str, need4: bool, need6: bool) -> anyhow::Result<LinkId> {
        let info = self
            .netlink
            .link_by_name(name)
            .await
            .with_context(|| format!("carpdev {name} not found"))?;
        let link = LinkId(info.index);
        if !self.carpdevs.contains_key(&link) {
            let l2 =
                L2Sender::open(info.index).with_context(|| format!("{name}: packet socket"))?;
            let src4 = self.source_v4(info.index, None).await;
            let src6 = self.source_v6(info.index).await;
            self.carpdevs.insert(
                link,
                Carpdev {
                    name: name.to_string(),
                    mac: info.mac,
                    sock4: None,
                    sock6: None,
                    l2,
                    src4,
                    src6,
                },
            );
            let now = self.now();
            self.node
                .handle_link(now, link, info.admin_up && info.carrier);
        }
        let tx = self.rx_tx.clone();
        let Some(dev) = self.carpdevs.get_mut(&link) else {
            bail!("carpdev vanished")
        };
        if need4 && dev.sock4.is_none() {
            let s = Arc::new(
                CarpSocket::open_v4(name, info.index)
                    .with_context(|| format!("{name}: IPv4 CARP socket"))?,
            );
            spawn_reader(link, s.clone(), tx.clone());
            dev.sock4 = Some(s);
        }
        if need6 && dev.sock6.is_none() {
            let s = Arc::new(
                CarpSocket::open_v6(name, info.index)
                    .with_context(|| format!("{name}: IPv6 CARP socket"))?,
            );
            spawn_reader(link, s.clone(), tx);
            dev.sock6 = Some(s);
        }
        Ok(link)
    }

    /// The first IPv4 address of `index` that is not a virtual address.
    async fn source_v4(&self, index: u32, extra_vips: Option<&VhostSpec>) -> Option<Ipv4Addr> {
        let addrs = self.netlink.addresses(index).await.ok()?;
        let is_vip = |a: &IpAddr| {
            self.vhosts
                .values()
                .any(|r| r.spec.addresses.iter().any(|v| v.addr == *a))
                || self
                    .config
                    .vhosts
                    .iter()
                    .any(|s| s.addresses.iter().any(|v| v.addr == *a))
                || extra_vips.is_some_and(|s| s.addresses.iter().any(|v| v.addr == *a))
        };
        addrs.into_iter().find_map(|(a, _)| match a {
            IpAddr::V4(v4) if !is_vip(&a) => Some(v4),
            _ => None,
        })
    }

    /// The first link-local IPv6 address of `index` (the source the kernel
    /// would choose for ff02::12).
    async fn source_v6(&self, index: u32) -> Option<Ipv6Addr> {
        let addrs = self.netlink.addresses(index).await.ok()?;
        addrs.into_iter().find_map(|(a, _)| match a {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some(v6),
            _ => None,
        })
    }

    async fn add_vhost(&mut self, spec: VhostSpec) -> anyhow::Result<()> {
        let need4 = !spec.proto.ipv4.is_empty();
        let need6 = !spec.proto.ipv6.is_empty();
        let link = self.carpdev(&spec.carpdev, need4, need6).await?;
        let parent_name = self.carpdevs[&link].name.clone();
        let vhid = spec.proto.vhid.get();
        let (addr_index, addr_ifname, macvlan) = match spec.lladdr {
            Lladdr::Real => (link.0, parent_name.clone(), None),
            Lladdr::Virtual => {
                let name = macvlan_name(link.0, vhid);
                let mac = virtual_mac(vhid);
                let index = self
                    .netlink
                    .ensure_macvlan(link.0, &name, mac)
                    .await
                    .with_context(|| format!("{parent_name}: cannot create macvlan {name}"))?;
                // Only the interface holding a VIP may answer ARP for it, or the
                // parent would answer with its real MAC (Linux's weak host model).
                set_sysctl(&format!("net/ipv4/conf/{parent_name}/arp_ignore"), "1");
                set_sysctl(&format!("net/ipv4/conf/{name}/arp_ignore"), "1");
                // Replies from a VIP leave through the parent (its route is as good
                // as the macvlan's); with the default arp_announce 0 the parent's
                // ARP request for the client then carries the VIP as sender IP and
                // its real MAC, and the client re-points the VIP at that MAC.
                set_sysctl(&format!("net/ipv4/conf/{parent_name}/arp_announce"), "2");
                (index, name, Some(index))
            }
        };
        // Start-up hygiene: a previous run killed with -9 may have left VIPs behind,
        // and a node that is not MASTER must not hold them.
        for va in &spec.addresses {
            let _ = self
                .netlink
                .del_address(addr_index, va.addr, va.prefix_len)
                .await;
        }
        let cookie: [u8; 8] = rand::random();
        let now = self.now();
        let iface = self
            .node
            .add_interface(now, link, spec.carp_if_config(), &[cookie])
            .map_err(|e| anyhow::anyhow!("{}: {e}", spec.carpdev))?;
        let id = VhostId {
            link,
            vhid: iface.vhid,
        };
        self.vhosts.insert(
            id,
            Realised {
                spec,
                addr_index,
                addr_ifname,
                macvlan,
                hooks: HookQueue::spawn(),
            },
        );
        Ok(())
    }

    /// Remove the addresses a previous run recorded and did not release.
    async fn remove_leftovers(&mut self, leftovers: Vec<OwnedAddress>) {
        for a in &leftovers {
            // A vanished interface took its addresses with it.
            let Ok(link) = self.netlink.link_by_name(&a.ifname).await else {
                continue;
            };
            if let Ok(()) = self
                .netlink
                .del_address(link.index, a.addr, a.prefix_len)
                .await
            {
                carplog!(
                    Warning,
                    "removed {}/{} from {}, left by a previous run that did not stop cleanly",
                    a.addr,
                    a.prefix_len,
                    a.ifname
                );
            }
        }
        if let Err(e) = self.owned.save() {
            carplog!(
                Warning,
                "cannot record addresses in {}: {e}",
                self.owned.path().display()
            );
        }
    }

    // ===== actions =====

    /// Perform every queued action; actions may queue more (send results).
    async fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            self.perform(action).await;
        }
    }

    async fn perform(&mut self, action: Action) {
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
            }
            Action::RemoveAddresses { iface, addresses } => {
                self.remove_addresses(iface, &addresses).await;
            }
            Action::LoadShare { iface, mask, nodes } => {
                carplog!(
                    Debug,
                    "{}: load-share mask {mask:#x} of {nodes} node(s)",
                    self.label(vhost_of(iface))
                );
            }
            Action::PrepareMaster { iface, .. } => {
                // No gate is configured yet (state sync comes later): go live at once.
                let now = self.now();
                self.node.handle_prepared(now, iface, true);
            }
            Action::Announce {
                iface,
                mac,
                ipv4,
                ipv6,
            } => self.announce(vhost_of(iface), mac, &ipv4, &ipv6),
            Action::StateChanged {
                id,
                from,
                to,
                cause,
            } => self.state_changed(id, from, to, cause),
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

    /// Record, then configure `addresses` on `iface` (all requests in flight at
    /// once); return true if every one succeeded.
    async fn add_addresses(&mut self, iface: CarpIfId, addresses: &[AddrSpec]) -> bool {
        let id = vhost_of(iface);
        let Some(r) = self.vhosts.get(&id) else {
            return false;
        };
        let (index, ifname) = (r.addr_index, r.addr_ifname.clone());
        if let Err(e) = self
            .owned
            .hold(addresses.iter().map(|a| owned_address(&ifname, a)))
        {
            carplog!(
                Warning,
                "cannot record addresses in {}: {e}",
                self.owned.path().display()
            );
        }
        let results = futures::future::join_all(
            addresses
                .iter()
                .map(|a| self.netlink.add_address(index, a.addr, a.prefix_len)),
        )
        .await;
        let mut ok = true;
        for (a, result) in addresses.iter().zip(results) {
            if let Err(e) = result {
                carplog!(Err, "{}: cannot add {a}: {}", self.label(id), chain(&e));
                ok = false;
            }
        }
        ok
    }

    /// Remove `addresses` from `iface`; forget in the record those now gone.
    async fn remove_addresses(&mut self, iface: CarpIfId, addresses: &[AddrSpec]) {
        let id = vhost_of(iface);
        let Some(r) = self.vhosts.get(&id) else {
            return;
        };
        let (index, ifname) = (r.addr_index, r.addr_ifname.clone());
        let results = futures::future::join_all(
            addresses
                .iter()
                .map(|a| self.netlink.del_address(index, a.addr, a.prefix_len)),
        )
        .await;
        let mut gone = Vec::new();
        for (a, result) in addresses.iter().zip(results) {
            if let Err(e) = &result {
                carplog!(Err, "{}: cannot remove {a}: {}", self.label(id), chain(e));
            }
            // Gone (or never there): forget it; otherwise the next start retries.
            let errno = result.as_ref().err().and_then(|e| e.raw_os_error());
            if result.is_ok() || matches!(errno, Some(libc::EADDRNOTAVAIL | libc::ENODEV)) {
                gone.push(owned_address(&ifname, a));
            }
        }
        if let Err(e) = self.owned.release(gone.iter()) {
            carplog!(
                Warning,
                "cannot record addresses in {}: {e}",
                self.owned.path().display()
            );
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
        if let Some(mac) = src_mac {
            // Like the kernels: multicast advertisements leave from the virtual
            // MAC, so every advertisement refreshes the switches' MAC tables.
            let frame = match dst {
                IpAddr::V4(g) => {
                    let src = dev.src4.unwrap_or(Ipv4Addr::UNSPECIFIED);
                    carp_advert_frame_v4(mac, src, g, packet)
                }
                IpAddr::V6(g) => {
                    let Some(src) = dev.src6 else {
                        carplog!(
                            Warning,
                            "{}: no link-local address to send from",
                            self.label(id)
                        );
                        return false;
                    };
                    carp_advert_frame_v6(mac, src, g, packet)
                }
            };
            let ethertype = if dst.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 };
            return match dev.l2.send(&frame, ethertype, multicast_mac(dst)) {
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
            };
        }
        let (sock, src) = match family {
            Family::V4 => (&dev.sock4, dev.src4.map(IpAddr::V4)),
            Family::V6 => (&dev.sock6, None),
        };
        let Some(sock) = sock else { return false };
        match sock.send(src, dst, packet).await {
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

    fn announce(&self, id: VhostId, mac: Option<[u8; 6]>, ipv4: &[Ipv4Addr], ipv6: &[Ipv6Addr]) {
        let Some(dev) = self.carpdevs.get(&id.link) else {
            return;
        };
        let mac = mac.unwrap_or(dev.mac);
        for ip in ipv4 {
            if let Err(e) = dev.l2.send_gratuitous_arp(mac, *ip) {
                carplog!(Warning, "{}: gratuitous ARP for {ip}: {e}", self.label(id));
            }
        }
        let router = read_sysctl("net/ipv6/conf/all/forwarding").is_some_and(|v| v == "1");
        for ip in ipv6 {
            if let Err(e) = dev.l2.send_unsolicited_na(mac, *ip, router) {
                carplog!(
                    Warning,
                    "{}: neighbour advertisement for {ip}: {e}",
                    self.label(id)
                );
            }
        }
    }

    fn state_changed(&self, id: VhostId, from: State, to: State, cause: Cause) {
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
        let Some(r) = self.vhosts.get(&id) else {
            return;
        };
        let _ = self.transitions.send(Transition {
            carpdev: r.spec.carpdev.clone(),
            vhid: id.vhid.get(),
            from: from.to_string(),
            to: to.to_string(),
            cause: cause.to_string(),
            at_secs: self.start.elapsed().as_secs_f64(),
        });
        let hook = if to == State::Master {
            r.spec.hooks.up.clone()
        } else if from == State::Master {
            r.spec.hooks.down.clone()
        } else {
            None
        };
        if let Some(program) = hook {
            r.hooks.push(HookRun {
                program,
                vhid: id.vhid.get(),
                state: to.to_string(),
                from: from.to_string(),
                cause: cause.to_string(),
                carpdev: r.spec.carpdev.clone(),
                interface: r.addr_ifname.clone(),
                addresses: r.spec.addresses.iter().map(ToString::to_string).collect(),
                timeout: r.spec.hooks.timeout,
            });
        }
    }

    fn label(&self, id: VhostId) -> String {
        let dev = self.carpdevs.get(&id.link).map_or("?", |d| d.name.as_str());
        format!("vhid {}@{dev}", id.vhid)
    }

    // ===== link and address events =====

    async fn handle_link_event(&mut self, event: LinkEvent) {
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
                        if let Err(e) = self.netlink.add_address(index, addr, prefix_len).await {
                            carplog!(Err, "{}: cannot restore {addr}: {e}", self.label(id));
                        }
                    }
                }
                self.refresh_sources(index).await;
            }
            LinkEvent::AddressAdded { index, .. } => self.refresh_sources(index).await,
            LinkEvent::Resync => {
                let links: Vec<LinkId> = self.carpdevs.keys().copied().collect();
                for link in links {
                    if let Ok(info) = self.netlink.link_by_index(link.0).await {
                        let now = self.now();
                        self.node
                            .handle_link(now, link, info.admin_up && info.carrier);
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

    // ===== control =====

    fn find(&self, vhid: u8, carpdev: Option<&str>) -> Result<Vec<VhostId>, String> {
        let Some(vhid) = Vhid::new(vhid) else {
            return Err("vhid must be 1..255".into());
        };
        let ids: Vec<VhostId> = self
            .vhosts
            .iter()
            .filter(|(id, r)| id.vhid == vhid && carpdev.is_none_or(|c| r.spec.carpdev == c))
            .map(|(id, _)| *id)
            .collect();
        match ids.len() {
            0 => Err(format!(
                "no vhid {vhid}{} is configured",
                carpdev.map(|c| format!(" on {c}")).unwrap_or_default()
            )),
            1 => Ok(ids),
            _ => Err(format!(
                "vhid {vhid} exists on several carpdevs; name one with --carpdev"
            )),
        }
    }

    async fn handle_request(&mut self, request: Request) -> Reply {
        let now = self.now();
        match request {
            Request::Status => Reply {
                ok: true,
                vhosts: Some(self.node.status().iter().map(|s| self.view(s)).collect()),
                groups: Some(
                    self.node
                        .groups()
                        .iter()
                        .map(|(g, v)| (g.clone(), *v))
                        .collect(),
                ),
                maintenance: Some(self.maintenance.is_on()),
                ..Reply::default()
            },
            Request::Stats => Reply {
                ok: true,
                stats: Some(self.node.stats()),
                ..Reply::default()
            },
            Request::Watch => Reply::failed("watch is handled by the control server"),
            Request::Demote { group, by } => {
                let group = group.unwrap_or_else(|| carp_proto::node::DEFAULT_GROUP.to_string());
                if !self.node.groups().contains_key(&group) {
                    return Reply::failed(format!("no interface group {group}"));
                }
                let value = self.node.demote_group(now, &group, by);
                Reply::done(format!("group {group} demoted to {value}"))
            }
            Request::State { vhid, carpdev, to } => {
                let to = match to.as_str() {
                    "master" => State::Master,
                    "backup" => State::Backup,
                    other => {
                        return Reply::failed(format!(
                            "state must be master or backup, not {other:?}"
                        ));
                    }
                };
                match self.find(vhid, carpdev.as_deref()) {
                    Err(e) => Reply::failed(e),
                    Ok(ids) => match self.node.force_state(now, ids[0], to) {
                        Ok(()) => Reply::done(format!("vhid {vhid} forced to {to}")),
                        Err(e) => Reply::failed(e.to_string()),
                    },
                }
            }
            Request::Enable {
                vhid,
                carpdev,
                enabled,
            } => {
                let ids = match vhid {
                    None => self.vhosts.keys().copied().collect(),
                    Some(v) => match self.find(v, carpdev.as_deref()) {
                        Ok(ids) => ids,
                        Err(e) => return Reply::failed(e),
                    },
                };
                for id in &ids {
                    if let Err(e) = self.node.set_enabled(now, *id, enabled) {
                        return Reply::failed(e.to_string());
                    }
                }
                let verb = if enabled { "enabled" } else { "disabled" };
                Reply::done(format!("{} vhost(s) {verb}", ids.len()))
            }
            Request::Reload => match self.reload_inner().await {
                Ok(msg) => Reply::done(msg),
                Err(e) => Reply::failed(format!("{e:#}")),
            },
            Request::Maintenance { on } => self.set_maintenance(now, on),
        }
    }

    /// Persist maintenance mode first, then apply its demotion.
    fn set_maintenance(&mut self, now: Instant, on: bool) -> Reply {
        let word = if on { "on" } else { "off" };
        match self.maintenance.set(on) {
            Err(e) => Reply::failed(format!(
                "cannot record maintenance mode in {}: {e}; nothing changed",
                self.maintenance.path().display()
            )),
            Ok(false) => Reply::done(format!("maintenance mode is already {word}")),
            Ok(true) => {
                let group = carp_proto::node::DEFAULT_GROUP;
                let by = if on {
                    MAINTENANCE_DEMOTE
                } else {
                    -MAINTENANCE_DEMOTE
                };
                let value = self.node.demote_group(now, group, by);
                carplog!(
                    Warning,
                    "maintenance mode {word}: group {group} demote {value}"
                );
                Reply::done(format!(
                    "maintenance mode {word}: group {group} demoted to {value}{}",
                    if on { "; MASTERs move to the peer" } else { "" }
                ))
            }
        }
    }

    fn view(&self, s: &VhostStatus) -> VhostView {
        let now = self.now();
        let r = self.vhosts.get(&s.id);
        VhostView {
            carpdev: r.map_or_else(String::new, |r| r.spec.carpdev.clone()),
            vhid: s.id.vhid.get(),
            state: s.state.to_string(),
            since_secs: (now - s.since).as_secs_f64(),
            cause: s.cause.to_string(),
            advbase: s.advbase.0,
            advskew: s.advskew.0,
            effective_advskew: s.effective_advskew.0,
            demote: s.demote,
            lladdr: r.map_or_else(String::new, |r| r.spec.lladdr.to_string()),
            addresses: r.map_or_else(Vec::new, |r| {
                r.spec.addresses.iter().map(ToString::to_string).collect()
            }),
            last_master: s.last_master.map(|(a, _)| a.to_string()),
            last_master_age_secs: s.last_master.map(|(_, t)| (now - t).as_secs_f64()),
            stats: s.stats,
        }
    }

    // ===== reload and shutdown =====

    async fn reload(&mut self) {
        match self.reload_inner().await {
            Ok(msg) => carplog!(Info, "{msg}"),
            Err(e) => carplog!(
                Err,
                "reload failed, keeping the running configuration: {e:#}"
            ),
        }
    }

    async fn reload_inner(&mut self) -> anyhow::Result<String> {
        let ConfigSource::File(path) = self.config.source.clone() else {
            bail!("started from the command line: nothing to reload");
        };
        let mut new = DaemonConfig::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        self.overrides.apply(&mut new);
        let now = self.now();
        self.node.set_config(NodeConfig {
            preempt: new.preempt,
            ..self.node.config()
        });
        log::set_threshold(new.log_level);
        let mut kept = 0;
        let mut changed = 0;
        // Vhosts gone or realised differently are removed (bow-out first).
        let existing: Vec<VhostId> = self.vhosts.keys().copied().collect();
        for id in existing {
            let Some(r) = self.vhosts.get(&id) else {
                continue;
            };
            let same_place = new.vhosts.iter().find(|s| {
                s.carpdev == r.spec.carpdev && s.proto.vhid == id.vhid && s.lladdr == r.spec.lladdr
            });
            match same_place {
                Some(spec) if *spec == r.spec => kept += 1,
                Some(spec) => {
                    let spec = spec.clone();
                    self.node
                        .reconfigure_interface(now, CarpIfId::of(id), spec.carp_if_config())
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    self.drain().await;
                    if let Some(r) = self.vhosts.get_mut(&id) {
                        r.spec = spec;
                    }
                    changed += 1;
                }
                None => {
                    self.node
                        .remove_vhost(now, id)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    self.drain().await;
                    if let Some(index) = self.vhosts.remove(&id).and_then(|r| r.macvlan) {
                        let _ = self.netlink.delete_link(index).await;
                    }
                }
            }
        }
        let mut added = 0;
        for spec in &new.vhosts {
            let present = self
                .vhosts
                .iter()
                .any(|(id, r)| r.spec.carpdev == spec.carpdev && id.vhid == spec.proto.vhid);
            if !present {
                self.add_vhost(spec.clone()).await?;
                added += 1;
            }
        }
        self.config = new;
        Ok(format!(
            "reloaded: {kept} unchanged, {changed} changed, {added} added"
        ))
    }

    async fn shutdown(&mut self, rx: Option<&mut mpsc::Receiver<Datagram>>) {
        let now = self.now();
        self.node.begin_shutdown(now);
        let mut rest = Vec::new();
        let mut bowed_out = BTreeSet::new();
        while let Some(action) = self.node.poll_action() {
            if let Action::Transmit { id, .. } = &action {
                bowed_out.insert(*id);
                self.perform(action).await;
            } else {
                rest.push(action);
            }
        }
        if let Some(rx) = rx {
            await_successor(&self.node, rx, bowed_out).await;
        }
        for action in rest {
            self.perform(action).await;
        }
        self.drain().await;
        for r in self.vhosts.values() {
            if let Some(index) = r.macvlan {
                let _ = self.netlink.delete_link(index).await;
            }
        }
        // Let queued down hooks finish (each is bounded by its own timeout).
        let queues: Vec<HookQueue> = std::mem::take(&mut self.vhosts)
            .into_values()
            .map(|r| r.hooks)
            .collect();
        for q in queues {
            q.finish().await;
        }
    }
}

/// How long a bowed-out master keeps its addresses waiting for a successor.
const BOW_OUT_GRACE: Duration = Duration::from_millis(250);

/// Wait until every bowed-out vhost hears a successor's advertisement, or the grace ends.
///
/// DEVIATION: OpenBSD releases the addresses right after the bow-out. Keeping
/// them until the successor's first advertisement (which it sends as it
/// takes over, right after adding the addresses) closes the window in which
/// neither host answers, so a planned switchover loses no traffic.
async fn await_successor(
    node: &Node,
    rx: &mut mpsc::Receiver<Datagram>,
    mut waiting: BTreeSet<VhostId>,
) {
    let deadline = tokio::time::Instant::now() + BOW_OUT_GRACE;
    while !waiting.is_empty() {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            return;
        };
        // Only an authentic advertisement (HMAC checked) counts as the successor's.
        if let Some(id) = node.successor_advert(d.link, &d.bytes) {
            waiting.remove(&id);
        }
    }
}

fn spawn_reader(link: LinkId, sock: Arc<CarpSocket>, tx: mpsc::Sender<Datagram>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match sock.recv(&mut buf).await {
                Ok(r) => {
                    let d = Datagram {
                        link,
                        src: r.src,
                        dst: r.dst,
                        ttl: r.ttl,
                        ifindex: r.ifindex,
                        bytes: buf[..r.len.min(buf.len())].to_vec(),
                    };
                    // Waiting here lets the kernel's socket buffer absorb bursts.
                    if tx.send(d).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    carplog!(Warning, "{}: receive failed: {e}", sock.ifname());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

fn owned_address(ifname: &str, a: &AddrSpec) -> OwnedAddress {
    OwnedAddress {
        ifname: ifname.to_string(),
        addr: a.addr,
        prefix_len: a.prefix_len,
    }
}

/// The vhost of a one-node carp interface (every interface the daemon makes today).
fn vhost_of(iface: CarpIfId) -> VhostId {
    VhostId {
        link: iface.link,
        vhid: iface.vhid,
    }
}

/// An error with its whole source chain, errno included.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
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

fn set_sysctl(key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    if let Err(e) = std::fs::write(&path, value) {
        carplog!(Warning, "cannot set {path} to {value}: {e}");
    }
}

fn read_sysctl(key: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{key}"))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
#[path = "daemon_clock_tests.rs"]
mod clock_tests;
