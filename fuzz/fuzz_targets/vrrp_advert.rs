//! VRRPv3 advertisements through `wire::vrrp::Repr::parse`: any bytes give a
//! parse or an error, never a panic, and whatever parses emits again to
//! bytes that parse to the same advertisement.
//!
//! The first byte picks the family of the packet's source and destination
//! (even: IPv4, odd: IPv6); the rest is the VRRP message.
#![no_main]

use std::net::IpAddr;

use carp_proto::wire::vrrp::Repr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&family, bytes)) = data.split_first() else {
        return;
    };
    let (src, dst): (IpAddr, IpAddr) = if family % 2 == 0 {
        ([192, 0, 2, 10].into(), [224, 0, 0, 18].into())
    } else {
        ("fe80::1".parse().unwrap(), "ff02::12".parse().unwrap())
    };
    let Ok(repr) = Repr::parse(bytes, src, dst) else {
        return;
    };
    let again = repr
        .to_bytes(src, dst)
        .expect("same-family source and destination");
    assert_eq!(
        Repr::parse(&again, src, dst),
        Ok(repr),
        "emit and parse disagree"
    );
});
