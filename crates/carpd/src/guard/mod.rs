//! The guard: a dead daemon hands over as a planned stop does.
//!
//! After `kill -9`, an abort or an OOM kill, nothing would remove a MASTER's
//! addresses and macvlans until carpd starts again, and its peers would wait
//! out the master-down timer (3 intervals) before taking over: both hosts
//! would answer for the addresses meanwhile, then none. So the daemon keeps
//! a *last will* ([`will::Will`]) up to date: the addresses it holds, the
//! macvlans it made, and for each vhid MASTER here the bow-out advertisement
//! a planned stop would send (advbase/advskew 255, or VRRP priority 0), as
//! final bytes with the way to send them. The will goes to two places:
//!
//! - the guard, a child process started before privileges are dropped
//!   (`/proc/self/exe guard`, reading a socket on its stdin). It does nothing
//!   but read wills. The end of the stream without a "clean" message means the
//!   daemon died: it removes the addresses first (so there is no moment when
//!   both hosts hold one), then sends each bow-out three times 5 ms apart
//!   while the macvlans are deleted (see [`execute`]), deletes the will file
//!   and exits; every step is bounded in time. It ignores SIGTERM,
//!   SIGINT and SIGHUP: a signal to the whole process group or cgroup reaches
//!   the daemon too, whose orderly stop ends with the "clean" message.
//! - a file in the state directory (`will-<hash>.json`, written by a thread
//!   off the loop), which `carpd stop-post` executes when the guard could not:
//!   systemd runs it from `ExecStopPost=` after every process of the unit has
//!   ended, also after a SIGKILL of the whole cgroup.
//!
//! A will whose writer still runs, or from another boot or network
//! namespace, is never executed by `stop-post`.

mod sink;
pub mod will;

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use carp_proto::Family;

pub use sink::WillSink;
use will::{FrameError, Message, Via, Will, WillAdvert};

use crate::carplog;
use crate::config::DaemonConfig;
use crate::log::chain;
use crate::os::l2::{ETH_P_IP, ETH_P_IPV6, L2Sender, carp_advert_frame_v4, carp_advert_frame_v6};
use crate::os::netlink::Netlink;
use crate::os::raw::CarpSocket;

/// How often each bow-out is sent (a lost one would cost a master-down interval).
const ROUNDS: usize = 3;
/// The gap between rounds.
const ROUND_GAP: Duration = Duration::from_millis(5);
/// The most the removals may take before the advertisements go anyway.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a whole will may take: the guard always ends.
const EXECUTE_TIMEOUT: Duration = Duration::from_secs(5);

/// The guard process and the daemon's end of its socket.
#[derive(Debug)]
pub struct GuardLink {
    pub(crate) stream: UnixStream,
    pub(crate) child: Child,
}

/// The will file of the daemon configured by `config`, beside its address
/// record (named after the network namespace and control socket).
pub fn will_path(config: &DaemonConfig) -> PathBuf {
    let state_dir = config
        .state_dir
        .clone()
        .unwrap_or_else(|| crate::config::DEFAULT_STATE_DIR.into());
    let control = config
        .control
        .clone()
        .unwrap_or_else(crate::control::default_path);
    state_dir.join(crate::owned::record_name("will", netns(), &control))
}

/// Start the guard. Call before privileges are dropped (it keeps
/// CAP_NET_ADMIN and CAP_NET_RAW) and before any thread is started.
pub fn spawn(will_file: &Path, user: Option<&str>, log_level: u8) -> io::Result<GuardLink> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("carpd")
        .arg("guard")
        .arg("--will")
        .arg(will_file)
        .arg("--log-level")
        .arg(log_level.to_string());
    if let Some(user) = user {
        cmd.arg("--user").arg(user);
    }
    // Our end is close-on-exec: hooks and the guard itself never hold it, so
    // the guard reads end-of-file exactly when the daemon is gone.
    let child = cmd
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()?;
    Ok(GuardLink {
        stream: ours,
        child,
    })
}

