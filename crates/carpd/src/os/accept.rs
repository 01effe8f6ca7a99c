//! RFC 9568 Accept_Mode off: an nftables table that drops traffic addressed
//! to the virtual addresses of VRRP vhosts with `accept off`.
//!
//! The set holds every such address all the time, not only while MASTER: a
//! BACKUP does not hold the address, so nothing addressed to it reaches the
//! input hook, and a MASTER is covered from its first packet on, with no
//! rule change on the takeover's path. Forwarded traffic (the router's job)
//! passes the forward hook and is untouched. Neighbour solicitations and
//! advertisements to the address stay accepted: IPv6 neighbour
//! unreachability detection sends them unicast to it, and without them
//! hosts would declare the router unreachable. ARP is not IP and is never
//! seen here. keepalived's `vrrp_strict` installs similar rules.
//!
//! The table is written with `nft -f -` in one transaction (created,
//! flushed and refilled atomically), so a reload never opens a gap, and one
//! daemon's table never touches another's: its name carries a hash of the
//! control socket's path.

use std::fmt::Write as _;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::OsError;

/// How long `nft` may take before it is killed and the change fails.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// The addresses whose incoming traffic is dropped, and the table holding them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcceptFilter {
    /// The nftables table (family `inet`).
    pub table: String,
    /// IPv4 virtual addresses of `accept off` vhosts.
    pub v4: Vec<Ipv4Addr>,
    /// IPv6 virtual addresses of `accept off` vhosts.
    pub v6: Vec<Ipv6Addr>,
}

impl AcceptFilter {
    /// An empty filter for the daemon with control socket `control`.
    pub fn for_daemon(control: &Path) -> AcceptFilter {
        AcceptFilter {
            table: table_name(control),
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    /// Whether there is nothing to drop (the table is then deleted).
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The `nft -f` script that makes the table what this filter says,
    /// in one transaction: `add` then `delete` removes any previous table
    /// (and does not fail when there is none).
    pub fn script(&self) -> String {
        let t = &self.table;
        let mut s = format!("add table inet {t}\ndelete table inet {t}\n");
        if self.is_empty() {
            return s;
        }
        let list = |items: Vec<String>| items.join(", ");
        let _ = writeln!(s, "table inet {t} {{");
        let _ = writeln!(s, "  set vips4 {{ type ipv4_addr;");
        if !self.v4.is_empty() {
            let v4 = list(self.v4.iter().map(ToString::to_string).collect());
            let _ = writeln!(s, "    elements = {{ {v4} }}");
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "  set vips6 {{ type ipv6_addr;");
        if !self.v6.is_empty() {
            let v6 = list(self.v6.iter().map(ToString::to_string).collect());
            let _ = writeln!(s, "    elements = {{ {v6} }}");
        }
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "  chain input {{");
        let _ = writeln!(s, "    type filter hook input priority -10; policy accept;");
        let _ = writeln!(
            s,
            "    ip6 daddr @vips6 icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept"
        );
        let _ = writeln!(s, "    ip daddr @vips4 counter drop");
        let _ = writeln!(s, "    ip6 daddr @vips6 counter drop");
        let _ = writeln!(s, "  }}");
        let _ = writeln!(s, "}}");
        s
    }
}

/// `carpd_accept_` and the FNV-1a hash of the control socket's path: the
/// same for every run of one daemon, different for two daemons.
fn table_name(control: &Path) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in control.as_os_str().as_encoded_bytes() {
        hash ^= u32::from(*b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("carpd_accept_{hash:08x}")
}

/// Run `nft -f -` with the filter's script, bounded by [`NFT_TIMEOUT`].
pub async fn apply(filter: &AcceptFilter) -> Result<(), OsError> {
    let fail = |source: io::Error| OsError::Firewall {
        table: filter.table.clone(),
        source,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            fail(io::Error::new(
                e.kind(),
                format!("cannot run nft (install nftables): {e}"),
            ))
        })?;
    let script = filter.script();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| {
            fail(io::Error::new(
                io::ErrorKind::TimedOut,
                "nft did not finish",
            ))
        })?
        .map_err(fail)?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(fail(io::Error::other(format!(
        "nft failed ({}): {}",
        out.status,
        stderr.trim()
    ))))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_script_replaces_the_table_atomically_and_keeps_neighbour_discovery() {
        let f = AcceptFilter {
            table: "carpd_accept_0".into(),
            v4: vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()],
            v6: vec!["2001:db8::1".parse().unwrap()],
        };
        let s = f.script();
        assert!(s.starts_with("add table inet carpd_accept_0\ndelete table inet carpd_accept_0\n"));
        assert!(s.contains("elements = { 192.0.2.1, 192.0.2.2 }"), "{s}");
        assert!(s.contains("elements = { 2001:db8::1 }"), "{s}");
        let nd = s.find("nd-neighbor-solicit").unwrap();
        assert!(nd < s.find("ip6 daddr @vips6 counter drop").unwrap(), "{s}");
        // An empty filter only removes the table.
        let empty = AcceptFilter {
            v4: Vec::new(),
            v6: Vec::new(),
            ..f
        };
        assert_eq!(empty.script().lines().count(), 2);
    }

    #[test]
    fn each_daemon_has_its_own_stable_table() {
        let a = table_name(Path::new("/run/carpd/carpd.sock"));
        assert_eq!(a, table_name(Path::new("/run/carpd/carpd.sock")));
        assert_ne!(a, table_name(Path::new("/run/carpd/other.sock")));
        assert!(a.starts_with("carpd_accept_") && a.len() == "carpd_accept_".len() + 8);
    }
}
