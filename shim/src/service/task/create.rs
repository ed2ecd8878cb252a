//! Create: the first create of a pod boots its VM; each container's rootfs and bind mounts
//! are staged below the pod's shared directory and the agent creates it. Exec registers a
//! process to be started later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::{CreateTaskRequest, CreateTaskResponse, ExecProcessRequest};

use super::super::bundle;
use super::super::errors::{TaskError, TaskResult};
use super::super::fifo_io::StdioBridge;
use super::super::pod::Pod;
use super::super::process::{Container, Process};
use super::runtime_options::load_configuration;
use super::{fifos_of, locked, not_found, Inner};
use cloak_host::host_mounts;
use cloak_host::pod_vm::guest_path;
use cloak_host::PodSetup;
use cloak_protocol::agent::Storage;

impl Inner {
    pub(super) async fn do_create(
        self: &Arc<Self>,
        req: CreateTaskRequest,
    ) -> TaskResult<CreateTaskResponse> {
        if !req.checkpoint.is_empty() {
            return Err(TaskError::Unimplemented(
                "restoring from a checkpoint is not supported by cloak".into(),
            ));
        }
        if locked(&self.containers).contains_key(&req.id) {
            return Err(TaskError::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        let bundle = PathBuf::from(&req.bundle);
        let mut spec = bundle::read_spec(&bundle)
            .map_err(|err| TaskError::InvalidArgument(err.to_string()))?;
        if spec.process().is_none() {
            return Err(TaskError::InvalidArgument(format!(
                "the OCI spec in {} has no process",
                bundle.display()
            )));
        }
        let config = load_configuration(req.options.as_ref())?;
        let pod_id = bundle::pod_id_of(&spec, &req.id);
        let hostname = spec.hostname().clone().unwrap_or_else(|| pod_id.clone());
        // Pod-level settings come from the pod's first container (the CRI sandbox).
        let setup = PodSetup {
            hostname,
            init_data: bundle::init_data_of(&spec).map_err(TaskError::InvalidArgument)?,
            netns: cloak_host::network::netns_of(&spec).filter(|path| path.exists()),
            resources: cloak_host::pod_size::PodResources::from_annotations(
                spec.annotations().as_ref().unwrap_or(&Default::default()),
            )
            .map_err(|err| TaskError::InvalidArgument(err.to_string()))?,
            ..Default::default()
        };
        // Recorded before the pod boots: a shim killed during the boot leaves containerd's
        // cleanup (`shim delete`) the record it needs to find the VM it started.
        bundle::PodRecord::new(&pod_id, &config.runtime.run_dir)
            .write(&bundle)
            .map_err(|err| TaskError::Internal(err.into()))?;
        let (pod, pending) = self.pod_for_create(&config, &pod_id, setup).await?;
        let host_dir = pod.record.container_dir(&req.id);
        let created = self
            .create_in_pod(&pod, &req, &bundle, &mut spec, &host_dir)
            .await;
        let result = match created {
            Ok(pid) => Ok(pid),
            Err(err) => {
                if let Err(cleanup) = host_mounts::unmount_and_remove(&host_dir) {
                    tracing::warn!(container = %req.id, error = %cleanup, "cleaning up a failed create");
                }
                Err(err)
            }
        };
        drop(pending);
        match result {
            Ok(pid) => {
                pod.start_phase("create container");
                let fifos = fifos_of(&req.stdin, &req.stdout, &req.stderr, req.terminal);
                self.events.created(&req.id, &req.bundle, &fifos, pid).await;
                tracing::info!(container = %req.id, pod = %pod_id, pid, "container created");
                Ok(CreateTaskResponse {
                    pid,
                    ..Default::default()
                })
            }
            Err(err) => {
                self.release_pod_if_unused().await;
                Err(err)
            }
        }
    }

    pub(super) async fn create_in_pod(
        &self,
        pod: &Pod,
        req: &CreateTaskRequest,
        bundle: &Path,
        spec: &mut oci_spec::runtime::Spec,
        host_dir: &Path,
    ) -> TaskResult<u32> {
        let guest_dir = guest_path(Path::new(&req.id));
        // A container whose layers the policy pins runs from their verified images; any
        // other from containerd's rootfs, shared as a directory.
        let (rootfs, storages) = match pod.layer_pins.for_spec(spec) {
            Some(pins) => {
                let storages = super::super::layers::stage(
                    &pod.layer_cache,
                    pins,
                    &host_dir.join("layers"),
                    &guest_dir.join("layers"),
                )
                .await
                .map_err(|err| TaskError::InvalidArgument(format!("layers: {err:#}")))?;
                let rootfs = Storage {
                    driver: "layers".into(),
                    ..Default::default()
                };
                (rootfs, storages)
            }
            None => {
                super::super::rootfs::mount_rootfs(
                    &req.rootfs,
                    bundle,
                    spec,
                    &host_dir.join("rootfs"),
                )
                .await
                .map_err(|err| TaskError::InvalidArgument(format!("rootfs: {err}")))?;
                let rootfs = Storage {
                    driver: "bind".into(),
                    source: guest_dir.join("rootfs").display().to_string(),
                    ..Default::default()
                };
                (rootfs, Vec::new())
            }
        };
        host_mounts::share_bind_mounts(spec, &host_dir.join("mounts"), &guest_dir.join("mounts"))
            .map_err(|err| TaskError::InvalidArgument(format!("mounts: {err}")))?;
        pod.start_phase("stage rootfs");
        let fifos = fifos_of(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let (streams, stdio) = pod
            .client()
            .open_stdio(&req.id, "", fifos.wanted())
            .await
            .map_err(|err| TaskError::Internal(err.into()))?;
        let (mut bridge, drain) = StdioBridge::start(&fifos, streams, &req.id).map_err(|err| {
            TaskError::Internal(anyhow::anyhow!("opening the stdio fifos: {err}"))
        })?;
        pod.start_phase("stdio streams");
        let spec_json = serde_json::to_vec(spec).map_err(|err| TaskError::Internal(err.into()))?;
        if let Err(err) = pod
            .create_container(&req.id, spec_json, rootfs, storages, stdio)
            .await
        {
            bridge.stop();
            return Err(TaskError::agent(format!("creating container {}", req.id))(
                err,
            ));
        }
        let pid = self.guest_pid(pod, &req.id, "").await;
        let mut init = Process::new("", fifos);
        init.pid = pid;
        init.bridge = bridge;
        init.drain = Some(drain);
        locked(&self.containers).insert(
            req.id.clone(),
            Container {
                id: req.id.clone(),
                bundle: req.bundle.clone(),
                host_dir: host_dir.to_owned(),
                init,
                execs: HashMap::new(),
                paused: false,
            },
        );
        Ok(pid)
    }

    pub(super) fn do_exec(&self, req: &ExecProcessRequest) -> TaskResult<()> {
        let mut containers = locked(&self.containers);
        let container = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id, ""))?;
        if container.execs.contains_key(&req.exec_id) {
            return Err(TaskError::AlreadyExists(format!(
                "exec {} already exists in container {}",
                req.exec_id, req.id
            )));
        }
        if container.init.exit().is_some() {
            return Err(TaskError::FailedPrecondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let spec = req
            .spec
            .as_ref()
            .map(|any| any.value.clone())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| TaskError::InvalidArgument("exec without a process spec".into()))?;
        let mut process = Process::new(
            &req.exec_id,
            fifos_of(&req.stdin, &req.stdout, &req.stderr, req.terminal),
        );
        process.exec_spec = Some(spec);
        container.execs.insert(req.exec_id.clone(), process);
        Ok(())
    }
}
