//! The text `carpctl status` and `carpctl watch` print.
//!
//! Columns are as wide as their longest value (a long cause or an IPv6
//! last master never shifts the next column), and every vhost whose peers'
//! advertisements fail authentication gets a warning line.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::types::{CarpIfView, SyncView, VhostView};

/// One line on `realtime`: what runs, and what could not be done.
pub fn realtime(rt: &super::types::RealtimeView) -> String {
    let sched = match rt.priority {
        Some(p) => format!("SCHED_FIFO priority {p}"),
        None => "SCHED_OTHER".to_owned(),
    };
    let memory = if rt.memory_locked {
        "memory locked"
    } else {
        "memory not locked"
    };
    match &rt.problem {
        Some(problem) => format!("realtime: {sched}, {memory} ({problem})"),
        None => format!("realtime: {sched}, {memory}"),
    }
}

/// Render the status table of `vhosts`, then the demoted `groups`.
pub fn status(vhosts: &[VhostView], groups: &[(String, u8)]) -> String {
    let width = |header: &str, f: &dyn Fn(&VhostView) -> usize| {
        vhosts
            .iter()
            .map(f)
            .chain([header.len()])
            .max()
            .unwrap_or(0)
    };
    let dev = width("carpdev", &|v| v.carpdev.chars().count());
    let why = width("why", &|v| v.cause.as_str().len());
    let last = width("last master", &|v| {
        v.last_master.as_deref().map_or(1, |m| m.chars().count())
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<dev$} {:>4} {:<7} {:>9}  {:<why$} {:>7} {:>7} {:>6}  {:<last$} addresses",
        "carpdev", "vhid", "state", "since", "why", "advbase", "advskew", "demote", "last master"
    );
    for v in vhosts {
        let skew = if v.effective_advskew == v.advskew {
            v.advskew.to_string()
        } else {
            format!("{}>{}", v.advskew, v.effective_advskew)
        };
        let _ = writeln!(
            out,
            "{:<dev$} {:>4} {:<7} {:>8.1}s  {:<why$} {:>7} {:>7} {:>6}  {:<last$} {}",
            v.carpdev,
            v.vhid,
            v.state,
            v.since_secs,
            v.cause,
            v.advbase,
            skew,
            v.demote,
            v.last_master.as_deref().unwrap_or("-"),
            v.addresses.join(" ")
        );
        let s = &v.stats;
        let _ = writeln!(
            out,
            // Drops before the vhid is known (TTL, version, length, checksum) are
            // host-wide: `carpctl stats`.
            "{:>15} accepted {} rejected {} (badauth {} badsrc {} badpeer {} replay {}) sent {} send errors {}; master-down {:.2}s",
            "",
            s.accepted,
            s.bad_auth + s.bad_src + s.bad_peer + s.replay,
            s.bad_auth,
            s.bad_src,
            s.bad_peer,
            s.replay,
            s.opackets + s.opackets6,
            s.send_errors,
            v.master_down_secs
        );
        if v.address_failures > 0 {
            let _ = writeln!(
                out,
                "{:>15} address adds failed {} times (retried every second while MASTER; see the log)",
                "", v.address_failures
            );
        }
        if !v.peers.is_empty() {
            let also = if v.dual_path {
                " and the multicast group (dual-path)"
            } else {
                ""
            };
            let _ = writeln!(out, "{:>15} unicast to {}{also}", "", v.peers.join(", "));
        }
        if let Some(priority) = v.vrrp_priority {
            let master = match (v.vrrp_master_priority, v.vrrp_master_interval_cs) {
                (Some(p), Some(i)) => format!("; master heard at priority {p}, interval {i} cs"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "{:>15} VRRPv3 (carpver 3), priority {priority}{master}",
                ""
            );
        }
        if v.hmac == "freebsd" {
            let _ = writeln!(
                out,
                "{:>15} signs with FreeBSD's HMAC context (hmac freebsd)",
                ""
            );
        }
        if let Some(hooks) = hook_line(&v.hooks) {
            let _ = writeln!(out, "{:>15} {hooks}", "");
        }
        if let Some(warning) = auth_warning(v) {
            let _ = writeln!(out, "{:>15} WARNING: {warning}", "");
        }
    }
    let demoted: Vec<String> = groups
        .iter()
        .filter(|(_, d)| *d > 0)
        .map(|(g, d)| format!("{g}={d}"))
        .collect();
    if !demoted.is_empty() {
        let _ = writeln!(out, "demoted groups: {}", demoted.join(" "));
    }
    out
}

/// The hook line of a vhost: runs, failures and kills, and the last run.
fn hook_line(h: &crate::control::types::HookCounts) -> Option<String> {
    let last = h.last_hook.as_deref()?;
    let how = match h.last_exit {
        Some(code) => format!("exit {code}"),
        None => "no exit status".into(),
    };
    let took = h
        .last_secs
        .map_or(String::new(), |t| format!(" after {:.0} ms", t * 1000.0));
    Some(format!(
        "hooks: {} runs, {} failed, {} killed; last {last}: {how}{took}",
        h.runs, h.failed, h.killed
    ))
}

/// Render the carp interfaces that have several nodes (OpenBSD `carpnodes`):
/// the mode, each node's state here, the mask and the share of slots served.
/// One-node interfaces are the vhost rows above and print nothing.
pub fn interfaces(interfaces: &[CarpIfView]) -> String {
    let mut out = String::new();
    for i in interfaces.iter().filter(|i| i.nodes.len() > 1) {
        let nodes: Vec<String> = i
            .nodes
            .iter()
            .map(|(vhid, state)| format!("{vhid}:{state}"))
            .collect();
        let _ = writeln!(
            out,
            "carp interface {} vhid {}: balancing {}, nodes {}, mask {:#x}, serving {} of {} slots; ARP/NS answered {} left to others {}",
            i.carpdev,
            i.vhid,
            i.balancing,
            nodes.join(" "),
            i.mask,
            i.served_slots,
            i.nodes.len(),
            i.solicitations_answered,
            i.solicitations_silent
        );
        if i.unpinned_requesters > 0 {
            let _ = writeln!(
                out,
                "{:>15} WARNING: {} requesters not pinned (table full); the kernel may draw their traffic here",
                "", i.unpinned_requesters
            );
        }
    }
    out
}

/// Render the state sync line: how it is done, whether conntrackd runs,
/// its cache entries, the last takeover commit and the failed ones.
pub fn sync(s: &SyncView) -> String {
    let running = if s.running { "running" } else { "NOT running" };
    let entries = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
    let last = match (s.last_commit_secs, s.last_commit_age_secs) {
        (Some(took), Some(age)) => format!("{:.0} ms, {age:.0}s ago", took * 1000.0),
        (Some(took), None) => format!("{:.0} ms", took * 1000.0),
        (None, _) => "never".to_string(),
    };
    format!(
        "state sync: {} (gate {}), conntrackd {running}, entries internal {} external {}, \
         last takeover commit {last}, failed takeovers {}\n",
        s.through,
        s.gate,
        entries(s.internal_entries),
        entries(s.external_entries),
        s.failures
    )
}

/// The warning for a vhost hearing advertisements that fail authentication.
pub fn auth_warning(v: &VhostView) -> Option<String> {
    let from = v.bad_auth_from.as_deref()?;
    let age = v.bad_auth_age_secs.unwrap_or(0.0);
    let dual = if v.state.as_str() == "MASTER" {
        "; both hosts are probably MASTER"
    } else {
        ""
    };
    Some(format!(
        "advertisements from {from} fail authentication ({age:.0}s ago): passphrase or address set differ{dual} (compare with carpctl config diff)"
    ))
}

/// Return `t` as UTC clock time, `YYYY-MM-DD HH:MM:SS.mmmZ`.
pub fn clock(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Return the (year, month, day) of `days` since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod test {
    use std::time::Duration;

    use super::*;

    fn view(cause: &str, last: Option<&str>, bad: Option<&str>) -> VhostView {
        let json = serde_json::json!({
            "carpdev": "eth0", "vhid": 1, "state": "MASTER", "since_secs": 1.0,
            "cause": cause, "advbase": 1, "advskew": 0,
            "effective_advskew": 0, "demote": 0, "lladdr": "virtual",
            "addresses": ["192.0.2.1/24"], "last_master": last, "last_master_age_secs": null,
            "stats": carp_proto::Stats::default(), "bad_auth_from": bad, "bad_auth_age_secs": 3.0,
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn columns_survive_long_causes_and_ipv6_peers() {
        let long = view(
            "master's advertisements fail authentication",
            Some("2001:db8:ffff:ffff:ffff:ffff:ffff:1"),
            None,
        );
        let short = view("master timed out", None, None);
        let text = status(&[long, short], &[]);
        let lines: Vec<&str> = text.lines().collect();
        // The addresses column starts at the same place on both vhost lines
        // and under its header.
        let col = |l: &str, what: &str| l.find(what).unwrap();
        assert_eq!(
            col(lines[0], "addresses"),
            col(lines[1], "192.0.2.1/24"),
            "{text}"
        );
        assert_eq!(
            col(lines[1], "192.0.2.1/24"),
            col(lines[3], "192.0.2.1/24"),
            "{text}"
        );
        assert_eq!(
            col(lines[0], "last master"),
            col(lines[1], "2001:db8"),
            "{text}"
        );
        assert_eq!(col(lines[0], "last master"), col(lines[3], "-"), "{text}");
    }

    #[test]
    fn peers_and_the_hmac_context_show_when_set() {
        let mut v = view("master timed out", None, None);
        assert!(!status(std::slice::from_ref(&v), &[]).contains("unicast"));
        v.peers = vec!["192.0.2.2".into(), "fe80::2".into()];
        v.dual_path = true;
        v.hmac = "freebsd".into();
        let text = status(&[v], &[]);
        assert!(
            text.contains("unicast to 192.0.2.2, fe80::2 and the multicast group (dual-path)"),
            "{text}"
        );
        assert!(text.contains("hmac freebsd"), "{text}");
    }

    #[test]
    fn hooks_show_once_one_ran() {
        let mut v = view("master timed out", None, None);
        assert!(!status(std::slice::from_ref(&v), &[]).contains("hooks:"));
        v.hooks = crate::control::types::HookCounts {
            runs: 3,
            failed: 0,
            killed: 1,
            last_hook: Some("master".into()),
            last_exit: None,
            last_secs: Some(2.0),
        };
        let text = status(&[v], &[]);
        assert!(
            text.contains(
                "hooks: 3 runs, 0 failed, 1 killed; last master: no exit status after 2000 ms"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_failing_peer_gets_a_warning() {
        let text = status(
            &[view("initialization complete", None, Some("192.0.2.9"))],
            &[],
        );
        assert!(
            text.contains("WARNING: advertisements from 192.0.2.9 fail authentication"),
            "{text}"
        );
        assert!(text.contains("probably MASTER"), "{text}");
        assert!(auth_warning(&view("master timed out", None, None)).is_none());
    }

    #[test]
    fn clock_time_is_utc_with_milliseconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_588_225_123);
        assert_eq!(clock(t), "2025-12-01 11:23:45.123Z");
        assert_eq!(clock(UNIX_EPOCH), "1970-01-01 00:00:00.000Z");
        assert!(clock(UNIX_EPOCH + Duration::from_secs(951_782_400)).starts_with("2000-02-29"));
    }

    #[test]
    fn sync_line_shows_conntrackd_caches_and_last_commit() {
        let old: SyncView = serde_json::from_value(serde_json::json!({
            "through": "syncdev eth2", "gate": "open", "failures": 1,
            "last_commit_secs": null,
        }))
        .unwrap();
        assert_eq!(
            sync(&old),
            "state sync: syncdev eth2 (gate open), conntrackd NOT running, entries internal ? \
             external ?, last takeover commit never, failed takeovers 1\n"
        );
        let now = SyncView {
            running: true,
            internal_entries: Some(4),
            external_entries: Some(6),
            last_commit_secs: Some(0.0123),
            last_commit_age_secs: Some(42.4),
            ..old
        };
        assert_eq!(
            sync(&now),
            "state sync: syncdev eth2 (gate open), conntrackd running, entries internal 4 \
             external 6, last takeover commit 12 ms, 42s ago, failed takeovers 1\n"
        );
    }
}
