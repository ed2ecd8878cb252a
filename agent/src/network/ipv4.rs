//! IPv4 on guest interfaces, and the interface ioctls both families need (flags, MTU): the
//! classic `SIOC[GS]IF*` and `SIOCADDRT` requests on an IPv4 socket, enough for the one IPv4
//! address a CNI pod has.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, Context as _};

/// A socket to issue interface and routing ioctls on.
pub(super) struct IoctlSocket(OwnedFd);

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
    pub(super) fn new() -> anyhow::Result<Self> {
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

    pub(super) fn set_up(&self, name: &str) -> anyhow::Result<()> {
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

    pub(super) fn set_mtu(&self, name: &str, mtu: u64) -> anyhow::Result<()> {
        let mut ifreq = ifreq_for(name)?;
        ifreq.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).context("MTU out of range")?;
        self.ifreq_ioctl(
            libc::SIOCSIFMTU,
            &mut ifreq,
            &format!("setting the MTU of {name} to {mtu}"),
        )
    }

    pub(super) fn set_ipv4(
        &self,
        name: &str,
        address: Ipv4Addr,
        prefix_len: u32,
    ) -> anyhow::Result<()> {
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

    pub(super) fn ipv4_of(&self, name: &str) -> Option<(Ipv4Addr, u32)> {
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

    pub(super) fn add_route(
        &self,
        destination: Ipv4Addr,
        prefix_len: u32,
        gateway: Option<Ipv4Addr>,
        device: Option<&str>,
    ) -> anyhow::Result<()> {
        let device_name =
            std::ffi::CString::new(device.unwrap_or_default()).context("device name")?;
        // SAFETY: rtentry is plain old data; zero is valid for every field.
        let mut entry: libc::rtentry = unsafe { std::mem::zeroed() };
        entry.rt_dst = sockaddr_of(destination);
        entry.rt_genmask = sockaddr_of(netmask_of(prefix_len));
        entry.rt_flags = libc::RTF_UP;
        if let Some(gateway) = gateway {
            entry.rt_gateway = sockaddr_of(gateway);
            entry.rt_flags |= libc::RTF_GATEWAY;
        }
        if device.is_some() {
            entry.rt_dev = device_name.as_ptr().cast_mut();
        }
        // SAFETY: `entry` is a valid rtentry; rt_dev (if set) points to `device_name`, which
        // outlives the call; SIOCADDRT only reads them.
        let result = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                libc::SIOCADDRT,
                &mut entry as *mut libc::rtentry,
            )
        };
        super::added_or_present(result).with_context(|| {
            format!("adding the route to {destination}/{prefix_len} via {gateway:?}")
        })
    }
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
}
