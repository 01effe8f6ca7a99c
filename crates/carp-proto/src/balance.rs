//! OpenBSD load balancing (spec section 7): which node of a carp interface
//! serves a packet or an ARP requester.
//!
//! Both functions are pure and shared by everything that must agree on the
//! split: the core (ARP mode answers), the eBPF datapath's tests and the
//! namespace tests' expectations.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::config::{KEY_LEN, Passphrase};

/// OpenBSD `balancing` (`sc_balancing`), with the ARP mode of rev 1.270.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balancing {
    /// One MASTER holds the addresses (the only mode of a one-node interface).
    #[default]
    None,
    /// Every host holds the addresses; the leader's MAC is the multicast
    /// `01:00:5e:00:01:<vhid>` so switches flood; `carp_lsdrop` splits by IP.
    Ip,
    /// As `ip`, with a unicast virtual MAC that is never a frame source.
    IpStealth,
    /// As `ip`, with the ordinary MAC; the network must deliver to every host.
    IpUnicast,
    /// OpenBSD ≤ 2015 `carp_iamatch`: each ARP requester is answered with the
    /// MAC of the node its MAC hashes to.
    Arp,
}

impl Balancing {
    /// Every word, in OpenBSD's order.
    pub const ALL: [Balancing; 5] = [
        Balancing::None,
        Balancing::Ip,
        Balancing::IpStealth,
        Balancing::IpUnicast,
        Balancing::Arp,
    ];

    /// Return the ifconfig word.
    pub fn word(self) -> &'static str {
        match self {
            Balancing::None => "none",
            Balancing::Ip => "ip",
            Balancing::IpStealth => "ip-stealth",
            Balancing::IpUnicast => "ip-unicast",
            Balancing::Arp => "arp",
        }
    }

    /// Return true for the modes split by `carp_lsdrop` (every host holds the
    /// addresses in every node state).
    pub fn splits_by_ip(self) -> bool {
        matches!(
            self,
            Balancing::Ip | Balancing::IpStealth | Balancing::IpUnicast
        )
    }

    /// Return true if the addresses stay configured whatever the node states
    /// (every balancing mode: the datapath, not the address, decides).
    pub fn shares_addresses(self) -> bool {
        self != Balancing::None
    }

    /// The mode a carp interface of `node_count` nodes runs when `requested`
    /// is asked for (`carp_ioctl` SIOCSVH: one node forces none, several
    /// nodes with none become ip).
    pub fn effective(requested: Balancing, node_count: usize) -> Balancing {
        match (requested, node_count) {
            (_, 0 | 1) => Balancing::None,
            (Balancing::None, _) => Balancing::Ip,
            (mode, _) => mode,
        }
    }
}

impl fmt::Display for Balancing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A word that is not a balancing mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownBalancing;

impl fmt::Display for UnknownBalancing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected none, ip, ip-stealth, ip-unicast or arp")
    }
}

impl FromStr for Balancing {
    type Err = UnknownBalancing;

    fn from_str(s: &str) -> Result<Balancing, UnknownBalancing> {
        Balancing::ALL
            .into_iter()
            .find(|b| b.word() == s)
            .ok_or(UnknownBalancing)
    }
}

/// The `carp_lsdrop` fold of an IPv4 pair: the two addresses XORed, read
/// as a big-endian number (`ntohl(src ^ dst)`).
pub fn fold_v4(src: Ipv4Addr, dst: Ipv4Addr) -> u32 {
    u32::from(src) ^ u32::from(dst)
}

/// The `carp_lsdrop` fold of an IPv6 pair: all eight 32-bit words of both
/// addresses XORed, read as a big-endian number.
pub fn fold_v6(src: Ipv6Addr, dst: Ipv6Addr) -> u32 {
    let words = |a: Ipv6Addr| {
        let o = a.octets();
        (0..4).fold(0u32, |acc, i| {
            acc ^ u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
        })
    };
    words(src) ^ words(dst)
}

/// The node slot that serves a unicast packet from `src` to `dst`
/// (`carp_lsdrop`: `ntohl(fold) % lscount`). `None` when there are no nodes
/// (OpenBSD drops) or the families differ.
pub fn ip_slot(src: IpAddr, dst: IpAddr, node_count: usize) -> Option<usize> {
    let fold = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => fold_v4(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => fold_v6(s, d),
        _ => return None,
    };
    slot(fold, node_count)
}

fn slot(hash: u32, node_count: usize) -> Option<usize> {
    let count = u32::try_from(node_count).ok().filter(|&c| c > 0)?;
    usize::try_from(hash % count).ok()
}

