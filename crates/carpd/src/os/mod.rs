//! The OS boundary: raw sockets, rtnetlink and AF_PACKET.
//!
//! Everything here talks to the Linux kernel and nothing here knows CARP
//! semantics: the daemon loop turns core actions into these calls and feeds
//! what they return back into the core.
//!
//! - [`raw`]: one protocol-112 socket per (carpdev, address family), for
//!   sending and receiving advertisements with TTL, destination and ifindex.
//! - [`netlink`]: link lookups, VIP add/remove, the virtual-MAC macvlan and a
//!   link/address event monitor.
//! - [`l2`]: gratuitous ARP and unsolicited neighbour advertisements built
//!   with `etherparse` and sent through AF_PACKET.
//! - [`privs`]: dropping every capability but CAP_NET_ADMIN and CAP_NET_RAW,
//!   optionally switching user.
//!
//! Invariants: no function panics on kernel input; every failure is an
//! [`OsError`] that names the operation and the interface. `unsafe` code lives
//! only in the private `sys` module.

use std::io;

pub mod l2;
pub mod netlink;
pub mod privs;
pub mod raw;
mod sys;

/// An error from the OS boundary.
///
/// `Display` names the failed operation only; the underlying `io::Error` is
/// available through `source()`, so log the whole chain.
#[derive(Debug, thiserror::Error)]
pub enum OsError {
    /// A socket call failed.
    #[error("{op} on {ifname}")]
    Socket {
        /// The operation, such as "join multicast group".
        op: &'static str,
        /// The interface the socket belongs to (or the index as text).
        ifname: String,
        /// The error from the kernel.
        source: io::Error,
    },
    /// A netlink request failed or returned something unusable.
    #[error("netlink {op}: {detail}")]
    Netlink {
        /// The operation, such as "add address".
        op: &'static str,
        /// What went wrong.
        detail: String,
        /// The kernel's errno, when the failure carried one.
        errno: Option<i32>,
    },
    /// The link asked for does not exist.
    #[error("link {link} not found")]
    LinkNotFound {
        /// The name or index that was looked up.
        link: String,
    },
}

impl OsError {
    /// Return the kernel errno behind this error, if there is one.
    ///
    /// Useful for policies such as "ENETDOWN on send means the link is down".
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            OsError::Socket { source, .. } => source.raw_os_error(),
            OsError::Netlink { errno, .. } => *errno,
            OsError::LinkNotFound { .. } => None,
        }
    }

    pub(crate) fn socket(op: &'static str, ifname: &str, source: io::Error) -> OsError {
        OsError::Socket {
            op,
            ifname: ifname.to_owned(),
            source,
        }
    }
}
