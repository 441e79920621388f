//! What an upgrade in place hands to the next process (docs/configuration.md,
//! "Signals"): which inherited file descriptor is which bound socket, and
//! every port's counters. Pure: the encoding, and the sorting of what was
//! handed over into what the next process adopts and what it refuses (the
//! sockets' actual addresses come in through a function, the I/O side's
//! `getsockname`).

use crate::dataplane::forwarder::PortState;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// The environment variable naming the handover file for the next process.
pub const ENV: &str = "RTP_RELAY_HANDOVER";

/// The format's version: a handover of another version is not read (the
/// next process binds afresh).
pub const VERSION: u32 = 1;

/// Everything handed over.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Handover {
    /// [`VERSION`].
    pub version: u32,
    /// The process that wrote it; the next one has the same (execve keeps
    /// the PID), so a stale file never makes it take descriptors it does
    /// not own.
    pub pid: u32,
    /// `CLOCK_BOOTTIME` (nanoseconds) when the workers stopped reading: the
    /// next process logs how long the sockets went unread.
    pub paused_at_ns: u64,
    /// The control plane's listener.
    pub listener: Option<Inherited>,
    /// The bound group ports.
    pub ports: Vec<InheritedPort>,
}

/// An inherited socket: its descriptor and the address it is bound to.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inherited {
    /// The file descriptor, open across the exec.
    pub fd: i32,
    /// Its local address.
    pub address: SocketAddr,
}

/// A bound group port and what it measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InheritedPort {
    /// The socket.
    pub socket: Inherited,
    /// Its forwarder's counters and streams.
    pub state: PortState,
}

/// Why a handover is not read at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Unusable {
    /// Not a handover this version can read.
    Unreadable(String),
    /// Written by a version with another format.
    Version(u32),
    /// Written by another process (not this one before its exec).
    OtherProcess(u32),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Unreadable(e) => write!(f, "unreadable ({e})"),
            Unusable::Version(v) => write!(f, "format version {v}, this relay reads {VERSION}"),
            Unusable::OtherProcess(pid) => {
                write!(
                    f,
                    "written by process {pid}, not by this one before its exec"
                )
            }
        }
    }
}

impl Handover {
    /// The bytes written for the next process.
    pub fn encode(&self) -> Vec<u8> {
        // Plain data (numbers, addresses, options): serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a handover written for process `pid` (this one).
    pub fn decode(bytes: &[u8], pid: u32) -> Result<Handover, Unusable> {
        #[derive(Deserialize)]
        struct Header {
            version: u32,
        }
        let header: Header =
            serde_json::from_slice(bytes).map_err(|e| Unusable::Unreadable(e.to_string()))?;
        if header.version != VERSION {
            return Err(Unusable::Version(header.version));
        }
        let h: Handover =
            serde_json::from_slice(bytes).map_err(|e| Unusable::Unreadable(e.to_string()))?;
        if h.pid != pid {
            return Err(Unusable::OtherProcess(h.pid));
        }
        Ok(h)
    }
}

/// A socket's kind, as the I/O side checks it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP listener (the control plane).
    Tcp,
    /// A UDP socket (a group port).
    Udp,
}

/// What the next process does with each inherited descriptor.
#[derive(Debug, Default)]
pub struct Sorted {
    /// The listener's descriptor, to serve on instead of binding.
    pub listener: Option<i32>,
    /// Group ports to forward on instead of binding: descriptor, port, state.
    pub ports: Vec<(i32, u16, PortState)>,
    /// Entries not adopted, and why (their descriptors: [`Sorted::to_close`]).
    pub refused: Vec<(i32, String)>,
}

impl Sorted {
    /// The refused descriptors to close: each once, and none that another
    /// entry adopted.
    pub fn to_close(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = self
            .refused
            .iter()
            .map(|r| r.0)
            .filter(|fd| self.listener != Some(*fd) && !self.ports.iter().any(|p| p.0 == *fd))
            .collect();
        fds.sort_unstable();
        fds.dedup();
        fds
    }
}

