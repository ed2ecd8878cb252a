//! What a pod VM is launched with, described once: the launch plan — every page put into guest
//! memory, with the memory map, ACPI tables and VMSAs of a direct launch, or OVMF's for a
//! firmware launch — and the SEV-SNP launch digest of that plan. cloak-vmm performs the plan;
//! `cloak measure`, the image build's reference values and the simulated TEE digest it. One
//! description with two users, so what boots and what a verifier expects cannot drift apart.
//! (Reports — their layout, verification and the simulated AMD-SP — are `cloak-attestation`.)

pub mod acpi;
pub mod cpu_types;
pub mod digest;
pub mod direct;
pub mod ovmf;
pub mod ovmf_firmware;
pub mod plan;
pub mod reset_state;
pub mod vmsa;

pub use digest::{LaunchDigest, LAUNCH_DIGEST_BYTES};
pub use plan::{LaunchPlan, PageKind, PageRecord};
