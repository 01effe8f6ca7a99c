//! CARP datagrams through `Node::handle_datagram`: parser, checksum, HMAC
//! verification and the state machine of two configured vhosts.
//!
//! The input is one flags byte (bit 0 preempt, bit 1 shut down at the end)
//! and a sequence of records `[op][len][len bytes]`; the low three bits of
//! `op` pick what happens (below), the high ones the source, TTL and
//! interface of a datagram. Re-signed datagrams carry a valid HMAC and
//! checksum, so fuzzed timing fields reach the election. A record
//! `00 24 <36 bytes>` delivers exactly those bytes: the seed corpus holds the
//! ucarp golden vector, which vhid 7 accepts.
//!
//! After every record: `received == dropped + accepted`, every
//! `StateChanged.from` is the state last reported, and a vhost holds its
//! addresses exactly while it is MASTER.
#![no_main]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use carp_proto::auth::Auth;
use carp_proto::wire::{CarpPacket, CarpRepr};
use carp_proto::{
    Action, AdvSkew, CarpIfId, Instant, LinkId, Node, NodeConfig, Passphrase, RxMeta, State, Vhid,
    VhostConfig, VhostId,
};
use libfuzzer_sys::fuzz_target;

const LINK: LinkId = LinkId(1);
const OTHER_LINK: LinkId = LinkId(2);

fn vhost(vhid: u8, addrs: &[IpAddr], advskew: u8) -> VhostConfig {
    let mut c = VhostConfig::new(Vhid::new(vhid).unwrap(), addrs);
    c.passphrase = Passphrase::new(b"carpd-test").unwrap();
    c.advskew = AdvSkew(advskew);
    c
}

struct Harness {
    node: Node,
    now: Instant,
    configs: Vec<VhostConfig>,
    /// Last reported state and whether the addresses are held, per vhost.
    seen: BTreeMap<VhostId, (State, bool)>,
    /// Our own transmitted packets, for echoing them back.
    sent: Vec<Vec<u8>>,
}

