//! The only `unsafe` code in carpd: registering sockets with tokio,
//! building an AF_PACKET address (neither has a safe constructor), a
//! child's pre-exec hook, the guard's ignored signals, and the scheduling
//! and memory-locking calls of `realtime` (no safe wrapper takes
//! `SCHED_RESET_ON_FORK` or `MCL_ONFAULT`).

use std::io;
use std::mem;

use nix::sys::socket::{LinkAddr, SockaddrLike};
use socket2::Socket;
use tokio::io::unix::AsyncFd;

/// Register `socket` with the current tokio reactor.
///
/// Returns an error instead of panicking when called outside a runtime. The
/// runtime must have its I/O driver enabled.
pub(crate) fn async_fd(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("not inside a tokio runtime"));
    }
    // SAFETY: `Socket` owns its fd, keeps it open until it is dropped and
    // always returns the same fd from `as_raw_fd`; the `AsyncFd` owns the
    // `Socket`, so the fd outlives the registration.
    unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)
}

/// Make the child `cmd` starts receive SIGTERM when carpd dies, even by
/// SIGKILL (`PR_SET_PDEATHSIG`), so a supervised helper never outlives it.
pub(crate) fn die_with_parent(cmd: &mut tokio::process::Command) {
    // SAFETY: the hook runs in the forked child before exec and only calls
    // prctl(2), which is async-signal-safe and touches no shared memory.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(io::Error::from)
        });
    }
}

/// `SCHED_RESET_ON_FORK` from `<linux/sched.h>`, which the libc crate
/// defines for Android only.
const SCHED_RESET_ON_FORK: libc::c_int = 0x4000_0000;

/// Run the calling thread under `SCHED_FIFO` at `priority`, or under
/// `SCHED_OTHER` again with `None`.
///
/// `SCHED_RESET_ON_FORK`: the threads and processes it starts later (the
/// blocking pool, hooks, conntrackd) run under `SCHED_OTHER`.
pub(crate) fn set_fifo(priority: Option<u8>) -> io::Result<()> {
    let (policy, sched_priority) = match priority {
        Some(p) => (libc::SCHED_FIFO | SCHED_RESET_ON_FORK, libc::c_int::from(p)),
        None => (libc::SCHED_OTHER, 0),
    };
    let param = libc::sched_param { sched_priority };
    // SAFETY: pid 0 names the calling thread; `param` is initialised and
    // outlives the call, which only reads it.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How much of the process's memory [`lock_memory`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    /// Nothing: unlock all of it.
    None,
    /// The mappings present now.
    Present,
    /// The mappings present now and every later one.
    PresentAndFuture,
}

/// Lock the process's memory as it is touched (`MCL_ONFAULT`: reserved but
/// unused stack and heap stay unlocked), or unlock all of it.
pub(crate) fn lock_memory(lock: Lock) -> io::Result<()> {
    let onfault = libc::MCL_CURRENT | libc::MCL_ONFAULT;
    // SAFETY: both calls take plain flags and touch no memory of ours.
    let rc = unsafe {
        match lock {
            Lock::None => libc::munlockall(),
            Lock::Present => libc::mlockall(onfault),
            Lock::PresentAndFuture => libc::mlockall(onfault | libc::MCL_FUTURE),
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Give the heap's free pages back to the kernel. glibc keeps what a
/// large, short-lived allocation (parsing a 1000-vhost config, a reload)
/// freed: without this, half of carpd's heap at 1000 vhosts is free memory
/// that still counts in its Rss and Pss.
pub(crate) fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Ignore SIGTERM, SIGINT and SIGHUP (the guard: a signal meant for the
/// daemon's process group or cgroup must not end it before the daemon's
/// orderly stop does).
pub(crate) fn ignore_stop_signals() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler, so no code runs in signal
        // context; the process has one thread at this point.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
}

/// Build the `sockaddr_ll` destination for sending one frame.
pub(crate) fn link_addr(ifindex: u32, ethertype: u16, dst_mac: [u8; 6]) -> io::Result<LinkAddr> {
    // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst_mac);
    let len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the pointer refers to a fully initialised `sockaddr_ll` of the
    // stated length, alive for the duration of the call, and its family is
    // AF_PACKET, which is what `LinkAddr::from_raw` checks for.
    unsafe {
        LinkAddr::from_raw(
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            Some(len),
        )
    }
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad sockaddr_ll"))
}

#[cfg(test)]
mod test {
    use std::time::{Duration, Instant};

    use super::die_with_parent;

    /// Whether `pid` is gone or a zombie (it was killed, not yet reaped).
    fn dead(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        // PR_SET_PDEATHSIG fires when the forking thread exits, so a thread
        // stands in for carpd.
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut cmd = tokio::process::Command::new("sleep");
                cmd.arg("30");
                die_with_parent(&mut cmd);
                let child = cmd.spawn().expect("spawn sleep");
                let pid = child.id().expect("pid");
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .expect("thread");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead(pid) {
            assert!(Instant::now() < deadline, "sleep {pid} outlived its parent");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    }
}
