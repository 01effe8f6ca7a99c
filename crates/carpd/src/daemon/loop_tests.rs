//! The daemon loop against a fake [`Os`] under tokio's paused clock: which
//! OS calls the core's actions become, and in which order. No root needed.
//!
//! The fake is one carpdev `eth0` (index 2, 192.0.2.1/24 and fe80::1) that
//! records every call, lets a test inject datagrams, link events and
//! failures, and keeps an in-memory address table and record.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use carp_proto::{CarpIfId, Family, LinkId};
use tokio::sync::{mpsc, oneshot};

use super::{Signal, run_with};
use crate::config::{DaemonConfig, Overrides};
use crate::control::Envelope;
use crate::control::types::{Reply, Request, VhostCause, VhostState, VhostView};
use crate::guard::will::{Will, WillLink};
use crate::log::{Level, capture};
use crate::os::bpf::{Accept, Proto, TtlRule};
use crate::os::{
    Balanced, Datagram, Dropped, LinkEvent, LinkInfo, Os, OsError, PrivError, Solicitation,
};
use crate::owned::OwnedAddress;

const ETH0: u32 = 2;
const ETH0_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const VIP: &str = "192.0.2.50";
const VIP6: &str = "2001:db8::50";
const VIP2: &str = "192.0.2.60";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// One OS call, as recorded by the fake.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    LinkByName(String),
    LinkByIndex(u32),
    Addresses(u32),
    AddAddress(u32, IpAddr, u8),
    DelAddress(u32, IpAddr, u8),
    EnsureMacvlan(u32, String),
    DeleteLink(u32),
    OpenSocket(LinkId, Family),
    /// The CARP sockets' kernel filter of a carpdev.
    Filter(LinkId, Vec<Accept>),
    /// Through a CARP socket.
    Advert(Family, IpAddr, Vec<u8>),
    /// As a frame from the virtual MAC.
    AdvertFrame([u8; 6], IpAddr, Vec<u8>),
    OpenL2(LinkId),
    CloseLink(LinkId),
    Garp([u8; 6], Ipv4Addr),
    Na([u8; 6], Ipv6Addr),
    WriteSysctl(String),
    Hold(Vec<IpAddr>),
    Release(Vec<IpAddr>),
    SaveRecord,
    DropPrivileges,
    SetRealtime(Option<u8>),
    AcceptFilter(Vec<IpAddr>),
    OpenSolicitations(LinkId),
    /// An ARP reply or NA: target, answer MAC, frame source.
    Answer(IpAddr, [u8; 6], [u8; 6]),
    Pin(IpAddr, [u8; 6]),
    Unpin(IpAddr),
    BalanceSet(Balanced),
    BalanceMask(u32),
    BalanceRemove,
}

impl Call {
    /// The advertisement's bytes, however it was sent.
    fn advert(&self) -> Option<&[u8]> {
        match self {
            Call::Advert(_, _, p) | Call::AdvertFrame(_, _, p) => Some(p),
            _ => None,
        }
    }
}

#[derive(Default)]
struct World {
    calls: Vec<Call>,
    links: BTreeMap<u32, LinkInfo>,
    addrs: BTreeMap<u32, BTreeSet<(IpAddr, u8)>>,
    /// Addresses whose add fails, with this errno.
    fail_add: BTreeMap<IpAddr, i32>,
    /// Advertisement sends fail with this errno.
    fail_send: Option<i32>,
    /// Announcement frames fail with this errno.
    fail_announce: Option<i32>,
    /// The size of each address batch (add or remove), in order.
    batches: Vec<usize>,
    /// How many announcement bursts were sent.
    bursts: usize,
    sockets: Vec<(LinkId, Family, mpsc::Sender<Datagram>)>,
    events: Option<mpsc::Sender<LinkEvent>>,
    solicitations: Option<mpsc::Sender<Solicitation>>,
    record: BTreeSet<OwnedAddress>,
    next_index: u32,
    /// Every will handed on, in order (kept apart from `calls`).
    wills: Vec<Will>,
    /// `retire_will` was called.
    retired: bool,
}

/// The fake OS; clones share one world, so the test keeps a handle.
#[derive(Clone)]
struct Fake(Rc<RefCell<World>>);

impl Fake {
    fn new() -> Fake {
        let mut w = World {
            next_index: 10,
            ..World::default()
        };
        w.links.insert(ETH0, link(ETH0, "eth0", ETH0_MAC, true));
        w.addrs.insert(
            ETH0,
            [(ip("192.0.2.1"), 24), (ip("fe80::1"), 64)]
                .into_iter()
                .collect(),
        );
        Fake(Rc::new(RefCell::new(w)))
    }

    fn call(&self, c: Call) {
        self.0.borrow_mut().calls.push(c);
    }

    fn calls(&self) -> Vec<Call> {
        self.0.borrow().calls.clone()
    }

    fn fail_add(&self, addr: IpAddr, errno: i32) {
        self.0.borrow_mut().fail_add.insert(addr, errno);
    }

    /// Deliver `bytes` to the carpdev's socket of `family`, as from `src`.
    async fn inject(&self, family: Family, src: IpAddr, bytes: &[u8]) {
        let tx = self
            .0
            .borrow()
            .sockets
            .iter()
            .find(|(_, f, _)| *f == family)
            .map(|(_, _, tx)| tx.clone())
            .expect("socket open");
        let dst = match family {
            Family::V4 => IpAddr::V4(carp_proto::action::CARP_GROUP_V4),
            Family::V6 => IpAddr::V6(carp_proto::action::CARP_GROUP_V6),
        };
        let d = Datagram {
            link: LinkId(ETH0),
            src,
            dst,
            ttl: 255,
            ifindex: ETH0,
            bytes: bytes.to_vec(),
        };
        tx.send(d).await.unwrap();
    }

    async fn event(&self, e: LinkEvent) {
        let tx = self.0.borrow().events.clone().expect("monitor open");
        tx.send(e).await.unwrap();
    }

    /// Delete link `index` with its addresses, and report it.
    async fn delete(&self, index: u32) {
        let info = {
            let mut w = self.0.borrow_mut();
            w.addrs.remove(&index);
            w.links.remove(&index).expect("link exists")
        };
        self.event(LinkEvent::Removed(LinkInfo {
            admin_up: false,
            carrier: false,
            ..info
        }))
        .await;
    }

    /// The index of the link named `name`.
    fn index_of(&self, name: &str) -> Option<u32> {
        let w = self.0.borrow();
        w.links.values().find(|l| l.name == name).map(|l| l.index)
    }
}

fn link(index: u32, name: &str, mac: [u8; 6], up: bool) -> LinkInfo {
    LinkInfo {
        index,
        name: name.into(),
        mac,
        admin_up: true,
        carrier: up,
    }
}

fn not_found(what: impl ToString) -> OsError {
    OsError::LinkNotFound {
        link: what.to_string(),
    }
}

impl Os for Fake {
    async fn link_by_name(&self, name: &str) -> Result<LinkInfo, OsError> {
        self.call(Call::LinkByName(name.into()));
        let w = self.0.borrow();
        w.links
            .values()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    async fn link_by_index(&self, index: u32) -> Result<LinkInfo, OsError> {
        self.call(Call::LinkByIndex(index));
        let w = self.0.borrow();
        w.links.get(&index).cloned().ok_or_else(|| not_found(index))
    }

    async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, OsError> {
        self.call(Call::Addresses(index));
        let w = self.0.borrow();
        Ok(w.addrs
            .get(&index)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default())
    }

    async fn add_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), OsError> {
        self.call(Call::AddAddress(index, addr, prefix_len));
        let mut w = self.0.borrow_mut();
        if let Some(errno) = w.fail_add.get(&addr) {
            return Err(OsError::Netlink {
                op: "add address",
                detail: std::io::Error::from_raw_os_error(*errno).to_string(),
                errno: Some(*errno),
            });
        }
        w.addrs.entry(index).or_default().insert((addr, prefix_len));
        Ok(())
    }

