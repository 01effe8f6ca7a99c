//! Tests of the carp interface layer through the public `Node` API: the
//! load-share mask, addresses owned by the interface, the pre-master gate and
//! the address-failure feedback.

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr};

use crate::action::{Action, CarpIfId, LinkId, State, VhostId};
use crate::balance::{ArpHashKey, Balancing};
use crate::config::{
    AdvSkew, CarpIfConfig, CarpNode, Gate, Passphrase, Vhid, VhostConfig, multicast_virtual_mac,
    virtual_mac,
};
use crate::node::{Node, NodeConfig, RxMeta};
use crate::time::Instant;

const LINK: LinkId = LinkId(1);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn vhid(n: u8) -> Vhid {
    Vhid::new(n).unwrap()
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn drain(node: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| node.poll_action()).collect()
}

fn one_node(advskew: u8) -> CarpIfConfig {
    let mut c = VhostConfig::new(vhid(1), &[IpAddr::V4(VIP)]);
    c.advskew = AdvSkew(advskew);
    c.passphrase = Passphrase::new(b"secret").unwrap();
    c.into()
}

fn nodes(skews: &[u8]) -> CarpIfConfig {
    let mut c = one_node(skews[0]);
    c.nodes = skews
        .iter()
        .enumerate()
        .map(|(i, s)| CarpNode {
            vhid: vhid(i as u8 + 1),
            advskew: AdvSkew(*s),
        })
        .collect();
    c
}

fn node_with(config: CarpIfConfig) -> (Node, CarpIfId) {
    let mut node = Node::new(NodeConfig::default());
    let cookies: Vec<[u8; 8]> = (0..config.nodes.len() as u8).map(|i| [i; 8]).collect();
    let iface = node.add_interface(at(0), LINK, config, &cookies).unwrap();
    drain(&mut node);
    (node, iface)
}

fn vid(n: u8) -> VhostId {
    VhostId {
        link: LINK,
        vhid: vhid(n),
    }
}

fn masks(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::LoadShare { mask, .. } => Some(*mask),
            _ => None,
        })
        .collect()
}

fn count(actions: &[Action], f: impl Fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| f(a)).count()
}

fn is_add(a: &Action) -> bool {
    matches!(a, Action::AddAddresses { .. })
}

fn is_remove(a: &Action) -> bool {
    matches!(a, Action::RemoveAddresses { .. })
}

#[test]
fn load_share_mask_sets_bit_i_for_node_i_master_here() {
    // Three nodes and balancing `none` asked for: OpenBSD runs `ip`.
    let mut config = nodes(&[0, 100, 200]);
    assert_eq!(config.balancing(), Balancing::Ip);
    config.requested_balancing = Balancing::None;
    let (mut node, iface) = node_with(config);
    // The addresses came up with the nodes leaving INIT, before any MASTER.
    assert!(node.interfaces()[0].live);
    assert_eq!(node.interfaces()[0].mask, 0);
    // Every master-down timer expires: nodes 1, 2 and 3 (slots 0, 1, 2) take over in turn.
    let mut seen = Vec::new();
    while node.interfaces()[0].mask != 0b111 {
        let t = node.poll_timeout().unwrap();
        node.handle_timeout(t);
        seen.extend(drain(&mut node));
    }
    assert_eq!(masks(&seen), vec![0b001, 0b011, 0b111]);
    assert_eq!(count(&seen, is_add), 0);
    // Node 2 forced to BACKUP clears bit 1 only.
    node.force_state(at(10_000), vid(2), State::Backup).unwrap();
    let actions = drain(&mut node);
    assert_eq!(masks(&actions), vec![0b101]);
    assert_eq!(node.interface_of(vid(3)), Some(iface));
    // Every node BACKUP: the mask is 0 but the addresses stay (every host
    // holds them; the datapath drops what the mask does not serve).
    node.force_state(at(10_001), vid(1), State::Backup).unwrap();
    node.force_state(at(10_002), vid(3), State::Backup).unwrap();
    let actions = drain(&mut node);
    assert_eq!(masks(&actions), vec![0b100, 0]);
    assert_eq!(count(&actions, is_remove), 0);
    assert!(node.interfaces()[0].live);
    // Disabled: every node in INIT, the addresses go.
    node.set_enabled(at(10_003), vid(1), false).unwrap();
    let actions = drain(&mut node);
    assert_eq!(count(&actions, is_remove), 1, "{actions:?}");
    assert!(!node.interfaces()[0].live);
}

