//! containerd's Task API for the pod this shim serves. Each request is a `do_*` method
//! returning `TaskResult`; the trait impl at the bottom only converts errors (errors.rs).
//!
//! Processes are containerd's view of the agent's: Create/Start/Exec map to the agent's
//! requests, a waiter per started process turns the agent's WaitProcess into the TaskExit
//! event (after the process's output is drained), and a VM watcher reports every process of
//! a pod whose VM died.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use cloak_protocol::agent::{
    ContainerRequest, CreateContainerRequest, ExecProcessRequest as AgentExecRequest,
    GetOOMEventRequest, ProcessRequest, RemoveContainerRequest, SignalProcessRequest, Storage,
    TtyWinResizeRequest, UpdateContainerRequest,
};
use containerd_shim::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{ExitSignal, Task, TtrpcContext, TtrpcResult};
use tokio::sync::Mutex;

use super::bundle::{self, PodRecord};
use super::errors::{TaskError, TaskResult};
use super::events::{timestamp, EventPublisher, Exit};
use super::fifo_io::{FifoPaths, OutputDrain, StdioBridge};
use super::host_mounts;
use super::metrics;
use super::pod::{Pod, VM_DIED_EXIT_STATUS};
use super::process::{Container, Process, ProcessState};
use crate::config::Configuration;
use crate::sandbox::{PodSandbox, SandboxSetup};

/// How long an exit waits for the process's output to reach containerd's fifos.
const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(30);

pub struct TaskService {
    inner: Arc<Inner>,
}

struct Inner {
    events: EventPublisher,
    exit_signal: Arc<ExitSignal>,
    pod: Mutex<Option<Arc<Pod>>>,
    /// Creates between choosing the pod and recording the container: the pod must not be
    /// shut down under them.
    pending_creates: AtomicUsize,
    containers: StdMutex<HashMap<String, Container>>,
    /// Output copies of created processes, taken by the waiter when the process starts.
    drains: StdMutex<HashMap<(String, String), OutputDrain>>,
}

impl TaskService {
    /// Ends the shim if it serves no container (what a termination signal asks); returns
    /// whether it did.
    pub async fn shut_down_if_idle(&self) -> bool {
        if !locked(&self.inner.containers).is_empty() {
            return false;
        }
        self.inner.do_shutdown().await;
        true
    }

    pub fn new(events: EventPublisher, exit_signal: Arc<ExitSignal>) -> Self {
        Self {
            inner: Arc::new(Inner {
                events,
                exit_signal,
                pod: Mutex::new(None),
                pending_creates: AtomicUsize::new(0),
                containers: StdMutex::new(HashMap::new()),
                drains: StdMutex::new(HashMap::new()),
            }),
        }
    }
}

/// The runtime configuration: the `ConfigPath` runtime option (containerd's runtime options,
/// `ctr run --runtime-config-path`), else `CLOAK_CONFIG`, else the default path. Only the
/// default path may be missing (built-in defaults apply); a named file must load.
fn load_configuration(options: Option<&Any>) -> TaskResult<Configuration> {
    let named = options
        .and_then(config_path_option)
        .or_else(|| std::env::var_os("CLOAK_CONFIG").map(PathBuf::from));
    let path = match named {
        Some(path) => path,
        None => {
            let default = PathBuf::from(crate::config::DEFAULT_CONFIG_PATH);
            if !default.exists() {
                return Ok(Configuration::default());
            }
            default
        }
    };
    Configuration::load(&path).map_err(|err| TaskError::InvalidArgument(err.to_string()))
}

/// `config_path` (field 2) of the CRI plugin's `runtimeoptions.v1.Options`, which it sends for
/// runtimes other than runc. Read as an unknown field: the message has no generated type here.
fn config_path_option(any: &Any) -> Option<PathBuf> {
    use containerd_shim::protos::protobuf::{Message, UnknownValueRef};
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return None;
    }
    let message = Empty::parse_from_bytes(&any.value).ok()?;
    match message.special_fields.unknown_fields().get(2)? {
        UnknownValueRef::LengthDelimited(bytes) if !bytes.is_empty() => {
            Some(PathBuf::from(String::from_utf8_lossy(bytes).into_owned()))
        }
        _ => None,
    }
}

