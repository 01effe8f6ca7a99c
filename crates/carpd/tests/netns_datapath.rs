//! The load-balancing datapath (`carpd::os::balance`, issue 12) in the kernel.
//!
//! Input: a client namespace with 70 IPv4 sources 198.51.100.100-169 and 12
//! IPv6 sources 2001:db8::100-10b, joined by a veth to a host namespace
//! holding the shared addresses 198.51.100.50 and 2001:db8::50, UDP echo
//! and TCP servers, and the program attached to its `eth0` through the
//! Rust API (on a thread inside the host namespace), 3 nodes.
//!
//! Output: a source is answered iff `carp_proto::balance::ip_slot(src,
//! vip, 3)` is in the mask, for every mode and after mask changes; in ip
//! and ip-stealth modes TCP (which drops anything but PACKET_HOST) works for
//! the served slots, proving the pkt_type fix-up; ARP requests and
//! solicitations for the shared addresses get no kernel answer while
//! attached but are still seen by ETH_P_ALL taps (an unbound packet socket
//! and tcpdump bound to eth0), and are answered once
//! detached; the L2 filters and the clsact qdisc come and go with the
//! datapath; ICMP errors are hashed by the quoted packet (BPF_PROG_TEST_RUN).
//! At egress, the host's kernel soliciting the client from a shared address
//! leaves the client's entry for it at the leader MAC (IP modes), or sends
//! an RFC 5227 probe and an NS with the lowest MASTER node's MAC (arp), and
//! the pings still work; carpd's own answers pass unchanged (test runs).
//!
//! The client reaches the shared address through static neighbour entries
//! (the program drops the kernel's own ARP / ND answers), pointing at the
//! host's MAC or at the carp MAC of the mode under test.

mod common;

use std::io::{ErrorKind, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use carp_proto::balance::{Balancing, ip_slot};
use carpd::os::balance::{Attach, BalanceSet, Datapath, DatapathCounters, TestProgram};
use common::{in_netns, run_ok, spawn_in_netns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 50);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x50);
const UDP_PORT: u16 = 7777;
const TCP_PORT: u16 = 7778;
const NODES: usize = 3;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn v4_sources() -> Vec<IpAddr> {
    (100..170)
        .map(|i| IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)))
        .collect()
}

fn v6_sources() -> Vec<IpAddr> {
    (0x100..0x10c)
        .map(|i| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i)))
        .collect()
}

