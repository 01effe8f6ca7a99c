//! Requests and replies of the control socket, shared by `carpd` and `carpctl`.
//!
//! One JSON object per line in each direction. Every reply carries `ok`; a
//! failed request has `ok: false` and an `error` sentence.

use std::fmt;

use serde::{Deserialize, Serialize};

use carp_proto::Stats;

/// A request from `carpctl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Every vhost's state.
    Status,
    /// Host-wide counters.
    Stats,
    /// Stream state changes until the client goes away.
    Watch,
    /// Add `by` to the demote counter of `group` (default group `carp`).
    Demote {
        /// Interface group; `None` means `carp` (every vhost).
        group: Option<String>,
        /// Amount to add (negative to undemote).
        by: i32,
    },
    /// Force a vhost's state.
    State {
        /// The vhid.
        vhid: u8,
        /// The carpdev, needed only if the vhid exists on several.
        carpdev: Option<String>,
        /// `master` or `backup`.
        to: String,
    },
    /// Disable (`false`) or re-enable (`true`) one vhost, or all when `vhid` is `None`.
    Enable {
        /// The vhid, or all.
        vhid: Option<u8>,
        /// The carpdev, needed only if the vhid exists on several.
        carpdev: Option<String>,
        /// Enable or disable.
        enabled: bool,
    },
    /// Re-read the configuration file (as SIGHUP).
    Reload,
    /// Turn maintenance mode on (demote group `carp` by 128, remembered across
    /// restarts) or off.
    Maintenance {
        /// On or off.
        on: bool,
    },
}

/// The state of one vhost as shown by `carpctl status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhostView {
    /// Parent interface.
    pub carpdev: String,
    /// vhid.
    pub vhid: u8,
    /// INIT, BACKUP or MASTER.
    pub state: VhostState,
    /// Seconds since the state was entered.
    pub since_secs: f64,
    /// Why the state was entered.
    pub cause: VhostCause,
    /// Configured advbase.
    pub advbase: u8,
    /// Configured advskew.
    pub advskew: u8,
    /// advskew actually advertised (FreeBSD-style demotion applied).
    pub effective_advskew: u8,
    /// Demote byte advertised.
    pub demote: u8,
    /// `virtual` or `real`.
    pub lladdr: String,
    /// The virtual addresses with prefix lengths.
    pub addresses: Vec<String>,
    /// Source address of the last accepted advertisement from a peer.
    pub last_master: Option<String>,
    /// Seconds since that advertisement.
    pub last_master_age_secs: Option<f64>,
    /// This vhost's counters.
    pub stats: Stats,
    /// Address adds of its carp interface that failed (each is retried while MASTER).
    #[serde(default)]
    pub address_failures: u64,
    /// Source of the last advertisement that failed authentication, while
    /// that was within the last minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_auth_from: Option<String>,
    /// Seconds since that advertisement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bad_auth_age_secs: Option<f64>,
    /// Truncated HMAC-SHA256 of the passphrase under a fixed label, to compare
    /// with a peer's (`carpctl config diff`); never the key itself.
    #[serde(default)]
    pub key_fingerprint: String,
    /// The hook runs of its carp interface.
    #[serde(default)]
    pub hooks: HookCounts,
    /// Unicast peers advertised to instead of the group (none: multicast).
    #[serde(default)]
    pub peers: Vec<String>,
    /// With peers, advertised to the group too.
    #[serde(default)]
    pub dual_path: bool,
    /// The HMAC context it signs with (`openbsd`, `freebsd`).
    #[serde(default)]
    pub hmac: String,
    /// `carp` or `vrrp` (carpver 3).
    #[serde(default)]
    pub flavour: String,
    /// VRRP: the priority advertised (group demotion taken off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_priority: Option<u8>,
    /// VRRP: the master's priority last heard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_master_priority: Option<u8>,
    /// VRRP: the master's advertisement interval learned, in centiseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_master_interval_cs: Option<u16>,
    /// How long it waits for a silent master as BACKUP, in seconds.
    #[serde(default)]
    pub master_down_secs: f64,
    /// The master-down formula configured (`auto`, `openbsd`, `freebsd`).
    #[serde(default)]
    pub master_down_formula: String,
}

