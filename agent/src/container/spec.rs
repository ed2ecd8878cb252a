//! Turning the OCI spec the host sent into the one the guest runs: the root is the bundle's
//! `rootfs`, the cgroup lives under `/cloak`, and namespaces that name host paths are replaced.
//! The VM is the pod: containers share its network namespace, so any network namespace in the
//! spec is dropped (and network sysctls are the agent's to apply, see `sysctl`). A container
//! that the CRI asks to join its sandbox's IPC, UTS or PID namespace (by a host path, which
//! means nothing in the guest) joins the guest sandbox container's; others get fresh ones.

use std::path::{Path, PathBuf};

use anyhow::bail;
use oci_spec::runtime::{
    LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, Process, RootBuilder, Spec,
};

use crate::error::AgentError;

/// Parent cgroup of every container (below the guest's cgroup2 root).
pub(crate) const CGROUP_PARENT: &str = "/cloak";

/// Namespaces every container has (new, or the sandbox's where the CRI asks to share them),
/// beside the pod's shared network namespace.
const OWN_NAMESPACES: [LinuxNamespaceType; 4] = [
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
];

/// Namespaces a pod's containers can share with its sandbox (CRI: IPC and UTS always, PID
/// with `NamespaceMode.POD`).
const POD_NAMESPACES: [LinuxNamespaceType; 3] = [
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
];

use cloak_protocol::{CRI_CONTAINER_TYPE_ANNOTATION, CRI_SANDBOX_ID_ANNOTATION};

/// The sandbox a CRI container (not a sandbox itself) belongs to, if the spec names one.
pub(crate) fn sandbox_of(spec: &Spec) -> Option<String> {
    let annotations = spec.annotations().as_ref()?;
    if annotations
        .get(CRI_CONTAINER_TYPE_ANNOTATION)
        .map(String::as_str)
        != Some("container")
    {
        return None;
    }
    annotations
        .get(CRI_SANDBOX_ID_ANNOTATION)
        .filter(|id| !id.is_empty())
        .cloned()
}

pub(crate) fn parse_spec(json: &[u8]) -> anyhow::Result<Spec> {
    match serde_json::from_slice::<Spec>(json) {
        Ok(spec) => Ok(spec),
        Err(err) => bail!(AgentError::InvalidArgument(format!(
            "invalid OCI spec: {err}"
        ))),
    }
}

pub(crate) fn parse_process(json: &[u8]) -> anyhow::Result<Process> {
    match serde_json::from_slice::<Process>(json) {
        Ok(process) => Ok(process),
        Err(err) => bail!(AgentError::InvalidArgument(format!(
            "invalid OCI process: {err}"
        ))),
    }
}

pub(crate) fn cgroup_path(container_id: &str) -> String {
    format!("{CGROUP_PARENT}/{container_id}")
}

/// Rewrites `spec` for the guest. `sandbox_pid` is the guest pid of the pod's sandbox
/// container when this container belongs to one: namespaces the spec shares with the sandbox
/// are joined through it.
pub(crate) fn adapt_for_guest(
    spec: &mut Spec,
    container_id: &str,
    sandbox_pid: Option<i32>,
) -> anyhow::Result<()> {
    let Some(process) = spec.process() else {
        bail!(AgentError::InvalidArgument(
            "the OCI spec has no process".to_owned()
        ));
    };
    if process.args().as_ref().is_none_or(|args| args.is_empty()) {
        bail!(AgentError::InvalidArgument(
            "the OCI spec's process has no args".to_owned()
        ));
    }
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|root| root.readonly())
        .unwrap_or(false);
    spec.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(readonly)
            .build()
            .expect("a root with a path always builds"),
    ));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(cgroup_path(container_id))));
    linux.set_namespaces(Some(guest_namespaces(
        linux.namespaces().as_deref().unwrap_or(&[]),
        sandbox_pid,
    )));
    spec.set_linux(Some(linux));
    Ok(())
}

/// Keeps the spec's own choices where they make sense in the guest: host paths are dropped
/// (or, for the pod namespaces of a sandbox's container, become the sandbox's), network is
/// shared with the VM, user and cgroup namespaces are kept if asked for.
fn guest_namespaces(requested: &[LinuxNamespace], sandbox_pid: Option<i32>) -> Vec<LinuxNamespace> {
    let joins_sandbox = |kind: LinuxNamespaceType| {
        POD_NAMESPACES.contains(&kind)
            && requested.iter().any(|n| {
                n.typ() == kind && n.path().as_ref().is_some_and(|p| !p.as_os_str().is_empty())
            })
    };
    let mut namespaces: Vec<LinuxNamespace> = OWN_NAMESPACES
        .iter()
        .map(|&kind| match sandbox_pid {
            Some(pid) if joins_sandbox(kind) => sandbox_namespace(kind, pid),
            _ => new_namespace(kind),
        })
        .collect();
    for namespace in requested {
        let kind = namespace.typ();
        let keep = matches!(kind, LinuxNamespaceType::User | LinuxNamespaceType::Cgroup)
            && namespace.path().is_none();
        if keep && !namespaces.iter().any(|n| n.typ() == kind) {
            namespaces.push(new_namespace(kind));
        }
    }
    namespaces
}

