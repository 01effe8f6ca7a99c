//! Raw protocol-112 sockets, one per (carpdev, address family).
//!
//! A [`CarpSocket`] both sends and receives advertisements on one interface.
//! It is bound to the device, joined to the CARP group on that ifindex only,
//! ignores groups joined by other sockets (`*_MULTICAST_ALL` off) and does not
//! loop its own multicast back. TTL / hop limit 255 is set for multicast and
//! unicast, because both defaults are lower and receivers drop anything else.
//!
//! The CARP checksum covers only the 36-byte CARP header, so `IPV6_CHECKSUM`
//! is left off: the core computes and verifies it.
//!
//! Receive buffers carry the CARP payload only. IPv4 raw sockets deliver the
//! IP header, which is parsed here (variable IHL, never assumed to be 20);
//! IPv6 raw sockets never do, so hop limit and destination come from cmsgs.
//!
//! Each socket carries a classic BPF filter ([`super::bpf`]) for the vhids
//! configured on its carpdev, a large receive buffer, and is read in batches
//! (`recvmmsg`), so that a junk flood costs the kernel, not carpd.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, RecvMsg, SockaddrIn, SockaddrIn6,
    recvmmsg, recvmsg, sendmsg, setsockopt, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::bpf::{self, Accept};
use super::{OsError, sys};

/// IP protocol number of CARP (shared with VRRP).
pub const IPPROTO_CARP: i32 = 112;
/// The IPv4 CARP multicast group, 224.0.0.18.
pub const CARP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 CARP multicast group, ff02::12.
pub const CARP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit of every advertisement (`CARP_DFLTTL`).
pub const CARP_TTL: u8 = 255;

/// `IPTOS_LOWDELAY`, the TOS OpenBSD puts on IPv4 adverts.
const IPTOS_LOWDELAY: u32 = 0x10;
/// Large enough for any sane advert plus an IPv4 header with options.
const RECV_V4_BUF: usize = 2048;
/// Each datagram's slot in a batch: payloads longer than this are truncated,
/// as by the single-datagram [`CarpSocket::recv`] with a buffer this size.
pub const RECV_SLOT: usize = 2048;
/// Datagrams read by one `recvmmsg`.
pub const RECV_BATCH: usize = 32;
/// The receive buffer asked for (the kernel doubles it for bookkeeping): a
/// burst of adverts queues while the loop is busy instead of being dropped.
const RCVBUF: usize = 1 << 20;

/// Metadata of one received advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Source address from the IP header.
    pub src: IpAddr,
    /// Destination address (the group or one of our unicast addresses).
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6); 0 when the kernel did not report it.
    pub ttl: u8,
    /// Interface the datagram arrived on; 0 when the kernel did not report it.
    pub ifindex: u32,
    /// Length of the CARP payload written to the start of the buffer.
    ///
    /// 0 for a malformed IPv4 header. Never larger than the buffer: a longer
    /// datagram is truncated to the buffer size.
    pub len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// A raw protocol-112 socket bound to one interface and one address family.
#[derive(Debug)]
pub struct CarpSocket {
    fd: AsyncFd<Socket>,
    family: Family,
    ifname: String,
    ifindex: u32,
}

