//! The service address (docs/cluster.md): the IPv4 address the appliances send
//! to, held by the active node. [`ServiceAddress::take`] adds it to the
//! interface and announces it with gratuitous ARP, so that the neighbours'
//! and switches' caches point to this node at once instead of after their
//! entries time out; [`ServiceAddress::release`] removes it.
//!
//! Netlink through `rtnetlink` (rust-netlink's maintained crate, typed
//! messages; `neli` is sync but leaves the rtnetlink messages to build by
//! hand): its requests are async, so each call runs them on a current-thread
//! tokio runtime on the calling thread — and so in the caller's network
//! namespace. The ARP frame is built here (no small crate does it) and sent on
//! an `AF_PACKET` socket.
//!
//! Every call works on the calling thread's network namespace; the
//! functions block (netlink round trips, the announcements' spacing) and
//! are meant for a blocking thread.

use futures_util::TryStreamExt;
use rtnetlink::Handle;
use rtnetlink::packet_route::address::AddressMessage;
use rtnetlink::packet_route::link::LinkAttribute;
use std::ffi::CString;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// How many gratuitous ARPs [`ServiceAddress::take`] sends. The first one
/// moves the caches; the others cover a lost frame (a busy queue, a switch
/// port still learning). keepalived sends 5 per burst and RFC 5227 §3 two,
/// 2 s apart; three, [`ANNOUNCE_INTERVAL`] apart, survive two losses and let
/// `take` return within half a second, which a failover can afford.
pub const ANNOUNCEMENTS: u32 = 3;

/// The time between two announcements: long enough that a short burst of
/// loss does not take them all, short enough to finish while the appliances'
/// packets are still being lost to the old holder.
pub const ANNOUNCE_INTERVAL: Duration = Duration::from_millis(250);

/// Linux's limit on interface names (IFNAMSIZ less the NUL).
const MAX_INTERFACE_NAME: usize = 15;

/// An ARP packet for IPv4 over Ethernet (RFC 826): 8 bytes of header, two
/// hardware and two protocol addresses.
const ARP_LEN: usize = 28;

/// An IPv4 address with its prefix length, on an interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAddress {
    address: Ipv4Addr,
    prefix: u8,
    interface: String,
}

impl ServiceAddress {
    /// Parses "198.18.0.10/24" and an interface name; the error names what is
    /// wrong and how to fix it. The address must be a unicast host address
    /// (not the network or broadcast address of its prefix); the interface's
    /// existence is checked only by the calls that use it.
    pub fn new(cidr: &str, interface: &str) -> Result<ServiceAddress, String> {
        let (address, prefix) = parse_cidr(cidr)?;
        check_interface_name(interface)?;
        Ok(ServiceAddress {
            address,
            prefix,
            interface: interface.to_string(),
        })
    }

    /// The address.
    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    /// Its prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The interface it goes on.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// Adds the address to the interface (already there: fine) and announces
    /// it ([`ServiceAddress::announce`]). Errors name the interface and the
    /// OS error (no such interface; EPERM without CAP_NET_ADMIN, or
    /// CAP_NET_RAW for the ARP). When only the announcement fails the
    /// address stays added.
    pub fn take(&self) -> Result<(), String> {
        let (index, mac) = self.add()?;
        self.send_announcements(index, mac)
    }

    /// Adds the address to the interface (already there: fine), announcing
    /// nothing: for a node that binds its ports first and announces
    /// ([`ServiceAddress::announce`]) once it can receive. The interface's
    /// index and MAC.
    pub fn add(&self) -> Result<(u32, [u8; 6]), String> {
        let index = self.index()?;
        let (address, prefix) = (self.address, self.prefix);
        let mac = netlink(|handle| async move {
            let added = handle
                .address()
                .add(index, address.into(), prefix)
                .execute()
                .await;
            match added {
                Err(e) if errno(&e) != Some(libc::EEXIST) => {
                    return Err(format!("adding {}: {}", self, os_error(&e)));
                }
                _ => {}
            }
            link_mac(&handle, index).await
        })
        .and_then(|r| r)
        .map_err(|e| self.error(e))?;
        Ok((index, mac))
    }

