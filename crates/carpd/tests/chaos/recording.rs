//! What the soak records: every 50 ms per node the vhid's state from the
//! control socket and whether its namespace holds the VIP; gratuitous ARPs
//! seen by tcpdump at the switch and at the client.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use carpd::control::types::Request;

use super::{SAMPLE, VHID, VIP};
use crate::common::daemon::{query_within, state_name};
use crate::common::{Lab, run_timeout};

// ===== what is recorded =====

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Life {
    Running,
    Stopped,
    Dead,
    Starting,
}

/// One poll of one node.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t: f64,
    pub life: Life,
    /// The vhid's state from the control socket; `None` if not asked
    /// (not running) or no answer.
    pub state: Option<String>,
    /// Whether the namespace holds the VIP; `None` if `ip` failed.
    pub vip: Option<bool>,
}

/// Shared between the injector and the samplers.
pub struct Shared {
    pub t0: Instant,
    /// Per node: life and an epoch bumped at every change (a sample that
    /// straddles a change is thrown away).
    pub lives: Mutex<[(Life, u32); 3]>,
    pub samples: [Mutex<Vec<Sample>>; 3],
    pub stop: AtomicBool,
}

impl Shared {
    pub fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }
    pub fn life(&self, i: usize) -> (Life, u32) {
        self.lives.lock().unwrap_or_else(|p| p.into_inner())[i]
    }
    pub fn set_life(&self, i: usize, life: Life) {
        let mut l = self.lives.lock().unwrap_or_else(|p| p.into_inner());
        l[i] = (life, l[i].1 + 1);
    }
    pub fn latest(&self, i: usize) -> Option<Sample> {
        self.samples[i]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last()
            .cloned()
    }
}

/// Sets the stop flag when dropped, also while unwinding, so the scoped
/// sampler threads end and the scope can be left.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn vip_held(ns: &str) -> Option<bool> {
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
pub fn sampler(shared: &Shared, i: usize, ns: &str, sock: &Path) {
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let (life, epoch) = shared.life(i);
        let t = shared.now();
        let state = if life == Life::Running {
            query_within(sock, &Request::Status, Duration::from_millis(300))
                .and_then(|r| r.vhosts)
                .and_then(|v| v.into_iter().find(|v| v.vhid == VHID))
                .map(|v| state_name(&v))
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
/// Start tcpdump for ARP in `ns` writing to `file`; wait until it listens.
pub fn capture(lab: &Lab, ns: &str, args: &[&str], file: &Path) -> u32 {
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

/// Gratuitous ARPs for the VIP: from the switch capture (time, ingress host
/// index) and from the client capture (time). Times relative to the soak.
pub fn garps(
    ports: &[&str],
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
        if let Some(h) = ports.iter().position(|p| *p == dev) {
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
