//! `carpctl config diff`: this node's vhost settings beside a peer's, the
//! peer's read from its HTTP API (`GET /api/status`).
//!
//! Vhosts are matched by vhid (the carpdev names may differ between hosts).
//! The settings that must agree for the peers to authenticate each other
//! and time the election alike are compared: addresses, advbase, lladdr and
//! the key fingerprint (never the key). advskew is shown for information:
//! peers normally differ there.

use std::collections::BTreeSet;
use std::time::Duration;

use super::types::{Reply, VhostView};

/// How one setting compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Equal on both hosts.
    Same,
    /// Different where it must be equal.
    Differs,
    /// Shown for information (advskew).
    Info,
}

impl Mark {
    fn symbol(self) -> char {
        match self {
            Mark::Same => '=',
            Mark::Differs => '!',
            Mark::Info => '~',
        }
    }
}

/// One line of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The vhid.
    pub vhid: u8,
    /// How it compares.
    pub mark: Mark,
    /// The setting.
    pub key: &'static str,
    /// Its value here.
    pub here: String,
    /// Its value on the peer.
    pub peer: String,
}

/// Compare `here` with `peer`, vhid by vhid.
pub fn compare(here: &[VhostView], peer: &[VhostView]) -> Vec<Row> {
    let vhids: BTreeSet<u8> = here.iter().chain(peer).map(|v| v.vhid).collect();
    let mut rows = Vec::new();
    for vhid in vhids {
        let a = here.iter().find(|v| v.vhid == vhid);
        let b = peer.iter().find(|v| v.vhid == vhid);
        let (Some(a), Some(b)) = (a, b) else {
            let (h, p) = if a.is_some() {
                ("configured", "absent")
            } else {
                ("absent", "configured")
            };
            rows.push(row(vhid, Mark::Differs, "vhid", h.into(), p.into()));
            continue;
        };
        let mut must = |key, here: String, peer: String| {
            let mark = if here == peer {
                Mark::Same
            } else {
                Mark::Differs
            };
            rows.push(row(vhid, mark, key, here, peer));
        };
        must("addresses", sorted(&a.addresses), sorted(&b.addresses));
        must("advbase", a.advbase.to_string(), b.advbase.to_string());
        must("lladdr", a.lladdr.clone(), b.lladdr.clone());
        must(
            "key_fingerprint",
            a.key_fingerprint.clone(),
            b.key_fingerprint.clone(),
        );
        rows.push(row(
            vhid,
            Mark::Info,
            "advskew",
            a.advskew.to_string(),
            b.advskew.to_string(),
        ));
    }
    rows
}

fn row(vhid: u8, mark: Mark, key: &'static str, here: String, peer: String) -> Row {
    Row {
        vhid,
        mark,
        key,
        here,
        peer,
    }
}

fn sorted(addresses: &[String]) -> String {
    let mut a = addresses.to_vec();
    a.sort();
    a.join(",")
}

/// Render `rows` as a table: mark, setting, vhid, here, peer.
pub fn render(rows: &[Row]) -> String {
    let width = rows
        .iter()
        .map(|r| r.here.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "  {:<16} {:>4}  {:<width$}  peer\n",
        "setting", "vhid", "here"
    );
    for r in rows {
        out.push_str(&format!(
            "{} {:<16} {:>4}  {:<width$}  {}\n",
            r.mark.symbol(),
            r.key,
            r.vhid,
            r.here,
            r.peer
        ));
    }
    out.push_str("= equal, ! must be equal and is not, ~ for information\n");
    out
}

/// Return the status URL of the peer at `url` (`http://HOST:PORT`, with or
/// without a path ending in `/api/status`).
pub fn status_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: give the peer's status page as http://HOST:PORT/"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() || path == "api/status" {
        "api/status".to_owned()
    } else if path.ends_with("/api/status") {
        path.to_owned()
    } else {
        format!("{path}/api/status")
    };
    Ok(format!("http://{authority}/{path}"))
}

/// Fetch the peer's vhosts from its HTTP API.
pub fn fetch(url: &str, timeout: Duration) -> Result<Vec<VhostView>, String> {
    let url = status_url(url)?;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut reply = agent
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let text = reply
        .body_mut()
        .with_config()
        .limit(4 << 20)
        .read_to_string()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let reply: Reply =
        serde_json::from_str(&text).map_err(|e| format!("GET {url}: not a carpd status: {e}"))?;
    reply
        .vhosts
        .ok_or_else(|| format!("GET {url}: no vhosts in the reply"))
}

#[cfg(test)]
mod test {
    use super::*;

    fn view(vhid: u8, advskew: u8, fp: &str, addresses: &[&str]) -> VhostView {
        let json = serde_json::json!({
            "carpdev": "eth0", "vhid": vhid, "state": "BACKUP", "since_secs": 1.0,
            "cause": "master timed out", "advbase": 1, "advskew": advskew,
            "effective_advskew": advskew, "demote": 0, "lladdr": "virtual",
            "addresses": addresses, "last_master": null, "last_master_age_secs": null,
            "stats": carp_proto::Stats::default(), "key_fingerprint": fp,
        });
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn differences_are_marked_and_advskew_is_information() {
        let here = [view(1, 0, "aa", &["192.0.2.1/24", "2001:db8::1/64"])];
        let peer = [
            view(1, 100, "bb", &["2001:db8::1/64", "192.0.2.1/24"]),
            view(2, 0, "aa", &[]),
        ];
        let rows = compare(&here, &peer);
        let mark = |vhid, key| {
            rows.iter()
                .find(|r| r.vhid == vhid && r.key == key)
                .unwrap()
                .mark
        };
        assert_eq!(mark(1, "addresses"), Mark::Same, "order does not matter");
        assert_eq!(mark(1, "key_fingerprint"), Mark::Differs);
        assert_eq!(mark(1, "advskew"), Mark::Info);
        assert_eq!(mark(2, "vhid"), Mark::Differs);
        let text = render(&rows);
        assert!(
            text.lines().any(|l| l.starts_with("! key_fingerprint")),
            "{text}"
        );
    }

    #[test]
    fn peer_urls_are_normalised_or_refused() {
        assert_eq!(
            status_url("http://h:8080").unwrap(),
            "http://h:8080/api/status"
        );
        assert_eq!(
            status_url("http://h:8080/").unwrap(),
            "http://h:8080/api/status"
        );
        assert_eq!(
            status_url("http://h/api/status").unwrap(),
            "http://h/api/status"
        );
        assert_eq!(
            status_url("http://h/carp/").unwrap(),
            "http://h/carp/api/status"
        );
        assert!(
            status_url("https://h/")
                .unwrap_err()
                .contains("http://HOST:PORT")
        );
        assert!(status_url("h:8080").is_err());
        assert!(status_url("http:///x").is_err());
    }

    #[test]
    fn an_unreachable_peer_is_an_error_not_a_panic() {
        let err = fetch("http://127.0.0.1:1/", Duration::from_secs(1)).unwrap_err();
        assert!(err.contains("GET http://127.0.0.1:1/api/status"), "{err}");
    }
}
