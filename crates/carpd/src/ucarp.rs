//! `carpd ucarp ...`: a drop-in for ucarp(8) command lines.
//!
//! ucarp's options are mapped onto the same [`DaemonConfig`] the
//! ifconfig-style words build, with `lladdr real` (ucarp never uses the
//! virtual MAC). Differences, chosen so existing ucarp scripts keep working:
//!
//! - carpd adds and removes the `-a` address itself (as `/32`), and also runs
//!   `-u`/`-d` with ucarp's arguments `<interface> <address>`. Scripts that
//!   add the address themselves (usually with the subnet's prefix) are
//!   harmless: both entries exist while MASTER and both go on the way down.
//! - The down script runs when a MASTER steps down or stops, never at start-up:
//!   carpd removes a stale address itself before joining, so it always behaves
//!   as with `-n`, and as with `-z` when it stops as MASTER.
//! - `-s` is accepted, but carpd sends from the interface's first non-virtual
//!   IPv4 address, which is what `-s` names in practice.
//! - A passfile must be mode 0600 (carpd refuses group/other access).
//! - `-r` must be 3 (CARP's dead ratio); `-m` must be 224.0.0.18; `-x`, `-M`,
//!   `-S` and `-B` are refused with a sentence (run it under systemd instead of
//!   `-B`); `-f` is accepted and ignored (logs go to stderr); `-D` logs at debug.
//! - Each instance gets its own control socket,
//!   `/run/carpd/ucarp-<interface>-<vhid>.sock`, as ucarp runs one process per vhid.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::config::{ConfigFileError, DaemonConfig};
use crate::control::DEFAULT_DIR;

/// ucarp's command-line options.
#[derive(Debug, Clone, clap::Args)]
pub struct UcarpArgs {
    /// The network interface to bind to.
    #[arg(short = 'i', long = "interface")]
    interface: String,
    /// The persistent source address (real IP) of this host on the interface.
    #[arg(short = 's', long = "srcip")]
    srcip: Option<Ipv4Addr>,
    /// Multicast group (only 224.0.0.18 is supported).
    #[arg(short = 'm', long = "mcast")]
    mcast: Option<Ipv4Addr>,
    /// The id of the virtual server, 1-255.
    #[arg(short = 'v', long = "vhid")]
    vhid: u8,
    /// The shared password (visible in ps; prefer -o).
    #[arg(short = 'p', long = "pass")]
    pass: Option<String>,
    /// File holding the shared password on its first line (mode 0600).
    #[arg(short = 'o', long = "passfile", conflicts_with = "pass")]
    passfile: Option<PathBuf>,
    /// Preemptive failover: take over from a master that advertises less often.
    #[arg(short = 'P', long = "preempt")]
    preempt: bool,
    /// Do not run the down script at start-up (carpd never does).
    #[arg(short = 'n', long = "neutral")]
    neutral: bool,
    /// The virtual IPv4 address.
    #[arg(short = 'a', long = "addr")]
    addr: Ipv4Addr,
    /// Advertisement interval in seconds.
    #[arg(short = 'b', long = "advbase", default_value_t = 1)]
    advbase: u8,
    /// Advertisement skew, 0-254 (1/256 s).
    #[arg(short = 'k', long = "advskew", default_value_t = 0)]
    advskew: u8,
    /// Command run on becoming MASTER, with arguments `<interface> <address>`.
    #[arg(short = 'u', long = "upscript")]
    upscript: Option<PathBuf>,
    /// Command run on leaving MASTER, with arguments `<interface> <address>`.
    #[arg(short = 'd', long = "downscript")]
    downscript: Option<PathBuf>,
    /// Ratio of advertisement intervals after which the master is dead (only 3).
    #[arg(short = 'r', long = "deadratio", default_value_t = 3)]
    deadratio: u32,
    /// Enable debug output (log level 7).
    #[arg(short = 'D', long = "debug")]
    debug: bool,
    /// Run the down script at exit when MASTER (carpd always does).
    #[arg(short = 'z', long = "shutdown")]
    shutdown: bool,
    /// Detach into the background (not supported: use systemd).
    #[arg(short = 'B', long = "daemonize")]
    daemonize: bool,
    /// Syslog facility (ignored: carpd logs to stderr).
    #[arg(short = 'f', long = "facility")]
    facility: Option<String>,
    /// Extra parameter for the scripts (not supported).
    #[arg(short = 'x', long = "xparam")]
    xparam: Option<String>,
    /// Ignore the interface state (not supported).
    #[arg(short = 'S', long = "ignoreifstate")]
    ignoreifstate: bool,
    /// Use broadcast advertisements (not supported).
    #[arg(short = 'M', long = "nomcast")]
    nomcast: bool,
    /// carpd's own: the control socket [default: /run/carpd/ucarp-IFACE-VHID.sock].
    #[arg(long = "control")]
    control: Option<PathBuf>,
}

