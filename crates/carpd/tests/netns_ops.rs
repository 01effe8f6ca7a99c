//! Root-only tests of operating carpd (issue "Operating carpd"): maintenance
//! mode across restarts, disable and forced state, carpctl errors, the HTTP
//! API and `/metrics`, and the status page in a real headless browser.
//!
//! Root only, ignored by default: `cargo test -p carpd --test netns_ops --
//! --include-ignored --test-threads=2`. The browser test also needs Debian's `chromium`.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use base64::Engine as _;
use carp_proto::Stats;
use common::daemon::{
    CARPCTL, Carpd, carpctl, carpctl_ok, stats, view, wait_for, wait_single_master, wait_state,
};
use common::{Lab, in_netns};
use nix::sys::signal::Signal;

const VIP4: &str = "192.0.2.50";
const PASS: &str = "ops-secret";
/// Bound for a first election (master-down of the worst node + slack).
const ELECTION: Duration = Duration::from_secs(8);
/// Where the status page listens inside a host's namespace.
const HTTP: &str = "127.0.0.1:8080";

/// Flags then ifconfig-style words for vhid 1 on eth0, advbase 1, with
/// `--preempt` and a state directory in the lab.
fn node(lab: &Lab, name: &str, advskew: u8, extra: &[&str]) -> Vec<String> {
    let state = lab.path(&format!("{name}-state"));
    let mut w: Vec<String> = vec![
        "--preempt".into(),
        "--state-dir".into(),
        state.display().to_string(),
    ];
    w.extend(extra.iter().map(|s| (*s).to_owned()));
    for s in [
        "carpdev",
        "eth0",
        "vhid",
        "1",
        "advbase",
        "1",
        "advskew",
        &advskew.to_string(),
        "pass",
        PASS,
        &format!("{VIP4}/24"),
    ] {
        w.push(s.to_owned());
    }
    w
}

/// Assert that `d`'s vhid 1 stays in `want` for `period` (polled).
fn stays(d: &Carpd, want: &str, period: Duration) {
    let end = std::time::Instant::now() + period;
    while std::time::Instant::now() < end {
        assert_eq!(view(d, 1).state, want, "{} left {want}", d.name);
        thread::sleep(Duration::from_millis(200));
    }
}

/// Input: A (advskew 0) and B (advskew 100), both --preempt, A MASTER.
/// `carpctl maintenance on` on A; then A is restarted (SIGTERM, start);
/// then `maintenance off`.
/// Output: B takes over at once and A shows demote 128 and "maintenance
/// mode: on"; the flag file exists; the restarted A stays BACKUP (demoted,
/// so its preempt does not take the vhid back) for longer than its
/// master-down interval; after `off` A preempts back and the file is gone.
#[test]
#[ignore = "needs root: network namespaces"]
fn maintenance_moves_master_and_survives_restart() {
    let lab = Lab::new("maint", 2);
    let mut a = lab.carpd(0, "a", &node(&lab, "a", 0, &[]));
    let b = lab.carpd(1, "b", &node(&lab, "b", 100, &[]));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);

    let out = carpctl_ok(&a, &["maintenance", "on"]);
    assert!(out.contains("maintenance mode on"), "{out}");
    wait_state(&b, 1, "MASTER", Duration::from_secs(3));
    wait_state(&a, 1, "BACKUP", Duration::from_secs(3));
    assert_eq!(view(&a, 1).demote, 128);
    assert!(carpctl_ok(&a, &["status"]).contains("maintenance mode: on"));
    let flag = lab.path("a-state").join("maintenance");
    assert!(flag.exists(), "{} missing", flag.display());
    let again = carpctl_ok(&a, &["maintenance", "on"]);
    assert!(again.contains("already on"), "{again}");
    assert_eq!(
        view(&a, 1).demote,
        128,
        "a second `on` must not demote twice"
    );

    lab.kill(&a, Signal::SIGTERM);
    assert_eq!(lab.wait_exit(&a, Duration::from_secs(5)), Some(0));
    lab.start(&mut a);
    assert_eq!(view(&a, 1).demote, 128, "demoted before joining");
    // Master-down of A is 3 s; without the flag its preempt would win by then.
    stays(&a, "BACKUP", Duration::from_secs(5));
    assert_eq!(view(&b, 1).state, "MASTER");
    assert!(lab.has_addr(&b.ns, VIP4) && !lab.has_addr(&a.ns, VIP4));

    let out = carpctl_ok(&a, &["maintenance", "off"]);
    assert!(out.contains("maintenance mode off"), "{out}");
    assert!(!flag.exists());
    wait_state(&a, 1, "MASTER", Duration::from_secs(5));
    wait_state(&b, 1, "BACKUP", Duration::from_secs(3));
    assert_eq!(view(&a, 1).demote, 0);
}

