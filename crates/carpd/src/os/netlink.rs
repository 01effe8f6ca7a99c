//! rtnetlink: link lookups, VIPs, the virtual-MAC macvlan and a link monitor.
//!
//! [`Netlink`] is a cheap, cloneable request handle whose connection runs as
//! a task on the tokio runtime it was created on. [`LinkMonitor`] is a
//! separate multicast socket on the link and IPv4/IPv6 address groups.
//!
//! Address and link changes are idempotent, so the daemon can replay its
//! desired state after a restart or a [`LinkEvent::Resync`] without tracking
//! what the kernel already has. IPv6 VIPs are added with `IFA_F_NODAD`, so
//! they are usable as a source at once (keepalived does the same).
//!
//! Packet types are imported through `rtnetlink::packet_route` /
//! `rtnetlink::packet_core` only, so they always match the pinned rtnetlink.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoMacVlan, LinkAttribute,
    LinkFlags, LinkInfo as NlLinkInfo, LinkMessage, MacVlanMode,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use rtnetlink::sys::protocols::NETLINK_ROUTE;
use rtnetlink::sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};
use rtnetlink::{AddressMessageBuilder, Handle, LinkMacVlan, LinkUnspec, MulticastGroup};
use tokio::task::AbortHandle;

use super::OsError;

/// Receive buffer asked for on the monitor socket (the kernel caps it at
/// `net.core.rmem_max`); a bigger buffer makes overflows, and thus resyncs,
/// rarer during address churn.
const MONITOR_RCVBUF: usize = 1 << 20;

/// The state of one link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address; all zero when the link has none of 6 bytes.
    pub mac: [u8; 6],
    /// Administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Carrier present (`IFF_LOWER_UP`); false while the link is down.
    pub carrier: bool,
}

/// One change reported by the [`LinkMonitor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A link appeared or changed. Repeats are normal.
    Link(LinkInfo),
    /// A link was deleted (its index is gone; a re-created link gets another).
    /// Reported with `admin_up` and `carrier` false.
    Removed(LinkInfo),
    /// An address was added, or its flags changed (e.g. it left tentative).
    AddressAdded {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// An address was removed.
    AddressRemoved {
        /// Interface index.
        index: u32,
        /// The address.
        addr: IpAddr,
        /// Its prefix length.
        prefix_len: u8,
    },
    /// The monitor socket overflowed and events were lost: the caller must
    /// re-read the links and addresses it cares about.
    Resync,
}

