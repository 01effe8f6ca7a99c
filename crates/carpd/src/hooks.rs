//! Up/down hook scripts, run off the protocol loop.
//!
//! Each vhost has one worker task that runs its hooks one after another in
//! the order of the transitions, each with a timeout after which the whole
//! process group is killed. The protocol loop only enqueues; it never waits.
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
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::carplog;

/// Lines of one stream of one run that are logged; the rest is counted.
pub const MAX_LOGGED_LINES: usize = 40;

/// A logged line is cut at this many bytes.
pub const MAX_LINE_BYTES: usize = 256;

/// How long the output of an exited (or killed) hook is still read: a
/// grandchild that escaped the kill may keep the pipe open for good.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// One hook run.
#[derive(Debug, Clone)]
pub struct HookRun {
    /// The executable.
    pub program: PathBuf,
    /// vhid.
    pub vhid: u8,
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
}

/// The queue of one vhost's hooks.
#[derive(Debug, Clone)]
pub struct HookQueue {
    tx: mpsc::UnboundedSender<HookRun>,
    worker: std::sync::Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl HookQueue {
    /// Start the worker on the current runtime.
    pub fn spawn() -> HookQueue {
        let (tx, mut rx) = mpsc::unbounded_channel::<HookRun>();
        let worker = tokio::spawn(async move {
            while let Some(run) = rx.recv().await {
                execute(run).await;
            }
        });
        HookQueue {
            tx,
            worker: std::sync::Arc::new(tokio::sync::Mutex::new(Some(worker))),
        }
    }

    /// Close the queue and wait for the runs already queued.
    pub async fn finish(self) {
        let HookQueue { tx, worker } = self;
        drop(tx);
        if let Some(handle) = worker.lock().await.take() {
            let _ = handle.await;
        }
    }

    /// Queue a run; it starts after the ones before it finished.
    pub fn push(&self, run: HookRun) {
        let _ = self.tx.send(run);
    }
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

/// Run one hook: environment variables for new scripts, and ucarp's
/// `<interface> <first address>` arguments so existing ucarp scripts work.
async fn execute(run: HookRun) {
    let first = run
        .addresses
        .first()
        .map(|a| a.split('/').next().unwrap_or(a).to_string());
    let mut cmd = Command::new(&run.program);
    cmd.arg(&run.interface)
        .args(first)
        .env("CARP_VHID", run.vhid.to_string())
        .env("CARP_STATE", &run.state)
        .env("CARP_FROM", &run.from)
        .env("CARP_CAUSE", &run.cause)
        .env("CARP_CARPDEV", &run.carpdev)
        .env("CARP_INTERFACE", &run.interface)
        .env("CARP_ADDRESSES", run.addresses.join(" "))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let Some(mut child) = spawn_with_retry(|| cmd.spawn(), &run).await else {
        return;
    };
    let pid = child.id();
    let name = run.program.display().to_string();
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
    match tokio::time::timeout(run.timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            carplog!(
                Info,
                "vhid {}: hook {} done",
                run.vhid,
                run.program.display()
            );
        }
        Ok(Ok(status)) => {
            carplog!(
                Warning,
                "vhid {}: hook {} failed: {status}",
                run.vhid,
                run.program.display()
            );
        }
        Ok(Err(e)) => carplog!(
            Err,
            "vhid {}: hook {}: {e}",
            run.vhid,
            run.program.display()
        ),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // Kill the whole group so a hung script's children go too.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            carplog!(
                Err,
                "vhid {}: hook {} killed after {:?}",
                run.vhid,
                run.program.display(),
                run.timeout
            );
        }
    }
    for relay in relays.into_iter().flatten() {
        let abort = relay.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, relay).await.is_err() {
            abort.abort();
        }
    }
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
