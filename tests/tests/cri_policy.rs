//! A confidential pod through the CRI plugin with the simulated TEE: `cloak policy generate`
//! pins the pod's YAML and local images into init-data, the pod carries it as its annotation
//! (HOST_DATA binds it at launch, the agent checks it), and then the containers the YAML
//! names run, its exec probe and listed exec run, and the host's other requests are refused
//! with PERMISSION_DENIED naming the request. The test plays kubelet: it asks the CRI plugin
//! for exactly what kubelet would ask for the YAML, then for one change at a time.
//!
//! containerd's CRI plugin creates the task (and so the agent's CreateContainer) at
//! StartContainer, so a refused container fails there.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::path::Path;
use std::time::Duration;

use cloak_host::config::TeeKind;
use cloak_tests::containerd::{
    containerd_program, image, layered_image, pause_image, user_image, PrivateContainerd,
};
use cloak_tests::cri::{
    cni_netns, container_config, cri_test_env, CriClient, PodSpec, RUNTIME_HANDLER,
};
use cloak_tests::vm_slot;
use k8s_cri::v1::{Capability, ContainerConfig, ContainerMetadata, Int64Value, KeyValue};

const COMMAND: [&str; 3] = ["sh", "-c", "echo started; exec sleep 3600"];
const TEN_MIB: &str = "10485760";

fn web_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
  - name: app
    image: {image}
    command: {command:?}
    env:
    - name: MODE
      value: prod
    securityContext:
      runAsUser: 1000
    livenessProbe:
      exec:
        command: [cat, /etc/hostname]
"#,
        image = image(),
        command = COMMAND,
    )
}

fn quiet_yaml() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: quiet
  annotations:
    io.cloak.policy/logs: "false"
spec:
  containers:
  - name: writer
    image: {image}
    command: [head, -c, "{TEN_MIB}", /dev/zero]
"#,
        image = image(),
    )
}

/// `cloak policy generate` for `yaml` from the test images; the init-data's bytes and the
/// annotation value from the written YAML.
fn generate(cloak: &Path, dir: &Path, yaml: &str, images: &[&str]) -> (Vec<u8>, String) {
    let pod = dir.join("pod.yaml");
    std::fs::write(&pod, yaml).unwrap();
    let (out, annotated) = (dir.join("init-data.toml"), dir.join("annotated.yaml"));
    let output = std::process::Command::new(cloak)
        .arg("policy")
        .arg("generate")
        .arg("--pod")
        .arg(&pod)
        .args(["--sandbox-image", &pause_image()])
        .args(images)
        .arg("--out")
        .arg(&out)
        .arg("--annotate")
        .arg(&annotated)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let annotated: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&std::fs::read_to_string(&annotated).unwrap())
            .map(|document| serde::Deserialize::deserialize(document).unwrap())
            .collect();
    let annotation = annotated[0]["metadata"]["annotations"]["io.cloak.init-data"]
        .as_str()
        .unwrap()
        .to_owned();
    (std::fs::read(&out).unwrap(), annotation)
}

fn app_config(attempt: u32) -> ContainerConfig {
    let mut config = container_config("app", &image(), &COMMAND);
    config.metadata = Some(ContainerMetadata {
        name: "app".into(),
        attempt,
    });
    config.log_path = format!("app-{attempt}.log");
    config.envs = vec![KeyValue {
        key: "MODE".into(),
        value: "prod".into(),
    }];
    security(&mut config).run_as_user = Some(Int64Value { value: 1000 });
    config
}

/// The container's Linux security context (`container_config` always has one).
fn security(config: &mut ContainerConfig) -> &mut k8s_cri::v1::LinuxContainerSecurityContext {
    config
        .linux
        .as_mut()
        .and_then(|linux| linux.security_context.as_mut())
        .unwrap()
}

fn log_text(pod: &PodSpec, log: &str) -> String {
    std::fs::read_to_string(pod.log_directory.join(log)).unwrap_or_default()
}

/// The CRI error of a refused start: it carries the agent's policy message.
fn assert_refused(err: &anyhow::Error, request: &str, reason: &str) {
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("{request} is blocked by policy")),
        "{message}"
    );
    assert!(message.contains(reason), "{message} lacks {reason:?}");
}

/// A CRI-enabled private containerd whose cloak pods run in the simulated TEE, the `cloak`
/// command, and the VM slot held for the test; `None` after saying why `test` cannot run.
fn simulated_tee_containerd(
    test: &str,
) -> Option<(
    std::sync::MutexGuard<'static, ()>,
    PrivateContainerd,
    std::path::PathBuf,
)> {
    let (env, shim) = cri_test_env(test)?;
    let cloak = cloak_tests::cloak_binary(test)?;
    let slot = vm_slot();
    let containerd = PrivateContainerd::start_with_cri_configured(&env, &shim, &|config| {
        config.hypervisor.tee = TeeKind::Sim;
    })
    .unwrap();
    Some((slot, containerd, cloak))
}

