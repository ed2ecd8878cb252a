//! Verifying an SEV-SNP attestation report: the AMD certificate chain (ARK self-signed and
//! equal to AMD's root of a product line, the ASK or ASVK signed by it, the VCEK or VLEK
//! signed by that), the report's signature by the key KEY_INFO names, the key's TCB, product
//! and (for a VCEK) chip id against the report, then what the relying party expects: the
//! launch measurement, HOST_DATA, REPORT_DATA, the guest policy and a minimum TCB. Every check
//! is reported by name, so a failure says which one.
//!
//! Report layout: SEV-SNP Firmware ABI (AMD 56860), table "ATTESTATION_REPORT Structure": 1184
//! bytes, the signature (ECDSA P-384 with SHA-384) covers bytes 0x000..0x2A0, R and S are
//! 72-byte little-endian fields at 0x2A0 and 0x2E8.

mod checks;
mod verdict;

use cloak_launch::digest::LaunchDigest;

use crate::amd_chain::{self, Cert, Chain, NoChain, Source};
use crate::report::{Product, Report, SigningKey};
use crate::vcek_extensions::VcekExtensions;

pub use cloak_snp_abi::REPORT_BYTES;
pub use verdict::{Check, CheckName, Outcome, Verdict};

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
    /// The key that signed the report, VCEK or VLEK, DER or PEM.
    pub signing_key: Vec<u8>,
    /// A PEM bundle holding the ARK and the ASK (for a VCEK) or ASVK (for a VLEK), in any
    /// order and with other certificates beside them; AMD's built-in roots when absent.
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

/// The report's own check: it parses, and a key it names signed it.
fn read_report(request: &VerifyRequest, verdict: &mut Verdict) -> Option<Report> {
    let report = match Report::parse(&request.report) {
        Ok(report) => report,
        Err(err) => {
            verdict.record(CheckName::Report, Err(err.to_string()));
            return None;
        }
    };
    verdict.name_key(report.signing_key);
    let result = match report.signing_key {
        SigningKey::None => Err(format!(
            "version {}: KEY_INFO says no key signed it (SIGNING_KEY = none)",
            report.version
        )),
        SigningKey::Reserved(value) => Err(format!(
            "version {}: KEY_INFO names signing key {value}, which the ABI reserves",
            report.version
        )),
        SigningKey::Vcek | SigningKey::Vlek => {
            let cpuid = match report.product_by_cpuid() {
                Some(product) => format!(", CPUID of {}", product.name()),
                None => String::new(),
            };
            Ok(format!(
                "version {}, VMPL {}, signed by the {}{cpuid}",
                report.version,
                report.vmpl,
                report.signing_key.name()
            ))
        }
    };
    let signed = verdict.record(CheckName::Report, result);
    verdict.report = Some(report.clone());
    signed.then_some(report)
}

/// AMD names its keys "SEV-VCEK" and "SEV-VLEK": a certificate of the other kind than the
/// report's KEY_INFO is refused by name before any signature is tried.
fn key_kind_matches(cert: &Cert, kind: SigningKey) -> Result<(), String> {
    let other = match kind {
        SigningKey::Vcek => "SEV-VLEK",
        _ => "SEV-VCEK",
    };
    if cert.common_name == other {
        return Err(format!(
            "the report was signed by the {}, but this certificate is a {} ({})",
            kind.name(),
            &other[4..],
            cert.common_name
        ));
    }
    Ok(())
}

