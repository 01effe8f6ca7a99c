//! A `kill -9`ed MASTER hands over as a planned stop does: its guard
//! removes the VIP and the macvlan, then sends the bow-out, so the BACKUP
//! takes over at once instead of after master-down, and the two never hold
//! the VIP together. The same through `carpd stop-post` (systemd's
//! `ExecStopPost=`) with the guard off; and the baseline without either.
//!
//! Both namespaces' addresses are watched by in-process netlink dumps in a
//! tight loop; an overlap counts only when it is proven: A's dump *started*
//! after a dump of B's had *finished* showing the VIP (B keeps it), and
//! still showed it on A.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::daemon::{CARPD, Carpd, Pinger, wait_single_master, wait_state_fast, wall_now};
use common::testbed::words::Words;
use common::{Lab, run_timeout, spawn_in_netns};
use futures::TryStreamExt;
use nix::sys::signal::Signal;
use rtnetlink::packet_route::address::AddressAttribute;

const VIP: &str = "192.0.2.50";
/// A's IPv6 VIP: its bow-out leaves as a frame from the link-local address.
const VIP6: &str = "2001:db8::50";
const PASS: &str = "guard-secret";
/// A first election (master-down of the worst node, 4.2 s) with slack.
const ELECTION: Duration = Duration::from_secs(8);
/// Generous bound for a guarded takeover: far below B's master-down (4.2 s).
const GUARDED: Duration = Duration::from_secs(1);

fn words(advskew: u8, guard: bool) -> Vec<String> {
    let w = Words::new("eth0", 1)
        .advbase(1)
        .advskew(advskew)
        .pass(PASS)
        .lladdr("virtual")
        .addr(&format!("{VIP}/24"))
        .addr(&format!("{VIP6}/64"));
    if guard { w } else { w.option("--no-guard") }.build()
}

/// One netlink address dump: when it started and ended, and whether the VIP was there.
#[derive(Debug, Clone, Copy)]
struct Sample {
    start: Instant,
    end: Instant,
    has: bool,
}

/// A thread dumping the addresses of one namespace in a loop.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Watch {
    fn start(ns: &str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let vip: IpAddr = VIP.parse().unwrap();
        let thread = spawn_in_netns(ns, move || {
            common::block_on(Duration::from_secs(60), async move {
                let (conn, handle, _) = rtnetlink::new_connection().expect("netlink");
                tokio::spawn(conn);
                let mut samples = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let msgs: Vec<_> = handle
                        .address()
                        .get()
                        .execute()
                        .try_collect()
                        .await
                        .expect("dump addresses");
                    let has = msgs.iter().any(|m| {
                        m.attributes.iter().any(|a| {
                            matches!(a, AddressAttribute::Address(x) | AddressAttribute::Local(x) if *x == vip)
                        })
                    });
                    samples.push(Sample {
                        start,
                        end: Instant::now(),
                        has,
                    });
                    // A short pause leaves the CPUs to the daemons and the
                    // guard (a dump takes about 0.1 ms).
                    std::thread::sleep(Duration::from_micros(300));
                }
                samples
            })
        });
        Watch { stop, thread }
    }

    fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("watcher")
    }
}

/// What the two watchers saw after `t0` (the kill); printed whole.
#[derive(Debug)]
#[allow(dead_code)] // `dumps` and `a_gap` are only printed
struct Seen {
    /// A's first dump without the VIP, from `t0`.
    a_gone: Option<Duration>,
    /// B's first dump with the VIP, from `t0`.
    b_has: Option<Duration>,
    /// A proven moment when both held it: how long after B's first
    /// sighting A was still seen with it.
    overlap: Option<Duration>,
    /// Dumps made (A, B) and the longest gap between two of A's.
    dumps: (usize, usize),
    a_gap: Duration,
}

fn analyse(t0: Instant, a: &[Sample], b: &[Sample]) -> Seen {
    let after = |s: &&Sample| s.start >= t0;
    let a_gone = a.iter().filter(after).find(|s| !s.has).map(|s| s.end - t0);
    let b_first = b.iter().filter(after).find(|s| s.has);
    let b_has = b_first.map(|s| s.end - t0);
    let overlap = b_first.and_then(|bf| {
        a.iter()
            .filter(|s| s.has && s.start > bf.end)
            .map(|s| s.start - bf.end)
            .max()
    });
    let a_gap = a
        .windows(2)
        .filter(|w| w[0].start >= t0)
        .map(|w| w[1].end - w[0].end)
        .max()
        .unwrap_or_default();
    Seen {
        a_gone,
        b_has,
        overlap,
        dumps: (a.len(), b.len()),
        a_gap,
    }
}

