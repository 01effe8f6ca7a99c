//! The control socket: newline-delimited JSON over a Unix socket.
//!
//! The server only parses and forwards: each request travels with a reply
//! channel to the daemon loop, which owns all protocol state and answers.
//! `watch` subscribes to a broadcast of transitions instead. [`client`] is
//! the other end, used by `carpctl`, `carpd lab` and the tests.
//!
//! Clients are bounded: at most a share of the descriptor limit at once
//! ([`connection_cap`]; one more is told so and closed), lines of at most
//! [`MAX_LINE`] bytes (an overlong one is refused and the client closed,
//! without buffering the rest), and idle readers and stalled writers time out.

pub mod client;
pub mod diff;
pub mod table;
pub mod types;

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};

use types::{Reply, Request, Transition};

/// The default directory of control sockets.
pub const DEFAULT_DIR: &str = "/run/carpd";

/// Return the default control socket path.
pub fn default_path() -> PathBuf {
    Path::new(DEFAULT_DIR).join("carpd.sock")
}

/// The longest request line accepted; anything longer is refused.
pub const MAX_LINE: usize = 4096;

/// Control clients served at once, before [`connection_cap`].
const MAX_CONNECTIONS: usize = 32;

/// Descriptors kept for the protocol's own work whatever the servers hold:
/// CARP and netlink sockets, the address record, hooks and their pipes.
const FD_RESERVE: u64 = 256;

/// Return how many connections a server may hold at once: `wanted`, or a
/// quarter of what the soft RLIMIT_NOFILE leaves above [`FD_RESERVE`], so
/// the HTTP and control servers together stay well below the limit.
pub fn connection_cap(wanted: usize) -> usize {
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    let share = usize::try_from(soft.saturating_sub(FD_RESERVE) / 4).unwrap_or(usize::MAX);
    wanted.min(share).max(1)
}

/// Bounds on the control socket's clients.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Clients served at once.
    connections: usize,
    /// A client that sends no complete request for this long is closed.
    idle: Duration,
    /// A reply not taken within this long closes the client (it stopped reading).
    write: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: connection_cap(MAX_CONNECTIONS),
            idle: Duration::from_secs(30),
            write: Duration::from_secs(10),
        }
    }
}

/// A request on its way to the daemon loop.
pub type Envelope = (Request, oneshot::Sender<Reply>);

/// Bind the socket at `path` (mode 0600), replacing a stale one but never a
/// live one: if a daemon answers there, this fails and nothing is touched.
///
/// Its directory is created 0750 if missing, and refused unless owned by
/// root or this user and not writable by group or others: anyone who can
/// write it could swap the socket for their own.
///
/// The socket is bound inside a fresh 0700 directory beside `path`,
/// chmod-ed to 0600 there, and only then renamed into place with
/// `RENAME_NOREPLACE`. While its mode is still the umask's, nobody else can
/// reach it (connecting needs search permission on that directory), and the
/// rename cannot replace a socket another daemon bound in the meantime. A
/// restrictive umask would close the window too, but the umask is
/// process-wide and this runs with the runtime's threads alive; `fchmod` on
/// a socket before `bind` does not set the file's mode on Linux.
///
/// The returned [`SocketGuard`] removes the socket when dropped, and only
/// if `path` still names the socket bound here.
pub fn bind(path: &Path) -> io::Result<(UnixListener, SocketGuard)> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => {
            let uids = crate::statedir::daemon_uids(None);
            crate::statedir::ensure_dir(dir, 0o750, &uids).map_err(io::Error::other)?;
            dir.to_owned()
        }
        None => PathBuf::from("."),
    };
    clear_stale(path)?;
    // A short name: `.cXXXXXX/s` is no longer than most socket names, so the
    // temporary path fits `sun_path` whenever the final one does.
    let private = nix::unistd::mkdtemp(&dir.join(".cXXXXXX")).map_err(io::Error::from)?;
    let tmp = private.join("s");
    let bound = (|| -> io::Result<UnixListener> {
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            &tmp,
            nix::fcntl::AT_FDCWD,
            path,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| match e {
            nix::errno::Errno::EEXIST => live_error(path),
            e => io::Error::from(e),
        })?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    let listener = bound?;
    let meta = std::fs::symlink_metadata(path)?;
    let guard = SocketGuard {
        path: path.to_owned(),
        id: (meta.dev(), meta.ino()),
    };
    Ok((listener, guard))
}

