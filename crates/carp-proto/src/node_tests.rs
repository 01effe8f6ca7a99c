//! State-machine and receive-path tests of [`Node`], one per OpenBSD rule,
//! with explicit instants and no sleeping (STYLE 6.7 item 4).

use core::time::Duration;
use std::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::auth::Auth;
use crate::config::Passphrase;
use crate::wire::carp::{AUTHLEN, Packet, Repr, TYPE_ADVERTISEMENT, VERSION};

const LINK: LinkId = LinkId(1);
const OTHER_LINK: LinkId = LinkId(2);
const COOKIE: [u8; 8] = [0xc0, 0x0c, 0x1e, 0, 0, 0, 0, 1];
const PEER_COOKIE: [u8; 8] = [0xbe, 0xef, 0, 0, 0, 0, 0, 2];
const PEER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

fn vhid(n: u8) -> Vhid {
    Vhid::new(n).unwrap()
}

fn cfg(n: u8, advskew: u8) -> VhostConfig {
    let mut c = VhostConfig::new(vhid(n), &[IpAddr::V4(VIP)]);
    c.advskew = AdvSkew(advskew);
    c.passphrase = Passphrase::new(b"secret").unwrap();
    c
}

fn id(n: u8) -> VhostId {
    VhostId {
        link: LINK,
        vhid: vhid(n),
    }
}

fn at(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn drain(node: &mut Node) -> Vec<Action> {
    std::iter::from_fn(|| node.poll_action()).collect()
}

fn node_with(preempt: bool, advskew: u8) -> Node {
    let mut node = Node::new(NodeConfig {
        preempt,
        ..NodeConfig::default()
    });
    node.add_vhost(at(0), LINK, cfg(1, advskew), COOKIE)
        .unwrap();
    drain(&mut node);
    node
}

/// Return the advertisement a peer with `c` would send.
fn advert(c: &VhostConfig, advbase: u8, advskew: u8, demote: u8, counter: [u8; 8]) -> [u8; 36] {
    let auth = Auth::new(&c.passphrase, c.vhid, &c.ipv4, &c.ipv6);
    Repr {
        version: VERSION,
        kind: TYPE_ADVERTISEMENT,
        vhid: c.vhid.get(),
        advskew,
        authlen: AUTHLEN,
        demote,
        advbase,
        counter,
        md: auth.generate(&counter),
    }
    .to_bytes()
}

fn peer_advert(advskew: u8, demote: u8) -> [u8; 36] {
    advert(&cfg(1, 0), 1, advskew, demote, PEER_COOKIE)
}

fn meta() -> RxMeta {
    RxMeta {
        link: LINK,
        src: PEER,
        dst: IpAddr::V4(crate::action::CARP_GROUP_V4),
        ttl: 255,
        local: None,
    }
}

/// Bring the node's vhid 1 to MASTER by letting its master-down timer expire.
fn make_master(node: &mut Node) -> Instant {
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    drain(node);
    assert_eq!(node.state(id(1)), Some(State::Master));
    t
}

fn transmits(actions: &[Action]) -> Vec<[u8; 36]> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transmit { bytes, .. } => bytes.as_slice().try_into().ok(),
            _ => None,
        })
        .collect()
}

fn announces(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Announce { .. }))
        .count()
}

// ===== start-up and timers =====

#[test]
fn cold_start_goes_backup_then_master_after_three_intervals() {
    let mut node = Node::new(NodeConfig::default());
    node.add_vhost(at(0), LINK, cfg(1, 0), COOKIE).unwrap();
    let actions = drain(&mut node);
    assert_eq!(
        actions,
        vec![Action::StateChanged {
            id: id(1),
            from: State::Init,
            to: State::Backup,
            cause: Cause::Init
        }]
    );
    // OpenBSD regress carp_1: "need 3 seconds to become master".
    assert_eq!(node.poll_timeout(), Some(at(3000)));
    node.handle_timeout(at(3000));
    let actions = drain(&mut node);
    assert!(matches!(
        actions[0],
        Action::StateChanged {
            to: State::Master,
            cause: Cause::MasterDown,
            ..
        }
    ));
    assert!(matches!(actions[1], Action::AddAddresses { .. }));
    assert_eq!(transmits(&actions).len(), 1);
    assert_eq!(announces(&actions), 1);
    assert_eq!(node.poll_timeout(), Some(at(4000)));
}

#[test]
fn master_advertises_every_advbase_plus_skew() {
    let mut node = node_with(false, 128);
    let t = make_master(&mut node);
    assert_eq!(node.poll_timeout(), Some(t + Duration::from_millis(1500)));
    node.handle_timeout(t + Duration::from_millis(1500));
    let actions = drain(&mut node);
    let packets = transmits(&actions);
    assert_eq!(packets.len(), 1);
    let p = Packet::new_checked(&packets[0][..]).unwrap();
    assert!(p.verify_checksum());
    assert_eq!(
        (p.advbase(), p.advskew(), p.demote(), p.counter()),
        (1, 128, 0, COOKIE)
    );
}