/// The key of the ARP-mode hash (OpenBSD 1.270 `sc_hashkey` plus the first
/// four key bytes `sc_key[0..4]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpHashKey {
    hashkey: [u32; 2],
    key_word: u32,
}

impl ArpHashKey {
    /// Derive the key as `carp_hmac_prepare` does: SHA-1 of the HMAC inner
    /// pad (`key ^ 0x36`, 64 bytes) followed by version 2 and type 1, then
    /// `hashkey[0] = k0 ^ k1`, `hashkey[1] = k2 ^ k3` over the digest's first
    /// four 32-bit words.
    ///
    /// DEVIATION (documented): OpenBSD reads those words in host byte order,
    /// so its slots depend on the CPU. We read them little-endian, which is
    /// what OpenBSD computes on amd64 and arm64, the platforms it runs CARP
    /// on in practice.
    pub fn new(pass: &Passphrase) -> ArpHashKey {
        let mut pad = [0x36u8; 64];
        for (p, k) in pad.iter_mut().zip(pass.as_bytes()) {
            *p ^= k;
        }
        let digest = Sha1::new()
            .chain_update(pad)
            .chain_update([2u8, 1u8])
            .finalize();
        let word = |i: usize| {
            u32::from_le_bytes([
                digest[4 * i],
                digest[4 * i + 1],
                digest[4 * i + 2],
                digest[4 * i + 3],
            ])
        };
        let mut key = [0u8; KEY_LEN];
        key[..pass.as_bytes().len()].copy_from_slice(pass.as_bytes());
        ArpHashKey {
            hashkey: [word(0) ^ word(1), word(2) ^ word(3)],
            // c += key[3] << 24 ... + key[0]: a little-endian read.
            key_word: u32::from_le_bytes([key[0], key[1], key[2], key[3]]),
        }
    }

    /// Return `sc_hashkey`.
    pub fn hashkey(&self) -> [u32; 2] {
        self.hashkey
    }
}

/// OpenBSD 1.270 `carp_hash`: Bob Jenkins' 96-bit mix (as `bridge_hash`)
/// of the sender's MAC under the interface key.
pub fn carp_hash(key: &ArpHashKey, mac: [u8; 6]) -> u32 {
    let mut a = 0x9e37_79b9u32.wrapping_add(u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
    let mut b = key.hashkey[0].wrapping_add(u32::from_le_bytes([mac[4], mac[5], 0, 0]));
    let mut c = key.hashkey[1].wrapping_add(key.key_word);
    // The mix, line by line as in if_bridge.c (shifts 13 8 13 12 16 5 3 10 15).
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 13);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 8);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 13);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 12);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 16);
    c = c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 5);
    a = a.wrapping_sub(b).wrapping_sub(c) ^ (c >> 3);
    b = b.wrapping_sub(c).wrapping_sub(a) ^ (a << 10);
    c.wrapping_sub(a).wrapping_sub(b) ^ (b >> 15)
}

/// The node slot that answers an ARP request (or NS with a source
/// link-layer option) from `sender_mac` (`carp_iamatch`).
pub fn arp_slot(key: &ArpHashKey, sender_mac: [u8; 6], node_count: usize) -> Option<usize> {
    slot(carp_hash(key, sender_mac), node_count)
}

