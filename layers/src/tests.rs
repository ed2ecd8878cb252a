//! Layer images against independent readers: erofs-utils' `fsck.erofs --extract` must read
//! back every file, link, device and owner of the layer; `veritysetup format` (cryptsetup)
//! must write the same hash tree and root hash. Both are Debian tools, not this code. Where
//! they are missing the test says so and fails under CLOAK_REQUIRE_VM_TESTS (make test).

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use super::*;

fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists());
    if found.is_none() {
        let why = format!("{name} is not installed (scripts/setup-host.sh installs it)");
        assert!(
            std::env::var_os("CLOAK_REQUIRE_VM_TESTS").is_none(),
            "{why}"
        );
        eprintln!("skipped: {why}");
    }
    found
}

fn header(kind: tar::EntryType, mode: u32, uid: u64, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(uid);
    header.set_gid(uid + 1);
    header.set_mtime(1_700_000_000);
    header.set_size(size);
    header
}

fn file(builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8], uid: u64) {
    let mut h = header(tar::EntryType::Regular, 0o640, uid, bytes.len() as u64);
    builder.append_data(&mut h, path, bytes).unwrap();
}

/// A layer with what images have: nested directories (one implied), small and large files,
/// a symlink, a hard link, a device, a fifo, an xattr, and the two kinds of whiteout.
fn layer() -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = header(tar::EntryType::Directory, 0o750, 7, 0);
    builder.append_data(&mut dir, "etc/", &[][..]).unwrap();
    file(&mut builder, "etc/hostname", b"layer\n", 0);
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    file(&mut builder, "usr/lib/big.bin", &large, 1000);
    let mut link = header(tar::EntryType::Symlink, 0o777, 0, 0);
    builder
        .append_link(&mut link, "usr/bin/sh", "../lib/big.bin")
        .unwrap();
    let mut hard = header(tar::EntryType::Link, 0o640, 1000, 0);
    builder
        .append_link(&mut hard, "usr/lib/big-again.bin", "usr/lib/big.bin")
        .unwrap();
    let mut device = header(tar::EntryType::Char, 0o666, 0, 0);
    device.set_device_major(1).unwrap();
    device.set_device_minor(3).unwrap();
    builder
        .append_data(&mut device, "dev/null", &[][..])
        .unwrap();
    let mut fifo = header(tar::EntryType::Fifo, 0o600, 0, 0);
    builder.append_data(&mut fifo, "run/pipe", &[][..]).unwrap();
    file(&mut builder, "var/.wh.removed", b"", 0);
    file(&mut builder, "opt/.wh..wh..opq", b"", 0);
    file(&mut builder, "opt/kept", b"kept\n", 0);
    builder
        .append_pax_extensions([("SCHILY.xattr.user.origin", b"cloak".as_slice())])
        .unwrap();
    file(&mut builder, "etc/with-xattr", b"x", 0);
    builder.into_inner().unwrap()
}

fn convert_to(path: &Path, tar: &[u8]) -> LayerImage {
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    convert(tar, &mut out).unwrap()
}

#[test]
fn fsck_erofs_reads_back_every_entry() {
    let Some(fsck) = tool("fsck.erofs") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("layer.img");
    let converted = convert_to(&image, &layer());
    // fsck.erofs reads the erofs part (the tree after it is not its business).
    let erofs_only = dir.path().join("erofs.img");
    let bytes = std::fs::read(&image).unwrap();
    std::fs::write(&erofs_only, &bytes[..converted.image_bytes as usize]).unwrap();
    let out = dir.path().join("out");
    let status = Command::new(fsck)
        .arg(format!("--extract={}", out.display()))
        .arg("--preserve")
        .arg(&erofs_only)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let meta = |p: &str| std::fs::symlink_metadata(out.join(p)).unwrap();
    assert_eq!(std::fs::read(out.join("etc/hostname")).unwrap(), b"layer\n");
    let large: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(std::fs::read(out.join("usr/lib/big.bin")).unwrap(), large);
    assert_eq!(
        std::fs::read(out.join("usr/lib/big-again.bin")).unwrap(),
        large
    );
    assert_eq!(
        (meta("usr/lib/big.bin").uid(), meta("usr/lib/big.bin").gid()),
        (1000, 1001)
    );
    assert_eq!(meta("usr/lib/big.bin").mode() & 0o7777, 0o640);
    assert_eq!(meta("etc").mode() & 0o7777, 0o750);
    assert_eq!(meta("etc").uid(), 7);
    assert_eq!(meta("usr/lib").mode() & 0o7777, 0o755, "implied directory");
    assert_eq!(
        std::fs::read_link(out.join("usr/bin/sh")).unwrap(),
        Path::new("../lib/big.bin")
    );
    assert!(meta("dev/null").file_type().is_char_device());
    assert_eq!(meta("dev/null").rdev(), nix_makedev(1, 3));
    assert!(meta("run/pipe").file_type().is_fifo());
    // Whiteouts as overlayfs reads them: a 0:0 character device in place of the file.
    assert!(meta("var/removed").file_type().is_char_device());
    assert_eq!(meta("var/removed").rdev(), 0);
    assert!(!out.join("opt/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(out.join("opt/kept")).unwrap(), b"kept\n");
    // Xattrs (the opaque marker, a PAX one) as dump.erofs reads the inodes: 12 bytes of
    // header, then 4 + name + value rounded up to 4 (trusted.overlay.opaque=y: 4+14+1 → 20;
    // user.origin=cloak: 4+6+5 → 16). The guest tests see the values through overlayfs.
    if let Some(dump) = tool("dump.erofs") {
        for (path, xattr_size) in [("/opt", 32), ("/etc/with-xattr", 28)] {
            let shown = Command::new(&dump)
                .arg(format!("--path={path}"))
                .arg(&erofs_only)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&shown.stdout);
            assert!(
                text.contains(&format!("Xattr size: {xattr_size}")),
                "{path}: {text}"
            );
        }
    }
}

fn nix_makedev(major: u64, minor: u64) -> u64 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12) | ((major & !0xfff) << 32)
}

#[test]
fn the_same_layer_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    let first = convert_to(&a, &layer());
    let second = convert_to(&b, &layer());
    assert_eq!(first, second);
    assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
}

#[test]
fn veritysetup_writes_the_same_tree_and_root_hash() {
    let Some(veritysetup) = tool("veritysetup") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("layer.img");
    let converted = convert_to(&image, &layer());
    let bytes = std::fs::read(&image).unwrap();
    let (data, tree) = bytes.split_at(converted.image_bytes as usize);
    let data_path = dir.path().join("data.img");
    std::fs::write(&data_path, data).unwrap();
    let hash_path = dir.path().join("hash.img");
    let salt: String = verity::SALT.iter().map(|b| format!("{b:02x}")).collect();
    let output = Command::new(veritysetup)
        .args([
            "format",
            "--no-superblock",
            "--hash",
            "sha256",
            "--data-block-size",
            "4096",
        ])
        .args(["--hash-block-size", "4096", "--salt", &salt])
        .arg(&data_path)
        .arg(&hash_path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    let root = printed
        .lines()
        .find_map(|line| line.strip_prefix("Root hash:"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("no root hash in {printed}"));
    assert_eq!(root, converted.verity.root_hex());
    assert_eq!(
        std::fs::read(&hash_path).unwrap(),
        tree,
        "the hash tree, byte for byte"
    );
    assert_eq!(converted.verity.data_blocks, (data.len() / BLOCK) as u64);
}
