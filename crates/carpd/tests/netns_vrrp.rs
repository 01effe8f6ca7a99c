//! VRRPv3 (`carpver 3`) against Debian's keepalived (`vrrp_version 3`, no
//! authentication) in namespaces, IPv4 and IPv6: each as MASTER with the
//! other BACKUP, failover on link loss, priority-0 resignation both ways,
//! and the tie-break on equal priority.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Lab;
use common::daemon::{Pinger, state, wall_now};
use common::vrrp::{
    Family, TAKEOVER, V4, V6, carpd_vrrp, has_vip, partition, wait_carpd, wait_vip,
};
use nix::sys::signal::Signal;

/// A keepalived in a namespace; stopped (its children too) on drop.
struct Keepalived {
    pid: u32,
    conf: PathBuf,
}

impl Keepalived {
    fn start(lab: &Lab, ns: &str, f: Family, priority: u8, tag: &str) -> Keepalived {
        let conf = lab.path(&format!("keepalived-{tag}.conf"));
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  vrrp_version 3\n  enable_script_security\n  script_user root\n}}\n\
                 vrrp_instance {tag} {{\n  interface eth0\n  state BACKUP\n  virtual_router_id {}\n\
                 priority {priority}\n  advert_int 1\n  virtual_ipaddress {{\n    {}\n  }}\n}}\n",
                f.vrid, f.vip
            ),
        )
        .expect("write keepalived.conf");
        let pidfile = |n: &str| lab.path(&format!("keepalived-{tag}.{n}.pid"));
        let (main_pid, vrrp_pid) = (pidfile("main"), pidfile("vrrp"));
        let argv = [
            "keepalived",
            "-n",
            "-l",
            "-D",
            "-f",
            conf.to_str().expect("utf-8"),
            "-p",
            main_pid.to_str().expect("utf-8"),
            "-r",
            vrrp_pid.to_str().expect("utf-8"),
        ];
        let pid = lab.spawn_logged(ns, &argv, &lab.path(&format!("keepalived-{tag}.log")));
        Keepalived { pid, conf }
    }

    /// SIGTERM: keepalived resigns with priority 0 and removes its VIP.
    fn stop(&self, lab: &Lab) {
        lab.signal(self.pid, Signal::SIGTERM);
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        std::thread::sleep(Duration::from_millis(300));
        // Its VRRP child, if the parent went first.
        let _ = Command::new("pkill")
            .args(["-KILL", "-f"])
            .arg(self.conf.as_os_str())
            .status();
    }
}

fn keepalived_available() -> bool {
    Command::new("keepalived")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Input: keepalived (priority 200) on host 0, carpd (100) on host 1.
/// Output: keepalived MASTER (the VIP on host 0 only), carpd BACKUP; host
/// 0's link down: carpd MASTER within Master_Down_Interval; link back:
/// keepalived preempts; keepalived stopped (it sends priority 0): carpd
/// MASTER within Skew_Time plus slack, faster than Master_Down_Interval.
fn keepalived_master_carpd_backup(tag: &str, f: Family) {
    let lab = Lab::new(tag, 2);
    let (ka_ns, cd_ns) = (lab.ns(0).to_owned(), lab.ns(1).to_owned());
    let ka = Keepalived::start(&lab, &ka_ns, f, 200, "K");
    wait_vip(&lab, &ka_ns, f, true, TAKEOVER, "keepalived MASTER");
    let cd = carpd_vrrp(&lab, 1, "carpd", f, 100);
    wait_carpd(&cd, f, "BACKUP", TAKEOVER, "carpd BACKUP");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        state(&cd, f.vrid).as_deref(),
        Some("BACKUP"),
        "{}: carpd took over",
        f.name
    );
    assert!(
        !has_vip(&lab, &cd_ns, f),
        "{}: the BACKUP holds the VIP",
        f.name
    );

    lab.link_set(&ka_ns, "eth0", false);
    let took = wait_carpd(
        &cd,
        f,
        "MASTER",
        TAKEOVER,
        "carpd MASTER after the link loss",
    );
    println!(
        "{}: keepalived's link down, carpd MASTER after {took:?}",
        f.name
    );
    assert!(has_vip(&lab, &cd_ns, f));
    lab.link_set(&ka_ns, "eth0", true);
    let took = wait_carpd(&cd, f, "BACKUP", TAKEOVER, "keepalived preempts carpd");
    println!("{}: link back, keepalived preempted after {took:?}", f.name);
    wait_vip(
        &lab,
        &cd_ns,
        f,
        false,
        Duration::from_secs(2),
        "carpd drops the VIP",
    );

    let t0 = Instant::now();
    ka.stop(&lab);
    wait_carpd(
        &cd,
        f,
        "MASTER",
        TAKEOVER,
        "carpd MASTER after keepalived resigned",
    );
    let took = t0.elapsed();
    println!(
        "{}: keepalived resigned (priority 0), carpd MASTER after {took:?}",
        f.name
    );
    assert!(
        took < Duration::from_millis(3000),
        "{}: {took:?}: priority 0 was not taken as a resignation (Master_Down_Interval is 3.6 s)",
        f.name
    );
}

