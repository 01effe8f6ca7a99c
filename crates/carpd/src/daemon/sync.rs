//! State sync in the loop: the pre-master gate runs conntrackd's takeover
//! steps off the loop, becoming BACKUP runs the backup steps, and with a
//! `syncdev` carpd writes conntrackd's configuration and supervises it.
//!
//! One worker runs the step sequences in transition order, so the carp
//! interfaces of a host share one conntrackd and one gate. A poller asks
//! conntrackd for its cache counts (`-s`) every few seconds, off the loop,
//! for the status views.
//!
//! A gate round (`GateRound`) is the sync steps, then the interface's
//! `pre-master` hook, under the deadline the core set; the round's number
//! tells a late answer from an old round apart from the current one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use carp_proto::{CarpIfConfig, CarpIfId, Gate};
use tokio::sync::mpsc;

use super::Daemon;
use crate::carplog;
use crate::config::{SyncGate, VhostSpec};
use crate::hooks::{HookKind, HookOutcome, HookRun};
use crate::log::chain;
use crate::os::Os;
use crate::sync::{
    BACKUP_STEPS, CacheCounts, MASTER_STEPS, STATS_TIMEOUT, Step, StepError, SyncLink, query_stats,
    run_steps,
};

/// A sequence for the worker.
#[derive(Debug)]
pub(super) enum SyncJob {
    /// `iface` is about to go live (gate round `.1`): commit, flush, resync, bulk send.
    Master(CarpIfId, u64),
    /// `iface` became BACKUP: shorten timers, request a resync.
    Backup(CarpIfId),
}

/// What the worker reports back to the loop.
#[derive(Debug)]
pub(super) struct SyncDone {
    pub(super) iface: CarpIfId,
    pub(super) master: bool,
    /// The gate round of a takeover's steps.
    pub(super) round: u64,
    pub(super) result: Result<Duration, StepError>,
}

/// The running sync: the worker's queue and what it drives.
#[derive(Debug)]
pub(super) struct SyncState {
    pub(super) jobs: mpsc::UnboundedSender<SyncJob>,
    /// Takeovers whose steps failed or timed out.
    pub(super) failures: u64,
    /// How long the last takeover's steps took.
    pub(super) last_commit: Option<Duration>,
    /// When the last takeover's steps succeeded.
    pub(super) last_commit_at: Option<carp_proto::Instant>,
    /// What the supervisor and the stats poller last saw of conntrackd.
    pub(super) health: Arc<Mutex<SyncHealth>>,
}

/// conntrackd as last seen, shared with the tasks that watch it (a plain
/// mutex: each holder only copies a few fields in or out).
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SyncHealth {
    /// The supervised conntrackd is alive; for the operator's file, the
    /// last `-s` query succeeded.
    pub(super) running: bool,
    /// The cache counts of the last successful `-s` query.
    pub(super) caches: Option<CacheCounts>,
}

/// One carp interface waiting at the pre-master gate.
#[derive(Debug)]
pub(super) struct GateRound {
    round: u64,
    /// The core's deadline: a pre-master hook is killed there at the latest.
    deadline: tokio::time::Instant,
}

/// A pre-master hook of gate round `round` ended.
#[derive(Debug)]
pub(super) struct GateHookDone {
    iface: CarpIfId,
    round: u64,
    /// Whether the sync steps before it passed.
    sync_ok: bool,
    outcome: HookOutcome,
}

/// What a failed strict gate adds to group `carp`'s demote counter
/// (OpenBSD pfsync's demotion while its bulk update runs is 32).
pub(super) const STRICT_GATE_DEMOTE: i32 = 32;

/// How long a supervised conntrackd that died waits before it is restarted.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// The first `conntrackd -s` poll after start, and the period after it.
const STATS_FIRST: Duration = Duration::from_secs(1);
const STATS_PERIOD: Duration = Duration::from_secs(5);