/// `carpd guard`: wait for the daemon's death, then execute its last will.
pub fn run(will_file: &Path, user: Option<&str>) -> ExitCode {
    crate::os::ignore_stop_signals();
    drop_privileges(will_file, user);
    let mut stdin = io::stdin().lock();
    let mut last: Option<Will> = None;
    loop {
        match Message::read(&mut stdin) {
            Ok(Some(Message::Will(w))) => last = Some(w),
            Ok(Some(Message::Clean)) => return ExitCode::SUCCESS,
            Ok(None) => break,
            Err(e) if e.in_step() => carplog!(Err, "guard: {e}; keeping the previous will"),
            Err(e) => {
                if !matches!(e, FrameError::Truncated) {
                    carplog!(Err, "guard: {}", chain(&e));
                    // Out of step: wait for the end of the stream, which still
                    // tells the daemon's death.
                    let _ = io::copy(&mut stdin, &mut io::sink());
                }
                break;
            }
        }
    }
    let eof = std::time::Instant::now();
    // No will yet (the daemon failed before set-up): a file there is an
    // older run's, for `stop-post`.
    let Some(will) = last else {
        return ExitCode::SUCCESS;
    };
    if will.is_empty() {
        remove_file(will_file);
        return ExitCode::SUCCESS;
    }
    let outcome = block_on(execute(&will, eof));
    carplog!(
        Crit,
        "guard: carpd (pid {}) died without stopping (times from its end): {outcome}",
        will.pid
    );
    remove_file(will_file);
    ExitCode::SUCCESS
}

/// `carpd stop-post`: execute the will of every daemon in `state_dir` that
/// ended without stopping, in this boot and network namespace.
///
/// The directory must not be writable by group or others (as carpd requires
/// of it), so only its owner, the daemon's user, can have put a will there.
pub fn stop_post(state_dir: &Path) -> ExitCode {
    match fs::symlink_metadata(state_dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ExitCode::SUCCESS,
        Ok(m) if m.is_dir() && m.mode() & 0o022 == 0 => {}
        Ok(m) => {
            carplog!(
                Err,
                "stop-post: refusing {}: not a directory, or writable by group or others \
                 (mode {:04o})",
                state_dir.display(),
                m.mode() & 0o7777
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            carplog!(Err, "stop-post: cannot use {}: {e}", state_dir.display());
            return ExitCode::FAILURE;
        }
    }
    let entries = match fs::read_dir(state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return ExitCode::SUCCESS,
        Err(e) => {
            carplog!(Err, "stop-post: cannot read {}: {e}", state_dir.display());
            return ExitCode::FAILURE;
        }
    };
    let here = (boot_id(), netns());
    let mut failed = false;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("will-") && name.ends_with(".json")) {
            continue;
        }
        let will = match crate::statedir::read_file(&path, will::MAX_FRAME as u64) {
            Ok(Some(bytes)) => Will::from_file(&bytes),
            Ok(None) => continue,
            Err(e) => {
                carplog!(Err, "stop-post: cannot read {}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        let will = match will {
            Ok(w) => w,
            Err(e) => {
                carplog!(
                    Err,
                    "stop-post: {} is no will ({e}), removed",
                    path.display()
                );
                remove_file(&path);
                continue;
            }
        };
        if (will.boot_id.as_str(), will.netns) != (here.0.as_str(), here.1) {
            continue;
        }
        if process_started(will.pid) == Some(will.started) {
            carplog!(
                Info,
                "stop-post: carpd pid {} still runs, leaving {}",
                will.pid,
                path.display()
            );
            continue;
        }
        if will.is_empty() {
            remove_file(&path);
            continue;
        }
        let outcome = block_on(execute(&will, std::time::Instant::now()));
        carplog!(
            Crit,
            "stop-post: carpd (pid {}) ended without stopping: {outcome}",
            will.pid
        );
        failed |= outcome.failures > 0;
        remove_file(&path);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// What executing a will did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Addresses removed.
    pub removed: usize,
    /// Macvlans deleted.
    pub deleted: usize,
    /// Bow-out advertisements sent (each round counted).
    pub sent: usize,
    /// Steps that failed.
    pub failures: usize,
    /// When the removals were done and the first round sent, from the start.
    pub removed_after: Duration,
    /// See `removed_after`.
    pub sent_after: Duration,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "removed {} address(es), deleted {} macvlan(s), sent {} bow-out advertisement(s)",
            self.removed, self.deleted, self.sent
        )?;
        write!(
            f,
            " (removals done after {:.1} ms, first bow-out after {:.1} ms)",
            self.removed_after.as_secs_f64() * 1000.0,
            self.sent_after.as_secs_f64() * 1000.0
        )?;
        if self.failures > 0 {
            write!(f, ", {} step(s) failed", self.failures)?;
        }
        Ok(())
    }
}