impl CarpSocket {
    /// Open the IPv4 socket for interface `ifname` / `ifindex`.
    ///
    /// Joins 224.0.0.18 on `ifindex`, sets TTL 255 (multicast and unicast),
    /// TOS `IPTOS_LOWDELAY`, loop off, `IP_MULTICAST_ALL` off and enables
    /// `IP_PKTINFO` / `IP_RECVTTL`. Must be called inside a tokio runtime with
    /// I/O enabled; needs `CAP_NET_RAW`.
    pub fn open_v4(ifname: &str, ifindex: u32) -> Result<CarpSocket, OsError> {
        let err = |op| move |e| OsError::socket(op, ifname, e);
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(IPPROTO_CARP)))
            .map_err(err("open raw ipv4 socket"))?;
        sock.set_nonblocking(true).map_err(err("set nonblocking"))?;
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(err("bind to device"))?;
        sock.join_multicast_v4_n(&CARP_GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))
            .map_err(err("join 224.0.0.18"))?;
        sock.set_multicast_all_v4(false)
            .map_err(err("set IP_MULTICAST_ALL"))?;
        sock.set_multicast_loop_v4(false)
            .map_err(err("set IP_MULTICAST_LOOP"))?;
        sock.set_multicast_ttl_v4(CARP_TTL.into())
            .map_err(err("set IP_MULTICAST_TTL"))?;
        sock.set_ttl_v4(CARP_TTL.into())
            .map_err(err("set IP_TTL"))?;
        sock.set_tos_v4(IPTOS_LOWDELAY).map_err(err("set IP_TOS"))?;
        setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)
            .map_err(|e| OsError::socket("set IP_PKTINFO", ifname, e.into()))?;
        setsockopt(&sock, sockopt::Ipv4RecvTtl, &true)
            .map_err(|e| OsError::socket("set IP_RECVTTL", ifname, e.into()))?;
        Self::register(sock, Family::V4, ifname, ifindex)
    }

    /// Open the IPv6 socket for interface `ifname` / `ifindex`.
    ///
    /// Joins ff02::12 on `ifindex`, sets hop limit 255 (multicast and
    /// unicast), `IPV6_MULTICAST_IF`, loop off, `IPV6_MULTICAST_ALL` off and
    /// enables `IPV6_RECVPKTINFO` / `IPV6_RECVHOPLIMIT`. `IPV6_CHECKSUM` stays
    /// off. Must be called inside a tokio runtime with I/O enabled; needs
    /// `CAP_NET_RAW`.
    pub fn open_v6(ifname: &str, ifindex: u32) -> Result<CarpSocket, OsError> {
        let err = |op| move |e| OsError::socket(op, ifname, e);
        let sock = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::from(IPPROTO_CARP)))
            .map_err(err("open raw ipv6 socket"))?;
        sock.set_nonblocking(true).map_err(err("set nonblocking"))?;
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(err("bind to device"))?;
        sock.join_multicast_v6(&CARP_GROUP_V6, ifindex)
            .map_err(err("join ff02::12"))?;
        sock.set_multicast_all_v6(false)
            .map_err(err("set IPV6_MULTICAST_ALL"))?;
        sock.set_multicast_loop_v6(false)
            .map_err(err("set IPV6_MULTICAST_LOOP"))?;
        sock.set_multicast_hops_v6(CARP_TTL.into())
            .map_err(err("set IPV6_MULTICAST_HOPS"))?;
        sock.set_unicast_hops_v6(CARP_TTL.into())
            .map_err(err("set IPV6_UNICAST_HOPS"))?;
        sock.set_multicast_if_v6(ifindex)
            .map_err(err("set IPV6_MULTICAST_IF"))?;
        sock.set_recv_hoplimit_v6(true)
            .map_err(err("set IPV6_RECVHOPLIMIT"))?;
        setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
            .map_err(|e| OsError::socket("set IPV6_RECVPKTINFO", ifname, e.into()))?;
        Self::register(sock, Family::V6, ifname, ifindex)
    }

    fn register(
        sock: Socket,
        family: Family,
        ifname: &str,
        ifindex: u32,
    ) -> Result<CarpSocket, OsError> {
        set_rcvbuf(&sock, ifname);
        set_advert_priority(&sock);
        let fd =
            sys::async_fd(sock).map_err(|e| OsError::socket("register with tokio", ifname, e))?;
        Ok(CarpSocket {
            fd,
            family,
            ifname: ifname.to_owned(),
            ifindex,
        })
    }

    /// Return the socket priority its advertisements are queued with.
    pub fn priority(&self) -> io::Result<i32> {
        nix::sys::socket::getsockopt(self.fd.get_ref(), sockopt::Priority).map_err(io::Error::from)
    }

    /// Return the interface name the socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Return the interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Let only advertisements for `accept` through (see [`bpf`]); an
    /// attached filter is replaced atomically.
    pub fn set_filter(&self, accept: &[Accept]) -> Result<(), OsError> {
        let family = match self.family {
            Family::V4 => carp_proto::Family::V4,
            Family::V6 => carp_proto::Family::V6,
        };
        let prog = bpf::to_socket2(&bpf::program(family, accept));
        self.fd
            .get_ref()
            .attach_filter(&prog)
            .map_err(|e| OsError::socket("attach the BPF filter", &self.ifname, e))
    }

    /// Receive up to [`RECV_BATCH`] datagrams with one `recvmmsg` once the
    /// socket is readable, appending each one's metadata and CARP payload to
    /// `out` (the same rules as [`CarpSocket::recv`] with a [`RECV_SLOT`]
    /// buffer). Returns how many were appended (at least one).
    ///
    /// Cancel-safe: dropping the future loses no datagram.
    pub async fn recv_batch(&self, out: &mut Vec<(Received, Vec<u8>)>) -> Result<usize, OsError> {
        let mut scratch = vec![0u8; RECV_BATCH * RECV_SLOT.max(RECV_V4_BUF)];
        let before = out.len();
        self.fd
            .async_io(Interest::READABLE, |s| {
                let fd = s.as_raw_fd();
                let mut iovs: Vec<[IoSliceMut<'_>; 1]> = scratch
                    .chunks_mut(RECV_SLOT.max(RECV_V4_BUF))
                    .map(|c| [IoSliceMut::new(c)])
                    .collect();
                match self.family {
                    Family::V4 => {
                        let cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::c_int);
                        let mut headers =
                            MultiHeaders::<SockaddrIn>::preallocate(RECV_BATCH, Some(cmsg));
                        let msgs = recvmmsg(
                            fd,
                            &mut headers,
                            iovs.iter_mut(),
                            MsgFlags::MSG_DONTWAIT,
                            None,
                        )?;
                        for msg in msgs {
                            out.push(received_v4(&msg, RECV_SLOT)?);
                        }
                    }
                    Family::V6 => {
                        let cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
                        let mut headers =
                            MultiHeaders::<SockaddrIn6>::preallocate(RECV_BATCH, Some(cmsg));
                        let msgs = recvmmsg(
                            fd,
                            &mut headers,
                            iovs.iter_mut(),
                            MsgFlags::MSG_DONTWAIT,
                            None,
                        )?;
                        for msg in msgs {
                            let r = meta_v6(&msg)?;
                            let mut payload = filled(&msg);
                            payload.truncate(r.len.min(RECV_SLOT));
                            out.push((
                                Received {
                                    len: payload.len(),
                                    ..r
                                },
                                payload,
                            ));
                        }
                    }
                }
                Ok(())
            })
            .await
            .map_err(|e| OsError::socket("receive", &self.ifname, e))?;
        Ok(out.len() - before)
    }

    /// Receive one datagram, writing its CARP payload to the start of `buf`.
    ///
    /// Cancel-safe: dropping the future loses no datagram. The caller still
    /// has to check `ttl`, `ifindex` and `len` (see [`Received`]).
    pub async fn recv(&self, buf: &mut [u8]) -> Result<Received, OsError> {
        match self.family {
            Family::V4 => self.recv_v4(buf).await,
            Family::V6 => self.recv_v6(buf).await,
        }
    }

    async fn recv_v4(&self, buf: &mut [u8]) -> Result<Received, OsError> {
        let mut dgram = [0u8; RECV_V4_BUF];
        let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::c_int);
        let (r, payload) = self
            .fd
            .async_io(Interest::READABLE, |s| {
                let mut iov = [IoSliceMut::new(&mut dgram)];
                let msg = recvmsg::<SockaddrIn>(
                    s.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )?;
                received_v4(&msg, buf.len())
            })
            .await
            .map_err(|e| OsError::socket("receive", &self.ifname, e))?;
        buf[..r.len].copy_from_slice(&payload);
        Ok(r)
    }

    async fn recv_v6(&self, buf: &mut [u8]) -> Result<Received, OsError> {
        let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo, libc::c_int);
        self.fd
            .async_io(Interest::READABLE, |s| {
                let mut iov = [IoSliceMut::new(&mut *buf)];
                let msg = recvmsg::<SockaddrIn6>(
                    s.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )?;
                meta_v6(&msg)
            })
            .await
            .map_err(|e| OsError::socket("receive", &self.ifname, e))
    }

    /// Send `payload` (the CARP header) to `dst` out of this interface.
    ///
    /// `src` selects the source address through a pktinfo cmsg; `None` lets
    /// the kernel choose, which gives 0.0.0.0 on an interface without IPv4
    /// addresses. `src` and `dst` must match the socket's family. A send
    /// error (ENETDOWN, EINVAL for a non-local `src`, ...) is returned, never
    /// retried here.
    pub async fn send(
        &self,
        src: Option<IpAddr>,
        dst: IpAddr,
        payload: &[u8],
    ) -> Result<(), OsError> {
        let iov = [IoSlice::new(payload)];
        let sent = match (self.family, src, dst) {
            (Family::V4, None | Some(IpAddr::V4(_)), IpAddr::V4(dst)) => {
                let src = match src {
                    Some(IpAddr::V4(a)) => a,
                    _ => Ipv4Addr::UNSPECIFIED,
                };
                let pi = libc::in_pktinfo {
                    ipi_ifindex: i32::try_from(self.ifindex).unwrap_or(0),
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
                self.fd
                    .async_io(Interest::WRITABLE, |s| {
                        let cmsg = [ControlMessage::Ipv4PacketInfo(&pi)];
                        Ok(sendmsg(
                            s.as_raw_fd(),
                            &iov,
                            &cmsg,
                            MsgFlags::empty(),
                            Some(&addr),
                        )?)
                    })
                    .await
            }
            (Family::V6, None | Some(IpAddr::V6(_)), IpAddr::V6(dst)) => {
                let src = match src {
                    Some(IpAddr::V6(a)) => a,
                    _ => Ipv6Addr::UNSPECIFIED,
                };
                let pi = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: self.ifindex,
                };
                // Link-local unicast and link-scope multicast need a scope id.
                let scope = if dst.is_unicast_link_local() || dst.is_multicast() {
                    self.ifindex
                } else {
                    0
                };
                let addr = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope));
                self.fd
                    .async_io(Interest::WRITABLE, |s| {
                        let cmsg = [ControlMessage::Ipv6PacketInfo(&pi)];
                        Ok(sendmsg(
                            s.as_raw_fd(),
                            &iov,
                            &cmsg,
                            MsgFlags::empty(),
                            Some(&addr),
                        )?)
                    })
                    .await
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "address family does not match the socket",
            )),
        }
        .map_err(|e| OsError::socket("send", &self.ifname, e))?;
        if sent != payload.len() {
            return Err(OsError::socket(
                "send",
                &self.ifname,
                io::Error::new(io::ErrorKind::WriteZero, "short write"),
            ));
        }
        Ok(())
    }
}

