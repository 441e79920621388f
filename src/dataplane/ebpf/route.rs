//! What the fast path asks of the host: which interfaces carry the bind
//! address, how the relay's own socket would route a destination, the
//! kernel's version and the process's capabilities, bpffs, and the clocks the
//! program compares against.

use super::table::Route;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

/// TCX (the multi-program TC attachment the links are pinned as) came with 6.6.
const TCX_KERNEL: (u32, u32) = (6, 6);
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The interfaces to attach to: `fast_path_interfaces`, or those carrying
/// `bind_address` (`lo` for loopback, every IPv4 interface for 0.0.0.0).
pub fn interfaces(configured: &[String], bind_address: IpAddr) -> Result<Vec<String>, String> {
    if !configured.is_empty() {
        for name in configured {
            ifindex(name).map_err(|e| format!("data.fast_path_interfaces: {e}"))?;
        }
        return Ok(configured.to_vec());
    }
    let bind = match bind_address {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => {
            return Err("the fast path forwards IPv4 only and bind_address is IPv6".into());
        }
    };
    if bind.is_loopback() {
        return Ok(vec!["lo".into()]);
    }
    let mut names: Vec<String> = addresses()?
        .into_iter()
        .filter(|(_, a)| bind.is_unspecified() || *a == bind)
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(format!("no interface carries bind_address {bind}"));
    }
    Ok(names)
}

/// The host's IPv4 addresses (every interface's), for the program's `locals`.
pub fn local_ipv4() -> Result<Vec<Ipv4Addr>, String> {
    Ok(addresses()?.into_iter().map(|(_, a)| a).collect())
}

/// A netlink socket told of every IPv4 address change (`RTMGRP_IPV4_IFADDR`),
/// whose reads give up after `timeout`; `None` when it cannot be had (the
/// caller then polls).
pub fn address_changes(timeout: std::time::Duration) -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{
        AddressFamily, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, setsockopt, socket,
        sockopt::ReceiveTimeout,
    };
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .ok()?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &NetlinkAddr::new(0, RTMGRP_IPV4_IFADDR),
    )
    .ok()?;
    setsockopt(
        &fd,
        ReceiveTimeout,
        &nix::sys::time::TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _),
    )
    .ok()?;
    Some(fd)
}

/// Waits on [`address_changes`]' socket until an address changes or its
/// timeout passes (without one, sleeps `timeout`); true when one changed.
pub fn wait_for_address_change(
    changes: Option<&std::os::fd::OwnedFd>,
    timeout: std::time::Duration,
) -> bool {
    let Some(fd) = changes else {
        std::thread::sleep(timeout);
        return false;
    };
    let mut buf = [0u8; 4096];
    let got = nix::sys::socket::recv(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    );
    // Drained, so that a burst of changes is one refresh.
    while got.is_ok()
        && nix::sys::socket::recv(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        )
        .is_ok()
    {}
    // An overrun (ENOBUFS) lost changes: refresh as for one.
    got.is_ok() || got == Err(nix::errno::Errno::ENOBUFS)
}

/// Every interface's IPv4 addresses.
fn addresses() -> Result<Vec<(String, Ipv4Addr)>, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("cannot list interfaces: {e}"))?;
    Ok(addrs
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip))
        })
        .collect())
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> Result<u32, String> {
    nix::net::if_::if_nametoindex(name).map_err(|e| format!("no interface {name:?} ({e})"))
}

/// How the relay's socket on `bind` reaches `destination`: from which
/// address, out of which interface (none when the destination is local).
pub fn route(destination: SocketAddr, bind: IpAddr) -> Result<Route, String> {
    let SocketAddr::V4(dest) = destination else {
        return Err("IPv6 destinations are forwarded in userspace".into());
    };
    // The kernel's own choice of source address, as for any unbound socket.
    let probe = UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.connect(dest).map(|()| s))
        .and_then(|s| s.local_addr())
        .map_err(|e| format!("no route to {dest}: {e}"))?;
    let IpAddr::V4(chosen) = probe.ip() else {
        return Err(format!("no IPv4 route to {dest}"));
    };
    let source = match bind {
        IpAddr::V4(b) if !b.is_unspecified() => b,
        _ => chosen,
    };
    let addrs = addresses()?;
    let local = dest.ip().is_loopback() || addrs.iter().any(|(_, a)| a == dest.ip());
    if local {
        return Ok(Route {
            source,
            egress_ifindex: None,
            local_ok: lo_setting("accept_local")
                && (!dest.ip().is_loopback() || lo_setting("route_localnet")),
        });
    }
    let (name, _) = addrs
        .iter()
        .find(|(_, a)| *a == chosen)
        .ok_or_else(|| format!("no interface holds {chosen}, the source toward {dest}"))?;
    Ok(Route {
        source,
        egress_ifindex: Some(ifindex(name)?),
        local_ok: false,
    })
}

/// Is `net.ipv4.conf.lo.<name>` (or `…conf.all.<name>`) on?
fn lo_setting(name: &str) -> bool {
    ["lo", "all"].iter().any(|dev| {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/{name}"))
            .is_ok_and(|v| v.trim() == "1")
    })
}

/// Why this kernel cannot run the fast path, if it cannot.
pub fn kernel_too_old() -> Option<String> {
    let uname = nix::sys::utsname::uname().ok()?;
    let release = uname.release().to_string_lossy().into_owned();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let version = (parts.next()?, parts.next()?);
    (version < TCX_KERNEL).then(|| {
        format!(
            "kernel {release} has no TCX attachment (needs {}.{} or later)",
            TCX_KERNEL.0, TCX_KERNEL.1
        )
    })
}

