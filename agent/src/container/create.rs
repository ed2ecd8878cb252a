//! CreateContainer: rootfs, spec, stdio, then libcontainer creates the init process, which waits
//! for StartContainer.

use std::sync::Arc;

use anyhow::{bail, Context as _};
use cloak_protocol::agent::CreateContainerRequest;

use super::executor::PayloadExecutor;
use super::stdio::{PendingIo, StreamGrants};
use super::{blocking, cgroup, oom, spec, sysctl, Container, ContainerRuntime, ProcessState};
use crate::error::AgentError;
use crate::storage::{self, MountStack};

impl ContainerRuntime {
    /// Creates container `request.container_id`; `grants` says which of its streams may reach
    /// the host, `pinned_layers` the root hashes of its layers where the policy pins them.
    pub(crate) async fn create(
        &self,
        request: CreateContainerRequest,
        grants: StreamGrants,
        pinned_layers: Option<Vec<String>>,
    ) -> anyhow::Result<()> {
        let id = request.container_id.clone();
        if !cloak_protocol::is_valid_id(&id) {
            bail!(AgentError::InvalidArgument(format!(
                "invalid container id {id:?}"
            )));
        }
        // Held for the whole creation: a second create of the same id waits and then fails.
        let mut containers = self.containers.lock().await;
        if containers.contains_key(&id) {
            bail!(AgentError::AlreadyExists(format!(
                "container {id:?} already exists"
            )));
        }
        let mut oci_spec = spec::parse_spec(&request.oci_spec_json)?;
        // A CRI container joins namespaces of its pod's sandbox, which must be in the guest.
        let sandbox_pid = match spec::sandbox_of(&oci_spec) {
            Some(sandbox) if sandbox != id => match containers.get(&sandbox) {
                Some(sandbox) if sandbox.init.is_running() => Some(sandbox.init.pid),
                _ => bail!(AgentError::FailedPrecondition(format!(
                    "container {id:?} belongs to sandbox {sandbox:?}, which is not running here"
                ))),
            },
            _ => None,
        };
        spec::adapt_for_guest(&mut oci_spec, &id, sandbox_pid)?;
        let network_sysctls = sysctl::take_network_sysctls(&mut oci_spec)
            .map_err(|err| anyhow::Error::new(AgentError::InvalidArgument(err.to_string())))?;
        let Some(rootfs) = request.rootfs.as_ref() else {
            bail!(AgentError::InvalidArgument("no rootfs given".to_owned()));
        };
        let layers = crate::layers::layers_of(&request.storages, pinned_layers.as_deref())?;
        let rootfs_source = storage::rootfs_source(rootfs, &id, layers)?;

        for sysctl in &network_sysctls {
            sysctl.apply()?;
            tracing::info!(container = %id, name = %sysctl.name, value = %sysctl.value, "pod network sysctl set");
        }

        let bundle = self.bundle_dir(&id);
        let _ = std::fs::remove_dir_all(&bundle);
        std::fs::create_dir_all(&bundle)
            .with_context(|| format!("creating {}", bundle.display()))?;
        let mut mounts = MountStack::default();
        let result = self
            .create_in_bundle(
                &id,
                &request,
                oci_spec,
                rootfs_source.as_ref(),
                grants,
                &mut mounts,
            )
            .await;
        match result {
            Ok(container) => {
                containers.insert(id.clone(), Arc::new(container));
                tracing::info!(container = %id, "container created");
                Ok(())
            }
            Err(err) => {
                mounts.unmount_all();
                let _ = std::fs::remove_dir_all(&bundle);
                Err(err)
            }
        }
    }

    async fn create_in_bundle(
        &self,
        id: &str,
        request: &CreateContainerRequest,
        oci_spec: oci_spec::runtime::Spec,
        rootfs_source: &dyn storage::RootfsSource,
        grants: StreamGrants,
        mounts: &mut MountStack,
    ) -> anyhow::Result<Container> {
        let bundle = self.bundle_dir(id);
        *mounts = rootfs_source.mount(&bundle.join("rootfs"), &bundle.join("scratch"))?;
        let process = oci_spec
            .process()
            .as_ref()
            .expect("adapt_for_guest checked the process");
        spec::resolve_executable(&bundle.join("rootfs"), process)?;
        let seccomp = oci_spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        if seccomp
            .as_ref()
            .is_some_and(libcontainer::seccomp::is_notify)
        {
            bail!(AgentError::InvalidArgument(
                "seccomp profiles with SCMP_ACT_NOTIFY are not supported".to_owned()
            ));
        }
        let config = serde_json::to_vec_pretty(&oci_spec).context("serializing the spec")?;
        std::fs::write(bundle.join("config.json"), config).context("writing config.json")?;

        let cgroup_dir = cgroup::directory(&spec::cgroup_path(id));
        cgroup::enable_controllers(&cgroup::directory(spec::CGROUP_PARENT))?;

        let default_stdio = cloak_protocol::agent::StdioConfig::default();
        let stdio_config = request.stdio.as_ref().unwrap_or(&default_stdio);
        let (pending_io, child) =
            PendingIo::prepare(&self.streams, id, "", stdio_config, grants).await?;

        let reaper = self.reaper.clone();
        let state_root = self.state_root().to_owned();
        let container_id = id.to_owned();
        let bundle_dir = bundle.clone();
        let (pid, exited) = blocking("creating the container", move || {
            reaper
                .spawn_registered(|| {
                    let builder =
                        child.builder(container_id, &state_root, PayloadExecutor::for_init())?;
                    let container = builder
                        .as_init(&bundle_dir)
                        .with_systemd(false)
                        .with_detach(true)
                        // The guest root is an initramfs, which pivot_root(2) refuses to move:
                        // enter the rootfs with MS_MOVE + chroot instead (as Kata does with initrds).
                        .with_no_pivot(true)
                        .build()?;
                    container
                        .pid()
                        .map(|pid| pid.as_raw())
                        .ok_or(libcontainer::error::LibcontainerError::NoDirectory)
                })
                .map_err(|err| {
                    anyhow::Error::new(err).context("libcontainer could not create the container")
                })
        })
        .await?;
        // A missed SIGCHLD while the reaper waited for the build.
        self.reaper.reap_exited_children();

        let io = match pending_io.start().await {
            Ok(io) => io,
            Err(err) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                self.delete_state(id).await;
                return Err(err);
            }
        };
        let init = Arc::new(ProcessState::track(pid, "", exited, io));
        let oom_reported = oom::Reported::default();
        let oom_watch = oom::watch(
            id.to_owned(),
            cgroup_dir.clone(),
            init.clone(),
            oom_reported.clone(),
            self.oom_sender.clone(),
        );
        Ok(Container {
            id: id.to_owned(),
            bundle,
            cgroup: cgroup_dir,
            init,
            seccomp,
            execs: Default::default(),
            rootfs: std::sync::Mutex::new(std::mem::take(mounts)),
            started: Default::default(),
            oom_watch,
            oom_reported,
        })
    }
}
