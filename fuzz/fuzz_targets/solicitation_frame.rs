//! Frames read by the ARP/NS packet socket of a balancing carpdev, through
//! `solicit::parse`, and the answers built for whatever parses.
//!
//! A parsed solicitation's answer (ARP reply or NA) must itself be a frame
//! the parser refuses: carpd must never answer its own answers.
#![no_main]

use carp_proto::LinkId;
use carpd::os::solicit::{arp_reply_frame, na_reply_frame, parse};
use libfuzzer_sys::fuzz_target;

const ANSWER: [u8; 6] = [1, 0, 0x5e, 0, 1, 1];
const PARENT: [u8; 6] = [2, 0, 0, 0, 0, 0xaa];

fuzz_target!(|frame: &[u8]| {
    let Some(sol) = parse(LinkId(1), frame) else {
        return;
    };
    for reply in [
        arp_reply_frame(&sol, ANSWER, PARENT),
        na_reply_frame(&sol, ANSWER, PARENT, false),
    ]
    .into_iter()
    .flatten()
    {
        assert_eq!(
            parse(LinkId(1), &reply),
            None,
            "an answer parsed as a request"
        );
    }
});
