//! Chaos soak (issue "Hardening", item "Chaos soak"): three carpd nodes
//! (advbase 1, advskew 0/50/100, `--preempt`, one vhid, one IPv4 VIP) and a
//! client on one bridge, under random faults from a seeded RNG for a
//! configurable time, while the whole system is recorded continuously.
//!
//! Faults, one at a time, each held for a random time and then undone:
//! - `kill9`: `kill -9` a daemon, restart it later (same state directory);
//! - `stop`: SIGSTOP, later SIGCONT (a stalled master when it hits A);
//! - `flap`: `ip link set eth0 down`, later up, in a node's namespace;
//! - `partition`: the nodes split in two groups, the client on one side
//!   (nftables `bridge` forward rules in the switch namespace, so the
//!   bridge still learns where frames come from, as a real switch would);
//! - `isolate`: bridge port isolation of two or three node ports (those
//!   nodes cannot hear each other, but everybody hears the others and the
//!   client hears everyone: a non-transitive split);
//! - `netem`: loss, duplication (and, when the kernel has `sch_netem`,
//!   delay and reordering) on a node's link. Without `sch_netem` (no module
//!   in the development VM's kernel) it is emulated with nftables: random
//!   loss of frames from the node (netdev ingress of its bridge port) and to
//!   it (netdev ingress of its `eth0`), and `dup` on its `eth0` egress; delay
//!   and reordering are then not injected (the run says so).
//!
//! Recorded every 50 ms per node: the vhid's state straight from the control
//! socket (`Request::Status`), and whether the node's namespace holds the VIP
//! (`ip -n NS -j addr`). The client pings the VIP 20 times a second
//! (`ping -D`); tcpdump in the client namespace and in the switch namespace
//! (which port a frame came in on) records every gratuitous ARP for the VIP.
//!
//! Pass criteria (evaluated after the run; all bounds include `SLACK`):
//! 1. two or more MASTERs never last longer than master-down + one interval
//!    after the fault that caused them was undone ("after a heal"), or after
//!    they appeared outside a fault;
//! 2. no MASTER at all never lasts longer than master-down + one interval;
//! 3. no running node holds the VIP while not MASTER for more than 300 ms
//!    (plus one sampling period); a daemon killed with -9 leaves its VIP in
//!    its namespace until it is restarted (documented): counted, not failed;
//! 4. no daemon exits unless the harness killed it, every daemon stops
//!    cleanly (exit 0) with SIGTERM at the end, and no log says "panicked";
//! 5. after every fault whose recovery left two MASTERs (a heal, a resumed
//!    stalled master, ...), the last gratuitous ARP for the VIP on the wire
//!    since the dual MASTER began comes from the surviving MASTER, and the
//!    client sees one of its announcements (time stamps allow 0.5 s of slack
//!    for the 50 ms polling and the heal commands);
//!    otherwise the switch keeps sending the virtual MAC to the node that
//!    yielded (`CARPD_SOAK_LENIENT_GARP=1` only prints these, for bisecting);
//! 6. after every fault the lab settles (one MASTER, node A, the only holder
//!    of the VIP, the others BACKUP) within 15 s.
//!
//! ```sh
//! CARPD_NETNS_TESTS=1 cargo test -p carpd --test netns_chaos -- --nocapture   # 60 s (CI runs 300 s)
//! CARPD_SOAK_SECS=300 CARPD_NETNS_TESTS=1 cargo test -p carpd --test netns_chaos -- --nocapture
//! CARPD_SOAK_SECS=3600 ...            # the long run
//! CARPD_SOAK_SEED=42 ...              # replay a schedule (the seed is printed)
//! CARPD_SOAK_LENIENT_GARP=1 ...       # criterion 5 is only printed
//! CARPD_SOAK_ARTIFACTS=/tmp/soak ...  # keep the daemons' logs and the ARP captures
//! ```

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use carpd::control::types::Request;
use common::daemon::{
    Carpd, Pinger, Record, master_down, query_within, wait_single_master, wall_now,
};
use common::{Lab, run_timeout};
use nix::sys::signal::Signal;

/// How long a heal command may take effect before the harness notes its end (s).
const HEAL_SLACK: f64 = 0.5;
const VHID: u8 = 1;
const VIP: &str = "192.0.2.50";
const PASS: &str = "chaos-soak";
const SKEWS: [u8; 3] = [0, 50, 100];
const NAMES: [&str; 3] = ["a", "b", "c"];
/// Host index of the client.
const CLIENT: usize = 3;
/// How often each node is sampled.
const SAMPLE: Duration = Duration::from_millis(50);
/// Slack for process scheduling on a busy 2-core machine (seconds).
const SLACK: f64 = 1.0;
/// A VIP on a non-MASTER: 300 ms settling (bow-out grace) + one sample.
const VIP_SLACK: f64 = 0.350;
/// Bound for the lab to settle after a fault is undone.
const SETTLE_MAX: Duration = Duration::from_secs(15);

/// One advertisement interval of the slowest node (advskew 100), seconds.
fn interval_s() -> f64 {
    1.0 + f64::from(SKEWS[2]) / 256.0
}

/// Criteria 1 and 2: master-down of the slowest node + one interval + slack.
fn protocol_bound() -> f64 {
    master_down(1, u32::from(SKEWS[2])).as_secs_f64() + interval_s() + SLACK
}

