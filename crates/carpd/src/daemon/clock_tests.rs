//! The daemon's clock (issue "Hardening", item 5): every core `Instant` comes
//! from tokio's clock, which is CLOCK_MONOTONIC, through [`core_time`], and
//! every timer sleeps until [`tokio_time`] of the core's deadline.
//!
//! Under `tokio::time::pause` tokio's clock stands still while real and wall
//! time pass, and moves only when advanced. If the daemon read the wall
//! clock (or any clock but tokio's), these tests would see time the paused
//! clock did not give it. The machine's clock is never touched.

use std::path::Path;

use carp_proto::config::{AdvBase, AdvSkew, interval};
use carp_proto::{Action, State, Vhid, VhostConfig};

use super::*;

/// Input: a paused tokio clock; 50 ms of real (and wall) time pass, then
/// tokio's clock is advanced by 3.004 s. Output: the core's time is 0 after
/// the real wait and exactly 3.004 s after the advance; the conversion back
/// to a tokio deadline is exact.
#[tokio::test(start_paused = true)]
async fn core_time_moves_with_tokio_monotonic_time_only() {
    let start = tokio::time::Instant::now();
    let wall = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_millis(50));
    assert!(wall.elapsed().unwrap_or_default() >= Duration::from_millis(50));
    assert_eq!(core_time(start, tokio::time::Instant::now()), Instant::ZERO);

    tokio::time::advance(Duration::from_millis(3_004)).await;
    let now = core_time(start, tokio::time::Instant::now());
    assert_eq!(now, Instant::from_millis(3_004));
    assert_eq!(tokio_time(start, now), start + Duration::from_millis(3_004));
    // An instant before the start (impossible on a monotonic clock) is clamped, not a panic.
    assert_eq!(
        core_time(start + Duration::from_secs(1), start),
        Instant::ZERO
    );
}

/// Input: one BACKUP vhost (advbase 1, advskew 100) that never hears a
/// master, driven exactly like the daemon loop (sleep until the tokio
/// deadline of `poll_timeout`, then `handle_timeout(now)`), on a paused
/// clock that tokio advances when idle. Output: MASTER at 3 x 1 + 100/256 s
/// of tokio time, then an advertisement every interval (both within the
/// 1 ms step of tokio's timer wheel), while less than a second of real time passes: the timers run
/// on tokio's monotonic clock and nothing else.
#[tokio::test(start_paused = true)]
async fn timers_follow_the_monotonic_clock_not_real_time() {
    let start = tokio::time::Instant::now();
    let real = std::time::Instant::now();
    let mut node = Node::new(NodeConfig::default());
    let mut cfg = VhostConfig::new(Vhid::new(1).unwrap(), &["192.0.2.50".parse().unwrap()]);
    cfg.advskew = AdvSkew(100);
    let every = interval(AdvBase(1), AdvSkew(100));
    let cfg_master_down = cfg.master_down.master_down(cfg.advbase, cfg.advskew);
    assert_eq!(cfg_master_down, Duration::from_micros(3_390_625));
    node.add_vhost(Instant::ZERO, LinkId(1), cfg, [1; 8])
        .unwrap();
    let mut master_at = None;
    let mut adverts = Vec::new();
    while adverts.len() < 4 {
        while let Some(action) = node.poll_action() {
            match action {
                Action::StateChanged {
                    to: State::Master, ..
                } => {
                    master_at = Some(core_time(start, tokio::time::Instant::now()));
                }
                Action::Transmit { id, .. } => {
                    let now = core_time(start, tokio::time::Instant::now());
                    adverts.push(now);
                    node.handle_send_result(now, id, true);
                }
                _ => {}
            }
        }
        let deadline = node.poll_timeout().map(|t| tokio_time(start, t));
        assert!(deadline.is_some(), "a BACKUP or MASTER always has a timer");
        sleep_until(deadline).await;
        node.handle_timeout(core_time(start, tokio::time::Instant::now()));
    }
    // tokio's timer wheel has 1 ms steps: a deadline is met within 1 ms.
    let tick = Duration::from_millis(1);
    let master_down = Instant::ZERO + cfg_master_down;
    let at = master_at.expect("became MASTER");
    assert!(
        at >= master_down && at - master_down <= tick,
        "MASTER at {at}"
    );
    for pair in adverts.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= every && gap - every <= tick, "adverts {adverts:?}");
    }
    assert!(
        real.elapsed() < Duration::from_secs(1),
        "{:?} of real time for {:?} of timers",
        real.elapsed(),
        adverts[3] - Instant::ZERO
    );
}

/// Input: the daemon loop's sources. Output: no wall clock (`SystemTime`,
/// `UNIX_EPOCH`) and no second monotonic clock (`std::time::Instant`) in the
/// daemon loop.
#[test]
fn no_other_clock_feeds_the_timers() {
    let daemon = [
        ("mod.rs", include_str!("mod.rs")),
        ("realise.rs", include_str!("realise.rs")),
        ("perform.rs", include_str!("perform.rs")),
        ("events.rs", include_str!("events.rs")),
        ("control.rs", include_str!("control.rs")),
        ("lifecycle.rs", include_str!("lifecycle.rs")),
        ("repair.rs", include_str!("repair.rs")),
        ("balance.rs", include_str!("balance.rs")),
        ("sync.rs", include_str!("sync.rs")),
        ("will.rs", include_str!("will.rs")),
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/daemon");
    let on_disk = std::fs::read_dir(&dir).unwrap().count();
    // Every file but the tests (this one, the loop tests and their will part) is checked.
    assert_eq!(on_disk, daemon.len() + 3, "a daemon source is not checked");
    for (name, text) in daemon {
        for banned in ["SystemTime", "UNIX_EPOCH", "std::time::Instant", "Utc::now"] {
            assert!(!text.contains(banned), "daemon/{name} uses {banned}");
        }
    }
    // The core's purity (no clock, RNG, I/O) is enforced by clippy: crates/carp-proto/clippy.toml.
}
