//! The kernel datapath of OpenBSD IP load balancing (spec section 7,
//! `carp_lsdrop`): an eBPF program at tc ingress of a carpdev that accepts
//! or drops each unicast IP packet to a shared address by the load-share
//! mask, and keeps the kernel from answering ARP requests and Neighbour
//! Solicitations for those addresses (carpd answers them from user space).
//!
//! The program is `crates/carpd/bpf/balance.bpf.c`; its object is committed
//! and embedded here, so building carpd never needs clang.
//! `scripts/build-bpf.sh --check` proves the bytes are what the source
//! builds to. The C file's header lists the per-packet rules and the ICMP
//! choices.
//!
//! A second program at tc egress keeps the kernel's own solicitations from
//! binding a shared address to this host's real MAC at a peer (every host
//! holds the shared addresses, and the kernel solicits with one as sender):
//! in the IP modes an ARP packet or NS / NA sent from a shared address
//! advertises the leader MAC; in mode arp an ARP request from one becomes
//! an RFC 5227 probe (sender 0.0.0.0) and an NS advertises the lowest node
//! MASTER here. The C file's header has the details.
//!
//! Maps (keys and values in host order unless stated; the C side mirrors
//! this layout):
//!
//! | map | kind | key | value |
//! | --- | --- | --- | --- |
//! | `carp_cfg` | array, mmap-able, 64 | carp-interface slot | [`pack`]ed mask, count, mode |
//! | `carp_v4` | hash | IPv4 address, network order | slot |
//! | `carp_v6` | hash | IPv6 address | slot |
//! | `carp_macs` | hash | carp MAC + 2 zero bytes | slot \| node index << 8 |
//! | `carp_nodes` | array, 64 × 32 | slot × 32 + node index | node MAC + 2 zero bytes |
//! | `carp_stats` | per-CPU array | [`Counter`] | packets |
//!
//! Atomicity: the program reads a carp interface's configuration with one
//! 8-byte load, and [`Datapath::set_mask`] writes it with one atomic 8-byte
//! store into the mmap-ed array (`BPF_F_MMAPABLE`), not through
//! `BPF_MAP_UPDATE_ELEM`, whose kernel copy is a plain `memcpy` of the value
//! (`rep movsb` on many x86 CPUs) with no single-store guarantee. A reader
//! therefore sees the old or the new mask, count and mode, never a mix. [`Datapath::set`] writes the configuration
//! last, after the addresses and MACs it refers to are in place, and
//! [`Datapath::remove`] clears it first.
//!
//! The parent must also let the frames in: mode ip joins the multicast carp
//! MAC (SIOCADDMULTI, as `ip maddr add`); ip-stealth, ip-unicast and arp add
//! their unicast MACs to the unicast filter (RTM_NEWNEIGH on AF_BRIDGE with
//! NTF_SELF, as `bridge fdb add MAC dev IF self permanent`). Filters carpd
//! added are removed when the interface is removed and on drop; one that
//! was already there (EEXIST) is left alone.

