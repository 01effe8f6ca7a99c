//! The client side of the control socket, shared by `carpctl`, `carpd lab`
//! and the namespace tests, so all of them speak the protocol one way.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::types::{Reply, Request};

/// How long `carpctl` waits for an answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection to a carpd control socket.
pub struct Connection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Connection {
    /// Connect to the socket at `path`, waiting at most `timeout` for each
    /// read and write (a SIGSTOPped daemon accepts and never answers).
    pub fn open(path: &Path, timeout: Duration) -> Result<Connection, String> {
        let stream = UnixStream::connect(path).map_err(|e| {
            format!(
                "cannot connect to carpd at {}: {e} (is carpd running with this --control?)",
                path.display()
            )
        })?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        Ok(Connection {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Send one request line.
    pub fn send(&mut self, request: &Request) -> Result<(), String> {
        let mut line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("cannot send request: {e}"))
    }

    /// Read one reply line.
    pub fn receive(&mut self) -> Result<Reply, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("carpd closed the connection".to_string()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("unreadable reply: {e}")),
            Err(e) => Err(format!("no reply from carpd: {e}")),
        }
    }

    /// Send `request` and return its reply, whatever it says.
    pub fn ask(&mut self, request: &Request) -> Result<Reply, String> {
        self.send(request)?;
        self.receive()
    }

    /// Send `request`; a reply with `ok: false` becomes its error text.
    pub fn call(&mut self, request: &Request) -> Result<Reply, String> {
        let reply = self.ask(request)?;
        if reply.ok {
            Ok(reply)
        } else {
            Err(reply.error.unwrap_or_else(|| "request failed".into()))
        }
    }

    /// Wait for replies without a time limit (`watch` streams forever).
    pub fn wait_forever(&mut self) {
        let _ = self.reader.get_ref().set_read_timeout(None);
    }
}

/// One request on a fresh connection; `None` if the daemon does not answer
/// within `timeout` (used by pollers, which must not hang on a stopped daemon).
pub fn query(path: &Path, request: &Request, timeout: Duration) -> Option<Reply> {
    Connection::open(path, timeout).ok()?.ask(request).ok()
}
