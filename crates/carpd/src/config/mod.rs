//! The daemon configuration: a TOML file or ifconfig-style command-line words.
//!
//! Both front ends fill the same per-vhost draft, and one validation pass turns
//! drafts into [`VhostSpec`]s. Nothing is returned until every vhost is valid,
//! passfiles are read and cross-vhost conflicts (duplicate vhid on a carpdev,
//! duplicate address) are ruled out, so the daemon never starts half a config.
//! Every error names where the value came from: `file:line:column` for the file,
//! `word N ("text")` (1-based) for the command line.
//!
//! File format (all keys but `carpdev`, `vhid` and `addresses` are optional;
//! relative paths are taken from the directory holding the file):
//!
//! ```toml
//! preempt = true                    # net.inet.carp.preempt, default false
//! realtime = true                   # SCHED_FIFO + locked memory, default false
//! log_level = 2                     # net.inet.carp.log, syslog level 0..7
//! control = "/run/carpd/carpd.sock"
//! state_dir = "/var/lib/carpd"      # maintenance mode survives restarts here
//! http = "127.0.0.1:8080"           # status page, JSON API, /metrics; off by default
//! http_token = "long-random-text"   # allows changes over HTTP (Bearer); read-only without
//! guard = true                      # hand over if carpd dies (kill -9); default true
//!
//! [[vhost]]
//! carpdev = "eth0"
//! vhid = 1                          # 1..255
//! # or, instead of vhid and advskew, OpenBSD load balancing:
//! # carpnodes = "1:0,2:100,3:100"   # vhid:advskew, at most 32 nodes
//! # balancing = "ip"                # none, ip, ip-stealth, ip-unicast, arp
//! advbase = 1                       # 0..255 s, default 1
//! advskew = 100                     # 0..254 (1/256 s), default 0
//! pass = "secret"                   # or passfile = "carpd.key" (mode 0600)
//! addresses = ["198.51.100.50/24", "2001:db8::50/64"]
//! lladdr = "virtual"                # or "real"
//! groups = ["lan"]
//! up = "/etc/carpd/up"
//! down = "/etc/carpd/down"
//! hook_timeout = "10s"              # or 10 (seconds), or "500ms"
//! peer = "192.0.2.2"                # unicast advertisements (or an array of peers)
//! peer6 = "2001:db8::2"
//! allow = ["192.0.2.2", "fe80::2"]  # only these sources are heard (default: any)
//! master_down = "auto"              # or "openbsd", "freebsd"
//! ```
//!
//! A passfile holds the passphrase with one trailing newline stripped, and is
//! refused when group or others have any access to it. Passphrases may be up
//! to 20 bytes (`CARP_KEY_LEN`, as the kernel ioctl and FreeBSD netlink accept),
//! but OpenBSD and FreeBSD ifconfig use at most 19 (`strlcpy` into the key), and
//! ucarp refuses more than 19 bytes and an empty password: stay within 1..=19
//! bytes to interoperate with all of them. No passphrase is the empty key, which
//! is still HMACed.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use carp_proto::Balancing;
use carp_proto::CarpNode;
use carp_proto::config::{
    AdvBase, AdvSkew, ConfigError, HmacContext, MAX_CONFIG_ADVSKEW, MasterDownFormula, Passphrase,
    Vhid, VhostConfig, VrrpParams,
};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// The default time a hook script may run before it is killed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The default log level: `LOG_CRIT`, as OpenBSD's `net.inet.carp.log`.
pub const DEFAULT_LOG_LEVEL: u8 = 2;

/// The `SCHED_FIFO` priority of `realtime` when none is given: above every
/// ordinary task, below the kernel's threaded interrupt handlers (50), which
/// must run for advertisements to arrive at all.
pub const DEFAULT_REALTIME_PRIORITY: u8 = 10;

/// The default directory of state kept across restarts and reboots.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/carpd";

/// Which link-layer address the virtual addresses answer with.
///
/// The default is [`Lladdr::Virtual`]: the VIPs keep the MAC
/// `00:00:5e:00:01:VHID` across failover, so clients' ARP and neighbour caches
/// stay valid and the gratuitous ARP only has to move the switches' MAC tables.
/// It is also what the OpenBSD and FreeBSD kernels do (ucarp uses the real MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lladdr {
    /// A macvlan child of the carpdev with MAC `00:00:5e:00:01:VHID` holds the VIPs.
    #[default]
    Virtual,
    /// The VIPs are added to the carpdev itself and answer with its own MAC.
    Real,
}