#[test]
fn a_pod_with_generated_init_data_runs_what_its_yaml_says_and_nothing_else() {
    let Some((_slot, containerd, cloak)) = simulated_tee_containerd(
        "a_pod_with_generated_init_data_runs_what_its_yaml_says_and_nothing_else",
    ) else {
        return;
    };
    let netns_before = cni_netns();
    let dir = tempfile::tempdir().unwrap();
    let archive = containerd.image_archive();
    let archive_args = ["--images", archive.to_str().unwrap()];
    let exec = ["--allow-exec", "app=echo hello"];
    let (init_data, annotation) = generate(
        &cloak,
        dir.path(),
        &web_yaml(),
        &[&archive_args[..], &exec].concat(),
    );
    // The same images from containerd's store give the same init-data, byte for byte.
    let address = containerd.address.display().to_string();
    let ctr = containerd_program("ctr").display().to_string();
    let store_args = [
        "--containerd-namespace",
        "k8s.io",
        "--containerd-address",
        &address,
        "--ctr",
        &ctr,
    ];
    let (from_store, _) = generate(
        &cloak,
        dir.path(),
        &web_yaml(),
        &[&store_args[..], &exec].concat(),
    );
    assert_eq!(from_store, init_data, "archive and content store agree");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let log_directory = containerd.dir().join("pod-logs/web");
        std::fs::create_dir_all(&log_directory).unwrap();
        let mut pod = PodSpec::new("web", RUNTIME_HANDLER, log_directory);
        pod.annotations
            .insert("io.cloak.init-data".into(), annotation);
        let pod_id = cri
            .run_pod(&pod)
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));

        // The container as the YAML says runs, and its output reaches the host.
        let app = cri
            .create_container_with(&pod_id, &pod, app_config(0))
            .await
            .unwrap();
        cri.start_container(&app)
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !log_text(&pod, "app-0.log").contains("started") {
            assert!(std::time::Instant::now() < deadline, "no output from app");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Its exec probe and the listed exec run; one more argument does not.
        let probe = cri
            .exec_sync(&app, &["cat", "/etc/hostname"])
            .await
            .unwrap();
        assert_eq!(
            (probe.exit_code, probe.stdout.as_slice()),
            (0, b"web\n".as_slice())
        );
        let listed = cri.exec_sync(&app, &["echo", "hello"]).await.unwrap();
        assert_eq!(listed.stdout, b"hello\n");
        let refused = cri
            .exec_sync(&app, &["echo", "hello", "x"])
            .await
            .unwrap_err();
        assert_refused(
            &refused,
            "ExecProcessRequest",
            "is not an exec this policy lists",
        );
        let refused = cri.exec_sync(&app, &["sh"]).await.unwrap_err();
        assert_refused(
            &refused,
            "ExecProcessRequest",
            "is not an exec this policy lists",
        );

        // One change at a time to what kubelet would ask for.
        type Change = fn(&mut ContainerConfig);
        let changes: [(&str, Change, &str); 5] = [
            (
                "a changed argument",
                |c| c.command[2] = "echo changed".into(),
                "argv",
            ),
            (
                "an added env variable",
                |c| {
                    c.envs.push(KeyValue {
                        key: "EXTRA".into(),
                        value: "1".into(),
                    })
                },
                "env EXTRA is not allowed",
            ),
            (
                "another image",
                |c| c.image.as_mut().unwrap().image = user_image(),
                "image",
            ),
            (
                "UID 0",
                |c| security(c).run_as_user = Some(Int64Value { value: 0 }),
                "uid 0 is not 1000",
            ),
            (
                "an added capability",
                |c| {
                    security(c).capabilities = Some(Capability {
                        add_capabilities: vec!["SYS_ADMIN".into()],
                        ..Default::default()
                    })
                },
                "capability CAP_SYS_ADMIN",
            ),
        ];
        for (attempt, (name, change, reason)) in (1..).zip(changes) {
            let mut config = app_config(attempt);
            change(&mut config);
            let id = cri
                .create_container_with(&pod_id, &pod, config)
                .await
                .unwrap();
            let refused = cri.start_container(&id).await.expect_err(name);
            assert_refused(&refused, "CreateContainerRequest", reason);
            cri.remove_container(&id).await.unwrap();
        }
        cri.stop_container(&app, 2).await.unwrap();
        cri.remove_pod(&pod_id).await.unwrap();

        // A pod whose logs the policy keeps: nothing reaches the host, and the container,
        // writing 10 MiB to stdout, still runs to completion.
        let (_, annotation) = generate(&cloak, dir.path(), &quiet_yaml(), &archive_args);
        let log_directory = containerd.dir().join("pod-logs/quiet");
        std::fs::create_dir_all(&log_directory).unwrap();
        let mut quiet = PodSpec::new("quiet", RUNTIME_HANDLER, log_directory);
        quiet
            .annotations
            .insert("io.cloak.init-data".into(), annotation);
        let quiet_id = cri.run_pod(&quiet).await.unwrap();
        let writer = container_config("writer", &image(), &["head", "-c", TEN_MIB, "/dev/zero"]);
        let writer = cri
            .create_container_with(&quiet_id, &quiet, writer)
            .await
            .unwrap();
        cri.start_container(&writer).await.unwrap();
        let code = cri
            .wait_for_exit(&writer, Duration::from_secs(120))
            .await
            .unwrap();
        assert_eq!(code, 0);
        let log = log_text(&quiet, "writer.log");
        assert!(
            log.len() < 1024,
            "{} bytes of log reached the host",
            log.len()
        );
        cri.remove_pod(&quiet_id).await.unwrap();
    });
    cloak_tests::cri::assert_pods_left_nothing(&containerd, &netns_before);
    // Every container ran from verified layer images; the one busybox layer (under the
    // sandbox, the app and the writer) was converted once and then found in the cache.
    let log = std::fs::read_to_string(containerd.dir().join("containerd.log")).unwrap();
    assert_eq!(
        log.matches("layer image converted").count(),
        1,
        "converted once"
    );
    assert!(
        log.matches("layer image cache hit").count() >= 3,
        "then cache hits"
    );
    assert!(
        log.contains("layer opened with dm-verity"),
        "the guest opened the layers"
    );
    // The root hash the node computed is the one the generator pinned from the archive.
    let records: Vec<String> = std::fs::read_dir(containerd.dir().join("layer-cache"))
        .unwrap()
        .flatten()
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "json"))
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let record: serde_json::Value = serde_json::from_str(&records[0]).unwrap();
    let node_hash = record["root_hash"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(&init_data).contains(node_hash),
        "the policy pins the node's root hash {node_hash}"
    );
}

