//! Golden vectors captured from real peers (see `vectors/capture-ucarp.sh`).
//!
//! Input: the 36 CARP bytes of an advertisement sent by Debian's ucarp 1.5.2
//! in a network namespace (vhid 7, pass "carpd-test", VIP 192.0.2.100).
//! Output: our parser verifies its checksum and HMAC and accepts it; with a
//! wrong password the same bytes are dropped as `bad_auth`.

// The test reads its vector files; the purity rule (clippy.toml) is for the core.
#![allow(clippy::disallowed_methods)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use carp_proto::wire::{CarpPacket, CarpRepr};
use carp_proto::{Instant, LinkId, Node, NodeConfig, Passphrase, RxMeta, Vhid, VhostConfig};

fn load(name: &str) -> HashMap<String, String> {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn node_for(v: &HashMap<String, String>, pass: &[u8]) -> Node {
    let vhid = Vhid::new(v["vhid"].parse().unwrap()).unwrap();
    let vip: Ipv4Addr = v["vip"].parse().unwrap();
    let mut cfg = VhostConfig::new(vhid, &[IpAddr::V4(vip)]);
    cfg.passphrase = Passphrase::new(pass).unwrap();
    let mut node = Node::new(NodeConfig::default());
    node.add_vhost(Instant::ZERO, LinkId(1), cfg, [9; 8])
        .unwrap();
    while node.poll_action().is_some() {}
    node
}

fn feed(node: &mut Node, v: &HashMap<String, String>) {
    let bytes = hex::decode(&v["carp"]).unwrap();
    let meta = RxMeta {
        link: LinkId(1),
        src: v["src"].parse().unwrap(),
        dst: "224.0.0.18".parse().unwrap(),
        ttl: v["ttl"].parse().unwrap(),
        local: None,
    };
    node.handle_datagram(Instant::from_millis(500), meta, &bytes);
}

#[test]
fn ucarp_advertisement_parses_with_good_checksum() {
    let v = load("ucarp-v4.txt");
    let bytes = hex::decode(&v["carp"]).unwrap();
    let packet = CarpPacket::new_checked(&bytes[..]).unwrap();
    assert!(packet.verify_checksum());
    let repr = CarpRepr::parse(&packet).unwrap();
    assert_eq!((repr.version, repr.kind, repr.authlen), (2, 1, 7));
    assert_eq!(repr.vhid.to_string(), v["vhid"]);
    // Re-emitting the parsed fields gives the same bytes (checksum included).
    assert_eq!(repr.to_bytes().to_vec(), bytes);
}

#[test]
fn ucarp_advertisement_is_accepted_with_its_password() {
    let v = load("ucarp-v4.txt");
    let mut node = node_for(&v, v["pass"].as_bytes());
    feed(&mut node, &v);
    let s = node.stats();
    assert_eq!((s.ipackets, s.accepted, s.dropped()), (1, 1, 0), "{s:?}");
}

#[test]
fn ucarp_advertisement_is_rejected_with_a_wrong_password() {
    let v = load("ucarp-v4.txt");
    let mut node = node_for(&v, b"not-the-password");
    feed(&mut node, &v);
    let s = node.stats();
    assert_eq!((s.bad_auth, s.accepted), (1, 0), "{s:?}");
}

/// Input: VRRPv3 advertisements sent by Debian's keepalived 2.2.7 with
/// `vrrp_version 3` (IPv4 and IPv6, see `vectors/keepalived-vrrp3.txt`).
/// Output: our parser verifies their pseudo-header checksums and reads
/// vrid, priority, interval and addresses as tcpdump decoded them; emitting
/// what was read gives the captured bytes back.
#[test]
fn keepalived_vrrp3_advertisements_parse_and_re_emit() {
    use carp_proto::wire::vrrp::Repr;
    let v = load("keepalived-vrrp3.txt");
    let cases = [
        ("v4", 5, 100, 100, vec!["192.0.2.50", "192.0.2.51"]),
        ("v6", 6, 150, 50, vec!["2001:db8::50"]),
    ];
    for (family, vrid, priority, interval_cs, addrs) in cases {
        let src: IpAddr = v[&format!("{family}_src")].parse().unwrap();
        let dst: IpAddr = v[&format!("{family}_dst")].parse().unwrap();
        let bytes = hex::decode(&v[&format!("{family}_vrrp")]).unwrap();
        let repr = Repr::parse(&bytes, src, dst).unwrap_or_else(|e| panic!("{family}: {e}"));
        let addresses: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(
            (repr.vrid, repr.priority, repr.interval_cs, &repr.addresses),
            (vrid, priority, interval_cs, &addresses),
            "{family}"
        );
        assert_eq!(repr.to_bytes(src, dst).unwrap(), bytes, "{family}");
    }
}
