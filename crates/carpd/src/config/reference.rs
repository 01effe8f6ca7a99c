//! The one table of settings: every command-line word of `carpd run`, every
//! key of the TOML file and the flags that override them.
//!
//! `carpd run --help`, the unknown-keyword message of the word parser and the
//! carpd(8) and carpd.toml(5) pages are all made from [`SETTINGS`]. The tests
//! feed every word and key of the table to the parsers, and compare the keys
//! with the ones the file parser knows, so the table cannot drift from them.

/// Where a setting applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The top level of the file, or a `carpd run` flag.
    Global,
    /// One vhost: a `[[vhost]]` table, or a word on the command line.
    Vhost,
}

/// The TOML type of a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` or `false`.
    Boolean,
    /// A number.
    Integer,
    /// A string.
    String,
    /// An array of strings; the word is repeated instead.
    Strings,
    /// An integer number of seconds, or a string such as `"10s"` or `"500ms"`.
    Duration,
}

impl Kind {
    /// Return the type's name as the pages print it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::String => "string",
            Kind::Strings => "array of strings",
            Kind::Duration => "integer or string",
        }
    }

    /// Return the TOML spelling of the word-form value `v`.
    pub fn toml(self, v: &str) -> String {
        match self {
            Kind::Boolean | Kind::Integer => v.to_string(),
            Kind::String | Kind::Duration => format!("{v:?}"),
            Kind::Strings => format!("[{v:?}]"),
        }
    }
}

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// The TOML key, at the top level or in a `[[vhost]]` table.
    pub key: &'static str,
    /// Where it applies.
    pub scope: Scope,
    /// The ifconfig-style word; `None` for a global key or the addresses.
    pub word: Option<&'static str>,
    /// The `carpd run` flag that overrides the file.
    pub flag: Option<&'static str>,
    /// The value's placeholder after the word or flag.
    pub arg: &'static str,
    /// The TOML type.
    pub kind: Kind,
    /// The accepted values, if narrower than the type.
    pub range: Option<&'static str>,
    /// The value when it is not given; `None` when it is required or "not set"
    /// (what "not set" means is in [`about`](Setting::about)).
    pub default: Option<&'static str>,
    /// A valid value, in the word form (the tests parse it).
    pub example: &'static str,
    /// What it does, in one or two sentences.
    pub about: &'static str,
}

impl Setting {
    /// Return whether the setting must be given.
    pub fn required(&self) -> bool {
        // vhid is required unless carpnodes is given (see its text).
        matches!(self.key, "carpdev" | "addresses")
    }

    /// Return the word with its placeholder, as `advskew N` or `ADDRESS`.
    pub fn synopsis(&self) -> String {
        match self.word {
            Some(w) => format!("{w} {}", self.arg),
            None => self.arg.to_string(),
        }
    }

    /// Return the range, default and requiredness as sentences, or nothing.
    pub fn limits(&self) -> String {
        let mut parts = Vec::new();
        if let Some(r) = self.range {
            parts.push(format!("Range {r}."));
        }
        match (self.required(), self.default) {
            (true, _) if self.kind == Kind::Strings => {
                parts.push("At least one is required.".into())
            }
            (true, _) => parts.push("Required.".into()),
            (false, Some(d)) => parts.push(format!("Default: {d}.")),
            (false, None) => {}
        }
        parts.join(" ")
    }

    /// Return [`about`](Setting::about) followed by [`limits`](Setting::limits).
    pub fn summary(&self) -> String {
        let limits = self.limits();
        if limits.is_empty() {
            self.about.to_string()
        } else {
            format!("{} {limits}", self.about)
        }
    }
}

