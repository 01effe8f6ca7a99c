//! `carpd lab`: a demonstration LAN in network namespaces.
//!
//! Three carpd nodes and a client on one bridge, documentation addresses
//! only (198.51.100.0/24, 2001:db8::/64). The client pings the virtual
//! address every 10 ms while the lab crashes the master (kill -9), restarts
//! it (preemption), and stops it cleanly (SIGTERM, bow-out), measuring the
//! client's outage each time. Everything is removed again on exit, Ctrl-C
//! included: namespaces and processes are owned by a guard whose `Drop`
//! cleans up.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::control::types::{Reply, Request, VhostView};

/// Options of `carpd lab`.
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// advbase of the lab's vhost (seconds).
    #[arg(long, default_value_t = 1)]
    pub advbase: u8,
    /// Keep the lab running at the end until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

const VIP: &str = "198.51.100.50";
const VIP6: &str = "2001:db8::50";
const NODES: [(&str, &str, u8); 3] = [
    ("a", "198.51.100.11", 0),
    ("b", "198.51.100.12", 50),
    ("c", "198.51.100.13", 100),
];
const CLIENT: &str = "198.51.100.100";
const PING_INTERVAL: Duration = Duration::from_millis(10);

/// Namespaces, processes and files of one lab; all removed on drop.
struct Topology {
    tag: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dir: PathBuf,
}

impl Topology {
    fn ns(&self, name: &str) -> String {
        format!("carplab-{}-{name}", self.tag)
    }

