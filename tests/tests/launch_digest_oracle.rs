//! cloak's SEV-SNP launch digests against the reference implementation, `sev-snp-measure`
//! (installed by scripts/setup-host.sh), over firmware builds (with and without SEV metadata,
//! Debian's real OVMF among them), VMM types (QEMU, ec2, gce), vCPU counts and types, guest
//! features, kernel/initrd/command-line combinations and a precomputed firmware digest; and
//! the inputs cloak refuses on purpose, each with its reason.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cloak_launch::cpu_types::signature_of;
use cloak_launch::ovmf::{OvmfLaunch, VmmType};
use cloak_tests::{on_path, repo_root, skip};

const ORACLE: &str = "sev-snp-measure";

fn firmware(name: &str) -> PathBuf {
    repo_root().join("tests/data/snp/firmware").join(name)
}

#[derive(Debug, Clone)]
struct Case {
    ovmf: PathBuf,
    vcpus: u32,
    vcpu_type: &'static str,
    guest_features: u64,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    append: Option<String>,
    vmm: &'static str,
}

impl Case {
    fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--mode".into(),
            "snp".into(),
            "--ovmf".into(),
            self.ovmf.display().to_string(),
            "--vcpus".into(),
            self.vcpus.to_string(),
            "--vcpu-type".into(),
            self.vcpu_type.into(),
            "--guest-features".into(),
            format!("{:#x}", self.guest_features),
            "--vmm-type".into(),
            self.vmm.into(),
        ];
        for (flag, value) in [
            (
                "--kernel",
                self.kernel.as_ref().map(|p| p.display().to_string()),
            ),
            (
                "--initrd",
                self.initrd.as_ref().map(|p| p.display().to_string()),
            ),
            ("--append", self.append.clone()),
        ] {
            if let Some(value) = value {
                flags.push(flag.into());
                flags.push(value);
            }
        }
        flags
    }

    fn cloak_digest(&self) -> String {
        OvmfLaunch {
            ovmf: self.ovmf.clone(),
            vcpus: self.vcpus,
            vcpu_signature: signature_of(self.vcpu_type).unwrap(),
            guest_features: self.guest_features,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            append: self.append.clone(),
            vmm: self.vmm.parse::<VmmType>().unwrap(),
            ovmf_digest: None,
        }
        .digest()
        .unwrap_or_else(|err| panic!("{self:?}: {err}"))
        .hex()
    }
}

