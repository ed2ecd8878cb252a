//! The Kubernetes side: a Pod, or the pod template of a Deployment, ReplicaSet, StatefulSet,
//! DaemonSet, Job or CronJob, with the fields that decide what the pod runs. Each object that
//! can change a container's identity is parsed strictly (`deny_unknown_fields`): a field this
//! generator does not understand must stop it, never be silently left out of the policy.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::Value;

use crate::GenerateError;

/// The workload a pod comes from, with where in the document its pod template sits.
#[derive(Debug)]
pub(crate) struct Workload {
    pub(crate) namespace: String,
    /// A regex over the names the pod's controller gives it (the CRI sandbox name).
    pub(crate) pod_name_pattern: String,
    /// The pod template's annotations.
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) spec: PodSpec,
}

/// Where the pod template's metadata is in each kind's document.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "Pod" => &[],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => &["spec", "template"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template"],
        _ => return None,
    })
}

fn escape(name: &str) -> String {
    name.replace('.', "\\.")
}

/// The names a controller gives its pods: the name of a Pod, `<name>-<hash>-<suffix>` for a
/// Deployment's, `<name>-<ordinal>` for a StatefulSet's, `<name>-<suffix>` otherwise.
fn pod_name_pattern(kind: &str, name: &str, generate_name: bool) -> String {
    let name = escape(name);
    match kind {
        "Pod" if generate_name => format!("^{name}[a-z0-9]{{5}}$"),
        "Pod" => format!("^{name}$"),
        "Deployment" => format!("^{name}-[a-z0-9]{{1,10}}-[a-z0-9]{{5}}$"),
        "StatefulSet" => format!("^{name}-[0-9]+$"),
        "CronJob" => format!("^{name}-[0-9]+-[a-z0-9]{{5}}$"),
        _ => format!("^{name}-[a-z0-9]{{5}}$"),
    }
}

/// The one workload among the YAML documents of `text` (others, such as Services, are left).
pub(crate) fn parse(text: &str) -> Result<(Vec<Value>, usize), GenerateError> {
    let mut documents = Vec::new();
    for document in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(document).map_err(GenerateError::Yaml)?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let workloads: Vec<usize> = documents
        .iter()
        .enumerate()
        .filter(|(_, document)| document_kind(document).and_then(template_path).is_some())
        .map(|(index, _)| index)
        .collect();
    match workloads.as_slice() {
        [index] => Ok((documents, *index)),
        [] => Err(GenerateError::NoWorkload),
        _ => Err(GenerateError::SeveralWorkloads(workloads.len())),
    }
}

fn document_kind(document: &Value) -> Option<&str> {
    document.get("kind").and_then(Value::as_str)
}

/// The pod template (metadata and spec) of `document`, mutable, for adding the annotation.
pub(crate) fn template_mut(document: &mut Value) -> Option<&mut Value> {
    let path = template_path(document_kind(document)?)?;
    let mut at = document;
    for key in path {
        at = at.get_mut(*key)?;
    }
    Some(at)
}

/// The workload of `document` (one that `parse` chose).
pub(crate) fn workload_of(
    document: &Value,
    default_namespace: &str,
) -> Result<Workload, GenerateError> {
    let kind = document_kind(document).unwrap_or_default().to_owned();
    let path = template_path(&kind).ok_or_else(|| GenerateError::Unsupported(kind.clone()))?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
    let metadata = document.get("metadata");
    let (name, generated) = match text(metadata.and_then(|m| m.get("name"))) {
        Some(name) => (name, false),
        None => (
            text(metadata.and_then(|m| m.get("generateName")))
                .ok_or(GenerateError::Missing("metadata.name"))?,
            true,
        ),
    };
    let namespace = text(metadata.and_then(|m| m.get("namespace")))
        .unwrap_or_else(|| default_namespace.to_owned());
    let mut template = document;
    for key in path {
        template = template
            .get(*key)
            .ok_or(GenerateError::Missing("the pod template"))?;
    }
    let annotations = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .map(|value| BTreeMap::<String, String>::deserialize(value.clone()))
        .transpose()
        .map_err(GenerateError::Yaml)?
        .unwrap_or_default();
    let spec = template
        .get("spec")
        .ok_or(GenerateError::Missing("the pod spec"))?;
    let spec = PodSpec::deserialize(spec.clone()).map_err(GenerateError::Yaml)?;
    Ok(Workload {
        pod_name_pattern: pod_name_pattern(&kind, &name, generated),
        namespace,
        annotations,
        spec,
    })
}

