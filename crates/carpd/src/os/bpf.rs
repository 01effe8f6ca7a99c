//! Classic BPF socket filters for the CARP sockets (`SO_ATTACH_FILTER`).
//!
//! A raw protocol-112 socket gets every protocol-112 packet on its carpdev;
//! under a junk flood, reading and rejecting each one costs a syscall, a copy
//! and the core's checks. The filter built here lets through only what the
//! core could accept, so the rest dies in the kernel:
//!
//! - CARP: version nibble 2 and at least the 36-byte header. The type nibble
//!   is not checked: the core, like OpenBSD `carp_proto_input_c`, accepts
//!   other types (counted as `odd_header`).
//! - VRRPv3: version 3, type 1 (RFC 9568 7.1; the core drops other types),
//!   at least the 8 bytes plus the addresses the count field asks for.
//! - The vhid (VRRP: VRID) byte is one configured on the carpdev with that
//!   protocol.
//! - IPv4 only: TTL 255 where the core checks it for that vhid (see
//!   [`TtlRule`], which follows `Node::ttl_checked`).
//!
//! The filter must never be stricter than the core: a genuine advertisement
//! it drops is a missed one, and three missed ones make a second MASTER. It
//! checks no checksum or HMAC; those stay with the core and its counters.
//!
//! What the filter drops is not counted anywhere (the kernel keeps no count
//! of socket-filter drops): carpd's counters show only what passed.
//!
//! Layout: IPv4 raw sockets see the IP header, so the CARP header starts at
//! X = IHL * 4 (`ldxb 4*([0]&0xf)`, never assumed to be 20); IPv6 raw
//! sockets see only the payload (X = 0). A load beyond the packet ends the
//! program with 0 (drop), so short packets need no separate check before a
//! byte load. Conditional jumps are forward-only with 8-bit offsets, so each
//! vhid's test is followed by its own short TTL block ending in a `ret`, and
//! the jumps to the per-protocol sections use `ja` (32-bit offset).

use carp_proto::Family;
use libc::{
    BPF_ABS, BPF_ADD, BPF_ALU, BPF_AND, BPF_B, BPF_IMM, BPF_IND, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JGT,
    BPF_JMP, BPF_K, BPF_LD, BPF_LDX, BPF_LEN, BPF_LSH, BPF_MEM, BPF_MSH, BPF_RET, BPF_RSH, BPF_ST,
    BPF_SUB, BPF_W, BPF_X, sock_filter,
};

/// Return value that keeps the whole packet (the kernel trims to it).
const ACCEPT: u32 = u32::MAX;
/// The CARP header length (`struct carp_header`).
const CARP_LEN: u32 = 36;
/// The VRRPv3 header length before the addresses.
const VRRP_LEN: u32 = 8;

/// The protocol a vhid speaks on the carpdev.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// CARP v2.
    Carp,
    /// VRRPv3 (`carpver 3`).
    Vrrp,
}

/// When a TTL other than 255 drops an advertisement for a vhid (the core's
/// `ttl_check`, FreeBSD `carp_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TtlRule {
    /// Never checked (`ttl_check = false`).
    Any,
    /// Always checked (`ttl_check = true`).
    Required,
    /// Checked only when sent to a multicast group (the default: routed
    /// unicast peers arrive with less).
    Multicast,
}

impl TtlRule {
    /// The rule of a carp interface's `ttl_check` setting.
    pub fn of(ttl_check: Option<bool>) -> TtlRule {
        match ttl_check {
            Some(true) => TtlRule::Required,
            Some(false) => TtlRule::Any,
            None => TtlRule::Multicast,
        }
    }
}

/// One vhid a carpdev's sockets must let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Accept {
    /// The vhid (VRRP: VRID).
    pub vhid: u8,
    /// The protocol its carp interface speaks.
    pub proto: Proto,
    /// Its TTL rule.
    pub ttl: TtlRule,
}

// ===== instruction encoding (linux/filter.h, bpf_common.h) =====

fn stmt(code: u32, k: u32) -> sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        // Every opcode built here fits in 16 bits.
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// Scratch memory slot of the payload length.
const M_LEN: u32 = 0;
/// Scratch memory slot of the payload's first (version/type) byte.
const M_FIRST: u32 = 1;

