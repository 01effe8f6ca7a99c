//! Prometheus / OpenMetrics text for `/metrics`, built per scrape from one
//! `status` and one `stats` reply of the daemon loop.
//!
//! Host-wide counters are the carpstats of `carpctl stats` under the names
//! `carp_*`; per-vhost values carry the labels `carpdev` and `vhid` under
//! `carp_vhost_*`. Counters are snapshots, so a registry is built per scrape.
//! Names follow the Prometheus conventions: base units (`_seconds`), a
//! `state` label rather than an enum value, `_info` metrics for text, and no
//! empty label set on label-less series. State sync adds `carp_sync_*`
//! when it is configured.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use carp_proto::Stats;

use crate::control::types::{CarpIfView, SyncView, VhostState, VhostView};

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// A host-wide series: family name without `_total`, optional label, value.
type HostCounter = (&'static str, Option<(&'static str, &'static str)>, u64);
/// A per-vhost family: name, help, value.
type PerVhost<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// Every host-wide counter: (metric name without `_total`, label, stats field).
///
/// `received == accepted + every dropped reason`, as in `carpctl stats`.
fn host_counters(s: &Stats) -> [HostCounter; 19] {
    [
        (
            "carp_received_packets",
            Some(("family", "ipv4")),
            s.ipackets,
        ),
        (
            "carp_received_packets",
            Some(("family", "ipv6")),
            s.ipackets6,
        ),
        ("carp_dropped_packets", Some(("reason", "bad_if")), s.bad_if),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_ttl")),
            s.bad_ttl,
        ),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_len")),
            s.bad_len,
        ),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_sum")),
            s.bad_sum,
        ),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_vhid")),
            s.bad_vhid,
        ),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_ver")),
            s.bad_ver,
        ),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_auth")),
            s.bad_auth,
        ),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_src")),
            s.bad_src,
        ),
        (
            "carp_dropped_packets",
            Some(("reason", "bad_peer")),
            s.bad_peer,
        ),
        ("carp_dropped_packets", Some(("reason", "replay")), s.replay),
        ("carp_accepted_packets", None, s.accepted),
        ("carp_odd_header_packets", None, s.odd_header),
        ("carp_sent_packets", Some(("family", "ipv4")), s.opackets),
        ("carp_sent_packets", Some(("family", "ipv6")), s.opackets6),
        ("carp_send_errors", None, s.send_errors),
        ("carp_became_master", None, s.preempt),
        ("carp_transitions", None, s.transitions),
    ]
}

/// Help text of each host-wide family.
fn host_help(name: &str) -> &'static str {
    match name {
        "carp_received_packets" => "CARP advertisements received (carps_ipackets, carps_ipackets6)",
        "carp_dropped_packets" => "Received advertisements discarded, by reason (carpstats)",
        "carp_accepted_packets" => "Received advertisements that reached the state machine",
        "carp_odd_header_packets" => "Accepted advertisements with an unusual type or authlen",
        "carp_sent_packets" => "CARP advertisements sent (carps_opackets, carps_opackets6)",
        "carp_send_errors" => "Advertisements the OS failed to send",
        "carp_became_master" => "Transitions to MASTER (carps_preempt)",
        _ => "State transitions of any kind",
    }
}

/// Every state, each a series of `carp_vhost_state`.
const STATES: [VhostState; 3] = [VhostState::Init, VhostState::Backup, VhostState::Master];

