//! N host namespaces, each with a veth `eth0` plugged into the bridge `br0`
//! of a "switch" namespace; everything is removed in `Drop`, so a failing or
//! panicking run (or an interrupted `carpd lab`) still cleans up.
//!
//! Rules kept here so every user follows them:
//! - namespace names start with `carpt-` and carry the pid and a counter;
//!   leftovers of dead processes (a SIGKILLed test run) are reaped first;
//! - sysctls and links are only changed inside the topology's namespaces;
//! - addresses come from the documentation ranges only: host `i` gets
//!   192.0.2.(10+i)/24 and 2001:db8::(0x10+i)/64; 198.51.100.0/24 and
//!   203.0.113.0/24 are left to the users (the second LAN takes 203.0.113.0/24);
//! - every external command runs under a timeout ([`super::cmd`]).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::cmd::{CMD_TIMEOUT, run_ok, run_timeout};

/// Prefix of every namespace (and scratch directory) the test bed creates.
pub const NS_PREFIX: &str = "carpt-";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static REAPED: std::sync::Once = std::sync::Once::new();

/// One host of the topology.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// Interface name inside the namespace (always "eth0").
    pub ifname: String,
    /// Interface index inside the namespace.
    pub ifindex: u32,
    /// MAC of `eth0`.
    pub mac: [u8; 6],
    /// 192.0.2.(10+i), prefix 24.
    pub v4: Ipv4Addr,
    /// 2001:db8::10 + i (hex), prefix 64.
    pub v6: Ipv6Addr,
    /// The kernel-made fe80:: address of `eth0`.
    pub link_local: Ipv6Addr,
    /// Name of the bridge port in the switch namespace.
    pub port: String,
}

/// One address as `ip -j addr` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addr {
    /// "inet" or "inet6".
    pub family: String,
    /// The address as text.
    pub local: String,
    /// Prefix length.
    pub prefix_len: u8,
    /// Still doing DAD.
    pub tentative: bool,
    /// Added with `nodad` / `IFA_F_NODAD`.
    pub nodad: bool,
}

/// N hosts on one bridge; everything is deleted on drop.
pub struct Topology {
    /// The switch namespace holding `br0` and the host ports.
    pub switch: String,
    /// The hosts, in creation order.
    pub hosts: Vec<Host>,
    namespaces: Vec<String>,
    children: Mutex<Vec<Child>>,
    /// Scratch directory for logs, sockets, scripts; removed on drop.
    dir: PathBuf,
    /// Number of LANs (bridges `br0`, `br1`).
    lans: usize,
}

