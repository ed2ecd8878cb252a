//! `containerd-shim-cloak-v2`: containerd starts it for `runtime_type =
//! "io.containerd.cloak.v2"`; it runs each pod's containers in one cloak VM.
//!
//! Actions (containerd's runtime v2 shim protocol): `start` spawns or finds the pod's shim
//! server and prints its address, `delete` cleans up after a dead shim, and no action (with
//! `-socket`) is the server itself.

use cloak_shim::service::{cleanup, server, start, RUNTIME_ID};

/// Worker threads of the shim's runtime. One shim runs per pod, and tokio's default is one
/// worker per host CPU: on a 64-core node that is 64 threads (stacks, allocator arenas) per
/// pod for a server whose work is relaying requests and streams. Blocking work goes to the
/// blocking pool, which grows on demand.
const WORKER_THREADS: usize = 2;

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("{RUNTIME_ID}: starting the async runtime: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> std::process::ExitCode {
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
