//! The control socket: newline-delimited JSON over a Unix socket.
//!
//! The server only parses and forwards: each request travels with a reply
//! channel to the daemon loop, which owns all protocol state and answers.
//! `watch` subscribes to a broadcast of transitions instead. [`client`] is
//! the other end, used by `carpctl`, `carpd lab` and the tests.

pub mod client;
pub mod types;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc, oneshot};

use types::{Reply, Request, Transition};

/// The default directory of control sockets.
pub const DEFAULT_DIR: &str = "/run/carpd";

/// Return the default control socket path.
pub fn default_path() -> PathBuf {
    Path::new(DEFAULT_DIR).join("carpd.sock")
}

/// The longest request line accepted; anything longer is refused.
const MAX_LINE: usize = 4096;

/// A request on its way to the daemon loop.
pub type Envelope = (Request, oneshot::Sender<Reply>);

/// Bind the socket at `path` (mode 0600, replacing a stale one).
///
/// Its directory is created 0750 if missing, and refused unless owned by
/// root or this user and not writable by group or others: anyone who can
/// write it could swap the socket for their own.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let uids = crate::statedir::daemon_uids(None);
        crate::statedir::ensure_dir(dir, 0o750, &uids).map_err(io::Error::other)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Accept clients forever, forwarding requests to `to_daemon`.
pub async fn serve(
    listener: UnixListener,
    to_daemon: mpsc::Sender<Envelope>,
    transitions: broadcast::Sender<Transition>,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and friends: back off briefly instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let to_daemon = to_daemon.clone();
        let watch = transitions.subscribe();
        tokio::spawn(async move {
            let _ = client(stream, to_daemon, watch).await;
        });
    }
}

async fn client(
    stream: UnixStream,
    to_daemon: mpsc::Sender<Envelope>,
    mut watch: broadcast::Receiver<Transition>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(1 << 20));
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let reply = if line.len() > MAX_LINE {
            Reply::failed(format!("request longer than {MAX_LINE} bytes"))
        } else {
            match serde_json::from_str::<Request>(line.trim()) {
                Err(e) => Reply::failed(format!("bad request: {e}")),
                Ok(Request::Watch) => {
                    write_reply(&mut write, &Reply::done("watching")).await?;
                    loop {
                        match watch.recv().await {
                            Ok(t) => {
                                let r = Reply {
                                    ok: true,
                                    transition: Some(t),
                                    ..Reply::default()
                                };
                                write_reply(&mut write, &r).await?;
                            }
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                write_reply(
                                    &mut write,
                                    &Reply::failed(format!("missed {n} events")),
                                )
                                .await?;
                            }
                            Err(broadcast::error::RecvError::Closed) => return Ok(()),
                        }
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
            }
        };
        write_reply(&mut write, &reply).await?;
    }
}

async fn write_reply(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    reply: &Reply,
) -> io::Result<()> {
    let mut text = serde_json::to_string(reply).map_err(io::Error::other)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await
}