/// Links named like carpd's macvlans (`carp<idx>v<vhid>`) in `ns`.
fn macvlans(lab: &Lab, ns: &str) -> Vec<String> {
    lab.exec_ok(ns, &["ip", "-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("carp"))
        .collect()
}

/// Will files in `dir`.
fn wills(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("will-"))
        })
        .collect()
}

/// Pids of guard processes whose will file lies under `dir`.
fn guards(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(" guard --will ") && cmd.contains(&needle)
        })
        .collect()
}

/// A MASTER and B BACKUP, a client pinging the VIP every 10 ms.
struct Pair {
    lab: Lab,
    a: Carpd,
    b: Carpd,
    pinger: Pinger,
}

/// VRRPv3 words (interval 1 s), lladdr virtual.
fn vrrp_words(priority: u8) -> Vec<String> {
    Words::new("eth0", 1)
        .raw("carpver")
        .raw("3")
        .raw("vrrpprio")
        .raw(&priority.to_string())
        .raw("vrrpinterval")
        .raw("100")
        .addr(&format!("{VIP}/24"))
        .build()
}

fn pair(tag: &str, guard: bool) -> Pair {
    pair_with(tag, words(0, guard), words(100, true))
}

fn pair_with(tag: &str, a_words: Vec<String>, b_words: Vec<String>) -> Pair {
    let lab = Lab::new(tag, 3);
    let a = lab.carpd(0, "a", &a_words);
    let b = lab.carpd(1, "b", &b_words);
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0, "A wins");
    let pinger = Pinger::start(lab.ns(2), VIP, Duration::from_millis(10)).expect("ping");
    thread::sleep(Duration::from_millis(500));
    Pair { lab, a, b, pinger }
}

impl Pair {
    /// `kill -9` A while both namespaces are watched; run `after` (A is
    /// dead), wait for B's takeover; return (B MASTER from the kill, what
    /// the watchers saw, the client's outage text).
    fn crash(self, after: impl FnOnce(&Lab, &Carpd)) -> (Lab, Carpd, Duration, Seen, String) {
        let Pair { lab, a, b, pinger } = self;
        let (wa, wb) = (Watch::start(&a.ns), Watch::start(&b.ns));
        thread::sleep(Duration::from_millis(100));
        let wall0 = wall_now();
        let t0 = Instant::now();
        lab.kill(&a, Signal::SIGKILL);
        assert_eq!(lab.wait_exit(&a, Duration::from_secs(5)), None, "killed");
        after(&lab, &a);
        let took = wait_state_fast(&b, 1, "MASTER", t0, Duration::from_secs(10));
        thread::sleep(Duration::from_millis(500));
        let seen = analyse(t0, &wa.finish(), &wb.finish());
        let outage = pinger.finish().outage(wall0 - 0.3, wall_now() - 0.05);
        (lab, a, took, seen, outage.to_string())
    }
}

/// Input: A (advskew 0, guard on) MASTER, B (advskew 100) BACKUP, advbase
/// 1, an IPv4 and an IPv6 VIP; the client pings the IPv4 VIP every 10 ms;
/// `kill -9` A's carpd. Output:
/// B is MASTER far sooner than its master-down (4.2 s); A's VIP went before
/// B's came, never both seen at once; A has neither VIP nor macvlan, its
/// guard has exited and its will file is gone.
#[test]
#[ignore = "needs root: network namespaces"]
fn kill9_hands_over_through_the_guard() {
    let p = pair("gd1", true);
    let state = p.lab.path("a-state");
    assert_eq!(guards(&state).len(), 1, "one guard for A");
    assert_eq!(wills(&state).len(), 1, "A's will is written");
    let (lab, a, took, seen, outage) = p.crash(|_, _| {});
    println!("guarded kill -9: B MASTER after {took:?}; {seen:?}; client {outage}");
    assert!(took < GUARDED, "B took {took:?}: it waited for master-down");
    assert_eq!(seen.overlap, None, "both held {VIP}: {seen:?}");
    assert!(seen.a_gone.is_some() && seen.b_has.is_some(), "{seen:?}");
    assert!(!lab.has_addr(&a.ns, VIP), "A kept the VIP");
    assert!(!lab.has_addr(&a.ns, VIP6), "A kept the IPv6 VIP");
    assert!(lab.has_addr(lab.ns(1), VIP6), "B lacks the IPv6 VIP");
    assert!(macvlans(&lab, &a.ns).is_empty(), "A kept its macvlan");
    assert!(guards(&state).is_empty(), "the guard did not exit");
    assert!(wills(&state).is_empty(), "the will file stayed");
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    let said = log
        .lines()
        .filter(|l| l.contains("guard:"))
        .collect::<Vec<_>>();
    println!("A's guard: {said:?}");
    assert!(
        log.contains("guard: carpd (pid") && log.contains("sent 6 bow-out"),
        "{log}"
    );
}

