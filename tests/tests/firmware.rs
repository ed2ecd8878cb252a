//! The node's SNP firmware: `cloak firmware build` gives the same bytes twice (the second build
//! here against the one scripts/setup-host.sh made, `CLOAK_FIRMWARE`); `sev-snp-measure` on that
//! firmware with the guest image equals `cloak measure` and the digest `cloak image build` wrote
//! into reference-values.json; and the guest image boots through it on q35 under software
//! emulation with the `tee = "snp"` QEMU arguments minus the SEV parts, which the test prints.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cloak_tests::skip;

const ORACLE: &str = "sev-snp-measure";

/// The firmware setup-host.sh built, or why the test cannot run.
fn first_build(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("CLOAK_FIRMWARE")
        .map(PathBuf::from)
        .unwrap_or_else(|| cloak_tests::cache_dir().join("firmware/OVMF.amdsev.fd"));
    if path.is_file() {
        return Some(path);
    }
    // Fails rather than skips where the suite must run everything (make test).
    let reason = format!(
        "no firmware at {} (bash scripts/setup-host.sh builds it)",
        path.display()
    );
    skip(test, &reason);
    None
}

fn output_of(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn a_second_firmware_build_gives_the_same_bytes() {
    let test = "a_second_firmware_build_gives_the_same_bytes";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let Some(first) = first_build(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let second = dir.path().join("OVMF.amdsev.fd");
    let started = std::time::Instant::now();
    let printed = output_of(
        Command::new(&cloak)
            .args(["firmware", "build", "--out"])
            .arg(&second)
            .arg("--cache-dir")
            .arg(cloak_tests::cache_dir()),
    );
    println!("{printed} ({:.0} s)", started.elapsed().as_secs_f64());
    let (a, b) = (
        std::fs::read(&first).unwrap(),
        std::fs::read(&second).unwrap(),
    );
    assert_eq!(a.len(), 4 << 20, "AmdSevX64 is a 4 MiB image");
    assert!(a == b, "two builds of the firmware differ");
    assert!(cloak_launch::ovmf::has_kernel_hashes_table(&second).unwrap());
}

#[test]
fn the_firmwares_digest_with_the_guest_image_is_the_oracles_and_the_reference_value() {
    let test = "the_firmwares_digest_with_the_guest_image_is_the_oracles_and_the_reference_value";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let Some(env) = cloak_tests::VmTestEnv::get(test) else {
        return;
    };
    let Some(built) = first_build(test) else {
        return;
    };
    if !cloak_tests::tools_on_path(test, &[ORACLE]) {
        return;
    }
    let shipped = env.guest_dir.join("OVMF.amdsev.fd");
    assert!(
        std::fs::read(&shipped).unwrap() == std::fs::read(&built).unwrap(),
        "make image ships the firmware it measured"
    );
    let values: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.guest_dir.join("reference-values.json")).unwrap(),
    )
    .unwrap();
    let cmdline = values["cmdline"].as_str().unwrap().to_owned();
    let kernel = env.guest_dir.join(&env.manifest.kernel.file);
    let initrd = env.guest_dir.join(&env.manifest.initrd.file);
    let flags = |vcpus: &str, vcpu_type: &str| -> Vec<String> {
        [
            "--mode",
            "snp",
            "--vcpus",
            vcpus,
            "--vcpu-type",
            vcpu_type,
            "--guest-features",
            "0x1",
            "--ovmf",
            &built.display().to_string(),
            "--kernel",
            &kernel.display().to_string(),
            "--initrd",
            &initrd.display().to_string(),
            "--append",
            &cmdline,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let digests = values["launch_digests"].as_array().unwrap();
    let ovmf_entries: Vec<&serde_json::Value> = digests
        .iter()
        .filter(|entry| {
            entry["launch"]
                .as_str()
                .unwrap_or_default()
                .starts_with("qemu+ovmf ")
        })
        .collect();
    assert!(!ovmf_entries.is_empty(), "QEMU+OVMF digests in {digests:?}");
    for (vcpus, vcpu_type) in [("1", "EPYC-v4"), ("4", "EPYC-Genoa")] {
        let oracle = output_of(Command::new(ORACLE).args(flags(vcpus, vcpu_type)));
        let ours = output_of(
            Command::new(&cloak)
                .arg("measure")
                .args(flags(vcpus, vcpu_type)),
        );
        assert_eq!(ours, oracle, "{vcpus} x {vcpu_type}");
        assert!(
            ovmf_entries
                .iter()
                .any(|entry| entry["digest"].as_str() == Some(oracle.as_str())),
            "{vcpus} x {vcpu_type}: {oracle} is not among {ovmf_entries:?}"
        );
        println!("{vcpus} x {vcpu_type} on the built OVMF: {oracle}");
    }
}

#[test]
fn the_guest_boots_through_the_built_ovmf_on_q35_under_software_emulation() {
    let test = "the_guest_boots_through_the_built_ovmf_on_q35_under_software_emulation";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let Some(env) = cloak_tests::VmTestEnv::get(test) else {
        return;
    };
    let Some(firmware) = first_build(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("configuration.toml");
    std::fs::write(
        &config,
        format!(
            "[hypervisor]\nkind = \"qemu\"\nvcpus = 1\nfirmware = \"{}\"\n\n[agent]\nboot_timeout_secs = 240\n",
            firmware.display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let printed = output_of(
        Command::new(&cloak)
            .args(["probe", "--snp-rehearsal", "--config"])
            .arg(&config)
            .arg("--guest-dir")
            .arg(&env.guest_dir)
            .arg("--run-dir")
            .arg(dir.path().join("run")),
    );
    println!(
        "{printed}\n(booted in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let command_line = printed.lines().next().unwrap();
    assert!(
        command_line.contains("-machine q35,accel="),
        "{command_line}"
    );
    assert!(
        command_line.contains(&format!("-bios {}", firmware.display())),
        "{command_line}"
    );
    assert!(
        !command_line.contains("sev-snp-guest")
            && !command_line.contains("confidential-guest-support")
    );
    assert!(
        printed.contains(
            "left out of the tee = \"snp\" launch: -object sev-snp-guest,id=sev0,policy=0x30000"
        ),
        "{printed}"
    );
    assert!(printed.contains("pod VM booted and answered"), "{printed}");
    assert!(
        printed.contains(&format!("guest kernel:   {}", env.manifest.kernel.release)),
        "{printed}"
    );
    assert!(
        !Path::new(&dir.path().join("run"))
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "the probe leaves no run directory entries"
    );
}

/// The rehearsal's command line with the vsock device taken out (nothing serves it here) and
/// the console in `console`, run until `marker` shows on the console or `limit` passes.
fn firmware_console_shows(
    args: &[String],
    console: &Path,
    marker: &str,
    limit: std::time::Duration,
) -> bool {
    let mut run = Vec::new();
    let mut iter = args.iter().peekable();
    while let Some(arg) = iter.next() {
        let next = iter.peek().map(|s| s.as_str()).unwrap_or_default();
        if (arg == "-chardev" && next.starts_with("socket,id=vsock"))
            || (arg == "-device" && next.contains("chardev=vsock"))
        {
            iter.next();
            continue;
        }
        if arg == "-chardev" && next.starts_with("file,id=console,") {
            iter.next();
            run.push(arg.clone());
            run.push(format!("file,id=console,path={}", console.display()));
            continue;
        }
        run.push(arg.clone());
    }
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(&run)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let mut seen = false;
    while started.elapsed() < limit && !seen {
        std::thread::sleep(std::time::Duration::from_millis(500));
        seen = std::fs::read(console)
            .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(marker));
        if qemu.try_wait().unwrap().is_some() {
            break;
        }
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    seen
}

/// The firmware checks what it boots: with one bit of the kernel's hash flipped in the table,
/// the guest never starts; the same harness with the table intact reaches the agent.
#[test]
fn a_wrong_kernel_hash_stops_the_boot_in_the_firmware() {
    let test = "a_wrong_kernel_hash_stops_the_boot_in_the_firmware";
    let Some(env) = cloak_tests::VmTestEnv::get(test) else {
        return;
    };
    let Some(firmware) = first_build(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = cloak_host::Configuration::default();
    config.hypervisor.firmware = firmware;
    config.hypervisor.vcpus = 1;
    config.guest.image_dir = env.guest_dir.clone();
    config.runtime.run_dir = dir.path().join("run");
    let vm = cloak_host::pod_vm::vm_config_for(&config, &env.manifest, "rehearsal");
    let rehearsal =
        cloak_host::hypervisor::snp_rehearsal::SnpRehearsal::new(config.hypervisor.clone());
    let plan = rehearsal.plan(&vm).unwrap();
    let table = vm.run_dir.join("kernel-hashes.bin");
    let intact = std::fs::read(&table).unwrap();
    let limit = std::time::Duration::from_secs(120);
    // The agent writes its first line to the console once the kernel ran it.
    assert!(
        firmware_console_shows(&plan.args, &dir.path().join("good.log"), "cloak", limit),
        "the intact table boots the guest: {}",
        String::from_utf8_lossy(&std::fs::read(dir.path().join("good.log")).unwrap_or_default())
    );
    let mut altered = intact.clone();
    // The table ends with the kernel's entry: its hash's last byte is the page's last non-zero.
    let last = altered.iter().rposition(|b| *b != 0).unwrap();
    altered[last] ^= 0x01;
    std::fs::write(&table, &altered).unwrap();
    // The firmware stops before the guest runs (it loops rather than boot what it cannot
    // check): the agent's line never shows, well past the seconds the intact boot took.
    let booted = firmware_console_shows(
        &plan.args,
        &dir.path().join("bad.log"),
        "cloak",
        std::time::Duration::from_secs(60),
    );
    let console =
        String::from_utf8_lossy(&std::fs::read(dir.path().join("bad.log")).unwrap_or_default())
            .into_owned();
    assert!(
        !booted,
        "the firmware booted a kernel whose hash is wrong: {console}"
    );
}
