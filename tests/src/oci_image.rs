//! OCI image archives for containerd's `ctr images import`, built from a root filesystem
//! directory: one uncompressed layer, a config carrying the environment, working directory
//! and user, and an index naming each image (`io.containerd.image.name`).

use std::io::Write;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// One image of the archive; all share the layer.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// Full reference, e.g. `docker.io/cloak/busybox:test`.
    pub name: String,
    pub env: Vec<String>,
    pub working_dir: String,
    /// Empty: root.
    pub user: String,
    pub cmd: Vec<String>,
    /// Layer tars stacked on the root filesystem's, bottom first.
    pub extra_layers: Vec<Vec<u8>>,
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar of `rootfs` with fixed ownership and times, so the layer digest depends only on the
/// files.
pub fn layer_tar(rootfs: &Path) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    let mut entries: Vec<_> = walk(rootfs)?;
    entries.sort();
    for relative in entries {
        builder.append_path_with_name(rootfs.join(&relative), &relative)?;
    }
    builder.into_inner()
}

fn walk(root: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .map_err(std::io::Error::other)?
                .to_owned();
            if entry.file_type()?.is_dir() {
                pending.push(path);
            }
            found.push(relative);
        }
    }
    Ok(found)
}

/// Writes an OCI image-layout archive with `images` over the files of `rootfs` to `out`.
pub fn write_archive(rootfs: &Path, images: &[ImageSpec], out: &Path) -> std::io::Result<()> {
    let layer = layer_tar(rootfs)?;
    let layer_digest = digest_of(&layer);
    let mut blobs: Vec<(String, Vec<u8>)> = vec![(layer_digest.clone(), layer.clone())];
    let mut manifests = Vec::new();
    for image in images {
        let mut layers = vec![
            json!({ "mediaType": LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer.len() }),
        ];
        let mut diff_ids = vec![layer_digest.clone()];
        for extra in &image.extra_layers {
            let digest = digest_of(extra);
            layers.push(
                json!({ "mediaType": LAYER_MEDIA_TYPE, "digest": digest, "size": extra.len() }),
            );
            diff_ids.push(digest.clone());
            blobs.push((digest, extra.clone()));
        }
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": image.env,
                "WorkingDir": image.working_dir,
                "User": image.user,
                "Cmd": image.cmd,
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))?;
        let config_digest = digest_of(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": { "mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len() },
            "layers": layers,
        }))?;
        let manifest_digest = digest_of(&manifest);
        let tag = image.name.rsplit(':').next().unwrap_or("latest").to_owned();
        manifests.push(json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": image.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }));
        blobs.push((config_digest, config));
        blobs.push((manifest_digest, manifest));
    }
    let index = serde_json::to_vec(&json!({ "schemaVersion": 2, "manifests": manifests }))?;
    let mut archive = tar::Builder::new(std::fs::File::create(out)?);
    let mut add = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_cksum();
        archive.append_data(&mut header, name, bytes)
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    add("index.json", &index)?;
    let mut written = std::collections::HashSet::new();
    for (digest, bytes) in &blobs {
        if written.insert(digest.clone()) {
            let hex_digest = digest.trim_start_matches("sha256:");
            add(&format!("blobs/sha256/{hex_digest}"), bytes)?;
        }
    }
    archive.into_inner()?.flush()
}

/// The test images over one busybox root filesystem: `busybox` (root, environment and
/// working directory from the image config) and `busybox-user` (the same, as uid/gid 1000).
pub fn busybox_images(tag: &str) -> Vec<ImageSpec> {
    let base = ImageSpec {
        name: format!("docker.io/cloak/busybox:{tag}"),
        env: vec![
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
            "CLOAK_IMAGE_ENV=from-image".to_owned(),
        ],
        working_dir: "/home/user".to_owned(),
        user: String::new(),
        cmd: vec!["sh".to_owned()],
        extra_layers: Vec::new(),
    };
    let user = ImageSpec {
        name: format!("docker.io/cloak/busybox-user:{tag}"),
        user: "1000:1000".to_owned(),
        ..base.clone()
    };
    vec![base, user]
}

