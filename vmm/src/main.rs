//! `cloak-vmm`: runs a VM on KVM. `cloak-vmm run` boots a Linux kernel and initrd through the
//! direct-launch plan with the given devices (what the shim starts for a pod); `cloak-vmm
//! tiny` (built with feature `test-guests` only) boots a raw real-mode image (what hosts whose
//! KVM cannot boot Linux run, and what the start-up benchmark measures). Both exit 0 when the guest resets the machine, 1 on a
//! failure, and stop the VM on SIGTERM or SIGINT.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
#[cfg(feature = "test-guests")]
use cloak_vmm::TinyVmConfig;
use cloak_vmm::{DirectVmConfig, RunningVm, SeccompLevel, VirtioSpec, VmExitReason};

#[derive(Parser)]
#[command(name = "cloak-vmm", about = "cloak's micro-VMM on KVM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a Linux kernel (bzImage) and initrd from the direct-launch plan.
    Run(Box<RunArgs>),
    /// Boot a raw 16-bit real-mode image (code and data below 64 KiB).
    #[cfg(feature = "test-guests")]
    Tiny(TinyArgs),
    /// Print the SEV-SNP launch digest of the direct-launch plan cloak-vmm loads for this
    /// kernel, initrd and command line (`cloak measure --backend cloak-vmm` must agree).
    PlanDigest(PlanArgs),
}

/// What a direct launch boots: the inputs of its plan.
#[derive(clap::Args)]
struct LaunchArgs {
    #[arg(long)]
    kernel: PathBuf,
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long, default_value = "")]
    append: String,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    #[arg(long, default_value_t = 512)]
    memory_mib: u32,
    /// SEV_FEATURES of the VMSAs.
    #[arg(long, default_value = "0x1", value_parser = parse_number)]
    guest_features: u64,
    /// Encryption bit of guest page tables (this CPU's CPUID Fn8000_001F EBX[5:0]).
    #[arg(long, default_value_t = cloak_launch::direct::DEFAULT_C_BIT)]
    c_bit: u8,
}

impl LaunchArgs {
    fn launch(&self) -> anyhow::Result<cloak_launch::direct::DirectLaunch> {
        let mut launch = cloak_launch::direct::DirectLaunch::from_files(
            &self.kernel,
            self.initrd.as_deref(),
            &self.append,
            self.memory_mib,
            self.vcpus,
        )?;
        launch.guest_features = self.guest_features;
        launch.c_bit = self.c_bit;
        Ok(launch)
    }
}

#[derive(clap::Args)]
struct PlanArgs {
    #[command(flatten)]
    launch: LaunchArgs,
}

fn plan_digest(args: PlanArgs) -> anyhow::Result<()> {
    let launch = args.launch.launch()?;
    // The very plan boot_direct loads.
    let plan = cloak_vmm::direct_boot::plan_of(&launch)?;
    writeln!(std::io::stdout(), "{}", plan.digest()?)?;
    Ok(())
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    launch: LaunchArgs,
    /// Serial console output: a file, or "-" for standard output.
    #[arg(long, default_value = "-")]
    console: String,
    /// virtio-vsock host socket (hybrid vsock), with --cid.
    #[arg(long)]
    vsock: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    cid: u64,
    /// virtio-blk disk: PATH, or PATH,ro for read-only (repeat for more).
    #[arg(long)]
    disk: Vec<String>,
    /// virtio-rng fed by the host.
    #[arg(long)]
    rng: bool,
    /// virtio-fs: the vhost-user socket of a virtiofsd, with --fs-tag.
    #[arg(long)]
    fs_socket: Option<PathBuf>,
    #[arg(long, default_value = "cloak")]
    fs_tag: String,
    /// virtio-net on this tap device, with --mac.
    #[arg(long)]
    tap: Option<String>,
    #[arg(long, value_parser = parse_mac, default_value = "02:00:00:00:00:01")]
    mac: [u8; 6],
    /// Launch as an SEV-SNP guest (the same plan through SNP_LAUNCH_*).
    #[arg(long)]
    snp: bool,
    /// What a syscall outside a thread's seccomp list does.
    #[arg(long, value_enum, default_value_t = SeccompLevel::Kill)]
    seccomp: SeccompLevel,
    /// SNP guest policy.
    #[arg(long, default_value = "0x30000", value_parser = parse_number)]
    snp_policy: u64,
    /// HOST_DATA bound into the guest's reports: 64 hex digits (the init-data's SHA-256).
    #[arg(long, value_parser = parse_host_data)]
    host_data: Option<[u8; 32]>,
}

fn parse_host_data(text: &str) -> Result<[u8; 32], String> {
    let bytes = hex::decode(text).map_err(|err| format!("{text:?}: {err}"))?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| format!("HOST_DATA is 32 bytes, not {}", bytes.len()))
}

fn parse_mac(text: &str) -> Result<[u8; 6], String> {
    cloak_vmm::devices::virtio_net::parse_mac(text)
        .ok_or_else(|| format!("{text:?} is not a MAC address (xx:xx:xx:xx:xx:xx)"))
}

fn console_writer(console: &str) -> anyhow::Result<Box<dyn std::io::Write + Send>> {
    Ok(if console == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(std::fs::File::create(console).with_context(|| format!("creating {console}"))?)
    })
}

fn install_stop_handlers() -> anyhow::Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        vmm_sys_util::signal::register_signal_handler(signal, request_stop)
            .context("installing the stop signal handlers")?;
    }
    Ok(())
}

