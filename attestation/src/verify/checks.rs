//! The single checks a verdict is made of, each a function from what it compares to the
//! sentence the verdict prints: `Ok` with what held, `Err` with what did not.

use openssl::bn::BigNum;
use openssl::ecdsa::EcdsaSig;
use sha2::{Digest, Sha384};

use cloak_snp_abi::{field, SIGNATURE_COMPONENT_BYTES};

use super::MinimumTcb;
use crate::amd_chain::Cert;
use crate::report::{Product, Report, SigningKey, Tcb, ECDSA_P384_SHA384};
use crate::vcek_extensions::VcekExtensions;

/// Verifies the report signature over the raw signed bytes (not a re-encoding of a parsed
/// report, so every bit the AMD-SP signed counts).
pub(super) fn signature(
    bytes: &[u8],
    report: &Report,
    key_cert: &Cert,
    kind: SigningKey,
) -> Result<String, String> {
    if report.signature_algo != ECDSA_P384_SHA384 {
        return Err(format!(
            "SIGNATURE_ALGO {} is not ECDSA P-384 with SHA-384 (1)",
            report.signature_algo
        ));
    }
    let component = |range: std::ops::Range<usize>| {
        let mut big_endian = bytes[range][..SIGNATURE_COMPONENT_BYTES].to_vec();
        big_endian.reverse();
        BigNum::from_slice(&big_endian).map_err(|err| err.to_string())
    };
    let signature = EcdsaSig::from_private_components(
        component(field::SIGNATURE_R)?,
        component(field::SIGNATURE_S)?,
    )
    .map_err(|err| err.to_string())?;
    let key = key_cert
        .x509
        .public_key()
        .and_then(|key| key.ec_key())
        .map_err(|err| format!("the {} has no P-384 key: {err}", kind.name()))?;
    let digest = Sha384::digest(&bytes[field::SIGNED]);
    match signature.verify(&digest, &key) {
        Ok(true) => Ok(format!(
            "ECDSA P-384 signature by the {} over bytes 0x000..0x2a0",
            kind.name()
        )),
        Ok(false) => Err(format!(
            "the signature does not match: the report was altered or a key other than this {} signed it",
            kind.name()
        )),
        Err(err) => Err(format!("checking the signature: {err}")),
    }
}

/// The certified TCB equals the reported one, and the product lines agree: the one whose
/// chain signed the key, the key's productName, and (version 3 on) the report's CPUID.
pub(super) fn key_tcb(
    extensions: &VcekExtensions,
    report: &Report,
    product: Product,
    kind: SigningKey,
) -> Result<String, String> {
    let key = kind.name();
    let reported: Tcb = report.reported_tcb(product);
    let mut pairs = vec![
        ("bootloader", extensions.bootloader_spl, reported.bootloader),
        ("tee", extensions.tee_spl, reported.tee),
        ("snp", extensions.snp_spl, reported.snp),
        ("microcode", extensions.microcode_spl, reported.microcode),
    ];
    if let Some(fmc) = reported.fmc {
        pairs.insert(0, ("fmc", extensions.fmc_spl, fmc));
    }
    let mut mismatches = Vec::new();
    for (name, certified, in_report) in pairs {
        match certified {
            Some(value) if value == in_report => {}
            Some(value) => mismatches.push(format!(
                "{name} {value} in the {key}, {in_report} in the report"
            )),
            None => mismatches.push(format!("the {key} has no {name} SPL")),
        }
    }
    if let Some(name) = &extensions.product_name {
        if !name.starts_with(product.name()) {
            mismatches.push(format!(
                "the {key} is for product {name:?}, its chain is {}'s",
                product.name()
            ));
        }
    }
    if let Some(by_cpuid) = report.product_by_cpuid() {
        if by_cpuid != product {
            mismatches.push(format!(
                "the report's CPUID names {}, the chain is {}'s",
                by_cpuid.name(),
                product.name()
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(format!(
            "reported TCB {reported} is the {key}'s; product {}",
            product.name()
        ))
    } else {
        Err(mismatches.join("; "))
    }
}

/// A VCEK's hwID is the report's CHIP_ID (Turin's VCEKs carry 8 bytes: the id's first 8);
/// a VLEK names no chip.
pub(super) fn chip_id(
    extensions: &VcekExtensions,
    report: &Report,
    kind: SigningKey,
) -> Option<Result<String, String>> {
    if report.mask_chip_key {
        return None;
    }
    let hw_id = extensions.hw_id.as_ref()?;
    let reported = report
        .chip_id
        .get(..hw_id.len().min(report.chip_id.len()))?;
    let rest_zero = report.chip_id[reported.len()..].iter().all(|b| *b == 0);
    Some(if reported == hw_id.as_slice() && rest_zero {
        Ok(format!(
            "CHIP_ID is the {}'s, {}",
            kind.name(),
            hex::encode(hw_id)
        ))
    } else {
        Err(format!(
            "CHIP_ID is {}, the {} names {}",
            hex::encode(report.chip_id),
            kind.name(),
            hex::encode(hw_id)
        ))
    })
}

pub(super) fn expect_bytes(name: &str, expected: &[u8], actual: &[u8]) -> Result<String, String> {
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

pub(super) fn minimum_tcb(tcb: &Tcb, minimum: MinimumTcb) -> Result<String, String> {
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
    if low.is_empty() {
        Ok("the reported TCB meets the minimum".to_owned())
    } else {
        Err(low.join(", "))
    }
}
