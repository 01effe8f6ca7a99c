//! Tests of the configuration front ends (file and command-line words).

use super::*;

const EXAMPLE: &str = r#"preempt = true
log_level = 2
control = "/run/carpd/x.sock"

[[vhost]]
carpdev = "eth0"
vhid = 1
advbase = 1
advskew = 100
pass = "secret"
addresses = ["198.51.100.50/24", "2001:db8::50/64"]
lladdr = "real"
groups = ["lan"]
up = "/etc/carpd/up"
down = "/etc/carpd/down"
pre_master = "/etc/carpd/pre-master"
master = "/etc/carpd/master"
backup = "/etc/carpd/backup"
fault = "/etc/carpd/fault"
hook_timeout = "5s"
peer = "192.0.2.2"
peer6 = "2001:db8::2"
master_down = "freebsd"
hmac = "freebsd"
"#;

fn words(line: &str) -> Vec<String> {
    line.split_whitespace().map(String::from).collect()
}

fn file_err(text: &str) -> String {
    match DaemonConfig::from_toml_str(text, Path::new("carpd.toml")) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn words_err(line: &str) -> String {
    match DaemonConfig::from_ifconfig_words(&words(line)) {
        Ok(v) => panic!("accepted: {v:?}"),
        Err(e) => e.to_string(),
    }
}

fn vhost(body: &str) -> String {
    format!("[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\n{body}\n")
}

fn addr(s: &str) -> VirtualAddress {
    s.parse().unwrap()
}

#[test]
fn toml_example_parses() {
    let cfg = DaemonConfig::from_toml_str(EXAMPLE, Path::new("/etc/carpd.toml")).unwrap();
    assert!(cfg.preempt);
    assert_eq!(cfg.log_level, 2);
    assert_eq!(cfg.control, Some(PathBuf::from("/run/carpd/x.sock")));
    assert_eq!(cfg.source, ConfigSource::File("/etc/carpd.toml".into()));
    let v = &cfg.vhosts[0];
    assert_eq!(v.carpdev, "eth0");
    assert_eq!(v.lladdr, Lladdr::Real);
    assert_eq!(
        v.addresses,
        [addr("198.51.100.50/24"), addr("2001:db8::50/64")]
    );
    assert_eq!(v.addresses[0].addr, IpAddr::from([198, 51, 100, 50]));
    assert_eq!(v.addresses[0].prefix_len, 24);
    assert_eq!(v.hooks.up, Some(PathBuf::from("/etc/carpd/up")));
    assert_eq!(v.hooks.down, Some(PathBuf::from("/etc/carpd/down")));
    assert_eq!(v.hooks.timeout, Duration::from_secs(5));
    assert_eq!(
        v.peers,
        [
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
            "2001:db8::2".parse().unwrap()
        ]
    );
    let p = &v.proto;
    assert_eq!(p.vhid, Vhid::new(1).unwrap());
    assert_eq!((p.advbase, p.advskew), (AdvBase(1), AdvSkew(100)));
    assert_eq!(p.passphrase.as_bytes(), b"secret");
    assert_eq!(p.ipv4, [Ipv4Addr::new(198, 51, 100, 50)]);
    assert_eq!(p.ipv6, ["2001:db8::50".parse::<Ipv6Addr>().unwrap()]);
    assert_eq!(p.groups, ["lan"]);
    assert_eq!(p.master_down, MasterDownFormula::Freebsd);
}

#[test]
fn words_example_parses() {
    let line = "carpdev eth0 vhid 1 advbase 1 advskew 100 pass secret \
                198.51.100.50/24 2001:db8::50/64";
    let v = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].carpdev, "eth0");
    assert_eq!(
        v[0].addresses,
        [addr("198.51.100.50/24"), addr("2001:db8::50/64")]
    );
    assert_eq!(v[0].proto.vhid.get(), 1);
    assert_eq!(
        (v[0].proto.advbase, v[0].proto.advskew),
        (AdvBase(1), AdvSkew(100))
    );
    assert_eq!(v[0].proto.passphrase.as_bytes(), b"secret");
}

#[test]
fn words_and_file_give_the_same_vhost() {
    let line = "carpdev eth0 vhid 1 advbase 1 advskew 100 pass secret \
                198.51.100.50/24 2001:db8::50/64 lladdr real group lan up /etc/carpd/up \
                down /etc/carpd/down pre-master /etc/carpd/pre-master master /etc/carpd/master \
                backup /etc/carpd/backup fault /etc/carpd/fault hook-timeout 5s peer 192.0.2.2 peer6 2001:db8::2 \
                master-down freebsd hmac freebsd";
    let from_words = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    let from_file = DaemonConfig::from_toml_str(EXAMPLE, Path::new("c.toml")).unwrap();
    assert_eq!(from_words, from_file.vhosts);
}