/// The namespace of kind `kind` that guest process `pid` (a sandbox's init) is in.
fn sandbox_namespace(kind: LinuxNamespaceType, pid: i32) -> LinuxNamespace {
    let name = match kind {
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Ipc => "ipc",
        _ => "uts",
    };
    LinuxNamespaceBuilder::default()
        .typ(kind)
        .path(format!("/proc/{pid}/ns/{name}"))
        .build()
        .expect("a namespace with a type and path always builds")
}

fn new_namespace(kind: LinuxNamespaceType) -> LinuxNamespace {
    LinuxNamespaceBuilder::default()
        .typ(kind)
        .build()
        .expect("a namespace with a type always builds")
}

/// Finds the program a process runs inside `rootfs`, the way execvp would: a path containing
/// `/` is taken as is (relative to cwd), a bare name is searched in the process's PATH.
/// Checking before the container is created turns "no such command" into a clear error rather
/// than an exit status the caller has to interpret.
pub(crate) fn resolve_executable(rootfs: &Path, process: &Process) -> anyhow::Result<PathBuf> {
    let program = process
        .args()
        .as_ref()
        .and_then(|args| args.first())
        .cloned()
        .unwrap_or_default();
    let env_path = process
        .env()
        .as_ref()
        .and_then(|env| env.iter().find_map(|kv| kv.strip_prefix("PATH=")))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .to_owned();
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![process.cwd().join(&program)]
    } else {
        env_path
            .split(':')
            .filter(|d| !d.is_empty())
            .map(|dir| Path::new(dir).join(&program))
            .collect()
    };
    for candidate in candidates {
        if is_executable_in(rootfs, &candidate) {
            return Ok(candidate);
        }
    }
    bail!(AgentError::NotFound(format!(
        "exec: {program:?}: executable file not found in the container (PATH={env_path})"
    )))
}