/// Input: carpd (priority 200) on host 0, keepalived (100) on host 1.
/// Output: carpd MASTER, keepalived BACKUP (no VIP); carpd's link down:
/// keepalived takes the VIP; link back: carpd preempts; carpd SIGTERM
/// (priority 0): keepalived takes the VIP faster than Master_Down_Interval.
fn carpd_master_keepalived_backup(tag: &str, f: Family) {
    let lab = Lab::new(tag, 2);
    let (cd_ns, ka_ns) = (lab.ns(0).to_owned(), lab.ns(1).to_owned());
    let cd = carpd_vrrp(&lab, 0, "carpd", f, 200);
    wait_carpd(&cd, f, "MASTER", TAKEOVER, "carpd MASTER");
    let _ka = Keepalived::start(&lab, &ka_ns, f, 100, "K");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(state(&cd, f.vrid).as_deref(), Some("MASTER"), "{}", f.name);
    assert!(
        !has_vip(&lab, &ka_ns, f),
        "{}: keepalived took the VIP",
        f.name
    );

    lab.link_set(&cd_ns, "eth0", false);
    let took = wait_vip(
        &lab,
        &ka_ns,
        f,
        true,
        TAKEOVER,
        "keepalived MASTER after the link loss",
    );
    println!(
        "{}: carpd's link down, keepalived MASTER after {took:?}",
        f.name
    );
    lab.link_set(&cd_ns, "eth0", true);
    wait_carpd(&cd, f, "MASTER", TAKEOVER, "carpd back as MASTER");
    let took = wait_vip(&lab, &ka_ns, f, false, TAKEOVER, "keepalived yields");
    println!("{}: link back, keepalived yielded after {took:?}", f.name);

    let t0 = Instant::now();
    lab.kill(&cd, Signal::SIGTERM);
    wait_vip(
        &lab,
        &ka_ns,
        f,
        true,
        TAKEOVER,
        "keepalived MASTER after carpd resigned",
    );
    let took = t0.elapsed();
    println!(
        "{}: carpd resigned (priority 0), keepalived MASTER after {took:?}",
        f.name
    );
    assert!(
        took < Duration::from_millis(3000),
        "{}: {took:?}: keepalived did not take carpd's priority 0 as a resignation",
        f.name
    );
}

/// Input: carpd MASTER (priority 200) on host 0, keepalived BACKUP (100) on
/// host 1, a client on host 2 pinging the VIP every 10 ms; carpd gets
/// SIGTERM. Output: it resigns with priority 0 and keeps the VIP until it
/// hears keepalived's first advertisement as MASTER (which comes after
/// Skew_Time, 0.6 s), so the client loses at most one probe (the
/// hitless-path allowance for scheduling on a busy machine).
fn planned_switchover_to_keepalived(tag: &str, f: Family) {
    let lab = Lab::new(tag, 3);
    let ka_ns = lab.ns(1).to_owned();
    let client = lab.ns(2).to_owned();
    let cd = carpd_vrrp(&lab, 0, "carpd", f, 200);
    wait_carpd(&cd, f, "MASTER", TAKEOVER, "carpd MASTER");
    let _ka = Keepalived::start(&lab, &ka_ns, f, 100, "K");
    std::thread::sleep(Duration::from_secs(2));
    lab.exec_ok(&client, &["ping", "-c", "1", "-W", "2", f.addr()]);
    let pinger = Pinger::start(&client, f.addr(), Duration::from_millis(10)).expect("ping");
    std::thread::sleep(Duration::from_millis(500));
    let wall0 = wall_now();
    lab.kill(&cd, Signal::SIGTERM);
    let took = wait_vip(&lab, &ka_ns, f, true, TAKEOVER, "keepalived MASTER");
    std::thread::sleep(Duration::from_secs(3));
    let seen = pinger.finish().outage(wall0 - 0.3, wall_now() - 0.05);
    println!(
        "{}: SIGTERM to carpd, keepalived MASTER after {took:?}; client: {seen}",
        f.name
    );
    assert!(
        seen.lost <= 1,
        "{}: the planned switchover lost {} probes",
        f.name,
        seen.lost
    );
}