impl<O: Os> Daemon<O> {
    /// The core's configuration of `spec`, with the pre-master gate when
    /// state sync is on or the interface has a `pre-master` hook.
    pub(super) fn core_config(&self, spec: &VhostSpec) -> CarpIfConfig {
        let mut config = spec.carp_if_config();
        let sync = &self.config.sync;
        if sync.enabled() || spec.hooks.pre_master.is_some() {
            config.gate = Some(Gate {
                deadline: sync.gate_timeout,
                strict: sync.gate == SyncGate::Strict,
            });
        }
        config
    }

    /// Start state sync if configured: write conntrackd's configuration for
    /// a syncdev and supervise conntrackd, then start the step worker.
    pub(super) async fn start_sync(
        &mut self,
        state_dir: &std::path::Path,
        done: mpsc::UnboundedSender<SyncDone>,
    ) -> anyhow::Result<()> {
        let sync = self.config.sync.clone();
        if !sync.enabled() {
            return Ok(());
        }
        let program = sync.program.clone();
        let health = Arc::new(Mutex::new(SyncHealth::default()));
        let conf: PathBuf = match (&sync.conntrackd_config, &sync.syncdev) {
            (Some(path), _) => path.clone(),
            (None, Some(dev)) => {
                let link = self.sync_link(dev, sync.syncpeer, state_dir).await?;
                let path = state_dir.join("conntrackd.conf");
                std::fs::write(&path, link.render())
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                tokio::spawn(supervise(
                    program.clone(),
                    path.clone(),
                    link,
                    Arc::downgrade(&health),
                ));
                carplog!(Info, "state sync: conntrackd on {dev} ({})", path.display());
                path
            }
            (None, None) => return Ok(()),
        };
        let supervised = sync.conntrackd_config.is_none();
        tokio::spawn(poll_stats(
            program.clone(),
            conf.clone(),
            supervised,
            Arc::downgrade(&health),
        ));
        let (jobs, mut queue) = mpsc::unbounded_channel::<SyncJob>();
        let deadline = sync.gate_timeout;
        tokio::spawn(async move {
            while let Some(job) = queue.recv().await {
                let (iface, master, round, steps): (_, _, _, &[Step]) = match job {
                    SyncJob::Master(i, round) => (i, true, round, &MASTER_STEPS),
                    SyncJob::Backup(i) => (i, false, 0, &BACKUP_STEPS),
                };
                let result = run_steps(&program, &conf, steps, deadline).await;
                if done
                    .send(SyncDone {
                        iface,
                        master,
                        round,
                        result,
                    })
                    .is_err()
                {
                    return;
                }
            }
        });
        self.sync = Some(SyncState {
            jobs,
            failures: 0,
            last_commit: None,
            last_commit_at: None,
            health,
        });
        Ok(())
    }

    async fn sync_link(
        &self,
        dev: &str,
        peer: Option<std::net::Ipv4Addr>,
        state_dir: &std::path::Path,
    ) -> anyhow::Result<SyncLink> {
        let info = self
            .os
            .link_by_name(dev)
            .await
            .map_err(|e| anyhow::anyhow!("syncdev {dev}: {}", chain(&e)))?;
        let addrs = self.os.addresses(info.index).await.unwrap_or_default();
        let local = addrs
            .iter()
            .find_map(|(a, _)| match a {
                std::net::IpAddr::V4(v4) => Some(*v4),
                std::net::IpAddr::V6(_) => None,
            })
            .ok_or_else(|| anyhow::anyhow!("syncdev {dev} has no IPv4 address to sync from"))?;
        // Connections to the routers themselves are each router's own: the
        // shared addresses and the sync link's are not synchronised.
        let ignore = self
            .config
            .vhosts
            .iter()
            .flat_map(|v| v.addresses.iter().map(|a| a.addr))
            .chain(addrs.iter().map(|(a, _)| *a))
            .collect();
        Ok(SyncLink {
            syncdev: dev.to_string(),
            local,
            peer,
            group: std::net::Ipv4Addr::new(225, 0, 0, 50),
            run_dir: state_dir.to_path_buf(),
            ignore,
        })
    }