    fn build() -> anyhow::Result<Topology> {
        let tag = std::process::id().to_string();
        let dir = std::env::temp_dir().join(format!("carplab-{tag}"));
        std::fs::create_dir_all(&dir)?;
        let mut topo = Topology {
            tag,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        };
        let sw = topo.ns("sw");
        topo.add_ns(&sw)?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        let hosts: Vec<(&str, &str)> = NODES
            .iter()
            .map(|(n, a, _)| (*n, *a))
            .chain([("client", CLIENT)])
            .collect();
        for (name, addr) in hosts {
            let ns = topo.ns(name);
            topo.add_ns(&ns)?;
            let port = format!("p-{name}");
            ip(&[
                "-n", &sw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0", "up"])?;
            for key in [
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ] {
                run_cmd(Command::new("ip").args(["netns", "exec", &ns, "sysctl", "-qw", key]))?;
            }
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            let last = addr.rsplit('.').next().unwrap_or("1");
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("2001:db8::{last}/64"),
                "dev",
                "eth0",
                "nodad",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(topo)
    }

    fn add_ns(&mut self, ns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_string());
        Ok(())
    }

    fn control(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.sock"))
    }

    fn start_carpd(&mut self, node: &str, advskew: u8, advbase: u8) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the carpd executable")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{node}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .arg(exe)
            .args(["run", "--preempt", "--log-level", "6", "--control"])
            .arg(self.control(node))
            // The lab's own state (address record, maintenance flag), not the host's.
            .arg("--state-dir")
            .arg(self.dir.join(format!("{node}-state")))
            .args([
                "carpdev",
                "eth0",
                "vhid",
                "1",
                "advbase",
                &advbase.to_string(),
            ])
            .args(["advskew", &advskew.to_string(), "pass", "lab-secret"])
            .args([format!("{VIP}/24"), format!("{VIP6}/64")])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start carpd")?;
        self.children.retain(|(n, _)| n != node);
        self.children.push((node.to_string(), child));
        Ok(())
    }

    fn signal(&mut self, node: &str, sig: nix::sys::signal::Signal) {
        if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == node) {
            // `ip netns exec` execs carpd, so the child's pid is carpd's.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        for (_, child) in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && !matches!(child.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run_cmd(Command::new("ip").args(args))
}

/// Ask a node's carpd for its status; `None` while it is not answering.
fn status(path: &Path) -> Option<Vec<VhostView>> {
    let stream = UnixStream::connect(path).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let mut line = serde_json::to_string(&Request::Status).ok()?;
    line.push('\n');
    writer.write_all(line.as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).ok()?;
    serde_json::from_str::<Reply>(&reply).ok()?.vhosts
}

/// The client's pinger: which probes were answered, by sequence number, and when.
struct Pinger {
    child: Child,
    probes: Arc<Mutex<Vec<Probe>>>,
}

#[derive(Clone, Copy)]
struct Probe {
    seq: u64,
    /// Reception time (ping -D) of an answered probe.
    answered_at: Option<f64>,
}

impl Pinger {
    fn start(ns: &str) -> anyhow::Result<Pinger> {
        let interval = format!("{}", PING_INTERVAL.as_secs_f64());
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-n", "-D", "-O", "-W", "0.2", "-i", &interval, VIP,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ping (install iputils-ping)")?;
        let stdout = child.stdout.take().context("ping has no stdout")?;
        let probes = Arc::new(Mutex::new(Vec::new()));
        let sink = probes.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if std::env::var_os("CARPD_LAB_PING_LOG").is_some() {
                    eprintln!("ping: {line}");
                }
                if let (Some(probe), Ok(mut v)) = (parse_ping_line(&line), sink.lock()) {
                    v.push(probe);
                }
            }
        });
        Ok(Pinger { child, probes })
    }

    fn mark(&self) -> u64 {
        self.probes
            .lock()
            .map(|v| v.iter().map(|p| p.seq).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Return the longest time without an answer after probe `from` (the gap
    /// between two consecutive answers, less one probe interval) and the
    /// number of probes lost.
    fn outage_since(&self, from: u64) -> (Duration, u64) {
        let Ok(v) = self.probes.lock() else {
            return (Duration::ZERO, 0);
        };
        let mut answered: Vec<(u64, f64)> = v
            .iter()
            .filter_map(|p| p.answered_at.map(|t| (p.seq, t)))
            .collect();
        answered.sort_by_key(|(s, _)| *s);
        answered.dedup_by_key(|(s, _)| *s);
        let baseline = answered.iter().rev().find(|(s, _)| *s < from).copied();
        let after: Vec<(u64, f64)> = answered
            .iter()
            .filter(|(s, _)| *s >= from)
            .copied()
            .collect();
        let mut longest = 0.0f64;
        let mut prev = baseline.map(|(_, t)| t);
        for (_, t) in &after {
            if let Some(p) = prev {
                longest = longest.max(t - p - PING_INTERVAL.as_secs_f64());
            }
            prev = Some(*t);
        }
        let sent_last = v.iter().map(|p| p.seq).max().unwrap_or(from);
        let lost = (from..=sent_last)
            .filter(|s| after.binary_search_by_key(s, |(q, _)| *q).is_err())
            .count() as u64;
        (Duration::from_secs_f64(longest.max(0.0)), lost)
    }
}

/// Parse a line of `ping -D -O`: `[1700000000.123456] 64 bytes from ...: icmp_seq=12 ...`
/// or `[1700000000.123456] no answer yet for icmp_seq=13`.
fn parse_ping_line(line: &str) -> Option<Probe> {
    let seq = line
        .split("icmp_seq=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let stamp = line
        .strip_prefix('[')?
        .split(']')
        .next()?
        .parse::<f64>()
        .ok();
    let answered_at = if line.contains("bytes from") {
        stamp
    } else {
        None
    };
    Some(Probe { seq, answered_at })
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; cleaning up");
    }
    Ok(())
}

fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Wait until exactly one live node is MASTER; return it and how long it took.
fn wait_master(
    topo: &Topology,
    nodes: &[&str],
    timeout: Duration,
) -> anyhow::Result<(String, Duration)> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        check_interrupt()?;
        let masters: Vec<&str> = nodes
            .iter()
            .filter(|n| {
                status(&topo.control(n)).is_some_and(|v| v.iter().any(|s| s.state == "MASTER"))
            })
            .copied()
            .collect();
        if masters.len() == 1 {
            return Ok((masters[0].to_string(), start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("no single MASTER among {nodes:?} after {timeout:?}")
}

fn show(topo: &Topology, nodes: &[&str]) {
    for n in nodes {
        match status(&topo.control(n)).as_deref() {
            Some([v, ..]) => println!(
                "    node {n}: {:<7} advskew {:>3}  since {:>5.1}s ({}), last master seen {}",
                v.state,
                v.advskew,
                v.since_secs,
                v.cause,
                v.last_master.as_deref().unwrap_or("-")
            ),
            _ => println!("    node {n}: not running"),
        }
    }
}

/// Run the lab: build, demonstrate, summarise, clean up.
pub fn run(args: LabArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and needs root (try: sudo carpd lab)");
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = nix::sys::signal::SigHandler::Handler(on_interrupt);
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGINT, handler);
        let _ = nix::sys::signal::signal(nix::sys::signal::Signal::SIGTERM, handler);
    }
    println!("== carpd lab: 3 carpd nodes and a client on one bridge, in network namespaces");
    let mut topo = Topology::build()?;
    println!(
        "   namespaces carplab-{}-{{sw,a,b,c,client}}, LAN 198.51.100.0/24 and 2001:db8::/64",
        topo.tag
    );
    println!(
        "   virtual addresses {VIP}/24 and {VIP6}/64 on vhid 1 (virtual MAC 00:00:5e:00:01:01)"
    );
    for (name, _, skew) in NODES {
        topo.start_carpd(name, skew, args.advbase)?;
        println!("   started carpd on node {name} (advskew {skew}, preempt on)");
    }
    let names: Vec<&str> = NODES.iter().map(|(n, _, _)| *n).collect();
    let limit = Duration::from_secs(10 + 4 * u64::from(args.advbase));

    println!("\n== 1. election");
    let (master, took) = wait_master(&topo, &names, limit)?;
    println!(
        "   node {master} is MASTER after {:.2}s (master-down is 3 x advbase)",
        took.as_secs_f64()
    );
    show(&topo, &names);

    println!(
        "\n== 2. the client pings {VIP} every {} ms",
        PING_INTERVAL.as_millis()
    );
    let pinger = Pinger::start(&topo.ns("client"))?;
    sleep(Duration::from_secs(2))?;
    let (_, lost) = pinger.outage_since(1);
    println!("   {} probes sent, {lost} lost", pinger.mark());

    let mut summary = Vec::new();
    println!("\n== 3. the master (node {master}) dies: kill -9 and its link goes dark");
    let mark = pinger.mark();
    let t = Instant::now();
    topo.signal(&master, nix::sys::signal::Signal::SIGKILL);
    // A killed process leaves its addresses behind; a dead host answers nothing.
    ip(&["-n", &topo.ns(&master), "link", "set", "eth0", "down"])?;
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != master).collect();
    let (new_master, _) = wait_master(&topo, &rest, limit)?;
    let took = t.elapsed();
    sleep(Duration::from_millis(500))?;
    let (outage, lost) = pinger.outage_since(mark);
    println!(
        "   node {new_master} took over after {:.2}s; client outage {} ms ({lost} probes lost)",
        took.as_secs_f64(),
        outage.as_millis()
    );
    show(&topo, &names);
    summary.push(("crash (kill -9)", outage, lost));

    println!("\n== 4. node {master} boots again: carpd clears the stale address, then preempts");
    let mark = pinger.mark();
    let skew = NODES
        .iter()
        .find(|(n, _, _)| *n == master)
        .map_or(0, |n| n.2);
    // As after a reboot, carpd starts before the link is up, so the stale
    // address is gone before the host can answer (or announce) anything.
    topo.start_carpd(&master, skew, args.advbase)?;
    let started = Instant::now();
    while status(&topo.control(&master)).is_none() {
        check_interrupt()?;
        if started.elapsed() > limit {
            bail!("carpd on node {master} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ip(&["-n", &topo.ns(&master), "link", "set", "eth0", "up"])?;
    let start = Instant::now();
    while start.elapsed() < limit {
        check_interrupt()?;
        if status(&topo.control(&master)).is_some_and(|v| v.iter().any(|s| s.state == "MASTER")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (back, _) = wait_master(&topo, &names, limit)?;
    sleep(Duration::from_millis(500))?;
    let (outage, lost) = pinger.outage_since(mark);
    println!(
        "   node {back} is MASTER again; client outage {} ms ({lost} probes lost)",
        outage.as_millis()
    );
    show(&topo, &names);
    summary.push(("preemption", outage, lost));

    println!("\n== 5. SIGTERM the master (node {back}): it bows out (advbase 255, advskew 255)");
    let mark = pinger.mark();
    let t = Instant::now();
    topo.signal(&back, nix::sys::signal::Signal::SIGTERM);
    let rest: Vec<&str> = names.iter().copied().filter(|n| *n != back).collect();
    let (next, _) = wait_master(&topo, &rest, limit)?;
    let took = t.elapsed();
    sleep(Duration::from_millis(500))?;
    let (outage, lost) = pinger.outage_since(mark);
    println!(
        "   node {next} took over after {:.3}s; client outage {} ms ({lost} probes lost)",
        took.as_secs_f64(),
        outage.as_millis()
    );
    show(&topo, &names);
    summary.push(("planned stop (SIGTERM)", outage, lost));

    println!(
        "\n== summary (advbase {}s; protocol bound for a crash: 3 x interval of the next node)",
        args.advbase
    );
    for (what, outage, lost) in &summary {
        println!(
            "   {what:<24} client outage {:>6} ms   probes lost {lost:>4}",
            outage.as_millis()
        );
    }
    if args.keep {
        println!(
            "\n   lab kept running; press Ctrl-C to remove it (logs in {})",
            topo.dir.display()
        );
        while !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(pinger);
    drop(topo);
    println!("\n== cleaned up: namespaces removed, daemons stopped");
    Ok(())
}