/// A = byte at `k` (absolute).
fn ldb_abs(k: u32) -> sock_filter {
    stmt(BPF_LD | BPF_B | BPF_ABS, k)
}
/// A = byte at X + `k`.
fn ldb_ind(k: u32) -> sock_filter {
    stmt(BPF_LD | BPF_B | BPF_IND, k)
}
/// X = offset of the CARP header.
fn ldx_header(family: Family) -> sock_filter {
    match family {
        Family::V4 => stmt(BPF_LDX | BPF_B | BPF_MSH, 0),
        Family::V6 => stmt(BPF_LDX | BPF_W | BPF_IMM, 0),
    }
}
fn ret(k: u32) -> sock_filter {
    stmt(BPF_RET | BPF_K, k)
}
fn ja(k: u32) -> sock_filter {
    stmt(BPF_JMP | BPF_JA, k)
}

/// The TTL block of one vhid: ends in `ret` on every path.
fn ttl_block(family: Family, rule: TtlRule) -> Vec<sock_filter> {
    // IPv6 raw sockets do not see the IPv6 header, so the hop limit cannot
    // be checked here: the core checks it from the IPV6_HOPLIMIT cmsg.
    let rule = if family == Family::V6 {
        TtlRule::Any
    } else {
        rule
    };
    match rule {
        TtlRule::Any => vec![ret(ACCEPT)],
        TtlRule::Required => vec![
            ldb_abs(8), // IPv4 TTL
            jump(BPF_JMP | BPF_JEQ | BPF_K, 255, 0, 1),
            ret(ACCEPT),
            ret(0),
        ],
        TtlRule::Multicast => vec![
            ldb_abs(16), // first byte of the IPv4 destination
            stmt(BPF_ALU | BPF_AND | BPF_K, 0xf0),
            // 224.0.0.0/4 goes on to the TTL test; unicast is accepted.
            jump(BPF_JMP | BPF_JEQ | BPF_K, 0xe0, 0, 2),
            ldb_abs(8),
            jump(BPF_JMP | BPF_JEQ | BPF_K, 255, 0, 1),
            ret(ACCEPT),
            ret(0),
        ],
    }
}

/// With A = the vhid byte: accept the vhids of `proto` in `accept` (each
/// after its TTL block), drop anything else.
fn vhid_chain(family: Family, proto: Proto, accept: &[Accept], out: &mut Vec<sock_filter>) {
    for a in accept.iter().filter(|a| a.proto == proto) {
        let block = ttl_block(family, a.ttl);
        // At most 7 instructions: fits the 8-bit false offset.
        let skip = u8::try_from(block.len()).unwrap_or(u8::MAX);
        out.push(jump(BPF_JMP | BPF_JEQ | BPF_K, a.vhid.into(), 0, skip));
        out.extend(block);
    }
    out.push(ret(0));
}

/// Build the filter program for a carpdev's socket of `family` that lets
/// through advertisements for the vhids in `accept` (see the module doc).
/// An empty `accept` drops everything.
pub fn program(family: Family, accept: &[Accept]) -> Vec<sock_filter> {
    let mut carp = vec![
        // CARP: at least the header, then the vhid byte.
        stmt(BPF_LD | BPF_MEM, M_LEN),
        jump(BPF_JMP | BPF_JGE | BPF_K, CARP_LEN, 1, 0),
        ret(0),
        ldb_ind(1),
    ];
    vhid_chain(family, Proto::Carp, accept, &mut carp);

    let addr_shift = match family {
        Family::V4 => 2, // 4-byte addresses
        Family::V6 => 4, // 16-byte addresses
    };
    let mut vrrp = vec![
        // VRRPv3: type 1 only (RFC 9568 7.1).
        stmt(BPF_LD | BPF_MEM, M_FIRST),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 0x31, 1, 0),
        ret(0),
        // Drop when 8 + count * address length exceeds the payload.
        ldb_ind(3),
        stmt(BPF_ALU | BPF_LSH | BPF_K, addr_shift),
        stmt(BPF_ALU | BPF_ADD | BPF_K, VRRP_LEN),
        stmt(BPF_LDX | BPF_W | BPF_MEM, M_LEN),
        jump(BPF_JMP | BPF_JGT | BPF_X, 0, 0, 1),
        ret(0),
        ldx_header(family),
        ldb_ind(1),
    ];
    vhid_chain(family, Proto::Vrrp, accept, &mut vrrp);

    let carp_len = u32::try_from(carp.len()).unwrap_or(u32::MAX);
    let mut p = vec![
        ldx_header(family),
        // M_LEN = payload length (IPv4: total length minus the header; the
        // kernel has trimmed link-layer padding).
        stmt(BPF_LD | BPF_W | BPF_LEN, 0),
        stmt(BPF_ALU | BPF_SUB | BPF_X, 0),
        stmt(BPF_ST, M_LEN),
        // M_FIRST = version/type byte; dispatch on the version nibble.
        ldb_ind(0),
        stmt(BPF_ST, M_FIRST),
        stmt(BPF_ALU | BPF_RSH | BPF_K, 4),
        jump(BPF_JMP | BPF_JEQ | BPF_K, 2, 3, 0), // to the CARP section
        jump(BPF_JMP | BPF_JEQ | BPF_K, 3, 1, 0),
        ret(0),
        ja(carp_len), // over the CARP section, to the VRRP one
    ];
    p.extend(carp);
    p.extend(vrrp);
    p
}