/// Confines the main thread, then runs until the guest ends the VM or a stop signal arrives.
fn supervise(vm: RunningVm, seccomp: SeccompLevel) -> anyhow::Result<VmExitReason> {
    if let Err(err) =
        cloak_vmm::seccomp::install(cloak_vmm::seccomp::ThreadRole::Supervisor, seccomp)
    {
        let _ = vm.stop();
        return Err(err.into());
    }
    Ok(watch(vm))
}

fn watch(vm: RunningVm) -> VmExitReason {
    loop {
        if let Some(reason) = vm.wait(Duration::from_millis(50)) {
            vm.stop();
            return reason;
        }
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return vm.stop();
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<VmExitReason> {
    let mut launch = args.launch.launch()?;
    if !args.snp {
        // Plain KVM: no memory encryption, so no C-bit in the page tables.
        launch.c_bit = cloak_launch::direct::NO_C_BIT;
    }
    let mut devices = Vec::new();
    if let Some(socket) = args.vsock {
        devices.push(VirtioSpec::Vsock {
            guest_cid: args.cid,
            socket,
        });
    }
    for disk in &args.disk {
        let (path, read_only) = match disk.strip_suffix(",ro") {
            Some(path) => (path, true),
            None => (disk.as_str(), false),
        };
        devices.push(VirtioSpec::Block {
            path: path.into(),
            read_only,
        });
    }
    if let Some(tap) = args.tap {
        devices.push(VirtioSpec::Net { tap, mac: args.mac });
    }
    if let Some(socket) = args.fs_socket {
        devices.push(VirtioSpec::Fs {
            socket,
            tag: args.fs_tag,
        });
    }
    if args.rng {
        devices.push(VirtioSpec::Rng);
    }
    install_stop_handlers()?;
    let config = DirectVmConfig {
        launch,
        console: console_writer(&args.console)?,
        devices,
        seccomp: args.seccomp,
    };
    let vm = if args.snp {
        RunningVm::boot_snp(
            config,
            cloak_vmm::SnpSettings {
                policy: args.snp_policy,
                host_data: args.host_data.unwrap_or_default(),
            },
        )?
    } else {
        RunningVm::boot_direct(config)?
    };
    supervise(vm, args.seccomp)
}

#[cfg(feature = "test-guests")]
#[derive(clap::Args)]
struct TinyArgs {
    /// The image, loaded at --load-address.
    #[arg(long)]
    image: PathBuf,
    #[arg(long, default_value = "0x1000", value_parser = parse_number)]
    load_address: u64,
    /// Entry offset of each vCPU (repeat for more vCPUs); default: the load address.
    #[arg(long, value_parser = parse_number)]
    entry: Vec<u64>,
    #[arg(long, default_value_t = 4)]
    memory_mib: u32,
    /// Serial console output: a file, or "-" for standard output.
    #[arg(long, default_value = "-")]
    console: String,
    /// What a syscall outside a thread's seccomp list does.
    #[arg(long, value_enum, default_value_t = SeccompLevel::Kill)]
    seccomp: SeccompLevel,
    /// Once the VM runs, make a syscall no thread may make (socket(2) on the supervising
    /// thread): the test that the filters are in force.
    #[arg(long, hide = true)]
    seccomp_probe: bool,
}

fn parse_number(text: &str) -> Result<u64, String> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|err| format!("{text:?}: {err}"))
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

#[cfg(feature = "test-guests")]
fn tiny(args: TinyArgs) -> anyhow::Result<VmExitReason> {
    let image =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let console = console_writer(&args.console)?;
    let entries = if args.entry.is_empty() {
        vec![args.load_address]
    } else {
        args.entry
    };
    let entries = entries
        .into_iter()
        .map(|entry| u16::try_from(entry).context("entries are 16-bit offsets"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    install_stop_handlers()?;
    let vm = RunningVm::boot_tiny(TinyVmConfig {
        memory_mib: args.memory_mib,
        image,
        load_address: args.load_address,
        entries,
        console,
        virtio_mmio: Vec::new(),
        seccomp: args.seccomp,
    })?;
    if args.seccomp_probe {
        if let Err(err) =
            cloak_vmm::seccomp::install(cloak_vmm::seccomp::ThreadRole::Supervisor, args.seccomp)
        {
            let _ = vm.stop();
            return Err(err.into());
        }
        // SAFETY: socket(2) takes integers and returns a descriptor or -1; under the filter
        // it does not return at all.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        let _ = vm.stop();
        anyhow::bail!("socket(2) was allowed under the supervisor's filter (fd {fd})");
    }
    supervise(vm, args.seccomp)
}

/// The error and its causes, each cause once: library errors already name their source in
/// their own message, which `{:#}` would repeat.
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&cause);
        }
    }
    text
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CLOAK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Run(args) => run(*args),
        #[cfg(feature = "test-guests")]
        Command::Tiny(args) => tiny(args),
        Command::PlanDigest(args) => {
            return match plan_digest(args) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(err) => {
                    let _ = writeln!(std::io::stderr(), "cloak-vmm: {}", describe(&err));
                    std::process::ExitCode::FAILURE
                }
            };
        }
    };
    let mut stderr = std::io::stderr();
    match result {
        Ok(VmExitReason::Failed(reason)) => {
            let _ = writeln!(stderr, "cloak-vmm: the VM failed: {reason}");
            std::process::ExitCode::FAILURE
        }
        Ok(reason) => {
            let _ = writeln!(stderr, "cloak-vmm: VM ended: {reason:?}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            let _ = writeln!(stderr, "cloak-vmm: {}", describe(&err));
            std::process::ExitCode::FAILURE
        }
    }
}