/// What the hook runs of one carp interface came to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HookCounts {
    /// Runs ended (any outcome).
    pub runs: u64,
    /// Runs that exited non-zero, died of a signal or could not start.
    pub failed: u64,
    /// Runs killed with their process group at their deadline.
    pub killed: u64,
    /// The last run's hook (`pre-master`, `master`, `backup`, `fault`, `up`, `down`).
    pub last_hook: Option<String>,
    /// Its exit code (`None`: killed, signalled or not started).
    pub last_exit: Option<i32>,
    /// How long it ran.
    pub last_secs: Option<f64>,
}

/// One carp interface (OpenBSD `carp_softc`) as shown by `carpctl status`:
/// its nodes, the load-share mask and this host's share of the hash slots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CarpIfView {
    /// Parent interface.
    pub carpdev: String,
    /// The leader's vhid, which names the interface.
    pub vhid: u8,
    /// `none`, `ip`, `ip-stealth`, `ip-unicast` or `arp` (the mode that runs).
    pub balancing: String,
    /// The nodes in vhid order with their state here.
    pub nodes: Vec<(u8, VhostState)>,
    /// Bit i set when node i is MASTER here.
    pub mask: u32,
    /// How many of the `nodes.len()` hash slots this host serves.
    pub served_slots: usize,
    /// The addresses are configured here.
    pub live: bool,
    /// ARP requests / NS for its addresses answered by this host (balancing).
    #[serde(default)]
    pub solicitations_answered: u64,
    /// Those left to another host (balancing).
    #[serde(default)]
    pub solicitations_silent: u64,
    /// Requesters not pinned because the table was full (the kernel then
    /// resolves them itself and may draw their traffic here).
    #[serde(default)]
    pub unpinned_requesters: u64,
}

/// Connection-state sync as shown by `carpctl status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncView {
    /// `syncdev IF` (carpd runs conntrackd) or the operator's conntrackd file.
    pub through: String,
    /// `open` or `strict`.
    pub gate: String,
    /// Takeovers whose sync steps failed or timed out.
    pub failures: u64,
    /// Seconds the last takeover's commit, flush, resync and bulk send took.
    pub last_commit_secs: Option<f64>,
    /// conntrackd runs: the supervised one is alive, or (the operator's
    /// file) it answered the last `conntrackd -s`.
    #[serde(default)]
    pub running: bool,
    /// Entries in conntrackd's internal cache (this host's connections), as
    /// of the last `conntrackd -s`.
    #[serde(default)]
    pub internal_entries: Option<u64>,
    /// Entries in its external cache (the peer's, committed on takeover).
    #[serde(default)]
    pub external_entries: Option<u64>,
    /// Seconds since the last takeover's steps succeeded.
    #[serde(default)]
    pub last_commit_age_secs: Option<f64>,
}

/// A state change as streamed by `watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Parent interface.
    pub carpdev: String,
    /// vhid.
    pub vhid: u8,
    /// Previous state.
    pub from: VhostState,
    /// New state.
    pub to: VhostState,
    /// Why.
    pub cause: VhostCause,
    /// Seconds since the daemon started.
    pub at_secs: f64,
}

