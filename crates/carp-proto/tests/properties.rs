//! Property tests (proptest) of the wire format, the HMAC and the receive path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::auth::Auth;
use carp_proto::wire::{CarpPacket, CarpRepr};
use carp_proto::{Instant, LinkId, Node, NodeConfig, Passphrase, RxMeta, Vhid, VhostConfig};
use proptest::prelude::*;

fn any_repr() -> impl Strategy<Value = CarpRepr> {
    (any::<[u8; 8]>(), any::<[u8; 8]>(), any::<[u8; 20]>()).prop_map(|(h, counter, md)| CarpRepr {
        version: h[0] & 0x0f,
        kind: h[1] & 0x0f,
        vhid: h[2],
        advskew: h[3],
        authlen: h[4],
        demote: h[5],
        advbase: h[6],
        counter,
        md,
    })
}

proptest! {
    #[test]
    fn emit_then_parse_round_trips(repr in any_repr()) {
        let bytes = repr.to_bytes();
        let packet = CarpPacket::new_checked(&bytes[..]).unwrap();
        prop_assert!(packet.verify_checksum());
        prop_assert_eq!(CarpRepr::parse(&packet).unwrap(), repr);
    }

    #[test]
    fn parse_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..=128)) {
        let packet = CarpPacket::new_unchecked(&bytes[..]);
        match CarpRepr::parse(&packet) {
            Ok(_) => prop_assert!(bytes.len() >= 36),
            Err(_) => prop_assert!(bytes.len() < 36),
        }
    }

    /// Every received datagram, however malformed, lands in exactly one counter.
    #[test]
    fn node_counts_every_datagram_exactly_once(
        datagrams in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..=64), any::<u8>(), any::<bool>(), 0u32..3),
            1..20,
        )
    ) {
        let mut cfg = VhostConfig::new(Vhid::new(1).unwrap(), &["192.0.2.1".parse().unwrap()]);
        cfg.passphrase = Passphrase::new(b"pw").unwrap();
        let mut node = Node::new(NodeConfig::default());
        node.add_vhost(Instant::ZERO, LinkId(1), cfg, [1; 8]).unwrap();
        for (i, (mut bytes, ttl, v6, link)) in datagrams.into_iter().enumerate() {
            // Bias towards packets that pass the early checks.
            if bytes.len() >= 36 && ttl % 2 == 0 {
                // Version 2 is read first (FreeBSD order), so keep it.
                bytes[0] = 0x20 | (bytes[0] & 0x0f);
                bytes[1] = 1;
                CarpPacket::new_unchecked(&mut bytes[..]).fill_checksum();
            }
            let src = if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::new(192, 0, 2, 9)) };
            let ttl = if ttl % 3 == 0 { ttl } else { 255 };
            node.handle_datagram(Instant::from_millis(i as u64), RxMeta { link: LinkId(link), src, dst: src, ttl, local: None }, &bytes);
            while node.poll_action().is_some() {}
        }
        let s = node.stats();
        prop_assert_eq!(s.received(), s.dropped() + s.accepted);
    }

    #[test]
    fn address_order_does_not_change_the_hmac(
        mut v4 in proptest::collection::vec(any::<u32>(), 1..8),
        mut v6 in proptest::collection::vec(any::<u128>(), 0..8),
        counter in any::<[u8; 8]>(),
        seed in any::<u64>(),
    ) {
        let key = Passphrase::new(b"order").unwrap();
        let vhid = Vhid::new(3).unwrap();
        let a4: Vec<Ipv4Addr> = v4.iter().map(|&x| Ipv4Addr::from(x)).collect();
        let a6: Vec<Ipv6Addr> = v6.iter().map(|&x| Ipv6Addr::from(x)).collect();
        let reference = Auth::new(&key, vhid, &a4, &a6).generate(&counter);
        // A deterministic shuffle: rotate and reverse by the seed.
        let r4 = (seed as usize) % v4.len();
        v4.rotate_left(r4);
        if seed & 1 == 1 { v4.reverse(); v6.reverse(); }
        let b4: Vec<Ipv4Addr> = v4.iter().map(|&x| Ipv4Addr::from(x)).collect();
        let b6: Vec<Ipv6Addr> = v6.iter().map(|&x| Ipv6Addr::from(x)).collect();
        prop_assert_eq!(Auth::new(&key, vhid, &b4, &b6).generate(&counter), reference);
    }

    #[test]
    fn any_bit_flip_in_counter_or_digest_fails_auth(counter in any::<[u8; 8]>(), bit in 0usize..(28 * 8)) {
        let auth = Auth::new(&Passphrase::new(b"flip").unwrap(), Vhid::new(1).unwrap(), &["192.0.2.1".parse().unwrap()], &[]);
        let mut c = counter;
        let mut md = auth.generate(&counter);
        prop_assert!(auth.verify(&c, &md));
        if bit < 64 { c[bit / 8] ^= 1 << (bit % 8); } else { md[(bit - 64) / 8] ^= 1 << (bit % 8); }
        prop_assert!(!auth.verify(&c, &md));
    }

    #[test]
    fn any_key_bit_flip_fails_auth(key in proptest::collection::vec(any::<u8>(), 1..=20), bit in 0usize..160, counter in any::<[u8; 8]>()) {
        let vhid = Vhid::new(1).unwrap();
        let addrs = ["192.0.2.1".parse().unwrap()];
        let good = Auth::new(&Passphrase::new(&key).unwrap(), vhid, &addrs, &[]);
        let mut other = key.clone();
        let bit = bit % (key.len() * 8);
        other[bit / 8] ^= 1 << (bit % 8);
        // Keys of at most 20 bytes are zero-padded to the 64-byte block, so any flip changes it.
        let bad = Auth::new(&Passphrase::new(&other).unwrap(), vhid, &addrs, &[]);
        prop_assert!(!bad.verify(&counter, &good.generate(&counter)));
    }
}
