//! Containers from verified layer images in a real pod VM with the simulated TEE: the host
//! converts layers with `cloak-layers` and shares the images; the agent opens each with
//! dm-verity under its root hash and stacks them with overlayfs. The container sees the layers
//! as overlay semantics say (a whiteout hides a lower file, an opaque directory hides a lower
//! directory's content); a byte the host flips in a layer image while the pod runs is an I/O
//! error in the container and a log line naming the layer; a valid image of another layer in
//! a layer's place is refused before the container exists; a host-shared rootfs is refused.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

/// Where the flipped byte sits in `data/big`: far past any read-ahead at mount time.
const FLIP_AT: usize = BIG_FILE_BYTES * 3 / 4;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use cloak_protocol::agent::Storage;
use cloak_tests::oci_image::{layer_tar, middle_layer, top_layer, BIG_FILE_BYTES};
use cloak_tests::pod::{busybox_spec, Streams, TestPod};
use cloak_tests::rootfs::build_busybox_rootfs;
use cloak_tests::{vm_slot, VmTestEnv};

/// Converts `tar` into `path`; the root hash.
fn convert(tar: &[u8], path: &Path) -> String {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut out = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    cloak_layers::convert(tar, &mut out)
        .unwrap()
        .verity
        .root_hex()
}

/// The busybox root filesystem as one layer tar.
fn busybox_layer() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    build_busybox_rootfs(dir.path()).unwrap();
    layer_tar(dir.path()).unwrap()
}

/// A pod in the simulated TEE, as a confidential pod runs (no init-data: the allow-all
/// policy, so the request's root hashes are used).
async fn simulated_pod(env: &VmTestEnv) -> TestPod {
    let simulated = |config: &mut cloak_host::Configuration| {
        config.hypervisor.tee = cloak_host::config::TeeKind::Sim;
    };
    TestPod::boot_with(env, simulated, &[])
        .await
        .unwrap_or_else(|err| panic!("boot: {err:#}"))
}

fn layer_storage(container: &str, index: usize, root_hash: &str) -> Storage {
    Storage {
        driver: "erofs-verity".into(),
        source: format!("/run/cloak/shared/{container}/layers/{index}.img"),
        verity_root_hash: root_hash.to_owned(),
        ..Default::default()
    }
}

fn layered_rootfs() -> Storage {
    Storage {
        driver: "layers".into(),
        ..Default::default()
    }
}

#[test]
fn a_container_runs_from_verified_layers_and_sees_host_changes_as_errors() {
    let Some(env) =
        VmTestEnv::get("a_container_runs_from_verified_layers_and_sees_host_changes_as_errors")
    else {
        return;
    };
    let _slot = vm_slot();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pod = simulated_pod(&env).await;
        let shared = pod.shared.path().to_owned();
        let base = busybox_layer();
        let layers = [base, middle_layer().unwrap(), top_layer().unwrap()];
        let hashes: Vec<String> = layers
            .iter()
            .enumerate()
            .map(|(i, tar)| convert(tar, &shared.join(format!("app/layers/{i}.img"))))
            .collect();
        let storages: Vec<Storage> = hashes
            .iter()
            .enumerate()
            .map(|(i, hash)| layer_storage("app", i, hash))
            .collect();
        let spec = busybox_spec(&["sh", "-c", "find /data /opq | sort; cat /opq/z; sleep 600"]);
        let streams = pod
            .create_with_storages("app", &spec, Streams::default(), layered_rootfs(), storages)
            .await
            .unwrap_or_else(|err| panic!("create: {err:#}"));
        pod.start("app").await.unwrap();

        // Overlay semantics: the whiteout hides data/a, the opaque opq shows only z.
        let listing = pod
            .run_exec_text("app", "ls", &["sh", "-c", "find /data /opq | sort"])
            .await;
        assert_eq!(listing, "/data\n/data/b\n/data/big\n/opq\n/opq/z\n");
        let head = pod
            .run_exec_text(
                "app",
                "head",
                &["sh", "-c", "head -c 4 /data/big | od -An -tu1"],
            )
            .await;
        assert_eq!(
            head.split_whitespace().collect::<Vec<_>>(),
            ["0", "1", "2", "3"]
        );

        // The host flips one byte inside data/big's blocks: reading it is an I/O error.
        let image = shared.join("app/layers/1.img");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        file.seek(SeekFrom::Start((4096 + FLIP_AT) as u64)).unwrap();
        file.write_all(&[0xff]).unwrap();
        drop(file);
        let (code, output) = pod
            .run_exec("app", "read", &["sh", "-c", "cat /data/big > /dev/null"])
            .await;
        assert_ne!(code, 0, "the changed block was read: {output}");
        assert!(output.contains("Input/output error"), "{output}");
        // The agent's log names the layer (from the kernel's verity message).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let console = std::fs::read_to_string(pod.console_log()).unwrap_or_default();
            if console.contains("failed verification")
                && console.contains("layer 1 of container app")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no agent log naming the layer:\n{console}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }

        // A valid image of another layer where the top layer belongs: refused at create.
        let other = shared.join("swapped/layers");
        for (i, tar) in layers.iter().enumerate() {
            convert(tar, &other.join(format!("{i}.img")));
        }
        std::fs::copy(other.join("1.img"), other.join("2.img")).unwrap();
        let storages: Vec<Storage> = hashes
            .iter()
            .enumerate()
            .map(|(i, hash)| layer_storage("swapped", i, hash))
            .collect();
        let refused = pod
            .create_with_storages(
                "swapped",
                &busybox_spec(&["true"]),
                Streams::default(),
                layered_rootfs(),
                storages,
            )
            .await
            .err()
            .expect("a swapped layer is refused");
        let message = format!("{refused:#}");
        assert!(
            message.contains("layer 2") && message.contains("does not match its root hash"),
            "{message}"
        );

        drop(streams);
        pod.signal("app", "", 9).await.unwrap();
        pod.wait("app", "").await.unwrap();
        pod.remove("app").await.unwrap();
        pod.shutdown().await.unwrap();
    });
}

#[test]
fn a_pod_in_a_tee_refuses_a_host_shared_rootfs_and_runs_verified_layers() {
    let Some(env) =
        VmTestEnv::get("a_pod_in_a_tee_refuses_a_host_shared_rootfs_and_runs_verified_layers")
    else {
        return;
    };
    let _slot = vm_slot();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pod = simulated_pod(&env).await;
        let refused = pod
            .create("shared", &busybox_spec(&["true"]), Streams::default())
            .await
            .err()
            .expect("a host-shared rootfs is refused in a TEE");
        let message = format!("{refused:#}");
        assert!(message.contains("only from verified layers"), "{message}");
        let hash = convert(
            &busybox_layer(),
            &pod.shared.path().join("layered/layers/0.img"),
        );
        let streams = pod
            .create_with_storages(
                "layered",
                &busybox_spec(&["echo", "verified"]),
                Streams::default(),
                layered_rootfs(),
                vec![layer_storage("layered", 0, &hash)],
            )
            .await
            .unwrap_or_else(|err| panic!("create: {err:#}"));
        pod.start("layered").await.unwrap();
        let (stdout, _) = streams.collect().await.unwrap();
        assert_eq!(stdout, b"verified\n");
        assert_eq!(pod.wait("layered", "").await.unwrap().exit_status, 0);
        pod.remove("layered").await.unwrap();
        pod.shutdown().await.unwrap();
    });
}