use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, PerCpuArray};
use aya::programs::tc::{self, SchedClassifierLinkId, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::util::KernelVersion;
use aya::{Ebpf, include_bytes_aligned};
use carp_proto::balance::Balancing;
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::tc::{TcAttribute, TcHandle, TcMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{Socket as NlSocket, SocketAddr as NlAddr, protocols::NETLINK_ROUTE};

use super::OsError;

/// The compiled program (see `scripts/build-bpf.sh`).
static OBJECT: &[u8] = include_bytes_aligned!("../../bpf/balance.bpf.o");

/// The program's function name in the object.
const PROGRAM: &str = "carp_balance";
/// The egress program's function name.
const EGRESS: &str = "carp_egress";
/// A program that returns TC_ACT_OK at once, for [`Datapath::test_run`].
const BASELINE: &str = "carp_baseline";
/// Entries of `carp_cfg` (`MAX_CARPIFS` in the C source).
pub const MAX_CARP_IFS: usize = 64;
/// Nodes of one carp interface (OpenBSD `CARP_MAXNODES`).
pub const MAX_NODES: usize = 32;

/// The mode number the program reads (`enum mode` in the C source).
pub fn mode_code(mode: Balancing) -> u8 {
    match mode {
        Balancing::None => 0,
        Balancing::Ip => 1,
        Balancing::IpStealth => 2,
        Balancing::IpUnicast => 3,
        Balancing::Arp => 4,
    }
}

/// Pack a carp interface's configuration into the one `carp_cfg` word:
/// `mask | count << 32 | mode << 40`.
pub fn pack(mode: Balancing, count: u8, mask: u32) -> u64 {
    u64::from(mask) | u64::from(count) << 32 | u64::from(mode_code(mode)) << 40
}

/// Split a `carp_cfg` word into (mode code, count, mask).
pub fn unpack(word: u64) -> (u8, u8, u32) {
    ((word >> 40) as u8, (word >> 32) as u8, word as u32)
}

/// The MAC of the node with `vhid` (`00:00:5e:00:01:<vhid>`).
pub fn node_mac(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vhid]
}

/// The carp interface MAC in `mode` for leader `vhid`: in mode ip the
/// multicast `01:00:5e:00:01:<vhid>`, otherwise [`node_mac`].
pub fn leader_mac(mode: Balancing, vhid: u8) -> [u8; 6] {
    let mut mac = node_mac(vhid);
    if mode == Balancing::Ip {
        mac[0] = 0x01;
    }
    mac
}

/// One carp interface as the datapath sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceSet {
    /// The balancing mode; [`Balancing::None`] keeps the entry but judges nothing.
    pub mode: Balancing,
    /// Bit i set: node i (vhid order) is MASTER here.
    pub mask: u32,
    /// One MAC per node, in slot (vhid) order; their number is the node
    /// count. The first is the leader's, the carp interface MAC ([`leader_mac`]).
    pub node_macs: Vec<[u8; 6]>,
    /// The shared addresses.
    pub addresses: Vec<IpAddr>,
}

impl BalanceSet {
    /// Build the set of nodes `vhids` (sorted ascending, as OpenBSD does)
    /// with the MACs OpenBSD derives.
    pub fn new(mode: Balancing, vhids: &[u8], mask: u32, addresses: Vec<IpAddr>) -> BalanceSet {
        let node_macs = vhids
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if i == 0 {
                    leader_mac(mode, v)
                } else {
                    node_mac(v)
                }
            })
            .collect();
        BalanceSet {
            mode,
            mask,
            node_macs,
            addresses,
        }
    }

    /// Return the MACs the program treats as "sent to this carp interface",
    /// with their node index: the leader's in the IP modes, every node's in
    /// mode arp.
    pub fn carp_macs(&self) -> Vec<([u8; 6], u8)> {
        let n = match self.mode {
            Balancing::None => 0,
            Balancing::Arp => self.node_macs.len(),
            _ => self.node_macs.len().min(1),
        };
        (0..n.min(MAX_NODES))
            .map(|i| (self.node_macs[i], i as u8))
            .collect()
    }

    /// Return the L2 filter entries the parent needs to receive the frames.
    pub fn l2_filters(&self) -> Vec<L2Filter> {
        self.carp_macs()
            .into_iter()
            .map(|(mac, _)| {
                if mac[0] & 1 == 1 {
                    L2Filter::Multicast(mac)
                } else {
                    L2Filter::Unicast(mac)
                }
            })
            .collect()
    }
}

/// An entry of the parent's hardware address filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L2Filter {
    /// A multicast MAC joined with SIOCADDMULTI (`ip maddr show dev`).
    Multicast([u8; 6]),
    /// A unicast MAC in the unicast filter (`bridge fdb show dev`, "self permanent").
    Unicast([u8; 6]),
}

/// The counters of `carp_stats`, in map order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Counter {
    /// Packets to a shared address whose slot is served here.
    Accepted = 0,
    /// Packets to a shared address whose slot is not served here (or count 0).
    DroppedByHash = 1,
    /// ARP requests and Neighbour Solicitations for a shared address.
    DroppedSolicitation = 2,
    /// Everything else, passed untouched.
    PassedOther = 3,
    /// Outgoing ARP packets and Neighbour Solicitations / Advertisements
    /// from a shared address that the egress program rewrote.
    EgressRewritten = 4,
}

