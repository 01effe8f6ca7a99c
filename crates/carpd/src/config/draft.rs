//! The two front ends of the configuration and their validation: the TOML
//! file format, the command-line words, and the per-vhost draft both fill.

#![allow(unused_imports)]

use super::*;

// ===== file format =====

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) preempt: bool,
    pub(super) log_level: Option<Spanned<i64>>,
    pub(super) control: Option<Spanned<PathBuf>>,
    pub(super) state_dir: Option<Spanned<PathBuf>>,
    pub(super) http: Option<Spanned<String>>,
    pub(super) http_token: Option<Spanned<String>>,
    pub(super) syncdev: Option<Spanned<String>>,
    pub(super) syncpeer: Option<Spanned<String>>,
    pub(super) conntrackd_config: Option<Spanned<PathBuf>>,
    pub(super) sync_gate: Option<Spanned<String>>,
    pub(super) sync_gate_timeout: Option<Spanned<String>>,
    pub(super) guard: Option<bool>,
    #[serde(default)]
    pub(super) realtime: bool,
    pub(super) realtime_priority: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) vhost: Vec<FileVhost>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileVhost {
    pub(super) carpdev: Spanned<String>,
    pub(super) vhid: Option<Spanned<i64>>,
    /// OpenBSD `carpnodes vhid:advskew,...`, instead of vhid and advskew.
    pub(super) carpnodes: Option<Spanned<String>>,
    pub(super) balancing: Option<Spanned<String>>,
    pub(super) advbase: Option<Spanned<i64>>,
    pub(super) advskew: Option<Spanned<i64>>,
    pub(super) pass: Option<Spanned<String>>,
    pub(super) passfile: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub(super) addresses: Vec<Spanned<String>>,
    pub(super) lladdr: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) groups: Vec<Spanned<String>>,
    pub(super) up: Option<Spanned<PathBuf>>,
    pub(super) down: Option<Spanned<PathBuf>>,
    pub(super) pre_master: Option<Spanned<PathBuf>>,
    pub(super) master: Option<Spanned<PathBuf>>,
    pub(super) backup: Option<Spanned<PathBuf>>,
    pub(super) fault: Option<Spanned<PathBuf>>,
    /// An integer number of seconds, or a string `"10s"`, `"500ms"`, `"10"`.
    pub(super) hook_timeout: Option<Spanned<toml::Value>>,
    /// One address, or an array of them.
    pub(super) peer: Option<Spanned<toml::Value>>,
    peer6: Option<Spanned<toml::Value>>,
    pub(super) dual_path: Option<Spanned<bool>>,
    pub(super) ttl_check: Option<Spanned<bool>>,
    #[serde(default)]
    pub(super) allow: Vec<Spanned<String>>,
    pub(super) master_down: Option<Spanned<String>>,
    pub(super) hmac: Option<Spanned<String>>,
    pub(super) carpver: Option<Spanned<i64>>,
    pub(super) vrrpprio: Option<Spanned<i64>>,
    pub(super) vrrpinterval: Option<Spanned<i64>>,
    pub(super) vrrp_v6_mac: Option<Spanned<String>>,
    pub(super) accept: Option<Spanned<bool>>,
}

/// A string, or an array of strings, as located strings (anything else
/// becomes a string no address parses, refused later at its place).
fn one_or_many(loc: &Locator<'_>, v: Spanned<toml::Value>) -> Vec<Located<String>> {
    let at = loc.one(v.clone()).at;
    let text = |v: &toml::Value| v.as_str().unwrap_or("(not a string)").to_string();
    match v.into_inner() {
        toml::Value::Array(items) => items
            .iter()
            .map(|i| Located {
                value: text(i),
                at: at.clone(),
            })
            .collect(),
        other => vec![Located {
            value: text(&other),
            at,
        }],
    }
}