fn served(src: IpAddr, mask: u32) -> bool {
    let vip = match src {
        IpAddr::V4(_) => IpAddr::V4(VIP4),
        IpAddr::V6(_) => IpAddr::V6(VIP6),
    };
    ip_slot(src, vip, NODES).is_some_and(|s| mask & (1 << s) != 0)
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

fn addresses() -> Vec<IpAddr> {
    vec![IpAddr::V4(VIP4), IpAddr::V6(VIP6)]
}

/// A client and a host namespace on one veth pair, deleted on drop.
/// Names: `carpt-dpe-<pid>-<n>-{c,h}`, so the test bed reaps them if this
/// process dies and test-all counts leftovers.
struct Net {
    client: String,
    host: String,
    host_mac: [u8; 6],
    host_ifindex: u32,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<()>>,
}

impl Net {
    fn new() -> Net {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root (network namespaces): run as root, or leave this test ignored"
        );
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("carpt-dpe-{}-{n}", std::process::id());
        let mut net = Net {
            client: format!("{base}-c"),
            host: format!("{base}-h"),
            host_mac: [0; 6],
            host_ifindex: 0,
            stop: Arc::new(AtomicBool::new(false)),
            servers: Vec::new(),
        };
        let (c, h) = (net.client.clone(), net.host.clone());
        for ns in [&c, &h] {
            run_ok(&["ip", "netns", "add", ns]);
            run_ok(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            for key in ["all", "default"] {
                let k = format!("net.ipv6.conf.{key}.accept_dad=0");
                run_ok(&["ip", "netns", "exec", ns, "sysctl", "-qw", &k]);
            }
        }
        run_ok(&[
            "ip", "-n", &c, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
            &h,
        ]);
        let batch = std::env::temp_dir().join(format!("{base}.batch"));
        let mut lines = String::new();
        for src in v4_sources() {
            lines.push_str(&format!("addr add {src}/24 dev eth0\n"));
        }
        for src in v6_sources() {
            lines.push_str(&format!("addr add {src}/64 dev eth0 nodad\n"));
        }
        std::fs::write(&batch, lines).expect("write batch");
        let batch_s = batch.to_string_lossy().into_owned();
        run_ok(&["ip", "-n", &c, "-batch", &batch_s]);
        let _ = std::fs::remove_file(&batch);
        run_ok(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            "198.51.100.50/24",
            "dev",
            "eth0",
        ]);
        run_ok(&[
            "ip",
            "-n",
            &h,
            "addr",
            "add",
            "2001:db8::50/64",
            "dev",
            "eth0",
            "nodad",
        ]);
        for ns in [&c, &h] {
            run_ok(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
        }
        let link: serde_json::Value = serde_json::from_str(&run_ok(&[
            "ip", "-j", "-n", &h, "link", "show", "dev", "eth0",
        ]))
        .expect("ip -j link");
        net.host_mac = common::parse_mac(link[0]["address"].as_str().expect("address"));
        net.host_ifindex = link[0]["ifindex"].as_u64().expect("ifindex") as u32;
        net.point_client_at(net.host_mac);
        net.start_servers();
        net
    }

    /// Make the client send frames for the shared addresses to `mac`.
    fn point_client_at(&self, mac: [u8; 6]) {
        let m = mac_text(mac);
        for vip in ["198.51.100.50", "2001:db8::50"] {
            run_ok(&[
                "ip",
                "-n",
                &self.client,
                "neigh",
                "replace",
                vip,
                "lladdr",
                &m,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
    }

    fn start_servers(&mut self) {
        // Both servers tell when they listen: a probe sent before would be
        // refused (it happened: 0 of 82 answered on a busy machine).
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let stop = self.stop.clone();
        let ready_udp = ready_tx.clone();
        self.servers.push(spawn_in_netns(&self.host, move || {
            let s = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, UDP_PORT)).expect("bind udp");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            let _ = ready_udp.send(());
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    let _ = s.send_to(&buf[..n], from);
                }
            }
        }));
        let stop = self.stop.clone();
        self.servers.push(spawn_in_netns(&self.host, move || {
            let l = TcpListener::bind((Ipv6Addr::UNSPECIFIED, TCP_PORT)).expect("bind tcp");
            l.set_nonblocking(true).expect("nonblocking");
            let _ = ready_tx.send(());
            let mut open = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => open.push(c),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(10))
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        }));
        for _ in 0..2 {
            ready
                .recv_timeout(Duration::from_secs(5))
                .expect("a test server did not start listening");
        }
    }

    /// Send one datagram from each source; return the sources answered.
    fn udp_answered(&self, sources: &[IpAddr]) -> Vec<IpAddr> {
        let sources = sources.to_vec();
        in_netns(&self.client, move || {
            let socks: Vec<(IpAddr, UdpSocket)> = sources
                .iter()
                .map(|&src| {
                    let s = UdpSocket::bind((src, 0)).expect("bind source");
                    s.set_nonblocking(true).expect("nonblocking");
                    let vip: IpAddr = if src.is_ipv4() {
                        VIP4.into()
                    } else {
                        VIP6.into()
                    };
                    s.send_to(b"carp", (vip, UDP_PORT)).expect("send");
                    (src, s)
                })
                .collect();
            // The host resolves each client address once before it answers.
            thread::sleep(Duration::from_millis(1500));
            let mut buf = [0u8; 64];
            socks
                .into_iter()
                .filter(|(_, s)| s.recv(&mut buf).is_ok())
                .map(|(src, _)| src)
                .collect()
        })
    }

    /// Open a TCP connection from each source; return the sources that connected.
    fn tcp_connected(&self, sources: &[IpAddr]) -> Vec<IpAddr> {
        let sources = sources.to_vec();
        in_netns(&self.client, move || {
            // Threads created here inherit the namespace.
            thread::scope(|scope| {
                let tries: Vec<_> = sources
                    .iter()
                    .map(|&src| {
                        scope.spawn(move || {
                            let vip: IpAddr = if src.is_ipv4() {
                                VIP4.into()
                            } else {
                                VIP6.into()
                            };
                            let s = Socket::new(
                                Domain::for_address((src, 0).into()),
                                Type::STREAM,
                                None,
                            )
                            .expect("socket");
                            s.bind(&SockAddr::from(SocketAddr::new(src, 0)))
                                .expect("bind");
                            let to = SockAddr::from(SocketAddr::new(vip, TCP_PORT));
                            s.connect_timeout(&to, Duration::from_secs(2))
                                .is_ok()
                                .then_some(src)
                        })
                    })
                    .collect();
                tries
                    .into_iter()
                    .filter_map(|t| t.join().expect("join"))
                    .collect()
            })
        })
    }

    fn host_cmd(&self, argv: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.host];
        full.extend_from_slice(argv);
        run_ok(&full)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
        for ns in [&self.client, &self.host] {
            let _ = common::run_timeout(
                std::process::Command::new("ip").args(["netns", "del", ns]),
                common::CMD_TIMEOUT,
            );
        }
    }
}

type Job = Box<dyn FnOnce(&mut Option<Datapath>) + Send>;

/// A [`Datapath`] owned by a thread inside the host namespace: attaching,
/// the L2 filters and the netlink calls act on the namespace of the caller.
struct HostDp {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl HostDp {
    fn attach(net: &Net, how: Attach) -> HostDp {
        HostDp::attach_as(net, how, None)
    }

