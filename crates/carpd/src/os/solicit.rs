//! ARP requests and neighbour solicitations for balanced addresses, answered
//! from user space (OpenBSD 1.270 `carp_iamatch` / `carp_iamatch6`).
//!
//! In a balancing mode every host holds the shared addresses, so the kernel
//! would answer for them with the parent's MAC; the datapath (`balance.rs`)
//! drops those requests at tc ingress, and carpd answers instead with the
//! MAC the core picks. The AF_PACKET `ETH_P_ALL` tap sees the frames before
//! tc ingress drops them. A classic BPF filter keeps every other frame off
//! the socket.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::LinkId;
use etherparse::icmpv6::NeighborAdvertisementHeader;
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, Icmpv6Type, IpNumber,
    Ipv6FlowLabel, Ipv6Header, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};
use tokio::io::unix::AsyncFd;

use super::{OsError, sys};

/// `ETH_P_ALL`: every protocol, seen before tc ingress.
const ETH_P_ALL: u16 = 0x0003;
/// ICMPv6 type of a Neighbour Solicitation (RFC 4861 section 4.3).
const ICMPV6_NS: u8 = 135;
/// NDP option types (RFC 4861 section 4.6.1).
const ND_OPT_SOURCE_LINKADDR: u8 = 1;
const ND_OPT_TARGET_LINKADDR: u8 = 2;

/// `arp[6:2] = 1 or (ip6 and ip6[6] = 58 and ip6[40] = 135)` compiled for
/// Ethernet (`tcpdump -dd`): ARP requests and NS without extension headers.
const FILTER: [SockFilter; 11] = [
    SockFilter::new(0x28, 0, 0, 12),
    SockFilter::new(0x15, 0, 2, 0x0806),
    SockFilter::new(0x28, 0, 0, 20),
    SockFilter::new(0x15, 5, 6, 1),
    SockFilter::new(0x15, 0, 5, 0x86dd),
    SockFilter::new(0x30, 0, 0, 20),
    SockFilter::new(0x15, 0, 3, 58),
    SockFilter::new(0x30, 0, 0, 54),
    SockFilter::new(0x15, 0, 1, 135),
    SockFilter::new(0x06, 0, 0, 0x40000),
    SockFilter::new(0x06, 0, 0, 0),
];

/// One request for the link-layer address of `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicitation {
    /// The carpdev it arrived on.
    pub link: LinkId,
    /// The requester's MAC (ARP sender hardware address, NS source
    /// link-layer option): what `balancing arp` hashes.
    pub sender_mac: [u8; 6],
    /// The requester's address (0.0.0.0 or :: for duplicate detection).
    pub sender_ip: IpAddr,
    /// The address asked for.
    pub target: IpAddr,
}

/// Parse an ARP request or an NS carrying a source link-layer option.
/// Anything else (replies, DAD probes without the option, truncated
/// frames) gives `None`: OpenBSD answers no NS without the option.
pub fn parse(link: LinkId, frame: &[u8]) -> Option<Solicitation> {
    let packet = SlicedPacket::from_ethernet(frame).ok()?;
    if let Some(NetSlice::Arp(arp)) = &packet.net {
        if arp.operation() != ArpOperation::REQUEST
            || arp.hw_addr_type() != ArpHardwareId::ETHERNET
            || arp.proto_addr_type() != EtherType::IPV4
        {
            return None;
        }
        let sender_mac = <[u8; 6]>::try_from(arp.sender_hw_addr()).ok()?;
        let sender = <[u8; 4]>::try_from(arp.sender_protocol_addr()).ok()?;
        let target = <[u8; 4]>::try_from(arp.target_protocol_addr()).ok()?;
        return Some(Solicitation {
            link,
            sender_mac,
            sender_ip: IpAddr::V4(Ipv4Addr::from(sender)),
            target: IpAddr::V4(Ipv4Addr::from(target)),
        });
    }
    let Some(NetSlice::Ipv6(ip6)) = &packet.net else {
        return None;
    };
    let Some(TransportSlice::Icmpv6(icmp)) = &packet.transport else {
        return None;
    };
    if icmp.type_u8() != ICMPV6_NS || icmp.code_u8() != 0 || ip6.header().hop_limit() != 255 {
        return None;
    }
    // After the 8-byte header (type, code, checksum, reserved): the target, options.
    let body = icmp.payload();
    let target: [u8; 16] = body.get(..16)?.try_into().ok()?;
    let sender_mac = source_link_addr(body.get(16..)?)?;
    Some(Solicitation {
        link,
        sender_mac,
        sender_ip: IpAddr::V6(ip6.header().source_addr()),
        target: IpAddr::V6(Ipv6Addr::from(target)),
    })
}

