//! The record of the virtual addresses this daemon has configured, so that a
//! restart after a crash (`kill -9`, OOM kill, abort) removes every one of
//! them before joining, including addresses no longer in the configuration.
//!
//! One JSON file per daemon in the state directory, named after the network
//! namespace and control socket (two daemons sharing a state directory keep
//! separate records). An address is recorded *before* it is added and
//! forgotten *after* it is removed, so the record never misses one the
//! kernel holds. Addresses do not survive a reboot, so a record written
//! under another boot id is ignored: after a reboot carpd never removes an
//! address the system's own network configuration has put there.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::carplog;
use crate::config::DaemonConfig;

/// One address on one interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OwnedAddress {
    /// The interface holding it (the macvlan or the carpdev).
    pub ifname: String,
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    boot_id: String,
    control: PathBuf,
    netns: u64,
    addresses: BTreeSet<OwnedAddress>,
}

/// The record of one daemon.
#[derive(Debug)]
pub struct Owned {
    path: PathBuf,
    file: File,
}

impl Owned {
    /// Open the record of the daemon with control socket `control` in this
    /// network namespace; return it and the addresses a previous run of this
    /// boot left recorded (to be removed before joining).
    ///
    /// An unreadable or corrupt record gives no leftovers and is replaced.
    pub fn open(state_dir: &Path, control: &Path) -> (Owned, Vec<OwnedAddress>) {
        let netns = fs::metadata("/proc/self/ns/net").map_or(0, |m| m.ino());
        let boot_id = fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let path = state_dir.join(record_name("owned", netns, control));
        // At most 1 MiB, and never through a symlink.
        let leftovers = crate::statedir::read_file(&path, 1 << 20)
            .ok()
            .flatten()
            .and_then(|bytes| serde_json::from_slice::<File>(&bytes).ok())
            .filter(|old| old.boot_id == boot_id && old.netns == netns)
            .map(|old| old.addresses.into_iter().collect())
            .unwrap_or_default();
        let file = File {
            boot_id,
            control: control.to_owned(),
            netns,
            addresses: BTreeSet::new(),
        };
        (Owned { path, file }, leftovers)
    }

    /// Return the record's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Return the addresses recorded now.
    pub fn addresses(&self) -> impl Iterator<Item = &OwnedAddress> {
        self.file.addresses.iter()
    }

    /// Record `addrs` (call before adding them) and write the record if it changed.
    pub fn hold(&mut self, addrs: impl IntoIterator<Item = OwnedAddress>) -> io::Result<()> {
        let mut changed = false;
        for a in addrs {
            changed |= self.file.addresses.insert(a);
        }
        if changed { self.save() } else { Ok(()) }
    }

    /// Forget `addrs` (call after removing them) and write the record if it changed.
    pub fn release<'a>(
        &mut self,
        addrs: impl IntoIterator<Item = &'a OwnedAddress>,
    ) -> io::Result<()> {
        let mut changed = false;
        for a in addrs {
            changed |= self.file.addresses.remove(a);
        }
        if changed { self.save() } else { Ok(()) }
    }

    /// Write the record (an empty one is deleted).
    pub fn save(&self) -> io::Result<()> {
        if self.file.addresses.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        let bytes = serde_json::to_vec_pretty(&self.file).map_err(io::Error::other)?;
        // Only a crashed process has to be covered (addresses die with the
        // boot), so the page cache is durable enough: no fsync.
        crate::statedir::replace_file(&self.path, &bytes, 0o600, false)
    }
}

/// Keep the leftovers carpd may remove: those on one of its own macvlans,
/// and those on a carpdev of `config` in a family it configures there. The
/// rest is logged and left alone: a record is no licence to remove an
/// address carpd does not manage.
pub fn managed(leftovers: Vec<OwnedAddress>, config: &DaemonConfig) -> Vec<OwnedAddress> {
    leftovers
        .into_iter()
        .filter(|a| {
            let on_carpdev = config.vhosts.iter().any(|v| {
                v.carpdev == a.ifname
                    && match a.addr {
                        IpAddr::V4(_) => !v.proto.ipv4.is_empty(),
                        IpAddr::V6(_) => !v.proto.ipv6.is_empty(),
                    }
            });
            let keep = on_carpdev || is_macvlan_name(&a.ifname);
            if !keep {
                carplog!(
                    Warning,
                    "not removing {}/{} from {}: recorded, but not on an interface and family carpd manages",
                    a.addr,
                    a.prefix_len,
                    a.ifname
                );
            }
            keep
        })
        .collect()
}