/// Several peers, from repeated words or an array, a single string as
/// before, dual-path and ttl-check; and their errors.
#[test]
fn unicast_peers_dual_path_and_ttl_check() {
    let line = "carpdev eth0 vhid 1 192.0.2.1 peer 192.0.2.2 peer 198.51.100.224 \
                peer6 fe80::2 dual-path on ttl-check off";
    let w = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    let text = vhost(
        "addresses = [\"192.0.2.1\"]\npeer = [\"192.0.2.2\", \"198.51.100.224\"]\n\
         peer6 = \"fe80::2\"\ndual_path = true\nttl_check = false",
    );
    let f = DaemonConfig::from_toml_str(&text, Path::new("c.toml")).unwrap();
    assert_eq!(w, f.vhosts);
    let want: Vec<IpAddr> = ["192.0.2.2", "198.51.100.224", "fe80::2"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    assert_eq!(w[0].peers, want);
    assert_eq!((w[0].dual_path, w[0].ttl_check), (true, Some(false)));
    let core = w[0].carp_if_config();
    assert_eq!(
        (core.peers, core.dual_path, core.ttl_check),
        (want, true, Some(false))
    );
    assert_eq!(
        words_err("carpdev eth0 vhid 1 192.0.2.1 dual-path on"),
        "word 7 (\"on\"): dual-path needs a peer or peer6"
    );
    assert_eq!(
        words_err("carpdev eth0 vhid 1 192.0.2.1 ttl-check maybe"),
        "word 7 (\"maybe\"): ttl-check expects on or off"
    );
    assert_eq!(
        file_err(&vhost(
            "addresses = [\"192.0.2.1\"]\npeer = [\"192.0.2.2\", 7]"
        )),
        "carpd.toml:5:8: peer expects an IPv4 address"
    );
}

/// `carpver 3 vrrpprio 150 vrrpinterval 50` as words and in the file, and
/// what VRRPv3 refuses.
#[test]
fn vrrp_words_file_and_errors() {
    let w = DaemonConfig::from_ifconfig_words(&words(
        "carpdev eth0 vhid 5 carpver 3 vrrpprio 150 vrrpinterval 50 2001:db8::50/64 \
         vrrp-v6-mac freebsd accept off",
    ))
    .unwrap();
    let text = "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 5\ncarpver = 3\nvrrpprio = 150\n\
                vrrpinterval = 50\nvrrp_v6_mac = \"freebsd\"\naddresses = [\"2001:db8::50/64\"]\n\
                accept = false\n";
    let f = DaemonConfig::from_toml_str(text, Path::new("c.toml")).unwrap();
    assert_eq!(w, f.vhosts);
    assert!(!w[0].accept);
    let carp = DaemonConfig::from_ifconfig_words(&words("carpdev eth0 vhid 5 192.0.2.50")).unwrap();
    assert!(carp[0].accept, "CARP always accepts");
    let core = w[0].carp_if_config();
    assert_eq!(core.flavour, carp_proto::Flavour::Vrrp);
    assert_eq!(
        (
            core.vrrp.priority,
            core.vrrp.interval_cs,
            core.vrrp.v6_mac_freebsd
        ),
        (150, 50, true)
    );
    for (line, want) in [
        (
            "carpdev eth0 vhid 5 vrrpprio 150 192.0.2.50",
            "word 6 (\"150\"): vrrpprio needs carpver 3 (VRRPv3)",
        ),
        (
            "carpdev eth0 vhid 5 carpver 3 advskew 100 192.0.2.50",
            "word 8 (\"100\"): carpver 3 (VRRPv3) takes vrrpprio and vrrpinterval, not advbase or advskew",
        ),
        (
            "carpdev eth0 vhid 5 carpver 3 pass x 192.0.2.50",
            "word 8 (\"x\"): carpver 3 (VRRPv3) has no authentication: drop the pass",
        ),
        (
            "carpdev eth0 vhid 5 carpver 3 192.0.2.50 2001:db8::50",
            "word 4 (\"5\"): a VRRP (carpver 3) vhost is of one address family: give IPv4 and IPv6 addresses separate vhids",
        ),
        (
            "carpdev eth0 vhid 5 carpver 3 vrrpprio 0 192.0.2.50",
            "word 8 (\"0\"): vrrpprio 0 is out of range 1..255",
        ),
        (
            "carpdev eth0 vhid 5 carpver 3 vrrpinterval 4096 192.0.2.50",
            "word 8 (\"4096\"): vrrpinterval 4096 is out of range 1..4095 (centiseconds)",
        ),
        (
            "carpdev eth0 vhid 5 accept off 192.0.2.50",
            "word 6 (\"off\"): accept needs carpver 3 (VRRPv3)",
        ),
        (
            "carpdev eth0 vhid 5 carpver 3 vrrpprio 255 accept off 192.0.2.50",
            "word 10 (\"off\"): accept off does not apply to vrrpprio 255: the address owner always accepts",
        ),
        (
            "carpdev eth0 vhid 5 carpver 3 accept maybe 192.0.2.50",
            "word 8 (\"maybe\"): accept expects on or off",
        ),
        (
            "carpdev eth0 vhid 5 carpver 4 192.0.2.50",
            "word 6 (\"4\"): carpver 4 is out of range 2..3",
        ),
    ] {
        assert_eq!(words_err(line), want, "{line}");
    }
}

#[test]
fn second_vhid_starts_a_vhost_inheriting_carpdev() {
    let line = "carpdev eth0 vhid 1 198.51.100.50/24 vhid 2 198.51.100.51/24";
    let v = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].carpdev.as_str(), v[0].proto.vhid.get()), ("eth0", 1));
    assert_eq!((v[1].carpdev.as_str(), v[1].proto.vhid.get()), ("eth0", 2));
    assert_eq!(v[1].addresses, [addr("198.51.100.51/24")]);
}

