//! [`Linux`]: the [`Os`] of a real host, built from [`Netlink`], [`LinkMonitor`],
//! [`CarpSocket`], [`L2Sender`], `/proc/sys` and the [`Owned`] record.
//!
//! Each CARP socket gets a reader task that forwards datagrams to the loop's
//! channel; the link monitor gets one too, which reopens the monitor if it
//! closes. Sockets and senders are kept per carpdev and live as long as the
//! `Linux` value.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use carp_proto::{CarpIfId, Family, LinkId};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::balance_glue::Datapaths;
use super::bpf::Accept;
use super::l2::{
    ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, L2Sender, carp_advert_frame_v4, carp_advert_frame_v6,
    multicast_mac,
};
use super::netlink::{LinkEvent, LinkInfo, LinkMonitor, Netlink};
use super::privs::{self, Dropped, PrivError};
use super::raw::CarpSocket;
use super::solicit::{self, SolicitationSocket};
use super::{Balanced, Datagram, Os, OsError, Solicitation};
use crate::carplog;
use crate::guard::WillSink;
use crate::guard::will::Will;
use crate::log::chain;
use crate::owned::{Owned, OwnedAddress};

/// Queue between the link monitor's task and the loop; the monitor's own
/// socket buffer absorbs bursts beyond it.
const LINK_EVENT_QUEUE: usize = 256;

/// The operating system carpd runs on.
#[derive(Debug)]
pub struct Linux {
    netlink: Netlink,
    sockets: BTreeMap<(LinkId, Family), (Arc<CarpSocket>, AbortHandle)>,
    /// Each carpdev's filter, kept for the sockets opened later.
    filters: BTreeMap<LinkId, Vec<Accept>>,
    l2: BTreeMap<LinkId, L2Sender>,
    solicitations: BTreeMap<LinkId, AbortHandle>,
    balance: Datapaths,
    record: Option<Owned>,
    will: Option<WillSink>,
}

impl Linux {
    /// Open the rtnetlink connection. Must be called inside a tokio runtime.
    pub async fn connect() -> Result<Linux, OsError> {
        Ok(Linux {
            netlink: Netlink::connect().await?,
            sockets: BTreeMap::new(),
            filters: BTreeMap::new(),
            l2: BTreeMap::new(),
            solicitations: BTreeMap::new(),
            balance: Datapaths::default(),
            record: None,
            will: None,
        })
    }

    /// Send the daemon's wills to `sink` (without one they go nowhere).
    pub fn set_will_sink(&mut self, sink: WillSink) {
        self.will = Some(sink);
    }

    fn l2(&self, link: LinkId) -> Result<&L2Sender, OsError> {
        self.l2.get(&link).ok_or_else(|| OsError::LinkNotFound {
            link: format!("{} (no packet socket)", link.0),
        })
    }
}

fn record_error(record: &Owned) -> impl FnOnce(std::io::Error) -> OsError + '_ {
    |source| OsError::File {
        path: record.path().to_owned(),
        source,
    }
}

impl Os for Linux {
    async fn link_by_name(&self, name: &str) -> Result<LinkInfo, OsError> {
        self.netlink.link_by_name(name).await
    }

    async fn link_by_index(&self, index: u32) -> Result<LinkInfo, OsError> {
        self.netlink.link_by_index(index).await
    }

    async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, OsError> {
        self.netlink.addresses(index).await
    }

