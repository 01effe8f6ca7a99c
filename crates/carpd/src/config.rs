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
//! log_level = 2                     # net.inet.carp.log, syslog level 0..7
//! control = "/run/carpd/carpd.sock"
//! state_dir = "/var/lib/carpd"      # maintenance mode survives restarts here
//! http = "127.0.0.1:8080"           # status page, JSON API, /metrics; off by default
//! http_token = "long-random-text"   # allows changes over HTTP (Bearer); read-only without
//!
//! [[vhost]]
//! carpdev = "eth0"
//! vhid = 1                          # 1..255
//! advbase = 1                       # 0..255 s, default 1
//! advskew = 100                     # 0..254 (1/256 s), default 0
//! pass = "secret"                   # or passfile = "carpd.key" (mode 0600)
//! addresses = ["198.51.100.50/24", "2001:db8::50/64"]
//! lladdr = "virtual"                # or "real"
//! groups = ["lan"]
//! up = "/etc/carpd/up"
//! down = "/etc/carpd/down"
//! hook_timeout = "10s"              # or 10 (seconds), or "500ms"
//! peer = "192.0.2.2"                # unicast advertisements
//! peer6 = "2001:db8::2"
//! master_down = "openbsd"           # or "freebsd"
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

use carp_proto::config::{
    AdvBase, AdvSkew, ConfigError, MAX_CONFIG_ADVSKEW, MasterDownFormula, Passphrase, Vhid,
    VhostConfig,
};
use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

/// The default time a hook script may run before it is killed.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The default log level: `LOG_CRIT`, as OpenBSD's `net.inet.carp.log`.
pub const DEFAULT_LOG_LEVEL: u8 = 2;

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

/// The scripts run on entering and leaving Master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    /// Run after becoming Master.
    pub up: Option<PathBuf>,
    /// Run after leaving Master.
    pub down: Option<PathBuf>,
    /// How long a hook may run before it is killed (default 10 s, never zero).
    pub timeout: Duration,
}

impl Default for Hooks {
    /// No hooks, [`DEFAULT_HOOK_TIMEOUT`].
    fn default() -> Hooks {
        Hooks {
            up: None,
            down: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

/// One validated vhost: the protocol parameters plus how carpd realises them on Linux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostSpec {
    /// The parent interface the advertisements are sent and received on.
    pub carpdev: String,
    /// Virtual or real MAC for the VIPs.
    pub lladdr: Lladdr,
    /// The VIPs in configuration order; `proto.ipv4`/`proto.ipv6` hold the same addresses.
    pub addresses: Vec<VirtualAddress>,
    /// Up/down scripts.
    pub hooks: Hooks,
    /// Unicast IPv4 destination for advertisements instead of 224.0.0.18 (FreeBSD `peer`).
    pub peer: Option<Ipv4Addr>,
    /// Unicast IPv6 destination for advertisements instead of ff02::12 (FreeBSD `peer6`).
    pub peer6: Option<Ipv6Addr>,
    /// vhid, advbase, advskew, passphrase, addresses, groups, master-down formula.
    pub proto: VhostConfig,
}

impl VhostSpec {
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
        c.peer = self.peer;
        c.peer6 = self.peer6;
        c.lladdr = match self.lladdr {
            Lladdr::Virtual => carp_proto::Lladdr::Virtual,
            Lladdr::Real => carp_proto::Lladdr::Parent,
        };
        c
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

/// A reason a configuration is refused; nothing of it has been applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The configuration file could not be read.
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
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
    #[error("{at}: cannot read passfile {}", file.display())]
    PassfileRead {
        /// Where the passfile is named.
        at: Location,
        /// The passfile.
        file: PathBuf,
        /// The OS error.
        source: io::Error,
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
            message: e.message().trim_end().to_string(),
        })?;
        let base = path.parent();
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
            vhosts,
            source,
        })
    }

    /// Read the file at `path`, then parse and validate it as [`DaemonConfig::from_toml_str`].
    pub fn load(path: &Path) -> Result<DaemonConfig, ConfigFileError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.into(),
            source,
        })?;
        DaemonConfig::from_toml_str(&text, path)
    }

    /// Parse and validate the positional ifconfig-style words of the command line.
    ///
    /// Keywords: `carpdev IF`, `vhid N`, `advbase N`, `advskew N`, `pass TEXT`,
    /// `passfile PATH`, `lladdr virtual|real`, `group NAME` (repeatable), `peer A`,
    /// `peer6 A`, `up PATH`, `down PATH`, `master-down openbsd|freebsd`,
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
            vhosts,
            source,
        })
    }
}