/// The share of hash slots `mask` serves out of `node_count` (for reports).
pub fn served_slots(mask: u32, node_count: usize) -> usize {
    (0..node_count.min(32))
        .filter(|i| mask & (1 << i) != 0)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> IpAddr {
        IpAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> IpAddr {
        IpAddr::V6(s.parse().unwrap())
    }
    fn slots(src: IpAddr, dst: IpAddr) -> [Option<usize>; 3] {
        [2, 3, 32].map(|n| ip_slot(src, dst, n))
    }

    // The vectors below are worked by hand from spec section 7, not by this code.
    #[test]
    fn ipv4_fold_is_the_xor_of_the_addresses_read_big_endian() {
        // c6.33.64.01 ^ c6.33.64.32 = 00.00.00.33 = 51; 51 % 2 = 1, % 3 = 0, % 32 = 19.
        assert_eq!(
            slots(v4("198.51.100.1"), v4("198.51.100.50")),
            [Some(1), Some(0), Some(19)]
        );
        // cb.00.71.09 ^ c6.33.64.32 = 0d.33.15.3b = 221451579; digit sum 36 so % 3 = 0,
        // odd so % 2 = 1, low five bits 11011 = 27.
        assert_eq!(
            fold_v4(
                "203.0.113.9".parse().unwrap(),
                "198.51.100.50".parse().unwrap()
            ),
            0x0d33_153b
        );
        assert_eq!(
            slots(v4("203.0.113.9"), v4("198.51.100.50")),
            [Some(1), Some(0), Some(27)]
        );
        // Symmetric: the reply direction hashes to the same node.
        assert_eq!(
            slots(v4("198.51.100.50"), v4("203.0.113.9")),
            [Some(1), Some(0), Some(27)]
        );
    }

    #[test]
    fn ipv6_fold_xors_all_eight_words() {
        // Words 20010db8 0 0 1 and 20010db8 0 0 50: 1 ^ 50 = 0x51 = 81 -> 1, 0, 17.
        assert_eq!(
            slots(v6("2001:db8::1"), v6("2001:db8::50")),
            [Some(1), Some(0), Some(17)]
        );
        // 2001:db8:1::7: words 20010db8 00010000 0 7; ^ the VIP's = 0x00010057 = 65623
        // = 3 * 21874 + 1; low five bits of 0x57 = 10111 = 23.
        assert_eq!(
            slots(v6("2001:db8:1::7"), v6("2001:db8::50")),
            [Some(1), Some(1), Some(23)]
        );
        // 2001:db8:ffff:1::9: 0xffff0001 ^ 9 ^ 0x50 = 0xffff0058 = 4294901848, even;
        // 4294901848 = 3 * 1431633949 + 1; low five bits of 0x58 = 11000 = 24.
        assert_eq!(
            slots(v6("2001:db8:ffff:1::9"), v6("2001:db8::50")),
            [Some(0), Some(1), Some(24)]
        );
    }

    #[test]
    fn no_nodes_or_mixed_families_serve_nothing() {
        assert_eq!(ip_slot(v4("192.0.2.1"), v4("192.0.2.2"), 0), None);
        assert_eq!(ip_slot(v4("192.0.2.1"), v6("2001:db8::1"), 2), None);
    }

    #[test]
    fn arp_hash_key_and_hash_of_a_known_passphrase() {
        // SHA1(("secret" zero-padded to 64) ^ 0x36 || 02 01) =
        // d827ec73 e49ec07b e97de532 ef318abd ...; little-endian words
        // 0x73ec27d8 0x7bc09ee4 0x32e57de9 0xbd8a31ef;
        // hashkey = [0x73ec27d8 ^ 0x7bc09ee4, 0x32e57de9 ^ 0xbd8a31ef].
        let key = ArpHashKey::new(&Passphrase::new(b"secret").unwrap());
        assert_eq!(key.hashkey(), [0x082c_b93c, 0x8f6f_4c06]);
        // a = 0x9e3779b9 + 0x00000002, b = hashkey0 + 0x0100,
        // c = hashkey1 + "secr" little-endian (0x72636573), then the mix.
        assert_eq!(carp_hash(&key, [2, 0, 0, 0, 0, 1]), 0x1679_3a4b);
        assert_eq!(arp_slot(&key, [2, 0, 0, 0, 0, 1], 3), Some(0));
        assert_eq!(arp_slot(&key, [2, 0, 0, 0, 0, 1], 32), Some(11));
        assert_eq!(carp_hash(&key, [2, 0, 0, 0, 0, 0x0c]), 0x4f16_5fae);
        assert_eq!(arp_slot(&key, [2, 0, 0, 0, 0, 0x0c], 2), Some(0));
        assert_eq!(arp_slot(&key, [2, 0, 0, 0, 0, 0x0c], 3), Some(1));
        // The empty key: SHA1(64 x 0x36 || 02 01) = a5368816 ...
        let empty = ArpHashKey::new(&Passphrase::new(b"").unwrap());
        assert_eq!(empty.hashkey(), [0x8c82_15a2, 0xd041_68fd]);
        assert_eq!(carp_hash(&empty, [0; 6]), 0x3382_5b9b);
    }

    #[test]
    fn mode_rules_follow_openbsd() {
        assert_eq!(Balancing::effective(Balancing::Arp, 1), Balancing::None);
        assert_eq!(Balancing::effective(Balancing::None, 3), Balancing::Ip);
        assert_eq!(
            Balancing::effective(Balancing::IpStealth, 3),
            Balancing::IpStealth
        );
        for b in Balancing::ALL {
            assert_eq!(b.word().parse::<Balancing>(), Ok(b));
        }
        assert!("round-robin".parse::<Balancing>().is_err());
        assert_eq!(served_slots(0b101, 3), 2);
    }
}