#[test]
fn second_carpdev_starts_a_vhost() {
    let line = "carpdev eth0 vhid 1 192.0.2.1 carpdev eth1 advskew 5 vhid 1 192.0.2.2";
    let v = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    assert_eq!(
        (v[0].carpdev.as_str(), v[0].proto.advskew),
        ("eth0", AdvSkew(0))
    );
    assert_eq!(
        (v[1].carpdev.as_str(), v[1].proto.advskew),
        ("eth1", AdvSkew(5))
    );
    // An inherited carpdev is overridden, not a new vhost.
    let line = "carpdev eth0 vhid 1 192.0.2.1 vhid 2 carpdev eth1 192.0.2.2";
    let v = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    assert_eq!((v[1].carpdev.as_str(), v[1].proto.vhid.get()), ("eth1", 2));
}

#[test]
fn defaults() {
    let cfg = DaemonConfig::from_toml_str(
        &vhost("addresses = [\"192.0.2.1\", \"2001:db8::1\"]"),
        Path::new("c.toml"),
    )
    .unwrap();
    assert!(!cfg.preempt);
    assert_eq!(cfg.log_level, DEFAULT_LOG_LEVEL);
    assert_eq!(cfg.control, None);
    let v = &cfg.vhosts[0];
    assert_eq!(v.lladdr, Lladdr::Virtual);
    assert_eq!(
        v.hooks,
        Hooks {
            up: None,
            down: None,
            pre_master: None,
            master: None,
            backup: None,
            fault: None,
            timeout: Duration::from_secs(10)
        }
    );
    assert!(v.peers.is_empty());
    assert_eq!((v.dual_path, v.ttl_check), (false, None));
    assert_eq!((v.proto.advbase, v.proto.advskew), (AdvBase(1), AdvSkew(0)));
    assert!(v.proto.passphrase.as_bytes().is_empty());
    assert_eq!(v.proto.master_down, MasterDownFormula::Auto);
    assert_eq!(v.addresses, [addr("192.0.2.1/32"), addr("2001:db8::1/128")]);
    let w = DaemonConfig::from_ifconfig_words(&words("carpdev eth0 vhid 1 192.0.2.1 2001:db8::1"));
    assert_eq!(w.unwrap(), cfg.vhosts);
}

#[test]
fn hook_timeout_accepts_seconds_and_suffixes() {
    for (value, want) in [
        ("7", 7000),
        ("\"7\"", 7000),
        ("\"7s\"", 7000),
        ("\"250ms\"", 250),
    ] {
        let text = vhost(&format!(
            "addresses = [\"192.0.2.1\"]\nhook_timeout = {value}"
        ));
        let cfg = DaemonConfig::from_toml_str(&text, Path::new("c.toml")).unwrap();
        assert_eq!(
            cfg.vhosts[0].hooks.timeout,
            Duration::from_millis(want),
            "{value}"
        );
    }
    let err = file_err(&vhost("addresses = [\"192.0.2.1\"]\nhook_timeout = 0"));
    assert_eq!(
        err,
        "carpd.toml:5:16: hook_timeout expects a positive duration like 10s or 500ms"
    );
}

#[test]
fn realtime_keys_and_flags() {
    let one = vhost("addresses = [\"198.51.100.50/24\"]");
    let parse = |top: &str| {
        DaemonConfig::from_toml_str(&format!("{top}{one}"), Path::new("carpd.toml")).unwrap()
    };
    assert_eq!(parse("").realtime, None);
    assert_eq!(parse("realtime = true\n").realtime, Some(10));
    assert_eq!(
        parse("realtime = true\nrealtime_priority = 40\n").realtime,
        Some(40)
    );
    assert_eq!(
        file_err(&format!("realtime_priority = 40\n{one}")),
        "carpd.toml:1:21: realtime_priority needs realtime = true"
    );
    assert_eq!(
        file_err(&format!("realtime = true\nrealtime_priority = 0\n{one}")),
        "carpd.toml:2:21: realtime_priority 0 is out of range 1..99"
    );
    // The flags win over the file, and --realtime-priority alone turns it on.
    let mut cfg = parse("");
    Overrides {
        realtime_priority: Some(30),
        ..Overrides::default()
    }
    .apply(&mut cfg);
    assert_eq!(cfg.realtime, Some(30));
    let mut cfg = parse("realtime = true\nrealtime_priority = 40\n");
    Overrides {
        realtime: true,
        ..Overrides::default()
    }
    .apply(&mut cfg);
    assert_eq!(cfg.realtime, Some(40));
}

