//! The settings page's write path: add, edit and remove `[[vhost]]` tables
//! in the TOML file the daemon was started with, then reload.
//!
//! An edit is applied to the file's text with `toml_edit` (comments, order
//! and keys the form does not know stay as they are), and the whole new text
//! is validated by [`DaemonConfig::from_toml_str`], the code a start or a
//! reload runs, before anything is written. An error that points into the
//! edited table is reported against the form field of its key. The new file
//! replaces the old one atomically ([`write_atomically`]); the previous one
//! is kept as `FILE.bak`. Then the daemon reloads, as on SIGHUP.
//!
//! A form only sees the file as it was when it loaded it: every change
//! carries the `version` it was shown (a keyed hash of the text), and a file
//! changed since is refused, so two editors never overwrite each other.

use std::collections::BTreeMap;
use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::BuildHasher;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};
use toml_edit::{Array, DocumentMut, Item, Table, value};

use crate::config::{ConfigFileError, DaemonConfig, Location};

/// One vhost as the form shows it (never its passphrase).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VhostForm {
    /// Parent interface.
    pub carpdev: String,
    /// vhid.
    pub vhid: i64,
    /// Addresses with netmask, as written in the file.
    pub addresses: Vec<String>,
    /// advbase, if set in the file.
    pub advbase: Option<i64>,
    /// advskew, if set in the file.
    pub advskew: Option<i64>,
    /// A `pass` or `passfile` is set.
    pub has_pass: bool,
}

/// The file as the form shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// The file's path.
    pub file: PathBuf,
    /// A hash of its text; a change must carry it back.
    pub version: String,
    /// The host-wide `preempt`.
    pub preempt: bool,
    /// Every `[[vhost]]` table, in file order.
    pub vhosts: Vec<VhostForm>,
}

/// The form's fields, all text, so that a bad number is reported against
/// its field rather than as a malformed request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fields {
    /// Parent interface.
    pub carpdev: String,
    /// vhid.
    pub vhid: String,
    /// Addresses with netmask, separated by commas or white space.
    pub addresses: String,
    /// A new passphrase; empty keeps the current `pass` or `passfile`.
    #[serde(default)]
    pub pass: String,
    /// advbase; empty leaves the default.
    #[serde(default)]
    pub advbase: String,
    /// advskew; empty leaves the default.
    #[serde(default)]
    pub advskew: String,
}

/// What the form asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase", deny_unknown_fields)]
pub enum Change {
    /// Append a new `[[vhost]]`.
    Add {
        /// The file version the form was shown.
        version: String,
        /// The new vhost.
        vhost: Fields,
        /// The host-wide `preempt`, if the form sets it.
        preempt: Option<bool>,
    },
    /// Change the vhost `carpdev`/`vhid` in place.
    Edit {
        /// The file version the form was shown.
        version: String,
        /// The vhost's carpdev before the edit.
        carpdev: String,
        /// The vhost's vhid before the edit.
        vhid: i64,
        /// Its new fields.
        vhost: Fields,
        /// The host-wide `preempt`, if the form sets it.
        preempt: Option<bool>,
    },
    /// Remove the vhost `carpdev`/`vhid`.
    Remove {
        /// The file version the form was shown.
        version: String,
        /// Its carpdev.
        carpdev: String,
        /// Its vhid.
        vhid: i64,
    },
}

/// Why a change was not written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Rejected {
    /// A sentence for the whole form.
    pub error: String,
    /// Sentences for single fields, by field name (`vhid`, `advskew`, ...).
    pub fields: BTreeMap<String, String>,
    /// The file changed since the form loaded it.
    pub stale: bool,
}

impl Rejected {
    fn new(error: impl Into<String>) -> Rejected {
        Rejected {
            error: error.into(),
            ..Rejected::default()
        }
    }

    fn field(name: &str, message: impl Into<String>) -> Rejected {
        let message = message.into();
        let mut fields = BTreeMap::new();
        fields.insert(name.to_owned(), message.clone());
        Rejected {
            error: format!("{name}: {message}"),
            fields,
            stale: false,
        }
    }
}

/// The form fields, in the order they are written into a new table.
const FORM_KEYS: [&str; 6] = ["carpdev", "vhid", "addresses", "pass", "advbase", "advskew"];