// ===== a small seeded RNG (splitmix64; no dependency, same on every platform) =====

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn secs(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

// ===== what is recorded =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    Stopped,
    Dead,
    Starting,
}

/// One poll of one node.
#[derive(Debug, Clone)]
struct Sample {
    /// Seconds since the soak started.
    t: f64,
    life: Life,
    /// The vhid's state from the control socket; `None` if not asked
    /// (not running) or no answer.
    state: Option<String>,
    /// Whether the namespace holds the VIP; `None` if `ip` failed.
    vip: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill9,
    Stop,
    Flap,
    Partition,
    Isolate,
    Netem,
}

const KINDS: [Kind; 6] = [
    Kind::Kill9,
    Kind::Stop,
    Kind::Flap,
    Kind::Partition,
    Kind::Isolate,
    Kind::Netem,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill9",
            Kind::Stop => "stop",
            Kind::Flap => "flap",
            Kind::Partition => "partition",
            Kind::Isolate => "isolate",
            Kind::Netem => "netem",
        }
    }
    /// Range of the hold time, seconds.
    fn hold(self) -> (f64, f64) {
        match self {
            Kind::Kill9 => (0.5, 5.0),
            Kind::Stop => (0.5, 6.0),
            Kind::Flap => (0.3, 6.0),
            Kind::Partition | Kind::Isolate => (1.0, 8.0),
            Kind::Netem => (3.0, 10.0),
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    what: String,
    /// Applied (seconds since the soak started).
    start: f64,
    /// Undone.
    end: f64,
    /// The lab settled again (`None`: it did not within `SETTLE_MAX`).
    settled: Option<f64>,
}

impl Fault {
    fn until(&self) -> f64 {
        self.settled.unwrap_or(self.end + SETTLE_MAX.as_secs_f64())
    }
}

/// Shared between the injector and the samplers.
struct Shared {
    t0: Instant,
    /// Per node: life and an epoch bumped at every change (a sample that
    /// straddles a change is thrown away).
    lives: Mutex<[(Life, u32); 3]>,
    samples: [Mutex<Vec<Sample>>; 3],
    stop: AtomicBool,
}

impl Shared {
    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
    fn life(&self, i: usize) -> (Life, u32) {
        self.lives.lock().unwrap_or_else(|p| p.into_inner())[i]
    }
    fn set_life(&self, i: usize, life: Life) {
        let mut l = self.lives.lock().unwrap_or_else(|p| p.into_inner());
        l[i] = (life, l[i].1 + 1);
    }
    fn latest(&self, i: usize) -> Option<Sample> {
        self.samples[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
    }
}

/// Sets the stop flag when dropped, also while unwinding, so the scoped
/// sampler threads end and the scope can be left.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn vip_held(ns: &str) -> Option<bool> {
    let out = run_timeout(
        Command::new("ip").args(["-n", ns, "-j", "addr", "show"]),
        Duration::from_secs(2),
    );
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(v.as_array().into_iter().flatten().any(|link| {
        link["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["local"].as_str() == Some(VIP))
    }))
}

/// Poll node `i` every `SAMPLE` until told to stop.
fn sampler(shared: &Shared, i: usize, ns: &str, sock: &Path) {
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let (life, epoch) = shared.life(i);
        let t = shared.now();
        let state = if life == Life::Running {
            query_within(sock, &Request::Status, Duration::from_millis(300))
                .and_then(|r| r.vhosts)
                .and_then(|v| v.into_iter().find(|v| v.vhid == VHID))
                .map(|v| v.state)
        } else {
            None
        };
        let vip = vip_held(ns);
        if shared.life(i).1 == epoch {
            shared.samples[i]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Sample {
                    t,
                    life,
                    state,
                    vip,
                });
        }
        next += SAMPLE;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

// ===== the lab =====

fn words(advskew: u8) -> Vec<String> {
    [
        "--preempt",
        "carpdev",
        "eth0",
        "vhid",
        &VHID.to_string(),
        "advbase",
        "1",
        "advskew",
        &advskew.to_string(),
        "pass",
        PASS,
        &format!("{VIP}/24"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Start tcpdump for ARP in `ns` writing to `file`; wait until it listens.
fn capture(lab: &Lab, ns: &str, args: &[&str], file: &Path) -> u32 {
    let mut argv = vec!["tcpdump", "-n", "-tt", "-l", "-U"];
    argv.extend_from_slice(args);
    argv.push("arp");
    let pid = lab.spawn_logged(ns, &argv, file);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains("listening on") {
            return pid;
        }
        assert!(Instant::now() < deadline, "tcpdump in {ns} never listened");
        thread::sleep(Duration::from_millis(20));
    }
}

fn netem_available(lab: &Lab, ns: &str) -> bool {
    let ok = lab
        .exec(
            ns,
            &[
                "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms",
            ],
        )
        .status
        .success();
    if ok {
        lab.exec_ok(ns, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
    }
    ok
}

fn nft(lab: &Lab, ns: &str, rule: &str) {
    let argv: Vec<&str> = std::iter::once("nft")
        .chain(rule.split(' ').filter(|w| !w.is_empty()))
        .collect();
    lab.exec_ok(ns, &argv);
}

/// `{ "p0", "p1" }`
fn port_set(lab: &Lab, hosts: &[usize]) -> String {
    let names: Vec<String> = hosts
        .iter()
        .map(|&h| format!("\"{}\"", lab.host(h).port))
        .collect();
    format!("{{ {} }}", names.join(", "))
}

fn node_list(nodes: &[usize]) -> String {
    let names: Vec<&str> = nodes.iter().map(|&i| NAMES[i]).collect();
    names.join(",")
}

/// The injector's side of the run.
struct Injector<'a> {
    lab: &'a Lab,
    shared: &'a Shared,
    nodes: Vec<Carpd>,
    rng: Rng,
    netem: bool,
    soak: f64,
    faults: Vec<Fault>,
    failures: Vec<String>,
}

impl Injector<'_> {
    fn sleep_s(&self, s: f64) {
        thread::sleep(Duration::from_secs_f64(s.max(0.0)));
    }

    /// Criterion 4 while running: a daemon that exited on its own.
    fn check_crashes(&mut self) -> bool {
        let mut crashed = false;
        for (i, name) in NAMES.iter().enumerate() {
            let (life, _) = self.shared.life(i);
            if !matches!(life, Life::Running | Life::Stopped) {
                continue;
            }
            if let Some(out) = self.lab.wait_child(self.nodes[i].pid, Duration::ZERO) {
                self.failures.push(format!(
                    "criterion 4: {name} exited without being killed ({}) at t={:.2}s",
                    out.status,
                    self.shared.now()
                ));
                self.shared.set_life(i, Life::Dead);
                crashed = true;
            }
        }
        crashed
    }

    /// Pick the target of a single-node fault: mostly the master.
    fn target(&mut self) -> usize {
        if self.rng.chance(0.6) {
            0
        } else {
            self.rng.below(3)
        }
    }

    fn run(&mut self) {
        let mut round: Vec<Kind> = Vec::new();
        loop {
            if self.check_crashes() {
                return;
            }
            let remaining = self.soak - self.shared.now();
            if remaining < 6.0 {
                return;
            }
            if round.is_empty() {
                // Every kind once per round, in a random order, so even a
                // short run injects each kind.
                round = KINDS.to_vec();
                for i in (1..round.len()).rev() {
                    let j = self.rng.below(i + 1);
                    round.swap(i, j);
                }
            }
            let kind = round.pop().expect("non-empty round");
            let (lo, hi) = kind.hold();
            let hold = self.rng.secs(lo, hi).min((remaining - 5.0).max(lo));
            let mut fault = self.inject(kind, hold);
            fault.settled = self.settle(fault.end);
            if fault.settled.is_none() {
                self.failures.push(format!(
                    "criterion 6: no single MASTER (A) with the VIP within {SETTLE_MAX:?} after {} {} ended at t={:.2}s",
                    kind.name(),
                    fault.what,
                    fault.end
                ));
            }
            println!(
                "t={:7.2}s {:9} {:32} held {:5.2}s, settled {}",
                fault.start,
                kind.name(),
                fault.what,
                fault.end - fault.start,
                fault.settled.map_or("NEVER".to_owned(), |s| format!(
                    "{:.2}s after",
                    s - fault.end
                ))
            );
            self.faults.push(fault);
            let gap = self.rng.secs(0.5, 2.0);
            self.sleep_s(gap);
        }
    }

    fn inject(&mut self, kind: Kind, hold: f64) -> Fault {
        let lab = self.lab;
        let sw = lab.switch.clone();
        let (what, start, end);
        match kind {
            Kind::Kill9 => {
                let i = self.target();
                what = NAMES[i].to_owned();
                self.shared.set_life(i, Life::Dead);
                start = self.shared.now();
                lab.kill(&self.nodes[i], Signal::SIGKILL);
                if lab
                    .wait_exit(&self.nodes[i], Duration::from_secs(5))
                    .is_some()
                {
                    self.failures.push(format!(
                        "criterion 4: {} exited with a status, not by SIGKILL",
                        NAMES[i]
                    ));
                }
                self.sleep_s(hold);
                self.shared.set_life(i, Life::Starting);
                lab.start(&mut self.nodes[i]);
                self.shared.set_life(i, Life::Running);
                end = self.shared.now();
            }
            Kind::Stop => {
                let i = self.target();
                what = NAMES[i].to_owned();
                self.shared.set_life(i, Life::Stopped);
                start = self.shared.now();
                lab.kill(&self.nodes[i], Signal::SIGSTOP);
                self.sleep_s(hold);
                lab.kill(&self.nodes[i], Signal::SIGCONT);
                end = self.shared.now();
                self.shared.set_life(i, Life::Running);
            }
            Kind::Flap => {
                let i = self.target();
                what = NAMES[i].to_owned();
                start = self.shared.now();
                lab.link_set(lab.ns(i), "eth0", false);
                self.sleep_s(hold);
                lab.link_set(lab.ns(i), "eth0", true);
                end = self.shared.now();
            }
            Kind::Partition => {
                // A non-empty proper subset of the nodes on one side.
                let mask = 1 + self.rng.below(6);
                let mut one: Vec<usize> = (0..3).filter(|i| mask & (1 << i) != 0).collect();
                let mut two: Vec<usize> = (0..3).filter(|i| mask & (1 << i) == 0).collect();
                let client_one = self.rng.chance(0.5);
                what = format!(
                    "{{{}{}}}|{{{}{}}}",
                    node_list(&one),
                    if client_one { ",client" } else { "" },
                    node_list(&two),
                    if client_one { "" } else { ",client" }
                );
                if client_one {
                    one.push(CLIENT);
                } else {
                    two.push(CLIENT);
                }
                let (s1, s2) = (port_set(lab, &one), port_set(lab, &two));
                start = self.shared.now();
                nft(
                    lab,
                    &sw,
                    &format!("add rule bridge chaos chaos_part iifname {s1} oifname {s2} drop"),
                );
                nft(
                    lab,
                    &sw,
                    &format!("add rule bridge chaos chaos_part iifname {s2} oifname {s1} drop"),
                );
                self.sleep_s(hold);
                nft(lab, &sw, "flush chain bridge chaos chaos_part");
                end = self.shared.now();
            }
            Kind::Isolate => {
                let isolated: Vec<usize> = match self.rng.below(4) {
                    0 => vec![0, 1],
                    1 => vec![0, 2],
                    2 => vec![1, 2],
                    _ => vec![0, 1, 2],
                };
                what = format!("ports of {}", node_list(&isolated));
                start = self.shared.now();
                for &i in &isolated {
                    let port = lab.host(i).port.clone();
                    lab.exec_ok(
                        &sw,
                        &["bridge", "link", "set", "dev", &port, "isolated", "on"],
                    );
                }
                self.sleep_s(hold);
                for &i in &isolated {
                    let port = lab.host(i).port.clone();
                    lab.exec_ok(
                        &sw,
                        &["bridge", "link", "set", "dev", &port, "isolated", "off"],
                    );
                }
                end = self.shared.now();
            }
            Kind::Netem => {
                let i = self.target();
                let ns = lab.ns(i).to_owned();
                let loss = 10 + self.rng.below(31); // 10-40 %
                let dup = 1 + self.rng.below(10); // 1-10 %
                if self.netem {
                    let delay = 10 + self.rng.below(91); // 10-100 ms
                    let reorder = 5 + self.rng.below(21);
                    what = format!(
                        "{} loss {loss}% dup {dup}% delay {delay}ms reorder {reorder}%",
                        NAMES[i]
                    );
                    start = self.shared.now();
                    let (l, d, j, u, r) = (
                        format!("{loss}%"),
                        format!("{delay}ms"),
                        format!("{}ms", delay / 2),
                        format!("{dup}%"),
                        format!("{reorder}%"),
                    );
                    lab.exec_ok(
                        &ns,
                        &[
                            "tc",
                            "qdisc",
                            "add",
                            "dev",
                            "eth0",
                            "root",
                            "netem",
                            "loss",
                            &l,
                            "delay",
                            &d,
                            &j,
                            "duplicate",
                            &u,
                            "reorder",
                            &r,
                        ],
                    );
                    self.sleep_s(hold);
                    lab.exec_ok(&ns, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
                } else {
                    what = format!("{} loss {loss}% dup {dup}% (nft)", NAMES[i]);
                    let port = lab.host(i).port.clone();
                    let (l, u) = (loss * 10, dup * 10);
                    start = self.shared.now();
                    // Frames from the node are lost on the wire (the bridge
                    // port's ingress: silent, unlike a drop in the node's
                    // egress, which the sender sees as a send error).
                    nft(lab, &sw, "add table netdev chaos_imp");
                    nft(
                        lab,
                        &sw,
                        &format!(
                            "add chain netdev chaos_imp imp_in {{ type filter hook ingress device \"{port}\" priority 0 ; }}"
                        ),
                    );
                    nft(
                        lab,
                        &sw,
                        &format!(
                            "add rule netdev chaos_imp imp_in numgen random mod 1000 < {l} drop"
                        ),
                    );
                    // Frames to the node are lost; frames from it duplicated.
                    nft(lab, &ns, "add table netdev chaos_imp");
                    nft(
                        lab,
                        &ns,
                        "add chain netdev chaos_imp imp_in { type filter hook ingress device \"eth0\" priority 0 ; }",
                    );
                    nft(
                        lab,
                        &ns,
                        &format!(
                            "add rule netdev chaos_imp imp_in numgen random mod 1000 < {l} drop"
                        ),
                    );
                    nft(
                        lab,
                        &ns,
                        "add chain netdev chaos_imp imp_out { type filter hook egress device \"eth0\" priority 0 ; }",
                    );
                    nft(
                        lab,
                        &ns,
                        &format!(
                            "add rule netdev chaos_imp imp_out numgen random mod 1000 < {u} dup to \"eth0\""
                        ),
                    );
                    self.sleep_s(hold);
                    nft(lab, &ns, "delete table netdev chaos_imp");
                    nft(lab, &sw, "delete table netdev chaos_imp");
                }
                end = self.shared.now();
            }
        }
        Fault {
            kind,
            what,
            start,
            end,
            settled: None,
        }
    }

    /// Criterion 6: wait (bounded) until A is the only MASTER and the only
    /// holder of the VIP, B and C BACKUP, over two fresh polls.
    fn settle(&mut self, since: f64) -> Option<f64> {
        let deadline = Instant::now() + SETTLE_MAX;
        let mut good_polls = 0;
        let mut last_t = [0.0f64; 3];
        while Instant::now() < deadline {
            if self.check_crashes() {
                return None;
            }
            let mut fresh = true;
            let mut ok = true;
            for (i, last) in last_t.iter_mut().enumerate() {
                let Some(s) = self.shared.latest(i) else {
                    ok = false;
                    continue;
                };
                if s.t <= since || s.t <= *last {
                    fresh = false;
                }
                *last = s.t;
                let want = if i == 0 { "MASTER" } else { "BACKUP" };
                ok &= s.life == Life::Running
                    && s.state.as_deref() == Some(want)
                    && s.vip == Some(i == 0);
            }
            if ok && fresh {
                good_polls += 1;
                if good_polls >= 2 {
                    return Some(self.shared.now());
                }
            } else if !ok {
                good_polls = 0;
            }
            thread::sleep(Duration::from_millis(60));
        }
        None
    }
}

// ===== analysis =====

/// The state of node `i` at `t` as the samples say: `Some("MASTER")` etc. for
/// a running node (carried over a failed poll for up to 1 s), `None` for a
/// node that is not running or not known.
fn state_at(samples: &[Sample], t: f64) -> Option<&str> {
    let idx = samples.partition_point(|s| s.t <= t);
    let mut k = idx;
    while k > 0 {
        k -= 1;
        let s = &samples[k];
        if s.life != Life::Running {
            return None;
        }
        if let Some(st) = s.state.as_deref() {
            return Some(st);
        }
        if t - s.t > 1.0 {
            return None;
        }
    }
    None
}

/// A maximal interval `[s, e)` with the same master count class.
#[derive(Debug, Clone)]
struct Episode {
    s: f64,
    e: f64,
    masters: Vec<usize>,
}

/// When the set of MASTERs changed, and to what.
type MasterChanges = Vec<(f64, Vec<usize>)>;

/// Episodes of two or more MASTERs and of none, on a 50 ms grid.
fn episodes(samples: &[Vec<Sample>; 3], end: f64) -> (Vec<Episode>, Vec<Episode>, MasterChanges) {
    let mut dual: Vec<Episode> = Vec::new();
    let mut none: Vec<Episode> = Vec::new();
    let mut changes: MasterChanges = Vec::new();
    let step = SAMPLE.as_secs_f64();
    let mut open_dual: Option<Episode> = None;
    let mut open_none: Option<Episode> = None;
    let mut g = 0.0;
    while g <= end {
        let masters: Vec<usize> = (0..3)
            .filter(|&i| state_at(&samples[i], g) == Some("MASTER"))
            .collect();
        if changes.last().is_none_or(|(_, m)| *m != masters) {
            changes.push((g, masters.clone()));
        }
        for (open, list, want) in [
            (&mut open_dual, &mut dual, masters.len() >= 2),
            (&mut open_none, &mut none, masters.is_empty()),
        ] {
            match (open.as_mut(), want) {
                (None, true) => {
                    *open = Some(Episode {
                        s: g,
                        e: g,
                        masters: masters.clone(),
                    })
                }
                (Some(ep), true) => {
                    for m in &masters {
                        if !ep.masters.contains(m) {
                            ep.masters.push(*m);
                        }
                    }
                }
                (Some(_), false) => {
                    let mut ep = open.take().expect("open episode");
                    ep.e = g;
                    list.push(ep);
                }
                (None, false) => {}
            }
        }
        g += step;
    }
    for (open, list) in [(open_dual, &mut dual), (open_none, &mut none)] {
        if let Some(mut ep) = open {
            ep.e = end;
            list.push(ep);
        }
    }
    (dual, none, changes)
}

/// Gratuitous ARPs for the VIP: from the switch capture (time, ingress host
/// index) and from the client capture (time). Times relative to the soak.
fn garps(
    lab: &Lab,
    switch_file: &Path,
    client_file: &Path,
    w0: f64,
) -> (Vec<(f64, usize)>, Vec<f64>) {
    let needle = format!("who-has {VIP} tell {VIP},");
    let mut sw = Vec::new();
    for line in std::fs::read_to_string(switch_file)
        .unwrap_or_default()
        .lines()
    {
        if !line.contains(&needle) {
            continue;
        }
        // 1795307860.491384 p0    B   ifindex 2 00:00:5e:00:01:01 ethertype ARP ...
        let mut w = line.split_whitespace();
        let (Some(ts), Some(dev), Some(dir)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        if dir == "Out" {
            continue;
        }
        let Ok(ts) = ts.parse::<f64>() else { continue };
        if let Some(h) = (0..3).find(|&h| lab.host(h).port == dev) {
            sw.push((ts - w0, h));
        }
    }
    let mut client = Vec::new();
    for line in std::fs::read_to_string(client_file)
        .unwrap_or_default()
        .lines()
    {
        if !line.contains(&needle) {
            continue;
        }
        if let Some(Ok(ts)) = line.split_whitespace().next().map(str::parse::<f64>) {
            client.push(ts - w0);
        }
    }
    (sw, client)
}

/// The client's longest outage for probes sent within `[from, to]` (soak
/// seconds) and when it began (the test bed's one computation).
fn longest_gap_in(replies: &Record, w0: f64, from: f64, to: f64) -> (f64, f64) {
    let o = replies.outage(w0 + from, w0 + to);
    (o.outage.as_secs_f64(), o.at.map_or(from, |t| t - w0))
}

/// Copy the daemons' logs and the ARP captures to `dir` (the lab's own
/// directory goes with the lab).
fn keep_artifacts(lab: &Lab, dir: &Path) {
    let _ = std::fs::create_dir_all(dir);
    for entry in std::fs::read_dir(lab.dir()).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|x| x == "log" || x == "txt") {
            let _ = std::fs::copy(&p, dir.join(entry.file_name()));
        }
    }
    println!("logs and captures copied to {}", dir.display());
}

#[derive(Default, Debug, Clone, Copy)]
struct KindFigures {
    count: usize,
    failover_max: f64,
    dual_max: f64,
    dual_after_heal_max: f64,
    ping_gap_max: f64,
}

#[test]
#[ignore = "needs root: network namespaces"]
fn chaos_soak() {
    let soak = env_u64("CARPD_SOAK_SECS").unwrap_or(60) as f64;
    let seed = env_u64("CARPD_SOAK_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let strict_garp = !std::env::var("CARPD_SOAK_LENIENT_GARP").is_ok_and(|v| v == "1");
    println!("chaos soak: {soak} s, seed {seed} (replay with CARPD_SOAK_SEED={seed})");

    let lab = Lab::new("chaos", 4);
    let sw = lab.switch.clone();
    nft(&lab, &sw, "add table bridge chaos");
    nft(
        &lab,
        &sw,
        "add chain bridge chaos chaos_part { type filter hook forward priority 0 ; policy accept ; }",
    );
    let netem = netem_available(&lab, lab.ns(0));
    if !netem {
        println!(
            "netem: this kernel has no sch_netem; loss and duplication are emulated with nftables, delay and reordering are NOT injected"
        );
    }
    let client_cap = lab.path("client-arp.txt");
    let switch_cap = lab.path("switch-arp.txt");
    let client_ns = lab.ns(CLIENT).to_owned();
    let cap_pids = [
        capture(&lab, &client_ns, &["-i", "eth0"], &client_cap),
        capture(&lab, &sw, &["-i", "any", "-e"], &switch_cap),
    ];

    let mut nodes: Vec<Carpd> = (0..3)
        .map(|i| lab.carpd(i, NAMES[i], &words(SKEWS[i])))
        .collect();
    let refs: Vec<&Carpd> = nodes.iter().collect();
    let first = wait_single_master(&refs, VHID, Duration::from_secs(10));
    assert_eq!(first, 0, "the advskew-0 node must win the first election");

    let shared = Shared {
        t0: Instant::now(),
        lives: Mutex::new([(Life::Running, 0); 3]),
        samples: [
            Mutex::new(Vec::new()),
            Mutex::new(Vec::new()),
            Mutex::new(Vec::new()),
        ],
        stop: AtomicBool::new(false),
    };
    let w0 = wall_now();
    let pinger = Pinger::start(&client_ns, VIP, Duration::from_millis(50)).expect("ping");
    let targets: Vec<(String, std::path::PathBuf)> = nodes
        .iter()
        .map(|d| (d.ns.clone(), d.sock.clone()))
        .collect();

    let mut inj = Injector {
        lab: &lab,
        shared: &shared,
        nodes: std::mem::take(&mut nodes),
        rng: Rng(seed),
        netem,
        soak,
        faults: Vec::new(),
        failures: Vec::new(),
    };
    thread::scope(|s| {
        let _stop = StopOnDrop(&shared.stop);
        for (i, (ns, sock)) in targets.iter().enumerate() {
            let shared = &shared;
            s.spawn(move || sampler(shared, i, ns, sock));
        }
        // Let the samplers record the starting state first.
        thread::sleep(Duration::from_secs(1));
        inj.run();
    });
    let end = shared.now();
    let replies = pinger.finish();
    for pid in cap_pids {
        lab.signal(pid, Signal::SIGINT);
        let _ = lab.wait_child(pid, Duration::from_secs(3));
    }
    let Injector {
        nodes,
        faults,
        mut failures,
        ..
    } = inj;

    // Criterion 4: a clean stop, and no panic in any log.
    for d in &nodes {
        if lab.wait_child(d.pid, Duration::ZERO).is_some() {
            failures.push(format!(
                "criterion 4: {} was not running at the end",
                d.name
            ));
            continue;
        }
        lab.kill(d, Signal::SIGTERM);
        match lab.wait_child(d.pid, Duration::from_secs(10)) {
            Some(out) if out.status.code() == Some(0) => {}
            Some(out) => failures.push(format!(
                "criterion 4: {} exited with {} after SIGTERM",
                d.name, out.status
            )),
            None => failures.push(format!("criterion 4: {} ignored SIGTERM for 10 s", d.name)),
        }
        let log = std::fs::read_to_string(&d.log).unwrap_or_default();
        if log.contains("panicked") {
            failures.push(format!("criterion 4: {}'s log says \"panicked\"", d.name));
        }
    }

    let samples: [Vec<Sample>; 3] = std::array::from_fn(|i| {
        std::mem::take(&mut *shared.samples[i].lock().unwrap_or_else(|p| p.into_inner()))
    });
    let (dual, none, changes) = episodes(&samples, end);
    let bound = protocol_bound();
    let mut known: Vec<String> = Vec::new();
    let mut report = String::new();
    let fault_at = |t: f64| {
        faults
            .iter()
            .find(|f| t >= f.start - 0.1 && t <= f.until() + 0.1)
    };

    // Criterion 1.
    let mut dual_max = 0.0f64;
    let mut dual_after_max = 0.0f64;
    for ep in &dual {
        let len = ep.e - ep.s;
        dual_max = dual_max.max(len);
        // Allowed while a fault that overlaps the episode is in place; the
        // bound runs from the last such fault's end (its heal).
        let f = faults
            .iter()
            .filter(|f| f.start <= ep.e && f.end >= ep.s)
            .max_by(|x, y| x.end.total_cmp(&y.end))
            .or_else(|| fault_at(ep.s));
        let anchor = f.map_or(ep.s, |f| f.end.max(ep.s));
        let after = (ep.e - anchor).max(0.0);
        dual_after_max = dual_after_max.max(after);
        if after > bound {
            failures.push(format!(
                "criterion 1: MASTERs {} from t={:.2}s to {:.2}s, {after:.2}s after {} (bound {bound:.2}s)",
                node_list(&ep.masters),
                ep.s,
                ep.e,
                f.map_or("they appeared".to_owned(), |f| format!("{} {} was undone", f.kind.name(), f.what))
            ));
        }
    }
    // Criterion 2.
    let mut none_max = 0.0f64;
    for ep in &none {
        let len = ep.e - ep.s;
        none_max = none_max.max(len);
        if len > bound {
            failures.push(format!(
                "criterion 2: no MASTER from t={:.2}s to {:.2}s ({len:.2}s, bound {bound:.2}s){}",
                ep.s,
                ep.e,
                fault_at(ep.s).map_or(String::new(), |f| format!(
                    " during {} {}",
                    f.kind.name(),
                    f.what
                ))
            ));
        }
    }
    // Criterion 3.
    let mut dead_vip = [0.0f64; 3];
    let mut vip_bad_max = 0.0f64;
    for (i, ss) in samples.iter().enumerate() {
        let mut open: Option<(f64, String)> = None;
        for (k, s) in ss.iter().enumerate() {
            if s.life == Life::Dead && s.vip == Some(true) {
                let next = ss.get(k + 1).map_or(s.t, |n| n.t);
                dead_vip[i] += next - s.t;
            }
            let bad = s.life == Life::Running
                && s.vip == Some(true)
                && s.state.as_deref().is_some_and(|st| st != "MASTER");
            match (&open, bad) {
                (None, true) => open = Some((s.t, s.state.clone().unwrap_or_default())),
                (Some((from, st)), false) => {
                    let len = s.t - from;
                    vip_bad_max = vip_bad_max.max(len);
                    if len > VIP_SLACK {
                        failures.push(format!(
                            "criterion 3: {} held {VIP} while {st} from t={from:.2}s for {len:.2}s{}",
                            NAMES[i],
                            fault_at(*from).map_or(String::new(), |f| format!(" ({} {})", f.kind.name(), f.what))
                        ));
                    }
                    open = None;
                }
                _ => {}
            }
        }
    }
    let failed_polls: usize = samples
        .iter()
        .map(|ss| {
            ss.iter()
                .filter(|s| s.life == Life::Running && s.state.is_none())
                .count()
        })
        .sum();

    // Criterion 5.
    let (sw_garps, client_garps) = garps(&lab, &switch_cap, &client_cap, w0);
    let mut heals_checked = 0;
    let mut per_kind: BTreeMap<Kind, KindFigures> = BTreeMap::new();
    for (n, f) in faults.iter().enumerate() {
        let until = f.until();
        let next_start = faults.get(n + 1).map_or(end, |g| g.start);
        let failover = none
            .iter()
            .filter(|ep| ep.s >= f.start - 0.1 && ep.s <= until)
            .map(|ep| ep.e - ep.s)
            .fold(0.0, f64::max);
        let duals: Vec<&Episode> = dual
            .iter()
            .filter(|ep| ep.e > f.start && ep.s <= until)
            .collect();
        let dual_len = duals.iter().map(|ep| ep.e - ep.s).fold(0.0, f64::max);
        let dual_after = duals
            .iter()
            .map(|ep| (ep.e - ep.s.max(f.end)).max(0.0))
            .fold(0.0, f64::max);
        let (gap, gap_at) = longest_gap_in(&replies, w0, f.start, next_start);
        let k = per_kind.entry(f.kind).or_default();
        k.count += 1;
        k.failover_max = k.failover_max.max(failover);
        k.dual_max = k.dual_max.max(dual_len);
        k.dual_after_heal_max = k.dual_after_heal_max.max(dual_after);
        k.ping_gap_max = k.ping_gap_max.max(gap);
        let mut garp_note = "no dual MASTER: no re-announcement needed".to_owned();
        if let (Some(last_dual), Some(settled)) = (duals.last(), f.settled) {
            heals_checked += 1;
            // The dual MASTER is seen by polling (50 ms, and a stopped daemon's
            // status only after it resumes), and `f.end` is taken after the heal
            // command returned, so both lag the real events by up to HEAL_SLACK.
            let heal = match f.kind {
                Kind::Partition | Kind::Isolate | Kind::Stop => f.end.max(last_dual.s),
                _ => last_dual.s,
            } - HEAL_SLACK;
            let window: Vec<&(f64, usize)> = sw_garps
                .iter()
                .filter(|(t, _)| *t >= last_dual.s - HEAL_SLACK && *t <= settled + 1.0)
                .collect();
            let winner_after: Vec<f64> = sw_garps
                .iter()
                .filter(|(t, h)| *h == 0 && *t >= heal && *t <= settled + 1.0)
                .map(|(t, _)| *t)
                .collect();
            // The winner announced last since the dual MASTER began, and the
            // client heard one of its announcements from then on.
            let ok = match window.last() {
                Some(&&(_, h)) => {
                    h == 0
                        && window.iter().any(|&&(t, h)| {
                            h == 0 && client_garps.iter().any(|c| (c - t).abs() < 0.2)
                        })
                }
                None => false,
            };
            let last_desc = window.last().map_or_else(
                || {
                    let before = sw_garps.iter().rfind(|(t, _)| *t < last_dual.s);
                    before.map_or("no GARP at all".to_owned(), |(t, h)| {
                        format!("the last GARP before was {}'s at t={t:.2}s", NAMES[*h])
                    })
                },
                |(t, h)| format!("the last GARP was {}'s at t={t:.2}s", NAMES[*h]),
            );
            let (after_gap, after_at) = longest_gap_in(&replies, w0, heal, next_start);
            let seen: Vec<String> = sw_garps
                .iter()
                .filter(|(t, _)| *t >= last_dual.s - 0.05 && *t <= settled + 1.0)
                .map(|(t, h)| format!("{}@{t:.2}", NAMES[*h]))
                .collect();
            garp_note = if ok {
                format!("winner a re-announced (GARPs [{}])", seen.join(" "))
            } else {
                let msg = format!(
                    "criterion 5: after {} {} (dual MASTER {} from t={:.2}s, heal at t={heal:.2}s, settled t={settled:.2}s) the surviving MASTER a sent no gratuitous ARP after the heal ({} from a since); {}; GARPs at the switch in the window: [{}]; client's longest outage from the heal to the next fault (t={next_start:.2}s): {after_gap:.2}s from t={after_at:.2}s",
                    f.kind.name(),
                    f.what,
                    node_list(&last_dual.masters),
                    last_dual.s,
                    winner_after.len(),
                    last_desc,
                    seen.join(" ")
                );
                known.push(msg);
                "winner did NOT re-announce".to_owned()
            };
        }
        let _ = writeln!(
            report,
            "  t={:7.2}s {:9} {:40} held {:5.2}s  no-master {:5.2}s  dual {:5.2}s (after heal {:5.2}s)  ping gap {:5.2}s at t={:.2}s  {garp_note}",
            f.start,
            f.kind.name(),
            f.what,
            f.end - f.start,
            failover,
            dual_len,
            dual_after,
            gap,
            gap_at,
        );
    }
    let (gap_all, gap_all_at) = longest_gap_in(&replies, w0, 0.0, end);

    println!("\n===== chaos soak timeline ({end:.1} s, seed {seed}) =====");
    print!("{report}");
    println!("master set changes (50 ms grid):");
    for (t, m) in changes.iter().take(400) {
        println!(
            "  t={t:7.2}s  MASTER: {}",
            if m.is_empty() {
                "-".to_owned()
            } else {
                node_list(m)
            }
        );
    }
    if changes.len() > 400 {
        println!("  ... {} more", changes.len() - 400);
    }
    println!("\n===== figures =====");
    println!(
        "faults injected: {} (netem {})",
        faults.len(),
        if netem {
            "tc netem"
        } else {
            "nft emulation, no delay/reorder"
        }
    );
    println!("  kind        count  max no-MASTER  max dual  max dual after heal  max client gap");
    for (kind, k) in &per_kind {
        println!(
            "  {:10} {:6}  {:12.2}s {:8.2}s {:19.2}s {:14.2}s",
            kind.name(),
            k.count,
            k.failover_max,
            k.dual_max,
            k.dual_after_heal_max,
            k.ping_gap_max
        );
    }
    println!("max time without a MASTER: {none_max:.2}s (bound {bound:.2}s)");
    println!(
        "max dual MASTER: {dual_max:.2}s, max after a heal: {dual_after_max:.2}s (bound {bound:.2}s)"
    );
    println!("max VIP on a running non-MASTER: {vip_bad_max:.2}s (bound {VIP_SLACK:.2}s)");
    println!(
        "VIP left by a kill -9 while dead (documented): a {:.1}s, b {:.1}s, c {:.1}s",
        dead_vip[0], dead_vip[1], dead_vip[2]
    );
    println!(
        "max client outage: {gap_all:.2}s at t={gap_all_at:.2}s ({} replies)",
        replies.answered()
    );
    println!(
        "samples: {} / {} / {}, control queries without an answer while running: {failed_polls}",
        samples[0].len(),
        samples[1].len(),
        samples[2].len()
    );
    println!(
        "gratuitous ARPs for {VIP}: {} at the switch, {} at the client; heals with a dual MASTER checked: {heals_checked}",
        sw_garps.len(),
        client_garps.len()
    );
    if !known.is_empty() {
        println!(
            "\ncriterion 5 (no re-announcement when a dual MASTER resolves) failed after {} of {heals_checked} heals:",
            known.len()
        );
        for k in &known {
            println!("  {k}");
        }
        if strict_garp {
            failures.extend(known);
        } else {
            println!("  (not failing the test: CARPD_SOAK_LENIENT_GARP=1)");
        }
    }
    if let Ok(dir) = std::env::var("CARPD_SOAK_ARTIFACTS") {
        keep_artifacts(&lab, Path::new(&dir));
    }
    if failures.is_empty() {
        println!("\nchaos soak: PASS");
    } else {
        lab.dump_logs();
    }
    assert!(
        failures.is_empty(),
        "chaos soak failed:\n  {}",
        failures.join("\n  ")
    );
}
