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
        let _ = writeln!(
            out,
            "    LockFile {}",
            self.run_dir.join("conntrackd.lock").display()
        );
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
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(StepError::Failed {
                flag: step.flag(),
                status: output.status.to_string(),
                stderr: stderr
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            });
        }
    }
    Ok(start.elapsed())
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
}
