//! A data-plane worker: one thread, one epoll instance, the ports assigned to
//! it. For each readable socket it receives a batch, lets each [`Forwarder`] decide,
//! and sends the forwards back out of the same socket in one batch. Commands
//! from the control plane (add, update, remove a port) arrive over a channel
//! with a waker; nothing on the packet path locks or allocates.
//!
//! On the kernel fast path a port may have no socket of its own
//! (docs/forwarding.md, "Ports without sockets"): what the kernel leaves to
//! userspace is steered to the worker's one steering socket, told apart by its
//! destination port, and the forwards leave from a socket bound to the port
//! for that send only (a slow path: a socket and a bind a send).

use super::ebpf::KernelPort;
use super::fence::Fence;
use super::forwarder::{Forwarder, PortState, Verdict};
use super::rule::PortRule;
use crate::udp::{BATCH, Batch};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;
use tracing::warn;

const WAKE: Token = Token(usize::MAX);
const STEERED: Token = Token(usize::MAX - 1);
/// No port of this worker (in [`Worker::steered_ports`]).
const NO_PORT: u32 = u32::MAX;
/// Batches read from one socket before the others get their turn.
const FAIR_SHARE: usize = 8;

/// What the control plane asks of a worker.
pub enum Command {
    /// Start forwarding on this socket (also on the fast path, if given).
    /// Steered (true): the port's datagrams come through the steering socket,
    /// and its own socket (if any) is read until empty, then closed.
    Add(
        Option<std::net::UdpSocket>,
        Box<Forwarder>,
        Option<KernelPort>,
        bool,
    ),
    /// Read this steering socket (the steered ports' datagrams).
    Steer(std::net::UdpSocket),
    /// Before a handover: every steered port gets a socket of its own again,
    /// read as any port's, so that what arrives once the steering is
    /// detached waits there for the next process; answered once done.
    Unsteer(Sender<()>),
    /// Replace a port's rule; `relatch` forgets its latched appliance.
    Update(PortRule, bool, Option<KernelPort>),
    /// Close these ports; the sender is answered once they are closed.
    Remove(Vec<u16>, Sender<()>),
    /// Stop reading (packets wait in the sockets' buffers) and answer with
    /// every port's socket and state: an upgrade in place hands them over.
    Pause(Sender<Vec<Paused>>),
    /// Read again (the upgrade did not happen).
    Resume,
    /// Close everything and end the thread.
    Stop,
}

/// A port of a paused worker.
pub struct Paused {
    /// The port.
    pub port: u16,
    /// Its socket's descriptor (the worker keeps the socket open).
    pub fd: RawFd,
    /// The socket's local address.
    pub address: io::Result<std::net::SocketAddr>,
    /// What its forwarder measured and latched.
    pub state: PortState,
}

