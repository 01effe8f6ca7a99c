//! A loop that never blocks and a state directory it does not trust (issue
//! 10, defects 6 and 7).
//!
//! Root only: `cargo test -p carpd --test netns_blocking -- --include-ignored`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use common::Lab;
use common::daemon::{CARPD, Carpd, carpctl, wait_single_master, wait_state};
use common::testbed::words::Words;
use nix::sys::signal::Signal;

const PASS: &str = "blocking";
const VIP: &str = "192.0.2.50";
const ELECTION: Duration = Duration::from_secs(8);
/// Longer than B's master-down (3 x (1 + 100/256) s) with slack: a loop
/// stalled this long lets B take over.
const WATCH: Duration = Duration::from_secs(7);

fn words(advskew: u8) -> Vec<String> {
    // No guard: a crash must leave the record and the address for the restart.
    Words::new("eth0", 1)
        .option("--no-guard")
        .advbase(1)
        .advskew(advskew)
        .pass(PASS)
        .addr(&format!("{VIP}/24"))
        .build()
}

fn toml(up: Option<&Path>) -> String {
    let up = up.map_or(String::new(), |p| format!("up = \"{}\"\n", p.display()));
    format!(
        "log_level = 7\n\n[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\nadvbase = 1\nadvskew = 0\n\
         pass = \"{PASS}\"\naddresses = [\"{VIP}/24\"]\n{up}"
    )
}

/// Assert that B stays BACKUP and A answers and stays MASTER for [`WATCH`].
fn assert_a_keeps_advertising(a: &Carpd, b: &Carpd, what: &str) {
    let deadline = Instant::now() + WATCH;
    let before = b.view(1).map_or(0, |v| v.stats.accepted);
    while Instant::now() < deadline {
        let sb = b.state(1);
        assert_eq!(
            sb.as_deref(),
            Some("BACKUP"),
            "{what}: B left BACKUP, so A stopped advertising"
        );
        thread::sleep(Duration::from_millis(200));
    }
    let after = b.view(1).map_or(0, |v| v.stats.accepted);
    assert!(
        after >= before + 4,
        "{what}: B accepted {before} -> {after}"
    );
    assert_eq!(a.state(1).as_deref(), Some("MASTER"), "{what}: A answers");
}

fn logged(d: &Carpd, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if std::fs::read_to_string(&d.log)
            .unwrap_or_default()
            .contains(needle)
        {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Input: A (MASTER, from a config file) and B (advskew 100). A's file is
/// replaced by a FIFO nobody writes and A gets SIGHUP. Output: B stays
/// BACKUP and keeps accepting A's advertisements; A answers its control
/// socket, logs that the file is not a regular file, and keeps running.
#[test]
#[ignore = "needs root: network namespaces"]
fn reload_from_a_fifo_keeps_advertising() {
    let lab = Lab::new("fifo", 2);
    let file = lab.path("a.toml");
    std::fs::write(&file, toml(None)).expect("write config");
    let a = lab.carpd(0, "a", &["--config", file.to_str().expect("utf-8")]);
    let b = lab.carpd(1, "b", &words(100));
    assert_eq!(wait_single_master(&[&a, &b], 1, ELECTION), 0);
    wait_state(&b, 1, "BACKUP", ELECTION);

    std::fs::remove_file(&file).expect("remove config");
    nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    lab.kill(&a, Signal::SIGHUP);
    assert_a_keeps_advertising(&a, &b, "reload from a FIFO");
    assert!(
        logged(&a, "not a regular file", Duration::from_secs(2)),
        "A explains the refused reload"
    );
}

/// Start carpd with stdout and stderr on a pipe nobody reads.
fn carpd_on_stalled_pipe(lab: &Lab, i: usize, name: &str, args: &[&str]) -> Carpd {
    let mut d = Carpd::new(lab, i, name, Path::new(CARPD), Vec::new());
    let sock = d.sock.to_str().expect("utf-8").to_owned();
    let state = lab.path(&format!("{name}-state"));
    let mut argv = vec![
        CARPD,
        "run",
        "--log-level",
        "7",
        "--control",
        &sock,
        "--state-dir",
        state.to_str().expect("utf-8"),
    ];
    argv.extend(args);
    d.pid = lab.spawn(&d.ns, &argv);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.status().is_none() {
        assert!(Instant::now() < deadline, "{name} never answered");
        thread::sleep(Duration::from_millis(20));
    }
    d
}

/// Input: A runs with its stderr on a pipe nobody reads, at log level 7,
/// with an up hook that prints 100 MB; B (advskew 100) is its peer.
/// Output: A becomes MASTER and stays so; B stays BACKUP and keeps
/// accepting A's advertisements, whatever the hook and the stalled log do.
#[test]
#[ignore = "needs root: network namespaces"]
fn flooding_hook_and_stalled_stderr_keep_advertising() {
    let lab = Lab::new("flood", 2);
    let hook = lab.path("flood.sh");
    std::fs::write(
        &hook,
        "#!/bin/sh\nhead -c 50000000 /dev/zero | tr '\\0' 'x' >&2\nhead -c 50000000 /dev/zero | tr '\\0' 'y'\n",
    )
    .expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let file = lab.path("a.toml");
    std::fs::write(&file, toml(Some(&hook))).expect("write config");
    let b = lab.carpd(1, "b", &words(100));
    let a = carpd_on_stalled_pipe(&lab, 0, "a", &["--config", file.to_str().expect("utf-8")]);
    wait_state(&a, 1, "MASTER", ELECTION);
    wait_state(&b, 1, "BACKUP", ELECTION);
    // Stall the loop's stderr with its own chatter too: reloads log lines.
    for _ in 0..20 {
        lab.kill(&a, Signal::SIGHUP);
        thread::sleep(Duration::from_millis(20));
    }
    assert_a_keeps_advertising(&a, &b, "hook flood, stalled stderr");
}

/// The record files in `dir` (`owned-*.json`).
fn records(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .collect::<Vec<PathBuf>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter(|p: &PathBuf| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("owned-"))
                && p.extension().is_some_and(|e| e == "json")
        })
        .collect()
}