/// Input: as above, but A runs with `--no-guard`; after `kill -9` (A's VIP
/// is still there: nothing removed it) `carpd stop-post --state-dir` runs in
/// A's namespace, as systemd's `ExecStopPost=` would. Output: before the
/// kill stop-post leaves the running daemon alone; after it, B is MASTER
/// soon after stop-post ran, A's VIP went before B's came, A has no VIP or
/// macvlan left and the will file is gone; a second stop-post has nothing to do.
#[test]
#[ignore = "needs root: network namespaces"]
fn stop_post_hands_over_after_kill9() {
    let p = pair("gd2", false);
    let state = p.lab.path("a-state");
    assert!(guards(&state).is_empty(), "--no-guard starts none");
    let state_arg = state.to_string_lossy().into_owned();
    let stop_post = move |lab: &Lab, ns: &str| {
        run_timeout(
            std::process::Command::new("ip").args([
                "netns",
                "exec",
                ns,
                CARPD,
                "stop-post",
                "--state-dir",
                &state_arg,
            ]),
            Duration::from_secs(10),
        );
        let _ = lab;
    };
    // The writer still runs: nothing happens.
    stop_post(&p.lab, &p.a.ns);
    assert!(
        p.lab.has_addr(&p.a.ns, VIP),
        "stop-post acted on a running carpd"
    );
    assert_eq!(wills(&state).len(), 1);
    let mut ran_at = None;
    let (lab, a, took, seen, outage) = p.crash(|lab, a| {
        assert!(lab.has_addr(&a.ns, VIP), "without a guard the VIP stays");
        ran_at = Some(Instant::now());
        stop_post(lab, &a.ns);
    });
    println!(
        "stop-post after kill -9: B MASTER after {took:?} from the kill; {seen:?}; client {outage}"
    );
    assert!(ran_at.is_some());
    assert_eq!(seen.overlap, None, "both held {VIP}: {seen:?}");
    assert!(
        matches!((seen.a_gone, seen.b_has), (Some(gone), Some(has)) if gone < has),
        "{seen:?}"
    );
    assert!(!lab.has_addr(&a.ns, VIP), "A kept the VIP");
    assert!(macvlans(&lab, &a.ns).is_empty(), "A kept its macvlan");
    assert!(wills(&state).is_empty(), "the will file stayed");
    stop_post(&lab, &a.ns);
}

/// Input: as above with `--no-guard` and no stop-post (what carpd did
/// before the guard). Output: B waits out its master-down, and both hosts
/// are seen holding the VIP meanwhile: the failure the guard removes.
#[test]
#[ignore = "needs root: network namespaces"]
fn kill9_without_the_guard_waits_for_master_down() {
    let (lab, a, took, seen, outage) = pair("gd3", false).crash(|_, _| {});
    println!("unguarded kill -9: B MASTER after {took:?}; {seen:?}; client {outage}");
    assert!(
        took > Duration::from_secs(2),
        "B took over at once: {took:?}"
    );
    assert!(seen.overlap.is_some(), "{seen:?}");
    assert!(lab.has_addr(&a.ns, VIP), "the VIP stays on a killed carpd");
}