impl Topology {
    /// Build `n` hosts on one bridge. `tag` (1-8 alphanumerics) names the
    /// user in the namespace names: `carpt-<tag>-<pid>-<counter>-h<i>`.
    pub fn build(tag: &str, n: usize) -> anyhow::Result<Topology> {
        if tag.is_empty() || tag.len() > 8 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!("tag must be 1-8 alphanumerics");
        }
        REAPED.call_once(reap_stale);
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{tag}-{}-{id}", std::process::id());
        let dir = std::env::temp_dir().join(&base);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let mut topo = Topology {
            switch: format!("{base}-sw"),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
            dir,
            lans: 1,
        };
        let sw = topo.switch.clone();
        topo.add_ns(&sw)?;
        topo.sysctl(&sw, "net.ipv6.conf.all.disable_ipv6", "1")?;
        topo.sysctl(&sw, "net.ipv6.conf.default.disable_ipv6", "1")?;
        topo.add_bridge("br0")?;
        for i in 0..n {
            let host = topo.add_host(&base, i)?;
            topo.hosts.push(host);
        }
        for i in 0..topo.hosts.len() {
            topo.hosts[i].link_local = topo.wait_link_local(&topo.hosts[i].ns)?;
        }
        Ok(topo)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        run_ok(&["ip", "netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        run_ok(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn add_bridge(&self, br: &str) -> anyhow::Result<()> {
        let sw = self.switch.as_str();
        // Snooping off: every multicast frame floods, so delivery of
        // 224.0.0.18 / ff02::12 does not depend on MLD/IGMP timing.
        run_ok(&[
            "ip",
            "-n",
            sw,
            "link",
            "add",
            br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        run_ok(&["ip", "-n", sw, "link", "set", br, "up"])?;
        Ok(())
    }

    fn add_host(&mut self, base: &str, i: usize) -> anyhow::Result<Host> {
        let ns = format!("{base}-h{i}");
        let port = format!("p{i}");
        self.add_ns(&ns)?;
        // Before eth0 exists, so it inherits "no DAD" from default.
        for key in ["all", "default"] {
            self.sysctl(&ns, &format!("net.ipv6.conf.{key}.accept_dad"), "0")?;
            self.sysctl(&ns, &format!("net.ipv6.conf.{key}.dad_transmits"), "0")?;
        }
        let sw = self.switch.clone();
        run_ok(&[
            "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
            &sw,
        ])?;
        run_ok(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
        run_ok(&["ip", "-n", &ns, "link", "set", "eth0", "up"])?;
        let last = u8::try_from(10 + i).context("fewer than 245 hosts")?;
        let v4 = Ipv4Addr::new(192, 0, 2, last);
        // Same digits as the IPv4 host part, read as hex: 2001:db8::10, ::11, ...
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(last) - 10);
        let (a4, a6) = (format!("{v4}/24"), format!("{v6}/64"));
        run_ok(&["ip", "-n", &ns, "addr", "add", &a4, "dev", "eth0"])?;
        run_ok(&["ip", "-n", &ns, "addr", "add", &a6, "dev", "eth0", "nodad"])?;
        let link = self.link_json(&ns, "eth0")?;
        let ifindex = link["ifindex"].as_u64().context("ifindex")? as u32;
        let mac = parse_mac(link["address"].as_str().context("address")?)?;
        Ok(Host {
            ns,
            ifname: "eth0".to_owned(),
            ifindex,
            mac,
            v4,
            v6,
            link_local: Ipv6Addr::UNSPECIFIED,
            port,
        })
    }

    /// Wait until `eth0` in `ns` has a usable link-local and return it.
    fn wait_link_local(&self, ns: &str) -> anyhow::Result<Ipv6Addr> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .addrs(ns, "eth0")?
                .into_iter()
                .find(|a| a.family == "inet6" && a.local.starts_with("fe80") && !a.tentative);
            if let Some(a) = found {
                return Ok(a.local.parse()?);
            }
            if Instant::now() >= deadline {
                bail!("no link-local on {ns} eth0");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Return host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Return the namespace of host `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i].ns
    }

    /// The scratch directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Return `name` inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Add a second LAN: bridge `br1` in the switch namespace and `eth1` in
    /// each of `hosts`, with 203.0.113.(10+i)/24 for host `i` (a third LAN
    /// would reuse that range, so it is refused). Returns "eth1".
    pub fn add_lan(&mut self, hosts: &[usize]) -> anyhow::Result<String> {
        if self.lans != 1 {
            bail!("one extra LAN at most");
        }
        let n = self.lans;
        self.lans += 1;
        let br = format!("br{n}");
        let ifname = format!("eth{n}");
        self.add_bridge(&br)?;
        let sw = self.switch.clone();
        for &i in hosts {
            let ns = self.hosts[i].ns.clone();
            let port = format!("p{i}l{n}");
            run_ok(&[
                "ip", "-n", &ns, "link", "add", &ifname, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ])?;
            run_ok(&["ip", "-n", &sw, "link", "set", &port, "master", &br, "up"])?;
            run_ok(&["ip", "-n", &ns, "link", "set", &ifname, "up"])?;
            let addr = format!("203.0.113.{}/24", 10 + i);
            run_ok(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &ifname])?;
        }
        Ok(ifname)
    }

    fn own(&self, child: Child) -> u32 {
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        pid
    }

    /// Start a long-running `argv` inside `ns` with stdout and stderr
    /// appended to `log`; it is killed on drop. Returns its pid (`ip netns
    /// exec` execs the program, so the pid is the program's).
    pub fn spawn_logged(&self, ns: &str, argv: &[&str], log: &Path) -> anyhow::Result<u32> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {argv:?} in {ns}"))?;
        Ok(self.own(child))
    }

    /// Start a long-running `argv` inside `ns` with piped output (read with
    /// [`Topology::wait_child`]); it is killed on drop. Returns its pid.
    pub fn spawn(&self, ns: &str, argv: &[&str]) -> anyhow::Result<u32> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {argv:?} in {ns}"))?;
        Ok(self.own(child))
    }

    /// Send `sig` to spawned child `pid` (only children of this topology).
    pub fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if !children.iter().any(|c| c.id() == pid) {
            bail!("pid {pid} is not a child of this topology");
        }
        let raw = i32::try_from(pid)?;
        // ESRCH (it already exited, not yet reaped) is no error here.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig);
        Ok(())
    }

    /// Wait up to `timeout` for spawned child `pid` to exit on its own and
    /// return its output; `None` if it is still running (it stays owned and
    /// is killed on drop) or unknown.
    pub fn wait_child(&self, pid: u32, timeout: Duration) -> Option<Output> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
                let pos = children.iter().position(|c| c.id() == pid)?;
                if let Ok(Some(_)) = children[pos].try_wait() {
                    return children.remove(pos).wait_with_output().ok();
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn inside(&self, ns: &str, what: &str) -> anyhow::Result<()> {
        if !self.namespaces.iter().any(|n| n == ns) {
            bail!("{what} outside the topology ({ns})");
        }
        Ok(())
    }

    /// Set `ifname` in `ns` up or down (the topology's namespaces only).
    pub fn link_set(&self, ns: &str, ifname: &str, up: bool) -> anyhow::Result<()> {
        self.inside(ns, "link change")?;
        let state = if up { "up" } else { "down" };
        run_ok(&["ip", "-n", ns, "link", "set", ifname, state])?;
        Ok(())
    }

    /// Write a sysctl inside `ns` (never in the root namespace).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
        self.inside(ns, "sysctl")?;
        let kv = format!("{key}={value}");
        run_ok(&["ip", "netns", "exec", ns, "sysctl", "-q", "-w", &kv])?;
        Ok(())
    }

    /// Run `argv` inside `ns` (`ip netns exec`) under [`CMD_TIMEOUT`].
    pub fn exec(&self, ns: &str, argv: &[&str]) -> anyhow::Result<Output> {
        run_timeout(
            Command::new("ip").args(["netns", "exec", ns]).args(argv),
            CMD_TIMEOUT,
        )
        .with_context(|| format!("cannot run {argv:?} in {ns}"))
    }

    /// Like [`Topology::exec`], failing unless it succeeds; return stdout.
    pub fn exec_ok(&self, ns: &str, argv: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        run_ok(&full)
    }

    /// Return true if some interface in `ns` holds address `addr`.
    pub fn has_addr(&self, ns: &str, addr: &str) -> anyhow::Result<bool> {
        let out = run_ok(&["ip", "-n", ns, "-j", "addr", "show"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v.as_array().into_iter().flatten().any(|link| {
            link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["local"].as_str() == Some(addr))
        }))
    }

    /// Return the neighbour entry's link-layer address for `addr` in `ns`.
    pub fn neigh_lladdr(&self, ns: &str, addr: &str) -> anyhow::Result<Option<String>> {
        let out = run_ok(&["ip", "-n", ns, "-j", "neigh", "show", "to", addr])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v.as_array().and_then(|a| {
            a.iter()
                .find_map(|n| n["lladdr"].as_str().map(str::to_owned))
        }))
    }

