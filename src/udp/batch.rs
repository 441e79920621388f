//! Batched UDP I/O: up to [`BATCH`] datagrams per `recvmmsg`, and the ones to
//! forward sent back out of the same socket with one `sendmmsg`, straight from
//! the receive buffers. Everything is allocated once per worker.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;

/// Receive buffers and the send queue built from them.
pub struct Batch {
    slot: usize,
    bufs: Vec<u8>,
    received: usize,
    /// Send queue: (receive slot, destination).
    queue: Box<[(usize, SocketAddr); BATCH]>,
    queued: usize,
    /// Whether receives ask for each datagram's destination (ancillary data).
    destinations: bool,
    c: Box<CStructs>,
}

/// Ancillary data room per datagram: one `IP_ORIGDSTADDR` (a `sockaddr_in`)
/// and some; `u64`s for the alignment `cmsghdr` needs.
const CONTROL_WORDS: usize = 8;

/// The C structures the system calls read and write.
struct CStructs {
    lens: [usize; BATCH],
    from: [libc::sockaddr_storage; BATCH],
    iov: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
    to: [libc::sockaddr_storage; BATCH],
    to_len: [libc::socklen_t; BATCH],
    out_iov: [libc::iovec; BATCH],
    out_hdrs: [libc::mmsghdr; BATCH],
    control: [[u64; CONTROL_WORDS]; BATCH],
}

// The raw pointers inside only ever point into the batch itself, and are set
// right before each system call.
unsafe impl Send for Batch {}

impl Batch {
    /// Buffers of `slot` bytes each: one more than the largest datagram
    /// accepted, so that anything larger shows as longer than the limit.
    pub fn new(slot: usize) -> Self {
        // SAFETY: every field of CStructs is a C struct or an integer array,
        // for which all-zero is a valid value.
        let c: Box<CStructs> = unsafe { Box::new(zeroed()) };
        Batch {
            slot,
            bufs: vec![0u8; slot * BATCH],
            received: 0,
            queue: Box::new([(0, SocketAddr::from(([0, 0, 0, 0], 0))); BATCH]),
            queued: 0,
            destinations: false,
            c,
        }
    }

    /// As [`Batch::new`], for a socket with `IP_RECVORIGDSTADDR` set: each
    /// receive also keeps the datagrams' destinations ([`Batch::destination`]).
    pub fn with_destinations(slot: usize) -> Self {
        Batch {
            destinations: true,
            ..Batch::new(slot)
        }
    }

    /// Receives up to [`BATCH`] datagrams without blocking; the count.
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received = 0;
        self.queued = 0;
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            self.c.iov[i] = libc::iovec {
                // SAFETY: i * slot + slot <= bufs.len().
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: self.slot,
            };
            let h = &mut self.c.hdrs[i].msg_hdr;
            h.msg_name = (&mut self.c.from[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.c.iov[i];
            h.msg_iovlen = 1;
            if self.destinations {
                h.msg_control = self.c.control[i].as_mut_ptr().cast();
                h.msg_controllen = size_of::<[u64; CONTROL_WORDS]>() as _;
            } else {
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
            }
            h.msg_flags = 0;
            self.c.hdrs[i].msg_len = 0;
        }
        // SAFETY: hdrs describe BATCH valid buffers owned by self.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.c.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = n as usize;
        for i in 0..self.received {
            self.c.lens[i] = self.c.hdrs[i].msg_len as usize;
        }
        Ok(self.received)
    }

    /// Datagram `i` of the last receive: sender, bytes (at most a slot) and length.
    #[inline]
    pub fn datagram(&self, i: usize) -> Option<(SocketAddr, &[u8], usize)> {
        let from = to_socket_addr(&self.c.from[i], self.c.hdrs[i].msg_hdr.msg_namelen)?;
        let len = self.c.lens[i];
        let data = &self.bufs[i * self.slot..i * self.slot + len.min(self.slot)];
        Some((from, data, len))
    }

