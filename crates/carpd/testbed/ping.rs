//! The client's pinger: `ping -n -D -O` in a namespace, its output parsed
//! line by line into a [`Record`] of probes (see [`super::outage`] for what
//! is computed from it).
//!
//! What the lines say (iputils): a reply line carries the receive time
//! (`-D`), the sequence number and the round trip, so its probe's send time
//! is receive time minus round trip. `no answer yet for icmp_seq=N` (`-O`)
//! is printed when probe N+1 is sent and N has no reply, so it dates N+1's
//! send. Replies may come late (after that line), twice (`DUP!`) or out of
//! order. Sequence numbers are 16 bits and wrap; they are unwrapped here.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;

/// What is known of one probe; times are epoch seconds (ping's clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Unwrapped sequence number.
    pub seq: u64,
    /// When it was sent, if a line dates it.
    pub sent: Option<f64>,
    /// When its first reply arrived.
    pub reply: Option<f64>,
    /// When ping noted it had no answer yet.
    pub no_answer: Option<f64>,
}

/// Every probe seen so far, by sequence number.
#[derive(Debug, Clone, Default)]
pub struct Record {
    probes: BTreeMap<u64, Probe>,
    /// Highest unwrapped sequence number seen.
    high: Option<u64>,
    /// Latest time stamp of any line.
    latest: Option<f64>,
}

impl Record {
    /// Parse a whole transcript.
    pub fn parse(text: &str) -> Record {
        let mut r = Record::default();
        for line in text.lines() {
            r.push_line(line);
        }
        r
    }

    /// Take one line of `ping -D -O` output; lines without a time stamp and
    /// a sequence number (header, statistics) are ignored.
    pub fn push_line(&mut self, line: &str) {
        let Some(stamp) = line
            .strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .and_then(|t| t.parse::<f64>().ok())
        else {
            return;
        };
        let Some(raw) = field(line, "icmp_seq=").and_then(|s| s.parse::<u16>().ok()) else {
            return;
        };
        self.latest = Some(self.latest.map_or(stamp, |l| l.max(stamp)));
        let seq = self.unwrap_seq(raw);
        if line.contains("no answer yet") {
            self.probe(seq).no_answer.get_or_insert(stamp);
            // Printed as probe seq+1 goes out: that dates its send.
            self.probe(seq + 1).sent.get_or_insert(stamp);
        } else if line.contains(" bytes from ") {
            let rtt = field(line, "time=")
                .and_then(|t| t.parse::<f64>().ok())
                .map_or(0.0, |ms| ms / 1000.0);
            let p = self.probe(seq);
            if p.reply.is_none_or(|r| stamp < r) {
                p.reply = Some(stamp);
                p.sent = Some(stamp - rtt);
            }
        } else {
            // An error reply (unreachable, ...): the probe went out, no answer.
            self.probe(seq);
        }
    }

    fn probe(&mut self, seq: u64) -> &mut Probe {
        self.probes.entry(seq).or_insert(Probe {
            seq,
            sent: None,
            reply: None,
            no_answer: None,
        })
    }

    /// Map a 16-bit sequence number to the one nearest the highest seen.
    fn unwrap_seq(&mut self, raw: u16) -> u64 {
        let raw = u64::from(raw);
        let Some(high) = self.high else {
            self.high = Some(raw);
            return raw;
        };
        let mut seq = (high & !0xffff) | raw;
        if seq + 0x8000 < high {
            seq += 0x1_0000;
        } else if seq > high + 0x8000 && seq >= 0x1_0000 {
            seq -= 0x1_0000;
        }
        self.high = Some(high.max(seq));
        seq
    }

    /// The probes in sequence order.
    pub fn probes(&self) -> impl Iterator<Item = &Probe> {
        self.probes.values()
    }

    /// The probe with sequence number `seq`, if any line named it.
    pub fn get(&self, seq: u64) -> Option<&Probe> {
        self.probes.get(&seq)
    }

    /// The latest time stamp in the record (the record's "now").
    pub fn latest(&self) -> Option<f64> {
        self.latest
    }

    /// Number of probes with a reply.
    pub fn answered(&self) -> usize {
        self.probes.values().filter(|p| p.reply.is_some()).count()
    }
}

/// The word after `key` in `line`.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(key).nth(1)?.split_whitespace().next()
}

/// `ping` running in a namespace, recording every line.
pub struct Pinger {
    child: Child,
    reader: Option<JoinHandle<()>>,
    record: Arc<Mutex<Record>>,
}

impl Pinger {
    /// Start `ping -n -D -O -i <interval> <dst>` in `ns` (intervals under
    /// 0.2 s need root). The kernel's timer makes the real interval longer
    /// (10 ms gives about 16 ms); [`super::outage`] measures it.
    pub fn start(ns: &str, dst: &str, interval: Duration) -> anyhow::Result<Pinger> {
        let secs = format!("{}", interval.as_secs_f64());
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-n", "-D", "-O", "-i", &secs, dst,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start ping (install iputils-ping)")?;
        let stdout = child.stdout.take().context("ping has no stdout")?;
        let record = Arc::new(Mutex::new(Record::default()));
        let sink = record.clone();
        let echo = std::env::var_os("CARPD_PING_LOG").is_some();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("ping: {line}");
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_line(&line);
            }
        });
        Ok(Pinger {
            child,
            reader: Some(reader),
            record,
        })
    }

    /// A copy of what has been recorded so far.
    pub fn snapshot(&self) -> Record {
        self.record
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Stop ping (SIGINT, so it flushes) and return the record.
    pub fn finish(mut self) -> Record {
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(raw),
                nix::sys::signal::Signal::SIGINT,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        self.snapshot()
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
