//! Receive steering: the I/O around `steer.bpf.c`, an sk_lookup program that
//! delivers the UDP datagrams of chosen ports to a few sockets instead of the
//! ports' own. Each datagram's port is read back from `IP_ORIGDSTADDR`
//! ([`super::Batch::with_destinations`]).
//!
//! Two users:
//! - the relay, on the kernel fast path: its ports then need no socket of
//!   their own (docs/forwarding.md, "Kernel fast path"), and what the kernel
//!   leaves to userspace reaches its workers' sockets, one per worker;
//! - the sink (docs/traffic-tools.md): thousands of media ports read 32
//!   datagrams at a time with one `recvmmsg`, instead of one system call and
//!   one epoll event per port and datagram.
//!
//! For an unconnected socket the kernel asks the program first, so a steered
//! port's datagrams reach the steering socket even if the port is bound by
//! another socket. The program is attached to the process's network
//! namespace for as long as the [`Steering`] lives (the kernel detaches it
//! when the process ends, however it ends). It needs `CAP_BPF` and
//! `CAP_NET_ADMIN`.

use aya::maps::{Array, MapData};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

/// The compiled program, when this build has one.
#[cfg(ebpf_program)]
const OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(
    env!("OUT_DIR"),
    "/steer.bpf.o"
)));
#[cfg(not(ebpf_program))]
const OBJECT: Option<&[u8]> = None;

const PROGRAM: &str = "rtp_relay_steer";
/// The program's socket map holds this many (`MAX_SOCKETS` in steer.bpf.c).
pub const MAX_SOCKETS: usize = 1024;

/// Steering in force: the sockets that receive, and the attached program.
pub struct Steering {
    sockets: Vec<UdpSocket>,
    /// By port: 0, or 1 + the index of the socket it is steered to.
    ports: Array<MapData, u16>,
    /// Bit `p % 64` of word `p / 64`: port `p` is steered (the program's
    /// first test, cheap for the ports it does not steer).
    steered: Array<MapData, u64>,
    /// What `steered` holds, so that a change writes one word.
    steered_words: Vec<u64>,
    /// Owns the program and its link: dropping it detaches the program.
    _ebpf: aya::Ebpf,
}

impl Steering {
    /// Opens `sockets` sockets on `address` (at most [`MAX_SOCKETS`]) with a
    /// receive buffer of `recv_buffer` bytes (forced past `rmem_max` when
    /// `force`), and attaches the program; no port is steered yet. With
    /// `address` 0.0.0.0, datagrams to any local address are steered. The
    /// sockets share one port (`SO_REUSEPORT`; the program picks the socket,
    /// not the kernel): `port`, or with 0 one the kernel picks. Why not, when
    /// the build, the kernel or the privileges do not allow it (or `port` is
    /// taken).
    pub fn start(
        address: Ipv4Addr,
        port: u16,
        sockets: usize,
        recv_buffer: usize,
        force: bool,
    ) -> Result<Steering, String> {
        use aya::maps::SockMap;
        use aya::programs::SkLookup;
        let object = OBJECT.ok_or_else(|| {
            option_env!("RTP_RELAY_EBPF_MISSING")
                .unwrap_or("this build has no eBPF programs")
                .to_string()
        })?;
        if sockets == 0 || sockets > MAX_SOCKETS {
            return Err(format!(
                "{sockets} steering sockets asked for; 1 to {MAX_SOCKETS} can be steered to"
            ));
        }
        let first = open((address, port), recv_buffer, force)?;
        let port = first
            .local_addr()
            .map_err(|e| format!("a steering socket has no address: {e}"))?
            .port();
        let sockets: Vec<UdpSocket> = std::iter::once(Ok(first))
            .chain((1..sockets).map(|_| open((address, port), recv_buffer, force)))
            .collect::<Result<_, _>>()?;

        let mut ebpf = aya::EbpfLoader::new()
            .load(object)
            .map_err(|e| format!("the kernel refused the steering object: {e}"))?;
        let ports: Array<_, u16> = Array::try_from(
            ebpf.take_map("ports")
                .ok_or("the steering object has no ports map")?,
        )
        .map_err(|e| format!("ports map: {e}"))?;
        let steered: Array<_, u64> = Array::try_from(
            ebpf.take_map("steered")
                .ok_or("the steering object has no steered map")?,
        )
        .map_err(|e| format!("steered map: {e}"))?;
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
        for (i, socket) in sockets.iter().enumerate() {
            socket_map
                .set(i as u32, socket, 0)
                .map_err(|e| format!("socket map: {e}"))?;
        }

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
            sockets,
            ports,
            steered_words: vec![0; steered.len() as usize],
            steered,
            _ebpf: ebpf,
        })
    }

    /// Steers `port`'s datagrams to socket `socket`.
    pub fn steer(&mut self, port: u16, socket: usize) -> Result<(), String> {
        if socket >= self.sockets.len() {
            return Err(format!("no steering socket {socket}"));
        }
        // The socket first: the program reads it only once the bit is set.
        self.ports
            .set(u32::from(port), socket as u16 + 1, 0)
            .map_err(|e| format!("cannot steer port {port}: {e}"))?;
        self.mark(port, true)
            .map_err(|e| format!("cannot steer port {port}: {e}"))
    }

    /// Gives `port` back to the kernel's ordinary lookup.
    pub fn unsteer(&mut self, port: u16) -> Result<(), String> {
        self.mark(port, false)
            .and_then(|()| self.ports.set(u32::from(port), 0, 0))
            .map_err(|e| format!("cannot stop steering port {port}: {e}"))
    }

    /// Sets or clears `port`'s bit in `steered`. The kernel copies the whole
    /// word, and only this bit differs from what is there: a lookup meanwhile
    /// sees every other port's bit unchanged.
    fn mark(&mut self, port: u16, on: bool) -> Result<(), aya::maps::MapError> {
        let i = usize::from(port / 64);
        let bit = 1u64 << (port % 64);
        let word = if on {
            self.steered_words[i] | bit
        } else {
            self.steered_words[i] & !bit
        };
        self.steered.set(i as u32, word, 0)?;
        self.steered_words[i] = word;
        Ok(())
    }

    /// Whether the steering sockets are bound on `port` (which may be one to
    /// steer).
    pub fn holds(&self, port: u16) -> bool {
        self.sockets[0].local_addr().is_ok_and(|a| a.port() == port)
    }

    /// The socket steered datagrams arrive on, by index.
    pub fn socket(&self, i: usize) -> &UdpSocket {
        &self.sockets[i]
    }

    /// How many sockets receive.
    pub fn sockets(&self) -> usize {
        self.sockets.len()
    }
}

fn open(at: (Ipv4Addr, u16), recv_buffer: usize, force: bool) -> Result<UdpSocket, String> {
    let at = SocketAddr::from(at);
    // The send buffer's size is moot: the workers send from the ports' own
    // sockets, never from these.
    let socket = super::shared_udp_socket(at, recv_buffer, 1 << 16, super::Share::Port)
        .map_err(|e| format!("cannot open a steering socket on {at}: {e}"))?;
    if force {
        let size = libc::c_int::try_from(recv_buffer).unwrap_or(libc::c_int::MAX);
        super::set_int_option(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, size)
            .map_err(|e| format!("cannot size a steering socket's buffer: {e}"))?;
    }
    super::set_int_option(&socket, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)
        .map_err(|e| format!("cannot ask for datagram destinations: {e}"))?;
    Ok(socket)
}
