//! Network sysctls of a pod. The VM's network namespace is the pod's, and the agent's own:
//! containers share it, so their specs carry no network namespace — and libcontainer refuses
//! `net.*` sysctls for a container in its runtime's network namespace ("not allowed in host
//! network namespace"). The CRI plugin puts them in the sandbox's spec (containerd 2.x always
//! adds `net.ipv4.ip_unprivileged_port_start` and `net.ipv4.ping_group_range`), so the agent
//! takes them out of the spec and writes them itself. The other namespaced sysctls (IPC, UTS)
//! stay in the spec: libcontainer applies them in the sandbox's namespaces, which its
//! containers join.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub(super) enum SysctlError {
    #[error("sysctl {0:?} is not a valid name")]
    InvalidName(String),
    #[error("setting sysctl {name} to {value:?}: {source}")]
    Write {
        name: String,
        value: String,
        source: std::io::Error,
    },
}

/// One network sysctl to set in the VM's (the pod's) network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NetworkSysctl {
    pub name: String,
    pub value: String,
}

impl NetworkSysctl {
    /// `/proc/sys/...` for the name, in either notation (`net.ipv4.x` or `net/ipv4/x`; the
    /// slash form lets an interface name carry dots, as runc accepts).
    fn path(&self) -> Result<PathBuf, SysctlError> {
        let relative = if self.name.contains('/') {
            self.name.clone()
        } else {
            self.name.replace('.', "/")
        };
        let valid = !relative.is_empty()
            && relative
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && relative
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b));
        if !valid {
            return Err(SysctlError::InvalidName(self.name.clone()));
        }
        Ok(PathBuf::from("/proc/sys").join(relative))
    }

    /// Writes the value into this (the pod's) network namespace.
    pub(super) fn apply(&self) -> Result<(), SysctlError> {
        let path = self.path()?;
        std::fs::write(&path, &self.value).map_err(|source| SysctlError::Write {
            name: self.name.clone(),
            value: self.value.clone(),
            source,
        })
    }
}

fn is_network(name: &str) -> bool {
    name.starts_with("net.") || name.starts_with("net/")
}

/// Removes the network sysctls from `spec` and returns them, names checked.
pub(super) fn take_network_sysctls(spec: &mut Spec) -> Result<Vec<NetworkSysctl>, SysctlError> {
    let Some(mut linux) = spec.linux().clone() else {
        return Ok(Vec::new());
    };
    let Some(sysctls) = linux.sysctl().clone() else {
        return Ok(Vec::new());
    };
    let (network, others): (HashMap<String, String>, HashMap<String, String>) =
        sysctls.into_iter().partition(|(name, _)| is_network(name));
    let mut taken: Vec<NetworkSysctl> = network
        .into_iter()
        .map(|(name, value)| NetworkSysctl { name, value })
        .collect();
    taken.sort_by(|a, b| a.name.cmp(&b.name));
    for sysctl in &taken {
        sysctl.path()?;
    }
    linux.set_sysctl((!others.is_empty()).then_some(others));
    spec.set_linux(Some(linux));
    Ok(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(sysctls: &str) -> Spec {
        serde_json::from_str(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"sysctl":{sysctls}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn network_sysctls_leave_the_spec_and_the_others_stay() {
        // What containerd 2.x puts in every sandbox spec, beside a pod's own IPC sysctls.
        let mut spec = spec_with(
            r#"{"net.ipv4.ip_unprivileged_port_start":"0","net.ipv4.ping_group_range":"0 2147483647",
                "kernel.shm_rmid_forced":"1","fs.mqueue.msg_max":"20"}"#,
        );
        let taken = take_network_sysctls(&mut spec).unwrap();
        assert_eq!(
            taken,
            vec![
                NetworkSysctl {
                    name: "net.ipv4.ip_unprivileged_port_start".into(),
                    value: "0".into()
                },
                NetworkSysctl {
                    name: "net.ipv4.ping_group_range".into(),
                    value: "0 2147483647".into()
                },
            ]
        );
        let left = spec.linux().as_ref().unwrap().sysctl().clone().unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(left["kernel.shm_rmid_forced"], "1");
        assert_eq!(
            taken[0].path().unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        );
        let slashed = NetworkSysctl {
            name: "net/ipv4/conf/eth0.100/forwarding".into(),
            value: "1".into(),
        };
        assert_eq!(
            slashed.path().unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
    }

    #[test]
    fn a_spec_with_only_network_sysctls_keeps_none_and_bad_names_are_refused() {
        let mut spec = spec_with(r#"{"net.core.somaxconn":"1024"}"#);
        assert_eq!(take_network_sysctls(&mut spec).unwrap().len(), 1);
        assert!(spec.linux().as_ref().unwrap().sysctl().is_none());
        for bad in [
            r#"{"net/../../etc/passwd":"x"}"#,
            r#"{"net.ipv4.a b":"1"}"#,
            r#"{"net//x":"1"}"#,
        ] {
            let mut spec = spec_with(bad);
            assert!(
                matches!(
                    take_network_sysctls(&mut spec),
                    Err(SysctlError::InvalidName(_))
                ),
                "{bad}"
            );
        }
    }
}
