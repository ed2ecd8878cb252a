//! `cloak`: the operator's tool. `cloak image build` makes the guest image; `cloak probe` boots
//! a throwaway pod VM with it and reports what the agent says; `cloak run` runs one container
//! from a root filesystem directory in its own pod VM; `cloak measure` prints the SEV-SNP
//! launch digest a verifier should expect; `cloak attest verify` checks a report.

mod attest;
mod cache;
mod check;
mod firmware;
mod image;
mod install;
mod kbs;
mod measure;
mod policy;
mod probe;
mod run;
mod runtime_args;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cloak",
    version,
    about = "cloak confidential container runtime"
)]
struct Cli {
    /// Log filter (also RUST_LOG).
    #[arg(long, global = true, env = "CLOAK_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Guest image commands.
    Image {
        #[command(subcommand)]
        command: image::ImageCommand,
    },
    /// Boot a pod VM with the configured guest image, query the agent, shut it down.
    Probe(probe::ProbeArgs),
    /// Run one container from a root filesystem directory in a fresh pod VM.
    Run(run::RunArgs),
    /// Report what this host can do for cloak (virtualization, SEV-SNP, firmware) and why not.
    Check(check::CheckArgs),
    /// Install cloak under --root: binaries, guest image, configuration, containerd runtimes.
    Install(install::InstallArgs),
    /// Take out what `cloak install` put under --root.
    Uninstall(install::UninstallArgs),
    /// Attestation reports.
    Attest {
        #[command(subcommand)]
        command: attest::AttestCommand,
    },
    /// The node's cache of layer images for confidential pods.
    Cache {
        #[command(subcommand)]
        command: cache::CacheCommand,
    },
    /// Agent policies of confidential pods.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The embedded key broker (Trustee's KBS protocol) and sealed secrets.
    Kbs {
        #[command(subcommand)]
        command: kbs::KbsCommand,
    },
    /// The OVMF AmdSev firmware SNP pods boot with (qemu backend).
    Firmware {
        #[command(subcommand)]
        command: firmware::FirmwareCommand,
    },
    /// Print the SEV-SNP launch digest of a guest (the flags of `sev-snp-measure`).
    Measure(measure::MeasureArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Image { command } => image::run(command),
        Command::Probe(args) => probe::run(args),
        Command::Measure(args) => measure::run(args),
        Command::Firmware { command } => firmware::run(command),
        Command::Policy { command } => policy::run(command),
        Command::Cache { command } => cache::run(command),
        Command::Kbs { command } => kbs::run(command),
        Command::Check(args) => check::run(args),
        Command::Install(args) => install::install(args),
        Command::Uninstall(args) => install::uninstall(args),
        Command::Attest { command } => match attest::run(command) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(err) => Err(err),
        },
        Command::Run(args) => match run::run(args) {
            Ok(code) => return std::process::ExitCode::from(code),
            Err(err) => Err(err),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cloak: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
