//! Kubernetes' view of a node, without Kubernetes: a CRI client (the `k8s-cri` bindings over
//! containerd's socket) and the CNI network a private containerd's CRI plugin gives pods
//! (Debian's containernetworking-plugins: bridge + host-local).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

/// The runtime handler cloak is registered as in the CRI plugin (and named by RuntimeClass).
pub const RUNTIME_HANDLER: &str = "cloak";
/// Where Debian's containernetworking-plugins puts the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The test pods' subnet; the bridge (the host side) takes the first address.
pub const POD_SUBNET: &str = "10.213.0.0/24";
pub const BRIDGE_ADDRESS: &str = "10.213.0.1";
/// The IPv6 subnet of a dual-stack test network, and its bridge's address.
pub const POD_SUBNET_V6: &str = "fd00:10:213::/64";
pub const BRIDGE_ADDRESS_V6: &str = "fd00:10:213::1";

/// Why CRI tests cannot run here, if they cannot.
pub fn cri_unavailable() -> Option<String> {
    for plugin in ["bridge", "host-local", "loopback"] {
        if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
            return Some(format!(
                "CNI plugin {CNI_BIN_DIR}/{plugin} is missing (apt install containernetworking-plugins; scripts/setup-host.sh does)"
            ));
        }
    }
    None
}

/// What a CRI test needs: the guest image and the VM tools, the CNI plugins, the built shim;
/// `None` after saying why `test` cannot run here.
pub fn cri_test_env(test: &str) -> Option<(crate::VmTestEnv, PathBuf)> {
    let env = crate::VmTestEnv::get(test)?;
    if !crate::tools_on_path(test, &["virtiofsd", "ip", "runc"]) {
        return None;
    }
    if let Some(reason) = cri_unavailable() {
        crate::skip(test, &reason);
        return None;
    }
    let shim = crate::containerd::shim_or_skip(test)?;
    Some((env, shim))
}

const BRIDGE_PREFIX: &str = "cloakbr";

/// A bridge name for this process's network, unique among concurrent test runs.
pub fn bridge_name() -> String {
    format!("{BRIDGE_PREFIX}{}", std::process::id() % 100_000)
}

/// Deletes test bridges whose test process is gone. A killed run leaves its bridge behind,
/// still holding the pod subnet's route, and the next run's host → pod traffic then goes
/// there ("No route to host").
pub fn remove_stale_bridges() {
    let live: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    for name in links_named(BRIDGE_PREFIX) {
        let Ok(tag) = name[BRIDGE_PREFIX.len()..].parse::<u32>() else {
            continue;
        };
        if !live.iter().any(|pid| pid % 100_000 == tag) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &name])
                .status();
        }
    }
}

/// The CNI configuration: a bridge with host-local addresses, the bridge as gateway, no
/// masquerading (pods and host talk directly); with `dual_stack` an IPv6 range and default
/// route beside the IPv4 ones.
pub fn write_cni_config(
    conf_dir: &Path,
    ipam_dir: &Path,
    bridge: &str,
    dual_stack: bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(conf_dir)?;
    let mut ranges = vec![serde_json::json!([{ "subnet": POD_SUBNET, "gateway": BRIDGE_ADDRESS }])];
    let mut routes = vec![serde_json::json!({ "dst": "0.0.0.0/0" })];
    if dual_stack {
        ranges.push(serde_json::json!([{ "subnet": POD_SUBNET_V6, "gateway": BRIDGE_ADDRESS_V6 }]));
        routes.push(serde_json::json!({ "dst": "::/0" }));
    }
    let config = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "cloak-test",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": ranges,
                    "routes": routes
                }
            },
            { "type": "loopback" }
        ]
    });
    std::fs::write(
        conf_dir.join("10-cloak-test.conflist"),
        serde_json::to_vec_pretty(&config)?,
    )?;
    Ok(())
}

/// The CRI part of a private containerd's configuration, with the cloak runtime handler when
/// `with_cloak` (else `cloak install` adds it). Config version 2 (containerd 1.6) keeps it all
/// in one plugin; version 3 (containerd 2.x) splits images and runtime into plugins of their
/// own, and the runtime plugin keeps containerd's defaults otherwise — among them
/// `enable_unprivileged_ports` and `enable_unprivileged_icmp`, which put network sysctls into
/// every sandbox's spec.
pub fn cri_plugin_config(
    config_version: u32,
    sandbox_image: &str,
    cni_conf_dir: &Path,
    with_cloak: bool,
) -> String {
    let (runtime, sandbox, bin_dir) = if config_version >= 3 {
        (
            r#"plugins."io.containerd.cri.v1.runtime""#,
            format!(
                "[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = \"{sandbox_image}\"\n"
            ),
            format!("bin_dirs = [\"{CNI_BIN_DIR}\"]"),
        )
    } else {
        (
            r#"plugins."io.containerd.grpc.v1.cri""#,
            String::new(),
            format!("bin_dir = \"{CNI_BIN_DIR}\""),
        )
    };
    let image_line = if config_version >= 3 {
        String::new()
    } else {
        format!("  sandbox_image = \"{sandbox_image}\"\n")
    };
    let cloak = if with_cloak {
        format!(
            "    [{runtime}.containerd.runtimes.{RUNTIME_HANDLER}]\n      \
             runtime_type = \"io.containerd.cloak.v2\"\n      pod_annotations = [\"io.cloak.*\", \"io.katacontainers.config.hypervisor.cc_init_data\"]\n"
        )
    } else {
        String::new()
    };
    format!(
        r#"{sandbox}[{runtime}]
{image_line}  disable_apparmor = true
  # Without CAP_SYS_RESOURCE (a containerised CI host) runc cannot lower oom_score_adj.
  restrict_oom_score_adj = true
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
{cloak}  [{runtime}.cni]
    {bin_dir}
    conf_dir = "{conf_dir}"
"#,
        conf_dir = cni_conf_dir.display()
    )
}