    /// The status view of state sync, when it is on.
    pub(super) fn sync_view(&self) -> Option<crate::control::types::SyncView> {
        let s = self.sync.as_ref()?;
        let c = &self.config.sync;
        let through = match (&c.syncdev, &c.conntrackd_config) {
            (Some(dev), _) => format!("syncdev {dev}"),
            (None, Some(file)) => format!("conntrackd_config {}", file.display()),
            (None, None) => String::new(),
        };
        let health = s.health.lock().map(|h| *h).unwrap_or_default();
        let caches = health.caches.unwrap_or_default();
        let now = self.now();
        Some(crate::control::types::SyncView {
            through,
            gate: match c.gate {
                SyncGate::Open => "open".into(),
                SyncGate::Strict => "strict".into(),
            },
            failures: s.failures,
            last_commit_secs: s.last_commit.map(|d| d.as_secs_f64()),
            running: health.running,
            internal_entries: caches.internal,
            external_entries: caches.external,
            last_commit_age_secs: s.last_commit_at.map(|t| (now - t).as_secs_f64()),
        })
    }

    /// `PrepareMaster` for `iface`: a new gate round, which queues the
    /// takeover steps, or goes on to the pre-master hook without state sync.
    pub(super) fn prepare_master(&mut self, iface: CarpIfId, deadline: tokio::time::Instant) {
        self.gate_rounds += 1;
        let round = self.gate_rounds;
        self.gates.insert(iface, GateRound { round, deadline });
        match &self.sync {
            Some(s) if s.jobs.send(SyncJob::Master(iface, round)).is_ok() => {}
            _ => self.pre_master_hook(iface, round, true),
        }
    }

    /// The second part of a gate round: queue the interface's pre-master
    /// hook (behind its earlier hooks), or open the gate without one.
    fn pre_master_hook(&mut self, iface: CarpIfId, round: u64, sync_ok: bool) {
        let owner = super::vhost_of(iface);
        // The round is over (its deadline passed, or the takeover was
        // called off and another began): nothing more to run for it.
        let Some(deadline) = self
            .gates
            .get(&iface)
            .filter(|g| g.round == round)
            .map(|g| g.deadline)
        else {
            return;
        };
        let deadline = Some(deadline);
        let program = self
            .vhosts
            .get(&owner)
            .and_then(|r| r.spec.hooks.pre_master.clone());
        let (Some(r), Some(program)) = (self.vhosts.get(&owner), program) else {
            self.finish_gate_round(iface, round, sync_ok);
            return;
        };
        let (report, outcome) = tokio::sync::oneshot::channel();
        let run = HookRun {
            kind: HookKind::PreMaster,
            program,
            vhid: iface.vhid.get(),
            sequence: r.transitions + 1,
            state: "MASTER".into(),
            from: "BACKUP".into(),
            cause: "pre-master gate".into(),
            carpdev: r.spec.carpdev.clone(),
            interface: r.addr_ifname.clone(),
            addresses: r.spec.addresses.iter().map(ToString::to_string).collect(),
            timeout: r.spec.hooks.timeout,
            deadline,
            report: Some(report),
        };
        self.deferred_hooks.push((owner, run));
        let to_loop = self.gate_hook_tx.clone();
        tokio::spawn(async move {
            let outcome = outcome.await.unwrap_or(HookOutcome::NotStarted);
            let _ = to_loop.send(GateHookDone {
                iface,
                round,
                sync_ok,
                outcome,
            });
        });
    }

    /// A pre-master hook ended: its exit status is the gate's last step.
    pub(super) fn gate_hook_done(&mut self, done: GateHookDone) {
        if !done.outcome.ok()
            && self
                .gates
                .get(&done.iface)
                .is_some_and(|g| g.round == done.round)
        {
            let label = self.label(super::vhost_of(done.iface));
            let next = if self.config.sync.gate == SyncGate::Strict {
                "staying BACKUP (sync_gate strict)"
            } else {
                "going live anyway (sync_gate open)"
            };
            carplog!(Err, "{label}: pre-master hook {:?}; {next}", done.outcome);
        }
        self.finish_gate_round(done.iface, done.round, done.sync_ok && done.outcome.ok());
    }