fn nl_err(op: &'static str, e: rtnetlink::Error) -> OsError {
    let errno = match &e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    };
    OsError::Netlink {
        op,
        detail: e.to_string(),
        errno,
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

fn no_runtime(op: &'static str) -> OsError {
    OsError::Netlink {
        op,
        detail: "not inside a tokio runtime".to_owned(),
        errno: None,
    }
}

/// A handle for rtnetlink requests. Clones share one connection.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Open a netlink connection and spawn its driver task on the current
    /// tokio runtime. The task ends when the last clone is dropped.
    pub async fn connect() -> Result<Netlink, OsError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| no_runtime("connect"))?;
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| OsError::Netlink {
            op: "connect",
            detail: e.to_string(),
            errno: e.raw_os_error(),
        })?;
        rt.spawn(conn);
        Ok(Netlink { handle })
    }

    /// Look up a link by name.
    pub async fn link_by_name(&self, name: &str) -> Result<LinkInfo, OsError> {
        let req = self.handle.link().get().match_name(name).execute();
        self.one_link(req, name).await
    }

    /// Look up a link by index.
    pub async fn link_by_index(&self, index: u32) -> Result<LinkInfo, OsError> {
        let req = self.handle.link().get().match_index(index).execute();
        self.one_link(req, &index.to_string()).await
    }

    async fn one_link(
        &self,
        req: impl futures::Stream<Item = Result<LinkMessage, rtnetlink::Error>>,
        what: &str,
    ) -> Result<LinkInfo, OsError> {
        let msg = raw_link(req, what).await?;
        Ok(link_info(&msg))
    }

    /// Return the addresses (with prefix lengths) on link `index`, both
    /// families, including tentative ones.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, OsError> {
        self.handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .map_err(|e| nl_err("dump addresses", e))
            .try_filter_map(|m| async move { Ok(address_of(&m).map(|a| (a, m.header.prefix_len))) })
            .try_collect()
            .await
    }

    /// Add `addr/prefix_len` to link `index`.
    ///
    /// Idempotent: an existing identical address is success. IPv6 addresses
    /// get `IFA_F_NODAD`, so they are never tentative.
    pub async fn add_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), OsError> {
        let mut req = self.handle.address().add(index, addr, prefix_len);
        *req.message_mut() = new_address_message(index, addr, prefix_len);
        match req.execute().await {
            Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(()),
            r => r.map_err(|e| nl_err("add address", e)),
        }
    }

    /// Add every `(addr, prefix_len)` of `addrs` to link `index`, as
    /// [`Netlink::add_address`] does, and return one result per address in
    /// the same order.
    ///
    /// The requests go out [`BATCH`] to a datagram on a socket of their own
    /// (see [`batch`]); an address whose answer was lost is retried on its own.
    pub async fn add_addresses(
        &self,
        index: u32,
        addrs: &[(IpAddr, u8)],
    ) -> Vec<Result<(), OsError>> {
        let msgs = addrs
            .iter()
            .map(|&(a, p)| {
                (
                    RouteNetlinkMessage::NewAddress(new_address_message(index, a, p)),
                    ADD_FLAGS,
                )
            })
            .collect();
        let mut results = batch("add address", msgs, &[libc::EEXIST]).await;
        for (i, &(a, p)) in addrs.iter().enumerate() {
            if results[i].is_none() {
                results[i] = Some(self.add_address(index, a, p).await);
            }
        }
        results.into_iter().flatten().collect()
    }

    /// Remove `addr/prefix_len` from link `index`.
    ///
    /// Idempotent: a missing address, or a missing link, is success.
    pub async fn del_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), OsError> {
        let msg = address_message(index, addr, prefix_len);
        match self.handle.address().del(msg).execute().await {
            Err(e) if matches!(errno_of(&e), Some(libc::EADDRNOTAVAIL | libc::ENODEV)) => Ok(()),
            r => r.map_err(|e| nl_err("delete address", e)),
        }
    }

    /// Remove every `(addr, prefix_len)` of `addrs` from link `index`, as
    /// [`Netlink::del_address`] does, batched as [`Netlink::add_addresses`];
    /// one result per address in the same order.
    pub async fn del_addresses(
        &self,
        index: u32,
        addrs: &[(IpAddr, u8)],
    ) -> Vec<Result<(), OsError>> {
        let msgs = addrs
            .iter()
            .map(|&(a, p)| {
                (
                    RouteNetlinkMessage::DelAddress(address_message(index, a, p)),
                    DEL_FLAGS,
                )
            })
            .collect();
        let mut results = batch("delete address", msgs, &[libc::EADDRNOTAVAIL, libc::ENODEV]).await;
        for (i, &(a, p)) in addrs.iter().enumerate() {
            if results[i].is_none() {
                results[i] = Some(self.del_address(index, a, p).await);
            }
        }
        results.into_iter().flatten().collect()
    }

    /// Set `ip` at `mac` on link `index` as a permanent neighbour, replacing
    /// whatever entry was there.
    pub async fn pin_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<(), OsError> {
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| nl_err("pin neighbour", e))
    }

    /// Remove the neighbour entry of `ip` on link `index`; a missing one is success.
    pub async fn unpin_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), OsError> {
        let mut msg = NeighbourMessage::default();
        msg.header.ifindex = index;
        msg.header.family = match ip {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.attributes
            .push(NeighbourAttribute::Destination(match ip {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if matches!(errno_of(&e), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
            r => r.map_err(|e| nl_err("remove neighbour", e)),
        }
    }

    /// Make sure a bridge-mode macvlan `name` on `parent` with MAC `mac`
    /// exists and is up, and return its index.
    ///
    /// Bridge mode, not private: the MASTER sends its advertisements from the
    /// virtual MAC, and every BACKUP has a macvlan with that same MAC. In
    /// private mode the kernel hands a multicast frame whose source MAC is a
    /// local macvlan's to that macvlan alone (as if it were our own frame
    /// coming back), so the parent's CARP socket would never see the
    /// MASTER's advertisements. Bridge mode delivers them to the parent.
    ///
    /// An existing macvlan with that name is reused when parent, mode and
    /// MAC match, and replaced otherwise; a non-macvlan link with that name
    /// is an error. IPv6 address generation is set to none before the link
    /// comes up, so it gets no EUI-64 link-local: every node uses the same
    /// virtual MAC and would otherwise fail DAD on the same fe80 address.
    pub async fn ensure_macvlan(
        &self,
        parent: u32,
        name: &str,
        mac: [u8; 6],
    ) -> Result<u32, OsError> {
        match raw_link(self.handle.link().get().match_name(name).execute(), name).await {
            Ok(existing) => {
                let index = existing.header.index;
                match macvlan_matches(&existing, parent, mac) {
                    Some(true) => {
                        self.set_addrgenmode_none(index).await?;
                        self.set_up(index).await?;
                        // A link-local from before addrgenmode was none stays.
                        for (addr, plen) in self.addresses(index).await? {
                            if let IpAddr::V6(a) = addr
                                && a.is_unicast_link_local()
                            {
                                self.del_address(index, addr, plen).await?;
                            }
                        }
                        return Ok(index);
                    }
                    Some(false) => self.delete_link(index).await?,
                    None => {
                        return Err(OsError::Netlink {
                            op: "ensure macvlan",
                            detail: format!("{name} exists and is not a macvlan"),
                            errno: Some(libc::EEXIST),
                        });
                    }
                }
            }
            Err(OsError::LinkNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let msg = LinkMacVlan::new(name, parent, MacVlanMode::Bridge)
            .address(mac.to_vec())
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|e| nl_err("create macvlan", e))?;
        let index = raw_link(self.handle.link().get().match_name(name).execute(), name)
            .await?
            .header
            .index;
        self.set_addrgenmode_none(index).await?;
        self.set_up(index).await?;
        Ok(index)
    }

    async fn set_addrgenmode_none(&self, index: u32) -> Result<(), OsError> {
        let msg = LinkUnspec::new_with_index(index)
            .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
                vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
            )]))
            .build();
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| nl_err("set addrgenmode none", e))
    }

    async fn set_up(&self, index: u32) -> Result<(), OsError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        self.handle
            .link()
            .change(msg)
            .execute()
            .await
            .map_err(|e| nl_err("set link up", e))
    }

    /// Delete link `index`. Idempotent: a missing link is success.
    pub async fn delete_link(&self, index: u32) -> Result<(), OsError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if errno_of(&e) == Some(libc::ENODEV) => Ok(()),
            r => r.map_err(|e| nl_err("delete link", e)),
        }
    }
}

