//! Real `carpd` / `carpctl` processes inside a [`Lab`].
//!
//! The daemons are the test bed's [`Carpd`]: own control socket, log file
//! and state directory in the lab's scratch directory; the lab kills them
//! on drop and prints the logs if the test failed. State is read with
//! `carpctl status --json` (what an operator sees), or straight from the
//! control socket where a timing is measured and spawning a process per
//! poll would blur it.

use std::path::Path;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use carp_proto::Stats;
use carpd::control::types::{Reply, Request, VhostView};

pub use super::testbed::nodes::{Carpd, master_down, state_name};
pub use super::testbed::ping::{Pinger, Record};
pub use super::wall_now;
use super::{CMD_TIMEOUT, Lab, run_timeout};

/// Path of the built `carpd`.
pub const CARPD: &str = env!("CARGO_BIN_EXE_carpd");
/// Path of the built `carpctl`.
pub const CARPCTL: &str = env!("CARGO_BIN_EXE_carpctl");

impl Lab {
    /// Start `carpd run --log-level 7 --control <sock> <args>` in host `i`'s
    /// namespace and wait until its control socket answers.
    pub fn carpd<S: AsRef<str>>(&self, i: usize, name: &str, args: &[S]) -> Carpd {
        let args: Vec<String> = args.iter().map(|s| s.as_ref().to_owned()).collect();
        let mut d = Carpd::new(self, i, name, Path::new(CARPD), args);
        self.start(&mut d);
        d
    }

    /// (Re)start `d` with its recorded arguments and wait for its socket.
    pub fn start(&self, d: &mut Carpd) {
        d.start(self).unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Send `sig` to `d`.
    pub fn kill(&self, d: &Carpd, sig: nix::sys::signal::Signal) {
        self.signal(d.pid, sig);
    }

    /// Wait up to `timeout` for `d` to exit and return its exit code
    /// (`None` if it was killed by a signal); panics if it keeps running.
    pub fn wait_exit(&self, d: &Carpd, timeout: Duration) -> Option<i32> {
        let out = self
            .wait_child(d.pid, timeout)
            .unwrap_or_else(|| panic!("{} still running after {timeout:?}", d.name));
        out.status.code()
    }
}

/// Run `carpctl --control <sock> <args>` (no namespace needed: the socket is
/// a file).
pub fn carpctl(d: &Carpd, args: &[&str]) -> Output {
    run_timeout(
        Command::new(CARPCTL)
            .arg("--control")
            .arg(&d.sock)
            .args(args),
        CMD_TIMEOUT,
    )
}

/// Like [`carpctl`], panicking unless it succeeds; return stdout.
pub fn carpctl_ok(d: &Carpd, args: &[&str]) -> String {
    let out = carpctl(d, args);
    assert!(
        out.status.success(),
        "carpctl {args:?} on {} failed ({}): {}",
        d.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `carpctl status --json`: every vhost; `None` while the daemon does not answer.
pub fn status(d: &Carpd) -> Option<Vec<VhostView>> {
    let out = carpctl(d, &["status", "--json"]);
    if !out.status.success() {
        return None;
    }
    let reply: Reply = serde_json::from_slice(&out.stdout).expect("status --json parses");
    reply.vhosts
}

/// The state of `vhid` per `carpctl status --json`.
pub fn state(d: &Carpd, vhid: u8) -> Option<String> {
    status(d)?
        .into_iter()
        .find(|v| v.vhid == vhid)
        .map(|v| state_name(&v))
}

/// The view of `vhid` per `carpctl status --json` (panics if absent).
pub fn view(d: &Carpd, vhid: u8) -> VhostView {
    status(d)
        .unwrap_or_else(|| panic!("{} does not answer", d.name))
        .into_iter()
        .find(|v| v.vhid == vhid)
        .unwrap_or_else(|| panic!("{} has no vhid {vhid}", d.name))
}

/// `carpctl stats --json`.
pub fn stats(d: &Carpd) -> Stats {
    let out = carpctl_ok(d, &["stats", "--json"]);
    serde_json::from_str(&out).expect("stats --json parses")
}

/// Ask the control socket directly (no process spawn): for timed polls.
pub fn query(sock: &Path, request: &Request) -> Option<Reply> {
    super::testbed::nodes::query(sock, request, Duration::from_secs(2))
}

/// Like [`query`], but give up after `timeout` (a SIGSTOPped daemon accepts
/// the connection and never answers; a poller must not hang on it for 2 s).
pub fn query_within(sock: &Path, request: &Request, timeout: Duration) -> Option<Reply> {
    super::testbed::nodes::query(sock, request, timeout)
}

/// The state of `vhid` straight from the control socket.
pub fn fast_state(d: &Carpd, vhid: u8) -> Option<String> {
    d.state(vhid)
}

/// Poll `f` every `every` until it returns `Some`, for at most `timeout`;
/// panic with `what` otherwise. Returns the value and the time it took.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?}: {what}"
        );
        thread::sleep(every);
    }
}