    /// Where datagram `i` of the last receive was addressed (IPv4), when the
    /// batch was made [`Batch::with_destinations`] and the kernel said.
    pub fn destination(&self, i: usize) -> Option<SocketAddr> {
        if !self.destinations || i >= self.received {
            return None;
        }
        let h = &self.c.hdrs[i].msg_hdr;
        // SAFETY: the kernel wrote msg_controllen bytes of well-formed cmsgs
        // into control[i], which msg_control points to; the CMSG macros stay
        // within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(h);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_IP
                    && (*cmsg).cmsg_type == libc::IP_ORIGDSTADDR
                    && (*cmsg).cmsg_len as usize
                        >= libc::CMSG_LEN(size_of::<libc::sockaddr_in>() as u32) as usize
                {
                    let a = libc::CMSG_DATA(cmsg)
                        .cast::<libc::sockaddr_in>()
                        .read_unaligned();
                    return Some(SocketAddr::V4(SocketAddrV4::new(
                        Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                        u16::from_be(a.sin_port),
                    )));
                }
                cmsg = libc::CMSG_NXTHDR(h, cmsg);
            }
        }
        None
    }

    /// The most bytes a datagram keeps (larger ones are cut to it).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Queues datagram `i` to be sent to `to`.
    #[inline]
    pub fn forward(&mut self, i: usize, to: SocketAddr) {
        self.queue[self.queued] = (i, to);
        self.queued += 1;
    }

    /// Copies `data` into the next free slot and queues it for `to`; false when
    /// the batch is full or `data` does not fit a slot. (For senders that make
    /// their own packets; do not mix with [`Batch::recv`] before a send.)
    pub fn push(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        if self.queued == BATCH || data.len() > self.slot {
            return false;
        }
        let i = self.queued;
        self.bufs[i * self.slot..i * self.slot + data.len()].copy_from_slice(data);
        self.c.lens[i] = data.len();
        self.queue[i] = (i, to);
        self.queued += 1;
        true
    }

    /// The datagrams [`Batch::push`] queued, to touch up before they are sent.
    pub fn pushed_mut(&mut self) -> impl Iterator<Item = &mut [u8]> {
        let lens = &self.c.lens[..self.queued];
        self.bufs
            .chunks_mut(self.slot)
            .zip(lens)
            .map(|(slot, &len)| &mut slot[..len])
    }

    /// Datagrams queued and not yet sent.
    pub fn queued(&self) -> usize {
        self.queued
    }

    /// Sends the queue out of `fd`; `done(destination, length, sent)` is called
    /// for every queued datagram. A datagram the kernel refuses is skipped.
    pub fn send(&mut self, fd: RawFd, mut done: impl FnMut(SocketAddr, usize, bool)) {
        let base = self.bufs.as_mut_ptr();
        let c = &mut *self.c;
        for k in 0..self.queued {
            let (i, to) = self.queue[k];
            c.to_len[k] = from_socket_addr(to, &mut c.to[k]);
            c.out_iov[k] = libc::iovec {
                // SAFETY: slot i holds lens[i] (<= slot) received bytes.
                iov_base: unsafe { base.add(i * self.slot) }.cast(),
                iov_len: c.lens[i].min(self.slot),
            };
            let h = &mut c.out_hdrs[k].msg_hdr;
            h.msg_name = (&mut c.to[k] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = c.to_len[k];
            h.msg_iov = &mut c.out_iov[k];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        let mut start = 0;
        while start < self.queued {
            // SAFETY: out_hdrs[start..queued] were filled above.
            let n = unsafe {
                libc::sendmmsg(
                    fd,
                    self.c.out_hdrs.as_mut_ptr().add(start),
                    (self.queued - start) as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                for k in start..start + n as usize {
                    let (i, to) = self.queue[k];
                    done(to, self.c.lens[i], true);
                }
                start += n as usize;
            } else {
                // The first datagram failed (refused, or a full send buffer):
                // count it and carry on with the rest.
                let (i, to) = self.queue[start];
                done(to, self.c.lens[i], false);
                start += 1;
            }
        }
        self.queued = 0;
    }
}

fn to_socket_addr(s: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(s.ss_family) {
        libc::AF_INET if len as usize >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, and it fits.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn from_socket_addr(addr: SocketAddr, s: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            out.sin_family = libc::AF_INET as libc::sa_family_t;
            out.sin_port = a.port().to_be();
            out.sin_addr = libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let out =
                unsafe { &mut *(s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            out.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            out.sin6_port = a.port().to_be();
            out.sin6_flowinfo = a.flowinfo();
            out.sin6_addr = libc::in6_addr {
                s6_addr: a.ip().octets(),
            };
            out.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_refused_datagram_is_reported_and_the_rest_still_go() {
        // An IPv4 socket cannot send to an IPv6 address: the kernel refuses at once.
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut b = Batch::new(64);
        assert!(b.push(sink.local_addr().unwrap(), b"first"));
        assert!(b.push("[::1]:9".parse().unwrap(), b"refused"));
        assert!(b.push(sink.local_addr().unwrap(), b"third"));
        let mut results = Vec::new();
        b.send(relay.as_raw_fd(), |to, len, ok| {
            results.push((to.is_ipv6(), len, ok))
        });
        assert_eq!(
            results,
            [(false, 5, true), (true, 7, false), (false, 5, true)]
        );
        let mut buf = [0u8; 16];
        assert_eq!(sink.recv(&mut buf).unwrap(), 5);
        assert_eq!(sink.recv(&mut buf).unwrap(), 5);
    }

    #[test]
    fn a_batch_with_destinations_tells_where_each_datagram_went() {
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        crate::udp::set_int_option(&receiver, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1).unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            sender
                .send_to(&[i], receiver.local_addr().unwrap())
                .unwrap();
        }
        let mut b = Batch::with_destinations(16);
        assert_eq!(b.recv(receiver.as_raw_fd()).unwrap(), 3);
        for i in 0..3 {
            assert_eq!(b.destination(i), Some(receiver.local_addr().unwrap()));
        }
        assert_eq!(b.destination(3), None, "not received");
        // A batch made without them never claims one.
        let mut plain = Batch::new(16);
        sender
            .send_to(&[9], receiver.local_addr().unwrap())
            .unwrap();
        assert_eq!(plain.recv(receiver.as_raw_fd()).unwrap(), 1);
        assert_eq!(plain.destination(0), None);
    }

    #[test]
    fn receives_a_batch_and_sends_it_on_from_the_same_socket() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..40u8 {
            sender
                .send_to(&[i; 10], relay.local_addr().unwrap())
                .unwrap();
        }
        sender
            .send_to(&[9; 100], relay.local_addr().unwrap())
            .unwrap();
        let mut b = Batch::new(65);
        let mut got = Vec::new();
        loop {
            let n = match b.recv(relay.as_raw_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            };
            for i in 0..n {
                let (from, data, len) = b.datagram(i).unwrap();
                assert_eq!(from, sender.local_addr().unwrap());
                got.push(len);
                if len <= 64 {
                    assert_eq!(data.len(), len);
                    b.forward(i, sink.local_addr().unwrap());
                } else {
                    assert_eq!(
                        data.len(),
                        65,
                        "oversized datagrams show as longer than the slot"
                    );
                }
            }
            let mut sent = 0;
            b.send(relay.as_raw_fd(), |to, _, ok| {
                assert!(ok && to == sink.local_addr().unwrap());
                sent += 1;
            });
            assert!(sent <= n);
        }
        assert_eq!(got.len(), 41);
        assert_eq!(got[40], 65);
        let mut buf = [0u8; 100];
        for i in 0..40u8 {
            let (n, from) = sink.recv_from(&mut buf).unwrap();
            assert_eq!((n, from), (10, relay.local_addr().unwrap()));
            assert_eq!(buf[..10], [i; 10]);
        }
    }
}