#[test]
fn delayed_arp_sent_two_adverts_after_takeover() {
    let mut node = node_with(false, 0);
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    assert_eq!(announces(&drain(&mut node)), 1, "announce on takeover");
    node.handle_timeout(t + Duration::from_secs(1));
    assert_eq!(
        announces(&drain(&mut node)),
        0,
        "first advert after takeover"
    );
    node.handle_timeout(t + Duration::from_secs(2));
    assert_eq!(announces(&drain(&mut node)), 1, "second advert repeats it");
    node.handle_timeout(t + Duration::from_secs(3));
    assert_eq!(announces(&drain(&mut node)), 0, "only once");
}

#[test]
fn each_family_has_its_own_master_down_timer() {
    let mut c = cfg(1, 0);
    c.ipv6.push("2001:db8::100".parse().unwrap());
    let mut node = Node::new(NodeConfig::default());
    node.add_vhost(at(0), LINK, c.clone(), COOKIE).unwrap();
    drain(&mut node);
    // IPv4 adverts keep arriving from a better master; IPv6 ones are lost.
    let pkt = advert(&c, 1, 0, 0, PEER_COOKIE);
    for s in 1..=3 {
        node.handle_datagram(at(s * 1000), meta(), &pkt);
    }
    assert_eq!(node.state(id(1)), Some(State::Backup));
    node.handle_timeout(at(3000));
    let actions = drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Master), "{actions:?}");
    // As MASTER it advertises on both families.
    assert_eq!(transmits(&actions).len(), 2);
}

// ===== election rules =====

#[test]
fn master_steps_down_on_equal_timing_and_demote() {
    let mut node = node_with(false, 0);
    make_master(&mut node);
    node.handle_datagram(at(5000), meta(), &peer_advert(0, 0));
    let actions = drain(&mut node);
    assert!(matches!(
        actions[0],
        Action::StateChanged {
            to: State::Backup,
            cause: Cause::Superseded,
            ..
        }
    ));
    assert!(matches!(actions[1], Action::RemoveAddresses { .. }));
}

#[test]
fn master_yielding_to_a_better_master_says_farewell_to_it_only() {
    let mut node = node_with(false, 100);
    make_master(&mut node);
    node.handle_datagram(at(5000), meta(), &peer_advert(0, 0));
    let actions = drain(&mut node);
    assert!(matches!(
        actions[0],
        Action::StateChanged {
            to: State::Backup,
            ..
        }
    ));
    let farewells: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            // A farewell is the one advertisement sent to a unicast address.
            Action::Transmit { dst, bytes, .. } => {
                Some(((!dst.is_multicast()).then_some(*dst), bytes[2]))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        farewells,
        vec![(Some(PEER), 100)],
        "one unicast advert with our own advskew"
    );
    // Repeated twice, 200 ms apart, in case one is lost; then no more.
    let unicast = |actions: &[Action]| -> Vec<IpAddr> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Transmit { dst, .. } if !dst.is_multicast() => Some(*dst),
                _ => None,
            })
            .collect()
    };
    assert_eq!(node.poll_timeout(), Some(at(5200)));
    for t in [5200, 5400] {
        node.handle_timeout(at(t));
        assert_eq!(unicast(&drain(&mut node)), [PEER], "repeat at {t} ms");
    }
    assert!(
        node.poll_timeout() > Some(at(8000)),
        "next is the master-down timer"
    );
    node.handle_timeout(at(5600));
    assert!(unicast(&drain(&mut node)).is_empty());
}

#[test]
fn farewell_repeats_stop_when_the_backup_takes_over_again() {
    let mut node = node_with(false, 100);
    make_master(&mut node);
    node.handle_datagram(at(5000), meta(), &peer_advert(0, 0));
    drain(&mut node);
    // Forced back to MASTER before the first repeat: it advertises to the
    // group, but tells the old winner nothing more.
    node.force_state(at(5100), id(1), State::Master).unwrap();
    drain(&mut node);
    node.handle_timeout(at(5200));
    let sent_to_peer = drain(&mut node)
        .iter()
        .any(|a| matches!(a, Action::Transmit { dst, .. } if *dst == PEER));
    assert!(!sent_to_peer);
}

#[test]
fn master_yielding_on_equal_timing_sends_no_farewell() {
    let mut node = node_with(false, 0);
    make_master(&mut node);
    node.handle_datagram(at(5000), meta(), &peer_advert(0, 0));
    assert!(
        transmits(&drain(&mut node)).is_empty(),
        "it would make the peer yield too"
    );
}

#[test]
fn master_keeps_role_and_reannounces_against_slower_master() {
    let mut node = node_with(true, 0);
    let t = make_master(&mut node);
    node.handle_datagram(at(5000), meta(), &peer_advert(100, 0));
    let actions = drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Master));
    // After a healed partition the switches must learn the virtual MAC here again.
    assert_eq!(announces(&actions), 1, "{actions:?}");
    assert!(transmits(&actions).is_empty());
    // ...and once more two advertisements later.
    let mut later = Vec::new();
    for k in 1..=2 {
        let next = node.poll_timeout().unwrap();
        assert!(next > t);
        node.handle_timeout(next);
        later.push((k, announces(&drain(&mut node))));
    }
    assert_eq!(later, vec![(1, 0), (2, 1)]);
}

