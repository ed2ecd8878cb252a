//! The `start` action. containerd (1.6 to 2.2) runs `containerd-shim-cloak-v2 ... start` in the
//! bundle directory and reads the shim's ttrpc address from its stdout. The shim library
//! answers `start` in the JSON form only containerd 2.x understands; every containerd since
//! 1.6 accepts a bare address (task API v2), so cloak answers `start` itself (server.rs
//! serves both task API names).

use std::io::{Read, Write};

use containerd_shim::{Error, Flags, StartOpts};

use super::bundle;

/// Starts (or finds) the shim server of the container's pod; returns its address.
pub async fn spawn_server(opts: StartOpts) -> containerd_shim::Result<String> {
    let bundle = std::env::current_dir()
        .map_err(|err| Error::Other(format!("the bundle directory: {err}")))?;
    let spec = bundle::read_spec(&bundle).map_err(|err| Error::InvalidArgument(err.to_string()))?;
    // Containers of one pod share the shim: its socket name is derived from the pod id, and
    // a second server for the same pod finds the socket serving and leaves.
    let pod_id = bundle::pod_id_of(&spec, &opts.id);
    let address = containerd_shim::spawn(
        opts,
        &pod_id,
        vec![(super::server::POD_ID_VARIABLE, &pod_id)],
    )
    .await?;
    containerd_shim::asynchronous::util::write_str_to_file(bundle.join("address"), &address)
        .await?;
    Ok(address)
}

/// Handles `start` from the command-line flags and containerd's environment, printing the
/// bare address.
pub async fn run(flags: Flags) -> containerd_shim::Result<()> {
    // Runtime options arrive on stdin; the shim reads its configuration at Create instead.
    let mut options = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut options);
    let opts = StartOpts {
        id: flags.id,
        publish_binary: flags.publish_binary,
        address: flags.address,
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace,
        debug: flags.debug,
        ..Default::default()
    };
    let address = spawn_server(opts).await?;
    let mut stdout = std::io::stdout();
    stdout
        .write_all(address.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| Error::Other(format!("writing the address: {err}")))
}