// ===== file format =====

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    preempt: bool,
    log_level: Option<Spanned<i64>>,
    control: Option<Spanned<PathBuf>>,
    state_dir: Option<Spanned<PathBuf>>,
    http: Option<Spanned<String>>,
    http_token: Option<Spanned<String>>,
    #[serde(default)]
    vhost: Vec<FileVhost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileVhost {
    carpdev: Spanned<String>,
    vhid: Spanned<i64>,
    advbase: Option<Spanned<i64>>,
    advskew: Option<Spanned<i64>>,
    pass: Option<Spanned<String>>,
    passfile: Option<Spanned<PathBuf>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    lladdr: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    up: Option<Spanned<PathBuf>>,
    down: Option<Spanned<PathBuf>>,
    /// An integer number of seconds, or a string `"10s"`, `"500ms"`, `"10"`.
    hook_timeout: Option<Spanned<toml::Value>>,
    peer: Option<Spanned<String>>,
    peer6: Option<Spanned<String>>,
    master_down: Option<Spanned<String>>,
}

impl FileVhost {
    fn into_draft(self, loc: &Locator<'_>) -> Draft {
        Draft {
            carpdev: Some(loc.one(self.carpdev)),
            vhid: Some(loc.one(self.vhid)),
            advbase: loc.opt(self.advbase),
            advskew: loc.opt(self.advskew),
            pass: self.pass.map(|v| loc.one(v).map(String::into_bytes)),
            passfile: loc.opt(self.passfile),
            addresses: self.addresses.into_iter().map(|v| loc.one(v)).collect(),
            lladdr: loc.opt(self.lladdr),
            groups: self.groups.into_iter().map(|v| loc.one(v)).collect(),
            up: loc.opt(self.up),
            down: loc.opt(self.down),
            hook_timeout: self.hook_timeout.map(|v| {
                loc.one(v).map(|v| match v {
                    toml::Value::Integer(secs) => u64::try_from(secs).ok().map(Duration::from_secs),
                    toml::Value::String(s) => parse_timeout(&s),
                    _ => None,
                })
            }),
            peer: loc.opt(self.peer),
            peer6: loc.opt(self.peer6),
            master_down: loc.opt(self.master_down),
            ..Draft::default()
        }
    }
}

/// Turns toml byte spans into file locations.
struct Locator<'a> {
    text: &'a str,
    path: &'a Path,
}

impl Locator<'_> {
    /// Return the 1-based line and character column of byte `offset`.
    fn at(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(offset - line_start, |s| s.chars().count());
        Location::Span {
            path: self.path.into(),
            line,
            column: column + 1,
        }
    }

    fn one<T>(&self, v: Spanned<T>) -> Located<T> {
        let at = self.at(v.span().start);
        Located {
            value: v.into_inner(),
            at,
        }
    }

    fn opt<T>(&self, v: Option<Spanned<T>>) -> Option<Located<T>> {
        v.map(|v| self.one(v))
    }
}

fn resolve(base: Option<&Path>, path: PathBuf) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

// ===== command-line words =====

const KEYWORDS: &str = "carpdev, vhid, advbase, advskew, pass, passfile, lladdr, group, \
                        peer, peer6, up, down, master-down, hook-timeout";