/// Whether `path` (absolute inside the container) names an executable file, following
/// symlinks inside the rootfs (busybox applets are symlinks to /bin/busybox).
fn is_executable_in(rootfs: &Path, path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mut current = path.to_owned();
    for _ in 0..16 {
        let host = rootfs.join(current.strip_prefix("/").unwrap_or(&current));
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            return false;
        };
        if meta.file_type().is_symlink() {
            let Ok(target) = std::fs::read_link(&host) else {
                return false;
            };
            current = if target.is_absolute() {
                target
            } else {
                current.parent().unwrap_or(Path::new("/")).join(target)
            };
            continue;
        }
        return meta.is_file() && meta.permissions().mode() & 0o111 != 0;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_json(namespaces: &str) -> String {
        format!(
            r#"{{"ociVersion":"1.0.2","process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
               "root":{{"path":"/host/somewhere","readonly":true}},
               "linux":{{"namespaces":{namespaces}}}}}"#
        )
    }

    #[test]
    fn adapts_root_cgroup_and_namespaces() {
        let mut spec = parse_spec(
            spec_json(r#"[{"type":"network","path":"/var/run/netns/x"},{"type":"pid"},{"type":"ipc","path":"/proc/1/ns/ipc"},{"type":"cgroup"}]"#)
                .as_bytes(),
        )
        .unwrap();
        adapt_for_guest(&mut spec, "c1", None).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("rootfs"));
        assert_eq!(root.readonly(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/cloak/c1"))
        );
        let namespaces = linux.namespaces().as_ref().unwrap();
        let kinds: Vec<_> = namespaces.iter().map(|n| n.typ()).collect();
        assert!(!kinds.contains(&LinuxNamespaceType::Network));
        assert!(kinds.contains(&LinuxNamespaceType::Cgroup));
        assert_eq!(kinds.len(), 5);
        assert!(namespaces.iter().all(|n| n.path().is_none()));
    }

    #[test]
    fn a_sandbox_container_joins_the_namespaces_the_cri_shares() {
        // What the CRI plugin writes for a container of a pod with shareProcessNamespace:
        // the pause process's namespaces on the host, which mean nothing in the guest.
        let json = spec_json(
            r#"[{"type":"pid","path":"/proc/77/ns/pid"},{"type":"ipc","path":"/proc/77/ns/ipc"},
                {"type":"uts","path":"/proc/77/ns/uts"},{"type":"mount"},
                {"type":"network","path":"/var/run/netns/cni-1"}]"#,
        );
        let namespaces = |sandbox_pid| {
            let mut spec = parse_spec(json.as_bytes()).unwrap();
            adapt_for_guest(&mut spec, "c1", sandbox_pid).unwrap();
            spec.linux().as_ref().unwrap().namespaces().clone().unwrap()
        };
        let joined = namespaces(Some(4242));
        for (kind, name) in [
            (LinuxNamespaceType::Pid, "pid"),
            (LinuxNamespaceType::Ipc, "ipc"),
            (LinuxNamespaceType::Uts, "uts"),
        ] {
            let found = joined.iter().find(|n| n.typ() == kind).unwrap();
            assert_eq!(
                found.path().as_deref(),
                Some(Path::new(&format!("/proc/4242/ns/{name}")))
            );
        }
        let mount = joined
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Mount)
            .unwrap();
        assert!(mount.path().is_none(), "a mount namespace of its own");
        assert!(joined
            .iter()
            .all(|n| n.typ() != LinuxNamespaceType::Network));
        // Without a sandbox in the guest (ctr run), the host paths give fresh namespaces.
        assert!(namespaces(None).iter().all(|n| n.path().is_none()));

        // A pid namespace the spec creates itself (NamespaceMode.CONTAINER) stays private.
        let json = spec_json(r#"[{"type":"pid"},{"type":"ipc","path":"/proc/77/ns/ipc"}]"#);
        let mut spec = parse_spec(json.as_bytes()).unwrap();
        adapt_for_guest(&mut spec, "c1", Some(9)).unwrap();
        let namespaces = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
        let pid = namespaces
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Pid)
            .unwrap();
        assert!(pid.path().is_none());
        let ipc = namespaces
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Ipc)
            .unwrap();
        assert_eq!(ipc.path().as_deref(), Some(Path::new("/proc/9/ns/ipc")));
    }

    #[test]
    fn only_cri_containers_name_a_sandbox() {
        let with = |annotations: &str| {
            let json = format!(
                r#"{{"ociVersion":"1.0.2","annotations":{annotations},
                    "process":{{"args":["sh"],"cwd":"/","user":{{"uid":0,"gid":0}}}}}}"#
            );
            sandbox_of(&parse_spec(json.as_bytes()).unwrap())
        };
        assert_eq!(
            with(
                r#"{"io.kubernetes.cri.container-type":"container","io.kubernetes.cri.sandbox-id":"s1"}"#
            ),
            Some("s1".to_owned())
        );
        assert_eq!(
            with(
                r#"{"io.kubernetes.cri.container-type":"sandbox","io.kubernetes.cri.sandbox-id":"s1"}"#
            ),
            None
        );
        assert_eq!(with("{}"), None);
    }

    #[test]
    fn bad_specs_are_invalid_arguments() {
        for json in [
            "{",
            r#"{"ociVersion":"1.0.2"}"#,
            r#"{"ociVersion":"1.0.2","process":{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}}"#,
        ] {
            let result = parse_spec(json.as_bytes())
                .and_then(|mut spec| adapt_for_guest(&mut spec, "c", None));
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err.downcast_ref::<AgentError>(),
                    Some(AgentError::InvalidArgument(_))
                ),
                "{json}: {err}"
            );
        }
    }

    #[test]
    fn executables_are_found_through_path_and_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("bin")).unwrap();
        let busybox = rootfs.path().join("bin/busybox");
        std::fs::write(&busybox, b"elf").unwrap();
        std::fs::set_permissions(&busybox, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("busybox", rootfs.path().join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("/bin/busybox", rootfs.path().join("bin/ls")).unwrap();
        std::fs::write(rootfs.path().join("bin/data"), b"x").unwrap();

        let process = |args: &[&str]| -> Process {
            serde_json::from_str(&format!(
                r#"{{"args":{},"cwd":"/","user":{{"uid":0,"gid":0}},"env":["PATH=/usr/bin:/bin"]}}"#,
                serde_json::to_string(args).unwrap()
            ))
            .unwrap()
        };
        assert_eq!(
            resolve_executable(rootfs.path(), &process(&["sh"])).unwrap(),
            Path::new("/bin/sh")
        );
        assert!(resolve_executable(rootfs.path(), &process(&["ls"])).is_ok());
        assert!(resolve_executable(rootfs.path(), &process(&["/bin/busybox"])).is_ok());
        let err = resolve_executable(rootfs.path(), &process(&["nosuch"])).unwrap_err();
        assert!(matches!(
            err.downcast_ref::<AgentError>(),
            Some(AgentError::NotFound(_))
        ));
        assert!(resolve_executable(rootfs.path(), &process(&["data"])).is_err());
    }
}