#[test]
fn http_and_state_dir_keys() {
    let text = format!(
        "state_dir = \"state\"\nhttp = \"127.0.0.1:8080\"\nhttp_token = \"t0k\"\n{}",
        vhost("addresses = [\"198.51.100.50/24\"]")
    );
    let cfg = DaemonConfig::from_toml_str(&text, Path::new("/etc/carpd/carpd.toml")).unwrap();
    assert_eq!(cfg.state_dir, Some(PathBuf::from("/etc/carpd/state")));
    assert_eq!(cfg.http, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(cfg.http_token.as_deref(), Some("t0k"));
    let bad = format!(
        "http = \"localhost\"\n{}",
        vhost("addresses = [\"198.51.100.50/24\"]")
    );
    assert_eq!(
        file_err(&bad),
        "carpd.toml:1:8: http expects an address and port like 127.0.0.1:8080"
    );
    let empty = format!(
        "http_token = \"\"\n{}",
        vhost("addresses = [\"198.51.100.50/24\"]")
    );
    assert_eq!(
        file_err(&empty),
        "carpd.toml:1:14: http_token must not be empty"
    );
    let cfg = DaemonConfig::from_toml_str(
        &vhost("addresses = [\"198.51.100.50/24\"]"),
        Path::new("c.toml"),
    )
    .unwrap();
    assert_eq!(
        (cfg.state_dir, cfg.http, cfg.http_token),
        (None, None, None)
    );
}

#[test]
fn file_errors_name_line_and_column() {
    let cases = [
        (
            "advskew = 255",
            "carpd.toml:4:11: advskew 255 is out of range 0..254",
        ),
        (
            "advbase = 256",
            "carpd.toml:4:11: advbase 256 is out of range 0..255",
        ),
        (
            "pass = \"123456789012345678901\"",
            "carpd.toml:4:8: passphrase is 21 bytes, at most 20 are allowed",
        ),
        (
            "lladdr = \"fake\"",
            "carpd.toml:4:10: lladdr expects virtual or real",
        ),
        (
            "master_down = \"linux\"",
            "carpd.toml:4:15: master_down expects auto, openbsd or freebsd",
        ),
        (
            "peer = \"2001:db8::1\"",
            "carpd.toml:4:8: peer expects an IPv4 address",
        ),
        (
            "groups = [\"lan0\"]",
            "carpd.toml:4:11: group expects a name of 1..15 bytes that does not end in a digit",
        ),
        (
            "colour = \"red\"",
            "carpd.toml:4:1: unknown field `colour`, expected one of `carpdev`, `vhid`, `carpnodes`, `balancing`, `advbase`, `advskew`, `pass`, `passfile`, `addresses`, `lladdr`, `groups`, `up`, `down`, `pre_master`, `master`, `backup`, `fault`, `hook_timeout`, `peer`, `peer6`, `dual_path`, `ttl_check`, `allow`, `master_down`, `hmac`, `carpver`, `vrrpprio`, `vrrpinterval`, `vrrp_v6_mac`, `accept`",
        ),
        (
            "advskew = \"x\"",
            // The value is not echoed: the file may be a secret linked here.
            "carpd.toml:4:11: invalid type: string (value not shown), expected i64",
        ),
    ];
    for (line, want) in cases {
        let text = vhost(&format!("{line}\naddresses = [\"192.0.2.1\"]"));
        assert_eq!(file_err(&text), want, "{line}");
    }
}

#[test]
fn file_vhid_zero_and_missing_addresses() {
    let err = file_err("[[vhost]]\ncarpdev = \"eth0\"\nvhid = 0\naddresses = [\"192.0.2.1\"]\n");
    assert_eq!(err, "carpd.toml:3:8: vhid 0 is out of range 1..255");
    let err = file_err(&vhost(""));
    assert_eq!(
        err,
        "carpd.toml:3:8: vhid 1 has no addresses (give addresses)"
    );
    // Found by the config_toml fuzz target: the error named the command line.
    assert_eq!(
        file_err("[[vhost]]\ncarpdev = \"eth0\"\naddresses = [\"192.0.2.1\"]\n"),
        "carpd.toml:2:11: this vhost has no vhid (or carpnodes)"
    );
    assert_eq!(
        file_err("preempt = true\n"),
        "carpd.toml: no [[vhost]] table, nothing to run"
    );
    assert_eq!(
        file_err("log_level = 8\n"),
        "carpd.toml:1:13: log_level 8 is out of range 0..7"
    );
}

#[test]
fn file_bad_cidr() {
    let err = file_err(&vhost("addresses = [\"192.0.2.1/24\", \"192.0.2.2/33\"]"));
    assert_eq!(
        err,
        "carpd.toml:4:30: expected an address or CIDR like 198.51.100.50/24, not \"192.0.2.2/33\""
    );
    let err = file_err(&vhost("addresses = [\"0.0.0.0/8\"]"));
    assert_eq!(err, "carpd.toml:4:14: 0.0.0.0 cannot be a virtual address");
}

#[test]
fn file_syntax_error_has_position() {
    let err = file_err("preempt = true\n[[vhost]\n");
    assert!(err.starts_with("carpd.toml:2:"), "{err}");
}

#[test]
fn duplicate_vhid_on_same_carpdev_is_refused() {
    let text = format!(
        "{}{}",
        vhost("addresses = [\"192.0.2.1\"]"),
        vhost("addresses = [\"192.0.2.2\"]")
    );
    assert_eq!(
        file_err(&text),
        "carpd.toml:7:8: vhid 1 on eth0 is already configured at carpd.toml:3:8"
    );
    let err = words_err("carpdev eth0 vhid 1 192.0.2.1 vhid 1 192.0.2.2");
    assert_eq!(
        err,
        "word 7 (\"1\"): vhid 1 on eth0 is already configured at word 4 (\"1\")"
    );
    // The same vhid on another carpdev is a different virtual router.
    let line = "carpdev eth0 vhid 1 192.0.2.1 carpdev eth1 vhid 1 192.0.2.2";
    assert_eq!(
        DaemonConfig::from_ifconfig_words(&words(line))
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn duplicate_address_is_refused() {
    let err = words_err("carpdev eth0 vhid 1 192.0.2.1 vhid 2 192.0.2.1/24");
    assert_eq!(
        err,
        "word 8 (\"192.0.2.1/24\"): address 192.0.2.1 is already configured for vhid 1 on eth0 at word 5 (\"192.0.2.1\")"
    );
    let err = words_err("carpdev eth0 vhid 1 192.0.2.1 192.0.2.1");
    assert!(
        err.starts_with("word 6 (\"192.0.2.1\"): address 192.0.2.1 is already"),
        "{err}"
    );
    let line = "carpdev eth0 vhid 1 fe80::1 carpdev eth1 vhid 1 fe80::1";
    assert!(DaemonConfig::from_ifconfig_words(&words(line)).is_ok());
}

#[test]
fn word_errors_name_the_word() {
    let cases = [
        (
            "vhid 1 advbase abc",
            "word 4 (\"abc\"): advbase expects a number 0..255",
        ),
        (
            "carpdev eth0 vhid 1 advskew 255 192.0.2.1",
            "word 6 (\"255\"): advskew 255 is out of range 0..254",
        ),
        (
            "carpdev eth0 vhid 0 192.0.2.1",
            "word 4 (\"0\"): vhid 0 is out of range 1..255",
        ),
        (
            "carpdev eth0 vhid 1 192.0.2.1 pass",
            "word 6 (\"pass\"): pass expects a passphrase, got nothing",
        ),
        (
            "carpdev eth0 vhid 1 192.0.2.1/40",
            "word 5 (\"192.0.2.1/40\"): expected an address or CIDR like 198.51.100.50/24 or 2001:db8::50/64",
        ),
        (
            "carpdev eth0 vhid 1",
            "word 4 (\"1\"): vhid 1 has no addresses (give an address)",
        ),
        ("vhid 1 192.0.2.1", "word 2 (\"1\"): vhid 1 has no carpdev"),
        (
            "carpdev eth0 192.0.2.1",
            "word 1 (\"carpdev\"): this vhost has no vhid (or carpnodes)",
        ),
        (
            "carpdev eth0 carpdev eth1 vhid 1",
            "word 4 (\"eth1\"): carpdev is already given at word 2 (\"eth0\")",
        ),
        (
            "carpdev eth0 vhid 1 192.0.2.1 advskew 1 advskew 2",
            "word 9 (\"2\"): advskew is already given at word 7 (\"1\")",
        ),
        (
            "carpdev eth0 vhid 1 192.0.2.1 pass a passfile /k",
            "word 9 (\"/k\"): pass and passfile are mutually exclusive",
        ),
        (
            "carpdev eth0 vhid 1 192.0.2.1 hook-timeout soon",
            "word 7 (\"soon\"): hook-timeout expects a positive duration like 10s or 500ms",
        ),
        (
            "carpdev eth0 vhid 1 192.0.2.1 peer6 192.0.2.9",
            "word 7 (\"192.0.2.9\"): peer6 expects an IPv6 address",
        ),
        (
            "carpdev eth0/x vhid 1 192.0.2.1",
            "word 2 (\"eth0/x\"): carpdev expects an interface name of 1..15 bytes without /, : or spaces",
        ),
    ];
    for (line, want) in cases {
        assert_eq!(words_err(line), want, "{line}");
    }
}

#[test]
fn unknown_word_lists_the_keywords() {
    let err = words_err("carpdev eth0 vhid 1 preempt 192.0.2.1");
    assert_eq!(
        err,
        format!(
            "word 5 (\"preempt\"): unknown keyword, expected one of {} or an address",
            reference::keywords()
        )
    );
    assert!(err.contains(
        "carpdev, vhid, carpnodes, balancing, advbase, advskew, pass, passfile, lladdr, group"
    ));
}

#[test]
fn command_line_config_needs_a_vhost() {
    assert!(DaemonConfig::from_ifconfig_words(&[]).unwrap().is_empty());
    let err = DaemonConfig::from_command_line(false, 2, None, &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "command line: no vhid given, nothing to run"
    );
    let err = DaemonConfig::from_command_line(false, 8, None, &words("x")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "command line: log level 8 is out of range 0..7"
    );
    let cfg = DaemonConfig::from_command_line(true, 3, None, &words("carpdev e vhid 9 192.0.2.1"));
    let cfg = cfg.unwrap();
    assert_eq!(
        (cfg.preempt, cfg.log_level, cfg.source),
        (true, 3, ConfigSource::CommandLine)
    );
}

fn write_passfile(dir: &Path, content: &[u8], mode: u32) -> PathBuf {
    let path = dir.join("carpd.key");
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn passfile_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_passfile(dir.path(), b"secret\n", 0o644);
    let text = vhost("passfile = \"carpd.key\"\naddresses = [\"192.0.2.1\"]");
    let conf = dir.path().join("carpd.toml");
    fs::write(&conf, &text).unwrap();
    let err = DaemonConfig::load(&conf).unwrap_err();
    assert!(
        matches!(&err, ConfigFileError::PassfileMode { mode: 0o644, file, .. } if *file == key)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "{}:4:12: passfile {} has mode 0644, group and others must have no access (chmod 600)",
            conf.display(),
            key.display()
        )
    );
    let line = format!("carpdev eth0 vhid 1 192.0.2.1 passfile {}", key.display());
    assert!(words_err(&line).contains("has mode 0644"));
}

#[test]
fn passfile_strips_one_newline_relative_to_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    write_passfile(dir.path(), b"secret\n\n", 0o600);
    let conf = dir.path().join("carpd.toml");
    fs::write(
        &conf,
        vhost("passfile = \"carpd.key\"\naddresses = [\"192.0.2.1\"]"),
    )
    .unwrap();
    let cfg = DaemonConfig::load(&conf).unwrap();
    assert_eq!(cfg.vhosts[0].proto.passphrase.as_bytes(), b"secret\n");
}

#[test]
fn passfile_must_be_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("carpd.key");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let line = format!("carpdev eth0 vhid 1 192.0.2.1 passfile {}", fifo.display());
    // Opening a FIFO without a writer blocks: a hang is the failure here.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(words_err(&line)).unwrap());
    let err = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("reading a FIFO passfile blocked");
    assert!(
        err.ends_with("is not a regular file (it is a FIFO)"),
        "{err}"
    );
    let err = words_err("carpdev eth0 vhid 1 192.0.2.1 passfile /dev/zero");
    assert!(
        err.ends_with("passfile /dev/zero is not a regular file (it is a device)"),
        "{err}"
    );
}

