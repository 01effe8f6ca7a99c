//! The RFC 1071 Internet checksum, as CARP uses it: over the 36-byte header
//! only, with no pseudo-header (spec 1.3).

/// Return the one's-complement sum of `data` folded to 16 bits (not inverted).
fn sum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Return the checksum to store in a header whose checksum field is zero.
pub fn compute(data: &[u8]) -> u16 {
    !sum(data)
}

/// Return true if `data`, checksum field included, sums to all ones.
pub fn verify(data: &[u8]) -> bool {
    sum(data) == 0xffff
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(compute(&data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(compute(&[0x12]), !0x1200);
    }

    #[test]
    fn computed_checksum_verifies() {
        let mut data = [0x21, 0x01, 0x00, 0x07, 0x00, 0x01, 0x00, 0x00, 0xab, 0xcd];
        let c = compute(&data);
        data[6..8].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&data));
        data[9] ^= 1;
        assert!(!verify(&data));
    }
}