    /// Return `ip -j link show dev` of `ifname` in `ns`.
    pub fn link_json(&self, ns: &str, ifname: &str) -> anyhow::Result<serde_json::Value> {
        let out = run_ok(&["ip", "-n", ns, "-j", "link", "show", "dev", ifname])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        v.get(0).cloned().context("no such link")
    }

    /// Return `ip -j addr show dev` of `ifname` in `ns`, raw.
    pub fn addr_json(&self, ns: &str, ifname: &str) -> anyhow::Result<serde_json::Value> {
        let out = run_ok(&["ip", "-n", ns, "-j", "addr", "show", "dev", ifname])?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Return the addresses of `ifname` in `ns`, flattened.
    pub fn addrs(&self, ns: &str, ifname: &str) -> anyhow::Result<Vec<Addr>> {
        let v = self.addr_json(ns, ifname)?;
        let mut out = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                let flag = |k: &str| a.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
                out.push(Addr {
                    family: a["family"].as_str().unwrap_or_default().to_owned(),
                    local: a["local"].as_str().unwrap_or_default().to_owned(),
                    prefix_len: a["prefixlen"].as_u64().unwrap_or(0) as u8,
                    tentative: flag("tentative"),
                    nodad: flag("nodad"),
                });
            }
        }
        Ok(out)
    }

    /// Print every `*.log` in the scratch directory (after a failure).
    pub fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            eprintln!("----- {} -----\n{text}", p.display());
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if thread::panicking() {
            self.dump_logs();
        }
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for mut c in children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Hosts first: deleting their namespaces removes the veth pairs.
        for ns in self.namespaces.iter().rev() {
            match run_timeout(Command::new("ip").args(["netns", "del", ns]), CMD_TIMEOUT) {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "cleanup: ip netns del {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("cleanup: ip netns del {ns}: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pid in a name made by [`Topology::build`]: `carpt-<tag>-<pid>-...`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NS_PREFIX)?
        .split('-')
        .nth(1)?
        .parse()
        .ok()
}

fn is_dead(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Delete namespaces and scratch directories left behind by processes that
/// no longer exist (a SIGKILLed run cannot clean up after itself).
fn reap_stale() {
    if let Ok(out) = run_timeout(Command::new("ip").args(["netns", "list"]), CMD_TIMEOUT) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if owner_pid(name).is_some_and(is_dead) {
                let _ = run_timeout(Command::new("ip").args(["netns", "del", name]), CMD_TIMEOUT);
            }
        }
    }
    for entry in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
    {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if owner_pid(&name).is_some_and(is_dead) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next().context("6 octets")?, 16)?;
    }
    Ok(mac)
}