/// A version of the file's text for the form. The text holds passphrases and
/// the version is shown without a token, so the hash is keyed with a random
/// key drawn once per process: it cannot be used to guess a passphrase.
fn version_of(text: &str) -> String {
    static KEY: OnceLock<RandomState> = OnceLock::new();
    format!("{:016x}", KEY.get_or_init(RandomState::new).hash_one(text))
}

fn read(path: &Path) -> Result<String, Rejected> {
    crate::config::read_text(path).map_err(|e| Rejected::new(e.to_string()))
}

fn parse(text: &str, path: &Path) -> Result<DocumentMut, Rejected> {
    text.parse::<DocumentMut>()
        .map_err(|e| Rejected::new(format!("{} is not valid TOML: {e}", path.display())))
}

/// Read the file at `path` for the form (blocking: call off the runtime).
pub fn load(path: &Path) -> Result<Settings, Rejected> {
    let text = read(path)?;
    let doc = parse(&text, path)?;
    let vhosts = doc
        .get("vhost")
        .and_then(Item::as_array_of_tables)
        .map(|a| a.iter().map(form_of).collect())
        .unwrap_or_default();
    Ok(Settings {
        file: path.into(),
        version: version_of(&text),
        preempt: doc.get("preempt").and_then(Item::as_bool).unwrap_or(false),
        vhosts,
    })
}

fn form_of(t: &Table) -> VhostForm {
    let int = |k| t.get(k).and_then(Item::as_integer);
    VhostForm {
        carpdev: t
            .get("carpdev")
            .and_then(Item::as_str)
            .unwrap_or_default()
            .to_owned(),
        vhid: int("vhid").unwrap_or(0),
        addresses: t
            .get("addresses")
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        advbase: int("advbase"),
        advskew: int("advskew"),
        has_pass: t.contains_key("pass") || t.contains_key("passfile"),
    }
}

/// Apply `change` to the file at `path`: validate the new text as a start
/// would, write it atomically (the old one kept as `.bak`) and return the
/// new text's version. Blocking: call off the runtime.
pub fn apply(path: &Path, change: &Change) -> Result<String, Rejected> {
    let text = read(path)?;
    let (version, key) = match change {
        Change::Add { version, .. } => (version, None),
        Change::Edit {
            version,
            carpdev,
            vhid,
            ..
        }
        | Change::Remove {
            version,
            carpdev,
            vhid,
        } => (version, Some((carpdev.as_str(), *vhid))),
    };
    if *version != version_of(&text) {
        return Err(Rejected {
            stale: true,
            ..Rejected::new(format!(
                "{} changed since this page loaded it; reload the page and try again",
                path.display()
            ))
        });
    }
    let mut doc = parse(&text, path)?;
    if !doc.contains_key("vhost") {
        doc.insert("vhost", Item::ArrayOfTables(Default::default()));
    }
    let Some(tables) = doc["vhost"].as_array_of_tables_mut() else {
        return Err(Rejected::new(
            "vhost in the file is not a list of [[vhost]] tables",
        ));
    };
    let index = match key {
        None => None,
        Some((carpdev, vhid)) => {
            let found = tables.iter().position(|t| {
                t.get("carpdev").and_then(Item::as_str) == Some(carpdev)
                    && t.get("vhid").and_then(Item::as_integer) == Some(vhid)
            });
            match found {
                Some(i) => Some(i),
                None => {
                    return Err(Rejected::new(format!(
                        "no vhid {vhid} on {carpdev} in the file (was it removed?)"
                    )));
                }
            }
        }
    };
    let edited = match change {
        Change::Remove { .. } => {
            if let Some(i) = index {
                tables.remove(i);
            }
            None
        }
        Change::Add { vhost, preempt, .. } | Change::Edit { vhost, preempt, .. } => {
            let i = match index {
                Some(i) => i,
                None => {
                    tables.push(Table::new());
                    tables.len() - 1
                }
            };
            let Some(t) = tables.get_mut(i) else {
                return Err(Rejected::new("the vhost table vanished"));
            };
            fill(t, vhost)?;
            if let Some(p) = preempt {
                doc["preempt"] = value(*p);
            }
            Some(i)
        }
    };
    let new_text = doc.to_string();
    if let Err(e) = DaemonConfig::from_toml_str(&new_text, path) {
        return Err(attribute(&e, &new_text, edited));
    }
    write_atomically(path, text.as_bytes(), new_text.as_bytes())
        .map_err(|e| Rejected::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(version_of(&new_text))
}

/// Write the form's fields into `t`, keeping every other key.
fn fill(t: &mut Table, f: &Fields) -> Result<(), Rejected> {
    let carpdev = f.carpdev.trim();
    if carpdev.is_empty() {
        return Err(Rejected::field(
            "carpdev",
            "name the parent interface, e.g. eth0",
        ));
    }
    t["carpdev"] = value(carpdev);
    t["vhid"] = value(
        number("vhid", &f.vhid)?.ok_or_else(|| Rejected::field("vhid", "give the vhid, 1..255"))?,
    );
    let mut addresses = Array::new();
    for a in f
        .addresses
        .split([',', ' ', '\n', '\t'])
        .filter(|a| !a.is_empty())
    {
        addresses.push(a);
    }
    if addresses.is_empty() {
        return Err(Rejected::field(
            "addresses",
            "give at least one address with its netmask, e.g. 192.0.2.50/24",
        ));
    }
    t["addresses"] = value(addresses);
    if !f.pass.is_empty() {
        t.remove("passfile");
        t["pass"] = value(f.pass.as_str());
    }
    for (key, text) in [("advbase", &f.advbase), ("advskew", &f.advskew)] {
        match number(key, text)? {
            Some(n) => t[key] = value(n),
            None => {
                t.remove(key);
            }
        }
    }
    Ok(())
}

/// Parse a whole number from a form field; empty is `None`.
fn number(name: &str, text: &str) -> Result<Option<i64>, Rejected> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<i64>()
        .map(Some)
        .map_err(|_| Rejected::field(name, "expects a whole number"))
}

