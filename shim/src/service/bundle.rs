//! What the shim reads from and leaves in a container's bundle: the OCI spec, which pod the
//! container belongs to, and a record that lets `delete` find a crashed shim's pod.

use std::path::{Path, PathBuf};

use cloak_protocol::CRI_SANDBOX_ID_ANNOTATION;
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

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

/// The pod's init-data (agent policy and settings) from its annotation, `io.cloak.init-data`
/// or Kata's: the exact document bytes, whose digest becomes the VM's HOST_DATA. Empty without
/// either annotation; a document that is not valid init-data is refused here, before any VM.
pub fn init_data_of(spec: &Spec) -> Result<Vec<u8>, String> {
    use cloak_init_data::{decode_annotation, InitData, ANNOTATION, KATA_ANNOTATION};
    let annotations = spec.annotations().clone().unwrap_or_default();
    let mut found = Vec::new();
    for name in [ANNOTATION, KATA_ANNOTATION] {
        if let Some(value) = annotations.get(name) {
            let document = decode_annotation(value)
                .and_then(|document| InitData::parse(&document).map(|_| document))
                .map_err(|err| format!("annotation {name}: {err}"))?;
            found.push((name, document));
        }
    }
    match found.as_slice() {
        [] => Ok(Vec::new()),
        [(_, document)] => Ok(document.clone()),
        [(_, first), (_, second), ..] if first == second => Ok(first.clone()),
        _ => Err(format!(
            "annotations {ANNOTATION} and {KATA_ANNOTATION} carry different init-data"
        )),
    }
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
    fn init_data_comes_from_either_annotation_as_the_exact_document() {
        use base64::Engine as _;
        use cloak_init_data::{encode_annotation, ANNOTATION, KATA_ANNOTATION};
        let v1 = b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nn = \"1\"\n";
        let v2 = b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nn = \"2\"\n";
        let plain = base64::engine::general_purpose::STANDARD.encode(v1);
        let annotated = |pairs: &[(&str, String)]| {
            let mut spec = Spec::default();
            spec.set_annotations(Some(
                pairs
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), value.clone()))
                    .collect(),
            ));
            spec
        };
        assert_eq!(init_data_of(&Spec::default()), Ok(Vec::new()));
        assert_eq!(
            init_data_of(&annotated(&[(ANNOTATION, plain.clone())])),
            Ok(v1.to_vec())
        );
        let kata = encode_annotation(v1).expect("gzip");
        assert_eq!(
            init_data_of(&annotated(&[(KATA_ANNOTATION, kata.clone())])),
            Ok(v1.to_vec())
        );
        assert_eq!(
            init_data_of(&annotated(&[(ANNOTATION, plain), (KATA_ANNOTATION, kata)])),
            Ok(v1.to_vec()),
            "the same document twice"
        );
        let other = encode_annotation(v2).expect("gzip");
        let err = init_data_of(&annotated(&[
            (ANNOTATION, encode_annotation(v1).expect("gzip")),
            (KATA_ANNOTATION, other),
        ]))
        .expect_err("two documents");
        assert!(err.contains("different init-data"), "{err}");
        let err = init_data_of(&annotated(&[(ANNOTATION, "not base64!".to_owned())]))
            .expect_err("bad base64");
        assert!(err.contains(ANNOTATION), "{err}");
        let not_init_data = base64::engine::general_purpose::STANDARD.encode("policy v1");
        let err =
            init_data_of(&annotated(&[(ANNOTATION, not_init_data)])).expect_err("not init-data");
        assert!(err.contains("not an initdata TOML"), "{err}");
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