fn locked<T>(mutex: &StdMutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .expect("shim state lock is never poisoned: no panics under it")
}

fn not_found(id: &str, exec_id: &str) -> TaskError {
    if exec_id.is_empty() {
        TaskError::NotFound(format!("container {id} not found"))
    } else {
        TaskError::NotFound(format!("exec {exec_id} of container {id} not found"))
    }
}

fn exit_from_agent(status: i32, exited_at_unix_nanos: u64) -> Exit {
    let at = if exited_at_unix_nanos == 0 {
        SystemTime::now()
    } else {
        UNIX_EPOCH + Duration::from_nanos(exited_at_unix_nanos)
    };
    Exit {
        status: u32::try_from(status).unwrap_or(VM_DIED_EXIT_STATUS),
        at,
    }
}

impl Inner {
    async fn current_pod(&self) -> TaskResult<Arc<Pod>> {
        let pod = self.pod.lock().await.clone();
        let pod =
            pod.ok_or_else(|| TaskError::FailedPrecondition("no pod VM is running".into()))?;
        if let Some(exit) = pod.died() {
            return Err(TaskError::FailedPrecondition(format!(
                "the pod VM is gone ({exit})"
            )));
        }
        Ok(pod)
    }

    /// The running pod, or a new one booted for `pod_id`. Counts a pending create.
    async fn pod_for_create(
        self: &Arc<Self>,
        config: &Configuration,
        pod_id: &str,
        setup: SandboxSetup,
    ) -> TaskResult<Arc<Pod>> {
        let mut slot = self.pod.lock().await;
        if let Some(pod) = slot.as_ref() {
            if pod.record.pod_id != pod_id {
                return Err(TaskError::InvalidArgument(format!(
                    "this shim serves pod {}, not {pod_id}",
                    pod.record.pod_id
                )));
            }
            if let Some(exit) = pod.died() {
                return Err(TaskError::FailedPrecondition(format!(
                    "the pod VM is gone ({exit})"
                )));
            }
            self.pending_creates.fetch_add(1, Ordering::SeqCst);
            return Ok(pod.clone());
        }
        let record = PodRecord::new(pod_id, &config.runtime.run_dir);
        let pod = Arc::new(Pod::boot(config, record, setup).await?);
        tracing::info!(pod = %pod_id, vmm_pid = pod.vmm_pid(), "pod VM booted");
        self.watch_pod(&pod);
        *slot = Some(pod.clone());
        self.pending_creates.fetch_add(1, Ordering::SeqCst);
        Ok(pod)
    }