/// The container's output lines in a CRI log file (`<time> stdout F <line>`).
fn logged_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.splitn(4, ' ').nth(3).map(str::to_owned))
        .collect()
}

#[test]
fn a_layered_image_shows_the_same_files_from_verified_layers_as_under_runc() {
    let Some((_slot, containerd, cloak)) = simulated_tee_containerd(
        "a_layered_image_shows_the_same_files_from_verified_layers_as_under_runc",
    ) else {
        return;
    };
    let command = ["sh", "-c", "find /data /opq | sort; cat /opq/z"];
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: layers\nspec:\n  containers:\n  - name: list\n    image: {}\n    command: {command:?}\n",
        layered_image()
    );
    let dir = tempfile::tempdir().unwrap();
    let archive = containerd.image_archive();
    let (_, annotation) = generate(
        &cloak,
        dir.path(),
        &yaml,
        &["--images", archive.to_str().unwrap()],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listings: Vec<Vec<String>> = runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let mut listings = Vec::new();
        for (handler, init_data) in [(RUNTIME_HANDLER, Some(&annotation)), ("", None)] {
            let name = if handler.is_empty() { "runc" } else { "cloak" };
            let log_directory = containerd.dir().join("pod-logs").join(name);
            std::fs::create_dir_all(&log_directory).unwrap();
            let mut pod = PodSpec::new("layers", handler, log_directory);
            if let Some(value) = init_data {
                pod.annotations
                    .insert("io.cloak.init-data".into(), value.clone());
            }
            let pod_id = cri.run_pod(&pod).await.unwrap();
            let config = container_config("list", &layered_image(), &command);
            let id = cri
                .create_container_with(&pod_id, &pod, config)
                .await
                .unwrap();
            cri.start_container(&id)
                .await
                .unwrap_or_else(|err| panic!("{name}: {err:#}\n{}", containerd.log_tail(30)));
            assert_eq!(
                cri.wait_for_exit(&id, Duration::from_secs(60))
                    .await
                    .unwrap(),
                0,
                "{name}"
            );
            listings.push(logged_lines(&pod.log_directory.join("list.log")));
            cri.remove_pod(&pod_id).await.unwrap();
        }
        listings
    });
    assert_eq!(
        listings[0],
        ["/data", "/data/b", "/data/big", "/opq", "/opq/z", "z"],
        "whiteout and opaque directory as overlay shows them"
    );
    assert_eq!(
        listings[0], listings[1],
        "cloak (verified layers) and runc agree"
    );
    let log = std::fs::read_to_string(containerd.dir().join("containerd.log")).unwrap();
    assert!(
        log.contains("layer opened with dm-verity"),
        "cloak ran from verified layers"
    );
}