impl FromStr for Lladdr {
    type Err = String;

    /// Parse `virtual` or `real`.
    fn from_str(s: &str) -> Result<Lladdr, String> {
        match s {
            "virtual" => Ok(Lladdr::Virtual),
            "real" => Ok(Lladdr::Real),
            _ => Err("lladdr expects virtual or real".to_string()),
        }
    }
}

impl fmt::Display for Lladdr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lladdr::Virtual => "virtual",
            Lladdr::Real => "real",
        })
    }
}

/// One virtual address with the prefix length of its subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VirtualAddress {
    /// The address itself (host bits kept: `198.51.100.50/24` gives `.50`).
    pub addr: IpAddr,
    /// The prefix length; a bare address gets /32 or /128.
    pub prefix_len: u8,
}

impl FromStr for VirtualAddress {
    type Err = String;

    /// Parse `198.51.100.50/24`, `2001:db8::50/64` or a bare address, refusing
    /// addresses that can never be hashed or answered for.
    fn from_str(s: &str) -> Result<VirtualAddress, String> {
        let va = match IpNet::from_str(s) {
            Ok(net) => VirtualAddress {
                addr: net.addr(),
                prefix_len: net.prefix_len(),
            },
            Err(_) => {
                let addr = IpAddr::from_str(s).map_err(|_| {
                    format!("expected an address or CIDR like 198.51.100.50/24, not {s:?}")
                })?;
                let prefix_len = if addr.is_ipv4() { 32 } else { 128 };
                VirtualAddress { addr, prefix_len }
            }
        };
        // Spec 2.2: 0.0.0.0, 255.255.255.255 and :: are never hashed.
        let unusable = match va.addr {
            IpAddr::V4(a) => a.is_unspecified() || a.is_broadcast() || a.is_multicast(),
            IpAddr::V6(a) => a.is_unspecified() || a.is_multicast(),
        };
        if unusable {
            return Err(format!("{} cannot be a virtual address", va.addr));
        }
        Ok(va)
    }
}

impl fmt::Display for VirtualAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// The scripts run around transitions, one at a time in transition order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// ucarp-style: run after becoming Master.
    pub up: Option<PathBuf>,
    /// ucarp-style: run after leaving Master.
    pub down: Option<PathBuf>,
    /// Run inside the pre-master gate, before the addresses go live; its
    /// exit status is a gate step.
    pub pre_master: Option<PathBuf>,
    /// Run after becoming Master.
    pub master: Option<PathBuf>,
    /// Run after becoming Backup.
    pub backup: Option<PathBuf>,
    /// Run after a fault (link down, address fault) took the vhost to Init.
    pub fault: Option<PathBuf>,
    /// How long a hook may run before it is killed (default 10 s, never zero).
    pub timeout: Duration,
}