/// Every setting: the global keys first, then the vhost words and keys in the
/// order of the unknown-keyword message, the addresses last.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "preempt",
        scope: Scope::Global,
        word: None,
        flag: Some("--preempt"),
        arg: "",
        kind: Kind::Boolean,
        range: None,
        default: Some("false"),
        example: "true",
        about: "Take over from a master that advertises less often than this host \
                (net.inet.carp.preempt). The flag can only turn it on.",
    },
    Setting {
        key: "realtime",
        scope: Scope::Global,
        word: None,
        flag: Some("--realtime"),
        arg: "",
        kind: Kind::Boolean,
        range: None,
        default: Some("false"),
        example: "true",
        about: "Run the protocol loop under SCHED_FIFO with the daemon's memory locked, so \
                that CPU hogs and swapping cannot delay advertisements (keepalived's \
                vrrp_rt_priority and vrrp_no_swap). The flag can only turn it on.",
    },
    Setting {
        key: "realtime_priority",
        scope: Scope::Global,
        word: None,
        flag: Some("--realtime-priority"),
        arg: "N",
        kind: Kind::Integer,
        range: Some("1..99"),
        default: Some("10"),
        example: "10",
        about: "The SCHED_FIFO priority of realtime; the flag implies --realtime.",
    },
    Setting {
        key: "log_level",
        scope: Scope::Global,
        word: None,
        flag: Some("--log-level"),
        arg: "N",
        kind: Kind::Integer,
        range: Some("0..7"),
        default: Some("2"),
        example: "2",
        about: "Syslog priority threshold of carp events (net.inet.carp.log): 2 logs only \
                BACKUP/MASTER transitions, 3 adds demotion changes, 4 transitions to and \
                from INIT and send failures, 6 start, stop and hook results.",
    },
    Setting {
        key: "control",
        scope: Scope::Global,
        word: None,
        flag: Some("--control"),
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: Some("/run/carpd/carpd.sock"),
        example: "/run/carpd/carpd.sock",
        about: "Path of the control socket that carpctl talks to.",
    },
    Setting {
        key: "state_dir",
        scope: Scope::Global,
        word: None,
        flag: Some("--state-dir"),
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: Some("/var/lib/carpd"),
        example: "/var/lib/carpd",
        about: "Directory of state kept across restarts: maintenance mode and the record \
                of the addresses carpd has configured.",
    },
    Setting {
        key: "http",
        scope: Scope::Global,
        word: None,
        flag: Some("--http"),
        arg: "ADDR:PORT",
        kind: Kind::String,
        range: None,
        default: None,
        example: "127.0.0.1:8080",
        about: "Serve the status page, JSON API and Prometheus metrics on this address \
                and port; off when not set.",
    },
    Setting {
        key: "http_token",
        scope: Scope::Global,
        word: None,
        flag: Some("--http-token"),
        arg: "TOKEN",
        kind: Kind::String,
        range: None,
        default: None,
        example: "long-random-text",
        about: "Allow changes over HTTP to requests carrying the header \
                Authorization: Bearer TOKEN; without a token HTTP is read-only. \
                Must not be empty.",
    },
    Setting {
        key: "syncdev",
        scope: Scope::Global,
        word: None,
        flag: Some("--syncdev"),
        arg: "IF",
        kind: Kind::String,
        range: None,
        default: None,
        example: "eth2",
        about: "Synchronise connection state over this dedicated interface (OpenBSD's \
                pfsync syncdev): carpd writes an FTFW conntrackd configuration for it. \
                On the command line also the word syncdev IF before the vhost words.",
    },
    Setting {
        key: "syncpeer",
        scope: Scope::Global,
        word: None,
        flag: Some("--syncpeer"),
        arg: "ADDR",
        kind: Kind::String,
        range: None,
        default: None,
        example: "198.18.0.2",
        about: "Send the state to this IPv4 address over UDP instead of multicast on the \
                syncdev. Needs syncdev.",
    },
    Setting {
        key: "conntrackd_config",
        scope: Scope::Global,
        word: None,
        flag: Some("--conntrackd-config"),
        arg: "FILE",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/conntrackd/conntrackd.conf",
        about: "Your own conntrackd configuration: carpd runs only the client commands \
                (conntrackd -C FILE) on each transition. Instead of syncdev.",
    },
    Setting {
        key: "sync_gate",
        scope: Scope::Global,
        word: None,
        flag: Some("--sync-gate"),
        arg: "MODE",
        kind: Kind::String,
        range: Some("open, strict"),
        default: Some("open"),
        example: "strict",
        about: "When the state sync of a takeover fails or times out: open lets the \
                addresses go live anyway (logged and counted); strict stays BACKUP.",
    },
    Setting {
        key: "sync_gate_timeout",
        scope: Scope::Global,
        word: None,
        flag: Some("--sync-gate-timeout"),
        arg: "DURATION",
        kind: Kind::String,
        range: None,
        default: Some("2s"),
        example: "2s",
        about: "How long a takeover waits for the state sync before the gate decides.",
    },
    Setting {
        key: "guard",
        scope: Scope::Global,
        word: None,
        flag: Some("--no-guard"),
        arg: "",
        kind: Kind::Boolean,
        range: None,
        default: Some("true"),
        example: "false",
        about: "Run a small guard process that, should carpd die without stopping (kill -9, \
                a crash), removes its addresses and macvlans and sends the bow-out \
                advertisements a planned stop sends. The flag turns it off.",
    },
    Setting {
        key: "carpdev",
        scope: Scope::Vhost,
        word: Some("carpdev"),
        flag: None,
        arg: "IF",
        kind: Kind::String,
        range: None,
        default: None,
        example: "eth0",
        about: "Parent interface the advertisements are sent and received on: 1 to 15 \
                bytes without /, : or spaces.",
    },
    Setting {
        key: "vhid",
        scope: Scope::Vhost,
        word: Some("vhid"),
        flag: None,
        arg: "N",
        kind: Kind::Integer,
        range: Some("1..255"),
        default: None,
        example: "1",
        about: "Virtual host ID, the same on every host sharing the addresses and unique \
                on the link. Required, unless carpnodes is given instead.",
    },
    Setting {
        key: "carpnodes",
        scope: Scope::Vhost,
        word: Some("carpnodes"),
        flag: None,
        arg: "VHID:ADVSKEW,...",
        kind: Kind::String,
        range: Some("1 to 32 nodes"),
        default: None,
        example: "1:0,2:100",
        about: "OpenBSD load balancing: several nodes, each a vhid with its own advskew \
                and state, sharing the addresses, key and advbase; instead of vhid and \
                advskew. Nodes are sorted by vhid and the first is the leader. Give every \
                host the same vhids, each with advskew 0 on the node it should master.",
    },
    Setting {
        key: "balancing",
        scope: Scope::Vhost,
        word: Some("balancing"),
        flag: None,
        arg: "MODE",
        kind: Kind::String,
        range: Some("none, ip, ip-stealth, ip-unicast, arp"),
        default: Some("none"),
        example: "ip",
        about: "How the nodes split the traffic (see docs/balancing.md): ip hashes source \
                and destination address in the kernel datapath (eBPF), arp answers each \
                requester with the MAC of the node its MAC hashes to. One node forces none; \
                several nodes with none run ip, as on OpenBSD.",
    },
    Setting {
        key: "advbase",
        scope: Scope::Vhost,
        word: Some("advbase"),
        flag: None,
        arg: "N",
        kind: Kind::Integer,
        range: Some("0..255"),
        default: Some("1"),
        example: "1",
        about: "Base of the advertisement interval in seconds; 0 gives intervals of \
                advskew/256 s alone.",
    },
    Setting {
        key: "advskew",
        scope: Scope::Vhost,
        word: Some("advskew"),
        flag: None,
        arg: "N",
        kind: Kind::Integer,
        range: Some("0..254"),
        default: Some("0"),
        example: "100",
        about: "Added to advbase in 1/256 s. The host advertising most often is MASTER, \
                so the lowest advskew wins.",
    },
    Setting {
        key: "pass",
        scope: Scope::Vhost,
        word: Some("pass"),
        flag: None,
        arg: "TEXT",
        kind: Kind::String,
        range: None,
        default: Some("the empty key"),
        example: "secret",
        about: "Passphrase of the advertisements' HMAC, at most 20 bytes; BSD ifconfig \
                and ucarp peers use at most 19. On the command line it shows in ps(1): \
                prefer passfile.",
    },
    Setting {
        key: "passfile",
        scope: Scope::Vhost,
        word: Some("passfile"),
        flag: None,
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/carpd/carpd.key",
        about: "File holding the passphrase, one trailing newline stripped; refused when \
                group or others have any access to it. Excludes pass.",
    },
    Setting {
        key: "lladdr",
        scope: Scope::Vhost,
        word: Some("lladdr"),
        flag: None,
        arg: "virtual|real",
        kind: Kind::String,
        range: None,
        default: Some("virtual"),
        example: "virtual",
        about: "virtual puts the addresses on a macvlan with MAC 00:00:5e:00:01:VHID, as \
                the BSD kernels do; real puts them on the carpdev with its own MAC, as \
                ucarp does.",
    },
    Setting {
        key: "groups",
        scope: Scope::Vhost,
        word: Some("group"),
        flag: None,
        arg: "NAME",
        kind: Kind::Strings,
        range: None,
        default: Some("group carp only"),
        example: "lan",
        about: "Another interface group whose demote counter counts for this vhost \
                (carpctl demote NAME); 1 to 15 bytes, not ending in a digit.",
    },
    Setting {
        key: "peer",
        scope: Scope::Vhost,
        word: Some("peer"),
        flag: None,
        arg: "ADDR",
        kind: Kind::Strings,
        range: None,
        default: Some("224.0.0.18"),
        example: "192.0.2.2",
        about: "Send the IPv4 advertisements to this unicast peer instead of the multicast \
                group, and hear only the peers; repeat for several (a single string also \
                works in the file). TTL is then not checked unless ttl-check on.",
    },
    Setting {
        key: "peer6",
        scope: Scope::Vhost,
        word: Some("peer6"),
        flag: None,
        arg: "ADDR",
        kind: Kind::Strings,
        range: None,
        default: Some("ff02::12"),
        example: "2001:db8::2",
        about: "The same for IPv6; a link-local peer (fe80::) is reached on the carpdev.",
    },
    Setting {
        key: "accept",
        scope: Scope::Vhost,
        word: Some("accept"),
        flag: None,
        arg: "on|off",
        kind: Kind::Boolean,
        range: None,
        default: Some("true"),
        example: "false",
        about: "carpver 3: whether a MASTER that is not the address owner (vrrpprio 255) \
                takes traffic addressed to the addresses (RFC 9568 Accept_Mode); off drops it \
                with an nftables rule, except neighbour discovery.",
    },
    Setting {
        key: "dual_path",
        scope: Scope::Vhost,
        word: Some("dual-path"),
        flag: None,
        arg: "on|off",
        kind: Kind::Boolean,
        range: None,
        default: Some("false"),
        example: "true",
        about: "With peers, advertise to the multicast group too, so a network that \
                drops one path does not make two MASTERs.",
    },
    Setting {
        key: "ttl_check",
        scope: Scope::Vhost,
        word: Some("ttl-check"),
        flag: None,
        arg: "on|off",
        kind: Kind::Boolean,
        range: None,
        default: Some("multicast only"),
        example: "true",
        about: "Drop advertisements whose TTL or hop limit is not 255: by default only \
                those sent to the multicast group (routed unicast peers arrive with less).",
    },
    Setting {
        key: "allow",
        scope: Scope::Vhost,
        word: Some("allow"),
        flag: None,
        arg: "ADDR",
        kind: Kind::Strings,
        range: None,
        default: Some("any source"),
        example: "192.0.2.2",
        about: "Hear advertisements only from this source address; others are dropped \
                and counted as bad_src.",
    },
    Setting {
        key: "up",
        scope: Scope::Vhost,
        word: Some("up"),
        flag: None,
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/carpd/up",
        about: "Executable run after entering MASTER, with the interface and the first \
                address as arguments.",
    },
    Setting {
        key: "down",
        scope: Scope::Vhost,
        word: Some("down"),
        flag: None,
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/carpd/down",
        about: "Executable run after leaving MASTER, with the same arguments as up.",
    },
    Setting {
        key: "pre_master",
        scope: Scope::Vhost,
        word: Some("pre-master"),
        flag: None,
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/carpd/pre-master",
        about: "Executable run inside the pre-master gate, before the addresses go live; \
                a non-zero exit or a kill at the gate deadline fails the gate \
                (sync_gate decides what follows).",
    },
    Setting {
        key: "master",
        scope: Scope::Vhost,
        word: Some("master"),
        flag: None,
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/carpd/master",
        about: "Executable run after becoming MASTER, once the addresses are live.",
    },
    Setting {
        key: "backup",
        scope: Scope::Vhost,
        word: Some("backup"),
        flag: None,
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/carpd/backup",
        about: "Executable run after becoming BACKUP.",
    },
    Setting {
        key: "fault",
        scope: Scope::Vhost,
        word: Some("fault"),
        flag: None,
        arg: "PATH",
        kind: Kind::String,
        range: None,
        default: None,
        example: "/etc/carpd/fault",
        about: "Executable run after a fault (carpdev link down, addresses lost) took \
                the vhost to INIT.",
    },
    Setting {
        key: "master_down",
        scope: Scope::Vhost,
        word: Some("master-down"),
        flag: None,
        arg: "auto|openbsd|freebsd",
        kind: Kind::String,
        range: None,
        default: Some("auto"),
        example: "openbsd",
        about: "When a BACKUP declares a silent master dead: freebsd after 3 x advbase + \
                advskew/256 s, openbsd after 3 advertisement intervals; auto is freebsd \
                for advbase 1 and up, openbsd for advbase 0.",
    },
    Setting {
        key: "hmac",
        scope: Scope::Vhost,
        word: Some("hmac"),
        flag: None,
        arg: "openbsd|freebsd",
        kind: Kind::String,
        range: None,
        default: Some("openbsd"),
        example: "freebsd",
        about: "The HMAC context advertisements are signed with: openbsd leaves \
                link-local IPv6 addresses out, freebsd includes them (a FreeBSD vhid with \
                an fe80:: address needs it). Both are accepted on receive.",
    },
    Setting {
        key: "carpver",
        scope: Scope::Vhost,
        word: Some("carpver"),
        flag: None,
        arg: "2|3",
        kind: Kind::Integer,
        range: Some("2..3"),
        default: Some("2"),
        example: "3",
        about: "The protocol, with FreeBSD 14's word: 2 is CARP, 3 is VRRPv3 (RFC 9568; \
                keepalived vrrp_version 3, FreeBSD carpver 3): no pass, no advbase or \
                advskew, one address family per vhid.",
    },
    Setting {
        key: "vrrpprio",
        scope: Scope::Vhost,
        word: Some("vrrpprio"),
        flag: None,
        arg: "N",
        kind: Kind::Integer,
        range: Some("1..255"),
        default: Some("100"),
        example: "100",
        about: "With carpver 3: the VRRP priority, higher wins; 255 is the address owner, \
                MASTER at once. Group demotion lowers it.",
    },
    Setting {
        key: "vrrpinterval",
        scope: Scope::Vhost,
        word: Some("vrrpinterval"),
        flag: None,
        arg: "CS",
        kind: Kind::Integer,
        range: Some("1..4095"),
        default: Some("100"),
        example: "100",
        about: "With carpver 3: the advertisement interval in centiseconds.",
    },
    Setting {
        key: "vrrp_v6_mac",
        scope: Scope::Vhost,
        word: Some("vrrp-v6-mac"),
        flag: None,
        arg: "rfc|freebsd",
        kind: Kind::String,
        range: None,
        default: Some("rfc"),
        example: "freebsd",
        about: "With carpver 3 and IPv6 addresses: the virtual MAC, RFC 9568's \
                00:00:5e:00:02:VRID or FreeBSD's 00:00:5e:00:01:VRID.",
    },
    Setting {
        key: "hook_timeout",
        scope: Scope::Vhost,
        word: Some("hook-timeout"),
        flag: None,
        arg: "DURATION",
        kind: Kind::Duration,
        range: None,
        default: Some("10s"),
        example: "10s",
        about: "How long a hook may run before it and its process group are \
                killed: seconds (10 or 10s) or milliseconds (500ms), never zero.",
    },
    Setting {
        key: "addresses",
        scope: Scope::Vhost,
        word: None,
        flag: None,
        arg: "ADDRESS",
        kind: Kind::Strings,
        range: None,
        default: None,
        example: "198.51.100.50/24",
        about: "A virtual address with the prefix length of its subnet, such as \
                198.51.100.50/24 or 2001:db8::50/64; a bare address is /32 or /128.",
    },
];

