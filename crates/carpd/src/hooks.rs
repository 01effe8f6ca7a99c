//! Hook scripts, run off the protocol loop.
//!
//! Each carp interface has one worker task that runs its hooks one after
//! another in the order of the transitions, each with a deadline after which
//! the whole process group is killed. The protocol loop only enqueues; it
//! never waits. The `pre-master` hook runs inside the pre-master gate: the
//! loop is told its outcome through [`HookRun::report`] and only then lets
//! the addresses go live.
//!
//! Every hook gets the `CARP_*` environment variables, ucarp's
//! `<interface> <first address>` arguments, and a JSON description of the
//! transition on stdin ([`HookRun::description`]).
//!
//! A hook never shares carpd's stdout or stderr (a flood there would stall
//! carpd's own log): its output comes through pipes, is logged line by line
//! up to [`MAX_LOGGED_LINES`] lines of at most [`MAX_LINE_BYTES`] bytes per
//! stream, and the rest is read and counted, so the hook never blocks on a
//! full pipe.
//!
//! What the timeout kill does not reach: a process that left the hook's
//! process group (`setsid`, or `setpgid` to another group) survives the
//! `killpg`. Under systemd, the unit's cgroup still holds it and stopping
//! the unit kills it (`KillMode=control-group`); running each hook in its
//! own transient scope would catch it at the deadline too.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::oneshot;

use crate::carplog;
use crate::control::types::HookCounts;

/// Lines of one stream of one run that are logged; the rest is counted.
pub const MAX_LOGGED_LINES: usize = 40;

/// A logged line is cut at this many bytes.
pub const MAX_LINE_BYTES: usize = 256;

/// How long the output of an exited (or killed) hook is still read: a
/// grandchild that escaped the kill may keep the pipe open for good.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Which hook a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// Inside the pre-master gate, before the addresses go live.
    PreMaster,
    /// After becoming MASTER.
    Master,
    /// After becoming BACKUP.
    Backup,
    /// After a fault took the interface to INIT (link down, address fault).
    Fault,
    /// ucarp-style: after becoming MASTER.
    Up,
    /// ucarp-style: after leaving MASTER.
    Down,
}

impl HookKind {
    /// The name in logs, in `CARP_HOOK` and in the JSON description.
    pub fn name(self) -> &'static str {
        match self {
            HookKind::PreMaster => "pre-master",
            HookKind::Master => "master",
            HookKind::Backup => "backup",
            HookKind::Fault => "fault",
            HookKind::Up => "up",
            HookKind::Down => "down",
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0.
    Succeeded,
    /// Another exit status (`None`: ended by a signal).
    Failed(Option<i32>),
    /// Killed with its process group at its deadline.
    Killed,
    /// Could not be started.
    NotStarted,
}

impl HookOutcome {
    /// Whether the run counts as a passed gate step.
    pub fn ok(self) -> bool {
        self == HookOutcome::Succeeded
    }
}

/// One hook run.
#[derive(Debug)]
pub struct HookRun {
    /// Which hook.
    pub kind: HookKind,
    /// The executable.
    pub program: PathBuf,
    /// vhid.
    pub vhid: u8,
    /// The interface's transition this run belongs to (1, 2, ...); a
    /// pre-master run carries the number of the takeover it gates.
    pub sequence: u64,
    /// New state (MASTER, BACKUP, INIT).
    pub state: String,
    /// Previous state.
    pub from: String,
    /// Why.
    pub cause: String,
    /// Parent interface.
    pub carpdev: String,
    /// Interface holding the addresses (the macvlan or the carpdev).
    pub interface: String,
    /// The virtual addresses, `addr/len`.
    pub addresses: Vec<String>,
    /// Kill after this long.
    pub timeout: Duration,
    /// Kill at this instant at the latest (the pre-master gate's deadline).
    pub deadline: Option<tokio::time::Instant>,
    /// Told how the run ended (the pre-master gate waits for it).
    pub report: Option<oneshot::Sender<HookOutcome>>,
}

impl HookRun {
    /// The JSON written to the hook's stdin.
    pub fn description(&self) -> String {
        serde_json::json!({
            "hook": self.kind.name(),
            "sequence": self.sequence,
            "vhid": self.vhid,
            "state": self.state,
            "from": self.from,
            "cause": self.cause,
            "carpdev": self.carpdev,
            "interface": self.interface,
            "addresses": self.addresses,
            "timeout_secs": self.timeout.as_secs_f64(),
        })
        .to_string()
    }
}

/// The queue of one carp interface's hooks.
///
/// Idle, it holds no task and no channel: a worker is spawned when a run is
/// queued and ends when the queue is empty again. A daemon with 1000 vhosts
/// and no hooks so keeps no 1000 parked tasks (each sized for `execute`'s
/// future) and no 1000 channel blocks (32 runs each); see
/// docs/architecture.md, "Memory".
#[derive(Debug, Clone, Default)]
pub struct HookQueue {
    shared: Arc<Shared>,
    counts: Arc<Mutex<HookCounts>>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Told when the worker ends.
    idle: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Pending {
    runs: std::collections::VecDeque<HookRun>,
    /// A worker runs (it clears this, under the lock, when it finds no run).
    working: bool,
}

impl HookQueue {
    /// An empty queue; runs start on the current runtime once queued.
    pub fn new() -> HookQueue {
        HookQueue::default()
    }

