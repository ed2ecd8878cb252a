//! Guest networking: the loopback interface at boot, and the pod interface the host asks for
//! (UpdateInterface: found by MAC address, given the pod's IPv4 address, MTU and brought up;
//! UpdateRoutes: routes through the pod's gateway). The classic interface ioctls are enough
//! for one IPv4 address per interface, which is what a CNI bridge pod has; no netlink needed.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context as _};
use cloak_protocol::agent::{Interface, IpAddress, Route};

/// A socket to issue interface and routing ioctls on.
struct IoctlSocket(OwnedFd);

fn ifreq_for(name: &str) -> anyhow::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        bail!("interface name {name:?} is empty or too long");
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value before the name is set.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    Ok(request)
}

fn sockaddr_of(address: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes; the kernel reads a sockaddr whose
    // family says AF_INET as a sockaddr_in.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

fn address_of(sockaddr: &libc::sockaddr) -> Ipv4Addr {
    // SAFETY: same size; the caller asked the kernel for an AF_INET address.
    let inet = unsafe { std::mem::transmute::<libc::sockaddr, libc::sockaddr_in>(*sockaddr) };
    Ipv4Addr::from(u32::from_be(inet.sin_addr.s_addr))
}

fn netmask_of(prefix_len: u32) -> Ipv4Addr {
    match prefix_len {
        0 => Ipv4Addr::UNSPECIFIED,
        len => Ipv4Addr::from(u32::MAX << (32 - len.min(32))),
    }
}

impl IoctlSocket {
    fn new() -> anyhow::Result<Self> {
        // SAFETY: plain socket creation; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("creating a socket for ioctls");
        }
        // SAFETY: socket() returned a new descriptor that nothing else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// One ioctl on an ifreq; `what` names it in errors.
    fn ifreq_ioctl(
        &self,
        request: libc::c_ulong,
        ifreq: &mut libc::ifreq,
        what: &str,
    ) -> anyhow::Result<()> {
        // SAFETY: `ifreq` is a valid ifreq naming an interface, the request is one of the
        // SIOC[GS]IF* requests, which read or fill exactly that structure.
        if unsafe { libc::ioctl(self.0.as_raw_fd(), request, ifreq as *mut libc::ifreq) } < 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| what.to_owned());
        }
        Ok(())
    }

    fn set_up(&self, name: &str) -> anyhow::Result<()> {
        let mut ifreq = ifreq_for(name)?;
        self.ifreq_ioctl(
            libc::SIOCGIFFLAGS,
            &mut ifreq,
            &format!("reading the flags of {name}"),
        )?;
        // SAFETY: the union member written by SIOCGIFFLAGS is ifru_flags.
        unsafe {
            ifreq.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        self.ifreq_ioctl(
            libc::SIOCSIFFLAGS,
            &mut ifreq,
            &format!("setting {name} up"),
        )
    }

    fn set_mtu(&self, name: &str, mtu: u64) -> anyhow::Result<()> {
        let mut ifreq = ifreq_for(name)?;
        ifreq.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).context("MTU out of range")?;
        self.ifreq_ioctl(
            libc::SIOCSIFMTU,
            &mut ifreq,
            &format!("setting the MTU of {name} to {mtu}"),
        )
    }

    fn set_ipv4(&self, name: &str, address: Ipv4Addr, prefix_len: u32) -> anyhow::Result<()> {
        let mut ifreq = ifreq_for(name)?;
        ifreq.ifr_ifru.ifru_addr = sockaddr_of(address);
        self.ifreq_ioctl(
            libc::SIOCSIFADDR,
            &mut ifreq,
            &format!("setting {address} on {name}"),
        )?;
        let mut ifreq = ifreq_for(name)?;
        ifreq.ifr_ifru.ifru_netmask = sockaddr_of(netmask_of(prefix_len));
        self.ifreq_ioctl(
            libc::SIOCSIFNETMASK,
            &mut ifreq,
            &format!("setting the /{prefix_len} netmask on {name}"),
        )
    }

    fn ipv4_of(&self, name: &str) -> Option<(Ipv4Addr, u32)> {
        let mut ifreq = ifreq_for(name).ok()?;
        self.ifreq_ioctl(libc::SIOCGIFADDR, &mut ifreq, "").ok()?;
        // SAFETY: SIOCGIFADDR filled ifru_addr.
        let address = address_of(unsafe { &ifreq.ifr_ifru.ifru_addr });
        let mut ifreq = ifreq_for(name).ok()?;
        self.ifreq_ioctl(libc::SIOCGIFNETMASK, &mut ifreq, "")
            .ok()?;
        // SAFETY: SIOCGIFNETMASK filled ifru_netmask.
        let mask = address_of(unsafe { &ifreq.ifr_ifru.ifru_netmask });
        Some((address, u32::from(mask).count_ones()))
    }

    fn add_route(&self, route: &ParsedRoute) -> anyhow::Result<()> {
        let device = std::ffi::CString::new(route.device.clone().unwrap_or_default())
            .context("device name")?;
        // SAFETY: rtentry is plain old data; zero is valid for every field.
        let mut entry: libc::rtentry = unsafe { std::mem::zeroed() };
        entry.rt_dst = sockaddr_of(route.destination);
        entry.rt_genmask = sockaddr_of(netmask_of(route.prefix_len));
        entry.rt_flags = libc::RTF_UP;
        if let Some(gateway) = route.gateway {
            entry.rt_gateway = sockaddr_of(gateway);
            entry.rt_flags |= libc::RTF_GATEWAY;
        }
        if route.device.is_some() {
            entry.rt_dev = device.as_ptr().cast_mut();
        }
        // SAFETY: `entry` is a valid rtentry; rt_dev (if set) points to `device`, which
        // outlives the call; SIOCADDRT only reads them.
        let result = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SIOCADDRT,
                &mut entry as *mut libc::rtentry,
            )
        };
        if result < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(err).with_context(|| format!("adding the route {route:?}"));
            }
        }
        Ok(())
    }
}

