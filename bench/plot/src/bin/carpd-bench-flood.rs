//! Packet flood generator for the benchmark harness (bench/harness.py).
//!
//!   carpd-bench-flood junk|udp DST RATE SECONDS [THREADS]
//!
//! `junk`: IP protocol 112 datagrams of 36 random bytes to DST (normally
//! 224.0.0.18, TTL 255), what a CARP/VRRP daemon's raw socket must read and
//! reject. `udp`: 18-byte UDP datagrams to DST port 9, varying the source
//! port. RATE is packets per second over all threads (0 = as fast as the
//! machine goes). Prints one JSON line: attempted packets, sent packets,
//! send errors, seconds. Runs inside the namespace it is started in.

use std::io::Error;
use std::mem::{size_of, zeroed};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: usize = 64;

fn socket(udp: bool) -> Result<i32, Error> {
    // SAFETY: plain socket(2) and setsockopt(2) calls with valid arguments.
    unsafe {
        let fd = if udp {
            libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)
        } else {
            libc::socket(libc::AF_INET, libc::SOCK_RAW, 112)
        };
        if fd < 0 {
            return Err(Error::last_os_error());
        }
        let ttl: libc::c_int = 255;
        let off: libc::c_int = 0;
        for (opt, v) in [
            (libc::IP_MULTICAST_TTL, &ttl),
            (libc::IP_TTL, &ttl),
            (libc::IP_MULTICAST_LOOP, &off),
        ] {
            libc::setsockopt(
                fd,
                libc::IPPROTO_IP,
                opt,
                v as *const _ as *const libc::c_void,
                size_of::<libc::c_int>() as u32,
            );
        }
        Ok(fd)
    }
}

fn sockaddr(dst: Ipv4Addr, port: u16) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain old data.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(dst).to_be();
    sa
}

struct Counters {
    attempted: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
}

fn worker(
    udp: bool,
    dst: Ipv4Addr,
    rate: f64,
    secs: f64,
    seed: u64,
    c: &Counters,
) -> Result<(), Error> {
    let mut socks = Vec::new();
    // UDP: a few sockets with different source ports, so a hash over ports spreads.
    for _ in 0..if udp { 8 } else { 1 } {
        socks.push(socket(udp)?);
    }
    let mut sa = sockaddr(dst, if udp { 9 } else { 0 });
    let len = if udp { 18 } else { 36 };
    let mut bufs = vec![[0u8; 36]; BATCH];
    let mut rng = seed | 1;
    let start = Instant::now();
    let end = Duration::from_secs_f64(secs);
    let mut done: u64 = 0;
    let mut turn = 0;
    loop {
        let el = start.elapsed();
        if el >= end {
            break;
        }
        let n = if rate > 0.0 {
            let due = (rate * el.as_secs_f64()) as u64;
            if due <= done {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
            ((due - done) as usize).min(BATCH)
        } else {
            BATCH
        };
        for b in bufs.iter_mut().take(n) {
            for chunk in b.chunks_mut(8) {
                // xorshift64: cheap junk, a different packet every time.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let bytes = rng.to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }
        // SAFETY: iovecs and headers point into `bufs` and `sa`, alive for the call.
        let sent = unsafe {
            let mut iov: Vec<libc::iovec> = bufs[..n]
                .iter_mut()
                .map(|b| libc::iovec {
                    iov_base: b.as_mut_ptr() as *mut libc::c_void,
                    iov_len: len,
                })
                .collect();
            let mut hdrs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    let mut h: libc::mmsghdr = zeroed();
                    h.msg_hdr.msg_name = &mut sa as *mut _ as *mut libc::c_void;
                    h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                    h.msg_hdr.msg_iov = v;
                    h.msg_hdr.msg_iovlen = 1;
                    h
                })
                .collect();
            turn = (turn + 1) % socks.len();
            libc::sendmmsg(socks[turn], hdrs.as_mut_ptr(), n as u32, 0)
        };
        done += n as u64;
        c.attempted.fetch_add(n as u64, Ordering::Relaxed);
        if sent < 0 {
            c.errors.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            c.sent.fetch_add(sent as u64, Ordering::Relaxed);
            c.errors
                .fetch_add(n as u64 - sent as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        eprintln!("usage: {} junk|udp DST RATE SECONDS [THREADS]", a[0]);
        std::process::exit(2);
    }
    let udp = a[1] == "udp";
    let parsed = (
        a[2].parse::<Ipv4Addr>(),
        a[3].parse::<f64>(),
        a[4].parse::<f64>(),
    );
    let (Ok(dst), Ok(rate), Ok(secs)) = parsed else {
        eprintln!("carpd-bench-flood: bad DST, RATE or SECONDS");
        std::process::exit(2);
    };
    let threads: usize = a.get(5).and_then(|t| t.parse().ok()).unwrap_or(1).max(1);
    let c = Arc::new(Counters {
        attempted: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let t0 = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                worker(
                    udp,
                    dst,
                    rate / threads as f64,
                    secs,
                    0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
                    &c,
                )
            })
        })
        .collect();
    for h in handles {
        if let Ok(Err(e)) = h.join() {
            eprintln!("carpd-bench-flood: {e}");
            std::process::exit(1);
        }
    }
    println!(
        "{{\"attempted\": {}, \"sent\": {}, \"errors\": {}, \"seconds\": {:.3}}}",
        c.attempted.load(Ordering::Relaxed),
        c.sent.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        t0.elapsed().as_secs_f64()
    );
}
