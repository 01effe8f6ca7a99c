//! The load-balancing tests' traffic (issue 12, `netns_balance.rs`): a
//! name service on the shared addresses of every host, clients with many
//! source addresses, one-shot rounds that keep *every* reply (so a request
//! answered twice is seen), and a continuous prober.
//!
//! Sockets are made inside their namespace (a socket stays in the namespace
//! it was created in) and then served or used from ordinary threads. The
//! servers bind the shared addresses with `IP_FREEBIND`, so they listen
//! whether or not carpd has configured the address yet (on a BACKUP of
//! `balancing none` it never does).

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use super::{in_netns, spawn_in_netns};

/// The name service's UDP port: a datagram is answered with
/// `<host name> <datagram>`.
pub const UDP_PORT: u16 = 4001;
/// The name service's TCP port: a connection gets the host name, then EOF.
pub const TCP_PORT: u16 = 4002;

/// How long a server waits in one receive or accept before looking at its
/// stop flag.
const SERVER_TICK: Duration = Duration::from_millis(100);
/// How long a TCP client waits to connect and for the name.
const TCP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the prober keeps listening after it stopped sending.
const DRAIN: Duration = Duration::from_millis(300);

/// A socket bound to `addr` even if no interface holds it (yet).
fn bound(addr: SocketAddr, ty: Type) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, None)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_v6(true)?;
    } else {
        s.set_freebind_v4(true)?;
    }
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

/// The UDP and TCP name service of every host; stopped, and its sockets
/// closed, on drop (before the lab deletes the namespaces).
pub struct NameServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl NameServers {
    /// Serve `name` on `vips` in each `(namespace, name)` of `hosts`.
    pub fn start(hosts: &[(String, String)], vips: &[IpAddr]) -> NameServers {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (ns, name) in hosts {
            let vips = vips.to_vec();
            let (udps, tcps) = in_netns(ns, move || {
                let mut udps = Vec::new();
                let mut tcps = Vec::new();
                for vip in vips {
                    let u = bound(SocketAddr::new(vip, UDP_PORT), Type::DGRAM)
                        .unwrap_or_else(|e| panic!("bind udp {vip}: {e}"));
                    u.set_read_timeout(Some(SERVER_TICK)).expect("timeout");
                    udps.push(UdpSocket::from(u));
                    let t = bound(SocketAddr::new(vip, TCP_PORT), Type::STREAM)
                        .unwrap_or_else(|e| panic!("bind tcp {vip}: {e}"));
                    t.listen(128).expect("listen");
                    // Linux applies SO_RCVTIMEO to accept(2).
                    t.set_read_timeout(Some(SERVER_TICK)).expect("timeout");
                    tcps.push(TcpListener::from(t));
                }
                (udps, tcps)
            });
            for u in udps {
                let (stop, name) = (stop.clone(), name.clone());
                threads.push(thread::spawn(move || serve_udp(&u, &name, &stop)));
            }
            for t in tcps {
                let (stop, name) = (stop.clone(), name.clone());
                threads.push(thread::spawn(move || serve_tcp(&t, &name, &stop)));
            }
        }
        NameServers { stop, threads }
    }
}

fn serve_udp(sock: &UdpSocket, name: &str, stop: &AtomicBool) {
    let mut buf = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut reply = format!("{name} ").into_bytes();
            reply.extend_from_slice(&buf[..n]);
            let _ = sock.send_to(&reply, from);
        }
    }
}

fn serve_tcp(listener: &TcpListener, name: &str, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if let Ok((mut conn, _)) = listener.accept() {
            let _ = conn.set_write_timeout(Some(TCP_TIMEOUT));
            let _ = conn.write_all(name.as_bytes());
        }
    }
}

impl Drop for NameServers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One client namespace: its MAC and the source addresses it sends from.
#[derive(Debug, Clone)]
pub struct Client {
    /// Namespace.
    pub ns: String,
    /// MAC of its `eth0`.
    pub mac: [u8; 6],
    /// Every source address it probes from.
    pub sources: Vec<IpAddr>,
}

/// A UDP socket per source of `client`, bound to `(source, 0)`.
fn client_sockets(client: &Client) -> Vec<(IpAddr, UdpSocket)> {
    let sources = client.sources.clone();
    in_netns(&client.ns, move || {
        sources
            .into_iter()
            .map(|src| {
                let s = bound(SocketAddr::new(src, 0), Type::DGRAM)
                    .unwrap_or_else(|e| panic!("bind client {src}: {e}"));
                (src, UdpSocket::from(s))
            })
            .collect()
    })
}

/// The service address of `src`'s family.
fn service(vips: (IpAddr, IpAddr), src: IpAddr, port: u16) -> SocketAddr {
    let vip = if src.is_ipv4() { vips.0 } else { vips.1 };
    SocketAddr::new(vip, port)
}

/// Split a reply `<host> <payload>` from `from`; the host is marked with
/// the address when the reply did not come from the service address.
fn parse_reply(buf: &[u8], from: SocketAddr, want_from: SocketAddr) -> (String, String) {
    let text = String::from_utf8_lossy(buf);
    let (host, payload) = text.split_once(' ').unwrap_or((&text, ""));
    let host = if from == want_from {
        host.to_owned()
    } else {
        format!("{host}(from {from})")
    };
    (host, payload.to_owned())
}