/// Turn a validation error into a form error: against a field when it
/// points at one of the form's keys inside the edited (the `edited`-th)
/// `[[vhost]]` table, else against the form as a whole.
fn attribute(e: &ConfigFileError, text: &str, edited: Option<usize>) -> Rejected {
    let message = match e {
        ConfigFileError::Invalid { message, .. } => message.clone(),
        other => other.to_string(),
    };
    let ConfigFileError::Invalid {
        at: Location::Span { line, .. },
        ..
    } = e
    else {
        return Rejected::new(e.to_string());
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(edited) = edited else {
        return Rejected::new(e.to_string());
    };
    // The edited table runs from its header to the next table header.
    let headers: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[vhost]]"))
        .map(|(i, _)| i + 1)
        .collect();
    let (Some(&start), end) = (headers.get(edited), headers.get(edited + 1)) else {
        return Rejected::new(e.to_string());
    };
    let in_table = *line >= start && end.is_none_or(|&end| *line < end);
    let key = lines
        .get(line.saturating_sub(1))
        .and_then(|l| l.split('=').next())
        .map(str::trim)
        .filter(|k| FORM_KEYS.contains(k));
    match key {
        Some(key) if in_table => Rejected::field(key, message),
        // A conflict with another vhost is reported at the later one's vhid.
        _ if in_table && message.starts_with("vhid ") => Rejected::field("vhid", message),
        _ if in_table && message.starts_with("address ") => Rejected::field("addresses", message),
        _ => Rejected::new(e.to_string()),
    }
}