fn live_error(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!(
            "a carpd already answers on {}; stop it first or give this one another --control",
            path.display()
        ),
    )
}

/// Remove `path` if it is a socket nobody listens on; fail if a daemon
/// answers on it or it is not a socket.
fn clear_stale(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        other => other?,
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; remove it by hand",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(live_error(path)),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether a carpd answers on {}: {e}",
                path.display()
            ),
        )),
    }
}

/// The control socket a daemon bound; removed on drop only while `path`
/// still names it (same device and inode), so a daemon never deletes a
/// socket another one created.
#[derive(Debug)]
pub struct SocketGuard {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketGuard {
    /// Return whether `path` still names the socket bound here.
    pub fn owned(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        // A window remains between the check and the unlink; only a process
        // that may write the 0750 directory could use it.
        if self.owned() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Accept clients forever, forwarding requests to `to_daemon`.
pub async fn serve(
    listener: UnixListener,
    to_daemon: mpsc::Sender<Envelope>,
    transitions: broadcast::Sender<Transition>,
) {
    serve_with(listener, to_daemon, transitions, Limits::default()).await;
}

async fn serve_with(
    listener: UnixListener,
    to_daemon: mpsc::Sender<Envelope>,
    transitions: broadcast::Sender<Transition>,
    limits: Limits,
) {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: back off briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // A clear answer rather than a client left hanging in the backlog.
            let reply = Reply::failed(format!(
                "carpd is serving {} control clients already; try again later",
                limits.connections
            ));
            if let Ok(mut line) = serde_json::to_string(&reply) {
                line.push('\n');
                let _ = stream.try_write(line.as_bytes());
            }
            continue;
        };
        let to_daemon = to_daemon.clone();
        let watch = transitions.subscribe();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = client(stream, to_daemon, watch, limits).await;
        });
    }
}

async fn client(
    stream: UnixStream,
    to_daemon: mpsc::Sender<Envelope>,
    mut watch: broadcast::Receiver<Transition>,
    limits: Limits,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most one byte past the cap is buffered: enough to tell an overlong line.
        let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        let mut capped = (&mut lines).take(limit);
        let read = capped.read_until(b'\n', &mut line);
        let Ok(n) = tokio::time::timeout(limits.idle, read).await else {
            return Ok(());
        };
        if n? == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            // The rest of the line cannot be told from the next request.
            let refusal = Reply::failed(format!("request longer than {MAX_LINE} bytes"));
            return write_reply(&mut write, &refusal, limits.write).await;
        }
        let reply = match serde_json::from_slice::<Request>(&line) {
            Err(e) => Reply::failed(format!("bad request: {e}")),
            Ok(Request::Watch) => {
                write_reply(&mut write, &Reply::done("watching"), limits.write).await?;
                loop {
                    let r = match watch.recv().await {
                        Ok(t) => Reply {
                            ok: true,
                            transition: Some(t),
                            ..Reply::default()
                        },
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            Reply::failed(format!("missed {n} events"))
                        }
                        Err(broadcast::error::RecvError::Closed) => return Ok(()),
                    };
                    write_reply(&mut write, &r, limits.write).await?;
                }
            }
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if to_daemon.send((request, tx)).await.is_err() {
                    Reply::failed("daemon is shutting down")
                } else {
                    rx.await
                        .unwrap_or_else(|_| Reply::failed("daemon is shutting down"))
                }
            }
        };
        write_reply(&mut write, &reply, limits.write).await?;
    }
}

