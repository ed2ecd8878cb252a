//! The verifier against real reports signed by AMD hardware: VCEK- and VLEK-signed, Milan
//! and Genoa, versions 2 and 3 (tests/data/snp/SOURCES.md says where each comes from), with
//! AMD's built-in roots and with bundles in every order; and every bit of the signed part.

use super::*;
use crate::report::Report;
use std::path::PathBuf;

fn data(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/data/snp")
        .join(path);
    std::fs::read(&full).unwrap_or_else(|err| panic!("{}: {err}", full.display()))
}

struct RealReport {
    source: &'static str,
    report: Vec<u8>,
    key: Vec<u8>,
    /// A PEM bundle holding at least the ARK and the key's intermediate.
    bundle: Vec<u8>,
    product: &'static str,
    kind: SigningKey,
    version: u32,
}

fn real_reports() -> Vec<RealReport> {
    let milan_bundle = data("milan-vlek-trustee/ask_ark_asvk_milan.pem");
    vec![
        RealReport {
            source: "sev crate",
            report: report_from_file_bytes(&data("milan-sev-crate/report_milan.hex")),
            key: data("milan-sev-crate/vcek_milan.der"),
            bundle: data("milan-sev-crate/cert_chain_milan"),
            product: "Milan",
            kind: SigningKey::Vcek,
            version: 2,
        },
        RealReport {
            source: "go-sev-guest",
            report: data("milan-go-sev-guest/attestation.bin"),
            key: data("milan-go-sev-guest/vcek.testcer"),
            bundle: data("milan-go-sev-guest/ask_ark_milan.pem"),
            product: "Milan",
            kind: SigningKey::Vcek,
            version: 2,
        },
        RealReport {
            source: "trustee VCEK",
            report: data("milan-vcek-trustee/report.bin"),
            key: data("milan-vcek-trustee/vcek.der"),
            bundle: milan_bundle.clone(),
            product: "Milan",
            kind: SigningKey::Vcek,
            version: 2,
        },
        RealReport {
            source: "trustee VLEK",
            report: data("milan-vlek-trustee/report.bin"),
            key: data("milan-vlek-trustee/vlek.der"),
            bundle: milan_bundle,
            product: "Milan",
            kind: SigningKey::Vlek,
            version: 3,
        },
        RealReport {
            source: "trustee Azure Genoa",
            report: data("genoa-azure-trustee/report.bin"),
            key: data("genoa-azure-trustee/vcek.pem"),
            bundle: data("genoa-azure-trustee/ask_ark_asvk_genoa.pem"),
            product: "Genoa",
            kind: SigningKey::Vcek,
            version: 3,
        },
    ]
}

/// The PEM blocks of a bundle, each with its END line.
fn pem_blocks(bundle: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bundle);
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|block| block.contains("BEGIN CERTIFICATE"))
        .map(|block| format!("{}\n", block.trim()))
        .collect()
}

/// Every order of a bundle's certificates.
fn permutations(blocks: &[String]) -> Vec<Vec<u8>> {
    if blocks.len() <= 1 {
        return vec![blocks.concat().into_bytes()];
    }
    let mut out = Vec::new();
    for first in 0..blocks.len() {
        let mut rest = blocks.to_vec();
        let head = rest.remove(first);
        for tail in permutations(&rest) {
            out.push([head.as_bytes(), &tail].concat());
        }
    }
    out
}

/// The verdict on `report` signed by `key`, with `chain` (built-in roots when `None`) and
/// debugging accepted.
fn verdict_of(report: Vec<u8>, key: &[u8], chain: Option<&[u8]>) -> Verdict {
    verify(&VerifyRequest {
        report,
        signing_key: key.to_vec(),
        chain: chain.map(<[u8]>::to_vec),
        allow_debug: true,
        ..Default::default()
    })
}

fn outcome(verdict: &Verdict, name: &str) -> Outcome {
    verdict
        .checks
        .iter()
        .find(|c| c.name.as_str() == name)
        .map(|c| c.outcome)
        .unwrap_or_else(|| panic!("no {name} check in {verdict:?}"))
}

