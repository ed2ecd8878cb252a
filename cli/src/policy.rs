//! `cloak policy generate`: writes a pod's init-data (its agent policy, pinned from the pod's
//! YAML and its local images) and, if asked, the YAML with the init-data annotation; prints
//! the HOST_DATA the init-data binds, for the verifier's reference values.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use cloak_policy_gen::{generate, ImageStore, Options};

#[derive(Subcommand)]
pub(crate) enum PolicyCommand {
    /// Pin a pod's containers from its YAML and images into an agent policy and init-data.
    Generate(GenerateArgs),
}

#[derive(Args)]
pub(crate) struct GenerateArgs {
    /// The pod: a Pod, Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob (YAML,
    /// other documents such as Services are passed through).
    #[arg(long)]
    pod: PathBuf,
    /// An OCI image archive holding the pod's images (`ctr images export`); repeatable.
    #[arg(long = "images")]
    images: Vec<PathBuf>,
    /// Take the images from containerd's content store instead (`ctr images export` of the
    /// images the pod names, in this namespace).
    #[arg(long)]
    containerd_namespace: Option<String>,
    /// containerd's socket, with --containerd-namespace.
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    containerd_address: String,
    /// containerd's client, with --containerd-namespace.
    #[arg(long, default_value = "ctr")]
    ctr: PathBuf,
    /// The CRI plugin's sandbox (pause) image.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    sandbox_image: String,
    /// The namespace of a workload whose metadata names none.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Allow an exec: `CONTAINER=CMD ARG...` (split on spaces); repeatable.
    #[arg(long = "allow-exec")]
    allow_exec: Vec<String>,
    /// Let the host ask the agent for attestation reports with data it chooses.
    #[arg(long)]
    allow_host_reports: bool,
    /// Let the host port-forward to this port of the pod (`kubectl port-forward`); repeatable.
    #[arg(long = "allow-port-forward")]
    allow_port_forward: Vec<u16>,
    /// The init-data's digest algorithm.
    #[arg(long, default_value = "sha256", value_parser = ["sha256", "sha384", "sha512"])]
    algorithm: String,
    /// Where to write the init-data (TOML).
    #[arg(long)]
    out: PathBuf,
    /// Also write the pod YAML with the init-data annotation here.
    #[arg(long)]
    annotate: Option<PathBuf>,
}

pub(crate) fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Generate(args) => run_generate(args),
    }
}

fn run_generate(args: GenerateArgs) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(&args.pod)
        .with_context(|| format!("reading {}", args.pod.display()))?;
    let mut images = ImageStore::default();
    for archive in &args.images {
        images
            .add_archive(archive)
            .with_context(|| format!("images in {}", archive.display()))?;
    }
    let export_dir = tempfile::tempdir().context("a directory for the exported images")?;
    if let Some(namespace) = &args.containerd_namespace {
        let archive = export_dir.path().join("images.tar");
        export_from_containerd(&args, namespace, &yaml, &archive)?;
        images.add_archive(&archive)?;
    }
    let execs = args
        .allow_exec
        .iter()
        .map(|spec| {
            let (container, command) = spec
                .split_once('=')
                .with_context(|| format!("--allow-exec {spec:?} is not CONTAINER=CMD ARG..."))?;
            let argv: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
            anyhow::ensure!(!argv.is_empty(), "--allow-exec {spec:?} names no command");
            Ok((container.to_owned(), argv))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = Options {
        images,
        sandbox_image: args.sandbox_image.clone(),
        namespace: args.namespace.clone(),
        execs,
        host_reports: args.allow_host_reports,
        port_forward: args.allow_port_forward.clone(),
        algorithm: cloak_init_data::Algorithm::named(&args.algorithm)?,
    };
    let generated = generate(&yaml, &options)?;
    std::fs::write(&args.out, &generated.init_data)
        .with_context(|| format!("writing {}", args.out.display()))?;
    if let Some(path) = &args.annotate {
        std::fs::write(path, &generated.annotated_yaml)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let host_data = cloak_init_data::host_data_for(generated.init_data.as_bytes())?;
    let containers: Vec<&str> = generated
        .policy_data
        .containers
        .iter()
        .map(|entry| {
            if entry.name.is_empty() {
                "(sandbox)"
            } else {
                entry.name.as_str()
            }
        })
        .collect();
    #[allow(clippy::print_stdout)] // the command's output
    {
        println!("init-data: {}", args.out.display());
        println!("containers: {}", containers.join(", "));
        println!("host_data: {}", hex::encode(host_data));
    }
    Ok(())
}

/// `ctr images export` of the images the pod names (and the sandbox image).
fn export_from_containerd(
    args: &GenerateArgs,
    namespace: &str,
    yaml: &str,
    archive: &std::path::Path,
) -> anyhow::Result<()> {
    let mut names = cloak_policy_gen::image_names(yaml)?;
    names.push(cloak_policy_gen::image::normalize(&args.sandbox_image));
    names.sort();
    names.dedup();
    let status = std::process::Command::new(&args.ctr)
        .args([
            "--address",
            &args.containerd_address,
            "--namespace",
            namespace,
        ])
        .args(["images", "export", "--platform", "linux/amd64"])
        .arg(archive)
        .args(&names)
        .status()
        .context("running ctr (containerd's client) to export the images")?;
    anyhow::ensure!(
        status.success(),
        "ctr images export {names:?} failed: {status}"
    );
    Ok(())
}