/// The per-vhost drop reasons, as in the host-wide `carp_dropped_packets`.
fn vhost_drops(s: &Stats) -> [(&'static str, u64); 10] {
    [
        ("bad_if", s.bad_if),
        ("bad_ttl", s.bad_ttl),
        ("bad_len", s.bad_len),
        ("bad_sum", s.bad_sum),
        ("bad_vhid", s.bad_vhid),
        ("bad_ver", s.bad_ver),
        ("bad_auth", s.bad_auth),
        ("bad_src", s.bad_src),
        ("bad_peer", s.bad_peer),
        ("replay", s.replay),
    ]
}

/// Encode the metrics of one scrape; `now_unix` is the wall clock (Unix
/// seconds) at render time, from which the state's start time is derived.
pub fn render(
    stats: &Stats,
    vhosts: &[VhostView],
    interfaces: &[CarpIfView],
    groups: &[(String, u8)],
    maintenance: bool,
    sync: Option<&SyncView>,
    now_unix: f64,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "carp_build",
        "carpd build",
        Info::new(vec![("version", env!("CARGO_PKG_VERSION").to_string())]),
    );

    let mut families: Vec<(&'static str, Family<Labels, Counter>)> = Vec::new();
    for (name, label, value) in host_counters(stats) {
        if label.is_none() {
            // A plain counter: a family would print an empty `{}`.
            let c = Counter::<u64>::default();
            c.inc_by(value);
            registry.register(name, host_help(name), c);
            continue;
        }
        let family = match families.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => f.clone(),
            None => {
                let f = Family::<Labels, Counter>::default();
                families.push((name, f.clone()));
                f
            }
        };
        let labels: Labels = label
            .map(|(k, v)| vec![(k, v.to_string())])
            .unwrap_or_default();
        family.get_or_create(&labels).inc_by(value);
    }
    for (name, family) in families {
        registry.register(name, host_help(name), family);
    }

    let info = Family::<Labels, Gauge>::default();
    let state = Family::<Labels, Gauge>::default();
    for v in vhosts {
        let mut labels = vhost_labels(v);
        labels.push(("addresses", v.addresses.join(",")));
        info.get_or_create(&labels).set(1);
        for s in STATES {
            let mut labels = vhost_labels(v);
            labels.push(("state", s.as_str().to_string()));
            state.get_or_create(&labels).set(i64::from(s == v.state));
        }
    }
    registry.register(
        "carp_vhost_info",
        "Configuration of the vhost; the value is always 1",
        info,
    );
    registry.register(
        "carp_vhost_state",
        "1 for the vhost's current state, 0 for the others",
        state,
    );

    let per_vhost_gauges: [PerVhost<VhostView, f64>; 4] = [
        (
            "carp_vhost_state_since_timestamp_seconds",
            "Unix time the current state was entered",
            |v| v.since_secs,
        ),
        ("carp_vhost_advbase_seconds", "Configured advbase", |v| {
            f64::from(v.advbase)
        }),
        (
            "carp_vhost_advskew_seconds",
            "advskew actually advertised (demotion applied), in seconds (advskew/256)",
            |v| f64::from(v.effective_advskew) / 256.0,
        ),
        ("carp_vhost_demote", "Demote byte advertised", |v| {
            f64::from(v.demote)
        }),
    ];
    for (i, (name, help, value)) in per_vhost_gauges.into_iter().enumerate() {
        let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for v in vhosts {
            // The start time, rounded to the millisecond so that it does not
            // jitter with the scrape's own timing.
            let x = if i == 0 {
                ((now_unix - value(v)) * 1000.0).round() / 1000.0
            } else {
                value(v)
            };
            family.get_or_create(&vhost_labels(v)).set(x);
        }
        registry.register(name, help, family);
    }
    let drops = Family::<Labels, Counter>::default();
    for v in vhosts {
        for (reason, n) in vhost_drops(&v.stats) {
            let mut labels = vhost_labels(v);
            labels.push(("reason", reason.to_string()));
            drops.get_or_create(&labels).inc_by(n);
        }
    }
    registry.register(
        "carp_vhost_dropped_packets",
        "Advertisements for the vhost discarded, by reason",
        drops,
    );
    let per_vhost_counters: [PerVhost<Stats, u64>; 5] = [
        (
            "carp_vhost_transitions",
            "State transitions of the vhost",
            |s| s.transitions,
        ),
        (
            "carp_vhost_accepted_packets",
            "Advertisements for the vhost that passed every check",
            |s| s.accepted,
        ),
        (
            "carp_vhost_received_packets",
            "Advertisements for the vhost received (accepted plus dropped)",
            |s| s.accepted + s.dropped(),
        ),
        (
            "carp_vhost_sent_packets",
            "Advertisements sent by the vhost",
            |s| s.opackets + s.opackets6,
        ),
        (
            "carp_vhost_send_errors",
            "Advertisements of the vhost the OS failed to send",
            |s| s.send_errors,
        ),
    ];
    for (name, help, value) in per_vhost_counters {
        let family = Family::<Labels, Counter>::default();
        for v in vhosts {
            family
                .get_or_create(&vhost_labels(v))
                .inc_by(value(&v.stats));
        }
        registry.register(name, help, family);
    }

    let hook_counters: [PerVhost<VhostView, u64>; 3] = [
        (
            "carp_vhost_hook_runs",
            "Hook runs of the vhost's carp interface that ended",
            |v| v.hooks.runs,
        ),
        (
            "carp_vhost_hook_failures",
            "Hook runs that exited non-zero, died of a signal or could not start",
            |v| v.hooks.failed,
        ),
        (
            "carp_vhost_hook_kills",
            "Hook runs killed with their process group at their deadline",
            |v| v.hooks.killed,
        ),
    ];
    for (name, help, value) in hook_counters {
        let family = Family::<Labels, Counter>::default();
        for v in vhosts {
            family.get_or_create(&vhost_labels(v)).inc_by(value(v));
        }
        registry.register(name, help, family);
    }

    let master_down = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for v in vhosts {
        master_down
            .get_or_create(&vhost_labels(v))
            .set(v.master_down_secs);
    }
    registry.register(
        "carp_vhost_master_down_seconds",
        "How long a BACKUP of the vhost waits for a silent master",
        master_down,
    );

    // VRRPv3 vhosts only (carpver 3): what they advertise and what they learned.
    let priority = Family::<Labels, Gauge>::default();
    let learned = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for v in vhosts {
        if let Some(p) = v.vrrp_priority {
            priority.get_or_create(&vhost_labels(v)).set(i64::from(p));
        }
        if let Some(cs) = v.vrrp_master_interval_cs {
            learned
                .get_or_create(&vhost_labels(v))
                .set(f64::from(cs) / 100.0);
        }
    }
    registry.register(
        "carp_vhost_vrrp_priority",
        "VRRPv3 vhosts: the priority advertised (demotion applied)",
        priority,
    );
    registry.register(
        "carp_vhost_vrrp_master_interval_seconds",
        "VRRPv3 vhosts: the master's advertisement interval as last heard",
        learned,
    );

    register_interfaces(&mut registry, interfaces);

    let demote = Family::<Labels, Gauge>::default();
    for (group, value) in groups {
        demote
            .get_or_create(&vec![("group", group.clone())])
            .set(i64::from(*value));
    }
    registry.register(
        "carp_group_demote",
        "Demote counter of each interface group (carpdemote)",
        demote,
    );
    let maint = Gauge::<i64>::default();
    maint.set(i64::from(maintenance));
    registry.register(
        "carp_maintenance",
        "1 while maintenance mode is on (group carp demoted by 128)",
        maint,
    );

    if let Some(sync) = sync {
        register_sync(&mut registry, sync, now_unix);
    }

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
}

