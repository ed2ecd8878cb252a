//! Verifying an SEV-SNP attestation report: the AMD certificate chain (ARK self-signed and
//! equal to AMD's root of a product line, ASK signed by it, VCEK signed by the ASK), the
//! report's signature by the VCEK, the VCEK's TCB and chip id against the report, then what
//! the relying party expects: the launch measurement, HOST_DATA, REPORT_DATA, the guest policy
//! and a minimum TCB. Every check is reported by name, so a failure says which one.
//!
//! Report layout: SEV-SNP Firmware ABI (AMD 56860), table "ATTESTATION_REPORT Structure": 1184
//! bytes, the signature (ECDSA P-384 with SHA-384) covers bytes 0x000..0x2A0, R and S are
//! 72-byte little-endian fields at 0x2A0 and 0x2E8.

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use sev::certs::snp::{builtin, ca, Certificate, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::firmware::host::TcbVersion;
use sev::parser::ByteParser;
use sha2::{Digest, Sha384};

use crate::vcek_extensions::VcekExtensions;
use cloak_launch::digest::LaunchDigest;

pub use cloak_snp_abi::REPORT_BYTES;
use cloak_snp_abi::{field, SIGNATURE_COMPONENT_BYTES};
const SIGNED_BYTES: usize = field::SIGNED.end;
const SIGNATURE_R: usize = field::SIGNATURE_R.start;
const SIGNATURE_S: usize = field::SIGNATURE_S.start;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Not asked for, or not reachable after an earlier failure.
    Skipped,
}

/// The checks of a verdict, in the order a verdict lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CheckName {
    Report,
    Ark,
    Ask,
    Vcek,
    ReportSignature,
    VcekTcb,
    ChipId,
    Measurement,
    HostData,
    ReportData,
    PolicyDebug,
    MinimumTcb,
}

impl CheckName {
    /// Every check, in verdict order.
    pub const ALL: [Self; 12] = [
        Self::Report,
        Self::Ark,
        Self::Ask,
        Self::Vcek,
        Self::ReportSignature,
        Self::VcekTcb,
        Self::ChipId,
        Self::Measurement,
        Self::HostData,
        Self::ReportData,
        Self::PolicyDebug,
        Self::MinimumTcb,
    ];

    /// The name `cloak attest verify` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::Ark => "ark",
            Self::Ask => "ask",
            Self::Vcek => "vcek",
            Self::ReportSignature => "report-signature",
            Self::VcekTcb => "vcek-tcb",
            Self::ChipId => "chip-id",
            Self::Measurement => "measurement",
            Self::HostData => "host-data",
            Self::ReportData => "report-data",
            Self::PolicyDebug => "policy-debug",
            Self::MinimumTcb => "minimum-tcb",
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: CheckName,
    pub outcome: Outcome,
    pub detail: String,
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = match self.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skipped => "SKIP",
        };
        write!(f, "{word} {}: {}", self.name, self.detail)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub checks: Vec<Check>,
}

impl Verdict {
    /// True when no check failed and the signature checks ran.
    pub fn passed(&self) -> bool {
        let signed = self
            .checks
            .iter()
            .any(|c| c.name == CheckName::ReportSignature && c.outcome == Outcome::Pass);
        signed && self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The first failed check.
    pub fn first_failure(&self) -> Option<&Check> {
        self.checks.iter().find(|c| c.outcome == Outcome::Fail)
    }

    fn record(&mut self, name: CheckName, result: Result<String, String>) -> bool {
        let (outcome, detail) = match result {
            Ok(detail) => (Outcome::Pass, detail),
            Err(detail) => (Outcome::Fail, detail),
        };
        self.checks.push(Check {
            name,
            outcome,
            detail,
        });
        outcome == Outcome::Pass
    }

    fn skip(&mut self, name: CheckName, detail: &str) {
        self.checks.push(Check {
            name,
            outcome: Outcome::Skipped,
            detail: detail.to_owned(),
        });
    }

    /// Every check not recorded is "not reached"; the checks in verdict order. However
    /// early verification stops, the verdict names every check once.
    fn finish(mut self) -> Self {
        for name in CheckName::ALL {
            if !self.checks.iter().any(|check| check.name == name) {
                self.skip(name, "not reached");
            }
        }
        self.checks.sort_by_key(|check| check.name);
        self
    }
}

/// A minimum TCB: each component's SPL must be at least this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MinimumTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl std::str::FromStr for MinimumTcb {
    type Err = String;

