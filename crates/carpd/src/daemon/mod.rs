//! The daemon loop: the imperative shell around `carp_proto::Node`.
//!
//! One task owns the `Node` and every piece of protocol state. It waits in
//! one `select!` on received advertisements, the node's next timer, link and
//! address events, control requests and signals; after every input it drains
//! `poll_action()` into calls on the [`Os`]. On shutdown the node bows out
//! first, then the addresses go.
//!
//! By role: `realise` sets up carpdevs, sockets, macvlans and vhosts;
//! `perform` executes core actions; `events` handles link and address
//! events; `control` answers control verbs; `lifecycle` reloads and
//! shuts down. Every OS call goes through the [`Os`] passed to [`run`].

mod balance;
mod control;
mod events;
mod lifecycle;
mod perform;
mod realise;
mod repair;
mod sync;
mod will;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use anyhow::Context as _;
use carp_proto::node::RxMeta;
use carp_proto::{Balancing, CarpIfId, Instant, LinkId, Node, NodeConfig, VhostId};
use tokio::sync::{broadcast, mpsc};

use crate::carplog;
use crate::config::{DaemonConfig, Overrides, VhostSpec};
use crate::control::types::Transition;
use crate::control::{self as ctl, Envelope};
use crate::hooks::HookQueue;
use crate::log::{self, chain};
use crate::maintenance::{MAINTENANCE_DEMOTE, Maintenance};
use crate::os::{Datagram, Os, Solicitation};
use crate::systemd;

pub use realise::macvlan_name;

/// What the binary (or a test) tells the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM / SIGINT: bow out, release the addresses, return.
    Terminate,
    /// SIGHUP: reload the configuration file.
    Reload,
}

/// One parent interface, known by name under a [`LinkId`] the daemon assigned
/// (kept when the interface is re-created); its sockets live in the [`Os`].
struct Carpdev {
    name: String,
    /// The interface's current index; `None` while it is deleted.
    index: Option<u32>,
    mac: [u8; 6],
    /// The IPv4 / IPv6 CARP socket is wanted (and open while `index` is set).
    has4: bool,
    has6: bool,
    /// Source of IPv4 advertisements: the first non-virtual IPv4 address.
    src4: Option<Ipv4Addr>,
    /// Source of IPv6 advertisements sent as frames: the link-local address.
    src6: Option<Ipv6Addr>,
    /// When sending from 0.0.0.0 was last logged (rate limit).
    warned_src4: Cell<Option<tokio::time::Instant>>,
    /// When a received advertisement from 0.0.0.0 was last logged.
    warned_rx_unspecified: Option<tokio::time::Instant>,
    /// ARP requests and NS are read here (a balancing interface uses it).
    solicitations: bool,
}

/// One vhost as realised on the host.
struct Realised {
    spec: VhostSpec,
    /// Interface that holds the addresses: the macvlan or the carpdev.
    addr_index: u32,
    addr_ifname: String,
    /// A macvlan we created and delete on exit.
    macvlan: Option<u32>,
    hooks: HookQueue,
    /// Transitions of its nodes so far: the `sequence` of their hook runs.
    transitions: u64,
    /// While faulted: when to try to rebuild (see `repair.rs`).
    repair_at: Option<tokio::time::Instant>,
    /// The wait before the last rebuild attempt; doubles while faults recur.
    repair_delay: Duration,
    /// When the last rebuild succeeded.
    repaired_at: Option<tokio::time::Instant>,
}

struct Daemon<O: Os> {
    os: O,
    config: DaemonConfig,
    node: Node,
    start: tokio::time::Instant,
    carpdevs: BTreeMap<LinkId, Carpdev>,
    vhosts: BTreeMap<VhostId, Realised>,
    rx_tx: mpsc::Sender<Datagram>,
    transitions: broadcast::Sender<Transition>,
    maintenance: Maintenance,
    /// Command-line flags re-applied on every reload.
    overrides: Overrides,
    reloads: lifecycle::Reloads,
    /// When a failed authentication was last logged, per vhost (rate limit).
    auth_logged: BTreeMap<VhostId, tokio::time::Instant>,
    solicit_tx: mpsc::Sender<Solicitation>,
    /// Requesters of balanced addresses pinned in the neighbour table.
    pinned: BTreeMap<(LinkId, IpAddr), [u8; 6]>,
    /// Solicitations for balanced addresses: answered here, left to another host.
    solicitations: BTreeMap<VhostId, SolicitationCounts>,
    /// Connection-state sync, when configured.
    sync: Option<sync::SyncState>,
    /// Hook runs of the actions being drained, queued once they are done.
    deferred_hooks: Vec<(VhostId, crate::hooks::HookRun)>,
    /// The pre-master gate round of each carp interface waiting for it.
    gates: BTreeMap<CarpIfId, sync::GateRound>,
    /// Gate rounds counted, so a late answer to an old round is ignored.
    gate_rounds: u64,
    /// A strict gate failed: group `carp` carries `STRICT_GATE_DEMOTE`.
    gate_demoted: bool,
    /// Pre-master hooks report their outcome here.
    gate_hook_tx: mpsc::UnboundedSender<sync::GateHookDone>,
    /// What `realtime` put in effect (see `os::realtime`).
    realtime: crate::os::realtime::Realtime,
    /// The `accept off` drop table as written (see `os::accept`).
    accept_filter: crate::os::accept::AcceptFilter,
    /// The last will handed to the guard.
    will: will::WillState,
}

