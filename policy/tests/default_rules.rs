//! The default confidential rules (`configs/policy/rules.rego`) against a table of requests:
//! one request of each kind shaped as the CRI plugin and the shim send it (taken from real
//! containerd 1.6 and 2.1 bundles), then one mutation at a time, each with the decision and the
//! reason the rules must give. The pinned data is written here by hand, not by the generator,
//! so the rules are checked on their own.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use cloak_policy::{with_policy_data, AgentPolicy, Decision, CONFIDENTIAL_RULES};
use serde_json::{json, Value};

const CID: &str = "3f1c";
const SANDBOX: &str = "a112";

fn shared(index: usize) -> String {
    format!("/run/cloak/shared/{CID}/mounts/{index}")
}

fn default_caps() -> Value {
    json!([
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE"
    ])
}

fn shared_source() -> &'static str {
    "^/run/cloak/shared/[^/]+/mounts/[0-9]+$"
}

fn runtime_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "^proc$", "options": [], "below": false}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "^tmpfs$", "options": [], "below": false}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "^devpts$", "options": [], "below": false}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "^mqueue$", "options": [], "below": false}),
        json!({"destination": "/sys", "type": "sysfs", "source": "^sysfs$", "options": ["ro"], "below": false}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "^cgroup$", "options": ["ro"], "below": false}),
    ]
}

fn policy_data() -> Value {
    let mut app_mounts = runtime_mounts();
    for destination in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/dev/shm",
    ] {
        app_mounts.push(json!({"destination": destination, "type": "bind", "source": shared_source(), "options": [], "below": false}));
    }
    app_mounts.push(json!({"destination": "/data", "type": "bind", "source": shared_source(), "options": ["ro"], "below": true}));
    let mut sandbox_mounts = runtime_mounts();
    sandbox_mounts.push(json!({"destination": "/dev/shm", "type": "tmpfs", "source": "^shm$", "options": [], "below": false}));
    sandbox_mounts.push(json!({"destination": "/dev/shm", "type": "bind", "source": shared_source(), "options": ["ro"], "below": false}));
    sandbox_mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind", "source": shared_source(), "options": ["ro"], "below": false}));
    json!({
        "pod": {"name": "^web$", "namespace": "default", "hostname": "^web$"},
        "env_patterns": ["^[A-Z0-9_]+_SERVICE_(HOST|PORT(_[A-Z0-9_]+)?)=.*$"],
        "copy_file_prefix": "/run/cloak/copied/",
        "host_reports": false,
        "port_forward": [8080],
        "containers": [
            {
                "type": "sandbox", "name": "",
                "image": {"names": ["docker.io/cloak/pause:test"], "config_digest": "sha256:11", "layers": ["sha256:22"]},
                "args": ["/pause"], "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "env_patterns": [],
                "cwd": "/", "user": {"uid": 65535, "gid": 65535, "additional_gids": []},
                "capabilities": default_caps(), "no_new_privileges": true, "readonly_rootfs": true,
                "mounts": sandbox_mounts,
                "sysctls": {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"},
                "exec": [], "logs": false
            },
            {
                "type": "container", "name": "app",
                "image": {"names": ["docker.io/library/busybox:1.36", "busybox:1.36"], "config_digest": "sha256:33", "layers": ["sha256:44"]},
                "args": ["sh", "-c", "exec httpd -f"],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "MODE=prod"],
                "env_patterns": ["^HOSTNAME=web$"],
                "cwd": "/srv", "user": {"uid": 1000, "gid": 1000, "additional_gids": [1000, 2000]},
                "capabilities": default_caps(), "no_new_privileges": true, "readonly_rootfs": true,
                "mounts": app_mounts,
                "sysctls": {"net.core.somaxconn": "1024"},
                "exec": [["cat", "/srv/health"]], "logs": true
            }
        ]
    })
}

fn policy() -> AgentPolicy {
    AgentPolicy::load(&with_policy_data(CONFIDENTIAL_RULES, &policy_data()))
        .unwrap_or_else(|err| panic!("the rules load: {err}"))
}

fn annotations(kind: &str, name: Option<&str>) -> Value {
    let mut annotations = json!({
        "io.kubernetes.cri.container-type": kind,
        "io.kubernetes.cri.sandbox-id": SANDBOX,
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.kubernetes.cri.sandbox-uid": "uid-web"
    });
    if let Some(name) = name {
        annotations["io.kubernetes.cri.container-name"] = json!(name);
        annotations["io.kubernetes.cri.image-name"] = json!("docker.io/library/busybox:1.36");
    }
    annotations
}