#[test]
fn backup_preempts_slower_master_only_with_preempt() {
    for preempt in [false, true] {
        let mut node = node_with(preempt, 0);
        node.handle_datagram(at(500), meta(), &peer_advert(100, 0));
        let expected = if preempt {
            State::Master
        } else {
            State::Backup
        };
        assert_eq!(node.state(id(1)), Some(expected), "preempt={preempt}");
    }
}

#[test]
fn backup_takes_over_higher_demote_master_regardless_of_preempt() {
    let mut node = node_with(false, 100);
    node.handle_datagram(at(500), meta(), &peer_advert(0, 1));
    assert_eq!(node.state(id(1)), Some(State::Master));
    assert_eq!(node.status()[0].cause, Cause::HigherDemote);
}

#[test]
fn backup_treats_master_slower_than_3x_advbase_as_down() {
    let mut node = node_with(false, 0);
    let slow = advert(&cfg(1, 0), 4, 0, 0, PEER_COOKIE);
    node.handle_datagram(at(500), meta(), &slow);
    assert_eq!(node.status()[0].cause, Cause::SlowMaster);
    assert_eq!(node.state(id(1)), Some(State::Master));
}

#[test]
fn backup_restarts_master_down_timer_on_better_master() {
    let mut node = node_with(false, 100);
    node.handle_datagram(at(2000), meta(), &peer_advert(0, 0));
    assert_eq!(node.state(id(1)), Some(State::Backup));
    // 3 * 1 + 100/256 s after the advert (the default formula at advbase 1).
    assert_eq!(
        node.poll_timeout(),
        Some(at(2000) + Duration::from_micros(3_390_625))
    );
}

#[test]
fn bow_out_advert_uses_255_255() {
    let mut node = node_with(false, 0);
    make_master(&mut node);
    node.begin_shutdown(at(9000));
    let actions = drain(&mut node);
    let Action::Transmit { bytes: packet, .. } = &actions[0] else {
        panic!("bow-out must come first: {actions:?}")
    };
    let p = Packet::new_checked(&packet[..]).unwrap();
    assert_eq!((p.advbase(), p.advskew()), (255, 255));
    assert!(matches!(
        actions[1],
        Action::StateChanged {
            to: State::Init,
            cause: Cause::Shutdown,
            ..
        }
    ));
    assert!(matches!(actions[2], Action::RemoveAddresses { .. }));
    assert_eq!(node.poll_timeout(), None, "no timer after shutdown");
}

#[test]
fn bow_out_preview_is_what_shutdown_sends_and_changes_nothing() {
    let mut node = node_with(false, 0);
    assert!(
        node.bow_out_preview(at(10)).is_empty(),
        "not MASTER: nothing to send"
    );
    make_master(&mut node);
    let preview = node.bow_out_preview(at(9000));
    assert_eq!(node.state(id(1)), Some(State::Master));
    assert!(
        node.poll_action().is_none(),
        "the node's outbox is untouched"
    );
    node.begin_shutdown(at(9000));
    let sent: Vec<Action> = drain(&mut node)
        .into_iter()
        .filter(|a| matches!(a, Action::Transmit { .. }))
        .collect();
    assert_eq!(preview.len(), 1);
    assert_eq!(preview, sent);
}

/// Input: three interfaces, two MASTER (one demoted by a group) and one
/// BACKUP. Output: the preview is the shutdown's transmits, in its order,
/// and is the interfaces' own previews one after another.
#[test]
fn bow_out_preview_of_each_interface_adds_up_to_shutdown() {
    let config = |n: u8, advskew: u8| {
        let mut c = cfg(n, advskew);
        c.ipv4 = vec![Ipv4Addr::new(192, 0, 2, 100 + n)];
        c
    };
    let mut node = Node::new(NodeConfig::default());
    let mut c2 = config(2, 0);
    c2.groups = vec!["uplink".into()];
    let c3 = config(3, 200);
    node.add_vhost(at(0), LINK, config(1, 0), COOKIE).unwrap();
    node.add_vhost(at(0), LINK, c2, COOKIE).unwrap();
    node.add_vhost(at(0), LINK, c3.clone(), COOKIE).unwrap();
    drain(&mut node);
    node.demote_group(at(0), "uplink", 7);
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    drain(&mut node);
    // vhid 3 hears a better MASTER and stays BACKUP.
    node.handle_datagram(t, meta(), &advert(&c3, 1, 0, 0, PEER_COOKIE));
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Master));
    assert_eq!(node.state(id(2)), Some(State::Master));
    assert_eq!(node.state(id(3)), Some(State::Backup));
    let now = t + Duration::from_millis(500);
    let preview = node.bow_out_preview(now);
    assert_eq!(preview.len(), 2, "one bow-out per MASTER");
    let parts: Vec<Action> = [1, 2, 3]
        .into_iter()
        .flat_map(|n| node.bow_out_preview_of(CarpIfId::of(id(n)), now))
        .collect();
    assert_eq!(preview, parts);
    node.begin_shutdown(now);
    let sent: Vec<Action> = drain(&mut node)
        .into_iter()
        .filter(|a| matches!(a, Action::Transmit { .. }))
        .collect();
    assert_eq!(preview, sent);
}

#[test]
fn backup_takes_over_at_once_on_bow_out() {
    let mut node = node_with(false, 100);
    let bow = advert(&cfg(1, 0), 255, 255, 0, PEER_COOKIE);
    node.handle_datagram(at(1000), meta(), &bow);
    assert_eq!(node.state(id(1)), Some(State::Master));
    assert_eq!(node.status()[0].cause, Cause::BowOut);
}

