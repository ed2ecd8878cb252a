//! The soak (`make soak`): N `ctr run --rm` cycles and N CRI pod cycles through one private
//! containerd with cloak, then the leak census before, while a pod ran, and after. Exits
//! non-zero if any count grew, so a long soak is a check as well as a table of figures.
//!
//! Usage: cloak-soak [--cycles N]   (make soak sets the env; default 100)

#![allow(clippy::print_stdout)] // the soak prints its figures

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "cloak_tests=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cycles = cloak_tests::bench::number_from_args("--cycles", 100)?;
    let (_env, containerd) = cloak_tests::containerd::cri_containerd_for("cloak-soak")?;
    let report =
        tokio::runtime::Runtime::new()?.block_on(cloak_tests::soak::soak(&containerd, cycles))?;
    println!(
        "soak: {cycles} ctr run --rm cycles and {cycles} CRI pod cycles (after one warm-up each)"
    );
    print!("{}", report.table());
    let growth = report.growth();
    if growth.is_empty() {
        println!("no count grew");
        Ok(())
    } else {
        anyhow::bail!("grew over the soak: {growth:?}")
    }
}
