//! `carpd lab`: a demonstration LAN in network namespaces, built on the
//! test bed the integration tests use (`testbed/`), so its outage figures
//! are computed by the same code as theirs.
//!
//! Three carpd nodes and a client on one bridge, documentation addresses
//! only (192.0.2.0/24, 2001:db8::/64). The client pings the virtual
//! address every 10 ms (about 16 ms in practice; the lab measures it) while
//! the lab crashes the master (kill -9), restarts it (preemption), and
//! stops it cleanly (SIGTERM, bow-out). Everything is removed again on
//! exit, Ctrl-C included: the topology's `Drop` cleans up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::Signal;

use crate::testbed::cmd::wall_now;
use crate::testbed::nodes::{Carpd, is_master, master_down};
use crate::testbed::outage::Outage;
use crate::testbed::ping::Pinger;
use crate::testbed::topology::Topology;
use crate::testbed::words::Words;

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

const VHID: u8 = 1;
const VIP: &str = "192.0.2.50";
const VIP6: &str = "2001:db8::50";
/// Name and advskew of the nodes, hosts 0-2 of the topology.
const NODES: [(&str, u8); 3] = [("a", 0), ("b", 50), ("c", 100)];
/// Host index of the client.
const CLIENT: usize = 3;
const PING_INTERVAL: Duration = Duration::from_millis(10);
/// Time after a step before its probes are judged (late replies included).
const AFTERMATH: Duration = Duration::from_millis(1200);

struct Lab {
    topo: Topology,
    nodes: Vec<Carpd>,
    limit: Duration,
}

impl Lab {
    fn is_master(&self, i: usize) -> bool {
        self.nodes[i].view(VHID).as_ref().is_some_and(is_master)
    }

    /// Wait until exactly one of `among` is MASTER; return it and how long
    /// it took.
    fn wait_master(&self, among: &[usize]) -> anyhow::Result<(usize, Duration)> {
        self.wait_master_from(among, Instant::now())
    }

