//! The data plane's binding interface: the scheduler binds a group's used ports
//! when its window opens and frees them when it closes.
//!
//! Sockets are created with the configured buffer sizes on `bind_address`.
//! Binding is idempotent: it binds the ports not yet bound and reports the ones
//! that failed, so a degraded group is completed by binding it again.

use crate::group::{GroupId, Layout, Plane};
use crate::reservation::schedule::PortFailure;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Socket settings from `[data]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// Address the group ports are bound on.
    pub bind_address: IpAddr,
    /// `SO_RCVBUF`.
    pub recv_buffer_bytes: usize,
    /// `SO_SNDBUF`.
    pub send_buffer_bytes: usize,
}

/// The sockets of the groups that are bound now.
#[derive(Debug)]
pub struct DataPlane {
    options: SocketOptions,
    groups: HashMap<GroupId, Vec<(u16, UdpSocket)>>,
}

impl DataPlane {
    /// A data plane with nothing bound.
    pub fn new(options: SocketOptions) -> Self {
        DataPlane {
            options,
            groups: HashMap::new(),
        }
    }

    /// Binds every port `layout` uses in `group` that is not bound yet.
    /// Returns the ports that could not be bound, with the OS error.
    pub fn bind(&mut self, group: GroupId, layout: Layout) -> Vec<PortFailure> {
        let mut failures = Vec::new();
        let bound = self.groups.entry(group).or_default();
        for (pair, _) in layout.pairs() {
            for plane in Plane::BOTH {
                let port = group.port(pair, plane);
                if bound.iter().any(|(p, _)| *p == port) {
                    continue;
                }
                match open_socket(&self.options, port) {
                    Ok(sock) => bound.push((port, sock)),
                    Err(e) => failures.push(PortFailure {
                        port,
                        error: e.to_string(),
                    }),
                }
            }
        }
        failures
    }

    /// Closes every socket of `group`.
    pub fn free(&mut self, group: GroupId) {
        self.groups.remove(&group);
    }

    /// Closes everything (shutdown).
    pub fn free_all(&mut self) {
        self.groups.clear();
    }

    /// Number of bound sockets.
    pub fn bound_sockets(&self) -> usize {
        self.groups.values().map(Vec::len).sum()
    }
}

fn open_socket(o: &SocketOptions, port: u16) -> std::io::Result<UdpSocket> {
    let addr = SocketAddr::new(o.bind_address, port);
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Buffer sizes are best effort: the kernel caps them at rmem_max/wmem_max.
    let _ = sock.set_recv_buffer_size(o.recv_buffer_bytes);
    let _ = sock.set_send_buffer_size(o.send_buffer_bytes);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plane() -> DataPlane {
        DataPlane::new(SocketOptions {
            bind_address: "127.0.0.1".parse().unwrap(),
            recv_buffer_bytes: 1 << 16,
            send_buffer_bytes: 1 << 16,
        })
    }

    #[test]
    fn binds_only_the_pairs_of_the_layout_and_frees_them() {
        // Group 530 (61288–61295): above the usual ephemeral range, unused by other tests.
        let g = GroupId::try_from(530).unwrap();
        let mut dp = plane();
        assert_eq!(dp.bind(g, Layout::AudioVideo), vec![]);
        assert_eq!(dp.bound_sockets(), 4);
        let taken = |port| UdpSocket::bind(("127.0.0.1", port)).is_err();
        assert!(taken(g.port(0, Plane::Rtp)) && taken(g.port(0, Plane::Rtcp)));
        assert!(taken(g.port(2, Plane::Rtp)) && taken(g.port(2, Plane::Rtcp)));
        assert!(!taken(g.port(1, Plane::Rtp)) && !taken(g.port(3, Plane::Rtp)));
        dp.free(g);
        assert_eq!(dp.bound_sockets(), 0);
        assert!(!taken(g.port(0, Plane::Rtp)));
    }

    #[test]
    fn a_held_port_is_reported_and_bound_on_retry() {
        let g = GroupId::try_from(531).unwrap();
        let squatter = UdpSocket::bind(("127.0.0.1", g.port(0, Plane::Rtcp))).unwrap();
        let mut dp = plane();
        let failures = dp.bind(g, Layout::AudioOnly);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].port, g.port(0, Plane::Rtcp));
        assert!(
            failures[0].error.contains("in use"),
            "{}",
            failures[0].error
        );
        assert_eq!(dp.bound_sockets(), 1);
        drop(squatter);
        assert_eq!(dp.bind(g, Layout::AudioOnly), vec![]);
        assert_eq!(dp.bound_sockets(), 2);
    }
}