impl Default for Hooks {
    /// No hooks, [`DEFAULT_HOOK_TIMEOUT`].
    fn default() -> Hooks {
        Hooks {
            up: None,
            down: None,
            pre_master: None,
            master: None,
            backup: None,
            fault: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

/// One validated vhost: the protocol parameters plus how carpd realises them on Linux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostSpec {
    /// The parent interface the advertisements are sent and received on.
    pub carpdev: String,
    /// The nodes (OpenBSD `carpnodes`), sorted by vhid; one for a plain
    /// `vhid`. The first is the leader, whose vhid and advskew `proto` holds.
    pub nodes: Vec<CarpNode>,
    /// The balancing mode asked for (OpenBSD `balancing`); see
    /// [`VhostSpec::balancing`] for the one that runs.
    pub balancing: Balancing,
    /// Virtual or real MAC for the VIPs.
    pub lladdr: Lladdr,
    /// The VIPs in configuration order; `proto.ipv4`/`proto.ipv6` hold the same addresses.
    pub addresses: Vec<VirtualAddress>,
    /// Up/down scripts.
    pub hooks: Hooks,
    /// Unicast peers (FreeBSD `peer` / `peer6`, several here): a family with
    /// peers advertises to each instead of 224.0.0.18 / ff02::12.
    pub peers: Vec<IpAddr>,
    /// Advertise to the group as well as to the peers.
    pub dual_path: bool,
    /// Drop advertisements with a TTL other than 255: `None` only multicast ones.
    pub ttl_check: Option<bool>,
    /// `carpver 3`: VRRPv3 with these parameters instead of CARP.
    pub vrrp: Option<VrrpParams>,
    /// RFC 9568 Accept_Mode: whether a MASTER that is not the address owner
    /// takes traffic addressed to the VIPs (always for CARP).
    pub accept: bool,
    /// If not empty, advertisements from other source addresses are dropped (`bad_src`).
    pub allow: Vec<IpAddr>,
    /// vhid, advbase, advskew, passphrase, addresses, groups, master-down formula.
    pub proto: VhostConfig,
}

impl VhostSpec {
    /// Return the balancing mode that runs (one node forces `none`, several
    /// nodes with `none` run `ip`, as OpenBSD does).
    pub fn balancing(&self) -> Balancing {
        Balancing::effective(self.balancing, self.nodes.len())
    }

    /// Return the core's view of this vhost: a carp interface with one node,
    /// whose addresses carry their prefixes and whose peers and MAC are set.
    pub fn carp_if_config(&self) -> carp_proto::CarpIfConfig {
        let mut c: carp_proto::CarpIfConfig = self.proto.clone().into();
        c.addresses = self
            .addresses
            .iter()
            .map(|a| carp_proto::AddrSpec {
                addr: a.addr,
                prefix_len: a.prefix_len,
            })
            .collect();
        c.nodes = self.nodes.clone();
        c.requested_balancing = self.balancing;
        c.peers = self.peers.clone();
        c.dual_path = self.dual_path;
        c.ttl_check = self.ttl_check;
        if let Some(vrrp) = self.vrrp {
            c.flavour = carp_proto::Flavour::Vrrp;
            c.vrrp = vrrp;
        }
        c.allowed_sources = self.allow.clone();
        c.lladdr = match self.lladdr {
            Lladdr::Virtual => carp_proto::Lladdr::Virtual,
            Lladdr::Real => carp_proto::Lladdr::Parent,
        };
        c
    }
}

/// Parse `10`, `10s` (seconds) or `500ms` (milliseconds), as the file does.
pub fn parse_duration(s: &str) -> Option<Duration> {
    parse_timeout(s)
}

/// What the pre-master gate does when the state sync fails or times out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncGate {
    /// The addresses go live anyway (availability first); the failure is
    /// logged, counted and shown.
    #[default]
    Open,
    /// Stay BACKUP (and demote) rather than go live without the state.
    Strict,
}

/// Connection-state sync through conntrackd (pfsync's place on Linux).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncSettings {
    /// The sync interface (OpenBSD `syncdev`): carpd writes conntrackd's
    /// configuration for it and supervises conntrackd.
    pub syncdev: Option<String>,
    /// Unicast UDP peer on the sync interface instead of multicast.
    pub syncpeer: Option<Ipv4Addr>,
    /// The operator's own conntrackd.conf, which carpd only drives.
    pub conntrackd_config: Option<PathBuf>,
    /// What a failed or late sync does to a takeover.
    pub gate: SyncGate,
    /// How long a takeover waits for the sync steps.
    pub gate_timeout: Duration,
    /// The conntrackd program (found on PATH; tests point it at a fake).
    pub program: PathBuf,
}

impl Default for SyncSettings {
    fn default() -> SyncSettings {
        SyncSettings {
            syncdev: None,
            syncpeer: None,
            conntrackd_config: None,
            gate: SyncGate::Open,
            gate_timeout: crate::sync::DEFAULT_GATE_TIMEOUT,
            program: PathBuf::from("conntrackd"),
        }
    }
}

impl SyncSettings {
    /// Return true if state sync is configured.
    pub fn enabled(&self) -> bool {
        self.syncdev.is_some() || self.conntrackd_config.is_some()
    }

    /// Check the combination, naming `at` in errors.
    fn validate(&self, at: &Location) -> Result<(), ConfigFileError> {
        if self.syncdev.is_some() && self.conntrackd_config.is_some() {
            return Err(invalid(
                at,
                "syncdev and conntrackd_config are mutually exclusive: carpd writes the \
                 configuration for a syncdev, or drives the one you give",
            ));
        }
        if self.syncpeer.is_some() && self.syncdev.is_none() {
            return Err(invalid(at, "syncpeer needs a syncdev"));
        }
        if self.gate_timeout.is_zero() {
            return Err(invalid(at, "sync_gate_timeout must be positive"));
        }
        if let Some(dev) = &self.syncdev {
            check_ifname(&Located {
                value: dev.clone(),
                at: at.clone(),
            })?;
        }
        Ok(())
    }
}