/// Remove the addresses, then send the bow-outs while the macvlans are deleted.
///
/// The addresses go first, so the two hosts never hold one together. A
/// macvlan's deletion waits some 20 ms in the kernel (its unregistration);
/// it runs beside the bow-outs, as a planned stop also deletes macvlans
/// after its bow-out: without its addresses the virtual MAC answers nothing.
/// The times in the [`Outcome`] are counted from `start`.
pub async fn execute(will: &Will, start: std::time::Instant) -> Outcome {
    let mut out = Outcome::default();
    let nl = Netlink::connect()
        .await
        .inspect_err(|e| {
            carplog!(Err, "{}", chain(e));
        })
        .ok();
    if nl.is_none() {
        out.failures += 1;
    }
    if let Some(nl) = &nl {
        let removals = will.addresses.iter().map(|a| async move {
            if !same_link(nl, a.ifindex, &a.ifname).await {
                return Ok(false);
            }
            nl.del_address(a.ifindex, a.addr, a.prefix_len)
                .await
                .map(|()| true)
                .map_err(|e| format!("remove {}/{}: {}", a.addr, a.prefix_len, chain(&e)))
        });
        let steps = bounded("removing the addresses", removals).await;
        out.failures += tally(steps, &mut out.removed);
    }
    out.removed_after = start.elapsed();
    let deletions = async {
        let Some(nl) = &nl else {
            return Vec::new();
        };
        let deletions = will.macvlans.iter().map(|l| async move {
            if !same_link(nl, l.ifindex, &l.name).await {
                return Ok(false);
            }
            nl.delete_link(l.ifindex)
                .await
                .map(|()| true)
                .map_err(|e| format!("delete {}: {}", l.name, chain(&e)))
        });
        bounded("deleting the macvlans", deletions).await
    };
    let (deleted, (sent, failures, sent_after)) =
        tokio::join!(deletions, send_rounds(&will.adverts, start));
    out.failures += tally(deleted, &mut out.deleted) + failures;
    out.sent = sent;
    out.sent_after = sent_after;
    out
}

type Step = Result<bool, String>;

/// Run `steps` together, for at most [`REMOVAL_TIMEOUT`].
async fn bounded<F: std::future::Future<Output = Step>>(
    what: &str,
    steps: impl Iterator<Item = F>,
) -> Vec<Step> {
    tokio::time::timeout(REMOVAL_TIMEOUT, futures::future::join_all(steps))
        .await
        .unwrap_or_else(|_| vec![Err(format!("{what} timed out"))])
}

/// Count the steps done into `done`; log and return the failures.
fn tally(steps: Vec<Step>, done: &mut usize) -> usize {
    let mut failures = 0;
    for step in steps {
        match step {
            Ok(d) => *done += usize::from(d),
            Err(e) => {
                carplog!(Err, "{e}");
                failures += 1;
            }
        }
    }
    failures
}

