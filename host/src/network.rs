//! Pod networking, the model Kata uses: CNI has put a veth with the pod's address into the
//! pod's network namespace. The shim adds a tap device there and joins the two with
//! traffic-control redirection (everything arriving on one leaves through the other), the VMM
//! (running in that namespace) gives the tap to the guest as virtio-net with the veth's MAC
//! address, and the agent configures the guest interface with the veth's addresses, MTU and
//! routes. The pod keeps the address Kubernetes assigned; the namespace's own stack sees no
//! traffic.
//!
//! Commands are iproute2's (`ip`, `tc`) run in the namespace through `nsenter`, as an
//! operator would type them.

use std::path::{Path, PathBuf};

use cloak_protocol::agent::{Interface, IpAddress, Route};
use serde::Deserialize;

/// The tap device the shim adds to a pod's network namespace.
pub const TAP_NAME: &str = "tap0_cloak";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("running `{command}` in {netns}: {reason}")]
    Command {
        command: String,
        netns: String,
        reason: String,
    },
    #[error("reading {what} of {netns}: {reason}")]
    Parse {
        what: &'static str,
        netns: String,
        reason: String,
    },
}

/// The pod interface CNI created, as the guest should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    /// (address, prefix length), IPv4 and IPv6.
    pub addresses: Vec<(String, u32)>,
}

/// A pod network attached to its VM's tap device.
#[derive(Debug, Clone, PartialEq)]
pub struct PodNetwork {
    pub netns: PathBuf,
    pub tap: String,
    pub interface: PodInterface,
    /// Routes through a gateway (the interface's own subnet routes come with its addresses).
    pub routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct IpAddr {
    family: String,
    local: String,
    prefixlen: u32,
    #[serde(default)]
    scope: String,
}

#[derive(Debug, Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: String,
}

/// The interface carrying the pod's addresses: the first non-loopback one with a global
/// address.
fn pod_interface(links: &[IpLink]) -> Option<PodInterface> {
    links
        .iter()
        .filter(|link| link.link_type != "loopback" && link.ifname != TAP_NAME)
        .find_map(|link| {
            let addresses: Vec<(String, u32)> = link
                .addr_info
                .iter()
                .filter(|a| (a.family == "inet" || a.family == "inet6") && a.scope == "global")
                .map(|a| (a.local.clone(), a.prefixlen))
                .collect();
            (!addresses.is_empty()).then(|| PodInterface {
                name: link.ifname.clone(),
                mac: link.address.clone(),
                mtu: link.mtu,
                addresses,
            })
        })
}

fn gateway_routes(routes: &[IpRoute], device: &str) -> Vec<Route> {
    routes
        .iter()
        .filter(|route| route.dev == device)
        .filter_map(|route| {
            route.gateway.as_ref().map(|gateway| Route {
                destination: route.dst.clone(),
                gateway: gateway.clone(),
                ..Default::default()
            })
        })
        .collect()
}