/// Whether `name` is one `daemon::macvlan_name` gives: `carp<idx>v<vhid>`
/// or, when that is too long, `c<hex idx>v<vhid>`, with vhid 1..=255.
fn is_macvlan_name(name: &str) -> bool {
    let split = |rest: &str, radix: u32| {
        rest.split_once('v').is_some_and(|(idx, vhid)| {
            !idx.is_empty()
                && u32::from_str_radix(idx, radix).is_ok()
                && vhid.parse::<u8>().is_ok_and(|v| v > 0)
                && !vhid.starts_with(['0', '+'])
        })
    };
    match name.strip_prefix("carp") {
        Some(rest) if split(rest, 10) => true,
        _ => name.strip_prefix('c').is_some_and(|rest| split(rest, 16)),
    }
}

/// `<prefix>-<hash>.json`, the hash (FNV-1a, 64 bits) taken over the network
/// namespace inode and the control socket path (also the guard's will file).
pub(crate) fn record_name(prefix: &str, netns: u64, control: &Path) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = netns
        .to_le_bytes()
        .into_iter()
        .chain(control.as_os_str().as_encoded_bytes().iter().copied());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{prefix}-{h:016x}.json")
}

#[cfg(test)]
mod test {
    use super::*;

    fn addr(ifname: &str, a: &str) -> OwnedAddress {
        OwnedAddress {
            ifname: ifname.into(),
            addr: a.parse().unwrap(),
            prefix_len: 24,
        }
    }

    #[test]
    fn only_addresses_carpd_manages_are_leftovers() {
        let text = "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\naddresses = [\"192.0.2.50/24\"]\n";
        let config = DaemonConfig::from_toml_str(text, Path::new("c.toml")).unwrap();
        let left = vec![
            addr("carp2v1", "192.0.2.50"),
            addr("c1fv9", "192.0.2.51"),
            addr("eth0", "192.0.2.52"),
            addr("eth0", "2001:db8::52"),
            addr("eth1", "192.0.2.53"),
            addr("lo", "192.0.2.54"),
            addr("carp2v0", "192.0.2.55"),
            addr("carpv1", "192.0.2.56"),
        ];
        let kept: Vec<String> = managed(left, &config)
            .into_iter()
            .map(|a| a.ifname)
            .collect();
        assert_eq!(kept, ["carp2v1", "c1fv9", "eth0"]);
    }

    #[test]
    fn a_crashed_run_leaves_its_addresses_to_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = Path::new("/run/carpd/carpd.sock");
        let (mut o, left) = Owned::open(dir.path(), ctl);
        assert!(left.is_empty());
        o.hold([addr("carp2v1", "192.0.2.50"), addr("carp2v2", "192.0.2.51")])
            .unwrap();
        o.release(&[addr("carp2v1", "192.0.2.50")]).unwrap();
        // The process dies here; the next run finds what was still held.
        let (o2, left) = Owned::open(dir.path(), ctl);
        assert_eq!(left, vec![addr("carp2v2", "192.0.2.51")]);
        assert_eq!(o2.addresses().count(), 0, "a new run starts empty");
        // Another daemon (another control socket) has its own record.
        let (_, other) = Owned::open(dir.path(), Path::new("/run/other.sock"));
        assert!(other.is_empty());
    }

    #[test]
    fn empty_record_is_deleted_and_foreign_boots_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let ctl = Path::new("c.sock");
        let (mut o, _) = Owned::open(dir.path(), ctl);
        o.hold([addr("eth0", "192.0.2.50")]).unwrap();
        assert!(o.path().exists());
        o.release(&[addr("eth0", "192.0.2.50")]).unwrap();
        assert!(!o.path().exists(), "nothing held, no file");

        o.hold([addr("eth0", "192.0.2.50")]).unwrap();
        let text = fs::read_to_string(o.path()).unwrap();
        let rebooted = text.replace(&o.file.boot_id, "another-boot");
        assert_ne!(text, rebooted);
        fs::write(o.path(), rebooted).unwrap();
        let (_, left) = Owned::open(dir.path(), ctl);
        assert!(left.is_empty(), "addresses do not survive a reboot");

        fs::write(o.path(), "{ not json").unwrap();
        let (_, left) = Owned::open(dir.path(), ctl);
        assert!(left.is_empty(), "a corrupt record is no record");
    }
}
