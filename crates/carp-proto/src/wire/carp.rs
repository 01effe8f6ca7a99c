//! The CARP v2 advertisement header (36 bytes), spec 1.2.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  |     vhid      |    advskew    |    authlen    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |    demote     |    advbase    |           checksum            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    counter (8 bytes)                          |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    md: HMAC-SHA1 (20 bytes)                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! (OpenBSD `ip_carp.h` `struct carp_header`.) `demote` is OpenBSD's; FreeBSD
//! and ucarp send 0 there and ignore it.

use core::fmt;

use super::{ParseError, checksum};

mod field {
    use core::ops::Range;

    pub(super) const VER_TYPE: usize = 0;
    pub(super) const VHID: usize = 1;
    pub(super) const ADVSKEW: usize = 2;
    pub(super) const AUTHLEN: usize = 3;
    pub(super) const DEMOTE: usize = 4;
    pub(super) const ADVBASE: usize = 5;
    pub(super) const CHECKSUM: Range<usize> = 6..8;
    pub(super) const COUNTER: Range<usize> = 8..16;
    pub(super) const MD: Range<usize> = COUNTER.end..COUNTER.end + 20;
}

/// The length of the CARP header; longer packets are accepted and the tail ignored.
pub const HEADER_LEN: usize = field::MD.end;

/// The only version this module speaks.
pub const VERSION: u8 = 2;
/// The advertisement type (the kernels do not check it on input).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// `(8 counter + 20 md) / 4`, always sent (the kernels do not check it on input).
pub const AUTHLEN: u8 = 7;

/// A read/write view of a CARP header in a byte buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap a buffer without checking its length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wrap a buffer, ensuring no accessor will panic.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, ParseError> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Ensure that no accessor will panic: the buffer holds at least 36 bytes.
    pub fn check_len(&self) -> Result<(), ParseError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            Err(ParseError::Truncated(len))
        } else {
            Ok(())
        }
    }

    /// Return the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Return the version field (high nibble of byte 0).
    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    /// Return the type field (low nibble of byte 0).
    #[inline]
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    /// Return the vhid field.
    #[inline]
    pub fn vhid(&self) -> u8 {
        self.buffer.as_ref()[field::VHID]
    }

    /// Return the advskew field.
    #[inline]
    pub fn advskew(&self) -> u8 {
        self.buffer.as_ref()[field::ADVSKEW]
    }

    /// Return the authlen field.
    #[inline]
    pub fn authlen(&self) -> u8 {
        self.buffer.as_ref()[field::AUTHLEN]
    }

    /// Return the demote field.
    #[inline]
    pub fn demote(&self) -> u8 {
        self.buffer.as_ref()[field::DEMOTE]
    }

    /// Return the advbase field.
    #[inline]
    pub fn advbase(&self) -> u8 {
        self.buffer.as_ref()[field::ADVBASE]
    }

    /// Return the checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Return the counter field, as the 8 bytes on the wire.
    #[inline]
    pub fn counter(&self) -> [u8; 8] {
        let mut out = [0; 8];
        out.copy_from_slice(&self.buffer.as_ref()[field::COUNTER]);
        out
    }

    /// Return the HMAC-SHA1 digest field.
    #[inline]
    pub fn md(&self) -> [u8; 20] {
        let mut out = [0; 20];
        out.copy_from_slice(&self.buffer.as_ref()[field::MD]);
        out
    }

    /// Return true if the checksum over the first 36 bytes verifies (spec 1.3).
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(&self.buffer.as_ref()[..HEADER_LEN])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Set the version and type fields.
    #[inline]
    pub fn set_version_kind(&mut self, version: u8, kind: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (kind & 0x0f);
    }

    /// Set the vhid field.
    #[inline]
    pub fn set_vhid(&mut self, value: u8) {
        self.buffer.as_mut()[field::VHID] = value;
    }

    /// Set the advskew field.
    #[inline]
    pub fn set_advskew(&mut self, value: u8) {
        self.buffer.as_mut()[field::ADVSKEW] = value;
    }

    /// Set the authlen field.
    #[inline]
    pub fn set_authlen(&mut self, value: u8) {
        self.buffer.as_mut()[field::AUTHLEN] = value;
    }

    /// Set the demote field.
    #[inline]
    pub fn set_demote(&mut self, value: u8) {
        self.buffer.as_mut()[field::DEMOTE] = value;
    }

    /// Set the advbase field.
    #[inline]
    pub fn set_advbase(&mut self, value: u8) {
        self.buffer.as_mut()[field::ADVBASE] = value;
    }

    /// Set the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Set the counter field.
    #[inline]
    pub fn set_counter(&mut self, value: [u8; 8]) {
        self.buffer.as_mut()[field::COUNTER].copy_from_slice(&value);
    }

    /// Set the digest field.
    #[inline]
    pub fn set_md(&mut self, value: [u8; 20]) {
        self.buffer.as_mut()[field::MD].copy_from_slice(&value);
    }

    /// Compute and store the checksum over the 36 header bytes.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let sum = checksum::compute(&self.buffer.as_ref()[..HEADER_LEN]);
        self.set_checksum(sum);
    }
}

/// A parsed CARP advertisement.
///
/// Parsing checks the length only: the version, checksum and digest are
/// checked by the receiver in OpenBSD's order (spec 8), so each failure is
/// counted under the right name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Version nibble (2 for CARP).
    pub version: u8,
    /// Type nibble (1 for an advertisement).
    pub kind: u8,
    /// Virtual host id.
    pub vhid: u8,
    /// Advertisement skew in 1/256 s.
    pub advskew: u8,
    /// Length of the authentication data in 32-bit words.
    pub authlen: u8,
    /// OpenBSD demotion counter.
    pub demote: u8,
    /// Base interval in seconds.
    pub advbase: u8,
    /// Replay counter / loop-detection cookie.
    pub counter: [u8; 8],
    /// HMAC-SHA1 digest.
    pub md: [u8; 20],
}