#[test]
fn forced_states_work_from_backup_and_master() {
    let mut node = node_with(false, 100);
    node.force_state(at(100), id(1), State::Master).unwrap();
    assert_eq!(node.state(id(1)), Some(State::Master));
    node.force_state(at(200), id(1), State::Backup).unwrap();
    assert_eq!(node.state(id(1)), Some(State::Backup));
    assert_eq!(
        node.force_state(at(300), id(1), State::Init),
        Err(ControlError::BadState(State::Init))
    );
    let unknown = id(9);
    assert_eq!(
        node.force_state(at(300), unknown, State::Master),
        Err(ControlError::UnknownVhost(unknown))
    );
}

#[test]
fn forced_backup_bows_out_before_releasing_addresses() {
    let mut node = node_with(false, 100);
    node.force_state(at(100), id(1), State::Master).unwrap();
    drain(&mut node);
    node.force_state(at(200), id(1), State::Backup).unwrap();
    let actions = drain(&mut node);
    let packets = transmits(&actions);
    assert_eq!(packets.len(), 1, "one bow-out advertisement");
    assert_eq!(
        (packets[0][2], packets[0][5]),
        (255, 255),
        "advskew, advbase"
    );
    let bow = actions
        .iter()
        .position(|a| matches!(a, Action::Transmit { .. }));
    let removal = actions
        .iter()
        .position(|a| matches!(a, Action::RemoveAddresses { .. }));
    assert!(
        bow < removal,
        "the peer hears the bow-out first: {actions:?}"
    );
}

// ===== demotion =====

#[test]
fn three_send_errors_demote_three_successes_undemote() {
    let mut node = node_with(false, 0);
    make_master(&mut node);
    for _ in 0..2 {
        node.handle_send_result(at(4000), id(1), false);
    }
    assert_eq!(node.groups()["carp"], 0);
    node.handle_send_result(at(4000), id(1), false);
    assert_eq!(node.groups()["carp"], 1);
    assert_eq!(node.skew_demotion(), 240);
    let actions = drain(&mut node);
    let packets = transmits(&actions);
    assert_eq!(packets.len(), 1, "the demotion is advertised at once");
    assert_eq!(packets[0][4], 1, "demote byte");
    assert_eq!(packets[0][2], 240, "FreeBSD demoted advskew");
    for _ in 0..2 {
        node.handle_send_result(at(5000), id(1), true);
    }
    assert_eq!(node.groups()["carp"], 1);
    node.handle_send_result(at(5000), id(1), true);
    assert_eq!(node.groups()["carp"], 0);
    assert_eq!(node.skew_demotion(), 0);
}

#[test]
fn operator_demotion_is_advertised_at_once() {
    let mut node = node_with(false, 0);
    make_master(&mut node);
    node.demote_group(at(5000), "carp", 1);
    let packets = transmits(&drain(&mut node));
    assert_eq!(packets.len(), 1);
    assert_eq!(packets[0][4], 1);
    assert_eq!(node.demote_group(at(5001), "carp", -5), 0, "never below 0");
}

#[test]
fn link_down_goes_init_and_demotes_the_other_links() {
    let mut node = Node::new(NodeConfig::default());
    node.add_vhost(at(0), LINK, cfg(1, 0), COOKIE).unwrap();
    let mut other = cfg(2, 0);
    other.ipv4 = vec![Ipv4Addr::new(198, 51, 100, 100)];
    node.add_vhost(at(0), OTHER_LINK, other, COOKIE).unwrap();
    node.handle_timeout(at(3000));
    drain(&mut node);
    node.handle_link(at(5000), LINK, false);
    let actions = drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Init));
    assert_eq!(node.groups()["carp"], 1);
    // The vhost on the other link advertises demote 1 immediately (group failover).
    let other_id = VhostId {
        link: OTHER_LINK,
        vhid: vhid(2),
    };
    let sent: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Transmit { id, bytes, .. } if *id == other_id => Some(bytes[4]),
            _ => None,
        })
        .collect();
    assert_eq!(sent, vec![1]);
    node.handle_link(at(6000), LINK, true);
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Backup));
    assert_eq!(node.groups()["carp"], 0);
}

#[test]
fn interface_fault_bows_out_goes_init_and_demotes_until_cleared() {
    let mut node = node_with(false, 0);
    make_master(&mut node);
    let iface = node.interface_of(id(1)).unwrap();
    node.handle_interface_fault(at(9000), iface, true);
    let actions = drain(&mut node);
    let Action::Transmit { bytes, .. } = &actions[0] else {
        panic!("bow-out first: {actions:?}")
    };
    let p = Packet::new_checked(&bytes[..]).unwrap();
    assert_eq!((p.advbase(), p.advskew()), (255, 255));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::StateChanged {
            to: State::Init,
            cause: Cause::AddressFault,
            ..
        }
    )));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::RemoveAddresses { .. }))
    );
    assert_eq!(node.state(id(1)), Some(State::Init));
    assert_eq!(node.groups()["carp"], 1);
    assert!(node.interface_faulted(iface));
    // A repeat changes nothing; a forced MASTER cannot leave INIT.
    node.handle_interface_fault(at(9100), iface, true);
    assert!(drain(&mut node).is_empty());
    assert_eq!(node.groups()["carp"], 1);
    node.handle_interface_fault(at(10_000), iface, false);
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Backup));
    assert_eq!(node.groups()["carp"], 0);
    assert!(!node.interface_faulted(iface));
}

