//! The one computation of a client's outage and lost probes, from a ping
//! [`Record`]. The lab, the tests and the chaos soak report these numbers,
//! so they are computed here only, and from the same probes.
//!
//! Definitions, for the probes *sent* in a window `[from, to]`:
//! - a probe is **answered** if a reply came within [`ANSWER_WITHIN`] of
//!   its send; it is **lost** if not, once that time has passed in the
//!   record or a later probe was answered (else it is still pending and
//!   left out);
//! - **lost** counts the lost probes;
//! - the **outage** is the longest time from the send of the first probe of
//!   a run of consecutive lost probes to the send of the next answered
//!   probe (to the last probe's send plus one interval if none is answered
//!   yet). It is zero exactly when nothing is lost, and it is about
//!   `run × interval` for a run of `run` lost probes;
//! - the **interval** is the mean time between the sends of the window's
//!   probes (`ping -i 0.01` really sends every 16-20 ms here), not the one
//!   asked for on the command line. The outage is the sum of the `run` send
//!   intervals across its run, so it lies between `run` times the shortest
//!   and `run` times the longest interval in the window ([`Outage::steps`]).
//!
//! Send times are known for answered probes (receive time minus round trip)
//! and for a probe following an unanswered one (`no answer yet` dates it);
//! the rest are interpolated between the nearest known neighbours.

use std::time::Duration;

use super::ping::Record;

/// A reply later than this counts as lost: the client has given up.
pub const ANSWER_WITHIN: f64 = 1.0;

/// What the client saw in one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outage {
    /// Probes sent in the window and judged (answered or lost).
    pub probes: u64,
    /// Of those, lost.
    pub lost: u64,
    /// Length of the run of lost probes that gives the outage.
    pub run: u64,
    /// The longest time without service (see the module doc).
    pub outage: Duration,
    /// Send time of the first probe of that run (epoch seconds).
    pub at: Option<f64>,
    /// The mean time between the sends of the window's probes.
    pub interval: Option<Duration>,
    /// The shortest and longest time between two consecutive sends in the
    /// window: `run × shortest <= outage <= run × longest` always holds.
    pub steps: Option<(Duration, Duration)>,
}

impl Outage {
    /// Milliseconds per probe, for messages ("one probe per 16.2 ms").
    pub fn interval_ms(&self) -> f64 {
        self.interval.map_or(0.0, |i| i.as_secs_f64() * 1000.0)
    }
}

impl std::fmt::Display for Outage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "outage {} ms ({} of {} probes lost, {} in a row; one probe per {:.1} ms)",
            self.outage.as_millis(),
            self.lost,
            self.probes,
            self.run,
            self.interval_ms()
        )
    }
}

impl Record {
    /// The typical interval between sends, for extrapolating send times:
    /// the median over consecutive dated probes.
    pub fn interval(&self) -> Option<Duration> {
        let dated: Vec<(u64, f64)> = self
            .probes()
            .filter_map(|p| p.sent.map(|t| (p.seq, t)))
            .collect();
        let mut steps: Vec<f64> = dated
            .windows(2)
            .filter(|w| w[1].0 == w[0].0 + 1)
            .map(|w| w[1].1 - w[0].1)
            .collect();
        if steps.is_empty() {
            return None;
        }
        steps.sort_by(f64::total_cmp);
        let median = steps[steps.len() / 2];
        (median > 0.0).then(|| Duration::from_secs_f64(median))
    }

