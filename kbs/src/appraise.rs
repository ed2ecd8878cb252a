//! Appraising one attestation: the nonce is this session's, the report verifies (AMD chain or,
//! only with allow-simulated, the simulated TEE's; the VCEK's or VLEK's signature; TCB and chip id), its
//! REPORT_DATA binds exactly this runtime data (nonce and tee-pubkey), its HOST_DATA is the
//! digest of the init-data the guest sent. What passes becomes the claims the resource policy
//! judges (measurement, HOST_DATA, debug, TCB); what fails is refused here, whatever the
//! policy says.

use cloak_attestation::verify::{verify, CheckName, Outcome, VerifyRequest};
use cloak_kbs_protocol::evidence::SnpEvidence;
use kbs_types::Attestation;
use serde::Serialize;

use crate::{BrokerConfig, BrokerError};

/// The verified facts of one attested pod, as the resource policy sees them (`input.claims`).
#[derive(Debug, Clone, Serialize)]
pub struct Claims {
    pub tee: &'static str,
    /// The report is under cloak's simulated root: nothing about it is hardware-backed.
    pub simulated: bool,
    pub measurement: String,
    pub host_data: String,
    /// The digest of the init-data the pod sent (and HOST_DATA binds), hex; absent without.
    pub init_data_digest: Option<String>,
    pub debug: bool,
    pub policy: String,
    pub tcb: Tcb,
    pub chip_id: String,
    pub report_version: u32,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Tcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

fn unauthorized(reason: impl Into<String>) -> BrokerError {
    BrokerError::Unauthorized(reason.into())
}

/// The certificates the guest sent: the VCEK (or VLEK) first, then ASK and ARK if present.
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    const END: &[u8] = b"-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(at) = rest.windows(END.len()).position(|w| w == END) {
        let end = at + END.len();
        let start = rest
            .windows(5)
            .position(|w| w == b"-----")
            .unwrap_or(0)
            .min(at);
        let mut certificate = rest[start..end].to_vec();
        certificate.push(b'\n');
        out.push(certificate);
        rest = &rest[end..];
    }
    out
}

pub(crate) fn appraise(
    config: &BrokerConfig,
    nonce: &str,
    attestation: &Attestation,
) -> Result<Claims, BrokerError> {
    if attestation.runtime_data.nonce != nonce {
        return Err(unauthorized(
            "the runtime data's nonce is not this session's challenge (a replayed or foreign attestation)",
        ));
    }
    let expected_report_data =
        cloak_kbs_protocol::binding::report_data_for(&attestation.runtime_data)
            .map_err(|err| BrokerError::BadRequest(err.to_string()))?;
    let evidence: SnpEvidence =
        serde_json::from_value(attestation.tee_evidence.primary_evidence.clone())
            .map_err(|err| BrokerError::BadRequest(format!("the SNP evidence: {err}")))?;
    let report = cloak_kbs_protocol::from_b64url(&evidence.report)
        .map_err(|_| BrokerError::BadRequest("the report is not base64url".to_owned()))?;
    let certificates = cloak_kbs_protocol::from_b64url(&evidence.certificates)
        .map_err(|_| BrokerError::BadRequest("the certificates are not base64url".to_owned()))?;
    let mut certificates = split_pem(&certificates).into_iter();
    let vcek = certificates.next().ok_or_else(|| {
        unauthorized("the evidence carries no VCEK (fetching one from AMD's key server is not built: the host must supply it)")
    })?;
    let chain: Vec<u8> = certificates.flatten().collect();

    let init_data_digest;
    let expected_host_data = match &attestation.init_data {
        Some(init_data) => {
            if init_data.format != "toml" {
                return Err(BrokerError::BadRequest(format!(
                    "init-data format {:?} (only toml)",
                    init_data.format
                )));
            }
            let parsed = cloak_init_data::InitData::parse(init_data.body.as_bytes())
                .map_err(|err| unauthorized(format!("the init-data: {err}")))?;
            init_data_digest = Some(hex::encode(parsed.digest()));
            parsed.host_data().to_vec()
        }
        None => {
            init_data_digest = None;
            vec![0; cloak_snp_abi::HOST_DATA_BYTES]
        }
    };
    let verdict = verify(&VerifyRequest {
        report: report.clone(),
        signing_key: vcek,
        chain: (!chain.is_empty()).then_some(chain),
        measurements: Vec::new(),
        host_data: Some(expected_host_data),
        report_data: Some(expected_report_data.to_vec()),
        // Judged by the resource policy, from the claims.
        allow_debug: true,
        minimum_tcb: None,
        allow_simulated: config.allow_simulated,
    });
    if !verdict.passed() {
        let failures: Vec<String> = verdict
            .checks
            .iter()
            .filter(|check| check.outcome == Outcome::Fail)
            .map(|check| match check.name {
                CheckName::ReportData => format!(
                    "report-data: the report does not bind this nonce and tee-pubkey ({})",
                    check.detail
                ),
                CheckName::HostData => format!(
                    "host-data: HOST_DATA is not the digest of the init-data sent ({})",
                    check.detail
                ),
                _ => check.to_string(),
            })
            .collect();
        return Err(unauthorized(format!(
            "attestation failed: {}",
            failures.join("; ")
        )));
    }
    let simulated = verdict
        .checks
        .iter()
        .any(|check| check.name == CheckName::Ark && check.detail.contains("SIMULATED"));
    // A verdict that passed has read the report and its product line's TCB layout.
    let (Some(parsed), Some(tcb)) = (verdict.report.as_ref(), verdict.reported_tcb()) else {
        return Err(BrokerError::BadRequest(
            "the report passed verification unread".to_owned(),
        ));
    };
    Ok(Claims {
        tee: "snp",
        simulated,
        measurement: hex::encode(parsed.measurement),
        host_data: hex::encode(parsed.host_data),
        init_data_digest,
        debug: parsed.debug_allowed(),
        policy: format!("{:#x}", parsed.policy),
        tcb: Tcb {
            bootloader: tcb.bootloader,
            tee: tcb.tee,
            snp: tcb.snp,
            microcode: tcb.microcode,
        },
        chip_id: hex::encode(parsed.chip_id),
        report_version: parsed.version,
    })
}