/// Return the settings of `scope`, in table order.
pub fn settings(scope: Scope) -> impl Iterator<Item = &'static Setting> {
    SETTINGS.iter().filter(move |s| s.scope == scope)
}

/// Return the setting with TOML key `key`.
///
/// # Panics
///
/// If the table has no such key (a programming error the tests catch).
pub fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("no setting {key} in the reference table"))
}

/// Return the command-line keywords as the unknown-keyword message lists them.
pub fn keywords() -> String {
    let words: Vec<_> = SETTINGS.iter().filter_map(|s| s.word).collect();
    words.join(", ")
}

/// Return the help of the `carpd run` flag overriding the global key `key`.
pub fn flag_help(key: &str) -> String {
    let s = setting(key);
    match s.default {
        Some(d) if s.kind != Kind::Boolean => format!("{} [default: {d}]", s.about),
        _ => s.about.to_string(),
    }
}

/// How words start new vhosts, for `--help` and carpd(8).
pub const WORD_RULES: &str = "Every word applies to the current vhost. vhid starts a new vhost \
    when the current one already has a vhid, and so does carpdev when the current one already \
    has a vhid and named its carpdev; a new vhost inherits only the carpdev. group and allow \
    may be repeated, and every word that parses as an address is one of the vhost's addresses.";

