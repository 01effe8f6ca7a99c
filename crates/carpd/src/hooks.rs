//! Up/down hook scripts, run off the protocol loop.
//!
//! Each vhost has one worker task that runs its hooks one after another in
//! the order of the transitions, each with a timeout after which the whole
//! process group is killed. The protocol loop only enqueues; it never waits.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::mpsc;

use crate::carplog;

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
        .kill_on_drop(true)
        .process_group(0);
    let Some(mut child) = spawn_with_retry(|| cmd.spawn(), &run).await else {
        return;
    };
    let pid = child.id();
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
}

#[cfg(test)]
mod test {
    use super::*;

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

    #[tokio::test]
    async fn a_missing_program_is_not_retried() {
        let run = run();
        let started = std::time::Instant::now();
        let mut cmd = Command::new(&run.program);
        assert!(spawn_with_retry(|| cmd.spawn(), &run).await.is_none());
        assert!(started.elapsed() < SPAWN_BACKOFF);
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