/// What became of the ARP requests and NS for balanced addresses.
#[derive(Debug, Default, Clone, Copy)]
struct SolicitationCounts {
    answered: u64,
    silent: u64,
    dropped_pins: u64,
}

/// Run the daemon on `os` until `signals` yields `Terminate` (or closes).
pub async fn run<O: Os>(
    os: O,
    config: DaemonConfig,
    overrides: Overrides,
    signals: mpsc::Receiver<Signal>,
) -> anyhow::Result<()> {
    let (ctl_tx, ctl_rx) = mpsc::channel::<Envelope>(16);
    run_with(os, config, overrides, signals, ctl_tx, ctl_rx).await
}

/// [`run`], with the channel of control requests made by the caller (tests
/// send requests on `ctl_tx` directly, as the control socket does).
async fn run_with<O: Os>(
    mut os: O,
    config: DaemonConfig,
    overrides: Overrides,
    mut signals: mpsc::Receiver<Signal>,
    ctl_tx: mpsc::Sender<Envelope>,
    mut ctl_rx: mpsc::Receiver<Envelope>,
) -> anyhow::Result<()> {
    log::set_threshold(config.log_level);
    if let Some(name) = &overrides.user {
        os.lookup_user(name)?;
    }
    let mut links = os.link_events().context("cannot monitor links")?;
    let (rx_tx, mut rx) = mpsc::channel::<Datagram>(1024);
    let (solicit_tx, mut solicit_rx) = mpsc::channel::<Solicitation>(256);
    let (gate_hook_tx, mut gate_hook_rx) = mpsc::unbounded_channel();
    let (transitions, _) = broadcast::channel(256);
    let (reload_tx, mut reloaded) = mpsc::unbounded_channel();
    let state_dir = config
        .state_dir
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_STATE_DIR.into());
    // Before anything is read from it: see `statedir`.
    crate::statedir::ensure_dir(
        &state_dir,
        0o700,
        &crate::statedir::daemon_uids(overrides.user.as_deref()),
    )?;
    let maintenance = Maintenance::load(&state_dir)
        .with_context(|| format!("cannot read maintenance state in {}", state_dir.display()))?;

    if let Some(addr) = config.http {
        let http = crate::http::bind(addr)
            .await
            .with_context(|| format!("cannot listen for HTTP on {addr}"))?;
        let options = crate::http::Options {
            token: config.http_token.clone(),
            config_file: match &config.source {
                crate::config::ConfigSource::File(path) => Some(path.clone()),
                crate::config::ConfigSource::CommandLine => None,
            },
        };
        let to_daemon = ctl_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::http::serve(http, to_daemon, options).await {
                carplog!(Err, "HTTP server stopped: {}", chain(&e));
            }
        });
        carplog!(Info, "status page on http://{addr}/");
    }
    let control_path = config.control.clone().unwrap_or_else(ctl::default_path);
    // Dropped when `run` returns, on every path: removes only our own socket.
    let (listener, _socket) = ctl::bind(&control_path)
        .with_context(|| format!("cannot bind control socket {}", control_path.display()))?;
    tokio::spawn(ctl::serve(listener, ctl_tx, transitions.clone()));
    let leftovers = os.open_record(&state_dir, &control_path);

    let mut d = Daemon {
        os,
        node: Node::new(NodeConfig {
            preempt: config.preempt,
            ..NodeConfig::default()
        }),
        config: config.clone(),
        start: tokio::time::Instant::now(),
        carpdevs: BTreeMap::new(),
        vhosts: BTreeMap::new(),
        rx_tx,
        transitions,
        maintenance,
        overrides,
        reloads: lifecycle::Reloads::new(reload_tx),
        auth_logged: BTreeMap::new(),
        solicit_tx,
        pinned: BTreeMap::new(),
        solicitations: BTreeMap::new(),
        sync: None,
        deferred_hooks: Vec::new(),
        gates: BTreeMap::new(),
        gate_rounds: 0,
        gate_demoted: false,
        gate_hook_tx,
        realtime: crate::os::realtime::Realtime::default(),
        accept_filter: crate::os::accept::AcceptFilter::for_daemon(&control_path),
        will: will::WillState::default(),
    };
    // Before joining: a previous run that did not stop cleanly may have left
    // addresses behind, also ones no longer in the configuration.
    d.remove_leftovers(crate::owned::managed(leftovers, &config))
        .await;
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
    // Before any vhid can take over.
    if let Err(e) = d.set_accept_filter(config.vhosts.iter().collect()).await {
        d.shutdown(None).await;
        return Err(anyhow::Error::new(e).context("accept off"));
    }
    for spec in &config.vhosts {
        if let Err(e) = d.add_vhost(spec.clone()).await {
            // Nothing half-started: release what was set up, then fail.
            d.shutdown(None).await;
            return Err(e);
        }
    }
    // Set-up is done: keep CAP_NET_ADMIN and CAP_NET_RAW only.
    let user = d.overrides.user.clone();
    let balancing = config
        .vhosts
        .iter()
        .any(|v| v.balancing() != Balancing::None);
    // While privileges last: it may raise RLIMIT_MEMLOCK and RLIMIT_RTPRIO.
    d.set_realtime(config.realtime);
    // `d.config` is the copy kept; this one would live as long as the loop
    // (0.4 MiB at 1000 vhosts).
    drop(config);
    crate::os::release_free_heap();
    let dropped = match d.os.drop_privileges(user.as_deref(), &state_dir, balancing) {
        Ok(dropped) => dropped,
        Err(e) => {
            d.shutdown(None).await;
            return Err(anyhow::Error::new(e).context("cannot drop privileges"));
        }
    };
    // Only now: a thread started earlier would keep every capability.
    log::start_queue();
    let (sync_tx, mut sync_rx) = mpsc::unbounded_channel();
    if let Err(e) = d.start_sync(&state_dir, sync_tx).await {
        d.shutdown(None).await;
        return Err(e.context("cannot start state sync"));
    }
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
            Some(dgram) = rx.recv() => d.handle_datagram(dgram),
            Some(sol) = solicit_rx.recv() => d.handle_solicitation(sol).await,
            Some(done) = sync_rx.recv() => d.sync_done(done),
            Some(done) = gate_hook_rx.recv() => d.gate_hook_done(done),
            _ = sleep_until(deadline) => {
                let now = d.now();
                d.node.handle_timeout(now);
            }
            _ = sleep_until(d.next_repair()) => d.repair_due().await,
            Some(event) = links.recv() => d.handle_link_event(event).await,
            Some((request, reply)) = ctl_rx.recv() => {
                // A demotion or forced state may change the last will.
                d.will_changed();
                d.handle_envelope(request, reply).await
            }
            signal = signals.recv() => match signal {
                Some(Signal::Reload) => d.start_reload(None),
                Some(Signal::Terminate) | None => break,
            },
            Some(loaded) = reloaded.recv() => d.finish_reload(loaded).await,
            // From the loop itself: a stuck loop stops the pings.
            _ = tick(watchdog.as_mut()) => systemd::watchdog(),
        }
        d.drain().await;
    }
    systemd::stopping();
    d.shutdown(Some(&mut rx)).await;
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