impl Repr {
    /// Parse a header, checking only that it is long enough.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, ParseError> {
        packet.check_len()?;
        Ok(Repr {
            version: packet.version(),
            kind: packet.kind(),
            vhid: packet.vhid(),
            advskew: packet.advskew(),
            authlen: packet.authlen(),
            demote: packet.demote(),
            advbase: packet.advbase(),
            counter: packet.counter(),
            md: packet.md(),
        })
    }

    /// Return the length of the emitted header.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Write every field into `packet` and fill the checksum (the digest must already be set).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version_kind(self.version, self.kind);
        packet.set_vhid(self.vhid);
        packet.set_advskew(self.advskew);
        packet.set_authlen(self.authlen);
        packet.set_demote(self.demote);
        packet.set_advbase(self.advbase);
        packet.set_counter(self.counter);
        packet.set_md(self.md);
        packet.fill_checksum();
    }

    /// Return the 36 bytes of this header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut buf = [0u8; HEADER_LEN];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

impl fmt::Display for Repr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CARPv{} type={} vhid={} advbase={} advskew={} demote={} authlen={}",
            self.version,
            self.kind,
            self.vhid,
            self.advbase,
            self.advskew,
            self.demote,
            self.authlen
        )
    }
}

impl<T: AsRef<[u8]>> fmt::Display for Packet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Repr::parse(self) {
            Ok(repr) => write!(f, "{repr}"),
            Err(err) => write!(f, "CARP ({err})"),
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    /// Spec 1.3: key "foobar", vhid 1, advbase 1, advskew 0, VIP 192.0.2.1,
    /// counter 01..08.
    static PACKET_BYTES: [u8; 36] = [
        0x21, 0x01, 0x00, 0x07, 0x00, 0x01, 0x38, 0xfc, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07,
        0x08, 0xf1, 0xc3, 0x8a, 0x7a, 0x68, 0xf2, 0x9a, 0x2a, 0xcc, 0xe5, 0x11, 0xf3, 0xef, 0x66,
        0x78, 0xc5, 0x93, 0x56, 0x3c, 0x2f,
    ];

    fn packet_repr() -> Repr {
        Repr {
            version: 2,
            kind: 1,
            vhid: 1,
            advskew: 0,
            authlen: 7,
            demote: 0,
            advbase: 1,
            counter: [1, 2, 3, 4, 5, 6, 7, 8],
            md: [
                0xf1, 0xc3, 0x8a, 0x7a, 0x68, 0xf2, 0x9a, 0x2a, 0xcc, 0xe5, 0x11, 0xf3, 0xef, 0x66,
                0x78, 0xc5, 0x93, 0x56, 0x3c, 0x2f,
            ],
        }
    }

    #[test]
    fn test_deconstruct() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(packet.version(), 2);
        assert_eq!(packet.kind(), 1);
        assert_eq!(packet.vhid(), 1);
        assert_eq!(packet.advskew(), 0);
        assert_eq!(packet.authlen(), 7);
        assert_eq!(packet.demote(), 0);
        assert_eq!(packet.advbase(), 1);
        assert_eq!(packet.checksum(), 0x38fc);
        assert_eq!(packet.counter(), [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(packet.md()[..4], [0xf1, 0xc3, 0x8a, 0x7a]);
        assert!(packet.verify_checksum());
    }

    #[test]
    fn test_construct() {
        let mut bytes = [0xa5; 36];
        let mut packet = Packet::new_unchecked(&mut bytes[..]);
        packet.set_version_kind(2, 1);
        packet.set_vhid(1);
        packet.set_advskew(0);
        packet.set_authlen(7);
        packet.set_demote(0);
        packet.set_advbase(1);
        packet.set_counter([1, 2, 3, 4, 5, 6, 7, 8]);
        packet.set_md(packet_repr().md);
        packet.fill_checksum();
        assert_eq!(bytes, PACKET_BYTES);
    }

    #[test]
    fn test_parse() {
        let packet = Packet::new_checked(&PACKET_BYTES[..]).unwrap();
        assert_eq!(Repr::parse(&packet), Ok(packet_repr()));
    }

    #[test]
    fn test_emit() {
        let repr = packet_repr();
        let mut bytes = vec![0xa5; repr.buffer_len()];
        repr.emit(&mut Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PACKET_BYTES);
        assert_eq!(repr.to_bytes(), PACKET_BYTES);
    }

    #[test]
    fn test_parse_truncated() {
        for len in 0..HEADER_LEN {
            let packet = Packet::new_unchecked(&PACKET_BYTES[..len]);
            assert_eq!(Repr::parse(&packet), Err(ParseError::Truncated(len)));
        }
    }

    #[test]
    fn test_parse_longer_packet_ignores_tail() {
        let mut long = PACKET_BYTES.to_vec();
        long.extend_from_slice(&[0xde, 0xad]);
        let packet = Packet::new_checked(&long[..]).unwrap();
        assert!(packet.verify_checksum());
        assert_eq!(Repr::parse(&packet), Ok(packet_repr()));
    }

    #[test]
    fn test_bad_checksum_detected() {
        let mut bytes = PACKET_BYTES;
        bytes[2] = 1;
        assert!(!Packet::new_unchecked(&bytes[..]).verify_checksum());
    }

    #[test]
    fn test_display() {
        let repr = packet_repr();
        assert_eq!(
            repr.to_string(),
            "CARPv2 type=1 vhid=1 advbase=1 advskew=0 demote=0 authlen=7"
        );
    }
}
