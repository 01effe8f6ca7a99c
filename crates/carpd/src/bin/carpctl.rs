//! `carpctl`: query and steer a running carpd over its control socket.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use carpd::control::client::{Connection, DEFAULT_TIMEOUT};
use carpd::control::types::{Reply, Request};
use carpd::control::{diff, table};

/// Control a running carpd.
#[derive(Debug, Parser)]
#[command(name = "carpctl", version)]
struct Cli {
    /// Control socket of the daemon [default: /run/carpd/carpd.sock].
    #[arg(long, global = true)]
    control: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show every vhost: state, since when and why, timing, demotion, last master, counters.
    Status {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Show the carpstats counters (as `netstat -s -p carp`).
    Stats {
        /// Print the raw JSON reply.
        #[arg(long)]
        json: bool,
    },
    /// Stream state transitions with their causes and clock time (UTC) until interrupted.
    Watch,
    /// Raise the demote counter of an interface group (default group `carp`, by 1);
    /// refused if the counter would leave 0..=255.
    Demote {
        /// Interface group.
        group: Option<String>,
        /// Amount, 1 to 255 [default: 1].
        #[arg(value_parser = clap::value_parser!(i32).range(1..=255))]
        by: Option<i32>,
    },
    /// Lower the demote counter of an interface group (default group `carp`, by 1);
    /// refused if the counter would go below 0.
    Undemote {
        /// Interface group.
        group: Option<String>,
        /// Amount, 1 to 255 [default: 1].
        #[arg(value_parser = clap::value_parser!(i32).range(1..=255))]
        by: Option<i32>,
    },
    /// Force a vhost to MASTER or BACKUP.
    State {
        /// The vhid.
        vhid: u8,
        /// `master` or `backup`.
        to: String,
        /// The carpdev, if the vhid exists on several.
        #[arg(long)]
        carpdev: Option<String>,
    },
    /// Release the addresses and stay in INIT (all vhosts, or one).
    Disable {
        /// The vhid.
        vhid: Option<u8>,
        /// The carpdev, if the vhid exists on several.
        #[arg(long)]
        carpdev: Option<String>,
    },
    /// Undo `disable`.
    Enable {
        /// The vhid.
        vhid: Option<u8>,
        /// The carpdev, if the vhid exists on several.
        #[arg(long)]
        carpdev: Option<String>,
    },
    /// Re-read the configuration file.
    Reload,
    /// Maintenance mode: `on` demotes every vhost by 128 so each MASTER moves to
    /// the peer, and is remembered across carpd restarts and reboots; `off` undoes
    /// it; without an argument, show whether it is on.
    Maintenance {
        /// `on` or `off`.
        mode: Option<OnOff>,
    },
    /// Compare configurations.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    Assets {
        /// Output directory.
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Compare this node's vhost settings with a peer's, read from the peer's
    /// HTTP API (`carpd run --http`): addresses, advbase, lladdr and a key
    /// fingerprint (never the key), advskew for information. Exit status 1
    /// when a setting that must agree differs.
    Diff {
        /// The peer's status page, e.g. `http://192.0.2.11:8080/`.
        url: String,
    },
}

/// The argument of `maintenance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OnOff {
    /// Enter maintenance mode.
    On,
    /// Leave maintenance mode.
    Off,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Assets { dir } = &cli.command {
        return match carpd::assets::write(Cli::command(), dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("carpctl: cannot write assets to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Config {
        what: ConfigCommand::Diff { url },
    } = &cli.command
        && let Err(e) = diff::status_url(url)
    {
        // Before connecting: a bad URL is the clearer error.
        eprintln!("carpctl: {e}");
        return ExitCode::FAILURE;
    }
    let path = cli.control.unwrap_or_else(carpd::control::default_path);
    match execute(&path, cli.command) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("carpctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Run `command`; `Ok(false)` is a clean answer that still fails (a diff).
fn execute(path: &std::path::Path, command: Command) -> Result<bool, String> {
    let mut conn = Connection::open(path, DEFAULT_TIMEOUT)?;
    match command {
        Command::Status { json } => {
            let reply = conn.call(&Request::Status)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&reply).map_err(|e| e.to_string())?
                );
            } else {
                print!(
                    "{}",
                    table::status(
                        reply.vhosts.as_deref().unwrap_or(&[]),
                        reply.groups.as_deref().unwrap_or(&[]),
                    )
                );
                print!(
                    "{}",
                    table::interfaces(reply.interfaces.as_deref().unwrap_or(&[]))
                );
                if let Some(s) = &reply.sync {
                    print!("{}", table::sync(s));
                }
                if reply.maintenance == Some(true) {
                    println!("maintenance mode: on (carpctl maintenance off to end it)");
                }
                if let Some(rt) = &reply.realtime {
                    println!("{}", table::realtime(rt));
                }
            }
        }
        Command::Stats { json } => {
            let reply = conn.call(&Request::Stats)?;
            let stats = reply.stats.unwrap_or_default();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).map_err(|e| e.to_string())?
                );
            } else {
                print_stats(&stats);
            }
        }
        Command::Watch => {
            conn.send(&Request::Watch)?;
            conn.wait_forever();
            loop {
                let reply = conn.receive()?;
                if let Some(t) = reply.transition {
                    println!(
                        "{} {:>10.3}s {}@{} {} -> {} ({})",
                        table::clock(std::time::SystemTime::now()),
                        t.at_secs,
                        t.vhid,
                        t.carpdev,
                        t.from,
                        t.to,
                        t.cause
                    );
                    let _ = std::io::stdout().flush();
                } else if let Some(e) = reply.error {
                    eprintln!("carpctl: {e}");
                }
            }
        }
        Command::Demote { group, by } => {
            let (group, by) = amount(group, by)?;
            print_message(conn.call(&Request::Demote { group, by })?)
        }
        Command::Undemote { group, by } => {
            let (group, by) = amount(group, by)?;
            print_message(conn.call(&Request::Demote { group, by: -by })?)
        }
        Command::State { vhid, to, carpdev } => {
            print_message(conn.call(&Request::State { vhid, carpdev, to })?)
        }
        Command::Disable { vhid, carpdev } => print_message(conn.call(&Request::Enable {
            vhid,
            carpdev,
            enabled: false,
        })?),
        Command::Enable { vhid, carpdev } => print_message(conn.call(&Request::Enable {
            vhid,
            carpdev,
            enabled: true,
        })?),
        Command::Reload => print_message(conn.call(&Request::Reload)?),
        Command::Assets { .. } => return Err("assets needs no daemon".to_string()),
        Command::Maintenance { mode: None } => {
            let on = conn.call(&Request::Status)?.maintenance == Some(true);
            println!("maintenance mode: {}", if on { "on" } else { "off" });
        }
        Command::Maintenance { mode: Some(mode) } => {
            print_message(conn.call(&Request::Maintenance {
                on: mode == OnOff::On,
            })?)
        }
        Command::Config {
            what: ConfigCommand::Diff { url },
        } => {
            let here = conn.call(&Request::Status)?.vhosts.unwrap_or_default();
            let peer = diff::fetch(&url, std::time::Duration::from_secs(5))?;
            let rows = diff::compare(&here, &peer);
            print!("{}", diff::render(&rows));
            return Ok(!rows.iter().any(|r| r.mark == diff::Mark::Differs));
        }
    }
    Ok(true)
}

