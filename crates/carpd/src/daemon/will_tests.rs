//! The last will under the fake OS (a part of the loop tests): what the
//! daemon decides a dead MASTER's guard removes and sends.

use carp_proto::wire::vrrp;

use super::*;
use crate::guard::will::Via;

fn last_will(fake: &Fake) -> Will {
    fake.0
        .borrow()
        .wills
        .last()
        .cloned()
        .expect("a will was handed on")
}

/// Input: a `lladdr virtual` dual-stack vhost takes over, then SIGTERM.
/// Output: as BACKUP the will names only the macvlan; as MASTER also its
/// addresses (on the macvlan) and one bow-out per family, from the virtual
/// MAC to the group, with exactly the bytes the planned stop then sends;
/// the stop keeps that will (a death mid-stop still cleans up) and retires it.
#[tokio::test(start_paused = true)]
async fn a_masters_will_holds_the_bow_outs_a_stop_sends() {
    let fake = Fake::new();
    let vhosts = vhost(1, 0, "virtual", &["192.0.2.50/24", "2001:db8::50/64"]);
    let result = Harness::run(&vhosts, fake.clone(), |h| async move {
        let macvlan = loop {
            if let Some(i) = h.fake.index_of("carp2v1") {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let backup = last_will(&h.fake);
        let link = WillLink {
            ifindex: macvlan,
            name: "carp2v1".into(),
        };
        assert_eq!(backup.macvlans, std::slice::from_ref(&link));
        assert!(
            backup.addresses.is_empty() && backup.adverts.is_empty(),
            "{backup:#?}"
        );
        h.until_master(1).await;
        let master = last_will(&h.fake);
        assert_eq!(master.macvlans, [link]);
        let addrs: Vec<(u32, IpAddr)> = master
            .addresses
            .iter()
            .map(|a| (a.ifindex, a.addr))
            .collect();
        assert_eq!(addrs, [(macvlan, ip(VIP)), (macvlan, ip(VIP6))]);
        let vmac = crate::os::l2::virtual_mac(1);
        let dsts: Vec<IpAddr> = master.adverts.iter().map(|a| a.dst).collect();
        assert_eq!(dsts, [ip("224.0.0.18"), ip("ff02::12")]);
        for a in &master.adverts {
            assert_eq!(
                (a.vhid, a.carpdev.ifindex, a.carpdev.name.as_str()),
                (1, ETH0, "eth0")
            );
            assert!(
                matches!(a.via, Via::Frame { mac, .. } if mac == vmac),
                "{a:?}"
            );
            assert_eq!((a.bytes[2], a.bytes[5]), (255, 255), "advskew, advbase");
        }
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
    let w = fake.0.borrow();
    assert!(w.retired, "an orderly stop retires the will");
    let will = w.wills.last().unwrap();
    assert_eq!(
        will.adverts.len(),
        2,
        "the stop keeps the MASTER's will: {will:#?}"
    );
    let sent: Vec<&[u8]> = w
        .calls
        .iter()
        .filter_map(|c| match c {
            Call::AdvertFrame(_, _, p) if p[2] == 255 && p[5] == 255 => Some(&p[..]),
            _ => None,
        })
        .collect();
    let kept: Vec<&[u8]> = will.adverts.iter().map(|a| &a.bytes[..]).collect();
    assert_eq!(kept, sent, "the will's bytes are the planned stop's");
}

/// Input: a MASTER hears a better master. Output: as BACKUP its will sends
/// nothing and removes nothing (its addresses went with the step-down).
#[tokio::test(start_paused = true)]
async fn a_backups_will_is_empty() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 100, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            assert_eq!(last_will(&h.fake).adverts.len(), 1);
            assert_eq!(last_will(&h.fake).addresses.len(), 1);
            let advert = peer_advert(1, 0, &[VIP.parse().unwrap()]);
            h.fake.inject(Family::V4, ip("192.0.2.2"), &advert).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(h.view(1).await.state, VhostState::Backup);
            let will = last_will(&h.fake);
            assert!(will.is_empty(), "{will:#?}");
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}

/// Input: two MASTERs; each in turn hears a better master, with no control
/// request in between (which would rebuild the whole will). Output: the
/// will loses exactly the one that stepped down, its address and bow-out,
/// and keeps the other's; then it is empty.
#[tokio::test(start_paused = true)]
async fn a_step_down_takes_only_its_own_part_out_of_the_will() {
    let vhosts =
        vhost(1, 100, "real", &["192.0.2.50/24"]) + &vhost(2, 100, "real", &["192.0.2.60/24"]);
    let result = Harness::run(&vhosts, Fake::new(), |h| async move {
        h.until_master(1).await;
        h.until_master(2).await;
        let both = last_will(&h.fake);
        let vhids: Vec<u8> = both.adverts.iter().map(|a| a.vhid).collect();
        assert_eq!(vhids, [1, 2]);
        assert_eq!(both.addresses.len(), 2);
        let step_down = |vhid: u8, vip: &str| {
            let advert = peer_advert(vhid, 0, &[vip.parse().unwrap()]);
            let h = &h;
            async move {
                h.fake.inject(Family::V4, ip("192.0.2.2"), &advert).await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        step_down(1, "192.0.2.50").await;
        let one = last_will(&h.fake);
        let vhids: Vec<u8> = one.adverts.iter().map(|a| a.vhid).collect();
        let addrs: Vec<IpAddr> = one.addresses.iter().map(|a| a.addr).collect();
        assert_eq!(
            (vhids, addrs),
            (vec![2], vec![ip("192.0.2.60")]),
            "{one:#?}"
        );
        assert_eq!(one.adverts[0].bytes, both.adverts[1].bytes);
        step_down(2, "192.0.2.60").await;
        let none = last_will(&h.fake);
        assert!(none.is_empty(), "{none:#?}");
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a MASTER with a unicast peer. Output: its bow-out goes to the
/// peer through the CARP socket from the carpdev's address, not to the group.
#[tokio::test(start_paused = true)]
async fn a_unicast_will_goes_to_the_peer() {
    let fake = Fake::new();
    let vhosts = format!(
        "{}peer = \"198.51.100.2\"\n",
        vhost(1, 0, "real", &["192.0.2.50/24"])
    );
    let result = Harness::run(&vhosts, fake, |h| async move {
        h.until_master(1).await;
        let will = last_will(&h.fake);
        let [a] = &will.adverts[..] else {
            panic!("one bow-out: {will:#?}");
        };
        assert_eq!(a.dst, ip("198.51.100.2"));
        assert_eq!(
            a.via,
            Via::Socket {
                src: Some(ip("192.0.2.1"))
            }
        );
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a VRRPv3 vhost (carpver 3) becomes MASTER. Output: its will
/// sends priority 0 (RFC 9568 6.4.3, the VRRP bow-out), with the checksum
/// over the source the frame carries.
#[tokio::test(start_paused = true)]
async fn a_vrrp_will_resigns_with_priority_0() {
    let fake = Fake::new();
    let vhosts = "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\ncarpver = 3\nvrrpinterval = 100\n\
                  lladdr = \"virtual\"\naddresses = [\"192.0.2.50/24\"]\n";
    let result = Harness::run(vhosts, fake, |h| async move {
        h.until_master(1).await;
        let will = last_will(&h.fake);
        let [a] = &will.adverts[..] else {
            panic!("one resignation: {will:#?}");
        };
        let Via::Frame { src, .. } = a.via else {
            panic!("from the virtual MAC: {a:?}");
        };
        assert_eq!(src, ip("192.0.2.1"));
        let repr = vrrp::Repr::parse(&a.bytes, src, a.dst).expect("checksum over the source");
        assert_eq!((repr.vrid, repr.priority), (1, 0));
        h.signal(Signal::Terminate).await;
    })
    .await;
    result.unwrap();
}

/// Input: a MASTER advertising for 5 s, then an operator demotion.
/// Output: no new will while only advertisements go out (the loop does not
/// rebuild or resend it per advertisement); the demotion, which changes the
/// bow-out's demote byte, hands on a new one.
#[tokio::test(start_paused = true)]
async fn only_a_change_hands_on_a_new_will() {
    let fake = Fake::new();
    let result = Harness::run(
        &vhost(1, 0, "real", &["192.0.2.50/24"]),
        fake,
        |h| async move {
            h.until_master(1).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            let count = h.fake.0.borrow().wills.len();
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(
                h.fake.0.borrow().wills.len(),
                count,
                "a will per advertisement"
            );
            let before = last_will(&h.fake).adverts[0].bytes.clone();
            let reply = h.request(Request::Demote { group: None, by: 3 }).await;
            assert!(reply.ok, "{reply:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
            let after = last_will(&h.fake).adverts[0].bytes.clone();
            assert_eq!((before[4], after[4]), (0, 3), "the demote byte");
            h.signal(Signal::Terminate).await;
        },
    )
    .await;
    result.unwrap();
}