#[test]
fn balancing_interfaces_never_announce() {
    for mode in [
        Balancing::Ip,
        Balancing::IpStealth,
        Balancing::IpUnicast,
        Balancing::Arp,
    ] {
        let mut config = nodes(&[0, 200]);
        config.requested_balancing = mode;
        let (mut node, _) = node_with(config);
        let mut seen = Vec::new();
        while node.interfaces()[0].mask != 0b11 {
            let t = node.poll_timeout().unwrap();
            node.handle_timeout(t);
            seen.extend(drain(&mut node));
        }
        assert_eq!(
            count(&seen, |a| matches!(a, Action::Announce { .. })),
            0,
            "{mode}"
        );
    }
}

fn advert_macs(actions: &[Action]) -> Vec<(u8, Option<[u8; 6]>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transmit { id, src_mac, .. } => Some((id.vhid.get(), *src_mac)),
            _ => None,
        })
        .collect()
}

#[test]
fn adverts_leave_from_the_node_mac_except_when_it_must_stay_hidden() {
    let run = |mode| {
        let mut config = nodes(&[0, 200]);
        config.requested_balancing = mode;
        let (mut node, _) = node_with(config);
        let mut seen = Vec::new();
        while node.interfaces()[0].mask != 0b11 {
            let t = node.poll_timeout().unwrap();
            node.handle_timeout(t);
            seen.extend(drain(&mut node));
        }
        let mut macs = advert_macs(&seen);
        macs.sort();
        macs.dedup();
        macs
    };
    // arp: each node from its own virtual MAC, so switches learn where it is MASTER.
    assert_eq!(
        run(Balancing::Arp),
        vec![
            (1, Some(virtual_mac(vhid(1)))),
            (2, Some(virtual_mac(vhid(2))))
        ]
    );
    // ip (multicast MAC) and ip-stealth (never a source): the parent's MAC.
    assert_eq!(run(Balancing::Ip), vec![(1, None), (2, None)]);
    assert_eq!(run(Balancing::IpStealth), vec![(1, None), (2, None)]);
}

#[test]
fn ip_modes_answer_solicitations_on_the_leaders_master_with_the_leaders_mac() {
    let client = [2, 0, 0, 0, 0, 7];
    let vip = IpAddr::V4(VIP);
    for (mode, mac) in [
        (Balancing::Ip, multicast_virtual_mac(vhid(1))),
        (Balancing::IpStealth, virtual_mac(vhid(1))),
        (Balancing::IpUnicast, virtual_mac(vhid(1))),
    ] {
        let mut config = nodes(&[200, 0]);
        config.requested_balancing = mode;
        let (mut node, _) = node_with(config);
        // Node 2 (slot 1) is MASTER first: not the leader, silent.
        let t = node.poll_timeout().unwrap();
        node.handle_timeout(t);
        drain(&mut node);
        assert_eq!(node.interfaces()[0].mask, 0b10);
        assert_eq!(node.solicitation_answer(LINK, client, vip), None, "{mode}");
        node.force_state(at(5000), vid(1), State::Master).unwrap();
        drain(&mut node);
        assert_eq!(
            node.solicitation_answer(LINK, client, vip),
            Some(mac),
            "{mode}"
        );
        // Not one of the shared addresses, or another link: silent.
        let other = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 99));
        assert_eq!(node.solicitation_answer(LINK, client, other), None);
        assert_eq!(node.solicitation_answer(LinkId(9), client, vip), None);
    }
}

