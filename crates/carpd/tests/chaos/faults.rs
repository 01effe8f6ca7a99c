//! The faults the soak injects, one at a time, from a seeded RNG: kill -9,
//! SIGSTOP, link flap, partition, port isolation, netem (or its nftables
//! emulation), and the faults of the environment in [`super::envfaults`].
//! Each is held for a random time, undone, and the lab must settle again
//! (criterion 6). `CARPD_SOAK_FAULTS` chooses the kinds ([`enabled_kinds`]).

use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::recording::{Life, Shared};
use super::{CLIENT, NAMES, SETTLE_MAX, node_list};
use crate::common::Lab;
use crate::common::daemon::Carpd;

// ===== a small seeded RNG (splitmix64; no dependency, same on every platform) =====

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn secs(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Kill9,
    Stop,
    Flap,
    Partition,
    Isolate,
    Netem,
    Macvlan,
    Carpdev,
    Flush,
    Sighup,
    Hook,
    Exhaust,
}

pub const KINDS: [Kind; 12] = [
    Kind::Kill9,
    Kind::Stop,
    Kind::Flap,
    Kind::Partition,
    Kind::Isolate,
    Kind::Netem,
    Kind::Macvlan,
    Kind::Carpdev,
    Kind::Flush,
    Kind::Sighup,
    Kind::Hook,
    Kind::Exhaust,
];

/// The kinds `CARPD_SOAK_FAULTS` asks for: unset or `all` is every kind; a
/// comma list names kinds (`kill9,flap`), and `-kind` takes one away
/// (`all,-hook`). An unknown name is an error, not silently ignored.
pub fn parse_kinds(spec: &str) -> Result<Vec<Kind>, String> {
    let mut kinds: Vec<Kind> = Vec::new();
    for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let (minus, name) = match word.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, word),
        };
        let named: Vec<Kind> = if name == "all" {
            KINDS.to_vec()
        } else {
            vec![
                KINDS
                    .into_iter()
                    .find(|k| k.name() == name)
                    .ok_or_else(|| format!("unknown fault kind {name:?} in CARPD_SOAK_FAULTS"))?,
            ]
        };
        if minus {
            kinds.retain(|k| !named.contains(k));
        } else {
            for k in named {
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
        }
    }
    if kinds.is_empty() {
        return Err(format!("CARPD_SOAK_FAULTS={spec:?} leaves no fault kind"));
    }
    kinds.sort();
    Ok(kinds)
}

/// [`parse_kinds`] of `CARPD_SOAK_FAULTS` (default `all`).
pub fn enabled_kinds() -> Vec<Kind> {
    let spec = std::env::var("CARPD_SOAK_FAULTS").unwrap_or_else(|_| "all".to_owned());
    parse_kinds(&spec).unwrap_or_else(|e| panic!("{e}"))
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill9 => "kill9",
            Kind::Stop => "stop",
            Kind::Flap => "flap",
            Kind::Partition => "partition",
            Kind::Isolate => "isolate",
            Kind::Netem => "netem",
            Kind::Macvlan => "macvlan",
            Kind::Carpdev => "carpdev",
            Kind::Flush => "flush",
            Kind::Sighup => "sighup",
            Kind::Hook => "hook",
            Kind::Exhaust => "exhaust",
        }
    }
    /// Range of the hold time, seconds.
    pub fn hold(self) -> (f64, f64) {
        match self {
            Kind::Kill9 => (0.5, 5.0),
            Kind::Stop => (0.5, 6.0),
            Kind::Flap => (0.3, 6.0),
            Kind::Partition | Kind::Isolate => (1.0, 8.0),
            Kind::Netem => (3.0, 10.0),
            Kind::Macvlan => (1.0, 5.0),
            Kind::Carpdev => (0.5, 6.0),
            Kind::Flush => (0.5, 6.0),
            Kind::Sighup => (1.0, 4.0),
            Kind::Hook => (1.0, 5.0),
            Kind::Exhaust => (2.0, 8.0),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: Kind,
    pub what: String,
    /// Applied (seconds since the soak started).
    pub start: f64,
    /// Undone.
    pub end: f64,
    /// The lab settled again (`None`: it did not within `SETTLE_MAX`).
    pub settled: Option<f64>,
    /// A node whose control socket the fault itself fills (`exhaust`): its
    /// unanswered polls from `start` to `end` carry its last answer.
    pub blind: Option<usize>,
}

impl Fault {
    pub fn until(&self) -> f64 {
        self.settled.unwrap_or(self.end + SETTLE_MAX.as_secs_f64())
    }
}

pub fn netem_available(lab: &Lab, ns: &str) -> bool {
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

pub fn nft(lab: &Lab, ns: &str, rule: &str) {
    let argv: Vec<&str> = std::iter::once("nft")
        .chain(rule.split(' ').filter(|w| !w.is_empty()))
        .collect();
    lab.exec_ok(ns, &argv);
}

/// `{ "p0", "p1" }`
pub fn port_set(lab: &Lab, hosts: &[usize]) -> String {
    let names: Vec<String> = hosts
        .iter()
        .map(|&h| format!("\"{}\"", lab.host(h).port))
        .collect();
    format!("{{ {} }}", names.join(", "))
}

/// The injector's side of the run.
pub struct Injector<'a> {
    pub lab: &'a Lab,
    pub shared: &'a Shared,
    pub nodes: Vec<Carpd>,
    pub rng: Rng,
    pub netem: bool,
    pub soak: f64,
    /// The kinds to inject (`CARPD_SOAK_FAULTS`).
    pub kinds: Vec<Kind>,
    pub faults: Vec<Fault>,
    pub failures: Vec<String>,
}

impl Injector<'_> {
    pub fn sleep_s(&self, s: f64) {
        thread::sleep(Duration::from_secs_f64(s.max(0.0)));
    }

    /// Criterion 4 while running: a daemon that exited on its own.
    pub fn check_crashes(&mut self) -> bool {
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
    pub fn target(&mut self) -> usize {
        if self.rng.chance(0.6) {
            0
        } else {
            self.rng.below(3)
        }
    }

    pub fn run(&mut self) {
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
                round = self.kinds.clone();
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

    pub fn inject(&mut self, kind: Kind, hold: f64) -> Fault {
        let lab = self.lab;
        let sw = lab.switch.clone();
        let (what, start, end);
        let mut blind = None;
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
            Kind::Macvlan
            | Kind::Carpdev
            | Kind::Flush
            | Kind::Sighup
            | Kind::Hook
            | Kind::Exhaust => {
                let f = self.inject_env(kind, hold);
                (what, start, end, blind) = (f.what, f.start, f.end, f.blind);
            }
        }
        Fault {
            kind,
            what,
            start,
            end,
            settled: None,
            blind,
        }
    }

    /// Criterion 6: wait (bounded) until A is the only MASTER and the only
    /// holder of the VIP, B and C BACKUP, over two fresh polls.
    pub fn settle(&mut self, since: f64) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_kinds_are_chosen_by_name() {
        assert_eq!(parse_kinds("all").unwrap(), KINDS.to_vec());
        assert_eq!(
            parse_kinds("flap, kill9,flap").unwrap(),
            vec![Kind::Kill9, Kind::Flap]
        );
        let most = parse_kinds("all,-hook,-exhaust").unwrap();
        assert_eq!(most.len(), KINDS.len() - 2);
        assert!(!most.contains(&Kind::Hook) && !most.contains(&Kind::Exhaust));
        assert!(parse_kinds("all,-all").is_err());
        assert!(parse_kinds("kill9,typo").unwrap_err().contains("typo"));
    }
}