/// State sync: whether conntrackd runs, its cache entries, the failed
/// takeovers and the last takeover commit (how long, and when).
fn register_sync(registry: &mut Registry, s: &SyncView, now_unix: f64) {
    let running = Gauge::<i64>::default();
    running.set(i64::from(s.running));
    registry.register(
        "carp_sync_running",
        "1 while conntrackd runs (supervised: alive; own file: answered the last conntrackd -s)",
        running,
    );
    let entries = Family::<Labels, Gauge>::default();
    for (cache, n) in [
        ("internal", s.internal_entries),
        ("external", s.external_entries),
    ] {
        if let Some(n) = n {
            let n = i64::try_from(n).unwrap_or(i64::MAX);
            entries
                .get_or_create(&vec![("cache", cache.to_string())])
                .set(n);
        }
    }
    registry.register(
        "carp_sync_cache_entries",
        "Entries in conntrackd's internal (this host's) and external (the peer's) caches",
        entries,
    );
    let failures = Counter::<u64>::default();
    failures.inc_by(s.failures);
    registry.register(
        "carp_sync_takeover_failures",
        "Takeovers whose state sync steps failed or timed out",
        failures,
    );
    if let Some(took) = s.last_commit_secs {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(took);
        registry.register(
            "carp_sync_last_commit_seconds",
            "How long the last takeover's commit, flush, resync and bulk send took",
            g,
        );
    }
    if let Some(age) = s.last_commit_age_secs {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(((now_unix - age) * 1000.0).round() / 1000.0);
        registry.register(
            "carp_sync_last_commit_timestamp_seconds",
            "Unix time the last takeover's state sync steps succeeded",
            g,
        );
    }
}

