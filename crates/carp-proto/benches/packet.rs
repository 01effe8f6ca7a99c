//! Packet-path micro-benchmarks: accepting a genuine advertisement, and
//! rejecting a forged one (right vhid, wrong HMAC), through `Node::handle_datagram`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use carp_proto::auth::Auth;
use carp_proto::wire::CarpRepr;
use carp_proto::{Instant, LinkId, Node, NodeConfig, Passphrase, RxMeta, Vhid, VhostConfig};
use criterion::{Criterion, criterion_group, criterion_main};

fn config() -> VhostConfig {
    let mut cfg = VhostConfig::new(
        Vhid::new(1).unwrap(),
        &[IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
    );
    cfg.passphrase = Passphrase::new(b"benchmark").unwrap();
    cfg
}

fn advert(key: &[u8]) -> [u8; 36] {
    let cfg = config();
    let auth = Auth::new(
        &Passphrase::new(key).unwrap(),
        cfg.vhid,
        &cfg.ipv4,
        &cfg.ipv6,
    );
    let counter = [7; 8];
    CarpRepr {
        version: 2,
        kind: 1,
        vhid: 1,
        advskew: 0,
        authlen: 7,
        demote: 0,
        advbase: 1,
        counter,
        md: auth.generate(&counter),
    }
    .to_bytes()
}

fn bench(c: &mut Criterion) {
    let meta = RxMeta {
        link: LinkId(1),
        src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
        dst: IpAddr::V4(Ipv4Addr::new(224, 0, 0, 18)),
        ttl: 255,
        local: None,
    };
    for (name, bytes) in [
        ("accept genuine advert", advert(b"benchmark")),
        ("reject forged advert", advert(b"forged")),
    ] {
        let mut node = Node::new(NodeConfig::default());
        node.add_vhost(Instant::ZERO, LinkId(1), config(), [1; 8])
            .unwrap();
        while node.poll_action().is_some() {}
        let mut t = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                t += 1;
                node.handle_datagram(Instant::from_micros(t), meta, black_box(&bytes));
                while node.poll_action().is_some() {}
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
