//! Control verbs: status, stats, demote, state, enable, reload, maintenance.
//!
//! Each answer is built from the core's status and the realised vhosts; a
//! verb that changes protocol state does so through the `Node` API, and the
//! loop drains the resulting actions as after any input.

use std::net::IpAddr;
use std::time::Duration;

use carp_proto::{Instant, State, Vhid, VhostId, VhostStatus};

use super::{Daemon, vhost_of};
use crate::carplog;
use crate::control::types::{CarpIfView, Reply, Request, VhostView};
use crate::maintenance::MAINTENANCE_DEMOTE;
use crate::os::Os;

/// How long a failed authentication stays in the status (and its warning).
const BAD_AUTH_SHOWN_SECS: f64 = 60.0;

/// At most one log line per vhost this often about failed authentication.
const AUTH_LOG_EVERY_SECS: u64 = 60;

impl<O: Os> Daemon<O> {
    fn find(&self, vhid: u8, carpdev: Option<&str>) -> Result<Vec<VhostId>, String> {
        let Some(vhid) = Vhid::new(vhid) else {
            return Err("vhid must be 1..255".into());
        };
        let ids: Vec<VhostId> = self
            .vhosts
            .iter()
            .filter(|(id, r)| id.vhid == vhid && carpdev.is_none_or(|c| r.spec.carpdev == c))
            .map(|(id, _)| *id)
            .collect();
        match ids.len() {
            0 => Err(format!(
                "no vhid {vhid}{} is configured",
                carpdev.map(|c| format!(" on {c}")).unwrap_or_default()
            )),
            1 => Ok(ids),
            _ => Err(format!(
                "vhid {vhid} exists on several carpdevs; name one with --carpdev"
            )),
        }
    }

    /// Answer `request` on `reply`; a reload answers when its file is applied.
    pub(super) async fn handle_envelope(
        &mut self,
        request: Request,
        reply: tokio::sync::oneshot::Sender<Reply>,
    ) {
        if let Request::Reload = request {
            self.start_reload(Some(reply));
        } else {
            let answer = self.handle_request(request).await;
            let _ = reply.send(answer);
        }
    }

    pub(super) async fn handle_request(&mut self, request: Request) -> Reply {
        let now = self.now();
        match request {
            Request::Status => Reply {
                ok: true,
                vhosts: Some(self.node.status().iter().map(|s| self.view(s)).collect()),
                interfaces: Some(self.interface_views()),
                sync: self.sync_view(),
                groups: Some(
                    self.node
                        .groups()
                        .iter()
                        .map(|(g, v)| (g.clone(), *v))
                        .collect(),
                ),
                maintenance: Some(self.maintenance.is_on()),
                realtime: (self.config.realtime.is_some()
                    || self.realtime != crate::os::realtime::Realtime::default())
                .then(|| crate::control::types::RealtimeView {
                    requested: self.config.realtime,
                    priority: self.realtime.priority,
                    memory_locked: self.realtime.memory_locked,
                    problem: self.realtime.problem.clone(),
                }),
                ..Reply::default()
            },
            Request::Stats => Reply {
                ok: true,
                stats: Some(self.node.stats()),
                ..Reply::default()
            },
            Request::Watch => Reply::failed("watch is handled by the control server"),
            Request::Demote { group, by } => {
                let group = group.unwrap_or_else(|| carp_proto::node::DEFAULT_GROUP.to_string());
                if !self.node.groups().contains_key(&group) {
                    return Reply::failed(format!("no interface group {group}"));
                }
                let current = self.node.groups().get(&group).copied().unwrap_or(0);
                let wanted = i64::from(current) + i64::from(by);
                if !(0..=255).contains(&wanted) {
                    return Reply::failed(format!(
                        "group {group} is demoted {current}; by {by} it would be {wanted}, outside 0..=255"
                    ));
                }
                let value = self.node.demote_group(now, &group, by);
                Reply::done(format!("group {group} demoted to {value}"))
            }
            Request::State { vhid, carpdev, to } => {
                let to = match to.as_str() {
                    "master" => State::Master,
                    "backup" => State::Backup,
                    other => {
                        return Reply::failed(format!(
                            "state must be master or backup, not {other:?}"
                        ));
                    }
                };
                match self.find(vhid, carpdev.as_deref()) {
                    Err(e) => Reply::failed(e),
                    Ok(ids) => match self.node.force_state(now, ids[0], to) {
                        Ok(()) => Reply::done(format!("vhid {vhid} forced to {to}")),
                        Err(e) => Reply::failed(e.to_string()),
                    },
                }
            }
            Request::Enable {
                vhid,
                carpdev,
                enabled,
            } => {
                let ids = match vhid {
                    None => self.vhosts.keys().copied().collect(),
                    Some(v) => match self.find(v, carpdev.as_deref()) {
                        Ok(ids) => ids,
                        Err(e) => return Reply::failed(e),
                    },
                };
                for id in &ids {
                    if let Err(e) = self.node.set_enabled(now, *id, enabled) {
                        return Reply::failed(e.to_string());
                    }
                }
                let verb = if enabled { "enabled" } else { "disabled" };
                Reply::done(format!("{} vhost(s) {verb}", ids.len()))
            }
            // The loop answers reloads itself, off the loop (`handle_envelope`).
            Request::Reload => Reply::failed("reload is not answered here"),
            Request::Maintenance { on } => self.set_maintenance(now, on),
        }
    }

