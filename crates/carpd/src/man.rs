//! The carpd(8) and carpd.toml(5) manual pages.
//!
//! The options come from the clap definitions and the words and keys from
//! [`reference::SETTINGS`], the sources of `--help` and of the parsers'
//! messages; the prose around them is here. The examples are constants that
//! the tests run through the parsers. carpctl(1) is clap_mangen's (see
//! [`assets`](crate::assets)).

use roff::{Inline, Roff, bold, italic, line_break, roman};

use crate::config::reference::{self, Kind, Scope, Setting};

/// The passfile the examples name; `passfile = "carpd.key"` in a file in /etc/carpd.
pub const EXAMPLE_PASSFILE: &str = "/etc/carpd/carpd.key";

/// Two hosts sharing one address: (host, words of `carpd run`).
pub const TWO_HOSTS: [(&str, &str); 2] = [
    (
        "hosta",
        "carpdev eth0 vhid 1 passfile /etc/carpd/carpd.key 198.51.100.50/24",
    ),
    (
        "hostb",
        "carpdev eth0 vhid 1 advskew 100 passfile /etc/carpd/carpd.key 198.51.100.50/24",
    ),
];

/// Three hosts, two of them MASTER of one address each and a third the
/// BACKUP of both (the FreeBSD handbook's CARP set-up).
pub const THREE_HOSTS: [(&str, &str); 3] = [
    (
        "hosta",
        "carpdev eth0 vhid 1 passfile /etc/carpd/carpd.key 198.51.100.50/24",
    ),
    (
        "hostb",
        "carpdev eth0 vhid 2 passfile /etc/carpd/carpd.key 198.51.100.51/24",
    ),
    (
        "hostc",
        "carpdev eth0 vhid 1 advskew 100 passfile /etc/carpd/carpd.key 198.51.100.50/24 \
         vhid 2 advskew 100 passfile /etc/carpd/carpd.key 198.51.100.51/24",
    ),
];

/// hostc of [`THREE_HOSTS`] as a file in /etc/carpd.
pub const THREE_HOSTS_FILE: &str = r#"[[vhost]]
carpdev = "eth0"
vhid = 1
advskew = 100
passfile = "carpd.key"
addresses = ["198.51.100.50/24"]

[[vhost]]
carpdev = "eth0"
vhid = 2
advskew = 100
passfile = "carpd.key"
addresses = ["198.51.100.51/24"]
"#;

/// The example of carpd.toml(5), a file in /etc/carpd.
pub const FILE_EXAMPLE: &str = r#"# Take vhid 1 back after a restart.
preempt = true
http = "127.0.0.1:8080"

[[vhost]]
carpdev = "eth0"
vhid = 1
advskew = 0
passfile = "carpd.key"
addresses = ["198.51.100.50/24", "2001:db8::50/64"]
groups = ["lan"]
up = "/etc/carpd/up"
down = "/etc/carpd/down"
hook_timeout = "30s"

[[vhost]]
carpdev = "eth1"
vhid = 2
advskew = 100
passfile = "carpd.key"
addresses = ["203.0.113.50/24"]
lladdr = "real"
"#;