async fn run_in(netns: &Path, args: &[&str]) -> Result<Vec<u8>, NetworkError> {
    let output = tokio::process::Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(args)
        .output()
        .await
        .map_err(|err| NetworkError::Command {
            command: args.join(" "),
            netns: netns.display().to_string(),
            reason: format!("nsenter: {err}"),
        })?;
    if !output.status.success() {
        return Err(NetworkError::Command {
            command: args.join(" "),
            netns: netns.display().to_string(),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

fn parse<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
    netns: &Path,
) -> Result<T, NetworkError> {
    serde_json::from_slice(bytes).map_err(|err| NetworkError::Parse {
        what,
        netns: netns.display().to_string(),
        reason: err.to_string(),
    })
}

impl PodNetwork {
    /// Reads the pod interface of `netns`; `None` when there is none (host networking is not
    /// for VMs, and a namespace without addresses has nothing to pass on).
    pub async fn discover(netns: &Path) -> Result<Option<Self>, NetworkError> {
        let links: Vec<IpLink> = parse(
            &run_in(netns, &["ip", "-j", "addr", "show"]).await?,
            "the addresses",
            netns,
        )?;
        let Some(interface) = pod_interface(&links) else {
            return Ok(None);
        };
        let mut routes: Vec<IpRoute> = parse(
            &run_in(netns, &["ip", "-j", "route", "show"]).await?,
            "the routes",
            netns,
        )?;
        // A dual-stack pod has IPv6 routes too (`ip route` shows one family at a time).
        if interface
            .addresses
            .iter()
            .any(|(address, _)| address.contains(':'))
        {
            let ipv6: Vec<IpRoute> = parse(
                &run_in(netns, &["ip", "-6", "-j", "route", "show"]).await?,
                "the IPv6 routes",
                netns,
            )?;
            routes.extend(ipv6);
        }
        Ok(Some(Self {
            netns: netns.to_owned(),
            tap: TAP_NAME.to_owned(),
            routes: gateway_routes(&routes, &interface.name),
            interface,
        }))
    }

    /// Adds the tap and the redirection both ways. On failure what was added is removed.
    pub async fn attach(&self) -> Result<(), NetworkError> {
        let mtu = self.interface.mtu.to_string();
        let veth = self.interface.name.as_str();
        let tap = self.tap.as_str();
        let steps: [&[&str]; 6] = [
            &["ip", "tuntap", "add", "dev", tap, "mode", "tap"],
            &["ip", "link", "set", "dev", tap, "mtu", &mtu, "up"],
            &["tc", "qdisc", "add", "dev", veth, "ingress"],
            &["tc", "qdisc", "add", "dev", tap, "ingress"],
            &[
                "tc", "filter", "add", "dev", veth, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", tap,
            ],
            &[
                "tc", "filter", "add", "dev", tap, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", veth,
            ],
        ];
        for step in steps {
            if let Err(err) = run_in(&self.netns, step).await {
                self.detach().await;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Removes the tap and the veth's redirection (best effort: the namespace may be gone).
    pub async fn detach(&self) {
        let steps: [&[&str]; 2] = [
            &["tc", "qdisc", "del", "dev", &self.interface.name, "ingress"],
            &["ip", "link", "del", "dev", &self.tap],
        ];
        for step in steps {
            if let Err(err) = run_in(&self.netns, step).await {
                tracing::debug!(error = %err, "detaching the pod network");
            }
        }
    }

    /// The guest interface as the agent configures it.
    pub fn guest_interface(&self) -> Interface {
        Interface {
            name: "eth0".into(),
            hw_addr: self.interface.mac.clone(),
            addresses: self
                .interface
                .addresses
                .iter()
                .map(|(address, prefix_len)| IpAddress {
                    address: address.clone(),
                    prefix_len: *prefix_len,
                    ..Default::default()
                })
                .collect(),
            mtu: u64::from(self.interface.mtu),
            ..Default::default()
        }
    }
}

/// The network namespace path an OCI spec names, if any.
pub fn netns_of(spec: &oci_spec::runtime::Spec) -> Option<PathBuf> {
    spec.linux()
        .as_ref()?
        .namespaces()
        .as_ref()?
        .iter()
        .find(|ns| ns.typ() == oci_spec::runtime::LinuxNamespaceType::Network)?
        .path()
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR_JSON: &str = r#"[
      {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"link_type":"loopback",
       "address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
      {"ifindex":3,"link_index":9,"ifname":"eth0","flags":["BROADCAST","UP"],"mtu":1500,"link_type":"ether",
       "address":"9a:55:e8:3e:8b:33","addr_info":[
         {"family":"inet","local":"10.213.0.2","prefixlen":24,"scope":"global"},
         {"family":"inet6","local":"fe80::9855:e8ff:fe3e:8b33","prefixlen":64,"scope":"link"}]}
    ]"#;

    const ROUTE_JSON: &str = r#"[
      {"dst":"default","gateway":"10.213.0.1","dev":"eth0","flags":[]},
      {"dst":"10.213.0.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.213.0.2","flags":[]}
    ]"#;

    #[test]
    fn the_pod_interface_and_its_gateway_routes_are_found() {
        let links: Vec<IpLink> = serde_json::from_str(ADDR_JSON).expect("parses");
        let interface = pod_interface(&links).expect("eth0");
        assert_eq!(
            interface,
            PodInterface {
                name: "eth0".into(),
                mac: "9a:55:e8:3e:8b:33".into(),
                mtu: 1500,
                addresses: vec![("10.213.0.2".into(), 24)],
            }
        );
        let routes: Vec<IpRoute> = serde_json::from_str(ROUTE_JSON).expect("parses");
        let routes = gateway_routes(&routes, "eth0");
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].destination, "default");
        assert_eq!(routes[0].gateway, "10.213.0.1");
    }

    #[test]
    fn a_namespace_with_only_loopback_has_no_pod_interface() {
        let links: Vec<IpLink> = serde_json::from_str(
            r#"[{"ifname":"lo","link_type":"loopback","address":"00:00:00:00:00:00","mtu":65536,
                 "addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]}]"#,
        )
        .expect("parses");
        assert_eq!(pod_interface(&links), None);
    }

    #[test]
    fn the_network_namespace_path_comes_from_the_spec() {
        let mut spec = oci_spec::runtime::Spec::default();
        assert_eq!(netns_of(&spec), None);
        let mut linux = spec.linux().clone().expect("default linux");
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        namespaces.retain(|ns| ns.typ() != oci_spec::runtime::LinuxNamespaceType::Network);
        namespaces.push(
            oci_spec::runtime::LinuxNamespaceBuilder::default()
                .typ(oci_spec::runtime::LinuxNamespaceType::Network)
                .path("/var/run/netns/cni-1")
                .build()
                .expect("namespace"),
        );
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        assert_eq!(netns_of(&spec), Some(PathBuf::from("/var/run/netns/cni-1")));
    }
}