/// `RssAnon` (its own memory; the binary's pages are shared) of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Input: A (guard on) MASTER, B BACKUP; SIGTERM to A's guard, then to A's
/// carpd, as systemd's `KillMode=control-group` signals every process of
/// the unit. Output: the guard outlives its SIGTERM; carpd stops in order
/// (exit 0, B takes over on the bow-out); the guard then exits without
/// acting (no "died without stopping" line) and the will file is gone.
#[test]
#[ignore = "needs root: network namespaces"]
fn sigterm_to_every_process_stops_in_order() {
    let lab = Lab::new("gd4", 2);
    let a = lab.carpd(0, "a", &words(0, true));
    let b = lab.carpd(1, "b", &words(100, true));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0, "A wins");
    let state = lab.path("a-state");
    let [guard] = guards(&state)[..] else {
        panic!("one guard for A");
    };
    println!(
        "guard pid {guard}: RssAnon {:?} KiB (carpd {:?} KiB)",
        rss_kib(guard),
        rss_kib(a.pid)
    );
    let pid = nix::unistd::Pid::from_raw(i32::try_from(guard).unwrap());
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("signal the guard");
    thread::sleep(Duration::from_millis(200));
    assert_eq!(guards(&state), [guard], "the guard died of SIGTERM");
    let t0 = Instant::now();
    lab.kill(&a, Signal::SIGTERM);
    let took = wait_state_fast(&b, 1, "MASTER", t0, Duration::from_secs(5));
    assert_eq!(lab.wait_exit(&a, Duration::from_secs(5)), Some(0));
    println!("SIGTERM: B MASTER after {took:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while !guards(&state).is_empty() {
        assert!(Instant::now() < deadline, "the guard outlived a clean stop");
        thread::sleep(Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(!log.contains("died without stopping"), "{log}");
    assert!(wills(&state).is_empty(), "a clean stop leaves no will");
    assert!(!lab.has_addr(&a.ns, VIP));
}

/// Input: VRRPv3 (`carpver 3`, interval 1 s): A priority 200 MASTER, B
/// priority 100 BACKUP; `kill -9` A's carpd. Output: A's guard sends the
/// priority-0 advertisement (RFC 9568 6.4.3), so B takes over after its
/// Skew_Time (0.61 s) instead of Master_Down_Interval (3.6 s); never both
/// seen holding the VIP.
#[test]
#[ignore = "needs root: network namespaces"]
fn vrrp_kill9_resigns_through_the_guard() {
    let p = pair_with("gd5", vrrp_words(200), vrrp_words(100));
    let (lab, a, took, seen, outage) = p.crash(|_, _| {});
    println!("VRRP guarded kill -9: B MASTER after {took:?}; {seen:?}; client {outage}");
    assert!(
        took < Duration::from_millis(2000),
        "B took {took:?}: no priority 0 heard"
    );
    assert_eq!(seen.overlap, None, "both held {VIP}: {seen:?}");
    assert!(!lab.has_addr(&a.ns, VIP), "A kept the VIP");
    assert!(macvlans(&lab, &a.ns).is_empty(), "A kept its macvlan");
}

/// The real uid of `pid` (the first `Uid:` field).
fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Input: A runs `--user nobody` (guard on), MASTER; `kill -9` A's carpd.
/// Output: the guard runs as nobody too, and with only the two
/// capabilities still removes the VIP and macvlan, hands over at once and
/// removes the will file in the state directory handed to nobody.
#[test]
#[ignore = "needs root: network namespaces"]
fn kill9_hands_over_when_carpd_runs_as_a_user() {
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("user nobody");
    let mut a_words = vec!["--user".to_owned(), "nobody".to_owned()];
    a_words.extend(words(0, true));
    let p = pair_with("gd6", a_words, words(100, true));
    let state = p.lab.path("a-state");
    let [guard] = guards(&state)[..] else {
        panic!("one guard for A");
    };
    assert_eq!(
        uid_of(guard),
        Some(nobody.uid.as_raw()),
        "the guard kept root"
    );
    let (lab, a, took, seen, outage) = p.crash(|_, _| {});
    println!("kill -9 as nobody: B MASTER after {took:?}; {seen:?}; client {outage}");
    assert!(took < GUARDED, "B took {took:?}");
    assert_eq!(seen.overlap, None, "both held {VIP}: {seen:?}");
    assert!(!lab.has_addr(&a.ns, VIP), "A kept the VIP");
    assert!(macvlans(&lab, &a.ns).is_empty(), "A kept its macvlan");
    assert!(wills(&state).is_empty(), "the will file stayed");
}
