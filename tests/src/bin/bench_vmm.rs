//! cloak-vmm start-up benchmark: from spawning the VMM to the tiny guest's first serial byte
//! (its first instructions print it), and the VMM's own resident memory without guest RAM,
//! beside QEMU (microvm, KVM, the same code as a 64 KiB BIOS) in the same run, alternating,
//! median of N each. Guest RAM is memfd-backed in both, so it shows as RssShmem and is
//! subtracted.
//!
//! Usage: cloak-bench-vmm [--runs N]   (make bench-vmm builds cloak-vmm)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use cloak_tests::bench::{join, median, rss_kib};

/// mov dx, 0x3f8; mov al, 'R'; out dx, al; mov al, '\n'; out dx, al; cli; hlt
const TINY_GUEST: [u8; 11] = [
    0xBA, 0xF8, 0x03, 0xB0, b'R', 0xEE, 0xB0, b'\n', 0xEE, 0xFA, 0xF4,
];
const MEMORY_MIB: &str = "4";

/// The tiny guest as a BIOS image: code at 0xF0000, a far jump to it at the reset vector.
fn bios_image() -> Vec<u8> {
    let mut rom = vec![0u8; 0x1_0000];
    rom[..TINY_GUEST.len()].copy_from_slice(&TINY_GUEST);
    rom[0xFFF0..0xFFF5].copy_from_slice(&[0xEA, 0x00, 0x00, 0x00, 0xF0]);
    rom
}

/// Spawns `command`, times its first output byte, reads its memory once the guest halted,
/// and kills it: (milliseconds, own RSS in KiB).
fn measure(mut command: Command) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawning the VMM")?;
    let mut stdout = child.stdout.take().context("stdout is piped")?;
    let mut first = [0u8; 1];
    let read = stdout.read(&mut first);
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    if !matches!(read, Ok(1)) || first[0] != b'R' {
        let _ = child.kill();
        let _ = child.wait();
        bail!("no guest output ({read:?})");
    }
    std::thread::sleep(Duration::from_millis(300));
    let (rss, shmem) = rss_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Ok((elapsed, rss.saturating_sub(shmem)))
}

fn cloak_vmm(binary: &Path, image: &Path) -> Command {
    let mut command = Command::new(binary);
    command.args(["tiny", "--image"]).arg(image).args([
        "--memory-mib",
        MEMORY_MIB,
        "--console",
        "-",
    ]);
    command
}

fn qemu(rom: &Path) -> Command {
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args(["-machine", "microvm,accel=kvm,memory-backend=mem"])
        .args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on"),
        ])
        .args(["-m", &format!("{MEMORY_MIB}M")])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .args(["-serial", "stdio", "-monitor", "none", "-bios"])
        .arg(rom);
    command
}

fn main() -> anyhow::Result<()> {
    let runs = cloak_tests::bench::runs_from_args(10)?;
    cloak_vmm::kvm_available().map_err(|reason| anyhow::anyhow!("KVM: {reason}"))?;
    let binary = cloak_tests::workspace_binary("cloak-vmm", "CLOAK_VMM_BIN")
        .context("build cloak-vmm first (cargo build --release -p cloak-vmm)")?;
    let dir = tempfile::tempdir()?;
    let image = dir.path().join("tiny.bin");
    std::fs::write(&image, TINY_GUEST)?;
    let rom = dir.path().join("tiny.rom");
    std::fs::write(&rom, bios_image())?;

    let (mut vmm_ms, mut vmm_kib, mut qemu_ms, mut qemu_kib) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        let (ms, kib) = measure(cloak_vmm(&binary, &image))?;
        vmm_ms.push(ms);
        vmm_kib.push(kib as f64);
        let (ms, kib) = measure(qemu(&rom))?;
        qemu_ms.push(ms);
        qemu_kib.push(kib as f64);
    }
    println!("tiny real-mode guest under KVM ({MEMORY_MIB} MiB), {runs} runs each (alternating):");
    println!("start to first guest output:");
    println!("  cloak-vmm: {} ms", join(&vmm_ms));
    println!("  qemu:      {} ms", join(&qemu_ms));
    let (vmm, qemu) = (median(&mut vmm_ms), median(&mut qemu_ms));
    println!(
        "  median: cloak-vmm {vmm:.1} ms, qemu {qemu:.1} ms, ratio {:.2}",
        vmm / qemu
    );
    let (vmm, qemu) = (median(&mut vmm_kib), median(&mut qemu_kib));
    println!("VMM resident memory without guest RAM (VmRSS - RssShmem):");
    println!(
        "  median: cloak-vmm {:.1} MiB, qemu {:.1} MiB, ratio {:.2} (target for cloak-vmm: <= 5 MiB)",
        vmm / 1024.0,
        qemu / 1024.0,
        vmm / qemu
    );
    Ok(())
}