/// Return the carpd(8) page; `cmd` is carpd's clap definition.
pub fn carpd_page(cmd: &clap::Command) -> String {
    let sub = |name| {
        cmd.find_subcommand(name)
            .unwrap_or_else(|| panic!("carpd has no {name} subcommand"))
    };
    let mut r = Roff::new();
    title(&mut r, "CARPD", "8", "System Manager's Manual");
    r.control("SH", ["NAME"]);
    r.text([roman("carpd - Common Address Redundancy Protocol daemon")]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([
        bold("carpd run"),
        roman(" ["),
        italic("OPTIONS"),
        roman("] "),
        italic("WORD"),
        roman(" ..."),
        line_break(),
        bold("carpd run"),
        roman(" ["),
        italic("OPTIONS"),
        roman("] "),
        bold("--config"),
        roman(" "),
        italic("FILE"),
        line_break(),
        bold("carpd ucarp"),
        roman(" "),
        italic("UCARP-OPTIONS"),
        line_break(),
        bold("carpd lab"),
        roman(" [--advbase "),
        italic("N"),
        roman("] [--keep]"),
    ]);

    r.control("SH", ["DESCRIPTION"]);
    para(
        &mut r,
        "carpd shares IPv4 and IPv6 addresses between hosts on one link with CARP, \
         the Common Address Redundancy Protocol of OpenBSD and FreeBSD carp(4), and \
         interoperates with both kernels and with ucarp(8). A virtual host, or vhost, \
         is a vhid on a parent interface, the carpdev. Of the hosts configured with \
         the same vhid, the one advertising most often is MASTER and holds the \
         addresses; the others are BACKUP and take over when the master falls \
         silent, bows out or is demoted.",
    );
    para(
        &mut r,
        "carpd run takes the vhosts as ifconfig-style words (below) or from a TOML \
         file (carpd.toml(5)). Nothing starts unless every vhost is valid, and every \
         error names its place: file:line:column in a file, word N on the command line.",
    );
    para(
        &mut r,
        "carpctl(1) shows and steers a running daemon over its control socket: \
         status, counters, transitions, demotion, forced states, maintenance mode and \
         reloads. carpd needs CAP_NET_ADMIN and CAP_NET_RAW; after set-up it drops \
         every other capability, and with --user it also becomes that user.",
    );

    r.control("SH", ["OPTIONS"]);
    para(&mut r, "Options of carpd run:");
    options(&mut r, sub("run"));

    r.control("SH", ["WORDS"]);
    para(&mut r, reference::WORD_RULES);
    for s in reference::settings(Scope::Vhost) {
        let mut head = match s.word {
            Some(w) => vec![bold(w), roman(" ")],
            None => Vec::new(),
        };
        head.push(italic(s.arg));
        r.control("TP", []).text(head).text([roman(s.summary())]);
        r.text([line_break(), roman("In a file: "), bold(toml_line(s))]);
    }

    r.control("SH", ["CONFIGURATION FILE"]);
    para(
        &mut r,
        "With --config, carpd reads the TOML file described in carpd.toml(5): the \
         global keys below, then one [[vhost]] table per vhost with the keys named \
         under WORDS. Flags given with the file win over it, on start and on every \
         reload. SIGHUP or carpctl reload re-reads it without disturbing unchanged \
         vhosts.",
    );
    for s in reference::settings(Scope::Global) {
        r.control("TP", [])
            .text([bold(s.key), roman(format!(" ({})", s.kind.name()))]);
        let flag = s.flag.unwrap_or_default();
        r.text([roman(
            format!("As {flag}. {}", s.limits()).trim_end().to_string(),
        )]);
    }

    r.control("SH", ["HOOKS"]);
    para(
        &mut r,
        "carpd adds and removes the addresses itself; the up and down hooks are for \
         everything else. up runs after a vhost enters MASTER and down after it leaves \
         it, one at a time per vhost in the order of the transitions, with the \
         arguments of ucarp: the interface and the first address. The environment \
         adds CARP_VHID, CARP_STATE, CARP_FROM, CARP_CAUSE, CARP_CARPDEV, \
         CARP_INTERFACE and CARP_ADDRESSES. A hook running longer than hook-timeout \
         is killed with its process group. Its output is logged at level 6, at most \
         40 lines per stream.",
    );

    r.control("SH", ["OTHER COMMANDS"]);
    for name in ["ucarp", "lab"] {
        let c = sub(name);
        r.control("SS", [format!("carpd {name}").as_str()]);
        para(&mut r, &about(c));
        options(&mut r, c);
    }

    r.control("SH", ["FILES"]);
    let files = [
        (
            "/etc/carpd/carpd.toml",
            "The configuration the packaged unit reads; see carpd.toml(5).",
        ),
        (
            "/etc/carpd/carpd.toml.example",
            "An example configuration, installed by the package.",
        ),
        (
            "/run/carpd/carpd.sock",
            "The default control socket (control, --control), mode 0600. /run/carpd \
             is the unit's runtime directory. carpd ucarp defaults to \
             /run/carpd/ucarp-IFACE-VHID.sock.",
        ),
        (
            "/var/lib/carpd",
            "The default state directory (state_dir, --state-dir). It holds the file \
             maintenance while maintenance mode is on, and owned-*.json, the record of \
             the addresses carpd has configured: after a crash the next start removes \
             them before joining. It must be owned by root or the daemon's user and \
             not writable by group or others.",
        ),
        (
            "/lib/systemd/system/carpd.service",
            "The systemd unit: Type=notify with a 10 s watchdog, reload by SIGHUP, \
             only CAP_NET_ADMIN and CAP_NET_RAW. It is installed but not enabled.",
        ),
    ];
    for (path, what) in files {
        r.control("TP", []).text([bold(path)]).text([roman(what)]);
    }

    r.control("SH", ["SIGNALS"]);
    let signals = [
        (
            "SIGTERM, SIGINT",
            "Stop. Every MASTER first sends a bow-out advertisement (advbase 255, \
             advskew 255), so the best BACKUP takes over at once; carpd keeps the \
             addresses until the successor's first advertisement arrives, at most \
             250 ms, then removes them and its macvlans, lets queued down hooks finish \
             and exits 0.",
        ),
        (
            "SIGHUP",
            "Reload the configuration file, as carpctl reload does. The file is read \
             while the advertisements go on; unchanged vhosts are left alone, changed \
             ones are reconfigured in place, removed ones bow out and new ones join. \
             A file with an error is refused and the running configuration kept. http, \
             http_token, control and state_dir take a restart. A daemon started from \
             words has nothing to reload and logs so.",
        ),
        (
            "SIGKILL",
            "Cannot be caught. The guard process (guard = true, the default) sees the \
             daemon die, removes its addresses, sends the bow-out advertisements a \
             planned stop sends and deletes its macvlans, so the best BACKUP takes over \
             at once. Without it (--no-guard, or the guard killed too) carpd stop-post \
             does the same (systemd runs it as ExecStopPost=); otherwise the addresses \
             stay until the next start, which removes every address in the record \
             before joining.",
        ),
    ];
    for (name, what) in signals {
        r.control("TP", []).text([bold(name)]).text([roman(what)]);
    }

    r.control("SH", ["EXIT STATUS"]);
    let statuses = [
        ("0", "Stopped by SIGTERM or SIGINT after bowing out."),
        (
            "1",
            "Set-up failed (a directory, socket, interface or rtnetlink could not be \
             used) or the daemon stopped on an error; the last line on stderr says why.",
        ),
        (
            "2",
            "The command line or the configuration is invalid; nothing was started.",
        ),
    ];
    for (code, what) in statuses {
        r.control("TP", []).text([bold(code)]).text([roman(what)]);
    }

    r.control("SH", ["ENVIRONMENT"]);
    r.control("TP", [])
        .text([bold("NOTIFY_SOCKET"), roman(", "), bold("WATCHDOG_USEC")])
        .text([roman(
            "Set by systemd: carpd reports READY=1 once every vhost is set up, \
             WATCHDOG=1 from its event loop and STOPPING=1 when it starts bowing out.",
        )]);

    r.control("SH", ["EXAMPLES"]);
    para(
        &mut r,
        "Two hosts share 198.51.100.50. hosta, with the lower advskew, is MASTER while \
         it runs; the passphrase is in a file of mode 0600 on both:",
    );
    commands(&mut r, &TWO_HOSTS);
    para(
        &mut r,
        "Three hosts, as in the CARP chapter of the FreeBSD handbook: hosta and hostb \
         serve the same content under their own shared addresses, published together \
         in round-robin DNS, and hostc stands by for both with advskew 100. If hosta \
         or hostb fails, hostc answers for its address as well.",
    );
    commands(&mut r, &THREE_HOSTS);
    para(&mut r, "hostc's words as /etc/carpd/carpd.toml:");
    block(&mut r, THREE_HOSTS_FILE);
    para(
        &mut r,
        "When the failed host is back, it stays BACKUP while hostc holds its address. \
         carpctl state 1 backup on hostc hands vhid 1 back at once. With --preempt (or \
         preempt = true) on hosta and hostb they take their addresses back by \
         themselves, because they advertise more often than hostc.",
    );
    para(
        &mut r,
        "Before working on a MASTER, move all its vhosts to the peers and keep them \
         there across restarts and reboots:",
    );
    block(
        &mut r,
        "# carpctl maintenance on\n# carpctl status\n# carpctl maintenance off",
    );

    r.control("SH", ["SEE ALSO"]);
    r.text([roman(
        "carpctl(1), carpd.toml(5), ucarp(8), systemd.service(5); carp(4) and \
         ifconfig(8) of OpenBSD and FreeBSD",
    )]);
    r.render()
}

/// Return the carpd.toml(5) page.
pub fn carpd_toml_page() -> String {
    let mut r = Roff::new();
    title(&mut r, "CARPD.TOML", "5", "File Formats Manual");
    r.control("SH", ["NAME"]);
    r.text([roman("carpd.toml - configuration file of carpd")]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([bold("/etc/carpd/carpd.toml")]);
    r.control("SH", ["DESCRIPTION"]);
    para(
        &mut r,
        "carpd run --config FILE reads its vhosts from a TOML file; the packaged \
         systemd unit reads /etc/carpd/carpd.toml. The file has the global keys at the \
         top and one [[vhost]] table per vhost. Every key is the same setting as a \
         word or flag of carpd(8).",
    );
    para(
        &mut r,
        "The file is refused as a whole, and nothing of it applied, when a key is \
         unknown, a value has the wrong type or is out of range, a vhost lacks \
         carpdev, vhid or addresses, a vhid appears twice on one carpdev, or an \
         address twice (a link-local address may repeat on different carpdevs). \
         Each error names file:line:column and quotes no value from the file. The \
         file must be a regular UTF-8 file of at most 1 MiB. Relative paths \
         (passfile, up, down, control, state_dir) are taken from the file's \
         directory.",
    );

    r.control("SH", ["GLOBAL KEYS"]);
    for s in reference::settings(Scope::Global) {
        key_item(&mut r, s);
        let flag = s.flag.unwrap_or_default();
        r.text([
            line_break(),
            roman("Flag: "),
            bold(flag),
            roman(", which wins over the file."),
        ]);
    }

    r.control("SH", ["VHOST KEYS"]);
    para(
        &mut r,
        "Each [[vhost]] table is one vhost; carpdev, vhid and addresses are required.",
    );
    for s in reference::settings(Scope::Vhost) {
        key_item(&mut r, s);
        match s.word {
            Some(w) => r.text([line_break(), roman("Word: "), bold(w)]),
            None => r.text([line_break(), roman("Words: any that parses as an address.")]),
        };
    }

    r.control("SH", ["PASSPHRASES"]);
    para(
        &mut r,
        "A passphrase keys the HMAC of every advertisement and must be the same on \
         all hosts of a vhid. carpd accepts up to 20 bytes, but OpenBSD and FreeBSD \
         ifconfig keep at most 19 and ucarp refuses more than 19 and the empty \
         passphrase, so stay within 1 to 19 bytes to interoperate with all of them; \
         carpd warns about a 20-byte one. No pass and no passfile is the empty key, \
         which is still checked.",
    );

    r.control("SH", ["RELOADING"]);
    para(
        &mut r,
        "SIGHUP and carpctl reload re-read the file. Unchanged vhosts keep their \
         state and addresses, a vhost whose key or addresses changed is reconfigured \
         in place (a MASTER stays MASTER and announces again), removed vhosts bow out \
         and release their addresses, and new ones join. A file with an error is \
         refused and the running configuration kept. Changes to http, http_token, \
         control and state_dir take effect only after a restart; the reply says so.",
    );

    r.control("SH", ["EXAMPLE"]);
    para(
        &mut r,
        "Two vhosts on two carpdevs; the passphrase is in /etc/carpd/carpd.key, mode \
         0600:",
    );
    block(&mut r, FILE_EXAMPLE);

    r.control("SH", ["FILES"]);
    r.control("TP", [])
        .text([bold("/etc/carpd/carpd.toml.example")])
        .text([roman("The example installed by the package.")]);

    r.control("SH", ["SEE ALSO"]);
    r.text([roman("carpd(8), carpctl(1)")]);
    r.render()
}

/// `.TH`: name, section, an empty date (the pages are reproducible), source, manual.
fn title(r: &mut Roff, name: &str, section: &str, manual: &str) {
    let source = format!("carpd {}", env!("CARGO_PKG_VERSION"));
    r.control("TH", [name, section, "\"\"", source.as_str(), manual]);
}

fn para(r: &mut Roff, text: &str) {
    r.control("PP", []).text([roman(text)]);
}

/// An indented block without filling: examples and files.
fn block(r: &mut Roff, text: &str) {
    r.control("PP", []).control("RS", ["4"]).control("nf", []);
    for line in text.trim_end().lines() {
        r.text([roman(line)]);
    }
    r.control("fi", []).control("RE", []);
}

/// One `carpd run` command line per host, folded before every passfile and
/// every vhost but the first, and to fit an 80-column terminal.
fn commands(r: &mut Roff, hosts: &[(&str, &str)]) {
    const WIDTH: usize = 62;
    let mut text = String::new();
    for (host, words) in hosts {
        let mut line = format!("{host}# carpd run");
        let mut vhids = 0;
        for word in words.split_whitespace() {
            vhids += usize::from(word == "vhid");
            let fold = (word == "vhid" && vhids > 1)
                || word == "passfile"
                || line.len() + 1 + word.len() > WIDTH;
            if fold {
                text.push_str(&line);
                text.push_str(" \\\n");
                line = "    ".to_string();
            } else {
                line.push(' ');
            }
            line.push_str(word);
        }
        text.push_str(&line);
        text.push('\n');
    }
    block(r, &text);
}

fn toml_line(s: &Setting) -> String {
    let example = match s.key {
        "passfile" => "carpd.key",
        _ => s.example,
    };
    format!("{} = {}", s.key, s.kind.toml(example))
}

/// A `.TP` item: the key and its type, then what it does.
fn key_item(r: &mut Roff, s: &Setting) {
    let kind = match (s.kind, s.arg) {
        (Kind::String | Kind::Strings, arg) if arg.contains('|') => {
            let alternatives = arg.replace('|', " or ");
            format!(" ({}: {alternatives})", s.kind.name())
        }
        _ => format!(" ({})", s.kind.name()),
    };
    r.control("TP", []).text([bold(s.key), roman(kind)]);
    r.text([roman(s.summary())]);
}

fn about(cmd: &clap::Command) -> String {
    let text = cmd.get_long_about().or(cmd.get_about());
    let text = text.map(ToString::to_string).unwrap_or_default();
    let text = text.replace('`', "");
    format!("{}.", text.trim_end_matches('.'))
}

/// One `.TP` item per visible option of `cmd`, from its clap definition.
fn options(r: &mut Roff, cmd: &clap::Command) {
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() || (arg.get_long().is_none() && arg.get_short().is_none()) {
            continue;
        }
        let mut head: Vec<Inline> = Vec::new();
        if let Some(short) = arg.get_short() {
            head.push(bold(format!("-{short}")));
            if arg.get_long().is_some() {
                head.push(roman(", "));
            }
        }
        if let Some(long) = arg.get_long() {
            head.push(bold(format!("--{long}")));
        }
        let takes_value = arg.get_action().takes_values();
        if takes_value {
            let name = arg
                .get_value_names()
                .and_then(|v| v.first())
                .map_or_else(|| arg.get_id().as_str().to_uppercase(), |v| v.to_string());
            head.push(roman(" "));
            head.push(italic(name));
        }
        let help = arg.get_long_help().or(arg.get_help());
        let mut help = help.map(ToString::to_string).unwrap_or_default();
        help = help.replace('`', "");
        let defaults: Vec<_> = arg.get_default_values().iter().collect();
        if takes_value && !defaults.is_empty() && !arg.is_hide_default_value_set() {
            let defaults: Vec<_> = defaults.iter().map(|d| d.to_string_lossy()).collect();
            help.push_str(&format!(" [default: {}]", defaults.join(", ")));
        }
        r.control("TP", []).text(head).text([roman(help)]);
    }
}

#[cfg(test)]
mod test {
    use std::path::Path;

    use super::*;
    use crate::config::DaemonConfig;

    fn key_in(dir: &Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("carpd.key");
        std::fs::write(&path, "secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.display().to_string()
    }

    #[test]
    fn example_command_lines_parse() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_in(dir.path());
        for (host, words) in TWO_HOSTS.iter().chain(&THREE_HOSTS) {
            let words: Vec<String> = words
                .replace(EXAMPLE_PASSFILE, &key)
                .split_whitespace()
                .map(String::from)
                .collect();
            if let Err(e) = DaemonConfig::from_ifconfig_words(&words) {
                panic!("{host}: {e}");
            }
        }
        let hostc = THREE_HOSTS[2].1.replace(EXAMPLE_PASSFILE, &key);
        let words: Vec<String> = hostc.split_whitespace().map(String::from).collect();
        assert_eq!(DaemonConfig::from_ifconfig_words(&words).unwrap().len(), 2);
    }

    #[test]
    fn example_files_parse() {
        let dir = tempfile::tempdir().unwrap();
        key_in(dir.path());
        let path = dir.path().join("carpd.toml");
        for (text, vhosts) in [(THREE_HOSTS_FILE, 2), (FILE_EXAMPLE, 2)] {
            match DaemonConfig::from_toml_str(text, &path) {
                Ok(c) => assert_eq!(c.vhosts.len(), vhosts),
                Err(e) => panic!("{text}: {e}"),
            }
        }
    }

    #[test]
    fn hostc_file_is_hostc_words() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_in(dir.path());
        let file = DaemonConfig::from_toml_str(THREE_HOSTS_FILE, &dir.path().join("c.toml"));
        let words: Vec<String> = THREE_HOSTS[2]
            .1
            .replace(EXAMPLE_PASSFILE, &key)
            .split_whitespace()
            .map(String::from)
            .collect();
        let words = DaemonConfig::from_ifconfig_words(&words).unwrap();
        assert_eq!(file.unwrap().vhosts, words);
    }

    #[test]
    fn toml_page_names_every_key() {
        let page = carpd_toml_page();
        assert!(page.starts_with(".ie"), "{page}");
        assert!(page.contains(".TH CARPD.TOML 5"), "{page}");
        for s in reference::SETTINGS {
            assert!(page.contains(&format!("\\fB{}\\fR (", s.key)), "{}", s.key);
        }
    }

    #[test]
    fn carpd_page_lists_options_and_words() {
        let cmd = clap::Command::new("carpd")
            .subcommand(
                clap::Command::new("run")
                    .arg(clap::arg!(--preempt "Take over."))
                    .arg(clap::arg!(--control <PATH> "Socket.")),
            )
            .subcommand(clap::Command::new("ucarp").about("Run `ucarp`."))
            .subcommand(clap::Command::new("lab").about("Lab"));
        let page = carpd_page(&cmd);
        assert!(page.contains(".TH CARPD 8"), "{page}");
        assert!(
            page.contains("\\fB\\-\\-control\\fR \\fIPATH\\fR"),
            "{page}"
        );
        assert!(page.contains("Run ucarp."), "{page}");
        for s in reference::settings(Scope::Vhost) {
            assert!(
                page.contains(&toml_line(s).replace('-', "\\-")),
                "{}",
                s.key
            );
        }
    }
}