    /// Sends the gratuitous ARPs [`ServiceAddress::take`] sends, without
    /// adding the address: [`ANNOUNCEMENTS`] ARP requests,
    /// [`ANNOUNCE_INTERVAL`] apart, broadcast, each announcing the address at
    /// the interface's MAC (RFC 5227 §3). Linux updates an existing
    /// neighbour entry from it; it creates a new one only where `arp_accept`
    /// is set.
    pub fn announce(&self) -> Result<(), String> {
        let index = self.index()?;
        let mac = netlink(|handle| async move { link_mac(&handle, index).await })
            .and_then(|r| r)
            .map_err(|e| self.error(e))?;
        self.send_announcements(index, mac)
    }

    /// Removes the address (not there: fine).
    pub fn release(&self) -> Result<(), String> {
        let index = self.index()?;
        let (address, prefix) = (self.address, self.prefix);
        netlink(|handle| async move {
            for message in own_addresses(&handle, index, address, prefix).await? {
                match handle.address().del(message).execute().await {
                    // Gone meanwhile: as good as removed.
                    Err(e) if errno(&e) != Some(libc::EADDRNOTAVAIL) => {
                        return Err(format!("removing {address}/{prefix}: {}", os_error(&e)));
                    }
                    _ => {}
                }
            }
            Ok(())
        })
        .and_then(|r| r)
        .map_err(|e| self.error(e))
    }

    /// Whether the interface carries the address (with this prefix length) now.
    pub fn held(&self) -> Result<bool, String> {
        let index = self.index()?;
        let (address, prefix) = (self.address, self.prefix);
        netlink(|handle| async move {
            Ok(!own_addresses(&handle, index, address, prefix)
                .await?
                .is_empty())
        })
        .and_then(|r| r)
        .map_err(|e| self.error(e))
    }

    /// The interface's index, or why it has none.
    fn index(&self) -> Result<u32, String> {
        // new() rejected names with a NUL.
        let name = CString::new(self.interface.as_str()).expect("checked interface name");
        // SAFETY: a valid NUL-terminated string; the call only reads it.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            let e = io::Error::last_os_error();
            return Err(self.error(format!(
                "{e}; service_interface must name an interface of this host (ip link)"
            )));
        }
        Ok(index)
    }

    fn send_announcements(&self, index: u32, mac: [u8; 6]) -> Result<(), String> {
        let frame = garp_frame(mac, self.address);
        let socket = packet_socket().map_err(|e| {
            let lacking = match e.raw_os_error() {
                Some(libc::EPERM) => " (needs CAP_NET_RAW)",
                _ => "",
            };
            self.error(format!("gratuitous ARP: {e}{lacking}"))
        })?;
        for n in 0..ANNOUNCEMENTS {
            if n > 0 {
                std::thread::sleep(ANNOUNCE_INTERVAL);
            }
            send_broadcast(&socket, index, &frame)
                .map_err(|e| self.error(format!("sending gratuitous ARP: {e}")))?;
        }
        Ok(())
    }

    /// `what` prefixed with the interface it concerns.
    fn error(&self, what: String) -> String {
        format!("service_interface {:?}: {what}", self.interface)
    }
}

impl std::fmt::Display for ServiceAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// "a.b.c.d/len" as an address and prefix length, or what is wrong.
fn parse_cidr(cidr: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = |why: &str| format!("service_address {cidr:?}: {why}, e.g. 198.18.0.10/24");
    let (address, prefix) = cidr
        .split_once('/')
        .ok_or_else(|| bad("expected IPv4 address/prefix"))?;
    let address: Ipv4Addr = address
        .parse()
        .map_err(|_| bad("expected IPv4 address/prefix"))?;
    // u8's parser takes a sign and leading zeros; a prefix length is plain digits.
    let prefix = Some(prefix)
        .filter(|p| p.len() <= 2 && p.bytes().all(|b| b.is_ascii_digit()) && !p.starts_with('0'))
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|p| (1..=32).contains(p))
        .ok_or_else(|| bad("the prefix length must be 1 to 32"))?;
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.octets()[0] >= 240
    {
        return Err(bad("expected a unicast address"));
    }
    // /31 and /32 have no network or broadcast address (RFC 3021).
    if prefix <= 30 {
        let host = u32::from(address) & (u32::MAX >> prefix);
        if host == 0 {
            return Err(bad(&format!(
                "{address} is the network address of its /{prefix}, not a host's"
            )));
        }
        if host == u32::MAX >> prefix {
            return Err(bad(&format!(
                "{address} is the broadcast address of its /{prefix}, not a host's"
            )));
        }
    }
    Ok((address, prefix))
}

