//! VRRPv3 (`carpver 3`) against Debian's FRR `vrrpd` (8.4, with its
//! `zebra`) in namespaces, IPv4 and IPv6: each as MASTER with the other
//! BACKUP, failover on link loss, priority-0 resignation both ways (FRR's
//! `vrrp N shutdown` and a stopped vrrpd), and the tie-break on equal
//! priority.
//!
//! FRR does not make its interfaces: per virtual router the operator adds
//! a macvlan on the parent in bridge mode, with the VRRP virtual MAC, the
//! VIP and a random link-local (IPv6 advertisements leave from it), and
//! vrrpd keeps it `protodown` while not MASTER. So the VIP is always
//! configured in FRR's namespace; FRR's state is read from `show vrrp json`
//! and the macvlan's protodown flag.

mod common;

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::daemon::{state, wait_for};
use common::vrrp::{
    Family, TAKEOVER, V4, V6, carpd_vrrp, has_vip, partition, wait_carpd, wait_vip,
};
use common::{CMD_TIMEOUT, Lab, run_timeout};
use nix::sys::signal::Signal;

/// FRR preempting after its link comes back: it restarts the virtual
/// router in Backup and waits a whole Master_Down_Interval (3.2 s at
/// priority 200) before it claims the VIP, after zebra has seen the link.
const FRR_RESTART: Duration = Duration::from_secs(10);

const ZEBRA: &str = "/usr/lib/frr/zebra";
const VRRPD: &str = "/usr/lib/frr/vrrpd";
const VTYSH: &str = "/usr/bin/vtysh";

/// FRR's macvlan for the family's virtual router.
fn macvlan(f: Family) -> String {
    format!("vrrp{}-{}", f.frr_key, f.vrid)
}

/// zebra and vrrpd in a namespace, with their own sockets, pid files and
/// configuration in the lab's directory (no `-N` path space: that would
/// make directories under /var/run/frr); stopped on drop.
struct Frr {
    /// The daemons' pids and names, in start order.
    daemons: Vec<(u32, &'static str)>,
    dir: PathBuf,
    f: Family,
    /// vrrpd's log (packet debugging on).
    log: PathBuf,
}

impl Frr {
    /// Start FRR at `priority` on host namespace `ns`; `link_local` fixes
    /// the macvlan's link-local (else random, as FRR's guide does).
    fn start(
        lab: &Lab,
        ns: &str,
        f: Family,
        priority: u8,
        tag: &str,
        link_local: Option<&str>,
    ) -> Frr {
        let dir = lab.path(&format!("frr-{tag}"));
        std::fs::create_dir_all(&dir).expect("mkdir frr");
        // The daemons drop root for user frr and write their pid files
        // and sockets here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod frr");
        add_macvlan(lab, ns, f, link_local);
        std::fs::write(dir.join("zebra.conf"), format!("hostname {tag}\n")).expect("zebra.conf");
        let (vrid, ip) = (f.vrid, f.addr());
        std::fs::write(
            dir.join("vrrpd.conf"),
            format!(
                "hostname {tag}\ndebug vrrp protocol\ndebug vrrp packets\ndebug vrrp zebra\n\
                 interface eth0\n vrrp {vrid} version 3\n vrrp {vrid} priority {priority}\n\
                 vrrp {vrid} advertisement-interval 1000\n vrrp {vrid} {} {ip}\n",
                f.frr_ip
            ),
        )
        .expect("vrrpd.conf");
        let mut frr = Frr {
            daemons: Vec::new(),
            dir,
            f,
            log: lab.path(&format!("frr-{tag}-vrrpd.log")),
        };
        frr.spawn(lab, ns, "zebra", ZEBRA, tag);
        let api = frr.dir.join("zserv.api");
        wait_for(
            "zebra's socket",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || api.exists().then_some(()),
        );
        frr.spawn(lab, ns, "vrrpd", VRRPD, tag);
        wait_for(
            "vrrpd answers on its vty",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || frr.router().map(|_| ()),
        );
        frr
    }