/// The source link-layer address option of NDP `options`, if present.
fn source_link_addr(mut options: &[u8]) -> Option<[u8; 6]> {
    while options.len() >= 2 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == ND_OPT_SOURCE_LINKADDR && len >= 8 {
            return options[2..8].try_into().ok();
        }
        options = &options[len..];
    }
    None
}

/// The ARP reply to `sol` saying `target` is at `answer_mac`, sent in an
/// Ethernet frame from `frame_src` (the parent's MAC when `answer_mac` is
/// multicast or must not be a source).
pub fn arp_reply_frame(
    sol: &Solicitation,
    answer_mac: [u8; 6],
    frame_src: [u8; 6],
) -> Option<Vec<u8>> {
    let (IpAddr::V4(target), IpAddr::V4(sender)) = (sol.target, sol.sender_ip) else {
        return None;
    };
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REPLY,
        &answer_mac,
        &target.octets(),
        &sol.sender_mac,
        &sender.octets(),
    )
    .ok()?;
    let eth = Ethernet2Header {
        source: frame_src,
        destination: sol.sender_mac,
        ether_type: EtherType::ARP,
    };
    let mut frame = Vec::with_capacity(Ethernet2Header::LEN + arp.packet_len());
    frame.extend_from_slice(&eth.to_bytes());
    frame.extend_from_slice(&arp.to_bytes());
    Some(frame)
}

/// The solicited NA answering `sol` (RFC 4861 section 7.2.4: to the
/// soliciting address, Solicited and Override set, the answer as target
/// link-layer option), from the target address in a frame from `frame_src`.
pub fn na_reply_frame(
    sol: &Solicitation,
    answer_mac: [u8; 6],
    frame_src: [u8; 6],
    router: bool,
) -> Option<Vec<u8>> {
    let (IpAddr::V6(target), IpAddr::V6(sender)) = (sol.target, sol.sender_ip) else {
        return None;
    };
    // A DAD probe (from ::) is answered to all-nodes (RFC 4861 7.2.4).
    let (dst, dst_mac, solicited) = if sender.is_unspecified() {
        (
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            [0x33, 0x33, 0, 0, 0, 1],
            false,
        )
    } else {
        (sender, sol.sender_mac, true)
    };
    let na = NeighborAdvertisementHeader {
        router,
        solicited,
        r#override: true,
    };
    let mut payload = Vec::with_capacity(24);
    payload.extend_from_slice(&target.octets());
    payload.extend_from_slice(&[ND_OPT_TARGET_LINKADDR, 1]);
    payload.extend_from_slice(&answer_mac);
    let builder = PacketBuilder::ethernet2(frame_src, dst_mac)
        .ip(etherparse::IpHeaders::Ipv6(
            Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: 0,
                next_header: IpNumber::IPV6_ICMP,
                hop_limit: 255,
                source: target.octets(),
                destination: dst.octets(),
            },
            Default::default(),
        ))
        .icmpv6(Icmpv6Type::NeighborAdvertisement(na));
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, &payload).ok()?;
    Some(frame)
}

/// A receive-only AF_PACKET socket for the solicitations on one interface.
#[derive(Debug)]
pub struct SolicitationSocket {
    fd: AsyncFd<Socket>,
}

