//! UDP I/O shared by the data plane and the traffic tools, in the manner of
//! quinn-udp: the socket constructor, the open-files limit, and batched
//! `recvmmsg`/`sendmmsg`.
//!
//! - `batch` (`Batch`): up to `BATCH` datagrams per system call, straight
//!   from and into buffers allocated once;
//! - [`udp_socket`]: a non-blocking socket with the buffer sizes asked for
//!   ([`shared_udp_socket`]: its port shared with others), and
//!   [`set_int_option`] for the options socket2 does not name;
//! - [`raise_open_files_limit`]: every bound port is a file descriptor;
//! - [`steer`]: an sk_lookup program that delivers chosen ports' datagrams
//!   to a few sockets.

mod batch;
pub mod steer;

pub(crate) use batch::{BATCH, Batch};

use socket2::{Domain, Protocol, Socket, Type};
use std::net::{SocketAddr, UdpSocket};

/// A non-blocking UDP socket bound to `addr` with the given buffer sizes (best
/// effort: the kernel caps them at `rmem_max`/`wmem_max`).
pub fn udp_socket(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
) -> std::io::Result<UdpSocket> {
    shared_udp_socket(addr, recv_buffer, send_buffer, Share::Alone)
}

/// Whether a socket's port may be bound by other sockets too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Share {
    /// No: the bind fails on a port another socket holds.
    Alone,
    /// With other sockets that ask the same (`SO_REUSEADDR`).
    Address,
    /// With other sockets of this user that ask the same (`SO_REUSEPORT`).
    Port,
}

/// As [`udp_socket`], its port shared as `share` says.
pub fn shared_udp_socket(
    addr: SocketAddr,
    recv_buffer: usize,
    send_buffer: usize,
    share: Share,
) -> std::io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    match share {
        Share::Alone => {}
        Share::Address => sock.set_reuse_address(true)?,
        Share::Port => sock.set_reuse_port(true)?,
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `::` is dual-stack whatever net.ipv6.bindv6only says: the
        // configuration check lets it reach IPv4 destinations.
        sock.set_only_v6(false)?;
    }
    let _ = sock.set_recv_buffer_size(recv_buffer);
    let _ = sock.set_send_buffer_size(send_buffer);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}

/// Sets an integer socket option (`setsockopt(level, name, value)`), for the
/// options socket2 does not name.
pub fn set_int_option(
    socket: &UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and an int option of the right size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises the open-files soft limit to the hard limit; returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(_) => soft,
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}