fn parse_words(words: &[String]) -> Result<Vec<Draft>, ConfigFileError> {
    let mut drafts = Vec::new();
    let Some(first) = words.first() else {
        return Ok(drafts);
    };
    let new_draft = |start| Draft {
        start: Some(start),
        words: true,
        ..Draft::default()
    };
    let mut cur = new_draft(word_location(0, first));
    let mut i = 0;
    while i < words.len() {
        let here = word_location(i, &words[i]);
        let keyword = words[i].as_str();
        let mut value = |expected: &str| -> Result<Located<String>, ConfigFileError> {
            i += 1;
            match words.get(i) {
                Some(w) => Ok(Located {
                    value: w.clone(),
                    at: word_location(i, w),
                }),
                None => Err(invalid(
                    &here,
                    format!("{keyword} expects {expected}, got nothing"),
                )),
            }
        };
        match keyword {
            "carpdev" => {
                let dev = value("an interface name")?;
                if cur.carpdev.is_some() && !cur.carpdev_inherited && cur.vhid.is_some() {
                    let next = new_draft(here);
                    drafts.push(std::mem::replace(&mut cur, next));
                }
                if cur.carpdev_inherited {
                    cur.carpdev = None;
                    cur.carpdev_inherited = false;
                }
                set_once(&mut cur.carpdev, dev, keyword)?;
            }
            "vhid" => {
                let vhid = number(value("a number 1..255")?, "vhid expects a number 1..255")?;
                if cur.vhid.is_some() {
                    let mut next = new_draft(here);
                    next.carpdev = cur.carpdev.clone();
                    next.carpdev_inherited = true;
                    drafts.push(std::mem::replace(&mut cur, next));
                }
                cur.vhid = Some(vhid);
            }
            "advbase" => {
                let v = number(value("a number 0..255")?, "advbase expects a number 0..255")?;
                set_once(&mut cur.advbase, v, keyword)?;
            }
            "advskew" => {
                let v = number(value("a number 0..254")?, "advskew expects a number 0..254")?;
                set_once(&mut cur.advskew, v, keyword)?;
            }
            "pass" => {
                let v = value("a passphrase")?.map(String::into_bytes);
                set_once(&mut cur.pass, v, keyword)?;
            }
            "passfile" => set_once(
                &mut cur.passfile,
                value("a path")?.map(PathBuf::from),
                keyword,
            )?,
            "lladdr" => set_once(&mut cur.lladdr, value("virtual or real")?, keyword)?,
            "group" => cur.groups.push(value("a group name")?),
            "peer" => set_once(&mut cur.peer, value("an IPv4 address")?, keyword)?,
            "peer6" => set_once(&mut cur.peer6, value("an IPv6 address")?, keyword)?,
            "up" => set_once(
                &mut cur.up,
                value("a script path")?.map(PathBuf::from),
                keyword,
            )?,
            "down" => set_once(
                &mut cur.down,
                value("a script path")?.map(PathBuf::from),
                keyword,
            )?,
            "master-down" => set_once(&mut cur.master_down, value("openbsd or freebsd")?, keyword)?,
            "hook-timeout" => {
                let v = value("a duration like 10s or 500ms")?.map(|s| parse_timeout(&s));
                set_once(&mut cur.hook_timeout, v, keyword)?;
            }
            _ if keyword.parse::<IpAddr>().is_ok() || keyword.parse::<IpNet>().is_ok() => {
                cur.addresses.push(Located {
                    value: keyword.to_string(),
                    at: here,
                });
            }
            _ if keyword.contains(['.', ':', '/']) => {
                let message =
                    "expected an address or CIDR like 198.51.100.50/24 or 2001:db8::50/64";
                return Err(invalid(&here, message));
            }
            _ => {
                let message = format!("unknown keyword, expected one of {KEYWORDS} or an address");
                return Err(invalid(&here, message));
            }
        }
        i += 1;
    }
    drafts.push(cur);
    Ok(drafts)
}

fn word_location(index: usize, word: &str) -> Location {
    Location::Word {
        position: index + 1,
        word: word.to_string(),
    }
}

fn number(v: Located<String>, expected: &str) -> Result<Located<i64>, ConfigFileError> {
    match v.value.parse::<i64>() {
        Ok(n) => Ok(Located { value: n, at: v.at }),
        Err(_) => Err(invalid(&v.at, expected)),
    }
}

