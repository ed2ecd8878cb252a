//! Host mounts that make a container's files reachable in the pod VM: the pod's shared
//! directory is a shared mount point (so mounts made below it after virtiofsd started still
//! reach virtiofsd's own mount namespace), a container's rootfs is mounted below it (by the
//! shim, from containerd's mounts), and host bind mounts in the spec are bound below it and
//! rewritten to guest paths.
//! Everything is undone by unmounting below a directory before removing it, never by
//! deleting through a mount.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("creating {path}: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    #[error("mounting {what} on {target}: {reason}")]
    Mount {
        what: String,
        target: String,
        reason: String,
    },
    #[error("bind mount source {0} does not exist on the host")]
    MissingSource(String),
    #[error("{path} still has mounts below it ({mounts}); not removing it")]
    StillMounted { path: String, mounts: String },
    #[error("removing {path}: {source}")]
    Remove {
        path: String,
        source: std::io::Error,
    },
}

/// Creates `path` and its parents.
pub fn create_dir(path: &Path) -> Result<(), MountError> {
    std::fs::create_dir_all(path).map_err(|source| MountError::Create {
        path: path.display().to_string(),
        source,
    })
}

/// Makes `dir` a mount point of its own with shared propagation.
pub fn make_shared_mount_point(dir: &Path) -> Result<(), MountError> {
    create_dir(dir)?;
    let failed = |err: nix::Error| MountError::Mount {
        what: "a shared bind of itself".to_owned(),
        target: dir.display().to_string(),
        reason: err.to_string(),
    };
    mount(Some(dir), dir, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(failed)?;
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(failed)
}

/// Binds `source` (recursively) on `target`, read-only if asked.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<(), MountError> {
    let failed = |err: nix::Error| MountError::Mount {
        what: source.display().to_string(),
        target: target.display().to_string(),
        reason: err.to_string(),
    };
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(failed)?;
    if read_only {
        mount(
            None::<&str>,
            target,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(failed)?;
    }
    Ok(())
}

fn is_bind(spec_mount: &oci_spec::runtime::Mount) -> bool {
    let typed_bind = spec_mount.typ().as_deref() == Some("bind");
    let bind_option = spec_mount
        .options()
        .as_ref()
        .is_some_and(|options| options.iter().any(|o| o == "bind" || o == "rbind"));
    typed_bind || bind_option
}

/// Binds every host path the spec bind-mounts below `host_dir` (as `<n>`) and points the
/// spec at the same entry below `guest_dir`, adding binds for host submounts whose
/// writability differs from their parent's (`submount_binds`).
pub fn share_bind_mounts(
    spec: &mut Spec,
    host_dir: &Path,
    guest_dir: &Path,
) -> Result<(), MountError> {
    let Some(requested) = spec.mounts().clone() else {
        return Ok(());
    };
    let mut mounts = Vec::with_capacity(requested.len());
    for (index, mut spec_mount) in requested.into_iter().enumerate() {
        if !is_bind(&spec_mount) {
            mounts.push(spec_mount);
            continue;
        }
        let Some(source) = spec_mount.source().clone() else {
            mounts.push(spec_mount);
            continue;
        };
        let metadata = std::fs::metadata(&source)
            .map_err(|_| MountError::MissingSource(source.display().to_string()))?;
        let staged = host_dir.join(index.to_string());
        create_dir(host_dir)?;
        if metadata.is_dir() {
            create_dir(&staged)?;
        } else {
            std::fs::File::create(&staged).map_err(|source| MountError::Create {
                path: staged.display().to_string(),
                source,
            })?;
        }
        let read_only = spec_mount
            .options()
            .as_ref()
            .is_some_and(|options| options.iter().any(|o| o == "ro"));
        bind(&source, &staged, read_only)?;
        let submounts = if metadata.is_dir() {
            submount_binds(&spec_mount, &source, read_only, guest_dir, index)
        } else {
            Vec::new()
        };
        spec_mount.set_source(Some(guest_dir.join(index.to_string())));
        mounts.push(spec_mount);
        mounts.extend(submounts);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// One line of /proc/self/mountinfo: where, and whether that mount is read-only.
struct MountInfoEntry {
    point: PathBuf,
    read_only: bool,
}

fn mount_table() -> Vec<MountInfoEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ').skip(4);
            let point = PathBuf::from(unescape_mountinfo(fields.next()?));
            let read_only = fields.next()?.split(',').any(|option| option == "ro");
            Some(MountInfoEntry { point, read_only })
        })
        .collect()
}