/// Replace the file at `path` by `new`, keeping `old` as `PATH.bak`.
///
/// Each name is written through a fresh temporary file in the same
/// directory, created with `O_EXCL | O_NOFOLLOW` and mode 0600 (the file may
/// hold passphrases), synced, and renamed over the name; then the directory
/// is synced. A crash leaves either the old or the new file, never a mix.
pub fn write_atomically(path: &Path, old: &[u8], new: &[u8]) -> io::Result<()> {
    let mut bak = path.as_os_str().to_owned();
    bak.push(".bak");
    replace(Path::new(&bak), old)?;
    replace(path, new)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(&tmp)?;
    let written = f.write_all(bytes).and_then(|()| f.sync_all());
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    use std::os::unix::fs::PermissionsExt;

    const FILE: &str = "# the lab's file\npreempt = true\n\n[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\n\
                        pass = \"old-secret\"\nlladdr = \"real\" # kept\naddresses = [\"192.0.2.50/24\"]\n";

    fn fields(vhid: &str, addresses: &str, advskew: &str) -> Fields {
        Fields {
            carpdev: "eth0".into(),
            vhid: vhid.into(),
            addresses: addresses.into(),
            pass: "new-secret".into(),
            advbase: "1".into(),
            advskew: advskew.into(),
        }
    }

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carpd.toml");
        fs::write(&path, FILE).unwrap();
        (dir, path)
    }

    fn add(path: &Path, f: Fields) -> Result<String, Rejected> {
        let version = load(path).unwrap().version;
        apply(
            path,
            &Change::Add {
                version,
                vhost: f,
                preempt: None,
            },
        )
    }

    #[test]
    fn an_added_vhost_is_written_atomically_with_the_old_file_kept() {
        let (_dir, path) = setup();
        add(
            &path,
            fields("2", "198.51.100.60/24, 2001:db8::60/64", "100"),
        )
        .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# the lab's file"), "{text}");
        assert!(text.contains("lladdr = \"real\" # kept"), "{text}");
        let config = DaemonConfig::from_toml_str(&text, &path).unwrap();
        assert_eq!(config.vhosts.len(), 2);
        assert_eq!(config.vhosts[1].addresses.len(), 2);
        let bak = fs::read_to_string(path.with_extension("toml.bak")).unwrap();
        assert_eq!(bak, FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let listed = load(&path).unwrap();
        assert_eq!(listed.vhosts[1].vhid, 2);
        assert!(listed.vhosts[1].has_pass);
    }

    #[test]
    fn bad_fields_are_reported_against_the_field_and_nothing_is_written() {
        let (_dir, path) = setup();
        let cases = [
            (fields("2", "192.0.2.60/24", "300"), "advskew"),
            (fields("x", "192.0.2.60/24", "0"), "vhid"),
            (fields("0", "192.0.2.60/24", "0"), "vhid"),
            (fields("1", "192.0.2.60/24", "0"), "vhid"),
            (fields("2", "192.0.2.50/24", "0"), "addresses"),
            (fields("2", "192.0.2.999/24", "0"), "addresses"),
            (fields("2", "", "0"), "addresses"),
            (
                Fields {
                    pass: "x".repeat(40),
                    ..fields("2", "192.0.2.60/24", "0")
                },
                "pass",
            ),
        ];
        for (f, field) in cases {
            let r = add(&path, f.clone()).unwrap_err();
            assert!(r.fields.contains_key(field), "{f:?}: {r:?}");
            assert!(
                !r.error.contains(&"x".repeat(40)),
                "passphrase echoed: {r:?}"
            );
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), FILE);
        assert!(!path.with_extension("toml.bak").exists());
    }

    #[test]
    fn edit_and_remove_find_the_vhost_and_a_stale_form_is_refused() {
        let (_dir, path) = setup();
        add(&path, fields("2", "198.51.100.60/24", "0")).unwrap();
        let version = load(&path).unwrap().version;
        let edit = Change::Edit {
            version: version.clone(),
            carpdev: "eth0".into(),
            vhid: 1,
            vhost: Fields {
                pass: String::new(),
                ..fields("1", "192.0.2.51/24", "50")
            },
            preempt: Some(false),
        };
        apply(&path, &edit).unwrap();
        let s = load(&path).unwrap();
        assert_eq!(s.vhosts[0].addresses, ["192.0.2.51/24"]);
        assert_eq!(s.vhosts[0].advskew, Some(50));
        assert!(s.vhosts[0].has_pass, "an empty password keeps the old one");
        assert!(!s.preempt);
        let stale = apply(&path, &edit).unwrap_err();
        assert!(stale.stale, "{stale:?}");
        let remove = Change::Remove {
            version: s.version,
            carpdev: "eth0".into(),
            vhid: 2,
        };
        apply(&path, &remove).unwrap();
        assert_eq!(load(&path).unwrap().vhosts.len(), 1);
        let last = Change::Remove {
            version: load(&path).unwrap().version,
            carpdev: "eth0".into(),
            vhid: 1,
        };
        let r = apply(&path, &last).unwrap_err();
        assert!(r.error.contains("no [[vhost]]"), "{r:?}");
    }
}