/// Input: A (advskew 0) MASTER, B (advskew 100) BACKUP, no preempt on B.
/// `carpctl disable` / `enable` on A, then `state 1 master`, `state 1 backup`.
/// Output: disable puts A in INIT and removes the VIP from A while B takes
/// over; enable brings A back as BACKUP; forcing A to MASTER moves the VIP to
/// A and B steps down (A advertises more often); forcing A to BACKUP
/// steps it down with cause "user requested" and hands the vhid to B.
#[test]
#[ignore = "needs root: network namespaces"]
fn disable_releases_addresses_and_forced_state() {
    let lab = Lab::new("disable", 2);
    let a = lab.carpd(0, "a", &node(&lab, "a", 0, &[])[1..]);
    let b = lab.carpd(1, "b", &node(&lab, "b", 100, &[])[1..]);
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    assert!(lab.has_addr(&a.ns, VIP4));

    carpctl_ok(&a, &["disable"]);
    wait_state(&a, 1, "INIT", Duration::from_secs(2));
    wait_for(
        "VIP released by A",
        Duration::from_secs(2),
        Duration::from_millis(50),
        || (!lab.has_addr(&a.ns, VIP4)).then_some(()),
    );
    wait_state(&b, 1, "MASTER", Duration::from_secs(5));
    assert!(lab.has_addr(&b.ns, VIP4));

    carpctl_ok(&a, &["enable", "1"]);
    wait_state(&a, 1, "BACKUP", Duration::from_secs(2));
    stays(&a, "BACKUP", Duration::from_secs(4));

    let out = carpctl_ok(&a, &["state", "1", "master"]);
    assert!(out.contains("forced to MASTER"), "{out}");
    wait_state(&b, 1, "BACKUP", Duration::from_secs(3));
    assert_eq!(view(&a, 1).state, "MASTER");
    assert!(lab.has_addr(&a.ns, VIP4) && !lab.has_addr(&b.ns, VIP4));

    // A forced BACKUP hands over as a planned stop does (issue 11): its
    // bow-out advertisement makes B take over at once, and A (no preempt)
    // stays BACKUP, hearing B, instead of taking the vhid back on its own
    // master-down timer after ~3 s without a MASTER.
    carpctl_ok(&a, &["state", "1", "backup"]);
    let v = view(&a, 1);
    assert_eq!(
        (v.state.as_str(), v.cause.as_str()),
        ("BACKUP", "user requested")
    );
    wait_state(&b, 1, "MASTER", Duration::from_secs(1));
    stays(&a, "BACKUP", Duration::from_secs(4));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 1);
}