/// Input: carpd and keepalived at the same priority, both MASTER while
/// VRRP is dropped between them; then the path heals. Output: exactly one
/// MASTER, the one with the higher primary address (RFC 9568 6.4.3), on
/// both sides of the comparison.
fn tie_break_on_the_higher_address(tag: &str, f: Family, carpd_host: usize) {
    let lab = Lab::new(tag, 2);
    let ka_host = 1 - carpd_host;
    let (cd_ns, ka_ns) = (lab.ns(carpd_host).to_owned(), lab.ns(ka_host).to_owned());
    partition(&lab, true);
    let cd = carpd_vrrp(&lab, carpd_host, "carpd", f, 100);
    let _ka = Keepalived::start(&lab, &ka_ns, f, 100, "K");
    wait_carpd(&cd, f, "MASTER", TAKEOVER, "carpd MASTER while partitioned");
    wait_vip(
        &lab,
        &ka_ns,
        f,
        true,
        TAKEOVER,
        "keepalived MASTER while partitioned",
    );
    partition(&lab, false);
    // The primary addresses: IPv4 192.0.2.(10 + host); IPv6 the
    // link-locals, which VRRP sends from.
    let primary = |i: usize| -> std::net::IpAddr {
        match f.name {
            "IPv4" => lab.host(i).v4.into(),
            _ => lab.host(i).link_local.into(),
        }
    };
    let (ours, theirs) = (primary(carpd_host), primary(ka_host));
    let keepalived_wins = theirs > ours;
    let (winner_ns, loser_ns) = if keepalived_wins {
        (&ka_ns, &cd_ns)
    } else {
        (&cd_ns, &ka_ns)
    };
    wait_vip(
        &lab,
        loser_ns,
        f,
        false,
        TAKEOVER,
        "the lower address yields",
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        has_vip(&lab, winner_ns, f),
        "{}: the higher address lost the VIP",
        f.name
    );
    assert!(
        !has_vip(&lab, loser_ns, f),
        "{}: the lower address took it back",
        f.name
    );
    let want = if keepalived_wins { "BACKUP" } else { "MASTER" };
    assert_eq!(state(&cd, f.vrid).as_deref(), Some(want), "{}", f.name);
    println!(
        "{}: tie at priority 100: {} ({}) stays MASTER",
        f.name,
        if keepalived_wins {
            "keepalived"
        } else {
            "carpd"
        },
        if keepalived_wins { theirs } else { ours }
    );
}

macro_rules! vrrp_tests {
    ($($name:ident: $f:ident($($arg:expr),*);)*) => {$(
        #[test]
        #[ignore = "needs root: network namespaces, keepalived"]
        fn $name() {
            assert!(keepalived_available(), "keepalived is not installed (scripts/test-all.sh installs it)");
            $f($($arg),*);
        }
    )*};
}

vrrp_tests! {
    keepalived_master_carpd_backup_ipv4: keepalived_master_carpd_backup("vrkm4", V4);
    keepalived_master_carpd_backup_ipv6: keepalived_master_carpd_backup("vrkm6", V6);
    carpd_master_keepalived_backup_ipv4: carpd_master_keepalived_backup("vrcm4", V4);
    carpd_master_keepalived_backup_ipv6: carpd_master_keepalived_backup("vrcm6", V6);
    planned_switchover_ipv4: planned_switchover_to_keepalived("vrsw4", V4);
    planned_switchover_ipv6: planned_switchover_to_keepalived("vrsw6", V6);
    // carpd at .10 yields to keepalived at .11, then keepalived at .10 to carpd.
    tie_break_ipv4_carpd_lower: tie_break_on_the_higher_address("vrtie4l", V4, 0);
    tie_break_ipv4_carpd_higher: tie_break_on_the_higher_address("vrtie4h", V4, 1);
    tie_break_ipv6: tie_break_on_the_higher_address("vrtie6", V6, 0);
}