#[test]
fn passfile_problems_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = write_passfile(dir.path(), &[b'x'; 21], 0o400);
    let line = format!("carpdev eth0 vhid 1 192.0.2.1 passfile {}", key.display());
    let err = words_err(&line);
    assert!(
        err.ends_with(&format!(
            "passfile {}: passphrase is 21 bytes, at most 20 are allowed",
            key.display()
        )),
        "{err}"
    );
    let missing = dir.path().join("none");
    let line = format!(
        "carpdev eth0 vhid 1 192.0.2.1 passfile {}",
        missing.display()
    );
    let err = DaemonConfig::from_ifconfig_words(&words(&line)).unwrap_err();
    assert!(matches!(&err, ConfigFileError::PassfileRead { file, .. } if *file == missing));
    // The OS reason is in the message itself: callers print only the top.
    assert!(
        err.to_string()
            .ends_with("No such file or directory (os error 2)"),
        "{err}"
    );
    let err = DaemonConfig::from_toml_str(&text_with_both(), Path::new("c.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "c.toml:5:12: pass and passfile are mutually exclusive"
    );
}

fn text_with_both() -> String {
    vhost("pass = \"a\"\npassfile = \"/k\"\naddresses = [\"192.0.2.1\"]")
}

#[test]
fn load_of_missing_file_names_it() {
    let err = DaemonConfig::load(Path::new("/nonexistent/carpd.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read config file /nonexistent/carpd.toml: No such file or directory (os error 2)"
    );
}

/// Input: the config file is a FIFO nobody writes, a directory, a file over
/// 1 MiB, and a symlink to a secret that is no TOML. Output: each is refused
/// at once with what it is; the secret is not in the message.
#[test]
fn config_file_must_be_a_small_regular_file_and_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let f = fifo.clone();
    std::thread::spawn(move || tx.send(DaemonConfig::load(&f).unwrap_err().to_string()));
    let err = rx
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("loading a FIFO blocked");
    assert!(
        err.ends_with("is not a regular file (it is a FIFO)"),
        "{err}"
    );
    let err = DaemonConfig::load(dir.path()).unwrap_err().to_string();
    assert!(err.ends_with("(it is a directory)"), "{err}");
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; 1 << 21]).unwrap();
    let err = DaemonConfig::load(&big).unwrap_err().to_string();
    assert!(err.ends_with("is larger than 1048576 bytes"), "{err}");
    for secret in [
        "vhid = \"s3cr3t-value\"",
        "s3cr3t-value",
        "lladdr = s3cr3t-value",
    ] {
        let key = dir.path().join("key");
        std::fs::write(&key, format!("[[vhost]]\n{secret}\n")).unwrap();
        let link = dir.path().join("link.toml");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&key, &link).unwrap();
        let err = DaemonConfig::load(&link).unwrap_err().to_string();
        assert!(!err.contains("s3cr3t"), "{err}");
    }
}

