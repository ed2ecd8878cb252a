//! The layers a confidential pod's containers run from. The pod's policy (in its init-data)
//! pins, per container, the image's layer digests and their root hashes; the shim converts
//! each layer once into the node's cache (`cloak_host::layer_cache`), shares the images into
//! the pod read-only, and asks the agent for a rootfs of exactly those layers. The shim only
//! supplies bytes: the guest opens each image under the root hash of its own policy.

use std::path::Path;

use cloak_host::host_mounts;
use cloak_host::layer_cache::LayerCache;
use cloak_protocol::agent::Storage;
use oci_spec::runtime::Spec;

/// Where `cloak policy generate` puts the pinned data in the policy it writes
/// (`cloak_policy::with_policy_data`).
const POLICY_DATA_MARKER: &str = "\npolicy_data := ";

/// One container's pinned layers, bottom first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedLayers {
    pub digests: Vec<String>,
    pub root_hashes: Vec<String>,
}

/// Every container's pins, by CRI type and name (a sandbox has no name).
#[derive(Debug, Default)]
pub struct LayerPins {
    containers: Vec<(String, String, PinnedLayers)>,
}

impl LayerPins {
    /// The pins of `init_data`'s policy (none for init-data without a generated policy).
    pub fn of_init_data(init_data: &[u8]) -> Self {
        let Some(policy) = cloak_init_data::InitData::parse(init_data)
            .ok()
            .and_then(|document| document.policy().map(str::to_owned))
        else {
            return Self::default();
        };
        let Some(at) = policy.find(POLICY_DATA_MARKER) else {
            return Self::default();
        };
        let text = &policy[at + POLICY_DATA_MARKER.len()..];
        let Some(Ok(data)) = serde_json::Deserializer::from_str(text)
            .into_iter::<serde_json::Value>()
            .next()
        else {
            return Self::default();
        };
        let strings = |value: &serde_json::Value| -> Vec<String> {
            value
                .as_array()
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|i| i.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let containers = data["containers"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| {
                        let pins = PinnedLayers {
                            digests: strings(&entry["image"]["layers"]),
                            root_hashes: strings(&entry["layers"]),
                        };
                        (!pins.root_hashes.is_empty()
                            && pins.digests.len() == pins.root_hashes.len())
                        .then(|| {
                            (
                                entry["type"].as_str().unwrap_or_default().to_owned(),
                                entry["name"].as_str().unwrap_or_default().to_owned(),
                                pins,
                            )
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { containers }
    }

    /// The pins of the container `spec` describes (by its CRI annotations).
    pub fn for_spec(&self, spec: &Spec) -> Option<&PinnedLayers> {
        let annotation = |name: &str| {
            spec.annotations()
                .as_ref()
                .and_then(|a| a.get(name).cloned())
                .unwrap_or_default()
        };
        let kind = annotation("io.kubernetes.cri.container-type");
        let name = annotation("io.kubernetes.cri.container-name");
        self.containers
            .iter()
            .find(|(k, n, _)| *k == kind && *n == name)
            .map(|(_, _, pins)| pins)
    }
}

/// Converts (or finds) each pinned layer, binds its image read-only at `<host_dir>/<i>.img`,
/// and returns the storages naming them at `guest_dir`.
pub async fn stage(
    cache: &LayerCache,
    pins: &PinnedLayers,
    host_dir: &Path,
    guest_dir: &Path,
) -> anyhow::Result<Vec<Storage>> {
    host_mounts::create_dir(host_dir)?;
    let mut storages = Vec::with_capacity(pins.digests.len());
    for (index, (digest, pinned)) in pins.digests.iter().zip(&pins.root_hashes).enumerate() {
        let (cache, digest_owned) = (cache.clone(), digest.clone());
        let cached = tokio::task::spawn_blocking(move || cache.ensure(&digest_owned)).await??;
        if cached.root_hash != *pinned {
            tracing::warn!(layer = %digest, root_hash = %cached.root_hash, pinned = %pinned, "the node's layer image differs from the policy's: the guest will refuse it");
        }
        let name = format!("{index}.img");
        let target = host_dir.join(&name);
        std::fs::File::create(&target)?;
        host_mounts::bind(&cached.image, &target, true)?;
        storages.push(Storage {
            driver: "erofs-verity".into(),
            source: guest_dir.join(&name).display().to_string(),
            verity_root_hash: cached.root_hash,
            ..Default::default()
        });
    }
    Ok(storages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_read_from_a_generated_policy() {
        let data = serde_json::json!({"containers": [
            {"type": "sandbox", "name": "", "image": {"layers": ["sha256:aa"]}, "layers": ["11"]},
            {"type": "container", "name": "app", "image": {"layers": ["sha256:bb", "sha256:cc"]}, "layers": ["22", "33"]},
            {"type": "container", "name": "plain", "image": {"layers": ["sha256:dd"]}, "layers": []}
        ]});
        let policy = cloak_policy::with_policy_data("package agent_policy\n", &data);
        let init_data = format!(
            "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = '''\n{policy}'''\n"
        );
        let pins = LayerPins::of_init_data(init_data.as_bytes());
        let mut spec = Spec::default();
        spec.set_annotations(Some(
            [
                (
                    "io.kubernetes.cri.container-type".to_owned(),
                    "container".to_owned(),
                ),
                (
                    "io.kubernetes.cri.container-name".to_owned(),
                    "app".to_owned(),
                ),
            ]
            .into(),
        ));
        assert_eq!(
            pins.for_spec(&spec),
            Some(&PinnedLayers {
                digests: vec!["sha256:bb".into(), "sha256:cc".into()],
                root_hashes: vec!["22".into(), "33".into()],
            })
        );
        spec.set_annotations(Some(
            [
                (
                    "io.kubernetes.cri.container-type".to_owned(),
                    "container".to_owned(),
                ),
                (
                    "io.kubernetes.cri.container-name".to_owned(),
                    "plain".to_owned(),
                ),
            ]
            .into(),
        ));
        assert_eq!(pins.for_spec(&spec), None, "no layers pinned");
        assert!(LayerPins::of_init_data(b"").for_spec(&spec).is_none());
    }
}
