//! Gratuitous ARP and unsolicited neighbour advertisements over AF_PACKET.
//!
//! A new master announces each VIP with the virtual MAC as the link-layer
//! address (spec section 6): an ARP *request* broadcast with spa = tpa = VIP,
//! and an NA to ff02::1 with the Override flag and a Target Link-Layer Address
//! option. Frames are built whole, Ethernet header included, by the pure
//! functions here, so the source MAC is the virtual MAC even when the VIP sits
//! on the parent interface.
//!
//! [`L2Sender`] is send-only: its AF_PACKET socket uses protocol 0, so the
//! kernel never queues received frames on it.

use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use etherparse::icmpv6::NeighborAdvertisementHeader;
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, Icmpv6Type, IpDscp,
    IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder,
};
use nix::sys::socket::{LinkAddr, MsgFlags, MultiHeaders, sendmmsg, sendto};
use socket2::{Domain, Protocol, Socket, Type};

use super::{OsError, sys};

/// EtherType of ARP.
pub const ETH_P_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETH_P_IPV6: u16 = 0x86dd;
/// The Ethernet broadcast address.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];
/// The Ethernet address of the all-nodes group ff02::1.
pub const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// Frames per `sendmmsg` call (the kernel takes at most UIO_MAXIOV, 1024).
const BURST: usize = 256;

/// ff02::1, the all-nodes group unsolicited NAs are sent to.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// NDP option type of Target Link-Layer Address (RFC 4861 section 4.6.1).
const ND_OPT_TARGET_LINKADDR: u8 = 2;

/// Return the virtual MAC of `vhid`, 00:00:5e:00:01:vhid.
pub fn virtual_mac(vhid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vhid]
}

/// Build a gratuitous ARP frame announcing `ip` at `mac`.
///
/// An ARP request broadcast to ff:ff:ff:ff:ff:ff with sha = `mac`,
/// spa = tpa = `ip`, tha = 0, as OpenBSD `carp_send_arp` sends it. 42 bytes;
/// the driver pads it to the Ethernet minimum.
pub fn gratuitous_arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let ip = ip.octets();
    // Invariant: 6-byte hardware and 4-byte protocol addresses are always
    // accepted by `ArpPacket::new`.
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &mac,
        &ip,
        &[0; 6],
        &ip,
    )
    .expect("fixed-size ARP addresses are valid");
    let builder = PacketBuilder::ethernet2(mac, BROADCAST_MAC).arp(arp);
    let mut frame = Vec::with_capacity(builder.size());
    // Invariant: writing a complete header chain into a Vec cannot fail.
    builder
        .write_to_vec(&mut frame)
        .expect("writing to a Vec cannot fail");
    frame
}

/// EtherType of IPv4.
pub const ETH_P_IP: u16 = 0x0800;
/// IP protocol number of CARP.
const IPPROTO_CARP: u8 = 112;