#[test]
fn columns_count_characters() {
    let text = "# é\n[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\naddresses = [\"192.0.2.1\"]\n\
                groups = [\"é\", \"lan9\"]\n";
    assert!(
        file_err(text).starts_with("carpd.toml:6:16: group"),
        "{}",
        file_err(text)
    );
}

#[test]
fn allow_list_from_words_and_file() {
    let line = "carpdev eth0 vhid 1 pass s allow 192.0.2.2 allow fe80::2 198.51.100.50/24";
    let v = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    let want: Vec<IpAddr> = vec!["192.0.2.2".parse().unwrap(), "fe80::2".parse().unwrap()];
    assert_eq!(v[0].allow, want);
    assert_eq!(v[0].carp_if_config().allowed_sources, want);
    let toml = "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 1\npass = \"s\"\n\
                addresses = [\"198.51.100.50/24\"]\nallow = [\"192.0.2.2\", \"fe80::2\"]\n";
    let c = DaemonConfig::from_toml_str(toml, Path::new("c.toml")).unwrap();
    assert_eq!(c.vhosts[0].allow, want);
    let err =
        DaemonConfig::from_ifconfig_words(&words("carpdev eth0 vhid 1 allow nope 198.51.100.50"))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("allow expects an IPv4 or IPv6 address"),
        "{err}"
    );
}

