//! A test pod: a real VM with the shared directory, the stdio router, a sandbox, and helpers to
//! run containers in it through the agent API exactly as the shim does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use cloak_host::PodVm;
use cloak_protocol::agent::{
    ContainerRequest, CreateContainerRequest, ExecProcessRequest, ProcessRequest,
    RemoveContainerRequest, SignalProcessRequest, StdioConfig, Storage, WaitProcessResponse,
};
use cloak_protocol::SHARED_DIR_IN_GUEST;
use oci_spec::runtime::Spec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::VmTestEnv;

/// Name of the shared busybox rootfs below the pod's shared directory.
pub const BUSYBOX_ROOTFS: &str = "rootfs-busybox";

pub struct TestPod {
    vm: Option<PodVm>,
    pub shared: tempfile::TempDir,
    pub run_root: tempfile::TempDir,
}

/// What a test wants connected.
#[derive(Debug, Clone, Copy, Default)]
pub struct Streams {
    pub stdin: bool,
    pub terminal: bool,
}

/// The host ends of a process's stdio.
pub struct ProcessStreams {
    pub stdin: Option<UnixStream>,
    pub stdout: UnixStream,
    pub stderr: Option<UnixStream>,
}

impl ProcessStreams {
    /// Reads stdout and stderr to EOF.
    pub async fn collect(self) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
        let stdout = read_all(self.stdout);
        let stderr = async {
            match self.stderr {
                Some(stream) => read_all(stream).await,
                None => Ok(Vec::new()),
            }
        };
        let (stdout, stderr) = tokio::join!(stdout, stderr);
        Ok((stdout?, stderr?))
    }
}

/// Reads `stream` to EOF (bounded, so a hung guest fails the test instead of stalling it).
pub async fn read_all(mut stream: UnixStream) -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut data))
        .await
        .context("no EOF on the stream within 120 s")??;
    Ok(data)
}

/// A runc-like default spec running `args` on the shared busybox rootfs.
pub fn busybox_spec(args: &[&str]) -> Spec {
    let mut spec = Spec::default();
    let mut process = spec
        .process()
        .clone()
        .expect("the default spec has a process");
    process.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    spec.set_hostname(Some("cloak-test".to_owned()));
    // `runc spec` (and oci-spec's default) makes the root readonly; containerd's images do not.
    let mut root = spec.root().clone().expect("the default spec has a root");
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    spec
}

impl TestPod {
    pub async fn boot(env: &VmTestEnv) -> anyhow::Result<Self> {
        Self::boot_with(env, |_| {}, &[]).await
    }

    /// A pod whose configuration `configure` adjusts, launched with `init_data`.
    pub async fn boot_with(
        env: &VmTestEnv,
        configure: impl FnOnce(&mut cloak_host::Configuration),
        init_data: &[u8],
    ) -> anyhow::Result<Self> {
        let shared = tempfile::tempdir()?;
        crate::rootfs::build_busybox_rootfs(&shared.path().join(BUSYBOX_ROOTFS))?;
        let run_root = tempfile::tempdir()?;
        let mut config = env.configuration(run_root.path());
        configure(&mut config);
        let setup = cloak_host::PodSetup {
            hostname: "cloak-pod".into(),
            shared_dir: shared.path().to_owned(),
            init_data: init_data.to_owned(),
            netns: None,
            resources: Default::default(),
        };
        let vm = PodVm::create_pod(&config, &env.manifest, "pod", &setup).await?;
        Ok(Self {
            vm: Some(vm),
            shared,
            run_root,
        })
    }

    pub fn vm(&self) -> &PodVm {
        self.vm.as_ref().expect("the pod VM runs until shutdown")
    }

    pub fn agent(&self) -> &cloak_protocol::agent_ttrpc::AgentServiceClient {
        self.vm().agent().agent()
    }

    pub fn console_log(&self) -> PathBuf {
        self.run_root.path().join("pod/console.log")
    }

    async fn open_streams(
        &self,
        container_id: &str,
        exec_id: &str,
        streams: Streams,
    ) -> anyhow::Result<(StdioConfig, ProcessStreams)> {
        let (stdio, config) = self
            .vm()
            .agent()
            .open_stdio(
                container_id,
                exec_id,
                cloak_host::stdio_streams::StdioWanted::output_and(streams.stdin, streams.terminal),
            )
            .await?;
        let handles = ProcessStreams {
            stdin: stdio.stdin,
            stdout: stdio.stdout.context("stdout is always opened")?,
            stderr: stdio.stderr,
        };
        Ok((config, handles))
    }

    /// CreateContainer on the busybox rootfs (overlay in guest memory unless `rootfs` says
    /// otherwise).
    pub async fn create(
        &self,
        id: &str,
        spec: &Spec,
        streams: Streams,
    ) -> anyhow::Result<ProcessStreams> {
        self.create_with_rootfs(
            id,
            spec,
            streams,
            &Path::new(SHARED_DIR_IN_GUEST).join(BUSYBOX_ROOTFS),
        )
        .await
    }

    pub async fn create_with_rootfs(
        &self,
        id: &str,
        spec: &Spec,
        streams: Streams,
        rootfs: &Path,
    ) -> anyhow::Result<ProcessStreams> {
        let rootfs = Storage {
            driver: "bind".into(),
            source: rootfs.display().to_string(),
            overlay_in_memory: true,
            ..Default::default()
        };
        self.create_with_storages(id, spec, streams, rootfs, Vec::new())
            .await
    }

