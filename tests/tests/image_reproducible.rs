//! Two guest image builds from the same inputs are byte-identical.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use cloak_tests::{build_image_with_init, init_binary, ENV_AGENT_BIN};

#[test]
fn two_builds_are_byte_identical() {
    let Some(agent) = init_binary("two_builds_are_byte_identical", ENV_AGENT_BIN) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let first = work.path().join("first");
    let second = work.path().join("second");
    let manifest_first = build_image_with_init(&agent, &first, |_| {});
    let manifest_second = build_image_with_init(&agent, &second, |_| {});
    assert_eq!(manifest_first, manifest_second);
    for file in ["vmlinuz", "initrd.img", "manifest.json"] {
        let a = std::fs::read(first.join(file)).unwrap();
        let b = std::fs::read(second.join(file)).unwrap();
        assert!(!a.is_empty(), "{file} is empty");
        assert!(a == b, "{file} differs between two builds");
    }
    // The manifest describes what was written.
    let initrd = std::fs::read(first.join("initrd.img")).unwrap();
    assert_eq!(manifest_first.initrd.size, initrd.len() as u64);
    assert_eq!(
        manifest_first.initrd.sha256,
        cloak_image::hashing::sha256_hex(&initrd)
    );
}

#[test]
fn a_different_init_changes_the_initrd_but_not_the_kernel() {
    let Some(agent) = init_binary(
        "a_different_init_changes_the_initrd_but_not_the_kernel",
        ENV_AGENT_BIN,
    ) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mut patched = std::fs::read(&agent).unwrap();
    let last = patched.len() - 1;
    patched[last] ^= 1;
    let patched_agent = work.path().join("agent");
    std::fs::write(&patched_agent, patched).unwrap();
    let original = build_image_with_init(&agent, &work.path().join("a"), |_| {});
    let changed = build_image_with_init(&patched_agent, &work.path().join("b"), |_| {});
    assert_eq!(original.kernel.sha256, changed.kernel.sha256);
    assert_ne!(original.initrd.sha256, changed.initrd.sha256);
    assert_ne!(original.initrd.init_sha256, changed.initrd.init_sha256);
}