impl UcarpArgs {
    /// Map the options onto a daemon configuration, or say which one cannot be honoured.
    pub fn into_config(self) -> Result<DaemonConfig, String> {
        let refuse = |what: &str| Err(format!("ucarp option {what} is not supported by carpd"));
        if self.xparam.is_some() {
            return refuse("-x/--xparam");
        }
        if self.nomcast {
            return refuse("-M/--nomcast (broadcast advertisements)");
        }
        if self.ignoreifstate {
            return refuse("-S/--ignoreifstate");
        }
        if self.daemonize {
            return refuse("-B/--daemonize (run it in the foreground under systemd)");
        }
        if self
            .mcast
            .is_some_and(|m| m != Ipv4Addr::new(224, 0, 0, 18))
        {
            return refuse("-m/--mcast with a group other than 224.0.0.18");
        }
        if self.deadratio != 3 {
            return Err(format!(
                "deadratio {} is not supported: carpd uses CARP's 3 advertisement intervals",
                self.deadratio
            ));
        }
        let mut words: Vec<String> = vec![
            "carpdev".into(),
            self.interface.clone(),
            "vhid".into(),
            self.vhid.to_string(),
            "advbase".into(),
            self.advbase.to_string(),
            "advskew".into(),
            self.advskew.to_string(),
            "lladdr".into(),
            "real".into(),
        ];
        if let Some(p) = &self.pass {
            words.extend(["pass".into(), p.clone()]);
        }
        if let Some(f) = &self.passfile {
            words.extend(["passfile".into(), f.display().to_string()]);
        }
        if let Some(u) = &self.upscript {
            words.extend(["up".into(), u.display().to_string()]);
        }
        if let Some(d) = &self.downscript {
            words.extend(["down".into(), d.display().to_string()]);
        }
        words.push(format!("{}/32", self.addr));
        let log_level = if self.debug { 7 } else { 6 };
        let control = self.control.clone().unwrap_or_else(|| {
            PathBuf::from(DEFAULT_DIR).join(format!("ucarp-{}-{}.sock", self.interface, self.vhid))
        });
        DaemonConfig::from_command_line(self.preempt, log_level, Some(control), &words)
            .map_err(|e: ConfigFileError| e.to_string())
    }
}

#[cfg(test)]
mod test {
    use clap::Parser;

    use super::*;
    use crate::config::Lladdr;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: UcarpArgs,
    }

    fn parse(line: &str) -> Result<DaemonConfig, String> {
        let argv = std::iter::once("ucarp").chain(line.split_whitespace());
        Cli::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .args
            .into_config()
    }

    #[test]
    fn man_page_example_maps_onto_a_real_lladdr_vhost() {
        let c = parse(
            "-i eth0 -s 10.1.1.10 -v 10 -p secret -a 10.1.1.252 \
             --upscript=/etc/vip-up.sh --downscript=/etc/vip-down.sh -P -k 50 -b 2",
        )
        .unwrap();
        assert!(c.preempt);
        assert_eq!(c.vhosts.len(), 1);
        let v = &c.vhosts[0];
        assert_eq!((v.carpdev.as_str(), v.proto.vhid.get()), ("eth0", 10));
        assert_eq!((v.proto.advbase.0, v.proto.advskew.0), (2, 50));
        assert_eq!(v.lladdr, Lladdr::Real);
        assert_eq!(v.proto.passphrase.as_bytes(), b"secret");
        assert_eq!(v.addresses[0].to_string(), "10.1.1.252/32");
        assert_eq!(v.hooks.up, Some(PathBuf::from("/etc/vip-up.sh")));
        assert_eq!(v.hooks.down, Some(PathBuf::from("/etc/vip-down.sh")));
        assert_eq!(
            c.control,
            Some(PathBuf::from("/run/carpd/ucarp-eth0-10.sock"))
        );
    }

    #[test]
    fn long_options_with_equals_and_accepted_no_ops() {
        let c =
            parse("--interface=eth1 --vhid=3 --addr=192.0.2.9 --pass=x -n -z -f local0 -D -r 3")
                .unwrap();
        assert_eq!(c.log_level, 7);
        assert!(!c.preempt);
        assert_eq!(c.vhosts[0].carpdev, "eth1");
    }

    #[test]
    fn unsupported_options_are_refused_with_a_sentence() {
        let base = "-i eth0 -v 1 -a 192.0.2.9 -p x";
        for (extra, want) in [
            ("-x foo", "-x/--xparam"),
            ("-M", "-M/--nomcast"),
            ("-S", "-S/--ignoreifstate"),
            ("-B", "-B/--daemonize"),
            ("-m 239.1.1.1", "-m/--mcast"),
            ("-r 4", "deadratio 4 is not supported"),
            ("-k 255", "advskew 255 is out of range"),
        ] {
            let err = parse(&format!("{base} {extra}")).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
        assert!(
            parse("-v 1 -a 192.0.2.9")
                .unwrap_err()
                .contains("--interface")
        );
    }
}