/// Brings `lo` up: containers share the VM's network namespace and talk over localhost.
pub(crate) fn bring_up_loopback() -> anyhow::Result<()> {
    IoctlSocket::new()?.set_up("lo")
}

/// The interface with hardware address `mac` below `sys_class_net` (normally
/// /sys/class/net).
pub(crate) fn interface_with_mac(sys_class_net: &Path, mac: &str) -> Option<String> {
    std::fs::read_dir(sys_class_net)
        .ok()?
        .flatten()
        .find(|entry| {
            std::fs::read_to_string(entry.path().join("address"))
                .map(|address| address.trim().eq_ignore_ascii_case(mac.trim()))
                .unwrap_or(false)
        })
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
}

/// UpdateInterface: configures the guest interface with `wanted.hw_addr` (or, without one,
/// the one named `wanted.name`) and returns it as configured.
pub(crate) fn update_interface(wanted: &Interface) -> anyhow::Result<Interface> {
    let sys = Path::new("/sys/class/net");
    let name = if wanted.hw_addr.is_empty() {
        wanted.name.clone()
    } else {
        interface_with_mac(sys, &wanted.hw_addr)
            .with_context(|| format!("no guest interface has the MAC address {}", wanted.hw_addr))?
    };
    let ipv4: Vec<(Ipv4Addr, u32)> = wanted
        .addresses
        .iter()
        .filter_map(|a| {
            a.address
                .parse::<Ipv4Addr>()
                .ok()
                .map(|ip| (ip, a.prefix_len))
        })
        .collect();
    if ipv4.len() > 1 {
        bail!(
            "{name}: one IPv4 address per interface is supported, {} given",
            ipv4.len()
        );
    }
    let skipped = wanted.addresses.len() - ipv4.len();
    if skipped > 0 {
        tracing::warn!(interface = %name, skipped, "IPv6 addresses are not configured yet");
    }
    let socket = IoctlSocket::new()?;
    if wanted.mtu > 0 {
        socket.set_mtu(&name, wanted.mtu)?;
    }
    if let Some((address, prefix_len)) = ipv4.first() {
        socket.set_ipv4(&name, *address, *prefix_len)?;
    }
    socket.set_up(&name)?;
    tracing::info!(interface = %name, addresses = ?ipv4, mtu = wanted.mtu, "interface configured");
    Ok(describe(sys, &socket, &name))
}