    /// Close the queue and wait for the runs already queued.
    pub async fn finish(self) {
        loop {
            // Created before the check: a worker ending in between still wakes it.
            let idle = self.shared.idle.notified();
            if !self.has_worker() {
                return;
            }
            idle.await;
        }
    }

    /// Queue a run; it starts after the ones before it finished.
    pub fn push(&self, run: HookRun) {
        let Ok(mut pending) = self.shared.pending.lock() else {
            return;
        };
        pending.runs.push_back(run);
        if !pending.working {
            pending.working = true;
            tokio::spawn(work(self.shared.clone(), self.counts.clone()));
        }
    }

    /// What the runs so far came to.
    pub fn counts(&self) -> HookCounts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Whether a worker task exists: only while runs are queued or running.
    pub fn has_worker(&self) -> bool {
        self.shared.pending.lock().is_ok_and(|p| p.working)
    }
}

/// Run the queued hooks in order; end when none is left.
async fn work(shared: Arc<Shared>, tally: Arc<Mutex<HookCounts>>) {
    loop {
        let next = match shared.pending.lock() {
            Ok(mut pending) => match pending.runs.pop_front() {
                Some(run) => Some(run),
                None => {
                    // Under the lock, so a run pushed after this spawns a new worker.
                    pending.working = false;
                    pending.runs = Default::default();
                    None
                }
            },
            Err(_) => None,
        };
        let Some(mut run) = next else {
            shared.idle.notify_waiters();
            return;
        };
        let report = run.report.take();
        let started = tokio::time::Instant::now();
        let outcome = execute(&run).await;
        tally_run(&tally, &run, outcome, started.elapsed());
        if let Some(report) = report {
            let _ = report.send(outcome);
        }
    }
}

fn tally_run(tally: &Mutex<HookCounts>, run: &HookRun, outcome: HookOutcome, took: Duration) {
    let Ok(mut c) = tally.lock() else {
        return;
    };
    c.runs += 1;
    match outcome {
        HookOutcome::Succeeded => {}
        HookOutcome::Failed(_) | HookOutcome::NotStarted => c.failed += 1,
        HookOutcome::Killed => c.killed += 1,
    }
    c.last_hook = Some(run.kind.name().to_string());
    c.last_exit = match outcome {
        HookOutcome::Succeeded => Some(0),
        HookOutcome::Failed(code) => code,
        HookOutcome::Killed | HookOutcome::NotStarted => None,
    };
    c.last_secs = Some(took.as_secs_f64());
}

/// Attempts to start a hook that failed for want of descriptors, processes
/// or memory, with a backoff of 100 ms doubling (1.5 s in all).
const SPAWN_ATTEMPTS: u32 = 5;
const SPAWN_BACKOFF: Duration = Duration::from_millis(100);

/// Whether a spawn failure may pass (EMFILE while clients hold descriptors),
/// unlike a missing or non-executable program.
fn spawn_may_succeed_later(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM)
    )
}

/// Start a hook with `spawn`, retrying transient failures; `None` (logged)
/// if it never starts.
async fn spawn_with_retry<T>(
    mut spawn: impl FnMut() -> std::io::Result<T>,
    run: &HookRun,
) -> Option<T> {
    let mut delay = SPAWN_BACKOFF;
    for attempt in 1..=SPAWN_ATTEMPTS {
        match spawn() {
            Ok(child) => return Some(child),
            Err(e) if attempt < SPAWN_ATTEMPTS && spawn_may_succeed_later(&e) => {
                carplog!(
                    Warning,
                    "vhid {}: cannot run hook {} yet: {e}; retrying in {delay:?}",
                    run.vhid,
                    run.program.display()
                );
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                carplog!(
                    Err,
                    "vhid {}: cannot run hook {} (attempt {attempt}): {e}",
                    run.vhid,
                    run.program.display()
                );
                return None;
            }
        }
    }
    None
}

