//! Least privilege and start-up refusals of the real `carpd` (issue
//! "Hardening", item 3).
//!
//! Root only: `cargo test -p carpd --test netns_privs -- --include-ignored`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::Lab;
use common::daemon::{CARPD, Carpd, view, wait_state};
use nix::sys::signal::Signal;

const VIP: &str = "192.0.2.50";
/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const NET_ADMIN_RAW: u64 = (1 << 12) | (1 << 13);

fn words(lab: &Lab, name: &str, extra: &[&str]) -> Vec<String> {
    let state = lab.path(&format!("{name}-state"));
    let mut w: Vec<String> = vec!["--state-dir".into(), state.display().to_string()];
    w.extend(extra.iter().map(|s| (*s).to_owned()));
    for s in [
        "carpdev", "eth0", "vhid", "1", "advbase", "1", "pass", "privs",
    ] {
        w.push(s.to_owned());
    }
    w.push(format!("{VIP}/24"));
    w
}

/// The `Cap*` and `Uid` lines of every thread of `pid`.
fn caps(pid: u32) -> Vec<(String, u64, u64, u64, u64, u64, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let path = task.expect("task").path().join("status");
        let status = std::fs::read_to_string(&path).expect("status");
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|| panic!("{k} in {}", path.display()))
        };
        let hex = |k: &str| u64::from_str_radix(&field(k), 16).expect("hex caps");
        out.push((
            path.display().to_string(),
            hex("CapInh:"),
            hex("CapPrm:"),
            hex("CapEff:"),
            hex("CapBnd:"),
            hex("CapAmb:"),
            field("Uid:"),
        ));
    }
    out
}

fn assert_only_net_caps(d: &Carpd, uid: &str) {
    let all = caps(d.pid);
    assert!(!all.is_empty());
    for (task, inh, prm, eff, bnd, amb, uids) in all {
        println!(
            "{task}: CapInh {inh:016x} CapPrm {prm:016x} CapEff {eff:016x} CapBnd {bnd:016x} CapAmb {amb:016x} Uid {uids}"
        );
        assert_eq!(eff, NET_ADMIN_RAW, "{task}: CapEff");
        assert_eq!(prm, NET_ADMIN_RAW, "{task}: CapPrm");
        assert_eq!(bnd, NET_ADMIN_RAW, "{task}: CapBnd");
        assert_eq!((inh, amb), (0, 0), "{task}: CapInh / CapAmb");
        assert!(
            uids.split_whitespace().all(|u| u == uid),
            "{task}: Uid {uids}, want {uid}"
        );
    }
}

/// Input: carpd started as root, then a second one with `--user nobody`.
/// Output: every thread of each has exactly CAP_NET_ADMIN and CAP_NET_RAW in
/// its effective, permitted and bounding sets and nothing inheritable or
/// ambient; the second runs with uid 65534. Both still do their job with
/// what is left: the first becomes MASTER and adds the VIP after the drop
/// (master-down fires 3 s after start-up), answers carpctl, and on SIGTERM
/// removes the VIP and exits 0.
#[test]
#[ignore = "needs root: network namespaces"]
fn only_net_admin_and_net_raw_remain() {
    let lab = Lab::new("privs", 2);
    let a = lab.carpd(0, "a", &words(&lab, "a", &[]));
    assert_only_net_caps(&a, "0");
    wait_state(&a, 1, "MASTER", Duration::from_secs(8));
    assert!(lab.has_addr(&a.ns, VIP), "MASTER without its VIP");

    let nobody = nix::unistd::User::from_name("nobody")
        .expect("getpwnam")
        .expect("user nobody");
    let b = lab.carpd(
        1,
        "b",
        &words(&lab, "b", &["--user", "nobody", "advskew", "100"]),
    );
    assert_only_net_caps(&b, &nobody.uid.to_string());
    wait_state(&b, 1, "BACKUP", Duration::from_secs(8));
    assert_eq!(view(&a, 1).state, "MASTER");
    // The state directory was handed to the user (maintenance mode stays writable).
    let state = lab.path("b-state");
    let meta = std::fs::metadata(&state).expect("state dir");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        nobody.uid.as_raw()
    );

    // SIGTERM on A: B (unprivileged) takes over, adding the VIP with CAP_NET_ADMIN.
    lab.kill(&a, Signal::SIGTERM);
    assert_eq!(lab.wait_exit(&a, Duration::from_secs(5)), Some(0));
    assert!(!lab.has_addr(&a.ns, VIP), "A kept its VIP after exit");
    wait_state(&b, 1, "MASTER", Duration::from_secs(5));
    assert!(lab.has_addr(&b.ns, VIP), "B became MASTER without its VIP");
    lab.kill(&b, Signal::SIGTERM);
    assert_eq!(lab.wait_exit(&b, Duration::from_secs(5)), Some(0));
    assert!(!lab.has_addr(&b.ns, VIP), "B kept its VIP after exit");
}

/// Input: `--user` naming no user.
/// Output: exit status 1 before anything is set up, with a message naming the user.
#[test]
#[ignore = "needs root: network namespaces"]
fn unknown_user_is_refused() {
    let lab = Lab::new("privuser", 1);
    let sock = lab.path("a.sock");
    let mut argv = vec![CARPD, "run", "--control", sock.to_str().expect("utf-8")];
    let w = words(&lab, "a", &["--user", "carpd-no-such-user"]);
    argv.extend(w.iter().map(String::as_str));
    let out = lab.exec(lab.ns(0), &argv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no user \"carpd-no-such-user\""), "{err}");
    assert!(!lab.has_addr(lab.ns(0), VIP));
}

/// Input: a passfile with mode 0644, on the command line and in a file.
/// Output: carpd exits with status 2 before touching the network, saying
/// which file has which mode and what to do.
#[test]
#[ignore = "needs root: network namespaces"]
fn passfile_readable_by_others_is_refused_at_start() {
    let lab = Lab::new("privpass", 1);
    let key = lab.path("carpd.key");
    std::fs::write(&key, "secret\n").expect("write key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let sock = lab.path("a.sock");
    let key_s = key.display().to_string();
    let expect =
        format!("passfile {key_s} has mode 0644, group and others must have no access (chmod 600)");

    let words = [
        "carpdev",
        "eth0",
        "vhid",
        "1",
        "passfile",
        &key_s,
        "192.0.2.50/24",
    ];
    let mut argv = vec![CARPD, "run", "--control", sock.to_str().expect("utf-8")];
    argv.extend(words);
    let out = lab.exec(lab.ns(0), &argv);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&expect), "{err}");
    assert!(err.contains("word 6"), "the message names the word: {err}");

    let conf = lab.path("carpd.toml");
    std::fs::write(
        &conf,
        "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\npassfile = \"carpd.key\"\naddresses = [\"192.0.2.50/24\"]\n",
    )
    .expect("write config");
    let conf_s = conf.display().to_string();
    let out = lab.exec(
        lab.ns(0),
        &[
            CARPD,
            "run",
            "--control",
            sock.to_str().expect("utf-8"),
            "--config",
            &conf_s,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{conf_s}:4:12: {expect}")), "{err}");
    assert!(
        !sock.exists(),
        "no control socket for a refused configuration"
    );

    // chmod 600 is the fix the message names.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let d = lab.carpd(0, "ok", &["--config", conf_s.as_str()]);
    wait_state(&d, 1, "MASTER", Duration::from_secs(8));
}
