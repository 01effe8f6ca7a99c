//! Wire formats: the CARP v2 advertisement and the Internet checksum.
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

pub use carp::{HEADER_LEN as CARP_HEADER_LEN, Packet as CarpPacket, Repr as CarpRepr};

/// Why bytes could not be read as a CARP advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Fewer than 36 bytes (OpenBSD `badlen`).
    Truncated(usize),
    /// The Internet checksum over the 36 bytes is not zero (OpenBSD `badsum`).
    BadChecksum,
    /// The version nibble is not 2 (OpenBSD `badver`).
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