/// A CRI client on a containerd socket.
#[derive(Clone)]
pub struct CriClient {
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

/// A pod as a test creates it.
#[derive(Debug, Clone)]
pub struct PodSpec {
    pub name: String,
    /// "" for runc.
    pub runtime_handler: String,
    pub log_directory: PathBuf,
    pub annotations: HashMap<String, String>,
    /// The pod's sysctls (`securityContext.sysctls`).
    pub sysctls: HashMap<String, String>,
    /// `shareProcessNamespace`: one PID namespace for the pod (CRI `NamespaceMode.POD`).
    pub share_pid: bool,
    /// The sum of the pod's container limits, as the kubelet sends it.
    pub resources: Option<LinuxContainerResources>,
    /// A privileged sandbox: the kubelet sets it when any container of the pod is privileged,
    /// and containerd refuses a privileged container in a sandbox that is not.
    pub privileged: bool,
    /// The pod's DNS servers, searches and options (`dnsConfig`), as the kubelet sends them.
    pub dns: Option<DnsConfig>,
}

impl PodSpec {
    /// A pod named `name` for `runtime_handler` ("" for runc) logging below `log_directory`.
    pub fn new(name: &str, runtime_handler: &str, log_directory: PathBuf) -> Self {
        Self {
            name: name.into(),
            runtime_handler: runtime_handler.into(),
            log_directory,
            annotations: HashMap::new(),
            sysctls: HashMap::new(),
            share_pid: false,
            resources: None,
            privileged: false,
            dns: None,
        }
    }

    /// Pod `name` for `runtime_handler` with its log directory below `containerd`'s, made.
    pub fn in_containerd(
        containerd: &crate::containerd::PrivateContainerd,
        name: &str,
        runtime_handler: &str,
    ) -> anyhow::Result<Self> {
        let log_directory = containerd.dir().join("pod-logs").join(name);
        std::fs::create_dir_all(&log_directory)?;
        Ok(Self::new(name, runtime_handler, log_directory))
    }

    /// The namespace options the kubelet gives the sandbox and each of its containers.
    fn namespace_options(&self) -> NamespaceOption {
        NamespaceOption {
            pid: if self.share_pid {
                NamespaceMode::Pod
            } else {
                NamespaceMode::Container
            } as i32,
            ..Default::default()
        }
    }
}

/// A container of `image` running `command`, as the kubelet would ask for it; tests adjust
/// the rest (security context, mounts) before `create_container_with`.
pub fn container_config(name: &str, image: &str, command: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext::default()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl CriClient {
    pub async fn connect(socket: &Path) -> anyhow::Result<Self> {
        let socket = socket.to_owned();
        let channel = Endpoint::try_from("http://[::]:50051")?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
            .await
            .context("connecting to containerd's CRI service")?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        })
    }

