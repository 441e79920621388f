//! The sink's receive steering (docs/traffic-tools.md, "How the tools stay
//! lighter than what they measure"): the I/O around `steer.bpf.c`, an
//! sk_lookup program that delivers the datagrams of thousands of media ports
//! to one socket. The sink then reads them 32 at a time with one `recvmmsg`,
//! learning each one's port from `IP_ORIGDSTADDR`, instead of one system call
//! and one epoll event per port and datagram, which cost more than the
//! datagrams themselves at thousands of ports.
//!
//! The ports stay bound to their own sockets (so that a port in use is
//! refused as before); for an unconnected socket the kernel asks the program
//! first. The program is attached to the process's network namespace for as
//! long as the [`Steering`] lives (the kernel detaches it when the process
//! ends, however it ends). It needs `CAP_BPF` and `CAP_NET_ADMIN`; without
//! them the sink reads every port itself.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// The compiled program, when this build has one.
#[cfg(ebpf_program)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/steer.bpf.o"
)));
#[cfg(not(ebpf_program))]
const OBJECT: Option<&[u8]> = None;

const PROGRAM: &str = "rtp_relay_sink_steer";
/// The steered socket's receive buffer: every media port's datagrams queue
/// here, so it holds what thousands of per-port buffers held (≈ 90 ms of
/// 2048 webcasts).
const RECV_BUFFER: libc::c_int = 64 << 20;

/// Steering in force: the socket that receives, and the attached program.
pub struct Steering {
    socket: UdpSocket,
    /// Owns the program and its link: dropping it detaches the program.
    _ebpf: aya::Ebpf,
}

impl Steering {
    /// Steers the UDP datagrams for `ports` on `address` to a new socket; why
    /// not, when the build, the kernel or the privileges do not allow it.
    pub fn start(address: Ipv4Addr, ports: &[u16]) -> Result<Steering, String> {
        use aya::maps::{Array, SockMap};
        use aya::programs::SkLookup;
        let object = OBJECT.ok_or_else(|| {
            option_env!("RTP_RELAY_EBPF_MISSING")
                .unwrap_or("this build has no eBPF programs")
                .to_string()
        })?;
        let socket = crate::udp::udp_socket(SocketAddr::from((address, 0)), 1 << 20, 1 << 16)
            .map_err(|e| format!("cannot open the steered socket: {e}"))?;
        crate::udp::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECV_BUFFER)
            .map_err(|e| format!("cannot size the steered socket's buffer: {e}"))?;
        crate::udp::set_int_option(&socket, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)
            .map_err(|e| format!("cannot ask for datagram destinations: {e}"))?;

        let mut ebpf = aya::EbpfLoader::new()
            .load(object)
            .map_err(|e| format!("the kernel refused the steering object: {e}"))?;
        let mut port_map: Array<_, u8> = Array::try_from(
            ebpf.take_map("ports")
                .ok_or("the steering object has no ports map")?,
        )
        .map_err(|e| format!("ports map: {e}"))?;
        for &port in ports {
            port_map
                .set(u32::from(port), 1, 0)
                .map_err(|e| format!("ports map: {e}"))?;
        }
        let mut address_map: Array<_, u32> = Array::try_from(
            ebpf.take_map("address")
                .ok_or("the steering object has no address map")?,
        )
        .map_err(|e| format!("address map: {e}"))?;
        address_map
            .set(0, u32::from(address).to_be(), 0)
            .map_err(|e| format!("address map: {e}"))?;
        let mut socket_map = SockMap::try_from(
            ebpf.take_map("socket")
                .ok_or("the steering object has no socket map")?,
        )
        .map_err(|e| format!("socket map: {e}"))?;
        socket_map
            .set(0, &socket, 0)
            .map_err(|e| format!("socket map: {e}"))?;

        let program: &mut SkLookup = ebpf
            .program_mut(PROGRAM)
            .ok_or("the steering object has no program")?
            .try_into()
            .map_err(|e| format!("{PROGRAM} is not an sk_lookup program: {e}"))?;
        program
            .load()
            .map_err(|e| format!("the kernel refused the steering program: {e}"))?;
        let netns = std::fs::File::open("/proc/self/ns/net")
            .map_err(|e| format!("cannot open this network namespace: {e}"))?;
        program
            .attach(netns)
            .map_err(|e| format!("cannot attach the steering program: {e}"))?;
        Ok(Steering {
            socket,
            _ebpf: ebpf,
        })
    }

    /// The socket every steered datagram arrives on.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}