    fn spawn(&mut self, lab: &Lab, ns: &str, name: &'static str, bin: &str, tag: &str) {
        let d = self.dir.to_str().expect("utf-8").to_owned();
        let file = |n: &str| format!("{d}/{n}");
        let (pid, conf, api) = (
            file(&format!("{name}.pid")),
            file(&format!("{name}.conf")),
            file("zserv.api"),
        );
        // -P 0: no TCP vty; --log stdout: into the lab's log.
        let argv = [
            bin,
            "-f",
            &conf,
            "-i",
            &pid,
            "-z",
            &api,
            "--vty_socket",
            &d,
            "-P",
            "0",
            "--log",
            "stdout",
            "--log-level",
            "debug",
        ];
        let log = lab.path(&format!("frr-{tag}-{name}.log"));
        let pid = lab.spawn_logged(ns, &argv, &log);
        self.daemons.push((pid, name));
    }

    fn vtysh(&self, commands: &[&str]) -> Output {
        let mut cmd = Command::new(VTYSH);
        cmd.arg("--vty_socket").arg(&self.dir).args(["-d", "vrrpd"]);
        for c in commands {
            cmd.arg("-c").arg(c);
        }
        run_timeout(&mut cmd, CMD_TIMEOUT)
    }

    /// This family's object of the virtual router in `show vrrp json`.
    fn router(&self) -> Option<serde_json::Value> {
        let out = self.vtysh(&["show vrrp json"]);
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.as_array()?
            .iter()
            .find(|r| r["vrid"].as_u64() == Some(u64::from(self.f.vrid)))
            .map(|r| r[self.f.frr_key].clone())
    }

    /// "Master", "Backup" or "Initialize".
    fn status(&self) -> Option<String> {
        Some(self.router()?["status"].as_str()?.to_owned())
    }

    /// The source address of FRR's advertisements: the parent's IPv4
    /// address, or the macvlan's link-local.
    fn primary(&self) -> IpAddr {
        self.router()
            .and_then(|r| r["primaryAddress"].as_str()?.parse().ok())
            .expect("FRR's primary address")
    }