impl SolicitationSocket {
    /// Open it on `ifindex`. Needs `CAP_NET_RAW`; must run inside a tokio runtime.
    pub fn open(ifindex: u32) -> Result<SolicitationSocket, OsError> {
        let name = format!("ifindex {ifindex}");
        let err = |op: &'static str| {
            let name = name.clone();
            move |e| OsError::socket(op, &name, e)
        };
        let proto = Protocol::from(i32::from(ETH_P_ALL.to_be()));
        let sock = Socket::new(Domain::PACKET, Type::RAW, Some(proto))
            .map_err(err("open packet socket"))?;
        // The filter first, so no unfiltered frame is ever queued.
        sock.attach_filter(&FILTER).map_err(err("attach filter"))?;
        // A read after a spurious wake-up must not stall the daemon loop.
        sock.set_nonblocking(true).map_err(err("set nonblocking"))?;
        // Outgoing frames pass the tap too: our own replies and NAs fail
        // the filter, and the kernel's own requests never ask for an
        // address this host holds, so the core ignores them.
        let addr = sys::link_addr(ifindex, ETH_P_ALL, [0; 6]).map_err(err("bind"))?;
        nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&sock), &addr)
            .map_err(|e| err("bind")(e.into()))?;
        let fd = sys::async_fd(sock).map_err(err("register"))?;
        Ok(SolicitationSocket { fd })
    }

    /// Receive the next frame into `buf`, returning its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| io::Read::read(&mut fd.get_ref(), buf)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 7];
    const ANSWER: [u8; 6] = [1, 0, 0x5e, 0, 1, 1];
    const PARENT: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];
    const LINK: LinkId = LinkId(3);

    fn arp_request(op: ArpOperation) -> Vec<u8> {
        let arp = ArpPacket::new(
            ArpHardwareId::ETHERNET,
            EtherType::IPV4,
            op,
            &CLIENT,
            &[198, 51, 100, 100],
            &[0; 6],
            &[198, 51, 100, 50],
        )
        .unwrap();
        let eth = Ethernet2Header {
            source: CLIENT,
            destination: [0xff; 6],
            ether_type: EtherType::ARP,
        };
        [eth.to_bytes().to_vec(), arp.to_bytes().to_vec()].concat()
    }

    fn ns(sender: Ipv6Addr, with_option: bool) -> Vec<u8> {
        let target: Ipv6Addr = "2001:db8::50".parse().unwrap();
        let mut payload = target.octets().to_vec();
        if with_option {
            payload.extend_from_slice(&[ND_OPT_SOURCE_LINKADDR, 1]);
            payload.extend_from_slice(&CLIENT);
        }
        let builder = PacketBuilder::ethernet2(CLIENT, [0x33, 0x33, 0xff, 0, 0, 0x50])
            .ipv6(
                sender.octets(),
                Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 0x50).octets(),
                255,
            )
            .icmpv6(Icmpv6Type::Unknown {
                type_u8: ICMPV6_NS,
                code_u8: 0,
                bytes5to8: [0; 4],
            });
        let mut frame = Vec::new();
        builder.write(&mut frame, &payload).unwrap();
        frame
    }

    #[test]
    fn arp_requests_parse_and_replies_carry_the_answer() {
        let sol = parse(LINK, &arp_request(ArpOperation::REQUEST)).unwrap();
        assert_eq!(sol.sender_mac, CLIENT);
        assert_eq!(sol.target, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 50)));
        assert_eq!(parse(LINK, &arp_request(ArpOperation::REPLY)), None);
        let reply = arp_reply_frame(&sol, ANSWER, PARENT).unwrap();
        let back = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(NetSlice::Arp(arp)) = back.net else {
            panic!("not ARP")
        };
        assert_eq!(arp.operation(), ArpOperation::REPLY);
        assert_eq!(arp.sender_hw_addr(), ANSWER);
        assert_eq!(arp.sender_protocol_addr(), [198, 51, 100, 50]);
        assert_eq!(arp.target_hw_addr(), CLIENT);
        assert_eq!(&reply[0..6], &CLIENT, "unicast to the requester");
        assert_eq!(&reply[6..12], &PARENT, "from the parent's MAC");
    }

    #[test]
    fn neighbour_solicitations_need_the_source_option() {
        let client: Ipv6Addr = "2001:db8::100".parse().unwrap();
        let sol = parse(LINK, &ns(client, true)).unwrap();
        assert_eq!(sol.sender_mac, CLIENT);
        assert_eq!(sol.target, IpAddr::V6("2001:db8::50".parse().unwrap()));
        assert_eq!(parse(LINK, &ns(client, false)), None);
        let reply = na_reply_frame(&sol, ANSWER, PARENT, false).unwrap();
        let back = SlicedPacket::from_ethernet(&reply).unwrap();
        let Some(NetSlice::Ipv6(ip6)) = &back.net else {
            panic!("not IPv6")
        };
        assert_eq!(ip6.header().destination_addr(), client);
        assert_eq!(ip6.header().hop_limit(), 255);
        let Some(TransportSlice::Icmpv6(icmp)) = &back.transport else {
            panic!("not ICMPv6")
        };
        assert_eq!(icmp.type_u8(), 136);
        // Solicited and Override.
        assert_eq!(icmp.slice()[4] & 0x60, 0x60);
        assert_eq!(
            &icmp.payload()[16..24],
            &[ND_OPT_TARGET_LINKADDR, 1, 1, 0, 0x5e, 0, 1, 1]
        );
        // The checksum the kernel will verify.
        let sum = icmp.header().icmp_type.calc_checksum(
            ip6.header().source(),
            ip6.header().destination(),
            icmp.payload(),
        );
        assert_eq!(sum.ok(), Some(icmp.checksum()));
    }

    #[test]
    fn garbage_is_not_a_solicitation() {
        let whole = arp_request(ArpOperation::REQUEST);
        for n in 0..whole.len() {
            let mut frame = whole.clone();
            frame.truncate(n);
            assert_eq!(parse(LINK, &frame), None, "{n} bytes");
        }
        assert_eq!(parse(LINK, &[0xff; 200]), None);
    }
}