/// Mounts strictly below `dir`, shallowest first, each with whether it is read-only (the
/// last mount on a point wins, as path lookup sees it).
fn submounts_of(dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut found: Vec<(PathBuf, bool)> = Vec::new();
    for entry in mount_table() {
        if entry.point == dir || !entry.point.starts_with(dir) {
            continue;
        }
        found.retain(|(point, _)| *point != entry.point);
        found.push((entry.point, entry.read_only));
    }
    found.sort_by_key(|(point, _)| point.components().count());
    found
}

/// Spec mounts that give the guest the per-mount writability of the host mounts below a bind
/// source. The guest sees the whole source through one virtio-fs mount, so the spec mount's
/// `ro` (non-recursive, as runc applies it) would cover a writable tmpfs below it too; a bind
/// of its own for each submount whose writability differs from what is above it restores
/// runc's view. `index` is the spec mount's staging entry below `guest_dir`.
fn submount_binds(
    spec_mount: &oci_spec::runtime::Mount,
    source: &Path,
    read_only: bool,
    guest_dir: &Path,
    index: usize,
) -> Vec<oci_spec::runtime::Mount> {
    let recursive_read_only = spec_mount
        .options()
        .as_ref()
        .is_some_and(|options| options.iter().any(|o| o == "rro"));
    if recursive_read_only {
        return Vec::new();
    }
    let source = std::fs::canonicalize(source).unwrap_or_else(|_| source.to_owned());
    let mut seen: Vec<(PathBuf, bool)> = vec![(source.clone(), read_only)];
    let mut binds = Vec::new();
    for (point, sub_read_only) in submounts_of(&source) {
        let above = seen
            .iter()
            .filter(|(ancestor, _)| point.starts_with(ancestor))
            .max_by_key(|(ancestor, _)| ancestor.components().count())
            .map(|(_, ro)| *ro)
            .unwrap_or(read_only);
        seen.push((point.clone(), sub_read_only));
        if above == sub_read_only {
            continue;
        }
        let Ok(relative) = point.strip_prefix(&source) else {
            continue;
        };
        let built = oci_spec::runtime::MountBuilder::default()
            .destination(spec_mount.destination().join(relative))
            .typ("bind")
            .source(guest_dir.join(index.to_string()).join(relative))
            .options(vec![
                "rbind".to_owned(),
                if sub_read_only { "ro" } else { "rw" }.to_owned(),
            ])
            .build();
        if let Ok(bind) = built {
            binds.push(bind);
        }
    }
    binds
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mount_table()
        .into_iter()
        .map(|entry| entry.point)
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|point| std::cmp::Reverse(point.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(value) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .map_err(|_| ())
                .and_then(|octal| u8::from_str_radix(octal, 8).map_err(|_| ()))
            {
                out.push(value);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything at or below `dir` (lazily: a VM that still holds a file open must not
/// keep the host mount busy) and then removes the tree.
pub fn unmount_and_remove(dir: &Path) -> Result<(), MountError> {
    for point in mounts_below(dir) {
        if let Err(err) = umount2(&point, MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %point.display(), error = %err, "unmounting");
        }
    }
    let left = mounts_below(dir);
    if !left.is_empty() {
        return Err(MountError::StillMounted {
            path: dir.display().to_string(),
            mounts: left
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MountError::Remove {
            path: dir.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/tab\\011x\\134"), "/tab\tx\\");
    }

    #[test]
    fn only_bind_mounts_are_shared() {
        let spec = Spec::default();
        let mounts = spec.mounts().clone().expect("the default spec has mounts");
        assert!(
            mounts.iter().all(|m| !is_bind(m)),
            "proc, dev, sysfs... are not binds"
        );
        let bind_mount = oci_spec::runtime::MountBuilder::default()
            .destination("/data")
            .source("/srv")
            .options(vec!["rbind".to_owned(), "ro".to_owned()])
            .build()
            .expect("mount");
        assert!(is_bind(&bind_mount));
    }

    #[test]
    fn binds_are_staged_and_rewritten_and_missing_sources_refused() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: bind mounts need root");
            return;
        }
        let host = tempfile::tempdir().expect("temp dir");
        let source = host.path().join("data");
        std::fs::create_dir(&source).expect("mkdir");
        std::fs::write(source.join("f"), "x").expect("write");
        let mut spec = Spec::default();
        let mut mounts = spec.mounts().clone().expect("mounts");
        mounts.push(
            oci_spec::runtime::MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source(&source)
                .options(vec!["rbind".to_owned(), "ro".to_owned()])
                .build()
                .expect("mount"),
        );
        let index = mounts.len() - 1;
        spec.set_mounts(Some(mounts));
        let staging = host.path().join("staging");
        share_bind_mounts(&mut spec, &staging, Path::new("/guest/c/mounts")).expect("share");
        let rewritten = &spec.mounts().as_ref().expect("mounts")[index];
        assert_eq!(
            rewritten.source().as_deref(),
            Some(Path::new(&format!("/guest/c/mounts/{index}")))
        );
        let staged = staging.join(index.to_string());
        assert_eq!(
            std::fs::read_to_string(staged.join("f")).expect("read"),
            "x"
        );
        assert!(
            std::fs::write(staged.join("g"), "y").is_err(),
            "read-only bind"
        );
        unmount_and_remove(&staging).expect("cleanup");
        assert!(!staging.exists());
        assert!(source.join("f").exists(), "the source survives the cleanup");

        // A writable tmpfs below a read-only volume stays writable, on the host and (through
        // a bind of its own) in the guest; a read-only one below it gets nothing extra.
        let sub = source.join("sub");
        std::fs::create_dir(&sub).expect("mkdir sub");
        mount(
            Some("tmpfs"),
            &sub,
            Some("tmpfs"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("tmpfs");
        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![oci_spec::runtime::MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(&source)
            .options(vec!["rbind".to_owned(), "ro".to_owned()])
            .build()
            .expect("mount")]));
        share_bind_mounts(&mut spec, &staging, Path::new("/guest/c/mounts")).expect("share");
        let mounts = spec.mounts().clone().expect("mounts");
        assert_eq!(mounts.len(), 2, "{mounts:?}");
        assert_eq!(mounts[1].destination(), Path::new("/data/sub"));
        assert_eq!(
            mounts[1].source().as_deref(),
            Some(Path::new("/guest/c/mounts/0/sub"))
        );
        assert_eq!(
            mounts[1].options().clone().expect("options"),
            vec!["rbind".to_owned(), "rw".to_owned()]
        );
        assert!(std::fs::write(staging.join("0/top"), "y").is_err());
        std::fs::write(staging.join("0/sub/y"), "y").expect("the tmpfs takes writes");
        unmount_and_remove(&staging).expect("cleanup");
        umount2(&sub, MntFlags::MNT_DETACH).expect("umount tmpfs");

        let mut spec = Spec::default();
        spec.set_mounts(Some(vec![oci_spec::runtime::MountBuilder::default()
            .destination("/x")
            .typ("bind")
            .source("/nonexistent/cloak")
            .build()
            .expect("mount")]));
        let err = share_bind_mounts(&mut spec, &staging, Path::new("/g")).expect_err("missing");
        assert!(matches!(err, MountError::MissingSource(_)), "{err}");
    }
}
