//! `policy_data`, the half of a generated policy that is about one pod: what the rules in
//! `configs/policy/rules.rego` compare each request with. The field names are the rules'.

use std::collections::BTreeMap;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct PolicyData {
    pub pod: PodIdentity,
    pub containers: Vec<ContainerEntry>,
    /// Regexes over `NAME=value` allowed in every container: the service variables kubelet
    /// injects (their services are not known when the policy is written).
    pub env_patterns: Vec<String>,
    pub copy_file_prefix: String,
    pub host_reports: bool,
    /// The ports of the pod's loopback the host may reach with port-forward (none unless the
    /// author names them: a loopback service trusts its callers to be the pod's own).
    pub port_forward: Vec<u16>,
}

#[derive(Debug, Serialize)]
pub struct PodIdentity {
    /// Regex over the CRI sandbox name.
    pub name: String,
    pub namespace: String,
    /// Regex over the hostname the sandbox is created with.
    pub hostname: String,
}

#[derive(Debug, Serialize)]
pub struct ContainerEntry {
    /// "sandbox" or "container".
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub image: ImageIdentity,
    /// The dm-verity root hashes of the image's layers, bottom first: the container runs from
    /// exactly these, verified in the guest.
    pub layers: Vec<String>,
    pub args: Vec<String>,
    /// Exact `NAME=value` the process must have.
    pub env: Vec<String>,
    /// Regexes for variables whose value is known only at run time (`valueFrom`, HOSTNAME).
    pub env_patterns: Vec<String>,
    pub cwd: String,
    pub user: User,
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub readonly_rootfs: bool,
    pub mounts: Vec<MountEntry>,
    pub sysctls: BTreeMap<String, String>,
    pub exec: Vec<Vec<String>>,
    pub logs: bool,
}

#[derive(Debug, Serialize)]
pub struct ImageIdentity {
    /// The names the CRI plugin may record for it: as written, normalised, and its id.
    pub names: Vec<String>,
    pub config_digest: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Serialize, Clone)]
pub struct MountEntry {
    pub destination: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Regex over the source the guest sees.
    pub source: String,
    /// Options the mount must carry ("ro").
    pub options: Vec<String>,
    /// Whether binds below it (the shim's submount binds of a volume) are allowed.
    pub below: bool,
    /// The Kubernetes volume type it comes from, for the reader of the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}