    /// The VM watcher, the console forwarder and the OOM event relay of a new pod.
    fn watch_pod(self: &Arc<Self>, pod: &Arc<Pod>) {
        Pod::forward_console(pod);
        let inner = self.clone();
        let watched = pod.clone();
        tokio::spawn(async move {
            if let Some(exit) = watched.watch_vm().await {
                inner.fail_all_processes(&exit.to_string()).await;
            }
        });
        let inner = self.clone();
        let agent = pod.agent().clone();
        tokio::spawn(async move {
            loop {
                let event = agent
                    .get_oom_event(ttrpc::context::with_timeout(0), &GetOOMEventRequest::new())
                    .await;
                match event {
                    Ok(event) => {
                        tracing::info!(container = %event.container_id, "OOM kill in the guest");
                        inner.events.oom(&event.container_id).await;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "OOM event relay ended");
                        break;
                    }
                }
            }
        });
    }

    /// Reports every live process exited after the VM died.
    async fn fail_all_processes(&self, why: &str) {
        let at = SystemTime::now();
        let mut failed = Vec::new();
        {
            let mut containers = locked(&self.containers);
            for container in containers.values_mut() {
                let id = container.id.clone();
                for process in container.live_processes_mut() {
                    let exit = Exit {
                        status: VM_DIED_EXIT_STATUS,
                        at,
                    };
                    if process.record_exit(exit) {
                        failed.push((id.clone(), process.exec_id.clone(), process.pid, exit));
                    }
                }
            }
        }
        for (id, exec_id, pid, exit) in failed {
            tracing::warn!(container = %id, exec = %exec_id, why, "process reported exited: its VM died");
            self.events.exited(&id, &exec_id, pid, exit).await;
        }
    }

    /// Shuts the pod down once it has no containers and no create in flight.
    async fn release_pod_if_unused(&self) {
        let mut slot = self.pod.lock().await;
        let unused =
            locked(&self.containers).is_empty() && self.pending_creates.load(Ordering::SeqCst) == 0;
        if !unused {
            return;
        }
        if let Some(pod) = slot.take() {
            pod.shut_down().await;
        }
    }

    async fn guest_pid(&self, pod: &Pod, id: &str, exec_id: &str) -> u32 {
        let request = ContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        match pod.agent().list_processes(pod.context(), &request).await {
            Ok(list) => list
                .processes
                .iter()
                .find(|p| p.exec_id == exec_id)
                .map(|p| p.pid)
                .unwrap_or(0),
            Err(err) => {
                tracing::warn!(container = %id, exec = %exec_id, error = %err, "listing processes");
                0
            }
        }
    }

    /// Waits for a started process to exit, drains its output, records and publishes the
    /// exit.
    fn spawn_waiter(self: &Arc<Self>, pod: Arc<Pod>, id: String, exec_id: String, pid: u32) {
        let drain = locked(&self.drains).remove(&(id.clone(), exec_id.clone()));
        let inner = self.clone();
        tokio::spawn(async move {
            let request = ProcessRequest {
                container_id: id.clone(),
                exec_id: exec_id.clone(),
                ..Default::default()
            };
            let waited = pod
                .agent()
                .wait_process(ttrpc::context::with_timeout(0), &request)
                .await;
            let exit = match waited {
                Ok(response) => {
                    exit_from_agent(response.exit_status, response.exited_at_unix_nanos)
                }
                Err(err) => {
                    tracing::warn!(container = %id, exec = %exec_id, error = %err, "waiting for the process failed");
                    Exit {
                        status: VM_DIED_EXIT_STATUS,
                        at: SystemTime::now(),
                    }
                }
            };
            if let Some(drain) = drain {
                if !drain.wait(OUTPUT_DRAIN_LIMIT).await {
                    tracing::warn!(container = %id, exec = %exec_id, "output not drained in time");
                }
            }
            let first = locked(&inner.containers)
                .get_mut(&id)
                .and_then(|container| container.process_mut(&exec_id))
                .is_some_and(|process| process.record_exit(exit));
            if first {
                tracing::info!(container = %id, exec = %exec_id, status = exit.status, "process exited");
                inner.events.exited(&id, &exec_id, pid, exit).await;
            }
        });
    }

    async fn do_create(self: &Arc<Self>, req: CreateTaskRequest) -> TaskResult<CreateTaskResponse> {
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
        let setup = SandboxSetup {
            hostname,
            init_data: bundle::init_data_of(&spec).map_err(TaskError::InvalidArgument)?,
            netns: crate::network::netns_of(&spec).filter(|path| path.exists()),
            ..Default::default()
        };
        let pod = self.pod_for_create(&config, &pod_id, setup).await?;
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
        self.pending_creates.fetch_sub(1, Ordering::SeqCst);
        match result {
            Ok(pid) => {
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

    async fn create_in_pod(
        &self,
        pod: &Pod,
        req: &CreateTaskRequest,
        bundle: &Path,
        spec: &mut oci_spec::runtime::Spec,
        host_dir: &Path,
    ) -> TaskResult<u32> {
        pod.record
            .write(bundle)
            .map_err(|err| TaskError::Internal(err.into()))?;
        let guest_dir = PodSandbox::guest_path(Path::new(&req.id));
        host_mounts::mount_rootfs(&req.rootfs, bundle, spec, &host_dir.join("rootfs"))
            .await
            .map_err(|err| TaskError::InvalidArgument(format!("rootfs: {err}")))?;
        host_mounts::share_bind_mounts(spec, &host_dir.join("mounts"), &guest_dir.join("mounts"))
            .map_err(|err| TaskError::InvalidArgument(format!("mounts: {err}")))?;
        let fifos = fifos_of(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let (streams, stdio) = pod
            .open_stdio(&req.id, "", fifos.wanted())
            .await
            .map_err(|err| TaskError::Internal(err.into()))?;
        let (mut bridge, drain) = StdioBridge::start(&fifos, streams, &req.id).map_err(|err| {
            TaskError::Internal(anyhow::anyhow!("opening the stdio fifos: {err}"))
        })?;
        let request = CreateContainerRequest {
            container_id: req.id.clone(),
            oci_spec_json: serde_json::to_vec(spec)
                .map_err(|err| TaskError::Internal(err.into()))?,
            rootfs: Some(Storage {
                driver: "bind".into(),
                source: guest_dir.join("rootfs").display().to_string(),
                ..Default::default()
            })
            .into(),
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        if let Err(err) = pod.agent().create_container(pod.context(), &request).await {
            bridge.stop();
            return Err(TaskError::agent(format!("creating container {}", req.id))(
                err,
            ));
        }
        let pid = self.guest_pid(pod, &req.id, "").await;
        let mut init = Process::new("", fifos);
        init.pid = pid;
        init.bridge = bridge;
        locked(&self.drains).insert((req.id.clone(), String::new()), drain);
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

    async fn do_start(self: &Arc<Self>, req: StartRequest) -> TaskResult<StartResponse> {
        let pod = self.current_pod().await?;
        let (state, exec_spec, fifos) = {
            let containers = locked(&self.containers);
            let process = containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            (
                process.state,
                process.exec_spec.clone(),
                process.fifos.clone(),
            )
        };
        if state != ProcessState::Created {
            return Err(TaskError::FailedPrecondition(format!(
                "process {} of container {} was already started",
                req.exec_id, req.id
            )));
        }
        let pid = if req.exec_id.is_empty() {
            let request = ContainerRequest {
                container_id: req.id.clone(),
                ..Default::default()
            };
            pod.agent()
                .start_container(pod.context(), &request)
                .await
                .map_err(TaskError::agent(format!("starting container {}", req.id)))?;
            let pid = self.mark_running(&req.id, "", None, None)?;
            self.spawn_waiter(pod.clone(), req.id.clone(), String::new(), pid);
            self.events.started(&req.id, pid).await;
            pid
        } else {
            let process_json = exec_spec.unwrap_or_default();
            let (streams, stdio) = pod
                .open_stdio(&req.id, &req.exec_id, fifos.wanted())
                .await
                .map_err(|err| TaskError::Internal(err.into()))?;
            let name = format!("{}/{}", req.id, req.exec_id);
            let (mut bridge, drain) =
                StdioBridge::start(&fifos, streams, &name).map_err(|err| {
                    TaskError::Internal(anyhow::anyhow!("opening the stdio fifos: {err}"))
                })?;
            let request = AgentExecRequest {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                process_json,
                stdio: Some(stdio).into(),
                ..Default::default()
            };
            if let Err(err) = pod.agent().exec_process(pod.context(), &request).await {
                bridge.stop();
                return Err(TaskError::agent(format!("exec {name}"))(err));
            }
            locked(&self.drains).insert((req.id.clone(), req.exec_id.clone()), drain);
            let pid = self.guest_pid(&pod, &req.id, &req.exec_id).await;
            self.mark_running(&req.id, &req.exec_id, Some(pid), Some(bridge))?;
            self.spawn_waiter(pod.clone(), req.id.clone(), req.exec_id.clone(), pid);
            self.events.exec_started(&req.id, &req.exec_id, pid).await;
            pid
        };
        tracing::info!(container = %req.id, exec = %req.exec_id, pid, "process started");
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    /// Marks a process running; returns its pid.
    fn mark_running(
        &self,
        id: &str,
        exec_id: &str,
        pid: Option<u32>,
        bridge: Option<StdioBridge>,
    ) -> TaskResult<u32> {
        let mut containers = locked(&self.containers);
        let process = containers
            .get_mut(id)
            .and_then(|c| c.process_mut(exec_id))
            .ok_or_else(|| not_found(id, exec_id))?;
        if process.exit().is_none() {
            process.state = ProcessState::Running;
        }
        if let Some(pid) = pid {
            process.pid = pid;
        }
        if let Some(bridge) = bridge {
            process.bridge = bridge;
        }
        process.exec_spec = None;
        Ok(process.pid)
    }

    async fn do_delete(&self, req: DeleteRequest) -> TaskResult<DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut process = {
                let mut containers = locked(&self.containers);
                let container = containers
                    .get_mut(&req.id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                let process = container
                    .execs
                    .get(&req.exec_id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
                if process.state == ProcessState::Running && process.exit().is_none() {
                    return Err(TaskError::FailedPrecondition(format!(
                        "exec {} of container {} is still running",
                        req.exec_id, req.id
                    )));
                }
                container
                    .execs
                    .remove(&req.exec_id)
                    .ok_or_else(|| not_found(&req.id, &req.exec_id))?
            };
            process.bridge.stop();
            locked(&self.drains).remove(&(req.id.clone(), req.exec_id.clone()));
            return Ok(delete_response(&process));
        }
        let mut container = {
            let mut containers = locked(&self.containers);
            let container = containers
                .get(&req.id)
                .ok_or_else(|| not_found(&req.id, ""))?;
            if container.init.state == ProcessState::Running && container.init.exit().is_none() {
                return Err(TaskError::FailedPrecondition(format!(
                    "container {} is still running",
                    req.id
                )));
            }
            containers
                .remove(&req.id)
                .ok_or_else(|| not_found(&req.id, ""))?
        };
        if let Ok(pod) = self.current_pod().await {
            let request = RemoveContainerRequest {
                container_id: req.id.clone(),
                ..Default::default()
            };
            if let Err(err) = pod.agent().remove_container(pod.context(), &request).await {
                tracing::warn!(container = %req.id, error = %err, "removing the container in the guest");
            }
        }
        container.init.bridge.stop();
        for exec in container.execs.values_mut() {
            exec.bridge.stop();
        }
        locked(&self.drains).retain(|(id, _), _| id != &req.id);
        if let Err(err) = host_mounts::unmount_and_remove(&container.host_dir) {
            tracing::warn!(container = %req.id, error = %err, "removing the container's host mounts");
        }
        let response = delete_response(&container.init);
        self.events
            .deleted(&req.id, container.init.pid, container.init.exit())
            .await;
        tracing::info!(container = %req.id, "container deleted");
        self.release_pod_if_unused().await;
        Ok(response)
    }

    async fn do_kill(self: &Arc<Self>, req: KillRequest) -> TaskResult<()> {
        let state = {
            let containers = locked(&self.containers);
            let process = containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
            if process.exit().is_some() {
                return Err(TaskError::NotFound(format!(
                    "process {} of container {} already finished",
                    req.exec_id, req.id
                )));
            }
            process.state
        };
        let pod = self
            .current_pod()
            .await
            .map_err(|err| TaskError::NotFound(err.to_string()))?;
        let request = SignalProcessRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            signal: req.signal,
            all: req.all,
            ..Default::default()
        };
        pod.agent()
            .signal_process(pod.context(), &request)
            .await
            .map_err(TaskError::agent(format!(
                "signalling {} {}",
                req.id, req.exec_id
            )))?;
        // An init that was never started has no waiter yet: the signal may end it.
        if state == ProcessState::Created && req.exec_id.is_empty() {
            let pid = locked(&self.containers)
                .get(&req.id)
                .map(|c| c.init.pid)
                .unwrap_or(0);
            self.spawn_waiter(pod, req.id.clone(), String::new(), pid);
        }
        Ok(())
    }

    fn do_exec(&self, req: &ExecProcessRequest) -> TaskResult<()> {
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

    fn do_state(&self, req: &StateRequest) -> TaskResult<StateResponse> {
        let containers = locked(&self.containers);
        let container = containers
            .get(&req.id)
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        let process = container
            .process(&req.exec_id)
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        let exit = process.exit();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: container.bundle.clone(),
            pid: process.pid,
            status: process.status(container.paused).into(),
            stdin: process.fifos.stdin.clone(),
            stdout: process.fifos.stdout.clone(),
            stderr: process.fifos.stderr.clone(),
            terminal: process.fifos.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn do_wait(&self, req: &WaitRequest) -> TaskResult<WaitResponse> {
        let mut watch = {
            let containers = locked(&self.containers);
            containers
                .get(&req.id)
                .and_then(|c| c.process(&req.exec_id))
                .ok_or_else(|| not_found(&req.id, &req.exec_id))?
                .exit_watch()
        };
        let exit = watch
            .wait_for(Option::is_some)
            .await
            .map_err(|_| not_found(&req.id, &req.exec_id))?
            .expect("wait_for returned a value that passed is_some");
        Ok(WaitResponse {
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)).into(),
            ..Default::default()
        })
    }

    fn ensure_container(&self, id: &str) -> TaskResult<()> {
        if locked(&self.containers).contains_key(id) {
            Ok(())
        } else {
            Err(not_found(id, ""))
        }
    }

    async fn do_pause(&self, id: &str, pause: bool) -> TaskResult<()> {
        self.ensure_container(id)?;
        let pod = self.current_pod().await?;
        let request = ContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        if pause {
            pod.agent()
                .pause_container(pod.context(), &request)
                .await
                .map_err(TaskError::agent(format!("pausing {id}")))?;
        } else {
            pod.agent()
                .resume_container(pod.context(), &request)
                .await
                .map_err(TaskError::agent(format!("resuming {id}")))?;
        }
        if let Some(container) = locked(&self.containers).get_mut(id) {
            container.paused = pause;
        }
        if pause {
            self.events.paused(id).await;
        } else {
            self.events.resumed(id).await;
        }
        Ok(())
    }

    async fn do_pids(&self, req: &PidsRequest) -> TaskResult<PidsResponse> {
        self.ensure_container(&req.id)?;
        let pod = self.current_pod().await?;
        let request = ContainerRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        let list = pod
            .agent()
            .list_processes(pod.context(), &request)
            .await
            .map_err(TaskError::agent(format!(
                "listing the processes of {}",
                req.id
            )))?;
        Ok(PidsResponse {
            processes: list
                .processes
                .iter()
                .map(|p| ProcessInfo {
                    pid: p.pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn do_stats(&self, req: &StatsRequest) -> TaskResult<StatsResponse> {
        self.ensure_container(&req.id)?;
        let pod = self.current_pod().await?;
        let request = ContainerRequest {
            container_id: req.id.clone(),
            ..Default::default()
        };
        let stats = pod
            .agent()
            .stats_container(pod.context(), &request)
            .await
            .map_err(TaskError::agent(format!("stats of {}", req.id)))?;
        let metrics = metrics::to_cgroup_v2(&stats);
        let any = containerd_shim::util::convert_to_any(Box::new(metrics))
            .map_err(|err| TaskError::Internal(anyhow::anyhow!("encoding metrics: {err}")))?;
        Ok(StatsResponse {
            stats: Some(any).into(),
            ..Default::default()
        })
    }

    async fn do_update(&self, req: &UpdateTaskRequest) -> TaskResult<()> {
        self.ensure_container(&req.id)?;
        let pod = self.current_pod().await?;
        let resources_json = req
            .resources
            .as_ref()
            .map(|any| any.value.clone())
            .ok_or_else(|| TaskError::InvalidArgument("update without resources".into()))?;
        let request = UpdateContainerRequest {
            container_id: req.id.clone(),
            resources_json,
            ..Default::default()
        };
        pod.agent()
            .update_container(pod.context(), &request)
            .await
            .map_err(TaskError::agent(format!("updating {}", req.id)))?;
        Ok(())
    }

    async fn do_resize_pty(&self, req: &ResizePtyRequest) -> TaskResult<()> {
        let pod = self.current_pod().await?;
        let request = TtyWinResizeRequest {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            rows: req.height,
            columns: req.width,
            ..Default::default()
        };
        pod.agent()
            .tty_win_resize(pod.context(), &request)
            .await
            .map_err(TaskError::agent(format!(
                "resizing the terminal of {}",
                req.id
            )))?;
        Ok(())
    }

    fn do_close_io(&self, req: &CloseIORequest) -> TaskResult<()> {
        let mut containers = locked(&self.containers);
        let process = containers
            .get_mut(&req.id)
            .and_then(|c| c.process_mut(&req.exec_id))
            .ok_or_else(|| not_found(&req.id, &req.exec_id))?;
        if req.stdin {
            process.bridge.close_stdin();
        }
        Ok(())
    }

    async fn do_connect(&self, req: &ConnectRequest) -> TaskResult<ConnectResponse> {
        let task_pid = locked(&self.containers)
            .get(&req.id)
            .map(|c| c.init.pid)
            .ok_or_else(|| not_found(&req.id, ""))?;
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            ..Default::default()
        })
    }

    async fn do_shutdown(&self) {
        if !locked(&self.containers).is_empty() {
            return;
        }
        self.release_pod_if_unused().await;
        tracing::info!("no containers left: shim exits");
        self.exit_signal.signal();
    }
}

fn fifos_of(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> FifoPaths {
    FifoPaths {
        stdin: stdin.to_owned(),
        stdout: stdout.to_owned(),
        stderr: stderr.to_owned(),
        terminal,
    }
}

fn delete_response(process: &Process) -> DeleteResponse {
    let exit = process.exit();
    DeleteResponse {
        pid: process.pid,
        exit_status: exit.map(|e| e.status).unwrap_or_default(),
        exited_at: exit.map(|e| timestamp(e.at)).into(),
        ..Default::default()
    }
}

fn log_request(request: &str, id: &str, exec_id: &str) {
    tracing::debug!(id, exec = exec_id, "{request}");
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        log_request("create", &req.id, "");
        Ok(self.inner.do_create(req).await?)
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        log_request("start", &req.id, &req.exec_id);
        Ok(self.inner.do_start(req).await?)
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        log_request("delete", &req.id, &req.exec_id);
        Ok(self.inner.do_delete(req).await?)
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        log_request("kill", &req.id, &req.exec_id);
        self.inner.do_kill(req).await?;
        Ok(Empty::new())
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        log_request("exec", &req.id, &req.exec_id);
        self.inner.do_exec(&req)?;
        self.inner.events.exec_added(&req.id, &req.exec_id).await;
        Ok(Empty::new())
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        Ok(self.inner.do_state(&req)?)
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        log_request("wait", &req.id, &req.exec_id);
        Ok(self.inner.do_wait(&req).await?)
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        Ok(self.inner.do_pids(&req).await?)
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        log_request("pause", &req.id, "");
        self.inner.do_pause(&req.id, true).await?;
        Ok(Empty::new())
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        log_request("resume", &req.id, "");
        self.inner.do_pause(&req.id, false).await?;
        Ok(Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        Err(TaskError::Unimplemented(
            "checkpoint is not supported by cloak: a container's state lives in its pod VM's memory"
                .into(),
        )
        .into())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        log_request("close_io", &req.id, &req.exec_id);
        self.inner.do_close_io(&req)?;
        Ok(Empty::new())
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        self.inner.do_resize_pty(&req).await?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        log_request("update", &req.id, "");
        self.inner.do_update(&req).await?;
        Ok(Empty::new())
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        Ok(self.inner.do_stats(&req).await?)
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        Ok(self.inner.do_connect(&req).await?)
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        log_request("shutdown", "", "");
        self.inner.do_shutdown().await;
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cri_config_path_option_is_read() {
        // runtimeoptions.v1.Options { type_url = 1, config_path = 2 }
        let mut value = vec![0x0a, 1, b'x', 0x12, 8];
        value.extend_from_slice(b"/etc/c.t");
        let any = Any {
            type_url: "type.googleapis.com/runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(config_path_option(&any), Some(PathBuf::from("/etc/c.t")));
        let other = Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..any
        };
        assert_eq!(config_path_option(&other), None);
    }

    #[test]
    fn agent_exits_keep_their_time_and_bad_statuses_are_flagged() {
        let exit = exit_from_agent(3, 1_000_000_123);
        assert_eq!(exit.status, 3);
        assert_eq!(exit.at, UNIX_EPOCH + Duration::from_nanos(1_000_000_123));
        assert_eq!(exit_from_agent(-1, 0).status, VM_DIED_EXIT_STATUS);
    }
}