/// `TC_PRIO_CONTROL`, the socket priority of advertisements: the first band
/// of `pfifo_fast` and `prio` qdiscs, so a busy egress queue (a flood, bulk
/// traffic through a router) does not hold an advertisement back into a
/// false failover. Setting it needs CAP_NET_ADMIN; without it,
/// `TC_PRIO_INTERACTIVE` (6) maps to the same first band.
pub const ADVERT_PRIORITY: i32 = 7;

/// Give `sock` [`ADVERT_PRIORITY`] (or 6 without CAP_NET_ADMIN).
pub(crate) fn set_advert_priority<S: std::os::fd::AsFd>(sock: &S) {
    if setsockopt(sock, sockopt::Priority, &ADVERT_PRIORITY).is_err() {
        let _ = setsockopt(sock, sockopt::Priority, &(ADVERT_PRIORITY - 1));
    }
}

/// Ask for [`RCVBUF`]: `SO_RCVBUFFORCE` passes `net.core.rmem_max` with
/// CAP_NET_ADMIN; without it `SO_RCVBUF` gets what the limit allows.
fn set_rcvbuf(sock: &Socket, ifname: &str) {
    if setsockopt(sock, sockopt::RcvBufForce, &RCVBUF).is_err()
        && let Err(e) = sock.set_recv_buffer_size(RCVBUF)
    {
        crate::carplog!(Warning, "{ifname}: cannot set the receive buffer: {e}");
    }
    if let Ok(n) = sock.recv_buffer_size() {
        crate::carplog!(Debug, "{ifname}: CARP socket receive buffer {n} bytes");
    }
}

