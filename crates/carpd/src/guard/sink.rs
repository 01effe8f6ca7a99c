//! The daemon's side: the will goes to the guard's socket (a task on the
//! loop's runtime, never blocking it) and to the will file (a thread of
//! its own, started once privileges are dropped: a thread started earlier
//! would keep every capability).

use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::GuardLink;
use super::will::{Message, Will};
use crate::carplog;

/// How long a clean stop waits for the guard and the file writer.
const RETIRE_WAIT: Duration = Duration::from_secs(1);

/// A will is encoded by its consumer, and only the newest: at 1,000 vhosts
/// a takeover burst changes it 1,000 times, and encoding each on the loop
/// (or queueing each) was quadratic.
enum Cmd {
    /// The consumer's [`Latest`] holds a will.
    Wake,
    Retire(oneshot::Sender<()>),
}

/// The newest will a consumer has not taken yet.
#[derive(Debug, Default, Clone)]
struct Latest(Arc<Mutex<Option<Arc<Will>>>>);

impl Latest {
    /// Put `will` in, replacing one not taken; true when the slot was
    /// empty (the consumer must be woken).
    fn put(&self, will: Arc<Will>) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(will)
            .is_none()
    }

    fn take(&self) -> Option<Arc<Will>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Where the daemon's wills go.
#[derive(Debug)]
pub struct WillSink {
    identity: Will,
    guard: Option<(mpsc::UnboundedSender<Cmd>, Latest, Child)>,
    path: PathBuf,
    file: File,
}

#[derive(Debug)]
enum File {
    /// The writer thread may not start yet: the newest will waits.
    Waiting(Option<Arc<Will>>),
    Running(std_mpsc::Sender<Cmd>, Latest),
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cmd::Wake => f.write_str("Wake"),
            Cmd::Retire(_) => f.write_str("Retire"),
        }
    }
}

impl WillSink {
    /// Feed `guard` (when there is one) and the file at `path`. Call inside the
    /// daemon's runtime.
    pub fn new(guard: Option<GuardLink>, path: PathBuf) -> WillSink {
        let identity = Will {
            pid: std::process::id(),
            started: super::process_started(std::process::id()).unwrap_or(0),
            boot_id: super::boot_id(),
            netns: super::netns(),
            ..Will::default()
        };
        let guard = guard.and_then(|g| {
            let GuardLink { stream, child } = g;
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::UnixStream::from_std(stream));
            match stream {
                Ok(s) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let latest = Latest::default();
                    tokio::spawn(feed_guard(s, rx, latest.clone()));
                    Some((tx, latest, child))
                }
                Err(e) => {
                    carplog!(Err, "cannot talk to the guard: {e}");
                    None
                }
            }
        });
        WillSink {
            identity,
            guard,
            path,
            file: File::Waiting(None),
        }
    }

    /// Hand on `will` (its identity fields are filled here).
    pub fn set(&mut self, will: &Will) {
        let will = Arc::new(Will {
            pid: self.identity.pid,
            started: self.identity.started,
            boot_id: self.identity.boot_id.clone(),
            netns: self.identity.netns,
            ..will.clone()
        });
        if let Some((tx, latest, _)) = &self.guard
            && latest.put(Arc::clone(&will))
        {
            let _ = tx.send(Cmd::Wake);
        }
        match &mut self.file {
            File::Waiting(pending) => *pending = Some(will),
            File::Running(tx, latest) => {
                if latest.put(will) {
                    let _ = tx.send(Cmd::Wake);
                }
            }
        }
    }

    /// Start the file writer (privileges are dropped now).
    pub fn start_file_writer(&mut self) {
        let File::Waiting(pending) = &mut self.file else {
            return;
        };
        let pending = pending.take();
        let (tx, rx) = std_mpsc::channel();
        let latest = Latest::default();
        let path = self.path.clone();
        let taken = latest.clone();
        let spawned = std::thread::Builder::new()
            .name("carpd-will".into())
            .spawn(move || write_files(path, rx, taken));
        if let Err(e) = spawned {
            carplog!(Err, "cannot start the will writer: {e}");
            return;
        }
        if let Some(will) = pending
            && latest.put(will)
        {
            let _ = tx.send(Cmd::Wake);
        }
        self.file = File::Running(tx, latest);
    }

    /// The daemon stopped in order: the guard exits without acting and the
    /// file goes.
    pub async fn retire(&mut self) {
        let mut waits = Vec::new();
        if let Some((tx, _, _)) = &self.guard {
            let (done, wait) = oneshot::channel();
            if tx.send(Cmd::Retire(done)).is_ok() {
                waits.push(wait);
            }
        }
        match &self.file {
            File::Running(tx, _) => {
                let (done, wait) = oneshot::channel();
                if tx.send(Cmd::Retire(done)).is_ok() {
                    waits.push(wait);
                }
            }
            File::Waiting(_) => {
                if let Err(e) = std::fs::remove_file(&self.path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    carplog!(Warning, "cannot remove {}: {e}", self.path.display());
                }
            }
        }
        let all = futures::future::join_all(waits);
        if tokio::time::timeout(RETIRE_WAIT, all).await.is_err() {
            carplog!(Warning, "the guard or the will file did not finish in time");
        }
        // The guard exits on the clean message: reap it.
        if let Some((_, _, mut child)) = self.guard.take() {
            let deadline = tokio::time::Instant::now() + RETIRE_WAIT;
            while matches!(child.try_wait(), Ok(None)) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

/// Write the newest will to the guard until told to retire.
async fn feed_guard(
    mut stream: tokio::net::UnixStream,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    latest: Latest,
) {
    let mut broken = false;
    while let Some(mut cmd) = rx.recv().await {
        // Only the newest will matters; a retire is never skipped.
        while matches!(cmd, Cmd::Wake) {
            match rx.try_recv() {
                Ok(next) => cmd = next,
                Err(_) => break,
            }
        }
        let (frame, done) = match cmd {
            Cmd::Wake => match latest.take() {
                Some(will) => (Message::Will(Will::clone(&will)).encode(), None),
                None => continue,
            },
            Cmd::Retire(done) => (Message::Clean.encode(), Some(done)),
        };
        if !broken && let Err(e) = stream.write_all(&frame).await {
            broken = true;
            carplog!(
                Err,
                "the guard is gone ({e}): should carpd die now, its addresses stay until \
                 it restarts or `carpd stop-post` runs"
            );
        }
        if let Some(done) = done {
            let _ = done.send(());
            return;
        }
    }
}

/// The will file's thread: write the newest form, remove it when empty or retired.
fn write_files(path: PathBuf, rx: std_mpsc::Receiver<Cmd>, latest: Latest) {
    let mut failing = false;
    while let Ok(mut cmd) = rx.recv() {
        while matches!(cmd, Cmd::Wake) {
            match rx.try_recv() {
                Ok(next) => cmd = next,
                Err(_) => break,
            }
        }
        let (bytes, done) = match cmd {
            // An empty will is no file (like the address record).
            Cmd::Wake => match latest.take() {
                None => continue,
                Some(will) if will.is_empty() => (Vec::new(), None),
                Some(will) => (will.to_file(), None),
            },
            Cmd::Retire(done) => (Vec::new(), Some(done)),
        };
        let result = if bytes.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            // Only a crash has to be covered: the page cache is durable enough.
            crate::statedir::replace_file(&path, &bytes, 0o600, false)
        };
        match result {
            Err(e) if !failing => {
                failing = true;
                carplog!(Warning, "cannot write {}: {e}", path.display());
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
        if let Some(done) = done {
            let _ = done.send(());
            return;
        }
    }
}