/// Run one hook: environment variables and JSON on stdin for new scripts,
/// and ucarp's `<interface> <first address>` arguments so existing ucarp
/// scripts work. The exit status and the duration are logged.
async fn execute(run: &HookRun) -> HookOutcome {
    let first = run
        .addresses
        .first()
        .map(|a| a.split('/').next().unwrap_or(a).to_string());
    let mut cmd = Command::new(&run.program);
    cmd.arg(&run.interface)
        .args(first)
        .env("CARP_HOOK", run.kind.name())
        .env("CARP_SEQUENCE", run.sequence.to_string())
        .env("CARP_VHID", run.vhid.to_string())
        .env("CARP_STATE", &run.state)
        .env("CARP_FROM", &run.from)
        .env("CARP_CAUSE", &run.cause)
        .env("CARP_CARPDEV", &run.carpdev)
        .env("CARP_INTERFACE", &run.interface)
        .env("CARP_ADDRESSES", run.addresses.join(" "))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let started = tokio::time::Instant::now();
    // The gate's deadline may come before the hook's own.
    let limit = run.deadline.map_or(run.timeout, |d| {
        run.timeout.min(d.saturating_duration_since(started))
    });
    let Some(mut child) = spawn_with_retry(|| cmd.spawn(), run).await else {
        return HookOutcome::NotStarted;
    };
    let pid = child.id();
    let name = format!("{} {}", run.kind.name(), run.program.display());
    // A hook that never reads its stdin must not hold the run up.
    let feed = child.stdin.take().map(|mut stdin| {
        let json = run.description();
        tokio::spawn(async move {
            let _ = stdin.write_all(json.as_bytes()).await;
            let _ = stdin.write_all(b"\n").await;
        })
    });
    let relays = [
        child
            .stdout
            .take()
            .map(|o| tokio::spawn(relay(o, run.vhid, name.clone(), "stdout"))),
        child
            .stderr
            .take()
            .map(|e| tokio::spawn(relay(e, run.vhid, name.clone(), "stderr"))),
    ];
    let outcome = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) => {
            let took = started.elapsed();
            if status.success() {
                carplog!(
                    Info,
                    "vhid {}: hook {name} exited 0 after {took:?}",
                    run.vhid
                );
                HookOutcome::Succeeded
            } else {
                carplog!(
                    Warning,
                    "vhid {}: hook {name} failed after {took:?}: {status}",
                    run.vhid
                );
                HookOutcome::Failed(status.code())
            }
        }
        Ok(Err(e)) => {
            carplog!(Err, "vhid {}: hook {name}: {e}", run.vhid);
            HookOutcome::Failed(None)
        }
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // Kill the whole group so a hung script's children go too.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            carplog!(Err, "vhid {}: hook {name} killed after {limit:?}", run.vhid);
            HookOutcome::Killed
        }
    };
    if let Some(feed) = feed {
        feed.abort();
    }
    for relay in relays.into_iter().flatten() {
        let abort = relay.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, relay).await.is_err() {
            abort.abort();
        }
    }
    outcome
}

