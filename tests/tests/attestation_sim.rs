//! Attestation end to end with the simulated TEE (`tee = "sim"`): a real pod VM asks the host's
//! simulated AMD-SP for a report through the agent, and `cloak attest verify` checks it against
//! the reference values `cloak image build` wrote. A pod booted with one changed initrd byte
//! fails on the measurement; a pod whose init-data does not hash to its HOST_DATA — other
//! init-data, or the same document written with other white space — refuses to run containers.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;

use cloak_host::config::TeeKind as ConfiguredTee;
use cloak_protocol::agent::{
    AttestationReportRequest, CreateContainerRequest, CreateSandboxRequest, GuestDetailsRequest,
    TeeKind,
};
use cloak_tests::pod::{busybox_spec, TestPod};
use cloak_tests::{skip, vm_slot, VmTestEnv};
use sha2::{Digest, Sha256, Sha384};

/// The init-data of the attested pod: a sha384 document, so HOST_DATA is a truncated digest
/// (with no policy of its own: the image's default runs its containers).
const INIT_DATA: &[u8] =
    b"version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n\"note.txt\" = \"the attested pod\"\n\"cloak.rootfs\" = \"shared\"\n";
/// Other init-data, for the mismatches.
const OTHER_INIT_DATA: &[u8] =
    b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"note.txt\" = \"another pod\"\n";

/// HOST_DATA for `init_data` by the initdata specification, written out here as the oracle:
/// zero without init-data, else the digest named in the document over its bytes, cut to 32.
fn expected_host_data(init_data: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(init_data);
    if init_data.is_empty() {
        vec![0; 32]
    } else if text.contains("algorithm = \"sha384\"") {
        Sha384::digest(init_data)[..32].to_vec()
    } else {
        Sha256::digest(init_data).to_vec()
    }
}

const NONCE: [u8; 64] = {
    let mut nonce = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        nonce[i] = (i as u8).wrapping_mul(37).wrapping_add(11);
        i += 1;
    }
    nonce
};

struct Setup {
    env: VmTestEnv,
    cloak: PathBuf,
    _slot: std::sync::MutexGuard<'static, ()>,
}

fn setup(test: &str) -> Option<Setup> {
    let env = VmTestEnv::get(test)?;
    let cloak = cloak_tests::cloak_binary(test)?;
    if let Err(reason) = cloak_tests::rootfs::busybox_available() {
        skip(test, &reason);
        return None;
    }
    Some(Setup {
        env,
        cloak,
        _slot: vm_slot(),
    })
}

fn simulated(config: &mut cloak_host::Configuration) {
    config.hypervisor.tee = ConfiguredTee::Sim;
}

/// The report and certificates a pod's agent returns, written where `cloak attest verify`
/// reads them.
struct FetchedReport {
    dir: tempfile::TempDir,
}