/// Where a configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file (the path as given, for reloads and messages).
    File(PathBuf),
    /// Command-line words.
    CommandLine,
}

/// The whole validated daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonConfig {
    /// Let a backup with better timing take over from a master (`net.inet.carp.preempt`).
    pub preempt: bool,
    /// Syslog level 0..=7 below which carp events are logged (`net.inet.carp.log`, default 2).
    pub log_level: u8,
    /// Path of the control socket, if one is wanted.
    pub control: Option<PathBuf>,
    /// Directory of state kept across restarts (maintenance mode); `None` means
    /// [`DEFAULT_STATE_DIR`].
    pub state_dir: Option<PathBuf>,
    /// Address of the HTTP status page, JSON API and metrics; off when `None`.
    pub http: Option<SocketAddr>,
    /// Bearer token allowing changes over HTTP; without one HTTP is read-only.
    pub http_token: Option<String>,
    /// Connection-state sync through conntrackd; off by default.
    pub sync: SyncSettings,
    /// `realtime`: the `SCHED_FIFO` priority of the protocol loop, whose
    /// memory is then locked too; `None`: ordinary scheduling.
    pub realtime: Option<u8>,
    /// Run the guard process that hands over when the daemon dies (see
    /// `crate::guard`); on by default.
    pub guard: bool,
    /// Every vhost, in configuration order; at least one.
    pub vhosts: Vec<VhostSpec>,
    /// Where this configuration came from.
    pub source: ConfigSource,
}

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A place in a configuration file; line and column are 1-based, the column counts characters.
    Span {
        /// The file as given.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// Column number.
        column: usize,
    },
    /// A configuration file as a whole.
    File(PathBuf),
    /// A command-line word; the position is 1-based among the positional words.
    Word {
        /// Position of the word.
        position: usize,
        /// The word itself.
        word: String,
    },
    /// The command line as a whole.
    CommandLine,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Span { path, line, column } => {
                write!(f, "{}:{line}:{column}", path.display())
            }
            Location::File(path) => write!(f, "{}", path.display()),
            Location::Word { position, word } => write!(f, "word {position} ({word:?})"),
            Location::CommandLine => f.write_str("command line"),
        }
    }
}

/// The largest configuration file read (a real one is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

pub(super) enum OpenError {
    Io(io::Error),
    NotRegular(&'static str),
}

/// Open `path` for reading without blocking and without a controlling
/// terminal, and refuse anything but a regular file (checked with fstat).
pub(super) fn open_regular(path: &Path) -> Result<fs::File, OpenError> {
    use nix::fcntl::OFlag;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(OpenError::Io)?;
    let t = f.metadata().map_err(OpenError::Io)?.file_type();
    let kind = if t.is_file() {
        return Ok(f);
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    };
    Err(OpenError::NotRegular(kind))
}

/// Drop the values serde quotes in a parse error (`invalid type: string
/// "..."`): the file may be a secret (a symlink to a passfile). Names of keys
/// and the expected types stay, and the line and column say where.
fn redact(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: ", "unknown variant "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let end = rest.find(", expected").unwrap_or(rest.len());
            let (what, tail) = rest.split_at(end);
            if !what.contains(['"', '`', '\'']) {
                return message.to_owned();
            }
            let kind = what
                .split(' ')
                .next()
                .filter(|_| prefix != "unknown variant ");
            let kind = kind.map_or(String::new(), |k| format!("{k} "));
            return format!("{prefix}{kind}(value not shown){tail}");
        }
    }
    message.to_owned()
}