/// Run A until it holds the VIP and has written its record, then `kill -9`
/// it; return the record's path.
fn crash_with_record(lab: &Lab, a: &Carpd) -> PathBuf {
    wait_state(a, 1, "MASTER", ELECTION);
    let state = lab.path("a-state");
    let record = records(&state).pop().expect("A wrote a record");
    lab.kill(a, Signal::SIGKILL);
    lab.wait_exit(a, Duration::from_secs(5));
    record
}

/// Input: a record naming eth0's own address 192.0.2.10/24, planted in a
/// state directory owned by `nobody`. Output: carpd refuses to start,
/// naming the directory, its owner and mode, and the address is still on
/// eth0.
#[test]
#[ignore = "needs root: network namespaces"]
fn planted_record_in_a_foreign_state_dir_is_refused() {
    let lab = Lab::new("planted", 1);
    let mut a = lab.carpd(0, "a", &words(0));
    let record = crash_with_record(&lab, &a);
    let text = std::fs::read_to_string(&record).expect("record");
    let planted = ifname_eth0(&text.replace(VIP, "192.0.2.10"));
    std::fs::write(&record, planted).expect("plant");
    let state = lab.path("a-state");
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&state, Some(nobody), None).expect("chown nobody");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let err = a.start(&lab);
    assert!(
        err.is_err(),
        "carpd started on a state directory owned by nobody"
    );
    assert!(
        lab.has_addr(&a.ns, "192.0.2.10"),
        "carpd removed the host's own address"
    );
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(
        log.contains(&state.display().to_string()) && log.contains("65534"),
        "the refusal names the directory and its owner:\n{log}"
    );
}