impl FetchedReport {
    async fn fetch(pod: &TestPod) -> Self {
        let agent = pod.vm().agent();
        let details = agent
            .agent()
            .get_guest_details(agent.context(), &GuestDetailsRequest::default())
            .await
            .unwrap();
        assert_eq!(details.tee.enum_value(), Ok(TeeKind::TEE_SIM));
        let request = AttestationReportRequest {
            report_data: NONCE.to_vec(),
            ..Default::default()
        };
        let response = agent
            .agent()
            .get_attestation_report(agent.context(), &request)
            .await
            .unwrap();
        assert_eq!(response.tee.enum_value(), Ok(TeeKind::TEE_SIM));
        assert_eq!(response.report.len(), 1184, "an SNP-layout report");
        let certificates = String::from_utf8(response.certificates).unwrap();
        let split = certificates
            .find("-----END CERTIFICATE-----\n")
            .map(|end| end + "-----END CERTIFICATE-----\n".len())
            .expect("the VCEK comes first");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("report.bin"), &response.report).unwrap();
        std::fs::write(dir.path().join("vcek.pem"), &certificates[..split]).unwrap();
        std::fs::write(dir.path().join("chain.pem"), &certificates[split..]).unwrap();
        Self { dir }
    }

    /// `cloak attest verify` against the image's reference values: (exit code, output).
    fn verify(
        &self,
        cloak: &Path,
        reference_values: &Path,
        init_data: &[u8],
        extra: &[&str],
    ) -> (Option<i32>, String) {
        let host_data = hex::encode(expected_host_data(init_data));
        let mut args = vec!["--host-data", host_data.as_str()];
        args.extend_from_slice(extra);
        self.verify_with(cloak, reference_values, &args)
    }

    /// `cloak attest verify` with these arguments besides report, certificates, reference
    /// values and nonce.
    fn verify_with(
        &self,
        cloak: &Path,
        reference_values: &Path,
        args: &[&str],
    ) -> (Option<i32>, String) {
        let output = Command::new(cloak)
            .args(["attest", "verify", "--report"])
            .arg(self.dir.path().join("report.bin"))
            .arg("--vcek")
            .arg(self.dir.path().join("vcek.pem"))
            .arg("--chain")
            .arg(self.dir.path().join("chain.pem"))
            .arg("--reference-values")
            .arg(reference_values)
            .args(["--report-data", &hex::encode(NONCE)])
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }
}

fn failed_checks(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("FAIL "))
        .map(|rest| rest.split(':').next().unwrap_or(rest))
        .collect()
}

async fn boot_or_panic(
    env: &VmTestEnv,
    configure: impl FnOnce(&mut cloak_host::Configuration),
    init_data: &[u8],
) -> TestPod {
    TestPod::boot_with(env, configure, init_data)
        .await
        .unwrap_or_else(|err| panic!("pod boot: {err:#}"))
}

#[test]
fn a_simulated_report_verifies_against_the_image_reference_values() {
    let test = "a_simulated_report_verifies_against_the_image_reference_values";
    let Some(setup) = setup(test) else {
        return;
    };
    let reference_values = setup.env.guest_dir.join("reference-values.json");
    let init_data = INIT_DATA;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pod = boot_or_panic(&setup.env, simulated, init_data).await;
        // Matching init-data: containers run.
        let output = pod
            .run("hello", &busybox_spec(&["echo", "attested"]), None)
            .await
            .unwrap();
        assert_eq!(output.stdout_text(), "attested\n");
        let report = FetchedReport::fetch(&pod).await;
        pod.shutdown().await.unwrap();

        let (code, out) = report.verify(
            &setup.cloak,
            &reference_values,
            init_data,
            &["--allow-simulated"],
        );
        assert_eq!(code, Some(0), "{out}");
        for check in [
            "measurement",
            "host-data",
            "report-data",
            "report-signature",
        ] {
            assert!(out.contains(&format!("PASS {check}")), "{check}: {out}");
        }
        // `--init-data FILE` expects the HOST_DATA the document binds, by cloak's own rule.
        let document = report.dir.path().join("init-data.toml");
        std::fs::write(&document, init_data).unwrap();
        let document = document.display().to_string();
        let (code, out) = report.verify_with(
            &setup.cloak,
            &reference_values,
            &["--init-data", &document, "--allow-simulated"],
        );
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("PASS host-data"), "{out}");
        // The same report is refused without the explicit permission for a simulated TEE.
        let (code, out) = report.verify(&setup.cloak, &reference_values, init_data, &[]);
        assert_ne!(code, Some(0), "{out}");
        assert!(failed_checks(&out).contains(&"ark"), "{out}");
        // Other init-data than the pod's: HOST_DATA does not match.
        let (code, out) = report.verify(
            &setup.cloak,
            &reference_values,
            OTHER_INIT_DATA,
            &["--allow-simulated"],
        );
        assert_ne!(code, Some(0), "{out}");
        assert_eq!(failed_checks(&out), vec!["host-data"], "{out}");
    });
}

