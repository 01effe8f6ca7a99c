//! Connection-state sync through conntrackd (issue 13, first step): the
//! FTFW configuration carpd writes for a `syncdev`, and the client commands
//! run on each transition, in the order of conntrack-tools'
//! `doc/sync/primary-backup.sh`.
//!
//! On becoming MASTER, inside the pre-master gate and before any address
//! goes live: commit the external cache to the kernel (`-c`), flush the
//! caches (`-f`), resynchronise the internal cache with the kernel (`-R`)
//! and send a bulk update to the peer (`-B`). On becoming BACKUP: shorten
//! the kernel's conntrack timers (`-t`) and ask the peer for a resync (`-n`).
//! Each step must exit 0; the whole sequence has one deadline.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// The UDP port conntrackd syncs on (its documentation's default).
pub const SYNC_PORT: u16 = 3780;
/// The default pre-master gate deadline.
pub const DEFAULT_GATE_TIMEOUT: Duration = Duration::from_secs(2);

/// What carpd needs to write a conntrackd configuration for `syncdev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncLink {
    /// The dedicated sync interface (OpenBSD's `syncdev`).
    pub syncdev: String,
    /// This host's IPv4 address on it.
    pub local: Ipv4Addr,
    /// The peer for unicast UDP (`syncpeer`); multicast on `group` without one.
    pub peer: Option<Ipv4Addr>,
    /// The multicast group when there is no peer.
    pub group: Ipv4Addr,
    /// Where conntrackd's control socket and lock file go (carpd's state dir).
    pub run_dir: PathBuf,
    /// Addresses whose connections are not synchronised: the host's own and
    /// the shared ones (traffic to the firewall itself).
    pub ignore: Vec<IpAddr>,
}

impl SyncLink {
    /// The control socket `conntrackd -C` clients reach the daemon through.
    pub fn control_path(&self) -> PathBuf {
        self.run_dir.join("conntrackd.ctl")
    }

    /// The lock file conntrackd creates while it runs.
    pub fn lock_path(&self) -> PathBuf {
        self.run_dir.join("conntrackd.lock")
    }

    /// Render conntrackd.conf: FTFW mode (reliable, acknowledged), the
    /// external cache on (committed on takeover), over unicast UDP to the
    /// peer or multicast on the sync link.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Written by carpd for syncdev {}; edits are overwritten.",
            self.syncdev
        );
        out.push_str("Sync {\n    Mode FTFW {\n        DisableExternalCache Off\n");
        out.push_str("        CommitTimeout 1800\n        PurgeTimeout 5\n    }\n");
        match self.peer {
            Some(peer) => {
                out.push_str("    UDP {\n");
                let _ = writeln!(out, "        IPv4_address {}", self.local);
                let _ = writeln!(out, "        IPv4_Destination_Address {peer}");
            }
            None => {
                out.push_str("    Multicast {\n");
                let _ = writeln!(out, "        IPv4_address {}", self.group);
                let _ = writeln!(out, "        Group {SYNC_PORT}");
                let _ = writeln!(out, "        IPv4_interface {}", self.local);
            }
        }
        if self.peer.is_some() {
            let _ = writeln!(out, "        Port {SYNC_PORT}");
        }
        let _ = writeln!(out, "        Interface {}", self.syncdev);
        out.push_str("        SndSocketBuffer 1249280\n        RcvSocketBuffer 1249280\n");
        out.push_str("        Checksum on\n    }\n}\n");
        out.push_str("General {\n    HashSize 32768\n    HashLimit 131072\n");
        out.push_str("    LogFile off\n    Syslog on\n");
        let _ = writeln!(out, "    LockFile {}", self.lock_path().display());
        out.push_str("    UNIX {\n");
        let _ = writeln!(out, "        Path {}", self.control_path().display());
        out.push_str("    }\n");
        out.push_str("    NetlinkBufferSize 2097152\n    NetlinkBufferSizeMaxGrowth 8388608\n");
        out.push_str("    Filter From Userspace {\n");
        out.push_str("        Protocol Accept {\n            TCP\n            UDP\n            ICMP\n        }\n");
        out.push_str("        Address Ignore {\n            IPv4_address 127.0.0.1\n");
        out.push_str("            IPv6_address ::1\n");
        for a in &self.ignore {
            match a {
                IpAddr::V4(a) => _ = writeln!(out, "            IPv4_address {a}"),
                IpAddr::V6(a) => _ = writeln!(out, "            IPv6_address {a}"),
            }
        }
        out.push_str("        }\n    }\n}\n");
        out
    }
}

