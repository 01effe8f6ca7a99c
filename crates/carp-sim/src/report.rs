//! What a run leaves behind: transitions, MASTER tenures and a readable summary.

use core::time::Duration;
use std::collections::BTreeSet;

use carp_proto::{Cause, Instant, State, VhostId};

use crate::sim::Sim;

/// One state change of one vhost on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Virtual time.
    pub at: Instant,
    /// Node number (1-based).
    pub node: usize,
    /// The vhost.
    pub id: VhostId,
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why.
    pub cause: Cause,
}

/// A period during which one node was MASTER of one vhost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenure {
    /// Node number (1-based).
    pub node: usize,
    /// The vhost.
    pub id: VhostId,
    /// When it became MASTER.
    pub start: Instant,
    /// When it stopped (state change or crash), `None` if still MASTER.
    pub end: Option<Instant>,
}

impl Sim {
    /// Return the first transition at or after `after` that matches `pred`.
    pub fn first_transition(
        &self,
        after: Instant,
        pred: impl Fn(&Transition) -> bool,
    ) -> Option<Transition> {
        self.transitions()
            .iter()
            .find(|t| t.at >= after && pred(t))
            .copied()
    }

    /// Return the first time at or after `after` that some node became MASTER of `id`.
    pub fn first_master_after(&self, after: Instant, id: VhostId) -> Option<Transition> {
        self.first_transition(after, |t| t.id == id && t.to == State::Master)
    }

    /// Return a human-readable summary: who was MASTER when, the gaps without
    /// a MASTER, dual-MASTER time, announcements and packet counts.
    pub fn summary(&self) -> String {
        let tenures = self.tenures();
        let ids: BTreeSet<VhostId> = tenures.iter().map(|t| t.id).collect();
        let mut s = String::new();
        for id in ids {
            s += &format!("vhid {} (link {}):\n", id.vhid, id.link.0);
            let mine: Vec<Tenure> = tenures.iter().filter(|t| t.id == id).copied().collect();
            let mut covered_until: Option<Instant> = None;
            let mut dual = Duration::ZERO;
            for t in &mine {
                let end = t.end.unwrap_or(self.now());
                if let Some(c) = covered_until {
                    if t.start > c {
                        s += &format!(
                            "  {:>12} .. {:<12} nobody is MASTER ({} s without a master)\n",
                            c.to_string(),
                            t.start.to_string(),
                            secs(t.start - c)
                        );
                    } else {
                        dual += end.min(c) - t.start;
                    }
                }
                let until = match t.end {
                    Some(e) => e.to_string(),
                    None => "now".to_string(),
                };
                s += &format!(
                    "  {:>12} .. {:<12} n{} is MASTER ({} s)\n",
                    t.start.to_string(),
                    until,
                    t.node,
                    secs(end - t.start)
                );
                covered_until = Some(covered_until.map_or(end, |c| c.max(end)));
            }
            if let Some(c) = covered_until
                && c < self.now()
            {
                s += &format!(
                    "  {:>12} .. {:<12} nobody is MASTER\n",
                    c.to_string(),
                    "now"
                );
            }
            if dual > Duration::ZERO {
                s += &format!(
                    "  two or more MASTERs at once for {} s in total\n",
                    secs(dual)
                );
            }
        }
        let ann: Vec<String> = (1..=self.node_count())
            .map(|n| format!("n{n}={}", self.announces(n)))
            .collect();
        s += &format!("gratuitous ARP/NA bursts: {}\n", ann.join(" "));
        let (sent, delivered, lost, dup, fails) = self.wire_counts();
        s += &format!(
            "advertisements: {sent} sent, {delivered} delivered, {lost} lost, {dup} duplicated, {fails} send failures\n"
        );
        s
    }
}

/// Format a duration as seconds with microsecond precision, like the trace.
pub(crate) fn secs(d: Duration) -> String {
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}
