//! HMAC-SHA1 authentication of advertisements (spec section 2).
//!
//! The message is `02 01 vhid sorted-IPv4 sorted-IPv6 counter` (OpenBSD
//! `carp_hmac_prepare_ctx`). Everything but the counter is fixed per
//! configuration, so it is hashed once here and the prepared state is cloned
//! for every packet, as OpenBSD does.
//!
//! Two contexts exist, as in OpenBSD: the sending one leaves scoped IPv6
//! addresses (link-local) out (`HMAC_NOV6LL`); receiving also accepts the one
//! that includes them with the embedded scope bytes zeroed (`HMAC_ORIG`).
//! FreeBSD's one context (`carp_hmac_prepare`) is OpenBSD's `HMAC_ORIG`:
//! with [`HmacContext::Freebsd`] carpd sends with that one, and still
//! accepts the other.
//! DEVIATION: the OpenBSD custom-lladdr term of the message is never included;
//! carpd has no custom lladdr (only the default virtual MAC or the real one,
//! neither of which enters the HMAC).

use std::net::{Ipv4Addr, Ipv6Addr};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::config::{HmacContext, Passphrase, Vhid};
use crate::wire::carp::{TYPE_ADVERTISEMENT, VERSION};

type HmacSha1 = Hmac<Sha1>;

/// The length of an HMAC-SHA1 digest.
pub const MD_LEN: usize = 20;

/// The label the key fingerprint is computed over.
const FINGERPRINT_LABEL: &[u8] = b"carpd key fingerprint v1";

/// Return a fingerprint of `pass` to compare between peers without showing
/// the key: the first 8 bytes, in hex, of HMAC-SHA1 keyed with the passphrase
/// over a fixed label. Keys the kernels treat as equal (trailing NULs, as
/// HMAC zero-pads) have equal fingerprints.
pub fn key_fingerprint(pass: &Passphrase) -> String {
    let Ok(mut mac) = HmacSha1::new_from_slice(pass.as_bytes()) else {
        return String::new();
    };
    mac.update(FINGERPRINT_LABEL);
    let digest = mac.finalize().into_bytes();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Prepared HMAC state for one vhost.
#[derive(Clone)]
pub struct Auth {
    send: HmacSha1,
    /// The other context, accepted on receive; present only when the
    /// address set has scoped IPv6 addresses (else both are the same).
    other: Option<HmacSha1>,
}

impl core::fmt::Debug for Auth {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Auth")
            .field("two_contexts", &self.other.is_some())
            .finish()
    }
}

/// Return true for addresses that carry a KAME embedded scope in the BSD kernels.
fn is_scoped(addr: &Ipv6Addr) -> bool {
    let o = addr.octets();
    let link_local_unicast = o[0] == 0xfe && (o[1] & 0xc0) == 0x80;
    let local_multicast = o[0] == 0xff && matches!(o[1] & 0x0f, 0x1 | 0x2);
    link_local_unicast || local_multicast
}

/// Return the sorted, de-duplicated IPv4 addresses that OpenBSD hashes.
///
/// OpenBSD's selection sort uses strict comparisons starting from 0 and stops
/// below all-ones, so duplicates, 0.0.0.0 and 255.255.255.255 never enter.
fn hashed_ipv4(addrs: &[Ipv4Addr]) -> Vec<Ipv4Addr> {
    let mut v: Vec<Ipv4Addr> = addrs
        .iter()
        .copied()
        .filter(|a| !a.is_unspecified() && !a.is_broadcast())
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Return the sorted, de-duplicated IPv6 addresses for one context.
fn hashed_ipv6(addrs: &[Ipv6Addr], include_scoped: bool) -> Vec<[u8; 16]> {
    let mut v: Vec<[u8; 16]> = addrs
        .iter()
        .filter(|a| include_scoped || !is_scoped(a))
        .map(|a| {
            let mut o = a.octets();
            if is_scoped(a) {
                // The on-wire form: the KAME interface index in bytes 2..3 is zeroed.
                o[2] = 0;
                o[3] = 0;
            }
            o
        })
        .filter(|o| *o != [0; 16] && *o != [0xff; 16])
        .collect();
    v.sort();
    v.dedup();
    v
}

fn prepare(key: &Passphrase, vhid: Vhid, v4: &[Ipv4Addr], v6: &[[u8; 16]]) -> HmacSha1 {
    // HMAC accepts keys of any length; config guarantees at most 20 bytes.
    let mut mac = match HmacSha1::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC-SHA1 accepts every key length"),
    };
    mac.update(&[VERSION, TYPE_ADVERTISEMENT, vhid.get()]);
    for a in v4 {
        mac.update(&a.octets());
    }
    for a in v6 {
        mac.update(a);
    }
    mac
}