/// One conntrackd client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `-c`: commit the external cache to the kernel's table.
    Commit,
    /// `-f`: flush the internal and external caches.
    Flush,
    /// `-R`: resynchronise the internal cache with the kernel's table.
    Resync,
    /// `-B`: send a bulk update to the peer.
    BulkSend,
    /// `-t`: shorten the kernel's timers (zombie entries of the old role go).
    ShortenTimers,
    /// `-n`: ask the peer for a resync.
    RequestResync,
}

/// The steps on becoming MASTER, in `primary-backup.sh`'s order.
pub const MASTER_STEPS: [Step; 4] = [Step::Commit, Step::Flush, Step::Resync, Step::BulkSend];
/// The steps on becoming BACKUP.
pub const BACKUP_STEPS: [Step; 2] = [Step::ShortenTimers, Step::RequestResync];

impl Step {
    /// The command-line flag.
    pub fn flag(self) -> &'static str {
        match self {
            Step::Commit => "-c",
            Step::Flush => "-f",
            Step::Resync => "-R",
            Step::BulkSend => "-B",
            Step::ShortenTimers => "-t",
            Step::RequestResync => "-n",
        }
    }
}

/// Why a step sequence did not complete.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// The program could not be started.
    #[error("conntrackd {flag}: cannot start {program}: {reason}")]
    Spawn {
        /// The step's flag.
        flag: &'static str,
        /// The program.
        program: String,
        /// The error.
        reason: String,
    },
    /// The step exited with a failure.
    #[error("conntrackd {flag} failed ({status}): {stderr}")]
    Failed {
        /// The step's flag.
        flag: &'static str,
        /// The exit status as text.
        status: String,
        /// What it printed on stderr (first line).
        stderr: String,
    },
    /// The deadline passed while the step ran; it was killed.
    #[error("conntrackd {flag} did not finish within {deadline:?}")]
    TimedOut {
        /// The step's flag.
        flag: &'static str,
        /// The deadline of the whole sequence.
        deadline: Duration,
    },
}

/// The arguments of `step` against configuration `config`.
pub fn step_args(config: &Path, step: Step) -> Vec<OsString> {
    vec![
        "-C".into(),
        config.as_os_str().to_owned(),
        step.flag().into(),
    ]
}

/// Run `steps` one after the other with `program` (normally `conntrackd`),
/// all within `deadline`; stop at the first failure. Returns how long the
/// sequence took.
pub async fn run_steps(
    program: &Path,
    config: &Path,
    steps: &[Step],
    deadline: Duration,
) -> Result<Duration, StepError> {
    let start = tokio::time::Instant::now();
    let end = start + deadline;
    for &step in steps {
        let mut cmd = Command::new(program);
        cmd.args(step_args(config, step))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| StepError::Spawn {
            flag: step.flag(),
            program: program.display().to_string(),
            reason: e.to_string(),
        })?;
        // kill_on_drop ends a step that outlives the deadline.
        let output = tokio::time::timeout_at(end, child.wait_with_output())
            .await
            .map_err(|_| StepError::TimedOut {
                flag: step.flag(),
                deadline,
            })?
            .map_err(|e| StepError::Spawn {
                flag: step.flag(),
                program: program.display().to_string(),
                reason: e.to_string(),
            })?;
        if !output.status.success() {
            return Err(StepError::Failed {
                flag: step.flag(),
                status: output.status.to_string(),
                stderr: first_line(&output.stderr),
            });
        }
    }
    Ok(start.elapsed())
}

