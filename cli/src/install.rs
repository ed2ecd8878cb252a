//! `cloak install` / `cloak uninstall`: put cloak on a node (or into an image root being
//! baked): binaries, the guest image, the runtime configuration, and the cloak runtimes merged
//! into containerd's config. Every path is below `--root`. Install is idempotent (a second run
//! writes nothing); the containerd config is backed up before its first change, and
//! uninstall takes out exactly what install put in.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;
use serde::{Deserialize, Serialize};
use toml_edit::{value, Array, DocumentMut, Item, Table};

const SHIPPED_CONFIGURATION: &str = include_str!("../../configs/configuration.toml");
const SHIM: &str = "containerd-shim-cloak-v2";
/// The built-in VMM, run by the shim for hypervisor.kind = "cloak-vmm".
const VMM: &str = "cloak-vmm";
const GUEST_FILES: [&str; 5] = [
    "vmlinuz",
    "initrd.img",
    "manifest.json",
    "reference-values.json",
    "reference-values.trustee.json",
];
/// containerd runtime handler → cloak configuration it runs with.
const RUNTIMES: [(&str, &str); 2] = [
    ("cloak", "/etc/cloak/configuration.toml"),
    ("cloak-snp", "/etc/cloak/configuration-snp.toml"),
];
const STATE_FILE: &str = "etc/cloak/install-state.json";
const CONTAINERD_CONFIG: &str = "etc/containerd/config.toml";
const BACKUP_SUFFIX: &str = ".cloak-backup";

#[derive(Args)]
pub(crate) struct InstallArgs {
    /// Root of the file system to install into.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// The guest image to install (`cloak image build --out`).
    #[arg(long, default_value = "build/guest")]
    guest_image: PathBuf,
    /// Directory with `cloak` and `containerd-shim-cloak-v2` (default: this program's).
    #[arg(long)]
    binaries: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct UninstallArgs {
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

/// What install created, so uninstall removes exactly that.
#[derive(Debug, Default, Serialize, Deserialize)]
struct InstallState {
    created: Vec<PathBuf>,
    containerd_config_created: bool,
}

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Writes `bytes` to `path` unless it already holds them; returns whether it wrote.
fn write_if_changed(path: &Path, bytes: &[u8]) -> anyhow::Result<bool> {
    if std::fs::read(path).is_ok_and(|current| current == bytes) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(true)
}

fn snp_configuration() -> String {
    SHIPPED_CONFIGURATION.replace("\ntee = \"none\"", "\ntee = \"snp\"")
}

/// The CRI plugin table runtimes live in, by containerd config version.
fn cri_plugin(document: &DocumentMut) -> anyhow::Result<&'static str> {
    match document.get("version").and_then(Item::as_integer) {
        Some(2) => Ok("io.containerd.grpc.v1.cri"),
        Some(3) => Ok("io.containerd.cri.v1.runtime"),
        Some(other) => bail!("containerd config version {other}: cloak supports versions 2 and 3"),
        None => bail!(
            "the containerd config has no `version`: a version 1 config; migrate it first \
             (`containerd config migrate`)"
        ),
    }
}

/// The runtimes of a containerd config whose type is cloak's shim.
pub(crate) fn cloak_runtimes(config_text: &str) -> anyhow::Result<Vec<String>> {
    let document: DocumentMut = config_text.parse().context("not TOML")?;
    let plugin = cri_plugin(&document)?;
    let runtimes = document
        .get("plugins")
        .and_then(|p| p.get(plugin))
        .and_then(|p| p.get("containerd"))
        .and_then(|c| c.get("runtimes"))
        .and_then(Item::as_table_like);
    Ok(runtimes
        .map(|table| {
            table
                .iter()
                .filter(|(_, runtime)| {
                    runtime.get("runtime_type").and_then(Item::as_str)
                        == Some("io.containerd.cloak.v2")
                })
                .map(|(name, _)| name.to_owned())
                .collect()
        })
        .unwrap_or_default())
}

fn runtime_table(config_path: &str) -> Table {
    let mut options = Table::new();
    options.insert("ConfigPath", value(config_path));
    let mut runtime = Table::new();
    runtime.insert("runtime_type", value("io.containerd.cloak.v2"));
    let mut annotations = Array::new();
    annotations.push("io.cloak.*");
    // Init-data written for Kata's confidential containers works unchanged.
    annotations.push(cloak_init_data::KATA_ANNOTATION);
    runtime.insert("pod_annotations", value(annotations));
    runtime.insert("options", Item::Table(options));
    runtime
}

/// The `runtimes` table of the CRI plugin, created (implicitly) if needed.
fn runtimes_mut<'a>(document: &'a mut DocumentMut, plugin: &str) -> anyhow::Result<&'a mut Table> {
    let mut table = document.as_table_mut();
    for key in ["plugins", plugin, "containerd", "runtimes"] {
        let entry = table.entry(key).or_insert_with(|| {
            let mut implicit = Table::new();
            implicit.set_implicit(true);
            Item::Table(implicit)
        });
        table = entry
            .as_table_mut()
            .with_context(|| format!("`{key}` in the containerd config is not a table"))?;
    }
    Ok(table)
}

