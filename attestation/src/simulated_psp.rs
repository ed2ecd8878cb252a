//! A simulated AMD-SP for `tee = "sim"`: it signs reports in the exact SEV-SNP layout with a
//! VCEK of its own under its own ASK and ARK, so the whole attestation path (guest request,
//! report, chain, verifier) runs where no SNP hardware is. Everything about it says
//! SIMULATED: the certificates' names, and a verifier refuses its root unless told to accept
//! a simulated TEE. It proves the plumbing, never confidentiality.
//!
//! Report layout (SNP ABI, "ATTESTATION_REPORT Structure"), version 2, Milan-style TCB.

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::{X509Builder, X509Extension, X509Name, X509};
use sha2::{Digest, Sha384};

/// Marks the simulated root's subject; the verifier looks for it.
pub const SIMULATED_MARK: &str = "cloak SIMULATED";

/// The TCB the simulated platform reports and certifies (bootloader, tee, snp, microcode).
pub const SIMULATED_TCB: [u8; 4] = [3, 0, 8, 115];

#[derive(Debug, thiserror::Error)]
#[error("simulated PSP: {0}")]
pub struct SimulatedPspError(String);

impl From<openssl::error::ErrorStack> for SimulatedPspError {
    fn from(err: openssl::error::ErrorStack) -> Self {
        Self(err.to_string())
    }
}

/// What the guest and the host put into a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportInputs {
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub report_data: [u8; 64],
    pub policy: u64,
}

pub struct SimulatedPsp {
    ark: X509,
    ask: X509,
    vcek: X509,
    vcek_key: EcKey<Private>,
    chip_id: [u8; 64],
}