/// How long a `conntrackd -s` query may take before it is killed.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(1);

/// Entries in conntrackd's caches, from `conntrackd -s`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheCounts {
    /// Entries of the internal cache (this host's connections); `None`
    /// when it is disabled (`DisableInternalCache`).
    pub internal: Option<u64>,
    /// Entries of the external cache (the peer's connections, committed on
    /// takeover); `None` when it is disabled (`DisableExternalCache`).
    pub external: Option<u64>,
}

/// Parse the default statistics of `conntrackd -s`: the
/// `current active connections:` line of the `cache internal:` and
/// `cache external:` sections (blank-line separated, as conntrack-tools'
/// `cache_stats` prints them). `None` when neither is there.
pub fn parse_stats(text: &str) -> Option<CacheCounts> {
    let mut counts = CacheCounts::default();
    let mut section: Option<&mut Option<u64>> = None;
    for line in text.lines() {
        let line = line.trim_end();
        match line {
            "cache internal:" => section = Some(&mut counts.internal),
            "cache external:" => section = Some(&mut counts.external),
            "" => section = None,
            _ => {
                let value = line.strip_prefix("current active connections:");
                if let (Some(slot), Some(value)) = (section.as_deref_mut(), value) {
                    *slot = Some(value.trim().parse().ok()?);
                }
            }
        }
    }
    (counts != CacheCounts::default()).then_some(counts)
}

/// Why a `conntrackd -s` query gave no counts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsError {
    /// The program could not be started.
    #[error("conntrackd -s: cannot start {program}: {reason}")]
    Spawn {
        /// The program.
        program: String,
        /// The error.
        reason: String,
    },
    /// It exited with a failure (no daemon behind the control socket).
    #[error("conntrackd -s failed ({status}): {stderr}")]
    Failed {
        /// The exit status as text.
        status: String,
        /// What it printed on stderr (first line).
        stderr: String,
    },
    /// It did not answer within the timeout; it was killed.
    #[error("conntrackd -s did not answer within {0:?}")]
    TimedOut(Duration),
    /// It printed no cache counts.
    #[error("conntrackd -s printed no cache counts")]
    Unparsable,
}

