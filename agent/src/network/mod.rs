//! Guest networking: the loopback interface at boot, and the pod interface the host asks for
//! (UpdateInterface: found by MAC address, given the pod's addresses — one IPv4 and any IPv6,
//! as a dual-stack CNI pod has them — its MTU, and brought up; UpdateRoutes: routes through the
//! pod's gateways, of either family). Classic ioctls do it (`ipv4`, `ipv6`); no netlink needed.

mod ipv4;
mod ipv6;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::{bail, Context as _};
use cloak_protocol::agent::{Interface, IpAddress, Route};

use ipv4::IoctlSocket;

/// Where the kernel lists every interface's IPv6 addresses.
const IF_INET6: &str = "/proc/net/if_inet6";

/// An adding ioctl's result, where "already there" counts as added: the host may ask for an
/// address or route the interface has (a retried request, a route the kernel made itself).
/// Read right after the call, while errno is still its.
fn added_or_present(result: libc::c_int) -> std::io::Result<()> {
    if result >= 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(err)
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

/// An interface's addresses by family, each with its prefix length.
#[derive(Debug, Default, PartialEq, Eq)]
struct Addresses {
    ipv4: Vec<(Ipv4Addr, u32)>,
    ipv6: Vec<(Ipv6Addr, u32)>,
}

/// The addresses asked for, by family; anything that is no address is refused.
fn split_addresses(addresses: &[IpAddress]) -> anyhow::Result<Addresses> {
    let mut ipv4 = Vec::new();
    let mut ipv6 = Vec::new();
    for address in addresses {
        match address.address.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) if address.prefix_len <= 32 => ipv4.push((ip, address.prefix_len)),
            Ok(IpAddr::V6(ip)) if address.prefix_len <= 128 => ipv6.push((ip, address.prefix_len)),
            _ => bail!(
                "{:?}/{} is not an address",
                address.address,
                address.prefix_len
            ),
        }
    }
    if ipv4.len() > 1 {
        bail!(
            "one IPv4 address per interface is supported, {} given",
            ipv4.len()
        );
    }
    Ok(Addresses { ipv4, ipv6 })
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
    let Addresses { ipv4, ipv6 } =
        split_addresses(&wanted.addresses).with_context(|| name.clone())?;
    let socket = IoctlSocket::new()?;
    if wanted.mtu > 0 {
        socket.set_mtu(&name, wanted.mtu)?;
    }
    if let Some((address, prefix_len)) = ipv4.first() {
        socket.set_ipv4(&name, *address, *prefix_len)?;
    }
    if !ipv6.is_empty() {
        let socket6 = ipv6::Ipv6Socket::new()?;
        for (address, prefix_len) in &ipv6 {
            socket6.add_address(&name, *address, *prefix_len)?;
        }
    }
    socket.set_up(&name)?;
    tracing::info!(interface = %name, ipv4 = ?ipv4, ipv6 = ?ipv6, mtu = wanted.mtu, "interface configured");
    Ok(describe(sys, &socket, &name))
}

