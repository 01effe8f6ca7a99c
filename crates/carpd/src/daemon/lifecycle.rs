//! Reload, shutdown and the bow-out wait.
//!
//! A reload reads and parses the file off the loop (a blocking thread), so
//! a slow, huge or special file never stops the advertisements; the result
//! comes back into the loop's `select!` as a [`Loaded`] and only the newest
//! one is applied. A reload keeps every vhost whose specification is unchanged untouched (no
//! flap), reconfigures those realised in the same place, removes the rest
//! (bow-out first) and adds the new ones. Shutdown sends every bow-out
//! advertisement first, waits briefly for successors, and only then releases
//! the addresses and macvlans.

use std::collections::BTreeSet;
use std::time::Duration;

use carp_proto::{Action, CarpIfId, Node, NodeConfig, VhostId};
use tokio::sync::{mpsc, oneshot};

use super::Daemon;
use crate::carplog;
use crate::config::{ConfigFileError, ConfigSource, DaemonConfig};
use crate::control::types::Reply;
use crate::hooks::HookQueue;
use crate::log::{self, chain};
use crate::os::{Datagram, Os};

/// How long a bowed-out master keeps its addresses waiting for a successor.
const BOW_OUT_GRACE: Duration = Duration::from_millis(250);

/// A configuration file read off the loop, and who asked for it.
pub(super) struct Loaded {
    generation: u64,
    result: Result<DaemonConfig, ConfigFileError>,
    reply: Option<oneshot::Sender<Reply>>,
}

/// The reloads started, and where their results go.
pub(super) struct Reloads {
    tx: mpsc::UnboundedSender<Loaded>,
    started: u64,
}

impl Reloads {
    /// Reloads whose results are sent on `tx` (the loop receives them).
    pub(super) fn new(tx: mpsc::UnboundedSender<Loaded>) -> Reloads {
        Reloads { tx, started: 0 }
    }
}