/// The planted record names interface `eth0` whatever macvlan A used.
fn ifname_eth0(text: &str) -> String {
    text.lines()
        .map(|l| {
            if l.trim_start().starts_with("\"ifname\"") {
                "      \"ifname\": \"eth0\",".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Input: symlinks planted at the temporary names of the address record and
/// of the maintenance flag, pointing at a victim file; carpd restarts,
/// becomes MASTER (writes its record) and `carpctl maintenance on` writes
/// the flag. Output: the victim is unchanged, and the record and the flag
/// are real files.
#[test]
#[ignore = "needs root: network namespaces"]
fn symlinks_at_temporary_names_are_not_followed() {
    let lab = Lab::new("symlink", 1);
    let mut a = lab.carpd(0, "a", &words(0));
    let record = crash_with_record(&lab, &a);
    std::fs::remove_file(&record).expect("drop record");
    let victim = lab.path("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    let state = lab.path("a-state");
    let tmp = record.with_extension("tmp");
    std::os::unix::fs::symlink(&victim, &tmp).expect("symlink record tmp");
    std::os::unix::fs::symlink(&victim, state.join("maintenance.tmp")).expect("symlink flag tmp");
    lab.start(&mut a);
    wait_state(&a, 1, "MASTER", ELECTION);
    let _ = carpctl(&a, &["maintenance", "on"]);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n",
        "a planted symlink made carpd overwrite another file"
    );
    let meta = std::fs::symlink_metadata(&record).expect("record written");
    assert!(meta.is_file(), "the record is a regular file");
}

/// Input: carpd started with umask 000, its state directory and control
/// socket directory not yet there; it becomes MASTER (writes its record)
/// and `carpctl maintenance on` writes the flag. Output: no directory or
/// file it created is writable by group or others.
#[test]
#[ignore = "needs root: network namespaces"]
fn umask_000_gives_no_world_writable_state() {
    let lab = Lab::new("umask", 1);
    let mut a = Carpd::new(&lab, 0, "a", Path::new(CARPD), Vec::new());
    let sock = lab.path("ctl/a.sock");
    a.sock = sock.clone();
    let state = lab.path("state/a");
    let mut argv: Vec<String> = [
        "sh",
        "-c",
        "umask 000; exec \"$0\" \"$@\"",
        CARPD,
        "run",
        "--log-level",
        "7",
        "--control",
        sock.to_str().expect("utf-8"),
        "--state-dir",
        state.to_str().expect("utf-8"),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    argv.extend(words(0));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    a.pid = lab.spawn_logged(&a.ns, &argv, &a.log);
    wait_state(&a, 1, "MASTER", ELECTION);
    let out = carpctl(&a, &["maintenance", "on"]);
    assert!(out.status.success(), "maintenance on: {out:?}");
    let mut checked = vec![state.clone(), lab.path("ctl"), state.join("maintenance")];
    checked.extend(records(&state));
    assert!(checked.len() >= 4, "a record was written: {checked:?}");
    for p in checked {
        let mode = std::fs::metadata(&p).expect("exists").mode() & 0o7777;
        assert_eq!(
            mode & 0o022,
            0,
            "{} has mode {mode:04o} under umask 000",
            p.display()
        );
    }
}

/// Input: the control socket's directory exists, owned by `nobody`.
/// Output: carpd refuses to start, naming the directory, and configures
/// no address.
#[test]
#[ignore = "needs root: network namespaces"]
fn control_socket_in_a_foreign_directory_is_refused() {
    let lab = Lab::new("sockdir", 1);
    let dir = lab.path("sock");
    std::fs::create_dir(&dir).expect("mkdir");
    let nobody = nix::unistd::Uid::from_raw(65534);
    nix::unistd::chown(&dir, Some(nobody), None).expect("chown nobody");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut a = Carpd::new(&lab, 0, "a", Path::new(CARPD), words(0));
    a.sock = dir.join("a.sock");
    assert!(
        a.start(&lab).is_err(),
        "carpd bound its socket in a directory nobody owns"
    );
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(
        log.contains(&dir.display().to_string()) && log.contains("65534"),
        "the refusal names the directory and its owner:\n{log}"
    );
    assert!(
        !lab.has_addr(&a.ns, VIP),
        "a refused carpd holds no address"
    );
}

/// Input: in A's own (trusted) state directory, a record naming eth0's own
/// IPv6 address 2001:db8::10/64, while A configures only IPv4 on eth0.
/// Output: A starts, leaves the address alone and says so: it removes
/// leftovers only from its macvlans, or from a configured carpdev in a
/// configured family.
#[test]
#[ignore = "needs root: network namespaces"]
fn recorded_addresses_carpd_does_not_manage_are_left_alone() {
    let lab = Lab::new("foreign", 1);
    let mut a = lab.carpd(0, "a", &words(0));
    let record = crash_with_record(&lab, &a);
    let text = std::fs::read_to_string(&record).expect("record");
    let planted = ifname_eth0(&text.replace(VIP, "2001:db8::10"))
        .replace("\"prefix_len\": 24", "\"prefix_len\": 64");
    std::fs::write(&record, planted).expect("plant");
    assert!(
        lab.has_addr(&a.ns, "2001:db8::10"),
        "the lab's eth0 address"
    );
    lab.start(&mut a);
    wait_state(&a, 1, "MASTER", ELECTION);
    assert!(
        lab.has_addr(&a.ns, "2001:db8::10"),
        "carpd removed an IPv6 address of a carpdev it runs IPv4 on"
    );
    assert!(
        logged(
            &a,
            "not removing 2001:db8::10/64 from eth0",
            Duration::from_secs(2)
        ),
        "the refusal is logged"
    );
}
