//! What makes a cloak pod confidential rather than merely sandboxed: the SEV-SNP launch digest
//! of a pod VM, computed ahead of time from the same launch plan that describes what the
//! firmware (or cloak-vmm) puts into guest memory, so a verifier can compare it with the
//! MEASUREMENT of a hardware-signed attestation report.

pub mod cpu_types;
pub mod direct_launch;
pub mod guest_acpi;
pub mod launch_digest;
pub mod launch_plan;
pub mod ovmf_launch;
pub mod reference_values;
pub mod simulated_psp;
pub mod vcek_extensions;
pub mod verify;
pub mod vmsa;

pub use launch_digest::{LaunchDigest, LAUNCH_DIGEST_BYTES};
pub use launch_plan::{LaunchPlan, PageKind, PageRecord};
