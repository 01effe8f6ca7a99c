//! Root-only tests of `carpd::os` in network namespaces.
//!
//! Root only, ignored by default: `cargo test -p carpd --test os_netns --
//! --include-ignored`.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use carpd::os::OsError;
use carpd::os::l2::{self, L2Sender, virtual_mac};
use carpd::os::netlink::{LinkEvent, LinkMonitor, Netlink};
use carpd::os::raw::{CARP_GROUP_V4, CARP_GROUP_V6, CarpSocket, Received};
use common::{Lab, block_on, block_on_in, spawn_in_netns};
use socket2::{Domain, Protocol, Socket, Type};

const T: Duration = Duration::from_secs(20);
const READY: Duration = Duration::from_secs(10);

fn payload(tag: u8) -> [u8; 36] {
    let mut p = [0u8; 36];
    for (i, b) in p.iter_mut().enumerate() {
        *b = tag.wrapping_add(i as u8);
    }
    p
}

/// Input: A sends one 36-byte payload per family to the CARP groups and one
/// per family by unicast to B. Output: B receives each with TTL 255, its
/// own ifindex and the right src/dst; A's own sockets receive nothing.
#[test]
#[ignore = "needs root: network namespaces"]
fn raw_multicast_and_unicast_between_hosts() {
    let lab = Lab::new("raw", 2);
    let (a, b) = (lab.host(0).clone(), lab.host(1).clone());

    let (ready_tx, ready_rx) = mpsc::channel();
    let bb = b.clone();
    let receiver = spawn_in_netns(&b.ns, move || {
        block_on(T, async move {
            let v4 = CarpSocket::open_v4(&bb.ifname, bb.ifindex).unwrap();
            let v6 = CarpSocket::open_v6(&bb.ifname, bb.ifindex).unwrap();
            ready_tx.send(()).unwrap();
            let mut got = Vec::new();
            let mut buf4 = [0u8; 128];
            let mut buf6 = [0u8; 128];
            for _ in 0..2 {
                let r = v4.recv(&mut buf4).await.unwrap();
                got.push((r, buf4[..r.len].to_vec()));
                let r = v6.recv(&mut buf6).await.unwrap();
                got.push((r, buf6[..r.len].to_vec()));
            }
            got
        })
    });
    ready_rx.recv_timeout(READY).expect("receiver ready");

    let aa = a.clone();
    let (bv4, bv6) = (b.v4, b.v6);
    block_on_in(&a.ns, T, move || async move {
        let v4 = CarpSocket::open_v4(&aa.ifname, aa.ifindex).unwrap();
        let v6 = CarpSocket::open_v6(&aa.ifname, aa.ifindex).unwrap();
        v4.send(Some(aa.v4.into()), CARP_GROUP_V4.into(), &payload(1))
            .await
            .unwrap();
        v6.send(
            Some(aa.link_local.into()),
            CARP_GROUP_V6.into(),
            &payload(2),
        )
        .await
        .unwrap();
        // Unicast, kernel-chosen source.
        v4.send(None, bv4.into(), &payload(3)).await.unwrap();
        v6.send(Some(aa.v6.into()), bv6.into(), &payload(4))
            .await
            .unwrap();
        // Loop is off: our own multicast must not come back.
        let mut buf = [0u8; 128];
        let quiet = Duration::from_millis(500);
        assert!(
            tokio::time::timeout(quiet, v4.recv(&mut buf))
                .await
                .is_err()
        );
        assert!(
            tokio::time::timeout(quiet, v6.recv(&mut buf))
                .await
                .is_err()
        );
    });

    let got = receiver.join().expect("receiver thread");
    let expect = [
        (a.v4.into(), IpAddr::from(CARP_GROUP_V4), payload(1)),
        (a.link_local.into(), CARP_GROUP_V6.into(), payload(2)),
        (a.v4.into(), b.v4.into(), payload(3)),
        (a.v6.into(), b.v6.into(), payload(4)),
    ];
    for ((r, data), (src, dst, p)) in got.iter().zip(expect) {
        let want = Received {
            src,
            dst,
            ttl: 255,
            ifindex: b.ifindex,
            len: 36,
        };
        assert_eq!(*r, want);
        assert_eq!(data[..], p[..]);
    }
}