/// The rules of Linux's `dev_valid_name`, said before the kernel refuses them.
fn check_interface_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| format!("service_interface {name:?}: {why}, e.g. eth0 (ip link)");
    if name.is_empty() {
        return Err(bad("empty: name the interface the service address goes on"));
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err(bad(
            "longer than 15 bytes, Linux's limit for interface names",
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(bad("not an interface name (no '/', ':' or spaces)"));
    }
    Ok(())
}

/// The gratuitous ARP announcing `addr` at `mac` (RFC 5227 §3, RFC 826
/// layout): an ARP request whose sender and target protocol addresses are
/// both `addr`, the target hardware address zero. The Ethernet header
/// (broadcast destination, ethertype 0x0806) is the packet socket's.
fn garp_frame(mac: [u8; 6], addr: Ipv4Addr) -> [u8; ARP_LEN] {
    let mut f = [0u8; ARP_LEN];
    f[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    f[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    f[4] = 6; // hardware address length
    f[5] = 4; // protocol address length
    f[6..8].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    f[8..14].copy_from_slice(&mac); // sender hardware address
    f[14..18].copy_from_slice(&addr.octets()); // sender protocol address
    // 18..24: target hardware address, zero (RFC 5227: ignored, SHOULD be zero)
    f[24..28].copy_from_slice(&addr.octets()); // target protocol address
    f
}

/// A packet socket that sends whole ARP packets and receives nothing
/// (protocol 0 subscribes to no frames).
fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: a plain socket call; the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends `arp` to the Ethernet broadcast address out of interface `index`.
fn send_broadcast(socket: &OwnedFd, index: u32, arp: &[u8]) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain data; all zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    to.sll_ifindex =
        i32::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: arp and to are valid for the lengths given for the whole call.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            arp.as_ptr().cast(),
            arp.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match sent {
        n if n < 0 => Err(io::Error::last_os_error()),
        n if n as usize != arp.len() => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {n} of {} bytes", arp.len()),
        )),
        _ => Ok(()),
    }
}

/// Runs `f` with a netlink connection opened on this thread (so in its
/// network namespace), on a current-thread runtime of its own.
fn netlink<T, F, Fut>(f: F) -> Result<T, String>
where
    F: FnOnce(Handle) -> Fut,
    Fut: Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("netlink: cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
        let driver = tokio::spawn(connection);
        let out = f(handle).await;
        driver.abort();
        Ok(out)
    })
}

/// The interface's MAC address, or why it has none.
async fn link_mac(handle: &Handle, index: u32) -> Result<[u8; 6], String> {
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("reading the MAC address: {}", os_error(&e)))?
        .ok_or("reading the MAC address: the interface is gone")?;
    // /sys/class/net shows the namespace sysfs was mounted in, not
    // necessarily this thread's: the link's own attribute is read instead.
    let hardware = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => Some(bytes.as_slice()),
        _ => None,
    });
    hardware
        .and_then(|b| <[u8; 6]>::try_from(b).ok())
        .ok_or_else(|| {
            "no Ethernet address: gratuitous ARP needs an Ethernet interface".to_string()
        })
}

/// The interface's addresses equal to `address/prefix` (normally none or one).
async fn own_addresses(
    handle: &Handle,
    index: u32,
    address: Ipv4Addr,
    prefix: u8,
) -> Result<Vec<AddressMessage>, String> {
    handle
        .address()
        .get()
        .set_link_index_filter(index)
        .set_address_filter(address.into())
        .set_prefix_length_filter(prefix)
        .execute()
        .try_collect()
        .await
        .map_err(|e| format!("reading the addresses: {}", os_error(&e)))
}

/// The errno of a kernel refusal.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error(),
        _ => None,
    }
}