#[test]
fn interface_fault_and_link_down_demote_independently() {
    let mut node = node_with(false, 0);
    let iface = node.interface_of(id(1)).unwrap();
    node.handle_interface_fault(at(100), iface, true);
    node.handle_link(at(200), LINK, false);
    drain(&mut node);
    assert_eq!(node.groups()["carp"], 2);
    node.handle_link(at(300), LINK, true);
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Init), "still faulted");
    node.handle_interface_fault(at(400), iface, false);
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Backup));
    assert_eq!(node.groups()["carp"], 0);
}

// ===== receive path: one test per validation rule, in OpenBSD order =====

/// Feed `bytes` with `meta` to a BACKUP and return the counters that moved.
fn drop_counters(meta: RxMeta, bytes: &[u8]) -> Stats {
    let mut node = node_with(false, 0);
    let before_timeout = node.poll_timeout();
    node.handle_datagram(at(100), meta, bytes);
    assert!(
        drain(&mut node).is_empty(),
        "a dropped packet changes nothing"
    );
    assert_eq!(node.poll_timeout(), before_timeout, "nor the timers");
    let s = node.stats();
    assert_eq!(s.received(), 1);
    assert_eq!(s.dropped() + s.accepted, 1, "exactly one counter: {s:?}");
    s
}

#[test]
fn drop_packet_on_interface_without_vhosts() {
    let m = RxMeta {
        link: OTHER_LINK,
        ..meta()
    };
    assert_eq!(drop_counters(m, &peer_advert(0, 0)).bad_if, 1);
}

#[test]
fn drop_packet_with_ttl_not_255() {
    let m = RxMeta { ttl: 64, ..meta() };
    assert_eq!(drop_counters(m, &peer_advert(0, 0)).bad_ttl, 1);
}

#[test]
fn drop_packet_too_short() {
    assert_eq!(drop_counters(meta(), &peer_advert(0, 0)[..35]).bad_len, 1);
}

#[test]
fn drop_packet_with_bad_checksum() {
    let mut p = peer_advert(0, 0);
    p[7] ^= 0xff;
    assert_eq!(drop_counters(meta(), &p).bad_sum, 1);
}

#[test]
fn drop_packet_for_unknown_vhid() {
    let p = advert(&cfg(9, 0), 1, 0, 0, PEER_COOKIE);
    assert_eq!(drop_counters(meta(), &p).bad_vhid, 1);
}

#[test]
fn drop_packet_with_bad_version() {
    let mut p = peer_advert(0, 0);
    p[0] = 0x41;
    Packet::new_unchecked(&mut p[..]).fill_checksum();
    assert_eq!(drop_counters(meta(), &p).bad_ver, 1);
    // A valid VRRPv3 advertisement: parsed, but no interface speaks VRRP.
    let vrrp = crate::wire::vrrp::Repr {
        vrid: 1,
        priority: 100,
        interval_cs: 100,
        kind: crate::wire::vrrp::TYPE_ADVERTISEMENT,
        addresses: vec![IpAddr::V4(VIP)],
    };
    let m = meta();
    let bytes = vrrp.to_bytes(m.src, m.dst).unwrap();
    assert_eq!(drop_counters(m, &bytes).bad_ver, 1);
    // A version-3 packet whose pseudo-header checksum fails is a bad sum.
    let mut broken = bytes.clone();
    broken[2] ^= 1;
    assert_eq!(drop_counters(meta(), &broken).bad_sum, 1);
}

#[test]
fn drop_packet_with_wrong_password() {
    let mut other = cfg(1, 0);
    other.passphrase = Passphrase::new(b"wrong").unwrap();
    let p = advert(&other, 1, 0, 0, PEER_COOKIE);
    assert_eq!(drop_counters(meta(), &p).bad_auth, 1);
}

fn cause_to_master(actions: &[Action]) -> Option<Cause> {
    actions.iter().find_map(|a| match a {
        Action::StateChanged {
            to: State::Master,
            cause,
            ..
        } => Some(*cause),
        _ => None,
    })
}

#[test]
fn master_down_while_only_failing_adverts_are_heard_says_so() {
    let mut node = node_with(false, 0);
    let mut other = cfg(1, 0);
    other.passphrase = Passphrase::new(b"wrong").unwrap();
    node.handle_datagram(at(1000), meta(), &advert(&other, 1, 0, 0, PEER_COOKIE));
    let status = node.status();
    assert_eq!(status[0].last_bad_auth, Some((PEER, at(1000))));
    node.handle_timeout(at(3000));
    assert_eq!(cause_to_master(&drain(&mut node)), Some(Cause::AuthFailing));
    assert_eq!(
        Cause::AuthFailing.to_string(),
        "master's advertisements fail authentication"
    );
}