impl<O: Os> Daemon<O> {
    /// The core's time: microseconds on the monotonic clock since start.
    fn now(&self) -> Instant {
        core_time(self.start, tokio::time::Instant::now())
    }

    fn to_tokio(&self, t: Instant) -> tokio::time::Instant {
        tokio_time(self.start, t)
    }

    fn handle_datagram(&mut self, dgram: Datagram) {
        let meta = RxMeta {
            link: dgram.link,
            src: dgram.src,
            dst: dgram.dst,
            ttl: dgram.ttl,
            local: self
                .carpdevs
                .get(&dgram.link)
                .and_then(|d| match dgram.src {
                    IpAddr::V4(_) => d.src4.map(IpAddr::V4),
                    IpAddr::V6(_) => d.src6.map(IpAddr::V6),
                }),
        };
        let current = self.carpdevs.get(&dgram.link).and_then(|d| d.index);
        let link = if dgram.ifindex == 0 || Some(dgram.ifindex) == current {
            meta.link
        } else {
            // Arrived on another interface than the socket's: OpenBSD `badif`.
            realise::NO_LINK
        };
        if dgram.src.is_unspecified() {
            self.note_unspecified_source(dgram.link);
        }
        let now = self.now();
        let bad_auth = self.node.stats().bad_auth;
        self.node
            .handle_datagram(now, RxMeta { link, ..meta }, &dgram.bytes);
        if self.node.stats().bad_auth > bad_auth {
            self.note_bad_auth(dgram.src, now);
        }
    }

    fn label(&self, id: VhostId) -> String {
        let dev = self.carpdevs.get(&id.link).map_or("?", |d| d.name.as_str());
        format!("vhid {}@{dev}", id.vhid)
    }
}

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod loop_tests;

/// The vhost of a one-node carp interface (every interface the daemon makes today).
fn vhost_of(iface: CarpIfId) -> VhostId {
    VhostId {
        link: iface.link,
        vhid: iface.vhid,
    }
}
