//! Resources from a directory: `<dir>/<repository>/<type>/<tag>`, each segment checked by
//! `ResourceUri` (no `..`, no slashes), and symbolic links not followed out of the directory.

use std::path::Path;

use cloak_kbs_protocol::resource::ResourceUri;

use crate::BrokerError;

/// Resources are secrets and keys; anything larger is refused rather than streamed.
const MAX_RESOURCE_BYTES: u64 = 1 << 20;

pub(crate) fn read(dir: &Path, uri: &ResourceUri) -> Result<Vec<u8>, BrokerError> {
    let path = dir.join(&uri.repository).join(&uri.kind).join(&uri.tag);
    let not_found = || BrokerError::NotFound(format!("no resource {uri}"));
    let canonical = path.canonicalize().map_err(|_| not_found())?;
    let root = dir
        .canonicalize()
        .map_err(|err| BrokerError::Internal(format!("the resource directory: {err}")))?;
    if !canonical.starts_with(&root) {
        return Err(not_found());
    }
    let metadata = std::fs::metadata(&canonical).map_err(|_| not_found())?;
    if !metadata.is_file() {
        return Err(not_found());
    }
    if metadata.len() > MAX_RESOURCE_BYTES {
        return Err(BrokerError::Internal(format!(
            "resource {uri} is larger than {MAX_RESOURCE_BYTES} bytes"
        )));
    }
    std::fs::read(&canonical).map_err(|err| BrokerError::Internal(format!("reading {uri}: {err}")))
}