fn runtime_request_mounts() -> Vec<Value> {
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ]
}

fn caps_object() -> Value {
    json!({"bounding": default_caps(), "effective": default_caps(), "permitted": default_caps()})
}

/// The app container's CreateContainerRequest as the agent's policy input sees it.
fn create_app() -> Value {
    let mut mounts = runtime_request_mounts();
    mounts.push(json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}));
    for (index, destination) in [
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/dev/shm",
    ]
    .iter()
    .enumerate()
    {
        mounts.push(json!({"destination": destination, "type": "bind", "source": shared(index), "options": ["rbind", "rprivate", "rw"]}));
    }
    mounts.push(json!({"destination": "/data", "type": "bind", "source": shared(4), "options": ["rbind", "rprivate", "ro"]}));
    json!({
        "container_id": CID,
        "exec_id": "",
        "storages": [],
        "rootfs": {"driver": "bind", "source": format!("/run/cloak/shared/{CID}/rootfs"), "fstype": "", "options": [], "mount_point": ""},
        "oci": {
            "ociVersion": "1.1.0",
            "process": {
                "user": {"uid": 1000, "gid": 1000, "additionalGids": [2000, 1000]},
                "args": ["sh", "-c", "exec httpd -f"],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=web", "MODE=prod", "DB_SERVICE_HOST=10.0.0.9"],
                "cwd": "/srv",
                "capabilities": caps_object(),
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "mounts": mounts,
            "annotations": annotations("container", Some("app")),
            "linux": {"sysctl": {"net.core.somaxconn": "1024"}, "namespaces": [{"type": "pid"}, {"type": "mount"}]}
        }
    })
}