    /// `BOOTLOADER:TEE:SNP:MICROCODE`, e.g. `3:0:8:115`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<u8> = text
            .split(':')
            .map(|p| p.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|err| format!("{text:?}: {err}"))?;
        match parts.as_slice() {
            [bootloader, tee, snp, microcode] => Ok(Self {
                bootloader: *bootloader,
                tee: *tee,
                snp: *snp,
                microcode: *microcode,
            }),
            _ => Err(format!("{text:?}: expected BOOTLOADER:TEE:SNP:MICROCODE")),
        }
    }
}

/// What the relying party gives the verifier.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// The raw report.
    pub report: Vec<u8>,
    /// VCEK (or VLEK), DER or PEM.
    pub vcek: Vec<u8>,
    /// ASK (or ASVK) then ARK, PEM; AMD's built-in chains when absent.
    pub chain: Option<Vec<u8>>,
    /// Acceptable launch measurements; not checked when empty.
    pub measurements: Vec<LaunchDigest>,
    pub host_data: Option<Vec<u8>>,
    pub report_data: Option<Vec<u8>>,
    pub allow_debug: bool,
    pub minimum_tcb: Option<MinimumTcb>,
    /// Accept the root of cloak's simulated TEE (development and tests only).
    pub allow_simulated: bool,
}

/// AMD product lines whose roots the verifier knows.
fn builtin_chains() -> Vec<(&'static str, Result<ca::Chain, String>)> {
    let chain = |ark: std::io::Result<Certificate>, ask: std::io::Result<Certificate>| {
        Ok(ca::Chain {
            ark: ark.map_err(|e| e.to_string())?,
            ask: ask.map_err(|e| e.to_string())?,
        })
    };
    vec![
        ("Milan", chain(builtin::milan::ark(), builtin::milan::ask())),
        ("Genoa", chain(builtin::genoa::ark(), builtin::genoa::ask())),
        ("Turin", chain(builtin::turin::ark(), builtin::turin::ask())),
    ]
}

fn der_of(certificate: &Certificate) -> Vec<u8> {
    certificate.to_der().unwrap_or_default()
}

fn parse_certificate(bytes: &[u8]) -> Result<Certificate, String> {
    if bytes.len() < 27 {
        return Err(format!("{} bytes is no certificate", bytes.len()));
    }
    Certificate::from_bytes(bytes).map_err(|err| format!("not a DER or PEM certificate: {err}"))
}

fn parse_chain(pem: &[u8]) -> Result<ca::Chain, String> {
    let count = pem
        .windows(b"BEGIN CERTIFICATE".len())
        .filter(|w| *w == b"BEGIN CERTIFICATE")
        .count();
    if count != 2 {
        return Err(format!(
            "{count} PEM certificates; expected the ASK then the ARK"
        ));
    }
    ca::Chain::from_pem_bytes(pem).map_err(|err| format!("reading the chain: {err}"))
}

/// Verifies the report signature over the raw signed bytes (not a re-encoding of a parsed
/// report, so every bit the AMD-SP signed counts).
fn verify_signature(report: &[u8], vcek: &Certificate) -> Result<String, String> {
    let component = |offset: usize| {
        let mut big_endian = report[offset..offset + SIGNATURE_COMPONENT_BYTES].to_vec();
        big_endian.reverse();
        BigNum::from_slice(&big_endian).map_err(|err| err.to_string())
    };
    let signature =
        EcdsaSig::from_private_components(component(SIGNATURE_R)?, component(SIGNATURE_S)?)
            .map_err(|err| err.to_string())?;
    let key = vcek
        .public_key()
        .and_then(|key| key.ec_key().map_err(std::io::Error::other))
        .map_err(|err| format!("the VCEK has no P-384 key: {err}"))?;
    let digest = Sha384::digest(&report[..SIGNED_BYTES]);
    match signature.verify(&digest, &key) {
        Ok(true) => Ok("ECDSA P-384 signature by the VCEK over bytes 0x000..0x2a0".to_owned()),
        Ok(false) => Err(
            "the signature does not match: the report was altered or another key signed it"
                .to_owned(),
        ),
        Err(err) => Err(format!("checking the signature: {err}")),
    }
}

