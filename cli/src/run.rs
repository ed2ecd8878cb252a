//! `cloak run --rootfs DIR -- CMD...`: one container in its own pod VM, without containerd —
//! for trying a node and for debugging images. The rootfs is bind-mounted read-only into the
//! pod's shared directory; the container writes to an overlay in guest memory.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use cloak_host::config::Configuration;
use cloak_host::host_mounts;
use cloak_host::pod_vm::guest_path;
use cloak_host::stdio_streams::StdioWanted;
use cloak_host::{PodSetup, PodVm};
use cloak_protocol::agent::{
    ContainerRequest, CreateContainerRequest, ProcessRequest, RemoveContainerRequest, Storage,
};
use nix::mount::{umount2, MntFlags};
use tokio::io::AsyncWriteExt;

use crate::runtime_args::RuntimeArgs;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// Root filesystem directory of the container.
    #[arg(long)]
    rootfs: PathBuf,
    #[command(flatten)]
    runtime: RuntimeArgs,
    /// Hostname of the pod and the container.
    #[arg(long, default_value = "cloak")]
    hostname: String,
    /// The pod's init-data, an initdata TOML document (agent policy and settings); its digest
    /// becomes HOST_DATA of a TEE launch.
    #[arg(long)]
    init_data: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs the container; returns its exit status (as a process exit code).
pub(crate) fn run(args: RunArgs) -> anyhow::Result<u8> {
    let config = args.runtime.configuration()?;
    let rootfs = args
        .rootfs
        .canonicalize()
        .with_context(|| format!("rootfs {}", args.rootfs.display()))?;
    let id = format!("run-{}", std::process::id());
    let shared = config.runtime.run_dir.join(format!("{id}-shared"));
    let staged = shared.join("rootfs");
    std::fs::create_dir_all(&staged).with_context(|| format!("creating {}", staged.display()))?;
    let result = host_mounts::bind(&rootfs, &staged, true)
        .context("bind-mounting the rootfs into the pod's shared directory")
        .and_then(|()| {
            let runtime = tokio::runtime::Runtime::new().context("creating the async runtime")?;
            runtime.block_on(run_in_pod(&config, &id, &shared, &args))
        });
    let _ = umount2(&staged, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_dir(&staged);
    let _ = std::fs::remove_dir(&shared);
    // A one-shot VM: its run directory (console log included) goes with it unless it failed.
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(config.runtime.run_dir.join(&id));
    }
    result
}

fn spec_for(args: &RunArgs) -> anyhow::Result<Vec<u8>> {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut process = spec
        .process()
        .clone()
        .context("the default spec has a process")?;
    process.set_args(Some(args.command.clone()));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    let mut root = spec.root().clone().context("the default spec has a root")?;
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    spec.set_hostname(Some(args.hostname.clone()));
    Ok(serde_json::to_vec(&spec)?)
}

async fn run_in_pod(
    config: &Configuration,
    id: &str,
    shared: &Path,
    args: &RunArgs,
) -> anyhow::Result<u8> {
    let manifest = cloak_image::Manifest::load(&config.guest.image_dir)?;
    let init_data = match &args.init_data {
        Some(path) => {
            let document =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            cloak_init_data::InitData::parse(&document)
                .with_context(|| format!("--init-data {}", path.display()))?;
            document
        }
        None => Vec::new(),
    };
    let setup = PodSetup {
        hostname: args.hostname.clone(),
        shared_dir: shared.to_owned(),
        init_data,
        netns: None,
        // `cloak run` has no pod limits: the configured size.
        resources: Default::default(),
    };
    let pod = PodVm::create_pod(config, &manifest, id, &setup).await?;
    let result = run_container(&pod, args).await;
    pod.shutdown().await;
    result
}

async fn run_container(pod: &PodVm, args: &RunArgs) -> anyhow::Result<u8> {
    let container_id = "main";
    let client = pod.agent();
    let (stdio, stdio_config) = client
        .open_stdio(container_id, "", StdioWanted::output_and(false, false))
        .await?;
    let request = CreateContainerRequest {
        container_id: container_id.to_owned(),
        oci_spec_json: spec_for(args)?,
        rootfs: Some(Storage {
            driver: "bind".into(),
            source: guest_path(Path::new("rootfs")).display().to_string(),
            overlay_in_memory: true,
            ..Default::default()
        })
        .into(),
        stdio: Some(stdio_config).into(),
        ..Default::default()
    };
    let agent = client.agent();
    let context = || client.context();
    agent
        .create_container(context(), &request)
        .await
        .context("creating the container")?;
    let container = ContainerRequest {
        container_id: container_id.to_owned(),
        ..Default::default()
    };
    agent
        .start_container(context(), &container)
        .await
        .context("starting the container")?;
    let copy_out = copy_to(stdio.stdout, tokio::io::stdout());
    let copy_err = copy_to(stdio.stderr, tokio::io::stderr());
    let (out, err) = tokio::join!(copy_out, copy_err);
    out.and(err).context("copying the container's output")?;
    let wait = ProcessRequest {
        container_id: container_id.to_owned(),
        ..Default::default()
    };
    let exit = agent
        .wait_process(ttrpc::context::with_timeout(0), &wait)
        .await
        .context("waiting for the container")?;
    let remove = RemoveContainerRequest {
        container_id: container_id.to_owned(),
        ..Default::default()
    };
    agent
        .remove_container(context(), &remove)
        .await
        .context("removing the container")?;
    Ok(u8::try_from(exit.exit_status).unwrap_or(255))
}

async fn copy_to(
    stream: Option<tokio::net::UnixStream>,
    mut to: impl tokio::io::AsyncWrite + Unpin,
) -> std::io::Result<()> {
    if let Some(mut stream) = stream {
        tokio::io::copy(&mut stream, &mut to).await?;
        to.flush().await?;
    }
    Ok(())
}
