//! VRRP `accept off` (RFC 9568 Accept_Mode False) with a real `carpd`: the
//! MASTER drops traffic addressed to its virtual addresses but still routes
//! through them and still resolves them (ARP, neighbour discovery); `accept
//! on` takes the same traffic; shutdown removes the drop table.

mod common;

use std::time::Duration;

use common::Lab;
use common::daemon::wait_state;
use common::testbed::words::Words;

const VIP4: &str = "192.0.2.80";
const VIP6: &str = "2001:db8::80";

/// Whether one ping from `ns` to `dst` is answered within a second.
fn answers(lab: &Lab, ns: &str, dst: &str) -> bool {
    lab.exec(ns, &["ping", "-c", "1", "-W", "1", dst])
        .status
        .success()
}

/// Input: host 0 routes between the LAN (host 1, the client, whose default
/// gateway is the VIP) and a second LAN (host 2, a server, reached on it); carpd on host 0
/// runs VRRP vhids 8 (IPv4) and 9 (IPv6) with `accept off`, and is MASTER of
/// both. Output: pings to the VIPs go unanswered, the client still learns the
/// VIPs' MACs (ARP and NDP work) and reaches the server through the VIP; with
/// `accept on` the VIPs answer; after SIGTERM the drop table is gone.
#[test]
#[ignore = "needs root: network namespaces"]
fn accept_off_drops_traffic_to_the_vips_but_routes_through_them() {
    let mut lab = Lab::new("acceptv", 3);
    lab.add_lan(&[0, 2]);
    let (router, client, server) = (
        lab.ns(0).to_owned(),
        lab.ns(1).to_owned(),
        lab.ns(2).to_owned(),
    );
    lab.sysctl(&router, "net.ipv4.ip_forward", "1");
    lab.exec_ok(
        &client,
        &["ip", "route", "add", "203.0.113.0/24", "via", VIP4],
    );
    // The server is on both LANs (every host is on the first): it gets the
    // request through the router on eth1 and answers directly on eth0.
    for conf in ["all", "eth1"] {
        lab.sysctl(&server, &format!("net.ipv4.conf.{conf}.rp_filter"), "0");
    }
    let run = |accept: &str| {
        let vhost = |vrid: u8, vip: String| {
            Words::new("eth0", vrid)
                .vrrp(100, 20)
                .raw("accept")
                .raw(accept)
                .addr(&vip)
                .build()
        };
        let mut words = vhost(8, format!("{VIP4}/24"));
        words.extend(vhost(9, format!("{VIP6}/64")));
        words
    };

    let off = lab.carpd(0, "off", &run("off"));
    wait_state(&off, 8, "MASTER", Duration::from_secs(8));
    wait_state(&off, 9, "MASTER", Duration::from_secs(8));
    let tables = lab.exec_ok(&router, &["nft", "list", "tables"]);
    assert!(tables.contains("inet carpd_accept_"), "{tables}");
    assert!(
        !answers(&lab, &client, VIP4),
        "the IPv4 VIP answered with accept off"
    );
    assert!(
        !answers(&lab, &client, VIP6),
        "the IPv6 VIP answered with accept off"
    );
    // Resolution still works: the client has the VIPs' MACs.
    assert!(
        lab.neigh_lladdr(&client, VIP4).is_some(),
        "no ARP entry for the VIP"
    );
    assert!(
        lab.neigh_lladdr(&client, VIP6).is_some(),
        "no neighbour entry for the VIP"
    );
    // Routing through the VIP still works.
    assert!(
        answers(&lab, &client, "203.0.113.12"),
        "not routed through the VIP"
    );
    let ruleset = lab.exec_ok(&router, &["nft", "list", "ruleset"]);
    assert!(ruleset.contains("counter packets"), "{ruleset}");
    lab.kill(&off, nix::sys::signal::Signal::SIGTERM);
    assert_eq!(lab.wait_exit(&off, Duration::from_secs(10)), Some(0));
    let tables = lab.exec_ok(&router, &["nft", "list", "tables"]);
    assert!(
        !tables.contains("carpd_accept_"),
        "table left behind: {tables}"
    );

    // The same with accept on: the VIPs answer.
    let on = lab.carpd(0, "on", &run("on"));
    wait_state(&on, 8, "MASTER", Duration::from_secs(8));
    wait_state(&on, 9, "MASTER", Duration::from_secs(8));
    assert!(
        answers(&lab, &client, VIP4),
        "the IPv4 VIP did not answer with accept on"
    );
    assert!(
        answers(&lab, &client, VIP6),
        "the IPv6 VIP did not answer with accept on"
    );
}
