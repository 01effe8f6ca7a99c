//! Least privilege: after set-up carpd keeps CAP_NET_ADMIN (addresses,
//! macvlans, sysctls under /proc/sys/net) and CAP_NET_RAW (CARP and AF_PACKET
//! sockets) and nothing else, optionally as an unprivileged user.
//!
//! Capabilities belong to a thread, so [`drop_privileges`] must run while the
//! process has one thread (carpd's runtime is single-threaded and spawns no
//! blocking threads); it refuses otherwise rather than leave a thread
//! privileged. Hook scripts inherit the reduced sets: as root they run with
//! the two capabilities, as another user with none.

use std::io;
use std::path::Path;

use capctl::{Cap, CapSet, CapState};
use nix::unistd::{Gid, Uid, User};

/// The capabilities carpd keeps.
pub const KEPT: [Cap; 2] = [Cap::NET_ADMIN, Cap::NET_RAW];

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
pub enum PrivError {
    /// `--user` names no user.
    #[error("no user {0:?}")]
    NoUser(String),
    /// Looking up the user failed.
    #[error("cannot look up user {user:?}")]
    Lookup {
        /// The name.
        user: String,
        /// The error.
        source: nix::Error,
    },
    /// Other threads would keep their capabilities.
    #[error("{0} threads are running; capabilities can only be dropped with one")]
    Threads(usize),
    /// A system call failed.
    #[error("{op}")]
    Sys {
        /// The operation.
        op: &'static str,
        /// The error from the kernel.
        source: io::Error,
    },
}

fn sys(op: &'static str) -> impl Fn(capctl::Error) -> PrivError {
    move |e| PrivError::Sys {
        op,
        source: io::Error::from_raw_os_error(e.code()),
    }
}

fn nix_sys(op: &'static str) -> impl Fn(nix::Error) -> PrivError {
    move |e| PrivError::Sys {
        op,
        source: io::Error::from(e),
    }
}

/// What [`drop_privileges`] did, for the start-up log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The capabilities kept (a subset of [`KEPT`]: those the process had).
    pub kept: Vec<Cap>,
    /// Capabilities left in the bounding set because CAP_SETPCAP was missing.
    pub bounding_left: Vec<Cap>,
    /// The user switched to.
    pub user: Option<String>,
}

/// Look up `name` in the user database.
pub fn lookup_user(name: &str) -> Result<User, PrivError> {
    User::from_name(name)
        .map_err(|source| PrivError::Lookup {
            user: name.to_owned(),
            source,
        })?
        .ok_or_else(|| PrivError::NoUser(name.to_owned()))
}

/// Drop every capability but [`KEPT`] from the bounding, permitted,
/// effective, inheritable and ambient sets; with `user`, first switch to it
/// (and its primary group) keeping those two.
///
/// `state_dir` is created if missing and, with `user`, handed to that user, so
/// maintenance mode and the owned-address record stay writable.
///
/// Without CAP_SETPCAP (for example under a systemd unit that already sets
/// `CapabilityBoundingSet=`) the bounding set cannot shrink; what is left in
/// it is reported in [`Dropped::bounding_left`] instead of failing.
///
/// With `bpf` CAP_BPF is kept too: every bpf() call, also a map write on a
/// descriptor already open, needs it while unprivileged BPF is disabled
/// (Debian's default), and the balancing datapath writes its mask on every
/// transition.
pub fn drop_privileges(
    user: Option<&User>,
    state_dir: &Path,
    bpf: bool,
) -> Result<Dropped, PrivError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .map_err(|source| PrivError::Sys {
            op: "list /proc/self/task",
            source,
        })?;
    if threads != 1 {
        return Err(PrivError::Threads(threads));
    }
    let current = CapState::get_current().map_err(sys("capget"))?;
    let kept: Vec<Cap> = KEPT
        .iter()
        .copied()
        .chain(bpf.then_some(Cap::BPF))
        .collect();
    let mut keep = CapSet::empty();
    keep.add_all(kept.iter().copied().filter(|c| current.permitted.has(*c)));

    // The bounding set first: dropping from it needs CAP_SETPCAP, which
    // goes with the user switch below.
    let mut bounding_left = Vec::new();
    for cap in Cap::iter().filter(|c| !kept.contains(c)) {
        if capctl::bounding::read(cap) != Some(true) {
            continue;
        }
        if capctl::bounding::drop(cap).is_err() {
            bounding_left.push(cap);
        }
    }
    if bounding_left.is_empty() {
        // Capabilities newer than this build knows about.
        capctl::bounding::clear_unknown().map_err(sys("drop unknown capabilities"))?;
    }

    if let Some(user) = user {
        std::fs::create_dir_all(state_dir).map_err(|source| PrivError::Sys {
            op: "create the state directory",
            source,
        })?;
        nix::unistd::chown(state_dir, Some(user.uid), Some(user.gid))
            .map_err(nix_sys("chown the state directory"))?;
        switch_user(user.uid, user.gid)?;
    }

    CapState {
        effective: keep,
        permitted: keep,
        inheritable: CapSet::empty(),
    }
    .set_current()
    .map_err(sys("capset"))?;
    if capctl::ambient::is_supported() {
        capctl::ambient::clear().map_err(sys("clear the ambient set"))?;
    }
    Ok(Dropped {
        kept: keep.iter().collect(),
        bounding_left,
        user: user.map(|u| u.name.clone()),
    })
}

/// setgroups + setresgid + setresuid with KEEP_CAPS, so the permitted set
/// survives the change of uid (the kernel clears the effective set).
fn switch_user(uid: Uid, gid: Gid) -> Result<(), PrivError> {
    capctl::prctl::set_keepcaps(true).map_err(sys("set keepcaps"))?;
    nix::unistd::setgroups(&[gid]).map_err(nix_sys("setgroups"))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(nix_sys("setresgid"))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(nix_sys("setresuid"))?;
    capctl::prctl::set_keepcaps(false).map_err(sys("clear keepcaps"))?;
    Ok(())
}
