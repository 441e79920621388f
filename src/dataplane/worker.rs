//! A data-plane worker: one thread, one epoll instance, the sockets assigned to
//! it. For each readable socket it receives a batch, lets each [`Forwarder`] decide,
//! and sends the forwards back out of the same socket in one batch. Commands
//! from the control plane (add, update, remove a port) arrive over a channel
//! with a waker; nothing on the packet path locks or allocates.

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
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;
use tracing::warn;

const WAKE: Token = Token(usize::MAX);
/// Batches read from one socket before the others get their turn.
const FAIR_SHARE: usize = 8;

/// What the control plane asks of a worker.
pub enum Command {
    /// Start forwarding on this socket (also on the fast path, if given).
    Add(std::net::UdpSocket, Box<Forwarder>, Option<KernelPort>),
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
    /// past `fence`'s deadline it forwards nothing.
    pub fn spawn(index: usize, slot: usize, fence: Arc<Fence>) -> io::Result<WorkerHandle> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (commands, rx) = channel();
        let thread = std::thread::Builder::new()
            .name(format!("data-{index}"))
            .spawn(move || Worker::new(poll, rx, slot, fence).run())?;
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

struct Worker {
    poll: Poll,
    commands: Receiver<Command>,
    ports: Slab<(UdpSocket, Forwarder, Option<KernelPort>)>,
    by_port: HashMap<u16, usize>,
    batch: Batch,
    /// Sockets left readable after their fair share (edge-triggered: no new event).
    again: Vec<usize>,
    /// Paused for an upgrade: nothing is read.
    paused: bool,
    /// Past its deadline, what is read is dropped.
    fence: Arc<Fence>,
}

impl Worker {
    fn new(poll: Poll, commands: Receiver<Command>, slot: usize, fence: Arc<Fence>) -> Self {
        Worker {
            poll,
            commands,
            ports: Slab::with_capacity(1024),
            by_port: HashMap::new(),
            batch: Batch::new(slot),
            again: Vec::with_capacity(1024),
            paused: false,
            fence,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut ready: Vec<usize> = Vec::with_capacity(1024);
        loop {
            let timeout = (!self.again.is_empty()).then_some(std::time::Duration::ZERO);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "data-plane worker cannot poll; stopping");
                return;
            }
            ready.clear();
            ready.append(&mut self.again);
            for event in events.iter() {
                match event.token() {
                    WAKE => {
                        if !self.commands() {
                            return;
                        }
                    }
                    Token(key) => ready.push(key),
                }
            }
            if self.paused {
                continue;
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
                Command::Add(socket, port, kernel) => {
                    let number = port.rule().port;
                    let entry = self.ports.vacant_entry();
                    let mut socket = UdpSocket::from_std(socket);
                    if let Err(e) = self.poll.registry().register(
                        &mut socket,
                        Token(entry.key()),
                        Interest::READABLE,
                    ) {
                        warn!(port = number, error = %e, "cannot watch a bound socket; it will not forward");
                        continue;
                    }
                    self.by_port.insert(number, entry.key());
                    entry.insert((socket, *port, kernel));
                }
                Command::Update(rule, relatch, kernel) => {
                    if let Some(&key) = self.by_port.get(&rule.port) {
                        self.ports[key].1.set_rule(rule, relatch);
                        self.ports[key].2 = kernel;
                    }
                }
                Command::Remove(numbers, done) => {
                    for number in numbers {
                        if let Some(key) = self.by_port.remove(&number) {
                            let (mut socket, ..) = self.ports.remove(key);
                            let _ = self.poll.registry().deregister(&mut socket);
                            self.again.retain(|&k| k != key);
                        }
                    }
                    let _ = done.send(());
                }
                Command::Pause(reply) => {
                    self.paused = true;
                    self.again.clear();
                    let now = Instant::now();
                    let ports = self
                        .ports
                        .iter()
                        .map(|(_, (socket, port, _))| Paused {
                            port: port.rule().port,
                            fd: socket.as_raw_fd(),
                            address: socket.local_addr(),
                            state: port.state(now),
                        })
                        .collect();
                    let _ = reply.send(ports);
                }
                Command::Resume => {
                    // Edge-triggered: what arrived meanwhile raised no new
                    // event once ignored; every socket is read again.
                    self.paused = false;
                    self.again = self.ports.iter().map(|(key, _)| key).collect();
                }
                Command::Stop => return false,
            }
        }
        true
    }

    /// Receives, decides and forwards on one socket until it is empty or has had
    /// its fair share.
    fn drain(&mut self, key: usize) {
        let Some((socket, port, kernel)) = self.ports.get_mut(key) else {
            return;
        };
        let fd = socket.as_raw_fd();
        for _ in 0..FAIR_SHARE {
            let n = match self.batch.recv(fd) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // An ICMP error queued on the socket: reading it clears it.
                Err(_) => continue,
            };
            let now = Instant::now();
            // Fenced: read and dropped, neither forwarded nor measured (the
            // node is no longer the cluster's active one). Read all the same,
            // so that the sockets' buffers hold no stale packets when the
            // fence is lifted.
            if self.fence.passed(now) {
                self.fence.count(n);
                if n < BATCH {
                    return;
                }
                continue;
            }
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
}
