//! The VRRPv3 advertisement (RFC 9568 section 5.1), as FreeBSD 14's carp(4)
//! speaks it in its VRRP mode and keepalived with `vrrp_version 3`.
//!
//! ```text
//!  0        4        8                16               24              31
//! +--------+--------+----------------+----------------+----------------+
//! |Version | Type   | Virtual Rtr ID |   Priority     | Count IPvX Addr|
//! +--------+--------+----------------+----------------+----------------+
//! | (rsvd) |     Max Adver Int (cs)  |            Checksum             |
//! +--------+-------------------------+---------------------------------+
//! |                       IPvX Address(es)                             |
//! ```
//!
//! No authentication. The checksum covers the message and the IP
//! pseudo-header (RFC 9568 5.2.8; for IPv4 the RFC 768 one, protocol 112),
//! so parsing and emitting need the packet's source and destination.
//! The addresses are all of the packet's family, in the sender's order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ParseError;
use super::checksum;

/// The version nibble.
pub const VERSION: u8 = 3;
/// The only type: ADVERTISEMENT.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// The fixed part before the addresses.
pub const HEADER_LEN: usize = 8;
/// IP protocol number of VRRP (the same as CARP's).
pub const PROTOCOL: u8 = 112;
/// The largest Max Adver Int (12 bits of centiseconds).
pub const MAX_INTERVAL_CS: u16 = 0x0fff;

/// A parsed VRRPv3 advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    /// Virtual router id.
    pub vrid: u8,
    /// 255: the address owner; 0: the master resigns.
    pub priority: u8,
    /// Max Adver Int, in centiseconds (12 bits).
    pub interval_cs: u16,
    /// The type nibble (1; others are the receiver's to drop).
    pub kind: u8,
    /// The virtual addresses, all of the packet's family.
    pub addresses: Vec<IpAddr>,
}

/// The one's complement checksum of `message` under the pseudo-header of
/// `src` and `dst` (their families must match).
fn pseudo_checksum(src: IpAddr, dst: IpAddr, message: &[u8]) -> Option<u16> {
    let mut data = Vec::with_capacity(40 + message.len());
    let len = u32::try_from(message.len()).ok()?;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            data.extend_from_slice(&s.octets());
            data.extend_from_slice(&d.octets());
            data.extend_from_slice(&[0, PROTOCOL]);
            data.extend_from_slice(&u16::try_from(len).ok()?.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            data.extend_from_slice(&s.octets());
            data.extend_from_slice(&d.octets());
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(&[0, 0, 0, PROTOCOL]);
        }
        _ => return None,
    }
    data.extend_from_slice(message);
    Some(checksum::compute(&data))
}

impl Repr {
    /// Parse `bytes` (after the IP header) of a packet from `src` to `dst`.
    ///
    /// Checks, in order: version 3, the length the address count asks for
    /// (extra bytes are ignored, as FreeBSD does), the checksum. Never panics.
    pub fn parse(bytes: &[u8], src: IpAddr, dst: IpAddr) -> Result<Repr, ParseError> {
        let Some(&first) = bytes.first() else {
            return Err(ParseError::Truncated(0));
        };
        if first >> 4 != VERSION {
            return Err(ParseError::BadVersion(first >> 4));
        }
        if bytes.len() < HEADER_LEN {
            return Err(ParseError::Truncated(bytes.len()));
        }
        let addr_len = if src.is_ipv4() { 4 } else { 16 };
        let count = usize::from(bytes[3]);
        let len = HEADER_LEN + count * addr_len;
        let Some(message) = bytes.get(..len) else {
            return Err(ParseError::Truncated(bytes.len()));
        };
        // A correct checksum field makes the whole sum come out as zero.
        if pseudo_checksum(src, dst, message) != Some(0) {
            return Err(ParseError::BadChecksum);
        }
        let addresses = message[HEADER_LEN..]
            .chunks_exact(addr_len)
            .map(|a| match <[u8; 4]>::try_from(a) {
                Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
                Err(_) => {
                    let mut v6 = [0u8; 16];
                    v6.copy_from_slice(a);
                    IpAddr::V6(Ipv6Addr::from(v6))
                }
            })
            .collect();
        Ok(Repr {
            vrid: bytes[1],
            priority: bytes[2],
            interval_cs: u16::from_be_bytes([bytes[4], bytes[5]]) & MAX_INTERVAL_CS,
            kind: first & 0x0f,
            addresses,
        })
    }

