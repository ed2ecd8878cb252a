//! Unsealing a container before it is created: environment values in sealed form
//! (`sealed.<header>.<payload>.<signature>`, see `cloak_kbs_protocol::sealed`) are replaced by
//! the resource they name; files in sealed form at the top of a bind mount the host shares (a
//! Kubernetes Secret volume, or a single file) are replaced by a guest-memory copy holding the
//! plaintext; the init-data's resources are bound read-only at `/run/cloak/secrets`. The host
//! sees the sealed form only. A value that cannot be unsealed refuses the container.

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use cloak_kbs_protocol::sealed;
use cloak_protocol::agent::TeeKind;
use serde_json::{json, Value};

use super::{unsealed_dir, SecretError, Secrets, SECRETS_DIR};

/// Only this many top-level entries of a shared mount are looked at, each up to this size: a
/// Secret holds a few small files, and a large volume must not cost a full scan.
const MAX_ENTRIES: usize = 64;
const MAX_SEALED_FILE_BYTES: u64 = 64 << 10;
/// Host-shared bind sources live below this guest path.
const SHARED_PREFIX: &str = "/run/cloak/shared/";

fn io(what: impl Into<String>, err: impl std::fmt::Display) -> SecretError {
    SecretError::Io {
        what: what.into(),
        reason: err.to_string(),
    }
}

/// Writes `bytes` to `path` (parents made), mode `mode`.
pub(super) fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SecretError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|err| io(parent.display().to_string(), err))?;
    }
    std::fs::write(path, bytes).map_err(|err| io(path.display().to_string(), err))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|err| io(path.display().to_string(), err))
}