    /// Open (or fail) the gate of `iface` if `round` is still its round.
    ///
    /// A strict gate that fails also demotes group `carp` by
    /// [`STRICT_GATE_DEMOTE`], as OpenBSD's pfsync demotes it while its bulk
    /// update is not done: a peer whose state is good takes the vhids, and
    /// this host advertises that it should not. The next gate that passes
    /// takes the demotion back.
    fn finish_gate_round(&mut self, iface: CarpIfId, round: u64, ok: bool) {
        if self.gates.get(&iface).is_none_or(|g| g.round != round) {
            return;
        }
        self.gates.remove(&iface);
        let now = self.now();
        self.node.handle_prepared(now, iface, ok);
        let strict = self.config.sync.gate == SyncGate::Strict;
        let group = carp_proto::node::DEFAULT_GROUP;
        if !ok && strict && !self.gate_demoted {
            self.gate_demoted = true;
            self.node.demote_group(now, group, STRICT_GATE_DEMOTE);
        } else if ok && self.gate_demoted {
            self.gate_demoted = false;
            self.node.demote_group(now, group, -STRICT_GATE_DEMOTE);
        }
    }

    /// `iface` became BACKUP: queue the backup steps.
    pub(super) fn sync_backup(&mut self, iface: CarpIfId) {
        if let Some(s) = &self.sync {
            let _ = s.jobs.send(SyncJob::Backup(iface));
        }
    }

    /// A step sequence ended: a takeover goes on (or, strict and failed, not).
    pub(super) fn sync_done(&mut self, done: SyncDone) {
        let label = self.label(super::vhost_of(done.iface));
        let ok = done.result.is_ok();
        match (&done.result, done.master) {
            (Ok(took), true) => {
                carplog!(Info, "{label}: state sync committed in {took:?}");
                let now = self.now();
                if let Some(s) = &mut self.sync {
                    s.last_commit = Some(*took);
                    s.last_commit_at = Some(now);
                }
            }
            (Ok(_), false) => carplog!(Info, "{label}: state sync: backup steps done"),
            (Err(e), true) => {
                if let Some(s) = &mut self.sync {
                    s.failures += 1;
                }
                let next = if self.config.sync.gate == SyncGate::Strict {
                    "staying BACKUP (sync_gate strict)"
                } else {
                    "going live anyway (sync_gate open)"
                };
                carplog!(
                    Err,
                    "{label}: state sync before takeover failed: {e}; {next}"
                );
            }
            (Err(e), false) => carplog!(Warning, "{label}: state sync backup steps: {e}"),
        }
        if !done.master {
            return;
        }
        let strict = self.config.sync.gate == SyncGate::Strict;
        if ok || !strict {
            self.pre_master_hook(done.iface, done.round, ok);
        } else {
            self.finish_gate_round(done.iface, done.round, false);
        }
    }
}

/// Run `conntrackd -C conf` in the foreground and start it again whenever it
/// exits; it dies with carpd (kill on drop when the runtime ends, and
/// `PR_SET_PDEATHSIG` when carpd is killed outright). Whether it is alive
/// goes into `health`.
async fn supervise(
    program: PathBuf,
    conf: PathBuf,
    link: SyncLink,
    health: Weak<Mutex<SyncHealth>>,
) {
    let set_running = |running: bool| {
        if let Some(Ok(mut h)) = health.upgrade().as_deref().map(Mutex::lock) {
            h.running = running;
        }
    };
    loop {
        clear_stale_lock(&link).await;
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("-C")
            .arg(&conf)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true);
        crate::os::die_with_parent(&mut cmd);
        match cmd.spawn() {
            Ok(mut child) => {
                set_running(true);
                let status = child.wait().await;
                set_running(false);
                match status {
                    Ok(status) => carplog!(Err, "conntrackd exited ({status}); restarting"),
                    Err(e) => carplog!(Err, "conntrackd: {e}; restarting"),
                }
            }
            Err(e) => carplog!(Err, "cannot start {}: {e}", program.display()),
        }
        tokio::time::sleep(RESTART_DELAY).await;
    }
}