#[test]
fn master_down_after_an_authentic_advert_is_a_plain_timeout() {
    let mut node = node_with(false, 0);
    let mut other = cfg(1, 0);
    other.passphrase = Passphrase::new(b"wrong").unwrap();
    node.handle_datagram(at(500), meta(), &advert(&other, 1, 0, 0, PEER_COOKIE));
    // A real master was heard after the failing one, then went silent.
    node.handle_datagram(at(1000), meta(), &peer_advert(0, 0));
    drain(&mut node);
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    assert_eq!(cause_to_master(&drain(&mut node)), Some(Cause::MasterDown));
}

#[test]
fn an_old_failing_advert_does_not_colour_a_later_timeout() {
    let mut node = node_with(false, 0);
    let mut other = cfg(1, 0);
    other.passphrase = Passphrase::new(b"wrong").unwrap();
    // Heard once at start, then nothing for longer than the master-down interval.
    node.handle_datagram(at(0), meta(), &advert(&other, 1, 0, 0, PEER_COOKIE));
    let t = make_master(&mut node);
    assert!(t >= at(3000));
    node.force_state(t, id(1), State::Backup).unwrap();
    drain(&mut node);
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    assert_eq!(cause_to_master(&drain(&mut node)), Some(Cause::MasterDown));
}

#[test]
fn drop_packet_with_different_address_set() {
    let mut other = cfg(1, 0);
    other.ipv4.push(Ipv4Addr::new(192, 0, 2, 101));
    let p = advert(&other, 1, 0, 0, PEER_COOKIE);
    assert_eq!(drop_counters(meta(), &p).bad_auth, 1);
}

#[test]
fn drop_own_reflected_packet() {
    let p = advert(&cfg(1, 0), 1, 0, 0, COOKIE);
    assert_eq!(drop_counters(meta(), &p).replay, 1);
}

#[test]
fn checks_run_in_openbsd_order() {
    // Bad TTL *and* bad checksum *and* unknown vhid: TTL is checked first.
    let mut p = advert(&cfg(9, 0), 1, 0, 0, PEER_COOKIE);
    p[7] ^= 0xff;
    let s = drop_counters(RxMeta { ttl: 1, ..meta() }, &p);
    assert_eq!((s.bad_ttl, s.bad_sum, s.bad_vhid), (1, 0, 0));
    // Bad checksum and unknown vhid: checksum first.
    let s = drop_counters(meta(), &p);
    assert_eq!((s.bad_sum, s.bad_vhid), (1, 0));
}

#[test]
fn odd_type_and_authlen_are_accepted_and_counted() {
    let mut p = peer_advert(0, 0);
    p[0] = 0x22;
    p[3] = 3;
    Packet::new_unchecked(&mut p[..]).fill_checksum();
    let mut node = node_with(false, 0);
    node.handle_datagram(at(100), meta(), &p);
    let s = node.stats();
    assert_eq!((s.received(), s.accepted, s.odd_header), (1, 1, 1));
    // Accepted like any advertisement: the master-down timer restarted.
    assert_eq!(node.poll_timeout(), Some(at(3100)));
}

#[test]
fn packets_for_a_vhost_in_init_are_bad_vhid() {
    let mut node = node_with(false, 0);
    node.handle_link(at(10), LINK, false);
    drain(&mut node);
    node.handle_datagram(at(20), meta(), &peer_advert(0, 0));
    assert_eq!(node.stats().bad_vhid, 1);
}

#[test]
fn duplicate_vhid_on_one_link_is_refused() {
    let mut node = node_with(false, 0);
    assert_eq!(
        node.add_vhost(at(1), LINK, cfg(1, 0), COOKIE),
        Err(ControlError::Duplicate(id(1)))
    );
    // The same vhid on another link is another vhost.
    assert!(node.add_vhost(at(1), OTHER_LINK, cfg(1, 0), COOKIE).is_ok());
}

#[test]
fn reconfigure_with_same_addresses_keeps_master() {
    let mut node = node_with(false, 0);
    make_master(&mut node);
    node.reconfigure_vhost(at(5000), id(1), cfg(1, 50)).unwrap();
    assert!(
        drain(&mut node)
            .iter()
            .all(|a| !matches!(a, Action::RemoveAddresses { .. }))
    );
    assert_eq!(node.state(id(1)), Some(State::Master));
}

// ===== FreeBSD's HMAC context (spec 2.2) =====

