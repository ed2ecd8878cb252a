//! The demo behind `make demo`: a private containerd with cloak's shim, the busybox image
//! imported, and one `ctr run --runtime io.containerd.cloak.v2` whose container prints the
//! guest kernel release from inside its cloak VM.

#![allow(clippy::print_stdout)] // the demo's output is the point

use anyhow::{ensure, Context as _};
use cloak_tests::containerd::{image, shim_binary, PrivateContainerd, RUNTIME};
use cloak_tests::VmTestEnv;

fn main() -> anyhow::Result<()> {
    let env = VmTestEnv::get("cloak-demo-containerd").context("the guest image is needed")?;
    let shim =
        shim_binary().context("build containerd-shim-cloak-v2 first (cargo build --release)")?;
    println!("starting a private containerd with {}", shim.display());
    let containerd = PrivateContainerd::start(&env, &shim)?;
    let image = image();
    let script = "echo \"hello from a container in a cloak VM: kernel $(uname -r), host name $(hostname)\"; ps";
    let args = [
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        &image,
        "demo",
        "sh",
        "-c",
        script,
    ];
    println!("$ ctr {}", args.join(" "));
    let output = containerd.ctr(&args).output()?;
    print!("{}", String::from_utf8_lossy(&output.stdout));
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    ensure!(
        output.status.success(),
        "ctr run failed ({})\n{}",
        output.status,
        containerd.log_tail(40)
    );
    let host = nix::sys::utsname::uname()?;
    println!(
        "host kernel: {} (the container saw the guest's {})",
        host.release().to_string_lossy(),
        env.manifest.kernel.release
    );
    Ok(())
}
