//! carp-proto: the sans-IO core of CARP v2 as OpenBSD and FreeBSD speak it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod config;
