//! The OS boundary: raw sockets, rtnetlink and AF_PACKET.
//!
//! Everything here talks to the Linux kernel and nothing here knows CARP
//! semantics: the daemon loop turns core actions into these calls and feeds
//! what they return back into the core.
//!
//! - [`raw`]: one protocol-112 socket per (carpdev, address family), for
//!   sending and receiving advertisements with TTL, destination and ifindex.
//! - [`bpf`]: the classic BPF filter on those sockets that drops, in the
//!   kernel, what is not an advertisement for a configured vhid.
//! - [`netlink`]: link lookups, VIP add/remove, the virtual-MAC macvlan and a
//!   link/address event monitor.
//! - [`l2`]: gratuitous ARP and unsolicited neighbour advertisements built
//!   with `etherparse` and sent through AF_PACKET.
//! - [`privs`]: dropping every capability but CAP_NET_ADMIN and CAP_NET_RAW,
//!   optionally switching user.
//! - [`balance`]: the eBPF load-balancing datapath at tc ingress of a
//!   carpdev (OpenBSD `carp_lsdrop`), loaded with aya.
//! - [`realtime`]: `SCHED_FIFO` and locked memory for the protocol loop.
//! - [`accept`]: the nftables table of VRRP's `accept off`.
//! - [`linux`]: [`Linux`], the [`Os`] the daemon loop runs on, built from the
//!   modules above plus sysctls and the address record.
//!
//! Invariants: no function panics on kernel input; every failure is an
//! [`OsError`] that names the operation and the interface. `unsafe` code lives
//! only in the private `sys` module, and in `balance` for the kernel calls
//! aya lacks (the mmap-ed configuration array, SIOCADDMULTI, BPF_PROG_TEST_RUN).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use carp_proto::{Balancing, CarpIfId, Family, LinkId};
use tokio::sync::mpsc;

use crate::guard::will::Will;
use crate::owned::OwnedAddress;

pub mod accept;
pub mod balance;
pub mod balance_glue;
pub mod bpf;
pub mod l2;
pub mod linux;
pub mod netlink;
pub mod privs;
pub mod raw;
pub mod realtime;
pub mod solicit;
mod sys;
pub(crate) use sys::release_free_heap;

pub use linux::Linux;
pub use netlink::{LinkEvent, LinkInfo};
pub use privs::{Dropped, PrivError};
pub use solicit::Solicitation;
pub(crate) use sys::{die_with_parent, ignore_stop_signals};

/// A carp interface's part of the balancing datapath (spec section 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balanced {
    /// The mode the interface runs (never `none`).
    pub mode: Balancing,
    /// The load-share mask: bit i set when node i is MASTER here.
    pub mask: u32,
    /// Each node's MAC, in vhid order (node i = slot i).
    pub node_macs: Vec<[u8; 6]>,
    /// The frames' destination MAC the interface receives on: the leader's
    /// multicast MAC in `ip`, its virtual MAC in `ip-stealth`/`ip-unicast`.
    pub leader_mac: [u8; 6],
    /// The shared addresses.
    pub addresses: Vec<IpAddr>,
}

/// A datagram read by a CARP socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The carpdev whose socket read it.
    pub link: LinkId,
    /// Source address from the IP header.
    pub src: IpAddr,
    /// Destination address (the group, or ours for unicast).
    pub dst: IpAddr,
    /// TTL or hop limit; 0 when unknown.
    pub ttl: u8,
    /// Interface it arrived on; 0 when unknown.
    pub ifindex: u32,
    /// The CARP payload.
    pub bytes: Vec<u8>,
}