async fn raw_link(
    req: impl futures::Stream<Item = Result<LinkMessage, rtnetlink::Error>>,
    what: &str,
) -> Result<LinkMessage, OsError> {
    let mut req = std::pin::pin!(req);
    match req.try_next().await {
        Ok(Some(msg)) => Ok(msg),
        Ok(None) => Err(OsError::LinkNotFound {
            link: what.to_owned(),
        }),
        Err(e) if errno_of(&e) == Some(libc::ENODEV) => Err(OsError::LinkNotFound {
            link: what.to_owned(),
        }),
        Err(e) => Err(nl_err("get link", e)),
    }
}

/// `Some(true)` if `msg` is a bridge-mode macvlan on `parent` with `mac`,
/// `Some(false)` if it is some other macvlan, `None` if it is no macvlan.
fn macvlan_matches(msg: &LinkMessage, parent: u32, mac: [u8; 6]) -> Option<bool> {
    let mut is_macvlan = false;
    let mut bridge_mode = false;
    let mut link = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        NlLinkInfo::Kind(InfoKind::MacVlan) => is_macvlan = true,
                        NlLinkInfo::Data(InfoData::MacVlan(data)) => {
                            bridge_mode = data.contains(&InfoMacVlan::Mode(MacVlanMode::Bridge));
                        }
                        _ => {}
                    }
                }
            }
            LinkAttribute::Link(l) => link = Some(*l),
            LinkAttribute::Address(a) => address = Some(a.as_slice()),
            _ => {}
        }
    }
    is_macvlan.then_some(bridge_mode && link == Some(parent) && address == Some(&mac[..]))
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut name = String::new();
    let mut mac = [0u8; 6];
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::Address(a) => {
                if let Ok(a) = <[u8; 6]>::try_from(a.as_slice()) {
                    mac = a;
                }
            }
            _ => {}
        }
    }
    LinkInfo {
        index: msg.header.index,
        name,
        mac,
        admin_up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
    }
}