/// Send every bow-out [`ROUNDS`] times; return (sent, failures, when the
/// first round was out).
async fn send_rounds(
    adverts: &[WillAdvert],
    start: std::time::Instant,
) -> (usize, usize, Duration) {
    let mut failures = 0;
    let mut sent = 0;
    let mut first = Duration::ZERO;
    let senders = Senders::open(adverts, &mut failures);
    for round in 0..ROUNDS {
        if round > 0 {
            tokio::time::sleep(ROUND_GAP).await;
        }
        for a in adverts {
            match senders.send(a).await {
                Ok(()) => sent += 1,
                Err(e) if round == 0 => {
                    carplog!(
                        Err,
                        "vhid {}@{}: bow-out to {}: {e}",
                        a.vhid,
                        a.carpdev.name,
                        a.dst
                    );
                    failures += 1;
                }
                Err(_) => {}
            }
        }
        if round == 0 {
            first = start.elapsed();
        }
    }
    (sent, failures, first)
}

/// Whether link `index` is still `name` (an index may be reused by another link).
async fn same_link(nl: &Netlink, index: u32, name: &str) -> bool {
    nl.link_by_index(index).await.is_ok_and(|l| l.name == name)
}

/// The sockets the bow-outs leave through, one per carpdev and way.
struct Senders {
    v4: Vec<(u32, CarpSocket)>,
    v6: Vec<(u32, CarpSocket)>,
    l2: Vec<(u32, L2Sender)>,
}

impl Senders {
    fn open(adverts: &[WillAdvert], failures: &mut usize) -> Senders {
        let mut s = Senders {
            v4: Vec::new(),
            v6: Vec::new(),
            l2: Vec::new(),
        };
        for a in adverts {
            let index = a.carpdev.ifindex;
            let name = a.carpdev.name.as_str();
            let opened = match (a.via, Family::of(&a.dst)) {
                (Via::Frame { .. }, _) if !s.l2.iter().any(|(i, _)| *i == index) => {
                    L2Sender::open(index).map(|l| s.l2.push((index, l)))
                }
                (Via::Socket { .. }, Family::V4) if !s.v4.iter().any(|(i, _)| *i == index) => {
                    CarpSocket::open_v4(name, index).map(|c| s.v4.push((index, c)))
                }
                (Via::Socket { .. }, Family::V6) if !s.v6.iter().any(|(i, _)| *i == index) => {
                    CarpSocket::open_v6(name, index).map(|c| s.v6.push((index, c)))
                }
                _ => Ok(()),
            };
            if let Err(e) = opened {
                carplog!(Err, "{}", chain(&e));
                *failures += 1;
            }
        }
        s
    }

    async fn send(&self, a: &WillAdvert) -> Result<(), String> {
        let index = a.carpdev.ifindex;
        let missing = || "no socket".to_string();
        match a.via {
            Via::Socket { src } => {
                let socks = match a.dst {
                    IpAddr::V4(_) => &self.v4,
                    IpAddr::V6(_) => &self.v6,
                };
                let (_, sock) = socks
                    .iter()
                    .find(|(i, _)| *i == index)
                    .ok_or_else(missing)?;
                sock.send(src, a.dst, &a.bytes)
                    .await
                    .map_err(|e| chain(&e).to_string())
            }
            Via::Frame { mac, src } => {
                let (_, l2) = self
                    .l2
                    .iter()
                    .find(|(i, _)| *i == index)
                    .ok_or_else(missing)?;
                let (frame, ethertype) = match (src, a.dst) {
                    (IpAddr::V4(s), IpAddr::V4(g)) => {
                        (carp_advert_frame_v4(mac, s, g, &a.bytes), ETH_P_IP)
                    }
                    (IpAddr::V6(s), IpAddr::V6(g)) => {
                        (carp_advert_frame_v6(mac, s, g, &a.bytes), ETH_P_IPV6)
                    }
                    _ => return Err("source and group of different families".into()),
                };
                l2.send(&frame, ethertype, crate::os::l2::multicast_mac(a.dst))
                    .map_err(|e| chain(&e).to_string())
            }
        }
    }
}