/// The chain above the key, from the request's bundle or AMD's built-in roots, with the
/// product line of its root when that is AMD's.
fn find_chain(
    request: &VerifyRequest,
    lines: &[amd_chain::ProductLine],
    key_cert: &Cert,
    kind: SigningKey,
    verdict: &mut Verdict,
) -> Option<(Chain, Option<Product>)> {
    let found = match &request.chain {
        Some(pem) => match amd_chain::read_bundle(pem) {
            Ok(bundle) => amd_chain::bundle_chain(&bundle, key_cert, kind).map(|chain| {
                let product = amd_chain::known_root(lines, &chain.ark);
                (chain, product)
            }),
            Err(err) => {
                verdict.record(CheckName::Ark, Err(err.to_string()));
                return None;
            }
        },
        None => amd_chain::builtin_chain(lines, key_cert, kind)
            .map(|(chain, product)| (chain, Some(product))),
    };
    match found {
        Ok(found) => Some(found),
        Err(NoChain::NoIssuer(reason)) => {
            verdict.skip(CheckName::Ark, "no chain above the key");
            verdict.skip(CheckName::Ask, "no chain above the key");
            verdict.record(CheckName::Vcek, Err(reason));
            None
        }
        Err(NoChain::NoRoot(reason)) => {
            verdict.record(CheckName::Ark, Err(reason));
            None
        }
    }
}

/// Where the chain's ARK and intermediate came from, and the bundle's certificates not used.
fn provenance(source: &Source) -> (String, String, String) {
    match source {
        Source::BuiltIn => (
            ", built in".to_owned(),
            ", built in".to_owned(),
            String::new(),
        ),
        Source::Bundle {
            ark,
            intermediate,
            total,
            unused,
        } => {
            let at = |n: &usize| format!(", certificate {n} of {total} in the bundle");
            let unused = if unused.is_empty() {
                String::new()
            } else {
                format!("; not used: certificate {}", unused.join(", "))
            };
            (at(ark), at(intermediate), unused)
        }
    }
}

/// Records the ark, ask (or asvk) and vcek (or vlek) checks; true when all three passed.
fn check_chain(
    request: &VerifyRequest,
    chain: &Chain,
    product: Option<Product>,
    kind: SigningKey,
    verdict: &mut Verdict,
) -> bool {
    let simulated =
        String::from_utf8_lossy(&chain.ark.der).contains(crate::simulated_psp::SIMULATED_MARK);
    let (ark_at, intermediate_at, unused) = provenance(&chain.source);
    let ark_ok = verdict.record(
        CheckName::Ark,
        match product {
            Some(product) => Ok(format!(
                "AMD {} root ({}{ark_at}), self-signed",
                product.name(),
                chain.ark.common_name
            )),
            None if simulated && request.allow_simulated => Ok(
                "SIMULATED TEE root, accepted because simulation is allowed: NOT confidential"
                    .to_owned(),
            ),
            None if simulated => {
                Err("the root of cloak's SIMULATED TEE (allow simulation to accept it)".to_owned())
            }
            None => Err(format!(
                "{} is self-signed, but not AMD's root of Milan, Genoa or Turin",
                chain.ark.common_name
            )),
        },
    );
    let issuer = kind.issuer_name();
    let vlek_issuer = chain.intermediate.common_name.starts_with("SEV-VLEK-");
    let ask_ok = verdict.record(
        CheckName::Ask,
        if !chain.intermediate.signed_by(&chain.ark) {
            Err(format!(
                "{issuer} {} is not signed by the ARK",
                chain.intermediate.common_name
            ))
        } else if product.is_some() && vlek_issuer != (kind == SigningKey::Vlek) {
            Err(format!(
                "{} signed the {}, but AMD signs a {} with its {issuer}",
                chain.intermediate.common_name,
                kind.name(),
                kind.name()
            ))
        } else {
            Ok(format!(
                "{issuer} {}{intermediate_at}, signed by the ARK{unused}",
                chain.intermediate.common_name
            ))
        },
    );
    let line = product
        .map(|p| format!("{} ", p.name()))
        .unwrap_or_default();
    let vcek_ok = verdict.record(
        CheckName::Vcek,
        Ok(format!(
            "the {} is signed by the {line}{issuer}",
            kind.name()
        )),
    );
    ark_ok && ask_ok && vcek_ok
}