impl<O: Os> Daemon<O> {
    /// Start reading the configuration file on a blocking thread; the loop
    /// carries on and applies it in [`Daemon::finish_reload`]. `reply` is the
    /// control client that asked (none for SIGHUP).
    pub(super) fn start_reload(&mut self, reply: Option<oneshot::Sender<Reply>>) {
        let ConfigSource::File(path) = self.config.source.clone() else {
            let msg = "started from the command line: nothing to reload";
            carplog!(Err, "reload failed: {msg}");
            if let Some(reply) = reply {
                let _ = reply.send(Reply::failed(msg));
            }
            return;
        };
        self.reloads.started += 1;
        let generation = self.reloads.started;
        let tx = self.reloads.tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = DaemonConfig::load(&path);
            let _ = tx.send(Loaded {
                generation,
                result,
                reply,
            });
        });
    }

    /// Apply a file read by [`Daemon::start_reload`], unless a later reload
    /// was started meanwhile (its file is the newer one); log the outcome
    /// and answer the client that asked.
    pub(super) async fn finish_reload(&mut self, loaded: Loaded) {
        let Loaded {
            generation,
            result,
            reply,
        } = loaded;
        let answer = if generation != self.reloads.started {
            let msg = "reload superseded by a later one, not applied";
            carplog!(Info, "{msg}");
            Reply::done(msg)
        } else {
            match result {
                Err(e) => Err(anyhow::Error::new(e)),
                Ok(new) => self.apply_config(new).await,
            }
            .map_or_else(
                |e| {
                    // Also when `carpctl reload` asked: the log keeps the record.
                    carplog!(
                        Err,
                        "reload failed, keeping the running configuration: {e:#}"
                    );
                    Reply::failed(format!("{e:#}"))
                },
                |msg| {
                    carplog!(Info, "{msg}");
                    Reply::done(msg)
                },
            )
        };
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
        // Vhosts may have come, gone or moved.
        self.will_changed();
        // The old configuration and the parse of the new one are freed.
        crate::os::release_free_heap();
    }

    /// Make the `accept off` drop table hold the addresses of `vhosts`'
    /// VRRP vhosts with `accept off` (see `os::accept`); nothing is written
    /// when that set did not change.
    pub(super) async fn set_accept_filter(
        &mut self,
        vhosts: Vec<&crate::config::VhostSpec>,
    ) -> Result<(), crate::os::OsError> {
        let mut want = crate::os::accept::AcceptFilter {
            table: self.accept_filter.table.clone(),
            ..Default::default()
        };
        for spec in vhosts.into_iter().filter(|s| s.vrrp.is_some() && !s.accept) {
            want.v4.extend(&spec.proto.ipv4);
            want.v6.extend(&spec.proto.ipv6);
        }
        if want == self.accept_filter {
            return Ok(());
        }
        self.os.set_accept_filter(&want).await?;
        carplog!(
            Info,
            "accept off: traffic to {} address(es) dropped while MASTER (nftables table inet {})",
            want.v4.len() + want.v6.len(),
            want.table
        );
        self.accept_filter = want;
        Ok(())
    }

    /// Put `realtime` into effect (or take it out with `None`), and say
    /// what could not be done. Nothing to do when it is off and never was.
    pub(super) fn set_realtime(&mut self, want: Option<u8>) {
        if want.is_none() && self.realtime == crate::os::realtime::Realtime::default() {
            return;
        }
        self.realtime = self.os.set_realtime(want);
        match (&self.realtime.problem, self.realtime.priority) {
            (Some(problem), _) => carplog!(Warning, "realtime: {problem}"),
            (None, Some(p)) => carplog!(
                Info,
                "realtime: the protocol loop runs under SCHED_FIFO priority {p}, memory locked"
            ),
            (None, None) => carplog!(Info, "realtime: off"),
        }
    }

    /// Bring the running state to what a fresh start with `new` would give.
    async fn apply_config(&mut self, mut new: DaemonConfig) -> anyhow::Result<String> {
        self.overrides.apply(&mut new);
        for w in new.warnings() {
            carplog!(Warning, "{w}");
        }
        // First, so that a failure changes nothing.
        self.set_accept_filter(new.vhosts.iter().collect())
            .await
            .map_err(|e| anyhow::anyhow!("accept off: {}", chain(&e)))?;
        let now = self.now();
        self.node.set_config(NodeConfig {
            preempt: new.preempt,
            ..self.node.config()
        });
        log::set_threshold(new.log_level);
        if new.realtime != self.config.realtime {
            self.set_realtime(new.realtime);
        }
        let mut kept = 0;
        let mut changed = 0;
        // Vhosts gone or realised differently are removed (bow-out first).
        let existing: Vec<VhostId> = self.vhosts.keys().copied().collect();
        for id in existing {
            let Some(r) = self.vhosts.get(&id) else {
                continue;
            };
            let same_place = new.vhosts.iter().find(|s| {
                s.carpdev == r.spec.carpdev
                    && s.proto.vhid == id.vhid
                    && s.lladdr == r.spec.lladdr
                    && s.nodes
                        .iter()
                        .map(|n| n.vhid)
                        .eq(r.spec.nodes.iter().map(|n| n.vhid))
                    && s.balancing() == r.spec.balancing()
            });
            match same_place {
                Some(spec) if *spec == r.spec => kept += 1,
                Some(spec) => {
                    let spec = spec.clone();
                    // A family the vhost did not have needs its socket before the
                    // core advertises or listens on it (as at start-up).
                    let need4 = !spec.proto.ipv4.is_empty();
                    let need6 = !spec.proto.ipv6.is_empty();
                    self.carpdev(&spec.carpdev, need4, need6).await?;
                    self.node
                        .reconfigure_interface(now, CarpIfId::of(id), self.core_config(&spec))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    self.drain().await;
                    if let Some(r) = self.vhosts.get_mut(&id) {
                        r.spec = spec;
                    }
                    self.refilter(id.link);
                    changed += 1;
                }
                None => {
                    self.node
                        .remove_interface(now, CarpIfId::of(id))
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    self.drain().await;
                    self.stop_balancing(id).await;
                    if let Some(index) = self.vhosts.remove(&id).and_then(|r| r.macvlan) {
                        self.delete_macvlan(index).await;
                    }
                    self.will_changed();
                    self.refilter(id.link);
                }
            }
        }
        let mut added = 0;
        for spec in &new.vhosts {
            let present = self
                .vhosts
                .iter()
                .any(|(id, r)| r.spec.carpdev == spec.carpdev && id.vhid == spec.proto.vhid);
            if !present {
                self.add_vhost(spec.clone()).await?;
                added += 1;
            }
        }
        let pending = needs_restart(&self.config, &new);
        // What is not applied stays as it runs, so the next reload names it again.
        new.http = self.config.http;
        new.http_token = self.config.http_token.take();
        new.control = self.config.control.take();
        new.state_dir = self.config.state_dir.take();
        new.sync = self.config.sync.clone();
        new.guard = self.config.guard;
        self.config = new;
        let mut msg = format!("reloaded: {kept} unchanged, {changed} changed, {added} added");
        if !pending.is_empty() {
            msg.push_str(&format!(
                "; not applied: {} changed (restart carpd to apply)",
                pending.join(", ")
            ));
            carplog!(Warning, "{msg}");
        }
        Ok(msg)
    }

    /// Bow out, wait for successors (when `rx` is given), then release
    /// addresses and macvlans and let the hooks finish.
    pub(super) async fn shutdown(&mut self, rx: Option<&mut mpsc::Receiver<Datagram>>) {
        self.freeze_will();
        let now = self.now();
        self.node.begin_shutdown(now);
        let mut rest = Vec::new();
        let mut bowed_out = BTreeSet::new();
        while let Some(action) = self.node.poll_action() {
            if let Action::Transmit { id, .. } = &action {
                bowed_out.insert(*id);
                self.perform(action).await;
            } else {
                rest.push(action);
            }
        }
        if let Some(rx) = rx {
            // A VRRP backup takes over only after Skew_Time (up to one
            // interval) on hearing priority 0: keep the addresses that long.
            let vrrp_wait = bowed_out
                .iter()
                .filter_map(|id| self.vhosts.get(id))
                .filter_map(|r| r.spec.vrrp)
                .map(|v| Duration::from_millis(u64::from(v.interval_cs) * 10))
                .max()
                .unwrap_or_default();
            await_successor(&self.node, rx, bowed_out, BOW_OUT_GRACE + vrrp_wait).await;
        }
        for action in rest {
            self.perform(action).await;
        }
        self.drain().await;
        let ids: Vec<VhostId> = self.vhosts.keys().copied().collect();
        for id in ids {
            self.stop_balancing(id).await;
        }
        let macvlans: Vec<u32> = self.vhosts.values().filter_map(|r| r.macvlan).collect();
        for index in macvlans {
            self.delete_macvlan(index).await;
        }
        // The addresses are gone: their drop rules can go too.
        if let Err(e) = self.set_accept_filter(Vec::new()).await {
            carplog!(Warning, "accept off: {}", chain(&e));
        }
        // Let queued down hooks finish (each is bounded by its own timeout).
        let queues: Vec<HookQueue> = std::mem::take(&mut self.vhosts)
            .into_values()
            .map(|r| r.hooks)
            .collect();
        for q in queues {
            q.finish().await;
        }
        self.retire_will().await;
    }
}