    async fn del_address(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<(), OsError> {
        self.call(Call::DelAddress(index, addr, prefix_len));
        let mut w = self.0.borrow_mut();
        w.addrs
            .entry(index)
            .or_default()
            .remove(&(addr, prefix_len));
        Ok(())
    }

    async fn add_addresses(&self, index: u32, addrs: &[(IpAddr, u8)]) -> Vec<Result<(), OsError>> {
        self.0.borrow_mut().batches.push(addrs.len());
        let mut results = Vec::new();
        for &(a, p) in addrs {
            results.push(self.add_address(index, a, p).await);
        }
        results
    }

    async fn del_addresses(&self, index: u32, addrs: &[(IpAddr, u8)]) -> Vec<Result<(), OsError>> {
        self.0.borrow_mut().batches.push(addrs.len());
        let mut results = Vec::new();
        for &(a, p) in addrs {
            results.push(self.del_address(index, a, p).await);
        }
        results
    }

    async fn ensure_macvlan(&self, parent: u32, name: &str, mac: [u8; 6]) -> Result<u32, OsError> {
        self.call(Call::EnsureMacvlan(parent, name.into()));
        let mut w = self.0.borrow_mut();
        if let Some(l) = w.links.values_mut().find(|l| l.name == name) {
            l.admin_up = true;
            return Ok(l.index);
        }
        let index = w.next_index;
        w.next_index += 1;
        w.links.insert(index, link(index, name, mac, true));
        Ok(index)
    }

    async fn delete_link(&self, index: u32) -> Result<(), OsError> {
        self.call(Call::DeleteLink(index));
        self.0.borrow_mut().links.remove(&index);
        Ok(())
    }

    fn link_events(&mut self) -> Result<mpsc::Receiver<LinkEvent>, OsError> {
        let (tx, rx) = mpsc::channel(16);
        self.0.borrow_mut().events = Some(tx);
        Ok(rx)
    }

    fn open_carp_socket(
        &mut self,
        link: LinkId,
        _index: u32,
        _ifname: &str,
        family: Family,
        to: mpsc::Sender<Datagram>,
    ) -> Result<(), OsError> {
        self.call(Call::OpenSocket(link, family));
        let mut w = self.0.borrow_mut();
        w.sockets.retain(|(l, f, _)| (*l, *f) != (link, family));
        w.sockets.push((link, family, to));
        Ok(())
    }

    fn filter_carp_sockets(&mut self, link: LinkId, accept: &[Accept]) -> Result<(), OsError> {
        self.call(Call::Filter(link, accept.to_vec()));
        Ok(())
    }

    async fn send_advert(
        &self,
        _link: LinkId,
        family: Family,
        _src: Option<IpAddr>,
        dst: IpAddr,
        packet: &[u8],
    ) -> Result<(), OsError> {
        self.call(Call::Advert(family, dst, packet.to_vec()));
        match self.0.borrow().fail_send {
            Some(errno) => Err(OsError::socket(
                "send",
                "eth0",
                std::io::Error::from_raw_os_error(errno),
            )),
            None => Ok(()),
        }
    }

    fn open_l2(&mut self, link: LinkId, _index: u32) -> Result<(), OsError> {
        self.call(Call::OpenL2(link));
        Ok(())
    }

    fn close_link(&mut self, link: LinkId) {
        self.call(Call::CloseLink(link));
        self.0.borrow_mut().sockets.retain(|(l, _, _)| *l != link);
    }

    fn send_advert_frame(
        &self,
        _link: LinkId,
        mac: [u8; 6],
        _src: IpAddr,
        dst: IpAddr,
        packet: &[u8],
    ) -> Result<(), OsError> {
        self.call(Call::AdvertFrame(mac, dst, packet.to_vec()));
        Ok(())
    }

    fn announce(
        &self,
        _link: LinkId,
        mac: [u8; 6],
        ipv4: &[Ipv4Addr],
        ipv6: &[Ipv6Addr],
        _router: bool,
    ) -> Vec<(IpAddr, OsError)> {
        self.0.borrow_mut().bursts += 1;
        for &ip in ipv4 {
            self.call(Call::Garp(mac, ip));
        }
        for &ip in ipv6 {
            self.call(Call::Na(mac, ip));
        }
        let fail = self.0.borrow().fail_announce;
        fail.into_iter()
            .flat_map(|errno| {
                ipv4.iter()
                    .map(|&a| IpAddr::V4(a))
                    .chain(ipv6.iter().map(|&a| IpAddr::V6(a)))
                    .map(move |a| {
                        (
                            a,
                            OsError::socket(
                                "send frame",
                                "eth0",
                                std::io::Error::from_raw_os_error(errno),
                            ),
                        )
                    })
            })
            .collect()
    }

    fn open_solicitations(
        &mut self,
        link: LinkId,
        _index: u32,
        to: mpsc::Sender<Solicitation>,
    ) -> Result<(), OsError> {
        self.call(Call::OpenSolicitations(link));
        self.0.borrow_mut().solicitations = Some(to);
        Ok(())
    }

    fn answer_solicitation(
        &self,
        sol: &Solicitation,
        answer_mac: [u8; 6],
        frame_src: [u8; 6],
        _router: bool,
    ) -> Result<(), OsError> {
        self.call(Call::Answer(sol.target, answer_mac, frame_src));
        Ok(())
    }

    async fn pin_neighbour(&self, _index: u32, ip: IpAddr, mac: [u8; 6]) -> Result<(), OsError> {
        self.call(Call::Pin(ip, mac));
        Ok(())
    }

    async fn unpin_neighbour(&self, _index: u32, ip: IpAddr) -> Result<(), OsError> {
        self.call(Call::Unpin(ip));
        Ok(())
    }

    fn balance_set(
        &mut self,
        _link: LinkId,
        _index: u32,
        _iface: CarpIfId,
        set: &Balanced,
    ) -> Result<(), OsError> {
        self.call(Call::BalanceSet(set.clone()));
        Ok(())
    }

    fn balance_mask(&mut self, _link: LinkId, _iface: CarpIfId, mask: u32) -> Result<(), OsError> {
        self.call(Call::BalanceMask(mask));
        Ok(())
    }

    fn balance_remove(&mut self, _link: LinkId, _iface: CarpIfId) {
        self.call(Call::BalanceRemove);
    }

    fn read_sysctl(&self, key: &str) -> Option<String> {
        // A router: the macvlan's forwarding follows this while MASTER.
        (key == "net/ipv4/conf/all/forwarding").then(|| "1".into())
    }

    fn write_sysctl(&self, key: &str, value: &str) -> Result<(), OsError> {
        self.call(Call::WriteSysctl(format!("{key}={value}")));
        Ok(())
    }

    fn open_record(&mut self, _state_dir: &Path, _control: &Path) -> Vec<OwnedAddress> {
        Vec::new()
    }

    fn hold_addresses(&mut self, addrs: &[OwnedAddress]) -> Result<(), OsError> {
        self.call(Call::Hold(addrs.iter().map(|a| a.addr).collect()));
        self.0.borrow_mut().record.extend(addrs.iter().cloned());
        Ok(())
    }

    fn release_addresses(&mut self, addrs: &[OwnedAddress]) -> Result<(), OsError> {
        self.call(Call::Release(addrs.iter().map(|a| a.addr).collect()));
        let mut w = self.0.borrow_mut();
        for a in addrs {
            w.record.remove(a);
        }
        Ok(())
    }

    fn save_record(&mut self) -> Result<(), OsError> {
        self.call(Call::SaveRecord);
        Ok(())
    }

    fn set_will(&mut self, will: &Will) {
        self.0.borrow_mut().wills.push(will.clone());
    }

    async fn retire_will(&mut self) {
        self.0.borrow_mut().retired = true;
    }

    fn lookup_user(&self, _name: &str) -> Result<(), PrivError> {
        Ok(())
    }

    async fn set_accept_filter(
        &mut self,
        filter: &crate::os::accept::AcceptFilter,
    ) -> Result<(), OsError> {
        let mut all: Vec<IpAddr> = filter.v4.iter().map(|a| IpAddr::V4(*a)).collect();
        all.extend(filter.v6.iter().map(|a| IpAddr::V6(*a)));
        self.call(Call::AcceptFilter(all));
        Ok(())
    }

    fn set_realtime(&mut self, priority: Option<u8>) -> crate::os::realtime::Realtime {
        self.call(Call::SetRealtime(priority));
        crate::os::realtime::Realtime {
            priority,
            memory_locked: priority.is_some(),
            problem: None,
        }
    }

    fn drop_privileges(
        &mut self,
        _user: Option<&str>,
        _state_dir: &Path,
        _bpf: bool,
    ) -> Result<Dropped, PrivError> {
        self.call(Call::DropPrivileges);
        Ok(Dropped {
            kept: Vec::new(),
            bounding_left: Vec::new(),
            user: None,
        })
    }
}

/// A daemon on the fake, driven by a test script.
struct Harness {
    fake: Fake,
    dir: tempfile::TempDir,
    signals: mpsc::Sender<Signal>,
    ctl: mpsc::Sender<Envelope>,
}

/// One `[[vhost]]` on eth0.
fn vhost(vhid: u8, advskew: u8, lladdr: &str, addresses: &[&str]) -> String {
    let addresses: Vec<String> = addresses.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "[[vhost]]\ncarpdev = \"eth0\"\nvhid = {vhid}\nadvbase = 1\nadvskew = {advskew}\n\
         pass = \"secret\"\nlladdr = \"{lladdr}\"\naddresses = [{}]\n",
        addresses.join(", ")
    )
}