/// Input: one carpd with vhid 1; carpctl requests naming vhid 9, a bad
/// state, an unknown group; carpctl against a missing socket and a stale one.
/// Output: each exits non-zero with a sentence on stderr saying what is wrong.
#[test]
#[ignore = "needs root: network namespaces"]
fn carpctl_errors_are_clear() {
    let lab = Lab::new("ctlerr", 1);
    let a = lab.carpd(0, "a", &node(&lab, "a", 0, &[]));
    let cases: [(&[&str], &str); 5] = [
        (&["state", "9", "master"], "no vhid 9 is configured"),
        (&["disable", "9"], "no vhid 9 is configured"),
        (
            &["state", "1", "sideways"],
            "state must be master or backup",
        ),
        (&["demote", "nosuchgroup"], "no interface group nosuchgroup"),
        (&["state", "0", "master"], "vhid must be 1..255"),
    ];
    for (args, want) in cases {
        let out = carpctl(&a, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "carpctl {args:?} succeeded");
        assert!(
            err.contains(want),
            "carpctl {args:?}: {err:?} lacks {want:?}"
        );
    }

    let missing = lab.path("nobody.sock");
    let stale = lab.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind stale socket"));
    for sock in [&missing, &stale] {
        for verb in [
            &["status"][..],
            &["stats"],
            &["maintenance", "on"],
            &["watch"],
        ] {
            let out = common::run_timeout(
                std::process::Command::new(CARPCTL)
                    .arg("--control")
                    .arg(sock)
                    .args(verb),
                Duration::from_secs(5),
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{verb:?} on {}", sock.display());
            assert!(
                err.contains("cannot connect to carpd at") && err.contains("is carpd running"),
                "{err}"
            );
        }
    }
}

/// A GET (or POST) over HTTP from inside `ns`; returns (status, body).
fn http(ns: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let url = format!("http://{HTTP}{path}");
    let auth = auth.map(|t| format!("Bearer {t}"));
    let body = body.to_owned();
    let method = method.to_owned();
    in_netns(ns, move || {
        // Error statuses are answers here, not failures of the request.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let reply = match method.as_str() {
            "GET" => {
                let mut req = agent.get(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
            "POST" => {
                let mut req = agent.post(&url).content_type("application/json");
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                req.send(body.as_str())
            }
            other => panic!("no {other} in these tests"),
        };
        let mut reply = reply.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let code = reply.status().as_u16();
        let text = reply
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("read {url}: {e}"));
        (code, text)
    })
}

/// One sample of the text exposition format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parse our OpenMetrics output with `prometheus-parse`; panics unless it
/// parses and ends with `# EOF` (nothing after it).
fn parse_metrics(text: &str) -> Vec<Sample> {
    assert_eq!(
        text.lines().filter(|l| *l == "# EOF").count(),
        1,
        "one # EOF"
    );
    assert_eq!(
        text.trim_end().lines().last(),
        Some("# EOF"),
        "text after # EOF"
    );
    // An empty label set (`name{} 1`, valid OpenMetrics, what a label-less
    // Family writes) is not matched by prometheus-parse 0.2: drop the braces.
    let lines = text.lines().map(|l| Ok(l.replacen("{} ", " ", 1)));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
    scrape
        .samples
        .into_iter()
        .map(|s| {
            use prometheus_parse::Value;
            let value = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                other => panic!("unexpected value kind for {}: {other:?}", s.metric),
            };
            Sample {
                name: s.metric,
                labels: s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                value,
            }
        })
        .collect()
}

/// The value of `name` with exactly `labels`.
fn sample(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("no {name}{labels:?}"))
        .value
}