#[test]
fn arp_mode_answers_for_the_node_the_requester_hashes_to() {
    let mut config = nodes(&[0, 200, 200]);
    config.requested_balancing = Balancing::Arp;
    let key = ArpHashKey::new(&config.passphrase);
    let (mut node, _) = node_with(config);
    // Only node 1 (slot 0) becomes MASTER here.
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    drain(&mut node);
    assert_eq!(node.interfaces()[0].mask, 0b001);
    let vip = IpAddr::V4(VIP);
    let mut answered = 0;
    for last in 0..=255u8 {
        let client = [2, 0, 0, 0, 0, last];
        let slot = carp_proto_slot(&key, client);
        let answer = node.solicitation_answer(LINK, client, vip);
        if slot == 0 {
            answered += 1;
            assert_eq!(answer, Some(virtual_mac(vhid(1))));
        } else {
            assert_eq!(answer, None, "slot {slot} is another host's");
        }
    }
    assert!(answered > 40 && answered < 130, "about a third: {answered}");
}

fn carp_proto_slot(key: &ArpHashKey, mac: [u8; 6]) -> usize {
    crate::balance::arp_slot(key, mac, 3).unwrap()
}

#[test]
fn duplicate_vhid_across_interfaces_is_refused() {
    let (mut node, _) = node_with(nodes(&[0, 100]));
    let mut other = one_node(0);
    other.nodes[0].vhid = vhid(2);
    assert!(node.add_interface(at(1), LINK, other, &[[9; 8]]).is_err());
}

#[test]
fn without_a_gate_takeover_goes_live_at_once() {
    let (mut node, _) = node_with(one_node(0));
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    let actions = drain(&mut node);
    assert!(matches!(
        actions[0],
        Action::StateChanged {
            to: State::Master,
            ..
        }
    ));
    assert!(is_add(&actions[1]));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::PrepareMaster { .. }))
    );
}

fn gated(strict: bool) -> (Node, CarpIfId, Instant) {
    let mut c = one_node(0);
    c.gate = Some(Gate {
        deadline: Duration::from_secs(2),
        strict,
    });
    let (mut node, iface) = node_with(c);
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    let actions = drain(&mut node);
    assert_eq!(
        actions,
        vec![Action::PrepareMaster {
            iface,
            deadline: t + Duration::from_secs(2)
        }],
        "the takeover waits: no transition and no address before the gate"
    );
    assert_eq!(node.state(vid(1)), Some(State::Backup));
    assert_eq!(node.poll_timeout(), Some(t + Duration::from_secs(2)));
    (node, iface, t)
}

#[test]
fn gate_opens_on_prepared() {
    let (mut node, iface, t) = gated(false);
    node.handle_prepared(t + Duration::from_millis(300), iface, true);
    let actions = drain(&mut node);
    assert!(matches!(
        actions[0],
        Action::StateChanged {
            to: State::Master,
            ..
        }
    ));
    assert!(is_add(&actions[1]));
    assert_eq!(node.interfaces()[0].gate_failures, 0);
}

#[test]
fn gate_deadline_goes_live_anyway_unless_strict() {
    let (mut node, _, t) = gated(false);
    node.handle_timeout(t + Duration::from_secs(2));
    let actions = drain(&mut node);
    assert_eq!(node.state(vid(1)), Some(State::Master));
    assert_eq!(count(&actions, is_add), 1);
    assert_eq!(node.interfaces()[0].gate_failures, 1);

    let (mut node, iface, t) = gated(true);
    node.handle_prepared(t + Duration::from_millis(10), iface, false);
    assert_eq!(count(&drain(&mut node), is_add), 0);
    assert_eq!(node.state(vid(1)), Some(State::Backup));
    assert_eq!(node.interfaces()[0].gate_failures, 1);
    // It waits for the master again, and asks once more when that times out.
    let next = node.poll_timeout().unwrap();
    node.handle_timeout(next);
    assert!(matches!(
        drain(&mut node)[..],
        [Action::PrepareMaster { .. }]
    ));
}

