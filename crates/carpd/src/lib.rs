//! carpd: the Linux daemon around `carp-proto`.
pub mod config;
pub mod os;