    pub fn sandbox_config(pod: &PodSpec) -> PodSandboxConfig {
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: pod.name.clone(),
                uid: format!("uid-{}", pod.name),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: pod.name.clone(),
            log_directory: pod.log_directory.display().to_string(),
            annotations: pod.annotations.clone(),
            dns_config: pod.dns.clone(),
            linux: Some(LinuxPodSandboxConfig {
                sysctls: pod.sysctls.clone(),
                resources: pod.resources.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(pod.namespace_options()),
                    privileged: pod.privileged,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// RunPodSandbox; the sandbox id.
    pub async fn run_pod(&mut self, pod: &PodSpec) -> anyhow::Result<String> {
        let response = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(Self::sandbox_config(pod)),
                runtime_handler: pod.runtime_handler.clone(),
            })
            .await
            .context("RunPodSandbox")?;
        Ok(response.into_inner().pod_sandbox_id)
    }

    /// CreateContainer of `image` running `command` in the pod; the container id.
    pub async fn create_container(
        &mut self,
        pod_id: &str,
        pod: &PodSpec,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> anyhow::Result<String> {
        self.create_container_with(pod_id, pod, container_config(name, image, command))
            .await
    }

    /// CreateContainer of `config` in the pod (given the pod's namespace options, as the
    /// kubelet does); the container id.
    pub async fn create_container_with(
        &mut self,
        pod_id: &str,
        pod: &PodSpec,
        mut config: ContainerConfig,
    ) -> anyhow::Result<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let linux = config.linux.get_or_insert_with(Default::default);
        linux
            .security_context
            .get_or_insert_with(Default::default)
            .namespace_options = Some(pod.namespace_options());
        let response = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(config),
                sandbox_config: Some(Self::sandbox_config(pod)),
            })
            .await
            .with_context(|| format!("CreateContainer {name}"))?;
        Ok(response.into_inner().container_id)
    }

    pub async fn start_container(&mut self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .with_context(|| format!("StartContainer {id}"))?;
        Ok(())
    }

    pub async fn exec_sync(
        &mut self,
        id: &str,
        command: &[&str],
    ) -> anyhow::Result<ExecSyncResponse> {
        self.exec_sync_within(id, command, 60).await
    }

    /// ExecSync with the CRI's timeout of `timeout_secs`.
    pub async fn exec_sync_within(
        &mut self,
        id: &str,
        command: &[&str],
        timeout_secs: i64,
    ) -> anyhow::Result<ExecSyncResponse> {
        Ok(self
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: command.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_secs,
            })
            .await
            .with_context(|| format!("ExecSync in {id}"))?
            .into_inner())
    }

    pub async fn container_status(&mut self, id: &str) -> anyhow::Result<ContainerStatus> {
        self.runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await
            .with_context(|| format!("ContainerStatus {id}"))?
            .into_inner()
            .status
            .context("ContainerStatus without a status")
    }

    /// Polls until the container exited; its exit code.
    pub async fn wait_for_exit(&mut self, id: &str, timeout: Duration) -> anyhow::Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.container_status(id).await?;
            if status.state == ContainerState::ContainerExited as i32 {
                return Ok(status.exit_code);
            }
            if Instant::now() > deadline {
                bail!("container {id} still {:?} after {timeout:?}", status.state);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop_container(&mut self, id: &str, timeout_secs: i64) -> anyhow::Result<()> {
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_secs,
            })
            .await
            .with_context(|| format!("StopContainer {id}"))?;
        Ok(())
    }

    pub async fn remove_container(&mut self, id: &str) -> anyhow::Result<()> {
        self.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .with_context(|| format!("RemoveContainer {id}"))?;
        Ok(())
    }

    /// The pod's IP address from PodSandboxStatus ("" when it has none).
    pub async fn pod_ip(&mut self, pod_id: &str) -> anyhow::Result<String> {
        Ok(self
            .pod_ips(pod_id)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default())
    }

    /// Every address of the pod: the primary first, then CRI's `additional_ips`.
    pub async fn pod_ips(&mut self, pod_id: &str) -> anyhow::Result<Vec<String>> {
        let status = self
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.into(),
                verbose: false,
            })
            .await
            .context("PodSandboxStatus")?
            .into_inner()
            .status
            .context("no status")?;
        let network = status.network.unwrap_or_default();
        Ok(std::iter::once(network.ip)
            .chain(network.additional_ips.into_iter().map(|ip| ip.ip))
            .filter(|ip| !ip.is_empty())
            .collect())
    }

    /// StopPodSandbox then RemovePodSandbox.
    pub async fn remove_pod(&mut self, pod_id: &str) -> anyhow::Result<()> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .context("StopPodSandbox")?;
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.into(),
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }
}

/// Asserts that a private containerd's pods left nothing (processes, mounts, sockets, pod
/// directories) and that the CNI network namespaces are those from before the pods.
pub fn assert_pods_left_nothing(
    containerd: &crate::containerd::PrivateContainerd,
    netns_before: &[String],
) {
    assert_eq!(
        containerd.wait_for_no_leftovers(false),
        Vec::<String>::new()
    );
    assert_eq!(
        cni_netns(),
        netns_before,
        "the pods' network namespaces are gone"
    );
}

/// `assert_pods_left_nothing` for pods whose VM died: their console logs stay.
pub fn assert_pods_left_nothing_but_console_logs(
    containerd: &crate::containerd::PrivateContainerd,
    netns_before: &[String],
) {
    assert_eq!(containerd.wait_for_no_leftovers(true), Vec::<String>::new());
    assert_eq!(
        cni_netns(),
        netns_before,
        "the pods' network namespaces are gone"
    );
}

/// Network namespaces CNI pods have (`/var/run/netns/cni-*`).
pub fn cni_netns() -> Vec<String> {
    crate::leaks::named_netns()
        .into_iter()
        .filter(|name| name.starts_with("cni-"))
        .collect()
}

/// Host network interfaces whose name starts with `prefix`.
pub fn links_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}