/// The OS error as `io::Error` words it, with the capability an EPERM lacks.
fn os_error(e: &rtnetlink::Error) -> String {
    match e {
        rtnetlink::Error::NetlinkError(m) if errno(e) == Some(libc::EPERM) => {
            format!("{} (needs CAP_NET_ADMIN)", m.to_io())
        }
        rtnetlink::Error::NetlinkError(m) => m.to_io().to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn garp_frame_is_an_rfc_5227_announcement() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let f = garp_frame(mac, Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(f.len(), 28);
        assert_eq!(f[0..2], [0x00, 0x01], "hardware type Ethernet");
        assert_eq!(f[2..4], [0x08, 0x00], "protocol type IPv4");
        assert_eq!(f[4], 6, "hardware address length");
        assert_eq!(f[5], 4, "protocol address length");
        assert_eq!(f[6..8], [0x00, 0x01], "operation request");
        assert_eq!(f[8..14], mac, "sender hardware address");
        assert_eq!(f[14..18], [198, 18, 0, 10], "sender protocol address");
        assert_eq!(f[18..24], [0; 6], "target hardware address zero");
        assert_eq!(f[24..28], [198, 18, 0, 10], "target protocol address");
    }

    proptest! {
        #[test]
        fn garp_frame_carries_any_mac_and_address(mac: [u8; 6], addr: u32) {
            let addr = Ipv4Addr::from(addr);
            let f = garp_frame(mac, addr);
            prop_assert_eq!(&f[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
            prop_assert_eq!(&f[8..14], &mac);
            prop_assert_eq!(&f[14..18], &addr.octets());
            prop_assert_eq!(&f[18..24], &[0; 6]);
            prop_assert_eq!(&f[24..28], &addr.octets());
        }

        /// Whatever the text, new() answers without panicking, and what it
        /// accepts prints back as it was given (one spelling per address).
        #[test]
        fn any_cidr_text_is_parsed_or_refused(
            octets: [u8; 4],
            prefix in "[0-9+]{0,3}",
            noise in "[0-9./+a-z]{0,20}",
            structured: bool,
        ) {
            let [a, b, c, d] = octets;
            let cidr = if structured { format!("{a}.{b}.{c}.{d}/{prefix}") } else { noise };
            if let Ok(a) = ServiceAddress::new(&cidr, "eth0") {
                prop_assert_eq!(a.to_string(), cidr);
            }
        }
    }

    #[test]
    fn parses_address_prefix_and_interface() {
        let a = ServiceAddress::new("198.18.0.10/24", "eth0").unwrap();
        assert_eq!(a.address(), Ipv4Addr::new(198, 18, 0, 10));
        assert_eq!(a.prefix(), 24);
        assert_eq!(a.interface(), "eth0");
        assert_eq!(a.to_string(), "198.18.0.10/24");
        // Host routes and point-to-point prefixes have no network/broadcast address.
        assert!(ServiceAddress::new("198.18.0.0/31", "eth0").is_ok());
        assert!(ServiceAddress::new("198.18.0.255/32", "eth0").is_ok());
    }

    #[test]
    fn bad_cidr_names_the_text_and_an_example() {
        for (cidr, why) in [
            ("x", "expected IPv4 address/prefix"),
            ("198.18.0.10", "expected IPv4 address/prefix"),
            ("198.18.0/24", "expected IPv4 address/prefix"),
            ("198.18.0.10/", "prefix length must be 1 to 32"),
            ("198.18.0.10/33", "prefix length must be 1 to 32"),
            ("198.18.0.10/0", "prefix length must be 1 to 32"),
            ("198.18.0.10/+8", "prefix length must be 1 to 32"),
            ("198.18.0.10/08", "prefix length must be 1 to 32"),
            ("198.18.0.10/24/1", "prefix length must be 1 to 32"),
            ("0.0.0.0/8", "unicast"),
            ("127.0.0.1/8", "unicast"),
            ("224.0.0.5/24", "unicast"),
            ("255.255.255.255/32", "unicast"),
            ("198.18.0.0/24", "network address of its /24"),
            ("198.18.0.255/24", "broadcast address of its /24"),
        ] {
            let e = ServiceAddress::new(cidr, "eth0").unwrap_err();
            assert!(e.starts_with(&format!("service_address {cidr:?}: ")), "{e}");
            assert!(e.contains(why), "{cidr}: {e}");
            assert!(e.ends_with("e.g. 198.18.0.10/24"), "{e}");
        }
    }

    #[test]
    fn bad_interface_names_are_refused_by_name() {
        for (name, why) in [
            ("", "empty"),
            ("a-very-long-name0", "longer than 15 bytes"),
            ("eth0:1", "not an interface name"),
            ("eth 0", "not an interface name"),
            ("a/b", "not an interface name"),
            ("..", "not an interface name"),
            ("a\0b", "not an interface name"),
        ] {
            let e = ServiceAddress::new("198.18.0.10/24", name).unwrap_err();
            assert!(
                e.starts_with(&format!("service_interface {name:?}: ")),
                "{e}"
            );
            assert!(e.contains(why), "{name:?}: {e}");
        }
        assert!(ServiceAddress::new("198.18.0.10/24", "enp0s31f6.100").is_ok());
    }
}