    /// Attach on a thread that keeps only `caps` (Linux capabilities are
    /// per thread), or all of root's with `None`.
    fn attach_as(net: &Net, how: Attach, caps: Option<&[capctl::Cap]>) -> HostDp {
        let caps: Option<Vec<capctl::Cap>> = caps.map(<[_]>::to_vec);
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let ifindex = net.host_ifindex;
        let thread = spawn_in_netns(&net.host, move || {
            if let Some(caps) = caps {
                let mut state = capctl::CapState::get_current().expect("capget");
                let set: capctl::CapSet = caps.into_iter().collect();
                state.effective = set;
                state.permitted = set;
                state.inheritable.clear();
                state.set_current().expect("capset");
            }
            let mut dp = Some(Datapath::attach_with(ifindex, "eth0", how));
            match dp.take().expect("just set") {
                Ok(d) => {
                    let mut dp = Some(d);
                    ready_tx.send(Ok(())).expect("ready");
                    for job in rx {
                        job(&mut dp);
                    }
                }
                Err(e) => ready_tx
                    .send(Err(format!("{e}: {:?}", std::error::Error::source(&e))))
                    .expect("ready"),
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("attach answered")
            .unwrap_or_else(|e| panic!("attach: {e}"));
        HostDp {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut Datapath) -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |dp| {
            let _ = tx.send(f(dp.as_mut().expect("attached")));
        });
        self.jobs
            .as_ref()
            .expect("running")
            .send(job)
            .expect("send job");
        rx.recv_timeout(Duration::from_secs(20))
            .expect("job answered")
    }

    fn set(&self, set: BalanceSet) {
        self.with(move |dp| dp.set(1, &set))
            .unwrap_or_else(|e| panic!("set: {e}: {:?}", std::error::Error::source(&e)));
    }

    fn set_mask(&self, mask: u32) {
        self.with(move |dp| dp.set_mask(1, mask)).expect("set_mask");
    }

    fn counters(&self) -> DatapathCounters {
        self.with(|dp| dp.counters()).expect("counters")
    }

    /// Drop the datapath (inside the namespace) and stop the thread.
    fn detach(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(tx) = self.jobs.take() {
            let _ = tx.send(Box::new(|dp: &mut Option<Datapath>| drop(dp.take())));
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HostDp {
    fn drop(&mut self) {
        self.stop();
    }
}

fn assert_split(what: &str, sources: &[IpAddr], got: &[IpAddr], mask: u32) {
    let want: Vec<IpAddr> = sources
        .iter()
        .copied()
        .filter(|&s| served(s, mask))
        .collect();
    assert!(
        !want.is_empty() && want.len() < sources.len(),
        "{what}: the mask must split the sources"
    );
    let wrong: Vec<String> = sources
        .iter()
        .filter(|s| want.contains(s) != got.contains(s))
        .map(|s| {
            format!(
                "{s} ({})",
                if got.contains(s) {
                    "answered"
                } else {
                    "silent"
                }
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{what} mask {mask:#b}: {} of {} sources wrong: {}",
        wrong.len(),
        sources.len(),
        wrong.join(", ")
    );
    eprintln!(
        "{what} mask {mask:#b}: {} of {} answered, as hashed",
        got.len(),
        sources.len()
    );
}

#[test]
#[ignore = "needs root: network namespaces"]
fn ip_hash_splits_udp_by_the_mask_and_follows_mask_changes() {
    let net = Net::new();
    let all: Vec<IpAddr> = v4_sources().into_iter().chain(v6_sources()).collect();
    assert_eq!(
        net.udp_answered(&all).len(),
        all.len(),
        "everything answered before attach"
    );
    let dp = HostDp::attach(&net, Attach::Auto);
    // The client sends to the host's own MAC: pkt_type HOST, so only the
    // hash decides.
    dp.set(BalanceSet::new(
        Balancing::IpUnicast,
        &[1, 2, 3],
        0b101,
        addresses(),
    ));
    for mask in [0b101, 0b010, 0b011] {
        if mask != 0b101 {
            dp.set_mask(mask);
        }
        assert_split(
            "ip-unicast IPv4",
            &v4_sources(),
            &net.udp_answered(&v4_sources()),
            mask,
        );
        assert_split(
            "ip-unicast IPv6",
            &v6_sources(),
            &net.udp_answered(&v6_sources()),
            mask,
        );
    }
    let c = dp.counters();
    assert!(c.accepted > 0 && c.dropped_by_hash > 0, "{c:?}");
    dp.set_mask(0b111);
    assert_eq!(
        net.udp_answered(&all).len(),
        all.len(),
        "mask 0b111 serves everything"
    );
    dp.detach();
    assert_eq!(
        net.udp_answered(&all).len(),
        all.len(),
        "everything answered after detach"
    );
}

#[test]
#[ignore = "needs root: network namespaces"]
fn ip_mode_accepts_the_multicast_carp_mac_as_host_traffic() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let set = BalanceSet::new(Balancing::Ip, &[1, 2, 3], 0b101, addresses());
    let mac = set.node_macs[0];
    dp.set(set);
    let maddr = net.host_cmd(&["ip", "maddr", "show", "dev", "eth0"]);
    assert!(
        maddr.contains("01:00:5e:00:01:01"),
        "joined on the parent:\n{maddr}"
    );
    net.point_client_at(mac);
    // TCP discards anything but PACKET_HOST: connecting proves the fix-up.
    let sources: Vec<IpAddr> = v4_sources().into_iter().chain(v6_sources()).collect();
    let got = net.tcp_connected(&sources);
    assert_split("ip TCP", &sources, &got, 0b101);
    dp.set_mask(0b110);
    assert_split(
        "ip UDP",
        &v4_sources(),
        &net.udp_answered(&v4_sources()),
        0b110,
    );
    dp.detach();
    let maddr = net.host_cmd(&["ip", "maddr", "show", "dev", "eth0"]);
    assert!(
        !maddr.contains("01:00:5e:00:01:01"),
        "left on detach:\n{maddr}"
    );
}

#[test]
#[ignore = "needs root: network namespaces"]
fn ip_stealth_accepts_the_unicast_carp_mac_as_host_traffic() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let set = BalanceSet::new(Balancing::IpStealth, &[1, 2, 3], 0b011, addresses());
    let mac = set.node_macs[0];
    dp.set(set);
    let fdb = net.host_cmd(&["bridge", "fdb", "show", "dev", "eth0"]);
    assert!(
        fdb.contains("00:00:5e:00:01:01 self permanent"),
        "unicast filter:\n{fdb}"
    );
    net.point_client_at(mac);
    let sources: Vec<IpAddr> = v4_sources().into_iter().chain(v6_sources()).collect();
    assert_split(
        "ip-stealth TCP",
        &sources,
        &net.tcp_connected(&sources),
        0b011,
    );
    dp.detach();
    let fdb = net.host_cmd(&["bridge", "fdb", "show", "dev", "eth0"]);
    assert!(!fdb.contains("00:00:5e:00:01:01"), "left on detach:\n{fdb}");
    assert!(
        net.tcp_connected(&sources[..3]).is_empty(),
        "the stealth MAC is not ours without the datapath"
    );
}

#[test]
#[ignore = "needs root: network namespaces"]
fn arp_mode_accepts_frames_to_the_macs_of_the_nodes_it_serves() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let set = BalanceSet::new(Balancing::Arp, &[1, 2, 3], 0b101, addresses());
    let macs = set.node_macs.clone();
    dp.set(set);
    let fdb = net.host_cmd(&["bridge", "fdb", "show", "dev", "eth0"]);
    for m in &macs {
        assert!(
            fdb.contains(&format!("{} self permanent", mac_text(*m))),
            "{fdb}"
        );
    }
    let sources: Vec<IpAddr> = v4_sources()[..10]
        .iter()
        .copied()
        .chain(v6_sources())
        .collect();
    for (node, mac) in macs.iter().enumerate() {
        net.point_client_at(*mac);
        let got = net.tcp_connected(&sources);
        let want = if 0b101 & (1 << node) != 0 {
            sources.len()
        } else {
            0
        };
        assert_eq!(got.len(), want, "node {node} ({}): {got:?}", mac_text(*mac));
    }
    // The hash plays no part: frames to the host's own MAC pass untouched.
    net.point_client_at(net.host_mac);
    assert_eq!(net.udp_answered(&sources).len(), sources.len());
    dp.detach();
    let fdb = net.host_cmd(&["bridge", "fdb", "show", "dev", "eth0"]);
    assert!(!fdb.contains("00:00:5e:00:01"), "left on detach:\n{fdb}");
}

/// Listen on every interface of the host namespace with an ETH_P_ALL
/// packet socket (a ptype_all tap, as carpd's ARP/ND responder is) for
/// `secs`; return (ARP requests for VIP4 seen, NS for VIP6 seen).
fn tap(ns: &str, secs: u64) -> JoinHandle<(usize, usize)> {
    spawn_in_netns(ns, move || {
        let proto = Protocol::from(i32::from((libc::ETH_P_ALL as u16).to_be()));
        let s = Socket::new(Domain::PACKET, Type::RAW, Some(proto)).expect("packet socket");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (mut arp, mut ns_seen) = (0, 0);
        let end = Instant::now() + Duration::from_secs(secs);
        let mut buf = [0u8; 2048];
        while Instant::now() < end {
            let Ok(n) = (&s).read(&mut buf) else { continue };
            let f = &buf[..n];
            if f.len() >= 42
                && f[12..14] == [0x08, 0x06]
                && f[20..22] == [0, 1]
                && f[38..42] == VIP4.octets()
            {
                arp += 1;
            }
            if f.len() >= 78
                && f[12..14] == [0x86, 0xdd]
                && f[20] == 58
                && f[54] == 135
                && f[62..78] == VIP6.octets()
            {
                ns_seen += 1;
            }
        }
        (arp, ns_seen)
    })
}

#[test]
#[ignore = "needs root: network namespaces"]
fn solicitations_for_shared_addresses_are_dropped_but_tapped() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    dp.set(BalanceSet::new(
        Balancing::IpUnicast,
        &[1, 2, 3],
        0b111,
        addresses(),
    ));
    for vip in ["198.51.100.50", "2001:db8::50"] {
        run_ok(&["ip", "-n", &net.client, "neigh", "del", vip, "dev", "eth0"]);
    }
    let probe = [v4_sources()[0], v6_sources()[0]];
    let seen = tap(&net.host, 4);
    // tcpdump's socket is the other kind of tap: bound to eth0 (dev->ptype_all).
    let dump = std::process::Command::new("ip")
        .args([
            "netns", "exec", &net.host, "timeout", "4", "tcpdump", "-i", "eth0", "-nl",
        ])
        .args(["arp or icmp6"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    thread::sleep(Duration::from_millis(1000));
    assert!(
        net.udp_answered(&probe).is_empty(),
        "no neighbour entry, no answer"
    );
    let (arp, ns) = seen.join().expect("tap");
    let neigh = run_ok(&["ip", "-n", &net.client, "neigh", "show", "dev", "eth0"]);
    let host_mac = mac_text(net.host_mac);
    assert!(
        !neigh.contains(&host_mac),
        "the kernel answered a solicitation:\n{neigh}"
    );
    let c = dp.counters();
    eprintln!("attached: tap saw {arp} ARP requests and {ns} NS for the VIPs; {c:?}");
    assert!(
        arp > 0 && ns > 0,
        "ETH_P_ALL tap missed dropped frames: arp {arp} ns {ns}"
    );
    assert!(c.dropped_solicitation >= (arp + ns) as u64, "{c:?}");
    let dump = dump.wait_with_output().expect("tcpdump");
    let dump = String::from_utf8_lossy(&dump.stdout);
    let (arp_bound, ns_bound) = (
        dump.matches("Request who-has 198.51.100.50").count(),
        dump.matches("neighbor solicitation, who has 2001:db8::50")
            .count(),
    );
    eprintln!("tcpdump on eth0 saw {arp_bound} ARP requests and {ns_bound} NS for the VIPs");
    assert!(
        arp_bound > 0 && ns_bound > 0,
        "bound tap missed dropped frames:\n{dump}"
    );
    dp.detach();
    // A resolution begun while attached may still be failing (and drop
    // what it queued), so allow a few tries.
    let answered = (0..4).any(|_| net.udp_answered(&probe).len() == 2);
    assert!(answered, "answered once detached");
    let neigh = run_ok(&["ip", "-n", &net.client, "neigh", "show", "dev", "eth0"]);
    assert_eq!(
        neigh.matches(&host_mac).count(),
        2,
        "both resolved after detach:\n{neigh}"
    );
}

#[test]
#[ignore = "needs root: network namespaces"]
fn attaches_with_cap_bpf_and_cap_net_admin_only() {
    // What a daemon keeps after dropping root: no CAP_SYS_ADMIN, no
    // CAP_PERFMON, so the verifier runs its unprivileged pointer rules.
    let net = Net::new();
    let caps = [capctl::Cap::BPF, capctl::Cap::NET_ADMIN];
    for how in [Attach::Auto, Attach::Netlink] {
        let dp = HostDp::attach_as(&net, how, Some(&caps));
        dp.set(BalanceSet::new(
            Balancing::IpStealth,
            &[1, 2, 3],
            0b100,
            addresses(),
        ));
        dp.set_mask(0b110);
        net.point_client_at(net.host_mac);
        assert_split(
            "CAP_BPF",
            &v4_sources(),
            &net.udp_answered(&v4_sources()),
            0b110,
        );
        assert!(dp.counters().dropped_by_hash > 0);
        dp.detach();
    }
    let fdb = net.host_cmd(&["bridge", "fdb", "show", "dev", "eth0"]);
    assert!(!fdb.contains("00:00:5e:00:01:01"), "{fdb}");
    let qdisc = net.host_cmd(&["tc", "qdisc", "show", "dev", "eth0"]);
    assert!(!qdisc.contains("clsact"), "{qdisc}");
}

#[test]
#[ignore = "needs root: network namespaces"]
fn netlink_attach_creates_and_removes_the_clsact_qdisc() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Netlink);
    let qdisc = net.host_cmd(&["tc", "qdisc", "show", "dev", "eth0"]);
    assert!(qdisc.contains("clsact"), "{qdisc}");
    dp.set(BalanceSet::new(
        Balancing::IpUnicast,
        &[1, 2, 3],
        0b001,
        addresses(),
    ));
    assert_split(
        "netlink IPv4",
        &v4_sources(),
        &net.udp_answered(&v4_sources()),
        0b001,
    );
    dp.detach();
    let qdisc = net.host_cmd(&["tc", "qdisc", "show", "dev", "eth0"]);
    assert!(!qdisc.contains("clsact"), "left on detach: {qdisc}");
    assert_eq!(net.udp_answered(&v4_sources()).len(), 70);
}

// ===== BPF_PROG_TEST_RUN: frames the namespaces do not easily produce =====

fn eth(proto: u16) -> Vec<u8> {
    // To 00:00:00:00:00:00, the test-run device's (lo) own MAC: PACKET_HOST.
    let mut f = vec![0; 12];
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 9]);
    f.extend_from_slice(&proto.to_be_bytes());
    f
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let len = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(payload);
    h
}

fn frame4(src: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(0x0800);
    f.extend(ipv4(src, VIP4, proto, payload));
    f
}

fn frame6(src: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(0x86dd);
    f.extend(ipv6(src, VIP6, next, payload));
    f
}

/// Run the balancing program once on `frame`.
fn verdict(dp: &HostDp, frame: Vec<u8>) -> u32 {
    dp.with(move |d| d.test_run(TestProgram::Balance, &frame, 1))
        .expect("test run")
        .verdict
}

fn expect(src: IpAddr, mask: u32) -> u32 {
    if served(src, mask) {
        TC_ACT_OK
    } else {
        TC_ACT_SHOT
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn icmp_errors_hash_the_quoted_packet_and_echo_hashes_like_udp() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let mask = 0b001;
    dp.set(BalanceSet::new(
        Balancing::IpUnicast,
        &[1, 2, 3],
        mask,
        addresses(),
    ));
    let router4 = Ipv4Addr::new(203, 0, 113, 1);
    let router6: Ipv6Addr = "2001:db8:ffff::1".parse().expect("v6");
    let mut checked = 0;
    for peer in v4_sources() {
        let IpAddr::V4(peer4) = peer else {
            unreachable!()
        };
        // Our packet to `peer`, quoted by a router's "port unreachable".
        let inner = ipv4(VIP4, peer4, 17, &[0; 8]);
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend(&inner);
        let got = verdict(&dp, frame4(router4, 1, &icmp));
        assert_eq!(got, expect(peer, mask), "ICMP error quoting {peer}");
        if served(peer, mask) != served(IpAddr::V4(router4), mask) {
            checked += 1;
        }
        // Echo from the peer: hashed as any packet from it.
        let echo = verdict(&dp, frame4(peer4, 1, &[8, 0, 0, 0, 0, 1, 0, 1]));
        assert_eq!(echo, expect(peer, mask), "echo from {peer}");
    }
    for peer in v6_sources() {
        let IpAddr::V6(peer6) = peer else {
            unreachable!()
        };
        let inner = ipv6(VIP6, peer6, 17, &[0; 8]);
        let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
        icmp.extend(&inner);
        assert_eq!(
            verdict(&dp, frame6(router6, 58, &icmp)),
            expect(peer, mask),
            "{peer}"
        );
        if served(peer, mask) != served(IpAddr::V6(router6), mask) {
            checked += 1;
        }
        let echo = verdict(&dp, frame6(peer6, 58, &[128, 0, 0, 0, 0, 1, 0, 1]));
        assert_eq!(echo, expect(peer, mask), "echo from {peer}");
        // A Neighbour Advertisement is never hashed.
        let mut na = vec![136, 0, 0, 0, 0x60, 0, 0, 0];
        na.extend_from_slice(&peer6.octets());
        assert_eq!(
            verdict(&dp, frame6(peer6, 58, &na)),
            TC_ACT_OK,
            "NA from {peer}"
        );
    }
    assert!(
        checked > 10,
        "the outer and inner hashes must differ for some peers"
    );
    // A Neighbour Solicitation for the VIP is dropped, for another address passed.
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&VIP6.octets());
    let peer: Ipv6Addr = "2001:db8::100".parse().expect("v6");
    assert_eq!(verdict(&dp, frame6(peer, 58, &ns)), TC_ACT_SHOT);
    let mut other = eth(0x86dd);
    let mut ns_other = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns_other.extend_from_slice(&peer.octets());
    other.extend(ipv6(peer, peer, 58, &ns_other));
    assert_eq!(verdict(&dp, other), TC_ACT_OK);
}

/// Per-packet cost (BPF_PROG_TEST_RUN, 1M runs each): the balancing program
/// on an accepted and a dropped packet, IPv4 and IPv6, against a program
/// that only returns TC_ACT_OK. Prints a table for docs/benchmarks.md.
#[test]
#[ignore = "needs root: network namespaces"]
fn bench_datapath_per_packet() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let mask = 0b001;
    dp.set(BalanceSet::new(
        Balancing::IpUnicast,
        &[1, 2, 3],
        mask,
        addresses(),
    ));
    let pick = |srcs: Vec<IpAddr>, want: bool| {
        srcs.into_iter()
            .find(|s| served(*s, mask) == want)
            .expect("a source of each kind")
    };
    let udp = [0u8; 8 + 64];
    let mut cases: Vec<(String, TestProgram, Vec<u8>, u32)> = Vec::new();
    for (family, srcs) in [("IPv4", v4_sources()), ("IPv6", v6_sources())] {
        for (what, want) in [("accepted", true), ("dropped", false)] {
            let frame = match pick(srcs.clone(), want) {
                IpAddr::V4(s) => frame4(s, 17, &udp),
                IpAddr::V6(s) => frame6(s, 17, &udp),
            };
            let verdict = if want { TC_ACT_OK } else { TC_ACT_SHOT };
            cases.push((
                format!("{family} UDP {what}"),
                TestProgram::Balance,
                frame,
                verdict,
            ));
        }
    }
    let other = frame4(Ipv4Addr::new(198, 51, 100, 100), 17, &udp);
    let mut other_dst = other.clone();
    other_dst[14 + 16..14 + 20].copy_from_slice(&[198, 51, 100, 51]);
    cases.push((
        "IPv4 UDP to another address (passed)".into(),
        TestProgram::Balance,
        other_dst,
        TC_ACT_OK,
    ));
    cases.push((
        "baseline: a program returning TC_ACT_OK".into(),
        TestProgram::Baseline,
        other,
        TC_ACT_OK,
    ));
    println!("| case | ns/packet (median of 5 x 1M runs) |");
    println!("| --- | --- |");
    for (name, prog, frame, want) in cases {
        let mut runs: Vec<u32> = (0..5)
            .map(|_| {
                let f = frame.clone();
                let r = dp
                    .with(move |d| d.test_run(prog, &f, 1_000_000))
                    .expect("test run");
                assert_eq!(r.verdict, want, "{name}");
                r.ns_per_run
            })
            .collect();
        runs.sort();
        println!("| {name} | {} |", runs[2]);
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn carp_interfaces_sharing_a_parent_are_judged_apart() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let other = Ipv4Addr::new(198, 51, 100, 51);
    dp.set(BalanceSet::new(
        Balancing::IpUnicast,
        &[1, 2, 3],
        0b001,
        addresses(),
    ));
    let second = BalanceSet::new(Balancing::IpStealth, &[4, 5, 6], 0b110, vec![other.into()]);
    dp.with(move |d| d.set(2, &second))
        .expect("second carp interface");
    let to = |dst: Ipv4Addr, src: IpAddr| {
        let IpAddr::V4(s) = src else { unreachable!() };
        let mut f = eth(0x0800);
        f.extend(ipv4(s, dst, 17, &[0; 8]));
        f
    };
    let hashed = |src: IpAddr, dst: Ipv4Addr, mask: u32| {
        let slot = ip_slot(src, dst.into(), NODES).expect("slot");
        if mask & (1 << slot) != 0 {
            TC_ACT_OK
        } else {
            TC_ACT_SHOT
        }
    };
    for src in v4_sources() {
        assert_eq!(
            verdict(&dp, to(VIP4, src)),
            hashed(src, VIP4, 0b001),
            "{src} to VIP4"
        );
        assert_eq!(
            verdict(&dp, to(other, src)),
            hashed(src, other, 0b110),
            "{src} to .51"
        );
    }
    // An address of another carp interface is refused, and changes nothing.
    let clash = BalanceSet::new(Balancing::Ip, &[7, 8], 0b11, vec![other.into()]);
    assert!(dp.with(move |d| d.set(3, &clash)).is_err());
    dp.with(|d| d.set_mask(2, 0b001)).expect("mask");
    dp.with(|d| d.remove(1)).expect("remove");
    for src in v4_sources() {
        assert_eq!(
            verdict(&dp, to(VIP4, src)),
            TC_ACT_OK,
            "{src}: VIP4 no longer shared"
        );
        assert_eq!(
            verdict(&dp, to(other, src)),
            hashed(src, other, 0b001),
            "{src} to .51"
        );
    }
    let fdb = net.host_cmd(&["bridge", "fdb", "show", "dev", "eth0"]);
    assert!(fdb.contains("00:00:5e:00:01:04 self permanent"), "{fdb}");
    assert!(!fdb.contains("00:00:5e:00:01:01"), "{fdb}");
}

// ===== egress: the kernel's own solicitations from a shared address =====

/// Undo the fixture's static entries for the shared addresses at the
/// client (or make them `stale` entries pointing at `mac`, which an ARP
/// request or NS from the address would re-point), and give the host its
/// own address 198.51.100.10, so the kernel's choice of the VIP as sender
/// is the one a balancing host makes.
fn unpin_client(net: &Net, stale_at: Option<[u8; 6]>) {
    for vip in ["198.51.100.50", "2001:db8::50"] {
        run_ok(&["ip", "-n", &net.client, "neigh", "del", vip, "dev", "eth0"]);
        if let Some(mac) = stale_at {
            let m = mac_text(mac);
            run_ok(&[
                "ip",
                "-n",
                &net.client,
                "neigh",
                "add",
                vip,
                "lladdr",
                &m,
                "dev",
                "eth0",
                "nud",
                "stale",
            ]);
        }
    }
    net.host_cmd(&["ip", "addr", "add", "198.51.100.10/24", "dev", "eth0"]);
}

/// Ping the client's first address of each family from the host with the
/// shared address as source (the host has no entry for the client yet, so
/// its kernel solicits with the shared address); true for each answered.
fn ping_from_vips(net: &Net) -> [bool; 2] {
    [
        ("198.51.100.50", "198.51.100.100", "-4"),
        ("2001:db8::50", "2001:db8::100", "-6"),
    ]
    .map(|(from, to, family)| {
        let out = common::run_timeout(
            std::process::Command::new("ip").args([
                "netns", "exec", &net.host, "ping", family, "-n", "-c", "3", "-i", "0.3", "-w",
                "4", "-I", from, to,
            ]),
            Duration::from_secs(8),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("ping {from} -> {to}: {}", text.lines().last().unwrap_or(""));
        out.status.success()
    })
}

/// The client's neighbour entry for `vip`: (lladdr, state), if any.
fn client_entry(net: &Net, vip: &str) -> Option<(String, String)> {
    let json = run_ok(&[
        "ip",
        "-j",
        "-n",
        &net.client,
        "neigh",
        "show",
        "to",
        vip,
        "dev",
        "eth0",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("ip -j neigh");
    let e = v.as_array()?.first()?;
    Some((
        e["lladdr"].as_str().unwrap_or("").to_owned(),
        e["state"].to_string(),
    ))
}

/// Capture the client's eth0 for `secs` (`tcpdump -e`, ARP and ICMPv6).
fn client_dump(net: &Net, secs: u64) -> std::process::Child {
    let secs = secs.to_string();
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.client,
            "timeout",
            &secs,
            "tcpdump",
            "-i",
            "eth0",
            "-enl",
            "arp or icmp6",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump (apt-get install tcpdump)");
    thread::sleep(Duration::from_millis(800));
    child
}

/// Input: modes ip (TCX) and ip-stealth (netlink egress filter), nodes 1-3
/// all MASTER here; the client
/// has no entry for the shared addresses; the host pings it from them.
/// Output: the client's entries for the shared addresses (made from the
/// host's ARP request and NS) name the leader MAC, not the host's real MAC;
/// the pings are answered through the leader MAC; egress_rewritten counts.
#[test]
#[ignore = "needs root: network namespaces"]
fn ip_modes_solicit_from_shared_addresses_with_the_leader_mac() {
    for (mode, how) in [
        (Balancing::Ip, Attach::Auto),
        (Balancing::IpStealth, Attach::Netlink),
    ] {
        let net = Net::new();
        let dp = HostDp::attach(&net, how);
        let set = BalanceSet::new(mode, &[1, 2, 3], 0b111, addresses());
        let leader = mac_text(set.node_macs[0]);
        dp.set(set);
        unpin_client(&net, None);
        let dump = client_dump(&net, 5);
        let answered = ping_from_vips(&net);
        let dump = dump.wait_with_output().expect("tcpdump");
        let dump = String::from_utf8_lossy(&dump.stdout);
        let host_mac = mac_text(net.host_mac);
        for vip in ["198.51.100.50", "2001:db8::50"] {
            let entry = client_entry(&net, vip);
            eprintln!("{mode:?}: client entry for {vip}: {entry:?}");
            if let Some((lladdr, _)) = &entry {
                assert_eq!(
                    lladdr, &leader,
                    "{mode:?}: client bound {vip} to {lladdr} (host {host_mac}):\n{dump}"
                );
            }
        }
        assert_eq!(answered, [true, true], "{mode:?}: pings from the VIPs");
        let c = dp.counters();
        eprintln!("{mode:?}: {c:?}");
        assert!(c.egress_rewritten >= 2, "{mode:?}: {c:?}");
        // The Ethernet source stays the real MAC; only the ARP sender changes.
        assert!(
            dump.contains(&format!("{host_mac} > ff:ff:ff:ff:ff:ff, ethertype ARP")),
            "{mode:?}: no request from the host's MAC:\n{dump}"
        );
    }
}

/// Input: mode arp, nodes 1-3, node 1 (index 0) MASTER here; the client's
/// entries for the shared addresses are stale ones at node 1's MAC (as
/// carpd's answer left them); the host pings it from them.
/// Output: the ARP request on the wire is a probe (tell 0.0.0.0) and the
/// NS carries node 1's MAC, so the client's entries still name node 1's
/// MAC; the pings are answered.
#[test]
#[ignore = "needs root: network namespaces"]
fn arp_mode_probes_and_solicits_with_the_lowest_master_node_mac() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let set = BalanceSet::new(Balancing::Arp, &[1, 2, 3], 0b001, addresses());
    let node = set.node_macs[0];
    dp.set(set);
    unpin_client(&net, Some(node));
    let dump = client_dump(&net, 5);
    let answered = ping_from_vips(&net);
    let dump = dump.wait_with_output().expect("tcpdump");
    let dump = String::from_utf8_lossy(&dump.stdout);
    eprintln!("client saw:\n{dump}");
    assert!(
        dump.contains("Request who-has 198.51.100.100 tell 0.0.0.0"),
        "no probe:\n{dump}"
    );
    assert!(
        !dump.contains("tell 198.51.100.50"),
        "request from the VIP:\n{dump}"
    );
    for vip in ["198.51.100.50", "2001:db8::50"] {
        let entry = client_entry(&net, vip);
        eprintln!("arp: client entry for {vip}: {entry:?}");
        let (lladdr, _) = entry.expect("entry kept");
        assert_eq!(lladdr, mac_text(node), "{vip} re-pointed:\n{dump}");
    }
    assert_eq!(answered, [true, true], "pings from the VIPs");
    let c = dp.counters();
    eprintln!("arp: {c:?}");
    assert!(c.egress_rewritten >= 2, "{c:?}");
}

const REAL: [u8; 6] = [2, 0, 0, 0, 0, 9];
const PEER4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 100);
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100);

/// An ARP packet `op` from `sha`/`spa` to `tpa`, sent from the real MAC.
fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&REAL);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f
}

/// The ICMPv6 checksum of `msg` (checksum field included) from `src` to `dst`;
/// 0 when the field is right.
fn icmp6_sum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An NS (135, option 1) or NA (136, option 2) from the shared address
/// advertising `lladdr`, with a correct checksum.
fn nd(kind: u8, lladdr: [u8; 6]) -> Vec<u8> {
    let mut msg = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&PEER6.octets());
    msg.extend_from_slice(&[if kind == 135 { 1 } else { 2 }, 1]);
    msg.extend_from_slice(&lladdr);
    let c = icmp6_sum(VIP6, PEER6, &msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0x33, 0x33, 0xff, 0, 1, 0];
    f.extend_from_slice(&REAL);
    f.extend_from_slice(&[0x86, 0xdd]);
    let mut ip = ipv6(VIP6, PEER6, 58, &msg);
    ip[7] = 255;
    f.extend(ip);
    f
}

