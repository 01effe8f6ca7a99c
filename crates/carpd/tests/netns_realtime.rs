//! `realtime` with a real `carpd` in a namespace: the protocol loop's thread
//! runs under SCHED_FIFO at the priority asked for, with memory locked, and
//! nothing it starts (its other threads, a hook) inherits it; without
//! `realtime` everything stays SCHED_OTHER. Read back from /proc.

mod common;

use std::path::Path;
use std::time::Duration;

use common::Lab;
use common::daemon::{carpctl_ok, wait_for, wait_state};
use common::testbed::words::Words;

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;

/// The scheduling policy and real-time priority in a `/proc/.../stat` file
/// (fields 41 and 40; counted after the command name, which may hold spaces).
fn sched(stat: &Path) -> (u32, u32) {
    let text = std::fs::read_to_string(stat).unwrap_or_else(|e| panic!("{}: {e}", stat.display()));
    let after = &text[text.rfind(')').expect("comm") + 2..];
    // `after` starts at field 3 (state).
    let field = |n: usize| -> u32 {
        after
            .split_whitespace()
            .nth(n - 3)
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("field {n} of {text}"))
    };
    (field(41), field(40))
}

/// `VmLck` of a process, in kB.
fn locked_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmLck")
}

/// Every thread of `pid` but the main one (the loop's), with its policy.
fn other_threads(pid: u32) -> Vec<(String, (u32, u32))> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != pid.to_string().as_str())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, sched(&e.path().join("stat")))
        })
        .collect()
}

/// Input: carpd `--realtime-priority 20` with an `up` hook that records its
/// own policy, and a second carpd without `realtime`. Output: the first's
/// main thread is SCHED_FIFO 20 with memory locked and says so in `carpctl
/// status`; its other threads and the hook are SCHED_OTHER; the second is
/// SCHED_OTHER with nothing locked.
#[test]
#[ignore = "needs root: network namespaces"]
fn realtime_runs_the_loop_under_sched_fifo_with_memory_locked() {
    let lab = Lab::new("rtsched", 2);
    let hook_out = lab.path("hook-sched");
    let hook = lab.path("up-hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\ncat /proc/$$/stat > {}.tmp && mv {0}.tmp {0}\n",
            hook_out.display()
        ),
    )
    .expect("write hook");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let words = |vip: &str, up: bool| {
        let w = Words::new("eth0", 4).advbase(1).pass("rt-secret").addr(vip);
        let w = if up {
            w.raw("up").raw(hook.to_str().expect("utf-8"))
        } else {
            w
        };
        w.build()
    };
    let mut args = vec!["--realtime-priority".to_string(), "20".to_string()];
    args.extend(words("192.0.2.90/24", true));
    let rt = lab.carpd(0, "rt", &args);
    let plain = lab.carpd(1, "plain", &words("198.51.100.90/24", false));
    wait_state(&rt, 4, "MASTER", Duration::from_secs(8));
    wait_state(&plain, 4, "MASTER", Duration::from_secs(8));

    let main = Path::new("/proc").join(rt.pid.to_string()).join("stat");
    assert_eq!(sched(&main), (SCHED_FIFO, 20), "the loop's thread");
    assert!(locked_kb(rt.pid) > 0, "memory locked");
    let threads = other_threads(rt.pid);
    assert!(
        threads.iter().all(|(_, s)| s.0 == SCHED_OTHER),
        "threads started by the loop are not real-time: {threads:?}"
    );
    let (hook_sched, _) = wait_for(
        "the up hook's record",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            std::fs::metadata(&hook_out)
                .is_ok()
                .then(|| sched(&hook_out))
        },
    );
    assert_eq!(hook_sched, (SCHED_OTHER, 0), "the hook is not real-time");
    let status = carpctl_ok(&rt, &["status"]);
    assert!(
        status.contains("realtime: SCHED_FIFO priority 20, memory locked"),
        "{status}"
    );

    let plain_main = Path::new("/proc").join(plain.pid.to_string()).join("stat");
    assert_eq!(sched(&plain_main), (SCHED_OTHER, 0));
    assert_eq!(locked_kb(plain.pid), 0);
    let status = carpctl_ok(&plain, &["status"]);
    assert!(!status.contains("realtime"), "{status}");
}