impl Auth {
    /// Prepare the contexts for a vhost's key, vhid and addresses (order does
    /// not matter), signing as OpenBSD does.
    pub fn new(key: &Passphrase, vhid: Vhid, ipv4: &[Ipv4Addr], ipv6: &[Ipv6Addr]) -> Auth {
        Auth::with_context(key, vhid, ipv4, ipv6, HmacContext::Openbsd)
    }

    /// [`Auth::new`], signing with `context`.
    pub fn with_context(
        key: &Passphrase,
        vhid: Vhid,
        ipv4: &[Ipv4Addr],
        ipv6: &[Ipv6Addr],
        context: HmacContext,
    ) -> Auth {
        let v4 = hashed_ipv4(ipv4);
        let without = || prepare(key, vhid, &v4, &hashed_ipv6(ipv6, false));
        let with = || prepare(key, vhid, &v4, &hashed_ipv6(ipv6, true));
        let scoped = ipv6.iter().any(is_scoped);
        match context {
            HmacContext::Openbsd => Auth {
                send: without(),
                other: scoped.then(with),
            },
            HmacContext::Freebsd => Auth {
                send: with(),
                other: scoped.then(without),
            },
        }
    }

    /// Return the digest to send with `counter` (OpenBSD `carp_hmac_generate`,
    /// in the sending context).
    pub fn generate(&self, counter: &[u8; 8]) -> [u8; MD_LEN] {
        let mut mac = self.send.clone();
        mac.update(counter);
        mac.finalize().into_bytes().into()
    }

