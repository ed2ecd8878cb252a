//! vCPU types by QEMU's names, as `sev-snp-measure --vcpu-type` takes them. A guest's VMSA
//! starts with the CPUID signature of its vCPU model in RDX (what CPUID Fn0000_0001_EAX
//! reports), so the type is part of the launch digest.

/// (name, family, model, stepping).
const CPU_MODELS: &[(&str, u32, u32, u32)] = &[
    ("EPYC", 23, 1, 2),
    ("EPYC-v1", 23, 1, 2),
    ("EPYC-v2", 23, 1, 2),
    ("EPYC-IBPB", 23, 1, 2),
    ("EPYC-v3", 23, 1, 2),
    ("EPYC-v4", 23, 1, 2),
    ("EPYC-Rome", 23, 49, 0),
    ("EPYC-Rome-v1", 23, 49, 0),
    ("EPYC-Rome-v2", 23, 49, 0),
    ("EPYC-Rome-v3", 23, 49, 0),
    ("EPYC-Milan", 25, 1, 1),
    ("EPYC-Milan-v1", 25, 1, 1),
    ("EPYC-Milan-v2", 25, 1, 1),
    ("EPYC-Genoa", 25, 17, 0),
    ("EPYC-Genoa-v1", 25, 17, 0),
    ("EPYC-Turin", 26, 0, 0),
];

/// The 32-bit CPUID Fn0000_0001_EAX signature (AMD CPUID Specification, publication 25481):
/// families above 0xF put 0xF in the base field and the rest in the extended field.
pub fn cpu_signature(family: u32, model: u32, stepping: u32) -> u32 {
    let (family_low, family_high) = if family > 0xf {
        (0xf, (family - 0xf) & 0xff)
    } else {
        (family, 0)
    };
    (family_high << 20)
        | (((model >> 4) & 0xf) << 16)
        | (family_low << 8)
        | ((model & 0xf) << 4)
        | (stepping & 0xf)
}

/// The signature of a named vCPU type, `None` for an unknown name.
pub fn signature_of(name: &str) -> Option<u32> {
    CPU_MODELS
        .iter()
        .find(|(known, ..)| known.eq_ignore_ascii_case(name))
        .map(|(_, family, model, stepping)| cpu_signature(*family, *model, *stepping))
}

/// Every known name, for help texts and errors.
pub fn names() -> Vec<&'static str> {
    CPU_MODELS.iter().map(|(name, ..)| *name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_what_those_cpus_report() {
        // CPUID.1:EAX of an EPYC 7601 (Naples), a Milan 7763 and a Genoa 9654.
        assert_eq!(signature_of("EPYC"), Some(0x0080_0f12));
        assert_eq!(signature_of("EPYC-Milan-v2"), Some(0x00a0_0f11));
        assert_eq!(signature_of("epyc-genoa"), Some(0x00a1_0f10));
        assert_eq!(signature_of("EPYC-Turin"), Some(0x00b0_0f00));
        assert_eq!(signature_of("Pentium"), None);
    }
}