/// The sandbox container (containerd 2.1's shape).
fn create_sandbox() -> Value {
    let mut mounts = runtime_request_mounts();
    mounts.push(json!({"destination": "/dev/shm", "type": "bind", "source": shared(5), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
    mounts.push(json!({"destination": "/etc/resolv.conf", "type": "bind", "source": shared(6), "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]}));
    let mut annotations = annotations("sandbox", None);
    annotations["io.kubernetes.cri.podsandbox.image-name"] = json!("docker.io/cloak/pause:test");
    json!({
        "container_id": CID,
        "exec_id": "",
        "storages": [],
        "rootfs": {"driver": "bind", "source": format!("/run/cloak/shared/{CID}/rootfs")},
        "oci": {
            "process": {
                "user": {"uid": 65535, "gid": 65535},
                "args": ["/pause"],
                "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "capabilities": caps_object(),
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": true},
            "hostname": "web",
            "mounts": mounts,
            "annotations": annotations,
            "linux": {"sysctl": {"net.ipv4.ip_unprivileged_port_start": "0", "net.ipv4.ping_group_range": "0 2147483647"}}
        }
    })
}

fn exec_in_app(args: &[&str]) -> Value {
    json!({
        "container_id": CID,
        "exec_id": "e1",
        "process": {
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [1000, 2000]},
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=web", "MODE=prod"],
            "cwd": "/srv",
            "capabilities": caps_object(),
            "noNewPrivileges": true
        }
    })
}

fn allowed(decision: &Decision) -> bool {
    matches!(decision, Decision::Allow { .. })
}

fn reason(decision: &Decision) -> String {
    match decision {
        Decision::Deny { reason } => reason.clone().unwrap_or_default(),
        Decision::Allow { .. } => String::new(),
    }
}

type Mutation = fn(&mut Value);

/// Each case: a name, the mutation, and the words the denial's reason must carry.
const CREATE_DENIALS: &[(&str, Mutation, &str)] = &[
    (
        "another image",
        |r| {
            r["oci"]["annotations"]["io.kubernetes.cri.image-name"] =
                json!("docker.io/library/alpine:3")
        },
        "image \"docker.io/library/alpine:3\"",
    ),
    (
        "an added argument",
        |r| {
            r["oci"]["process"]["args"]
                .as_array_mut()
                .unwrap()
                .push(json!("-v"))
        },
        "argv",
    ),
    (
        "a changed argument",
        |r| r["oci"]["process"]["args"][2] = json!("exec httpd -f -v"),
        "argv",
    ),
    (
        "an added env variable",
        |r| {
            r["oci"]["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(json!("LD_PRELOAD=/tmp/x.so"))
        },
        "env LD_PRELOAD is not allowed",
    ),
    (
        "a changed env variable",
        |r| r["oci"]["process"]["env"][2] = json!("MODE=debug"),
        "env MODE is not allowed",
    ),
    (
        "a removed env variable",
        |r| {
            r["oci"]["process"]["env"].as_array_mut().unwrap().remove(2);
        },
        "env MODE is missing",
    ),
    (
        "a changed HOSTNAME",
        |r| r["oci"]["process"]["env"][1] = json!("HOSTNAME=evil"),
        "env HOSTNAME is not allowed",
    ),
    (
        "UID 0",
        |r| r["oci"]["process"]["user"]["uid"] = json!(0),
        "uid 0 is not 1000",
    ),
    (
        "another gid",
        |r| r["oci"]["process"]["user"]["gid"] = json!(0),
        "gid 0 is not 1000",
    ),
    (
        "an added supplementary group",
        |r| r["oci"]["process"]["user"]["additionalGids"] = json!([1000, 2000, 0]),
        "supplementary groups",
    ),
    (
        "an added capability",
        |r| {
            r["oci"]["process"]["capabilities"]["bounding"]
                .as_array_mut()
                .unwrap()
                .push(json!("CAP_SYS_ADMIN"))
        },
        "capability CAP_SYS_ADMIN (bounding)",
    ),
    (
        "an ambient capability",
        |r| r["oci"]["process"]["capabilities"]["ambient"] = json!(["CAP_NET_ADMIN"]),
        "capability CAP_NET_ADMIN (ambient)",
    ),
    (
        "privileged",
        |r| {
            r["oci"]["process"]["capabilities"]["effective"]
                .as_array_mut()
                .unwrap()
                .extend([json!("CAP_SYS_ADMIN"), json!("CAP_SYS_MODULE")]);
            let sys = r["oci"]["mounts"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|m| m["destination"] == "/sys")
                .unwrap();
            sys["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
        },
        "capability CAP_SYS_ADMIN (effective)",
    ),
    (
        "privileged /sys",
        |r| {
            let sys = r["oci"]["mounts"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .find(|m| m["destination"] == "/sys")
                .unwrap();
            sys["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
        },
        "mount at /sys (sysfs)",
    ),
    (
        "an extra hostPath mount",
        |r| {
            r["oci"]["mounts"].as_array_mut().unwrap().push(json!({"destination": "/host", "type": "bind", "source": shared(9), "options": ["rbind", "rw"]}))
        },
        "mount at /host (bind)",
    ),
    (
        "a changed mount point",
        |r| r["oci"]["mounts"][10]["destination"] = json!("/etc"),
        "mount at /etc (bind)",
    ),
    (
        "a read-only volume made writable",
        |r| r["oci"]["mounts"][10]["options"] = json!(["rbind", "rprivate", "rw"]),
        "mount at /data (bind)",
    ),
    (
        "a bind from outside the shared directory",
        |r| r["oci"]["mounts"][7]["source"] = json!("/etc/shadow"),
        "mount at /etc/hosts (bind)",
    ),
    (
        "read-only rootfs dropped",
        |r| r["oci"]["root"]["readonly"] = json!(false),
        "root filesystem",
    ),
    (
        "an unlisted sysctl",
        |r| r["oci"]["linux"]["sysctl"]["kernel.core_pattern"] = json!("|/tmp/x"),
        "sysctl kernel.core_pattern",
    ),
    (
        "a changed sysctl",
        |r| r["oci"]["linux"]["sysctl"]["net.core.somaxconn"] = json!("1"),
        "sysctl net.core.somaxconn=1",
    ),
    (
        "no_new_privileges dropped",
        |r| r["oci"]["process"]["noNewPrivileges"] = json!(false),
        "no_new_privileges",
    ),
    (
        "another working directory",
        |r| r["oci"]["process"]["cwd"] = json!("/"),
        "working directory",
    ),
    (
        "an OCI hook",
        |r| r["oci"]["hooks"] = json!({"prestart": [{"path": "/bin/sh"}]}),
        "OCI hooks",
    ),
    (
        "another rootfs",
        |r| r["rootfs"]["source"] = json!("/run/cloak/shared/other/rootfs"),
        "rootfs",
    ),
    (
        "a storage",
        |r| r["storages"] = json!([{"driver": "virtio-blk", "source": "vdb"}]),
        "storages are not allowed",
    ),
    (
        "another pod name",
        |r| r["oci"]["annotations"]["io.kubernetes.cri.sandbox-name"] = json!("other"),
        "pod name",
    ),
    (
        "another namespace",
        |r| r["oci"]["annotations"]["io.kubernetes.cri.sandbox-namespace"] = json!("kube-system"),
        "pod namespace",
    ),
    (
        "an unknown container",
        |r| r["oci"]["annotations"]["io.kubernetes.cri.container-name"] = json!("sidecar"),
        "container \"sidecar\" is not in this policy",
    ),
    (
        "no CRI annotations",
        |r| r["oci"]["annotations"] = json!({}),
        "names no container",
    ),
];

#[test]
fn the_pinned_containers_are_admitted_as_the_cri_plugin_sends_them() {
    let policy = policy();
    for (name, request, entry) in [("app", create_app(), 1), ("sandbox", create_sandbox(), 0)] {
        let decision = policy.decide("CreateContainerRequest", request);
        assert!(allowed(&decision), "{name}: {}", reason(&decision));
        let Decision::Allow { record } = decision else {
            unreachable!()
        };
        assert_eq!(record.unwrap()["entry"], json!(entry), "{name}");
    }
    // A volume's submount bind (the shim adds them) stays below the volume.
    let mut request = create_app();
    request["oci"]["mounts"].as_array_mut().unwrap().push(json!({"destination": "/data/cache", "type": "bind", "source": shared(5), "options": ["rbind", "ro"]}));
    let decision = policy.decide("CreateContainerRequest", request);
    assert!(allowed(&decision), "{}", reason(&decision));
    // Fewer capabilities than pinned, and a service variable of another name.
    let mut request = create_app();
    request["oci"]["process"]["capabilities"]["effective"] = json!([]);
    request["oci"]["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("CACHE_SERVICE_PORT_HTTP=80"));
    let decision = policy.decide("CreateContainerRequest", request);
    assert!(allowed(&decision), "{}", reason(&decision));
}

#[test]
fn each_mutation_of_a_container_is_refused_with_its_reason() {
    let policy = policy();
    assert_eq!(
        create_app()["oci"]["mounts"][10]["destination"],
        "/data",
        "the table's indices"
    );
    assert_eq!(
        create_app()["oci"]["mounts"][7]["destination"],
        "/etc/hosts",
        "the table's indices"
    );
    for (name, mutate, expected) in CREATE_DENIALS {
        let mut request = create_app();
        mutate(&mut request);
        let decision = policy.decide("CreateContainerRequest", request);
        assert!(!allowed(&decision), "{name}: allowed");
        let reason = reason(&decision);
        assert!(
            reason.contains(expected),
            "{name}: {reason:?} lacks {expected:?}"
        );
    }
}

#[test]
fn a_sandbox_with_another_image_or_program_is_refused() {
    let policy = policy();
    let mut request = create_sandbox();
    request["oci"]["annotations"]["io.kubernetes.cri.podsandbox.image-name"] =
        json!("docker.io/library/busybox:1.36");
    assert!(reason(&policy.decide("CreateContainerRequest", request)).contains("sandbox image"));
    let mut request = create_sandbox();
    request["oci"]["process"]["args"] = json!(["/bin/sh"]);
    assert!(reason(&policy.decide("CreateContainerRequest", request)).contains("argv"));
}

fn admitted_policy() -> AgentPolicy {
    let policy = policy();
    let Decision::Allow { record } = policy.decide("CreateContainerRequest", create_app()) else {
        panic!("admitted");
    };
    policy.admit(CID, record);
    policy
}

#[test]
fn only_listed_execs_run_and_only_as_the_container_runs() {
    let policy = admitted_policy();
    assert!(allowed(&policy.decide(
        "ExecProcessRequest",
        exec_in_app(&["cat", "/srv/health"])
    )));
    let extra = policy.decide(
        "ExecProcessRequest",
        exec_in_app(&["cat", "/srv/health", "/etc/shadow"]),
    );
    assert!(
        reason(&extra).contains("is not an exec this policy lists"),
        "{}",
        reason(&extra)
    );
    let unlisted = policy.decide("ExecProcessRequest", exec_in_app(&["sh"]));
    assert!(!allowed(&unlisted));
    let mut as_root = exec_in_app(&["cat", "/srv/health"]);
    as_root["process"]["user"]["uid"] = json!(0);
    assert!(reason(&policy.decide("ExecProcessRequest", as_root)).contains("uid 0"));
    let mut other = exec_in_app(&["cat", "/srv/health"]);
    other["container_id"] = json!("not-admitted");
    assert!(reason(&policy.decide("ExecProcessRequest", other)).contains("not admitted"));
}

#[test]
fn output_leaves_only_where_logs_are_allowed() {
    let policy = admitted_policy();
    let stream = |cid: &str, exec: &str| json!({"container_id": cid, "exec_id": exec});
    assert!(allowed(
        &policy.decide("ReadStdoutRequest", stream(CID, ""))
    ));
    assert!(allowed(
        &policy.decide("ReadStderrRequest", stream(CID, "e1"))
    ));
    assert!(allowed(
        &policy.decide("WriteStdinRequest", stream(CID, ""))
    ));
    assert!(!allowed(
        &policy.decide("ReadStdoutRequest", stream("unknown", ""))
    ));
    // The sandbox entry pins logs off.
    let Decision::Allow { record } = policy.decide("CreateContainerRequest", create_sandbox())
    else {
        panic!("sandbox admitted");
    };
    policy.admit("sb", record);
    assert!(!allowed(
        &policy.decide("ReadStdoutRequest", stream("sb", ""))
    ));
    assert!(!allowed(
        &policy.decide("ReadStderrRequest", stream("sb", ""))
    ));
    assert!(allowed(
        &policy.decide("StartContainerRequest", json!({"container_id": "sb"}))
    ));
    assert!(!allowed(&policy.decide(
        "StartContainerRequest",
        json!({"container_id": "nope"})
    )));
}

#[test]
fn copy_file_stays_below_its_directory() {
    use base64::Engine as _;
    let policy = policy();
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let file = |path: &str, mode: u32, data: &str| json!({"path": path, "file_mode": mode, "file_size": data.len(), "dir_mode": 0o755, "uid": 0, "gid": 0, "offset": 0, "data": b64(data)});
    let cases = [
        (
            file("/run/cloak/copied/hosts", 0o100644, "127.0.0.1 localhost"),
            true,
        ),
        (file("/etc/hosts", 0o100644, "x"), false),
        (
            file("/run/cloak/copied/../../etc/passwd", 0o100644, "x"),
            false,
        ),
        (file("/run/cloak/copied/link", 0o120777, "hosts"), true),
        (
            file("/run/cloak/copied/link", 0o120777, "/etc/shadow"),
            false,
        ),
        (
            file("/run/cloak/copied/link", 0o120777, "../../../etc/shadow"),
            false,
        ),
    ];
    for (request, expected) in cases {
        let decision = policy.decide("CopyFileRequest", request.clone());
        assert_eq!(allowed(&decision), expected, "{request}");
    }
}

#[test]
fn network_requests_only_in_the_shapes_the_shim_sends() {
    let policy = policy();
    let interface = |name: &str, mac: &str, address: &str| json!({"interface": {"name": name, "hw_addr": mac, "mtu": 1500, "addresses": [{"address": address, "prefix_len": 24}]}});
    assert!(allowed(&policy.decide(
        "UpdateInterfaceRequest",
        interface("eth0", "02:42:ac:11:00:02", "10.88.0.5")
    )));
    assert!(!allowed(&policy.decide(
        "UpdateInterfaceRequest",
        interface("lo", "02:42:ac:11:00:02", "10.88.0.5")
    )));
    assert!(!allowed(&policy.decide(
        "UpdateInterfaceRequest",
        interface("eth0", "00:00:00:00:00:00", "10.88.0.5")
    )));
    assert!(!allowed(&policy.decide(
        "UpdateInterfaceRequest",
        interface("eth0", "02:42:ac:11:00:02", "127.0.0.2")
    )));
    let routes = |route: Value| json!({"routes": [route]});
    let route = |destination: &str, gateway: &str, device: &str| json!({"destination": destination, "gateway": gateway, "device": device, "source": "", "scope": 0});
    assert!(allowed(&policy.decide(
        "UpdateRoutesRequest",
        routes(route("default", "10.88.0.1", "eth0"))
    )));
    assert!(allowed(&policy.decide(
        "UpdateRoutesRequest",
        routes(route("10.88.0.0/16", "", "eth0"))
    )));
    let denied = [
        route("127.0.0.0/8", "", "eth0"),
        route("127.1.2.0/24", "", "eth0"),
        route("0.0.0.0/0", "", "eth0"),
        route("default", "127.0.0.1", "eth0"),
        route("10.0.0.0/8", "", "lo"),
        route("::1/128", "", "eth0"),
    ];
    for bad in denied {
        let decision = policy.decide("UpdateRoutesRequest", routes(bad.clone()));
        assert!(!allowed(&decision), "{bad}");
        assert!(reason(&decision).contains("loopback"), "{bad}");
    }
}

#[test]
fn the_sandbox_reports_and_unknown_requests() {
    let policy = policy();
    let share = |mount_point: &str| json!({"driver": "virtio-fs", "source": "cloak-shared", "fstype": "", "options": [], "mount_point": mount_point, "overlay_in_memory": false, "verity_root_hash": ""});
    let sandbox = |hostname: &str, storages: Value| json!({"sandbox_id": SANDBOX, "hostname": hostname, "dns": [], "storages": storages, "sandbox_pidns": false});
    let shared = json!([share("/run/cloak/shared")]);
    assert!(allowed(
        &policy.decide("CreateSandboxRequest", sandbox("web", shared.clone()))
    ));
    assert!(allowed(
        &policy.decide("CreateSandboxRequest", sandbox("web", json!([])))
    ));
    assert!(!allowed(
        &policy.decide("CreateSandboxRequest", sandbox("other", shared))
    ));
    assert!(!allowed(&policy.decide(
        "CreateSandboxRequest",
        sandbox("web", json!([share("/etc")]))
    )));
    let report = policy.decide("GetAttestationReportRequest", json!({"report_data": ""}));
    assert!(reason(&report).contains("report"), "{report:?}");
    assert!(!allowed(&policy.decide("SomeFutureRequest", json!({}))));
}

#[test]
fn port_forward_reaches_only_the_ports_the_policy_names() {
    let policy = policy();
    let forward = |port: u16| policy.decide("PortForwardRequest", json!({ "port": port }));
    assert!(allowed(&forward(8080)));
    for port in [80, 8081, 22] {
        let decision = forward(port);
        assert!(!allowed(&decision), "{port}");
        assert!(reason(&decision).contains("port-forward"), "{decision:?}");
    }
    // A policy whose data predates the field names no port.
    let mut data = policy_data();
    data.as_object_mut().unwrap().remove("port_forward");
    let older = AgentPolicy::load(&with_policy_data(CONFIDENTIAL_RULES, &data)).unwrap();
    assert!(!allowed(
        &older.decide("PortForwardRequest", json!({"port": 8080}))
    ));
}

const H0: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H1: &str = "2222222222222222222222222222222222222222222222222222222222222222";

/// The app entry pinning two layers, and its request with the layered rootfs.
fn layered() -> (AgentPolicy, Value) {
    let mut data = policy_data();
    data["containers"][1]["layers"] = json!([H0, H1]);
    let policy = AgentPolicy::load(&with_policy_data(CONFIDENTIAL_RULES, &data)).unwrap();
    let mut request = create_app();
    request["rootfs"] = json!({"driver": "layers", "source": ""});
    request["storages"] = json!([
        {"driver": "erofs-verity", "source": format!("/run/cloak/shared/{CID}/layers/0.img"), "verity_root_hash": H0},
        {"driver": "erofs-verity", "source": format!("/run/cloak/shared/{CID}/layers/1.img"), "verity_root_hash": H1},
    ]);
    (policy, request)
}

#[test]
fn a_container_that_pins_layers_runs_from_exactly_them() {
    let (policy, request) = layered();
    let Decision::Allow { record } = policy.decide("CreateContainerRequest", request.clone())
    else {
        panic!("the pinned layers are admitted");
    };
    assert_eq!(
        record.unwrap()["layers"],
        json!([H0, H1]),
        "the agent opens them with these"
    );
    let mutations: [(&str, Mutation); 5] = [
        ("the shared directory instead", |r| {
            r["rootfs"] =
                json!({"driver": "bind", "source": format!("/run/cloak/shared/{CID}/rootfs")});
            r["storages"] = json!([]);
        }),
        ("another root hash", |r| {
            r["storages"][1]["verity_root_hash"] = json!(H0)
        }),
        ("the layers swapped", |r| {
            let layers = r["storages"].as_array_mut().unwrap();
            layers.swap(0, 1);
        }),
        ("a layer left out", |r| {
            r["storages"].as_array_mut().unwrap().pop();
        }),
        ("an image outside the container's entry", |r| {
            r["storages"][0]["source"] = json!("/run/cloak/shared/other/layers/0.img")
        }),
    ];
    for (name, mutate) in mutations {
        let mut request = request.clone();
        mutate(&mut request);
        let decision = policy.decide("CreateContainerRequest", request);
        assert!(
            reason(&decision).contains("not built from the pinned layers"),
            "{name}: {decision:?}"
        );
    }
}