/// Wait until `d`'s `vhid` is in `want` (polling `carpctl status`).
pub fn wait_state(d: &Carpd, vhid: u8, want: &str, timeout: Duration) -> Duration {
    wait_for(
        &format!("{} vhid {vhid} {want}", d.name),
        timeout,
        Duration::from_millis(50),
        || (state(d, vhid).as_deref() == Some(want)).then_some(()),
    )
    .1
}

/// Wait until `d`'s `vhid` is in `want`, polling the socket every 2 ms;
/// the time is measured from `since`.
pub fn wait_state_fast(
    d: &Carpd,
    vhid: u8,
    want: &str,
    since: Instant,
    timeout: Duration,
) -> Duration {
    let deadline = since + timeout;
    loop {
        if fast_state(d, vhid).as_deref() == Some(want) {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {} vhid {vhid} {want} (now {:?})",
            d.name,
            fast_state(d, vhid)
        );
        thread::sleep(Duration::from_millis(2));
    }
}

/// Wait until exactly one of `nodes` is MASTER of `vhid` and every other is
/// BACKUP, stable over two polls; return the master's index.
pub fn wait_single_master(nodes: &[&Carpd], vhid: u8, timeout: Duration) -> usize {
    let mut last = None;
    wait_for(
        &format!("exactly one MASTER of vhid {vhid}"),
        timeout,
        Duration::from_millis(100),
        || {
            let states: Vec<Option<String>> = nodes.iter().map(|d| state(d, vhid)).collect();
            let masters: Vec<usize> = (0..nodes.len())
                .filter(|&i| states[i].as_deref() == Some("MASTER"))
                .collect();
            let backups = states
                .iter()
                .filter(|s| s.as_deref() == Some("BACKUP"))
                .count();
            let now = (masters.len() == 1 && backups == nodes.len() - 1).then(|| masters[0]);
            let stable = now.is_some() && now == last;
            last = now;
            if stable { now } else { None }
        },
    )
    .0
}

/// A CARP advertisement for `vhid` with a valid checksum and an HMAC under
/// `pass` over `vips` and `counter`, as a genuine peer would send it.
pub fn signed_advert(
    vhid: u8,
    advbase: u8,
    advskew: u8,
    pass: &[u8],
    vips: &[std::net::Ipv4Addr],
    counter: [u8; 8],
) -> [u8; 36] {
    use carp_proto::auth::Auth;
    use carp_proto::wire::carp::{AUTHLEN, Repr, TYPE_ADVERTISEMENT, VERSION};
    use carp_proto::{Passphrase, Vhid};
    let key = Passphrase::new(pass).expect("passphrase");
    let auth = Auth::new(&key, Vhid::new(vhid).expect("vhid"), vips, &[]);
    Repr {
        version: VERSION,
        kind: TYPE_ADVERTISEMENT,
        vhid,
        advskew,
        authlen: AUTHLEN,
        demote: 0,
        advbase,
        counter,
        md: auth.generate(&counter),
    }
    .to_bytes()
}