fn set_once<T>(
    slot: &mut Option<Located<T>>,
    v: Located<T>,
    name: &str,
) -> Result<(), ConfigFileError> {
    if let Some(prev) = slot {
        return Err(invalid(
            &v.at,
            format!("{name} is already given at {}", prev.at),
        ));
    }
    *slot = Some(v);
    Ok(())
}

// ===== validation shared by both front ends =====

/// A value with where it came from.
#[derive(Debug, Clone)]
struct Located<T> {
    value: T,
    at: Location,
}

impl<T> Located<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Located<U> {
        Located {
            value: f(self.value),
            at: self.at,
        }
    }
}

fn invalid(at: &Location, message: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Invalid {
        at: at.clone(),
        message: message.into(),
    }
}

/// One vhost as written, before validation.
#[derive(Default)]
struct Draft {
    /// The first word of the vhost on the command line (a file vhost always has a vhid).
    start: Option<Location>,
    /// Whether this came from command-line words (for key spellings in messages).
    words: bool,
    carpdev: Option<Located<String>>,
    carpdev_inherited: bool,
    vhid: Option<Located<i64>>,
    advbase: Option<Located<i64>>,
    advskew: Option<Located<i64>>,
    pass: Option<Located<Vec<u8>>>,
    passfile: Option<Located<PathBuf>>,
    addresses: Vec<Located<String>>,
    lladdr: Option<Located<String>>,
    groups: Vec<Located<String>>,
    up: Option<Located<PathBuf>>,
    down: Option<Located<PathBuf>>,
    /// `None` inside means the text was not a duration.
    hook_timeout: Option<Located<Option<Duration>>>,
    peer: Option<Located<String>>,
    peer6: Option<Located<String>>,
    master_down: Option<Located<String>>,
}

/// A validated vhost with the locations needed for cross-vhost checks.
struct Checked {
    spec: VhostSpec,
    vhid_at: Location,
    address_at: Vec<Location>,
}