/// Everything the daemon loop asks of the operating system.
///
/// [`Linux`] is the real one; the loop tests pass a fake that records calls.
/// Interfaces are named by index. A carpdev's sockets are keyed by its
/// [`LinkId`], which the daemon assigns per carpdev name and keeps when the
/// interface is re-created under another index; the current index is passed
/// when they are opened. Address and link changes are idempotent, as in
/// [`netlink`].
// The loop runs on one thread and is never spawned, so the futures need no
// `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Os {
    /// Look up a link by name.
    async fn link_by_name(&self, name: &str) -> Result<LinkInfo, OsError>;
    /// Look up a link by index.
    async fn link_by_index(&self, index: u32) -> Result<LinkInfo, OsError>;
    /// Return the addresses (with prefix lengths) on link `index`.
    async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, OsError>;
    /// Add `addr/prefix_len` to link `index`; an existing one is success.
    async fn add_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), OsError>;
    /// Remove `addr/prefix_len` from link `index`; a missing one is success.
    async fn del_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), OsError>;
    /// [`Os::add_address`] for each of `addrs`, without waiting for one
    /// before sending the next; one result per address, in order.
    async fn add_addresses(&self, index: u32, addrs: &[(IpAddr, u8)]) -> Vec<Result<(), OsError>>;
    /// [`Os::del_address`] for each of `addrs`, as [`Os::add_addresses`].
    async fn del_addresses(&self, index: u32, addrs: &[(IpAddr, u8)]) -> Vec<Result<(), OsError>>;
    /// Make sure macvlan `name` on `parent` with `mac` exists and is up; return its index.
    async fn ensure_macvlan(&self, parent: u32, name: &str, mac: [u8; 6]) -> Result<u32, OsError>;
    /// Delete link `index`; a missing one is success.
    async fn delete_link(&self, index: u32) -> Result<(), OsError>;
    /// Subscribe to link and address changes. Called once, before any lookup,
    /// so nothing between the lookup and the subscription is missed.
    fn link_events(&mut self) -> Result<mpsc::Receiver<LinkEvent>, OsError>;

    /// Open the CARP socket of `family` on carpdev `link` (now interface
    /// `index`, named `ifname`), replacing one opened before; what it
    /// receives goes to `to`.
    fn open_carp_socket(
        &mut self,
        link: LinkId,
        index: u32,
        ifname: &str,
        family: Family,
        to: mpsc::Sender<Datagram>,
    ) -> Result<(), OsError>;
    /// Let only advertisements for `accept` (the vhids configured on carpdev
    /// `link`) through its CARP sockets, now and when they are reopened;
    /// everything else is dropped in the kernel, uncounted (see [`bpf`]).
    /// A failure leaves a socket's previous filter (or none) in place. The
    /// default does nothing: fakes see every datagram they inject.
    fn filter_carp_sockets(&mut self, link: LinkId, accept: &[bpf::Accept]) -> Result<(), OsError> {
        let _ = (link, accept);
        Ok(())
    }
    /// Send the CARP header `packet` from `src` (`None`: the kernel's choice)
    /// to `dst` through the socket of `family` on `link`.
    async fn send_advert(
        &self,
        link: LinkId,
        family: Family,
        src: Option<IpAddr>,
        dst: IpAddr,
        packet: &[u8],
    ) -> Result<(), OsError>;

    /// Open the AF_PACKET sender of carpdev `link` (now interface `index`),
    /// replacing one opened before.
    fn open_l2(&mut self, link: LinkId, index: u32) -> Result<(), OsError>;
    /// Close every socket and sender of carpdev `link` (its interface is gone).
    fn close_link(&mut self, link: LinkId);
    /// Send `packet` as an IP datagram from `src` to multicast group `dst`
    /// in an Ethernet frame from `mac`, out of `link`.
    fn send_advert_frame(
        &self,
        link: LinkId,
        mac: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
        packet: &[u8],
    ) -> Result<(), OsError>;
    /// Announce `ipv4` (gratuitous ARPs, then) and `ipv6` (unsolicited
    /// neighbour advertisements) at `mac` out of `link` in one burst; return
    /// each address whose frame was not sent, with the error.
    fn announce(
        &self,
        link: LinkId,
        mac: [u8; 6],
        ipv4: &[Ipv4Addr],
        ipv6: &[Ipv6Addr],
        router: bool,
    ) -> Vec<(IpAddr, OsError)>;

    /// Start reading ARP requests and neighbour solicitations on carpdev
    /// `link` (now interface `index`) into `to`, replacing a reader opened
    /// before (balancing modes: see [`solicit`]).
    fn open_solicitations(
        &mut self,
        link: LinkId,
        index: u32,
        to: mpsc::Sender<Solicitation>,
    ) -> Result<(), OsError>;
    /// Answer `sol` on its link: `target` is at `answer_mac`, in a frame from `frame_src`.
    fn answer_solicitation(
        &self,
        sol: &Solicitation,
        answer_mac: [u8; 6],
        frame_src: [u8; 6],
        router: bool,
    ) -> Result<(), OsError>;
    /// Pin `ip` at `mac` in the neighbour table of link `index` (NUD_PERMANENT),
    /// so the kernel never solicits a requester of a balanced address itself:
    /// its request would carry a shared address with this host's own MAC and
    /// re-point the requester's entry for it.
    async fn pin_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<(), OsError>;
    /// Remove a neighbour pinned by [`Os::pin_neighbour`]; a missing one is success.
    async fn unpin_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), OsError>;
    /// Attach the balancing datapath to carpdev `link` (interface `index`)
    /// if needed, and set carp interface `iface`'s part of it.
    fn balance_set(
        &mut self,
        link: LinkId,
        index: u32,
        iface: CarpIfId,
        set: &Balanced,
    ) -> Result<(), OsError>;
    /// Set carp interface `iface`'s load-share mask in the datapath (one
    /// atomic map write).
    fn balance_mask(&mut self, link: LinkId, iface: CarpIfId, mask: u32) -> Result<(), OsError>;
    /// Remove `iface` from the datapath of `link`; the last one detaches it.
    fn balance_remove(&mut self, link: LinkId, iface: CarpIfId);

    /// Read sysctl `key` (such as `net/ipv6/conf/all/forwarding`).
    fn read_sysctl(&self, key: &str) -> Option<String>;
    /// Write sysctl `key`.
    fn write_sysctl(&self, key: &str, value: &str) -> Result<(), OsError>;

    /// Open the address record of the daemon with control socket `control`
    /// and return what a previous run left recorded (see [`crate::owned`]).
    fn open_record(&mut self, state_dir: &Path, control: &Path) -> Vec<OwnedAddress>;
    /// Record `addrs`, before they are added; one write.
    fn hold_addresses(&mut self, addrs: &[OwnedAddress]) -> Result<(), OsError>;
    /// Forget `addrs`, after they were removed; one write.
    fn release_addresses(&mut self, addrs: &[OwnedAddress]) -> Result<(), OsError>;
    /// Write the record as it stands (replacing a previous run's).
    fn save_record(&mut self) -> Result<(), OsError>;

    /// Make the `accept off` drop table what `filter` says (an empty one
    /// deletes it); see [`accept`].
    async fn set_accept_filter(&mut self, filter: &accept::AcceptFilter) -> Result<(), OsError>;

    /// Run the daemon loop's thread under `SCHED_FIFO` at `priority` with
    /// memory locked, or ordinary with `None` (see [`realtime`]).
    fn set_realtime(&mut self, priority: Option<u8>) -> realtime::Realtime;
    /// Hand the last will on to the guard and the will file (see
    /// [`crate::guard`]); called whenever it changes. Never blocks.
    fn set_will(&mut self, will: &Will);
    /// The daemon stopped in order: the guard exits without acting, the
    /// will file goes.
    async fn retire_will(&mut self);

    /// Check that user `name` exists (before set-up, to fail early).
    fn lookup_user(&self, name: &str) -> Result<(), PrivError>;
    /// Keep CAP_NET_ADMIN and CAP_NET_RAW only (and CAP_BPF with `bpf`,
    /// for the balancing datapath's map writes), optionally as `user`.
    fn drop_privileges(
        &mut self,
        user: Option<&str>,
        state_dir: &Path,
        bpf: bool,
    ) -> Result<Dropped, PrivError>;
}

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
    /// A file under /proc/sys or the state directory could not be written.
    #[error("cannot write {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error from the kernel.
        source: io::Error,
    },
    /// The nftables table of `accept off` could not be written.
    #[error("cannot write nftables table inet {table}")]
    Firewall {
        /// The table.
        table: String,
        /// What went wrong (nft's message).
        source: io::Error,
    },
}

impl OsError {
    /// Return the kernel errno behind this error, if there is one.
    ///
    /// Useful for policies such as "ENETDOWN on send means the link is down".
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            OsError::Socket { source, .. }
            | OsError::File { source, .. }
            | OsError::Firewall { source, .. } => source.raw_os_error(),
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