/// Remove the lock file of carpd's own conntrackd configuration when no
/// conntrackd holds it, so that one that crashed does not keep the next
/// from starting.
///
/// conntrackd (1.4.7, src/main.c) takes its lock by creating the file with
/// `O_CREAT | O_EXCL`, closes it at once and unlinks it on a clean exit: no
/// flock and no pid inside, so the file alone cannot tell a live holder from
/// a crashed one. A live conntrackd does answer on its control socket
/// (`UNIX { Path }`, bound right after the lock is taken), and a crashed
/// one leaves a socket that refuses connections. So the lock is removed
/// only when connecting to that socket fails (a connect that hangs counts
/// as held). Only carpd starts conntrackd with this file, one at a time,
/// and only after the previous one exited.
async fn clear_stale_lock(link: &SyncLink) {
    let lock = link.lock_path();
    if !lock.exists() {
        return;
    }
    let control = link.control_path();
    let connect = tokio::net::UnixStream::connect(&control);
    if !matches!(
        tokio::time::timeout(STATS_TIMEOUT, connect).await,
        Ok(Err(_))
    ) {
        carplog!(
            Warning,
            "conntrackd lock {} is held: a conntrackd answers on {}",
            lock.display(),
            control.display()
        );
        return;
    }
    match std::fs::remove_file(&lock) {
        Ok(()) => carplog!(
            Notice,
            "removed stale conntrackd lock {} (no conntrackd answers on {})",
            lock.display(),
            control.display()
        ),
        Err(e) => carplog!(
            Err,
            "cannot remove stale conntrackd lock {}: {e}",
            lock.display()
        ),
    }
}

/// Ask conntrackd for its cache counts soon after start and every
/// [`STATS_PERIOD`] after, into `health`, until the sync state is gone. For
/// the operator's file (`supervised` false) a query's success is also what
/// "running" means.
async fn poll_stats(
    program: PathBuf,
    conf: PathBuf,
    supervised: bool,
    health: Weak<Mutex<SyncHealth>>,
) {
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + STATS_FIRST, STATS_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let result = query_stats(&program, &conf, STATS_TIMEOUT).await;
        let Some(health) = health.upgrade() else {
            return;
        };
        if let Err(e) = &result {
            // Logged once per run of failures, at debug level: a stopped
            // conntrackd is already reported by the supervisor or the steps.
            if !failing {
                carplog!(Debug, "state sync: {e}");
            }
        }
        failing = result.is_err();
        let Ok(mut h) = health.lock() else {
            return;
        };
        h.caches = result.as_ref().ok().copied();
        if !supervised {
            h.running = result.is_ok();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(dir: &std::path::Path) -> SyncLink {
        SyncLink {
            syncdev: "eth2".into(),
            local: std::net::Ipv4Addr::new(198, 18, 0, 1),
            peer: None,
            group: std::net::Ipv4Addr::new(225, 0, 0, 50),
            run_dir: dir.to_path_buf(),
            ignore: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_lock_is_kept_while_a_conntrackd_answers_on_the_control_socket() {
        let dir = tempfile::tempdir().unwrap();
        let link = link(dir.path());
        std::fs::write(link.lock_path(), "").unwrap();
        let listener = tokio::net::UnixListener::bind(link.control_path()).unwrap();
        clear_stale_lock(&link).await;
        assert!(
            link.lock_path().exists(),
            "removed a live conntrackd's lock"
        );
        // A crashed conntrackd leaves the socket file, which refuses.
        drop(listener);
        assert!(link.control_path().exists());
        clear_stale_lock(&link).await;
        assert!(!link.lock_path().exists(), "kept a stale lock");
        clear_stale_lock(&link).await;
    }
}