impl Harness {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("carpd.toml")
    }

    /// Write the configuration file: `vhosts` after the daemon-wide keys.
    fn write_config(&self, vhosts: &str) {
        let d = self.dir.path().display();
        let text = format!(
            "log_level = 0\ncontrol = \"{d}/carpd.sock\"\nstate_dir = \"{d}/state\"\n{vhosts}"
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Run the daemon with `vhosts` while `script` runs; return the
    /// daemon's result after the script ends (it sends Terminate last).
    async fn run<F: std::future::Future<Output = ()>>(
        vhosts: &str,
        fake: Fake,
        script: impl FnOnce(Harness) -> F,
    ) -> anyhow::Result<()> {
        Harness::run_tweaked(vhosts, fake, |_, _| {}, script).await
    }

    /// [`Harness::run`], with `tweak` applied to the loaded configuration
    /// (given the harness's directory).
    async fn run_tweaked<F: std::future::Future<Output = ()>>(
        vhosts: &str,
        fake: Fake,
        tweak: impl FnOnce(&mut DaemonConfig, &Path),
        script: impl FnOnce(Harness) -> F,
    ) -> anyhow::Result<()> {
        capture::start();
        let (signals, sig_rx) = mpsc::channel(4);
        let (ctl, ctl_rx) = mpsc::channel(16);
        let h = Harness {
            fake: fake.clone(),
            dir: tempfile::tempdir().unwrap(),
            signals,
            ctl: ctl.clone(),
        };
        h.write_config(vhosts);
        let mut config = DaemonConfig::load(&h.config_path()).unwrap();
        tweak(&mut config, h.dir.path());
        let daemon = run_with(fake, config, Overrides::default(), sig_rx, ctl, ctl_rx);
        let (result, ()) = tokio::join!(daemon, script(h));
        result
    }

    async fn request(&self, r: Request) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.ctl.send((r, tx)).await.unwrap();
        rx.await.unwrap()
    }

    async fn view(&self, vhid: u8) -> VhostView {
        let reply = self.request(Request::Status).await;
        reply
            .vhosts
            .unwrap()
            .into_iter()
            .find(|v| v.vhid == vhid)
            .unwrap()
    }

    async fn signal(&self, s: Signal) {
        self.signals.send(s).await.unwrap();
    }

    /// Wait (on the paused clock) until vhid 1 is MASTER.
    async fn until_master(&self, vhid: u8) {
        for _ in 0..100 {
            if self.view(vhid).await.state == VhostState::Master {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("vhid {vhid} never became MASTER");
    }
}

fn position(calls: &[Call], what: impl Fn(&Call) -> bool) -> usize {
    calls
        .iter()
        .position(what)
        .unwrap_or_else(|| panic!("missing call in {calls:#?}"))
}

fn logged(level: Level, text: &str) -> bool {
    capture::lines()
        .iter()
        .any(|(l, line)| *l == level && line.contains(text))
}

/// Input: one vhost (real MAC, an IPv4 and an IPv6 VIP) that hears no
/// master. Output: MASTER after master-down; its addresses are recorded
/// (one write), added, announced (GARP and NA), and only then advertised,
/// in that order.
#[tokio::test(start_paused = true)]
async fn takeover_adds_then_announces_then_advertises() {
    let fake = Fake::new();
    let result = Harness::run(&vhost(1, 0, "real", &["192.0.2.50/24", "2001:db8::50/64"]), fake, |h| async move {
        h.until_master(1).await;
        let v = h.view(1).await;
        assert_eq!(v.cause, VhostCause::MasterDown);
        let calls = h.fake.calls();
        let hold = position(&calls, |c| matches!(c, Call::Hold(_)));
        let add4 = position(&calls, |c| *c == Call::AddAddress(ETH0, ip(VIP), 24));
        let add6 = position(&calls, |c| *c == Call::AddAddress(ETH0, ip(VIP6), 64));
        let garp = position(&calls, |c| matches!(c, Call::Garp(ETH0_MAC, a) if *a == VIP.parse::<Ipv4Addr>().unwrap()));
        let na = position(&calls, |c| matches!(c, Call::Na(ETH0_MAC, _)));
        let advert = position(&calls, |c| matches!(c, Call::Advert(Family::V4, dst, p) if *dst == ip("224.0.0.18") && p[1] == 1));
        assert!(hold < add4 && hold < add6, "recorded before added: {calls:#?}");
        assert!(add4.max(add6) < garp.min(na), "added before announced: {calls:#?}");
        assert!(garp.max(na) < advert, "announced before advertised: {calls:#?}");
        let holds: Vec<&Call> = calls.iter().filter(|c| matches!(c, Call::Hold(_))).collect();
        assert_eq!(holds, [&Call::Hold(vec![ip(VIP), ip(VIP6)])], "one record write");
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a MASTER whose carpdev loses carrier (a link event). Output: INIT
/// with cause "hardware interface down"; both addresses removed and
/// forgotten in one record write; no advertisement after that.
#[tokio::test(start_paused = true)]
async fn link_down_goes_init_and_removes_addresses() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24", "2001:db8::50/64"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            let before = h.fake.calls().len();
            h.fake
                .event(LinkEvent::Link(link(ETH0, "eth0", ETH0_MAC, false)))
                .await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let v = h.view(1).await;
            assert_eq!((v.state, v.cause), (VhostState::Init, VhostCause::LinkDown));
            let after = h.fake.calls()[before..].to_vec();
            assert!(
                after.contains(&Call::DelAddress(ETH0, ip(VIP), 24)),
                "{after:#?}"
            );
            assert!(
                after.contains(&Call::DelAddress(ETH0, ip(VIP6), 64)),
                "{after:#?}"
            );
            let releases: Vec<&Call> = after
                .iter()
                .filter(|c| matches!(c, Call::Release(_)))
                .collect();
            assert_eq!(releases, [&Call::Release(vec![ip(VIP), ip(VIP6)])]);
            assert!(
                !after.iter().any(|c| c.advert().is_some()),
                "INIT advertised: {after:#?}"
            );
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: the kernel refuses the IPv4 VIP (EPERM) when the vhost takes over.
/// Output: the failure is logged at LOG_ERR with the vhost, the address and
/// the errno, and counted; a MASTER without its addresses would black-hole
/// them, so the interface steps down (INIT, "cannot hold the addresses",
/// group demoted by 1) and releases what it added. It is rebuilt 1 s later
/// (BACKUP, undemoted), takes over again, fails again, and waits longer
/// before the next rebuild; the daemon stops cleanly.
#[tokio::test(start_paused = true)]
async fn failed_address_add_steps_down_with_demotion_and_retries() {
    let fake = Fake::new();
    fake.fail_add(ip(VIP), libc::EPERM);
    let result = Harness::run(&vhost(1, 0, "real", &["192.0.2.50/24", "2001:db8::50/64"]), fake, |h| async move {
        // MASTER only until its add fails, in the same turn of the loop.
        until_faulted(&h).await;
        assert!(
            logged(Level::Err, "vhid 1@eth0: cannot add 192.0.2.50/24: netlink add address: Operation not permitted (os error 1)"),
            "{:#?}",
            capture::lines()
        );
        let view = h.view(1).await;
        assert_eq!((view.state, view.cause), (VhostState::Init, VhostCause::AddressFault));
        assert_eq!(view.demote, 1);
        assert!(view.address_failures >= 1, "{view:?}");
        let calls = h.fake.calls();
        assert!(calls.contains(&Call::DelAddress(ETH0, ip(VIP6), 64)), "released: {calls:#?}");
        assert!(logged(Level::Err, "vhid 1@eth0: cannot add its addresses; stepping down, rebuilding in 1s"));
        // The rebuild is due 1 s after the fault, which came before we saw it.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let view = h.view(1).await;
        assert_eq!((view.state, view.demote), (VhostState::Backup, 0));
        // Alone, it takes over again after master-down, and fails again.
        until_faulted(&h).await;
        assert!(logged(Level::Err, "stepping down, rebuilding in 2s"), "{:#?}", capture::lines());
        let tries = h.fake.calls().iter().filter(|c| **c == Call::AddAddress(ETH0, ip(VIP), 24)).count();
        assert!(tries >= 2, "the failed add is tried again");
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// `n4` IPv4 (198.18.x.y/32) and `n6` IPv6 (2001:db8:1::x/128) addresses.
fn many(n4: usize, n6: usize) -> Vec<String> {
    (0..n4)
        .map(|i| format!("198.18.{}.{}/32", 4 + i / 250, 1 + i % 250))
        .chain((0..n6).map(|i| format!("2001:db8:1::{:x}/128", i + 1)))
        .collect()
}

/// Input: one vhost with 1,000 IPv4 and 1,000 IPv6 addresses that takes
/// over. Output: the addresses are recorded in one write, added in one
/// batch in configuration order and announced in one burst, all before the
/// first advertisement; SIGTERM removes them in one batch.
#[tokio::test(start_paused = true)]
async fn many_addresses_one_batch_then_one_burst_then_advertise() {
    let fake = Fake::new();
    let addrs = many(1000, 1000);
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let result = Harness::run(&vhost(1, 0, "real", &refs), fake.clone(), |h| async move {
        h.until_master(1).await;
        let calls = h.fake.calls();
        let hold = position(&calls, |c| matches!(c, Call::Hold(a) if a.len() == 2000));
        let adds: Vec<usize> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Call::AddAddress(ETH0, a, _) if !a.is_unspecified() && *a != ip("192.0.2.1")))
            .map(|(i, _)| i)
            .collect();
        let added: Vec<String> = adds
            .iter()
            .map(|&i| match &calls[i] {
                Call::AddAddress(_, a, p) => format!("{a}/{p}"),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(added, addrs, "every address, in order");
        let announced: Vec<usize> = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, Call::Garp(..) | Call::Na(..)))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(announced.len(), 2000);
        let advert = position(&calls, |c| matches!(c, Call::Advert(Family::V4, _, p) if p[1] == 1));
        assert!(hold < adds[0], "recorded before added");
        assert!(adds[1999] < announced[0], "all added before any announced");
        assert!(announced[1999] < advert, "all announced before advertised");
        {
            let w = h.fake.0.borrow();
            assert!(w.batches.contains(&2000), "one batch of 2000: {:?}", w.batches);
            assert_eq!(w.bursts, 1, "one announcement burst");
        }
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
    let calls = fake.calls();
    let dels = calls
        .iter()
        .filter(|c| matches!(c, Call::DelAddress(ETH0, a, _) if a.to_string().starts_with("198.18.") || a.to_string().starts_with("2001:db8:1:")))
        .count();
    assert!(dels >= 2000, "all removed at shutdown: {dels}");
    assert_eq!(
        fake.0.borrow().batches.last(),
        Some(&2000),
        "removed in one batch"
    );
}

/// Input: a takeover with 600 addresses of which one in the middle cannot
/// be added. Output: the others are all added in the same batch, the error
/// names that address alone, and the vhost steps down as for one address.
#[tokio::test(start_paused = true)]
async fn one_failed_address_of_a_batch_is_reported_alone() {
    let fake = Fake::new();
    let addrs = many(300, 300);
    let bad: IpAddr = ip("198.18.5.1");
    fake.fail_add(bad, libc::EPERM);
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let result = Harness::run(&vhost(1, 0, "real", &refs), fake, |h| async move {
        until_faulted(&h).await;
        let errs: Vec<String> = capture::lines()
            .into_iter()
            .filter(|(l, line)| {
                *l == Level::Err && line.contains("cannot add") && !line.contains("its addresses")
            })
            .map(|(_, line)| line)
            .collect();
        assert_eq!(errs.len(), 1, "{errs:#?}");
        assert!(
            errs[0]
                .contains("cannot add 198.18.5.1/32: netlink add address: Operation not permitted"),
            "{errs:#?}"
        );
        let calls = h.fake.calls();
        let added = calls
            .iter()
            .filter(|c| matches!(c, Call::AddAddress(ETH0, ..)))
            .count();
        assert_eq!(added, 600, "the ones after the failure were still tried");
        let view = h.view(1).await;
        assert_eq!(
            (view.state, view.cause),
            (VhostState::Init, VhostCause::AddressFault)
        );
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a takeover whose announcement frames cannot be sent. Output: one
/// warning per address naming it; the vhost stays MASTER.
#[tokio::test(start_paused = true)]
async fn failed_announcements_are_logged_per_address() {
    let fake = Fake::new();
    fake.0.borrow_mut().fail_announce = Some(libc::ENOBUFS);
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24", "2001:db8::50/64"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            assert!(
                logged(
                    Level::Warning,
                    "vhid 1@eth0: gratuitous ARP for 192.0.2.50: "
                ),
                "{:#?}",
                capture::lines()
            );
            assert!(
                logged(
                    Level::Warning,
                    "vhid 1@eth0: neighbour advertisement for 2001:db8::50: "
                ),
                "{:#?}",
                capture::lines()
            );
            assert_eq!(h.view(1).await.state, VhostState::Master);
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Wait (on the paused clock) until vhid 1 is INIT for an address fault.
async fn until_faulted(h: &Harness) {
    for _ in 0..100 {
        let v = h.view(1).await;
        if (v.state, v.cause) == (VhostState::Init, VhostCause::AddressFault) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("vhid 1 never stepped down for an address fault");
}

/// Input: SIGTERM to a MASTER with a virtual MAC (a macvlan). Output: the
/// bow-out advertisement (advbase = advskew = 255) from the virtual MAC goes
/// out before either address is removed, and the macvlan is deleted last.
#[tokio::test(start_paused = true)]
async fn sigterm_bows_out_before_removing_addresses() {
    let fake = Fake::new();
    let vhosts = vhost(1, 0, "virtual", &["192.0.2.50/24", "2001:db8::50/64"]);
    let result = Harness::run(&vhosts, fake.clone(), |h| async move {
        h.until_master(1).await;
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
    let calls = fake.calls();
    let macvlan = match calls.iter().find(|c| matches!(c, Call::EnsureMacvlan(..))) {
        Some(Call::EnsureMacvlan(ETH0, name)) => name.clone(),
        other => panic!("no macvlan: {other:?}"),
    };
    assert_eq!(macvlan, "carp2v1");
    let vmac = crate::os::l2::virtual_mac(1);
    let bow_out = position(
        &calls,
        |c| matches!(c, Call::AdvertFrame(mac, _, p) if *mac == vmac && p[2] == 255 && p[5] == 255),
    );
    // Start-up hygiene removes stale VIPs too; only removals after the takeover count.
    let hygiene = position(&calls, |c| matches!(c, Call::DelAddress(..)));
    let takeover = position(&calls, |c| matches!(c, Call::AddAddress(..)));
    let removal = calls[takeover..]
        .iter()
        .position(|c| matches!(c, Call::DelAddress(..)))
        .map(|i| i + takeover)
        .unwrap_or_else(|| panic!("addresses never removed: {calls:#?}"));
    assert!(hygiene < takeover, "start-up hygiene ran first");
    assert!(
        bow_out < removal,
        "bow-out after the addresses went: {calls:#?}"
    );
    let delete = position(&calls, |c| matches!(c, Call::DeleteLink(_)));
    assert!(
        removal < delete,
        "macvlan deleted before its addresses: {calls:#?}"
    );
}

/// Input: a dual-stack `lladdr virtual` vhost takes over, then SIGTERM; and
/// an IPv4-only one. Output: IPv6 is off on the macvlan from its creation,
/// on just before the IPv6 VIP is added, and off again before it is removed
/// (so no MLD report leaves from the virtual MAC of a node that is not
/// MASTER); the IPv4-only macvlan never gets IPv6.
#[tokio::test(start_paused = true)]
async fn macvlan_ipv6_is_on_only_while_it_holds_ipv6_addresses() {
    let fake = Fake::new();
    let vhosts = vhost(1, 0, "virtual", &["192.0.2.50/24", "2001:db8::50/64"]);
    let result = Harness::run(&vhosts, fake.clone(), |h| async move {
        h.until_master(1).await;
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
    let calls = fake.calls();
    let key = "net/ipv6/conf/carp2v1/disable_ipv6";
    let sysctl = |from: usize, value: &str| {
        let want = Call::WriteSysctl(format!("{key}={value}"));
        calls[from..]
            .iter()
            .position(|c| *c == want)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no {key}={value} after {from}: {calls:#?}"))
    };
    let off = sysctl(0, "1");
    let takeover = position(&calls, |c| matches!(c, Call::AddAddress(..)));
    let add6 = position(
        &calls,
        |c| matches!(c, Call::AddAddress(_, a, 64) if *a == ip(VIP6)),
    );
    let on = sysctl(off, "0");
    assert!(off < takeover && on < add6, "{calls:#?}");
    let del6 = calls[add6..]
        .iter()
        .position(|c| matches!(c, Call::DelAddress(_, a, 64) if *a == ip(VIP6)))
        .map(|i| i + add6)
        .unwrap_or_else(|| panic!("IPv6 VIP never removed: {calls:#?}"));
    let off_again = sysctl(on, "1");
    assert!(
        off_again < del6,
        "IPv6 turned off after the removal: {calls:#?}"
    );

    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "virtual", &["192.0.2.50/24"]),
        fake.clone(),
        |h| async move {
            h.until_master(1).await;
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
    let on = Call::WriteSysctl(format!("{key}=0"));
    assert!(!fake.calls().contains(&on), "{:#?}", fake.calls());
}

/// Input: a router (all/forwarding 1), one vhost with a virtual MAC and an
/// IPv4 VIP; it takes over, then is forced to BACKUP. Output: the macvlan's
/// IPv4 forwarding is off from its creation, on (the host's 1) before the
/// VIP is added, and off again before it is removed, so a BACKUP never
/// forwards frames flooded to the virtual MAC.
#[tokio::test(start_paused = true)]
async fn macvlan_forwards_only_while_it_holds_the_addresses() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "virtual", &["192.0.2.50/24"]),
        fake.clone(),
        |h| async move {
            h.until_master(1).await;
            let reply = h
                .request(Request::State {
                    vhid: 1,
                    carpdev: None,
                    to: "backup".into(),
                })
                .await;
            assert!(reply.error.is_none(), "{reply:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
    let calls = fake.calls();
    let key = "net/ipv4/conf/carp2v1/forwarding";
    let find = |from: usize, want: &Call| {
        calls[from..]
            .iter()
            .position(|c| c == want)
            .map(|i| i + from)
            .unwrap_or_else(|| panic!("no {want:?} after {from}: {calls:#?}"))
    };
    let off = Call::WriteSysctl(format!("{key}=0"));
    let on = Call::WriteSysctl(format!("{key}=1"));
    let first_off = find(0, &off);
    let add = find(0, &Call::AddAddress(10, ip(VIP), 24));
    let turned_on = find(first_off, &on);
    let del = find(add, &Call::DelAddress(10, ip(VIP), 24));
    let off_again = find(turned_on, &off);
    assert!(
        first_off < turned_on && turned_on < add && add < off_again && off_again < del,
        "{calls:#?}"
    );
}

/// Input: two MASTER vhosts; a reload changes vhid 2's advskew and leaves
/// vhid 1 as it was. Output: "1 unchanged, 1 changed"; vhid 1 keeps its
/// state with no transition and no address call; vhid 2 advertises the new
/// advskew.
#[tokio::test(start_paused = true)]
async fn reload_keeps_an_unchanged_vhost_untouched() {
    let fake = Fake::new();
    let one = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let result = Harness::run(&format!("{one}{}", vhost(2, 0, "real", &["192.0.2.60/24"])), fake, |h| async move {
        h.until_master(1).await;
        h.until_master(2).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let v1 = h.view(1).await;
        let before = h.fake.calls().len();
        h.write_config(&format!("{one}{}", vhost(2, 50, "real", &["192.0.2.60/24"])));
        h.signal(Signal::Reload).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            logged(Level::Info, "reloaded: 1 unchanged, 1 changed, 0 added"),
            "{:#?}",
            capture::lines()
        );
        let after = h.fake.calls()[before..].to_vec();
        let now1 = h.view(1).await;
        assert_eq!(now1.state, VhostState::Master);
        assert_eq!(now1.stats.transitions, v1.stats.transitions, "vhid 1 flapped");
        assert!(now1.since_secs > v1.since_secs, "vhid 1 re-entered its state");
        assert!(
            !after.iter().any(|c| matches!(c, Call::AddAddress(_, a, _) | Call::DelAddress(_, a, _) if *a == ip(VIP))),
            "vhid 1's address touched: {after:#?}"
        );
        let skews = |vhid: u8| -> Vec<u8> {
            after
                .iter()
                .filter_map(Call::advert)
                .filter(|p| p[1] == vhid)
                .map(|p| p[2])
                .collect()
        };
        assert!(skews(1).iter().all(|s| *s == 0) && !skews(1).is_empty(), "{:?}", skews(1));
        assert_eq!(skews(2).last(), Some(&50), "vhid 2 not reconfigured: {:?}", skews(2));
        assert_eq!(h.view(2).await.advskew, 50);
        assert!(
            !after.iter().any(|c| matches!(c, Call::DelAddress(_, a, _) if *a == ip(VIP2))),
            "vhid 2 lost its address over an advskew change: {after:#?}"
        );
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: vhid 1 on eth0; a reload adds vhid 2 with `ttl_check = false`
/// and VRRPv3 vrid 3; another removes vhid 1. Output: eth0's socket filter
/// follows each step: vhid 1; then vhids 1 and 2 (TTL not checked) and
/// vrid 3; then vhid 2 and vrid 3. Without it the kernel would drop the
/// new vhids' advertisements and they would all become MASTER.
#[tokio::test(start_paused = true)]
async fn reload_rebuilds_the_socket_filter() {
    let fake = Fake::new();
    let two = format!(
        "{}ttl_check = false\n",
        vhost(2, 0, "real", &["192.0.2.60/24"])
    );
    let vrrp =
        "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 3\ncarpver = 3\naddresses = [\"192.0.2.70/24\"]\n";
    let accept = |vhid, proto, ttl| Accept { vhid, proto, ttl };
    let last_filter = |calls: &[Call]| {
        calls.iter().rev().find_map(|c| match c {
            Call::Filter(LinkId(ETH0), a) => Some(a.clone()),
            _ => None,
        })
    };
    let one = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let result = Harness::run(&one.clone(), fake, |h| async move {
        h.until_master(1).await;
        let carp1 = accept(1, Proto::Carp, TtlRule::Multicast);
        assert_eq!(last_filter(&h.fake.calls()), Some(vec![carp1]));
        h.write_config(&format!("{one}{two}{vrrp}"));
        h.signal(Signal::Reload).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let carp2 = accept(2, Proto::Carp, TtlRule::Any);
        let vrrp3 = accept(3, Proto::Vrrp, TtlRule::Multicast);
        assert_eq!(
            last_filter(&h.fake.calls()),
            Some(vec![carp1, carp2, vrrp3])
        );
        h.write_config(&format!("{two}{vrrp}"));
        h.signal(Signal::Reload).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(last_filter(&h.fake.calls()), Some(vec![carp2, vrrp3]));
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a MASTER with 192.0.2.50/24; a reload adds 198.51.100.51/24.
/// Output: the new address is added with its own prefix (the actions carry
/// it), the old one stays, and the vhost stays MASTER. Before the carp
/// interface layer the daemon filtered the core's addresses through the old
/// configuration and never added the new one (a defect of the hostile run).
#[tokio::test(start_paused = true)]
async fn reload_that_adds_an_address_adds_it() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            let before = h.fake.calls().len();
            h.write_config(&vhost(1, 0, "real", &["192.0.2.50/24", "198.51.100.51/24"]));
            h.signal(Signal::Reload).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = h.fake.calls()[before..].to_vec();
            let new: IpAddr = "198.51.100.51".parse().unwrap();
            assert!(
                after.contains(&Call::AddAddress(ETH0, new, 24)),
                "the added address was not configured: {after:#?}"
            );
            assert!(
                !after
                    .iter()
                    .any(|c| matches!(c, Call::DelAddress(_, a, _) if *a == ip(VIP))),
                "the kept address was removed: {after:#?}"
            );
            assert_eq!(h.view(1).await.state, VhostState::Master);
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: an IPv4-only MASTER; a reload adds 2001:db8::50/64. Output: the
/// IPv6 CARP socket is opened, the IPv6 address is added and advertisements
/// go out on IPv6 too, as a fresh start with the new file would do. (The
/// hostile run saw a BACKUP that never listened on IPv6 and flapped.)
#[tokio::test(start_paused = true)]
async fn reload_that_adds_a_family_opens_its_socket() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            assert!(
                !h.fake
                    .calls()
                    .contains(&Call::OpenSocket(LinkId(ETH0), Family::V6))
            );
            let before = h.fake.calls().len();
            h.write_config(&vhost(1, 0, "real", &["192.0.2.50/24", "2001:db8::50/64"]));
            h.signal(Signal::Reload).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let after = h.fake.calls()[before..].to_vec();
            assert!(
                after.contains(&Call::OpenSocket(LinkId(ETH0), Family::V6)),
                "{after:#?}"
            );
            assert!(
                after.contains(&Call::AddAddress(ETH0, ip(VIP6), 64)),
                "{after:#?}"
            );
            assert!(
                after
                    .iter()
                    .any(|c| matches!(c, Call::Advert(Family::V6, ..))),
                "no IPv6 advertisement: {after:#?}"
            );
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// A signed advertisement of vhid `vhid` for the VIPs `vips` with pass
/// "secret", as a peer would send it.
fn peer_advert(vhid: u8, advskew: u8, vips: &[Ipv4Addr]) -> [u8; 36] {
    use carp_proto::auth::Auth;
    use carp_proto::wire::carp::{AUTHLEN, Repr, TYPE_ADVERTISEMENT, VERSION};
    use carp_proto::{Passphrase, Vhid};
    let key = Passphrase::new(b"secret").unwrap();
    let auth = Auth::new(&key, Vhid::new(vhid).unwrap(), vips, &[]);
    let counter = [0, 0, 0, 1, 0, 0, 0, 1];
    Repr {
        version: VERSION,
        kind: TYPE_ADVERTISEMENT,
        vhid,
        advskew,
        authlen: AUTHLEN,
        demote: 0,
        advbase: 1,
        counter,
        md: auth.generate(&counter),
    }
    .to_bytes()
}

/// Input: a MASTER (advskew 100) receives a peer's advertisement with
/// advskew 0 on its IPv4 socket. Output: BACKUP with cause "more frequent
/// advertisement received", its address removed; after three unicast
/// farewells to the new master it stops advertising.
#[tokio::test(start_paused = true)]
async fn a_better_master_heard_makes_the_master_step_down() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 100, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            let before = h.fake.calls().len();
            let advert = peer_advert(1, 0, &[VIP.parse().unwrap()]);
            h.fake.inject(Family::V4, ip("192.0.2.2"), &advert).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let v = h.view(1).await;
            assert_eq!(
                (v.state, v.cause),
                (VhostState::Backup, VhostCause::Superseded)
            );
            assert_eq!(v.last_master.as_deref(), Some("192.0.2.2"));
            // The peer keeps advertising; the BACKUP stays quiet.
            for _ in 0..3 {
                h.fake.inject(Family::V4, ip("192.0.2.2"), &advert).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let after = h.fake.calls()[before..].to_vec();
            assert!(
                after.contains(&Call::DelAddress(ETH0, ip(VIP), 24)),
                "{after:#?}"
            );
            // Only the unicast farewells to the new master (it learns of us at
            // once), three in case of loss.
            let adverts: Vec<&Call> = after.iter().filter(|c| c.advert().is_some()).collect();
            assert!(
                adverts.len() == 3
                    && adverts.iter().all(
                        |c| matches!(c, Call::Advert(Family::V4, to, _) if *to == ip("192.0.2.2"))
                    ),
                "BACKUP advertised: {after:#?}"
            );
            assert_eq!(h.view(1).await.state, VhostState::Backup);
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: the CARP socket's sends fail with ENETUNREACH once the vhost is
/// MASTER. Output: each failure is logged with the operation, the
/// interface and the kernel's errno (the error's source), and the core
/// hears of it (three errors demote, as OpenBSD's snderrors).
#[tokio::test(start_paused = true)]
async fn send_errors_are_logged_with_their_errno() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            h.fake.0.borrow_mut().fail_send = Some(libc::ENETUNREACH);
            tokio::time::sleep(Duration::from_secs(4)).await;
            assert!(
                logged(
                    Level::Warning,
                    "vhid 1@eth0: send to 224.0.0.18 failed: send on eth0: \
                 Network is unreachable (os error 101)"
                ),
                "{:#?}",
                capture::lines()
            );
            assert!(h.view(1).await.stats.send_errors >= 3);
            assert!(logged(Level::Err, "snderrors"), "{:#?}", capture::lines());
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: a MASTER with a virtual MAC whose macvlan is deleted behind its
/// back. Output: the carp interface bows out, goes INIT ("cannot hold the
/// addresses") demoted by 1; 1 s later the macvlan is re-created and the
/// vhost is BACKUP, undemoted, and alone takes over on the new macvlan.
#[tokio::test(start_paused = true)]
async fn deleted_macvlan_faults_and_is_rebuilt() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "virtual", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            let name = super::macvlan_name(ETH0, 1);
            let old = h.fake.index_of(&name).unwrap();
            let before = h.fake.calls().len();
            h.fake.delete(old).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let v = h.view(1).await;
            assert_eq!(
                (v.state, v.cause, v.demote),
                (VhostState::Init, VhostCause::AddressFault, 1)
            );
            let after = h.fake.calls()[before..].to_vec();
            let bow_out = after
                .iter()
                .filter_map(Call::advert)
                .any(|p| p[2] == 255 && p[5] == 255);
            assert!(bow_out, "a bow-out first: {after:#?}");
            assert!(logged(
                Level::Err,
                &format!("vhid 1@eth0: its macvlan {name} was deleted; stepping down")
            ));
            tokio::time::sleep(Duration::from_secs(1)).await;
            let new = h.fake.index_of(&name).expect("macvlan re-created");
            assert_ne!(new, old);
            let v = h.view(1).await;
            assert_eq!((v.state, v.demote), (VhostState::Backup, 0));
            h.until_master(1).await;
            assert!(h.fake.calls().contains(&Call::AddAddress(new, ip(VIP), 24)));
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: the carpdev eth0 is deleted (with its macvlan), then re-created
/// under another index. Output: INIT and demoted while it is gone, its
/// sockets closed; once back, the same LinkId's sockets are reopened on the
/// new index, the macvlan is rebuilt under its new name, the vhost is BACKUP
/// undemoted and takes over on the new macvlan; datagrams are received again.
#[tokio::test(start_paused = true)]
async fn recreated_carpdev_is_rebuilt_under_its_new_index() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "virtual", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            let macvlan = h.fake.index_of(&super::macvlan_name(ETH0, 1)).unwrap();
            h.fake.delete(macvlan).await;
            h.fake.delete(ETH0).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let v = h.view(1).await;
            assert_eq!(v.state, VhostState::Init);
            assert!(v.demote >= 1, "{v:?}");
            assert!(h.fake.calls().contains(&Call::CloseLink(LinkId(ETH0))));
            // Rebuild attempts while it is gone fail quietly and back off.
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(h.view(1).await.state, VhostState::Init);
            const NEW: u32 = 7;
            {
                let mut w = h.fake.0.borrow_mut();
                w.links.insert(NEW, link(NEW, "eth0", ETH0_MAC, true));
                w.addrs
                    .insert(NEW, [(ip("192.0.2.1"), 24)].into_iter().collect());
            }
            let before = h.fake.calls().len();
            h.fake
                .event(LinkEvent::Link(link(NEW, "eth0", ETH0_MAC, true)))
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let after = h.fake.calls()[before..].to_vec();
            assert!(
                after.contains(&Call::OpenSocket(LinkId(ETH0), Family::V4)),
                "{after:#?}"
            );
            let name = super::macvlan_name(NEW, 1);
            assert!(
                after.contains(&Call::EnsureMacvlan(NEW, name.clone())),
                "{after:#?}"
            );
            let v = h.view(1).await;
            assert_eq!((v.state, v.demote), (VhostState::Backup, 0), "{v:?}");
            h.until_master(1).await;
            let new_macvlan = h.fake.index_of(&name).unwrap();
            assert!(
                h.fake
                    .calls()
                    .contains(&Call::AddAddress(new_macvlan, ip(VIP), 24))
            );
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: a MASTER hears "192.0.2.50 removed" twice: once while the address
/// is still configured (a late notice of its own removal after a quick
/// MASTER -> BACKUP -> MASTER), once after it really went. Output: the stale
/// notice changes nothing and warns nobody; the real removal is restored
/// with a warning.
#[tokio::test(start_paused = true)]
async fn only_a_real_address_removal_is_restored() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            let removed = LinkEvent::AddressRemoved {
                index: ETH0,
                addr: ip(VIP),
                prefix_len: 24,
            };
            let before = h.fake.calls().len();
            h.fake.event(removed.clone()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let after = h.fake.calls()[before..].to_vec();
            assert!(
                !after.iter().any(|c| matches!(c, Call::AddAddress(..))),
                "a stale notice re-added the address: {after:#?}"
            );
            assert!(!logged(Level::Warning, "was removed by someone else"));
            h.fake
                .0
                .borrow_mut()
                .addrs
                .get_mut(&ETH0)
                .unwrap()
                .remove(&(ip(VIP), 24));
            h.fake.event(removed).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(
                h.fake
                    .calls()
                    .contains(&Call::AddAddress(ETH0, ip(VIP), 24))
            );
            assert!(logged(
                Level::Warning,
                "vhid 1@eth0: 192.0.2.50/24 was removed by someone else; restoring"
            ));
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: a MASTER's carpdev loses its IPv4 address; a BACKUP's hears an
/// advertisement from 0.0.0.0. Output: the MASTER keeps advertising (the
/// BSDs send from 0.0.0.0) and says so once, not once per advertisement;
/// the source change back is logged. A received advertisement from 0.0.0.0
/// is accepted and logged once.
#[tokio::test(start_paused = true)]
async fn advertising_without_an_ipv4_source_is_logged_once() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            h.fake
                .0
                .borrow_mut()
                .addrs
                .get_mut(&ETH0)
                .unwrap()
                .remove(&(ip("192.0.2.1"), 24));
            h.fake
                .event(LinkEvent::AddressRemoved {
                    index: ETH0,
                    addr: ip("192.0.2.1"),
                    prefix_len: 24,
                })
                .await;
            let before = h
                .fake
                .calls()
                .iter()
                .filter(|c| c.advert().is_some())
                .count();
            tokio::time::sleep(Duration::from_secs(5)).await;
            let sent = h
                .fake
                .calls()
                .iter()
                .filter(|c| c.advert().is_some())
                .count()
                - before;
            assert!(sent >= 4, "still advertising: {sent}");
            assert_eq!(h.view(1).await.state, VhostState::Master);
            let warnings = capture::lines()
                .iter()
                .filter(|(l, line)| {
                    *l == Level::Warning && line.contains("no IPv4 address to send from")
                })
                .count();
            assert_eq!(warnings, 1, "rate-limited: {:#?}", capture::lines());
            h.fake
                .0
                .borrow_mut()
                .addrs
                .get_mut(&ETH0)
                .unwrap()
                .insert((ip("192.0.2.1"), 24));
            h.fake
                .event(LinkEvent::AddressAdded {
                    index: ETH0,
                    addr: ip("192.0.2.1"),
                    prefix_len: 24,
                })
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert!(logged(Level::Warning, "eth0: IPv4 source is 192.0.2.1"));
            for _ in 0..2 {
                h.fake.inject(Family::V4, ip("0.0.0.0"), &[0x21; 36]).await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            let heard = capture::lines()
                .iter()
                .filter(|(l, line)| {
                    *l == Level::Warning && line.contains("advertisement from 0.0.0.0")
                })
                .count();
            assert_eq!(heard, 1, "{:#?}", capture::lines());
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: a MASTER's macvlan is set down by someone (it keeps the VIP but
/// passes no traffic). Output: the interface steps down for an address fault;
/// the rebuild sets the macvlan up again and the vhost returns to BACKUP.
#[tokio::test(start_paused = true)]
async fn macvlan_set_down_faults_and_is_set_up_again() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "virtual", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            let name = super::macvlan_name(ETH0, 1);
            let index = h.fake.index_of(&name).unwrap();
            let mut down = link(index, &name, crate::os::l2::virtual_mac(1), false);
            down.admin_up = false;
            h.fake.0.borrow_mut().links.insert(index, down.clone());
            h.fake.event(LinkEvent::Link(down)).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            let v = h.view(1).await;
            assert_eq!(
                (v.state, v.cause),
                (VhostState::Init, VhostCause::AddressFault)
            );
            let before = h.fake.calls().len();
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after = h.fake.calls()[before..].to_vec();
            assert!(
                after.contains(&Call::EnsureMacvlan(ETH0, name)),
                "{after:#?}"
            );
            assert_eq!(h.view(1).await.state, VhostState::Backup);
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: a MASTER whose config file is replaced by a FIFO nobody writes;
/// `carpctl reload`, then a broken file and `carpctl reload` again, then a
/// good file. Output: the FIFO is refused at once, the MASTER keeps
/// advertising meanwhile, each failed reload is answered and logged by the
/// daemon too, and the good file is applied.
#[tokio::test(start_paused = true)]
async fn reload_is_read_off_the_loop_and_failures_are_logged() {
    let fake = Fake::new();
    let one = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let result = Harness::run(&one.clone(), fake, |h| async move {
        h.until_master(1).await;
        let sent = h.view(1).await.stats.opackets;
        let path = h.config_path();
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reply = h.request(Request::Reload).await;
        assert!(!reply.ok, "{reply:?}");
        let error = reply.error.unwrap_or_default();
        assert!(
            error.ends_with("is not a regular file (it is a FIFO)"),
            "{error}"
        );
        assert!(logged(
            Level::Err,
            "reload failed, keeping the running configuration"
        ));
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            h.view(1).await.stats.opackets >= sent + 2,
            "advertising stopped"
        );

        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "[[vhost]]\nvhid = \"x\"\n").unwrap();
        let reply = h.request(Request::Reload).await;
        assert!(!reply.ok, "{reply:?}");
        assert!(
            capture::lines()
                .iter()
                .filter(|(l, line)| *l == Level::Err && line.contains("reload failed"))
                .count()
                == 2,
            "{:#?}",
            capture::lines()
        );
        h.write_config(&vhost(1, 0, "real", &["192.0.2.50/24", "198.51.100.51/24"]));
        let reply = h.request(Request::Reload).await;
        assert!(reply.ok, "{reply:?}");
        assert!(logged(
            Level::Info,
            "reloaded: 0 unchanged, 1 changed, 0 added"
        ));
        assert_eq!(h.view(1).await.state, VhostState::Master);
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: `demote` by 300, then by 200 twice, then undemote by 300.
/// Output: 300 and the second 200 are refused (the counter would leave
/// 0..=255) and leave the counter as it was; the first 200 applies.
#[tokio::test(start_paused = true)]
async fn demote_out_of_range_is_refused_not_clamped() {
    let fake = Fake::new();
    let one = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let result = Harness::run(&one.clone(), fake, |h| async move {
        let demote = |by| Request::Demote { group: None, by };
        let reply = h.request(demote(300)).await;
        assert!(!reply.ok, "{reply:?}");
        assert!(
            reply.error.unwrap_or_default().contains("outside 0..=255"),
            "refused with the range"
        );
        assert!(h.request(demote(200)).await.ok);
        let reply = h.request(demote(200)).await;
        assert!(!reply.ok, "{reply:?}");
        assert_eq!(h.view(1).await.demote, 200);
        assert!(!h.request(demote(-300)).await.ok);
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a reload whose file adds `http_token` (and changes nothing else).
/// Output: the reply names `http_token` and says a restart is needed; a
/// second identical reload names it again (the running value is kept).
#[tokio::test(start_paused = true)]
async fn reload_names_what_only_a_restart_applies() {
    let fake = Fake::new();
    let one = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let with_token = format!("http_token = \"t\"\n{one}");
    let result = Harness::run(&one, fake, |h| async move {
        h.until_master(1).await;
        h.write_config(&with_token);
        for _ in 0..2 {
            let reply = h.request(Request::Reload).await;
            let message = reply.message.unwrap_or_default();
            assert!(
                message.contains("1 unchanged")
                    && message.contains("not applied: http_token changed (restart carpd"),
                "{message}"
            );
        }
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: `realtime = true` at start, then a reload without it, then one
/// with `realtime_priority = 30`. Output: the loop is made real-time once,
/// at priority 10, while privileges last (before they are dropped); each
/// reload changes it, and `status` reports what is in effect.
#[tokio::test(start_paused = true)]
async fn realtime_is_set_before_privileges_drop_and_follows_reloads() {
    let fake = Fake::new();
    let one = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let config = format!("realtime = true\n{one}");
    let result = Harness::run(&config, fake, |h| async move {
        h.until_master(1).await;
        let calls = h.fake.calls();
        let set = position(&calls, |c| *c == Call::SetRealtime(Some(10)));
        let dropped = position(&calls, |c| *c == Call::DropPrivileges);
        assert!(set < dropped, "set while privileged: {calls:#?}");
        let status = h.request(Request::Status).await;
        assert_eq!(status.realtime.and_then(|r| r.priority), Some(10));
        h.write_config(&one);
        h.request(Request::Reload).await;
        h.write_config(&format!("realtime = true\nrealtime_priority = 30\n{one}"));
        h.request(Request::Reload).await;
        let sets: Vec<Call> = h
            .fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::SetRealtime(_)))
            .collect();
        assert_eq!(
            sets,
            [
                Call::SetRealtime(Some(10)),
                Call::SetRealtime(None),
                Call::SetRealtime(Some(30))
            ]
        );
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a VRRP vhost with `accept off` and a CARP vhost; later a reload
/// that turns `accept` on. Output: the drop table holds the VRRP vhost's
/// address (not the CARP one's) before any address is added; the reload
/// empties it; shutdown writes nothing more (it is already empty).
#[tokio::test(start_paused = true)]
async fn accept_off_drops_the_vrrp_addresses_from_before_the_first_takeover() {
    let fake = Fake::new();
    let vrrp = |accept: bool| {
        format!(
            "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 7\ncarpver = 3\naccept = {accept}\n\
             lladdr = \"real\"\naddresses = [\"192.0.2.70/24\"]\n"
        )
    };
    let carp = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let config = format!("{carp}{}", vrrp(false));
    let result = Harness::run(&config, fake, |h| async move {
        h.until_master(1).await;
        let calls = h.fake.calls();
        let filter = position(&calls, |c| *c == Call::AcceptFilter(vec![ip("192.0.2.70")]));
        let first_add = position(&calls, |c| matches!(c, Call::AddAddress(..)));
        assert!(filter < first_add, "{calls:#?}");
        h.write_config(&format!("{carp}{}", vrrp(true)));
        let reply = h.request(Request::Reload).await;
        assert!(reply.ok, "{reply:?}");
        let filters: Vec<Call> = h
            .fake
            .calls()
            .into_iter()
            .filter(|c| matches!(c, Call::AcceptFilter(_)))
            .collect();
        assert_eq!(
            filters,
            [
                Call::AcceptFilter(vec![ip("192.0.2.70")]),
                Call::AcceptFilter(Vec::new())
            ]
        );
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

impl Fake {
    /// Deliver an ARP request or NS as the carpdev's solicitation reader would.
    async fn solicit(&self, sender_mac: [u8; 6], sender_ip: &str, target: &str) {
        let tx = self
            .0
            .borrow()
            .solicitations
            .clone()
            .expect("solicitations open");
        tx.send(Solicitation {
            link: LinkId(ETH0),
            sender_mac,
            sender_ip: ip(sender_ip),
            target: ip(target),
        })
        .await
        .unwrap();
    }
}

/// Input: `carpnodes 1:0,2:100,3:100 balancing arp` with no peers, then ARP
/// requests from 40 client MACs. Output: the addresses go on eth0 itself as
/// soon as the nodes run (before any MASTER), the datapath is set with each
/// node's MAC and gets every mask change, and once all three nodes are
/// MASTER here every requester is pinned and answered with the MAC of the
/// node its MAC hashes to (OpenBSD 1.270 `carp_hash`); no GARP is sent.
#[tokio::test(start_paused = true)]
async fn arp_balanced_interface_answers_by_the_requesters_hash() {
    let fake = Fake::new();
    let world = fake.clone();
    let config = "[[vhost]]\ncarpdev = \"eth0\"\ncarpnodes = \"1:0,2:100,3:100\"\n\
                  balancing = \"arp\"\npass = \"secret\"\naddresses = [\"192.0.2.50/24\"]\n";
    let result = Harness::run(config, fake, |h| async move {
        let calls = h.fake.calls();
        let set = calls
            .iter()
            .find_map(|c| match c {
                Call::BalanceSet(b) => Some(b.clone()),
                _ => None,
            })
            .expect("datapath set");
        assert_eq!(set.mode, carp_proto::Balancing::Arp);
        assert_eq!(
            set.node_macs.iter().map(|m| m[5]).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert!(calls.contains(&Call::OpenSolicitations(LinkId(ETH0))));
        assert!(
            calls.contains(&Call::AddAddress(ETH0, ip(VIP), 24)),
            "on the carpdev before any MASTER: {calls:#?}"
        );
        assert!(!calls.iter().any(|c| matches!(c, Call::EnsureMacvlan(..))));
        for vhid in 1..=3 {
            h.until_master(vhid).await;
        }
        let masks: Vec<u32> = h
            .fake
            .calls()
            .iter()
            .filter_map(|c| match c {
                Call::BalanceMask(m) => Some(*m),
                _ => None,
            })
            .collect();
        assert_eq!(masks.last(), Some(&0b111), "{masks:?}");
        let key =
            carp_proto::balance::ArpHashKey::new(&carp_proto::Passphrase::new(b"secret").unwrap());
        let before = h.fake.calls().len();
        for n in 0..40u8 {
            h.fake
                .solicit([2, 0, 0, 0, 1, n], &format!("192.0.2.{}", 100 + n), VIP)
                .await;
        }
        // Not a balanced address: ignored.
        h.fake
            .solicit([2, 0, 0, 0, 1, 99], "192.0.2.99", "192.0.2.1")
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let calls = h.fake.calls()[before..].to_vec();
        for n in 0..40u8 {
            let mac = [2, 0, 0, 0, 1, n];
            let slot = carp_proto::balance::arp_slot(&key, mac, 3).unwrap();
            let node_mac = [0, 0, 0x5e, 0, 1, slot as u8 + 1];
            assert!(
                calls.contains(&Call::Answer(ip(VIP), node_mac, node_mac)),
                "client {n} (slot {slot}) answered with node {}'s MAC: {calls:#?}",
                slot + 1
            );
            assert!(calls.contains(&Call::Pin(ip(&format!("192.0.2.{}", 100 + n)), mac)));
        }
        assert_eq!(
            calls
                .iter()
                .filter(|c| matches!(c, Call::Answer(..)))
                .count(),
            40
        );
        assert!(!h.fake.calls().iter().any(|c| matches!(c, Call::Garp(..))));
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
    // Shut down: out of the datapath, pins removed.
    let calls = world.calls();
    assert!(calls.contains(&Call::BalanceRemove));
    assert_eq!(
        calls.iter().filter(|c| matches!(c, Call::Unpin(_))).count(),
        40
    );
}

/// Whether the IPv4 VIP was added on eth0 (the interface went live).
fn vip_added(fake: &Fake) -> bool {
    fake.calls()
        .iter()
        .any(|c| *c == Call::AddAddress(ETH0, ip(VIP), 24))
}

/// A fake conntrackd in `dir`: appends each flag to `dir/calls` (and
/// "-B done" after the bulk send, which takes 300 ms), fails on `fail_on`;
/// `-s` (the stats poll, not recorded) reports 2 internal and 1 external
/// entries.
fn fake_conntrackd(dir: &Path, fail_on: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("conntrackd");
    let calls = dir.join("calls");
    let script = format!(
        "#!/bin/sh\n[ \"$3\" = -s ] && {{ printf '%s\\n' 'cache internal:' \
         'current active connections: 2' '' 'cache external:' \
         'current active connections: 1'; exit 0; }}\n\
         printf '%s\\n' \"$3\" >> {calls}\n[ \"$3\" = \"{fail_on}\" ] && exit 1\n\
         if [ \"$3\" = \"-B\" ]; then sleep 0.3; echo '-B done' >> {calls}; fi\nexit 0\n",
        calls = calls.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn sync_calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// Turn state sync on with the operator's own conntrackd file and a fake
/// conntrackd failing on `fail_on`.
fn with_sync(
    gate: crate::config::SyncGate,
    fail_on: &'static str,
) -> impl FnOnce(&mut DaemonConfig, &Path) {
    move |config, dir| {
        config.sync.conntrackd_config = Some(dir.join("conntrackd.conf"));
        config.sync.program = fake_conntrackd(dir, fail_on);
        config.sync.gate = gate;
    }
}

/// Input: state sync on (the operator's conntrackd file), a vhost that hears
/// no master; real time, since the steps are real processes. Output: on
/// INIT -> BACKUP the backup steps run (-t, -n); on the takeover the
/// addresses are added only after commit, flush, resync and bulk send
/// (-c -f -R -B) have all finished, as primary-backup.sh orders them.
#[tokio::test]
async fn takeover_waits_for_the_state_sync_steps() {
    let fake = Fake::new();
    let config = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let tweak = with_sync(crate::config::SyncGate::Open, "none");
    let result = Harness::run_tweaked(&config, fake, tweak, |h| async move {
        let dir = h.dir.path().to_path_buf();
        let mut seen_add = false;
        for _ in 0..400 {
            let added = vip_added(&h.fake);
            if added {
                let calls = sync_calls(&dir);
                assert!(
                    calls.iter().any(|c| c == "-B done"),
                    "addresses added before the sync steps ended: {calls:?}"
                );
                seen_add = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(seen_add, "never became MASTER");
        assert_eq!(
            sync_calls(&dir),
            ["-t", "-n", "-c", "-f", "-R", "-B", "-B done"]
        );
        assert!(logged(Level::Info, "state sync committed in"));
        let sync = h
            .request(Request::Status)
            .await
            .sync
            .expect("sync in status");
        assert!(sync.through.starts_with("conntrackd_config "), "{sync:?}");
        assert_eq!((sync.gate.as_str(), sync.failures), ("open", 0));
        assert!(sync.last_commit_secs.is_some_and(|t| t >= 0.3), "{sync:?}");
        assert!(
            sync.last_commit_age_secs.is_some_and(|t| t < 5.0),
            "{sync:?}"
        );
        // The operator's conntrackd runs as far as its last `-s` answered.
        assert!(sync.running, "{sync:?}");
        assert_eq!(
            (sync.internal_entries, sync.external_entries),
            (Some(2), Some(1))
        );
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: state sync on, the commit step fails. Output: with sync_gate open
/// the addresses go live anyway and the failure is logged; with strict the
/// vhost stays BACKUP and never adds them.
#[tokio::test]
async fn a_failed_state_sync_opens_or_holds_the_gate() {
    use crate::config::SyncGate;
    for (gate, live) in [(SyncGate::Open, true), (SyncGate::Strict, false)] {
        let fake = Fake::new();
        let world = fake.clone();
        let config = vhost(1, 0, "real", &["192.0.2.50/24"]);
        let result = Harness::run_tweaked(&config, fake, with_sync(gate, "-c"), |h| async move {
            // Master-down (3 s) plus the failed steps, with margin.
            tokio::time::sleep(Duration::from_secs(5)).await;
            let calls = sync_calls(h.dir.path());
            assert!(
                calls.starts_with(&["-t".into(), "-n".into(), "-c".into()]),
                "{calls:?}"
            );
            assert!(
                !calls.contains(&"-f".to_string()),
                "steps after a failure: {calls:?}"
            );
            assert!(logged(Level::Err, "state sync before takeover failed"));
            h.signal(Signal::Terminate).await;
        })
        .await;
        result.unwrap();
        let added = vip_added(&world);
        assert_eq!(added, live, "{gate:?}");
    }
}

/// A hook script in `dir` for every state hook: appends `HOOK SEQUENCE
/// JSON` to `dir/hooks`; the pre-master one then sleeps `pre_sleep` and
/// exits `pre_exit`.
fn with_hooks(pre_sleep: &'static str, pre_exit: u8) -> impl FnOnce(&mut DaemonConfig, &Path) {
    use std::os::unix::fs::PermissionsExt;
    move |config, dir| {
        let log = dir.join("hooks");
        let script = format!(
            "#!/bin/sh\nread -r json\nprintf '%s %s %s\\n' \"$CARP_HOOK\" \"$CARP_SEQUENCE\" \"$json\" >> {log}\n\
             [ \"$CARP_HOOK\" = pre-master ] || exit 0\nsleep {pre_sleep}\nprintf 'pre-master end\\n' >> {log}\n\
             exit {pre_exit}\n",
            log = log.display()
        );
        let path = dir.join("hook");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let hooks = &mut config.vhosts[0].hooks;
        hooks.pre_master = Some(path.clone());
        hooks.master = Some(path.clone());
        hooks.backup = Some(path.clone());
        hooks.fault = Some(path);
    }
}

fn hook_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("hooks"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

/// `HOOK SEQUENCE` of each line (the JSON left out).
fn hook_order(dir: &Path) -> Vec<String> {
    hook_lines(dir)
        .iter()
        .map(|l| l.splitn(3, ' ').take(2).collect::<Vec<_>>().join(" "))
        .collect()
}

async fn until_added(h: &Harness) -> bool {
    for _ in 0..400 {
        if vip_added(&h.fake) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Input: pre-master, master and backup hooks (no state sync), a vhost that
/// hears no master, then a forced BACKUP and a forced MASTER; real time, the
/// hooks are real processes. Output: the addresses are added only after the
/// pre-master hook ended; hooks run in transition order, each with its
/// transition's sequence number and a JSON description on stdin.
#[tokio::test]
async fn pre_master_hook_gates_the_takeover_and_hooks_follow_transitions() {
    let fake = Fake::new();
    let config = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let result = Harness::run_tweaked(&config, fake, with_hooks("0.3", 0), |h| async move {
        let dir = h.dir.path().to_path_buf();
        assert!(until_added(&h).await, "never became MASTER");
        let lines = hook_lines(&dir);
        assert!(
            lines.iter().any(|l| l == "pre-master end"),
            "addresses added before the pre-master hook ended: {lines:?}"
        );
        let force = |to: &str| Request::State {
            vhid: 1,
            carpdev: None,
            to: to.into(),
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(h.request(force("backup")).await.error.is_none());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(h.request(force("master")).await.error.is_none());
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(
            hook_order(&dir),
            [
                "backup 1",
                "pre-master 2",
                "pre-master end",
                "master 2",
                "backup 3",
                "pre-master 4",
                "pre-master end",
                "master 4"
            ]
        );
        let json: serde_json::Value =
            serde_json::from_str(hook_lines(&dir)[3].splitn(3, ' ').nth(2).unwrap()).unwrap();
        assert_eq!(json["hook"], "master");
        assert_eq!(json["sequence"], 2);
        assert_eq!(json["state"], "MASTER");
        assert_eq!(json["from"], "BACKUP");
        assert_eq!(json["addresses"][0], "192.0.2.50/24");
        let view = h.view(1).await;
        assert_eq!((view.hooks.runs, view.hooks.failed), (6, 0), "{view:?}");
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a pre-master hook that exits 1, or one that hangs past the gate's
/// 2 s deadline. Output: with sync_gate open the addresses go live anyway
/// (the hung one killed at the deadline); with strict the vhost stays BACKUP.
#[tokio::test]
async fn a_failed_or_hung_pre_master_hook_opens_or_holds_the_gate() {
    use crate::config::SyncGate;
    for (sleep, exit, gate, live) in [
        ("0", 1, SyncGate::Open, true),
        ("0", 1, SyncGate::Strict, false),
        ("30", 0, SyncGate::Open, true),
    ] {
        let fake = Fake::new();
        let world = fake.clone();
        let config = vhost(1, 0, "real", &["192.0.2.50/24"]);
        let tweak = move |c: &mut DaemonConfig, dir: &Path| {
            with_hooks(sleep, exit)(c, dir);
            c.sync.gate = gate;
        };
        let result = Harness::run_tweaked(&config, fake, tweak, |h| async move {
            // Master-down (3 s) plus the 2 s gate, with margin.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let view = h.view(1).await;
            if sleep == "30" {
                assert_eq!(view.hooks.killed, 1, "{view:?}");
                assert!(logged(Level::Err, "hook pre-master"));
            } else {
                assert!(view.hooks.failed >= 1, "{view:?}");
            }
            // A failed strict gate demotes group carp; an open one does not.
            let demote = h.request(Request::Status).await.groups.unwrap_or_default();
            let carp = demote
                .iter()
                .find(|(g, _)| g == "carp")
                .map_or(0, |(_, v)| *v);
            let want = if gate == SyncGate::Strict { 32 } else { 0 };
            assert_eq!(carp, want, "{demote:?}");
            h.signal(Signal::Terminate).await;
        })
        .await;
        result.unwrap();
        let added = vip_added(&world);
        assert_eq!(added, live, "{sleep} {exit} {gate:?}");
    }
}

/// Input: state hooks, the vhost MASTER, then its carpdev's link goes down
/// and comes back; then the daemon stops. Output: a fault hook for the
/// INIT caused by the link, a backup hook on the way back, and no fault
/// hook for the planned INIT of the shutdown.
#[tokio::test]
async fn fault_hook_runs_for_a_link_down_but_not_for_a_shutdown() {
    let fake = Fake::new();
    let config = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let result = Harness::run_tweaked(&config, fake, with_hooks("0", 0), |h| async move {
        assert!(until_added(&h).await, "never became MASTER");
        h.fake
            .event(LinkEvent::Link(link(ETH0, "eth0", ETH0_MAC, false)))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.fake
            .event(LinkEvent::Link(link(ETH0, "eth0", ETH0_MAC, true)))
            .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.signal(Signal::Terminate).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let order = hook_order(h.dir.path());
        assert_eq!(
            order[..6],
            [
                "backup 1",
                "pre-master 2",
                "pre-master end",
                "master 2",
                "fault 3",
                "backup 4"
            ],
            "{order:?}"
        );
        assert!(
            !order[6..].iter().any(|l| l.starts_with("fault")),
            "{order:?}"
        );
    })
    .await;
    result.unwrap();
}

/// A fake conntrackd for a `syncdev`: run as `-C FILE` it takes the
/// `LockFile` of FILE with O_EXCL (as conntrackd does), refusing to start
/// when it exists, and then stays up; `-s` prints a capture of real
/// `conntrackd -s` output; other flags are recorded as [`fake_conntrackd`]'s.
fn fake_supervised_conntrackd(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("conntrackd");
    let calls = dir.join("calls");
    let stats = dir.join("stats.txt");
    std::fs::write(
        &stats,
        include_str!("../../tests/fixtures/conntrackd-stats.txt"),
    )
    .unwrap();
    let script = format!(
        "#!/bin/sh\ncalls={calls}\n\
         if [ $# = 2 ]; then\n  lock=$(sed -n 's/^ *LockFile //p' \"$2\")\n  set -C\n\
         \x20 if ! (: > \"$lock\") 2>/dev/null; then printf '%s\\n' refused >> $calls; exit 1; fi\n\
         \x20 printf '%s\\n' started >> $calls\n  exec sleep 60\nfi\n\
         [ \"$3\" = \"-s\" ] && exec cat {stats}\n\
         printf '%s\\n' \"$3\" >> $calls\nexit 0\n",
        calls = calls.display(),
        stats = stats.display(),
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// Input: state sync through a `syncdev`, with a lock file left in the
/// state dir by a conntrackd that crashed (none is running). Output: carpd
/// removes the stale lock, so its conntrackd starts the first time, not
/// refused; status shows it running with the cache entries `-s` reports.
#[tokio::test]
async fn a_stale_conntrackd_lock_is_removed_and_the_caches_are_shown() {
    let fake = Fake::new();
    let config = vhost(1, 0, "real", &["192.0.2.50/24"]);
    let tweak = |config: &mut DaemonConfig, dir: &Path| {
        use std::os::unix::fs::DirBuilderExt;
        config.sync.syncdev = Some("eth0".into());
        config.sync.program = fake_supervised_conntrackd(dir);
        let state = dir.join("state");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&state)
            .unwrap();
        std::fs::write(state.join("conntrackd.lock"), "").unwrap();
    };
    let result = Harness::run_tweaked(&config, fake, tweak, |h| async move {
        let dir = h.dir.path().to_path_buf();
        let mut shown = None;
        for _ in 0..150 {
            let sync = h
                .request(Request::Status)
                .await
                .sync
                .expect("sync in status");
            if sync.running && sync.external_entries.is_some() {
                shown = Some(sync);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let calls = sync_calls(&dir);
        assert!(calls.contains(&"started".to_string()), "{calls:?}");
        assert!(!calls.contains(&"refused".to_string()), "{calls:?}");
        let sync = shown.expect("conntrackd never shown running with its caches");
        assert!(sync.through.starts_with("syncdev eth0"), "{sync:?}");
        assert_eq!(
            (sync.internal_entries, sync.external_entries),
            (Some(4), Some(6))
        );
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

#[path = "will_tests.rs"]
mod will_tests;