/// Run the egress program once; return the frame it sends.
fn egress(dp: &HostDp, frame: Vec<u8>) -> Vec<u8> {
    let run = dp
        .with(move |d| d.test_run(TestProgram::Egress, &frame, 1))
        .expect("test run");
    assert_eq!(run.verdict, TC_ACT_OK, "egress never drops");
    run.frame
}

/// Check an ND frame's link-layer option is `mac` and its checksum right.
fn assert_nd(frame: &[u8], mac: [u8; 6], what: &str) {
    assert_eq!(frame[80..86], mac, "{what}: link-layer option");
    assert_eq!(icmp6_sum(VIP6, PEER6, &frame[54..]), 0, "{what}: checksum");
}

/// Input: the egress program (BPF_PROG_TEST_RUN) in mode ip, then arp with
/// node index 1 MASTER, on ARP packets and NS / NA from the shared
/// addresses as the kernel and carpd send them.
/// Output: ip: requests and NS get the leader MAC (checksum right), carpd's
/// answers with the leader MAC are unchanged; arp: a request becomes a
/// probe, an NS gets node 2's MAC, a gratuitous request, replies and NA
/// (carpd's) are unchanged, and with mask 0 an NS is left alone; other
/// senders are never touched; egress_rewritten counts the rewrites.
#[test]
#[ignore = "needs root: network namespaces"]
fn egress_rewrites_the_kernels_solicitations_and_leaves_carpds_answers() {
    let net = Net::new();
    let dp = HostDp::attach(&net, Attach::Auto);
    let set = BalanceSet::new(Balancing::Ip, &[1, 2, 3], 0b111, addresses());
    let leader = set.node_macs[0];
    dp.set(set);
    let unchanged = |f: Vec<u8>, what: &str| assert_eq!(egress(&dp, f.clone()), f, "{what}");

    let out = egress(&dp, arp(1, REAL, VIP4, PEER4));
    assert_eq!(out[22..28], leader, "ip: request sender MAC");
    assert_eq!(out[6..12], REAL, "ip: Ethernet source kept");
    assert_eq!(out[28..32], VIP4.octets(), "ip: sender IP kept");
    let out = egress(&dp, arp(2, REAL, VIP4, PEER4));
    assert_eq!(out[22..28], leader, "ip: reply sender MAC");
    unchanged(arp(2, leader, VIP4, PEER4), "ip: carpd's reply");
    unchanged(
        arp(1, REAL, Ipv4Addr::new(198, 51, 100, 10), PEER4),
        "own address",
    );
    assert_nd(&egress(&dp, nd(135, REAL)), leader, "ip: NS");
    assert_nd(&egress(&dp, nd(136, REAL)), leader, "ip: NA");
    unchanged(nd(136, leader), "ip: carpd's NA");
    assert_eq!(dp.counters().egress_rewritten, 4);

    let set = BalanceSet::new(Balancing::Arp, &[1, 2, 3], 0b010, addresses());
    let node2 = set.node_macs[1];
    dp.set(set);
    let out = egress(&dp, arp(1, REAL, VIP4, PEER4));
    assert_eq!(out[28..32], [0; 4], "arp: request is a probe");
    assert_eq!(out[22..28], REAL, "arp: probe sender MAC kept");
    unchanged(arp(1, node2, VIP4, VIP4), "arp: gratuitous request");
    unchanged(arp(2, node2, VIP4, PEER4), "arp: carpd's reply");
    assert_nd(&egress(&dp, nd(135, REAL)), node2, "arp: NS");
    unchanged(nd(136, node2), "arp: carpd's NA");
    dp.set_mask(0);
    unchanged(nd(135, REAL), "arp: NS with no node MASTER");
    assert_eq!(dp.counters().egress_rewritten, 6);
}
