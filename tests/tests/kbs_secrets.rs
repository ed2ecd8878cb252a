//! Secrets released to attested pods, end to end: a `cloak kbs serve` broker started here
//! (`--allow-simulated`, reachable from the pod network on the CNI bridge), a CRI pod in the
//! simulated TEE whose measured init-data names the broker, a container with a sealed env var,
//! a sealed file in a Secret-shaped volume and an init-data resource. The container sees the
//! plaintexts (checked by their SHA-256, so not even the check carries them through the host);
//! the plaintexts appear in no host file (containerd's root, state and log, the pod's run
//! directory) and nowhere in the shim's memory. Then the refusals a VM is needed for: a pod
//! booted with one changed initrd byte, and a pod whose init-data the broker does not serve.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};

use cloak_host::config::TeeKind;
use cloak_tests::containerd::{image, PrivateContainerd};
use cloak_tests::cri::{container_config, cri_test_env, CriClient, PodSpec, RUNTIME_HANDLER};
use cloak_tests::kbs::{free_port, init_data_for, sealed, start_broker, BrokerProcess};
use cloak_tests::vm_slot;
use k8s_cri::v1::{KeyValue, Mount};
use sha2::{Digest, Sha256};

fn random_secret(label: &str) -> String {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    format!("{label}-{}", hex::encode(bytes))
}