impl FileVhost {
    pub(super) fn into_draft(self, loc: &Locator<'_>) -> Draft {
        let carpdev = loc.one(self.carpdev);
        Draft {
            // A table without vhid or carpnodes is reported at its carpdev line.
            start: Some(carpdev.at.clone()),
            carpdev: Some(carpdev),
            vhid: loc.opt(self.vhid),
            carpnodes: loc.opt(self.carpnodes),
            balancing: loc.opt(self.balancing),
            advbase: loc.opt(self.advbase),
            advskew: loc.opt(self.advskew),
            pass: self.pass.map(|v| loc.one(v).map(String::into_bytes)),
            passfile: loc.opt(self.passfile),
            addresses: self.addresses.into_iter().map(|v| loc.one(v)).collect(),
            lladdr: loc.opt(self.lladdr),
            groups: self.groups.into_iter().map(|v| loc.one(v)).collect(),
            up: loc.opt(self.up),
            down: loc.opt(self.down),
            pre_master: loc.opt(self.pre_master),
            master: loc.opt(self.master),
            backup: loc.opt(self.backup),
            fault: loc.opt(self.fault),
            hook_timeout: self.hook_timeout.map(|v| {
                loc.one(v).map(|v| match v {
                    toml::Value::Integer(secs) => u64::try_from(secs).ok().map(Duration::from_secs),
                    toml::Value::String(s) => parse_timeout(&s),
                    _ => None,
                })
            }),
            peer: self.peer.map(|v| one_or_many(loc, v)).unwrap_or_default(),
            peer6: self.peer6.map(|v| one_or_many(loc, v)).unwrap_or_default(),
            dual_path: loc.opt(self.dual_path),
            ttl_check: loc.opt(self.ttl_check),
            allow: self.allow.into_iter().map(|v| loc.one(v)).collect(),
            master_down: loc.opt(self.master_down),
            hmac: loc.opt(self.hmac),
            carpver: loc.opt(self.carpver),
            vrrpprio: loc.opt(self.vrrpprio),
            vrrpinterval: loc.opt(self.vrrpinterval),
            vrrp_v6_mac: loc.opt(self.vrrp_v6_mac),
            accept: loc.opt(self.accept),
            ..Draft::default()
        }
    }
}

/// Turns toml byte spans into file locations.
pub(super) struct Locator<'a> {
    pub(super) text: &'a str,
    pub(super) path: &'a Path,
}

impl Locator<'_> {
    /// Return the 1-based line and character column of byte `offset`.
    pub(super) fn at(&self, offset: usize) -> Location {
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

    pub(super) fn one<T>(&self, v: Spanned<T>) -> Located<T> {
        let at = self.at(v.span().start);
        Located {
            value: v.into_inner(),
            at,
        }
    }

    pub(super) fn opt<T>(&self, v: Option<Spanned<T>>) -> Option<Located<T>> {
        v.map(|v| self.one(v))
    }
}

pub(super) fn resolve(base: Option<&Path>, path: PathBuf) -> PathBuf {
    match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    }
}

// ===== command-line words =====