/// Write one reply line, giving up after `timeout`.
async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
    timeout: Duration,
) -> io::Result<()> {
    let mut text = serde_json::to_string(reply).map_err(io::Error::other)?;
    text.push('\n');
    tokio::time::timeout(timeout, write.write_all(text.as_bytes()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))?
}

#[cfg(test)]
mod test {
    use super::*;

    /// A fake daemon loop answering every request.
    fn fake_daemon() -> mpsc::Sender<Envelope> {
        let (tx, mut rx) = mpsc::channel::<Envelope>(4);
        tokio::spawn(async move {
            while let Some((request, reply)) = rx.recv().await {
                let _ = reply.send(Reply::done(format!("{request:?}")));
            }
        });
        tx
    }

    async fn start(dir: &Path, connections: usize) -> PathBuf {
        let path = dir.join("c.sock");
        let (listener, guard) = bind(&path).unwrap();
        std::mem::forget(guard);
        let (transitions, _) = broadcast::channel(4);
        let limits = Limits {
            connections,
            idle: Duration::from_millis(300),
            write: Duration::from_millis(300),
        };
        tokio::spawn(serve_with(listener, fake_daemon(), transitions, limits));
        path
    }

    /// Send `raw`, then read until the server closes or 2 s pass.
    async fn exchange(path: &Path, raw: &[u8]) -> String {
        let mut s = UnixStream::connect(path).await.unwrap();
        let _ = s.write_all(raw).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn requests_are_answered_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = start(dir.path(), 4).await;
        let out = exchange(&path, b"{\"cmd\":\"status\"}\nnot json\n").await;
        let replies: Vec<Reply> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(replies.len(), 2, "{out}");
        assert!(replies[0].ok, "{out}");
        assert!(!replies[1].ok && replies[1].error.as_deref().unwrap().contains("bad request"));
    }

    #[tokio::test]
    async fn an_overlong_line_is_refused_without_being_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = start(dir.path(), 4).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        // Far more than the cap, and no newline: refused once the cap is passed.
        let big = vec![b'x'; 64 * MAX_LINE];
        let (mut r, mut w) = s.split();
        let (_, reply) = tokio::join!(w.write_all(&big), async {
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(2), r.read_to_end(&mut out)).await;
            out
        });
        let reply: Reply = serde_json::from_slice(&reply).unwrap();
        assert!(reply.error.unwrap().contains("longer than 4096 bytes"));
    }

    #[tokio::test]
    async fn a_silent_client_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = start(dir.path(), 4).await;
        let started = std::time::Instant::now();
        let out = exchange(&path, b"{\"verb\"").await;
        assert_eq!(out, "");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn clients_beyond_the_cap_are_told_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = start(dir.path(), 1).await;
        let _held = UnixStream::connect(&path).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let out = exchange(&path, b"").await;
        assert!(out.contains("control clients already"), "{out}");
    }

    #[tokio::test]
    async fn a_live_socket_is_refused_and_a_stale_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let (live, guard) = bind(&path).expect("a stale socket is replaced");
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let err = bind(&path).unwrap_err().to_string();
        assert!(err.contains("already answers"), "{err}");
        assert!(guard.owned(), "the refused bind left the socket alone");
        // Nothing left behind by either attempt.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        drop(live);
        drop(guard);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn a_socket_replaced_by_another_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let (_listener, guard) = bind(&path).unwrap();
        // Another daemon's socket takes the name (ours stays bound: new inode).
        let other = dir.path().join("other.sock");
        let _other = std::os::unix::net::UnixListener::bind(&other).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert!(!guard.owned());
        drop(guard);
        assert!(path.exists(), "another daemon's socket was deleted");
    }

    #[test]
    fn a_file_that_is_not_a_socket_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        std::fs::write(&path, b"x").unwrap();
        let err = bind(&path).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
    }

    #[test]
    fn the_connection_cap_leaves_a_reserve() {
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let cap = connection_cap(usize::MAX) as u64;
        assert!(cap >= 1 && cap <= soft.saturating_sub(FD_RESERVE).max(4) / 4);
        assert_eq!(connection_cap(3).min(3), connection_cap(3));
    }
}
