//! Prometheus / OpenMetrics text for `/metrics`, built per scrape from one
//! `status` and one `stats` reply of the daemon loop.
//!
//! Host-wide counters are the carpstats of `carpctl stats` under the names
//! `carp_*`; per-vhost values carry the labels `carpdev` and `vhid` under
//! `carp_vhost_*`. Counters are snapshots, so a registry is built per scrape.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use carp_proto::Stats;

use crate::control::types::{VhostState, VhostView};

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
fn host_counters(s: &Stats) -> [HostCounter; 18] {
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
        ("carp_dropped_packets", Some(("reason", "replay")), s.replay),
        ("carp_accepted_packets", None, s.accepted),
        ("carp_odd_header_packets", None, s.odd_header),
        ("carp_sent_packets", Some(("family", "ipv4")), s.opackets),
        ("carp_sent_packets", Some(("family", "ipv6")), s.opackets6),
        ("carp_send_errors", None, s.send_errors),
        ("carp_preempt", None, s.preempt),
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
        "carp_preempt" => "Transitions to MASTER (carps_preempt)",
        _ => "State transitions of any kind",
    }
}

/// Return the value of `state` in `carp_vhost_state`: 0 INIT, 1 BACKUP, 2 MASTER.
pub fn state_value(state: VhostState) -> i64 {
    match state {
        VhostState::Master => 2,
        VhostState::Backup => 1,
        VhostState::Init => 0,
    }
}

/// Encode the metrics of one scrape.
pub fn render(
    stats: &Stats,
    vhosts: &[VhostView],
    groups: &[(String, u8)],
    maintenance: bool,
) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();

    let mut families: Vec<(&'static str, Family<Labels, Counter>)> = Vec::new();
    for (name, label, value) in host_counters(stats) {
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

    let per_vhost_gauges: [PerVhost<VhostView, i64>; 5] = [
        (
            "carp_vhost_state",
            "State of the vhost: 0 INIT, 1 BACKUP, 2 MASTER",
            |v| state_value(v.state),
        ),
        ("carp_vhost_advbase_seconds", "Configured advbase", |v| {
            i64::from(v.advbase)
        }),
        (
            "carp_vhost_advskew",
            "advskew actually advertised (demotion applied)",
            |v| i64::from(v.effective_advskew),
        ),
        ("carp_vhost_demote", "Demote byte advertised", |v| {
            i64::from(v.demote)
        }),
        (
            "carp_vhost_state_age_seconds",
            "Seconds since the current state was entered",
            |v| v.since_secs as i64,
        ),
    ];
    for (name, help, value) in per_vhost_gauges {
        let family = Family::<Labels, Gauge>::default();
        for v in vhosts {
            family.get_or_create(&vhost_labels(v)).set(value(v));
        }
        registry.register(name, help, family);
    }
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
            "carp_vhost_dropped_packets",
            "Advertisements for the vhost discarded",
            |s| s.dropped(),
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

    let mut text = String::new();
    encode(&mut text, &registry)?;
    Ok(text)
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
        };
        let text = render(&stats, &[v], &[("carp".into(), 128)], true).unwrap();
        for line in [
            "carp_dropped_packets_total{reason=\"bad_ttl\"} 7",
            "carp_vhost_state{carpdev=\"eth0\",vhid=\"9\"} 2",
            "carp_group_demote{group=\"carp\"} 128",
            "carp_maintenance 1",
            "# TYPE carp_transitions counter",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
