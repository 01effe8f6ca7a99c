//! The namespace test bed: one harness for `carpd lab` and the root
//! integration tests (STYLE.md section 8, "one harness for namespaces").
//!
//! It lives outside the daemon library and is compiled into the `carpd`
//! binary (`#[path]` from `src/bin/carpd/main.rs`) and into the tests
//! (`tests/common/mod.rs`), so it may use normal dependencies only.
//!
//! - [`cmd`]: external commands, each under a timeout;
//! - [`topology`]: namespaces on a bridge, cleaned up on drop;
//! - [`words`]: `carpd run` argument words;
//! - [`nodes`]: a carpd's control socket, through the client carpctl uses;
//! - [`ping`]: the client's pinger and its recorded transcript;
//! - [`outage`]: the one computation of outage and lost probes.
#![allow(dead_code)] // the lab and each test binary use different parts

pub mod cmd;
pub mod nodes;
pub mod outage;
pub mod ping;
pub mod topology;
pub mod words;