/// The interface's own address of an address message: IFA_LOCAL when
/// present (on point-to-point links IFA_ADDRESS is the peer), else
/// IFA_ADDRESS.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(a) => return Some(*a),
            AddressAttribute::Address(a) => address = Some(*a),
            _ => {}
        }
    }
    address
}

/// Address requests per datagram in [`batch`]: the kernel queues all their
/// acks (one skb each, about 1 KiB of receive buffer) before we read any,
/// so a window must fit the default 208 KiB buffer with room to spare.
pub const BATCH: usize = 64;

/// How long [`batch`] waits for one ack; the kernel answers a request
/// while it is being sent, so this only bounds a lost one.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

const ADD_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_EXCL | NLM_F_CREATE;
const DEL_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK;

/// The address message for `addr/prefix_len` on link `index`.
fn address_message(index: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    match addr {
        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
            .index(index)
            .address(a, prefix_len)
            .build(),
        IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
            .index(index)
            .address(a, prefix_len)
            .build(),
    }
}

/// [`address_message`] as added: IPv6 with `IFA_F_NODAD`.
fn new_address_message(index: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut msg = address_message(index, addr, prefix_len);
    if addr.is_ipv6() {
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    msg
}

/// Send `msgs` to the kernel on a fresh netlink socket, [`BATCH`] messages
/// to a datagram, without waiting for each ack; return one result per
/// message, in order. An errno in `ok_errnos` is success. `None` marks a
/// message whose ack never came (socket trouble, receive buffer overrun):
/// the caller retries those one by one, which is safe as address changes
/// are idempotent.
///
/// rtnetlink's connection sends one queued request per wake-up of its task,
/// so a thousand requests cost a thousand trips through the runtime; here
/// a window is one `sendto` and the kernel has answered it when that returns.
/// Acks are matched by sequence number, so each address keeps its own error.
async fn batch(
    op: &'static str,
    msgs: Vec<(RouteNetlinkMessage, u16)>,
    ok_errnos: &[i32],
) -> Vec<Option<Result<(), OsError>>> {
    let mut results: Vec<Option<Result<(), OsError>>> = msgs.iter().map(|_| None).collect();
    let Ok(sock) = batch_socket() else {
        return results;
    };
    let kernel = SocketAddr::new(0, 0);
    let mut msgs = msgs.into_iter().enumerate().peekable();
    let mut buf = Vec::new();
    let mut rx = Vec::with_capacity(8192);
    while msgs.peek().is_some() {
        buf.clear();
        let mut window = 0..0;
        for (i, (msg, flags)) in msgs.by_ref().take(BATCH) {
            if window.is_empty() {
                window = i..i;
            }
            window.end = i + 1;
            let mut nl = NetlinkMessage::from(msg);
            nl.header.flags = flags;
            // Sequence numbers start at 1: 0 is what unsolicited messages carry.
            nl.header.sequence_number = seq_of(i);
            nl.finalize();
            let at = buf.len();
            // Each message starts on a 4-byte boundary (NLMSG_ALIGN).
            buf.resize(at + nl.buffer_len().next_multiple_of(4), 0);
            nl.serialize(&mut buf[at..]);
        }
        if !matches!(sock.send_to(&buf, &kernel).await, Ok(n) if n == buf.len()) {
            return results;
        }
        let mut pending = window.len();
        while pending > 0 {
            rx.clear();
            match tokio::time::timeout(ACK_WAIT, sock.recv_from(&mut rx)).await {
                Ok(Ok(_)) => {}
                // ENOBUFS (acks dropped), an error or no answer: leave the rest unknown.
                _ => break,
            }
            for (seq, code) in acks(&rx) {
                let Some(i) = index_of(seq).filter(|i| window.contains(i)) else {
                    continue;
                };
                if results[i].is_some() {
                    continue;
                }
                pending -= 1;
                results[i] = Some(match code {
                    0 => Ok(()),
                    e if ok_errnos.contains(&e.abs()) => Ok(()),
                    e => Err(OsError::Netlink {
                        op,
                        detail: std::io::Error::from_raw_os_error(e.abs()).to_string(),
                        errno: Some(e.abs()),
                    }),
                });
            }
        }
    }
    results
}

fn seq_of(i: usize) -> u32 {
    u32::try_from(i).map_or(u32::MAX, |i| i.saturating_add(1))
}

fn index_of(seq: u32) -> Option<usize> {
    usize::try_from(seq.checked_sub(1)?).ok()
}

fn batch_socket() -> std::io::Result<TokioSocket> {
    let mut sock = TokioSocket::new(NETLINK_ROUTE)?;
    sock.socket_mut().bind_auto()?;
    Ok(sock)
}

/// The `(sequence number, error code)` of every ack and error in the
/// datagram `buf`; anything else, or anything malformed, is skipped.
fn acks(mut buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len])
            && let NetlinkPayload::Error(e) = msg.payload
        {
            out.push((msg.header.sequence_number, e.raw_code()));
        }
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    out
}

