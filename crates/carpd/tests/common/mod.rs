//! The root integration tests' layer over the namespace test bed
//! (`crates/carpd/testbed/`, shared with `carpd lab`): the same topology,
//! pinger and outage computation, with panicking wrappers, because a test
//! fails by panicking.
//!
//! Every test that needs root is `#[ignore = "needs root: network
//! namespaces"]`; `scripts/test-all.sh` runs them as root with
//! `-- --include-ignored`. [`Lab::new`] refuses to start without root, so
//! an ignored test that is asked for never passes without running.
#![allow(dead_code, unused_imports)] // each test binary uses a different part (and re-export)

pub mod balance;
pub mod daemon;
#[path = "../../testbed/mod.rs"]
pub mod testbed;
pub mod vrrp;

use std::fs::File;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::process::{Command, Output};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::sched::{CloneFlags, setns};

pub use testbed::cmd::{CMD_TIMEOUT, wall_now};
pub use testbed::topology::{Addr, Host, NS_PREFIX, Topology};

/// Run `cmd` to completion, killing it after `timeout` (the status is then
/// a failure); panics if it cannot start.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    testbed::cmd::run_timeout(cmd, timeout).unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Run `argv` and panic with its stderr unless it succeeds; return stdout.
pub fn run_ok(argv: &[&str]) -> String {
    testbed::cmd::run_ok(argv).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Run `f` on a fresh thread that has entered network namespace `ns`.
///
/// The thread is joined before returning; a panic in `f` is re-raised here.
pub fn in_netns<F, R>(ns: &str, f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match spawn_in_netns(ns, f).join() {
        Ok(r) => r,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Start `f` on a fresh thread that has entered network namespace `ns`.
///
/// Only that thread changes namespace; the test's own thread stays put.
pub fn spawn_in_netns<F, R>(ns: &str, f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        setns(&fd, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// Run the future made by `f` on a current-thread runtime inside `ns`,
/// failing the test if it takes longer than `timeout`.
pub fn block_on_in<F, Fut, R>(ns: &str, timeout: Duration, f: F) -> R
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = R>,
    R: Send + 'static,
{
    in_netns(ns, move || block_on(timeout, f()))
}

/// Run `fut` on a new current-thread runtime, panicking after `timeout`.
pub fn block_on<Fut: Future>(timeout: Duration, fut: Fut) -> Fut::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build runtime");
    rt.block_on(async {
        tokio::time::timeout(timeout, fut)
            .await
            .unwrap_or_else(|_| panic!("timed out after {timeout:?}"))
    })
}

/// A [`Topology`] whose operations panic on failure.
pub struct Lab {
    topo: Topology,
}

impl Deref for Lab {
    type Target = Topology;
    fn deref(&self) -> &Topology {
        &self.topo
    }
}

impl DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut Topology {
        &mut self.topo
    }
}

/// Unwrap a test bed result, panicking with its whole chain.
fn ok<T>(r: anyhow::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e:#}"))
}

impl Lab {
    /// Build a lab of `n` hosts (see [`Topology::build`]). `tag` (a few
    /// letters) names the test in the namespace names.
    pub fn new(tag: &str, n: usize) -> Lab {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (network namespaces): run as root, or leave this test ignored"
        );
        Lab {
            topo: ok(Topology::build(tag, n)),
        }
    }

    /// Add the second LAN (see [`Topology::add_lan`]); returns "eth1".
    pub fn add_lan(&mut self, hosts: &[usize]) -> String {
        ok(self.topo.add_lan(hosts))
    }

    /// See [`Topology::spawn_logged`].
    pub fn spawn_logged(&self, ns: &str, argv: &[&str], log: &Path) -> u32 {
        ok(self.topo.spawn_logged(ns, argv, log))
    }

    /// Drop what `matches` match on the bridge between the hosts: an
    /// nftables `bridge` table `table` in the switch namespace, one forward
    /// rule per match (such as `ip protocol 112`). Remove it with
    /// [`Lab::bridge_undrop`].
    pub fn bridge_drop(&self, table: &str, matches: &[&str]) {
        let sw = self.switch.clone();
        self.exec_ok(&sw, &["nft", "add", "table", "bridge", table]);
        let chain = "{ type filter hook forward priority 0 ; }";
        self.exec_ok(
            &sw,
            &["nft", "add", "chain", "bridge", table, "carpfw", chain],
        );
        for m in matches {
            let rule = format!("add rule bridge {table} carpfw {m} drop");
            let argv: Vec<&str> = std::iter::once("nft").chain(rule.split(' ')).collect();
            self.exec_ok(&sw, &argv);
        }
    }

    /// Undo [`Lab::bridge_drop`].
    pub fn bridge_undrop(&self, table: &str) {
        let sw = self.switch.clone();
        self.exec_ok(&sw, &["nft", "delete", "table", "bridge", table]);
    }

    /// Start `tcpdump -U -n -i eth0 -w PCAP FILTER` in `ns` and wait until
    /// it listens; returns its pid (stop it with SIGTERM to flush the file).
    pub fn capture(&self, ns: &str, pcap: &Path, filter: &str) -> u32 {
        let log = pcap.with_extension("log");
        let pcap = pcap.to_str().expect("utf-8 path");
        let pid = self.spawn_logged(
            ns,
            &["tcpdump", "-U", "-n", "-i", "eth0", "-w", pcap, filter],
            &log,
        );
        let started = std::time::Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "tcpdump in {ns} not listening after 5 s"
            );
            thread::sleep(Duration::from_millis(20));
        }
        pid
    }

    /// See [`Topology::spawn`].
    pub fn spawn(&self, ns: &str, argv: &[&str]) -> u32 {
        ok(self.topo.spawn(ns, argv))
    }

    /// Send `sig` to spawned child `pid` (only children of this lab).
    pub fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) {
        ok(self.topo.signal(pid, sig));
    }

    /// Return true if some interface in `ns` holds address `addr`.
    pub fn has_addr(&self, ns: &str, addr: &str) -> bool {
        ok(self.topo.has_addr(ns, addr))
    }

    /// Return the neighbour entry's link-layer address for `addr` in `ns`.
    pub fn neigh_lladdr(&self, ns: &str, addr: &str) -> Option<String> {
        ok(self.topo.neigh_lladdr(ns, addr))
    }

    /// Set `ifname` in `ns` up or down (lab namespaces only).
    pub fn link_set(&self, ns: &str, ifname: &str, up: bool) {
        ok(self.topo.link_set(ns, ifname, up));
    }

    /// Write a sysctl inside `ns` (never in the root namespace).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        ok(self.topo.sysctl(ns, key, value));
    }

    /// Run `argv` inside `ns` (`ip netns exec`) under [`CMD_TIMEOUT`].
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Output {
        ok(self.topo.exec(ns, argv))
    }

    /// Like [`Lab::exec`], panicking unless it succeeds; return stdout.
    pub fn exec_ok(&self, ns: &str, argv: &[&str]) -> String {
        ok(self.topo.exec_ok(ns, argv))
    }

    /// Return `ip -j link show dev` of `ifname` in `ns`.
    pub fn link_json(&self, ns: &str, ifname: &str) -> serde_json::Value {
        ok(self.topo.link_json(ns, ifname))
    }

    /// Return `ip -j addr show dev` of `ifname` in `ns`, raw.
    pub fn addr_json(&self, ns: &str, ifname: &str) -> serde_json::Value {
        ok(self.topo.addr_json(ns, ifname))
    }

    /// Return the addresses of `ifname` in `ns`, flattened.
    pub fn addrs(&self, ns: &str, ifname: &str) -> Vec<Addr> {
        ok(self.topo.addrs(ns, ifname))
    }
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> [u8; 6] {
    ok(testbed::topology::parse_mac(s))
}