/// A reason a configuration is refused; nothing of it has been applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error (in the message: callers print only the top error).
        reason: io::Error,
    },
    /// The configuration file is a FIFO, device, socket or directory.
    #[error("config file {} is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The configuration file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config file {} is larger than {MAX_CONFIG_BYTES} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// A value is malformed, out of range, missing or conflicts with another.
    #[error("{at}: {message}")]
    Invalid {
        /// Where the offending value is.
        at: Location,
        /// What was expected.
        message: String,
    },
    /// A passfile could not be read.
    #[error("{at}: cannot read passfile {}: {reason}", file.display())]
    PassfileRead {
        /// Where the passfile is named.
        at: Location,
        /// The passfile.
        file: PathBuf,
        /// The OS error.
        reason: io::Error,
    },
    /// A passfile can be read or written by group or others.
    #[error(
        "{at}: passfile {} has mode {mode:04o}, group and others must have no access (chmod 600)",
        file.display()
    )]
    PassfileMode {
        /// Where the passfile is named.
        at: Location,
        /// The passfile.
        file: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

impl DaemonConfig {
    /// Return warnings about settings that are valid but likely to bite: a
    /// 20-byte passphrase, which ucarp refuses and BSD ifconfig cuts to 19
    /// bytes, so such peers fail authentication.
    pub fn warnings(&self) -> Vec<String> {
        self.vhosts
            .iter()
            .filter(|v| v.proto.passphrase.as_bytes().len() == carp_proto::config::KEY_LEN)
            .map(|v| {
                format!(
                    "vhid {} on {}: the passphrase is 20 bytes; ucarp and BSD ifconfig keep 19, so their advertisements will fail authentication",
                    v.proto.vhid, v.carpdev
                )
            })
            .collect()
    }

    /// Parse and validate the TOML `text` of the file at `path`.
    ///
    /// `path` names the file in messages, and its directory anchors relative
    /// `passfile`, `up`, `down` and `control` paths. Passfiles are read here.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<DaemonConfig, ConfigFileError> {
        let loc = Locator { text, path };
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigFileError::Invalid {
            at: e
                .span()
                .map_or_else(|| Location::File(path.into()), |s| loc.at(s.start)),
            message: redact(e.message().trim_end()),
        })?;
        let base = path.parent();
        let sync = file_sync(&file, &loc, base)?;
        let log_level = match file.log_level {
            None => DEFAULT_LOG_LEVEL,
            Some(v) => in_range("log_level", &loc.one(v), 0, 7)?,
        };
        let control = file.control.map(|c| resolve(base, c.into_inner()));
        let state_dir = file.state_dir.map(|c| resolve(base, c.into_inner()));
        let http = match file.http {
            None => None,
            Some(v) => {
                let v = loc.one(v);
                Some(v.value.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        &v.at,
                        "http expects an address and port like 127.0.0.1:8080",
                    )
                })?)
            }
        };
        let http_token = match file.http_token {
            Some(t) if t.get_ref().is_empty() => {
                return Err(invalid(
                    &loc.at(t.span().start),
                    "http_token must not be empty",
                ));
            }
            t => t.map(Spanned::into_inner),
        };
        let realtime = match (file.realtime, file.realtime_priority) {
            (false, None) => None,
            (true, None) => Some(DEFAULT_REALTIME_PRIORITY),
            (true, Some(v)) => Some(in_range("realtime_priority", &loc.one(v), 1, 99)?),
            (false, Some(v)) => {
                return Err(invalid(
                    &loc.one(v).at,
                    "realtime_priority needs realtime = true",
                ));
            }
        };
        let drafts = file.vhost.into_iter().map(|v| v.into_draft(&loc)).collect();
        let vhosts = finish_all(drafts, base)?;
        if vhosts.is_empty() {
            return Err(invalid(
                &Location::File(path.into()),
                "no [[vhost]] table, nothing to run",
            ));
        }
        let source = ConfigSource::File(path.into());
        Ok(DaemonConfig {
            preempt: file.preempt,
            log_level,
            control,
            state_dir,
            http,
            http_token,
            sync,
            realtime,
            guard: file.guard.unwrap_or(true),
            vhosts,
            source,
        })
    }

    /// Read the file at `path`, then parse and validate it as [`DaemonConfig::from_toml_str`].
    ///
    /// Only a regular file of at most [`MAX_CONFIG_BYTES`] is read: it is
    /// opened without blocking (a FIFO would wait for a writer) and checked
    /// on the opened descriptor, so the file checked is the file read.
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigFileError> {
        DaemonConfig::from_toml_str(&read_text(path)?, path)
    }

    /// Parse and validate the positional ifconfig-style words of the command line.
    ///
    /// Keywords: `carpdev IF`, `vhid N`, `advbase N`, `advskew N`, `pass TEXT`,
    /// `passfile PATH`, `lladdr virtual|real`, `group NAME` (repeatable), `peer A`,
    /// `peer6 A`, `allow A` (repeatable), `up PATH`, `down PATH`, `master-down openbsd|freebsd`,
    /// `hook-timeout 10s`; any word that parses as an address or CIDR is a VIP.
    /// Every keyword applies to the current vhost. `vhid` starts a new vhost
    /// when the current one already has a vhid, and `carpdev` does when the
    /// current one already has a vhid and named its carpdev; a new vhost
    /// inherits only the carpdev. Relative passfiles are taken from the working
    /// directory. No words give no vhosts.
    pub fn from_ifconfig_words(words: &[String]) -> Result<Vec<VhostSpec>, ConfigFileError> {
        finish_all(parse_words(words)?, None)
    }

    /// Build a command-line configuration from flags and the ifconfig-style `words`.
    ///
    /// Refuses a `log_level` above 7 and a command line without any vhost.
    pub fn from_command_line(
        preempt: bool,
        log_level: u8,
        control: Option<PathBuf>,
        words: &[String],
    ) -> Result<DaemonConfig, ConfigFileError> {
        if log_level > 7 {
            let message = format!("log level {log_level} is out of range 0..7");
            return Err(invalid(&Location::CommandLine, message));
        }
        let (sync, words) = leading_sync_words(words)?;
        let vhosts = DaemonConfig::from_ifconfig_words(words)?;
        if vhosts.is_empty() {
            return Err(invalid(
                &Location::CommandLine,
                "no vhid given, nothing to run",
            ));
        }
        let source = ConfigSource::CommandLine;
        Ok(DaemonConfig {
            preempt,
            log_level,
            control,
            state_dir: None,
            http: None,
            http_token: None,
            sync,
            realtime: None,
            guard: true,
            vhosts,
            source,
        })
    }
}