/// Sorts a handover against the running configuration: the listener is
/// adopted when it is bound where `listen` says (any port when `listen`'s is
/// 0), a group port when it is bound on `bind_address`; each only when
/// `actual(fd, kind)` (the descriptor's local address, `None` when it is not
/// an open socket of that kind) is the address handed over, and each
/// descriptor and port once.
pub fn sort(
    h: Handover,
    listen: SocketAddr,
    bind_address: IpAddr,
    actual: impl Fn(i32, Kind) -> Option<SocketAddr>,
) -> Sorted {
    let mut out = Sorted::default();
    let mut fds = std::collections::HashSet::new();
    let mut check = |s: &Inherited, kind: Kind| -> Result<(), String> {
        if !fds.insert(s.fd) {
            return Err(format!("descriptor {} handed over twice", s.fd));
        }
        match actual(s.fd, kind) {
            Some(a) if a == s.address => Ok(()),
            Some(a) => Err(format!("bound to {a}, not {}", s.address)),
            None => Err(format!("descriptor {} is not a {kind:?} socket", s.fd)),
        }
    };
    if let Some(l) = h.listener {
        let wanted = l.address.ip() == listen.ip()
            && (listen.port() == 0 || listen.port() == l.address.port());
        match check(&l, Kind::Tcp) {
            Ok(()) if wanted => out.listener = Some(l.fd),
            Ok(()) => out.refused.push((
                l.fd,
                format!("listener on {}, control.listen is now {listen}", l.address),
            )),
            Err(e) => out.refused.push((l.fd, e)),
        }
    }
    let mut ports = std::collections::HashSet::new();
    for p in h.ports {
        let s = p.socket;
        match check(&s, Kind::Udp) {
            Ok(()) if s.address.ip() != bind_address => out.refused.push((
                s.fd,
                format!(
                    "bound to {}, data.bind_address is now {bind_address}",
                    s.address
                ),
            )),
            Ok(()) if !ports.insert(s.address.port()) => out
                .refused
                .push((s.fd, format!("port {} handed over twice", s.address.port()))),
            Ok(()) => out.ports.push((s.fd, s.address.port(), p.state)),
            Err(e) => out.refused.push((s.fd, e)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::rtcp::RtcpStream;
    use crate::stats::rtp::RtpStream;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn state(packets: u64) -> PortState {
        PortState {
            latched: Some("192.0.2.10:5004".parse().unwrap()),
            to_wowza: (packets, packets * 100),
            to_appliance: (1, 60),
            dropped: [1, 2, 3, 4, 5],
            last_packet_age_ns: Some(7),
            lost_exported: 0,
            media: RtpStream::new(90_000),
            control: RtcpStream::default(),
        }
    }

    fn sock(fd: i32, address: &str) -> Inherited {
        Inherited {
            fd,
            address: address.parse().unwrap(),
        }
    }

    fn handover() -> Handover {
        Handover {
            version: VERSION,
            pid: 42,
            paused_at_ns: 5,
            listener: Some(sock(3, "127.0.0.1:9870")),
            ports: vec![
                InheritedPort {
                    socket: sock(7, "0.0.0.0:65528"),
                    state: state(10),
                },
                InheritedPort {
                    socket: sock(8, "0.0.0.0:65529"),
                    state: state(20),
                },
            ],
        }
    }

    /// The descriptors as the handover says they are.
    fn as_handed(h: &Handover) -> HashMap<i32, (SocketAddr, Kind)> {
        let mut m: HashMap<_, _> = h
            .ports
            .iter()
            .map(|p| (p.socket.fd, (p.socket.address, Kind::Udp)))
            .collect();
        if let Some(l) = h.listener {
            m.insert(l.fd, (l.address, Kind::Tcp));
        }
        m
    }

    fn sort_with(h: Handover, fds: &HashMap<i32, (SocketAddr, Kind)>) -> Sorted {
        sort(
            h,
            "127.0.0.1:9870".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            |fd, kind| fds.get(&fd).filter(|(_, k)| *k == kind).map(|(a, _)| *a),
        )
    }

    #[test]
    fn round_trips_and_adopts_what_matches() {
        let h = Handover::decode(&handover().encode(), 42).unwrap();
        let fds = as_handed(&h);
        let s = sort_with(h, &fds);
        assert_eq!(s.listener, Some(3));
        let ports: Vec<_> = s
            .ports
            .iter()
            .map(|(fd, port, st)| (*fd, *port, st.to_wowza.0))
            .collect();
        assert_eq!(ports, [(7, 65528, 10), (8, 65529, 20)]);
        assert!(s.refused.is_empty(), "{:?}", s.refused);
    }

    #[test]
    fn another_process_version_or_garbage_is_not_read() {
        assert_eq!(
            Handover::decode(&handover().encode(), 43).unwrap_err(),
            Unusable::OtherProcess(42)
        );
        let mut h = handover();
        h.version = 2;
        assert_eq!(
            Handover::decode(&h.encode(), 42).unwrap_err(),
            Unusable::Version(2)
        );
        for bad in [&b""[..], b"{", b"{\"version\":1}", b"\xff\x00", b"[1,2]"] {
            assert!(matches!(
                Handover::decode(bad, 42),
                Err(Unusable::Unreadable(_))
            ));
        }
    }

    #[test]
    fn refuses_what_no_longer_matches() {
        let h = handover();
        let mut fds = as_handed(&h);
        // 7 is bound elsewhere, 8 closed; the listener is fine.
        fds.insert(7, ("0.0.0.0:1".parse().unwrap(), Kind::Udp));
        fds.remove(&8);
        let s = sort_with(h, &fds);
        assert_eq!(s.listener, Some(3));
        assert!(s.ports.is_empty());
        let refused: Vec<i32> = s.refused.iter().map(|r| r.0).collect();
        assert_eq!(refused, [7, 8]);
        assert_eq!(s.to_close(), [7, 8]);
        assert!(
            s.refused[0].1.contains("bound to 0.0.0.0:1"),
            "{:?}",
            s.refused
        );
    }

    #[test]
    fn a_changed_configuration_refuses_the_sockets_it_no_longer_names() {
        let h = handover();
        let fds = as_handed(&h);
        let s = sort(
            h,
            "127.0.0.1:9999".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            |fd, kind| fds.get(&fd).filter(|(_, k)| *k == kind).map(|(a, _)| *a),
        );
        assert_eq!((s.listener, s.ports.len(), s.refused.len()), (None, 0, 3));
        // Port 0 in control.listen: whichever port the listener has.
        let h = handover();
        let s = sort(
            h,
            "127.0.0.1:0".parse().unwrap(),
            "0.0.0.0".parse().unwrap(),
            |fd, kind| fds.get(&fd).filter(|(_, k)| *k == kind).map(|(a, _)| *a),
        );
        assert_eq!(s.listener, Some(3));
    }

    #[test]
    fn each_descriptor_and_port_is_adopted_once() {
        let mut h = handover();
        h.ports.push(InheritedPort {
            socket: sock(7, "0.0.0.0:65528"),
            state: state(1),
        });
        h.ports.push(InheritedPort {
            socket: sock(9, "0.0.0.0:65528"),
            state: state(1),
        });
        // A listener's descriptor handed over as a port too: a TCP socket is not UDP.
        h.ports.push(InheritedPort {
            socket: sock(3, "127.0.0.1:9870"),
            state: state(1),
        });
        let mut fds = as_handed(&h);
        fds.insert(9, ("0.0.0.0:65528".parse().unwrap(), Kind::Udp));
        fds.insert(3, ("127.0.0.1:9870".parse().unwrap(), Kind::Tcp));
        let s = sort_with(h, &fds);
        assert_eq!(s.ports.len(), 2);
        let refused: Vec<i32> = s.refused.iter().map(|r| r.0).collect();
        assert_eq!(refused, [7, 9, 3]);
        assert_eq!(s.to_close(), [9], "what was adopted stays open");
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_a_handover_or_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Handover::decode(&bytes, 1);
        }

        #[test]
        fn adopted_descriptors_and_ports_are_distinct(
            entries in proptest::collection::vec((0i32..8, 65520u16..65528, any::<bool>()), 0..16)
        ) {
            let h = Handover {
                version: VERSION,
                pid: 1,
                paused_at_ns: 0,
                listener: None,
                ports: entries
                    .iter()
                    .map(|&(fd, port, _)| InheritedPort {
                        socket: Inherited { fd, address: SocketAddr::from(([0, 0, 0, 0], port)) },
                        state: state(1),
                    })
                    .collect(),
            };
            // Every descriptor is a UDP socket bound where its first entry says.
            let mut fds = HashMap::new();
            for &(fd, port, open) in &entries {
                if open {
                    fds.entry(fd).or_insert((SocketAddr::from(([0, 0, 0, 0], port)), Kind::Udp));
                }
            }
            let n = h.ports.len();
            let s = sort_with(h, &fds);
            prop_assert_eq!(s.ports.len() + s.refused.len(), n, "every entry is adopted or refused");
            let fd_set: std::collections::HashSet<_> = s.ports.iter().map(|p| p.0).collect();
            let port_set: std::collections::HashSet<_> = s.ports.iter().map(|p| p.1).collect();
            prop_assert_eq!(fd_set.len(), s.ports.len());
            prop_assert_eq!(port_set.len(), s.ports.len());
            for (fd, port, _) in &s.ports {
                prop_assert_eq!(fds.get(fd).map(|f| f.0.port()), Some(*port));
            }
            for fd in s.to_close() {
                prop_assert!(!fd_set.contains(&fd), "an adopted descriptor is never closed");
            }
        }
    }
}