/// The program's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DatapathCounters {
    /// See [`Counter::Accepted`].
    pub accepted: u64,
    /// See [`Counter::DroppedByHash`].
    pub dropped_by_hash: u64,
    /// See [`Counter::DroppedSolicitation`].
    pub dropped_solicitation: u64,
    /// See [`Counter::PassedOther`].
    pub passed_other: u64,
    /// See [`Counter::EgressRewritten`].
    pub egress_rewritten: u64,
}

/// Which program [`Datapath::test_run`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestProgram {
    /// The balancing program, with this datapath's maps.
    Balance,
    /// A program that only returns TC_ACT_OK (the cost of running any program).
    Baseline,
    /// The egress program (the frame as the kernel would send it).
    Egress,
}

/// What one BPF_PROG_TEST_RUN returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRun {
    /// The program's verdict (TC_ACT_OK 0, TC_ACT_SHOT 2).
    pub verdict: u32,
    /// The kernel's mean time per run, in nanoseconds.
    pub ns_per_run: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
}

/// How the program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// TCX on kernels from 6.6, netlink (clsact qdisc) before: aya's choice.
    Auto,
    /// Always the netlink filter on a clsact qdisc (what Debian 12's 6.1 runs).
    Netlink,
}

struct CarpIf {
    slot: u32,
    set: BalanceSet,
    /// Filters this datapath added (and so removes).
    filters: Vec<L2Filter>,
}

/// The balancing program attached at tc ingress of one parent link
/// (carpdev), and its solicitation rewriter at tc egress, shared by every
/// carp interface on it.
///
/// Dropping it detaches both programs, removes the L2 filters it added and
/// deletes the clsact qdisc if it created one.
pub struct Datapath {
    ebpf: Ebpf,
    link: Option<SchedClassifierLinkId>,
    egress: Option<SchedClassifierLinkId>,
    ifindex: u32,
    ifname: String,
    created_qdisc: bool,
    cfg: CfgWords,
    carp_ifs: HashMap<u32, CarpIf>,
}

impl Datapath {
    /// Load the programs and attach them at ingress and egress of `ifname`
    /// (index `ifindex`).
    ///
    /// Needs CAP_BPF and CAP_NET_ADMIN (or root; the netns test attaches
    /// with only those two). Until [`Datapath::set`] is called every frame
    /// passes. Call it in the parent's network namespace.
    pub fn attach(ifindex: u32, ifname: &str) -> Result<Datapath, OsError> {
        Datapath::attach_with(ifindex, ifname, Attach::Auto)
    }