pub(super) fn parse_words(words: &[String]) -> Result<Vec<Draft>, ConfigFileError> {
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
                if cur.carpdev.is_some() && !cur.carpdev_inherited && cur.has_identity() {
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
                if cur.carpnodes.is_some() && cur.addresses.is_empty() {
                    return Err(invalid(&here, REPLACES_VHID));
                }
                if cur.has_identity() {
                    let mut next = new_draft(here);
                    next.carpdev = cur.carpdev.clone();
                    next.carpdev_inherited = true;
                    drafts.push(std::mem::replace(&mut cur, next));
                }
                cur.vhid = Some(vhid);
            }
            "carpnodes" => {
                let nodes = value("a list like 1:0,2:100")?;
                // `vhid 1 carpnodes ...` is one vhost spelt twice, not two.
                if cur.vhid.is_some() && cur.addresses.is_empty() {
                    return Err(invalid(&here, REPLACES_VHID));
                }
                if cur.has_identity() {
                    let mut next = new_draft(here);
                    next.carpdev = cur.carpdev.clone();
                    next.carpdev_inherited = true;
                    drafts.push(std::mem::replace(&mut cur, next));
                }
                cur.carpnodes = Some(nodes);
            }
            "balancing" => set_once(
                &mut cur.balancing,
                value("none, ip, ip-stealth, ip-unicast or arp")?,
                keyword,
            )?,
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
            "peer" => cur.peer.push(value("an IPv4 address")?),
            "peer6" => cur.peer6.push(value("an IPv6 address")?),
            "dual-path" | "ttl-check" | "accept" => {
                let v = value("on or off")?;
                let on = match v.value.as_str() {
                    "on" | "true" => true,
                    "off" | "false" => false,
                    _ => return Err(invalid(&v.at, format!("{keyword} expects on or off"))),
                };
                let slot = match keyword {
                    "dual-path" => &mut cur.dual_path,
                    "ttl-check" => &mut cur.ttl_check,
                    _ => &mut cur.accept,
                };
                set_once(
                    slot,
                    Located {
                        value: on,
                        at: v.at,
                    },
                    keyword,
                )?;
            }
            "allow" => cur.allow.push(value("a peer's source address")?),
            "up" | "down" | "pre-master" | "master" | "backup" | "fault" => {
                let path = value("a script path")?.map(PathBuf::from);
                let slot = match keyword {
                    "up" => &mut cur.up,
                    "down" => &mut cur.down,
                    "pre-master" => &mut cur.pre_master,
                    "master" => &mut cur.master,
                    "backup" => &mut cur.backup,
                    _ => &mut cur.fault,
                };
                set_once(slot, path, keyword)?;
            }
            "master-down" => set_once(
                &mut cur.master_down,
                value("auto, openbsd or freebsd")?,
                keyword,
            )?,
            "hmac" => set_once(&mut cur.hmac, value("auto, openbsd or freebsd")?, keyword)?,
            "carpver" | "vrrpprio" | "vrrpinterval" => {
                let v = number(value("a number")?, &format!("{keyword} expects a number"))?;
                let slot = match keyword {
                    "carpver" => &mut cur.carpver,
                    "vrrpprio" => &mut cur.vrrpprio,
                    _ => &mut cur.vrrpinterval,
                };
                set_once(slot, v, keyword)?;
            }
            "vrrp-v6-mac" => set_once(&mut cur.vrrp_v6_mac, value("rfc or freebsd")?, keyword)?,
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
                let message = format!(
                    "unknown keyword, expected one of {} or an address",
                    reference::keywords()
                );
                return Err(invalid(&here, message));
            }
        }
        i += 1;
    }
    drafts.push(cur);
    Ok(drafts)
}

pub(super) fn word_location(index: usize, word: &str) -> Location {
    Location::Word {
        position: index + 1,
        word: word.to_string(),
    }
}

pub(super) fn number(v: Located<String>, expected: &str) -> Result<Located<i64>, ConfigFileError> {
    match v.value.parse::<i64>() {
        Ok(n) => Ok(Located { value: n, at: v.at }),
        Err(_) => Err(invalid(&v.at, expected)),
    }
}