/// Convert a program to what `socket2::Socket::attach_filter` takes.
pub fn to_socket2(program: &[sock_filter]) -> Vec<socket2::SockFilter> {
    program
        .iter()
        .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect()
}

#[cfg(test)]
mod test {
    use std::io::{ErrorKind, Read, Write};

    use socket2::{Domain, Socket, Type};

    use super::*;

    /// Run `prog` in the kernel on `packet`: attach it to the receiving end
    /// of an AF_UNIX datagram pair (the filter sees the datagram from offset
    /// 0, as a raw socket's sees the IPv4 header or the IPv6 payload).
    struct Kernel {
        tx: Socket,
        rx: Socket,
    }

    impl Kernel {
        fn new(prog: &[sock_filter]) -> Kernel {
            let (tx, rx) = Socket::pair(Domain::UNIX, Type::DGRAM, None).expect("socketpair");
            rx.attach_filter(&to_socket2(prog))
                .expect("the kernel accepts the program");
            rx.set_nonblocking(true).expect("nonblocking");
            Kernel { tx, rx }
        }

        fn passes(&self, packet: &[u8]) -> bool {
            let sent = (&self.tx).write(packet).expect("send");
            assert_eq!(sent, packet.len());
            let mut buf = vec![0u8; 4096];
            match (&self.rx).read(&mut buf) {
                Ok(n) => {
                    assert_eq!(&buf[..n], packet, "the filter truncated the packet");
                    true
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => false,
                Err(e) => panic!("recv: {e}"),
            }
        }
    }

    const GROUP: [u8; 4] = [224, 0, 0, 18];
    const UNICAST: [u8; 4] = [192, 0, 2, 1];

    fn carp(vhid: u8) -> Vec<u8> {
        let mut p = vec![0u8; 36];
        p[0] = 0x21;
        p[1] = vhid;
        p[3] = 7;
        p
    }

    fn vrrp(vrid: u8, count: u8, addr_len: usize) -> Vec<u8> {
        let mut p = vec![0x31, vrid, 100, count, 0, 100, 0, 0];
        p.resize(8 + usize::from(count) * addr_len, 0xc0);
        p
    }