fn p384_key() -> Result<PKey<Private>, SimulatedPspError> {
    let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

fn name(common_name: &str) -> Result<X509Name, SimulatedPspError> {
    let mut builder = X509Name::builder()?;
    builder.append_entry_by_text("O", "cloak (simulated TEE, not AMD)")?;
    builder.append_entry_by_text("CN", common_name)?;
    Ok(builder.build())
}

fn certificate(
    subject: &str,
    issuer: &openssl::x509::X509NameRef,
    key: &PKey<Private>,
    signer: &PKey<Private>,
    serial: u32,
    extensions: Vec<X509Extension>,
) -> Result<X509, SimulatedPspError> {
    let mut builder = X509Builder::new()?;
    builder.set_version(2)?;
    let serial: BigNum = BigNum::from_u32(serial)?;
    let serial = Asn1Integer::from_bn(&serial)?;
    builder.set_serial_number(&serial)?;
    let subject: X509Name = name(subject)?;
    builder.set_subject_name(&subject)?;
    builder.set_issuer_name(issuer)?;
    builder.set_pubkey(key)?;
    let not_before: Asn1Time = Asn1Time::days_from_now(0)?;
    let not_after: Asn1Time = Asn1Time::days_from_now(3650)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;
    for extension in extensions {
        builder.append_extension(extension)?;
    }
    builder.sign(signer, MessageDigest::sha384())?;
    Ok(builder.build())
}

/// An AMD VCEK extension (`1.3.6.1.4.1.3704.<arcs>`) with DER contents.
fn amd_extension(arcs: &str, der: &[u8]) -> Result<X509Extension, SimulatedPspError> {
    let oid = Asn1Object::from_str(&format!("1.3.6.1.4.1.3704.{arcs}"))?;
    let contents = Asn1OctetString::new_from_bytes(der)?;
    Ok(X509Extension::new_from_der(&oid, false, &contents)?)
}

fn der_integer(value: u8) -> Vec<u8> {
    if value < 0x80 {
        vec![0x02, 0x01, value]
    } else {
        vec![0x02, 0x02, 0x00, value]
    }
}

/// TCB_VERSION of Milan and Genoa: bootloader, tee, 4 reserved bytes, snp, microcode.
fn tcb_version(tcb: [u8; 4]) -> [u8; 8] {
    [tcb[0], tcb[1], 0, 0, 0, 0, tcb[2], tcb[3]]
}

impl SimulatedPsp {
    /// A fresh simulated platform: keys, chain and chip id.
    pub fn generate() -> Result<Self, SimulatedPspError> {
        let ark_key = p384_key()?;
        let ask_key = p384_key()?;
        let vcek_key = p384_key()?;
        let ark_name = name(&format!("{SIMULATED_MARK} ARK"))?;
        let ark = certificate(
            &format!("{SIMULATED_MARK} ARK"),
            &ark_name,
            &ark_key,
            &ark_key,
            1,
            Vec::new(),
        )?;
        let ask = certificate(
            &format!("{SIMULATED_MARK} ASK"),
            &ark_name,
            &ask_key,
            &ark_key,
            2,
            Vec::new(),
        )?;
        let mut chip_id = [0u8; 64];
        openssl::rand::rand_bytes(&mut chip_id)?;
        let mut hw_id = vec![0x04, 0x40];
        hw_id.extend_from_slice(&chip_id);
        let [bootloader, tee, snp, microcode] = SIMULATED_TCB;
        let extensions = vec![
            amd_extension("1.3.1", &der_integer(bootloader))?,
            amd_extension("1.3.2", &der_integer(tee))?,
            amd_extension("1.3.3", &der_integer(snp))?,
            amd_extension("1.3.8", &der_integer(microcode))?,
            amd_extension("1.4", &hw_id)?,
        ];
        let vcek = certificate(
            &format!("{SIMULATED_MARK} VCEK"),
            ask.subject_name(),
            &vcek_key,
            &ask_key,
            3,
            extensions,
        )?;
        Ok(Self {
            ark,
            ask,
            vcek,
            vcek_key: vcek_key.ec_key()?,
            chip_id,
        })
    }

    pub fn vcek_der(&self) -> Result<Vec<u8>, SimulatedPspError> {
        Ok(self.vcek.to_der()?)
    }

    /// ASK then ARK, PEM: what `--chain` takes.
    pub fn chain_pem(&self) -> Result<Vec<u8>, SimulatedPspError> {
        let mut pem = self.ask.to_pem()?;
        pem.extend(self.ark.to_pem()?);
        Ok(pem)
    }

    /// VCEK, ASK, ARK, PEM: the certificates a guest receives with its reports.
    pub fn certificates_pem(&self) -> Result<Vec<u8>, SimulatedPspError> {
        let mut pem = self.vcek.to_pem()?;
        pem.extend(self.chain_pem()?);
        Ok(pem)
    }

    /// A signed report.
    pub fn report(&self, inputs: &ReportInputs) -> Result<Vec<u8>, SimulatedPspError> {
        use cloak_snp_abi::{field, ReportWriter, SIGNATURE_COMPONENT_BYTES};
        let tcb = tcb_version(SIMULATED_TCB);
        let mut report = ReportWriter::default();
        report
            .set(field::VERSION, &2u32.to_le_bytes())
            .set(field::POLICY, &inputs.policy.to_le_bytes())
            // ECDSA P-384 with SHA-384
            .set(field::SIGNATURE_ALGO, &1u32.to_le_bytes())
            .set(field::CURRENT_TCB, &tcb)
            // SMT enabled
            .set(field::PLATFORM_INFO, &1u64.to_le_bytes())
            .set(field::REPORT_DATA, &inputs.report_data)
            .set(field::MEASUREMENT, &inputs.measurement)
            .set(field::HOST_DATA, &inputs.host_data)
            .set(field::REPORTED_TCB, &tcb)
            .set(field::CHIP_ID, &self.chip_id)
            .set(field::COMMITTED_TCB, &tcb)
            // build, minor, major
            .set(field::CURRENT_VERSION, &[55, 1, 1])
            .set(field::COMMITTED_VERSION, &[55, 1, 1])
            .set(field::LAUNCH_TCB, &tcb);
        openssl::rand::rand_bytes(report.field_mut(field::REPORT_ID))?;
        let digest = Sha384::digest(report.signed_part());
        let signature = EcdsaSig::sign(&digest, &self.vcek_key)?;
        for (component, place) in [
            (signature.r(), field::SIGNATURE_R),
            (signature.s(), field::SIGNATURE_S),
        ] {
            let mut little_endian = component.to_vec_padded(SIGNATURE_COMPONENT_BYTES as i32)?;
            little_endian.reverse();
            report.set(place, &little_endian);
        }
        Ok(report.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{verify, Outcome, VerifyRequest};
    use cloak_launch::digest::LaunchDigest;

    fn inputs() -> ReportInputs {
        ReportInputs {
            measurement: [0x42; 48],
            host_data: [0x17; 32],
            report_data: [0x99; 64],
            policy: 0x30000,
        }
    }

    fn request(psp: &SimulatedPsp, report: Vec<u8>, allow_simulated: bool) -> VerifyRequest {
        VerifyRequest {
            report,
            signing_key: psp.vcek_der().expect("vcek"),
            chain: Some(psp.chain_pem().expect("chain")),
            measurements: vec![LaunchDigest::from_bytes([0x42; 48])],
            host_data: Some(vec![0x17; 32]),
            report_data: Some(vec![0x99; 64]),
            allow_simulated,
            minimum_tcb: Some(crate::verify::MinimumTcb {
                bootloader: SIMULATED_TCB[0],
                tee: SIMULATED_TCB[1],
                snp: SIMULATED_TCB[2],
                microcode: SIMULATED_TCB[3],
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_simulated_report_verifies_only_when_simulation_is_allowed() {
        let psp = SimulatedPsp::generate().expect("psp");
        let report = psp.report(&inputs()).expect("report");
        assert_eq!(report.len(), cloak_snp_abi::REPORT_BYTES);
        let accepted = verify(&request(&psp, report.clone(), true));
        let lines: Vec<String> = accepted.checks.iter().map(ToString::to_string).collect();
        assert!(accepted.passed(), "{}", lines.join("\n"));
        let ark = &accepted.checks[1];
        assert!(ark.detail.contains("SIMULATED"), "{ark}");
        for check in &accepted.checks {
            assert_ne!(check.outcome, Outcome::Skipped, "{check}");
        }
        let refused = verify(&request(&psp, report, false));
        assert!(!refused.passed());
        assert_eq!(
            refused.first_failure().map(|c| c.name.as_str()),
            Some("ark")
        );
    }

    #[test]
    fn simulated_reports_fail_like_real_ones_when_altered() {
        let psp = SimulatedPsp::generate().expect("psp");
        let mut report = psp.report(&inputs()).expect("report");
        report[0x90] ^= 1;
        let verdict = verify(&request(&psp, report, true));
        assert_eq!(
            verdict.first_failure().map(|c| c.name.as_str()),
            Some("report-signature")
        );
        let other = SimulatedPsp::generate().expect("another platform");
        let report = other.report(&inputs()).expect("report");
        let verdict = verify(&request(&psp, report, true));
        assert!(
            !verdict.passed(),
            "another platform's report with this platform's VCEK"
        );
    }
}