pub fn verify(request: &VerifyRequest) -> Verdict {
    let mut verdict = Verdict::default();
    let Some(report) = read_report(request, &mut verdict) else {
        return verdict.finish();
    };
    let kind = report.signing_key;
    let key_cert = match Cert::parse(&request.signing_key)
        .map_err(|err| err.to_string())
        .and_then(|cert| key_kind_matches(&cert, kind).map(|()| cert))
    {
        Ok(cert) => cert,
        Err(err) => {
            verdict.record(CheckName::Vcek, Err(format!("the {}: {err}", kind.name())));
            return verdict.finish();
        }
    };
    let lines = match amd_chain::builtin_lines() {
        Ok(lines) => lines,
        Err(err) => {
            verdict.record(CheckName::Ark, Err(err.to_string()));
            return verdict.finish();
        }
    };
    let Some((chain, chain_product)) = find_chain(request, &lines, &key_cert, kind, &mut verdict)
    else {
        return verdict.finish();
    };
    if !check_chain(request, &chain, chain_product, kind, &mut verdict) {
        return verdict.finish();
    }
    verdict.record(
        CheckName::ReportSignature,
        checks::signature(&request.report, &report, &key_cert, kind),
    );

    // The simulated TEE writes version 2 reports with Milan's TCB layout.
    let product = chain_product
        .or_else(|| report.product_by_cpuid())
        .unwrap_or(Product::Milan);
    verdict.product = Some(product);
    let extensions = VcekExtensions::from_der(&key_cert.der);
    verdict.record(
        CheckName::VcekTcb,
        checks::key_tcb(&extensions, &report, product, kind),
    );
    match (kind, checks::chip_id(&extensions, &report, kind)) {
        (SigningKey::Vlek, _) => {
            let csp = extensions
                .csp_id
                .as_deref()
                .map(|csp| format!(" ({csp})"))
                .unwrap_or_default();
            verdict.skip(
                CheckName::ChipId,
                &format!(
                    "a VLEK names no chip: it is a cloud provider's key{csp} for every {} chip at this TCB, checked by TCB and product",
                    product.name()
                ),
            );
        }
        (_, Some(result)) => {
            verdict.record(CheckName::ChipId, result);
        }
        (_, None) if report.mask_chip_key => verdict.skip(
            CheckName::ChipId,
            "MASK_CHIP_KEY is set: the report carries no chip id",
        ),
        (_, None) => {
            verdict.record(
                CheckName::ChipId,
                Err("the VCEK names no chip (no hwID)".to_owned()),
            );
        }
    }
    check_expectations(request, &report, product, &mut verdict);
    verdict.finish()
}

/// What the relying party asked for: measurement, HOST_DATA, REPORT_DATA, policy, TCB.
fn check_expectations(
    request: &VerifyRequest,
    report: &Report,
    product: Product,
    verdict: &mut Verdict,
) {
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
                checks::expect_bytes("HOST_DATA", expected, &report.host_data),
            );
        }
        None => verdict.skip(CheckName::HostData, "not requested"),
    }
    match &request.report_data {
        Some(expected) => {
            verdict.record(
                CheckName::ReportData,
                checks::expect_bytes("REPORT_DATA", expected, &report.report_data),
            );
        }
        None => verdict.skip(CheckName::ReportData, "not requested"),
    }
    verdict.record(
        CheckName::PolicyDebug,
        match (report.debug_allowed(), request.allow_debug) {
            (false, _) => Ok("the guest policy forbids debugging".to_owned()),
            (true, true) => Ok("debugging allowed by the policy, and accepted".to_owned()),
            (true, false) => {
                Err("the guest policy allows debugging (its memory can be read)".to_owned())
            }
        },
    );
    match request.minimum_tcb {
        Some(minimum) => {
            verdict.record(
                CheckName::MinimumTcb,
                checks::minimum_tcb(&report.reported_tcb(product), minimum),
            );
        }
        None => verdict.skip(CheckName::MinimumTcb, "not requested"),
    }
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
mod tests;
