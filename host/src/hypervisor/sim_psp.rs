//! The host half of `tee = "sim"`: a simulated AMD-SP for one pod VM. Before the VM starts it
//! computes the launch digest of what the VM boots — the direct launch of the same kernel,
//! initrd, command line, vCPUs and memory, with the code behind `cloak measure --backend
//! cloak-vmm` — and then answers the agent's report requests on the simulated AMD-SP's vsock
//! port with reports carrying that digest, the pod's HOST_DATA and the guest's REPORT_DATA,
//! signed by a key of its own under a simulated ARK/ASK. A development aid: it proves the
//! attestation path end to end, never confidentiality.
//!
//! Every VM of the backend gets the port, a VM without `tee = "sim"` one that answers "no
//! simulated TEE": the agent asks once to learn which TEE it has, and a port nobody listens on
//! would cost it the guest's whole vsock connect timeout (2 s) instead of one round trip.
//!
//! The command line measured is the pod's (image, agent settings, configured parameters);
//! parameters the backend adds only for software emulation (tsc_early_khz) are left out,
//! as no hardware launch would carry them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloak_attestation::simulated_psp::{ReportInputs, SimulatedPsp};
use cloak_launch::direct::DirectLaunch;
use cloak_launch::LaunchDigest;
use cloak_protocol::sim_psp::{SimPspResponse, REPORT_DATA_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use super::{HypervisorError, VmConfig};

/// A request must arrive within this; a guest that stalls is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the simulated AMD-SP puts into every report of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedLaunch {
    pub measurement: LaunchDigest,
    pub host_data: [u8; 32],
    pub policy: u64,
}

impl SimulatedLaunch {
    /// The launch of `config` (off the async threads: it reads and hashes the guest image).
    pub async fn of(config: &VmConfig, policy: u64) -> Result<Self, HypervisorError> {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let launch = DirectLaunch::from_files(
                &config.kernel,
                Some(&config.initrd),
                &config.cmdline,
                config.memory_mib,
                config.vcpus,
            )
            .and_then(|launch| launch.digest())?;
            Ok(Self {
                measurement: launch,
                host_data: config.host_data()?,
                policy,
            })
        })
        .await
        .map_err(|source| HypervisorError::Join {
            what: "measuring the launch",
            source,
        })?
    }
}

/// Serves reports (or, for a VM without a simulated TEE, the refusal) until dropped; dropping
/// stops it and removes its socket.
pub struct SimPspServer {
    task: tokio::task::JoinHandle<()>,
    socket: PathBuf,
}

impl SimPspServer {
    /// Listens on `socket` (the hybrid-vsock path of the simulated AMD-SP's port); `launch`
    /// is `None` for a VM without a simulated TEE.
    /// What every VM gets on its simulated AMD-SP port: with tee = "sim" the simulated TEE of
    /// exactly this launch, otherwise the quick "no simulated TEE" answer.
    pub async fn serve_for(
        settings: &crate::config::HypervisorConfig,
        config: &VmConfig,
    ) -> Result<Self, HypervisorError> {
        let launch = match settings.tee {
            crate::config::TeeKind::Sim => {
                let launch = SimulatedLaunch::of(config, settings.snp_policy).await?;
                tracing::info!(pod = %config.id, measurement = %launch.measurement, "simulated TEE launch");
                Some(launch)
            }
            crate::config::TeeKind::None | crate::config::TeeKind::Snp => None,
        };
        let socket = config.host_port_socket(cloak_protocol::sim_psp::SIM_PSP_VSOCK_PORT);
        Self::start(&socket, launch)
    }

    pub fn start(socket: &Path, launch: Option<SimulatedLaunch>) -> Result<Self, HypervisorError> {
        let psp = match launch {
            Some(launch) => Some((SimulatedPsp::generate()?, launch)),
            None => None,
        };
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).map_err(|source| HypervisorError::RunDir {
            path: socket.display().to_string(),
            source,
        })?;
        let state = Arc::new(psp);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, state.as_ref().as_ref()).await {
                        tracing::warn!(error = %err, "simulated AMD-SP request");
                    }
                });
            }
        });
        Ok(Self {
            task,
            socket: socket.to_owned(),
        })
    }
}