    /// [`Datapath::attach`] with a chosen attachment (tests run both).
    pub fn attach_with(ifindex: u32, ifname: &str, how: Attach) -> Result<Datapath, OsError> {
        fn bpf_err<'a, E: std::error::Error + Send + Sync + 'static>(
            op: &'static str,
            ifname: &'a str,
        ) -> impl FnOnce(E) -> OsError + 'a {
            move |e| OsError::socket(op, ifname, io::Error::other(e))
        }
        let ebpf = Ebpf::load(OBJECT).map_err(bpf_err("load eBPF object", ifname))?;
        let cfg = match ebpf.map("carp_cfg") {
            Some(Map::Array(data)) => CfgWords::map(data),
            _ => Err(io::Error::other("no array carp_cfg in the object")),
        }
        .map_err(|e| OsError::socket("mmap carp_cfg", ifname, e))?;
        let tcx = how == Attach::Auto
            && KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        let mut created_qdisc = false;
        if !tcx {
            match tc::qdisc_add_clsact(ifname) {
                Ok(()) => created_qdisc = true,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(OsError::socket("add clsact qdisc", ifname, e)),
            }
        }
        let mut dp = Datapath {
            ebpf,
            link: None,
            egress: None,
            ifindex,
            ifname: ifname.to_owned(),
            created_qdisc,
            cfg,
            carp_ifs: HashMap::new(),
        };
        let options = || {
            if tcx {
                TcAttachOptions::TcxOrder(LinkOrder::default())
            } else {
                TcAttachOptions::Netlink(Default::default())
            }
        };
        let prog = dp.classifier(PROGRAM)?;
        prog.load().map_err(bpf_err("load eBPF program", ifname))?;
        let link = prog
            .attach_with_options(ifname, TcAttachType::Ingress, options())
            .map_err(bpf_err("attach eBPF program", ifname))?;
        dp.link = Some(link);
        // An error from here drops `dp`, which detaches the ingress link.
        let prog = dp.classifier(EGRESS)?;
        prog.load().map_err(bpf_err("load eBPF program", ifname))?;
        let link = prog
            .attach_with_options(ifname, TcAttachType::Egress, options())
            .map_err(bpf_err("attach eBPF program", ifname))?;
        dp.egress = Some(link);
        Ok(dp)
    }

    /// Return the parent's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Add or replace carp interface `carpif` (any id the caller keeps
    /// stable, such as its index): its addresses, mode, MACs, mask and the
    /// parent's L2 filters.
    ///
    /// The packed configuration word is written last, so the program never
    /// judges by a mode or node count whose MACs and addresses are not in
    /// place yet. Errors leave the previous word judging (or nothing, for a
    /// new `carpif`) with part of the new keys and filters in place; calling
    /// again, or [`Datapath::remove`], settles it. An address or carp MAC
    /// of another carp interface on this parent is refused before any change.
    ///
    /// Call it (and [`Datapath::remove`], and drop the datapath) in the
    /// network namespace of the parent: the L2 filters are set by netlink
    /// and ioctl there. [`Datapath::set_mask`] may run anywhere.
    pub fn set(&mut self, carpif: u32, set: &BalanceSet) -> Result<(), OsError> {
        let count = set.node_macs.len();
        if count == 0 || count > MAX_NODES {
            return Err(self.invalid("set carp interface", "1 to 32 nodes"));
        }
        for other in self.carp_ifs.iter().filter(|(id, _)| **id != carpif) {
            let taken = &other.1.set;
            if set.addresses.iter().any(|a| taken.addresses.contains(a))
                || set
                    .carp_macs()
                    .iter()
                    .any(|m| taken.carp_macs().iter().any(|t| t.0 == m.0))
            {
                return Err(self.invalid("set carp interface", "address or MAC of another"));
            }
        }
        let slot = match self.carp_ifs.get(&carpif) {
            Some(c) => c.slot,
            None => (0..MAX_CARP_IFS as u32)
                .find(|s| self.carp_ifs.values().all(|c| c.slot != *s))
                .ok_or_else(|| self.invalid("set carp interface", "64 per parent"))?,
        };
        // The record exists before any fallible step and always lists the
        // filters added, so an error leaves it describing what is installed.
        let empty = BalanceSet {
            node_macs: Vec::new(),
            addresses: Vec::new(),
            ..set.clone()
        };
        let entry = self.carp_ifs.entry(carpif).or_insert(CarpIf {
            slot,
            set: empty,
            filters: Vec::new(),
        });
        let (old_set, old_filters) = (entry.set.clone(), entry.filters.clone());
        let wanted = set.l2_filters();
        let mut filters = old_filters.clone();
        for f in old_filters.iter().filter(|f| !wanted.contains(f)) {
            self.del_filter(*f)?;
            filters.retain(|x| x != f);
            self.entry(carpif).filters = filters.clone();
        }
        for f in wanted.iter().filter(|f| !old_filters.contains(f)) {
            if self.add_filter(*f)? {
                filters.push(*f);
                self.entry(carpif).filters = filters.clone();
            }
        }
        // Old keys go first; then the record names the new set, so a failed
        // insert below is undone by `remove`.
        for (mac, _) in old_set.carp_macs() {
            if !set.carp_macs().iter().any(|m| m.0 == mac) {
                self.macs()?.remove(&mac_key(mac)).ok();
            }
        }
        for addr in old_set
            .addresses
            .iter()
            .filter(|a| !set.addresses.contains(a))
        {
            self.remove_address(*addr);
        }
        self.entry(carpif).set = set.clone();
        for (mac, node) in set.carp_macs() {
            self.macs()?
                .insert(mac_key(mac), slot | u32::from(node) << 8, 0)
                .map_err(|e| self.map_err("insert carp MAC", e))?;
        }
        for addr in &set.addresses {
            self.insert_address(*addr, slot)?;
        }
        let ifname = self.ifname.clone();
        let open_err = |e: io::Error| OsError::socket("open carp_nodes", &ifname, e);
        let mut nodes: Array<&mut MapData, u64> = self
            .ebpf
            .map_mut("carp_nodes")
            .ok_or_else(|| open_err(io::Error::other("no carp_nodes map")))
            .and_then(|m| Array::try_from(m).map_err(|e| open_err(io::Error::other(e))))?;
        for (i, mac) in set.node_macs.iter().enumerate() {
            let index = slot * MAX_NODES as u32 + i as u32;
            nodes
                .set(index, u64::from_ne_bytes(mac_key(*mac)), 0)
                .map_err(|e| OsError::socket("set node MAC", &ifname, io::Error::other(e)))?;
        }
        self.cfg.store(slot, pack(set.mode, count as u8, set.mask));
        Ok(())
    }

    /// Change carp interface `carpif`'s load-share mask: the hot path, one
    /// atomic store of the packed word, no system call. Bits past the node
    /// count are ignored by the program.
    pub fn set_mask(&mut self, carpif: u32, mask: u32) -> Result<(), OsError> {
        let Some(c) = self.carp_ifs.get_mut(&carpif) else {
            return Err(self.invalid("set mask", "unknown carp interface"));
        };
        c.set.mask = mask;
        let word = pack(c.set.mode, c.set.node_macs.len() as u8, mask);
        self.cfg.store(c.slot, word);
        Ok(())
    }

    /// Stop judging carp interface `carpif` and remove its addresses, MACs
    /// and L2 filters; an unknown one is success.
    pub fn remove(&mut self, carpif: u32) -> Result<(), OsError> {
        let Some(c) = self.carp_ifs.get(&carpif) else {
            return Ok(());
        };
        let (slot, set, filters) = (c.slot, c.set.clone(), c.filters.clone());
        self.cfg.store(slot, 0);
        for addr in &set.addresses {
            self.remove_address(*addr);
        }
        for (mac, _) in set.carp_macs() {
            self.macs()?.remove(&mac_key(mac)).ok();
        }
        let mut result = Ok(());
        for f in filters {
            if let Err(e) = self.del_filter(f) {
                result = Err(e);
            }
        }
        self.carp_ifs.remove(&carpif);
        result
    }

    /// Return the program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<DatapathCounters, OsError> {
        let map = self
            .ebpf
            .map("carp_stats")
            .ok_or_else(|| self.invalid("read counters", "no carp_stats map"))?;
        let stats =
            PerCpuArray::<_, u64>::try_from(map).map_err(|e| self.map_err("read counters", e))?;
        let read = |c: Counter| -> Result<u64, OsError> {
            let values = stats
                .get(&(c as u32), 0)
                .map_err(|e| self.map_err("read counters", e))?;
            Ok(values.iter().sum())
        };
        Ok(DatapathCounters {
            accepted: read(Counter::Accepted)?,
            dropped_by_hash: read(Counter::DroppedByHash)?,
            dropped_solicitation: read(Counter::DroppedSolicitation)?,
            passed_other: read(Counter::PassedOther)?,
            egress_rewritten: read(Counter::EgressRewritten)?,
        })
    }

    /// Run `program` `repeat` times on Ethernet frame `frame` in the kernel
    /// (BPF_PROG_TEST_RUN), against this datapath's maps: the verdict, the
    /// mean time per run and the frame as the program left it. For
    /// benchmarks and for checks of rules a namespace cannot easily
    /// produce. Counters count these runs too.
    pub fn test_run(
        &mut self,
        program: TestProgram,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRun, OsError> {
        let name = match program {
            TestProgram::Balance => PROGRAM,
            TestProgram::Baseline => BASELINE,
            TestProgram::Egress => EGRESS,
        };
        let ifname = self.ifname.clone();
        let prog = self.classifier(name)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| OsError::socket("load eBPF program", &ifname, io::Error::other(e)))?;
        }
        let fd = prog
            .fd()
            .map_err(|e| OsError::socket("test run", &ifname, io::Error::other(e)))?
            .as_fd()
            .as_raw_fd();
        prog_test_run(fd, frame, repeat).map_err(|e| OsError::socket("test run", &ifname, e))
    }

    fn classifier(&mut self, name: &str) -> Result<&mut SchedClassifier, OsError> {
        let ifname = self.ifname.clone();
        self.ebpf
            .program_mut(name)
            .ok_or_else(|| io::Error::other(format!("no program {name} in the object")))
            .and_then(|p| p.try_into().map_err(io::Error::other))
            .map_err(|e| OsError::socket("find eBPF program", &ifname, e))
    }

    fn entry(&mut self, carpif: u32) -> &mut CarpIf {
        // `set` inserts the record before any call of this.
        self.carp_ifs.entry(carpif).or_insert_with(|| CarpIf {
            slot: 0,
            set: BalanceSet::new(Balancing::None, &[], 0, Vec::new()),
            filters: Vec::new(),
        })
    }

    fn macs(&mut self) -> Result<BpfHashMap<&mut MapData, [u8; 8], u32>, OsError> {
        self.hash_map("carp_macs")
    }

    fn hash_map<K: aya::Pod>(
        &mut self,
        name: &str,
    ) -> Result<BpfHashMap<&mut MapData, K, u32>, OsError> {
        let ifname = self.ifname.clone();
        let map = self.ebpf.map_mut(name).ok_or_else(|| {
            OsError::socket("find map", &ifname, io::Error::other(name.to_owned()))
        })?;
        BpfHashMap::try_from(map)
            .map_err(|e| OsError::socket("open map", &ifname, io::Error::other(e)))
    }

    fn insert_address(&mut self, addr: IpAddr, slot: u32) -> Result<(), OsError> {
        let r = match addr {
            IpAddr::V4(a) => {
                self.hash_map::<u32>("carp_v4")?
                    .insert(u32::from_ne_bytes(a.octets()), slot, 0)
            }
            IpAddr::V6(a) => self
                .hash_map::<[u8; 16]>("carp_v6")?
                .insert(a.octets(), slot, 0),
        };
        r.map_err(|e| self.map_err("insert shared address", e))
    }

    fn remove_address(&mut self, addr: IpAddr) {
        // A missing key is the state wanted.
        let _ = match addr {
            IpAddr::V4(a) => self
                .hash_map::<u32>("carp_v4")
                .map(|mut m| m.remove(&u32::from_ne_bytes(a.octets())).ok()),
            IpAddr::V6(a) => self
                .hash_map::<[u8; 16]>("carp_v6")
                .map(|mut m| m.remove(&a.octets()).ok()),
        };
    }

    /// Add `f` to the parent's filter; false if it was already there (then
    /// it is not ours to remove).
    fn add_filter(&self, f: L2Filter) -> Result<bool, OsError> {
        let r = match f {
            L2Filter::Multicast(mac) => multicast(&self.ifname, mac, true),
            L2Filter::Unicast(mac) => fdb(self.ifindex, mac, true),
        };
        match r {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(OsError::socket("add L2 filter", &self.ifname, e)),
        }
    }

    fn del_filter(&self, f: L2Filter) -> Result<(), OsError> {
        let r = match f {
            L2Filter::Multicast(mac) => multicast(&self.ifname, mac, false),
            L2Filter::Unicast(mac) => fdb(self.ifindex, mac, false),
        };
        match r {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                Err(OsError::socket("remove L2 filter", &self.ifname, e))
            }
            _ => Ok(()),
        }
    }

    fn invalid(&self, op: &'static str, what: &str) -> OsError {
        OsError::socket(
            op,
            &self.ifname,
            io::Error::new(io::ErrorKind::InvalidInput, what.to_owned()),
        )
    }

    fn map_err(&self, op: &'static str, e: aya::maps::MapError) -> OsError {
        OsError::socket(op, &self.ifname, io::Error::other(e))
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        if let Some(link) = self.egress.take()
            && let Ok(prog) = self.classifier(EGRESS)
        {
            let _ = prog.detach(link);
        }
        if let Some(link) = self.link.take()
            && let Ok(prog) = self.classifier(PROGRAM)
        {
            let _ = prog.detach(link);
        }
        let filters: Vec<L2Filter> = self
            .carp_ifs
            .values()
            .flat_map(|c| c.filters.iter().copied())
            .collect();
        for f in filters {
            let _ = self.del_filter(f);
        }
        if self.created_qdisc {
            let _ = del_clsact(self.ifindex);
        }
    }
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("carp_ifs", &self.carp_ifs.len())
            .finish()
    }
}