impl Draft {
    fn finish(self, base: Option<&Path>) -> Result<Checked, ConfigFileError> {
        // The spelling of the keys that differ between the file and the words.
        let words = self.words;
        let key = move |file: &'static str, word: &'static str| if words { word } else { file };
        let Some(vhid_at) = self.vhid else {
            let start = self.start.unwrap_or(Location::CommandLine);
            return Err(invalid(&start, "this vhost has no vhid"));
        };
        let vhid = Vhid::new(in_range("vhid", &vhid_at, 1, 255)?)
            .ok_or_else(|| invalid(&vhid_at.at, ConfigError::VhidZero.to_string()))?;
        let Some(carpdev) = self.carpdev else {
            return Err(invalid(&vhid_at.at, format!("vhid {vhid} has no carpdev")));
        };
        check_ifname(&carpdev)?;

        let mut proto = VhostConfig::new(vhid, &[]);
        if let Some(v) = &self.advbase {
            proto.advbase = AdvBase(in_range("advbase", v, 0, 255)?);
        }
        if let Some(v) = &self.advskew {
            proto.advskew = AdvSkew(in_range("advskew", v, 0, MAX_CONFIG_ADVSKEW)?);
        }
        proto.passphrase = match (self.pass, self.passfile) {
            (Some(_), Some(file)) => {
                return Err(invalid(
                    &file.at,
                    "pass and passfile are mutually exclusive",
                ));
            }
            (Some(pass), None) => passphrase(&pass.value).map_err(|e| invalid(&pass.at, e))?,
            (None, Some(file)) => read_passfile(&file.at, &resolve(base, file.value))?,
            (None, None) => Passphrase::default(),
        };
        if let Some(v) = self.master_down {
            proto.master_down = match v.value.as_str() {
                "openbsd" => MasterDownFormula::Openbsd,
                "freebsd" => MasterDownFormula::Freebsd,
                _ => {
                    let message = format!(
                        "{} expects openbsd or freebsd",
                        key("master_down", "master-down")
                    );
                    return Err(invalid(&v.at, message));
                }
            };
        }
        for g in self.groups {
            check_group(&g)?;
            if !proto.groups.contains(&g.value) {
                proto.groups.push(g.value);
            }
        }

        let mut addresses = Vec::new();
        let mut address_at = Vec::new();
        for a in self.addresses {
            let va = VirtualAddress::from_str(&a.value).map_err(|e| invalid(&a.at, e))?;
            match va.addr {
                IpAddr::V4(v4) => proto.ipv4.push(v4),
                IpAddr::V6(v6) => proto.ipv6.push(v6),
            }
            addresses.push(va);
            address_at.push(a.at);
        }
        if addresses.is_empty() {
            let message = format!(
                "vhid {vhid} has no addresses (give {})",
                key("addresses", "an address")
            );
            return Err(invalid(&vhid_at.at, message));
        }
        // Safety net: the core's own checks must agree with the ones above.
        proto
            .validate()
            .map_err(|e| invalid(&vhid_at.at, e.to_string()))?;

        let lladdr = match self.lladdr {
            Some(v) => Lladdr::from_str(&v.value).map_err(|e| invalid(&v.at, e))?,
            None => Lladdr::default(),
        };
        let mut hooks = Hooks {
            up: self.up.map(|p| resolve(base, p.value)),
            down: self.down.map(|p| resolve(base, p.value)),
            ..Hooks::default()
        };
        if let Some(t) = self.hook_timeout {
            hooks.timeout = t.value.filter(|d| !d.is_zero()).ok_or_else(|| {
                let name = key("hook_timeout", "hook-timeout");
                invalid(
                    &t.at,
                    format!("{name} expects a positive duration like 10s or 500ms"),
                )
            })?;
        }
        let peer = match self.peer {
            Some(p) => Some(parse_peer::<Ipv4Addr>(&p, "peer expects an IPv4 address")?),
            None => None,
        };
        let peer6 = match self.peer6 {
            Some(p) => Some(parse_peer::<Ipv6Addr>(&p, "peer6 expects an IPv6 address")?),
            None => None,
        };
        let carpdev = carpdev.value;
        let spec = VhostSpec {
            carpdev,
            lladdr,
            addresses,
            hooks,
            peer,
            peer6,
            proto,
        };
        Ok(Checked {
            spec,
            vhid_at: vhid_at.at,
            address_at,
        })
    }
}

/// Validate every draft, then refuse duplicate vhids per carpdev and duplicate addresses.
fn finish_all(drafts: Vec<Draft>, base: Option<&Path>) -> Result<Vec<VhostSpec>, ConfigFileError> {
    let checked = drafts
        .into_iter()
        .map(|d| d.finish(base))
        .collect::<Result<Vec<_>, _>>()?;
    let mut vhids: HashMap<(&str, Vhid), &Location> = HashMap::new();
    let mut addrs: HashMap<IpAddr, (&Checked, &Location)> = HashMap::new();
    for c in &checked {
        let key = (c.spec.carpdev.as_str(), c.spec.proto.vhid);
        if let Some(first) = vhids.insert(key, &c.vhid_at) {
            let message = format!(
                "vhid {} on {} is already configured at {first}",
                key.1, key.0
            );
            return Err(invalid(&c.vhid_at, message));
        }
        for (va, at) in c.spec.addresses.iter().zip(&c.address_at) {
            if let Some((other, first)) = addrs.get(&va.addr) {
                // Link-local addresses are per link: the same one on two carpdevs is fine.
                let link_local = matches!(va.addr, IpAddr::V6(a) if a.is_unicast_link_local());
                if !link_local || other.spec.carpdev == c.spec.carpdev {
                    let message = format!(
                        "address {} is already configured for vhid {} on {} at {first}",
                        va.addr, other.spec.proto.vhid, other.spec.carpdev
                    );
                    return Err(invalid(at, message));
                }
            }
            addrs.insert(va.addr, (c, at));
        }
    }
    Ok(checked.into_iter().map(|c| c.spec).collect())
}

fn in_range(name: &str, v: &Located<i64>, lo: u8, hi: u8) -> Result<u8, ConfigFileError> {
    u8::try_from(v.value)
        .ok()
        .filter(|n| (lo..=hi).contains(n))
        .ok_or_else(|| {
            invalid(
                &v.at,
                format!("{name} {} is out of range {lo}..{hi}", v.value),
            )
        })
}

