//! Maintenance mode: a demotion of group `carp` that survives restarts and reboots.
//!
//! `carpctl maintenance on` demotes every vhost by [`MAINTENANCE_DEMOTE`] so
//! each MASTER hands over to its peer (a demoted master is taken over
//! regardless of preempt), and records that in the file `maintenance` of the
//! state directory. The daemon reads the file at start-up, before it joins
//! any vhid, so a maintained host that restarts or reboots comes back
//! demoted and never grabs a vhid from its peer. The file is written before
//! the demotion is applied: an answer of "on" is always persistent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How much maintenance mode adds to the demote counter of group `carp`.
///
/// Like the boot-time demotion of OpenBSD's `/etc/rc` (`carpdemote 128`): more
/// than any number of failed links or send errors, so the peer wins even when
/// it is itself degraded, yet below 255, so a host in maintenance still takes
/// over when it is the only one left.
pub const MAINTENANCE_DEMOTE: i32 = 128;

/// Name of the flag file inside the state directory.
pub const FILE_NAME: &str = "maintenance";

/// The persistent maintenance flag.
#[derive(Debug)]
pub struct Maintenance {
    path: PathBuf,
    on: bool,
}

impl Maintenance {
    /// Read the flag from `state_dir`; a missing directory or file means off.
    ///
    /// Fails when the state cannot be known (for example the directory is
    /// unreadable): starting undemoted by mistake would take the peer's vhids.
    pub fn load(state_dir: &Path) -> io::Result<Maintenance> {
        let path = state_dir.join(FILE_NAME);
        let on = path.try_exists()?;
        Ok(Maintenance { path, on })
    }

    /// Return whether maintenance mode is on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Return the flag file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record `on` durably; return whether it changed anything.
    ///
    /// On error nothing changed, neither on disk nor in memory.
    pub fn set(&mut self, on: bool) -> io::Result<bool> {
        if on == self.on {
            return Ok(false);
        }
        let dir = self.path.parent().unwrap_or(Path::new("."));
        if on {
            // The file is made anew (0600, no symlink followed), renamed in.
            let uids = crate::statedir::daemon_uids(None);
            crate::statedir::ensure_dir(dir, 0o700, &uids).map_err(io::Error::other)?;
            crate::statedir::replace_file(
                &self.path,
                b"# carpctl maintenance on: group carp is demoted by 128 at start-up\n",
                0o600,
                true,
            )?;
        } else {
            match fs::remove_file(&self.path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // The rename or removal is durable only once the directory is synced.
        fs::File::open(dir)?.sync_all()?;
        self.on = on;
        Ok(true)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn flag_survives_a_reload_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("carpd");
        let mut m = Maintenance::load(&state).unwrap();
        assert!(!m.is_on(), "missing directory means off");
        assert!(m.set(true).unwrap());
        assert!(!m.set(true).unwrap(), "second on changes nothing");
        assert!(Maintenance::load(&state).unwrap().is_on());
        assert!(m.set(false).unwrap());
        assert!(!Maintenance::load(&state).unwrap().is_on());
        assert!(!state.join("maintenance.tmp").exists());
    }

    #[test]
    fn unwritable_directory_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the state directory should be: create_dir_all fails.
        let state = dir.path().join("not-a-dir");
        let mut m = Maintenance::load(&state).unwrap();
        fs::write(&state, "").unwrap();
        assert!(m.set(true).is_err());
        assert!(!m.is_on());
    }
}
