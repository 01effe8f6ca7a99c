//! Real `carpd` / `carpctl` processes inside a [`Lab`].
//!
//! Each daemon gets its own control socket and log file in the lab's scratch
//! directory; the lab kills it on drop and prints the logs if the test
//! failed. State is read with `carpctl status --json` (what an operator
//! sees), or straight from the control socket where a timing is measured
//! and spawning a process per poll would blur it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use carp_proto::Stats;
use carpd::control::types::{Reply, Request, VhostView};

use super::{CMD_TIMEOUT, Lab, run_timeout};

/// Path of the built `carpd`.
pub const CARPD: &str = env!("CARGO_BIN_EXE_carpd");
/// Path of the built `carpctl`.
pub const CARPCTL: &str = env!("CARGO_BIN_EXE_carpctl");

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
    /// The arguments after `run` (for restarts).
    pub args: Vec<String>,
}

impl Lab {
    /// Start `carpd run --log-level 7 --control <sock> <args>` in host `i`'s
    /// namespace and wait until its control socket answers.
    pub fn carpd<S: AsRef<str>>(&self, i: usize, name: &str, args: &[S]) -> Carpd {
        let args: Vec<String> = args.iter().map(|s| s.as_ref().to_owned()).collect();
        let mut d = Carpd {
            name: name.to_owned(),
            ns: self.ns(i).to_owned(),
            sock: self.path(&format!("{name}.sock")),
            log: self.path(&format!("{name}.log")),
            pid: 0,
            args,
        };
        self.start(&mut d);
        d
    }

    /// (Re)start `d` with its recorded arguments and wait for its socket.
    pub fn start(&self, d: &mut Carpd) {
        let sock = d.sock.to_str().expect("utf-8 path").to_owned();
        let mut argv = vec![CARPD, "run", "--log-level", "7", "--control", &sock];
        // State (maintenance flag, address record) stays in the lab, not in
        // the machine's /var/lib/carpd, unless the test chose a directory.
        let state = self.path(&format!("{}-state", d.name));
        let state = state.to_str().expect("utf-8 path").to_owned();
        if !d.args.iter().any(|a| a == "--state-dir") {
            argv.extend(["--state-dir", state.as_str()]);
        }
        argv.extend(d.args.iter().map(String::as_str));
        let _ = std::fs::remove_file(&d.sock);
        d.pid = self.spawn_logged(&d.ns, &argv, &d.log);
        let deadline = Instant::now() + Duration::from_secs(10);
        while query(&d.sock, &Request::Status).is_none() {
            if let Some(out) = self.wait_child(d.pid, Duration::ZERO) {
                panic!("{} exited at start-up: {}", d.name, out.status);
            }
            assert!(
                Instant::now() < deadline,
                "{}: control socket never answered",
                d.name
            );
            thread::sleep(Duration::from_millis(20));
        }
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
        .map(|v| v.state.to_string())
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
pub fn query(sock: &std::path::Path, request: &Request) -> Option<Reply> {
    let stream = UnixStream::connect(sock).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let mut line = serde_json::to_string(request).ok()?;
    line.push('\n');
    writer.write_all(line.as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).ok()?;
    serde_json::from_str(&reply).ok()
}

/// Like [`query`], but give up after `timeout` (a SIGSTOPped daemon accepts
/// the connection and never answers; a poller must not hang on it for 2 s).
pub fn query_within(sock: &std::path::Path, request: &Request, timeout: Duration) -> Option<Reply> {
    let stream = UnixStream::connect(sock).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let mut line = serde_json::to_string(request).ok()?;
    line.push('\n');
    writer.write_all(line.as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).ok()?;
    serde_json::from_str(&reply).ok()
}

/// The state of `vhid` straight from the control socket.
pub fn fast_state(d: &Carpd, vhid: u8) -> Option<String> {
    query(&d.sock, &Request::Status)?
        .vhosts?
        .into_iter()
        .find(|v| v.vhid == vhid)
        .map(|v| v.state.to_string())
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

/// carpd's master-down interval (OpenBSD rev 1.370, spec 4.3):
/// 3 x (advbase + advskew/256).
pub fn master_down(advbase: u32, advskew: u32) -> Duration {
    Duration::from_secs_f64(3.0 * (f64::from(advbase) + f64::from(advskew) / 256.0))
}

/// A fast pinger in a namespace, recording the (kernel) receipt time of
/// every echo reply.
pub struct Pinger {
    child: Child,
    reader: Option<JoinHandle<()>>,
    replies: Arc<Mutex<Vec<f64>>>,
}

impl Pinger {
    /// Start `ping -D -i <interval> <dst>` in `ns`.
    pub fn start(ns: &str, dst: &str, interval: &str) -> Pinger {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "ping", "-n", "-D", "-W", "1", "-i"])
            .args([interval, dst])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ping");
        let stdout = child.stdout.take().expect("ping stdout");
        let replies = Arc::new(Mutex::new(Vec::new()));
        let sink = replies.clone();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // [1700000000.123456] 64 bytes from 192.0.2.50: icmp_seq=1 ttl=64 time=0.1 ms
                if !line.contains("bytes from") {
                    continue;
                }
                let ts = line
                    .strip_prefix('[')
                    .and_then(|l| l.split(']').next())
                    .and_then(|t| t.parse::<f64>().ok());
                if let Some(ts) = ts {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(ts);
                }
            }
        });
        Pinger {
            child,
            reader: Some(reader),
            replies,
        }
    }

    /// Stop ping (SIGINT, so it flushes), then return the reply times.
    pub fn finish(mut self) -> Vec<f64> {
        let raw = i32::try_from(self.child.id()).expect("pid fits i32");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGINT,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let v = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        v.clone()
    }
}

impl Drop for Pinger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Seconds since the epoch (ping -D's clock).
pub fn wall_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// The longest gap between consecutive replies in `[from, to]` (epoch
/// seconds), counting the edges of the window; panics if there are no
/// replies in it.
pub fn longest_gap(replies: &[f64], from: f64, to: f64) -> Duration {
    let mut inside: Vec<f64> = replies
        .iter()
        .copied()
        .filter(|t| *t >= from && *t <= to)
        .collect();
    assert!(!inside.is_empty(), "no replies at all in the window");
    inside.sort_by(f64::total_cmp);
    let mut prev = from;
    let mut gap: f64 = 0.0;
    for t in inside.iter().copied().chain([to]) {
        gap = gap.max(t - prev);
        prev = t;
    }
    Duration::from_secs_f64(gap)
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