#[test]
fn a_20_byte_passphrase_is_warned_about() {
    let text = |pass: &str| {
        format!(
            "[[vhost]]\ncarpdev = \"eth0\"\nvhid = 7\npass = \"{pass}\"\naddresses = [\"192.0.2.50/24\"]\n"
        )
    };
    let load = |pass: &str| {
        DaemonConfig::from_toml_str(&text(pass), Path::new("/etc/carpd.toml")).unwrap()
    };
    let w = load("01234567890123456789").warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("vhid 7 on eth0") && w[0].contains("keep 19"),
        "{w:?}"
    );
    assert!(load("0123456789012345678").warnings().is_empty());
}

#[test]
fn carpnodes_words_and_file_give_the_same_interface() {
    let line = "carpdev eth0 carpnodes 3:100,1:0,2:100 balancing ip pass secret 198.51.100.50/24";
    let from_words = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
    let text = "[[vhost]]\ncarpdev = \"eth0\"\ncarpnodes = \"1:0,2:100,3:100\"\n\
                balancing = \"ip\"\npass = \"secret\"\naddresses = [\"198.51.100.50/24\"]\n";
    let from_file = DaemonConfig::from_toml_str(text, Path::new("carpd.toml")).unwrap();
    for v in [&from_words[0], &from_file.vhosts[0]] {
        let nodes: Vec<(u8, u8)> = v
            .nodes
            .iter()
            .map(|n| (n.vhid.get(), n.advskew.0))
            .collect();
        // Sorted by vhid: the first is the leader, whose vhid and advskew the vhost carries.
        assert_eq!(nodes, vec![(1, 0), (2, 100), (3, 100)]);
        assert_eq!(v.proto.vhid.get(), 1);
        assert_eq!(v.balancing(), Balancing::Ip);
        let core = v.carp_if_config();
        assert_eq!(core.nodes.len(), 3);
        assert_eq!(core.balancing(), Balancing::Ip);
        core.validate().unwrap();
    }
    assert_eq!(from_words[0].nodes, from_file.vhosts[0].nodes);
}

#[test]
fn balancing_rules_follow_openbsd() {
    let mode = |line: &str| {
        let cfg = DaemonConfig::from_ifconfig_words(&words(line)).unwrap();
        cfg[0].balancing()
    };
    // Several nodes with none asked for run ip; one node forces none.
    assert_eq!(
        mode("carpdev eth0 carpnodes 1:0,2:100 198.51.100.50"),
        Balancing::Ip
    );
    assert_eq!(
        mode("carpdev eth0 carpnodes 1:0,2:100 balancing none 198.51.100.50"),
        Balancing::Ip
    );
    assert_eq!(
        mode("carpdev eth0 carpnodes 1:0 balancing arp 198.51.100.50"),
        Balancing::None
    );
    assert_eq!(
        mode("carpdev eth0 vhid 1 balancing ip-stealth 198.51.100.50"),
        Balancing::None
    );
    for b in ["ip", "ip-stealth", "ip-unicast", "arp"] {
        let line = format!("carpdev eth0 carpnodes 1:0,2:0 balancing {b} 198.51.100.50");
        assert_eq!(mode(&line).word(), b);
    }
}

#[test]
fn carpnodes_errors_say_what_and_where() {
    assert_eq!(
        words_err("carpdev eth0 carpnodes 1:0,2:100 balancing round-robin 198.51.100.50"),
        "word 6 (\"round-robin\"): balancing \"round-robin\": expected none, ip, ip-stealth, \
         ip-unicast or arp"
    );
    assert_eq!(
        words_err("carpdev eth0 carpnodes 1:0,1:100 198.51.100.50"),
        "word 4 (\"1:0,1:100\"): carpnodes names vhid 1 twice"
    );
    assert_eq!(
        words_err("carpdev eth0 carpnodes 1:0,2 198.51.100.50"),
        "word 4 (\"1:0,2\"): carpnodes expects vhid:advskew pairs like 1:0,2:100, not \"2\""
    );
    assert_eq!(
        words_err("carpdev eth0 carpnodes 1:0,0:1 198.51.100.50"),
        "word 4 (\"1:0,0:1\"): carpnodes \"0:1\": vhid \"0\" is out of range 1..255"
    );
    assert_eq!(
        words_err("carpdev eth0 carpnodes 1:255 198.51.100.50"),
        "word 4 (\"1:255\"): carpnodes \"1:255\": advskew \"255\" is out of range 0..254"
    );
    let many: Vec<String> = (1..=33).map(|v| format!("{v}:0")).collect();
    let line = format!("carpdev eth0 carpnodes {} 198.51.100.50", many.join(","));
    assert!(
        words_err(&line).ends_with("carpnodes has 33 nodes, at most 32 are allowed"),
        "{}",
        words_err(&line)
    );
    assert!(
        words_err("carpdev eth0 carpnodes 1:0,2:0 advskew 5 198.51.100.50")
            .contains("with carpnodes each node has its own advskew")
    );
    // A node's vhid used by another vhost on the same carpdev, with both places.
    let text = format!(
        "{}\naddresses = [\"198.51.100.1\"]\n[[vhost]]\ncarpdev = \"eth0\"\n\
         carpnodes = \"4:0,1:100\"\naddresses = [\"198.51.100.2\"]\n",
        vhost("")
    );
    assert_eq!(
        file_err(&text),
        "carpd.toml:9:13: vhid 1 on eth0 is already configured at carpd.toml:3:8"
    );
    let both = format!(
        "{}carpnodes = \"1:0\"\naddresses = [\"198.51.100.1\"]\n",
        vhost("")
    );
    assert!(file_err(&both).contains("carpnodes replaces vhid and advskew"));
    // On the command line both orders name the second word, not a missing address.
    assert_eq!(
        words_err("carpdev eth0 vhid 1 carpnodes 1:0 192.0.2.1"),
        "word 5 (\"carpnodes\"): carpnodes replaces vhid and advskew: give one or the other"
    );
    assert_eq!(
        words_err("carpdev eth0 carpnodes 1:0 vhid 1 192.0.2.1"),
        "word 5 (\"vhid\"): carpnodes replaces vhid and advskew: give one or the other"
    );
    // After an address, another vhid is another vhost.
    assert!(
        DaemonConfig::from_ifconfig_words(&words(
            "carpdev eth0 carpnodes 1:0,2:0 192.0.2.1 vhid 3 192.0.2.3"
        ))
        .is_ok()
    );
}

