//! The simulator proper: nodes, the virtual segments, the clock and the event loop.

mod check;
mod query;

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::config::interval;
use carp_proto::{
    Action, CarpIfId, Cause, Family, Instant, LinkId, Node, RxMeta, State, Vhid, VhostId,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::report::{Tenure, Transition};
use crate::setup::{Checks, Event, NodeSpec, SimConfig, Violation, master_down_interval};

/// The TTL every simulated delivery carries (a one-hop LAN).
const TTL: u8 = 255;

/// How many rounds of "events, deliveries, timers" one instant may take
/// before the simulator calls it a livelock.
const MAX_ROUNDS_PER_INSTANT: usize = 1000;

/// One datagram on its way to one receiver.
#[derive(Debug, Clone)]
struct Delivery {
    from: usize,
    to: usize,
    link: LinkId,
    src: IpAddr,
    dst: IpAddr,
    packet: Vec<u8>,
}

/// One simulated host (index = node number - 1).
#[derive(Debug)]
struct SimNode {
    spec: NodeSpec,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    /// `None` while crashed or shut down.
    node: Option<Node>,
    links_down: BTreeSet<LinkId>,
    partition: usize,
    /// Carp interfaces whose addresses are configured (AddAddresses minus RemoveAddresses).
    holds: BTreeSet<CarpIfId>,
    announces: u64,
    /// Extra send-failure probability of this node ([`Event::SendFailure`]).
    send_failure: f64,
}

/// Packet counters of the virtual segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wire {
    sent: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    send_failures: u64,
}

/// The deterministic N-node CARP simulator (see the crate docs).
#[derive(Debug)]
pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: Instant,
    seq: u64,
    nodes: Vec<SimNode>,
    deliveries: BTreeMap<(Instant, u64), Delivery>,
    events: BTreeMap<(Instant, u64), Event>,
    trace: String,
    transitions: Vec<Transition>,
    event_log: Vec<(Instant, Event)>,
    tenures: Vec<Tenure>,
    master_since: BTreeMap<(usize, VhostId), Instant>,
    /// Time of the last scenario event (or node start).
    last_event: Instant,
    /// Time of the last event, lost packet or send failure.
    last_disturbance: Instant,
    /// When each live BACKUP was first seen with no reachable MASTER.
    orphan_since: BTreeMap<(usize, VhostId), Instant>,
    settle: Duration,
    /// Families whose advertisements are all dropped ([`Event::Block`]).
    blocked: BTreeSet<Family>,
    wire: Wire,
    violation: Option<Violation>,
}