pub(super) fn set_once<T>(
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
pub(super) struct Located<T> {
    pub(super) value: T,
    pub(super) at: Location,
}

impl<T> Located<T> {
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Located<U> {
        Located {
            value: f(self.value),
            at: self.at,
        }
    }
}

pub(super) fn invalid(at: &Location, message: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Invalid {
        at: at.clone(),
        message: message.into(),
    }
}

/// The VRRPv3 words of one vhost, taken out before the draft is consumed.
struct VrrpSettings {
    carpver: Option<Located<i64>>,
    priority: Option<Located<i64>>,
    interval: Option<Located<i64>>,
    v6_mac: Option<Located<String>>,
    accept: Option<Located<bool>>,
    /// Where advbase or advskew was given (CARP's timing, not VRRP's).
    timing_at: Option<Location>,
    /// Where pass or passfile was given (VRRPv3 has no authentication).
    pass_at: Option<Location>,
}

impl VrrpSettings {
    /// `Some` VRRP parameters with `carpver 3`, `None` for CARP, and the
    /// Accept_Mode; the VRRP words without it, and CARP's timing or key with
    /// it, are refused.
    fn check(self, words: bool) -> Result<(Option<VrrpParams>, bool), ConfigFileError> {
        let key = |file: &'static str, word: &'static str| if words { word } else { file };
        let version = match &self.carpver {
            None => 2,
            Some(v) => in_range("carpver", v, 2, 3)?,
        };
        if version == 2 {
            let given = [
                self.priority.as_ref().map(|v| (&v.at, "vrrpprio")),
                self.interval.as_ref().map(|v| (&v.at, "vrrpinterval")),
                self.v6_mac
                    .as_ref()
                    .map(|v| (&v.at, key("vrrp_v6_mac", "vrrp-v6-mac"))),
                self.accept.as_ref().map(|v| (&v.at, "accept")),
            ];
            if let Some((at, name)) = given.into_iter().flatten().next() {
                return Err(invalid(at, format!("{name} needs carpver 3 (VRRPv3)")));
            }
            return Ok((None, true));
        }
        if let Some(at) = &self.timing_at {
            return Err(invalid(
                at,
                "carpver 3 (VRRPv3) takes vrrpprio and vrrpinterval, not advbase or advskew",
            ));
        }
        if let Some(at) = &self.pass_at {
            return Err(invalid(
                at,
                "carpver 3 (VRRPv3) has no authentication: drop the pass",
            ));
        }
        let mut params = VrrpParams::default();
        if let Some(v) = &self.priority {
            params.priority = in_range("vrrpprio", v, 1, 255)?;
        }
        if let Some(v) = &self.interval {
            params.interval_cs = u16::try_from(v.value)
                .ok()
                .filter(|n| (1..=carp_proto::wire::vrrp::MAX_INTERVAL_CS).contains(n))
                .ok_or_else(|| {
                    invalid(
                        &v.at,
                        format!(
                            "vrrpinterval {} is out of range 1..4095 (centiseconds)",
                            v.value
                        ),
                    )
                })?;
        }
        if let Some(v) = &self.v6_mac {
            params.v6_mac_freebsd = match v.value.as_str() {
                "rfc" => false,
                "freebsd" => true,
                _ => {
                    let name = key("vrrp_v6_mac", "vrrp-v6-mac");
                    return Err(invalid(&v.at, format!("{name} expects rfc or freebsd")));
                }
            };
        }
        let accept = self.accept.as_ref().is_none_or(|a| a.value);
        if let Some(a) = self
            .accept
            .as_ref()
            .filter(|_| !accept && params.priority == 255)
        {
            return Err(invalid(
                &a.at,
                "accept off does not apply to vrrpprio 255: the address owner always accepts",
            ));
        }
        Ok((Some(params), accept))
    }
}

const REPLACES_VHID: &str = "carpnodes replaces vhid and advskew: give one or the other";

/// One vhost as written, before validation.
#[derive(Default)]
pub(super) struct Draft {
    /// Where the vhost starts: its first word, or its `carpdev` line in a file.
    pub(super) start: Option<Location>,
    /// Whether this came from command-line words (for key spellings in messages).
    pub(super) words: bool,
    pub(super) carpdev: Option<Located<String>>,
    pub(super) carpdev_inherited: bool,
    pub(super) vhid: Option<Located<i64>>,
    pub(super) carpnodes: Option<Located<String>>,
    pub(super) balancing: Option<Located<String>>,
    pub(super) advbase: Option<Located<i64>>,
    pub(super) advskew: Option<Located<i64>>,
    pub(super) pass: Option<Located<Vec<u8>>>,
    pub(super) passfile: Option<Located<PathBuf>>,
    pub(super) addresses: Vec<Located<String>>,
    pub(super) lladdr: Option<Located<String>>,
    pub(super) groups: Vec<Located<String>>,
    pub(super) up: Option<Located<PathBuf>>,
    pub(super) down: Option<Located<PathBuf>>,
    pub(super) pre_master: Option<Located<PathBuf>>,
    pub(super) master: Option<Located<PathBuf>>,
    pub(super) backup: Option<Located<PathBuf>>,
    pub(super) fault: Option<Located<PathBuf>>,
    /// `None` inside means the text was not a duration.
    pub(super) hook_timeout: Option<Located<Option<Duration>>>,
    pub(super) peer: Vec<Located<String>>,
    peer6: Vec<Located<String>>,
    pub(super) dual_path: Option<Located<bool>>,
    pub(super) ttl_check: Option<Located<bool>>,
    pub(super) allow: Vec<Located<String>>,
    pub(super) master_down: Option<Located<String>>,
    pub(super) hmac: Option<Located<String>>,
    pub(super) carpver: Option<Located<i64>>,
    pub(super) vrrpprio: Option<Located<i64>>,
    pub(super) vrrpinterval: Option<Located<i64>>,
    pub(super) vrrp_v6_mac: Option<Located<String>>,
    pub(super) accept: Option<Located<bool>>,
}

/// A validated vhost with the locations needed for cross-vhost checks.
pub(super) struct Checked {
    pub(super) spec: VhostSpec,
    pub(super) vhid_at: Location,
    pub(super) address_at: Vec<Location>,
}

impl Draft {
    /// A vhid or a carpnodes list was given: the next one starts a new vhost.
    fn has_identity(&self) -> bool {
        self.vhid.is_some() || self.carpnodes.is_some()
    }

    pub(super) fn finish(self, base: Option<&Path>) -> Result<Checked, ConfigFileError> {
        // The spelling of the keys that differ between the file and the words.
        let words = self.words;
        let vrrp_settings = VrrpSettings {
            carpver: self.carpver.clone(),
            priority: self.vrrpprio.clone(),
            interval: self.vrrpinterval.clone(),
            v6_mac: self.vrrp_v6_mac.clone(),
            accept: self.accept.clone(),
            timing_at: self
                .advbase
                .as_ref()
                .or(self.advskew.as_ref())
                .map(|v| v.at.clone()),
            pass_at: self
                .pass
                .as_ref()
                .map(|p| p.at.clone())
                .or_else(|| self.passfile.as_ref().map(|p| p.at.clone())),
        };
        let key = move |file: &'static str, word: &'static str| if words { word } else { file };
        let (vhid_at, nodes) = match (self.vhid, self.carpnodes) {
            (Some(_), Some(n)) => {
                return Err(invalid(&n.at, REPLACES_VHID));
            }
            (None, Some(n)) => {
                if let Some(skew) = &self.advskew {
                    return Err(invalid(
                        &skew.at,
                        "with carpnodes each node has its own advskew (vhid:advskew)",
                    ));
                }
                let nodes = parse_carpnodes(&n)?;
                let leader = Located {
                    value: i64::from(nodes[0].vhid.get()),
                    at: n.at,
                };
                (leader, Some(nodes))
            }
            (Some(v), None) => (v, None),
            (None, None) => {
                let start = self.start.unwrap_or(Location::CommandLine);
                return Err(invalid(&start, "this vhost has no vhid (or carpnodes)"));
            }
        };
        let vhid = Vhid::new(in_range("vhid", &vhid_at, 1, 255)?)
            .ok_or_else(|| invalid(&vhid_at.at, ConfigError::VhidZero.to_string()))?;
        let balancing = match self.balancing {
            Some(b) => Balancing::from_str(&b.value)
                .map_err(|e| invalid(&b.at, format!("balancing {:?}: {e}", b.value)))?,
            None => Balancing::None,
        };
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
        let nodes = nodes.unwrap_or_else(|| {
            vec![CarpNode {
                vhid,
                advskew: proto.advskew,
            }]
        });
        proto.advskew = nodes[0].advskew;
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
                "auto" => MasterDownFormula::Auto,
                "openbsd" => MasterDownFormula::Openbsd,
                "freebsd" => MasterDownFormula::Freebsd,
                _ => {
                    let message = format!(
                        "{} expects auto, openbsd or freebsd",
                        key("master_down", "master-down")
                    );
                    return Err(invalid(&v.at, message));
                }
            };
        }
        if let Some(v) = self.hmac {
            proto.hmac = match v.value.as_str() {
                "openbsd" => HmacContext::Openbsd,
                "freebsd" => HmacContext::Freebsd,
                _ => return Err(invalid(&v.at, "hmac expects openbsd or freebsd")),
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
            pre_master: self.pre_master.map(|p| resolve(base, p.value)),
            master: self.master.map(|p| resolve(base, p.value)),
            backup: self.backup.map(|p| resolve(base, p.value)),
            fault: self.fault.map(|p| resolve(base, p.value)),
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
        let mut peers = Vec::new();
        for p in &self.peer {
            let a = parse_peer::<Ipv4Addr>(p, "peer expects an IPv4 address")?;
            if !peers.contains(&IpAddr::V4(a)) {
                peers.push(IpAddr::V4(a));
            }
        }
        for p in &self.peer6 {
            let a = parse_peer::<Ipv6Addr>(p, "peer6 expects an IPv6 address")?;
            if !peers.contains(&IpAddr::V6(a)) {
                peers.push(IpAddr::V6(a));
            }
        }
        let dual_path = self.dual_path.as_ref().is_some_and(|d| d.value);
        if dual_path && peers.is_empty() {
            let at = self.dual_path.map(|d| d.at).unwrap_or(vhid_at.at.clone());
            let name = key("dual_path", "dual-path");
            return Err(invalid(&at, format!("{name} needs a peer or peer6")));
        }
        let allow = self
            .allow
            .iter()
            .map(|a| parse_peer::<IpAddr>(a, "allow expects an IPv4 or IPv6 address"))
            .collect::<Result<Vec<_>, _>>()?;
        let (vrrp, accept) = vrrp_settings.check(words)?;
        let carpdev = carpdev.value;
        let spec = VhostSpec {
            carpdev,
            nodes,
            balancing,
            lladdr,
            addresses,
            hooks,
            peers,
            dual_path,
            ttl_check: self.ttl_check.map(|t| t.value),
            vrrp,
            accept,
            allow,
            proto,
        };
        // What the carp interface as a whole needs (VRRP: one node, one family).
        if let Err(e) = spec.carp_if_config().validate() {
            return Err(invalid(&vhid_at.at, e.to_string()));
        }
        Ok(Checked {
            spec,
            vhid_at: vhid_at.at,
            address_at,
        })
    }
}

/// Validate every draft, then refuse duplicate vhids per carpdev and duplicate addresses.
pub(super) fn finish_all(
    drafts: Vec<Draft>,
    base: Option<&Path>,
) -> Result<Vec<VhostSpec>, ConfigFileError> {
    let checked = drafts
        .into_iter()
        .map(|d| d.finish(base))
        .collect::<Result<Vec<_>, _>>()?;
    let mut vhids: HashMap<(&str, Vhid), &Location> = HashMap::new();
    let mut addrs: HashMap<IpAddr, (&Checked, &Location)> = HashMap::new();
    for c in &checked {
        for node in &c.spec.nodes {
            let key = (c.spec.carpdev.as_str(), node.vhid);
            if let Some(first) = vhids.insert(key, &c.vhid_at) {
                let message = format!(
                    "vhid {} on {} is already configured at {first}",
                    key.1, key.0
                );
                return Err(invalid(&c.vhid_at, message));
            }
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

/// Parse OpenBSD `carpnodes vhid:advskew[,vhid:advskew...]`: at most 32
/// nodes, each vhid once, sorted by vhid (`carp_vhids_ioctl`).
pub(super) fn parse_carpnodes(v: &Located<String>) -> Result<Vec<CarpNode>, ConfigFileError> {
    let mut nodes: Vec<CarpNode> = Vec::new();
    for item in v.value.split(',') {
        let Some((vhid, skew)) = item.trim().split_once(':') else {
            let message =
                format!("carpnodes expects vhid:advskew pairs like 1:0,2:100, not {item:?}");
            return Err(invalid(&v.at, message));
        };
        let number_in = |text: &str, name: &str, lo: u8, hi: u8| {
            text.trim()
                .parse::<u8>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| {
                    invalid(
                        &v.at,
                        format!("carpnodes {item:?}: {name} {text:?} is out of range {lo}..{hi}"),
                    )
                })
        };
        let vhid = number_in(vhid, "vhid", 1, 255)?;
        let advskew = number_in(skew, "advskew", 0, MAX_CONFIG_ADVSKEW)?;
        let Some(vhid) = Vhid::new(vhid) else {
            return Err(invalid(&v.at, ConfigError::VhidZero.to_string()));
        };
        if nodes.iter().any(|n| n.vhid == vhid) {
            return Err(invalid(&v.at, format!("carpnodes names vhid {vhid} twice")));
        }
        nodes.push(CarpNode {
            vhid,
            advskew: AdvSkew(advskew),
        });
    }
    if nodes.len() > carp_proto::config::MAX_NODES {
        let message = format!(
            "carpnodes has {} nodes, at most {} are allowed",
            nodes.len(),
            carp_proto::config::MAX_NODES
        );
        return Err(invalid(&v.at, message));
    }
    nodes.sort_by_key(|n| n.vhid);
    Ok(nodes)
}

pub(super) fn in_range(
    name: &str,
    v: &Located<i64>,
    lo: u8,
    hi: u8,
) -> Result<u8, ConfigFileError> {
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
pub(super) fn passphrase(bytes: &[u8]) -> Result<Passphrase, String> {
    Passphrase::new(bytes).map_err(|e| e.to_string())
}

/// Read the passphrase from `file`: its content with one trailing newline stripped.
///
/// The mode is checked on the opened file, so it is the one actually read.
pub(super) fn read_passfile(at: &Location, file: &Path) -> Result<Passphrase, ConfigFileError> {
    let read_err = |reason| ConfigFileError::PassfileRead {
        at: at.clone(),
        file: file.into(),
        reason,
    };
    // A FIFO or device would block or never end: open without blocking,
    // refuse anything but a regular file, and read at most 64 KiB.
    let f = super::open_regular(file).map_err(|e| match e {
        super::OpenError::Io(e) => read_err(e),
        super::OpenError::NotRegular(kind) => invalid(
            at,
            format!(
                "passfile {} is not a regular file (it is a {kind})",
                file.display()
            ),
        ),
    })?;
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
pub(super) fn check_ifname(dev: &Located<String>) -> Result<(), ConfigFileError> {
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
pub(super) fn check_group(g: &Located<String>) -> Result<(), ConfigFileError> {
    let name = g.value.as_str();
    if name.is_empty() || name.len() > 15 || name.ends_with(|c: char| c.is_ascii_digit()) {
        let message = "group expects a name of 1..15 bytes that does not end in a digit";
        return Err(invalid(&g.at, message));
    }
    Ok(())
}

pub(super) fn parse_peer<A>(p: &Located<String>, expected: &str) -> Result<A, ConfigFileError>
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
pub(super) fn parse_timeout(s: &str) -> Option<Duration> {
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
