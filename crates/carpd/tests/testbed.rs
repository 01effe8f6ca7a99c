//! Unit tests of the namespace test bed on recorded input (no root needed):
//! the ping parser and the one outage computation, on transcripts of
//! `ping -n -D -O` in `fixtures/ping/`.

#[path = "../testbed/mod.rs"]
mod testbed;

use std::time::Duration;

use testbed::outage::Outage;
use testbed::ping::Record;
use testbed::words::Words;

fn fixture(name: &str) -> Record {
    let path = format!("{}/tests/fixtures/ping/{name}", env!("CARGO_MANIFEST_DIR"));
    Record::parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// The whole record as one window.
fn all(r: &Record) -> Outage {
    r.outage(0.0, f64::MAX)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Outage and lost probes tell the same story: zero together, and the
/// outage is its run of lost probes times the interval, between the
/// shortest and the longest interval.
fn assert_consistent(o: &Outage) {
    assert_eq!(o.outage.is_zero(), o.lost == 0, "{o:?}");
    assert!(o.run <= o.lost, "{o:?}");
    let (lo, hi) = o.steps.expect("steps");
    let run = o.run as f64;
    let slack = 1e-3;
    assert!(
        run * ms(lo) - slack <= ms(o.outage) && ms(o.outage) <= run * ms(hi) + slack,
        "outage {} ms vs {} lost in a row x {}-{} ms: {o:?}",
        ms(o.outage),
        o.run,
        ms(lo),
        ms(hi)
    );
}

#[test]
fn steady_ping_has_no_outage_and_measures_the_interval() {
    let r = fixture("steady.txt");
    let o = all(&r);
    assert_eq!((o.probes, o.lost, o.run), (10, 0, 0));
    assert_eq!(o.outage, Duration::ZERO);
    assert!((ms(o.interval.unwrap()) - 16.0).abs() < 0.01, "{o:?}");
    assert_consistent(&o);
}

#[test]
fn recorded_loss_run_gives_outage_of_the_run() {
    // Real output: the VIP was removed for 200 ms under `ping -i 0.01`.
    let r = fixture("loss_run.txt");
    let o = all(&r);
    assert_eq!((o.lost, o.run), (12, 12), "{o:?}");
    // ping asked for 10 ms and sent every ~16 ms.
    let step = ms(o.interval.unwrap());
    assert!((15.0..18.0).contains(&step), "{o:?}");
    // From probe 33's send (interpolated) to probe 45's.
    assert!((190.0..205.0).contains(&ms(o.outage)), "{o:?}");
    assert_eq!(o.probes, 59);
    assert_consistent(&o);
}

#[test]
fn late_reordered_and_duplicate_replies() {
    let r = fixture("late_reorder.txt");
    // Probes every 20 ms. seq 3's reply (30 ms) comes after seq 4's and seq
    // 6's late (150 ms, after "no answer yet"): both answered; seq 7's DUP!
    // counts once; seq 8, answered after 1.5 s, is lost; 9-11 are lost (10
    // with an error reply).
    assert!(r.get(6).unwrap().reply.is_some());
    let o = all(&r);
    assert_eq!((o.probes, o.lost, o.run), (89, 4, 4), "{o:?}");
    assert!((ms(o.interval.unwrap()) - 20.0).abs() < 0.01, "{o:?}");
    // From seq 8's send (0.160) to seq 12's (0.240).
    assert!((ms(o.outage) - 80.0).abs() < 0.5, "{o:?}");
    assert!((o.at.unwrap() - 1_700_000_000.16).abs() < 1e-4, "{o:?}");
    assert_consistent(&o);
}

#[test]
fn window_counts_only_probes_sent_inside() {
    let r = fixture("late_reorder.txt");
    let base = 1_700_000_000.0;
    // Before the run: nothing lost.
    let o = r.outage(base, base + 0.15);
    assert_eq!((o.probes, o.lost), (7, 0), "{o:?}");
    assert_eq!(o.outage, Duration::ZERO);
    // Starting inside the run: only the rest of it counts.
    let o = r.outage(base + 0.19, base + 10.0);
    assert_eq!((o.probes, o.lost, o.run), (80, 2, 2), "{o:?}");
    assert!((ms(o.outage) - 40.0).abs() < 0.5, "{o:?}");
    assert_consistent(&o);
}

#[test]
fn sequence_numbers_wrap() {
    let r = fixture("wrap.txt");
    let o = all(&r);
    assert_eq!((o.probes, o.lost, o.run), (6, 1, 1), "{o:?}");
    assert!((ms(o.outage) - 20.0).abs() < 0.5, "{o:?}");
    assert!(r.get(65_536).is_some(), "seq 0 after 65535 is 65536");
    assert_consistent(&o);
}

#[test]
fn ongoing_outage_counts_only_judged_probes() {
    // 20 ms probes, nothing answered after seq 2; the record ends at 1.22 s,
    // so probes sent before 0.22 s (seq 3-11) are lost, the rest pending.
    let r = fixture("ongoing.txt");
    let o = all(&r);
    assert_eq!((o.probes, o.lost, o.run), (11, 9, 9), "{o:?}");
    assert!((ms(o.outage) - 180.0).abs() < 0.5, "{o:?}");
    assert_consistent(&o);
}

#[test]
fn empty_record_is_no_outage() {
    let o = all(&Record::parse(
        "PING 192.0.2.50 (192.0.2.50) 56(84) bytes of data.\n",
    ));
    assert_eq!((o.probes, o.lost, o.outage), (0, 0, Duration::ZERO));
    assert_eq!(o.interval, None);
}

#[test]
fn words_builder_orders_options_first() {
    let w = Words::new("eth0", 1)
        .advbase(1)
        .advskew(100)
        .pass("secret")
        .preempt()
        .addr("192.0.2.50/24")
        .peer("192.0.2.11")
        .lladdr("real")
        .build();
    let want = "--preempt carpdev eth0 vhid 1 advbase 1 advskew 100 pass secret 192.0.2.50/24 peer 192.0.2.11 lladdr real";
    assert_eq!(w.join(" "), want);
}
