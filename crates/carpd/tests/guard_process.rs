//! The guard process (`carpd guard`) on its own, fed by hand through its
//! stdin as the daemon feeds it: no namespace, nothing of the host touched
//! (the will names only interfaces that do not exist).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use carpd::guard::will::{Message, Via, Will, WillAddress, WillAdvert, WillLink};

const CARPD: &str = env!("CARGO_BIN_EXE_carpd");

/// Start a guard whose will file is `will`; return it and our end of its socket.
fn guard(will: &Path) -> (Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(CARPD)
        .args(["guard", "--log-level", "7", "--will"])
        .arg(will)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, ours)
}

/// Wait (bounded) for the guard to exit; return its code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the guard did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A will naming an interface no host has.
fn nowhere() -> Will {
    let gone = WillLink {
        ifindex: 999_999,
        name: "nosuch0".into(),
    };
    Will {
        pid: 1,
        addresses: vec![WillAddress {
            ifindex: gone.ifindex,
            ifname: gone.name.clone(),
            addr: "192.0.2.50".parse().unwrap(),
            prefix_len: 24,
        }],
        macvlans: vec![gone.clone()],
        adverts: vec![WillAdvert {
            vhid: 1,
            carpdev: gone,
            dst: "224.0.0.18".parse().unwrap(),
            via: Via::Socket { src: None },
            bytes: vec![0x21, 1, 0, 1],
        }],
        ..Will::default()
    }
}

/// Input: a will, then the clean message. Output: exit 0 at once, nothing
/// done, the will file left to the daemon (which removes it itself).
#[test]
fn a_clean_stop_ends_the_guard_without_acting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("will-x.json");
    std::fs::write(&file, b"{}").unwrap();
    let (child, mut sock) = guard(&file);
    sock.write_all(&Message::Will(nowhere()).encode()).unwrap();
    sock.write_all(&Message::Clean.encode()).unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("died"), "{err}");
    assert!(file.exists());
}

/// Input: a will naming a missing interface, a garbled frame, then the end
/// of the stream (the daemon died). Output: the guard acts on the last good
/// will, skips the interfaces that are not there, reports the sends that
/// failed, removes the will file and exits 0; with no will at all it exits
/// without touching the file.
#[test]
fn a_dead_daemons_will_is_executed_and_bad_input_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("will-x.json");
    std::fs::write(&file, b"{}").unwrap();
    let (child, mut sock) = guard(&file);
    sock.write_all(&Message::Will(nowhere()).encode()).unwrap();
    sock.write_all(&[0, 0, 0, 3, b'W', b'{', b'x']).unwrap();
    drop(sock);
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("bad frame"), "{err}");
    assert!(
        err.contains("died without stopping") && err.contains("removed 0 address(es)"),
        "{err}"
    );
    assert!(err.contains("step(s) failed"), "the sends failed: {err}");
    assert!(!file.exists(), "the will file stayed");

    std::fs::write(&file, b"{}").unwrap();
    let (child, sock) = guard(&file);
    drop(sock);
    assert_eq!(finish(child).0, Some(0));
    assert!(
        file.exists(),
        "no will was received: an older file is stop-post's"
    );

    // An impossible length: the stream is out of step, the guard waits for
    // its end and acts on the will it had.
    let (child, mut sock) = guard(&file);
    sock.write_all(&Message::Will(nowhere()).encode()).unwrap();
    sock.write_all(&[0xff; 8]).unwrap();
    drop(sock);
    let (code, err) = finish(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("out of range") && err.contains("died without stopping"),
        "{err}"
    );
}