/// The control plane's side of a worker.
pub struct WorkerHandle {
    commands: Sender<Command>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    /// Starts worker `index`; `slot` is the receive buffer size per datagram;
    /// past `fence`'s deadline it forwards nothing. `sockets` says how a
    /// steered port's socket is bound for a send or a handover.
    pub fn spawn(
        index: usize,
        slot: usize,
        fence: Arc<Fence>,
        sockets: PortSockets,
    ) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (commands, rx) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("data-{index}"))
            .spawn(move || Worker::new(poll, rx, slot, fence, sockets).run())?;
        Ok(WorkerHandle {
            commands,
            waker,
            thread: Some(thread),
        })
    }

    /// Sends a command and wakes the worker.
    pub fn send(&self, command: Command) {
        if self.commands.send(command).is_ok() {
            let _ = self.waker.wake();
        }
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// How a port's socket is bound: the data plane's address and buffer sizes.
#[derive(Clone, Copy, Debug)]
pub struct PortSockets {
    /// `bind_address`.
    pub address: IpAddr,
    /// `SO_RCVBUF`.
    pub recv_buffer: usize,
    /// `SO_SNDBUF`.
    pub send_buffer: usize,
}

impl PortSockets {
    /// A socket of its own for `port`, as a bind gives it.
    pub fn open(&self, port: u16) -> io::Result<std::net::UdpSocket> {
        crate::udp::udp_socket(
            SocketAddr::new(self.address, port),
            self.recv_buffer,
            self.send_buffer,
        )
    }

    /// A socket bound to `port` for one send from a steered port:
    /// `SO_REUSEADDR`, so that two such sends need not wait for each other
    /// (a steered port's datagrams never reach it: the steering comes first).
    fn for_sending(&self, port: u16) -> io::Result<std::net::UdpSocket> {
        crate::udp::shared_udp_socket(
            SocketAddr::new(self.address, port),
            self.recv_buffer,
            self.send_buffer,
            crate::udp::Share::Address,
        )
    }
}

/// A worker's steering socket: every datagram of its steered ports that the
/// kernel did not forward.
struct Steering {
    socket: UdpSocket,
    /// Records each datagram's destination.
    batch: Batch,
    /// Left readable after its fair share (edge-triggered: no new event).
    again: bool,
}

/// One port of a worker.
struct Port {
    /// Its own socket; a steered port's only until it is read empty (and
    /// while a handover holds it).
    socket: Option<UdpSocket>,
    forwarder: Forwarder,
    kernel: Option<KernelPort>,
    /// Its datagrams come through the steering socket.
    steered: bool,
}

struct Worker {
    poll: Poll,
    commands: Receiver<Command>,
    ports: Slab<Port>,
    by_port: HashMap<u16, usize>,
    batch: Batch,
    /// Sockets left readable after their fair share (edge-triggered: no new event).
    again: Vec<usize>,
    /// The steering socket, once the data plane gives it one.
    steering: Option<Steering>,
    /// Steered port number → slab key ([`NO_PORT`]: none of this worker's):
    /// an index, not a hash, per steered datagram.
    steered_ports: Vec<u32>,
    /// The forwards of one steered batch: slab key, datagram, destination.
    steered_sends: Vec<(usize, usize, SocketAddr)>,
    sockets: PortSockets,
    /// Paused for an upgrade: nothing is read.
    paused: bool,
    /// Past its deadline, what is read is dropped.
    fence: Arc<Fence>,
}

impl Worker {
    fn new(
        poll: Poll,
        commands: Receiver<Command>,
        slot: usize,
        fence: Arc<Fence>,
        sockets: PortSockets,
    ) -> Self {
        Worker {
            poll,
            commands,
            ports: Slab::with_capacity(1024),
            by_port: HashMap::new(),
            batch: Batch::new(slot),
            again: Vec::with_capacity(1024),
            steering: None,
            steered_ports: Vec::new(),
            steered_sends: Vec::with_capacity(BATCH),
            sockets,
            paused: false,
            fence,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<usize> = Vec::with_capacity(1024);
        loop {
            let steered_again = self.steering.as_ref().is_some_and(|s| s.again);
            let timeout =
                (!self.again.is_empty() || steered_again).then_some(std::time::Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "data-plane worker cannot poll; stopping");
                return;
            }
            ready.clear();
            ready.append(&mut self.again);
            let mut steered = steered_again;
            for event in events.iter() {
                match event.token() {
                    WAKE => {
                        if !self.commands() {
                            return;
                        }
                    }
                    STEERED => steered = true,
                    Token(key) => ready.push(key),
                }
            }
            if self.paused {
                continue;
            }
            if steered {
                self.drain_steered();
            }
            for &key in &ready {
                self.drain(key);
            }
        }
    }

    /// Applies pending commands; false when told to stop.
    fn commands(&mut self) -> bool {
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Add(socket, forwarder, kernel, steered) => {
                    let number = forwarder.rule().port;
                    let entry = self.ports.vacant_entry();
                    let key = entry.key();
                    let mut socket = socket.map(UdpSocket::from_std);
                    if let Some(socket) = socket.as_mut()
                        && let Err(e) =
                            self.poll
                                .registry()
                                .register(socket, Token(key), Interest::READABLE)
                    {
                        warn!(port = number, error = %e, "cannot watch a bound socket; it will not forward");
                        continue;
                    }
                    self.by_port.insert(number, key);
                    entry.insert(Port {
                        socket,
                        forwarder: *forwarder,
                        kernel,
                        steered,
                    });
                    if steered {
                        self.set_steered(number, key as u32);
                        // Read what it holds (a handover's), then closed.
                        self.again.push(key);
                    }
                }
                Command::Steer(socket) => {
                    let mut socket = UdpSocket::from_std(socket);
                    match self
                        .poll
                        .registry()
                        .register(&mut socket, STEERED, Interest::READABLE)
                    {
                        Ok(()) => {
                            let slot = self.batch.slot();
                            self.steering = Some(Steering {
                                socket,
                                batch: Batch::with_destinations(slot),
                                again: true,
                            });
                        }
                        Err(e) => {
                            warn!(error = %e, "cannot watch the steering socket; what the kernel leaves to userspace is lost")
                        }
                    }
                }
                Command::Update(rule, relatch, kernel) => {
                    if let Some(&key) = self.by_port.get(&rule.port) {
                        self.ports[key].forwarder.set_rule(rule, relatch);
                        self.ports[key].kernel = kernel;
                    }
                }
                Command::Remove(numbers, done) => {
                    for number in numbers {
                        if let Some(key) = self.by_port.remove(&number) {
                            let port = self.ports.remove(key);
                            if let Some(mut socket) = port.socket {
                                let _ = self.poll.registry().deregister(&mut socket);
                            }
                            if port.steered {
                                self.set_steered(number, NO_PORT);
                            }
                            self.again.retain(|&k| k != key);
                        }
                    }
                    let _ = done.send(());
                }
                Command::Unsteer(done) => {
                    self.unsteer();
                    let _ = done.send(());
                }
                Command::Pause(reply) => {
                    // What the steering delivered before it was detached.
                    self.drain_steered();
                    self.paused = true;
                    self.again.clear();
                    let _ = reply.send(self.pause());
                }
                Command::Resume => {
                    // Edge-triggered: what arrived meanwhile raised no new
                    // event once ignored; every socket is read again (and a
                    // steered port's, bound for the handover, closed).
                    self.paused = false;
                    self.again = self.ports.iter().map(|(key, _)| key).collect();
                    if let Some(s) = self.steering.as_mut() {
                        s.again = true;
                    }
                }
                Command::Stop => return false,
            }
        }
        true
    }

    /// Records which of this worker's ports a steered datagram's port is.
    fn set_steered(&mut self, port: u16, key: u32) {
        if self.steered_ports.is_empty() {
            self.steered_ports = vec![NO_PORT; 1 << 16];
        }
        self.steered_ports[usize::from(port)] = key;
    }

    /// Gives every steered port a socket of its own (bound afresh, watched,
    /// kept): the steering is about to be detached. A port that cannot be
    /// bound (another process took it) stays steered until then.
    fn unsteer(&mut self) {
        for (key, port) in self.ports.iter_mut() {
            if !port.steered {
                continue;
            }
            let number = port.forwarder.rule().port;
            if port.socket.is_none() {
                let socket = self.sockets.open(number).map(UdpSocket::from_std);
                let registered = socket.and_then(|mut s| {
                    self.poll
                        .registry()
                        .register(&mut s, Token(key), Interest::READABLE)
                        .map(|()| s)
                });
                match registered {
                    Ok(s) => port.socket = Some(s),
                    Err(e) => {
                        warn!(port = number, error = %e, "upgrade: a steered port cannot be bound for the handover");
                        continue;
                    }
                }
            }
            port.steered = false;
        }
    }

    /// Every port's socket and state, for a handover. A port without a
    /// socket ([`Worker::unsteer`] could not bind it: another process took
    /// it) is left out, and the next process binds it as a new one.
    fn pause(&mut self) -> Vec<Paused> {
        let now = Instant::now();
        let mut paused = Vec::with_capacity(self.ports.len());
        for (_, port) in self.ports.iter() {
            let Some(socket) = &port.socket else { continue };
            paused.push(Paused {
                port: port.forwarder.rule().port,
                fd: socket.as_raw_fd(),
                address: socket.local_addr(),
                state: port.forwarder.state(now),
            });
        }
        paused
    }

    /// Receives, decides and forwards on one socket until it is empty or has had
    /// its fair share. A steered port's own socket, once empty, is closed.
    fn drain(&mut self, key: usize) {
        let Some(Port {
            socket: Some(socket),
            forwarder: port,
            kernel,
            steered,
        }) = self.ports.get_mut(key)
        else {
            return;
        };
        let fd = socket.as_raw_fd();
        for _ in 0..FAIR_SHARE {
            let (n, now) = match receive(&mut self.batch, fd, &self.fence) {
                Received::Datagrams(n, now) => (n, now),
                Received::Empty => {
                    if *steered && let Some(mut socket) = self.ports[key].socket.take() {
                        let _ = self.poll.registry().deregister(&mut socket);
                    }
                    return;
                }
                Received::Fenced(n) if n < BATCH => return,
                Received::Fenced(_) | Received::Again => continue,
            };
            // Only what the kernel did not forward gets here (a slow path):
            // judge it by the kernel's latch, when the kernel has one.
            if let Some(latched) = kernel.as_ref().and_then(KernelPort::latched) {
                port.adopt_latch(latched);
            }
            for i in 0..n {
                let Some((from, data, len)) = self.batch.datagram(i) else {
                    continue;
                };
                if let Verdict::Forward(to) = port.on_datagram(from, data, len, now) {
                    self.batch.forward(i, to);
                }
            }
            self.batch.send(fd, |to, len, ok| {
                if ok {
                    port.sent(port.direction(to), len);
                } else {
                    port.send_failed();
                }
            });
            if n < BATCH {
                return;
            }
        }
        self.again.push(key);
    }

    /// Receives, decides and forwards what the steering socket holds (the
    /// steered ports' datagrams the kernel did not forward) until it is empty
    /// or has had its fair share. Each datagram goes to its port's forwarder;
    /// the forwards leave port by port, from a socket bound to the port.
    fn drain_steered(&mut self) {
        let Some(Steering {
            socket,
            batch,
            again,
        }) = self.steering.as_mut()
        else {
            return;
        };
        *again = false;
        let fd = socket.as_raw_fd();
        for _ in 0..FAIR_SHARE {
            let (n, now) = match receive(batch, fd, &self.fence) {
                Received::Datagrams(n, now) => (n, now),
                Received::Empty => return,
                Received::Fenced(n) if n < BATCH => return,
                Received::Fenced(_) | Received::Again => continue,
            };
            self.steered_sends.clear();
            for i in 0..n {
                // Not a steered port of this worker (its own port's traffic,
                // or a port freed meanwhile): dropped.
                let Some(key) = batch
                    .destination(i)
                    .map(|to| self.steered_ports[usize::from(to.port())])
                    .filter(|&k| k != NO_PORT)
                else {
                    continue;
                };
                let key = key as usize;
                let Some((from, data, len)) = batch.datagram(i) else {
                    continue;
                };
                let port = &mut self.ports[key];
                if let Some(latched) = port.kernel.as_ref().and_then(KernelPort::latched) {
                    port.forwarder.adopt_latch(latched);
                }
                if let Verdict::Forward(to) = port.forwarder.on_datagram(from, data, len, now) {
                    self.steered_sends.push((key, i, to));
                }
            }
            // By port, each port's in the order they came.
            self.steered_sends
                .sort_unstable_by_key(|&(key, i, _)| (key, i));
            for group in self.steered_sends.chunk_by(|a, b| a.0 == b.0) {
                let port = &mut self.ports[group[0].0];
                let transient;
                let fd = match &port.socket {
                    Some(own) => own.as_raw_fd(),
                    None => match self.sockets.for_sending(port.forwarder.rule().port) {
                        Ok(s) => {
                            transient = s;
                            transient.as_raw_fd()
                        }
                        Err(e) => {
                            warn!(port = port.forwarder.rule().port, error = %e, "cannot bind a steered port to send from it");
                            for _ in group {
                                port.forwarder.send_failed();
                            }
                            continue;
                        }
                    },
                };
                for &(_, i, to) in group {
                    batch.forward(i, to);
                }
                let forwarder = &port.forwarder;
                batch.send(fd, |to, len, ok| {
                    if ok {
                        forwarder.sent(forwarder.direction(to), len);
                    } else {
                        forwarder.send_failed();
                    }
                });
            }
            if n < BATCH {
                return;
            }
        }
        *again = true;
    }
}

/// What one `recvmmsg` brought.
enum Received {
    /// This many datagrams, read at this time.
    Datagrams(usize, Instant),
    /// Nothing waits.
    Empty,
    /// Interrupted, or an ICMP error queued on the socket (reading it cleared
    /// it): read again.
    Again,
    /// This many datagrams, dropped: the fence has passed (the node is no
    /// longer the cluster's active one). Read all the same, so that the
    /// sockets' buffers hold no stale packets when the fence is lifted.
    Fenced(usize),
}

/// Receives a batch on `fd`, and drops it if `fence` has passed.
fn receive(batch: &mut Batch, fd: RawFd, fence: &Fence) -> Received {
    let n = match batch.recv(fd) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Received::Empty,
        Err(_) => return Received::Again,
    };
    let now = Instant::now();
    if fence.passed(now) {
        fence.count(n);
        return Received::Fenced(n);
    }
    Received::Datagrams(n, now)
}
