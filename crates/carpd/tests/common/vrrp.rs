//! What the VRRPv3 interop tests share (`netns_vrrp.rs` against keepalived,
//! `netns_frr.rs` against FRR): the two address families' settings, carpd
//! in `carpver 3`, and waiting for a state or a VIP.

use std::time::Duration;

use super::Lab;
use super::daemon::{Carpd, state, wait_for};
use super::testbed::words::Words;

/// Master_Down_Interval at priority 100 and 1 s (3.6 s), with slack.
pub const TAKEOVER: Duration = Duration::from_secs(6);

/// One address family's settings for a test.
#[derive(Clone, Copy)]
pub struct Family {
    pub vrid: u8,
    /// The VIP with its prefix.
    pub vip: &'static str,
    pub name: &'static str,
    /// The key of this family in FRR's `show vrrp json`.
    pub frr_key: &'static str,
    /// The fifth byte of the virtual MAC (RFC 9568 7.3: 01 IPv4, 02 IPv6).
    pub mac_family: u8,
    /// FRR's configuration word for a virtual address.
    pub frr_ip: &'static str,
}

pub const V4: Family = Family {
    vrid: 5,
    vip: "192.0.2.50/24",
    name: "IPv4",
    frr_key: "v4",
    mac_family: 1,
    frr_ip: "ip",
};
pub const V6: Family = Family {
    vrid: 6,
    vip: "2001:db8::50/64",
    name: "IPv6",
    frr_key: "v6",
    mac_family: 2,
    frr_ip: "ipv6",
};

impl Family {
    /// The VIP without its prefix.
    pub fn addr(self) -> &'static str {
        self.vip.split('/').next().expect("vip")
    }
}

/// carpd on host `i` with `carpver 3`, this priority and a 1 s interval.
pub fn carpd_vrrp(lab: &Lab, i: usize, name: &str, f: Family, priority: u8) -> Carpd {
    let words = Words::new("eth0", f.vrid)
        .vrrp(priority, 100)
        .addr(f.vip)
        .build();
    lab.carpd(i, name, &words)
}

/// Whether the VIP is in namespace `ns`.
pub fn has_vip(lab: &Lab, ns: &str, f: Family) -> bool {
    lab.has_addr(ns, f.addr())
}

/// Wait until carpd `d` is in `want` for vrid `f`.
pub fn wait_carpd(d: &Carpd, f: Family, want: &str, within: Duration, what: &str) -> Duration {
    let (_, took) = wait_for(what, within, Duration::from_millis(20), || {
        (state(d, f.vrid).as_deref() == Some(want)).then_some(())
    });
    took
}

/// Wait until the VIP is in namespace `ns` (`true`) or gone from it.
pub fn wait_vip(
    lab: &Lab,
    ns: &str,
    f: Family,
    present: bool,
    within: Duration,
    what: &str,
) -> Duration {
    let (_, took) = wait_for(what, within, Duration::from_millis(20), || {
        (has_vip(lab, ns, f) == present).then_some(())
    });
    took
}

/// nftables on the bridge: drop VRRP between the hosts, or stop dropping.
pub fn partition(lab: &Lab, on: bool) {
    if on {
        lab.bridge_drop("carpt_vrrp", &["ip protocol 112", "ip6 nexthdr 112"]);
    } else {
        lab.bridge_undrop("carpt_vrrp");
    }
}
