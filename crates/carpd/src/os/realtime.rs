//! `realtime`: the protocol loop under `SCHED_FIFO` with the process's memory
//! locked, as keepalived's `vrrp_rt_priority` and `vrrp_no_swap` do, so that
//! CPU hogs or swapping do not delay advertisements into a false failover
//! (keepalived issues 2066 and 2238).
//!
//! Only the calling thread (the loop's, which also serves the control socket
//! and the status page) is made real-time; the threads and processes it
//! starts are not (`SCHED_RESET_ON_FORK`). The kernel's real-time throttling
//! (`kernel.sched_rt_runtime_us`) still leaves other tasks 5 % of each CPU.

use std::io;

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};
use serde::{Deserialize, Serialize};

use super::sys::{self, Lock};

/// What is in effect after [`apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Realtime {
    /// The `SCHED_FIFO` priority the loop runs at; `None`: `SCHED_OTHER`.
    pub priority: Option<u8>,
    /// Whether the process's memory is locked (`mlockall`).
    pub memory_locked: bool,
    /// Why something asked for is not in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Run the calling thread at `priority` under `SCHED_FIFO` with memory
/// locked, or ordinary again with `None`. Never fails: what could not be
/// done is in [`Realtime::problem`].
///
/// Call it while the daemon still has its privileges: it raises the hard
/// limits `RLIMIT_MEMLOCK` (to unlimited) and `RLIMIT_RTPRIO`, so that after
/// they are dropped memory locked for the future cannot make an allocation
/// fail, and a reload can still change the priority.
pub fn apply(priority: Option<u8>) -> Realtime {
    let Some(priority) = priority else {
        let mut problems = Vec::new();
        if let Err(e) = sys::set_fifo(None) {
            problems.push(format!("cannot return to SCHED_OTHER: {e}"));
        }
        if let Err(e) = sys::lock_memory(Lock::None) {
            problems.push(format!("cannot unlock memory: {e}"));
        }
        return Realtime {
            priority: None,
            memory_locked: false,
            problem: join(problems),
        };
    };
    let mut problems = Vec::new();
    let _ = raise(Resource::RLIMIT_RTPRIO, u64::from(priority));
    let applied = match sys::set_fifo(Some(priority)) {
        Ok(()) => Some(priority),
        Err(e) => {
            problems.push(format!(
                "cannot run under SCHED_FIFO priority {priority}: {e} \
                 (needs CAP_SYS_NICE or LimitRTPRIO={priority})"
            ));
            None
        }
    };
    // Memory locked for the future counts every new mapping against
    // RLIMIT_MEMLOCK once CAP_IPC_LOCK is dropped: with a finite limit a
    // later allocation could fail, so then only the present mappings (the
    // code, the loop's heap as it is now) are locked.
    let lock = match raise(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY) {
        Ok(()) => Lock::PresentAndFuture,
        Err(e) => {
            let limit = getrlimit(Resource::RLIMIT_MEMLOCK).map_or(0, |(soft, _)| soft);
            problems.push(format!(
                "new mappings are not locked: RLIMIT_MEMLOCK is {} kB and cannot be raised \
                 ({e}; set LimitMEMLOCK=infinity)",
                limit / 1024
            ));
            Lock::Present
        }
    };
    let memory_locked = match sys::lock_memory(lock) {
        Ok(()) => true,
        Err(e) => {
            problems.push(format!("cannot lock memory: {e}"));
            false
        }
    };
    Realtime {
        priority: applied,
        memory_locked,
        problem: join(problems),
    }
}

/// Make the soft and hard limits of `resource` at least `want`.
fn raise(resource: Resource, want: u64) -> io::Result<()> {
    let (soft, hard) = getrlimit(resource)?;
    let at_least = |v: u64| v == RLIM_INFINITY || (want != RLIM_INFINITY && v >= want);
    if at_least(soft) && at_least(hard) {
        return Ok(());
    }
    let soft = if at_least(soft) { soft } else { want };
    let hard = if at_least(hard) { hard } else { want };
    setrlimit(resource, soft, hard).map_err(io::Error::from)
}

fn join(problems: Vec<String>) -> Option<String> {
    (!problems.is_empty()).then(|| problems.join("; "))
}