/// Input: B's sockets filter for CARP vhid 1 (`set_filter`); A sends per
/// family 40 CARP-shaped payloads for vhid 1 and, between them, 40 for
/// vhid 2, all to the group, before B reads. Output: B's `recv_batch`
/// returns exactly the 40 of vhid 1 per family, in order, each with A's
/// source, the group, TTL 255 and B's ifindex, at most 32 per call and more
/// than one in some call (one `recvmmsg` drained several).
#[test]
#[ignore = "needs root: network namespaces"]
fn raw_filter_and_batch_receive() {
    use carpd::os::bpf::{Accept, Proto, TtlRule};
    use carpd::os::raw::RECV_BATCH;
    const N: u8 = 40;
    let carp = |vhid: u8, seq: u8| {
        let mut p = payload(seq);
        p[0] = 0x21;
        p[1] = vhid;
        p
    };
    let lab = Lab::new("rawbpf", 2);
    let (a, b) = (lab.host(0).clone(), lab.host(1).clone());
    let (ready_tx, ready_rx) = mpsc::channel();
    let (sent_tx, sent_rx) = mpsc::channel::<()>();
    let bb = b.clone();
    let receiver = spawn_in_netns(&b.ns, move || {
        block_on(T, async move {
            let v4 = CarpSocket::open_v4(&bb.ifname, bb.ifindex).unwrap();
            let v6 = CarpSocket::open_v6(&bb.ifname, bb.ifindex).unwrap();
            let accept = [Accept {
                vhid: 1,
                proto: Proto::Carp,
                ttl: TtlRule::Multicast,
            }];
            v4.set_filter(&accept).unwrap();
            v6.set_filter(&accept).unwrap();
            ready_tx.send(()).unwrap();
            sent_rx.recv_timeout(READY).expect("sender done");
            let mut per_family = Vec::new();
            for sock in [&v4, &v6] {
                let (mut got, mut largest) = (Vec::new(), 0);
                while got.len() < usize::from(N) {
                    let n = sock.recv_batch(&mut got).await.unwrap();
                    assert!((1..=RECV_BATCH).contains(&n), "{n} in one batch");
                    largest = largest.max(n);
                }
                // Nothing else may be queued: vhid 2 was filtered out.
                let more =
                    tokio::time::timeout(Duration::from_millis(300), sock.recv_batch(&mut got));
                assert!(more.await.is_err(), "more than {N}: {:?}", got.last());
                per_family.push((got, largest));
            }
            per_family
        })
    });
    ready_rx.recv_timeout(READY).expect("receiver ready");
    let aa = a.clone();
    block_on_in(&a.ns, T, move || async move {
        let v4 = CarpSocket::open_v4(&aa.ifname, aa.ifindex).unwrap();
        let v6 = CarpSocket::open_v6(&aa.ifname, aa.ifindex).unwrap();
        for seq in 0..N {
            for vhid in [2, 1] {
                v4.send(Some(aa.v4.into()), CARP_GROUP_V4.into(), &carp(vhid, seq))
                    .await
                    .unwrap();
                v6.send(
                    Some(aa.link_local.into()),
                    CARP_GROUP_V6.into(),
                    &carp(vhid, seq),
                )
                .await
                .unwrap();
            }
        }
    });
    sent_tx.send(()).unwrap();
    let got = receiver.join().expect("receiver thread");
    for ((datagrams, largest), (src, dst)) in got.into_iter().zip([
        (IpAddr::from(a.v4), IpAddr::from(CARP_GROUP_V4)),
        (a.link_local.into(), CARP_GROUP_V6.into()),
    ]) {
        assert!(largest > 1, "{dst}: one datagram per recvmmsg");
        for (seq, (r, data)) in datagrams.iter().enumerate() {
            let want = Received {
                src,
                dst,
                ttl: 255,
                ifindex: b.ifindex,
                len: 36,
            };
            assert_eq!(*r, want);
            assert_eq!(data[..], carp(1, seq as u8)[..], "{dst} #{seq}");
        }
    }
}