/// Define a wire enum whose JSON and `Display` are fixed texts, mapped from a
/// `carp_proto` enum. The texts are the control protocol: never change one.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident from $core:ty { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Return the text sent on the control socket.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl From<$core> for $name {
            fn from(v: $core) -> $name {
                type Core = $core;
                match v {
                    $(Core::$variant => $name::$variant,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, so width and alignment work as they do for strings.
                f.pad(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

wire_enum! {
    /// A vhost's state as the control protocol spells it.
    VhostState from carp_proto::State {
        /// Not running.
        Init = "INIT",
        /// Listening for the master.
        Backup = "BACKUP",
        /// Holding the addresses.
        Master = "MASTER",
    }
}

wire_enum! {
    /// Why a state was entered, as the control protocol spells it.
    VhostCause from carp_proto::Cause {
        /// Preconditions met.
        Init = "initialization complete",
        /// A master-down timer expired.
        MasterDown = "master timed out",
        /// Preempt on and we advertise more often.
        Preempted = "preempting a slower master",
        /// The master is more demoted.
        HigherDemote = "master is more demoted",
        /// The master advertises slower than 3x our advbase.
        SlowMaster = "master will time out",
        /// The master sent a bow-out advertisement.
        BowOut = "master bowed out",
        /// A better master is present.
        Superseded = "more frequent advertisement received",
        /// A less demoted master is present.
        LowerDemote = "less demoted master present",
        /// The carpdev went down.
        LinkDown = "hardware interface down",
        /// The carpdev came up.
        LinkUp = "hardware interface up",
        /// The interface cannot hold its addresses.
        AddressFault = "cannot hold the addresses",
        /// The interface can hold its addresses again.
        AddressRepaired = "addresses can be held again",
        /// Forced by the operator.
        Forced = "user requested",
        /// Disabled by the operator.
        Disabled = "disabled",
        /// The daemon is shutting down.
        Shutdown = "shutting down",
        /// Removed or reconfigured incompatibly.
        Reconfigured = "reconfigured",
        /// A peer with another passphrase or address set is probably MASTER too.
        AuthFailing = "master's advertisements fail authentication",
    }
}

/// What `realtime` put in effect.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RealtimeView {
    /// The priority asked for; `None`: off.
    pub requested: Option<u8>,
    /// The `SCHED_FIFO` priority the protocol loop runs at; `None`: `SCHED_OTHER`.
    pub priority: Option<u8>,
    /// Whether the daemon's memory is locked.
    pub memory_locked: bool,
    /// Why something asked for is not in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// A reply line.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The reason it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A short human-readable result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhosts: Option<Vec<VhostView>>,
    /// For `status`: connection-state sync, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncView>,
    /// For `status`: every carp interface, with its nodes and mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interfaces: Option<Vec<CarpIfView>>,
    /// For `status`: the demote counter of every interface group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<(String, u8)>>,
    /// For `status`: whether maintenance mode is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<bool>,
    /// For `status`: `realtime`, when configured or still in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realtime: Option<RealtimeView>,
    /// For `stats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
    /// For `watch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transition: Option<Transition>,
}

impl Reply {
    /// Return a success reply with a message.
    pub fn done(message: impl Into<String>) -> Reply {
        Reply {
            ok: true,
            message: Some(message.into()),
            ..Reply::default()
        }
    }

    /// Return a failure reply.
    pub fn failed(error: impl Into<String>) -> Reply {
        Reply {
            ok: false,
            error: Some(error.into()),
            ..Reply::default()
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        let reqs = [
            Request::Status,
            Request::Demote {
                group: Some("lan".into()),
                by: 1,
            },
            Request::State {
                vhid: 1,
                carpdev: None,
                to: "master".into(),
            },
            Request::Maintenance { on: true },
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        }
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status
        );
    }

    /// The JSON texts are the ones `carp_proto`'s `Display` gives, which is
    /// what the control protocol carried when these fields were strings.
    #[test]
    fn states_and_causes_keep_their_wire_text() {
        use carp_proto::{Cause, State};
        for s in [State::Init, State::Backup, State::Master] {
            let json = serde_json::to_string(&VhostState::from(s)).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(
                serde_json::from_str::<VhostState>(&json).unwrap(),
                VhostState::from(s)
            );
        }
        let causes = [
            Cause::Init,
            Cause::MasterDown,
            Cause::Preempted,
            Cause::HigherDemote,
            Cause::SlowMaster,
            Cause::BowOut,
            Cause::Superseded,
            Cause::LowerDemote,
            Cause::LinkDown,
            Cause::LinkUp,
            Cause::AddressFault,
            Cause::AddressRepaired,
            Cause::Forced,
            Cause::Disabled,
            Cause::Shutdown,
            Cause::Reconfigured,
            Cause::AuthFailing,
        ];
        for c in causes {
            let json = serde_json::to_string(&VhostCause::from(c)).unwrap();
            assert_eq!(json, format!("\"{c}\""));
            assert_eq!(
                serde_json::from_str::<VhostCause>(&json).unwrap(),
                VhostCause::from(c)
            );
        }
        assert_eq!(format!("[{:<8}]", VhostState::Master), "[MASTER  ]");
        assert_eq!(VhostCause::MasterDown, "master timed out");
    }

    #[test]
    fn unknown_commands_and_fields_are_errors() {
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"explode"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"demote","by":1,"x":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"demote","by":"lots"}"#).is_err());
        assert!(serde_json::from_str::<Request>("not json").is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"maintenance","on":"yes"}"#).is_err());
    }
}
