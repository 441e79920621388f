//! The service address on real interfaces: two network namespaces of the
//! test's own — the holder, which takes the address, and its peer, a
//! neighbour whose ARP cache must follow — joined by a veth pair, addresses
//! in 198.18.0.0/24. Both namespaces are deleted at the end, also when a test
//! fails. Needs root and iproute2; `RTP_RELAY_SKIP_NETNS=1` skips.

mod common;
use common::netns::{ip, skip_netns};
use common::{in_netns, root_command, wait_until};
use rtp_relay::cluster::address::ServiceAddress;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SERVICE: &str = "198.18.0.10/24";
const HOLDER: &str = "198.18.0.1/24";
const PEER: &str = "198.18.0.2/24";
/// The MAC the peer first believes the service address is at.
const OLD_MAC: &str = "02:00:00:00:00:01";

/// The holder (`h`, interface `vh`) and the peer (`p`, interface `vp`).
struct Pair {
    holder: String,
    peer: String,
}

impl Pair {
    fn new() -> Pair {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "rtpaddr{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let pair = Pair {
            holder: format!("{tag}h"),
            peer: format!("{tag}p"),
        };
        for n in [&pair.holder, &pair.peer] {
            ip(&["netns", "add", n]);
        }
        // Made inside the namespaces: no interface ever exists in ours.
        ip(&[
            "-n",
            &pair.holder,
            "link",
            "add",
            "vh",
            "type",
            "veth",
            "peer",
            "name",
            "vp",
            "netns",
            &pair.peer,
        ]);
        for (ns, dev, addr) in [(&pair.holder, "vh", HOLDER), (&pair.peer, "vp", PEER)] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    fn ns(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/run/netns/{name}"))
    }

    fn holder_ns(&self) -> PathBuf {
        self.ns(&self.holder)
    }

    /// `ip -n ns args…`'s output.
    fn ip_in(&self, ns: &str, args: &[&str]) -> String {
        root_command(
            "ip",
            &[&["-n", ns][..], args].concat(),
            "RTP_RELAY_SKIP_NETNS",
        )
    }