    async fn add_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), OsError> {
        self.netlink.add_address(index, addr, prefix_len).await
    }

    async fn del_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), OsError> {
        self.netlink.del_address(index, addr, prefix_len).await
    }

    async fn add_addresses(&self, index: u32, addrs: &[(IpAddr, u8)]) -> Vec<Result<(), OsError>> {
        self.netlink.add_addresses(index, addrs).await
    }

    async fn del_addresses(&self, index: u32, addrs: &[(IpAddr, u8)]) -> Vec<Result<(), OsError>> {
        self.netlink.del_addresses(index, addrs).await
    }

    async fn ensure_macvlan(&self, parent: u32, name: &str, mac: [u8; 6]) -> Result<u32, OsError> {
        self.netlink.ensure_macvlan(parent, name, mac).await
    }

    async fn delete_link(&self, index: u32) -> Result<(), OsError> {
        self.netlink.delete_link(index).await
    }

    fn link_events(&mut self) -> Result<mpsc::Receiver<LinkEvent>, OsError> {
        let mut monitor = LinkMonitor::open()?;
        let (tx, rx) = mpsc::channel(LINK_EVENT_QUEUE);
        tokio::spawn(async move {
            loop {
                if forward_link_events(&mut monitor, &tx).await.is_err() {
                    return;
                }
                carplog!(Err, "link monitor closed; reopening");
                tokio::time::sleep(Duration::from_secs(1)).await;
                match LinkMonitor::open() {
                    Ok(m) => monitor = m,
                    Err(e) => carplog!(Err, "cannot reopen the link monitor: {}", chain(&e)),
                }
            }
        });
        Ok(rx)
    }

    fn open_carp_socket(
        &mut self,
        link: LinkId,
        index: u32,
        ifname: &str,
        family: Family,
        to: mpsc::Sender<Datagram>,
    ) -> Result<(), OsError> {
        let sock = Arc::new(match family {
            Family::V4 => CarpSocket::open_v4(ifname, index)?,
            Family::V6 => CarpSocket::open_v6(ifname, index)?,
        });
        if let Some(accept) = self.filters.get(&link)
            && let Err(e) = sock.set_filter(accept)
        {
            carplog!(
                Warning,
                "{}; carpd reads every protocol-112 packet",
                chain(&e)
            );
        }
        let reader = spawn_reader(link, sock.clone(), to);
        if let Some((_, old)) = self.sockets.insert((link, family), (sock, reader)) {
            old.abort();
        }
        Ok(())
    }

    async fn send_advert(
        &self,
        link: LinkId,
        family: Family,
        src: Option<IpAddr>,
        dst: IpAddr,
        packet: &[u8],
    ) -> Result<(), OsError> {
        let Some(sock) = self.sockets.get(&(link, family)) else {
            return Err(OsError::LinkNotFound {
                link: format!("{} (no {family:?} CARP socket)", link.0),
            });
        };
        sock.0.send(src, dst, packet).await
    }

    fn filter_carp_sockets(&mut self, link: LinkId, accept: &[Accept]) -> Result<(), OsError> {
        if self.filters.get(&link).is_some_and(|a| a == accept) {
            return Ok(());
        }
        self.filters.insert(link, accept.to_vec());
        let mut result = Ok(());
        for family in [Family::V4, Family::V6] {
            if let Some((sock, _)) = self.sockets.get(&(link, family)) {
                result = result.and(sock.set_filter(accept));
            }
        }
        result
    }

    fn open_l2(&mut self, link: LinkId, index: u32) -> Result<(), OsError> {
        self.l2.insert(link, L2Sender::open(index)?);
        Ok(())
    }

    fn close_link(&mut self, link: LinkId) {
        self.l2.remove(&link);
        if let Some(reader) = self.solicitations.remove(&link) {
            reader.abort();
        }
        self.balance.forget_link(link);
        for family in [Family::V4, Family::V6] {
            if let Some((_, reader)) = self.sockets.remove(&(link, family)) {
                reader.abort();
            }
        }
    }

    fn send_advert_frame(
        &self,
        link: LinkId,
        mac: [u8; 6],
        src: IpAddr,
        dst: IpAddr,
        packet: &[u8],
    ) -> Result<(), OsError> {
        let (frame, ethertype) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(g)) => (carp_advert_frame_v4(mac, s, g, packet), ETH_P_IP),
            (IpAddr::V6(s), IpAddr::V6(g)) => (carp_advert_frame_v6(mac, s, g, packet), ETH_P_IPV6),
            _ => {
                return Err(OsError::socket(
                    "send frame",
                    &link.0.to_string(),
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "source and group of different families",
                    ),
                ));
            }
        };
        self.l2(link)?.send(&frame, ethertype, multicast_mac(dst))
    }

    fn announce(
        &self,
        link: LinkId,
        mac: [u8; 6],
        ipv4: &[Ipv4Addr],
        ipv6: &[Ipv6Addr],
        router: bool,
    ) -> Vec<(IpAddr, OsError)> {
        match self.l2(link) {
            Ok(l2) => l2.announce(mac, ipv4, ipv6, router),
            Err(_) => ipv4
                .iter()
                .map(|&a| IpAddr::V4(a))
                .chain(ipv6.iter().map(|&a| IpAddr::V6(a)))
                .filter_map(|a| self.l2(link).err().map(|e| (a, e)))
                .collect(),
        }
    }

    fn open_solicitations(
        &mut self,
        link: LinkId,
        index: u32,
        to: mpsc::Sender<Solicitation>,
    ) -> Result<(), OsError> {
        let sock = SolicitationSocket::open(index)?;
        let reader = spawn_solicitation_reader(link, sock, to);
        if let Some(old) = self.solicitations.insert(link, reader) {
            old.abort();
        }
        Ok(())
    }

    fn answer_solicitation(
        &self,
        sol: &Solicitation,
        answer_mac: [u8; 6],
        frame_src: [u8; 6],
        router: bool,
    ) -> Result<(), OsError> {
        let l2 = self.l2(sol.link)?;
        match sol.target {
            IpAddr::V4(_) => match solicit::arp_reply_frame(sol, answer_mac, frame_src) {
                Some(frame) => l2.send(&frame, ETH_P_ARP, sol.sender_mac),
                None => Ok(()),
            },
            IpAddr::V6(_) => match solicit::na_reply_frame(sol, answer_mac, frame_src, router) {
                Some(frame) => {
                    let dst: [u8; 6] = frame[..6].try_into().unwrap_or(sol.sender_mac);
                    l2.send(&frame, ETH_P_IPV6, dst)
                }
                None => Ok(()),
            },
        }
    }

    async fn pin_neighbour(&self, index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<(), OsError> {
        self.netlink.pin_neighbour(index, ip, mac).await
    }

    async fn unpin_neighbour(&self, index: u32, ip: IpAddr) -> Result<(), OsError> {
        self.netlink.unpin_neighbour(index, ip).await
    }

    fn balance_set(
        &mut self,
        link: LinkId,
        index: u32,
        iface: CarpIfId,
        set: &Balanced,
    ) -> Result<(), OsError> {
        self.balance.set(link, index, iface, set)
    }

    fn balance_mask(&mut self, link: LinkId, iface: CarpIfId, mask: u32) -> Result<(), OsError> {
        self.balance.set_mask(link, iface, mask)
    }

    fn balance_remove(&mut self, link: LinkId, iface: CarpIfId) {
        self.balance.remove(link, iface);
    }

    fn read_sysctl(&self, key: &str) -> Option<String> {
        std::fs::read_to_string(format!("/proc/sys/{key}"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn write_sysctl(&self, key: &str, value: &str) -> Result<(), OsError> {
        let path = Path::new("/proc/sys").join(key);
        std::fs::write(&path, value).map_err(|source| OsError::File { path, source })
    }

    fn open_record(&mut self, state_dir: &Path, control: &Path) -> Vec<OwnedAddress> {
        let (record, leftovers) = Owned::open(state_dir, control);
        self.record = Some(record);
        leftovers
    }

    fn hold_addresses(&mut self, addrs: &[OwnedAddress]) -> Result<(), OsError> {
        match &mut self.record {
            Some(r) => r.hold(addrs.iter().cloned()).map_err(record_error(r)),
            None => Ok(()),
        }
    }

    fn release_addresses(&mut self, addrs: &[OwnedAddress]) -> Result<(), OsError> {
        match &mut self.record {
            Some(r) => r.release(addrs).map_err(record_error(r)),
            None => Ok(()),
        }
    }

    fn save_record(&mut self) -> Result<(), OsError> {
        match &self.record {
            Some(r) => r.save().map_err(record_error(r)),
            None => Ok(()),
        }
    }

    fn lookup_user(&self, name: &str) -> Result<(), PrivError> {
        privs::lookup_user(name).map(|_| ())
    }

    async fn set_accept_filter(
        &mut self,
        filter: &super::accept::AcceptFilter,
    ) -> Result<(), OsError> {
        super::accept::apply(filter).await
    }

    fn set_realtime(&mut self, priority: Option<u8>) -> super::realtime::Realtime {
        super::realtime::apply(priority)
    }

    fn drop_privileges(
        &mut self,
        user: Option<&str>,
        state_dir: &Path,
        bpf: bool,
    ) -> Result<Dropped, PrivError> {
        let user = user.map(privs::lookup_user).transpose()?;
        let dropped = privs::drop_privileges(user.as_ref(), state_dir, bpf)?;
        // Only now may the will file's thread start.
        if let Some(w) = &mut self.will {
            w.start_file_writer();
        }
        Ok(dropped)
    }

    fn set_will(&mut self, will: &Will) {
        if let Some(w) = &mut self.will {
            w.set(will);
        }
    }

    async fn retire_will(&mut self) {
        if let Some(w) = &mut self.will {
            w.retire().await;
        }
    }
}

/// Events held while the loop's queue is full; beyond this many they are
/// dropped for one `Resync` (re-read everything), as after a kernel overrun.
const LINK_EVENT_BACKLOG: usize = 65536;

/// Pass the monitor's events on until it closes (`Ok`) or the loop is gone
/// (`Err`).
///
/// Reads the monitor even while the loop's queue is full, keeping the
/// compact events here: waiting would leave the monitor's parsed messages
/// (KiBs each, with statistics and per-family attributes) piling up inside
/// netlink-proto while the loop is busy, e.g. creating 1000 macvlans at
/// start-up: 90 MB at the peak, most of it kept by malloc afterwards.
async fn forward_link_events(
    monitor: &mut LinkMonitor,
    tx: &mpsc::Sender<LinkEvent>,
) -> Result<(), ()> {
    let mut backlog = std::collections::VecDeque::new();
    loop {
        tokio::select! {
            biased;
            permit = tx.reserve(), if !backlog.is_empty() => {
                if let Some(event) = backlog.pop_front() {
                    permit.map_err(|_| ())?.send(event);
                }
                if backlog.is_empty() {
                    backlog = Default::default();
                }
            }
            event = monitor.next() => {
                let Some(event) = event else {
                    return Ok(());
                };
                if backlog.is_empty() {
                    match tx.try_send(event) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(event)) => backlog.push_back(event),
                        Err(mpsc::error::TrySendError::Closed(_)) => return Err(()),
                    }
                } else if backlog.len() < LINK_EVENT_BACKLOG {
                    backlog.push_back(event);
                } else if !matches!(backlog.back(), Some(LinkEvent::Resync)) {
                    backlog.clear();
                    backlog.push_back(LinkEvent::Resync);
                }
            }
        }
    }
}

fn spawn_solicitation_reader(
    link: LinkId,
    sock: SolicitationSocket,
    tx: mpsc::Sender<Solicitation>,
) -> AbortHandle {
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) => {
                    let Some(sol) = solicit::parse(link, &buf[..n.min(buf.len())]) else {
                        continue;
                    };
                    // A flood must not stall the reader: drop what the loop cannot take.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(sol) {
                        return;
                    }
                }
                Err(e) => {
                    carplog!(
                        Warning,
                        "link {}: solicitation receive failed: {}",
                        link.0,
                        chain(&e)
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    task.abort_handle()
}

fn spawn_reader(link: LinkId, sock: Arc<CarpSocket>, tx: mpsc::Sender<Datagram>) -> AbortHandle {
    let task = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(super::raw::RECV_BATCH);
        loop {
            match sock.recv_batch(&mut batch).await {
                Ok(_) => {
                    for (r, bytes) in batch.drain(..) {
                        let d = Datagram {
                            link,
                            src: r.src,
                            dst: r.dst,
                            ttl: r.ttl,
                            ifindex: r.ifindex,
                            bytes,
                        };
                        // Waiting here lets the kernel's socket buffer absorb bursts.
                        if tx.send(d).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    carplog!(Warning, "{}: receive failed: {}", sock.ifname(), chain(&e));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    task.abort_handle()
}