/// Return the word reference appended to `carpd run --help`.
pub fn words_help() -> String {
    const WIDTH: usize = 80;
    const COLUMN: usize = 26;
    let mut text = String::from("Words (as in ifconfig(8); see carpd(8) and carpd.toml(5)):\n");
    for s in settings(Scope::Vhost) {
        let mut head = format!("  {}", s.synopsis());
        if head.len() + 2 > COLUMN {
            head.push('\n');
            head.push_str(&" ".repeat(COLUMN));
        } else {
            head.push_str(&" ".repeat(COLUMN - head.len()));
        }
        text.push_str(&head);
        text.push_str(&wrap(&s.summary(), WIDTH - COLUMN, COLUMN));
        text.push('\n');
    }
    text.push('\n');
    text.push_str(&wrap(WORD_RULES, WIDTH, 0));
    text.push('\n');
    text
}

/// Wrap `text` at `width` columns, indenting every line but the first by `indent`.
fn wrap(text: &str, width: usize, indent: usize) -> String {
    let mut out = String::new();
    let mut line = 0;
    for word in text.split_whitespace() {
        if line > 0 && line + 1 + word.len() > width {
            out.push('\n');
            out.push_str(&" ".repeat(indent));
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

#[cfg(test)]
mod test {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use carp_proto::config::{MAX_CONFIG_ADVSKEW, Vhid, VhostConfig};

    use super::*;
    use crate::config::{DEFAULT_HOOK_TIMEOUT, DEFAULT_LOG_LEVEL, DEFAULT_STATE_DIR, DaemonConfig};

    /// A passfile of mode 0600 in `dir`, for the `passfile` example.
    fn passfile(dir: &Path) -> String {
        let path = dir.join("carpd.key");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    }

    fn example(s: &Setting, dir: &Path) -> String {
        match s.key {
            "passfile" => passfile(dir),
            _ => s.example.to_string(),
        }
    }

    #[test]
    fn every_word_is_accepted_by_the_word_parser() {
        let dir = tempfile::tempdir().unwrap();
        for s in settings(Scope::Vhost) {
            let mut words = vec!["carpdev", "eth0"];
            if s.key != "carpnodes" {
                words.extend(["vhid", "1"]);
            }
            let value = example(s, dir.path());
            let address = if s.key == "addresses" {
                value.as_str()
            } else {
                "192.0.2.1"
            };
            words.push(address);
            // dual-path refines peers and is refused without one; the
            // VRRP settings refine carpver 3.
            if s.key == "dual_path" {
                words.extend(["peer", "192.0.2.2"]);
            }
            if matches!(
                s.key,
                "vrrpprio" | "vrrpinterval" | "vrrp_v6_mac" | "accept"
            ) {
                words.extend(["carpver", "3"]);
            }
            match s.word {
                Some("carpdev" | "vhid") => {}
                Some(word) => words.extend([word, value.as_str()]),
                None => assert_eq!(s.key, "addresses", "{s:?} has no word"),
            }
            let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
            if let Err(e) = DaemonConfig::from_ifconfig_words(&words) {
                panic!("{words:?}: {e}");
            }
        }
    }

    #[test]
    fn every_key_is_accepted_by_the_file_parser() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carpd.toml");
        for s in SETTINGS {
            let value = s.kind.toml(&example(s, dir.path()));
            let mut vhost = vec![
                ("carpdev", "\"eth0\"".to_string()),
                ("vhid", "1".to_string()),
                ("addresses", "[\"192.0.2.1\"]".to_string()),
            ];
            let mut global = String::new();
            match s.scope {
                Scope::Global => {
                    global = format!("{} = {value}\n", s.key);
                    // These refine a syncdev and are refused without one.
                    if matches!(s.key, "syncpeer" | "sync_gate" | "sync_gate_timeout") {
                        global.push_str("syncdev = \"eth2\"\n");
                    }
                    if s.key == "realtime_priority" {
                        global.push_str("realtime = true\n");
                    }
                }
                Scope::Vhost => {
                    // carpnodes replaces vhid.
                    vhost.retain(|(k, _)| *k != s.key && !(s.key == "carpnodes" && *k == "vhid"));
                    vhost.push((s.key, value));
                    if s.key == "dual_path" {
                        vhost.push(("peer", "\"192.0.2.2\"".to_string()));
                    }
                    if matches!(
                        s.key,
                        "vrrpprio" | "vrrpinterval" | "vrrp_v6_mac" | "accept"
                    ) {
                        vhost.push(("carpver", "3".to_string()));
                    }
                }
            }
            let vhost: String = vhost.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            let text = format!("{global}[[vhost]]\n{vhost}");
            if let Err(e) = DaemonConfig::from_toml_str(&text, &path) {
                panic!("{text}: {e}");
            }
        }
    }

    /// Return the field names serde lists when `text` has an unknown key.
    fn known_keys(text: &str) -> BTreeSet<String> {
        let err = DaemonConfig::from_toml_str(text, Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        let (_, expected) = err.split_once("expected").expect(&err);
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    }

    #[test]
    fn the_table_has_every_key_of_the_file_parser() {
        let table = |scope| settings(scope).map(|s| s.key.to_string()).collect();
        let mut global = known_keys("no_such_key = 1\n");
        assert!(global.remove("vhost"), "{global:?}");
        assert_eq!(global, table(Scope::Global));
        let vhost = known_keys("[[vhost]]\nno_such_key = 1\n");
        assert_eq!(vhost, table(Scope::Vhost));
    }

    #[test]
    fn defaults_are_the_codes() {
        let default = |key| setting(key).default.unwrap();
        let proto = VhostConfig::new(Vhid::new(1).unwrap(), &[]);
        assert_eq!(default("advbase"), proto.advbase.0.to_string());
        assert_eq!(default("advskew"), proto.advskew.0.to_string());
        let max = MAX_CONFIG_ADVSKEW;
        assert_eq!(setting("advskew").range, Some(format!("0..{max}").as_str()));
        assert_eq!(default("log_level"), DEFAULT_LOG_LEVEL.to_string());
        assert_eq!(default("state_dir"), DEFAULT_STATE_DIR);
        let control = crate::control::default_path();
        assert_eq!(Path::new(default("control")), control);
        let timeout = crate::config::draft::parse_timeout(default("hook_timeout"));
        assert_eq!(timeout, Some(DEFAULT_HOOK_TIMEOUT));
    }

    #[test]
    fn help_lists_every_word_within_80_columns() {
        let help = words_help();
        for s in settings(Scope::Vhost) {
            assert!(help.contains(&format!("\n  {}", s.synopsis())), "{help}");
        }
        for line in help.lines() {
            assert!(line.len() <= 80, "{line:?}");
        }
    }
}