    /// Persist maintenance mode first, then apply its demotion.
    fn set_maintenance(&mut self, now: Instant, on: bool) -> Reply {
        let word = if on { "on" } else { "off" };
        match self.maintenance.set(on) {
            Err(e) => Reply::failed(format!(
                "cannot record maintenance mode in {}: {e}; nothing changed",
                self.maintenance.path().display()
            )),
            Ok(false) => Reply::done(format!("maintenance mode is already {word}")),
            Ok(true) => {
                let group = carp_proto::node::DEFAULT_GROUP;
                let by = if on {
                    MAINTENANCE_DEMOTE
                } else {
                    -MAINTENANCE_DEMOTE
                };
                let value = self.node.demote_group(now, group, by);
                carplog!(
                    Warning,
                    "maintenance mode {word}: group {group} demote {value}"
                );
                Reply::done(format!(
                    "maintenance mode {word}: group {group} demoted to {value}{}",
                    if on { "; MASTERs move to the peer" } else { "" }
                ))
            }
        }
    }

    /// Log, at most once a minute per vhost and at the default level, an
    /// advertisement from `src` that failed authentication.
    pub(super) fn note_bad_auth(&mut self, src: IpAddr, now: Instant) {
        let Some(s) = self
            .node
            .status()
            .into_iter()
            .find(|s| s.last_bad_auth == Some((src, now)))
        else {
            return;
        };
        let wall = tokio::time::Instant::now();
        if let Some(last) = self.auth_logged.get(&s.id)
            && wall.duration_since(*last) < Duration::from_secs(AUTH_LOG_EVERY_SECS)
        {
            return;
        }
        self.auth_logged.insert(s.id, wall);
        let also = if s.state == State::Master {
            "; both hosts are probably MASTER"
        } else {
            ""
        };
        carplog!(
            Crit,
            "{}: advertisement from {src} fails authentication: passphrase or address set differ{also} (logged once a minute; `carpctl config diff` compares)",
            self.label(s.id)
        );
    }

