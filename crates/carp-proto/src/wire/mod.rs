//! Wire formats: the CARP v2 advertisement, the VRRPv3 one, the [`Advert`]
//! enum that tells flavours apart, and the Internet checksum.
//!
//! Every header follows one contract, taken from smoltcp's `wire` module:
//!
//! - `Packet<T>` is a zero-copy view over a byte buffer with one getter per
//!   field (`advskew()`) and one setter (`set_advskew()`). Setters exist only
//!   when `T: AsMut<[u8]>`.
//! - `Packet::new_checked` calls `check_len`; once it succeeded, **no accessor
//!   panics**. `new_unchecked` makes no such promise.
//! - `Repr` is the small owned value. `Repr::parse` never panics, whatever the
//!   bytes. `Repr::emit` never panics on a buffer of at least `buffer_len()`
//!   bytes and writes every field.
//! - Never use `new_checked` to emit into a reused buffer: stale bytes would make
//!   the check meaningless. Emit with `new_unchecked` on a buffer of the right size.
//!
//! A parse failure carries its reason ([`ParseError`]) so that each dropped
//! packet is counted under its own name.

use core::fmt;

pub mod carp;
pub mod checksum;
pub mod vrrp;

use std::net::IpAddr;

pub use carp::{HEADER_LEN as CARP_HEADER_LEN, Packet as CarpPacket, Repr as CarpRepr};

/// A received advertisement of any flavour, told apart by its version nibble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advert {
    /// CARP v2.
    Carp(CarpRepr),
    /// VRRPv3 (RFC 9568).
    Vrrp(vrrp::Repr),
}

impl Advert {
    /// Parse `bytes` (after the IP header): read the version nibble first,
    /// then check that flavour's length and checksum.
    ///
    /// FreeBSD `carp_input` splits on the version before the checksum, since
    /// VRRPv3 checksums a pseudo-header and CARP does not.
    pub fn parse(bytes: &[u8]) -> Result<Advert, ParseError> {
        let Some(first) = bytes.first() else {
            return Err(ParseError::Truncated(0));
        };
        match first >> 4 {
            carp::VERSION => {
                let packet = CarpPacket::new_checked(bytes)?;
                if !packet.verify_checksum() {
                    return Err(ParseError::BadChecksum);
                }
                CarpRepr::parse(&packet).map(Advert::Carp)
            }
            other => Err(ParseError::BadVersion(other)),
        }
    }

    /// [`Advert::parse`] for a packet from `src` to `dst`, which VRRPv3's
    /// pseudo-header checksum needs (FreeBSD `carp_input` splits on the
    /// version, then each flavour checks its own length and checksum).
    pub fn parse_from(bytes: &[u8], src: IpAddr, dst: IpAddr) -> Result<Advert, ParseError> {
        match bytes.first().map(|b| b >> 4) {
            Some(vrrp::VERSION) => vrrp::Repr::parse(bytes, src, dst).map(Advert::Vrrp),
            _ => Advert::parse(bytes),
        }
    }

    /// Return the vhid (VRRP: vrid) the advertisement is for.
    pub fn vhid(&self) -> u8 {
        match self {
            Advert::Carp(repr) => repr.vhid,
            Advert::Vrrp(repr) => repr.vrid,
        }
    }
}

/// Why bytes could not be read as a CARP advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than 36 bytes (OpenBSD `badlen`).
    Truncated(usize),
    /// The Internet checksum over the 36 bytes is not zero (OpenBSD `badsum`).
    BadChecksum,
    /// The version nibble is not one the core speaks (OpenBSD `badver`).
    BadVersion(u8),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated(n) => write!(f, "packet too short ({n} bytes)"),
            ParseError::BadChecksum => write!(f, "checksum failed"),
            ParseError::BadVersion(v) => write!(f, "invalid version {v}"),
        }
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn version_is_read_before_the_checksum() {
        // A version-3 packet with a broken checksum is a bad version, not a bad sum.
        let mut bytes = [0u8; CARP_HEADER_LEN];
        bytes[0] = 0x31;
        assert_eq!(Advert::parse(&bytes), Err(ParseError::BadVersion(3)));
        bytes[0] = 0x21;
        assert_eq!(Advert::parse(&bytes), Err(ParseError::BadChecksum));
        assert_eq!(Advert::parse(&[]), Err(ParseError::Truncated(0)));
        assert_eq!(Advert::parse(&bytes[..20]), Err(ParseError::Truncated(20)));
    }
}
