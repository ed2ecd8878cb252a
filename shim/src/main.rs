//! `containerd-shim-cloak-v2`: containerd starts it for `runtime_type =
//! "io.containerd.cloak.v2"`; it runs each pod's containers in one cloak VM.
//!
//! Actions (containerd's runtime v2 shim protocol): `start` spawns or finds the pod's shim
//! server and prints its address, `delete` cleans up after a dead shim, and no action (with
//! `-socket`) is the server itself.

use cloak_shim::service::{cleanup, server, start, RUNTIME_ID};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<_> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(&args[1..]) {
        Ok(flags) => flags,
        Err(err) => {
            eprintln!("{RUNTIME_ID}: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if flags.version {
        // The version is the command's output, not a log line.
        use std::io::Write;
        let _ = writeln!(
            std::io::stdout(),
            "containerd-shim-cloak-v2 {}",
            env!("CARGO_PKG_VERSION")
        );
        return std::process::ExitCode::SUCCESS;
    }
    let result = match flags.action.as_str() {
        "start" => start::run(flags).await.map_err(anyhow::Error::from),
        "delete" => cleanup::run_delete(&flags),
        "" => server::serve(flags).await,
        other => Err(anyhow::anyhow!("unknown action {other:?}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{RUNTIME_ID}: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