    /// Return the control protocol's view of every carp interface.
    pub(super) fn interface_views(&self) -> Vec<CarpIfView> {
        self.node
            .interfaces()
            .iter()
            .map(|i| {
                let r = self.vhosts.get(&vhost_of(i.id));
                let counts = self
                    .solicitations
                    .get(&vhost_of(i.id))
                    .copied()
                    .unwrap_or_default();
                CarpIfView {
                    carpdev: r.map_or_else(String::new, |r| r.spec.carpdev.clone()),
                    vhid: i.id.vhid.get(),
                    balancing: i.balancing.to_string(),
                    nodes: i
                        .nodes
                        .iter()
                        .map(|id| {
                            let state = self.node.state(*id).unwrap_or(State::Init);
                            (id.vhid.get(), state.into())
                        })
                        .collect(),
                    mask: i.mask,
                    served_slots: carp_proto::balance::served_slots(i.mask, i.nodes.len()),
                    live: i.live,
                    solicitations_answered: counts.answered,
                    solicitations_silent: counts.silent,
                    unpinned_requesters: counts.dropped_pins,
                }
            })
            .collect()
    }

    /// Return the control protocol's view of one vhost.
    fn view(&self, s: &VhostStatus) -> VhostView {
        let now = self.now();
        // A node of a carp interface: the interface is realised under its leader.
        let r = self.vhosts.get(&vhost_of(s.iface));
        let bad_auth = s
            .last_bad_auth
            .map(|(a, t)| (a, (now - t).as_secs_f64()))
            .filter(|(_, age)| *age <= BAD_AUTH_SHOWN_SECS);
        VhostView {
            carpdev: r.map_or_else(String::new, |r| r.spec.carpdev.clone()),
            vhid: s.id.vhid.get(),
            state: s.state.into(),
            since_secs: (now - s.since).as_secs_f64(),
            cause: s.cause.into(),
            advbase: s.advbase.0,
            advskew: s.advskew.0,
            effective_advskew: s.effective_advskew.0,
            demote: s.demote,
            lladdr: r.map_or_else(String::new, |r| r.spec.lladdr.to_string()),
            addresses: r.map_or_else(Vec::new, |r| {
                r.spec.addresses.iter().map(ToString::to_string).collect()
            }),
            last_master: s.last_master.map(|(a, _)| a.to_string()),
            last_master_age_secs: s.last_master.map(|(_, t)| (now - t).as_secs_f64()),
            stats: s.stats,
            address_failures: self
                .node
                .interfaces()
                .iter()
                .find(|i| i.id == s.iface)
                .map_or(0, |i| i.address_failures),
            bad_auth_from: bad_auth.map(|(a, _)| a.to_string()),
            bad_auth_age_secs: bad_auth.map(|(_, age)| age),
            key_fingerprint: r.map_or_else(String::new, |r| {
                carp_proto::auth::key_fingerprint(&r.spec.proto.passphrase)
            }),
            hooks: r.map(|r| r.hooks.counts()).unwrap_or_default(),
            peers: r.map_or_else(Vec::new, |r| {
                r.spec.peers.iter().map(ToString::to_string).collect()
            }),
            dual_path: r.is_some_and(|r| r.spec.dual_path),
            hmac: r.map_or_else(String::new, |r| match r.spec.proto.hmac {
                carp_proto::HmacContext::Openbsd => "openbsd".into(),
                carp_proto::HmacContext::Freebsd => "freebsd".into(),
            }),
            flavour: match s.flavour {
                carp_proto::Flavour::Carp => "carp".into(),
                carp_proto::Flavour::Vrrp => "vrrp".into(),
            },
            vrrp_priority: s.vrrp_priority,
            vrrp_master_priority: s.vrrp_master.map(|(p, _)| p),
            vrrp_master_interval_cs: s.vrrp_master.map(|(_, i)| i),
            master_down_secs: s.master_down.as_secs_f64(),
            master_down_formula: r.map_or_else(String::new, |r| {
                let formula = r.spec.proto.master_down;
                match s.flavour {
                    carp_proto::Flavour::Carp => formula.resolve(s.advbase).as_str().to_owned(),
                    carp_proto::Flavour::Vrrp => "vrrp".to_owned(),
                }
            }),
        }
    }
}
