//! `cloak attest verify` on real AMD reports: one line per check, exit 0 only when all pass.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use cloak_tests::{repo_root, skip, workspace_binary};

#[test]
fn cloak_attest_verify_passes_a_real_report_and_names_what_fails() {
    let test = "cloak_attest_verify_passes_a_real_report_and_names_what_fails";
    let Some(cloak) = workspace_binary("cloak", "CLOAK_BIN") else {
        skip(
            test,
            "the cloak binary is not built (cargo build --release -p cloak)",
        );
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
