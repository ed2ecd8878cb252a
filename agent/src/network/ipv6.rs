//! IPv6 on the pod interface (dual-stack pods): addresses and routes through the kernel's
//! IPv6 ioctls (`SIOCSIFADDR` with an `in6_ifreq`, `SIOCADDRT` with an `in6_rtmsg`, as
//! net-tools uses them), and the addresses read back from /proc/net/if_inet6. Like the IPv4
//! side, this needs no netlink. Duplicate address detection is turned off on the interface
//! first: the address is the one CNI gave the pod's veth on the host (checked there already),
//! and a tentative address would refuse servers binding to it for the first seconds.

use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::Context as _;

/// `struct in6_rtmsg` of `<linux/ipv6_route.h>` (the libc crate does not define it).
#[repr(C)]
struct In6Rtmsg {
    dst: libc::in6_addr,
    src: libc::in6_addr,
    gateway: libc::in6_addr,
    kind: u32,
    dst_len: u16,
    src_len: u16,
    metric: u32,
    info: libc::c_ulong,
    flags: u32,
    ifindex: libc::c_int,
}

/// The metric of routes the host asks for (the kernel's own for user routes).
const USER_ROUTE_METRIC: u32 = 1024;

/// An IPv6 datagram socket to issue the ioctls on.
pub(super) struct Ipv6Socket(OwnedFd);

fn in6_of(address: Ipv6Addr) -> libc::in6_addr {
    libc::in6_addr {
        s6_addr: address.octets(),
    }
}

/// The kernel's index of interface `name`.
fn index_of(name: &str) -> anyhow::Result<libc::c_int> {
    let c_name = std::ffi::CString::new(name).context("interface name")?;
    // SAFETY: `c_name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("no interface {name}"));
    }
    libc::c_int::try_from(index).context("interface index out of range")
}

impl Ipv6Socket {
    pub(super) fn new() -> anyhow::Result<Self> {
        // SAFETY: plain socket creation; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error())
                .context("creating an IPv6 socket for ioctls (is IPv6 disabled?)");
        }
        // SAFETY: socket() returned a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Adds `address/prefix_len` to `name`, without duplicate address detection.
    pub(super) fn add_address(
        &self,
        name: &str,
        address: Ipv6Addr,
        prefix_len: u32,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(prefix_len <= 128, "prefix /{prefix_len} is longer than 128");
        let dad = format!("/proc/sys/net/ipv6/conf/{name}/accept_dad");
        std::fs::write(&dad, "0").with_context(|| format!("writing {dad}"))?;
        let mut request = libc::in6_ifreq {
            ifr6_addr: in6_of(address),
            ifr6_prefixlen: prefix_len,
            ifr6_ifindex: index_of(name)?,
        };
        // SAFETY: `request` is a valid in6_ifreq; SIOCSIFADDR on an AF_INET6 socket reads
        // exactly that structure.
        let result = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SIOCSIFADDR,
                &mut request as *mut libc::in6_ifreq,
            )
        };
        super::added_or_present(result)
            .with_context(|| format!("setting {address}/{prefix_len} on {name}"))
    }

    /// Adds a route to `destination/prefix_len`, through `gateway` if given, on `device`.
    pub(super) fn add_route(
        &self,
        destination: Ipv6Addr,
        prefix_len: u32,
        gateway: Option<Ipv6Addr>,
        device: Option<&str>,
    ) -> anyhow::Result<()> {
        let mut flags = libc::RTF_UP as u32;
        if gateway.is_some() {
            flags |= libc::RTF_GATEWAY as u32;
        }
        let mut message = In6Rtmsg {
            dst: in6_of(destination),
            src: in6_of(Ipv6Addr::UNSPECIFIED),
            gateway: in6_of(gateway.unwrap_or(Ipv6Addr::UNSPECIFIED)),
            kind: 0,
            dst_len: u16::try_from(prefix_len).context("prefix length")?,
            src_len: 0,
            metric: USER_ROUTE_METRIC,
            info: 0,
            flags,
            ifindex: device.map(index_of).transpose()?.unwrap_or(0),
        };
        // SAFETY: `message` is a valid in6_rtmsg (layout of <linux/ipv6_route.h>);
        // SIOCADDRT on an AF_INET6 socket only reads it.
        let result = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SIOCADDRT,
                &mut message as *mut In6Rtmsg,
            )
        };
        super::added_or_present(result).with_context(|| {
            format!("adding the IPv6 route to {destination}/{prefix_len} via {gateway:?}")
        })
    }
}

/// The global IPv6 addresses of interface `name` in /proc/net/if_inet6's text: lines of
/// `<32 hex digits> <index> <prefix> <scope> <flags> <name>`, scope 00 being global.
pub(super) fn global_addresses(if_inet6: &str, name: &str) -> Vec<(Ipv6Addr, u32)> {
    if_inet6
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [hex, _, prefix, scope, _, interface] = fields.as_slice() else {
                return None;
            };
            if *interface != name || *scope != "00" || hex.len() != 32 {
                return None;
            }
            let address = u128::from_str_radix(hex, 16).ok()?;
            let prefix_len = u32::from_str_radix(prefix, 16).ok()?;
            Some((Ipv6Addr::from(address), prefix_len))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rtmsg_has_the_kernels_layout() {
        // <linux/ipv6_route.h> on x86_64: three in6_addr, then 4+2+2+4, padding to the
        // unsigned long, then 4+4.
        assert_eq!(std::mem::size_of::<In6Rtmsg>(), 80);
        assert_eq!(std::mem::offset_of!(In6Rtmsg, info), 64);
        assert_eq!(std::mem::offset_of!(In6Rtmsg, ifindex), 76);
    }

    #[test]
    fn only_global_addresses_of_the_interface_are_read() {
        let text = "\
fd0000000000000000000000000000a2 02 40 00 80     eth0
fe80000000000000985ee8fffe3e8b33 02 40 20 80     eth0
00000000000000000000000000000001 01 80 10 80       lo
fd0000000000000000000000000000b7 03 70 00 80     eth1
";
        assert_eq!(
            global_addresses(text, "eth0"),
            vec![("fd00::a2".parse().expect("address"), 64)]
        );
        assert_eq!(
            global_addresses(text, "eth1"),
            vec![("fd00::b7".parse().expect("address"), 112)]
        );
        assert!(global_addresses(text, "lo").is_empty());
    }
}