fn run_digest(program: &Path, args: &[String]) -> String {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{} {}: {}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A third firmware image: the AmdSev tail behind 1 MiB of filler, so the firmware's
/// size, address and contents differ while its GUIDed table (at the end) stays a real one.
fn padded_firmware(dir: &Path) -> PathBuf {
    let path = dir.join("ovmf_AmdSev_padded.bin");
    let mut image: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    image.extend(std::fs::read(firmware("ovmf_AmdSev_suffix.bin")).unwrap());
    std::fs::write(&path, image).unwrap();
    path
}

/// The OvmfX64 tail with the SEV metadata entry taken out of its GUIDed table (the other
/// entries kept, the table still ending 32 bytes before the image's end), behind 64 KiB of
/// filler: a firmware that has a reset block but no SEV metadata, which the oracle measures as
/// its pages and VMSAs. The table walk here is the test's own, written from edk2's layout.
fn firmware_without_sev_metadata(dir: &Path) -> PathBuf {
    const METADATA_GUID_LE: [u8; 16] = [
        0x66, 0x65, 0x88, 0xdc, 0x4a, 0x98, 0x98, 0x47, 0xa7, 0x5e, 0x55, 0x85, 0xa7, 0xbf, 0x67,
        0xcc,
    ];
    let tail = std::fs::read(firmware("ovmf_OvmfX64_suffix.bin")).unwrap();
    let footer = tail.len() - 32 - 18;
    let total = u16::from_le_bytes([tail[footer], tail[footer + 1]]) as usize;
    let start = footer + 18 - total;
    let mut entries = Vec::new();
    let mut end = footer;
    while end > start {
        let size = u16::from_le_bytes([tail[end - 18], tail[end - 17]]) as usize;
        entries.push(tail[end - size..end].to_vec());
        end -= size;
    }
    let before = entries.len();
    entries.retain(|entry| entry[entry.len() - 16..] != METADATA_GUID_LE);
    assert_eq!(
        entries.len() + 1,
        before,
        "the tail had one SEV metadata entry"
    );
    entries.reverse();
    let mut table: Vec<u8> = entries.concat();
    let mut footer_entry = tail[footer..footer + 18].to_vec();
    let new_total = (table.len() + 18) as u16;
    footer_entry[..2].copy_from_slice(&new_total.to_le_bytes());
    table.extend(footer_entry);
    let mut image = tail.clone();
    image[start..footer + 18].fill(0);
    image[footer + 18 - table.len()..footer + 18].copy_from_slice(&table);
    let mut full: Vec<u8> = (0..1u32 << 16).map(|i| (i * 13) as u8).collect();
    full.extend(image);
    let path = dir.join("ovmf_without_sev_metadata.bin");
    std::fs::write(&path, full).unwrap();
    path
}

/// Debian's own OVMF build (package ovmf, installed by setup-host.sh): a real 2 MiB firmware
/// with SEV metadata but no kernel-hashes section.
const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn matrix(kernel: &Path, initrd: &Path, padded: &Path) -> Vec<Case> {
    let kernel_variants: Vec<(Option<PathBuf>, Option<PathBuf>, Option<String>)> = vec![
        (None, None, None),
        (Some(kernel.to_owned()), None, None),
        (
            Some(kernel.to_owned()),
            Some(initrd.to_owned()),
            Some("console=ttyS0 cloak.log=info".to_owned()),
        ),
    ];
    let firmwares = [
        (firmware("ovmf_AmdSev_suffix.bin"), true),
        (firmware("ovmf_OvmfX64_suffix.bin"), false),
        (padded.to_owned(), true),
    ];
    let mut cases = Vec::new();
    for (ovmf, has_hashes_table) in firmwares {
        for vcpus in [1, 2, 4, 8] {
            for vcpu_type in [
                "EPYC-v4",
                "EPYC-Rome",
                "EPYC-Milan",
                "EPYC-Genoa",
                "EPYC-Turin",
            ] {
                for guest_features in [0x1, 0x21] {
                    for (kernel, initrd, append) in &kernel_variants {
                        if kernel.is_some() && !has_hashes_table {
                            continue;
                        }
                        cases.push(Case {
                            ovmf: ovmf.clone(),
                            vcpus,
                            vcpu_type,
                            guest_features,
                            kernel: kernel.clone(),
                            initrd: initrd.clone(),
                            append: append.clone(),
                            vmm: "QEMU",
                        });
                    }
                }
            }
        }
    }
    cases
}

/// Every case's digest against the oracle's; fails naming each that differs. The oracle is a
/// Python program: it is asked from a few threads at once.
fn assert_all_equal_the_oracle(cases: &[Case]) {
    let failures: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(cases.len().div_ceil(4))
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|case| {
                            let expected = run_digest(Path::new(ORACLE), &case.flags());
                            let ours = case.cloak_digest();
                            (ours != expected).then(|| {
                                format!(
                                    "{}: cloak {ours}, oracle {expected}",
                                    case.flags().join(" ")
                                )
                            })
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn launch_digests_equal_sev_snp_measure() {
    let test = "launch_digests_equal_sev_snp_measure";
    if !cloak_tests::tools_on_path(test, &[ORACLE]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.img");
    std::fs::write(
        &kernel,
        (0..300_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(&initrd, b"an initrd").unwrap();
    let padded = padded_firmware(dir.path());
    let cases = matrix(&kernel, &initrd, &padded);
    assert!(cases.len() >= 150, "{} cases", cases.len());
    assert_all_equal_the_oracle(&cases);
    println!("{} launch digests equal sev-snp-measure's", cases.len());
}

#[test]
fn cloak_measure_takes_the_oracles_flags_and_prints_the_same_digest() {
    let test = "cloak_measure_takes_the_oracles_flags_and_prints_the_same_digest";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let case = Case {
        ovmf: firmware("ovmf_AmdSev_suffix.bin"),
        vcpus: 4,
        vcpu_type: "EPYC-Milan",
        guest_features: 0x21,
        kernel: Some(kernel),
        initrd: None,
        append: Some("quiet".into()),
        vmm: "QEMU",
    };
    let mut args = vec!["measure".to_owned()];
    args.extend(case.flags());
    assert_eq!(run_digest(&cloak, &args), case.cloak_digest());
    if on_path(ORACLE) {
        assert_eq!(
            run_digest(Path::new(ORACLE), &case.flags()),
            case.cloak_digest()
        );
    }
}

#[test]
fn cloak_image_build_writes_reference_digests_equal_to_the_oracles() {
    let test = "cloak_image_build_writes_reference_digests_equal_to_the_oracles";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let Some(agent) = cloak_tests::init_binary(test, cloak_tests::ENV_AGENT_BIN) else {
        return;
    };
    if !cloak_tests::tools_on_path(test, &[ORACLE]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image_config =
        std::fs::read_to_string(repo_root().join("configs/guest-image.toml")).unwrap();
    let firmware = firmware("ovmf_AmdSev_suffix.bin");
    let config = image_config.replace(
        "# firmware = \"build/firmware/OVMF.amdsev.fd\"",
        &format!("firmware = \"{}\"", firmware.display()),
    );
    assert_ne!(
        config, image_config,
        "the image config names a firmware line to fill in"
    );
    let config_path = dir.path().join("guest-image.toml");
    std::fs::write(&config_path, config).unwrap();
    let out = dir.path().join("guest");
    let built = Command::new(&cloak)
        .args(["image", "build", "--out"])
        .arg(&out)
        .arg("--agent")
        .arg(&agent)
        .arg("--config")
        .arg(&config_path)
        .env("CLOAK_CACHE_DIR", cloak_tests::cache_dir())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let values: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("reference-values.json")).unwrap()).unwrap();
    let digests = values["launch_digests"].as_array().unwrap();
    assert_eq!(
        digests.len(),
        28,
        "4 vCPU counts x 3 CPU types with OVMF, then 4 memory sizes x 4 vCPU counts of direct launches"
    );
    let cmdline = values["cmdline"].as_str().unwrap();
    assert!(
        cmdline.contains("cloak.log="),
        "the command line as the shim passes it: {cmdline}"
    );
    // The first entry: 1 vCPU of the first type.
    let oracle = run_digest(
        Path::new(ORACLE),
        &Case {
            ovmf: firmware,
            vcpus: 1,
            vcpu_type: "EPYC-v4",
            guest_features: 0x1,
            kernel: Some(out.join("vmlinuz")),
            initrd: Some(out.join("initrd.img")),
            append: Some(cmdline.to_owned()),
            vmm: "QEMU",
        }
        .flags(),
    );
    assert_eq!(digests[0]["digest"].as_str(), Some(oracle.as_str()));
    // cloak-vmm's direct launch of a pod limited to 1 GiB (512 + 1024 MiB, 2 vCPUs), as
    // `cloak measure --backend cloak-vmm` computes it.
    let sized = digests
        .iter()
        .find(|entry| {
            entry["launch"]
                .as_str()
                .unwrap()
                .starts_with("cloak-vmm direct vcpus=2 memory=1536MiB")
        })
        .unwrap_or_else(|| panic!("no 1536 MiB direct launch in {digests:?}"));
    let measured = Command::new(&cloak)
        .args([
            "measure",
            "--backend",
            "cloak-vmm",
            "--vcpus",
            "2",
            "--memory",
            "1536",
        ])
        .arg("--kernel")
        .arg(out.join("vmlinuz"))
        .arg("--initrd")
        .arg(out.join("initrd.img"))
        .args(["--append", cmdline])
        .output()
        .unwrap();
    assert!(measured.status.success(), "{measured:?}");
    assert_eq!(
        sized["digest"].as_str(),
        Some(String::from_utf8_lossy(&measured.stdout).trim())
    );
    assert!(out.join("reference-values.trustee.json").is_file());
}

#[test]
fn cloak_vmm_loads_the_plan_whose_digest_cloak_measure_prints() {
    let test = "cloak_vmm_loads_the_plan_whose_digest_cloak_measure_prints";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let Some(vmm) = cloak_tests::workspace_binary("cloak-vmm", "CLOAK_VMM_BIN") else {
        skip(
            test,
            "cloak-vmm is not built (cargo build --release -p cloak-vmm)",
        );
        return;
    };
    let Some(env) = cloak_tests::VmTestEnv::get(test) else {
        return;
    };
    let kernel = env.guest_dir.join(&env.manifest.kernel.file);
    let initrd = env.guest_dir.join(&env.manifest.initrd.file);
    for (vcpus, memory, features) in [("1", "512", "0x1"), ("4", "1024", "0x21")] {
        let digest_of = |program: &Path, args: &[&str]| {
            let output = Command::new(program)
                .args(args)
                .args(["--vcpus", vcpus, "--guest-features", features])
                .arg("--kernel")
                .arg(&kernel)
                .arg("--initrd")
                .arg(&initrd)
                .args(["--append", &env.manifest.cmdline])
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            String::from_utf8(output.stdout).unwrap().trim().to_owned()
        };
        let loaded = digest_of(&vmm, &["plan-digest", "--memory-mib", memory]);
        let measured = digest_of(
            &cloak,
            &["measure", "--backend", "cloak-vmm", "--memory", memory],
        );
        assert_eq!(loaded.len(), 96);
        assert_eq!(loaded, measured, "{vcpus} vCPUs, {memory} MiB");
    }
}

/// Where the oracle has a choice of VMM: EC2's and GCE's reset state and page order, on
/// firmware with and without SEV metadata and Debian's real OVMF.
#[test]
fn vmm_types_and_firmware_without_metadata_equal_sev_snp_measure() {
    let test = "vmm_types_and_firmware_without_metadata_equal_sev_snp_measure";
    if !cloak_tests::tools_on_path(test, &[ORACLE]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinuz");
    std::fs::write(
        &kernel,
        (0..50_000u32).map(|i| (i * 3) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let mut firmwares = vec![
        (firmware("ovmf_AmdSev_suffix.bin"), true),
        (firmware("ovmf_OvmfX64_suffix.bin"), false),
        (firmware_without_sev_metadata(dir.path()), false),
    ];
    if Path::new(DEBIAN_OVMF).is_file() {
        firmwares.push((PathBuf::from(DEBIAN_OVMF), false));
    } else {
        skip(
            test,
            &format!("{DEBIAN_OVMF} is absent (apt-get install ovmf): measured without it"),
        );
    }
    let mut cases = Vec::new();
    for (ovmf, has_hashes) in &firmwares {
        for vmm in ["QEMU", "ec2", "gce"] {
            for vcpus in [1, 3] {
                for vcpu_type in ["EPYC-v4", "EPYC-Genoa"] {
                    for with_kernel in [false, true] {
                        if with_kernel && !has_hashes {
                            continue;
                        }
                        cases.push(Case {
                            ovmf: ovmf.clone(),
                            vcpus,
                            vcpu_type,
                            guest_features: 0x21,
                            kernel: with_kernel.then(|| kernel.clone()),
                            initrd: None,
                            append: with_kernel.then(|| "console=hvc0".to_owned()),
                            vmm,
                        });
                    }
                }
            }
        }
    }
    assert_all_equal_the_oracle(&cases);
    println!(
        "{} digests over QEMU, ec2 and gce equal sev-snp-measure's",
        cases.len()
    );
}

/// `--mode snp:ovmf-hash` and `--snp-ovmf-hash`, `--vcpu-family/model/stepping`, base64
/// output and `--dump-vmsa`, through the `cloak` binary against the oracle's.
#[test]
fn cloak_measure_modes_and_flags_equal_the_oracles() {
    let test = "cloak_measure_modes_and_flags_equal_the_oracles";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    if !cloak_tests::tools_on_path(test, &[ORACLE]) {
        return;
    }
    let ovmf = firmware("ovmf_AmdSev_suffix.bin").display().to_string();
    let both = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let mut ours = vec!["measure".to_owned()];
        ours.extend(args.iter().cloned());
        let cloak_out = run_digest(&cloak, &ours);
        let oracle_out = run_digest(Path::new(ORACLE), &args);
        assert_eq!(cloak_out, oracle_out, "{}", args.join(" "));
        cloak_out
    };
    let hash = both(&["--mode", "snp:ovmf-hash", "--ovmf", &ovmf]);
    assert_eq!(hash.len(), 96);
    let common = [
        "--mode",
        "snp",
        "--ovmf",
        &ovmf,
        "--vcpus",
        "2",
        "--guest-features",
        "0x1",
    ];
    let seeded = both(
        &[
            &common[..],
            &["--vcpu-type", "EPYC-Milan", "--snp-ovmf-hash", &hash],
        ]
        .concat(),
    );
    let whole = both(&[&common[..], &["--vcpu-type", "EPYC-Milan"]].concat());
    assert_eq!(
        seeded, whole,
        "the precomputed firmware digest stands for the firmware"
    );
    both(
        &[
            &common[..],
            &[
                "--vcpu-family",
                "25",
                "--vcpu-model",
                "17",
                "--vcpu-stepping",
                "0",
            ],
        ]
        .concat(),
    );
    both(
        &[
            &common[..],
            &[
                "--vcpu-type",
                "EPYC-Genoa",
                "--output-format",
                "base64",
                "--vmm-type",
                "gce",
            ],
        ]
        .concat(),
    );
    // --dump-vmsa writes the same pages in the same place.
    let dumps = tempfile::tempdir().unwrap();
    for (program, sub) in [(cloak.clone(), "cloak"), (PathBuf::from(ORACLE), "oracle")] {
        let at = dumps.path().join(sub);
        std::fs::create_dir(&at).unwrap();
        let mut command = Command::new(program);
        if sub == "cloak" {
            command.arg("measure");
        }
        let status = command
            .args(common)
            .args(["--vcpu-type", "EPYC-v4", "--vmm-type", "ec2", "--dump-vmsa"])
            .current_dir(&at)
            .output()
            .unwrap();
        assert!(status.status.success(), "{status:?}");
    }
    for index in 0..2 {
        let name = format!("vmsa{index}.bin");
        let ours = std::fs::read(dumps.path().join("cloak").join(&name)).unwrap();
        let theirs = std::fs::read(dumps.path().join("oracle").join(&name)).unwrap();
        assert_eq!(ours.len(), 4096);
        assert!(ours == theirs, "{name} differs");
    }
}

/// What cloak refuses on purpose, and that it says why: the oracle's non-SNP modes and SVSM
/// (cloak launches none of them), and a firmware without an SEV-ES reset block (which the
/// oracle cannot measure either).
#[test]
fn refused_inputs_say_why() {
    let test = "refused_inputs_say_why";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("bare.fd");
    std::fs::write(&bare, vec![0x90u8; 8192]).unwrap();
    let ovmf = firmware("ovmf_AmdSev_suffix.bin");
    let cases: [(&[&str], &Path, &str); 4] = [
        (&["--mode", "sev"], &ovmf, "SEV-SNP guests only"),
        (&["--mode", "seves"], &ovmf, "SEV-SNP guests only"),
        (&["--mode", "snp:svsm"], &ovmf, "no SVSM"),
        (&["--mode", "snp"], &bare, "no SEV-ES reset block"),
    ];
    for (args, firmware, reason) in cases {
        let output = Command::new(&cloak)
            .arg("measure")
            .args(args)
            .args(["--vcpus", "1", "--vcpu-type", "EPYC-v4", "--ovmf"])
            .arg(firmware)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
        println!("refused: cloak measure {} ({reason})", args.join(" "));
    }
    if on_path(ORACLE) {
        let output = Command::new(ORACLE)
            .args([
                "--mode",
                "snp",
                "--vcpus",
                "1",
                "--vcpu-type",
                "EPYC-v4",
                "--ovmf",
            ])
            .arg(&bare)
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "the oracle measured a firmware without a reset block"
        );
    }
}
