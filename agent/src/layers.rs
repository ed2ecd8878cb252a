//! A container root filesystem from verified layer images: each image (erofs followed by its
//! dm-verity tree, written by `cloak-layers` on the host) is attached to a read-only loop
//! device, opened with dm-verity under the root hash the pod's policy pinned — never one the
//! host chose, where a policy pins one — and mounted read-only; overlayfs stacks the layers
//! under an upper layer in guest memory. A block that does not match its hash is an I/O error
//! in the container, and the kernel's verity message names the device, which the agent's
//! log line ties to the layer.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cloak_protocol::agent::Storage;
use nix::mount::MsFlags;

use crate::block::{device_mapper, loop_device};
use crate::error::AgentError;
use crate::storage::{mount_at, mount_overlay, mount_scratch, MountStack, RootfsSource};

/// The rootfs driver whose layers are the request's `storages`.
pub(crate) const LAYERS_DRIVER: &str = "layers";
/// The storage driver of one layer image.
pub(crate) const LAYER_DRIVER: &str = "erofs-verity";

const BLOCK: u64 = 4096;
const HASHES_PER_BLOCK: u64 = BLOCK / 32;
/// `cloak-layers`' salt (`layers/src/verity.rs`): the images are made with it.
const SALT_HEX: &str = "636c6f616b206c6179657220696d61676520646d2d7665726974792073616c74";

/// One layer: its image in the guest and the root hash it must have.
#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) image: PathBuf,
    pub(crate) root_hash: String,
}

/// The layers of a request: its `storages`, with the root hashes of `pinned` (the policy's
/// record) where the policy pins them.
pub(crate) fn layers_of(
    storages: &[Storage],
    pinned: Option<&[String]>,
) -> anyhow::Result<Vec<Layer>> {
    if let Some(pinned) = pinned {
        if pinned.len() != storages.len() {
            bail!(AgentError::InvalidArgument(format!(
                "the policy pins {} layers and the request has {}",
                pinned.len(),
                storages.len()
            )));
        }
    }
    storages
        .iter()
        .enumerate()
        .map(|(index, storage)| {
            if storage.driver != LAYER_DRIVER {
                bail!(AgentError::InvalidArgument(format!(
                    "container storage driver {:?} is not {LAYER_DRIVER}",
                    storage.driver
                )));
            }
            let root_hash = match pinned {
                Some(pinned) => pinned[index].clone(),
                None => storage.verity_root_hash.clone(),
            };
            if root_hash.len() != 64 || !root_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!(AgentError::InvalidArgument(format!(
                    "layer {index} has no SHA-256 root hash ({root_hash:?})"
                )));
            }
            Ok(Layer {
                image: PathBuf::from(&storage.source),
                root_hash: root_hash.to_ascii_lowercase(),
            })
        })
        .collect()
}

/// The data blocks of an image of `total` blocks: the `D` with `D + tree(D) = total`.
fn data_blocks_of(total: u64) -> Option<u64> {
    let tree = |data: u64| {
        let mut blocks = data.div_ceil(HASHES_PER_BLOCK).max(1);
        let mut sum = blocks;
        while blocks > 1 {
            blocks = blocks.div_ceil(HASHES_PER_BLOCK);
            sum += blocks;
        }
        sum
    };
    (1..total)
        .rev()
        .take(total as usize / 100 + 8)
        .find(|&data| data + tree(data) == total)
}

pub(crate) struct VerifiedLayers {
    container: String,
    layers: Vec<Layer>,
}

impl VerifiedLayers {
    pub(crate) fn new(container: &str, layers: Vec<Layer>) -> anyhow::Result<Self> {
        if layers.is_empty() {
            bail!(AgentError::InvalidArgument(
                "a layered rootfs needs at least one layer".to_owned()
            ));
        }
        Ok(Self {
            container: container.to_owned(),
            layers,
        })
    }

    fn device_name(&self, index: usize) -> String {
        format!("cloak-{}-{index}", self.container)
    }