#[test]
fn one_changed_initrd_byte_fails_the_measurement_check() {
    let test = "one_changed_initrd_byte_fails_the_measurement_check";
    let Some(setup) = setup(test) else {
        return;
    };
    let reference_values = setup.env.guest_dir.join("reference-values.json");
    let changed = tempfile::tempdir().unwrap();
    let initrd = changed.path().join("initrd.img");
    cloak_tests::initrd_with_one_changed_byte(
        &setup.env.guest_dir.join(&setup.env.manifest.initrd.file),
        &initrd,
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pod = boot_or_panic(
            &setup.env,
            |config| {
                simulated(config);
                config.guest.initrd = Some(initrd.clone());
            },
            b"",
        )
        .await;
        let report = FetchedReport::fetch(&pod).await;
        pod.shutdown().await.unwrap();
        let (code, out) =
            report.verify(&setup.cloak, &reference_values, b"", &["--allow-simulated"]);
        assert_ne!(code, Some(0), "{out}");
        assert_eq!(failed_checks(&out), vec!["measurement"], "{out}");
    });
}

#[test]
fn init_data_that_does_not_hash_to_host_data_refuses_containers() {
    let test = "init_data_that_does_not_hash_to_host_data_refuses_containers";
    let Some(setup) = setup(test) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The launched document re-encoded: same entries, one more space.
    let reencoded = String::from_utf8(INIT_DATA.to_vec())
        .unwrap()
        .replace("version = ", "version =  ");
    for (what, handed) in [
        ("other", OTHER_INIT_DATA.to_vec()),
        ("re-encoded", reencoded.into_bytes()),
    ] {
        // A host that launches with one init-data and hands the agent another.
        let refused = runtime.block_on(launch_with_init_data_and_hand_over(
            &setup.env, INIT_DATA, handed,
        ));
        match refused {
            Err(ttrpc::Error::RpcStatus(status)) => {
                assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION, "{what}");
                assert!(
                    status.message().contains("HOST_DATA"),
                    "{what}: {}",
                    status.message()
                );
            }
            other => panic!("a container was accepted with {what} init-data: {other:?}"),
        }
    }
}

/// Boots a simulated-TEE VM launched with `launched`, creates the sandbox with `handed`, and
/// asks for a container: the CreateContainer answer.
async fn launch_with_init_data_and_hand_over(
    env: &VmTestEnv,
    launched: &[u8],
    handed: Vec<u8>,
) -> ttrpc::Result<cloak_protocol::agent::Empty> {
    let run_root = tempfile::tempdir().unwrap();
    let mut config = env.configuration(run_root.path());
    simulated(&mut config);
    let mut vm_config = cloak_host::pod_vm::vm_config_for(&config, &env.manifest, "mismatch");
    vm_config.init_data = launched.to_vec();
    let hypervisor = cloak_host::hypervisor::from_config(&config.hypervisor);
    let vm = cloak_host::pod_vm::PodVm::boot(
        hypervisor.as_ref(),
        vm_config,
        config.boot_timeout(),
        config.request_timeout(),
    )
    .await
    .unwrap_or_else(|err| panic!("VM boot: {err}"));
    let sandbox = CreateSandboxRequest {
        sandbox_id: "mismatch".into(),
        hostname: "mismatch".into(),
        init_data: handed,
        ..Default::default()
    };
    let answer = create_sandbox_then_container(vm.agent(), sandbox).await;
    vm.shutdown().await;
    answer
}

/// CreateSandbox with `sandbox`, then the CreateContainer the test expects refused.
async fn create_sandbox_then_container(
    agent: &cloak_host::AgentClient,
    sandbox: CreateSandboxRequest,
) -> ttrpc::Result<cloak_protocol::agent::Empty> {
    agent
        .agent()
        .create_sandbox(agent.context(), &sandbox)
        .await
        .unwrap();
    let request = CreateContainerRequest {
        container_id: "refused".into(),
        oci_spec_json: serde_json::to_vec(&busybox_spec(&["true"])).unwrap(),
        ..Default::default()
    };
    agent
        .agent()
        .create_container(agent.context(), &request)
        .await
}