    /// Return true if `md` authenticates `counter` in either context, compared in constant time.
    pub fn verify(&self, counter: &[u8; 8], md: &[u8; MD_LEN]) -> bool {
        let check = |ctx: &HmacSha1| {
            let mut mac = ctx.clone();
            mac.update(counter);
            mac.verify_slice(md).is_ok()
        };
        // Both contexts are always tried so timing does not reveal which matched.
        let a = check(&self.send);
        let b = self.other.as_ref().is_some_and(check);
        a | b
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn fingerprints_tell_keys_apart_and_hide_them() {
        let fp = |k: &[u8]| super::key_fingerprint(&super::Passphrase::new(k).unwrap());
        assert_eq!(fp(b"one").len(), 16);
        assert_eq!(fp(b"one"), fp(b"one"));
        assert_ne!(fp(b"one"), fp(b"two"));
        assert_ne!(fp(b""), fp(b"one"));
        assert!(!fp(b"one").contains("6f6e65"));
    }

    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    const COUNTER: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

    fn vhid1() -> Vhid {
        Vhid::new(1).unwrap()
    }

    #[test]
    fn spec_vector_foobar() {
        let auth = Auth::new(
            &Passphrase::new(b"foobar").unwrap(),
            vhid1(),
            &[Ipv4Addr::new(192, 0, 2, 1)],
            &[],
        );
        let md = auth.generate(&COUNTER);
        assert_eq!(hex(&md), "f1c38a7a68f29a2acce511f3ef6678c593563c2f");
        assert!(auth.verify(&COUNTER, &md));
    }

    #[test]
    fn spec_vector_empty_key_is_still_verified() {
        let auth = Auth::new(
            &Passphrase::default(),
            vhid1(),
            &[Ipv4Addr::new(192, 0, 2, 1)],
            &[],
        );
        let md = auth.generate(&COUNTER);
        assert_eq!(hex(&md), "d497f350f433ccc33c5e0b50223a2cada05b081b");
        let mut wrong = md;
        wrong[0] ^= 1;
        assert!(!auth.verify(&COUNTER, &wrong));
    }

    #[test]
    fn key_padding_with_zeros_is_equivalent() {
        // The kernels' 20-byte zero-padded buffer equals the bare passphrase.
        let mut padded = b"foobar".to_vec();
        padded.resize(20, 0);
        let a = Auth::new(&Passphrase::new(b"foobar").unwrap(), vhid1(), &[], &[]);
        let b = Auth::new(&Passphrase::new(&padded).unwrap(), vhid1(), &[], &[]);
        assert_eq!(a.generate(&COUNTER), b.generate(&COUNTER));
    }

    #[test]
    fn duplicates_and_unusable_addresses_are_not_hashed() {
        let key = Passphrase::new(b"k").unwrap();
        let a = Ipv4Addr::new(192, 0, 2, 1);
        let one = Auth::new(&key, vhid1(), &[a], &[]);
        let dup = Auth::new(&key, vhid1(), &[a, a, Ipv4Addr::UNSPECIFIED], &[]);
        assert_eq!(one.generate(&COUNTER), dup.generate(&COUNTER));
    }

    #[test]
    fn link_local_addresses_only_enter_the_receive_context() {
        let key = Passphrase::new(b"k").unwrap();
        let global: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let without = Auth::new(&key, vhid1(), &[], &[global]);
        let with = Auth::new(&key, vhid1(), &[], &[global, ll]);
        // Sending ignores the link-local address (OpenBSD NOV6LL)...
        assert_eq!(with.generate(&COUNTER), without.generate(&COUNTER));
        // ...and a peer that hashed it (FreeBSD) is accepted too.
        let freebsd_md = prepare(&key, vhid1(), &[], &hashed_ipv6(&[global, ll], true));
        let mut mac = freebsd_md.clone();
        mac.update(&COUNTER);
        let md: [u8; 20] = mac.finalize().into_bytes().into();
        assert!(with.verify(&COUNTER, &md));
        assert!(!without.verify(&COUNTER, &md));
    }

    /// A hand-computed vector (Python's hmac over the message FreeBSD's
    /// `carp_hmac_prepare` builds: 02 01 vhid, IPv4 ascending, IPv6 by
    /// memcmp with fe80::7 in it, then the counter): key "freebsd", vhid 7,
    /// 192.0.2.20, 192.0.2.10, 2001:db8::7, fe80::7, counter 01..08.
    #[test]
    fn freebsd_context_signs_with_the_link_local_address() {
        let key = Passphrase::new(b"freebsd").unwrap();
        let vhid = Vhid::new(7).unwrap();
        let v4 = [Ipv4Addr::new(192, 0, 2, 20), Ipv4Addr::new(192, 0, 2, 10)];
        let v6: [Ipv6Addr; 2] = ["2001:db8::7".parse().unwrap(), "fe80::7".parse().unwrap()];
        const FREEBSD: &str = "899caeefb9b3dcc2d956d5898db1508ce213ea8c";
        const OPENBSD: &str = "31bdc1380ebb26dc3d3fc8f0475aad28b7b23af9";
        let freebsd = Auth::with_context(&key, vhid, &v4, &v6, HmacContext::Freebsd);
        let openbsd = Auth::with_context(&key, vhid, &v4, &v6, HmacContext::Openbsd);
        assert_eq!(hex(&freebsd.generate(&COUNTER)), FREEBSD);
        assert_eq!(hex(&openbsd.generate(&COUNTER)), OPENBSD);
        // Each accepts the other's signature (OpenBSD carp_hmac_verify tries both).
        assert!(freebsd.verify(&COUNTER, &openbsd.generate(&COUNTER)));
        assert!(openbsd.verify(&COUNTER, &freebsd.generate(&COUNTER)));
        // Without a scoped address the two contexts are one.
        let plain = Auth::with_context(&key, vhid, &v4, &v6[..1], HmacContext::Freebsd);
        assert_eq!(hex(&plain.generate(&COUNTER)), OPENBSD);
    }

    #[test]
    fn kame_embedded_scope_is_zeroed() {
        let a: Ipv6Addr = "fe80:5::1".parse().unwrap();
        let b: Ipv6Addr = "fe80::1".parse().unwrap();
        assert_eq!(hashed_ipv6(&[a], true), hashed_ipv6(&[b], true));
    }
}
