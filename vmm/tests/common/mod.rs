//! What the KVM tests share: skipping (with the reason) where KVM cannot run a VM, and
//! failing instead where the suite must run everything (`CLOAK_REQUIRE_VM_TESTS`).

#![allow(clippy::print_stderr)] // a skipped test says why

pub(crate) fn kvm_or_skip(test: &str) -> bool {
    match cloak_vmm::kvm_available() {
        Ok(()) => true,
        Err(reason) if std::env::var_os("CLOAK_REQUIRE_VM_TESTS").is_some() => {
            panic!("{test}: KVM is required here but: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIP {test}: {reason}");
            false
        }
    }
}