    /// Send time of every probe from the first to the highest sequence
    /// number, dated or interpolated (a sequence number no line names was
    /// sent all the same: ping numbers its probes one by one).
    fn send_times(&self, interval: f64) -> Vec<(u64, f64, Option<f64>)> {
        let (Some(first), Some(last)) = (self.probes().next(), self.probes().last()) else {
            return Vec::new();
        };
        let dated: Vec<(u64, f64)> = self
            .probes()
            .filter_map(|p| p.sent.map(|t| (p.seq, t)))
            .collect();
        let mut out = Vec::new();
        let mut k = 0; // index of the first dated probe at or after seq
        for seq in first.seq..=last.seq {
            while k < dated.len() && dated[k].0 < seq {
                k += 1;
            }
            let next = dated.get(k).copied();
            let prev = k.checked_sub(1).map(|i| dated[i]);
            let sent = match (prev, next) {
                (_, Some((s, t))) if s == seq => t,
                (Some((s0, t0)), Some((s1, t1))) => {
                    t0 + (t1 - t0) * (seq - s0) as f64 / (s1 - s0) as f64
                }
                (Some((s0, t0)), None) => t0 + interval * (seq - s0) as f64,
                (None, Some((s1, t1))) => t1 - interval * (s1 - seq) as f64,
                (None, None) => continue,
            };
            let reply = self.get(seq).and_then(|p| p.reply);
            out.push((seq, sent, reply));
        }
        out
    }

    /// Outage and lost probes for the probes sent in `[from, to]` (epoch s).
    pub fn outage(&self, from: f64, to: f64) -> Outage {
        let interval = self.interval();
        let step = interval.map_or(0.0, |i| i.as_secs_f64());
        let now = self.latest().unwrap_or(f64::NEG_INFINITY);
        let all = self.send_times(step);
        let answered =
            |reply: Option<f64>, sent: f64| reply.is_some_and(|r| r - sent <= ANSWER_WITHIN);
        let last_answered = all
            .iter()
            .filter(|(_, s, r)| answered(*r, *s))
            .map(|(q, _, _)| *q)
            .max();
        let mut result = Outage {
            probes: 0,
            lost: 0,
            run: 0,
            outage: Duration::ZERO,
            at: None,
            interval: None,
            steps: None,
        };
        let inside: Vec<(u64, f64)> = all
            .iter()
            .filter(|(_, t, _)| (from..=to).contains(t))
            .map(|(q, t, _)| (*q, *t))
            .collect();
        if let (Some(first), Some(last)) = (inside.first(), inside.last())
            && last.0 > first.0
        {
            let secs = (last.1 - first.1) / (last.0 - first.0) as f64;
            result.interval = Some(Duration::from_secs_f64(secs.max(0.0)));
            let gaps = inside.windows(2).map(|w| (w[1].1 - w[0].1).max(0.0));
            let (lo, hi) = gaps.fold((f64::MAX, 0.0f64), |(lo, hi), g| (lo.min(g), hi.max(g)));
            result.steps = Some((Duration::from_secs_f64(lo), Duration::from_secs_f64(hi)));
        }
        // (first lost seq, its send time, run length) of the open run.
        let mut open: Option<(f64, u64)> = None;
        let close = |open: &mut Option<(f64, u64)>, end: f64, result: &mut Outage| {
            if let Some((start, run)) = open.take() {
                let len = Duration::from_secs_f64((end - start).max(0.0));
                if len > result.outage || result.at.is_none() {
                    result.outage = len;
                    result.run = run;
                    result.at = Some(start);
                }
            }
        };
        for &(seq, sent, reply) in &all {
            if answered(reply, sent) {
                // The run ends at this probe's send, in the window or not.
                close(&mut open, sent, &mut result);
                if (from..=to).contains(&sent) {
                    result.probes += 1;
                }
                continue;
            }
            if !(from..=to).contains(&sent) {
                continue;
            }
            let judged = now - sent >= ANSWER_WITHIN || last_answered.is_some_and(|a| a > seq);
            if !judged {
                continue;
            }
            result.probes += 1;
            result.lost += 1;
            match &mut open {
                Some((_, run)) => *run += 1,
                None => open = Some((sent, 1)),
            }
        }
        if let Some((start, run)) = open {
            // Still going: it lasted at least until one interval after the
            // last lost probe was sent.
            let end = start + step * run as f64;
            close(&mut Some((start, run)), end, &mut result);
        }
        result
    }
}