    /// An IPv4 packet with `options` bytes of options (a multiple of 4).
    fn ip(ttl: u8, dst: [u8; 4], options: &[u8], payload: &[u8]) -> Vec<u8> {
        let ihl = 5 + options.len() / 4;
        let total = 4 * ihl + payload.len();
        let mut p = vec![0x40 | ihl as u8, 0x10];
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, ttl, 112, 0, 0]);
        p.extend_from_slice(&[198, 51, 100, 2]);
        p.extend_from_slice(&dst);
        p.extend_from_slice(options);
        p.extend_from_slice(payload);
        p
    }

    fn v4_accept() -> Vec<Accept> {
        vec![
            Accept {
                vhid: 1,
                proto: Proto::Carp,
                ttl: TtlRule::Multicast,
            },
            Accept {
                vhid: 2,
                proto: Proto::Carp,
                ttl: TtlRule::Required,
            },
            Accept {
                vhid: 7,
                proto: Proto::Vrrp,
                ttl: TtlRule::Multicast,
            },
            Accept {
                vhid: 9,
                proto: Proto::Carp,
                ttl: TtlRule::Any,
            },
        ]
    }

    #[test]
    fn v4_genuine_adverts_pass() {
        let k = Kernel::new(&program(Family::V4, &v4_accept()));
        let mut odd_type = carp(1);
        odd_type[0] = 0x22;
        let mut long = carp(1);
        long.extend(std::iter::repeat_n(0x5a, 1400));
        let cases: [(&str, Vec<u8>); 9] = [
            ("carp vhid 1", ip(255, GROUP, &[], &carp(1))),
            ("carp vhid 2", ip(255, GROUP, &[], &carp(2))),
            (
                "unicast, TTL 64, multicast-only rule",
                ip(64, UNICAST, &[], &carp(1)),
            ),
            ("ttl_check off, TTL 1", ip(1, GROUP, &[], &carp(9))),
            (
                "IP options (IHL 6)",
                ip(255, GROUP, &[1, 1, 1, 0], &carp(1)),
            ),
            (
                "CARP type 2 (odd_header in the core)",
                ip(255, GROUP, &[], &odd_type),
            ),
            ("1,400 bytes of padding", ip(255, GROUP, &[], &long)),
            ("vrrp vrid 7", ip(255, GROUP, &[], &vrrp(7, 1, 4))),
            (
                "vrrp vrid 7, 3 addresses",
                ip(255, GROUP, &[], &vrrp(7, 3, 4)),
            ),
        ];
        for (what, p) in cases {
            assert!(k.passes(&p), "{what} was dropped");
        }
    }

    #[test]
    fn v4_junk_is_dropped() {
        let k = Kernel::new(&program(Family::V4, &v4_accept()));
        let mut v1 = carp(1);
        v1[0] = 0x11;
        let mut v4 = carp(1);
        v4[0] = 0x41;
        let mut vrrp_type2 = vrrp(7, 1, 4);
        vrrp_type2[0] = 0x32;
        let mut short_vrrp = vrrp(7, 3, 4);
        short_vrrp.truncate(19);
        // With IHL ignored, bytes 20.. would read as CARP vhid 1.
        let hidden = ip(255, GROUP, &[0x21, 1, 0, 0], &carp(3));
        let cases: [(&str, Vec<u8>); 16] = [
            ("unknown vhid", ip(255, GROUP, &[], &carp(3))),
            ("CARP to a VRRP vrid", ip(255, GROUP, &[], &carp(7))),
            ("VRRP to a CARP vhid", ip(255, GROUP, &[], &vrrp(1, 1, 4))),
            ("multicast with TTL 64", ip(64, GROUP, &[], &carp(1))),
            (
                "ttl_check on, unicast TTL 64",
                ip(64, UNICAST, &[], &carp(2)),
            ),
            (
                "VRRP multicast TTL 254",
                ip(254, GROUP, &[], &vrrp(7, 1, 4)),
            ),
            ("35 bytes", ip(255, GROUP, &[], &carp(1)[..35])),
            ("version 1", ip(255, GROUP, &[], &v1)),
            ("version 4", ip(255, GROUP, &[], &v4)),
            ("VRRP type 2", ip(255, GROUP, &[], &vrrp_type2)),
            (
                "VRRP shorter than its count",
                ip(255, GROUP, &[], &short_vrrp),
            ),
            ("VRRP 7 bytes", ip(255, GROUP, &[], &vrrp(7, 1, 4)[..7])),
            ("IHL honoured", hidden),
            ("header only", ip(255, GROUP, &[], &[])),
            ("empty", Vec::new()),
            ("one byte", vec![0x45]),
        ];
        for (what, p) in cases {
            assert!(!k.passes(&p), "{what} passed");
        }
    }

    #[test]
    fn v6_sees_the_payload_and_ignores_the_hop_limit() {
        let accept = [
            Accept {
                vhid: 1,
                proto: Proto::Carp,
                ttl: TtlRule::Required,
            },
            Accept {
                vhid: 4,
                proto: Proto::Vrrp,
                ttl: TtlRule::Required,
            },
        ];
        let k = Kernel::new(&program(Family::V6, &accept));
        assert!(k.passes(&carp(1)));
        assert!(k.passes(&vrrp(4, 1, 16)));
        assert!(k.passes(&vrrp(4, 2, 16)));
        assert!(
            !k.passes(&vrrp(4, 2, 16)[..39]),
            "VRRP shorter than its count"
        );
        assert!(!k.passes(&vrrp(4, 1, 4)), "an IPv4-sized address");
        assert!(!k.passes(&carp(2)));
        assert!(!k.passes(&carp(1)[..35]));
        assert!(!k.passes(&vrrp(1, 1, 16)));
    }

    #[test]
    fn no_vhids_drops_everything() {
        let k = Kernel::new(&program(Family::V4, &[]));
        assert!(!k.passes(&ip(255, GROUP, &[], &carp(1))));
        assert!(!k.passes(&ip(255, GROUP, &[], &vrrp(1, 1, 4))));
    }

    #[test]
    fn every_vhid_fits_one_program() {
        let accept: Vec<Accept> = (1..=255)
            .map(|vhid| Accept {
                vhid,
                proto: if vhid % 2 == 0 {
                    Proto::Carp
                } else {
                    Proto::Vrrp
                },
                ttl: TtlRule::Multicast,
            })
            .collect();
        let prog = program(Family::V4, &accept);
        assert!(prog.len() <= libc::BPF_MAXINSNS as usize, "{}", prog.len());
        let k = Kernel::new(&prog);
        assert!(k.passes(&ip(255, GROUP, &[], &carp(254))));
        assert!(k.passes(&ip(255, GROUP, &[], &vrrp(255, 1, 4))));
        assert!(!k.passes(&ip(255, GROUP, &[], &carp(255))));
        assert!(!k.passes(&ip(64, GROUP, &[], &carp(2))));
    }

    /// What the filter should do, written plainly (module doc).
    fn model(accept: &[Accept], p: &[u8]) -> bool {
        let Some(&first) = p.first() else {
            return false;
        };
        let hl = usize::from(first & 0x0f) * 4;
        if p.len() < 20.max(hl + 4) {
            return false;
        }
        let payload = &p[hl..];
        let (proto, ok_len) = match payload[0] {
            b if b >> 4 == 2 => (Proto::Carp, payload.len() >= 36),
            0x31 => (
                Proto::Vrrp,
                payload.len() >= 8 + 4 * usize::from(payload[3]),
            ),
            _ => return false,
        };
        let multicast = p[16] >> 4 == 0xe;
        ok_len
            && accept.iter().any(|a| {
                a.proto == proto
                    && a.vhid == payload[1]
                    && match a.ttl {
                        TtlRule::Any => true,
                        TtlRule::Required => p[8] == 255,
                        TtlRule::Multicast => !multicast || p[8] == 255,
                    }
            })
    }

    #[test]
    fn random_packets_match_the_model() {
        let accept = v4_accept();
        let k = Kernel::new(&program(Family::V4, &accept));
        // xorshift: reproducible without an RNG dependency.
        let mut s: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let (mut passed, mut dropped) = (0, 0);
        for _ in 0..4000 {
            let r = next();
            // Mostly plausible headers, so that each check is exercised.
            let options = vec![1u8; 4 * (r % 3) as usize];
            let len = (next() % 60) as usize;
            let mut payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = payload.first_mut() {
                *b = [0x21, 0x22, 0x31, 0x32, 0x11, *b][(r >> 8) as usize % 6];
            }
            if let Some(b) = payload.get_mut(1) {
                *b = [1, 2, 3, 7, 9, *b][(r >> 16) as usize % 6];
            }
            if let Some(b) = payload.get_mut(3) {
                *b %= 12;
            }
            let ttl = [255, 64, 254][(r >> 24) as usize % 3];
            let dst = if r >> 32 & 1 == 0 { GROUP } else { UNICAST };
            let mut p = ip(ttl, dst, &options, &payload);
            if r >> 33 & 7 == 0 {
                p.truncate((r >> 36) as usize % p.len().max(1));
            }
            let want = model(&accept, &p);
            assert_eq!(k.passes(&p), want, "{p:02x?}");
            if want {
                passed += 1;
            } else {
                dropped += 1;
            }
        }
        assert!(
            passed > 100 && dropped > 100,
            "{passed} passed, {dropped} dropped"
        );
    }
}
