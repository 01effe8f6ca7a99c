//! `carpd`: the CARP daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use carpd::config::{DaemonConfig, Overrides, reference};
use carpd::daemon::{self, Signal};
use carpd::os::Linux;

mod lab;
// The namespace test bed, shared with the integration tests (tests/common).
#[path = "../../../testbed/mod.rs"]
mod testbed;

/// Common Address Redundancy Protocol daemon, wire-compatible with OpenBSD and FreeBSD carp(4).
#[derive(Debug, Parser)]
#[command(name = "carpd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon, configured by a file or by ifconfig-style words:
    /// `carpdev eth0 vhid 1 advbase 1 advskew 100 pass secret 198.51.100.50/24`.
    #[command(after_long_help = reference::words_help())]
    Run {
        #[arg(long, help = reference::flag_help("preempt"))]
        preempt: bool,
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::value_parser!(u8).range(0..=7),
            help = reference::flag_help("log_level")
        )]
        log_level: Option<u8>,
        #[arg(long, value_name = "PATH", help = reference::flag_help("control"))]
        control: Option<PathBuf>,
        #[arg(long, value_name = "PATH", help = reference::flag_help("state_dir"))]
        state_dir: Option<PathBuf>,
        #[arg(long, value_name = "ADDR:PORT", help = reference::flag_help("http"))]
        http: Option<std::net::SocketAddr>,
        #[arg(
            long,
            value_name = "TOKEN",
            value_parser = clap::builder::NonEmptyStringValueParser::new(),
            help = reference::flag_help("http_token")
        )]
        http_token: Option<String>,
        #[arg(long, value_name = "IF", help = reference::flag_help("syncdev"))]
        syncdev: Option<String>,
        #[arg(long, value_name = "ADDR", help = reference::flag_help("syncpeer"))]
        syncpeer: Option<std::net::Ipv4Addr>,
        #[arg(long, value_name = "FILE", help = reference::flag_help("conntrackd_config"))]
        conntrackd_config: Option<PathBuf>,
        #[arg(long, value_name = "MODE", value_parser = parse_sync_gate, help = reference::flag_help("sync_gate"))]
        sync_gate: Option<carpd::config::SyncGate>,
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, help = reference::flag_help("sync_gate_timeout"))]
        sync_gate_timeout: Option<std::time::Duration>,
        #[arg(long, help = reference::flag_help("realtime"))]
        realtime: bool,
        #[arg(
            long,
            value_name = "N",
            value_parser = clap::value_parser!(u8).range(1..=99),
            help = reference::flag_help("realtime_priority")
        )]
        realtime_priority: Option<u8>,
        #[arg(long, help = reference::flag_help("guard"))]
        no_guard: bool,
        /// After set-up, run as this user, keeping only CAP_NET_ADMIN and CAP_NET_RAW
        /// (every other capability is dropped with or without it).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// TOML configuration file (instead of words; see carpd.toml(5)).
        #[arg(long, value_name = "FILE", conflicts_with = "words")]
        config: Option<PathBuf>,
        /// The vhosts as ifconfig-style words (listed below with --help).
        #[arg(num_args = 0.., allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Build a small LAN of network namespaces, run carpd on it and show a failover.
    Lab(lab::LabArgs),
    /// Run one vhid from a ucarp(8) command line (drop-in; see docs/operations.md
    /// for the differences).
    Ucarp(carpd::ucarp::UcarpArgs),
    /// After carpd ended without stopping (kill -9, a crash), remove the
    /// addresses and macvlans it left and send its bow-out advertisements, as
    /// its guard would have: for systemd's ExecStopPost=.
    StopPost {
        /// The state directory carpd ran with.
        #[arg(long, value_name = "PATH", default_value = carpd::config::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
    },
    /// The guard process carpd starts for itself (see docs/operations.md).
    #[command(hide = true)]
    Guard {
        /// The will file to remove once done.
        #[arg(long, value_name = "FILE")]
        will: PathBuf,
        #[arg(long, value_name = "N", default_value_t = carpd::config::DEFAULT_LOG_LEVEL)]
        log_level: u8,
        #[arg(long, value_name = "USER")]
        user: Option<String>,
    },
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    Assets {
        /// Output directory.
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            preempt,
            log_level,
            control,
            state_dir,
            http,
            http_token,
            syncdev,
            syncpeer,
            conntrackd_config,
            sync_gate,
            sync_gate_timeout,
            realtime,
            realtime_priority,
            no_guard,
            user,
            config,
            words,
        } => {
            let overrides = Overrides {
                preempt,
                log_level,
                control: control.clone(),
                state_dir,
                http,
                http_token,
                syncdev,
                syncpeer,
                conntrackd_config,
                sync_gate,
                sync_gate_timeout,
                realtime,
                realtime_priority,
                user,
                no_guard,
            };
            let config = match config {
                Some(path) => DaemonConfig::load(&path),
                None => DaemonConfig::from_command_line(
                    preempt,
                    log_level.unwrap_or(carpd::config::DEFAULT_LOG_LEVEL),
                    control,
                    &words,
                ),
            }
            .map(|mut c| {
                overrides.apply(&mut c);
                c
            });
            let config = match config {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("carpd: {}", error_chain(&e));
                    return ExitCode::from(2);
                }
            };
            for w in config.warnings() {
                eprintln!("carpd: warning: {w}");
            }
            if words_have_pass(&words) {
                eprintln!(
                    "carpd: warning: a pass on the command line is visible in ps; passfile is safer"
                );
            }
            run(config, overrides)
        }
        Command::Assets { dir } => match carpd::assets::write_daemon(Cli::command(), &dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("carpd: cannot write assets to {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        },
        Command::Ucarp(args) => match args.into_config() {
            Ok(config) => run(config, Overrides::default()),
            Err(e) => {
                eprintln!("carpd ucarp: {e}");
                ExitCode::from(2)
            }
        },
        Command::StopPost { state_dir } => {
            // Failures are errors (3): shown at the default level too.
            carpd::log::set_threshold(4);
            carpd::guard::stop_post(&state_dir)
        }
        Command::Guard {
            will,
            log_level,
            user,
        } => {
            carpd::log::set_threshold(log_level.max(4));
            carpd::guard::run(&will, user.as_deref())
        }
        Command::Lab(args) => match lab::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("carpd lab: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn words_have_pass(words: &[String]) -> bool {
    words.iter().any(|w| w == "pass")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn run(config: DaemonConfig, overrides: Overrides) -> ExitCode {
    raise_nofile_limit();
    let will_path = carpd::guard::will_path(&config);
    // Before any thread and before privileges are dropped: the guard keeps
    // CAP_NET_ADMIN and CAP_NET_RAW.
    let guard = config.guard.then(|| {
        carpd::guard::spawn(&will_path, overrides.user.as_deref(), config.log_level)
            .inspect_err(|e| eprintln!("<3>carpd: cannot start the guard: {e}"))
            .ok()
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("carpd: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let (tx, rx) = mpsc::channel(4);
        if let Err(e) = forward_signals(tx) {
            eprintln!("carpd: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        let mut os = match Linux::connect().await {
            Ok(os) => os,
            Err(e) => {
                eprintln!("<3>carpd: cannot open rtnetlink: {}", error_chain(&e));
                return ExitCode::FAILURE;
            }
        };
        os.set_will_sink(carpd::guard::WillSink::new(guard.flatten(), will_path));
        let result = daemon::run(os, config, overrides, rx).await;
        // The queued log lines first, so a fatal error is the last line.
        carpd::log::flush(std::time::Duration::from_secs(1));
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("<3>carpd: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Raise the soft descriptor limit to the hard one (at most 2^20), so the
/// servers' connection caps, a share of it, leave a wide reserve for the
/// protocol's own sockets, records and hooks.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let want = hard.min(1 << 20);
    if soft < want
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard)
    {
        eprintln!("carpd: warning: cannot raise the descriptor limit from {soft} to {want}: {e}");
    }
}

/// SIGTERM and SIGINT end the daemon (bow-out first); SIGHUP reloads.
fn forward_signals(tx: mpsc::Sender<Signal>) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            let s = tokio::select! {
                _ = term.recv() => Signal::Terminate,
                _ = int.recv() => Signal::Terminate,
                _ = hup.recv() => Signal::Reload,
            };
            if tx.send(s).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

fn parse_sync_gate(s: &str) -> Result<carpd::config::SyncGate, String> {
    match s {
        "open" => Ok(carpd::config::SyncGate::Open),
        "strict" => Ok(carpd::config::SyncGate::Strict),
        _ => Err("expected open or strict".into()),
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    carpd::config::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "expected a positive duration like 2s or 500ms".into())
}

#[cfg(test)]
mod test {
    use super::*;
    use carpd::config::reference::{Scope, settings};

    #[test]
    fn every_global_key_has_its_run_flag() {
        Cli::command().debug_assert();
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        for s in settings(Scope::Global) {
            let flag = s.flag.unwrap().trim_start_matches("--");
            let arg = run.get_arguments().find(|a| a.get_long() == Some(flag));
            assert!(arg.is_some(), "carpd run has no --{flag} for {}", s.key);
        }
    }
}