/// Input: a send whose source family does not match the socket.
/// Output: an error, not a panic or a packet.
#[test]
#[ignore = "needs root: network namespaces"]
fn raw_send_family_mismatch_is_error() {
    let lab = Lab::new("rawfam", 1);
    let a = lab.host(0).clone();
    block_on_in(&a.ns, T, move || async move {
        let v4 = CarpSocket::open_v4(&a.ifname, a.ifindex).unwrap();
        let e = v4
            .send(Some(a.v6.into()), CARP_GROUP_V4.into(), &payload(0))
            .await
            .unwrap_err();
        assert!(matches!(e, OsError::Socket { op: "send", .. }), "{e:?}");
        let e = v4
            .send(None, CARP_GROUP_V6.into(), &payload(0))
            .await
            .unwrap_err();
        assert!(matches!(e, OsError::Socket { op: "send", .. }), "{e:?}");
    });
}

/// Input: the CARP sockets of both families and the AF_PACKET sender
/// (virtual-MAC advertisements, GARPs), opened with CAP_NET_ADMIN.
/// Output: advertisements are queued at `TC_PRIO_CONTROL` (the first band
/// of the egress qdisc), not the default priority 0.
#[test]
#[ignore = "needs root: network namespaces"]
fn raw_sockets_queue_adverts_first() {
    let lab = Lab::new("rawprio", 1);
    let a = lab.host(0).clone();
    block_on_in(&a.ns, T, move || async move {
        let v4 = CarpSocket::open_v4(&a.ifname, a.ifindex).unwrap();
        let v6 = CarpSocket::open_v6(&a.ifname, a.ifindex).unwrap();
        assert_eq!(v4.priority().unwrap(), carpd::os::raw::ADVERT_PRIORITY);
        assert_eq!(v6.priority().unwrap(), carpd::os::raw::ADVERT_PRIORITY);
        let frames = L2Sender::open(a.ifindex).unwrap();
        assert_eq!(frames.priority().unwrap(), carpd::os::raw::ADVERT_PRIORITY);
    });
}

/// Input: add and delete an IPv4 /24 and an IPv6 /64, each twice.
/// Output: both calls succeed each time; the IPv6 address is nodad and
/// never tentative; the addresses come and go in the dump and in `ip`.
#[test]
#[ignore = "needs root: network namespaces"]
fn netlink_addresses_idempotent() {
    let lab = Lab::new("addr", 1);
    let a = lab.host(0).clone();
    let v4: IpAddr = Ipv4Addr::new(198, 51, 100, 7).into();
    let v6: IpAddr = "2001:db8:1::7".parse::<Ipv6Addr>().unwrap().into();
    let aa = a.clone();
    block_on_in(&a.ns, T, move || async move {
        let nl = Netlink::connect().await.unwrap();
        let link = nl.link_by_name("eth0").await.unwrap();
        assert_eq!(link.index, aa.ifindex);
        assert_eq!(link.mac, aa.mac);
        assert!(link.admin_up && link.carrier, "{link:?}");
        assert_eq!(nl.link_by_index(aa.ifindex).await.unwrap(), link);
        let missing = nl.link_by_name("nosuch0").await.unwrap_err();
        assert!(
            matches!(missing, OsError::LinkNotFound { .. }),
            "{missing:?}"
        );
        let missing = nl.link_by_index(999_999).await.unwrap_err();
        assert!(
            matches!(missing, OsError::LinkNotFound { .. }),
            "{missing:?}"
        );

        for _ in 0..2 {
            nl.add_address(aa.ifindex, v4, 24).await.unwrap();
            nl.add_address(aa.ifindex, v6, 64).await.unwrap();
        }
        let have = nl.addresses(aa.ifindex).await.unwrap();
        assert!(
            have.contains(&(v4, 24)) && have.contains(&(v6, 64)),
            "{have:?}"
        );
        assert!(have.contains(&(aa.v4.into(), 24)), "{have:?}");
    });
    let addrs = lab.addrs(&a.ns, "eth0");
    let six = addrs
        .iter()
        .find(|x| x.local == "2001:db8:1::7")
        .expect("v6 vip");
    assert!(six.nodad && !six.tentative, "{six:?}");
    assert!(
        addrs
            .iter()
            .any(|x| x.local == "198.51.100.7" && x.prefix_len == 24)
    );

    let aa = a.clone();
    block_on_in(&a.ns, T, move || async move {
        let nl = Netlink::connect().await.unwrap();
        for _ in 0..2 {
            nl.del_address(aa.ifindex, v4, 24).await.unwrap();
            nl.del_address(aa.ifindex, v6, 64).await.unwrap();
        }
        let have = nl.addresses(aa.ifindex).await.unwrap();
        assert!(
            !have.contains(&(v4, 24)) && !have.contains(&(v6, 64)),
            "{have:?}"
        );
    });
    let addrs = lab.addrs(&a.ns, "eth0");
    assert!(
        !addrs
            .iter()
            .any(|x| x.local == "198.51.100.7" || x.local == "2001:db8:1::7")
    );
}