fn printed(verdict: &Verdict) -> String {
    let lines: Vec<String> = verdict.checks.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

#[test]
fn real_reports_verify_with_built_in_roots_and_bundles_in_any_order() {
    for real in real_reports() {
        assert_eq!(real.report.len(), REPORT_BYTES, "{}", real.source);
        let parsed = Report::parse(&real.report).expect("parses");
        assert_eq!(
            (parsed.version, parsed.signing_key),
            (real.version, real.kind),
            "{}",
            real.source
        );
        let blocks = pem_blocks(&real.bundle);
        assert!(blocks.len() >= 2, "{}", real.source);
        let chains = std::iter::once(None).chain(permutations(&blocks).into_iter().map(Some));
        for chain in chains {
            let from_bundle = chain.is_some();
            let verdict = verify(&VerifyRequest {
                report: real.report.clone(),
                signing_key: real.key.clone(),
                chain,
                allow_debug: true,
                ..Default::default()
            });
            let text = printed(&verdict);
            assert!(verdict.passed(), "{}:\n{text}", real.source);
            for name in ["ark", "ask", "vcek", "report-signature", "vcek-tcb"] {
                assert_eq!(
                    outcome(&verdict, name),
                    Outcome::Pass,
                    "{} {name}",
                    real.source
                );
            }
            assert!(verdict.checks[1].detail.contains(real.product), "{text}");
            assert!(
                text.contains(&format!("product {}", real.product)),
                "{text}"
            );
            if from_bundle {
                assert!(text.contains("in the bundle"), "{text}");
            }
            match real.kind {
                SigningKey::Vlek => {
                    // Named for what they are, and no chip to compare.
                    assert!(text.contains("PASS asvk: ASVK SEV-VLEK-Milan"), "{text}");
                    assert!(
                        text.contains("PASS vlek: the VLEK is signed by the Milan ASVK"),
                        "{text}"
                    );
                    assert!(!text.contains("VCEK"), "{text}");
                    assert_eq!(outcome(&verdict, "chip-id"), Outcome::Skipped);
                }
                _ => {
                    assert!(text.contains("PASS ask: ASK SEV-"), "{text}");
                    assert!(
                        !text.contains("PASS vlek") && !text.contains("the VLEK"),
                        "{text}"
                    );
                    assert_eq!(outcome(&verdict, "chip-id"), Outcome::Pass, "{text}");
                }
            }
        }
    }
}

#[test]
fn a_bundle_says_which_certificates_it_used() {
    let vlek = real_reports().remove(3);
    let verdict = verdict_of(vlek.report, &vlek.key, Some(&vlek.bundle));
    let text = printed(&verdict);
    // Trustee's bundle is ASK, ARK, ASVK: the VLEK uses the second and the third.
    assert!(
        text.contains("ARK-Milan, certificate 2 of 3 in the bundle"),
        "{text}"
    );
    assert!(
        text.contains("SEV-VLEK-Milan, certificate 3 of 3 in the bundle"),
        "{text}"
    );
    assert!(
        text.contains("not used: certificate 1 (SEV-Milan)"),
        "{text}"
    );
}

#[test]
fn a_vlek_report_without_the_asvk_fails_by_naming_it() {
    let vlek = real_reports().remove(3);
    let ask_and_ark: Vec<u8> = pem_blocks(&vlek.bundle)[..2].concat().into_bytes();
    let verdict = verdict_of(vlek.report.clone(), &vlek.key, Some(&ask_and_ark));
    let failure = verdict.first_failure().expect("fails");
    assert_eq!(failure.label, "vlek");
    assert!(failure.detail.contains("its ASVK is needed"), "{failure}");
    // The report says VLEK: a VCEK given instead is refused by kind, before any signature.
    let verdict = verify(&VerifyRequest {
        report: vlek.report,
        signing_key: data("milan-vcek-trustee/vcek.der"),
        allow_debug: true,
        ..Default::default()
    });
    let failure = verdict.first_failure().expect("fails");
    assert!(
        failure.detail.contains("this certificate is a VCEK"),
        "{failure}"
    );
}

#[test]
fn a_report_whose_key_info_names_the_other_kind_fails() {
    // Flip SIGNING_KEY of the VCEK-signed Genoa report to VLEK: the VCEK no longer matches
    // the kind, and the signature would not hold either.
    let genoa = real_reports().remove(4);
    let mut altered = genoa.report.clone();
    altered[cloak_snp_abi::field::KEY_INFO.start] |= 1 << 2;
    let verdict = verify(&VerifyRequest {
        report: altered,
        signing_key: genoa.key,
        allow_debug: true,
        ..Default::default()
    });
    assert!(!verdict.passed());
    assert!(
        printed(&verdict).contains("FAIL vlek"),
        "{}",
        printed(&verdict)
    );
}

#[test]
fn unsigned_and_unknown_versions_are_refused_by_the_report_check() {
    let real = real_reports().remove(3);
    let mut unsigned = real.report.clone();
    unsigned[cloak_snp_abi::field::KEY_INFO.start] |= 7 << 2;
    let mut version_six = real.report.clone();
    version_six[0] = 6;
    for (bytes, expected) in [(unsigned, "no key signed it"), (version_six, "version 6")] {
        let verdict = verify(&VerifyRequest {
            report: bytes,
            signing_key: real.key.clone(),
            ..Default::default()
        });
        let failure = verdict.first_failure().expect("fails");
        assert_eq!(failure.name, CheckName::Report);
        assert!(failure.detail.contains(expected), "{failure}");
    }
}

#[test]
fn every_flipped_bit_in_the_signed_part_fails() {
    for RealReport {
        source,
        report,
        key: vcek,
        bundle: chain,
        ..
    } in real_reports()
    {
        for byte in cloak_snp_abi::field::SIGNED {
            let mut altered = report.clone();
            altered[byte] ^= 1 << (byte % 8);
            let verdict = verdict_of(altered, &vcek, Some(&chain));
            assert!(
                !verdict.passed(),
                "{source}: flipping a bit of byte {byte:#x} went unnoticed"
            );
        }
        // The signature itself: a flipped bit in R.
        let mut altered = report.clone();
        altered[cloak_snp_abi::field::SIGNATURE_R.start] ^= 0x80;
        let verdict = verdict_of(altered, &vcek, Some(&chain));
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
    let (report, chain) = (&reports[0].report, &reports[0].bundle);
    let other_vcek = &reports[1].key;
    let verdict = verdict_of(report.clone(), other_vcek, Some(chain));
    assert!(!verdict.passed());
    assert_eq!(outcome(&verdict, "report-signature"), Outcome::Fail);
    assert_eq!(outcome(&verdict, "chip-id"), Outcome::Fail);
}

#[test]
fn a_chain_of_another_product_line_fails_on_the_vcek() {
    let RealReport {
        report, key: vcek, ..
    } = real_reports().remove(0);
    let genoa = [
        sev::certs::snp::builtin::genoa::ASK,
        sev::certs::snp::builtin::genoa::ARK,
    ]
    .concat();
    let verdict = verify(&VerifyRequest {
        report,
        signing_key: vcek,
        chain: Some(genoa),
        allow_debug: true,
        ..Default::default()
    });
    assert!(!verdict.passed());
    // AMD's Genoa certificates, but none signed a Milan VCEK: nothing of the bundle is used.
    assert_eq!(outcome(&verdict, "ark"), Outcome::Skipped);
    let failure = verdict.first_failure().expect("fails");
    assert_eq!(failure.name.as_str(), "vcek");
    assert!(
        failure
            .detail
            .contains("(SEV-Genoa, ARK-Genoa) signed this VCEK"),
        "{failure}"
    );
    assert_eq!(outcome(&verdict, "report-signature"), Outcome::Skipped);
    // An AMD root of one line with the intermediate of another: the ASK is not the ARK's.
    let mixed = [
        sev::certs::snp::builtin::milan::ASK,
        sev::certs::snp::builtin::genoa::ARK,
    ]
    .concat();
    let RealReport {
        report, key: vcek, ..
    } = real_reports().remove(0);
    let verdict = verify(&VerifyRequest {
        report,
        signing_key: vcek,
        chain: Some(mixed),
        allow_debug: true,
        ..Default::default()
    });
    assert_eq!(
        verdict.first_failure().map(|c| c.name.as_str()),
        Some("ark"),
        "{}",
        printed(&verdict)
    );
}

#[test]
fn expectations_are_checked_by_name() {
    let RealReport {
        report,
        key: vcek,
        bundle: chain,
        ..
    } = real_reports().remove(0);
    let parsed = Report::parse(&report).expect("parses");
    let base = VerifyRequest {
        report,
        signing_key: vcek,
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
    if parsed.debug_allowed() {
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
        signing_key: vec![1, 2, 3],
        ..Default::default()
    });
    assert_eq!(
        verdict.first_failure().map(|c| c.name.as_str()),
        Some("report")
    );
    let report = real_reports().remove(0).report;
    let verdict = verify(&VerifyRequest {
        report,
        signing_key: vec![1, 2, 3],
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
    let RealReport {
        report, key: vcek, ..
    } = real_reports().remove(0);
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
            signing_key: vcek,
            chain,
            ..Default::default()
        });
        let names: Vec<CheckName> = verdict.checks.iter().map(|c| c.name).collect();
        assert_eq!(names, CheckName::ALL, "{what}: {verdict:?}");
    }
}
