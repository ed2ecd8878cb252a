//! `cloak install --root DIR` into a temporary root with an existing containerd config, then
//! again (nothing changes), then `cloak uninstall` (the original comes back).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cloak_tests::skip;

const ORIGINAL: &str = r#"# containerd config of this node
version = 2
oom_score = -999

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#;

/// Every regular file below `root` with its contents and modification time.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, std::time::SystemTime)> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let metadata = entry.metadata().unwrap();
            if metadata.is_dir() {
                pending.push(path);
            } else {
                let contents = std::fs::read(&path).unwrap();
                files.insert(path, (contents, metadata.modified().unwrap()));
            }
        }
    }
    files
}

#[test]
fn install_merges_idempotently_and_uninstall_restores_the_original() {
    let test = "install_merges_idempotently_and_uninstall_restores_the_original";
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let binaries = cloak.parent().unwrap().to_owned();
    if let Some(missing) = ["containerd-shim-cloak-v2", "cloak-vmm"]
        .into_iter()
        .find(|binary| !binaries.join(binary).is_file())
    {
        skip(
            test,
            &format!("{missing} is not built (cargo build --release)"),
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("guest");
    std::fs::create_dir(&image).unwrap();
    for file in [
        "vmlinuz",
        "initrd.img",
        "manifest.json",
        "reference-values.json",
        "reference-values.trustee.json",
        "OVMF.amdsev.fd",
    ] {
        std::fs::write(image.join(file), format!("{file} bytes")).unwrap();
    }
    let root = work.path().join("root");
    let config = root.join("etc/containerd/config.toml");
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(&config, ORIGINAL).unwrap();

    let cloak_cmd = |args: &[&str]| {
        let output = Command::new(&cloak)
            .args(args)
            .arg("--root")
            .arg(&root)
            .args(if args[0] == "install" {
                vec![
                    "--guest-image".into(),
                    image.display().to_string(),
                    "--binaries".into(),
                    binaries.display().to_string(),
                ]
            } else {
                vec![]
            })
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };

    // `cloak check` looks for the runtimes in the node's containerd config.
    let containerd_check = || {
        let output = Command::new(&cloak)
            .args(["check", "--containerd-config"])
            .arg(&config)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .find(|line| line.contains("containerd config:"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        containerd_check().starts_with("no "),
        "{}",
        containerd_check()
    );

    let said = cloak_cmd(&["install"]);
    assert!(said.contains("restart containerd"), "{said}");
    let registered = containerd_check();
    assert!(
        registered.starts_with("yes ") && registered.ends_with("runtimes cloak, cloak-snp"),
        "{registered}"
    );
    let merged = std::fs::read_to_string(&config).unwrap();
    let parsed: toml::Value = toml::from_str(&merged).unwrap();
    let cri = &parsed["plugins"]["io.containerd.grpc.v1.cri"];
    assert_eq!(
        cri["sandbox_image"].as_str(),
        Some("registry.k8s.io/pause:3.9")
    );
    assert_eq!(
        parsed["grpc"]["address"].as_str(),
        Some("/run/containerd/containerd.sock")
    );
    assert_eq!(parsed["oom_score"].as_integer(), Some(-999));
    let runtimes = &cri["containerd"]["runtimes"];
    assert_eq!(
        runtimes["runc"]["runtime_type"].as_str(),
        Some("io.containerd.runc.v2")
    );
    assert_eq!(
        runtimes["cloak"]["runtime_type"].as_str(),
        Some("io.containerd.cloak.v2")
    );
    assert_eq!(
        runtimes["cloak"]["options"]["ConfigPath"].as_str(),
        Some("/etc/cloak/configuration.toml")
    );
    assert!(
        merged.starts_with("# containerd config of this node\n"),
        "comments are kept"
    );
    for path in [
        "usr/local/bin/cloak",
        "usr/local/bin/containerd-shim-cloak-v2",
        "usr/local/bin/cloak-vmm",
        "usr/share/cloak/guest/initrd.img",
        "etc/cloak/configuration.toml",
        "etc/cloak/configuration-snp.toml",
        "etc/containerd/config.toml.cloak-backup",
    ] {
        assert!(root.join(path).is_file(), "{path} installed");
    }
    let snp: toml::Value = toml::from_str(
        &std::fs::read_to_string(root.join("etc/cloak/configuration-snp.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(snp["hypervisor"]["tee"].as_str(), Some("snp"));
    // The image's SNP firmware lands where the SNP configuration's `firmware` points.
    let firmware = snp["hypervisor"]["firmware"].as_str().unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join(firmware.trim_start_matches('/'))).unwrap(),
        "OVMF.amdsev.fd bytes"
    );

    let before = snapshot(&root);
    let said = cloak_cmd(&["install"]);
    assert!(said.contains("nothing changed"), "{said}");
    assert_eq!(snapshot(&root), before, "a second install writes nothing");

    cloak_cmd(&["uninstall"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), ORIGINAL);
    let left: Vec<PathBuf> = snapshot(&root).into_keys().collect();
    assert_eq!(
        left,
        vec![config],
        "only the original containerd config remains"
    );
}

/// `cloak.io/...` label keys mentioned in `text`.
fn cloak_labels(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || "./-".contains(c)))
        .filter(|word| word.starts_with("cloak.io/"))
        .map(|word| word.trim_end_matches('-').to_owned())
        .collect()
}

#[test]
fn the_node_installer_sets_the_labels_the_runtimeclasses_select() {
    let root = cloak_tests::repo_root();
    let runtimeclass =
        std::fs::read_to_string(root.join("configs/kubernetes/runtimeclass.yaml")).unwrap();
    let script = std::fs::read_to_string(root.join("scripts/node-installer.sh")).unwrap();
    let daemonset =
        std::fs::read_to_string(root.join("configs/kubernetes/node-installer.yaml")).unwrap();
    let selected = cloak_labels(&runtimeclass[runtimeclass.find("apiVersion").unwrap()..]);
    assert_eq!(
        selected,
        ["cloak.io/runtime", "cloak.io/sev-snp"]
            .into_iter()
            .map(String::from)
            .collect()
    );
    let set_by_installer: std::collections::BTreeSet<String> = script
        .lines()
        .filter(|line| line.contains("_LABEL="))
        .flat_map(cloak_labels)
        .collect();
    assert_eq!(
        set_by_installer, selected,
        "the installer labels what is selected"
    );
    // The DaemonSet runs that script on the node's root with the node's name.
    assert!(daemonset.contains("node-installer.sh"));
    assert!(daemonset.contains("fieldPath: spec.nodeName"));
    assert!(daemonset.contains("mountPath: /host"));
    // The script installs with the flags `cloak install` takes.
    assert!(script.contains("cloak install --root \"$HOST_ROOT\" --guest-image"));
}
