//! `make fuzz`: runs every target (or those named) for a set time over its committed seed
//! corpus, prints executions per target, writes each crashing input below `--crashes`, and
//! exits non-zero if any target crashed.

#![allow(clippy::print_stdout)] // a fuzz run prints its figures

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use cloak_fuzz::driver::{run, seeds, Budget};
use cloak_fuzz::TARGETS;

fn main() -> anyhow::Result<()> {
    let mut seconds = 10u64;
    let mut corpus = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus"));
    let mut crashes_dir = PathBuf::from("target/fuzz-crashes");
    let mut only = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().context("--seconds N")?.parse()?,
            "--corpus" => corpus = args.next().context("--corpus DIR")?.into(),
            "--crashes" => crashes_dir = args.next().context("--crashes DIR")?.into(),
            "seeds" => {
                let dir: PathBuf = args.next().context("seeds DIR")?.into();
                let written = cloak_fuzz::seeds::write(&dir)?;
                println!("{written} seeds in {}", dir.display());
                return Ok(());
            }
            "--help" | "-h" => {
                println!("cloak-fuzz [--seconds N] [--corpus DIR] [--crashes DIR] [TARGET...] | seeds DIR");
                for target in TARGETS {
                    println!("  {}", target.name);
                }
                return Ok(());
            }
            name => only.push(name.to_owned()),
        }
    }
    if let Some(unknown) = only
        .iter()
        .find(|name| !TARGETS.iter().any(|t| t.name == name.as_str()))
    {
        anyhow::bail!("no target {unknown:?} (--help lists them)");
    }
    let mut crashed = 0;
    println!(
        "{:<22} {:>12} {:>12} {:>8}",
        "target", "executions", "per second", "crashes"
    );
    for target in TARGETS
        .iter()
        .filter(|t| only.is_empty() || only.iter().any(|n| n == t.name))
    {
        let seeds = seeds(&corpus, target.name)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let outcome = run(
            target,
            &seeds,
            Budget::Time(Duration::from_secs(seconds)),
            seed,
        );
        println!(
            "{:<24} {:>12} {:>12.0} {:>8}",
            outcome.target,
            outcome.executions,
            outcome.per_second(),
            outcome.crashes.len()
        );
        if let Some(message) = &outcome.first_panic {
            println!("  first crash: {message}");
        }
        for (index, input) in outcome.crashes.iter().enumerate() {
            std::fs::create_dir_all(&crashes_dir)?;
            let path = crashes_dir.join(format!("{}-{seed:x}-{index}", target.name));
            std::fs::write(&path, input)?;
            println!("  crash input: {}", path.display());
        }
        crashed += outcome.crashes.len();
    }
    anyhow::ensure!(crashed == 0, "{crashed} crashing inputs");
    Ok(())
}