/// Return the HMAC key for `bytes`, at most 20 bytes (see the module doc on 19-byte peers).
fn passphrase(bytes: &[u8]) -> Result<Passphrase, String> {
    Passphrase::new(bytes).map_err(|e| e.to_string())
}

/// Read the passphrase from `file`: its content with one trailing newline stripped.
///
/// The mode is checked on the opened file, so it is the one actually read.
fn read_passfile(at: &Location, file: &Path) -> Result<Passphrase, ConfigFileError> {
    let read_err = |source| ConfigFileError::PassfileRead {
        at: at.clone(),
        file: file.into(),
        source,
    };
    // A FIFO or device would block or never end, and a reload runs in the
    // daemon loop: look before opening, and read at most 64 KiB.
    if !fs::metadata(file).map_err(read_err)?.is_file() {
        return Err(invalid(
            at,
            format!("passfile {} is not a regular file", file.display()),
        ));
    }
    let f = fs::File::open(file).map_err(read_err)?;
    let mode = f.metadata().map_err(read_err)?.permissions().mode();
    if mode & 0o077 != 0 {
        let mode = mode & 0o7777;
        return Err(ConfigFileError::PassfileMode {
            at: at.clone(),
            file: file.into(),
            mode,
        });
    }
    let mut content = Vec::new();
    f.take(64 * 1024)
        .read_to_end(&mut content)
        .map_err(read_err)?;
    if content.last() == Some(&b'\n') {
        content.pop();
    }
    passphrase(&content).map_err(|e| invalid(at, format!("passfile {}: {e}", file.display())))
}

/// Refuse names Linux would refuse (`dev_valid_name`).
fn check_ifname(dev: &Located<String>) -> Result<(), ConfigFileError> {
    let name = dev.value.as_str();
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name.contains(|c: char| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        let message = "carpdev expects an interface name of 1..15 bytes without /, : or spaces";
        return Err(invalid(&dev.at, message));
    }
    Ok(())
}

/// Refuse group names OpenBSD ifconfig refuses (`if_addgroup`: IFNAMSIZ, no trailing digit).
fn check_group(g: &Located<String>) -> Result<(), ConfigFileError> {
    let name = g.value.as_str();
    if name.is_empty() || name.len() > 15 || name.ends_with(|c: char| c.is_ascii_digit()) {
        let message = "group expects a name of 1..15 bytes that does not end in a digit";
        return Err(invalid(&g.at, message));
    }
    Ok(())
}

fn parse_peer<A>(p: &Located<String>, expected: &str) -> Result<A, ConfigFileError>
where
    A: FromStr + Into<IpAddr> + Copy,
{
    let addr = A::from_str(&p.value).map_err(|_| invalid(&p.at, expected))?;
    if addr.into().is_unspecified() {
        return Err(invalid(
            &p.at,
            format!("{expected}, not the unspecified address"),
        ));
    }
    Ok(addr)
}

/// Parse `10`, `10s` (seconds) or `500ms` (milliseconds).
fn parse_timeout(s: &str) -> Option<Duration> {
    let (digits, millis_per_unit) = if let Some(d) = s.strip_suffix("ms") {
        (d, 1)
    } else {
        (s.strip_suffix('s').unwrap_or(s), 1000)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    n.checked_mul(millis_per_unit).map(Duration::from_millis)
}

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
    /// `--user`: run as this user after set-up (not part of [`DaemonConfig`]).
    pub user: Option<String>,
}

impl Overrides {
    /// Apply the flags to a configuration read from a file or the command line.
    pub fn apply(&self, config: &mut DaemonConfig) {
        config.preempt |= self.preempt;
        config.log_level = self.log_level.unwrap_or(config.log_level);
        config.control = self.control.clone().or(config.control.take());
        config.state_dir = self.state_dir.clone().or(config.state_dir.take());
        config.http = self.http.or(config.http);
        config.http_token = self.http_token.clone().or(config.http_token.take());
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod test;
