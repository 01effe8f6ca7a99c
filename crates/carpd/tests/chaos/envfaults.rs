//! Faults of the environment (issue 10), each on one node and undone or
//! healed: its macvlan deleted, its carpdev deleted and re-created, its
//! carpdev's addresses flushed, SIGHUP storms over a config file swapped
//! underneath, hooks that hang or flood their output, and its HTTP and
//! control servers filled with slow clients.
//!
//! The nodes run from config files ([`write_config`]) with an `up` and a
//! `down` hook that read what to do from a mode file (normally nothing), so
//! the hook fault only has to set the mode and cause transitions.

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use carpd::control::types::Request;
use nix::sys::signal::Signal;

use super::faults::{Fault, Injector, Kind};
use super::{NAMES, PASS, SKEWS, VHID, VIP};
use crate::common::Lab;
use crate::common::daemon::query;
use crate::common::spawn_in_netns;

/// Where each node's HTTP server listens, on its own namespace's loopback.
pub const HTTP: &str = "127.0.0.1:8080";
/// Each hook is killed after this long.
pub const HOOK_TIMEOUT: &str = "2s";
/// Slow HTTP clients per `exhaust` fault (the server serves 64 at once).
pub const HTTP_CLIENTS: usize = 200;
/// Partial control lines per `exhaust` fault (the server serves 32 at once).
pub const CONTROL_CLIENTS: usize = 100;
/// What a flooding hook prints, stdout and stderr together.
pub const FLOOD_BYTES: usize = 100_000_000;

/// Node `i`'s config file.
pub fn config_path(lab: &Lab, i: usize) -> PathBuf {
    lab.path(&format!("{}.toml", NAMES[i]))
}

/// The mode file node `i`'s hooks read: `hang`, `flood` or absent.
fn hook_mode(lab: &Lab, i: usize) -> PathBuf {
    lab.path(&format!("{}-hook.mode", NAMES[i]))
}

/// Node `i`'s configuration; `variant` changes the hook timeout only (a
/// valid file that differs, so a reload has something to apply).
pub fn config_text(lab: &Lab, i: usize, variant: bool) -> String {
    let hook = lab.path(&format!("{}-hook.sh", NAMES[i]));
    let timeout = if variant { "3s" } else { HOOK_TIMEOUT };
    format!(
        "# chaos soak node {name}{note}\npreempt = true\nhttp = \"{HTTP}\"\n\n[[vhost]]\n\
         carpdev = \"eth0\"\nvhid = {VHID}\nadvbase = 1\nadvskew = {skew}\npass = \"{PASS}\"\n\
         addresses = [\"{VIP}/24\"]\nup = \"{hook}\"\ndown = \"{hook}\"\nhook_timeout = \"{timeout}\"\n",
        name = NAMES[i],
        note = if variant { " (variant)" } else { "" },
        skew = SKEWS[i],
        hook = hook.display(),
    )
}

