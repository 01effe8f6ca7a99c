//! carpd: the Linux daemon around `carp-proto`.
//!
//! - [`assets`]: man pages and shell completions for packaging;
//! - [`config`]: the TOML file and ifconfig-style command line;
//! - [`os`]: the [`os::Os`] trait the loop runs on, and [`os::Linux`]: raw CARP
//!   sockets, rtnetlink, AF_PACKET, sysctls, the address record (the only `unsafe` code);
//! - [`daemon`]: the event loop owning the protocol core, generic over [`os::Os`];
//! - [`guard`]: the guard process and `carpd stop-post`, which hand over when the daemon dies;
//! - [`control`]: the Unix control socket used by `carpctl`;
//! - [`hooks`]: supervised up/down scripts;
//! - [`http`]: the optional status page, JSON API and metrics;
//! - [`log`]: syslog-level logging to stderr;
//! - [`maintenance`]: the persistent maintenance-mode demotion;
//! - [`man`]: the carpd(8) and carpd.toml(5) pages;
//! - [`owned`]: the record of configured addresses, for start-up hygiene after a crash;
//! - [`sync`]: conntrackd's configuration and the state-sync steps of a transition;
//! - [`systemd`]: `Type=notify` readiness and watchdog pings;
//! - [`ucarp`]: `carpd ucarp`, the drop-in for ucarp command lines.
pub mod assets;
pub mod config;
pub mod control;
pub mod daemon;
pub mod guard;
pub mod hooks;
pub mod http;
pub mod log;
pub mod maintenance;
pub mod man;
pub mod os;
pub mod owned;
pub mod statedir;
pub mod sync;
pub mod systemd;
pub mod ucarp;
