//! `cloak attest verify` on real AMD reports: one line per check, exit 0 only when all pass.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use cloak_tests::repo_root;

#[test]
fn cloak_attest_verify_passes_a_real_report_and_names_what_fails() {
    let test = "cloak_attest_verify_passes_a_real_report_and_names_what_fails";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let data = repo_root().join("tests/data/snp/milan-go-sev-guest");
    let verify = |report: &std::path::Path, extra: &[&str]| {
        let output = Command::new(&cloak)
            .args(["attest", "verify", "--report"])
            .arg(report)
            .arg("--vcek")
            .arg(data.join("vcek.testcer"))
            .arg("--chain")
            .arg(data.join("ask_ark_milan.pem"))
            .args(extra)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let report = data.join("attestation.bin");
    let (code, out) = verify(&report, &["--allow-debug"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.lines().any(|l| l == "VERIFIED"), "{out}");
    assert!(out.contains("PASS report-signature"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let altered = dir.path().join("altered.bin");
    let mut bytes = std::fs::read(&report).unwrap();
    bytes[0x90] ^= 0x01; // inside MEASUREMENT
    std::fs::write(&altered, bytes).unwrap();
    let (code, out) = verify(&altered, &["--allow-debug"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL report-signature"), "{out}");

    let (code, out) = verify(&report, &["--allow-debug", "--host-data", &"11".repeat(32)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAIL host-data"), "{out}");
}

#[test]
fn cloak_check_reports_snp_readiness_and_the_firmwares_hashes_table() {
    let test = "cloak_check_reports_snp_readiness_and_the_firmwares_hashes_table";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let check = |firmware: &str| {
        let config = dir.path().join("configuration.toml");
        let path = repo_root().join("tests/data/snp/firmware").join(firmware);
        std::fs::write(
            &config,
            format!("[hypervisor]\nfirmware = \"{}\"\n", path.display()),
        )
        .unwrap();
        let output = Command::new(&cloak)
            .arg("check")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let amdsev = check("ovmf_AmdSev_suffix.bin");
    assert!(
        amdsev
            .lines()
            .any(|l| l.starts_with("yes  SNP firmware:") && l.contains("kernel-hashes table")),
        "{amdsev}"
    );
    let ovmfx64 = check("ovmf_OvmfX64_suffix.bin");
    assert!(
        ovmfx64
            .lines()
            .any(|l| l.starts_with("no   SNP firmware:") && l.contains("no kernel-hashes table")),
        "{ovmfx64}"
    );
    // Whether this host can launch SNP guests follows from the facts it lists.
    let snp_possible = std::path::Path::new("/dev/sev").exists();
    let verdict = amdsev.lines().find(|l| l.contains("SNP guests:")).unwrap();
    if !snp_possible {
        assert!(verdict.starts_with("no "), "{verdict}");
    }
    for fact in [
        "hardware virtualization:",
        "kvm:",
        "SEV-SNP in the CPU:",
        "/dev/sev:",
        "kvm_amd sev_snp:",
    ] {
        assert!(amdsev.contains(fact), "missing {fact:?} in\n{amdsev}");
    }
}