struct Fixture {
    _slot: std::sync::MutexGuard<'static, ()>,
    containerd: PrivateContainerd,
    cloak: PathBuf,
    dir: tempfile::TempDir,
    reference_values: PathBuf,
    /// (resource tag, plaintext)
    secrets: Vec<(&'static str, String)>,
}

fn fixture(test: &str, initrd: Option<PathBuf>) -> Option<Fixture> {
    let (env, shim) = cri_test_env(test)?;
    let cloak = cloak_tests::cloak_binary(test)?;
    let slot = vm_slot();
    let reference_values = env.guest_dir.join("reference-values.json");
    let containerd = PrivateContainerd::start_with_cri_configured(&env, &shim, &move |config| {
        config.hypervisor.tee = TeeKind::Sim;
        if let Some(initrd) = &initrd {
            config.guest.initrd = Some(initrd.clone());
        }
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secrets = vec![
        ("env", random_secret("env")),
        ("file", random_secret("file")),
        ("config", random_secret("config")),
    ];
    let store = dir.path().join("resources/default/secret");
    std::fs::create_dir_all(&store).unwrap();
    for (tag, value) in &secrets {
        std::fs::write(store.join(tag), value).unwrap();
    }
    Some(Fixture {
        _slot: slot,
        containerd,
        cloak,
        dir,
        reference_values,
        secrets,
    })
}

impl Fixture {
    /// A broker serving the pod with the init-data `init_data_for(port, note)`: it and the
    /// document.
    fn serve(&self, note: &str) -> (BrokerProcess, String) {
        let port = free_port().unwrap();
        let init_data = init_data_for(port, note);
        let init_data_file = self.dir.path().join("init-data.toml");
        std::fs::write(&init_data_file, &init_data).unwrap();
        let broker = start_broker(
            &self.cloak,
            &self.dir.path().join("resources"),
            &self.reference_values,
            &init_data_file,
            port,
        )
        .unwrap();
        (broker, init_data)
    }
}

/// The broker port an init-data document names.
fn served_port(init_data: &str) -> u16 {
    let url = init_data.split("url = \"http://").nth(1).unwrap();
    let end = url.find('"').unwrap();
    url[..end].rsplit(':').next().unwrap().parse().unwrap()
}

/// A kubelet-shaped Secret volume: `<key> -> ..data/<key>`, holding `content`.
fn secret_volume(dir: &Path, key: &str, content: &str) -> PathBuf {
    let volume = dir.join("kubelet/pods/uid/volumes/kubernetes.io~secret/creds");
    let data = volume.join("..2026_12_02_data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(key), content).unwrap();
    std::os::unix::fs::symlink("..2026_12_02_data", volume.join("..data")).unwrap();
    std::os::unix::fs::symlink(format!("..data/{key}"), volume.join(key)).unwrap();
    volume
}

/// The container of the tests: the sealed env var and the sealed volume.
fn secret_consumer(fixture: &Fixture) -> k8s_cri::v1::ContainerConfig {
    let mut config = container_config("app", &image(), &["sleep", "3600"]);
    config.envs.push(KeyValue {
        key: "SECRET".into(),
        value: sealed(&fixture.cloak, "kbs:///default/secret/env").unwrap(),
    });
    let volume = secret_volume(
        fixture.dir.path(),
        "token",
        &sealed(&fixture.cloak, "kbs:///default/secret/file").unwrap(),
    );
    config.mounts.push(Mount {
        container_path: "/secret".into(),
        host_path: volume.display().to_string(),
        readonly: true,
        ..Default::default()
    });
    config
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Every file below `dir` (not following links) that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            pending.extend(
                std::fs::read_dir(&path)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else if metadata.is_file() {
            if let Ok(bytes) = std::fs::read(&path) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    found.push(path);
                }
            }
        }
    }
    found
}

/// Whether process `pid`'s readable memory holds `needle` (/proc/<pid>/mem, region by region).
fn memory_contains(pid: u32, needle: &[u8]) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mut mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.contains("[vvar]") || line.contains("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let (start, end) = (
            u64::from_str_radix(start, 16).unwrap(),
            u64::from_str_radix(end, 16).unwrap(),
        );
        let mut buffer = vec![0u8; (end - start) as usize];
        if mem.seek(std::io::SeekFrom::Start(start)).is_err()
            || mem.read_exact(&mut buffer).is_err()
        {
            continue;
        }
        if buffer.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

#[test]
fn sealed_secrets_reach_the_container_and_no_host_side_copy() {
    let test = "sealed_secrets_reach_the_container_and_no_host_side_copy";
    let Some(fixture) = fixture(test, None) else {
        return;
    };
    let (_broker, init_data) = fixture.serve("the attested pod");
    let containerd = &fixture.containerd;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let (pod, pod_id) = run_pod(&mut cri, containerd, "secrets", &init_data).await;
        let app = cri
            .create_container_with(&pod_id, &pod, secret_consumer(&fixture))
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
        // The task (and so the guest's CreateContainer, attestation, three resources) is made
        // at StartContainer.
        let started = std::time::Instant::now();
        cri.start_container(&app)
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
        eprintln!(
            "start with attestation and three resources: {} ms",
            started.elapsed().as_millis()
        );

        let hash_of = |script: &str| script.to_owned();
        let checks = [
            ("env", hash_of("printf %s \"$SECRET\" | sha256sum")),
            ("file", hash_of("cat /secret/token | sha256sum")),
            (
                "config",
                hash_of("cat /run/cloak/secrets/default/secret/config | sha256sum"),
            ),
        ];
        for (tag, script) in checks {
            let out = cri.exec_sync(&app, &["sh", "-c", &script]).await.unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let plaintext = &fixture.secrets.iter().find(|(t, _)| *t == tag).unwrap().1;
            assert_eq!(out.exit_code, 0, "{tag}: {stdout}");
            assert!(
                stdout.starts_with(&sha256_hex(plaintext)),
                "{tag}: the container sees {stdout:?}, not the resource"
            );
        }
        // The volume's other view: the sealed form is gone from the container, too.
        let out = cri
            .exec_sync(&app, &["sh", "-c", "grep -c sealed. /secret/token; true"])
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");

        // No host-side copy: containerd's directories and log, the pods' run directory, the
        // test's own volume, and the shim's memory.
        let shims: Vec<u32> = containerd
            .shim_processes()
            .iter()
            .filter_map(|line| line.split(':').next()?.parse().ok())
            .collect();
        assert!(!shims.is_empty(), "no shim process found");
        for (tag, plaintext) in &fixture.secrets {
            let needle = plaintext.as_bytes();
            for dir in [
                containerd.dir(),
                containerd.run_dir.as_path(),
                fixture.dir.path().join("kubelet").as_path(),
            ] {
                let found = files_containing(dir, needle);
                assert!(found.is_empty(), "{tag} in host files {found:?}");
            }
            for pid in &shims {
                assert!(
                    !memory_contains(*pid, needle),
                    "{tag} in the memory of shim {pid}"
                );
            }
        }
        // The searches can find: the sealed reference is in containerd's files, and the
        // container's id in the shim's memory.
        let sealed_env = sealed(&fixture.cloak, "kbs:///default/secret/env").unwrap();
        assert!(!files_containing(containerd.dir(), sealed_env.as_bytes()).is_empty());
        assert!(shims
            .iter()
            .any(|pid| memory_contains(*pid, app.as_bytes())));

        cri.stop_container(&app, 0).await.unwrap();
        cri.remove_container(&app).await.unwrap();
        cri.remove_pod(&pod_id).await.unwrap();
    });
}