/// The spec with every sealed value replaced, or `None` when nothing needed unsealing.
pub(crate) async fn unseal_container(
    secrets: &Secrets,
    tee: TeeKind,
    container_id: &str,
    spec_json: &[u8],
) -> Result<Option<Vec<u8>>, SecretError> {
    // A spec that is not JSON holds nothing to unseal; creating the container reports it.
    let Ok(mut spec) = serde_json::from_slice::<Value>(spec_json) else {
        return Ok(None);
    };
    let mut changed = false;

    if let Some(env) = spec
        .pointer_mut("/process/env")
        .and_then(Value::as_array_mut)
    {
        changed |= unseal_env(secrets, tee, container_id, env).await?;
    }

    let unsealed = unsealed_dir(container_id);
    if let Some(mounts) = spec.get_mut("mounts").and_then(Value::as_array_mut) {
        for (index, mount) in mounts.iter_mut().enumerate() {
            let Some(source) = mount.get("source").and_then(Value::as_str) else {
                continue;
            };
            if !source.starts_with(SHARED_PREFIX) {
                continue;
            }
            let source = PathBuf::from(source);
            let target = unsealed.join(index.to_string());
            if let Some(replacement) =
                unseal_mount(secrets, tee, container_id, &source, &target).await?
            {
                mount["source"] = json!(replacement.display().to_string());
                changed = true;
            }
        }
    }

    // The pod's sandbox (pause) container runs no workload: it gets no resource files.
    let sandbox = spec
        .pointer("/annotations/io.kubernetes.cri.container-type")
        .and_then(Value::as_str)
        == Some("sandbox");
    if !sandbox && secrets.ensure_files(tee).await? {
        let mount = json!({
            "destination": SECRETS_DIR,
            "type": "bind",
            "source": SECRETS_DIR,
            "options": ["rbind", "ro", "nosuid", "nodev", "noexec"],
        });
        match spec.get_mut("mounts").and_then(Value::as_array_mut) {
            Some(mounts) => mounts.push(mount),
            None => spec["mounts"] = json!([mount]),
        }
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    serde_json::to_vec(&spec)
        .map(Some)
        .map_err(|err| io("the container's spec", err))
}

/// Replaces the sealed values of an OCI `env` list; whether any was.
async fn unseal_env(
    secrets: &Secrets,
    tee: TeeKind,
    container_id: &str,
    env: &mut [Value],
) -> Result<bool, SecretError> {
    let mut changed = false;
    for entry in env.iter_mut() {
        let Some((name, value)) = entry.as_str().and_then(|e| e.split_once('=')) else {
            continue;
        };
        if !sealed::is_sealed(value.as_bytes()) {
            continue;
        }
        let name = name.to_owned();
        let uri = sealed::resource_of(value)
            .map_err(|err| io(format!("environment variable {name}"), err))?;
        let plaintext = secrets.fetch(tee, &uri).await.map_err(|err| {
            io(
                format!("unsealing environment variable {name} (kbs:///{uri})"),
                err,
            )
        })?;
        let plaintext = String::from_utf8(plaintext).map_err(|_| {
            io(
                format!("environment variable {name}"),
                format!("resource {uri} is not UTF-8 text"),
            )
        })?;
        *entry = json!(format!("{name}={plaintext}"));
        changed = true;
        tracing::info!(container = %container_id, variable = %name, resource = %uri, "environment variable unsealed");
    }
    Ok(changed)
}

/// An exec's process with its sealed environment values replaced (containerd builds an
/// exec's environment from the container's spec as the host knows it: sealed), or `None`.
pub(crate) async fn unseal_exec(
    secrets: &Secrets,
    tee: TeeKind,
    container_id: &str,
    process_json: &[u8],
) -> Result<Option<Vec<u8>>, SecretError> {
    let Ok(mut process) = serde_json::from_slice::<Value>(process_json) else {
        return Ok(None);
    };
    let Some(env) = process.get_mut("env").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    if !unseal_env(secrets, tee, container_id, env).await? {
        return Ok(None);
    }
    serde_json::to_vec(&process)
        .map(Some)
        .map_err(|err| io("the exec's process", err))
}

/// The first bytes of `path` if it is a small regular file in sealed form, else `None`.
fn sealed_content(path: &Path) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    if !metadata.is_file() || metadata.len() > MAX_SEALED_FILE_BYTES {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let mut prefix = [0u8; 7];
    file.read_exact(&mut prefix).ok()?;
    if !sealed::is_sealed(&prefix) {
        return None;
    }
    std::fs::read_to_string(path).ok()
}

/// A guest-memory replacement for the bind source `source` if it holds sealed files.
async fn unseal_mount(
    secrets: &Secrets,
    tee: TeeKind,
    container_id: &str,
    source: &Path,
    target: &Path,
) -> Result<Option<PathBuf>, SecretError> {
    let unseal = |text: String, what: String| async move {
        let uri = sealed::resource_of(&text).map_err(|err| io(what.clone(), err))?;
        secrets
            .fetch(tee, &uri)
            .await
            .map_err(|err| io(format!("unsealing {what} (kbs:///{uri})"), err))
    };
    if source.is_file() {
        let Some(text) = sealed_content(source) else {
            return Ok(None);
        };
        let plaintext = unseal(text, format!("mounted file {}", source.display())).await?;
        write_private(target, &plaintext, 0o444)?;
        tracing::info!(container = %container_id, "mounted file unsealed");
        return Ok(Some(target.to_owned()));
    }
    let Ok(root) = source.canonicalize() else {
        return Ok(None);
    };
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(None);
    };
    // Top-level names (a Secret volume's keys are symbolic links into ..data/), resolved but
    // never outside the mount.
    let mut files = Vec::new();
    for entry in entries.flatten().take(MAX_ENTRIES) {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let Ok(resolved) = entry.path().canonicalize() else {
            continue;
        };
        if resolved.starts_with(&root) && resolved.is_file() {
            files.push((name, resolved));
        }
    }
    let sealed_files: Vec<_> = files
        .iter()
        .filter_map(|(name, path)| sealed_content(path).map(|text| (name.clone(), text)))
        .collect();
    if sealed_files.is_empty() {
        return Ok(None);
    }
    std::fs::create_dir_all(target).map_err(|err| io(target.display().to_string(), err))?;
    for (name, path) in &files {
        let out = target.join(name);
        let mode = std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0o444);
        match sealed_files
            .iter()
            .find(|(sealed_name, _)| sealed_name == name)
        {
            Some((_, text)) => {
                let what = format!("mounted file {}", name.to_string_lossy());
                let plaintext = unseal(text.clone(), what).await?;
                write_private(&out, &plaintext, mode)?;
            }
            None => {
                let bytes =
                    std::fs::read(path).map_err(|err| io(path.display().to_string(), err))?;
                write_private(&out, &bytes, mode)?;
            }
        }
    }
    tracing::info!(container = %container_id, files = sealed_files.len(), "mounted secret files unsealed");
    Ok(Some(target.to_owned()))
}