/// Run `program -C config -s` within `timeout` and return its cache counts.
pub async fn query_stats(
    program: &Path,
    config: &Path,
    timeout: Duration,
) -> Result<CacheCounts, StatsError> {
    let spawn_error = |e: std::io::Error| StatsError::Spawn {
        program: program.display().to_string(),
        reason: e.to_string(),
    };
    let child = Command::new(program)
        .arg("-C")
        .arg(config)
        .arg("-s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| StatsError::TimedOut(timeout))?
        .map_err(spawn_error)?;
    if !output.status.success() {
        return Err(StatsError::Failed {
            status: output.status.to_string(),
            stderr: first_line(&output.stderr),
        });
    }
    parse_stats(&String::from_utf8_lossy(&output.stdout)).ok_or(StatsError::Unparsable)
}

/// The first line of `bytes`, at most 200 characters.
fn first_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn link(peer: Option<Ipv4Addr>) -> SyncLink {
        SyncLink {
            syncdev: "eth2".into(),
            local: Ipv4Addr::new(198, 18, 0, 1),
            peer,
            group: Ipv4Addr::new(225, 0, 0, 50),
            run_dir: "/var/lib/carpd".into(),
            ignore: vec![
                IpAddr::V4(Ipv4Addr::new(198, 51, 100, 50)),
                "2001:db8::50".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn unicast_and_multicast_configurations() {
        let unicast = link(Some(Ipv4Addr::new(198, 18, 0, 2))).render();
        for line in [
            "Mode FTFW {",
            "DisableExternalCache Off",
            "UDP {",
            "IPv4_address 198.18.0.1",
            "IPv4_Destination_Address 198.18.0.2",
            "Port 3780",
            "Interface eth2",
            "Path /var/lib/carpd/conntrackd.ctl",
            "LockFile /var/lib/carpd/conntrackd.lock",
            "IPv4_address 198.51.100.50",
            "IPv6_address 2001:db8::50",
        ] {
            assert!(unicast.contains(line), "{line:?} missing:\n{unicast}");
        }
        assert!(!unicast.contains("Multicast"));
        let multicast = link(None).render();
        for line in [
            "Multicast {",
            "IPv4_address 225.0.0.50",
            "Group 3780",
            "IPv4_interface 198.18.0.1",
        ] {
            assert!(multicast.contains(line), "{line:?} missing:\n{multicast}");
        }
        // Balanced braces, or conntrackd refuses the file.
        for text in [&unicast, &multicast] {
            assert_eq!(text.matches('{').count(), text.matches('}').count());
        }
    }

    #[test]
    fn steps_follow_primary_backup_sh() {
        let flags: Vec<_> = MASTER_STEPS.iter().map(|s| s.flag()).collect();
        assert_eq!(flags, ["-c", "-f", "-R", "-B"]);
        let flags: Vec<_> = BACKUP_STEPS.iter().map(|s| s.flag()).collect();
        assert_eq!(flags, ["-t", "-n"]);
        assert_eq!(
            step_args(Path::new("/x.conf"), Step::Commit),
            ["-C", "/x.conf", "-c"].map(OsString::from)
        );
    }

    /// A fake conntrackd: records its arguments, fails on `fail_on`, sleeps on `-B`.
    fn fake(dir: &Path, fail_on: &str, sleep_on_bulk: &str) -> PathBuf {
        let path = dir.join("conntrackd");
        let log = dir.join("calls");
        let script = format!(
            "#!/bin/sh\nprintf '%s\\n' \"$3\" >> {}\n[ \"$3\" = \"{fail_on}\" ] && {{ echo 'no such cache' >&2; exit 1; }}\n\
             [ \"$3\" = \"-B\" ] && sleep {sleep_on_bulk}\nexit 0\n",
            log.display()
        );
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn calls(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join("calls"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    #[tokio::test]
    async fn steps_run_in_order_and_stop_at_the_first_failure() {
        let dir = tempfile::tempdir().unwrap();
        let prog = fake(dir.path(), "none", "0");
        let conf = dir.path().join("c.conf");
        run_steps(&prog, &conf, &MASTER_STEPS, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(calls(dir.path()), ["-c", "-f", "-R", "-B"]);

        let dir = tempfile::tempdir().unwrap();
        let prog = fake(dir.path(), "-f", "0");
        let err = run_steps(&prog, &conf, &MASTER_STEPS, Duration::from_secs(30))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StepError::Failed { flag: "-f", stderr, .. } if stderr == "no such cache"),
            "{err}"
        );
        assert_eq!(
            calls(dir.path()),
            ["-c", "-f"],
            "nothing after the failed step"
        );
    }

    #[tokio::test]
    async fn a_hung_step_is_cut_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let prog = fake(dir.path(), "none", "30");
        let conf = dir.path().join("c.conf");
        let err = run_steps(&prog, &conf, &MASTER_STEPS, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            StepError::TimedOut {
                flag: "-B",
                deadline: Duration::from_millis(500)
            }
        );
    }

    #[tokio::test]
    async fn a_missing_program_is_a_clear_error() {
        let err = run_steps(
            Path::new("/nonexistent/conntrackd"),
            Path::new("/x.conf"),
            &BACKUP_STEPS,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("conntrackd -t: cannot start /nonexistent/conntrackd"),
            "{err}"
        );
    }

    /// `conntrackd -s` of Debian's conntrackd 1.4.7 (FTFW over UDP, external
    /// cache on), captured in a network namespace: 4 local, 6 peer entries.
    const STATS_CAPTURE: &str = include_str!("../tests/fixtures/conntrackd-stats.txt");

    #[test]
    fn stats_give_the_active_entries_of_both_caches() {
        assert_eq!(
            parse_stats(STATS_CAPTURE),
            Some(CacheCounts {
                internal: Some(4),
                external: Some(6)
            })
        );
    }

    #[test]
    fn stats_without_an_external_cache_give_the_internal_one() {
        // DisableExternalCache On: conntrackd prints `external inject:`,
        // which has no entry count.
        let text = STATS_CAPTURE.replace(
            "cache external:\ncurrent active connections:\t           6\n",
            "external inject:\n",
        );
        assert_ne!(text, STATS_CAPTURE);
        assert_eq!(
            parse_stats(&text),
            Some(CacheCounts {
                internal: Some(4),
                external: None
            })
        );
    }

    #[test]
    fn garbage_stats_give_none() {
        for text in [
            "",
            "\n\n",
            "can't connect: is conntrackd running? appropriate permissions?",
            "current active connections:\t 5\n",
            "cache internal:\ncurrent active connections:\t lots\n",
            "cache internal:\ncurrent active connections:\t -1\n",
            "cache external:\ncurrent active connections:\t 99999999999999999999999\n",
            "cache internal:\n\ncurrent active connections:\t 5\n",
            "cache internal:\ncurrent active connections:",
            "\u{0}\u{fffd}cache external:\u{7f}",
        ] {
            assert_eq!(parse_stats(text), None, "{text:?}");
        }
        // Every prefix of the capture parses or gives None, never panics.
        for end in 0..STATS_CAPTURE.len() {
            let _ = parse_stats(&STATS_CAPTURE[..end]);
        }
    }

    #[tokio::test]
    async fn stats_are_queried_with_dash_s() {
        let dir = tempfile::tempdir().unwrap();
        let capture = dir.path().join("capture");
        std::fs::write(&capture, STATS_CAPTURE).unwrap();
        let prog = dir.path().join("conntrackd");
        let script = format!(
            "#!/bin/sh\n[ \"$1 $3\" = \"-C -s\" ] || exit 2\nexec cat {}\n",
            capture.display()
        );
        std::fs::write(&prog, script).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.path().join("c.conf");
        let counts = query_stats(&prog, &conf, STATS_TIMEOUT).await.unwrap();
        assert_eq!((counts.internal, counts.external), (Some(4), Some(6)));
    }

    #[tokio::test]
    async fn a_failed_hung_or_silent_stats_query_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("c.conf");
        let prog = dir.path().join("conntrackd");
        type Check = fn(&StatsError) -> bool;
        let cases: [(&str, Check); 3] = [
            (
                "printf '%s\\n' \"can't connect\" >&2; exit 1",
                |e| matches!(e, StatsError::Failed { stderr, .. } if stderr == "can't connect"),
            ),
            ("exec sleep 30", |e| {
                *e == StatsError::TimedOut(Duration::from_millis(300))
            }),
            ("exit 0", |e| *e == StatsError::Unparsable),
        ];
        for (body, want) in cases {
            std::fs::write(&prog, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
            let start = std::time::Instant::now();
            let err = query_stats(&prog, &conf, Duration::from_millis(300))
                .await
                .unwrap_err();
            assert!(want(&err), "{body}: {err}");
            assert!(start.elapsed() < Duration::from_secs(5), "{body}");
        }
        let err = query_stats(Path::new("/nonexistent/conntrackd"), &conf, STATS_TIMEOUT)
            .await
            .unwrap_err();
        assert!(matches!(err, StatsError::Spawn { .. }), "{err}");
    }
}