/// Return the settings that differ between `running` and `new` and that only
/// a restart applies: the listening sockets and the state directory.
fn needs_restart(running: &DaemonConfig, new: &DaemonConfig) -> Vec<&'static str> {
    let mut names = Vec::new();
    if running.http != new.http {
        names.push("http");
    }
    if running.http_token != new.http_token {
        names.push("http_token");
    }
    if running.control != new.control {
        names.push("control");
    }
    if running.state_dir != new.state_dir {
        names.push("state_dir");
    }
    if running.sync != new.sync {
        names.push("syncdev/conntrackd_config/sync_gate");
    }
    if running.guard != new.guard {
        names.push("guard");
    }
    names
}

/// Wait until every bowed-out vhost hears a successor's advertisement, or the grace ends.
///
/// DEVIATION: OpenBSD releases the addresses right after the bow-out. Keeping
/// them until the successor's first advertisement (which it sends as it
/// takes over, right after adding the addresses) closes the window in which
/// neither host answers, so a planned switchover loses no traffic.
async fn await_successor(
    node: &Node,
    rx: &mut mpsc::Receiver<Datagram>,
    mut waiting: BTreeSet<VhostId>,
    grace: Duration,
) {
    let deadline = tokio::time::Instant::now() + grace;
    while !waiting.is_empty() {
        let Ok(Some(d)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            return;
        };
        // Only an authentic advertisement (HMAC checked) counts as the successor's.
        if let Some(id) = node.successor_advert(d.link, d.src, d.dst, &d.bytes) {
            waiting.remove(&id);
        }
    }
}

#[cfg(test)]
mod test {
    use std::path::Path;

    use super::*;

    fn config(top: &str) -> DaemonConfig {
        let vhost = "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\naddresses = [\"192.0.2.50/24\"]\n";
        DaemonConfig::from_toml_str(&format!("{top}{vhost}"), Path::new("/etc/carpd.toml")).unwrap()
    }

    #[test]
    fn settings_only_a_restart_applies_are_named() {
        let old = config("");
        assert!(needs_restart(&old, &old).is_empty());
        let new = config(
            "http = \"127.0.0.1:8080\"\nhttp_token = \"t\"\ncontrol = \"/run/x.sock\"\nstate_dir = \"/var/lib/x\"\nguard = false\n",
        );
        assert_eq!(
            needs_restart(&old, &new),
            ["http", "http_token", "control", "state_dir", "guard"]
        );
    }
}