/// Log `stream` of a hook line by line, within the limits, and drain the rest.
async fn relay(mut stream: impl AsyncRead + Unpin, vhid: u8, program: String, what: &str) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut line = Vec::new();
    let mut cut = false;
    let mut logged = 0;
    let mut unlogged: u64 = 0;
    let emit = |line: &mut Vec<u8>, cut: &mut bool, logged: &mut usize| {
        let text = String::from_utf8_lossy(line);
        let more = if *cut { " [cut]" } else { "" };
        carplog!(Info, "vhid {vhid}: hook {program} {what}: {text}{more}");
        *logged += 1;
        line.clear();
        *cut = false;
    };
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if logged >= MAX_LOGGED_LINES {
            unlogged += n as u64;
            continue;
        }
        // Slices, not bytes: a 100 MB line costs a few copies of 256 bytes.
        let mut pieces = buf[..n].split(|&b| b == b'\n').peekable();
        while let Some(piece) = pieces.next() {
            let ended = pieces.peek().is_some();
            if logged >= MAX_LOGGED_LINES {
                unlogged += piece.len() as u64 + u64::from(ended);
                continue;
            }
            let room = MAX_LINE_BYTES - line.len();
            line.extend_from_slice(&piece[..piece.len().min(room)]);
            cut |= piece.len() > room;
            if ended {
                emit(&mut line, &mut cut, &mut logged);
            }
        }
    }
    if !line.is_empty() && logged < MAX_LOGGED_LINES {
        emit(&mut line, &mut cut, &mut logged);
    }
    if unlogged > 0 {
        carplog!(
            Warning,
            "vhid {vhid}: hook {program} {what}: {unlogged} more byte(s) not logged"
        );
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::log::capture;

    /// Input: a stream of 100 short lines, then one long line. Output: 40
    /// lines logged, a long one cut at 256 bytes, and the rest counted.
    #[tokio::test]
    async fn output_is_logged_line_by_line_within_limits() {
        capture::start();
        let mut text = "x".repeat(1000);
        text.push('\n');
        for i in 0..100 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str(&"y".repeat(1 << 20));
        relay(text.as_bytes(), 7, "/h".into(), "stderr").await;
        let lines: Vec<String> = capture::lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines.len(), MAX_LOGGED_LINES + 1, "{lines:#?}");
        let cut = format!(
            "vhid 7: hook /h stderr: {} [cut]",
            "x".repeat(MAX_LINE_BYTES)
        );
        assert_eq!(lines[0], cut);
        assert_eq!(lines[1], "vhid 7: hook /h stderr: line 0");
        let rest = text.len() - 1001 - (0..39).map(|i| format!("line {i}\n").len()).sum::<usize>();
        assert_eq!(
            lines[MAX_LOGGED_LINES],
            format!("vhid 7: hook /h stderr: {rest} more byte(s) not logged")
        );
    }

    #[test]
    fn only_resource_shortages_are_retried() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::EAGAIN, libc::ENOMEM] {
            assert!(spawn_may_succeed_later(&std::io::Error::from_raw_os_error(
                errno
            )));
        }
        for errno in [libc::ENOENT, libc::EACCES, libc::ENOEXEC] {
            assert!(!spawn_may_succeed_later(
                &std::io::Error::from_raw_os_error(errno)
            ));
        }
    }

    fn run() -> HookRun {
        HookRun {
            kind: HookKind::Up,
            sequence: 1,
            deadline: None,
            report: None,
            program: "/nonexistent/carpd-hook".into(),
            vhid: 1,
            state: "MASTER".into(),
            from: "BACKUP".into(),
            cause: "test".into(),
            carpdev: "eth0".into(),
            interface: "eth0".into(),
            addresses: vec![],
            timeout: Duration::from_secs(1),
        }
    }

    /// An idle queue holds no task (1000 vhosts without hooks hold none):
    /// runs pushed start one worker, which ends once they are done, and a
    /// later push starts another.
    #[tokio::test]
    async fn a_hook_queue_has_a_worker_only_while_runs_are_queued() {
        let finish =
            |q: &HookQueue| tokio::time::timeout(Duration::from_secs(10), q.clone().finish());
        let q = HookQueue::new();
        assert!(!q.has_worker());
        let mut reports = Vec::new();
        for sequence in 1..=3 {
            let (tx, rx) = oneshot::channel();
            q.push(HookRun {
                sequence,
                report: Some(tx),
                ..run()
            });
            reports.push(rx);
        }
        assert!(q.has_worker());
        for rx in reports {
            assert_eq!(rx.await.ok(), Some(HookOutcome::NotStarted));
        }
        finish(&q).await.expect("the worker ends");
        assert_eq!((q.counts().runs, q.has_worker()), (3, false));
        q.push(run());
        assert!(q.has_worker());
        finish(&q).await.expect("the worker ends");
        assert_eq!((q.counts().runs, q.has_worker()), (4, false));
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_program_is_not_retried() {
        let run = run();
        let mut attempts = 0;
        let started = tokio::time::Instant::now();
        let mut cmd = Command::new(&run.program);
        let spawned = spawn_with_retry(
            || {
                attempts += 1;
                cmd.spawn()
            },
            &run,
        )
        .await;
        assert!(spawned.is_none());
        assert_eq!((attempts, started.elapsed()), (1, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_spawn_out_of_descriptors_is_retried_with_backoff() {
        let mut attempts = 0;
        let started = tokio::time::Instant::now();
        let spawned = spawn_with_retry(
            || {
                attempts += 1;
                if attempts < 3 {
                    Err(std::io::Error::from_raw_os_error(libc::EMFILE))
                } else {
                    Ok(attempts)
                }
            },
            &run(),
        )
        .await;
        assert_eq!(spawned, Some(3));
        assert_eq!(started.elapsed(), SPAWN_BACKOFF * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn spawn_retries_are_bounded() {
        let mut attempts = 0;
        let spawned: Option<()> = spawn_with_retry(
            || {
                attempts += 1;
                Err(std::io::Error::from_raw_os_error(libc::EMFILE))
            },
            &run(),
        )
        .await;
        assert_eq!((spawned, attempts), (None, SPAWN_ATTEMPTS));
    }
}