/// The vhid of auth.rs's hand-computed vector: key "freebsd", vhid 7,
/// 192.0.2.20, 192.0.2.10, 2001:db8::7 and the link-local fe80::7.
fn freebsd_vhid(hmac: crate::config::HmacContext, advskew: u8) -> VhostConfig {
    let addrs: Vec<IpAddr> = ["192.0.2.20", "192.0.2.10", "2001:db8::7", "fe80::7"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    let mut c = VhostConfig::new(vhid(7), &addrs);
    c.passphrase = Passphrase::new(b"freebsd").unwrap();
    c.advskew = AdvSkew(advskew);
    c.hmac = hmac;
    c
}

/// Input: the advertisement a FreeBSD host sends for that vhid (advskew 0,
/// counter 01..08, the digest of FreeBSD's `carp_hmac_prepare` message
/// computed by hand), to a node with `hmac freebsd` and to one with the
/// default. Output: both accept it (OpenBSD's verify tries both contexts);
/// the freebsd node's own advertisements carry the FreeBSD digest, the
/// default node's the OpenBSD one, which a FreeBSD host would reject.
#[test]
fn freebsd_hmac_context_on_the_wire() {
    use crate::config::HmacContext;
    const FREEBSD_MD: &str = "899caeefb9b3dcc2d956d5898db1508ce213ea8c";
    let unhex = |s: &str| -> [u8; 20] {
        let v: Vec<u8> = (0..20)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        v.try_into().unwrap()
    };
    let counter = [1, 2, 3, 4, 5, 6, 7, 8];
    let from_freebsd = Repr {
        version: VERSION,
        kind: TYPE_ADVERTISEMENT,
        vhid: 7,
        advskew: 0,
        authlen: AUTHLEN,
        demote: 0,
        advbase: 1,
        counter,
        md: unhex(FREEBSD_MD),
    }
    .to_bytes();
    for (hmac, signs_like_freebsd) in [(HmacContext::Freebsd, true), (HmacContext::Openbsd, false)]
    {
        let mut node = Node::new(NodeConfig::default());
        node.add_vhost(at(0), LINK, freebsd_vhid(hmac, 100), COOKIE)
            .unwrap();
        drain(&mut node);
        node.handle_datagram(at(10), meta(), &from_freebsd);
        let s = node.stats();
        assert_eq!((s.accepted, s.bad_auth), (1, 0), "{hmac:?}: {s:?}");

        // Its own advertisement, once MASTER (no more adverts from the peer).
        let t = node.poll_timeout().unwrap();
        node.handle_timeout(t);
        let sent = transmits(&drain(&mut node));
        let ours = Packet::new_checked(&sent[0][..]).unwrap();
        let ours = Repr::parse(&ours).unwrap();
        let c = freebsd_vhid(HmacContext::Freebsd, 0);
        let freebsd = Auth::with_context(
            &c.passphrase,
            c.vhid,
            &c.ipv4,
            &c.ipv6,
            HmacContext::Freebsd,
        );
        let openbsd = Auth::new(&c.passphrase, c.vhid, &c.ipv4, &c.ipv6);
        assert_eq!(
            freebsd.generate(&ours.counter) == ours.md,
            signs_like_freebsd,
            "{hmac:?}"
        );
        assert_eq!(
            openbsd.generate(&ours.counter) == ours.md,
            !signs_like_freebsd
        );
    }
}

// ===== unicast peers (FreeBSD 14 `peer`, several here) =====

fn with_peers(peers: &[&str], dual_path: bool, ttl_check: Option<bool>) -> Node {
    let mut c: CarpIfConfig = cfg(1, 0).into();
    c.peers = peers.iter().map(|p| p.parse().unwrap()).collect();
    c.dual_path = dual_path;
    c.ttl_check = ttl_check;
    let mut node = Node::new(NodeConfig::default());
    node.add_interface(at(0), LINK, c, &[COOKIE]).unwrap();
    drain(&mut node);
    node
}

fn destinations(actions: &[Action]) -> Vec<(IpAddr, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transmit { dst, src_mac, .. } => Some((*dst, src_mac.is_some())),
            _ => None,
        })
        .collect()
}

/// Input: two IPv4 peers, one ending in .224 (FreeBSD PR 284872 took such
/// peers for multicast); then the same with dual-path. Output: each
/// advertisement goes to every peer, from the parent's MAC (unicast), and
/// not to 224.0.0.18; with dual-path to the group too, from the virtual MAC.
#[test]
fn advertisements_go_to_every_peer_and_with_dual_path_to_the_group() {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    for (dual, want) in [
        (
            false,
            vec![(ip("192.0.2.2"), false), (ip("198.51.100.224"), false)],
        ),
        (
            true,
            vec![
                (ip("192.0.2.2"), false),
                (ip("198.51.100.224"), false),
                (ip("224.0.0.18"), true),
            ],
        ),
    ] {
        let mut node = with_peers(&["192.0.2.2", "198.51.100.224"], dual, None);
        let t = node.poll_timeout().unwrap();
        node.handle_timeout(t);
        let sent = destinations(&drain(&mut node));
        assert_eq!(sent, want, "dual-path {dual}");
        assert_eq!(node.stats().opackets, want.len() as u64);
    }
}

/// Input: adverts with TTL 254 (one router hop) to a unicast address and to
/// the group, under each `ttl_check`. Output: by default only the multicast
/// one is dropped as bad_ttl (FreeBSD `carp_input`); `on` drops both, `off`
/// neither.
#[test]
fn ttl_is_checked_for_multicast_only_unless_configured() {
    let unicast = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let group = IpAddr::V4(crate::action::CARP_GROUP_V4);
    for (check, unicast_dropped, multicast_dropped) in [
        (None, false, true),
        (Some(true), true, true),
        (Some(false), false, false),
    ] {
        for (dst, dropped) in [(unicast, unicast_dropped), (group, multicast_dropped)] {
            let mut node = with_peers(&["192.0.2.2"], false, check);
            let rx = RxMeta {
                dst,
                ttl: 254,
                ..meta()
            };
            node.handle_datagram(at(10), rx, &peer_advert(0, 0));
            let s = node.stats();
            assert_eq!(
                (s.bad_ttl, s.accepted),
                (u64::from(dropped), u64::from(!dropped)),
                "ttl_check {check:?}, to {dst}"
            );
        }
    }
}