/// A multicast netlink socket reporting link and address changes.
#[derive(Debug)]
pub struct LinkMonitor {
    rx: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    conn: AbortHandle,
}

impl LinkMonitor {
    /// Subscribe to link, IPv4 address and IPv6 address changes.
    ///
    /// Must be called inside a tokio runtime with I/O enabled; the socket's
    /// driver task is spawned there and stopped when the monitor is dropped.
    /// Subscribe before dumping the initial state, so nothing is missed in
    /// between.
    pub fn open() -> Result<LinkMonitor, OsError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| no_runtime("open monitor"))?;
        let io_err = |e: std::io::Error| OsError::Netlink {
            op: "open monitor",
            detail: e.to_string(),
            errno: e.raw_os_error(),
        };
        let (mut conn, _, rx) = rtnetlink::new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
        ])
        .map_err(io_err)?;
        conn.socket_mut()
            .socket_mut()
            .set_rx_buf_sz(MONITOR_RCVBUF)
            .map_err(io_err)?;
        let conn = rt.spawn(conn).abort_handle();
        Ok(LinkMonitor { rx, conn })
    }

    /// Wait for the next event. `None` means the socket is gone for good.
    ///
    /// Cancel-safe, so it can sit in a `select!`.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        loop {
            let (msg, _) = self.rx.next().await?;
            if let Some(ev) = event_of(msg.payload) {
                return Some(ev);
            }
        }
    }
}

impl Drop for LinkMonitor {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

fn event_of(payload: NetlinkPayload<RouteNetlinkMessage>) -> Option<LinkEvent> {
    let addr_event =
        |m: &AddressMessage| address_of(m).map(|addr| (m.header.index, addr, m.header.prefix_len));
    match payload {
        NetlinkPayload::Overrun(_) => Some(LinkEvent::Resync),
        NetlinkPayload::InnerMessage(msg) => match msg {
            RouteNetlinkMessage::NewLink(m) => Some(LinkEvent::Link(link_info(&m))),
            RouteNetlinkMessage::DelLink(m) => Some(LinkEvent::Removed(LinkInfo {
                admin_up: false,
                carrier: false,
                ..link_info(&m)
            })),
            RouteNetlinkMessage::NewAddress(m) => {
                addr_event(&m).map(|(index, addr, prefix_len)| LinkEvent::AddressAdded {
                    index,
                    addr,
                    prefix_len,
                })
            }
            RouteNetlinkMessage::DelAddress(m) => {
                addr_event(&m).map(|(index, addr, prefix_len)| LinkEvent::AddressRemoved {
                    index,
                    addr,
                    prefix_len,
                })
            }
            _ => None,
        },
        _ => None,
    }
}