/// Keep CAP_NET_ADMIN and CAP_NET_RAW only, as the daemon will (as `user`
/// with one), so the will file stays removable.
fn drop_privileges(will_file: &Path, user: Option<&str>) {
    let dir = will_file.parent().unwrap_or(Path::new("."));
    let uids = crate::statedir::daemon_uids(user);
    let result = crate::statedir::ensure_dir(dir, 0o700, &uids)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let user = user.map(crate::os::privs::lookup_user).transpose();
            let user = user.map_err(|e| e.to_string())?;
            crate::os::privs::drop_privileges(user.as_ref(), dir, false)
                .map_err(|e| chain(&e).to_string())
        });
    if let Err(e) = result {
        carplog!(Warning, "guard: keeping its privileges: {e}");
    }
}

/// Run `f` on a fresh single-threaded runtime (the guard needs one only at the end).
fn block_on<F: std::future::Future<Output = Outcome>>(f: F) -> Outcome {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async {
            tokio::time::timeout(EXECUTE_TIMEOUT, f)
                .await
                .unwrap_or_else(|_| {
                    carplog!(Err, "the last will did not finish in {EXECUTE_TIMEOUT:?}");
                    Outcome {
                        failures: 1,
                        ..Outcome::default()
                    }
                })
        }),
        Err(e) => {
            carplog!(Err, "cannot start a runtime: {e}");
            Outcome {
                failures: 1,
                ..Outcome::default()
            }
        }
    }
}

fn remove_file(path: &Path) {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            carplog!(Warning, "cannot remove {}: {e}", path.display());
        }
        _ => {}
    }
}

/// The inode of this process's network namespace.
pub(crate) fn netns() -> u64 {
    fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino())
}

/// This boot's id.
pub(crate) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// The start time (clock ticks after boot) of live process `pid`; `None`
/// when it is gone or a zombie.
pub(crate) fn process_started(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    // Field 22 overall; `state` was field 3.
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_dead_pid_is_not() {
        let me = std::process::id();
        let started = process_started(me).expect("own stat");
        assert_eq!(process_started(me), Some(started), "stable");
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert_eq!(process_started(pid), None, "reaped");
    }

    #[test]
    fn stop_post_runs_only_the_wills_of_dead_daemons_in_a_safe_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stop_post(&dir.path().join("missing")), ExitCode::SUCCESS);
        let state = dir.path().join("state");
        fs::create_dir(&state).unwrap();
        fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
        assert_eq!(stop_post(&state), ExitCode::FAILURE, "a writable directory");
        fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
        let me = std::process::id();
        let mut child = Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let will = |pid, started, boot: &str| Will {
            pid,
            started,
            boot_id: boot.into(),
            netns: netns(),
            ..Will::default()
        };
        let write = |name: &str, w: &Will| fs::write(state.join(name), w.to_file()).unwrap();
        write(
            "will-live.json",
            &will(me, process_started(me).unwrap(), &boot_id()),
        );
        write("will-dead.json", &will(dead, 1, &boot_id()));
        write("will-reboot.json", &will(dead, 1, "another-boot"));
        fs::write(state.join("will-junk.json"), b"{ not json").unwrap();
        fs::write(state.join("owned-x.json"), b"{ not json").unwrap();
        assert_eq!(stop_post(&state), ExitCode::SUCCESS);
        let mut left: Vec<String> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["owned-x.json", "will-live.json", "will-reboot.json"]);
    }

    #[test]
    fn outcome_reads_as_a_sentence() {
        let o = Outcome {
            removed: 2,
            deleted: 1,
            sent: 3,
            failures: 1,
            removed_after: Duration::from_micros(1500),
            sent_after: Duration::from_micros(2250),
        };
        assert_eq!(
            o.to_string(),
            "removed 2 address(es), deleted 1 macvlan(s), sent 3 bow-out advertisement(s) \
             (removals done after 1.5 ms, first bow-out after 2.2 ms), 1 step(s) failed"
        );
    }
}