#[test]
fn failed_address_add_is_counted_and_retried_while_live() {
    let (mut node, iface) = node_with(one_node(0));
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    drain(&mut node);
    node.handle_address_result(t, iface, false);
    assert_eq!(node.interfaces()[0].address_failures, 1);
    let retry = node.poll_timeout().unwrap();
    assert_eq!(
        retry,
        t + Duration::from_secs(1),
        "retry before the next advert"
    );
    node.handle_timeout(retry);
    assert_eq!(count(&drain(&mut node), is_add), 1);
    node.handle_address_result(retry, iface, true);
    // The advert went out at the same instant; only its next one is left.
    assert_eq!(node.poll_timeout(), Some(t + Duration::from_secs(2)));
}

const PEER_SRC: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));
const GROUP: std::net::IpAddr = std::net::IpAddr::V4(crate::action::CARP_GROUP_V4);

#[test]
fn successor_advert_needs_a_valid_hmac() {
    let (mut master, _) = node_with(one_node(0));
    let t = master.poll_timeout().unwrap();
    master.handle_timeout(t);
    let Some(Action::Transmit { bytes, .. }) = drain(&mut master)
        .into_iter()
        .find(|a| matches!(a, Action::Transmit { .. }))
    else {
        panic!("no advertisement")
    };
    let mut me = Node::new(NodeConfig::default());
    me.add_interface(at(0), LINK, one_node(100), &[[7; 8]])
        .unwrap();
    drain(&mut me);
    assert_eq!(
        me.successor_advert(LINK, PEER_SRC, GROUP, &bytes),
        Some(vid(1))
    );
    let mut forged = bytes.clone();
    forged[20] ^= 1;
    crate::wire::CarpPacket::new_unchecked(&mut forged[..]).fill_checksum();
    assert_eq!(
        me.successor_advert(LINK, PEER_SRC, GROUP, &forged),
        None,
        "a forged digest"
    );
    let mut bow_out = bytes.clone();
    (bow_out[2], bow_out[5]) = (255, 255);
    crate::wire::CarpPacket::new_unchecked(&mut bow_out[..]).fill_checksum();
    assert_eq!(
        me.successor_advert(LINK, PEER_SRC, GROUP, &bow_out),
        None,
        "a bow-out is no successor"
    );
    // The same bytes fed in as a datagram are accepted.
    let meta = RxMeta {
        link: LINK,
        src: "192.0.2.2".parse().unwrap(),
        dst: "224.0.0.18".parse().unwrap(),
        ttl: 255,
        local: None,
    };
    me.handle_datagram(at(10), meta, &bytes);
    assert_eq!(me.stats().accepted, 1);
}

#[test]
fn advert_from_a_source_outside_the_allow_list_is_dropped() {
    let mut c = one_node(100);
    c.allowed_sources = vec!["192.0.2.2".parse().unwrap()];
    let mut node = Node::new(NodeConfig::default());
    node.add_interface(at(0), LINK, c, &[[7; 8]]).unwrap();
    drain(&mut node);
    let (mut master, _) = node_with(one_node(0));
    let t = master.poll_timeout().unwrap();
    master.handle_timeout(t);
    let Some(Action::Transmit { bytes, .. }) = drain(&mut master)
        .into_iter()
        .find(|a| matches!(a, Action::Transmit { .. }))
    else {
        panic!("no advertisement")
    };
    let meta = |src: &str| RxMeta {
        link: LINK,
        src: src.parse().unwrap(),
        dst: "224.0.0.18".parse().unwrap(),
        ttl: 255,
        local: None,
    };
    let timer = node.poll_timeout();
    node.handle_datagram(at(10), meta("192.0.2.99"), &bytes);
    assert!(drain(&mut node).is_empty());
    assert_eq!(
        node.poll_timeout(),
        timer,
        "a forbidden source restarts no timer"
    );
    let s = node.stats();
    assert_eq!((s.bad_src, s.accepted, s.dropped()), (1, 0, 1));
    node.handle_datagram(at(20), meta("192.0.2.2"), &bytes);
    assert_eq!(node.stats().accepted, 1, "the allowed peer is heard");
}