/// Send one UDP request from every source of every client to the VIP of its
/// family (`vips` = (IPv4, IPv6)), then collect replies for `window`.
/// Returns, per source, the name of every host that answered (in arrival
/// order, duplicates kept).
pub fn udp_round(
    clients: &[Client],
    vips: (IpAddr, IpAddr),
    label: &str,
    window: Duration,
) -> BTreeMap<IpAddr, Vec<String>> {
    let socks: Vec<(IpAddr, UdpSocket)> = clients.iter().flat_map(client_sockets).collect();
    let payload = format!("round {label}");
    let mut out: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    for (src, s) in &socks {
        out.insert(*src, Vec::new());
        s.set_nonblocking(true).expect("nonblocking");
        s.send_to(payload.as_bytes(), service(vips, *src, UDP_PORT))
            .unwrap_or_else(|e| panic!("send from {src}: {e}"));
    }
    let deadline = Instant::now() + window;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        for (src, s) in &socks {
            loop {
                match s.recv_from(&mut buf) {
                    Ok((n, from)) => {
                        let want = service(vips, *src, UDP_PORT);
                        let (host, p) = parse_reply(&buf[..n], from, want);
                        if p == payload {
                            out.entry(*src).or_default().push(host);
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    out
}

/// Connect over TCP from every source of every client (in parallel) and
/// read what the service sends until EOF. Returns, per source, the text
/// read or why nothing was.
pub fn tcp_round(
    clients: &[Client],
    vips: (IpAddr, IpAddr),
) -> BTreeMap<IpAddr, Result<String, String>> {
    let mut handles = Vec::new();
    for c in clients {
        for &src in &c.sources {
            let to = service(vips, src, TCP_PORT);
            handles.push((src, spawn_in_netns(&c.ns, move || tcp_name(src, to))));
        }
    }
    handles
        .into_iter()
        .map(|(src, h)| (src, h.join().unwrap_or_else(|_| Err("panicked".into()))))
        .collect()
}

fn tcp_name(src: IpAddr, to: SocketAddr) -> Result<String, String> {
    let s = bound(SocketAddr::new(src, 0), Type::STREAM).map_err(|e| format!("bind: {e}"))?;
    s.connect_timeout(&to.into(), TCP_TIMEOUT)
        .map_err(|e| format!("connect: {e}"))?;
    let mut conn = TcpStream::from(s);
    conn.set_read_timeout(Some(TCP_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    conn.read_to_string(&mut text)
        .map_err(|e| format!("read after {text:?}: {e}"))?;
    Ok(text)
}

/// What one source's prober saw; times are since the prober started.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Source address.
    pub src: IpAddr,
    /// Send time of each probe, indexed by sequence number.
    pub sent: Vec<Duration>,
    /// Every reply: (sequence number, host, arrival time).
    pub replies: Vec<(usize, String, Duration)>,
}

impl Trace {
    /// The hosts that answered each probe, indexed by sequence number.
    pub fn answers(&self) -> Vec<Vec<&str>> {
        let mut a = vec![Vec::new(); self.sent.len()];
        for (seq, host, _) in &self.replies {
            if let Some(v) = a.get_mut(*seq) {
                v.push(host.as_str());
            }
        }
        a
    }
}

/// One UDP probe every `every` from every source of the clients, each
/// reply recorded with its sequence number, until [`Prober::finish`].
pub struct Prober {
    start: Instant,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Trace>>,
}

impl Prober {
    /// Start probing the VIP of each source's family.
    pub fn start(clients: &[Client], vips: (IpAddr, IpAddr), every: Duration) -> Prober {
        let socks: Vec<(IpAddr, UdpSocket)> = clients.iter().flat_map(client_sockets).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let threads = socks
            .into_iter()
            .map(|(src, sock)| {
                let stop = stop.clone();
                let to = service(vips, src, UDP_PORT);
                thread::spawn(move || probe(src, &sock, to, every, start, &stop))
            })
            .collect();
        Prober {
            start,
            stop,
            threads,
        }
    }

    /// Time since the prober started (the clock of [`Trace`]).
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// Stop sending, wait for late replies and return every source's trace.
    pub fn finish(mut self) -> Vec<Trace> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().expect("prober thread"))
            .collect()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn probe(
    src: IpAddr,
    sock: &UdpSocket,
    to: SocketAddr,
    every: Duration,
    start: Instant,
    stop: &AtomicBool,
) -> Trace {
    let mut trace = Trace {
        src,
        sent: Vec::new(),
        replies: Vec::new(),
    };
    let mut buf = [0u8; 512];
    let mut next = Instant::now();
    let mut until = None;
    loop {
        let now = Instant::now();
        if until.is_none() && stop.load(Ordering::Relaxed) {
            until = Some(now + DRAIN);
        }
        match until {
            Some(u) if now >= u => return trace,
            None if now >= next => {
                let seq = trace.sent.len();
                let _ = sock.send_to(format!("probe {seq}").as_bytes(), to);
                trace.sent.push(now - start);
                next += every;
                continue;
            }
            _ => {}
        }
        let wake = until.unwrap_or(next).min(now + SERVER_TICK);
        let _ = sock.set_read_timeout(Some(wake.saturating_duration_since(now)));
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            let at = start.elapsed();
            let (host, payload) = parse_reply(&buf[..n], from, to);
            if let Some(seq) = payload
                .strip_prefix("probe ")
                .and_then(|s| s.parse::<usize>().ok())
            {
                trace.replies.push((seq, host, at));
            }
        }
    }
}