/// Return the Ethernet multicast address of an IPv4 group (RFC 1112) or IPv6 group (RFC 2464).
pub fn multicast_mac(group: std::net::IpAddr) -> [u8; 6] {
    match group {
        std::net::IpAddr::V4(g) => {
            let o = g.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        std::net::IpAddr::V6(g) => {
            let o = g.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
    }
}

/// Build the Ethernet frame of an IPv4 CARP advertisement to a multicast `group`.
///
/// The kernels send advertisements from the virtual MAC, which keeps the
/// switches' MAC tables pointing at the MASTER every interval (spec 1.1);
/// a raw IP socket would use the parent's MAC. TTL 255, DF, TOS 0x10
/// (`IPTOS_LOWDELAY`, as OpenBSD), IP id 0.
pub fn carp_advert_frame_v4(mac: [u8; 6], src: Ipv4Addr, group: Ipv4Addr, carp: &[u8]) -> Vec<u8> {
    let len = u16::try_from(carp.len())
        .unwrap_or(u16::MAX)
        .min(u16::MAX - 20);
    // Invariant: `len` is clamped below the maximum payload `new` accepts.
    let mut ip = Ipv4Header::new(
        len,
        255,
        IpNumber(IPPROTO_CARP),
        src.octets(),
        group.octets(),
    )
    .expect("payload length clamped");
    ip.dont_fragment = true;
    // TOS 0x10 is DSCP 4, ECN 0. Invariant: 4 < 64.
    ip.dscp = IpDscp::try_new(4).expect("4 is a valid DSCP");
    ip.header_checksum = ip.calc_header_checksum();
    let eth = Ethernet2Header {
        source: mac,
        destination: multicast_mac(std::net::IpAddr::V4(group)),
        ether_type: EtherType::IPV4,
    };
    let mut frame = Vec::with_capacity(14 + 20 + carp.len());
    frame.extend_from_slice(&eth.to_bytes());
    frame.extend_from_slice(&ip.to_bytes());
    frame.extend_from_slice(&carp[..usize::from(len)]);
    frame
}

/// Build the Ethernet frame of an IPv6 CARP advertisement to a multicast `group`, hop limit 255.
pub fn carp_advert_frame_v6(mac: [u8; 6], src: Ipv6Addr, group: Ipv6Addr, carp: &[u8]) -> Vec<u8> {
    let len = u16::try_from(carp.len()).unwrap_or(u16::MAX);
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: len,
        next_header: IpNumber(IPPROTO_CARP),
        hop_limit: 255,
        source: src.octets(),
        destination: group.octets(),
    };
    let eth = Ethernet2Header {
        source: mac,
        destination: multicast_mac(std::net::IpAddr::V6(group)),
        ether_type: EtherType::IPV6,
    };
    let mut frame = Vec::with_capacity(14 + 40 + carp.len());
    frame.extend_from_slice(&eth.to_bytes());
    frame.extend_from_slice(&ip.to_bytes());
    frame.extend_from_slice(&carp[..usize::from(len)]);
    frame
}

/// Build an unsolicited neighbour advertisement frame announcing `ip` at `mac`.
///
/// Ethernet 33:33:00:00:00:01 from `mac`; IPv6 from `ip` to ff02::1 with hop
/// limit 255; ICMPv6 NA with Override set, Solicited clear, Router set when
/// `router` is true (OpenBSD sets it when forwarding is on), target `ip` and a
/// Target Link-Layer Address option of `mac`. The checksum is filled in.
pub fn unsolicited_na_frame(mac: [u8; 6], ip: Ipv6Addr, router: bool) -> Vec<u8> {
    let na = NeighborAdvertisementHeader {
        router,
        solicited: false,
        r#override: true,
    };
    let mut payload = [0u8; 24];
    payload[..16].copy_from_slice(&ip.octets());
    // Option length is in units of 8 bytes: type, length, 6-byte MAC.
    payload[16] = ND_OPT_TARGET_LINKADDR;
    payload[17] = 1;
    payload[18..].copy_from_slice(&mac);
    let builder = PacketBuilder::ethernet2(mac, ALL_NODES_MAC)
        .ipv6(ip.octets(), ALL_NODES.octets(), 255)
        .icmpv6(Icmpv6Type::NeighborAdvertisement(na));
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Invariant: a 24-byte ICMPv6 payload is far below every length limit.
    builder
        .write_to_vec(&mut frame, &payload)
        .expect("writing a small NA to a Vec cannot fail");
    frame
}

/// A send-only AF_PACKET socket for one interface.
#[derive(Debug)]
pub struct L2Sender {
    sock: Socket,
    ifindex: u32,
}

impl L2Sender {
    /// Open the sender for interface `ifindex`. Needs `CAP_NET_RAW`.
    ///
    /// The socket is non-blocking: a full transmit queue gives an error
    /// instead of stalling the daemon loop.
    pub fn open(ifindex: u32) -> Result<L2Sender, OsError> {
        let name = format!("ifindex {ifindex}");
        let sock = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
            .map_err(|e| OsError::socket("open packet socket", &name, e))?;
        sock.set_nonblocking(true)
            .map_err(|e| OsError::socket("set nonblocking", &name, e))?;
        // Virtual-MAC advertisements and GARPs leave through this socket:
        // the same first egress band as the raw sockets' advertisements.
        super::raw::set_advert_priority(&sock);
        Ok(L2Sender { sock, ifindex })
    }

    /// Return the socket priority (`SO_PRIORITY`) frames are queued at.
    pub fn priority(&self) -> io::Result<i32> {
        nix::sys::socket::getsockopt(&self.sock, nix::sys::socket::sockopt::Priority)
            .map_err(io::Error::from)
    }

    /// Return the interface index frames are sent out of.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Send one complete Ethernet `frame` (header included) to `dst_mac`.
    ///
    /// `ethertype` must match the frame's; it is what the kernel's packet
    /// taps see as the protocol.
    pub fn send(&self, frame: &[u8], ethertype: u16, dst_mac: [u8; 6]) -> Result<(), OsError> {
        let err = |e| OsError::socket("send frame", &format!("ifindex {}", self.ifindex), e);
        let addr = sys::link_addr(self.ifindex, ethertype, dst_mac).map_err(err)?;
        let sent = sendto(self.sock.as_raw_fd(), frame, &addr, MsgFlags::empty())
            .map_err(|e| err(e.into()))?;
        if sent != frame.len() {
            return Err(err(io::Error::new(io::ErrorKind::WriteZero, "short write")));
        }
        Ok(())
    }

    /// Send every frame of `frames` (all of `ethertype`, to `dst_mac`) with
    /// as few `sendmmsg` calls as the kernel lets us: one for the lot
    /// unless one is refused. Return the index and error of each frame not
    /// sent; the others went out in order.
    pub fn send_burst(
        &self,
        frames: &[Vec<u8>],
        ethertype: u16,
        dst_mac: [u8; 6],
    ) -> Vec<(usize, OsError)> {
        let err = |e| OsError::socket("send frame", &format!("ifindex {}", self.ifindex), e);
        let addr = match sys::link_addr(self.ifindex, ethertype, dst_mac) {
            Ok(a) => a,
            Err(e) => {
                return (0..frames.len())
                    .map(|i| (i, err(io::Error::from(e.kind()))))
                    .collect();
            }
        };
        let mut failed = Vec::new();
        let mut at = 0;
        for chunk in frames.chunks(BURST) {
            let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|f| [IoSlice::new(f)]).collect();
            let addrs = vec![Some(addr); chunk.len()];
            let mut headers = MultiHeaders::<LinkAddr>::preallocate(chunk.len(), None);
            let mut done = 0;
            while done < chunk.len() {
                let sent = sendmmsg(
                    self.sock.as_raw_fd(),
                    &mut headers,
                    &slices[done..],
                    &addrs[done..],
                    [],
                    MsgFlags::empty(),
                );
                match sent {
                    Ok(results) => {
                        let n = results.count();
                        if n == 0 {
                            break;
                        }
                        done += n;
                    }
                    // The first frame of the rest was refused: report it, go on.
                    Err(e) => {
                        failed.push((at + done, err(e.into())));
                        done += 1;
                    }
                }
            }
            for i in done..chunk.len() {
                failed.push((
                    at + i,
                    err(io::Error::new(io::ErrorKind::WriteZero, "not sent")),
                ));
            }
            at += chunk.len();
        }
        failed
    }

    /// Announce `ipv4` with gratuitous ARPs, then `ipv6` with unsolicited
    /// NAs, all at `mac`: the frames are built first and sent in bursts (see
    /// [`L2Sender::send_burst`]). Return each address whose frame was not sent.
    pub fn announce(
        &self,
        mac: [u8; 6],
        ipv4: &[Ipv4Addr],
        ipv6: &[Ipv6Addr],
        router: bool,
    ) -> Vec<(IpAddr, OsError)> {
        let arps: Vec<Vec<u8>> = ipv4
            .iter()
            .map(|&ip| gratuitous_arp_frame(mac, ip))
            .collect();
        let mut failed: Vec<(IpAddr, OsError)> = self
            .send_burst(&arps, ETH_P_ARP, BROADCAST_MAC)
            .into_iter()
            .map(|(i, e)| (IpAddr::V4(ipv4[i]), e))
            .collect();
        let nas: Vec<Vec<u8>> = ipv6
            .iter()
            .map(|&ip| unsolicited_na_frame(mac, ip, router))
            .collect();
        failed.extend(
            self.send_burst(&nas, ETH_P_IPV6, ALL_NODES_MAC)
                .into_iter()
                .map(|(i, e)| (IpAddr::V6(ipv6[i]), e)),
        );
        failed
    }

    /// Send a gratuitous ARP for `ip` at `mac` (see [`gratuitous_arp_frame`]).
    pub fn send_gratuitous_arp(&self, mac: [u8; 6], ip: Ipv4Addr) -> Result<(), OsError> {
        self.send(&gratuitous_arp_frame(mac, ip), ETH_P_ARP, BROADCAST_MAC)
    }

    /// Send an unsolicited NA for `ip` at `mac` (see [`unsolicited_na_frame`]).
    pub fn send_unsolicited_na(
        &self,
        mac: [u8; 6],
        ip: Ipv6Addr,
        router: bool,
    ) -> Result<(), OsError> {
        self.send(
            &unsolicited_na_frame(mac, ip, router),
            ETH_P_IPV6,
            ALL_NODES_MAC,
        )
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn carp_advert_frames_parse_back() {
        use etherparse::{NetHeaders, PacketHeaders};
        let carp = [0x21u8; 36];
        let mac = virtual_mac(7);
        let f4 = carp_advert_frame_v4(
            mac,
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(224, 0, 0, 18),
            &carp,
        );
        let h = PacketHeaders::from_ethernet_slice(&f4).unwrap();
        let eth = h.link.unwrap().ethernet2().unwrap();
        assert_eq!(
            (eth.source, eth.destination),
            (mac, [1, 0, 0x5e, 0, 0, 0x12])
        );
        let Some(NetHeaders::Ipv4(ip, _)) = h.net else {
            panic!("not IPv4")
        };
        assert_eq!(
            (ip.time_to_live, ip.protocol.0, ip.dont_fragment),
            (255, 112, true)
        );
        assert_eq!(ip.header_checksum, ip.calc_header_checksum());
        assert_eq!(f4.len(), 14 + 20 + 36);
        assert_eq!(&f4[34..], &carp);
        let f6 = carp_advert_frame_v6(
            mac,
            "fe80::1".parse().unwrap(),
            "ff02::12".parse().unwrap(),
            &carp,
        );
        let h = PacketHeaders::from_ethernet_slice(&f6).unwrap();
        let eth = h.link.unwrap().ethernet2().unwrap();
        assert_eq!(eth.destination, [0x33, 0x33, 0, 0, 0, 0x12]);
        let Some(NetHeaders::Ipv6(ip, _)) = h.net else {
            panic!("not IPv6")
        };
        assert_eq!(
            (ip.hop_limit, ip.next_header.0, ip.payload_length),
            (255, 112, 36)
        );
    }

    use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice};

    use super::*;

    const MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x07];

    #[test]
    fn virtual_mac_layout() {
        assert_eq!(virtual_mac(7), MAC);
        assert_eq!(virtual_mac(255), [0, 0, 0x5e, 0, 1, 255]);
    }

    #[test]
    fn gratuitous_arp_parses_back() {
        let ip = Ipv4Addr::new(192, 0, 2, 10);
        let frame = gratuitous_arp_frame(MAC, ip);
        assert_eq!(frame.len(), 42);
        let p = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("no ethernet header");
        };
        assert_eq!(eth.destination(), BROADCAST_MAC);
        assert_eq!(eth.source(), MAC);
        assert_eq!(eth.ether_type(), EtherType::ARP);
        let Some(NetSlice::Arp(arp)) = p.net else {
            panic!("no arp");
        };
        let arp = arp.to_packet().try_eth_ipv4().unwrap();
        assert_eq!(arp.operation, ArpOperation::REQUEST);
        assert_eq!(arp.sender_mac, MAC);
        assert_eq!(arp.sender_ipv4, ip.octets());
        assert_eq!(arp.target_mac, [0; 6]);
        assert_eq!(arp.target_ipv4, ip.octets());
    }

    fn parse_na(frame: &[u8]) -> (NeighborAdvertisementHeader, Vec<u8>) {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let Some(LinkSlice::Ethernet2(eth)) = p.link else {
            panic!("no ethernet header");
        };
        assert_eq!(eth.destination(), ALL_NODES_MAC);
        assert_eq!(eth.source(), MAC);
        let Some(NetSlice::Ipv6(ip6)) = p.net else {
            panic!("no ipv6");
        };
        let h = ip6.header();
        assert_eq!(h.hop_limit(), 255);
        assert_eq!(h.destination_addr(), ALL_NODES);
        let Some(TransportSlice::Icmpv6(icmp)) = p.transport else {
            panic!("no icmpv6");
        };
        assert!(icmp.is_checksum_valid(h.source(), h.destination()));
        let Icmpv6Type::NeighborAdvertisement(na) = icmp.icmp_type() else {
            panic!("not an NA");
        };
        (na, icmp.payload().to_vec())
    }

    #[test]
    fn unsolicited_na_parses_back() {
        let ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let frame = unsolicited_na_frame(MAC, ip, false);
        assert_eq!(frame.len(), 14 + 40 + 8 + 24);
        let (na, payload) = parse_na(&frame);
        assert!(na.r#override && !na.solicited && !na.router);
        assert_eq!(&payload[..16], &ip.octets());
        assert_eq!(&payload[16..18], &[2, 1]);
        assert_eq!(&payload[18..], &MAC);
        // The source address of the IPv6 header is the VIP itself.
        assert_eq!(&frame[14 + 8..14 + 24], &ip.octets());
    }

    #[test]
    fn unsolicited_na_router_flag() {
        let ip: Ipv6Addr = "2001:db8::11".parse().unwrap();
        let (na, _) = parse_na(&unsolicited_na_frame(MAC, ip, true));
        assert!(na.r#override && na.router && !na.solicited);
    }
}