#[test]
fn sync_settings_from_file_words_and_flags() {
    let text = format!(
        "syncdev = \"eth2\"\nsyncpeer = \"198.18.0.2\"\nsync_gate = \"strict\"\n\
         sync_gate_timeout = \"500ms\"\n{}addresses = [\"198.51.100.1\"]\n",
        vhost("")
    );
    let cfg = DaemonConfig::from_toml_str(&text, Path::new("carpd.toml")).unwrap();
    assert_eq!(cfg.sync.syncdev.as_deref(), Some("eth2"));
    assert_eq!(cfg.sync.syncpeer, Some(Ipv4Addr::new(198, 18, 0, 2)));
    assert_eq!(cfg.sync.gate, SyncGate::Strict);
    assert_eq!(cfg.sync.gate_timeout, Duration::from_millis(500));
    assert!(cfg.sync.enabled());
    // Off unless asked for.
    let plain = format!("{}addresses = [\"198.51.100.1\"]\n", vhost(""));
    let cfg = DaemonConfig::from_toml_str(&plain, Path::new("carpd.toml")).unwrap();
    assert!(!cfg.sync.enabled());
    assert_eq!(cfg.sync.gate_timeout, crate::sync::DEFAULT_GATE_TIMEOUT);
    // The pfsync word, before the vhost words.
    let cfg = DaemonConfig::from_command_line(
        false,
        2,
        None,
        &words("syncdev eth2 syncpeer 198.18.0.2 carpdev eth0 vhid 1 198.51.100.50"),
    )
    .unwrap();
    assert_eq!(cfg.sync.syncdev.as_deref(), Some("eth2"));
    assert_eq!(cfg.vhosts.len(), 1);
    // Flags replace the file's values.
    let mut cfg = cfg;
    Overrides {
        conntrackd_config: None,
        sync_gate: Some(SyncGate::Strict),
        ..Overrides::default()
    }
    .apply(&mut cfg);
    assert_eq!(cfg.sync.gate, SyncGate::Strict);
}

#[test]
fn sync_errors_say_what_is_wrong() {
    let with = |top: &str| format!("{top}{}addresses = [\"198.51.100.1\"]\n", vhost(""));
    assert!(
        file_err(&with(
            "syncdev = \"eth2\"\nconntrackd_config = \"/etc/c.conf\"\n"
        ))
        .contains("syncdev and conntrackd_config are mutually exclusive")
    );
    assert!(file_err(&with("syncpeer = \"198.18.0.2\"\n")).contains("syncpeer needs a syncdev"));
    assert!(file_err(&with("sync_gate = \"strict\"\n")).contains("sync_gate needs syncdev"));
    assert!(
        file_err(&with("syncdev = \"eth2\"\nsync_gate = \"maybe\"\n"))
            .contains("sync_gate expects open or strict")
    );
    assert!(
        file_err(&with("syncdev = \"eth2\"\nsync_gate_timeout = \"0s\"\n"))
            .contains("sync_gate_timeout expects a positive duration")
    );
    assert!(
        file_err(&with("syncdev = \"eth2\"\nsyncpeer = \"::1\"\n"))
            .contains("syncpeer expects an IPv4 address")
    );
    let err = DaemonConfig::from_command_line(false, 2, None, &words("syncdev")).unwrap_err();
    assert!(err.to_string().contains("syncdev expects a value"), "{err}");
}

#[test]
fn the_guard_is_on_unless_the_file_or_the_flag_turns_it_off() {
    let body = vhost("addresses = [\"192.0.2.1\"]");
    let on = DaemonConfig::from_toml_str(&body, Path::new("c.toml")).unwrap();
    assert!(on.guard);
    let text = format!("guard = false\n{body}");
    assert!(
        !DaemonConfig::from_toml_str(&text, Path::new("c.toml"))
            .unwrap()
            .guard
    );
    let words =
        DaemonConfig::from_command_line(false, 2, None, &words("carpdev e vhid 9 192.0.2.1"));
    let mut words = words.unwrap();
    assert!(words.guard);
    let flag = Overrides {
        no_guard: true,
        ..Overrides::default()
    };
    flag.apply(&mut words);
    assert!(!words.guard, "--no-guard turns it off");
    let err = DaemonConfig::from_toml_str(&format!("guard = 1\n{body}"), Path::new("c.toml"));
    assert!(err.is_err(), "guard is a boolean");
}