/// A field this generator reads past: it does not change what runs in the pod's VM.
type Ignored = Option<Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // its `Ignored` fields are parsed to be accepted, never read
pub(crate) struct PodSpec {
    pub(crate) containers: Vec<Container>,
    #[serde(default)]
    pub(crate) init_containers: Vec<Container>,
    pub(crate) ephemeral_containers: Ignored,
    #[serde(default)]
    pub(crate) volumes: Vec<Volume>,
    pub(crate) security_context: Option<PodSecurityContext>,
    #[serde(default)]
    pub(crate) host_network: bool,
    #[serde(default, rename = "hostPID")]
    pub(crate) host_pid: bool,
    #[serde(default, rename = "hostIPC")]
    pub(crate) host_ipc: bool,
    pub(crate) hostname: Option<String>,
    pub(crate) automount_service_account_token: Option<bool>,
    pub(crate) share_process_namespace: Option<bool>,
    subdomain: Ignored,
    service_account_name: Ignored,
    service_account: Ignored,
    enable_service_links: Ignored,
    restart_policy: Ignored,
    termination_grace_period_seconds: Ignored,
    active_deadline_seconds: Ignored,
    dns_policy: Ignored,
    dns_config: Ignored,
    node_selector: Ignored,
    node_name: Ignored,
    affinity: Ignored,
    tolerations: Ignored,
    scheduler_name: Ignored,
    priority_class_name: Ignored,
    priority: Ignored,
    runtime_class_name: Ignored,
    image_pull_secrets: Ignored,
    readiness_gates: Ignored,
    topology_spread_constraints: Ignored,
    overhead: Ignored,
    preemption_policy: Ignored,
    set_hostname_as_f_q_d_n: Ignored,
    os: Ignored,
    host_users: Ignored,
    host_aliases: Ignored,
    resource_claims: Ignored,
    scheduling_gates: Ignored,
    resources: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // its `Ignored` fields are parsed to be accepted, never read
pub(crate) struct PodSecurityContext {
    pub(crate) run_as_user: Option<u32>,
    pub(crate) run_as_group: Option<u32>,
    #[serde(default)]
    pub(crate) supplemental_groups: Vec<u32>,
    pub(crate) fs_group: Option<u32>,
    #[serde(default)]
    pub(crate) sysctls: Vec<Sysctl>,
    run_as_non_root: Ignored,
    supplemental_groups_policy: Ignored,
    fs_group_change_policy: Ignored,
    se_linux_options: Ignored,
    se_linux_change_policy: Ignored,
    windows_options: Ignored,
    seccomp_profile: Ignored,
    app_armor_profile: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Sysctl {
    pub(crate) name: String,
    pub(crate) value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // its `Ignored` fields are parsed to be accepted, never read
pub(crate) struct Container {
    pub(crate) name: String,
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) command: Vec<String>,
    #[serde(default)]
    pub(crate) args: Vec<String>,
    pub(crate) working_dir: Option<String>,
    #[serde(default)]
    pub(crate) env: Vec<EnvVar>,
    pub(crate) env_from: Ignored,
    #[serde(default)]
    pub(crate) volume_mounts: Vec<VolumeMount>,
    pub(crate) volume_devices: Ignored,
    pub(crate) security_context: Option<SecurityContext>,
    pub(crate) liveness_probe: Option<Probe>,
    pub(crate) readiness_probe: Option<Probe>,
    pub(crate) startup_probe: Option<Probe>,
    pub(crate) lifecycle: Option<Lifecycle>,
    pub(crate) termination_message_path: Option<String>,
    ports: Ignored,
    resources: Ignored,
    resize_policy: Ignored,
    restart_policy: Ignored,
    termination_message_policy: Ignored,
    image_pull_policy: Ignored,
    stdin: Ignored,
    stdin_once: Ignored,
    tty: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EnvVar {
    pub(crate) name: String,
    pub(crate) value: Option<String>,
    pub(crate) value_from: Ignored,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // its `Ignored` fields are parsed to be accepted, never read
pub(crate) struct VolumeMount {
    pub(crate) name: String,
    pub(crate) mount_path: String,
    #[serde(default)]
    pub(crate) read_only: bool,
    sub_path: Ignored,
    sub_path_expr: Ignored,
    mount_propagation: Ignored,
    recursive_read_only: Ignored,
}

/// A volume: its name and its type (the one key besides `name`).
#[derive(Debug)]
pub(crate) struct Volume {
    pub(crate) name: String,
    pub(crate) kind: String,
}

impl<'de> Deserialize<'de> for Volume {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let fields = BTreeMap::<String, Value>::deserialize(deserializer)?;
        let name = fields
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| serde::de::Error::missing_field("name"))?
            .to_owned();
        let mut kinds = fields.keys().filter(|key| *key != "name");
        let kind = match (kinds.next(), kinds.next()) {
            (Some(kind), None) => kind.clone(),
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "volume {name} must have exactly one type"
                )))
            }
        };
        Ok(Self { name, kind })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)] // its `Ignored` fields are parsed to be accepted, never read
pub(crate) struct SecurityContext {
    pub(crate) run_as_user: Option<u32>,
    pub(crate) run_as_group: Option<u32>,
    pub(crate) privileged: Option<bool>,
    pub(crate) allow_privilege_escalation: Option<bool>,
    pub(crate) read_only_root_filesystem: Option<bool>,
    pub(crate) capabilities: Option<Capabilities>,
    pub(crate) proc_mount: Option<String>,
    run_as_non_root: Ignored,
    se_linux_options: Ignored,
    windows_options: Ignored,
    seccomp_profile: Ignored,
    app_armor_profile: Ignored,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capabilities {
    #[serde(default)]
    pub(crate) add: Vec<String>,
    #[serde(default)]
    pub(crate) drop: Vec<String>,
}

/// A probe: only its exec command matters here (kubelet runs it through the runtime).
#[derive(Debug, Deserialize)]
pub(crate) struct Probe {
    pub(crate) exec: Option<ExecAction>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Lifecycle {
    #[serde(rename = "postStart")]
    pub(crate) post_start: Option<Probe>,
    #[serde(rename = "preStop")]
    pub(crate) pre_stop: Option<Probe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecAction {
    #[serde(default)]
    pub(crate) command: Vec<String>,
}