    /// Opens layer `index` with dm-verity and mounts it read-only at `target`.
    fn mount_layer(
        &self,
        index: usize,
        target: &Path,
        stack: &mut MountStack,
    ) -> anyhow::Result<()> {
        let layer = &self.layers[index];
        let size = std::fs::metadata(&layer.image)
            .with_context(|| format!("layer {index}: {}", layer.image.display()))
            .map_err(|err| AgentError::NotFound(format!("{err:#}")))?
            .len();
        let data_blocks = (size % BLOCK == 0)
            .then(|| data_blocks_of(size / BLOCK))
            .flatten()
            .ok_or_else(|| {
                AgentError::InvalidArgument(format!(
                    "layer {index}: {} ({size} bytes) is not a layer image with its hash tree",
                    layer.image.display()
                ))
            })?;
        let attached = loop_device::attach_read_only(&layer.image).with_context(|| {
            format!("layer {index}: a loop device for {}", layer.image.display())
        })?;
        let device = format!("7:{}", attached.minor);
        let params = format!(
            "1 {device} {device} {BLOCK} {BLOCK} {data_blocks} {data_blocks} sha256 {} {SALT_HEX}",
            layer.root_hash
        );
        let name = self.device_name(index);
        let verity =
            device_mapper::create_read_only(&name, "verity", data_blocks * (BLOCK / 512), &params)
                .with_context(|| format!("layer {index}: dm-verity"))?;
        stack.push_device(&name);
        drop(attached);
        watch_verity_errors();
        // The kernel names the data device (the loop device) in its verity messages.
        opened_devices().insert(
            device.clone(),
            (
                name.clone(),
                format!(
                    "layer {index} of container {} ({})",
                    self.container,
                    layer.image.display()
                ),
            ),
        );
        tracing::info!(container = %self.container, layer = index, device = %name, root_hash = %layer.root_hash, image = %layer.image.display(), "layer opened with dm-verity");
        mount_at(
            &verity.node.to_string_lossy(),
            target,
            Some("erofs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
            None,
            stack,
        )
        .map_err(|err| {
            // A wrong image or root hash fails at the first block erofs reads.
            AgentError::PermissionDenied(format!(
                "layer {index} ({}) does not match its root hash {}: {err:#}",
                layer.image.display(),
                layer.root_hash
            ))
        })?;
        Ok(())
    }
}

impl RootfsSource for VerifiedLayers {
    fn mount(&self, target: &Path, scratch: &Path) -> anyhow::Result<MountStack> {
        let mut stack = MountStack::default();
        let result = (|| {
            mount_scratch(scratch, &mut stack)?;
            let mut lower = Vec::new();
            for index in 0..self.layers.len() {
                let at = scratch.join("layers").join(index.to_string());
                self.mount_layer(index, &at, &mut stack)?;
                lower.push(at);
            }
            mount_overlay(&lower, scratch, target, &mut stack)
        })();
        if let Err(err) = result {
            stack.unmount_all();
            return Err(err);
        }
        Ok(stack)
    }
}

type Devices = std::collections::HashMap<String, (String, String)>;

/// The layer devices open now: the loop device's `major:minor` → (dm device name, which
/// layer it is).
fn opened_devices() -> std::sync::MutexGuard<'static, Devices> {
    static DEVICES: std::sync::OnceLock<std::sync::Mutex<Devices>> = std::sync::OnceLock::new();
    DEVICES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Logs, for each verity failure the kernel reports ("device-mapper: verity: 7:1: data
/// block 7 is corrupted", naming the data device), which layer of which container it is. One thread, started at the
/// first layer.
fn watch_verity_errors() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("verity-log".to_owned())
            .spawn(|| {
                use std::io::{Read, Seek};
                let Ok(mut kmsg) = std::fs::File::open("/dev/kmsg") else {
                    tracing::warn!("no /dev/kmsg: verity failures are logged by the kernel only");
                    return;
                };
                let _ = kmsg.seek(std::io::SeekFrom::End(0));
                let mut record = vec![0u8; 8192];
                loop {
                    let Ok(read) = kmsg.read(&mut record) else { continue };
                    let text = String::from_utf8_lossy(&record[..read]);
                    let Some(message) = text.split_once(';').map(|(_, m)| m.trim_end()) else {
                        continue;
                    };
                    let Some(rest) = message.strip_prefix("device-mapper: verity: ") else {
                        continue;
                    };
                    let number = rest.split(':').take(2).collect::<Vec<_>>().join(":");
                    if let Some((_, layer)) = opened_devices().get(&number) {
                        tracing::error!(layer = %layer, device = %number, kernel = %rest, "a layer block failed verification");
                    }
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(error = %err, "starting the verity log watcher");
        }
    });
}

/// Removes a layer's dm-verity device (its loop device clears itself).
pub(crate) fn remove_device(name: &str) {
    opened_devices().retain(|_, (device, _)| device != name);
    // A lazily detached mount may hold the device a moment longer.
    for attempt in 0..50 {
        match device_mapper::remove(name) {
            Ok(()) => return,
            Err(err) if attempt == 49 => {
                tracing::warn!(device = %name, error = %err, "removing a layer device");
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_blocks_are_found_from_the_image_size() {
        // 3 data blocks + 1 tree block; 129 + 2 + 1; 200000 + 1563 + 13 + 1.
        assert_eq!(data_blocks_of(4), Some(3));
        assert_eq!(data_blocks_of(132), Some(129));
        assert_eq!(data_blocks_of(200_000 + 1563 + 13 + 1), Some(200_000));
    }

    #[test]
    fn the_salt_is_the_one_images_are_made_with() {
        let salt: String = cloak_layers::verity::SALT
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(SALT_HEX, salt);
    }

    #[test]
    fn pinned_root_hashes_win_over_the_request() {
        let storage = Storage {
            driver: LAYER_DRIVER.into(),
            source: "/run/cloak/shared/c/layers/0".into(),
            verity_root_hash: "aa".repeat(32),
            ..Default::default()
        };
        let pinned = vec!["bb".repeat(32)];
        let layers = layers_of(std::slice::from_ref(&storage), Some(&pinned)).unwrap_or_default();
        assert_eq!(layers[0].root_hash, "bb".repeat(32));
        assert!(layers_of(&[storage.clone(), storage], Some(&pinned)).is_err());
    }
}