/// Input: A (advskew 0, --http) and B (advskew 100), plus C on vhid 1 with a
/// wrong password (its adverts fail HMAC at A: `bad_auth`); B sends a few
/// more after A's maintenance turns it MASTER. `/metrics`, `/api/stats` and
/// `carpctl stats --json` are read back to back until two stats agree.
/// Output: every carpstats counter in `/metrics` equals `carpctl stats`
/// (the drop reasons one by one, bad_auth > 0), `/api/stats` equals it too,
/// per-vhost state is 1 (BACKUP) under labels carpdev/vhid, group carp's
/// demotion is 128 and the maintenance gauge is 1; changes over HTTP are
/// refused with 403 and a JSON sentence (no token configured).
#[test]
#[ignore = "needs root: network namespaces"]
fn metrics_equal_carpctl_stats() {
    let lab = Lab::new("metrics", 3);
    let a = lab.carpd(0, "a", &node(&lab, "a", 0, &["--http", HTTP]));
    let b = lab.carpd(1, "b", &node(&lab, "b", 100, &[]));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    let mut wrong = node(&lab, "c", 200, &[]);
    let pass = wrong.iter().position(|w| w == PASS).expect("pass word");
    wrong[pass] = "another-secret".into();
    let _c = lab.carpd(2, "c", &wrong);
    carpctl_ok(&a, &["maintenance", "on"]);
    wait_state(&a, 1, "BACKUP", Duration::from_secs(3));
    let (samples, api, want) = wait_for(
        "stats stable across one /metrics scrape",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let before = stats(&a);
            let (code, text) = http(&a.ns, "GET", "/metrics", None, "");
            let (code2, api) = http(&a.ns, "GET", "/api/stats", None, "");
            let after = stats(&a);
            assert_eq!((code, code2), (200, 200), "{text}");
            let api: Stats = serde_json::from_str(&api).expect("/api/stats parses");
            (before == after && before.bad_auth > 0 && before.accepted > 3)
                .then(|| (parse_metrics(&text), api, before))
        },
    )
    .0;
    assert_eq!(api, want, "/api/stats differs from carpctl stats --json");
    let m = |name: &str, labels: &[(&str, &str)]| sample(&samples, name, labels) as u64;
    let host = [
        (
            "carp_received_packets_total",
            ("family", "ipv4"),
            want.ipackets,
        ),
        (
            "carp_received_packets_total",
            ("family", "ipv6"),
            want.ipackets6,
        ),
        ("carp_sent_packets_total", ("family", "ipv4"), want.opackets),
        (
            "carp_sent_packets_total",
            ("family", "ipv6"),
            want.opackets6,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "bad_if"),
            want.bad_if,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "bad_ttl"),
            want.bad_ttl,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "bad_len"),
            want.bad_len,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "bad_sum"),
            want.bad_sum,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "bad_vhid"),
            want.bad_vhid,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "bad_ver"),
            want.bad_ver,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "bad_auth"),
            want.bad_auth,
        ),
        (
            "carp_dropped_packets_total",
            ("reason", "replay"),
            want.replay,
        ),
    ];
    for (name, (k, v), value) in host {
        assert_eq!(m(name, &[(k, v)]), value, "{name}{{{k}={v}}}");
    }
    for (name, value) in [
        ("carp_accepted_packets_total", want.accepted),
        ("carp_odd_header_packets_total", want.odd_header),
        ("carp_send_errors_total", want.send_errors),
        ("carp_became_master_total", want.preempt),
        ("carp_transitions_total", want.transitions),
    ] {
        assert_eq!(m(name, &[]), value, "{name}");
    }
    let labels = [("carpdev", "eth0"), ("vhid", "1")];
    for (state, value) in [("INIT", 0), ("BACKUP", 1), ("MASTER", 0)] {
        let mut l = labels.to_vec();
        l.push(("state", state));
        assert_eq!(m("carp_vhost_state", &l), value, "state={state}");
    }
    assert_eq!(m("carp_vhost_demote", &labels), 128);
    let mut drop = labels.to_vec();
    drop.push(("reason", "bad_auth"));
    assert!(
        m("carp_vhost_dropped_packets_total", &drop) > 0,
        "C fails auth"
    );
    assert!(m("carp_vhost_received_packets_total", &labels) > 3);
    let since = sample(
        &samples,
        "carp_vhost_state_since_timestamp_seconds",
        &labels,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(since > now - 60.0 && since <= now + 1.0, "{since} vs {now}");
    assert!(m("carp_vhost_transitions_total", &labels) >= 3);
    assert_eq!(m("carp_group_demote", &[("group", "carp")]), 128);
    assert_eq!(m("carp_maintenance", &[]), 1);

    let (code, body) = http(&a.ns, "POST", "/api/maintenance", None, r#"{"on":false}"#);
    assert_eq!(code, 403, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(err["ok"], false);
    assert!(err["error"].as_str().unwrap_or("").contains("--http-token"));
    assert_eq!(
        view(&a, 1).state,
        "BACKUP",
        "a refused change changed nothing"
    );
}

/// Input: carpd started as systemd would start a `Type=notify` service with
/// `WatchdogSec=`: `NOTIFY_SOCKET` names a datagram socket of the test and
/// `WATCHDOG_USEC=400000`; later SIGTERM.
/// Output: READY=1 arrives only once the control socket answers with the
/// vhost set up; WATCHDOG=1 pings follow every ~200 ms (half the interval);
/// STOPPING=1 arrives after SIGTERM and carpd exits 0.
#[test]
#[ignore = "needs root: network namespaces"]
fn systemd_ready_watchdog_and_stopping() {
    let lab = Lab::new("sdnotify", 1);
    let notify = lab.path("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let control = lab.path("a.sock");
    let mut argv: Vec<String> = vec![
        "env".into(),
        format!("NOTIFY_SOCKET={}", notify.display()),
        "WATCHDOG_USEC=400000".into(),
        common::daemon::CARPD.into(),
        "run".into(),
        "--control".into(),
        control.display().to_string(),
    ];
    argv.extend(node(&lab, "a", 0, &[]));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pid = lab.spawn_logged(lab.ns(0), &argv, &lab.path("a.log"));
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.lines().any(|l| l == "READY=1"), "{first:?}");
    let reply = common::daemon::query(&control, &carpd::control::types::Request::Status)
        .expect("control socket answers at READY");
    assert_eq!(reply.vhosts.map(|v| v.len()), Some(1));
    let start = std::time::Instant::now();
    let mut pings = 0;
    while pings < 3 {
        if recv().lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    let took = start.elapsed();
    assert!(took < Duration::from_millis(1200), "3 pings took {took:?}");
    lab.signal(pid, Signal::SIGTERM);
    let stopping = (0..20)
        .map(|_| recv())
        .find(|m| !m.contains("WATCHDOG=1"))
        .expect("a message besides watchdog pings");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let out = lab
        .wait_child(pid, Duration::from_secs(5))
        .expect("carpd exits after SIGTERM");
    assert_eq!(out.status.code(), Some(0));
}

/// Write a ucarp-style script that logs its arguments to `<name>.args` and
/// adds or removes `$2/24` on `$1`, as ucarp users' vip-up/vip-down do.
fn ucarp_script(lab: &Lab, name: &str, verb: &str) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let script = lab.path(&format!("{name}.sh"));
    let args = lab.path(&format!("{name}.args"));
    let body = format!(
        "#!/bin/sh\necho \"$1 $2\" >> {}\nip addr {verb} \"$2/24\" dev \"$1\" 2>/dev/null\nexit 0\n",
        args.display()
    );
    std::fs::write(&script, body).expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (script, args)
}

/// Input: `carpd ucarp` with a ucarp command line (advskew 0, -P, -u/-d/-z
/// scripts) on host A and Debian's real `ucarp` (advskew 100, same kind of
/// scripts) on host B, vhid 7, advbase 1. Later carpd gets SIGTERM.
/// Output: carpd is MASTER, holds the VIP and ran its up script with ucarp's
/// arguments `eth0 192.0.2.50`; ucarp stays BACKUP (its up script never
/// ran). After SIGTERM carpd ran its down script (same arguments) and
/// released the VIP, and ucarp took over: its up script ran and B holds it.
#[test]
#[ignore = "needs root: network namespaces"]
fn ucarp_drop_in_against_real_ucarp() {
    assert!(
        Path::new("/usr/sbin/ucarp").exists(),
        "ucarp is not installed (apt-get install ucarp)"
    );
    let lab = Lab::new("ucarpdi", 2);
    let (a, b) = (lab.host(0).clone(), lab.host(1).clone());
    let (a_up, a_up_args) = ucarp_script(&lab, "a-up", "add");
    let (a_down, a_down_args) = ucarp_script(&lab, "a-down", "del");
    let (b_up, b_up_args) = ucarp_script(&lab, "b-up", "add");
    let (b_down, _) = ucarp_script(&lab, "b-down", "del");
    let ucarp_line = |src: &str, skew: &str, up: &Path, down: &Path| -> Vec<String> {
        [
            "-i", "eth0", "-s", src, "-v", "7", "-p", PASS, "-a", VIP4, "-b", "1", "-k", skew,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([
            format!("--upscript={}", up.display()),
            format!("--downscript={}", down.display()),
            "-z".to_owned(),
        ])
        .collect()
    };
    let sock = lab.path("a.sock");
    let mut argv = vec![
        common::daemon::CARPD.to_owned(),
        "ucarp".to_owned(),
        "--control".to_owned(),
        sock.display().to_string(),
        "-P".to_owned(),
    ];
    argv.extend(ucarp_line(&a.v4.to_string(), "0", &a_up, &a_down));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let carpd_pid = lab.spawn_logged(&a.ns, &argv, &lab.path("a.log"));
    let mut uargv = vec!["ucarp".to_owned()];
    uargv.extend(ucarp_line(&b.v4.to_string(), "100", &b_up, &b_down));
    let uargv: Vec<&str> = uargv.iter().map(String::as_str).collect();
    lab.spawn_logged(&b.ns, &uargv, &lab.path("ucarp.log"));

    let state = || {
        common::daemon::query(&sock, &carpd::control::types::Request::Status)
            .and_then(|r| r.vhosts)
            .and_then(|v| v.first().map(|v| v.state.to_string()))
    };
    wait_for(
        "carpd ucarp MASTER",
        ELECTION,
        Duration::from_millis(100),
        || (state().as_deref() == Some("MASTER")).then_some(()),
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let once = format!("eth0 {VIP4}\n");
    wait_for(
        "carpd's up script ran",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || (read(&a_up_args) == once).then_some(()),
    );
    thread::sleep(Duration::from_secs(3));
    assert_eq!(state().as_deref(), Some("MASTER"), "ucarp took over");
    assert!(lab.has_addr(&a.ns, VIP4));
    assert!(!lab.has_addr(&b.ns, VIP4), "ucarp holds the VIP too");
    assert_eq!(read(&b_up_args), "", "ucarp became MASTER");

    lab.signal(carpd_pid, Signal::SIGTERM);
    let out = lab
        .wait_child(carpd_pid, Duration::from_secs(10))
        .expect("carpd ucarp exits after SIGTERM");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(read(&a_down_args), once, "carpd's down script");
    assert!(!lab.has_addr(&a.ns, VIP4), "A kept the VIP");
    wait_for(
        "ucarp MASTER with the VIP",
        Duration::from_secs(6),
        Duration::from_millis(100),
        || (read(&b_up_args) == once && lab.has_addr(&b.ns, VIP4)).then_some(()),
    );
}

// ===== the status page in a headless browser =====

/// The chromium binary, if installed.
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A chromium driven over `--remote-debugging-pipe` (DevTools protocol,
/// NUL-terminated JSON on fds 3 and 4, here two FIFOs), running headless
/// inside a lab namespace.
struct Browser {
    to: std::fs::File,
    from: std::io::BufReader<std::fs::File>,
    next_id: u64,
    session: Option<String>,
}

impl Browser {
    fn launch(lab: &Lab, ns: &str, exe: &Path) -> Browser {
        let dir = lab.path("chromium");
        std::fs::create_dir_all(&dir).expect("profile dir");
        let (cmd_fifo, out_fifo) = (lab.path("cdp-in"), lab.path("cdp-out"));
        for f in [&cmd_fifo, &out_fifo] {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .expect("mkfifo");
        }
        let script = format!(
            "exec ip netns exec {ns} {} --headless --no-sandbox --disable-gpu \
             --disable-background-networking --disable-component-update --disable-sync \
             --no-first-run --disable-dev-shm-usage --window-size=1200,500 \
             --user-data-dir={} --remote-debugging-pipe about:blank 3<{} 4>{}",
            exe.display(),
            dir.display(),
            cmd_fifo.display(),
            out_fifo.display()
        );
        let log = lab.path("chromium.log");
        lab.spawn_logged(ns, &["sh", "-c", &script], &log);
        // Opening a FIFO blocks until the other end opens: same order as the shell.
        let to = std::fs::OpenOptions::new()
            .write(true)
            .open(&cmd_fifo)
            .expect("open DevTools command pipe");
        let from = std::fs::File::open(&out_fifo).expect("open DevTools output pipe");
        Browser {
            to,
            from: std::io::BufReader::new(from),
            next_id: 1,
            session: None,
        }
    }

    /// Send one DevTools command and return its `result`.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use std::io::BufRead;
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = serde_json::json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = serde_json::json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).expect("encode");
        bytes.push(0);
        self.to.write_all(&bytes).expect("write to chromium");
        loop {
            let mut buf = Vec::new();
            let n = self
                .from
                .read_until(0, &mut buf)
                .expect("read from chromium");
            assert!(n > 0, "chromium closed the DevTools pipe");
            buf.pop();
            let reply: serde_json::Value = serde_json::from_slice(&buf).expect("DevTools JSON");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Evaluate `js` in the page and return its value.
    fn eval(&mut self, js: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
        );
        r["result"]["value"].clone()
    }

    /// The text a person sees in the page.
    fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The text of the vhid-1 row's state badge.
    fn badge(&mut self) -> String {
        self.eval("(document.querySelector('tr[data-vhid=\"1\"] .badge') || {}).textContent || ''")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn wait_badge(&mut self, want: &str, timeout: Duration) {
        let mut last = String::new();
        let end = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < end {
            last = self.badge();
            if last == want {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!("badge still {last:?}, not {want:?}; page:\n{}", self.text());
    }

    fn screenshot(&mut self, to: &Path) {
        let r = self.call(
            "Page.captureScreenshot",
            serde_json::json!({ "format": "png" }),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(to, png).expect("write screenshot");
    }
}

/// Where screenshots are kept: `target/test-artifacts/`.
fn artifact(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact dir");
    dir.join(name)
}

/// Input: A (advskew 0, `--http` with a token) and B (advskew 100); headless
/// chromium inside A's namespace opens A's status page once. Then
/// `carpctl maintenance on` on A; then the page's own "Leave maintenance
/// mode" button is clicked with the token typed in.
/// Output: the page shows the row `eth0@1` with the VIP and a green MASTER
/// badge; after maintenance the same page (a marker set in it survives, so
/// no reload) shows BACKUP, the maintenance banner and a higher update
/// count; the button (shown because a token is configured) ends maintenance
/// and the badge returns to MASTER. Screenshots land in target/test-artifacts/.
#[test]
#[ignore = "needs root: network namespaces"]
fn status_page_updates_live_in_a_browser() {
    let exe = chromium().expect("chromium is not installed (apt-get install chromium)");
    let lab = Lab::new("browser", 2);
    let a = lab.carpd(
        0,
        "a",
        &node(&lab, "a", 0, &["--http", HTTP, "--http-token", "tok3n"]),
    );
    let b = lab.carpd(1, "b", &node(&lab, "b", 100, &[]));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);

    let mut br = Browser::launch(&lab, &a.ns, &exe);
    let target = br.call(
        "Target.createTarget",
        serde_json::json!({ "url": format!("http://{HTTP}/") }),
    );
    let attached = br.call(
        "Target.attachToTarget",
        serde_json::json!({ "targetId": target["targetId"], "flatten": true }),
    );
    br.session = attached["sessionId"].as_str().map(str::to_owned);
    br.wait_badge("MASTER", Duration::from_secs(10));
    let text = br.text();
    assert!(
        text.contains("eth0@1") && text.contains(&format!("{VIP4}/24")),
        "{text}"
    );
    let colour = br.eval(
        "getComputedStyle(document.querySelector('tr[data-vhid=\"1\"] .badge')).backgroundColor",
    );
    assert_eq!(colour, "rgb(46, 125, 50)", "MASTER badge is green");
    assert_eq!(
        br.eval("getComputedStyle(document.getElementById('actions')).display"),
        "block"
    );
    br.eval("window.loadedOnce = 42");
    let polls_before = br.eval("Number(document.getElementById('polls').textContent)");
    br.screenshot(&artifact("status-page-master.png"));

    carpctl_ok(&a, &["maintenance", "on"]);
    br.wait_badge("BACKUP", Duration::from_secs(5));
    let text = br.text();
    assert!(text.contains("Maintenance mode is on"), "{text}");
    assert_eq!(br.eval("window.loadedOnce"), 42, "the page was reloaded");
    let polls_after = br.eval("Number(document.getElementById('polls').textContent)");
    assert!(
        polls_after.as_u64() > polls_before.as_u64(),
        "{polls_before} -> {polls_after}"
    );
    br.screenshot(&artifact("status-page-maintenance.png"));

    br.eval(
        "document.getElementById('token').value = 'tok3n'; \
         document.getElementById('maint-off').click(); true",
    );
    br.wait_badge("MASTER", Duration::from_secs(8));
    assert_eq!(view(&a, 1).demote, 0);
    assert_eq!(br.eval("window.loadedOnce"), 42, "the page was reloaded");
    let _ = br.call("Browser.close", serde_json::json!({}));
}
