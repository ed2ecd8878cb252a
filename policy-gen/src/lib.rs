//! `cloak policy generate`: from a pod's Kubernetes YAML and its images (local OCI archives,
//! no registry) it writes the pod's agent policy — the default rules of
//! `configs/policy/rules.rego` followed by `policy_data`, what it pins for this pod — inside
//! the pod's init-data, and the YAML with the init-data annotation added. The pins follow
//! what kubelet and the CRI plugin will ask the agent for, so the pod as written runs and a
//! host that changes any of it is refused. Unsupported input (privileged containers, host
//! namespaces, envFrom, a field this generator does not know) is an error, never a pin left
//! out.

pub mod data;
pub mod image;
mod mounts;
mod process;
mod workload;

use std::collections::BTreeMap;

use cloak_init_data::Algorithm;
use data::{ContainerEntry, ImageIdentity, PodIdentity, PolicyData};
pub use image::ImageStore;
use process::{DEFAULT_CAPABILITIES, SERVICE_ENV_PATTERN};

/// The pod annotation listing extra execs: `{"<container>": [["cmd", "arg"], ...]}`.
pub const EXEC_ANNOTATION: &str = "io.cloak.policy/exec";
/// The pod annotation that keeps every container's output from the host: `"false"`.
pub const LOGS_ANNOTATION: &str = "io.cloak.policy/logs";
/// The only guest directory CopyFile may write below.
pub const COPY_FILE_PREFIX: &str = "/run/cloak/copied/";
/// The sysctls containerd 2 sets on every sandbox (unprivileged ports and ping).
const CONTAINERD_SANDBOX_SYSCTLS: [(&str, &str); 2] = [
    ("net.ipv4.ip_unprivileged_port_start", "0"),
    ("net.ipv4.ping_group_range", "0 2147483647"),
];

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the YAML: {0}")]
    Yaml(serde_yaml::Error),
    #[error("the YAML has no Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob")]
    NoWorkload,
    #[error("the YAML has {0} workloads; give one per policy")]
    SeveralWorkloads(usize),
    #[error("{0} is not a workload this generator knows")]
    Unsupported(String),
    #[error("the YAML has no {0}")]
    Missing(&'static str),
    #[error("the pod {0}, which a confidential pod refuses")]
    PodRefused(&'static str),
    #[error("container {container}: {reason}")]
    Container { container: String, reason: String },
    #[error("annotation {annotation}: {reason}")]
    Annotation { annotation: String, reason: String },
    #[error("reading {path}: {source}")]
    Archive {
        path: String,
        source: std::io::Error,
    },
    #[error("{archive} has no blob {digest}")]
    MissingBlob { archive: String, digest: String },
    #[error("{0} is not a sha256 digest")]
    Digest(String),
    #[error("a blob's content does not match its digest {expected} (it is {actual})")]
    DigestMismatch { expected: String, actual: String },
    #[error("layer {digest}: {reason}")]
    Layer { digest: String, reason: String },
    #[error("layer media type {0} is not supported (tar or tar+gzip)")]
    LayerType(String),
    #[error("image index {0} has no linux/amd64 manifest")]
    NoPlatform(String),
    #[error("no image {name} in the given archives (they have {known:?})")]
    NoImage { name: String, known: Vec<String> },
    #[error("image metadata: {0}")]
    Json(serde_json::Error),
    #[error(transparent)]
    InitData(#[from] cloak_init_data::InitDataError),
}

/// What the generator is given besides the YAML.
#[derive(Debug)]
pub struct Options {
    pub images: ImageStore,
    /// The CRI plugin's sandbox (pause) image.
    pub sandbox_image: String,
    /// The namespace of a workload whose metadata names none.
    pub namespace: String,
    /// Extra execs allowed, as `(container, argv)`.
    pub execs: Vec<(String, Vec<String>)>,
    /// Whether the host may ask the agent for attestation reports.
    pub host_reports: bool,
    /// Ports the host may port-forward to.
    pub port_forward: Vec<u16>,
    pub algorithm: Algorithm,
}

/// What the generator writes.
#[derive(Debug)]
pub struct Generated {
    pub policy_data: PolicyData,
    /// The whole Rego policy.
    pub policy: String,
    /// The init-data document; HOST_DATA is the digest of exactly these bytes.
    pub init_data: String,
    /// The input YAML with the init-data annotation on the pod (template).
    pub annotated_yaml: String,
}

/// The images the workload in `yaml` names (normalised), for exporting them from a store.
pub fn image_names(yaml: &str) -> Result<Vec<String>, GenerateError> {
    let (documents, index) = workload::parse(yaml)?;
    let workload = workload::workload_of(&documents[index], "default")?;
    let spec = &workload.spec;
    let mut names: Vec<String> = spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .map(|container| image::normalize(&container.image))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Generates the policy and init-data of the workload in `yaml`.
pub fn generate(yaml: &str, options: &Options) -> Result<Generated, GenerateError> {
    let (mut documents, index) = workload::parse(yaml)?;
    let workload = workload::workload_of(&documents[index], &options.namespace)?;
    let policy_data = policy_data(&workload, options)?;
    let data = serde_json::to_value(&policy_data).map_err(GenerateError::Json)?;
    let policy = cloak_policy::with_policy_data(cloak_policy::CONFIDENTIAL_RULES, &data);
    // The policy must load in the agent's engine before a pod depends on it.
    cloak_policy::AgentPolicy::load(&policy).map_err(|err| GenerateError::Container {
        container: "(all)".into(),
        reason: err.to_string(),
    })?;
    let init_data = init_data_document(&policy, options.algorithm)?;
    let annotation = cloak_init_data::encode_annotation(init_data.as_bytes())?;
    if let Some(template) = workload::template_mut(&mut documents[index]) {
        annotate(template, &annotation);
    }
    let mut annotated_yaml = String::new();
    for document in &documents {
        annotated_yaml.push_str("---\n");
        annotated_yaml.push_str(&serde_yaml::to_string(document).map_err(GenerateError::Yaml)?);
    }
    Ok(Generated {
        policy_data,
        policy,
        init_data,
        annotated_yaml,
    })
}

/// The initdata TOML holding `policy`; checked to parse back to the same policy.
fn init_data_document(policy: &str, algorithm: Algorithm) -> Result<String, GenerateError> {
    #[derive(serde::Serialize)]
    struct Document<'a> {
        version: &'a str,
        algorithm: &'a str,
        data: BTreeMap<&'a str, &'a str>,
    }
    let document = Document {
        version: cloak_init_data::INIT_DATA_VERSION,
        algorithm: algorithm.name(),
        data: BTreeMap::from([(cloak_init_data::POLICY_KEY, policy)]),
    };
    let text = toml::to_string(&document).map_err(|err| GenerateError::Annotation {
        annotation: "init-data".into(),
        reason: err.to_string(),
    })?;
    let parsed = cloak_init_data::InitData::parse(text.as_bytes())?;
    if parsed.policy() != Some(policy) {
        return Err(GenerateError::Annotation {
            annotation: "init-data".into(),
            reason: "the document does not read back to the policy".into(),
        });
    }
    Ok(text)
}

fn annotate(template: &mut serde_yaml::Value, annotation: &str) {
    use serde_yaml::{Mapping, Value};
    let Some(template) = template.as_mapping_mut() else {
        return;
    };
    let metadata = template
        .entry(Value::from("metadata"))
        .or_insert_with(|| Value::Mapping(Mapping::new()));
    if let Some(metadata) = metadata.as_mapping_mut() {
        let annotations = metadata
            .entry(Value::from("annotations"))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if let Some(annotations) = annotations.as_mapping_mut() {
            annotations.insert(
                Value::from(cloak_init_data::ANNOTATION),
                Value::from(annotation),
            );
        }
    }
}

/// The execs each container may run: exec probes, exec lifecycle hooks, the annotation's and
/// the options' lists.
fn execs_of(
    workload: &workload::Workload,
    options: &Options,
) -> Result<BTreeMap<String, Vec<Vec<String>>>, GenerateError> {
    let mut execs: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    let all = workload
        .spec
        .init_containers
        .iter()
        .chain(&workload.spec.containers);
    for container in all {
        let list = execs.entry(container.name.clone()).or_default();
        let lifecycle = container.lifecycle.as_ref();
        let probes = [
            container.liveness_probe.as_ref(),
            container.readiness_probe.as_ref(),
            container.startup_probe.as_ref(),
            lifecycle.and_then(|l| l.post_start.as_ref()),
            lifecycle.and_then(|l| l.pre_stop.as_ref()),
        ];
        list.extend(
            probes
                .into_iter()
                .flatten()
                .filter_map(|probe| probe.exec.as_ref())
                .map(|exec| exec.command.clone()),
        );
    }
    if let Some(listed) = workload.annotations.get(EXEC_ANNOTATION) {
        let listed: BTreeMap<String, Vec<Vec<String>>> =
            serde_json::from_str(listed).map_err(|err| GenerateError::Annotation {
                annotation: EXEC_ANNOTATION.into(),
                reason: format!("not {{\"container\": [[\"cmd\", \"arg\"]]}}: {err}"),
            })?;
        for (container, commands) in listed {
            execs
                .get_mut(&container)
                .ok_or_else(|| GenerateError::Annotation {
                    annotation: EXEC_ANNOTATION.into(),
                    reason: format!("the pod has no container {container}"),
                })?
                .extend(commands);
        }
    }
    for (container, argv) in &options.execs {
        execs
            .get_mut(container)
            .ok_or_else(|| GenerateError::Container {
                container: container.clone(),
                reason: "an exec is allowed in it, but the pod has no such container".into(),
            })?
            .push(argv.clone());
    }
    Ok(execs)
}

fn policy_data(
    workload: &workload::Workload,
    options: &Options,
) -> Result<PolicyData, GenerateError> {
    let spec = &workload.spec;
    if spec.host_network {
        return Err(GenerateError::PodRefused(
            "uses the host's network (hostNetwork)",
        ));
    }
    if spec.host_pid || spec.host_ipc {
        return Err(GenerateError::PodRefused(
            "uses the host's PID or IPC namespace",
        ));
    }
    if spec.ephemeral_containers.is_some() {
        return Err(GenerateError::PodRefused("has ephemeral containers"));
    }
    let logs = match workload
        .annotations
        .get(LOGS_ANNOTATION)
        .map(String::as_str)
    {
        None | Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(GenerateError::Annotation {
                annotation: LOGS_ANNOTATION.into(),
                reason: format!("{other:?} is neither \"true\" nor \"false\""),
            })
        }
    };
    let hostname = match &spec.hostname {
        Some(hostname) => format!("^{}$", hostname.replace('.', "\\.")),
        None => workload.pod_name_pattern.clone(),
    };
    let pod_security = spec.security_context.as_ref();
    let mut sysctls: BTreeMap<String, String> = CONTAINERD_SANDBOX_SYSCTLS
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect();
    for sysctl in pod_security
        .map(|s| s.sysctls.as_slice())
        .unwrap_or_default()
    {
        sysctls.insert(sysctl.name.clone(), sysctl.value.clone());
    }
    let mut execs = execs_of(workload, options)?;
    let sandbox_image = options.images.get(&options.sandbox_image)?;
    let sandbox = process::resolve_sandbox(sandbox_image, pod_security)?;
    let mut containers = vec![ContainerEntry {
        kind: "sandbox".into(),
        name: String::new(),
        image: identity(&options.sandbox_image, sandbox_image),
        layers: sandbox_image.layer_root_hashes.clone(),
        args: sandbox.args,
        env: sandbox.env,
        env_patterns: sandbox.env_patterns,
        cwd: sandbox.cwd,
        user: sandbox.user,
        capabilities: DEFAULT_CAPABILITIES
            .iter()
            .map(|c| (*c).to_owned())
            .collect(),
        no_new_privileges: true,
        readonly_rootfs: true,
        mounts: mounts::sandbox(),
        sysctls: sysctls.clone(),
        exec: Vec::new(),
        logs: false,
    }];
    for container in spec.init_containers.iter().chain(&spec.containers) {
        let security = container.security_context.as_ref();
        if security.and_then(|s| s.privileged) == Some(true) {
            return Err(GenerateError::Container {
                container: container.name.clone(),
                reason: "privileged containers are refused in a confidential pod".into(),
            });
        }
        if security
            .and_then(|s| s.proc_mount.as_deref())
            .is_some_and(|m| m != "Default")
        {
            return Err(GenerateError::Container {
                container: container.name.clone(),
                reason: "procMount other than Default is refused in a confidential pod".into(),
            });
        }
        let image = options.images.get(&container.image)?;
        let resolved = process::resolve(container, image, pod_security, &hostname)?;
        containers.push(ContainerEntry {
            kind: "container".into(),
            name: container.name.clone(),
            image: identity(&container.image, image),
            layers: image.layer_root_hashes.clone(),
            args: resolved.args,
            env: resolved.env,
            env_patterns: resolved.env_patterns,
            cwd: resolved.cwd,
            user: resolved.user,
            capabilities: process::capabilities(container)?,
            no_new_privileges: security.and_then(|s| s.allow_privilege_escalation) == Some(false),
            readonly_rootfs: security.and_then(|s| s.read_only_root_filesystem) == Some(true),
            mounts: mounts::container(spec, container)?,
            sysctls: sysctls.clone(),
            exec: execs.remove(&container.name).unwrap_or_default(),
            logs,
        });
    }
    Ok(PolicyData {
        pod: PodIdentity {
            name: workload.pod_name_pattern.clone(),
            namespace: workload.namespace.clone(),
            hostname,
        },
        containers,
        env_patterns: vec![SERVICE_ENV_PATTERN.to_owned()],
        copy_file_prefix: COPY_FILE_PREFIX.to_owned(),
        host_reports: options.host_reports,
        port_forward: options.port_forward.clone(),
    })
}

fn identity(written: &str, image: &image::Image) -> ImageIdentity {
    let mut names = vec![
        written.to_owned(),
        image.name.clone(),
        image.config_digest.clone(),
    ];
    names.dedup();
    ImageIdentity {
        names,
        config_digest: image.config_digest.clone(),
        layers: image.layers.clone(),
    }
}

#[cfg(test)]
mod tests;