/// The containerd config with cloak's runtimes in it.
fn merged_containerd_config(current: &str) -> anyhow::Result<String> {
    let mut document: DocumentMut = current.parse().context("parsing the containerd config")?;
    let plugin = cri_plugin(&document)?;
    let runtimes = runtimes_mut(&mut document, plugin)?;
    for (name, config_path) in RUNTIMES {
        runtimes.insert(name, Item::Table(runtime_table(config_path)));
    }
    Ok(document.to_string())
}

/// The containerd config without cloak's runtimes.
fn unmerged_containerd_config(current: &str) -> anyhow::Result<String> {
    let mut document: DocumentMut = current.parse().context("parsing the containerd config")?;
    let plugin = cri_plugin(&document)?;
    let runtimes = runtimes_mut(&mut document, plugin)?;
    for (name, _) in RUNTIMES {
        runtimes.remove(name);
    }
    Ok(document.to_string())
}

fn load_state(root: &Path) -> InstallState {
    std::fs::read(under(root, STATE_FILE))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

pub(crate) fn install(args: InstallArgs) -> anyhow::Result<()> {
    let root = &args.root;
    let binaries = match args.binaries {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .to_owned(),
    };
    let mut state = load_state(root);
    let mut changed = Vec::new();
    let mut put =
        |target: PathBuf, bytes: Vec<u8>, state: &mut InstallState| -> anyhow::Result<()> {
            let existed = target.exists();
            if write_if_changed(&target, &bytes)? {
                changed.push(target.display().to_string());
            }
            if !existed && !state.created.contains(&target) {
                state.created.push(target);
            }
            Ok(())
        };
    for binary in ["cloak", SHIM, VMM] {
        let source = binaries.join(binary);
        let bytes =
            std::fs::read(&source).with_context(|| format!("reading {}", source.display()))?;
        let target = under(root, &format!("usr/local/bin/{binary}"));
        put(target.clone(), bytes, &mut state)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
    }
    for file in GUEST_FILES {
        let source = args.guest_image.join(file);
        let bytes = std::fs::read(&source).with_context(|| {
            format!(
                "reading {} (build the guest image first: make image)",
                source.display()
            )
        })?;
        put(
            under(root, &format!("usr/share/cloak/guest/{file}")),
            bytes,
            &mut state,
        )?;
    }
    // The SNP firmware ships in the image when it was built with one; the shipped
    // configuration's `firmware` points at it.
    let firmware = args.guest_image.join(crate::image::FIRMWARE_FILE);
    if firmware.is_file() {
        let bytes =
            std::fs::read(&firmware).with_context(|| format!("reading {}", firmware.display()))?;
        put(
            under(
                root,
                &format!("usr/share/cloak/guest/{}", crate::image::FIRMWARE_FILE),
            ),
            bytes,
            &mut state,
        )?;
    }
    // An operator's own configuration is kept; only a missing one is written.
    for (path, text) in [
        (
            "etc/cloak/configuration.toml",
            SHIPPED_CONFIGURATION.to_owned(),
        ),
        ("etc/cloak/configuration-snp.toml", snp_configuration()),
    ] {
        let target = under(root, path);
        if !target.exists() {
            put(target, text.into_bytes(), &mut state)?;
        }
    }

    let containerd_config = under(root, CONTAINERD_CONFIG);
    let current = match std::fs::read_to_string(&containerd_config) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            state.containerd_config_created = true;
            "version = 2\n".to_owned()
        }
        Err(err) => {
            return Err(err).with_context(|| format!("reading {}", containerd_config.display()))
        }
    };
    let merged = merged_containerd_config(&current)?;
    if merged != current {
        let backup = PathBuf::from(format!("{}{BACKUP_SUFFIX}", containerd_config.display()));
        if containerd_config.exists() && !backup.exists() {
            std::fs::copy(&containerd_config, &backup)
                .with_context(|| format!("backing up to {}", backup.display()))?;
        }
        write_if_changed(&containerd_config, merged.as_bytes())?;
        changed.push(containerd_config.display().to_string());
    }
    let state_path = under(root, STATE_FILE);
    write_if_changed(&state_path, &serde_json::to_vec_pretty(&state)?)?;

    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if changed.is_empty() {
        writeln!(
            out,
            "cloak is installed in {}: nothing changed",
            root.display()
        )?;
    } else {
        for path in &changed {
            writeln!(out, "wrote {path}")?;
        }
        writeln!(
            out,
            "restart containerd to load the cloak runtimes: systemctl restart containerd"
        )?;
    }
    Ok(())
}