/// Write node `i`'s hook script and config file; return the words after
/// `carpd run` that start it from the file.
pub fn write_config(lab: &Lab, i: usize) -> Vec<String> {
    let hook = lab.path(&format!("{}-hook.sh", NAMES[i]));
    let half = FLOOD_BYTES / 2;
    let script = format!(
        "#!/bin/sh\ncase \"$(cat {mode} 2>/dev/null)\" in\n\
         hang) exec sleep 60 ;;\n\
         flood) yes 'flooding hook output line' | head -c {half} >&2 &\n\
         \x20 yes 'flooding hook output line' | head -c {half}\n  wait ;;\nesac\nexit 0\n",
        mode = hook_mode(lab, i).display(),
    );
    std::fs::write(&hook, script).expect("write hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("chmod hook");
    let path = config_path(lab, i);
    std::fs::write(&path, config_text(lab, i, false)).expect("write config");
    vec!["--config".to_owned(), path.display().to_string()]
}

/// Replace `path` atomically (rename over it) with `content`, or with a
/// FIFO when `content` is `None`.
fn swap_file(path: &std::path::Path, content: Option<&[u8]>) {
    let tmp = path.with_extension("swap");
    let _ = std::fs::remove_file(&tmp);
    match content {
        Some(bytes) => std::fs::write(&tmp, bytes).expect("write swap file"),
        None => nix::unistd::mkfifo(&tmp, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo"),
    }
    std::fs::rename(&tmp, path).expect("rename swap file");
}

impl Injector<'_> {
    /// The current ifindex of node `i`'s `eth0` (it changes when re-created).
    fn eth0_index(&self, i: usize) -> Option<u64> {
        let out = self
            .lab
            .exec(self.lab.ns(i), &["ip", "-j", "link", "show", "dev", "eth0"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v.get(0)?.get("ifindex")?.as_u64()
    }

    /// Inject one fault of the environment; see the module doc.
    pub fn inject_env(&mut self, kind: Kind, hold: f64) -> Fault {
        let lab = self.lab;
        let i = self.target();
        let ns = lab.ns(i).to_owned();
        let name = NAMES[i];
        let mut blind = None;
        let (what, start);
        match kind {
            Kind::Macvlan => {
                let macvlan = self
                    .eth0_index(i)
                    .map(|idx| format!("carp{idx}v{VHID}"))
                    .unwrap_or_default();
                what = format!("{name} {macvlan}");
                start = self.shared.now();
                let out = lab.exec(&ns, &["ip", "link", "del", &macvlan]);
                if !out.status.success() {
                    println!(
                        "  (macvlan {macvlan} of {name} not deleted: {})",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                // The daemon heals this one itself.
                self.sleep_s(hold);
            }
            Kind::Carpdev => {
                let port = lab.host(i).port.clone();
                let sw = lab.switch.clone();
                let (v4, v6) = (
                    format!("{}/24", lab.host(i).v4),
                    format!("{}/64", lab.host(i).v6),
                );
                what = format!("{name} eth0 (index {})", self.eth0_index(i).unwrap_or(0));
                start = self.shared.now();
                lab.exec_ok(&ns, &["ip", "link", "del", "eth0"]);
                self.sleep_s(hold);
                lab.exec_ok(
                    &ns,
                    &[
                        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                        "netns", &sw,
                    ],
                );
                lab.exec_ok(&sw, &["ip", "link", "set", &port, "master", "br0", "up"]);
                lab.exec_ok(&ns, &["ip", "link", "set", "eth0", "up"]);
                lab.exec_ok(&ns, &["ip", "addr", "add", &v4, "dev", "eth0"]);
                lab.exec_ok(&ns, &["ip", "addr", "add", &v6, "dev", "eth0", "nodad"]);
            }
            Kind::Flush => {
                let addrs = lab.addrs(&ns, "eth0");
                what = format!("{name} eth0 ({} addresses)", addrs.len());
                start = self.shared.now();
                lab.exec_ok(&ns, &["ip", "addr", "flush", "dev", "eth0"]);
                self.sleep_s(hold);
                for a in &addrs {
                    let cidr = format!("{}/{}", a.local, a.prefix_len);
                    let mut argv = vec!["ip", "addr", "add", cidr.as_str(), "dev", "eth0"];
                    if a.family == "inet6" {
                        argv.push("nodad");
                    }
                    if a.local.starts_with("fe80") {
                        argv.extend(["scope", "link"]);
                    }
                    let out = lab.exec(&ns, &argv);
                    if !out.status.success() {
                        println!(
                            "  (cannot restore {cidr} on {name}: {})",
                            String::from_utf8_lossy(&out.stderr).trim()
                        );
                    }
                }
            }
            Kind::Sighup => {
                let path = config_path(lab, i);
                let good = config_text(lab, i, false);
                let variant = config_text(lab, i, true);
                let mut hups = 0;
                let mut swaps = [0usize; 4];
                start = self.shared.now();
                while self.shared.now() - start < hold {
                    // A new file every few signals: a valid variant, garbage
                    // ([`Injector::garbage`]), a FIFO, the original.
                    if hups % 3 == 0 {
                        let which = self.rng.below(4);
                        swaps[which] += 1;
                        match which {
                            0 => swap_file(&path, Some(variant.as_bytes())),
                            1 => {
                                let junk = self.garbage(&good);
                                swap_file(&path, Some(&junk));
                            }
                            2 => swap_file(&path, None),
                            _ => swap_file(&path, Some(good.as_bytes())),
                        }
                    }
                    lab.kill(&self.nodes[i], Signal::SIGHUP);
                    hups += 1;
                    let pause = self.rng.secs(0.02, 0.15);
                    self.sleep_s(pause);
                }
                swap_file(&path, Some(good.as_bytes()));
                lab.kill(&self.nodes[i], Signal::SIGHUP);
                what = format!(
                    "{name} {hups} HUPs (variant {}, garbage {}, FIFO {}, original {})",
                    swaps[0], swaps[1], swaps[2], swaps[3]
                );
            }
            Kind::Hook => {
                let mode = if self.rng.chance(0.5) {
                    "hang"
                } else {
                    "flood"
                };
                what = format!("{name} {mode}");
                std::fs::write(hook_mode(lab, i), mode).expect("write hook mode");
                // Make node i change state: demote the nodes ahead of it, so it
                // becomes MASTER (up hook), or, for A, so it leaves (down hook).
                let demoted: Vec<usize> = if i == 0 { vec![0] } else { (0..i).collect() };
                start = self.shared.now();
                for &d in &demoted {
                    self.demote(d, 1);
                }
                self.sleep_s(hold);
                for &d in &demoted {
                    self.demote(d, -1);
                }
                // The transitions back run their hooks in this mode too.
                self.sleep_s(3.0);
                let _ = std::fs::remove_file(hook_mode(lab, i));
            }
            Kind::Exhaust => {
                let sock = self.nodes[i].sock.clone();
                blind = Some(i);
                start = self.shared.now();
                let http = spawn_in_netns(&ns, move || {
                    let addr: SocketAddr = HTTP.parse().expect("address");
                    let mut conns = Vec::new();
                    for _ in 0..HTTP_CLIENTS {
                        let Ok(mut c) =
                            TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                        else {
                            break;
                        };
                        let _ = c.set_write_timeout(Some(Duration::from_millis(100)));
                        let _ = c.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: ");
                        conns.push(c);
                    }
                    conns
                });
                let mut controls = Vec::new();
                for _ in 0..CONTROL_CLIENTS {
                    let Ok(mut c) = UnixStream::connect(&sock) else {
                        break;
                    };
                    let _ = c.set_write_timeout(Some(Duration::from_millis(100)));
                    let _ = c.write_all(&[b'{'; 4000]);
                    controls.push(c);
                }
                let conns = http.join().unwrap_or_default();
                // Connections past the HTTP backlog time out and are not counted.
                what = format!(
                    "{name} {} HTTP + {} control clients",
                    conns.len(),
                    controls.len()
                );
                self.sleep_s(hold - (self.shared.now() - start));
                drop(conns);
                drop(controls);
            }
            _ => unreachable!("not a fault of the environment: {kind:?}"),
        }
        Fault {
            kind,
            what,
            start,
            end: self.shared.now(),
            settled: None,
            blind,
        }
    }

    /// A broken config file: the good one cut short (often invalid TOML or
    /// a vhost missing keys), random bytes, or random bytes over the 1 MiB limit.
    fn garbage(&mut self, good: &str) -> Vec<u8> {
        match self.rng.below(5) {
            0 | 1 => {
                let cut = 1 + self.rng.below(good.len() - 1);
                good.as_bytes()[..cut].to_vec()
            }
            2 => (0..2 << 20).map(|_| self.rng.next() as u8).collect(),
            _ => {
                let len = 1 + self.rng.below(8192);
                (0..len).map(|_| self.rng.next() as u8).collect()
            }
        }
    }

    /// Raise (or, negative, lower) node `i`'s demote counter.
    fn demote(&mut self, i: usize, by: i32) {
        let reply = query(&self.nodes[i].sock, &Request::Demote { group: None, by });
        if !reply.is_some_and(|r| r.ok) {
            println!("  (demote {by} of {} not answered)", NAMES[i]);
        }
    }
}