fn compare_tcb(extensions: &VcekExtensions, reported: &TcbVersion) -> Result<String, String> {
    let pairs = [
        ("bootloader", extensions.bootloader_spl, reported.bootloader),
        ("tee", extensions.tee_spl, reported.tee),
        ("snp", extensions.snp_spl, reported.snp),
        ("microcode", extensions.microcode_spl, reported.microcode),
    ];
    let mut mismatches = Vec::new();
    for (name, certified, in_report) in pairs {
        match certified {
            Some(value) if value == in_report => {}
            Some(value) => mismatches.push(format!(
                "{name} {value} in the VCEK, {in_report} in the report"
            )),
            None => mismatches.push(format!("the VCEK has no {name} SPL")),
        }
    }
    if mismatches.is_empty() {
        Ok(format!(
            "reported TCB bootloader {} tee {} snp {} microcode {} is the VCEK's",
            reported.bootloader, reported.tee, reported.snp, reported.microcode
        ))
    } else {
        Err(mismatches.join("; "))
    }
}

fn expect_bytes(name: &str, expected: &[u8], actual: &[u8]) -> Result<String, String> {
    if expected == actual {
        Ok(format!("{name} is {}", hex::encode(actual)))
    } else {
        Err(format!(
            "{name} is {}, expected {}",
            hex::encode(actual),
            hex::encode(expected)
        ))
    }
}