    /// CreateContainer with `rootfs` and the request's `storages` as given (layered roots).
    pub async fn create_with_storages(
        &self,
        id: &str,
        spec: &Spec,
        streams: Streams,
        rootfs: Storage,
        storages: Vec<Storage>,
    ) -> anyhow::Result<ProcessStreams> {
        let (stdio, handles) = self.open_streams(id, "", streams).await?;
        let request = CreateContainerRequest {
            container_id: id.to_owned(),
            oci_spec_json: serde_json::to_vec(spec)?,
            rootfs: Some(rootfs).into(),
            storages,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.agent().create_container(ctx(), &request).await?;
        Ok(handles)
    }

    pub async fn start(&self, id: &str) -> anyhow::Result<()> {
        let request = ContainerRequest {
            container_id: id.to_owned(),
            ..Default::default()
        };
        self.agent().start_container(ctx(), &request).await?;
        Ok(())
    }

    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        args: &[&str],
        streams: Streams,
    ) -> anyhow::Result<ProcessStreams> {
        let spec = busybox_spec(args);
        let mut process = spec.process().clone().expect("busybox_spec has a process");
        process.set_terminal(Some(streams.terminal));
        let (stdio, handles) = self.open_streams(id, exec_id, streams).await?;
        let request = ExecProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            process_json: serde_json::to_vec(&process)?,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        self.agent().exec_process(ctx(), &request).await?;
        Ok(handles)
    }

    /// Runs `args` as exec `exec_id` in container `id`: its exit status, and its stdout then
    /// stderr as text.
    pub async fn run_exec(&self, id: &str, exec_id: &str, args: &[&str]) -> (i32, String) {
        let streams = self
            .exec(id, exec_id, args, Streams::default())
            .await
            .unwrap_or_else(|err| panic!("exec {args:?}: {err:#}"));
        let (stdout, stderr) = streams
            .collect()
            .await
            .unwrap_or_else(|err| panic!("output of {args:?}: {err:#}"));
        let status = self
            .wait(id, exec_id)
            .await
            .unwrap_or_else(|err| panic!("wait for {args:?}: {err:#}"))
            .exit_status;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
        (status, text)
    }

    /// `run_exec` of a command that must succeed: its output.
    pub async fn run_exec_text(&self, id: &str, exec_id: &str, args: &[&str]) -> String {
        let (status, text) = self.run_exec(id, exec_id, args).await;
        assert_eq!(status, 0, "{args:?}: {text}");
        text
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> anyhow::Result<WaitProcessResponse> {
        let request = ProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        Ok(self
            .agent()
            .wait_process(ttrpc::context::with_timeout(0), &request)
            .await?)
    }

    pub async fn signal(&self, id: &str, exec_id: &str, signal: i32) -> anyhow::Result<()> {
        let request = SignalProcessRequest {
            container_id: id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal: signal as u32,
            ..Default::default()
        };
        self.agent().signal_process(ctx(), &request).await?;
        Ok(())
    }

    pub async fn remove(&self, id: &str) -> anyhow::Result<()> {
        let request = RemoveContainerRequest {
            container_id: id.to_owned(),
            timeout_secs: 5,
            ..Default::default()
        };
        self.agent().remove_container(ctx(), &request).await?;
        Ok(())
    }

    /// Create, start, collect output, wait, remove: a whole `docker run`.
    pub async fn run(
        &self,
        id: &str,
        spec: &Spec,
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<RunOutput> {
        let streams = self
            .create(
                id,
                spec,
                Streams {
                    stdin: stdin.is_some(),
                    terminal: false,
                },
            )
            .await?;
        self.start(id).await?;
        if let (Some(data), Some(mut stream)) = (stdin, streams.stdin) {
            let data = data.to_vec();
            tokio::spawn(async move {
                let _ = stream.write_all(&data).await;
                let _ = stream.shutdown().await;
            });
        }
        let output = ProcessStreams {
            stdin: None,
            ..streams
        }
        .collect()
        .await?;
        let exit = self.wait(id, "").await?;
        self.remove(id).await?;
        Ok(RunOutput {
            stdout: output.0,
            stderr: output.1,
            exit_status: exit.exit_status,
        })
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(vm) = self.vm.take() {
            vm.shutdown().await;
        }
        Ok(())
    }
}

pub struct RunOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit_status: i32,
}

impl std::fmt::Debug for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOutput")
            .field("stdout", &String::from_utf8_lossy(&self.stdout))
            .field("stderr", &String::from_utf8_lossy(&self.stderr))
            .field("exit_status", &self.exit_status)
            .finish()
    }
}

impl RunOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

/// Runs `body` on a freshly booted busybox pod (in the VM slot), then shuts the pod down; the
/// guest console is printed if `body` panics. Skips (saying why) where the pod cannot run.
#[allow(clippy::unwrap_used, clippy::panic)] // a test helper fails loudly by design
pub fn with_pod(test: &str, body: impl AsyncFnOnce(&TestPod)) {
    use futures::FutureExt as _;
    let Some(env) = crate::VmTestEnv::get(test) else {
        return;
    };
    if let Err(reason) = crate::rootfs::busybox_available() {
        crate::skip(test, &reason);
        return;
    }
    let _slot = crate::vm_slot();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pod = TestPod::boot(&env)
            .await
            .unwrap_or_else(|err| panic!("pod boot: {err:#}"));
        let console = pod.console_log();
        let result = std::panic::AssertUnwindSafe(body(&pod))
            .catch_unwind()
            .await;
        if let Err(panic) = result {
            eprintln!(
                "--- guest console ---\n{}",
                std::fs::read_to_string(&console).unwrap_or_default()
            );
            std::panic::resume_unwind(panic);
        }
        pod.shutdown().await.unwrap_or_else(|err| {
            panic!(
                "shutdown: {err:#}\n{}",
                std::fs::read_to_string(console).unwrap_or_default()
            )
        });
    });
}