    /// Emit the message for a packet from `src` to `dst`, checksum filled.
    /// Addresses of the other family are left out, and at most 255 go;
    /// `None` if `src` and `dst` are of different families.
    pub fn to_bytes(&self, src: IpAddr, dst: IpAddr) -> Option<Vec<u8>> {
        let same_family = |a: &&IpAddr| a.is_ipv4() == src.is_ipv4();
        let addresses: Vec<&IpAddr> = self
            .addresses
            .iter()
            .filter(same_family)
            .take(255)
            .collect();
        let interval = self.interval_cs.min(MAX_INTERVAL_CS);
        let mut out = vec![
            (VERSION << 4) | (self.kind & 0x0f),
            self.vrid,
            self.priority,
            u8::try_from(addresses.len()).ok()?,
        ];
        out.extend_from_slice(&interval.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        for a in addresses {
            match a {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
            }
        }
        let sum = pseudo_checksum(src, dst, &out)?;
        out[6..8].copy_from_slice(&sum.to_be_bytes());
        Some(out)
    }
}

/// Fill the checksum of an emitted message for its real `src` and `dst`
/// (the core emits before the source is known). `false` if `message` is
/// not a VRRPv3 message or the families differ.
pub fn fill_checksum(message: &mut [u8], src: IpAddr, dst: IpAddr) -> bool {
    if message.len() < HEADER_LEN || message[0] >> 4 != VERSION {
        return false;
    }
    message[6..8].copy_from_slice(&[0, 0]);
    let Some(sum) = pseudo_checksum(src, dst, message) else {
        return false;
    };
    message[6..8].copy_from_slice(&sum.to_be_bytes());
    true
}

#[cfg(test)]
mod test {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// Vectors computed by hand (Python, RFC 9568 5.1 layout, RFC 768 /
    /// RFC 8200 pseudo-headers with protocol 112).
    const V4: &str = "3105640200644390c0000232c0000233";
    const V6: &str = "3105640100643e6d20010db8000000000000000000000050";

    fn v4() -> Repr {
        Repr {
            vrid: 5,
            priority: 100,
            interval_cs: 100,
            kind: TYPE_ADVERTISEMENT,
            addresses: vec![ip("192.0.2.50"), ip("192.0.2.51")],
        }
    }

    #[test]
    fn ipv4_vector_round_trips() {
        let (src, dst) = (ip("192.0.2.10"), ip("224.0.0.18"));
        assert_eq!(v4().to_bytes(src, dst).unwrap(), unhex(V4));
        assert_eq!(Repr::parse(&unhex(V4), src, dst), Ok(v4()));
    }

    #[test]
    fn ipv6_vector_round_trips() {
        let (src, dst) = (ip("fe80::1"), ip("ff02::12"));
        let repr = Repr {
            addresses: vec![ip("2001:db8::50")],
            ..v4()
        };
        // The IPv4 addresses of a dual-stack set stay out of the IPv6 packet.
        let mixed = Repr {
            addresses: vec![ip("192.0.2.50"), ip("2001:db8::50")],
            ..v4()
        };
        assert_eq!(mixed.to_bytes(src, dst).unwrap(), unhex(V6));
        assert_eq!(Repr::parse(&unhex(V6), src, dst), Ok(repr));
    }

    #[test]
    fn the_checksum_is_filled_for_the_real_source() {
        let (src, dst) = (ip("192.0.2.10"), ip("224.0.0.18"));
        let mut bytes = v4().to_bytes(ip("0.0.0.0"), dst).unwrap();
        assert_ne!(bytes, unhex(V4));
        assert!(fill_checksum(&mut bytes, src, dst));
        assert_eq!(bytes, unhex(V4));
        assert!(!fill_checksum(&mut [0x21; 36], src, dst));
    }

    #[test]
    fn the_pseudo_header_is_checked() {
        // The same bytes from another source fail the checksum.
        let bytes = unhex(V4);
        let other = Repr::parse(&bytes, ip("192.0.2.11"), ip("224.0.0.18"));
        assert_eq!(other, Err(ParseError::BadChecksum));
        let mut flipped = bytes.clone();
        flipped[2] ^= 1;
        let src = ip("192.0.2.10");
        assert_eq!(
            Repr::parse(&flipped, src, ip("224.0.0.18")),
            Err(ParseError::BadChecksum)
        );
    }

    #[test]
    fn short_and_foreign_bytes_are_errors() {
        let (src, dst) = (ip("192.0.2.10"), ip("224.0.0.18"));
        let bytes = unhex(V4);
        assert_eq!(Repr::parse(&[], src, dst), Err(ParseError::Truncated(0)));
        assert_eq!(
            Repr::parse(&bytes[..7], src, dst),
            Err(ParseError::Truncated(7))
        );
        // Two addresses announced, one present.
        assert_eq!(
            Repr::parse(&bytes[..12], src, dst),
            Err(ParseError::Truncated(12))
        );
        let mut carp = bytes.clone();
        carp[0] = 0x21;
        assert_eq!(Repr::parse(&carp, src, dst), Err(ParseError::BadVersion(2)));
        // Mixed families cannot be checksummed.
        assert_eq!(v4().to_bytes(src, ip("ff02::12")), None);
    }
}