    /// The holder's IPv4 addresses on vh, one `a.b.c.d/len` each.
    fn holder_addresses(&self) -> Vec<String> {
        self.ip_in(&self.holder, &["-4", "-o", "addr", "show", "dev", "vh"])
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet")?;
                words.next().map(str::to_string)
            })
            .collect()
    }

    /// vh's MAC address.
    fn holder_mac(&self) -> String {
        let link = self.ip_in(&self.holder, &["-o", "link", "show", "dev", "vh"]);
        let mut words = link.split_whitespace();
        words.find(|w| *w == "link/ether");
        words
            .next()
            .unwrap_or_else(|| panic!("no MAC in {link:?}"))
            .to_string()
    }

    /// The peer's neighbour entry for the service address (`ip neigh show`).
    fn peer_entry(&self) -> String {
        self.ip_in(&self.peer, &["neigh", "show", "198.18.0.10", "dev", "vp"])
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Deleting the namespaces deletes the veth pair with them.
        for n in [&self.holder, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn take_adds_the_address_and_release_removes_it_both_idempotent() {
    if skip_netns() {
        return;
    }
    let pair = Pair::new();
    let service = ServiceAddress::new(SERVICE, "vh").unwrap();
    in_netns(Some(&pair.holder_ns()), || {
        assert_eq!(service.held(), Ok(false));
        service.take().unwrap();
        assert_eq!(service.held(), Ok(true));
        assert_eq!(pair.holder_addresses(), [HOLDER, SERVICE]);
        // Already there: fine, and still there once.
        service.take().unwrap();
        assert_eq!(pair.holder_addresses(), [HOLDER, SERVICE]);

        service.release().unwrap();
        assert_eq!(service.held(), Ok(false));
        assert_eq!(pair.holder_addresses(), [HOLDER]);
        service.release().unwrap();
        assert_eq!(pair.holder_addresses(), [HOLDER]);
    });
}

#[test]
fn gratuitous_arp_moves_the_neighbours_entry() {
    if skip_netns() {
        return;
    }
    let pair = Pair::new();
    // The peer believes the service address is at another node. It does not
    // accept unsolicited ARP (arp_accept 0, Linux's default): this is the
    // update of an existing entry, which a failover needs.
    pair.ip_in(
        &pair.peer,
        &[
            "neigh",
            "replace",
            "198.18.0.10",
            "lladdr",
            OLD_MAC,
            "dev",
            "vp",
            "nud",
            "stale",
        ],
    );
    let accept = in_netns(Some(&pair.ns(&pair.peer)), || {
        std::fs::read_to_string("/proc/sys/net/ipv4/conf/vp/arp_accept").unwrap()
    });
    assert_eq!(accept.trim(), "0");
    assert!(pair.peer_entry().contains(OLD_MAC), "{}", pair.peer_entry());

    // Adding the address alone tells the neighbours nothing.
    pair.ip_in(&pair.holder, &["addr", "add", SERVICE, "dev", "vh"]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(pair.peer_entry().contains(OLD_MAC), "{}", pair.peer_entry());

    // take() on the address already there still announces it.
    let service = ServiceAddress::new(SERVICE, "vh").unwrap();
    let mac = pair.holder_mac();
    let started = Instant::now();
    in_netns(Some(&pair.holder_ns()), || service.take()).unwrap();
    assert!(
        wait_until(Duration::from_secs(1), || pair.peer_entry().contains(&mac)),
        "the peer still has {:?}, not {mac}",
        pair.peer_entry()
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn unknown_interface_is_named_in_every_error() {
    if skip_netns() {
        return;
    }
    let pair = Pair::new();
    let service = ServiceAddress::new(SERVICE, "nosuch0").unwrap();
    in_netns(Some(&pair.holder_ns()), || {
        for e in [
            service.take().unwrap_err(),
            service.release().unwrap_err(),
            service.held().unwrap_err(),
            service.announce().unwrap_err(),
        ] {
            assert!(e.contains("\"nosuch0\""), "{e}");
            assert!(e.contains("No such device"), "{e}");
        }
    });
    // Nothing was added anywhere.
    assert_eq!(pair.holder_addresses(), [HOLDER]);
}

#[test]
fn bad_cidr_is_refused_with_an_example() {
    let e = ServiceAddress::new("198.18.0.10", "vh").unwrap_err();
    assert_eq!(
        e,
        "service_address \"198.18.0.10\": expected IPv4 address/prefix, e.g. 198.18.0.10/24"
    );
}

#[test]
fn a_down_interface_gets_the_address_and_an_error_for_the_announcement() {
    if skip_netns() {
        return;
    }
    let pair = Pair::new();
    pair.ip_in(&pair.holder, &["link", "set", "vh", "down"]);
    let service = ServiceAddress::new(SERVICE, "vh").unwrap();
    in_netns(Some(&pair.holder_ns()), || {
        let e = service.take().unwrap_err();
        assert!(e.contains("\"vh\""), "{e}");
        assert!(e.contains("gratuitous ARP: Network is down"), "{e}");
        assert_eq!(service.held(), Ok(true));
        service.release().unwrap();
        assert_eq!(service.held(), Ok(false));
    });
}

#[test]
fn a_neighbour_with_arp_accept_learns_the_address_from_the_announcement() {
    if skip_netns() {
        return;
    }
    let pair = Pair::new();
    // With arp_accept = 1 Linux makes an entry from a gratuitous ARP alone:
    // only if the frame is one (a request whose sender and target addresses
    // are the announced address).
    in_netns(Some(&pair.ns(&pair.peer)), || {
        std::fs::write("/proc/sys/net/ipv4/conf/vp/arp_accept", "1").unwrap();
    });
    assert_eq!(pair.peer_entry(), "");
    let service = ServiceAddress::new(SERVICE, "vh").unwrap();
    in_netns(Some(&pair.holder_ns()), || service.take()).unwrap();
    let mac = pair.holder_mac();
    assert!(
        wait_until(Duration::from_secs(1), || pair.peer_entry().contains(&mac)),
        "the peer has {:?}, not {mac}",
        pair.peer_entry()
    );
}

#[test]
fn without_privileges_the_errors_name_the_capability() {
    if skip_netns() {
        return;
    }
    let pair = Pair::new();
    let service = ServiceAddress::new(SERVICE, "vh").unwrap();
    let (take, announce, held) = in_netns(Some(&pair.holder_ns()), || {
        // This thread alone becomes nobody, losing every capability (the
        // raw call: libc's setresuid would change every thread).
        // SAFETY: changes only this thread's credentials; it ends after.
        let r = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
        assert_eq!(r, 0, "setresuid: {}", std::io::Error::last_os_error());
        (service.take(), service.announce(), service.held())
    });
    let take = take.unwrap_err();
    assert!(
        take.contains("adding 198.18.0.10/24: Operation not permitted")
            && take.contains("(needs CAP_NET_ADMIN)"),
        "{take}"
    );
    let announce = announce.unwrap_err();
    assert!(
        announce.contains("gratuitous ARP: Operation not permitted")
            && announce.contains("(needs CAP_NET_RAW)"),
        "{announce}"
    );
    // Reading needs no privilege.
    assert_eq!(held, Ok(false));
    assert_eq!(pair.holder_addresses(), [HOLDER]);
}