/// The `carp_macs` key of `mac`.
fn mac_key(mac: [u8; 6]) -> [u8; 8] {
    let mut k = [0; 8];
    k[..6].copy_from_slice(&mac);
    k
}

// ===== kernel calls aya does not offer =====

/// The mmap-ed `carp_cfg` array.
struct CfgWords {
    base: NonNull<AtomicU64>,
    len: usize,
}

impl CfgWords {
    fn map(data: &MapData) -> io::Result<CfgWords> {
        let len = (MAX_CARP_IFS * 8).next_multiple_of(4096);
        // SAFETY: mapping a BPF array fd shared read-write creates a new
        // mapping of `len` bytes, chosen by the kernel; no existing memory
        // is affected. The fd is valid for the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                data.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<AtomicU64>()).ok_or_else(io::Error::last_os_error)?;
        Ok(CfgWords { base, len })
    }

    fn store(&self, slot: u32, word: u64) {
        let slot = (slot as usize).min(MAX_CARP_IFS - 1);
        // SAFETY: the mapping is page-aligned, at least MAX_CARP_IFS words
        // long and alive until drop; slot is clamped into it. The kernel
        // reads the word with single 8-byte loads, and nothing in this
        // process holds a plain reference into the mapping.
        unsafe { self.base.add(slot).as_ref() }.store(word, Ordering::Release);
    }
}