/// Per carp interface: its nodes and mode, the load-share mask, the share
/// of hash slots this host serves and what became of ARP requests / NS.
fn register_interfaces(registry: &mut Registry, interfaces: &[CarpIfView]) {
    let labels = |i: &CarpIfView| -> Labels {
        vec![("carpdev", i.carpdev.clone()), ("vhid", i.vhid.to_string())]
    };
    let info = Family::<Labels, Gauge>::default();
    let mask = Family::<Labels, Gauge>::default();
    let slots = Family::<Labels, Gauge>::default();
    let served = Family::<Labels, Gauge>::default();
    let answers = Family::<Labels, Counter>::default();
    for i in interfaces {
        let mut l = labels(i);
        l.push(("balancing", i.balancing.clone()));
        let nodes: Vec<String> = i.nodes.iter().map(|(v, _)| v.to_string()).collect();
        l.push(("nodes", nodes.join(",")));
        info.get_or_create(&l).set(1);
        mask.get_or_create(&labels(i)).set(i64::from(i.mask));
        slots.get_or_create(&labels(i)).set(i.nodes.len() as i64);
        served.get_or_create(&labels(i)).set(i.served_slots as i64);
        for (result, n) in [
            ("answered", i.solicitations_answered),
            ("silent", i.solicitations_silent),
        ] {
            let mut l = labels(i);
            l.push(("result", result.to_string()));
            answers.get_or_create(&l).inc_by(n);
        }
    }
    registry.register(
        "carp_interface_info",
        "A carp interface: its balancing mode and node vhids; the value is always 1",
        info,
    );
    registry.register(
        "carp_interface_load_share_mask",
        "Bit i set when node i (vhid order) is MASTER here",
        mask,
    );
    registry.register(
        "carp_interface_slots",
        "Hash slots (nodes) of the carp interface",
        slots,
    );
    registry.register(
        "carp_interface_served_slots",
        "Hash slots this host serves (nodes MASTER here)",
        served,
    );
    registry.register(
        "carp_interface_solicitations",
        "ARP requests and neighbour solicitations for balanced addresses, answered here or left to another host",
        answers,
    );
}

fn vhost_labels(v: &VhostView) -> Labels {
    vec![("carpdev", v.carpdev.clone()), ("vhid", v.vhid.to_string())]
}

#[cfg(test)]
mod test {
    use super::*;

