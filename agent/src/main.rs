//! cloak-agent: PID 1 of a cloak pod VM.
//!
//! Boot order: panic hook and console logging first (so every later failure is visible), then
//! the base filesystems, then kernel modules, then the ttrpc server on vsock. Any fatal error —
//! returned or panicked — is printed on the console and the VM is powered off: PID 1 must never
//! hang, or the host would wait for an agent that will not come.

mod attestation;
mod block;
mod cmdline;
mod container;
mod error;
mod guest_details;
mod layers;
mod modules;
mod mounts;
mod network;
mod policy;
mod port_forward;
mod power;
mod ready;
mod reaper;
mod rpc;
mod sandbox;
mod secrets;
mod state;
mod storage;
mod vsock_accept;

use std::time::Duration;

use anyhow::Context as _;

fn main() {
    install_panic_hook();
    let is_init = std::process::id() == 1;
    // /proc must be mounted before the settings on the kernel command line can be read, and
    // logging is configured by those settings: a mount failure is reported with eprintln.
    let mounted = if is_init {
        mounts::mount_base_filesystems().context("mounting base filesystems")
    } else {
        Ok(())
    };
    let settings = cmdline::AgentSettings::from_proc_cmdline();
    init_logging(&settings.log_level);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        pid1 = is_init,
        "cloak-agent starting"
    );

    let result = mounted.and_then(|()| run(&settings, is_init));
    match result {
        Ok(()) => {
            tracing::info!("agent finished, powering off");
        }
        Err(err) => {
            // `{:#}` prints the whole context chain on one line, which survives console capture.
            tracing::error!(error = format!("{err:#}"), "fatal error in cloak-agent");
            eprintln!("cloak-agent: fatal: {err:#}");
        }
    }
    if is_init {
        power::power_off();
    }
    std::process::exit(1);
}

fn run(settings: &cmdline::AgentSettings, is_init: bool) -> anyhow::Result<()> {
    let loaded_modules = modules::load_listed_modules(std::path::Path::new(modules::MODULE_LIST));
    if is_init {
        network::bring_up_loopback().context("configuring loopback")?;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("creating the async runtime")?;
    runtime.block_on(async {
        let state = state::AgentState::new(loaded_modules);
        if is_init {
            reaper::spawn_orphan_reaper(state.reaper.clone()).context("starting the reaper")?;
        }
        rpc::serve(state, settings).await
    })?;
    // Give in-flight replies (DestroySandbox's own answer) a moment on the wire.
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .init();
}

/// A panic in PID 1 would otherwise make the kernel panic with a bare "Attempted to kill init";
/// print the real cause first, then power off deliberately.
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("cloak-agent: panic: {info}");
        default_hook(info);
        if std::process::id() == 1 {
            power::power_off();
        }
    }));
}