/// The sync settings of a configuration file.
fn file_sync(
    file: &FileConfig,
    loc: &Locator<'_>,
    base: Option<&Path>,
) -> Result<SyncSettings, ConfigFileError> {
    let mut sync = SyncSettings {
        syncdev: file.syncdev.as_ref().map(|v| v.get_ref().clone()),
        conntrackd_config: file
            .conntrackd_config
            .as_ref()
            .map(|v| resolve(base, v.get_ref().clone())),
        ..SyncSettings::default()
    };
    let mut first = None;
    if let Some(v) = &file.syncpeer {
        let v = loc.one(v.clone());
        sync.syncpeer = Some(parse_peer::<Ipv4Addr>(
            &v,
            "syncpeer expects an IPv4 address",
        )?);
        first.get_or_insert(v.at);
    }
    if let Some(v) = &file.sync_gate {
        let v = loc.one(v.clone());
        sync.gate = parse_sync_gate(&v)?;
        first.get_or_insert(v.at);
    }
    if let Some(v) = &file.sync_gate_timeout {
        let v = loc.one(v.clone());
        sync.gate_timeout = parse_timeout(&v.value)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                invalid(
                    &v.at,
                    "sync_gate_timeout expects a positive duration like 2s or 500ms",
                )
            })?;
        first.get_or_insert(v.at);
    }
    let at = file
        .syncdev
        .as_ref()
        .map(|v| loc.at(v.span().start))
        .or(first)
        .unwrap_or_else(|| Location::File(loc.path.into()));
    if !sync.enabled() && (sync.gate != SyncGate::Open || file.sync_gate_timeout.is_some()) {
        return Err(invalid(&at, "sync_gate needs syncdev or conntrackd_config"));
    }
    sync.validate(&at)?;
    Ok(sync)
}

fn parse_sync_gate(v: &Located<String>) -> Result<SyncGate, ConfigFileError> {
    match v.value.as_str() {
        "open" => Ok(SyncGate::Open),
        "strict" => Ok(SyncGate::Strict),
        _ => Err(invalid(&v.at, "sync_gate expects open or strict")),
    }
}