    /// `vrrp N shutdown` (priority 0 if MASTER) or `no vrrp N shutdown`.
    fn set_shutdown(&self, on: bool) {
        let cmd = format!(
            "{}vrrp {} shutdown",
            if on { "" } else { "no " },
            self.f.vrid
        );
        let out = self.vtysh(&["configure terminal", "interface eth0", &cmd]);
        assert!(
            out.status.success(),
            "vtysh {cmd}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// FRR took every advertisement it heard as valid: its packet debug
    /// logs "datagram invalid: <why>" for any it drops (checksum, TTL,
    /// version, length, ...).
    fn assert_no_invalid(&self) {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("datagram invalid"))
            .collect();
        assert!(
            bad.is_empty(),
            "{}: FRR dropped packets:\n{}",
            self.f.name,
            bad.join("\n")
        );
    }

    /// SIGTERM to vrrpd: it shuts its routers down (priority 0 if MASTER).
    fn stop_vrrpd(&self, lab: &Lab) {
        let (pid, _) = self.daemons[1];
        lab.signal(pid, Signal::SIGTERM);
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        // SIGTERM, so they remove their crash-log directories
        // (/var/tmp/frr/<daemon>.<pid>); the lab SIGKILLs what is left.
        for &(pid, _) in self.daemons.iter().rev() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.daemons.iter().any(|&(pid, _)| running(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for &(pid, name) in &self.daemons {
            let _ = std::fs::remove_dir_all(format!("/var/tmp/frr/{name}.{pid}"));
        }
    }
}

/// Whether `pid` is alive (not gone, not a zombie awaiting the lab's wait).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
    })
}

/// FRR's interface for the virtual router: a macvlan on eth0 in bridge
/// mode (so eth0 still hears advertisements sent from the virtual MAC),
/// the virtual MAC, a random link-local, the VIP.
fn add_macvlan(lab: &Lab, ns: &str, f: Family, link_local: Option<&str>) {
    let dev = macvlan(f);
    let (mode, ll) = match link_local {
        Some(a) => ("none", Some(format!("{a}/64"))),
        None => ("random", None),
    };
    let mac = format!("00:00:5e:00:{:02x}:{:02x}", f.mac_family, f.vrid);
    lab.exec_ok(
        ns,
        &[
            "ip", "link", "add", &dev, "link", "eth0", "type", "macvlan", "mode", "bridge",
        ],
    );
    // Not at creation: this kernel refuses addrgenmode in the same request.
    let mut steps = vec![
        vec!["ip", "link", "set", &dev, "addrgenmode", mode],
        vec!["ip", "link", "set", &dev, "address", &mac],
        vec!["ip", "addr", "add", f.vip, "dev", &dev],
    ];
    if let Some(ll) = &ll {
        steps.push(vec!["ip", "addr", "add", ll, "dev", &dev]);
    }
    steps.push(vec!["ip", "link", "set", &dev, "up"]);
    for argv in steps {
        lab.exec_ok(ns, &argv);
    }
}

/// The macvlan's protodown flag: set while FRR is not MASTER.
fn protodown(lab: &Lab, ns: &str, f: Family) -> bool {
    let out = lab.exec_ok(ns, &["ip", "-j", "-d", "link", "show", "dev", &macvlan(f)]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link");
    v[0]["proto_down"].as_bool().unwrap_or(false)
}

/// A lab of `n` hosts that ignore router advertisements: FRR's zebra sends
/// them for an IPv6 MASTER, and SLAAC addresses would blur the address checks.
fn frr_lab(tag: &str, n: usize) -> Lab {
    let lab = Lab::new(tag, n);
    for i in 0..n {
        let ns = lab.ns(i).to_owned();
        for dev in ["all", "default", "eth0"] {
            lab.sysctl(&ns, &format!("net.ipv6.conf.{dev}.accept_ra"), "0");
        }
    }
    lab
}

/// Wait until FRR reports `want` ("Master", "Backup") for its router.
fn wait_frr(frr: &Frr, want: &str, within: Duration, what: &str) -> Duration {
    let (_, took) = wait_for(what, within, Duration::from_millis(20), || {
        (frr.status().as_deref() == Some(want)).then_some(())
    });
    took
}

/// Input: FRR (priority 200) on host 0, carpd (100) on host 1.
/// Output: FRR MASTER, carpd BACKUP without the VIP; FRR's link down:
/// carpd MASTER within Master_Down_Interval; link back: FRR preempts;
/// `vrrp N shutdown` (priority 0): carpd MASTER faster than
/// Master_Down_Interval; `no vrrp N shutdown`: FRR preempts again; vrrpd
/// SIGTERMed (priority 0 again): carpd MASTER as fast.
fn frr_master_carpd_backup(tag: &str, f: Family) {
    let lab = frr_lab(tag, 2);
    let (frr_ns, cd_ns) = (lab.ns(0).to_owned(), lab.ns(1).to_owned());
    let frr = Frr::start(&lab, &frr_ns, f, 200, "F", None);
    wait_frr(&frr, "Master", TAKEOVER, "FRR MASTER");
    let cd = carpd_vrrp(&lab, 1, "carpd", f, 100);
    wait_carpd(&cd, f, "BACKUP", TAKEOVER, "carpd BACKUP");
    // Longer than carpd's Master_Down_Interval (3.6 s): carpd heard FRR.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        state(&cd, f.vrid).as_deref(),
        Some("BACKUP"),
        "{}: carpd took over",
        f.name
    );
    assert_eq!(frr.status().as_deref(), Some("Master"), "{}", f.name);
    assert!(
        !has_vip(&lab, &cd_ns, f),
        "{}: the BACKUP holds the VIP",
        f.name
    );

    lab.link_set(&frr_ns, "eth0", false);
    let took = wait_carpd(
        &cd,
        f,
        "MASTER",
        TAKEOVER,
        "carpd MASTER after FRR's link loss",
    );
    println!("{}: FRR's link down, carpd MASTER after {took:?}", f.name);
    assert!(has_vip(&lab, &cd_ns, f));
    lab.link_set(&frr_ns, "eth0", true);
    let took = wait_carpd(&cd, f, "BACKUP", FRR_RESTART, "FRR preempts carpd");
    println!("{}: link back, FRR preempted after {took:?}", f.name);
    wait_vip(
        &lab,
        &cd_ns,
        f,
        false,
        Duration::from_secs(2),
        "carpd drops the VIP",
    );
    wait_frr(&frr, "Master", TAKEOVER, "FRR MASTER again");

    let resign = |what: &str, act: &dyn Fn()| {
        let t0 = Instant::now();
        act();
        wait_carpd(
            &cd,
            f,
            "MASTER",
            TAKEOVER,
            &format!("carpd MASTER after {what}"),
        );
        let took = t0.elapsed();
        println!(
            "{}: {what} (priority 0), carpd MASTER after {took:?}",
            f.name
        );
        assert!(
            took < Duration::from_millis(3000),
            "{}: {took:?}: FRR's {what} was not taken as a resignation (Master_Down_Interval is 3.6 s)",
            f.name
        );
    };
    resign("vrrp shutdown", &|| frr.set_shutdown(true));
    assert!(
        protodown(&lab, &frr_ns, f),
        "{}: FRR shut down keeps its macvlan up",
        f.name
    );
    frr.set_shutdown(false);
    let took = wait_carpd(
        &cd,
        f,
        "BACKUP",
        FRR_RESTART,
        "FRR back from shutdown preempts",
    );
    println!("{}: no vrrp shutdown, FRR preempted after {took:?}", f.name);
    resign("vrrpd SIGTERM", &|| frr.stop_vrrpd(&lab));
    frr.assert_no_invalid();
}

/// Input: carpd (priority 200) on host 0, FRR (100) on host 1.
/// Output: carpd MASTER, FRR BACKUP (macvlan protodown); carpd's link
/// down: FRR MASTER; link back: carpd preempts; carpd SIGTERM (priority
/// 0): FRR MASTER faster than Master_Down_Interval.
fn carpd_master_frr_backup(tag: &str, f: Family) {
    let lab = frr_lab(tag, 2);
    let (cd_ns, frr_ns) = (lab.ns(0).to_owned(), lab.ns(1).to_owned());
    let cd = carpd_vrrp(&lab, 0, "carpd", f, 200);
    wait_carpd(&cd, f, "MASTER", TAKEOVER, "carpd MASTER");
    let frr = Frr::start(&lab, &frr_ns, f, 100, "F", None);
    wait_frr(&frr, "Backup", TAKEOVER, "FRR BACKUP");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(state(&cd, f.vrid).as_deref(), Some("MASTER"), "{}", f.name);
    assert_eq!(
        frr.status().as_deref(),
        Some("Backup"),
        "{}: FRR took over",
        f.name
    );
    assert!(
        protodown(&lab, &frr_ns, f),
        "{}: FRR's BACKUP macvlan is not protodown",
        f.name
    );
    let heard = frr.router().expect("FRR's router")["stats"]["adverRx"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        heard >= 3,
        "{}: FRR counted {heard} advertisements from carpd",
        f.name
    );

    lab.link_set(&cd_ns, "eth0", false);
    let took = wait_frr(&frr, "Master", TAKEOVER, "FRR MASTER after the link loss");
    println!("{}: carpd's link down, FRR MASTER after {took:?}", f.name);
    assert!(!protodown(&lab, &frr_ns, f), "{}", f.name);
    lab.link_set(&cd_ns, "eth0", true);
    wait_carpd(&cd, f, "MASTER", TAKEOVER, "carpd back as MASTER");
    let took = wait_frr(&frr, "Backup", TAKEOVER, "FRR yields");
    println!("{}: link back, FRR yielded after {took:?}", f.name);

    let t0 = Instant::now();
    lab.kill(&cd, Signal::SIGTERM);
    wait_frr(&frr, "Master", TAKEOVER, "FRR MASTER after carpd resigned");
    let took = t0.elapsed();
    println!(
        "{}: carpd resigned (priority 0), FRR MASTER after {took:?}",
        f.name
    );
    assert!(
        took < Duration::from_millis(3000),
        "{}: {took:?}: FRR did not take carpd's priority 0 as a resignation",
        f.name
    );
    frr.assert_no_invalid();
}

/// Input: carpd and FRR at the same priority, both MASTER while VRRP is
/// dropped between them; then the path heals. Output: exactly one MASTER,
/// the one with the higher primary address (RFC 9568 6.4.3): IPv4 the
/// hosts' addresses; IPv6 carpd's eth0 link-local against FRR's macvlan
/// link-local (`frr_ll`, fixed so that both outcomes are tested).
fn tie_break_on_the_higher_address(tag: &str, f: Family, carpd_host: usize, frr_ll: Option<&str>) {
    let lab = frr_lab(tag, 2);
    let frr_host = 1 - carpd_host;
    let (cd_ns, frr_ns) = (lab.ns(carpd_host).to_owned(), lab.ns(frr_host).to_owned());
    partition(&lab, true);
    let cd = carpd_vrrp(&lab, carpd_host, "carpd", f, 100);
    let frr = Frr::start(&lab, &frr_ns, f, 100, "F", frr_ll);
    wait_carpd(&cd, f, "MASTER", TAKEOVER, "carpd MASTER while partitioned");
    wait_frr(&frr, "Master", TAKEOVER, "FRR MASTER while partitioned");
    let ours: IpAddr = match f.name {
        "IPv4" => lab.host(carpd_host).v4.into(),
        _ => lab.host(carpd_host).link_local.into(),
    };
    // FRR binds its source address at its first advertisement (the
    // IPv6 link-local is learnt from zebra a moment after startup).
    let (theirs, _) = wait_for(
        "FRR's primary address",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || Some(frr.primary()).filter(|a| !a.is_unspecified()),
    );
    let want_theirs: IpAddr = match (f.name, frr_ll) {
        ("IPv4", _) => lab.host(frr_host).v4.into(),
        (_, Some(ll)) => ll.parse().expect("link-local"),
        (_, None) => theirs,
    };
    assert_eq!(theirs, want_theirs, "{}: FRR's source address", f.name);
    partition(&lab, false);
    let frr_wins = theirs > ours;
    let (want_cd, want_frr) = if frr_wins {
        ("BACKUP", "Master")
    } else {
        ("MASTER", "Backup")
    };
    // The winner never leaves MASTER (a winner that yielded and took the
    // VIP back a Master_Down_Interval later would pass the end state).
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(4) {
        // None: the status query itself failed (a loaded machine); ask again.
        let winner = if frr_wins {
            frr.status().map(|s| s == "Master")
        } else {
            state(&cd, f.vrid).map(|s| s == "MASTER")
        };
        assert_ne!(
            winner,
            Some(false),
            "{}: the higher address left MASTER after {:?}",
            f.name,
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_carpd(&cd, f, want_cd, TAKEOVER, "carpd settles");
    wait_frr(&frr, want_frr, TAKEOVER, "FRR settles");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(state(&cd, f.vrid).as_deref(), Some(want_cd), "{}", f.name);
    assert_eq!(frr.status().as_deref(), Some(want_frr), "{}", f.name);
    assert_eq!(
        has_vip(&lab, &cd_ns, f),
        !frr_wins,
        "{}: carpd's VIP",
        f.name
    );
    assert_eq!(
        protodown(&lab, &frr_ns, f),
        !frr_wins,
        "{}: FRR's macvlan",
        f.name
    );
    println!(
        "{}: tie at priority 100: {} ({}) stays MASTER over {}",
        f.name,
        if frr_wins { "FRR" } else { "carpd" },
        if frr_wins { theirs } else { ours },
        if frr_wins { ours } else { theirs },
    );
    frr.assert_no_invalid();
}

fn frr_available() -> bool {
    [ZEBRA, VRRPD, VTYSH].iter().all(|p| Path::new(p).exists())
}

macro_rules! frr_tests {
    ($($name:ident: $f:ident($($arg:expr),*);)*) => {$(
        #[test]
        #[ignore = "needs root: network namespaces, FRR"]
        fn $name() {
            if !frr_available() && !nix::unistd::geteuid().is_root() {
                eprintln!("skipped: FRR (Debian package frr) is not installed and this is not root; scripts/test-all.sh installs it");
                return;
            }
            assert!(frr_available(), "FRR is not installed ({ZEBRA}, {VRRPD}, {VTYSH}; scripts/test-all.sh installs the frr package)");
            $f($($arg),*);
        }
    )*};
}

frr_tests! {
    frr_master_carpd_backup_ipv4: frr_master_carpd_backup("frfm4", V4);
    frr_master_carpd_backup_ipv6: frr_master_carpd_backup("frfm6", V6);
    carpd_master_frr_backup_ipv4: carpd_master_frr_backup("frcm4", V4);
    carpd_master_frr_backup_ipv6: carpd_master_frr_backup("frcm6", V6);
    // carpd at .10 yields to FRR at .11, then FRR at .10 to carpd.
    tie_break_ipv4_carpd_lower: tie_break_on_the_higher_address("frtie4l", V4, 0, None);
    tie_break_ipv4_carpd_higher: tie_break_on_the_higher_address("frtie4h", V4, 1, None);
    // FRR's link-local below, then above, any EUI-64 one (carpd's eth0).
    tie_break_ipv6_carpd_higher: tie_break_on_the_higher_address("frtie6h", V6, 0, Some("fe80::1"));
    tie_break_ipv6_carpd_lower:
        tie_break_on_the_higher_address("frtie6l", V6, 0, Some("fe80::ffff:ffff:ffff:ffff"));
}
