//! The directories carpd writes as root (state, control socket) and the
//! files in them, none trusted blindly.
//!
//! A directory another user can write lets that user plant a record that
//! root then acts on, or a symlink at a file name that root then writes
//! through. So a directory must be owned by root or the daemon's user and
//! not writable by group or others; a missing one is created with an
//! explicit mode (the umask cannot widen it); files are created anew with
//! an explicit mode, `O_EXCL` and `O_NOFOLLOW`, then renamed into place.
//! Only the directory itself is checked, not its ancestors.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

/// A directory that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Creating or inspecting it failed.
    #[error("cannot use directory {}: {reason}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        reason: io::Error,
    },
    /// Something else is there.
    #[error("{} is not a directory", path.display())]
    NotDir {
        /// The path.
        path: PathBuf,
    },
    /// Another user owns it, or group or others may write it.
    #[error(
        "refusing directory {}: owned by uid {owner} with mode {mode:04o}; it must be owned \
         by root or uid {uid} and not writable by group or others (chown, chmod go-w)",
        path.display()
    )]
    Untrusted {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// The daemon's user.
        uid: u32,
    },
}

/// Create `dir` (and missing parents) with `mode` if it is missing, then
/// refuse it unless it is a directory owned by root or one of `uids` and
/// not writable by group or others.
pub fn ensure_dir(dir: &Path, mode: u32, uids: &[u32]) -> Result<(), DirError> {
    let io = |reason| DirError::Io {
        path: dir.into(),
        reason,
    };
    match fs::DirBuilder::new().recursive(true).mode(mode).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    // symlink_metadata: a symlink in place of the directory is refused too.
    let meta = fs::symlink_metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(DirError::NotDir { path: dir.into() });
    }
    check(dir, meta.uid(), meta.mode(), uids)
}

fn check(dir: &Path, owner: u32, mode: u32, uids: &[u32]) -> Result<(), DirError> {
    let trusted_owner = owner == 0 || uids.contains(&owner);
    if !trusted_owner || mode & 0o022 != 0 {
        return Err(DirError::Untrusted {
            path: dir.into(),
            owner,
            mode: mode & 0o7777,
            uid: uids.first().copied().unwrap_or(0),
        });
    }
    Ok(())
}

/// The users a directory of this process may belong to: the effective
/// user and, with `--user`, that user (the state directory is handed to it).
pub fn daemon_uids(user: Option<&str>) -> Vec<u32> {
    let mut uids = vec![nix::unistd::geteuid().as_raw()];
    if let Some(Ok(Some(u))) = user.map(nix::unistd::User::from_name) {
        uids.push(u.uid.as_raw());
    }
    uids
}

/// Write `bytes` to `path` through a fresh temporary file of `mode` in the
/// same directory, renamed over `path` (a symlink at either name is
/// replaced, never followed). With `sync`, the data reaches the disk first.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32, sync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    // A stale or planted temporary goes first: unlink does not follow links.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(&tmp)?;
    f.write_all(bytes)?;
    if sync {
        f.sync_all()?;
    }
    fs::rename(&tmp, path)
}

/// Read the regular file at `path` (not through a symlink), at most `max`
/// bytes; `None` when there is none.
pub fn read_file(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    f.take(max).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod test {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn directories_writable_by_others_or_owned_by_strangers_are_refused() {
        let d = Path::new("/x");
        assert!(check(d, 1000, 0o40700, &[1000]).is_ok());
        assert!(check(d, 0, 0o40755, &[1000]).is_ok(), "root may own it");
        let e = check(d, 65534, 0o40700, &[0]).unwrap_err().to_string();
        assert!(
            e.contains("/x") && e.contains("uid 65534") && e.contains("0700"),
            "{e}"
        );
        assert!(check(d, 0, 0o40775, &[0]).is_err(), "group-writable");
        assert!(
            check(d, 0, 0o41777, &[0]).is_err(),
            "world-writable, even sticky"
        );
    }

    #[test]
    fn created_directories_and_files_ignore_the_umask_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let uids = daemon_uids(None);
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let state = dir.path().join("a/b");
        let made = ensure_dir(&state, 0o700, &uids);
        let file = state.join("f");
        let victim = dir.path().join("victim");
        fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, file.with_extension("tmp")).unwrap();
        let written = replace_file(&file, b"new", 0o600, false);
        nix::sys::stat::umask(old);
        made.unwrap();
        written.unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(read_file(&file, 10).unwrap().unwrap(), b"new");
        let link = state.join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(read_file(&link, 10).is_err(), "a symlink is not followed");
        assert!(read_file(&state.join("none"), 10).unwrap().is_none());
        std::os::unix::fs::symlink(&state, dir.path().join("s")).unwrap();
        assert!(matches!(
            ensure_dir(&dir.path().join("s"), 0o700, &uids),
            Err(DirError::NotDir { .. })
        ));
    }
}