/// Input: peers configured; a valid advert from an address that is not a
/// peer, then one from the peer. Output: the first dropped and counted as
/// bad_peer only; the second accepted. An IPv6 advert is not held to the
/// IPv4 peers (no IPv6 peer: the family uses the group).
#[test]
fn adverts_from_others_than_the_peers_are_dropped_and_counted() {
    let mut node = with_peers(&["192.0.2.3"], false, None);
    node.handle_datagram(at(10), meta(), &peer_advert(0, 0));
    let s = node.stats();
    assert_eq!((s.bad_peer, s.accepted, s.dropped()), (1, 0, 1), "{s:?}");
    let from_peer = RxMeta {
        src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 3)),
        ..meta()
    };
    node.handle_datagram(at(20), from_peer, &peer_advert(0, 0));
    assert_eq!(node.stats().accepted, 1);
    let v6 = RxMeta {
        src: "fe80::2".parse().unwrap(),
        dst: IpAddr::V6(crate::action::CARP_GROUP_V6),
        ..meta()
    };
    node.handle_datagram(at(30), v6, &peer_advert(0, 0));
    assert_eq!(node.stats().bad_peer, 1);
}

// ===== VRRPv3 (RFC 9568), carpver 3 =====

fn vrrp_node(priority: u8) -> Node {
    let mut c: CarpIfConfig = cfg(1, 0).into();
    c.flavour = crate::config::Flavour::Vrrp;
    c.vrrp = crate::config::VrrpParams {
        priority,
        interval_cs: 100,
        v6_mac_freebsd: false,
    };
    c.validate().unwrap();
    let mut node = Node::new(NodeConfig::default());
    node.add_interface(at(0), LINK, c, &[COOKIE]).unwrap();
    drain(&mut node);
    node
}

fn vrrp_from_peer(priority: u8) -> Vec<u8> {
    let m = meta();
    crate::wire::vrrp::Repr {
        vrid: 1,
        priority,
        interval_cs: 100,
        kind: crate::wire::vrrp::TYPE_ADVERTISEMENT,
        addresses: vec![IpAddr::V4(VIP)],
    }
    .to_bytes(m.src, m.dst)
    .unwrap()
}

/// The (priority, interval) of each VRRP advertisement in `actions`.
fn vrrp_sent(actions: &[Action]) -> Vec<(u8, u16)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Transmit { bytes, .. } if bytes[0] == 0x31 => {
                Some((bytes[2], u16::from_be_bytes([bytes[4], bytes[5]])))
            }
            _ => None,
        })
        .collect()
}

/// Input: a VRRP vhost (priority 100, 1 s) that hears nothing. Output:
/// MASTER after Master_Down_Interval = 3 s + (156/256) s, sending VRRPv3
/// advertisements with its priority and interval; on shutdown it sends
/// priority 0 (it resigns).
#[test]
fn vrrp_takes_over_after_master_down_and_resigns_with_priority_0() {
    let mut node = vrrp_node(100);
    let t = node.poll_timeout().unwrap();
    assert_eq!(t, at(3600));
    node.handle_timeout(t);
    let actions = drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Master));
    assert_eq!(vrrp_sent(&actions), [(100, 100)]);
    node.begin_shutdown(at(4000));
    assert_eq!(vrrp_sent(&drain(&mut node)), [(0, 100)]);
}

/// Input: as MASTER, a VRRP advert with a higher priority; as BACKUP, one
/// with priority 0. Output: it yields; then takes over after Skew_Time
/// (0.6 s) instead of Master_Down_Interval.
#[test]
fn vrrp_yields_to_a_higher_priority_and_takes_over_from_a_resigning_master() {
    let mut node = vrrp_node(100);
    let t = node.poll_timeout().unwrap();
    node.handle_timeout(t);
    drain(&mut node);
    node.handle_datagram(t, meta(), &vrrp_from_peer(150));
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Backup));
    let heard = at(10_000);
    node.handle_datagram(heard, meta(), &vrrp_from_peer(0));
    drain(&mut node);
    assert_eq!(node.poll_timeout(), Some(at(10_600)));
    node.handle_timeout(at(10_600));
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Master));
}

/// Input: a lower-priority master heard by a BACKUP, and a CARP advert for
/// the VRRP vrid. Output: the BACKUP lets its timer run out and preempts;
/// the CARP one is dropped as bad_ver.
#[test]
fn vrrp_preempts_a_lower_priority_and_drops_carp() {
    let mut node = vrrp_node(100);
    node.handle_datagram(at(1000), meta(), &vrrp_from_peer(50));
    drain(&mut node);
    // The timer armed at the start was not restarted by the worse master.
    assert_eq!(node.poll_timeout(), Some(at(3600)));
    node.handle_datagram(at(1100), meta(), &peer_advert(0, 0));
    assert_eq!(node.stats().bad_ver, 1);
}

/// Input: the address owner (priority 255). Output: MASTER at once.
#[test]
fn vrrp_owner_is_master_at_once() {
    let mut node = vrrp_node(255);
    assert_eq!(node.poll_timeout(), Some(at(0)));
    node.handle_timeout(at(0));
    drain(&mut node);
    assert_eq!(node.state(id(1)), Some(State::Master));
}
