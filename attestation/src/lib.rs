//! What makes a cloak pod confidential rather than merely sandboxed, on the report side: the
//! reference values a verifier expects (launch digests computed ahead of time by
//! `cloak-launch` from the guest image), the verification of a hardware-signed attestation
//! report against them and its certificate chain, and the simulated AMD-SP that signs reports
//! for `tee = "sim"` pods.

pub mod amd_chain;
pub mod reference_values;
pub mod report;
pub mod simulated_psp;
pub mod vcek_extensions;
pub mod verify;