fn describe(sys: &Path, socket: &IoctlSocket, name: &str) -> Interface {
    let read = |file: &str| {
        std::fs::read_to_string(sys.join(name).join(file))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    Interface {
        name: name.to_owned(),
        hw_addr: read("address"),
        mtu: read("mtu").parse().unwrap_or(0),
        addresses: socket
            .ipv4_of(name)
            .map(|(address, prefix_len)| IpAddress {
                address: address.to_string(),
                prefix_len,
                ..Default::default()
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

/// ListInterfaces: every guest interface with its IPv4 address.
pub(crate) fn list_interfaces() -> anyhow::Result<Vec<Interface>> {
    let sys = Path::new("/sys/class/net");
    let socket = IoctlSocket::new()?;
    let mut names: Vec<String> = std::fs::read_dir(sys)
        .context("reading /sys/class/net")?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names
        .iter()
        .map(|name| describe(sys, &socket, name))
        .collect())
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedRoute {
    destination: Ipv4Addr,
    prefix_len: u32,
    gateway: Option<Ipv4Addr>,
    device: Option<String>,
}

fn parse_route(route: &Route) -> anyhow::Result<ParsedRoute> {
    let (destination, prefix_len) = match route.destination.as_str() {
        "default" | "" => (Ipv4Addr::UNSPECIFIED, 0),
        cidr => {
            let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, "32"));
            let prefix_len: u32 = prefix
                .parse()
                .ok()
                .filter(|p| *p <= 32)
                .with_context(|| format!("bad prefix in {cidr:?}"))?;
            let address: Ipv4Addr = address
                .parse()
                .with_context(|| format!("{cidr:?} is not an IPv4 destination"))?;
            (address, prefix_len)
        }
    };
    let gateway = match route.gateway.as_str() {
        "" => None,
        text => Some(
            text.parse()
                .with_context(|| format!("gateway {text:?} is not IPv4"))?,
        ),
    };
    if gateway.is_none() && route.device.is_empty() {
        bail!(
            "route to {:?} has neither a gateway nor a device",
            route.destination
        );
    }
    Ok(ParsedRoute {
        destination,
        prefix_len,
        gateway,
        device: (!route.device.is_empty()).then(|| route.device.clone()),
    })
}

/// UpdateRoutes: adds each route (IPv4); returns them as given.
pub(crate) fn update_routes(routes: &[Route]) -> anyhow::Result<Vec<Route>> {
    let parsed = routes
        .iter()
        .map(parse_route)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let socket = IoctlSocket::new()?;
    for route in &parsed {
        socket.add_route(route)?;
        tracing::info!(route = ?route, "route added");
    }
    Ok(routes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_follow_the_prefix() {
        assert_eq!(netmask_of(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask_of(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask_of(32), Ipv4Addr::BROADCAST);
        assert_eq!(
            address_of(&sockaddr_of(Ipv4Addr::new(10, 213, 0, 2))),
            Ipv4Addr::new(10, 213, 0, 2)
        );
    }

    #[test]
    fn routes_parse_and_bad_ones_say_why() {
        let route = |destination: &str, gateway: &str, device: &str| Route {
            destination: destination.into(),
            gateway: gateway.into(),
            device: device.into(),
            ..Default::default()
        };
        assert_eq!(
            parse_route(&route("default", "10.213.0.1", "")).expect("parses"),
            ParsedRoute {
                destination: Ipv4Addr::UNSPECIFIED,
                prefix_len: 0,
                gateway: Some(Ipv4Addr::new(10, 213, 0, 1)),
                device: None,
            }
        );
        assert_eq!(
            parse_route(&route("192.168.4.0/22", "", "eth0"))
                .expect("parses")
                .prefix_len,
            22
        );
        assert!(parse_route(&route("default", "", "")).is_err());
        assert!(parse_route(&route("10.0.0.0/40", "10.0.0.1", "")).is_err());
        assert!(parse_route(&route("fd00::/8", "fd00::1", "")).is_err());
    }

    #[test]
    fn interfaces_are_found_by_mac_in_any_case() {
        let sys = tempfile::tempdir().expect("temp dir");
        for (name, mac) in [("lo", "00:00:00:00:00:00"), ("eth0", "9a:55:e8:3e:8b:33")] {
            std::fs::create_dir_all(sys.path().join(name)).expect("mkdir");
            std::fs::write(sys.path().join(name).join("address"), format!("{mac}\n"))
                .expect("write");
        }
        assert_eq!(
            interface_with_mac(sys.path(), "9A:55:E8:3E:8B:33").as_deref(),
            Some("eth0")
        );
        assert_eq!(interface_with_mac(sys.path(), "02:00:00:00:00:01"), None);
    }
}