pub fn verify(request: &VerifyRequest) -> Verdict {
    let mut verdict = Verdict::default();

    // The report itself.
    let parsed = if request.report.len() != REPORT_BYTES {
        Err(format!(
            "{} bytes, an SNP report has {REPORT_BYTES}",
            request.report.len()
        ))
    } else {
        AttestationReport::from_bytes(&request.report)
            .map_err(|err| format!("unreadable: {err}"))
            .and_then(|report| {
                if report.version >= 2 {
                    Ok(report)
                } else {
                    Err(format!("version {} (2 or later expected)", report.version))
                }
            })
    };
    let report = match parsed {
        Ok(report) => {
            verdict.record(
                CheckName::Report,
                Ok(format!("version {}, VMPL {}", report.version, report.vmpl)),
            );
            report
        }
        Err(err) => {
            verdict.record(CheckName::Report, Err(err));
            return verdict.finish();
        }
    };
    let vcek = match parse_certificate(&request.vcek) {
        Ok(vcek) => vcek,
        Err(err) => {
            verdict.record(CheckName::Vcek, Err(err));
            return verdict.finish();
        }
    };

    // The chain: the one given, or the built-in chain of the product line whose ASK signed
    // the VCEK.
    let (chain, product) = match &request.chain {
        Some(pem) => match parse_chain(pem) {
            Ok(chain) => (chain, None),
            Err(err) => {
                verdict.record(CheckName::Ark, Err(err));
                return verdict.finish();
            }
        },
        None => {
            let found = builtin_chains().into_iter().find_map(|(name, chain)| {
                let chain = chain.ok()?;
                (&chain.ask, &vcek).verify().ok()?;
                Some((chain, Some(name)))
            });
            match found {
                Some(found) => found,
                None => {
                    verdict.skip(CheckName::Ark, "no chain given");
                    verdict.skip(CheckName::Ask, "no chain given");
                    verdict.record(
                        CheckName::Vcek,
                        Err(
                            "no AMD product line's ASK (Milan, Genoa, Turin) signed this VCEK"
                                .to_owned(),
                        ),
                    );
                    return verdict.finish();
                }
            }
        }
    };
    let known_root = builtin_chains().into_iter().find_map(|(name, builtin)| {
        let builtin = builtin.ok()?;
        (der_of(&builtin.ark) == der_of(&chain.ark)).then_some(name)
    });
    let simulated =
        String::from_utf8_lossy(&der_of(&chain.ark)).contains(crate::simulated_psp::SIMULATED_MARK);
    let ark_ok = verdict.record(
        CheckName::Ark,
        match ((&chain.ark, &chain.ark).verify(), known_root) {
            (Ok(()), Some(name)) => Ok(format!("AMD {name} root, self-signed")),
            (Ok(()), None) if simulated && request.allow_simulated => Ok(
                "SIMULATED TEE root, accepted because simulation is allowed: NOT confidential"
                    .to_owned(),
            ),
            (Ok(()), None) if simulated => {
                Err("the root of cloak's SIMULATED TEE (allow simulation to accept it)".to_owned())
            }
            (Ok(()), None) => {
                Err("self-signed, but not AMD's root of Milan, Genoa or Turin".to_owned())
            }
            (Err(err), _) => Err(format!("not self-signed: {err}")),
        },
    );
    let ask_ok = verdict.record(
        CheckName::Ask,
        (&chain.ark, &chain.ask)
            .verify()
            .map(|()| "signed by the ARK".to_owned())
            .map_err(|err| format!("not signed by the ARK: {err}")),
    );
    let vcek_ok = verdict.record(
        CheckName::Vcek,
        (&chain.ask, &vcek)
            .verify()
            .map(|()| match product.or(known_root) {
                Some(name) => format!("signed by the {name} ASK"),
                None => "signed by the ASK".to_owned(),
            })
            .map_err(|err| format!("not signed by the ASK: {err}")),
    );
    if !(ark_ok && ask_ok && vcek_ok) {
        return verdict.finish();
    }
    verdict.record(
        CheckName::ReportSignature,
        verify_signature(&request.report, &vcek),
    );

    let extensions = VcekExtensions::from_der(&der_of(&vcek));
    verdict.record(
        CheckName::VcekTcb,
        compare_tcb(&extensions, &report.reported_tcb),
    );
    match &extensions.hw_id {
        Some(hw_id) => {
            verdict.record(
                CheckName::ChipId,
                expect_bytes("CHIP_ID", hw_id, &report.chip_id),
            );
        }
        None => verdict.skip(CheckName::ChipId, "the certificate names no chip (a VLEK)"),
    }

    if request.measurements.is_empty() {
        verdict.skip(CheckName::Measurement, "no reference values given");
    } else {
        let measurement = LaunchDigest::from_bytes(report.measurement);
        let result = if request.measurements.contains(&measurement) {
            Ok(format!("{measurement} is a reference value"))
        } else {
            Err(format!(
                "{measurement} is none of the {} reference value(s)",
                request.measurements.len()
            ))
        };
        verdict.record(CheckName::Measurement, result);
    }
    match &request.host_data {
        Some(expected) => {
            verdict.record(
                CheckName::HostData,
                expect_bytes("HOST_DATA", expected, &report.host_data),
            );
        }
        None => verdict.skip(CheckName::HostData, "not requested"),
    }
    match &request.report_data {
        Some(expected) => {
            verdict.record(
                CheckName::ReportData,
                expect_bytes("REPORT_DATA", expected, &report.report_data),
            );
        }
        None => verdict.skip(CheckName::ReportData, "not requested"),
    }
    let debug = report.policy.debug_allowed();
    verdict.record(
        CheckName::PolicyDebug,
        match (debug, request.allow_debug) {
            (false, _) => Ok("the guest policy forbids debugging".to_owned()),
            (true, true) => Ok("debugging allowed by the policy, and accepted".to_owned()),
            (true, false) => {
                Err("the guest policy allows debugging (its memory can be read)".to_owned())
            }
        },
    );
    match request.minimum_tcb {
        Some(minimum) => {
            let tcb = &report.reported_tcb;
            let low: Vec<String> = [
                ("bootloader", tcb.bootloader, minimum.bootloader),
                ("tee", tcb.tee, minimum.tee),
                ("snp", tcb.snp, minimum.snp),
                ("microcode", tcb.microcode, minimum.microcode),
            ]
            .iter()
            .filter(|(_, have, need)| have < need)
            .map(|(name, have, need)| format!("{name} {have} < {need}"))
            .collect();
            verdict.record(
                CheckName::MinimumTcb,
                if low.is_empty() {
                    Ok("the reported TCB meets the minimum".to_owned())
                } else {
                    Err(low.join(", "))
                },
            );
        }
        None => verdict.skip(CheckName::MinimumTcb, "not requested"),
    }
    verdict.finish()
}