/// The first (only) iovec of a received message, as filled.
fn filled<'a, S>(msg: &RecvMsg<'_, 'a, S>) -> Vec<u8> {
    msg.iovs().next().map(|s| s.to_vec()).unwrap_or_default()
}

/// An IPv4 message (IP header included) as metadata and at most `max` bytes
/// of CARP payload; a malformed header gives length 0.
fn received_v4(msg: &RecvMsg<'_, '_, SockaddrIn>, max: usize) -> io::Result<(Received, Vec<u8>)> {
    let mut ifindex = 0;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv4PacketInfo(pi) = c {
            ifindex = u32::try_from(pi.ipi_ifindex).unwrap_or(0);
        }
    }
    // `bytes` never exceeds the iovec, but do not trust that with a slice index.
    let dgram = filled(msg);
    let dgram = dgram.get(..msg.bytes).unwrap_or(&dgram);
    Ok(match parse_ipv4_header(dgram) {
        Some(h) => {
            let payload = dgram.get(h.header_len..h.total_len).unwrap_or(&[]);
            let payload = &payload[..payload.len().min(max)];
            let r = Received {
                src: h.src.into(),
                dst: h.dst.into(),
                ttl: h.ttl,
                ifindex,
                len: payload.len(),
            };
            (r, payload.to_vec())
        }
        None => {
            let from = msg.address.map(|a| a.ip());
            let r = Received {
                src: from.unwrap_or(Ipv4Addr::UNSPECIFIED).into(),
                dst: Ipv4Addr::UNSPECIFIED.into(),
                ttl: 0,
                ifindex,
                len: 0,
            };
            (r, Vec::new())
        }
    })
}