    /// A stats value whose every field differs, so a swapped field shows.
    fn distinct_stats() -> Stats {
        let mut value = serde_json::to_value(Stats::default()).unwrap();
        for (i, (_, v)) in value.as_object_mut().unwrap().iter_mut().enumerate() {
            *v = serde_json::json!(1000 + i as u64);
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn every_stats_field_is_exported_once() {
        let s = distinct_stats();
        let fields = serde_json::to_value(s).unwrap();
        let fields = fields.as_object().unwrap();
        let exported: Vec<u64> = host_counters(&s).iter().map(|c| c.2).collect();
        assert_eq!(
            fields.len(),
            exported.len(),
            "a Stats field is not exported"
        );
        for (name, v) in fields {
            let v = v.as_u64().unwrap();
            assert_eq!(
                exported.iter().filter(|e| **e == v).count(),
                1,
                "{name} exported {} times",
                exported.iter().filter(|e| **e == v).count()
            );
        }
    }

    #[test]
    fn text_has_labelled_series_and_eof() {
        let mut stats = distinct_stats();
        stats.bad_ttl = 7;
        let v = VhostView {
            carpdev: "eth0".into(),
            vhid: 9,
            state: VhostState::Master,
            since_secs: 3.5,
            cause: crate::control::types::VhostCause::MasterDown,
            advbase: 1,
            advskew: 100,
            effective_advskew: 100,
            demote: 0,
            lladdr: "virtual".into(),
            addresses: vec!["192.0.2.50/24".into()],
            last_master: None,
            last_master_age_secs: None,
            stats,
            address_failures: 0,
            bad_auth_from: None,
            bad_auth_age_secs: None,
            key_fingerprint: String::new(),
            hooks: crate::control::types::HookCounts {
                runs: 5,
                failed: 2,
                killed: 1,
                ..Default::default()
            },
            peers: vec![],
            dual_path: false,
            hmac: "openbsd".into(),
            flavour: "carp".into(),
            vrrp_priority: None,
            vrrp_master_priority: None,
            vrrp_master_interval_cs: None,
            master_down_secs: 3.390625,
            master_down_formula: "freebsd".into(),
        };
        let iface = CarpIfView {
            carpdev: "eth0".into(),
            vhid: 1,
            balancing: "ip".into(),
            nodes: vec![(1, VhostState::Master), (2, VhostState::Backup)],
            mask: 1,
            served_slots: 1,
            live: true,
            solicitations_answered: 4,
            solicitations_silent: 2,
            unpinned_requesters: 0,
        };
        let text = render(
            &stats,
            &[v],
            &[iface],
            &[("carp".into(), 128)],
            true,
            None,
            1000.0,
        )
        .unwrap();
        assert!(text.contains(
            "carp_interface_info{carpdev=\"eth0\",vhid=\"1\",balancing=\"ip\",nodes=\"1,2\"} 1"
        ));
        assert!(text.contains("carp_interface_served_slots{carpdev=\"eth0\",vhid=\"1\"} 1"));
        for (name, n) in [("runs", 5), ("failures", 2), ("kills", 1)] {
            let line = format!("carp_vhost_hook_{name}_total{{carpdev=\"eth0\",vhid=\"9\"}} {n}");
            assert!(text.contains(&line), "{line} missing in\n{text}");
        }
        assert!(text.contains(
            "carp_interface_solicitations_total{carpdev=\"eth0\",vhid=\"1\",result=\"answered\"} 4"
        ));
        for line in [
            "carp_dropped_packets_total{reason=\"bad_ttl\"} 7",
            "carp_vhost_dropped_packets_total{carpdev=\"eth0\",vhid=\"9\",reason=\"bad_ttl\"} 7",
            "carp_vhost_state{carpdev=\"eth0\",vhid=\"9\",state=\"MASTER\"} 1",
            "carp_vhost_state{carpdev=\"eth0\",vhid=\"9\",state=\"BACKUP\"} 0",
            "carp_vhost_state_since_timestamp_seconds{carpdev=\"eth0\",vhid=\"9\"} 996.5",
            "carp_vhost_advskew_seconds{carpdev=\"eth0\",vhid=\"9\"} 0.390625",
            "carp_vhost_info{carpdev=\"eth0\",vhid=\"9\",addresses=\"192.0.2.50/24\"} 1",
            "carp_group_demote{group=\"carp\"} 128",
            "carp_maintenance 1",
            "# TYPE carp_transitions counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let became = format!("carp_became_master_total {}", stats.preempt);
        assert!(
            text.lines().any(|l| l == became),
            "no {became:?} in\n{text}"
        );
        assert!(!text.contains("{}"), "an empty label set in\n{text}");
        assert!(text.contains("carp_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"));
        assert!(
            !text.contains("carp_sync_"),
            "sync metrics without sync:\n{text}"
        );
    }

    #[test]
    fn sync_metrics_show_conntrackd_and_its_caches() {
        let sync = SyncView {
            through: "syncdev eth2".into(),
            gate: "open".into(),
            failures: 2,
            last_commit_secs: Some(0.25),
            running: true,
            internal_entries: Some(4),
            external_entries: Some(6),
            last_commit_age_secs: Some(10.0),
        };
        let text = render(&Stats::default(), &[], &[], &[], false, Some(&sync), 1000.0).unwrap();
        for line in [
            "carp_sync_running 1",
            "carp_sync_cache_entries{cache=\"internal\"} 4",
            "carp_sync_cache_entries{cache=\"external\"} 6",
            "carp_sync_takeover_failures_total 2",
            "carp_sync_last_commit_seconds 0.25",
            "carp_sync_last_commit_timestamp_seconds 990.0",
            "# TYPE carp_sync_takeover_failures counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let unknown = SyncView {
            running: false,
            internal_entries: None,
            external_entries: None,
            last_commit_secs: None,
            last_commit_age_secs: None,
            ..sync
        };
        let text = render(&Stats::default(), &[], &[], &[], false, Some(&unknown), 1.0).unwrap();
        assert!(text.lines().any(|l| l == "carp_sync_running 0"), "{text}");
        assert!(!text.contains("carp_sync_cache_entries{"), "{text}");
        assert!(!text.contains("carp_sync_last_commit"), "{text}");
    }
}
