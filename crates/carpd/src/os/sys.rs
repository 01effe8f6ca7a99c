//! The only `unsafe` code in carpd: registering sockets with tokio and
//! building an AF_PACKET address, neither of which has a safe constructor.

use std::io;
use std::mem;

use nix::sys::socket::{LinkAddr, SockaddrLike};
use socket2::Socket;
use tokio::io::unix::AsyncFd;

/// Register `socket` with the current tokio reactor.
///
/// Returns an error instead of panicking when called outside a runtime. The
/// runtime must have its I/O driver enabled.
pub(crate) fn async_fd(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("not inside a tokio runtime"));
    }
    // SAFETY: `Socket` owns its fd, keeps it open until it is dropped and
    // always returns the same fd from `as_raw_fd`; the `AsyncFd` owns the
    // `Socket`, so the fd outlives the registration.
    unsafe { AsyncFd::register(socket) }.map_err(|e| e.into_parts().1)
}

/// Build the `sockaddr_ll` destination for sending one frame.
pub(crate) fn link_addr(ifindex: u32, ethertype: u16, dst_mac: [u8; 6]) -> io::Result<LinkAddr> {
    // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::sa_family_t;
    sll.sll_protocol = ethertype.to_be();
    sll.sll_ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&dst_mac);
    let len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the pointer refers to a fully initialised `sockaddr_ll` of the
    // stated length, alive for the duration of the call, and its family is
    // AF_PACKET, which is what `LinkAddr::from_raw` checks for.
    unsafe {
        LinkAddr::from_raw(
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            Some(len),
        )
    }
    .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad sockaddr_ll"))
}
