//! Network-namespace test lab shared by the root integration tests.
//!
//! A [`Lab`] builds N host namespaces, each with one veth `eth0` plugged into
//! a bridge `br0` that lives in its own "switch" namespace, and tears it all
//! down in `Drop`, so a failing or panicking test still cleans up. Children
//! spawned with [`Lab::spawn`] are killed first.
//!
//! Rules kept here so every test follows them:
//! - tests are gated by [`skip`]: root and `CARPD_NETNS_TESTS=1`, else they
//!   print "skipped: ..." and pass;
//! - namespace names start with `carpt-`, carry the pid and a counter, and
//!   leftovers of dead test processes are removed on the next run;
//! - sysctls are only written inside the lab's namespaces;
//! - addresses come from the documentation ranges only: host `i` gets
//!   192.0.2.(10+i)/24 and 2001:db8::(0x10+i)/64, so host 0 is 192.0.2.10
//!   and 2001:db8::10; 198.51.100.0/24 and 203.0.113.0/24 are left to the
//!   tests;
//! - every external command runs under a timeout.
#![allow(dead_code)] // each test binary uses a different part of the lab

pub mod daemon;

use std::fs::File;
use std::future::Future;
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

/// Prefix of every namespace the lab creates.
pub const NS_PREFIX: &str = "carpt-";
/// Default bound for one external command.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);
static REAPED: std::sync::Once = std::sync::Once::new();

/// Return true (after printing why) when netns tests must not run here.
pub fn skip() -> bool {
    let enabled = nix::unistd::geteuid().is_root()
        && std::env::var("CARPD_NETNS_TESTS").is_ok_and(|v| v == "1");
    if !enabled {
        eprintln!("skipped: needs root and CARPD_NETNS_TESTS=1");
    }
    !enabled
}