/// The capability the process lacks for loading and attaching, if any.
pub fn missing_capability() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    missing_from(u64::from_str_radix(hex, 16).ok()?)
}

/// The first capability the fast path needs that the effective set `caps`
/// lacks. CAP_PERFMON too: without it the verifier refuses the program's
/// arithmetic on packet pointers ("prohibited for !root", a Spectre v1
/// hardening). CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON.
fn missing_from(caps: u64) -> Option<String> {
    let has = |cap: u32| caps & (1 << cap) != 0;
    let name = if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        "CAP_BPF"
    } else if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        "CAP_PERFMON"
    } else if !has(CAP_NET_ADMIN) {
        "CAP_NET_ADMIN"
    } else {
        return None;
    };
    Some(format!(
        "missing capability {name} (run as root, or grant CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)"
    ))
}

/// Where the relay pins (under [`super::PIN_ROOT`]).
const BPFFS: &str = "/sys/fs/bpf";
/// The same, as PID 1 (the host's init) sees it.
const INIT_BPFFS: &str = "/proc/1/root/sys/fs/bpf";
/// The inode of the kernel's initial mount namespace (`PROC_MNT_INIT_INO`,
/// fixed since Linux 6.15; dynamic inodes are all above it).
const INITIAL_MOUNT_NAMESPACE: u64 = 0xEFFF_FFF8;

/// Mounts bpffs at /sys/fs/bpf unless it is there.
pub fn mount_bpffs() -> Result<(), String> {
    let target = BPFFS;
    if matches!(bpffs_at(target), Ok(Some(_))) {
        return Ok(());
    }
    std::fs::create_dir_all(target).map_err(|e| format!("cannot create {target}: {e}"))?;
    nix::mount::mount(
        Some("bpf"),
        target,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| format!("bpffs is not mounted at {target} and mounting it failed: {e}"))
}

/// The device of the bpffs at `path` (each bpffs mount is an instance of its
/// own; a bind mount shares it); `Ok(None)`: something else is there; `Err`:
/// `path` cannot be read (PID 1's root, without the right to trace it).
fn bpffs_at(path: &str) -> Result<Option<u64>, ()> {
    use std::os::unix::fs::MetadataExt;
    let fs = nix::sys::statfs::statfs(path).map_err(|_| ())?;
    if fs.filesystem_type() != nix::sys::statfs::BPF_FS_MAGIC {
        return Ok(None);
    }
    std::fs::metadata(path)
        .map(|m| Some(m.dev()))
        .map_err(|_| ())
}

/// Why pins under /sys/fs/bpf would go away with the process, if they would:
/// the bpffs there is (or, mounted by the relay, would be) private to the
/// relay's mount namespace — as under `ip netns exec`, or in a container
/// without the host's bpffs — so when the relay dies, its links and maps go
/// with the namespace (docs/forwarding.md). Judged by PID 1's mount
/// namespace and bpffs where they can be read; where they cannot, a bpffs the
/// relay would have to mount itself is taken as private (a host's init mounts
/// one), and one already mounted as shared.
pub fn private_pins() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let namespace = |pid: &str| {
        std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .map(|m| m.ino())
    };
    let ours = namespace("self");
    if ours.is_some() && (ours == namespace("1") || ours == Some(INITIAL_MOUNT_NAMESPACE)) {
        return None;
    }
    let why = match (bpffs_at(BPFFS), bpffs_at(INIT_BPFFS)) {
        // The host's bpffs, bind-mounted into this namespace.
        (Ok(Some(here)), Ok(Some(init))) if here == init => return None,
        (Ok(Some(_)), Ok(_)) => format!(
            "the bpffs at {BPFFS} is not the host's (PID 1's mount namespace has another, or none)"
        ),
        (_, Ok(_)) => format!(
            "{BPFFS} is not a bpffs in this mount namespace, which is not PID 1's: the relay would mount one of its own"
        ),
        (Ok(Some(_)), Err(())) => return None,
        (_, Err(())) => format!(
            "{BPFFS} is not a bpffs in this mount namespace: the relay would mount one, private to its namespace if that is not the host's (as under `ip netns exec`)"
        ),
    };
    Some(format!(
        "{why}, so the fast path's pins would not outlive the relay: after a crash the kernel stops forwarding and the restarted relay has nothing to adopt; mount bpffs at {BPFFS} on the host and share it with the relay (a container: bind-mount it; a network namespace: start the relay with `nsenter --net=/run/netns/NAME` rather than `ip netns exec`)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_path_needs_bpf_perfmon_and_net_admin_or_sys_admin_for_the_first_two() {
        let set = |caps: &[u32]| caps.iter().fold(0u64, |s, &c| s | 1 << c);
        let missing = |caps: &[u32]| {
            missing_from(set(caps)).map(|m| m.split_whitespace().nth(2).unwrap().to_string())
        };
        assert_eq!(missing(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]), None);
        assert_eq!(missing(&[CAP_SYS_ADMIN, CAP_NET_ADMIN]), None);
        assert_eq!(
            missing(&[CAP_BPF, CAP_NET_ADMIN]).as_deref(),
            Some("CAP_PERFMON")
        );
        assert_eq!(
            missing(&[CAP_PERFMON, CAP_NET_ADMIN]).as_deref(),
            Some("CAP_BPF")
        );
        assert_eq!(
            missing(&[CAP_BPF, CAP_PERFMON]).as_deref(),
            Some("CAP_NET_ADMIN")
        );
        assert_eq!(missing(&[]).as_deref(), Some("CAP_BPF"));
    }
}
