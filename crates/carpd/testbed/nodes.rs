//! carpd processes in a [`Topology`] and their control sockets, read with
//! [`carpd::control::client`], the code `carpctl` uses.
//!
//! Comparisons of a vhost's state go through [`state_name`] only, so a
//! typed state needs one change here.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;
use carpd::control::client;
use carpd::control::types::{Reply, Request, VhostView};

use super::topology::Topology;

/// How long a plain status query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// One carpd process (or its last incarnation).
#[derive(Debug, Clone)]
pub struct Carpd {
    /// Short name, used in file names and messages.
    pub name: String,
    /// Namespace it runs in.
    pub ns: String,
    /// Its control socket.
    pub sock: PathBuf,
    /// stdout + stderr.
    pub log: PathBuf,
    /// Pid of the running process.
    pub pid: u32,
    /// The arguments after `run --log-level N --control SOCK` (for restarts).
    pub args: Vec<String>,
    /// The carpd executable.
    pub exe: PathBuf,
    /// `--log-level`.
    pub log_level: u8,
}

impl Carpd {
    /// Describe (not start) carpd `name` on host `i` of `topo`, with its
    /// socket, log and state directory in the topology's scratch directory.
    pub fn new(topo: &Topology, i: usize, name: &str, exe: &Path, args: Vec<String>) -> Carpd {
        Carpd {
            name: name.to_owned(),
            ns: topo.ns(i).to_owned(),
            sock: topo.path(&format!("{name}.sock")),
            log: topo.path(&format!("{name}.log")),
            pid: 0,
            args,
            exe: exe.to_owned(),
            log_level: 7,
        }
    }

    /// (Re)start with the recorded arguments and wait until the control
    /// socket answers.
    pub fn start(&mut self, topo: &Topology) -> anyhow::Result<()> {
        let exe = self.exe.to_string_lossy().into_owned();
        let sock = self.sock.to_string_lossy().into_owned();
        let level = self.log_level.to_string();
        let mut argv = vec![
            exe.as_str(),
            "run",
            "--log-level",
            &level,
            "--control",
            &sock,
        ];
        // State (maintenance flag, address record) stays in the topology,
        // not in the machine's /var/lib/carpd, unless the caller chose one.
        let state = topo
            .path(&format!("{}-state", self.name))
            .to_string_lossy()
            .into_owned();
        if !self.args.iter().any(|a| a == "--state-dir") {
            argv.extend(["--state-dir", state.as_str()]);
        }
        argv.extend(self.args.iter().map(String::as_str));
        let _ = std::fs::remove_file(&self.sock);
        self.pid = topo.spawn_logged(&self.ns, &argv, &self.log)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.status().is_none() {
            if let Some(out) = topo.wait_child(self.pid, Duration::ZERO) {
                bail!("{} exited at start-up: {}", self.name, out.status);
            }
            if Instant::now() >= deadline {
                bail!("{}: control socket never answered", self.name);
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Every vhost, straight from the control socket; `None` while the
    /// daemon does not answer.
    pub fn status(&self) -> Option<Vec<VhostView>> {
        query(&self.sock, &Request::Status, QUERY_TIMEOUT)?.vhosts
    }

    /// The view of `vhid`, if the daemon answers and has it.
    pub fn view(&self, vhid: u8) -> Option<VhostView> {
        self.status()?.into_iter().find(|v| v.vhid == vhid)
    }

    /// The state of `vhid` ("MASTER", "BACKUP", "INIT").
    pub fn state(&self, vhid: u8) -> Option<String> {
        self.view(vhid).as_ref().map(state_name)
    }
}

/// One request on a fresh connection, given up after `timeout`.
pub fn query(sock: &Path, request: &Request, timeout: Duration) -> Option<Reply> {
    client::query(sock, request, timeout)
}

/// A vhost's state as text, as carpctl prints it.
pub fn state_name(v: &VhostView) -> String {
    v.state.to_string()
}

/// Whether `v` is MASTER.
pub fn is_master(v: &VhostView) -> bool {
    state_name(v) == "MASTER"
}

/// carpd's default master-down interval (spec 4.3): 3 x advbase +
/// advskew/256 from advbase 1, 3 x advskew/256 at advbase 0.
pub fn master_down(advbase: u32, advskew: u32) -> Duration {
    let byte = |v: u32| u8::try_from(v).unwrap_or(u8::MAX);
    carp_proto::config::MasterDownFormula::default().master_down(
        carp_proto::AdvBase(byte(advbase)),
        carp_proto::AdvSkew(byte(advskew)),
    )
}
