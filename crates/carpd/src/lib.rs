//! carpd: the Linux daemon around `carp-proto`.
pub mod os;