impl Harness {
    fn new(preempt: bool) -> Harness {
        let mut node = Node::new(NodeConfig {
            preempt,
            ..NodeConfig::default()
        });
        // vhid 7 matches the ucarp golden vector; vhid 8 is dual-stack.
        let configs = vec![
            vhost(7, &[IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100))], 0),
            vhost(
                8,
                &[
                    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 101)),
                    IpAddr::V6("2001:db8::101".parse().unwrap()),
                ],
                100,
            ),
        ];
        let mut seen = BTreeMap::new();
        for (i, c) in configs.iter().enumerate() {
            let id = node
                .add_vhost(Instant::ZERO, LINK, c.clone(), [i as u8 + 1; 8])
                .unwrap();
            seen.insert(id, (State::Init, false));
        }
        let mut h = Harness {
            node,
            now: Instant::ZERO,
            configs,
            seen,
            sent: Vec::new(),
        };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Transmit { id, bytes, .. } => {
                    if self.sent.len() < 64 {
                        self.sent.push(bytes);
                    }
                    self.node.handle_send_result(self.now, id, true);
                }
                // Every carp interface here has one node, led by the vhost.
                Action::AddAddresses { iface, .. } => self.held(vhost_of(iface), true),
                Action::RemoveAddresses { iface, .. } => self.held(vhost_of(iface), false),
                Action::StateChanged { id, from, to, .. } => {
                    let entry = self.seen.get_mut(&id).expect("known vhost");
                    assert_eq!(entry.0, from, "{id}: transition from a state not reported");
                    entry.0 = to;
                }
                Action::Announce { .. }
                | Action::DemotionChanged { .. }
                | Action::LoadShare { .. }
                | Action::PrepareMaster { .. } => {}
            }
        }
    }

    fn held(&mut self, id: VhostId, on: bool) {
        let entry = self.seen.get_mut(&id).expect("known vhost");
        entry.1 = on;
    }

    fn check(&self) {
        let s = self.node.stats();
        assert_eq!(s.received(), s.dropped() + s.accepted, "{s:?}");
        for st in self.node.status() {
            let (state, held) = self.seen[&st.id];
            assert_eq!(st.state, state, "{}: status disagrees with actions", st.id);
            assert_eq!(
                held,
                state == State::Master,
                "{}: addresses held {held} in {state}",
                st.id
            );
        }
    }

    fn datagram(&mut self, op: u8, mut bytes: Vec<u8>) {
        let src = match (op >> 3) & 3 {
            0 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            1 => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
            2 => IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            _ => IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2)),
        };
        let ttl = if op & 0x20 != 0 { 64 } else { 255 };
        let link = if op & 0x40 != 0 { OTHER_LINK } else { LINK };
        match op & 7 {
            // Re-sign with the key and addresses of the vhid in the packet.
            1 if bytes.len() >= 36 => {
                if let Some(c) = self.configs.iter().find(|c| c.vhid.get() == bytes[1]) {
                    let auth = Auth::new(&c.passphrase, c.vhid, &c.ipv4, &c.ipv6);
                    let counter: [u8; 8] = bytes[8..16].try_into().unwrap();
                    bytes[16..36].copy_from_slice(&auth.generate(&counter));
                }
                CarpPacket::new_unchecked(&mut bytes[..]).fill_checksum();
            }
            2 if bytes.len() >= 36 => CarpPacket::new_unchecked(&mut bytes[..]).fill_checksum(),
            _ => {}
        }
        // Parsing alone must not panic either.
        if let Ok(p) = CarpPacket::new_checked(&bytes[..]) {
            let _ = p.verify_checksum();
            let _ = CarpRepr::parse(&p);
        }
        let dst = match src {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12)),
        };
        // Our own source, so equal-standing ties are broken as on a host.
        let local = Some(match src {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x99)),
        });
        let meta = RxMeta {
            link,
            src,
            dst,
            ttl,
            local,
        };
        self.node.handle_datagram(self.now, meta, &bytes);
    }

    fn step(&mut self, op: u8, len: u8, data: &mut &[u8]) {
        self.now = self.now + std::time::Duration::from_millis(1);
        let ids: Vec<VhostId> = self.seen.keys().copied().collect();
        let id = ids[usize::from(op >> 7)];
        match op & 7 {
            0..=2 => {
                let n = usize::from(len).min(data.len());
                let (bytes, rest) = data.split_at(n);
                *data = rest;
                self.datagram(op, bytes.to_vec());
            }
            3 => {
                self.now = self.now + std::time::Duration::from_millis(u64::from(len) * 16);
                self.node.handle_timeout(self.now);
            }
            4 => self.node.handle_link(self.now, LINK, len & 1 == 1),
            5 => {
                let _ = self
                    .node
                    .demote_group(self.now, "carp", i32::from(len as i8));
            }
            6 => match len & 3 {
                0 => _ = self.node.force_state(self.now, id, State::Master),
                1 => _ = self.node.force_state(self.now, id, State::Backup),
                2 => _ = self.node.set_enabled(self.now, id, false),
                _ => _ = self.node.set_enabled(self.now, id, true),
            },
            _ => {
                // Our own advertisement comes back (a loop or a replay).
                if !self.sent.is_empty() {
                    let p = self.sent[usize::from(len) % self.sent.len()].clone();
                    self.datagram(op & !7, p);
                }
            }
        }
        self.drain();
        self.check();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut data)) = data.split_first() else {
        return;
    };
    let mut h = Harness::new(flags & 1 == 1);
    h.check();
    let mut steps = 0;
    while let [op, len, rest @ ..] = data {
        data = rest;
        h.step(*op, *len, &mut data);
        steps += 1;
        if steps > 256 {
            break;
        }
    }
    if flags & 2 == 2 {
        h.node.begin_shutdown(h.now);
        h.drain();
        h.check();
    }
});

fn vhost_of(iface: CarpIfId) -> VhostId {
    VhostId {
        link: iface.link,
        vhid: iface.vhid,
    }
}