impl Drop for CfgWords {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`, once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain shared memory accessed only atomically.
unsafe impl Send for CfgWords {}

/// Join or leave multicast `mac` on `ifname` (SIOCADDMULTI / SIOCDELMULTI).
fn multicast(ifname: &str, mac: [u8; 6], join: bool) -> io::Result<()> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    // SAFETY: `ifreq` is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { mem::zeroed() };
    let name = ifname.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // dev_ifsioc: the address family must be AF_UNSPEC.
    ifr.ifr_ifru.ifru_hwaddr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
    // SAFETY: writing the hwaddr member of the (zeroed) union.
    let data = unsafe { &mut ifr.ifr_ifru.ifru_hwaddr.sa_data };
    for (d, s) in data.iter_mut().zip(mac) {
        *d = s as libc::c_char;
    }
    let req = if join {
        libc::SIOCADDMULTI
    } else {
        libc::SIOCDELMULTI
    };
    // SAFETY: both requests read one `struct ifreq`, which lives for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, &ifr as *const libc::ifreq) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Add or remove unicast `mac` in the unicast filter of `ifindex`
/// (`bridge fdb add|del MAC dev IF self permanent`).
fn fdb(ifindex: u32, mac: [u8; 6], add: bool) -> io::Result<()> {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = ifindex;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    if add {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        netlink_request(RouteNetlinkMessage::NewNeighbour(msg), flags)
    } else {
        netlink_request(
            RouteNetlinkMessage::DelNeighbour(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
    }
}

/// Delete the clsact qdisc of `ifindex` (`tc qdisc del dev IF clsact`).
fn del_clsact(ifindex: u32) -> io::Result<()> {
    let mut msg = TcMessage::default();
    msg.header.index = ifindex as i32;
    msg.header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    msg.header.parent = TcHandle::CLSACT;
    msg.attributes.push(TcAttribute::Kind("clsact".to_owned()));
    netlink_request(
        RouteNetlinkMessage::DelQueueDiscipline(msg),
        NLM_F_REQUEST | NLM_F_ACK,
    )
}

/// Send one rtnetlink request on a blocking socket and wait for its ack.
fn netlink_request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
    let mut socket = NlSocket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&NlAddr::new(0, 0))?;
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = flags;
    req.header.sequence_number = 1;
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut reply = vec![0u8; 8192];
    let n = socket.recv(&mut &mut reply[..], 0)?;
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    match msg.payload {
        NetlinkPayload::Error(e) => match e.code {
            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// `union bpf_attr`'s `test` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct TestAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// BPF_PROG_TEST_RUN of program `fd` on `frame`.
fn prog_test_run(fd: i32, frame: &[u8], repeat: u32) -> io::Result<TestRun> {
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestAttr {
        prog_fd: fd as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..TestAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised `bpf_attr.test` of the
    // stated size whose buffers (`frame`, `out`) outlive the call and have
    // the sizes given; the kernel writes only into `attr` and `out`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestAttr,
            mem::size_of::<TestAttr>() as u32,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun {
        verdict: attr.retval,
        ns_per_run: attr.duration,
        frame: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_puts_mask_count_and_mode_in_one_word() {
        let w = pack(Balancing::IpStealth, 3, 0b101);
        assert_eq!(w, 0x0000_0203_0000_0005);
        assert_eq!(unpack(w), (2, 3, 0b101));
        assert_eq!(
            unpack(pack(Balancing::Arp, 32, u32::MAX)),
            (4, 32, u32::MAX)
        );
        assert_eq!(unpack(pack(Balancing::None, 0, 0)), (0, 0, 0));
        // The C side's CFG_MODE / CFG_COUNT / CFG_MASK shifts.
        let w = pack(Balancing::Ip, 2, 0x8000_0001);
        assert_eq!(
            ((w >> 40) & 0xff, (w >> 32) & 0xff, w & 0xffff_ffff),
            (1, 2, 0x8000_0001)
        );
    }

    #[test]
    fn mode_codes_follow_the_c_enum() {
        let codes: Vec<u8> = Balancing::ALL.iter().map(|&b| mode_code(b)).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn leader_mac_is_multicast_only_in_mode_ip() {
        assert_eq!(leader_mac(Balancing::Ip, 7), [0x01, 0, 0x5e, 0, 1, 7]);
        assert_eq!(leader_mac(Balancing::IpStealth, 7), [0, 0, 0x5e, 0, 1, 7]);
        assert_eq!(leader_mac(Balancing::Arp, 200), [0, 0, 0x5e, 0, 1, 200]);
        assert_eq!(node_mac(1), [0, 0, 0x5e, 0, 1, 1]);
    }

    #[test]
    fn ip_modes_judge_the_leader_mac_and_arp_every_node_mac() {
        let addrs = vec!["198.51.100.50".parse().unwrap()];
        let ip = BalanceSet::new(Balancing::Ip, &[1, 2, 3], 0b101, addrs.clone());
        assert_eq!(ip.node_macs[0], [1, 0, 0x5e, 0, 1, 1]);
        assert_eq!(ip.node_macs[2], [0, 0, 0x5e, 0, 1, 3]);
        assert_eq!(ip.carp_macs(), vec![([1, 0, 0x5e, 0, 1, 1], 0)]);
        assert_eq!(
            ip.l2_filters(),
            vec![L2Filter::Multicast([1, 0, 0x5e, 0, 1, 1])]
        );

        let stealth = BalanceSet::new(Balancing::IpStealth, &[4, 9], 1, addrs.clone());
        assert_eq!(stealth.l2_filters(), vec![L2Filter::Unicast(node_mac(4))]);

        let arp = BalanceSet::new(Balancing::Arp, &[4, 9], 1, addrs.clone());
        assert_eq!(arp.carp_macs(), vec![(node_mac(4), 0), (node_mac(9), 1)]);
        assert_eq!(
            arp.l2_filters(),
            vec![
                L2Filter::Unicast(node_mac(4)),
                L2Filter::Unicast(node_mac(9))
            ]
        );

        let none = BalanceSet::new(Balancing::None, &[4], 1, addrs);
        assert!(none.l2_filters().is_empty());
    }

    #[test]
    fn datapath_can_move_to_another_thread() {
        fn send<T: Send>() {}
        send::<Datapath>();
    }

    #[test]
    fn mac_key_pads_with_zeros() {
        assert_eq!(mac_key([1, 2, 3, 4, 5, 6]), [1, 2, 3, 4, 5, 6, 0, 0]);
    }

    #[test]
    fn test_attr_has_the_kernel_size() {
        // bpf_attr.test up to batch_size is 76 bytes; padded to 8.
        assert_eq!(mem::size_of::<TestAttr>(), 80);
    }
}
