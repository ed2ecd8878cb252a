//! What the shim reads from and leaves in a container's bundle: the OCI spec, which pod the
//! container belongs to, and a record that lets `delete` find a crashed shim's pod.

use std::path::{Path, PathBuf};

use cloak_protocol::CRI_SANDBOX_ID_ANNOTATION;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

/// Pod annotation with the pod's init-data (agent policy and settings), base64: its SHA-256
/// becomes the VM's HOST_DATA, which the agent checks and attestation reports carry.
pub const INIT_DATA_ANNOTATION: &str = "io.cloak.init-data";

/// File in the bundle recording the pod's directories.
const POD_RECORD_FILE: &str = "cloak-pod.json";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("reading the OCI spec {path}: {reason}")]
    Spec { path: String, reason: String },
    #[error("writing {path}: {source}")]
    WriteRecord {
        path: String,
        source: std::io::Error,
    },
    #[error("reading {path}: {reason}")]
    ReadRecord { path: String, reason: String },
}

pub fn read_spec(bundle: &Path) -> Result<Spec, BundleError> {
    let path = bundle.join("config.json");
    Spec::load(&path).map_err(|err| BundleError::Spec {
        path: path.display().to_string(),
        reason: err.to_string(),
    })
}

/// The pod's init-data from its annotation; empty without one.
pub fn init_data_of(spec: &Spec) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let Some(encoded) = spec
        .annotations()
        .as_ref()
        .and_then(|annotations| annotations.get(INIT_DATA_ANNOTATION))
    else {
        return Ok(Vec::new());
    };
    base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|err| format!("annotation {INIT_DATA_ANNOTATION} is not base64: {err}"))
}

/// The pod a container joins: the CRI sandbox id, or the container itself (as with `ctr run`).
pub fn pod_id_of(spec: &Spec, container_id: &str) -> String {
    spec.annotations()
        .as_ref()
        .and_then(|annotations| annotations.get(CRI_SANDBOX_ID_ANNOTATION))
        .filter(|id| !id.is_empty())
        .cloned()
        .unwrap_or_else(|| container_id.to_owned())
}

/// Where a pod lives on the host; written into each of its containers' bundles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    pub pod_id: String,
    /// The VM's run directory: sockets, pid files, console log, the shared directory.
    pub pod_dir: PathBuf,
}

impl PodRecord {
    pub fn new(pod_id: &str, run_dir: &Path) -> Self {
        Self {
            pod_id: pod_id.to_owned(),
            pod_dir: cloak_host::run_dir::pod_dir(run_dir, pod_id),
        }
    }

    /// Shared with the guest through virtio-fs.
    pub fn shared_dir(&self) -> PathBuf {
        cloak_host::run_dir::shared_dir(&self.pod_dir)
    }

    /// A container's part of the shared directory.
    pub fn container_dir(&self, container_id: &str) -> PathBuf {
        self.shared_dir().join(container_id)
    }

    pub fn write(&self, bundle: &Path) -> Result<(), BundleError> {
        let path = bundle.join(POD_RECORD_FILE);
        let text = serde_json::to_vec_pretty(self).expect("a PodRecord always serializes");
        std::fs::write(&path, text).map_err(|source| BundleError::WriteRecord {
            path: path.display().to_string(),
            source,
        })
    }

    /// `Ok(None)` when the bundle has no record (the shim died before Create got that far).
    pub fn read(bundle: &Path) -> Result<Option<Self>, BundleError> {
        let path = bundle.join(POD_RECORD_FILE);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => {
                return Err(BundleError::ReadRecord {
                    path: path.display().to_string(),
                    reason: err.to_string(),
                })
            }
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|err| BundleError::ReadRecord {
                path: path.display().to_string(),
                reason: err.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn cri_containers_join_their_sandbox_and_others_get_their_own_pod() {
        let mut spec = Spec::default();
        assert_eq!(pod_id_of(&spec, "c1"), "c1");
        spec.set_annotations(Some(HashMap::from([(
            CRI_SANDBOX_ID_ANNOTATION.to_owned(),
            "pod-7".to_owned(),
        )])));
        assert_eq!(pod_id_of(&spec, "c1"), "pod-7");
        spec.set_annotations(Some(HashMap::from([(
            CRI_SANDBOX_ID_ANNOTATION.to_owned(),
            String::new(),
        )])));
        assert_eq!(pod_id_of(&spec, "c1"), "c1");
    }

    #[test]
    fn init_data_comes_from_its_annotation_in_base64() {
        let mut spec = Spec::default();
        assert_eq!(init_data_of(&spec), Ok(Vec::new()));
        spec.set_annotations(Some(HashMap::from([(
            INIT_DATA_ANNOTATION.to_owned(),
            "cG9saWN5IHYx".to_owned(),
        )])));
        assert_eq!(init_data_of(&spec), Ok(b"policy v1".to_vec()));
        spec.set_annotations(Some(HashMap::from([(
            INIT_DATA_ANNOTATION.to_owned(),
            "not base64!".to_owned(),
        )])));
        let err = init_data_of(&spec).expect_err("bad base64");
        assert!(err.contains(INIT_DATA_ANNOTATION), "{err}");
    }

    #[test]
    fn pod_record_round_trips_through_the_bundle() {
        let bundle = tempfile::tempdir().expect("temp dir");
        assert_eq!(PodRecord::read(bundle.path()).expect("no record yet"), None);
        let record = PodRecord::new("pod", Path::new("/run/cloak"));
        record.write(bundle.path()).expect("write");
        assert_eq!(
            PodRecord::read(bundle.path()).expect("read"),
            Some(record.clone())
        );
        assert_eq!(
            record.container_dir("c"),
            PathBuf::from("/run/cloak/pod/shared/c")
        );
    }

    #[test]
    fn a_missing_spec_names_the_path() {
        let bundle = tempfile::tempdir().expect("temp dir");
        let err = read_spec(bundle.path()).expect_err("no config.json");
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