pub(crate) fn uninstall(args: UninstallArgs) -> anyhow::Result<()> {
    let root = &args.root;
    let state = load_state(root);
    let containerd_config = under(root, CONTAINERD_CONFIG);
    let backup = PathBuf::from(format!("{}{BACKUP_SUFFIX}", containerd_config.display()));
    if state.containerd_config_created {
        let _ = std::fs::remove_file(&containerd_config);
    } else if let Ok(current) = std::fs::read_to_string(&containerd_config) {
        let without = unmerged_containerd_config(&current)?;
        let original = std::fs::read_to_string(&backup).ok();
        // The original bytes when nothing else changed since install, else the current
        // config minus cloak's runtimes.
        let restored = match original {
            Some(original)
                if unmerged_containerd_config(&merged_containerd_config(&original)?)?
                    == without =>
            {
                original
            }
            _ => without,
        };
        write_if_changed(&containerd_config, restored.as_bytes())?;
    }
    let _ = std::fs::remove_file(&backup);
    for path in state.created.iter().rev() {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_file(under(root, STATE_FILE));
    for dir in ["usr/share/cloak/guest", "usr/share/cloak", "etc/cloak"] {
        let _ = std::fs::remove_dir(under(root, dir));
    }
    use std::io::Write;
    writeln!(
        std::io::stdout(),
        "cloak removed from {}; restart containerd to drop its runtimes",
        root.display()
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXISTING: &str = r#"# an operator's config
version = 2
root = "/var/lib/containerd"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.9"  # keep me

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
"#;

    #[test]
    fn merging_keeps_everything_else_and_is_idempotent() {
        let merged = merged_containerd_config(EXISTING).expect("merge");
        assert!(merged.contains("# an operator's config"));
        assert!(merged.contains("sandbox_image = \"registry.k8s.io/pause:3.9\"  # keep me"));
        let parsed: toml::Value = toml::from_str(&merged).expect("valid TOML");
        let runtimes = &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
        assert_eq!(
            runtimes["runc"]["runtime_type"].as_str(),
            Some("io.containerd.runc.v2")
        );
        assert_eq!(
            runtimes["cloak"]["runtime_type"].as_str(),
            Some("io.containerd.cloak.v2")
        );
        assert_eq!(
            runtimes["cloak-snp"]["options"]["ConfigPath"].as_str(),
            Some("/etc/cloak/configuration-snp.toml")
        );
        assert_eq!(merged_containerd_config(&merged).expect("again"), merged);
        assert_eq!(
            unmerged_containerd_config(&merged).expect("unmerge"),
            EXISTING
        );
    }

    #[test]
    fn version_3_configs_use_the_cri_runtime_plugin_and_version_1_is_refused() {
        let merged = merged_containerd_config("version = 3\n").expect("merge");
        let parsed: toml::Value = toml::from_str(&merged).expect("valid TOML");
        assert!(
            parsed["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
                .get("cloak")
                .is_some()
        );
        let err = merged_containerd_config("[plugins.cri]\n").expect_err("version 1");
        assert!(err.to_string().contains("version 1"), "{err}");
    }

    #[test]
    fn the_snp_configuration_differs_only_in_the_tee() {
        let snp = snp_configuration();
        assert!(snp.contains("\ntee = \"snp\""));
        assert_eq!(
            snp.replace("tee = \"snp\"", "tee = \"none\""),
            SHIPPED_CONFIGURATION
        );
    }
}