/// The metadata of an IPv6 message (payload only): destination, ifindex and
/// hop limit from the cmsgs.
fn meta_v6(msg: &RecvMsg<'_, '_, SockaddrIn6>) -> io::Result<Received> {
    let (mut ifindex, mut dst, mut hlim) = (0, Ipv6Addr::UNSPECIFIED, 0);
    for c in msg.cmsgs()? {
        match c {
            ControlMessageOwned::Ipv6PacketInfo(pi) => {
                ifindex = pi.ipi6_ifindex;
                dst = Ipv6Addr::from(pi.ipi6_addr.s6_addr);
            }
            ControlMessageOwned::Ipv6HopLimit(h) => hlim = u8::try_from(h).unwrap_or(0),
            _ => {}
        }
    }
    let from = msg.address.map(|a| a.ip());
    Ok(Received {
        src: from.unwrap_or(Ipv6Addr::UNSPECIFIED).into(),
        dst: dst.into(),
        ttl: hlim,
        ifindex,
        len: msg.bytes,
    })
}

/// The fields of a received IPv4 header that carpd needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ipv4Meta {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ttl: u8,
    /// IHL * 4, validated to be >= 20 and within the datagram.
    header_len: usize,
    /// Total length, clamped to the datagram, validated >= `header_len`.
    total_len: usize,
}