impl Drop for SimPspServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn answer(
    mut stream: UnixStream,
    psp: Option<&(SimulatedPsp, SimulatedLaunch)>,
) -> std::io::Result<()> {
    let mut report_data = [0u8; REPORT_DATA_BYTES];
    let read = stream.read_exact(&mut report_data);
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Err(_) => SimPspResponse::Error("no complete request in time".to_owned()),
        Ok(Err(err)) => return Err(err),
        Ok(Ok(_)) => match psp {
            Some((psp, launch)) => respond(psp, launch, report_data),
            None => SimPspResponse::Error(
                "this VM has no simulated TEE (tee is not \"sim\")".to_owned(),
            ),
        },
    };
    stream.write_all(&response.encode()).await?;
    stream.shutdown().await
}

fn respond(
    psp: &SimulatedPsp,
    launch: &SimulatedLaunch,
    report_data: [u8; REPORT_DATA_BYTES],
) -> SimPspResponse {
    let inputs = ReportInputs {
        measurement: launch.measurement.bytes(),
        host_data: launch.host_data,
        report_data,
        policy: launch.policy,
    };
    let signed = psp
        .report(&inputs)
        .and_then(|report| Ok((report, psp.certificates_pem()?)));
    match signed {
        Ok((report, certificates)) => {
            tracing::info!(measurement = %launch.measurement, "simulated AMD-SP signed a report");
            SimPspResponse::Report {
                report,
                certificates,
            }
        }
        Err(err) => SimPspResponse::Error(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloak_attestation::verify::{verify, VerifyRequest};

    fn nonce() -> [u8; 64] {
        let mut nonce = [0u8; 64];
        nonce[..5].copy_from_slice(b"nonce");
        nonce
    }

    fn launch() -> SimulatedLaunch {
        SimulatedLaunch {
            measurement: LaunchDigest::from_bytes([0x42; 48]),
            host_data: [0x1d; 32],
            policy: 0x30000,
        }
    }

    async fn request(socket: &Path, report_data: &[u8]) -> SimPspResponse {
        let mut stream = UnixStream::connect(socket).await.expect("connects");
        stream.write_all(report_data).await.expect("writes");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("reads");
        SimPspResponse::decode(&answer).expect("decodes")
    }

    #[tokio::test]
    async fn reports_carry_the_launch_and_verify_as_simulated() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("vsock.sock_1027");
        let server = SimPspServer::start(&socket, Some(launch())).expect("starts");
        let SimPspResponse::Report {
            report,
            certificates,
        } = request(&socket, &nonce()).await
        else {
            panic!("a report was expected");
        };
        let pems = openssl::x509::X509::stack_from_pem(&certificates).expect("three PEMs");
        assert_eq!(pems.len(), 3, "VCEK, ASK, ARK");
        let vcek = pems[0].to_der().expect("der");
        let mut chain = pems[1].to_pem().expect("pem");
        chain.extend(pems[2].to_pem().expect("pem"));
        let report_data = nonce();
        let verdict = verify(&VerifyRequest {
            report: report.clone(),
            signing_key: vcek.clone(),
            chain: Some(chain.clone()),
            measurements: vec![LaunchDigest::from_bytes([0x42; 48])],
            host_data: Some([0x1d; 32].to_vec()),
            report_data: Some(report_data.to_vec()),
            allow_simulated: true,
            ..Default::default()
        });
        assert!(verdict.passed(), "{:?}", verdict.checks);
        // Another measurement is refused by name.
        let verdict = verify(&VerifyRequest {
            report,
            signing_key: vcek,
            chain: Some(chain),
            measurements: vec![LaunchDigest::from_bytes([0x43; 48])],
            allow_simulated: true,
            ..Default::default()
        });
        let failed: Vec<&str> = verdict
            .checks
            .iter()
            .filter(|c| c.outcome == cloak_attestation::verify::Outcome::Fail)
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(failed, vec!["measurement"]);

        // A guest that sends less than a whole request gets an answer only after the
        // timeout; one that closes early gets none, and the server goes on serving.
        let mut short = UnixStream::connect(&socket).await.expect("connects");
        short.write_all(b"partial").await.expect("writes");
        drop(short);
        assert!(matches!(
            request(&socket, &nonce()).await,
            SimPspResponse::Report { .. }
        ));
        drop(server);
        assert!(!socket.exists(), "the socket goes with the server");
    }

    #[tokio::test]
    async fn a_vm_without_a_simulated_tee_is_told_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("vsock.sock_1027");
        let _server = SimPspServer::start(&socket, None).expect("starts");
        assert!(matches!(
            request(&socket, &nonce()).await,
            SimPspResponse::Error(reason) if reason.contains("no simulated TEE")
        ));
    }
}