/// Resolve `demote [GROUP] [N]`: a lone number is the amount (interface
/// group names cannot end in a digit), checked to be 1..=255.
fn amount(group: Option<String>, by: Option<i32>) -> Result<(Option<String>, i32), String> {
    match (group, by) {
        (Some(g), None) if g.parse::<i64>().is_ok() => match g.parse::<i32>() {
            Ok(n) if (1..=255).contains(&n) => Ok((None, n)),
            _ => Err(format!("amount {g} is not in 1..=255")),
        },
        (Some(g), _) if g.ends_with(|c: char| c.is_ascii_digit()) => Err(format!(
            "{g:?} is not an interface group (group names cannot end in a digit)"
        )),
        (group, by) => Ok((group, by.unwrap_or(1))),
    }
}

fn print_message(reply: Reply) {
    if let Some(m) = reply.message {
        println!("{m}");
    }
}

fn print_stats(s: &carp_proto::Stats) {
    let rows = [
        (s.ipackets, "packets received (IPv4)"),
        (s.ipackets6, "packets received (IPv6)"),
        (s.bad_if, "packets discarded for bad interface"),
        (s.bad_ttl, "packets discarded for wrong TTL"),
        (s.bad_len, "packets shorter than header"),
        (s.bad_sum, "discarded for bad checksums"),
        (s.bad_ver, "discarded packets with a bad version"),
        (s.bad_auth, "discarded for bad authentication"),
        (s.bad_vhid, "discarded for unknown vhid"),
        (s.bad_src, "discarded from a source not allowed"),
        (s.bad_peer, "discarded from a source that is no peer"),
        (s.replay, "discarded as our own (loop or replay)"),
        (s.accepted, "accepted"),
        (s.odd_header, "accepted with unusual type or authlen"),
        (s.opackets, "packets sent (IPv4)"),
        (s.opackets6, "packets sent (IPv6)"),
        (s.send_errors, "send errors"),
        (s.preempt, "transitions to master"),
        (s.transitions, "state transitions"),
    ];
    println!("carp:");
    for (n, what) in rows {
        println!("\t{n} {what}");
    }
}

#[cfg(test)]
mod test {
    use super::amount;

    #[test]
    fn demote_amounts_are_resolved_and_checked() {
        assert_eq!(amount(None, None), Ok((None, 1)));
        assert_eq!(amount(Some("5".into()), None), Ok((None, 5)));
        assert_eq!(
            amount(Some("lan".into()), Some(7)),
            Ok((Some("lan".into()), 7))
        );
        assert!(
            amount(Some("300".into()), None)
                .unwrap_err()
                .contains("1..=255")
        );
        assert!(amount(Some("0".into()), None).is_err());
        assert!(amount(Some("-4".into()), None).is_err());
        assert!(amount(Some("99999999999".into()), None).is_err());
        assert!(amount(Some("lan1".into()), Some(2)).is_err());
    }
}
