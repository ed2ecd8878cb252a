//! The shim server logs with `tracing` into the `log` fifo containerd opens in the bundle
//! directory (the shim's working directory); containerd copies it into its own log.

use std::fs::OpenOptions;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber; `debug` comes from containerd's `-debug` flag, `RUST_LOG`
/// overrides both. Without the fifo (run by hand) the log goes to stderr.
pub fn init(debug: bool) {
    let default = if debug { "debug" } else { "info" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_target(false);
    let installed = match OpenOptions::new().write(true).open("log") {
        Ok(fifo) => builder.with_writer(Mutex::new(fifo)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
    if let Err(err) = installed {
        eprintln!("containerd-shim-cloak-v2: installing the logger: {err}");
    }
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "shim panicked");
    }));
}