fn describe(sys: &Path, socket: &IoctlSocket, name: &str) -> Interface {
    let read = |file: &str| {
        std::fs::read_to_string(sys.join(name).join(file))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let ipv4 = socket
        .ipv4_of(name)
        .map(|(address, prefix_len)| (IpAddr::V4(address), prefix_len));
    let ipv6 = ipv6::global_addresses(&std::fs::read_to_string(IF_INET6).unwrap_or_default(), name)
        .into_iter()
        .map(|(address, prefix_len)| (IpAddr::V6(address), prefix_len));
    Interface {
        name: name.to_owned(),
        hw_addr: read("address"),
        mtu: read("mtu").parse().unwrap_or(0),
        addresses: ipv4
            .into_iter()
            .chain(ipv6)
            .map(|(address, prefix_len)| IpAddress {
                address: address.to_string(),
                prefix_len,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// ListInterfaces: every guest interface with its IPv4 and global IPv6 addresses.
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

/// A route of one family: destination, gateway and the family agree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ParsedRoute {
    destination: IpAddr,
    prefix_len: u32,
    gateway: Option<IpAddr>,
    device: Option<String>,
}

fn parse_route(route: &Route) -> anyhow::Result<ParsedRoute> {
    let gateway = match route.gateway.as_str() {
        "" => None,
        text => Some(
            text.parse::<IpAddr>()
                .with_context(|| format!("gateway {text:?} is not an address"))?,
        ),
    };
    let (destination, prefix_len) = match route.destination.as_str() {
        // "default" is of the gateway's family (`ip -6 route` prints it too).
        "default" | "" => match gateway {
            Some(IpAddr::V6(_)) => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            _ => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        },
        cidr => {
            let (address, prefix) = cidr.split_once('/').unwrap_or((cidr, ""));
            let address: IpAddr = address
                .parse()
                .with_context(|| format!("{cidr:?} is not a destination"))?;
            let longest = if address.is_ipv4() { 32 } else { 128 };
            let prefix_len: u32 = match prefix {
                "" => longest,
                text => text
                    .parse()
                    .ok()
                    .filter(|p| *p <= longest)
                    .with_context(|| format!("bad prefix in {cidr:?}"))?,
            };
            (address, prefix_len)
        }
    };
    if let Some(gateway) = gateway {
        if gateway.is_ipv4() != destination.is_ipv4() {
            bail!("route to {:?} mixes address families", route.destination);
        }
    }
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

/// UpdateRoutes: adds each route (IPv4 or IPv6); returns them as given.
pub(crate) fn update_routes(routes: &[Route]) -> anyhow::Result<Vec<Route>> {
    let parsed = routes
        .iter()
        .map(parse_route)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let socket = IoctlSocket::new()?;
    let socket6 = parsed
        .iter()
        .any(|route| route.destination.is_ipv6())
        .then(ipv6::Ipv6Socket::new)
        .transpose()?;
    let ipv6_socket = || socket6.as_ref().context("no IPv6 socket");
    for route in &parsed {
        let device = route.device.as_deref();
        let prefix_len = route.prefix_len;
        match (route.destination, route.gateway) {
            (IpAddr::V4(destination), None) => {
                socket.add_route(destination, prefix_len, None, device)?;
            }
            (IpAddr::V4(destination), Some(IpAddr::V4(gateway))) => {
                socket.add_route(destination, prefix_len, Some(gateway), device)?;
            }
            (IpAddr::V6(destination), None) => {
                ipv6_socket()?.add_route(destination, prefix_len, None, device)?;
            }
            (IpAddr::V6(destination), Some(IpAddr::V6(gateway))) => {
                ipv6_socket()?.add_route(destination, prefix_len, Some(gateway), device)?;
            }
            _ => bail!("route {route:?} mixes address families"),
        }
        tracing::info!(route = ?route, "route added");
    }
    Ok(routes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

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
                destination: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                prefix_len: 0,
                gateway: Some("10.213.0.1".parse().expect("address")),
                device: None,
            }
        );
        assert_eq!(
            parse_route(&route("192.168.4.0/22", "", "eth0"))
                .expect("parses")
                .prefix_len,
            22
        );
        // IPv6: "default" takes the gateway's family; a bare address is a host route.
        assert_eq!(
            parse_route(&route("default", "fd00:10:213::1", "")).expect("parses"),
            ParsedRoute {
                destination: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                prefix_len: 0,
                gateway: Some("fd00:10:213::1".parse().expect("address")),
                device: None,
            }
        );
        assert_eq!(
            parse_route(&route("fd00:1::7", "", "eth0"))
                .expect("parses")
                .prefix_len,
            128
        );
        assert!(parse_route(&route("default", "", "")).is_err());
        assert!(parse_route(&route("10.0.0.0/40", "10.0.0.1", "")).is_err());
        assert!(parse_route(&route("fd00::/129", "fd00::1", "")).is_err());
        assert!(parse_route(&route("fd00::/8", "10.0.0.1", "")).is_err());
        assert!(parse_route(&route("10.0.0.0/8", "fd00::1", "")).is_err());
    }

    #[test]
    fn addresses_split_by_family_and_bad_ones_are_refused() {
        let address = |address: &str, prefix_len: u32| IpAddress {
            address: address.into(),
            prefix_len,
            ..Default::default()
        };
        let Addresses { ipv4, ipv6 } =
            split_addresses(&[address("10.1.0.5", 24), address("fd00:1::5", 64)]).expect("splits");
        assert_eq!(ipv4, vec![("10.1.0.5".parse().expect("address"), 24)]);
        assert_eq!(ipv6, vec![("fd00:1::5".parse().expect("address"), 64)]);
        assert!(split_addresses(&[address("10.1.0.5", 33)]).is_err());
        assert!(split_addresses(&[address("fd00::5", 129)]).is_err());
        assert!(split_addresses(&[address("eth0", 24)]).is_err());
        assert!(split_addresses(&[address("10.1.0.5", 24), address("10.1.0.6", 24)]).is_err());
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