impl Sim {
    /// Return an empty simulation at t=0.
    ///
    /// Panics if a probability is outside 0..=1 or `latency_min > latency_max`
    /// (a scenario bug, not a runtime condition).
    pub fn new(cfg: SimConfig) -> Sim {
        for p in [cfg.loss, cfg.duplicate, cfg.send_failure] {
            assert!((0.0..=1.0).contains(&p), "probability {p} is outside 0..=1");
        }
        assert!(
            cfg.latency_min <= cfg.latency_max,
            "latency_min > latency_max"
        );
        Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            now: Instant::ZERO,
            seq: 0,
            nodes: Vec::new(),
            deliveries: BTreeMap::new(),
            events: BTreeMap::new(),
            trace: String::new(),
            transitions: Vec::new(),
            event_log: Vec::new(),
            tenures: Vec::new(),
            master_since: BTreeMap::new(),
            last_event: Instant::ZERO,
            last_disturbance: Instant::ZERO,
            orphan_since: BTreeMap::new(),
            settle: Duration::ZERO,
            blocked: BTreeSet::new(),
            wire: Wire::default(),
            violation: None,
        }
    }

    /// Add and boot a node now (cold start); return its number (1, 2, ...).
    /// Its source addresses are 192.0.2.N and 2001:db8::N.
    pub fn add_node(&mut self, spec: NodeSpec) -> usize {
        let n = self.nodes.len() + 1;
        let octet = u8::try_from(n).unwrap_or(u8::MAX);
        for (_, v) in &spec.timings() {
            let w = master_down_interval(v) + interval(v.advbase, v.advskew) + self.cfg.latency_max;
            self.settle = self.settle.max(w);
        }
        self.trace_line(&format!("n{n} start {}", spec.describe()));
        self.nodes.push(SimNode {
            spec,
            v4: Ipv4Addr::new(192, 0, 2, octet),
            v6: Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(octet)),
            node: None,
            links_down: BTreeSet::new(),
            partition: 0,
            holds: BTreeSet::new(),
            announces: 0,
            send_failure: 0.0,
        });
        self.mark_event();
        self.boot(n - 1);
        n
    }

    // ===== scenario inputs =====

    /// Apply `event` now. A violation it causes is returned by the next run.
    pub fn apply(&mut self, event: Event) {
        self.trace_line(&event.to_string());
        self.event_log.push((self.now, event.clone()));
        self.mark_event();
        match event {
            Event::Crash(n) => self.crash(n),
            Event::Restart(n) => {
                if let Some(i) = self.index(n) {
                    if self.nodes[i].node.is_some() {
                        self.stop(i);
                    }
                    self.boot(i);
                }
            }
            Event::Shutdown(n) => self.shutdown(n),
            Event::Link { node, link, up } => {
                let Some(i) = self.index(node) else { return };
                if up {
                    self.nodes[i].links_down.remove(&link);
                } else {
                    self.nodes[i].links_down.insert(link);
                }
                if let Some(nd) = self.nodes[i].node.as_mut() {
                    nd.handle_link(self.now, link, up);
                    self.drain(i);
                }
            }
            Event::Demote { node, group, adj } => {
                let Some(i) = self.index(node) else { return };
                if let Some(nd) = self.nodes[i].node.as_mut() {
                    nd.demote_group(self.now, &group, adj);
                    self.drain(i);
                }
            }
            Event::Partition(groups) => {
                for sn in &mut self.nodes {
                    sn.partition = 0;
                }
                for (k, g) in groups.iter().enumerate() {
                    for &n in g {
                        if let Some(i) = self.index(n) {
                            self.nodes[i].partition = k + 1;
                        }
                    }
                }
            }
            Event::Heal => {
                for sn in &mut self.nodes {
                    sn.partition = 0;
                }
            }
            Event::Loss(p) => {
                if (0.0..=1.0).contains(&p) {
                    self.cfg.loss = p;
                } else {
                    self.fail(format!("loss probability {p} is outside 0..=1"));
                }
            }
            Event::Block { family, blocked } => {
                if blocked {
                    self.blocked.insert(family);
                } else {
                    self.blocked.remove(&family);
                }
            }
            Event::SendFailure { node, probability } => {
                let Some(i) = self.index(node) else { return };
                if (0.0..=1.0).contains(&probability) {
                    self.nodes[i].send_failure = probability;
                } else {
                    self.fail(format!(
                        "send failure probability {probability} is outside 0..=1"
                    ));
                }
            }
            Event::Preempt { node, preempt } => {
                let Some(i) = self.index(node) else { return };
                self.nodes[i].spec.config.preempt = preempt;
                let cfg = self.nodes[i].spec.config;
                if let Some(nd) = self.nodes[i].node.as_mut() {
                    nd.set_config(cfg);
                }
            }
        }
    }

    /// Apply `event` at virtual time `at` (events at one instant apply in the order scheduled).
    pub fn schedule(&mut self, at: Instant, event: Event) {
        let seq = self.next_seq();
        self.events.insert((at.max(self.now), seq), event);
    }

    /// Crash node `n` now ([`Event::Crash`]).
    pub fn crash_node(&mut self, n: usize) {
        self.apply(Event::Crash(n));
    }

    /// Restart node `n` now ([`Event::Restart`]).
    pub fn restart_node(&mut self, n: usize) {
        self.apply(Event::Restart(n));
    }

    /// Shut node `n` down gracefully now ([`Event::Shutdown`]).
    pub fn shutdown_node(&mut self, n: usize) {
        self.apply(Event::Shutdown(n));
    }

    /// Set link `link` of node `n` down or up now ([`Event::Link`]).
    pub fn set_link(&mut self, n: usize, link: LinkId, up: bool) {
        self.apply(Event::Link { node: n, link, up });
    }

    /// Demote (`adj` > 0) or undemote (`adj` < 0) `group` on node `n` now ([`Event::Demote`]).
    pub fn demote(&mut self, n: usize, group: &str, adj: i32) {
        self.apply(Event::Demote {
            node: n,
            group: group.to_string(),
            adj,
        });
    }

    /// Partition the segment now ([`Event::Partition`]).
    pub fn partition(&mut self, groups: &[&[usize]]) {
        self.apply(Event::Partition(
            groups.iter().map(|g| g.to_vec()).collect(),
        ));
    }

    /// Heal every partition now ([`Event::Heal`]).
    pub fn heal(&mut self) {
        self.apply(Event::Heal);
    }

    /// Set the loss probability now ([`Event::Loss`]).
    pub fn set_loss(&mut self, p: f64) {
        self.apply(Event::Loss(p));
    }

    // ===== running =====

    /// Run until virtual time `end` (inclusive), checking the invariants after every step.
    pub fn run_until(&mut self, end: Instant) -> Result<(), Violation> {
        loop {
            self.step_now();
            if let Some(v) = &self.violation {
                return Err(v.clone());
            }
            match self.next_time() {
                Some(t) if t <= end => self.now = t.max(self.now),
                _ => {
                    self.now = end.max(self.now);
                    self.check();
                    return match &self.violation {
                        Some(v) => Err(v.clone()),
                        None => Ok(()),
                    };
                }
            }
        }
    }

    /// Run for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), Violation> {
        self.run_until(self.now + d)
    }

    /// One step: process everything due now, check the invariants, then jump
    /// the clock to the next pending delivery, timer or event. Returns the new
    /// time, or `None` if nothing is pending at all.
    pub fn step(&mut self) -> Result<Option<Instant>, Violation> {
        self.step_now();
        if let Some(v) = &self.violation {
            return Err(v.clone());
        }
        let next = self.next_time();
        if let Some(t) = next {
            self.now = t.max(self.now);
        }
        Ok(next)
    }

    // ===== observation =====

    /// Replace the set of enforced invariants (e.g. re-enable them once a
    /// scenario that needs them off has converged).
    pub fn set_checks(&mut self, checks: Checks) {
        self.cfg.checks = checks;
    }

    /// Return the virtual time.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Return the trace so far, one line per state change or scenario event.
    pub fn trace(&self) -> &str {
        &self.trace
    }

    /// Return every state change so far, in order.
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    /// Return every scenario event applied so far, with its time.
    pub fn events(&self) -> &[(Instant, Event)] {
        &self.event_log
    }

    /// Return every MASTER tenure, closed or still open, ordered by start.
    pub fn tenures(&self) -> Vec<Tenure> {
        let mut all = self.tenures.clone();
        for (&(i, id), &start) in &self.master_since {
            all.push(Tenure {
                node: i + 1,
                id,
                start,
                end: None,
            });
        }
        all.sort_by_key(|t| (t.start, t.node, t.id));
        all
    }

    // ===== internals =====

    fn index(&self, n: usize) -> Option<usize> {
        (1..=self.nodes.len()).contains(&n).then(|| n - 1)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn mark_event(&mut self) {
        self.last_event = self.now;
        self.last_disturbance = self.now;
    }

    fn trace_line(&mut self, text: &str) {
        self.trace += &format!("t={} {text}\n", self.now);
    }

    fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                at: self.now,
                what,
                trace: self.trace.clone(),
            });
        }
    }

    fn boot(&mut self, i: usize) {
        let mut node = Node::new(self.nodes[i].spec.config);
        for &link in &self.nodes[i].links_down {
            node.handle_link(self.now, link, false);
        }
        for (link, cfg) in self.nodes[i].spec.vhosts.clone() {
            let cookie = self.rng.random::<u64>().to_be_bytes();
            if let Err(e) = node.add_vhost(self.now, link, cfg, cookie) {
                self.fail(format!("n{} add_vhost refused: {e}", i + 1));
            }
        }
        for (link, cfg) in self.nodes[i].spec.interfaces.clone() {
            let cookies: Vec<[u8; 8]> = cfg
                .nodes
                .iter()
                .map(|_| self.rng.random::<u64>().to_be_bytes())
                .collect();
            if let Err(e) = node.add_interface(self.now, link, cfg, &cookies) {
                self.fail(format!("n{} add_interface refused: {e}", i + 1));
            }
        }
        self.nodes[i].node = Some(node);
        self.drain(i);
    }

    /// Kill node `i`: no bow-out, no address removal by the core; the machine is gone.
    fn stop(&mut self, i: usize) {
        self.nodes[i].node = None;
        self.nodes[i].holds.clear();
        let open: Vec<(usize, VhostId)> = self
            .master_since
            .keys()
            .filter(|(j, _)| *j == i)
            .copied()
            .collect();
        for key in open {
            self.close_tenure(key);
        }
        self.deliveries.retain(|_, d| d.to != i);
        self.orphan_since.retain(|(j, _), _| *j != i);
    }

    fn crash(&mut self, n: usize) {
        if let Some(i) = self.index(n)
            && self.nodes[i].node.is_some()
        {
            self.stop(i);
        }
    }

    fn shutdown(&mut self, n: usize) {
        let Some(i) = self.index(n) else { return };
        let Some(nd) = self.nodes[i].node.as_mut() else {
            return;
        };
        nd.begin_shutdown(self.now);
        self.drain(i);
        if self.cfg.checks.vip_matches_state && !self.nodes[i].holds.is_empty() {
            self.fail(format!("n{n} still holds addresses after begin_shutdown"));
        }
        self.stop(i);
    }

    /// Perform every action node `i` has queued.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(action) = self.nodes[i].node.as_mut().and_then(Node::poll_action) else {
                return;
            };
            match action {
                Action::Transmit {
                    id,
                    family,
                    bytes,
                    dst,
                    ..
                } => {
                    let p = self.cfg.send_failure.max(self.nodes[i].send_failure);
                    let fail = p > 0.0 && self.rng.random_bool(p);
                    if fail {
                        self.wire.send_failures += 1;
                        self.last_disturbance = self.now;
                    } else {
                        self.fan_out(i, id.link, family, bytes, dst);
                    }
                    if let Some(nd) = self.nodes[i].node.as_mut() {
                        nd.handle_send_result(self.now, id, !fail);
                    }
                }
                Action::AddAddresses { iface: id, .. } => {
                    if !self.nodes[i].holds.insert(id) && self.cfg.checks.vip_matches_state {
                        self.fail(format!("n{} added the addresses of {id} twice", i + 1));
                    }
                }
                Action::RemoveAddresses { iface: id, .. } => {
                    if !self.nodes[i].holds.remove(&id) && self.cfg.checks.vip_matches_state {
                        self.fail(format!(
                            "n{} removed addresses of {id} it did not hold",
                            i + 1
                        ));
                    }
                }
                Action::Announce { .. } => self.nodes[i].announces += 1,
                Action::StateChanged {
                    id,
                    from,
                    to,
                    cause,
                } => self.record_transition(i, id, from, to, cause),
                // No balancing datapath and no gate in the simulator.
                Action::DemotionChanged { .. }
                | Action::LoadShare { .. }
                | Action::PrepareMaster { .. } => {}
            }
        }
    }

    fn record_transition(&mut self, i: usize, id: VhostId, from: State, to: State, cause: Cause) {
        self.trace_line(&format!(
            "n{} vhid={}{} {from}->{to} cause={cause}",
            i + 1,
            id.vhid,
            link_suffix(id.link)
        ));
        self.transitions.push(Transition {
            at: self.now,
            node: i + 1,
            id,
            from,
            to,
            cause,
        });
        if from == State::Master {
            self.close_tenure((i, id));
        }
        if to == State::Master {
            self.master_since.insert((i, id), self.now);
        }
        if self.cfg.checks.no_flapping && self.is_quiet() {
            self.fail(format!(
                "(c) no flapping: n{} vhid {} changed {from}->{to} on a network quiet since t={}",
                i + 1,
                id.vhid,
                self.last_disturbance
            ));
        }
    }

    fn close_tenure(&mut self, key: (usize, VhostId)) {
        if let Some(start) = self.master_since.remove(&key) {
            self.tenures.push(Tenure {
                node: key.0 + 1,
                id: key.1,
                start,
                end: Some(self.now),
            });
        }
    }

    /// Whether a datagram node `from` put on `link` reaches node `to` now
    /// (the sender's own liveness is not required: the packet is on the wire).
    fn reaches(&self, from: usize, to: usize, link: LinkId) -> bool {
        let (a, b) = (&self.nodes[from], &self.nodes[to]);
        from != to
            && b.node.is_some()
            && a.partition == b.partition
            && (b.spec.vhosts.iter().any(|(l, _)| *l == link)
                || b.spec.interfaces.iter().any(|(l, _)| *l == link))
            && !b.links_down.contains(&link)
    }

    /// Whether two live nodes can currently exchange advertisements on `link`.
    fn connected(&self, a: usize, b: usize, link: LinkId) -> bool {
        self.nodes[a].node.is_some()
            && !self.nodes[a].links_down.contains(&link)
            && self.reaches(a, b, link)
    }

    /// Deliver `packet` to every node that `i` reaches on `link`, or only to
    /// the node with address `dst` when it is unicast.
    fn fan_out(&mut self, i: usize, link: LinkId, family: Family, packet: Vec<u8>, dst: IpAddr) {
        if self.nodes[i].links_down.contains(&link) {
            return;
        }
        let src = match family {
            Family::V4 => IpAddr::V4(self.nodes[i].v4),
            Family::V6 => IpAddr::V6(self.nodes[i].v6),
        };
        self.wire.sent += 1;
        for j in 0..self.nodes.len() {
            if !self.reaches(i, j, link) {
                continue;
            }
            let addressed = dst.is_multicast()
                || dst == IpAddr::V4(self.nodes[j].v4)
                || dst == IpAddr::V6(self.nodes[j].v6);
            if !addressed {
                continue;
            }
            if self.blocked.contains(&family)
                || (self.cfg.loss > 0.0 && self.rng.random_bool(self.cfg.loss))
            {
                self.wire.lost += 1;
                self.last_disturbance = self.now;
                continue;
            }
            let dup = self.cfg.duplicate > 0.0 && self.rng.random_bool(self.cfg.duplicate);
            let copies = if dup { 2 } else { 1 };
            self.wire.duplicated += u64::from(dup);
            for _ in 0..copies {
                let at = self.now + self.latency();
                let seq = self.next_seq();
                let d = Delivery {
                    from: i,
                    to: j,
                    link,
                    src,
                    dst,
                    packet: packet.clone(),
                };
                self.deliveries.insert((at, seq), d);
            }
        }
    }

    fn latency(&mut self) -> Duration {
        let lo = u64::try_from(self.cfg.latency_min.as_micros()).unwrap_or(u64::MAX);
        let hi = u64::try_from(self.cfg.latency_max.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.rng.random_range(lo..=hi))
    }

    /// Apply events, deliver datagrams and fire timers until nothing is due at `now`.
    fn step_now(&mut self) {
        for _ in 0..MAX_ROUNDS_PER_INSTANT {
            if self.violation.is_some() {
                return;
            }
            let mut progress = false;
            while let Some(entry) = self.events.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let event = entry.remove();
                self.apply(event);
                progress = true;
            }
            while let Some(entry) = self.deliveries.first_entry() {
                if entry.key().0 > self.now {
                    break;
                }
                let d = entry.remove();
                self.deliver(d);
                progress = true;
            }
            for i in 0..self.nodes.len() {
                let now = self.now;
                let Some(nd) = self.nodes[i].node.as_mut() else {
                    continue;
                };
                if nd.poll_timeout().is_none_or(|t| t > now) {
                    continue;
                }
                nd.handle_timeout(now);
                self.drain(i);
                progress = true;
                let stuck = self.nodes[i]
                    .node
                    .as_ref()
                    .and_then(Node::poll_timeout)
                    .is_some_and(|t| t <= now);
                if stuck {
                    self.fail(format!(
                        "n{} poll_timeout() is still due after handle_timeout",
                        i + 1
                    ));
                }
            }
            if !progress {
                self.check();
                return;
            }
        }
        self.fail(format!(
            "livelock: more than {MAX_ROUNDS_PER_INSTANT} rounds at one instant"
        ));
    }

    fn deliver(&mut self, d: Delivery) {
        if !self.reaches(d.from, d.to, d.link) {
            return;
        }
        let meta = RxMeta {
            link: d.link,
            src: d.src,
            dst: d.dst,
            ttl: TTL,
            local: Some(match d.src {
                IpAddr::V4(_) => IpAddr::V4(self.nodes[d.to].v4),
                IpAddr::V6(_) => IpAddr::V6(self.nodes[d.to].v6),
            }),
        };
        if let Some(nd) = self.nodes[d.to].node.as_mut() {
            nd.handle_datagram(self.now, meta, &d.packet);
            self.wire.delivered += 1;
            self.drain(d.to);
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let timers = self
            .nodes
            .iter()
            .filter_map(|sn| sn.node.as_ref().and_then(Node::poll_timeout));
        let deliveries = self.deliveries.keys().next().map(|k| k.0);
        let events = self.events.keys().next().map(|k| k.0);
        timers.chain(deliveries).chain(events).min()
    }
}

pub(super) fn id1(vhid: u8) -> Option<VhostId> {
    Vhid::new(vhid).map(|vhid| VhostId {
        link: LinkId(1),
        vhid,
    })
}

/// The trace names vhosts by vhid alone on link 1, and adds `@link` elsewhere.
pub(crate) fn link_suffix(link: LinkId) -> String {
    if link == LinkId(1) {
        String::new()
    } else {
        format!("@link{}", link.0)
    }
}