/// Reads a report given as raw bytes or as hex text (whitespace ignored).
pub fn report_from_file_bytes(bytes: &[u8]) -> Vec<u8> {
    if bytes.len() == REPORT_BYTES {
        return bytes.to_vec();
    }
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    hex::decode(&text).unwrap_or_else(|_| bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data(path: &str) -> Vec<u8> {
        let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/snp")
            .join(path);
        std::fs::read(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
    }

    /// (source, report, VCEK, ASK+ARK chain).
    type RealReport = (&'static str, Vec<u8>, Vec<u8>, Vec<u8>);

    /// Both real Milan reports.
    fn real_reports() -> Vec<RealReport> {
        vec![
            (
                "sev crate",
                report_from_file_bytes(&data("milan-sev-crate/report_milan.hex")),
                data("milan-sev-crate/vcek_milan.der"),
                data("milan-sev-crate/cert_chain_milan"),
            ),
            (
                "go-sev-guest",
                data("milan-go-sev-guest/attestation.bin"),
                data("milan-go-sev-guest/vcek.testcer"),
                data("milan-go-sev-guest/ask_ark_milan.pem"),
            ),
        ]
    }

    fn outcome(verdict: &Verdict, name: &str) -> Outcome {
        verdict
            .checks
            .iter()
            .find(|c| c.name.as_str() == name)
            .map(|c| c.outcome)
            .unwrap_or_else(|| panic!("no {name} check in {verdict:?}"))
    }

    #[test]
    fn real_reports_verify_with_and_without_an_explicit_chain() {
        for (source, report, vcek, chain) in real_reports() {
            assert_eq!(report.len(), REPORT_BYTES, "{source}");
            for chain in [Some(chain), None] {
                let verdict = verify(&VerifyRequest {
                    report: report.clone(),
                    vcek: vcek.clone(),
                    chain: chain.clone(),
                    allow_debug: true,
                    ..Default::default()
                });
                let lines: Vec<String> = verdict.checks.iter().map(ToString::to_string).collect();
                assert!(verdict.passed(), "{source}:\n{}", lines.join("\n"));
                for name in [
                    "ark",
                    "ask",
                    "vcek",
                    "report-signature",
                    "vcek-tcb",
                    "chip-id",
                ] {
                    assert_eq!(outcome(&verdict, name), Outcome::Pass, "{source} {name}");
                }
                assert!(
                    verdict.checks[1].detail.contains("Milan"),
                    "{:?}",
                    verdict.checks[1]
                );
            }
        }
    }

    #[test]
    fn every_flipped_bit_in_the_signed_part_fails() {
        for (source, report, vcek, chain) in real_reports() {
            for byte in 0..SIGNED_BYTES {
                let mut altered = report.clone();
                altered[byte] ^= 1 << (byte % 8);
                let verdict = verify(&VerifyRequest {
                    report: altered,
                    vcek: vcek.clone(),
                    chain: Some(chain.clone()),
                    allow_debug: true,
                    ..Default::default()
                });
                assert!(
                    !verdict.passed(),
                    "{source}: flipping a bit of byte {byte:#x} went unnoticed"
                );
            }
            // The signature itself: a flipped bit in R.
            let mut altered = report.clone();
            altered[SIGNATURE_R] ^= 0x80;
            let verdict = verify(&VerifyRequest {
                report: altered,
                vcek: vcek.clone(),
                chain: Some(chain.clone()),
                allow_debug: true,
                ..Default::default()
            });
            assert_eq!(
                outcome(&verdict, "report-signature"),
                Outcome::Fail,
                "{source}"
            );
        }
    }

    #[test]
    fn the_wrong_vcek_fails_on_signature_and_chip() {
        let reports = real_reports();
        let (_, report, _, chain) = &reports[0];
        let (_, _, other_vcek, _) = &reports[1];
        let verdict = verify(&VerifyRequest {
            report: report.clone(),
            vcek: other_vcek.clone(),
            chain: Some(chain.clone()),
            allow_debug: true,
            ..Default::default()
        });
        assert!(!verdict.passed());
        assert_eq!(outcome(&verdict, "report-signature"), Outcome::Fail);
        assert_eq!(outcome(&verdict, "chip-id"), Outcome::Fail);
    }

    #[test]
    fn a_chain_of_another_product_line_fails_on_the_vcek() {
        let (_, report, vcek, _) = real_reports().remove(0);
        let genoa = [builtin::genoa::ASK, builtin::genoa::ARK].concat();
        let verdict = verify(&VerifyRequest {
            report,
            vcek,
            chain: Some(genoa),
            allow_debug: true,
            ..Default::default()
        });
        assert!(!verdict.passed());
        assert_eq!(
            outcome(&verdict, "ark"),
            Outcome::Pass,
            "the Genoa root is AMD's"
        );
        assert_eq!(
            verdict.first_failure().map(|c| c.name.as_str()),
            Some("vcek")
        );
        assert_eq!(outcome(&verdict, "report-signature"), Outcome::Skipped);
    }

    #[test]
    fn expectations_are_checked_by_name() {
        let (_, report, vcek, chain) = real_reports().remove(0);
        let parsed = AttestationReport::from_bytes(&report).expect("parses");
        let base = VerifyRequest {
            report,
            vcek,
            chain: Some(chain),
            allow_debug: true,
            ..Default::default()
        };
        let good = verify(&VerifyRequest {
            measurements: vec![LaunchDigest::from_bytes(parsed.measurement)],
            host_data: Some(parsed.host_data.to_vec()),
            report_data: Some(parsed.report_data.to_vec()),
            minimum_tcb: Some(MinimumTcb::default()),
            ..base.clone()
        });
        assert!(good.passed(), "{good:?}");
        for (request, failing) in [
            (
                VerifyRequest {
                    measurements: vec![LaunchDigest::from_bytes([7; 48])],
                    ..base.clone()
                },
                "measurement",
            ),
            (
                VerifyRequest {
                    host_data: Some(vec![1; 32]),
                    ..base.clone()
                },
                "host-data",
            ),
            (
                VerifyRequest {
                    report_data: Some(vec![2; 64]),
                    ..base.clone()
                },
                "report-data",
            ),
            (
                VerifyRequest {
                    minimum_tcb: Some("255:255:255:255".parse().expect("tcb")),
                    ..base.clone()
                },
                "minimum-tcb",
            ),
        ] {
            let verdict = verify(&request);
            assert_eq!(
                verdict.first_failure().map(|c| c.name.as_str()),
                Some(failing)
            );
        }
        if parsed.policy.debug_allowed() {
            let verdict = verify(&VerifyRequest {
                allow_debug: false,
                ..base.clone()
            });
            assert_eq!(
                verdict.first_failure().map(|c| c.name.as_str()),
                Some("policy-debug")
            );
        }
    }

    #[test]
    fn garbage_is_refused_without_a_panic() {
        let verdict = verify(&VerifyRequest {
            report: vec![0; 10],
            vcek: vec![1, 2, 3],
            ..Default::default()
        });
        assert_eq!(
            verdict.first_failure().map(|c| c.name.as_str()),
            Some("report")
        );
        let (_, report, _, _) = real_reports().remove(0);
        let verdict = verify(&VerifyRequest {
            report,
            vcek: vec![1, 2, 3],
            chain: Some(b"not pem".to_vec()),
            ..Default::default()
        });
        assert_eq!(
            verdict.first_failure().map(|c| c.name.as_str()),
            Some("vcek")
        );
    }

    #[test]
    fn a_verdict_names_every_check_once_in_order_however_early_it_stops() {
        let (_, report, vcek, _) = real_reports().remove(0);
        let cases = [
            ("garbage report", vec![0; 10], vcek.clone(), None),
            // The VCEK is parsed before the chain: a bad one used to leave ark and ask out.
            ("unreadable VCEK", report.clone(), vec![1, 2, 3], None),
            (
                "unreadable chain",
                report.clone(),
                vcek.clone(),
                Some(b"x".to_vec()),
            ),
            ("good report", report, vcek, None),
        ];
        for (what, report, vcek, chain) in cases {
            let verdict = verify(&VerifyRequest {
                report,
                vcek,
                chain,
                ..Default::default()
            });
            let names: Vec<CheckName> = verdict.checks.iter().map(|c| c.name).collect();
            assert_eq!(names, CheckName::ALL, "{what}: {verdict:?}");
        }
    }
}