/// A pause image on the busybox root filesystem: it waits until told to stop.
pub fn pause_image(name: &str) -> ImageSpec {
    ImageSpec {
        name: name.to_owned(),
        env: vec!["PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned()],
        working_dir: "/".to_owned(),
        user: String::new(),
        cmd: vec![
            "sh".to_owned(),
            "-c".to_owned(),
            "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done".to_owned(),
        ],
        extra_layers: Vec::new(),
    }
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder.append_data(&mut header, path, bytes)
}

/// Size of `data/big` in the layered image's middle layer.
pub const BIG_FILE_BYTES: usize = 4 << 20;

/// The middle layer of the layered test image: `data/big` (its first large file, so its
/// bytes start at block 1 of the layer image), `data/a`, `data/b`, `opq/x`, `opq/y`.
pub fn middle_layer() -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let big: Vec<u8> = (0..BIG_FILE_BYTES).map(|i| (i % 241) as u8).collect();
    append(&mut builder, "data/big", &big)?;
    for (path, text) in [
        ("data/a", "a\n"),
        ("data/b", "b\n"),
        ("opq/x", "x\n"),
        ("opq/y", "y\n"),
    ] {
        append(&mut builder, path, text.as_bytes())?;
    }
    builder.into_inner()
}

/// The top layer: deletes `data/a` (a whiteout), makes `opq` opaque with one new file `z`.
pub fn top_layer() -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    append(&mut builder, "data/.wh.a", b"")?;
    append(&mut builder, "opq/.wh..wh..opq", b"")?;
    append(&mut builder, "opq/z", b"z\n")?;
    builder.into_inner()
}

/// A three-layer image: busybox, then `middle_layer`, then `top_layer`.
pub fn layered_image(name: &str) -> std::io::Result<ImageSpec> {
    Ok(ImageSpec {
        name: name.to_owned(),
        extra_layers: vec![middle_layer()?, top_layer()?],
        ..pause_image(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_has_layout_index_and_every_blob_under_its_digest() {
        let dir = tempfile::tempdir().expect("temp dir");
        let rootfs = dir.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).expect("mkdir");
        std::fs::write(rootfs.join("bin/hello"), "hi").expect("write");
        std::os::unix::fs::symlink("hello", rootfs.join("bin/link")).expect("symlink");
        let out = dir.path().join("image.tar");
        write_archive(&rootfs, &busybox_images("t"), &out).expect("archive");
        let mut archive = tar::Archive::new(std::fs::File::open(&out).expect("open"));
        let mut names = Vec::new();
        for entry in archive.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let name = entry.path().expect("path").display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).expect("read");
            if let Some(hex_digest) = name.strip_prefix("blobs/sha256/") {
                assert_eq!(digest_of(&bytes), format!("sha256:{hex_digest}"));
            }
            if name == "index.json" {
                let index: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
                assert_eq!(index["manifests"].as_array().map(Vec::len), Some(2));
            }
            names.push(name);
        }
        assert!(names.contains(&"oci-layout".to_owned()));
        // layer + shared-layer images: 1 layer, 2 configs, 2 manifests.
        assert_eq!(names.iter().filter(|n| n.starts_with("blobs/")).count(), 5);
        // The layer keeps the symlink as a symlink.
        let layer = layer_tar(&rootfs).expect("layer");
        let mut layer = tar::Archive::new(&layer[..]);
        let link = layer
            .entries()
            .expect("entries")
            .filter_map(Result::ok)
            .find(|e| e.path().is_ok_and(|p| p.ends_with("link")))
            .expect("link entry");
        assert_eq!(link.header().entry_type(), tar::EntryType::Symlink);
    }
}