/// Parse the IPv4 header at the start of `dgram`, or `None` when it is
/// malformed (short, not version 4, IHL < 5, header or total length beyond
/// the datagram, total length below the header length).
fn parse_ipv4_header(dgram: &[u8]) -> Option<Ipv4Meta> {
    let fixed: &[u8; 20] = dgram.get(..20)?.try_into().ok()?;
    if fixed[0] >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(fixed[0] & 0x0f) * 4;
    if header_len < 20 || header_len > dgram.len() {
        return None;
    }
    // Linux hands raw sockets the header as on the wire (network order
    // total length), unlike the BSDs. Trailing bytes past it are padding.
    let total_len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if total_len < header_len {
        return None;
    }
    Some(Ipv4Meta {
        src: Ipv4Addr::new(fixed[12], fixed[13], fixed[14], fixed[15]),
        dst: Ipv4Addr::new(fixed[16], fixed[17], fixed[18], fixed[19]),
        ttl: fixed[8],
        header_len,
        total_len: total_len.min(dgram.len()),
    })
}

#[cfg(test)]
mod test {
    use super::*;

    /// A 20-byte header (TTL 255, 192.0.2.1 -> 224.0.0.18, proto 112) + 4 bytes.
    static PACKET_BYTES: [u8; 24] = [
        0x45, 0x10, 0x00, 0x18, 0x00, 0x00, 0x40, 0x00, 0xff, 0x70, 0x00, 0x00, 192, 0, 2, 1, 224,
        0, 0, 18, 0xde, 0xad, 0xbe, 0xef,
    ];

    #[test]
    fn test_parse() {
        let h = parse_ipv4_header(&PACKET_BYTES).unwrap();
        assert_eq!(h.src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(h.dst, CARP_GROUP_V4);
        assert_eq!(h.ttl, 255);
        assert_eq!(h.header_len, 20);
        assert_eq!(
            &PACKET_BYTES[h.header_len..h.total_len],
            &[0xde, 0xad, 0xbe, 0xef]
        );
    }

    #[test]
    fn test_parse_options_use_ihl() {
        let mut p = vec![0x46];
        p.extend_from_slice(&PACKET_BYTES[1..20]);
        p[3] = 28;
        p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
        p.extend_from_slice(&[9, 9, 9, 9]);
        let h = parse_ipv4_header(&p).unwrap();
        assert_eq!(h.header_len, 24);
        assert_eq!(&p[h.header_len..h.total_len], &[9, 9, 9, 9]);
    }

    #[test]
    fn test_parse_small_ihl() {
        for ihl in 0..5u8 {
            let mut p = PACKET_BYTES;
            p[0] = 0x40 | ihl;
            assert_eq!(parse_ipv4_header(&p), None, "ihl {ihl}");
        }
    }

    #[test]
    fn test_parse_ihl_beyond_datagram() {
        let mut p = PACKET_BYTES;
        p[0] = 0x47; // 28-byte header in a 24-byte datagram
        assert_eq!(parse_ipv4_header(&p), None);
    }

    #[test]
    fn test_parse_truncated() {
        for n in 0..20 {
            assert_eq!(parse_ipv4_header(&PACKET_BYTES[..n]), None, "len {n}");
        }
    }

    #[test]
    fn test_parse_bad_version() {
        let mut p = PACKET_BYTES;
        p[0] = 0x65;
        assert_eq!(parse_ipv4_header(&p), None);
    }

    #[test]
    fn test_parse_total_len_less_than_header_len() {
        let mut p = PACKET_BYTES;
        p[3] = 19;
        assert_eq!(parse_ipv4_header(&p), None);
    }

    #[test]
    fn test_total_len_clamped_to_datagram() {
        let mut p = PACKET_BYTES;
        p[2] = 0xff;
        let h = parse_ipv4_header(&p).unwrap();
        assert_eq!(h.total_len, p.len());
    }

    #[test]
    fn test_parse_any_bytes_never_panics() {
        // Exhaustive over the first byte and lengths 0..=64 of a patterned body.
        for first in 0..=255u8 {
            for len in 0..=64usize {
                let mut p: Vec<u8> = (0..len as u8).collect();
                if let Some(b) = p.first_mut() {
                    *b = first;
                }
                if let Some(h) = parse_ipv4_header(&p) {
                    assert!(h.header_len <= h.total_len && h.total_len <= p.len());
                }
            }
        }
    }
}