/// Input: ensure_macvlan with 00:00:5e:00:01:07, again, then with :08.
/// Output: same index on reuse; up, bridge mode, right MAC, no fe80 address;
/// a MAC change replaces the link; delete_link is idempotent.
#[test]
#[ignore = "needs root: network namespaces"]
fn netlink_macvlan_vmac() {
    let lab = Lab::new("mvlan", 1);
    let a = lab.host(0).clone();
    let aa = a.clone();
    let idx = block_on_in(&a.ns, T, move || async move {
        let nl = Netlink::connect().await.unwrap();
        let idx = nl
            .ensure_macvlan(aa.ifindex, "vm7", virtual_mac(7))
            .await
            .unwrap();
        assert_eq!(
            nl.ensure_macvlan(aa.ifindex, "vm7", virtual_mac(7))
                .await
                .unwrap(),
            idx
        );
        let link = nl.link_by_index(idx).await.unwrap();
        assert_eq!(link.name, "vm7");
        assert_eq!(link.mac, virtual_mac(7));
        assert!(link.admin_up, "{link:?}");
        // Give addrconf time to (wrongly) add a link-local.
        tokio::time::sleep(Duration::from_millis(500)).await;
        idx
    });
    let j = lab.link_json(&a.ns, "vm7");
    assert_eq!(j["address"], "00:00:5e:00:01:07");
    assert!(
        j["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "{j}"
    );
    let details = lab.exec_ok(&a.ns, &["ip", "-d", "link", "show", "vm7"]);
    assert!(details.contains("macvlan mode bridge"), "{details}");
    assert!(details.contains("addrgenmode none"), "{details}");
    let addrs = lab.addrs(&a.ns, "vm7");
    assert!(
        !addrs.iter().any(|x| x.local.starts_with("fe80")),
        "{addrs:?}"
    );

    let aa = a.clone();
    block_on_in(&a.ns, T, move || async move {
        let nl = Netlink::connect().await.unwrap();
        let idx8 = nl
            .ensure_macvlan(aa.ifindex, "vm7", virtual_mac(8))
            .await
            .unwrap();
        assert_eq!(nl.link_by_index(idx8).await.unwrap().mac, virtual_mac(8));
        assert!(
            matches!(
                nl.link_by_index(idx).await,
                Err(OsError::LinkNotFound { .. })
            ) || idx8 == idx
        );
        // A non-macvlan with the name is refused, not replaced.
        let e = nl
            .ensure_macvlan(aa.ifindex, "eth0", virtual_mac(9))
            .await
            .unwrap_err();
        assert!(matches!(e, OsError::Netlink { .. }), "{e:?}");
        nl.delete_link(idx8).await.unwrap();
        nl.delete_link(idx8).await.unwrap();
        assert!(matches!(
            nl.link_by_name("vm7").await,
            Err(OsError::LinkNotFound { .. })
        ));
    });
}

async fn wait_event(
    mon: &mut LinkMonitor,
    what: &str,
    mut pred: impl FnMut(&LinkEvent) -> bool,
) -> LinkEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, mon.next()).await {
            Ok(Some(ev)) if pred(&ev) => return ev,
            Ok(Some(_)) => {}
            Ok(None) => panic!("monitor closed waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

/// Input: eth0 set down and up, its bridge port set down and up, an address
/// added and removed with `ip`. Output: matching link and address events.
#[test]
#[ignore = "needs root: network namespaces"]
fn link_monitor_sees_link_and_address_changes() {
    let lab = Lab::new("mon", 1);
    let a = lab.host(0).clone();
    let (ns, sw, port, idx) = (a.ns.clone(), lab.switch.clone(), a.port.clone(), a.ifindex);
    let ip = move |argv: &[&str]| common::run_ok(argv);
    block_on_in(&a.ns, T, move || async move {
        let mut mon = LinkMonitor::open().unwrap();
        let is_link = move |up: bool, carrier: bool| move |e: &LinkEvent| matches!(e, LinkEvent::Link(l) if l.index == idx && l.admin_up == up && l.carrier == carrier);

        ip(&["ip", "-n", &ns, "link", "set", "eth0", "down"]);
        wait_event(&mut mon, "eth0 down", is_link(false, false)).await;
        ip(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        wait_event(&mut mon, "eth0 up", is_link(true, true)).await;

        // Carrier loss with the link still administratively up.
        ip(&["ip", "-n", &sw, "link", "set", &port, "down"]);
        wait_event(&mut mon, "carrier lost", is_link(true, false)).await;
        ip(&["ip", "-n", &sw, "link", "set", &port, "up"]);
        wait_event(&mut mon, "carrier back", is_link(true, true)).await;

        let vip: IpAddr = Ipv4Addr::new(203, 0, 113, 5).into();
        ip(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            "203.0.113.5/24",
            "dev",
            "eth0",
        ]);
        wait_event(&mut mon, "address added", |e| {
            *e == LinkEvent::AddressAdded {
                index: idx,
                addr: vip,
                prefix_len: 24,
            }
        })
        .await;
        ip(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "del",
            "203.0.113.5/24",
            "dev",
            "eth0",
        ]);
        wait_event(&mut mon, "address removed", |e| {
            *e == LinkEvent::AddressRemoved {
                index: idx,
                addr: vip,
                prefix_len: 24,
            }
        })
        .await;
    });
}

/// Open a blocking AF_PACKET socket for `ethertype` in the current netns.
fn packet_listener(ethertype: u16) -> Socket {
    let s = Socket::new(
        Domain::PACKET,
        Type::RAW,
        Some(Protocol::from(i32::from(ethertype.to_be()))),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// Receive frames until `pred` accepts one or 10 s pass.
fn recv_frame(s: &Socket, mut pred: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok(n) =
            nix::sys::socket::recv(s.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty())
            && pred(&buf[..n])
        {
            return buf[..n].to_vec();
        }
    }
    panic!("expected frame not received");
}

/// Input: A sends a gratuitous ARP and an unsolicited NA for VIPs at
/// 00:00:5e:00:01:07. Output: B's packet sockets see exactly those frames.
#[test]
#[ignore = "needs root: network namespaces"]
fn l2_garp_and_na_reach_peer() {
    let lab = Lab::new("l2", 2);
    let (a, b) = (lab.host(0).clone(), lab.host(1).clone());
    let vmac = virtual_mac(7);
    let vip4 = Ipv4Addr::new(198, 51, 100, 7);
    let vip6: Ipv6Addr = "2001:db8::77".parse().unwrap();

    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = spawn_in_netns(&b.ns, move || {
        let arp = packet_listener(l2::ETH_P_ARP);
        let v6 = packet_listener(l2::ETH_P_IPV6);
        ready_tx.send(()).unwrap();
        let garp = recv_frame(&arp, |f| f.get(6..12) == Some(&vmac[..]));
        // ICMPv6 type 136 right after the 40-byte IPv6 header.
        let na = recv_frame(&v6, |f| {
            f.get(6..12) == Some(&vmac[..]) && f.get(54) == Some(&136)
        });
        (garp, na)
    });
    ready_rx.recv_timeout(READY).expect("receiver ready");
    common::in_netns(&a.ns, move || {
        let tx = L2Sender::open(a.ifindex).unwrap();
        tx.send_gratuitous_arp(vmac, vip4).unwrap();
        tx.send_unsolicited_na(vmac, vip6, false).unwrap();
    });
    let (garp, na) = receiver.join().expect("receiver thread");
    assert_eq!(garp, l2::gratuitous_arp_frame(vmac, vip4));
    assert_eq!(na, l2::unsolicited_na_frame(vmac, vip6, false));
}

/// Input: B opens its sockets while eth0 is down, then eth0 flaps again.
/// Output: once up, B still receives A's multicast on both families, so a
/// socket need not be reopened across down/up (only when the ifindex
/// changes).
#[test]
#[ignore = "needs root: network namespaces"]
fn raw_sockets_survive_link_flap() {
    let lab = Lab::new("flap", 2);
    let (a, b) = (lab.host(0).clone(), lab.host(1).clone());
    common::run_ok(&["ip", "-n", &b.ns, "link", "set", "eth0", "down"]);

    let (ready_tx, ready_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let bb = b.clone();
    let receiver = spawn_in_netns(&b.ns, move || {
        block_on(T, async move {
            let v4 = CarpSocket::open_v4(&bb.ifname, bb.ifindex).unwrap();
            let v6 = CarpSocket::open_v6(&bb.ifname, bb.ifindex).unwrap();
            ready_tx.send(()).unwrap();
            go_rx.recv_timeout(READY).unwrap();
            let mut buf = [0u8; 128];
            let r4 = v4.recv(&mut buf).await.unwrap();
            let r6 = v6.recv(&mut buf).await.unwrap();
            (r4, r6)
        })
    });
    ready_rx.recv_timeout(READY).expect("receiver ready");
    for state in ["up", "down", "up"] {
        common::run_ok(&["ip", "-n", &b.ns, "link", "set", "eth0", state]);
    }
    go_tx.send(()).unwrap();

    let aa = a.clone();
    block_on_in(&a.ns, T, move || async move {
        let v4 = CarpSocket::open_v4(&aa.ifname, aa.ifindex).unwrap();
        let v6 = CarpSocket::open_v6(&aa.ifname, aa.ifindex).unwrap();
        // Carrier takes a moment to come back on the bridge port; resend.
        for _ in 0..20 {
            let _ = v4.send(None, CARP_GROUP_V4.into(), &payload(5)).await;
            let _ = v6.send(None, CARP_GROUP_V6.into(), &payload(6)).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (r4, r6) = receiver.join().expect("receiver thread");
    assert_eq!((r4.ttl, r4.len, r4.src), (255, 36, IpAddr::from(a.v4)));
    assert_eq!(
        (r6.ttl, r6.len, r6.src),
        (255, 36, IpAddr::from(a.link_local))
    );
}

/// Input: 1,000 IPv4 and 1,000 IPv6 addresses added in one batch (twice,
/// with one bad prefix length among them), then removed in one batch
/// (twice). Output: one result per address in order, only the bad one an
/// error (EINVAL); all 2,000 in the dump, IPv6 never tentative; none after
/// the removal, and removing them again is success.
#[test]
#[ignore = "needs root: network namespaces"]
fn netlink_address_batches() {
    let lab = Lab::new("adnlbat", 1);
    let a = lab.host(0).clone();
    let mut addrs: Vec<(IpAddr, u8)> = (0..1000u32)
        .map(|i| {
            (
                Ipv4Addr::new(198, 18, 4 + (i / 250) as u8, 1 + (i % 250) as u8).into(),
                32,
            )
        })
        .chain((1..=1000u16).map(|i| (Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i).into(), 128)))
        .collect();
    let bad = 700;
    addrs.insert(bad, (Ipv4Addr::new(198, 18, 9, 1).into(), 33));
    let aa = a.clone();
    let all = addrs.clone();
    block_on_in(&a.ns, T, move || async move {
        let nl = Netlink::connect().await.unwrap();
        for _ in 0..2 {
            let results = nl.add_addresses(aa.ifindex, &all).await;
            assert_eq!(results.len(), all.len());
            for (i, r) in results.iter().enumerate() {
                if i == bad {
                    let e = r.as_ref().expect_err("prefix 33 refused");
                    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e:?}");
                } else {
                    assert!(r.is_ok(), "{:?}: {r:?}", all[i]);
                }
            }
        }
        let have = nl.addresses(aa.ifindex).await.unwrap();
        for (i, x) in all.iter().enumerate() {
            assert_eq!(have.contains(x), i != bad, "{x:?}");
        }
    });
    let listed = lab.addrs(&a.ns, "eth0");
    let ours =
        |x: &&common::Addr| x.local.starts_with("198.18.") || x.local.starts_with("2001:db8:1:");
    assert_eq!(listed.iter().filter(ours).count(), 2000);
    assert!(
        listed
            .iter()
            .filter(ours)
            .all(|x| !x.tentative && (x.family == "inet" || x.nodad)),
        "IPv6 added with nodad"
    );
    let aa = a.clone();
    block_on_in(&a.ns, T, move || async move {
        let nl = Netlink::connect().await.unwrap();
        addrs.remove(bad);
        for _ in 0..2 {
            let results = nl.del_addresses(aa.ifindex, &addrs).await;
            assert_eq!(results.len(), addrs.len());
            assert!(results.iter().all(Result::is_ok), "{results:?}");
        }
    });
    assert_eq!(lab.addrs(&a.ns, "eth0").iter().filter(ours).count(), 0);
}