    /// [`Lab::wait_master`], timed from `start`.
    fn wait_master_from(
        &self,
        among: &[usize],
        start: Instant,
    ) -> anyhow::Result<(usize, Duration)> {
        while start.elapsed() < self.limit {
            check_interrupt()?;
            let masters: Vec<usize> = among
                .iter()
                .copied()
                .filter(|&i| self.is_master(i))
                .collect();
            if let [one] = masters[..] {
                return Ok((one, start.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!("no single MASTER after {:?}", self.limit)
    }

    fn signal(&self, i: usize, sig: Signal) -> anyhow::Result<()> {
        let d = &self.nodes[i];
        self.topo.signal(d.pid, sig)?;
        if self
            .topo
            .wait_child(d.pid, Duration::from_secs(5))
            .is_none()
        {
            bail!("carpd on node {} ignored {sig}", d.name);
        }
        Ok(())
    }

    fn show(&self) {
        for d in &self.nodes {
            match d.view(VHID) {
                Some(v) => println!(
                    "    node {}: {:<7} advskew {:>3}  since {:>5.1}s ({}), last master seen {}",
                    d.name,
                    crate::testbed::nodes::state_name(&v),
                    v.advskew,
                    v.since_secs,
                    v.cause,
                    v.last_master.as_deref().unwrap_or("-")
                ),
                None => println!("    node {}: not running", d.name),
            }
        }
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

/// The client's view of one step, from `from` (epoch seconds) until now.
fn client_saw(pinger: &Pinger, from: f64) -> Outage {
    let o = pinger.snapshot().outage(from, wall_now());
    println!("   client: {o}");
    if o.lost > o.run {
        // Several runs: the path came back and broke again (the switch or
        // the client re-learning where the virtual MAC or the VIP lives).
        println!(
            "   ({} more probes lost in other runs than the longest one)",
            o.lost - o.run
        );
    }
    o
}

/// Run the lab: build, demonstrate, summarise, clean up.
pub fn run(args: LabArgs) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the lab creates network namespaces and needs root (try: sudo carpd lab)");
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        let handler = nix::sys::signal::SigHandler::Handler(on_interrupt);
        let _ = nix::sys::signal::signal(Signal::SIGINT, handler);
        let _ = nix::sys::signal::signal(Signal::SIGTERM, handler);
    }
    println!("== carpd lab: 3 carpd nodes and a client on one bridge, in network namespaces");
    let topo = Topology::build("lab", 4)?;
    println!(
        "   namespaces {}-h{{0,1,2}} (nodes a, b, c), -h3 (client) and -sw (the bridge)",
        topo.switch.trim_end_matches("-sw")
    );
    println!("   LAN 192.0.2.0/24 and 2001:db8::/64: nodes .10-.12, client .13");
    println!(
        "   virtual addresses {VIP}/24 and {VIP6}/64 on vhid {VHID} (virtual MAC 00:00:5e:00:01:01)"
    );
    let exe = std::env::current_exe().context("cannot find the carpd executable")?;
    let mut lab = Lab {
        nodes: Vec::new(),
        limit: Duration::from_secs(10 + 4 * u64::from(args.advbase)),
        topo,
    };
    // The election is timed from the first node's start: its master-down
    // timer runs from then, not from when the last node answered.
    let first_started = Instant::now();
    for (i, (name, skew)) in NODES.into_iter().enumerate() {
        // No guard: the demo's dead master is a dead host, which hands nothing over.
        let words = Words::new("eth0", VHID)
            .option("--no-guard")
            .preempt()
            .advbase(args.advbase)
            .advskew(skew)
            .pass("lab-secret")
            .addr(&format!("{VIP}/24"))
            .addr(&format!("{VIP6}/64"))
            .build();
        let mut d = Carpd::new(&lab.topo, i, name, &exe, words);
        d.log_level = 6;
        d.start(&lab.topo)?;
        println!("   started carpd on node {name} (advskew {skew}, preempt on)");
        lab.nodes.push(d);
    }
    let all = [0, 1, 2];
    let base = u32::from(args.advbase);
    let down = |skew: u8| master_down(base, u32::from(skew)).as_secs_f64();

    println!("\n== 1. election");
    let (master, took) = lab.wait_master_from(&all, first_started)?;
    println!(
        "   node {} is MASTER {:.2}s after it started: every node starts as BACKUP and waits master-down \
         (3 x advbase + advskew/256: a {:.2}s, b {:.2}s, c {:.2}s); a's runs out first, \
         its adverts then restart the others' timers",
        lab.nodes[master].name,
        took.as_secs_f64(),
        down(0),
        down(50),
        down(100)
    );
    lab.show();

    println!(
        "\n== 2. the client pings {VIP} every {} ms (ping -i {})",
        PING_INTERVAL.as_millis(),
        PING_INTERVAL.as_secs_f64()
    );
    let pinger = Pinger::start(lab.topo.ns(CLIENT), VIP, PING_INTERVAL)?;
    let from = wall_now();
    sleep(Duration::from_secs(2))?;
    let baseline = client_saw(&pinger, from);
    if let Some(i) = baseline.interval {
        println!(
            "   (ping really sends every {:.1} ms: the kernel rounds its timer up)",
            i.as_secs_f64() * 1000.0
        );
    }

    let mut summary: Vec<(&str, Duration, Outage)> = Vec::new();
    let m = lab.nodes[master].name.clone();
    println!("\n== 3. the master (node {m}) dies: kill -9 and its link goes dark");
    let from = wall_now();
    let t = Instant::now();
    lab.signal(master, Signal::SIGKILL)?;
    // A killed process leaves its addresses behind; a dead host answers nothing.
    let ns = lab.nodes[master].ns.clone();
    lab.topo.link_set(&ns, "eth0", false)?;
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != master).collect();
    let (next, _) = lab.wait_master(&rest)?;
    let took = t.elapsed();
    println!(
        "   node {} took over after {:.2}s: its master-down ran out (no adverts from {m}); \
         the other backup heard {}'s adverts and stayed BACKUP",
        lab.nodes[next].name,
        took.as_secs_f64(),
        lab.nodes[next].name
    );
    sleep(AFTERMATH)?;
    summary.push(("crash (kill -9)", took, client_saw(&pinger, from)));
    lab.show();

    println!("\n== 4. node {m} boots again: carpd clears the stale address, then preempts");
    let from = wall_now();
    let t = Instant::now();
    // As after a reboot, carpd starts before the link is up, so the stale
    // address is gone before the host can answer (or announce) anything.
    lab.nodes[master].start(&lab.topo)?;
    lab.topo.link_set(&ns, "eth0", true)?;
    let (back, _) = loop {
        let (w, took) = lab.wait_master(&all)?;
        if w == master || t.elapsed() > lab.limit {
            break (w, took);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t.elapsed();
    println!(
        "   node {} is MASTER after {:.2}s: it came up BACKUP, heard {}'s next advert (advskew \
         50, slower than its own 0) and with --preempt took over; {} heard the faster \
         adverts and stepped down to BACKUP",
        lab.nodes[back].name,
        took.as_secs_f64(),
        lab.nodes[next].name,
        lab.nodes[next].name
    );
    sleep(AFTERMATH)?;
    summary.push(("preemption", took, client_saw(&pinger, from)));
    lab.show();

    let b = lab.nodes[back].name.clone();
    println!("\n== 5. SIGTERM the master (node {b}): it bows out (advbase 255, advskew 255)");
    let from = wall_now();
    let t = Instant::now();
    // Time the takeover from the signal, not from the old master's exit
    // (its shutdown waits for the successor, then releases and cleans up).
    let pid = lab.nodes[back].pid;
    lab.topo.signal(pid, Signal::SIGTERM)?;
    let rest: Vec<usize> = all.iter().copied().filter(|&i| i != back).collect();
    let (next, _) = lab.wait_master(&rest)?;
    let took = t.elapsed();
    if lab.topo.wait_child(pid, Duration::from_secs(5)).is_none() {
        bail!("carpd on node {b} ignored SIGTERM");
    }
    sleep(AFTERMATH)?;
    // Every backup preempts on a bow-out; the first seen MASTER need not be
    // the one that stays (the others yield to the best within one advert).
    let (settled, _) = lab.wait_master(&rest)?;
    let first = &lab.nodes[next].name;
    if settled == next {
        println!(
            "   node {first} took over after {:.3}s: the bow-out advert says \"slower than \
             anyone\", so the backups preempt at once instead of waiting master-down, and the \
             best stays",
            took.as_secs_f64()
        );
    } else {
        println!(
            "   node {first} took over after {:.3}s, then node {} (better advskew) stayed MASTER: \
             the bow-out advert says \"slower than anyone\", so every backup preempts at once \
             instead of waiting master-down, and the others yield to the best",
            took.as_secs_f64(),
            lab.nodes[settled].name
        );
    }
    summary.push(("planned stop (SIGTERM)", took, client_saw(&pinger, from)));
    lab.show();

    println!(
        "\n== summary (advbase {}s; outage = from the first lost probe's send to the next \
         answered one's, so about lost-in-a-row x interval)",
        args.advbase
    );
    println!(
        "   step                     new master  client outage  lost in a row  lost  probes  ms/probe"
    );
    for (what, took, o) in &summary {
        println!(
            "   {what:<24} {:>9.2}s {:>11} ms {:>14} {:>5} {:>7} {:>9.1}",
            took.as_secs_f64(),
            o.outage.as_millis(),
            o.run,
            o.lost,
            o.probes,
            o.interval_ms()
        );
    }
    if args.keep {
        println!(
            "\n   lab kept running; press Ctrl-C to remove it (logs in {})",
            lab.topo.dir().display()
        );
        while !INTERRUPTED.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    drop(pinger);
    drop(lab);
    println!("\n== cleaned up: namespaces removed, daemons stopped");
    Ok(())
}