/// Run `cmd` to completion, killing it after `timeout`.
///
/// Returns the output; `status` is a failure when the command timed out.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    // Drain pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let out_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_t = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                break child.wait().expect("wait after kill");
            }
        }
    };
    Output {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Run `argv` and panic with its stderr unless it succeeds; return stdout.
pub fn run_ok(argv: &[&str]) -> String {
    let out = run_timeout(Command::new(argv[0]).args(&argv[1..]), CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "{argv:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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

/// One host of the lab.
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

/// N hosts on one bridge; everything is deleted on drop.
pub struct Lab {
    /// The switch namespace holding `br0` and the host ports.
    pub switch: String,
    /// The hosts, in creation order.
    pub hosts: Vec<Host>,
    namespaces: Vec<String>,
    children: Mutex<Vec<Child>>,
    /// Scratch directory for logs, sockets, scripts; removed on drop.
    dir: tempfile::TempDir,
    /// Number of LANs (bridges `br0`, `br1`, ...).
    lans: usize,
}

impl Lab {
    /// Build a lab of `n` hosts. `tag` (a few letters) names the test in
    /// the namespace names.
    pub fn new(tag: &str, n: usize) -> Lab {
        assert!(
            !tag.is_empty() && tag.len() <= 8 && tag.bytes().all(|b| b.is_ascii_alphanumeric()),
            "tag must be 1-8 alphanumerics"
        );
        REAPED.call_once(reap_stale);
        let id = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NS_PREFIX}{tag}-{}-{id}", std::process::id());
        let mut lab = Lab {
            switch: format!("{base}-sw"),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            children: Mutex::new(Vec::new()),
            dir: tempfile::Builder::new()
                .prefix("carpt-")
                .tempdir()
                .expect("temp dir"),
            lans: 1,
        };
        let sw = lab.switch.clone();
        lab.add_ns(&sw);
        lab.sysctl(&sw, "net.ipv6.conf.all.disable_ipv6", "1");
        lab.sysctl(&sw, "net.ipv6.conf.default.disable_ipv6", "1");
        // Snooping off: every multicast frame floods, so delivery of
        // 224.0.0.18 / ff02::12 does not depend on MLD/IGMP timing.
        run_ok(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        run_ok(&["ip", "-n", &sw, "link", "set", "br0", "up"]);
        for i in 0..n {
            let host = lab.add_host(&base, i);
            lab.hosts.push(host);
        }
        for i in 0..lab.hosts.len() {
            let ll = lab.wait_link_local(&lab.hosts[i].ns);
            lab.hosts[i].link_local = ll;
        }
        lab
    }

    fn add_ns(&mut self, ns: &str) {
        run_ok(&["ip", "netns", "add", ns]);
        self.namespaces.push(ns.to_owned());
        run_ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    }

    fn add_host(&mut self, base: &str, i: usize) -> Host {
        let ns = format!("{base}-h{i}");
        let port = format!("p{i}");
        self.add_ns(&ns);
        // Before eth0 exists, so it inherits "no DAD" from default.
        for key in ["all", "default"] {
            self.sysctl(&ns, &format!("net.ipv6.conf.{key}.accept_dad"), "0");
            self.sysctl(&ns, &format!("net.ipv6.conf.{key}.dad_transmits"), "0");
        }
        let sw = self.switch.clone();
        run_ok(&[
            "ip", "-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
            &sw,
        ]);
        run_ok(&["ip", "-n", &sw, "link", "set", &port, "master", "br0", "up"]);
        run_ok(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        let last = u8::try_from(10 + i).expect("fewer than 245 hosts");
        let v4 = Ipv4Addr::new(192, 0, 2, last);
        // Same digits as the IPv4 host part, read as hex: 2001:db8::10, ::11, ...
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(last) - 10);
        run_ok(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            "eth0",
        ]);
        run_ok(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        let link = self.link_json(&ns, "eth0");
        let ifindex = link["ifindex"].as_u64().expect("ifindex") as u32;
        let mac = parse_mac(link["address"].as_str().expect("address"));
        Host {
            ns,
            ifname: "eth0".to_owned(),
            ifindex,
            mac,
            v4,
            v6,
            link_local: Ipv6Addr::UNSPECIFIED,
            port,
        }
    }

    /// Wait until `eth0` in `ns` has a usable link-local and return it.
    fn wait_link_local(&self, ns: &str) -> Ipv6Addr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .addrs(ns, "eth0")
                .into_iter()
                .find(|a| a.family == "inet6" && a.local.starts_with("fe80") && !a.tentative);
            if let Some(a) = found {
                return a.local.parse().expect("link-local parses");
            }
            assert!(Instant::now() < deadline, "no link-local on {ns} eth0");
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

    /// The lab's scratch directory (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Return `name` inside the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Add another LAN: a bridge `brN` in the switch namespace and an
    /// interface `ethN` in each of `hosts`, with 203.0.113.(10+i)/24 for
    /// host `i` (only the second LAN; a third would reuse that range, so it
    /// is refused). Returns the new interface name.
    pub fn add_lan(&mut self, hosts: &[usize]) -> String {
        assert_eq!(self.lans, 1, "one extra LAN at most");
        let n = self.lans;
        self.lans += 1;
        let br = format!("br{n}");
        let ifname = format!("eth{n}");
        let sw = self.switch.clone();
        run_ok(&[
            "ip",
            "-n",
            &sw,
            "link",
            "add",
            &br,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        run_ok(&["ip", "-n", &sw, "link", "set", &br, "up"]);
        for &i in hosts {
            let ns = self.hosts[i].ns.clone();
            let port = format!("p{i}l{n}");
            run_ok(&[
                "ip", "-n", &ns, "link", "add", &ifname, "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            run_ok(&["ip", "-n", &sw, "link", "set", &port, "master", &br, "up"]);
            run_ok(&["ip", "-n", &ns, "link", "set", &ifname, "up"]);
            let addr = format!("203.0.113.{}/24", 10 + i);
            run_ok(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &ifname]);
        }
        ifname
    }

    /// Start a long-running `argv` inside `ns` with stdout and stderr
    /// appended to `log`; it is killed when the lab drops. Returns its pid
    /// (`ip netns exec` execs the program, so the pid is the program's).
    pub fn spawn_logged(&self, ns: &str, argv: &[&str], log: &Path) -> u32 {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log fd"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {ns}: {e}"));
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        pid
    }

    /// Send `sig` to spawned child `pid` (only children of this lab).
    pub fn signal(&self, pid: u32, sig: nix::sys::signal::Signal) {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            children.iter().any(|c| c.id() == pid),
            "pid {pid} is not a child of this lab"
        );
        let raw = i32::try_from(pid).expect("pid fits i32");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), sig);
    }

    /// Return true if some interface in `ns` holds address `addr`.
    pub fn has_addr(&self, ns: &str, addr: &str) -> bool {
        let out = run_ok(&["ip", "-n", ns, "-j", "addr", "show"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j addr json");
        v.as_array().into_iter().flatten().any(|link| {
            link["addr_info"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|a| a["local"].as_str() == Some(addr))
        })
    }

    /// Return the neighbour entry's link-layer address for `addr` in `ns`.
    pub fn neigh_lladdr(&self, ns: &str, addr: &str) -> Option<String> {
        let out = run_ok(&["ip", "-n", ns, "-j", "neigh", "show", "to", addr]);
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v.as_array()?
            .iter()
            .find_map(|n| n["lladdr"].as_str().map(str::to_owned))
    }

    /// Set `ifname` in `ns` up or down (lab namespaces only).
    pub fn link_set(&self, ns: &str, ifname: &str, up: bool) {
        assert!(ns.starts_with(NS_PREFIX), "link change outside the lab");
        run_ok(&[
            "ip",
            "-n",
            ns,
            "link",
            "set",
            ifname,
            if up { "up" } else { "down" },
        ]);
    }

    /// Write a sysctl inside `ns` (never in the root namespace).
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        assert!(ns.starts_with(NS_PREFIX), "sysctl outside the lab");
        run_ok(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ]);
    }

    /// Run `argv` inside `ns` (`ip netns exec`) under [`CMD_TIMEOUT`].
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Output {
        run_timeout(
            Command::new("ip").args(["netns", "exec", ns]).args(argv),
            CMD_TIMEOUT,
        )
    }

    /// Like [`Lab::exec`], panicking unless it succeeds; return stdout.
    pub fn exec_ok(&self, ns: &str, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        run_ok(&full)
    }

    /// Start a long-running `argv` inside `ns`; it is killed when the lab
    /// drops. Returns its pid.
    pub fn spawn(&self, ns: &str, argv: &[&str]) -> u32 {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?} in {ns}: {e}"));
        let pid = child.id();
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(child);
        pid
    }

    /// Wait up to `timeout` for spawned child `pid` to exit on its own and
    /// return its output; `None` if it is still running (it stays owned by
    /// the lab and is killed on drop).
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

    /// Return `ip -j link show dev` of `ifname` in `ns`.
    pub fn link_json(&self, ns: &str, ifname: &str) -> serde_json::Value {
        let out = run_ok(&["ip", "-n", ns, "-j", "link", "show", "dev", ifname]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link json");
        v.get(0).cloned().expect("one link")
    }

    /// Return `ip -j addr show dev` of `ifname` in `ns`, raw.
    pub fn addr_json(&self, ns: &str, ifname: &str) -> serde_json::Value {
        let out = run_ok(&["ip", "-n", ns, "-j", "addr", "show", "dev", ifname]);
        serde_json::from_str(&out).expect("ip -j addr json")
    }

    /// Return the addresses of `ifname` in `ns`, flattened.
    pub fn addrs(&self, ns: &str, ifname: &str) -> Vec<Addr> {
        let v = self.addr_json(ns, ifname);
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
        out
    }
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

impl Drop for Lab {
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
            let out = run_timeout(Command::new("ip").args(["netns", "del", ns]), CMD_TIMEOUT);
            if !out.status.success() {
                eprintln!(
                    "cleanup: ip netns del {ns}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

impl Lab {
    /// Print every `*.log` in the scratch directory (called when a test fails).
    pub fn dump_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
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

/// Delete namespaces left behind by test processes that no longer exist
/// (a SIGKILLed test run cannot clean up after itself).
fn reap_stale() {
    let out = run_timeout(Command::new("ip").args(["netns", "list"]), CMD_TIMEOUT);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        // carpt-<tag>-<pid>-<id>-<role>
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = run_timeout(Command::new("ip").args(["netns", "del", name]), CMD_TIMEOUT);
        }
    }
}

/// Parse "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next().expect("6 octets"), 16).expect("hex octet");
    }
    mac
}