/// Take `syncdev IF` and `syncpeer ADDR` from the front of the words
/// (OpenBSD's pfsync word, given before the vhost words).
fn leading_sync_words(words: &[String]) -> Result<(SyncSettings, &[String]), ConfigFileError> {
    let mut sync = SyncSettings::default();
    let mut rest = words;
    let mut index = 0;
    while let [keyword @ ("syncdev" | "syncpeer"), tail @ ..] = rest_str(rest).as_slice() {
        let keyword = keyword.to_string();
        let at = word_location(index, &keyword);
        let Some(value) = tail.first() else {
            return Err(invalid(
                &at,
                format!("{keyword} expects a value, got nothing"),
            ));
        };
        let value = Located {
            value: value.to_string(),
            at: word_location(index + 1, value),
        };
        if keyword == "syncdev" {
            sync.syncdev = Some(value.value);
        } else {
            sync.syncpeer = Some(parse_peer::<Ipv4Addr>(
                &value,
                "syncpeer expects an IPv4 address",
            )?);
        }
        rest = &rest[2..];
        index += 2;
    }
    sync.validate(&Location::CommandLine)?;
    Ok((sync, rest))
}

fn rest_str(words: &[String]) -> Vec<&str> {
    words.iter().take(2).map(String::as_str).collect()
}

/// Read the configuration file at `path` as text, as [`DaemonConfig::load`] does:
/// only a regular file of at most [`MAX_CONFIG_BYTES`], opened without blocking
/// and checked on the opened descriptor, so the file checked is the file read.
pub fn read_text(path: &Path) -> Result<String, ConfigFileError> {
    let read = |reason| ConfigFileError::Read {
        path: path.into(),
        reason,
    };
    let f = open_regular(path).map_err(|e| match e {
        OpenError::Io(e) => read(e),
        OpenError::NotRegular(kind) => ConfigFileError::NotRegular {
            path: path.into(),
            kind,
        },
    })?;
    let too_large = || ConfigFileError::TooLarge { path: path.into() };
    if f.metadata().map_err(read)?.len() > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_large());
    }
    // The bytes are not echoed: the file may be a secret linked here.
    let text = String::from_utf8(bytes).map_err(|e| {
        invalid(
            &Location::File(path.into()),
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    Ok(text)
}

mod draft;
use draft::*;
pub mod reference;

/// Settings given as `carpd run` flags, which win over the file on start and on every reload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--preempt` (can only turn preemption on).
    pub preempt: bool,
    /// `--log-level`.
    pub log_level: Option<u8>,
    /// `--control`.
    pub control: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--http`.
    pub http: Option<SocketAddr>,
    /// `--http-token`.
    pub http_token: Option<String>,
    /// `--syncdev`, `--syncpeer`, `--conntrackd-config`, `--sync-gate`,
    /// `--sync-gate-timeout` (each replaces the file's value).
    pub syncdev: Option<String>,
    /// See `syncdev`.
    pub syncpeer: Option<Ipv4Addr>,
    /// See `syncdev`.
    pub conntrackd_config: Option<PathBuf>,
    /// See `syncdev`.
    pub sync_gate: Option<SyncGate>,
    /// See `syncdev`.
    pub sync_gate_timeout: Option<Duration>,
    /// `--realtime` (can only turn it on).
    pub realtime: bool,
    /// `--realtime-priority` (implies `--realtime`).
    pub realtime_priority: Option<u8>,
    /// `--user`: run as this user after set-up (not part of [`DaemonConfig`]).
    pub user: Option<String>,
    /// `--no-guard` (can only turn the guard off).
    pub no_guard: bool,
}

impl Overrides {
    /// Apply the flags to a configuration read from a file or the command line.
    pub fn apply(&self, config: &mut DaemonConfig) {
        config.preempt |= self.preempt;
        config.guard &= !self.no_guard;
        config.log_level = self.log_level.unwrap_or(config.log_level);
        config.control = self.control.clone().or(config.control.take());
        config.state_dir = self.state_dir.clone().or(config.state_dir.take());
        config.http = self.http.or(config.http);
        config.http_token = self.http_token.clone().or(config.http_token.take());
        let sync = &mut config.sync;
        sync.syncdev = self.syncdev.clone().or(sync.syncdev.take());
        sync.syncpeer = self.syncpeer.or(sync.syncpeer);
        sync.conntrackd_config = self
            .conntrackd_config
            .clone()
            .or(sync.conntrackd_config.take());
        sync.gate = self.sync_gate.unwrap_or(sync.gate);
        sync.gate_timeout = self.sync_gate_timeout.unwrap_or(sync.gate_timeout);
        if self.realtime || self.realtime_priority.is_some() {
            config.realtime = self
                .realtime_priority
                .or(config.realtime)
                .or(Some(DEFAULT_REALTIME_PRIORITY));
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod test;