/// A running CRI pod `name` carrying `init_data`: its spec and id.
async fn run_pod(
    cri: &mut CriClient,
    containerd: &PrivateContainerd,
    name: &str,
    init_data: &str,
) -> (PodSpec, String) {
    let log_directory = containerd.dir().join("pod-logs").join(name);
    std::fs::create_dir_all(&log_directory).unwrap();
    let mut pod = PodSpec::new(name, RUNTIME_HANDLER, log_directory);
    pod.annotations.insert(
        "io.cloak.init-data".into(),
        cloak_init_data::encode_annotation(init_data.as_bytes()).unwrap(),
    );
    let pod_id = cri
        .run_pod(&pod)
        .await
        .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
    (pod, pod_id)
}

/// Creates the secret consumer in a pod with `init_data`; the refusal's message.
fn refused_create(fixture: &Fixture, init_data: &str) -> String {
    let containerd = &fixture.containerd;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let (pod, pod_id) = run_pod(&mut cri, containerd, "refused", init_data).await;
        let app = cri
            .create_container_with(&pod_id, &pod, secret_consumer(fixture))
            .await
            .unwrap();
        let refused = cri
            .start_container(&app)
            .await
            .expect_err("the container must be refused");
        cri.remove_container(&app).await.unwrap();
        cri.remove_pod(&pod_id).await.unwrap();
        format!("{refused:#}")
    })
}

#[test]
fn a_pod_booted_with_a_changed_initrd_gets_no_secret() {
    let test = "a_pod_booted_with_a_changed_initrd_gets_no_secret";
    let Some(env) = cloak_tests::VmTestEnv::get(test) else {
        return;
    };
    let changed = tempfile::tempdir().unwrap();
    let initrd = changed.path().join("initrd.img");
    cloak_tests::initrd_with_one_changed_byte(
        &env.guest_dir.join(&env.manifest.initrd.file),
        &initrd,
    );
    drop(env);
    let Some(fixture) = fixture(test, Some(initrd)) else {
        return;
    };
    let (_broker, init_data) = fixture.serve("the attested pod");
    let message = refused_create(&fixture, &init_data);
    assert!(
        message.contains("403") && message.contains("launch measurement"),
        "{message}"
    );
}

#[test]
fn a_pod_with_init_data_the_broker_does_not_serve_gets_no_secret() {
    let test = "a_pod_with_init_data_the_broker_does_not_serve_gets_no_secret";
    let Some(fixture) = fixture(test, None) else {
        return;
    };
    let (_broker, served) = fixture.serve("the pod the broker serves");
    let port = served_port(&served);
    let message = refused_create(&fixture, &init_data_for(port, "another pod"));
    assert!(
        message.contains("403") && message.contains("HOST_DATA"),
        "{message}"
    );
}
