//! The generator on a hand-built OCI archive: kubelet's argv and env resolution, users looked
//! up in the image, capabilities, mounts, execs, and the inputs a confidential pod refuses.
//! Expected values are written out by hand from the Kubernetes and containerd rules.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use super::*;
use serde_json::json;
use sha2::{Digest, Sha256};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_of(&Sha256::digest(bytes)))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, bytes: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, path, bytes).unwrap();
}

/// An archive with `app` (user `web`, Entrypoint+Cmd) and `pause`.
fn archive(dir: &std::path::Path) -> std::path::PathBuf {
    let mut layer = tar::Builder::new(Vec::new());
    append(
        &mut layer,
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1000::/srv:/bin/sh\n",
    );
    append(
        &mut layer,
        "etc/group",
        b"root:x:0:\nweb:x:1000:\ndisk:x:6:web,root\n",
    );
    let layer = layer.into_inner().unwrap();
    let mut blobs: Vec<Vec<u8>> = vec![layer.clone()];
    let mut manifests = Vec::new();
    for (name, config) in [
        (
            "docker.io/example/app:1",
            json!({"Entrypoint": ["/bin/server"], "Cmd": ["--port", "80"], "Env": ["PATH=/bin", "MODE=image"], "WorkingDir": "/srv", "User": "web"}),
        ),
        (
            "registry.k8s.io/pause:3.10",
            json!({"Entrypoint": ["/pause"], "User": "65535:65535"}),
        ),
    ] {
        let config = serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "config": config, "rootfs": {"type": "layers", "diff_ids": [digest(&layer)]}})).unwrap();
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(&layer), "size": layer.len()}]
        })).unwrap();
        manifests.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&manifest), "size": manifest.len(), "annotations": {"io.containerd.image.name": name}}));
        blobs.push(config);
        blobs.push(manifest);
    }
    let mut outer = tar::Builder::new(Vec::new());
    append(
        &mut outer,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    append(
        &mut outer,
        "index.json",
        &serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": manifests})).unwrap(),
    );
    for blob in blobs {
        let path = format!(
            "blobs/sha256/{}",
            digest(&blob).trim_start_matches("sha256:")
        );
        append(&mut outer, &path, &blob);
    }
    let path = dir.join("images.tar");
    std::fs::write(&path, outer.into_inner().unwrap()).unwrap();
    path
}

fn options(dir: &std::path::Path) -> Options {
    let mut images = ImageStore::default();
    images.add_archive(&archive(dir)).unwrap();
    Options {
        images,
        sandbox_image: "registry.k8s.io/pause:3.10".into(),
        namespace: "default".into(),
        execs: vec![("app".into(), vec!["cat".into(), "/tmp/ready".into()])],
        host_reports: false,
        port_forward: vec![8080],
        algorithm: Algorithm::Sha256,
    }
}

const POD: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata:
      annotations:
        io.cloak.policy/exec: '{"app": [["sh", "-c", "echo hi"]]}'
    spec:
      securityContext: {supplementalGroups: [3000], fsGroup: 4000, sysctls: [{name: net.core.somaxconn, value: "1024"}]}
      volumes: [{name: data, emptyDir: {}}, {name: config, configMap: {name: web}}]
      containers:
      - name: app
        image: example/app:1
        args: ["--port", "$(PORT)", "$$(PORT)"]
        env:
        - {name: PORT, value: "8080"}
        - {name: MODE, value: "prod-$(PORT)"}
        - name: TOKEN
          valueFrom: {secretKeyRef: {name: s, key: k}}
        volumeMounts: [{name: data, mountPath: /data}, {name: config, mountPath: /etc/web, readOnly: true}]
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
        livenessProbe: {exec: {command: [cat, /tmp/healthy]}, periodSeconds: 5}
"#;

#[test]
fn pins_what_kubelet_and_the_cri_plugin_will_ask_for() {
    let dir = tempfile::tempdir().unwrap();
    let generated = generate(POD, &options(dir.path())).unwrap();
    let data = serde_json::to_value(&generated.policy_data).unwrap();
    assert_eq!(data["pod"]["name"], "^web-[a-z0-9]{1,10}-[a-z0-9]{5}$");
    assert_eq!(data["pod"]["namespace"], "shop");
    let sandbox = &data["containers"][0];
    assert_eq!(sandbox["type"], "sandbox");
    assert_eq!(sandbox["args"], json!(["/pause"]));
    assert_eq!(
        sandbox["user"],
        json!({"uid": 65535, "gid": 65535, "additional_gids": [3000, 4000, 65535]})
    );
    assert_eq!(sandbox["sysctls"]["net.core.somaxconn"], "1024");
    let app = &data["containers"][1];
    assert_eq!(app["name"], "app");
    // One layer, pinned by its digest and by the root hash of its image.
    assert_eq!(app["image"]["layers"].as_array().unwrap().len(), 1);
    let root = app["layers"][0].as_str().unwrap();
    assert!(
        root.len() == 64 && root.bytes().all(|b| b.is_ascii_hexdigit()),
        "{root}"
    );
    assert_eq!(sandbox["layers"], app["layers"], "the same layer");
    assert_eq!(
        app["image"]["names"],
        json!([
            "example/app:1",
            "docker.io/example/app:1",
            app["image"]["config_digest"]
        ])
    );
    // args given, command not: Entrypoint + args, $(PORT) expanded, $$ escaped.
    assert_eq!(
        app["args"],
        json!(["/bin/server", "--port", "8080", "$(PORT)"])
    );
    assert_eq!(
        app["env"],
        json!(["PATH=/bin", "PORT=8080", "MODE=prod-8080"])
    );
    assert!(app["env_patterns"]
        .as_array()
        .unwrap()
        .contains(&json!("^TOKEN=.*$")));
    assert_eq!(app["cwd"], "/srv");
    // User `web` from the image: uid 1000, its group, the groups naming it, the pod's.
    assert_eq!(
        app["user"],
        json!({"uid": 1000, "gid": 1000, "additional_gids": [6, 1000, 3000, 4000]})
    );
    assert_eq!(app["capabilities"], json!(["CAP_NET_BIND_SERVICE"]));
    assert_eq!(app["no_new_privileges"], true);
    assert_eq!(app["readonly_rootfs"], true);
    let mounts = app["mounts"].as_array().unwrap();
    let config = mounts
        .iter()
        .find(|m| m["destination"] == "/etc/web")
        .unwrap();
    assert_eq!(config["options"], json!(["ro"]));
    assert_eq!(config["volume"], "configMap");
    assert!(mounts
        .iter()
        .any(|m| m["destination"] == "/var/run/secrets/kubernetes.io/serviceaccount"));
    assert_eq!(
        app["exec"],
        json!([
            ["cat", "/tmp/healthy"],
            ["sh", "-c", "echo hi"],
            ["cat", "/tmp/ready"]
        ])
    );
    // The init-data holds the policy, and the YAML carries it in the pod template.
    let parsed = cloak_init_data::InitData::parse(generated.init_data.as_bytes()).unwrap();
    assert_eq!(parsed.policy(), Some(generated.policy.as_str()));
    let annotated: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&generated.annotated_yaml)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .collect();
    let annotation = annotated[1]["spec"]["template"]["metadata"]["annotations"]
        [cloak_init_data::ANNOTATION]
        .as_str()
        .unwrap();
    assert_eq!(
        cloak_init_data::decode_annotation(annotation).unwrap(),
        generated.init_data.as_bytes()
    );
    assert!(annotated[0]["kind"] == "Service", "other documents stay");
}

#[test]
fn command_replaces_the_image_cmd_and_no_args_takes_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let pod = |container: &str| {
        format!("kind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - {{name: app, image: 'docker.io/example/app:1'{container}}}\n")
    };
    let argv = |container: &str| {
        let generated = generate(&pod(container), &options).unwrap();
        serde_json::to_value(&generated.policy_data.containers[1].args).unwrap()
    };
    assert_eq!(argv(""), json!(["/bin/server", "--port", "80"]));
    assert_eq!(argv(", command: [/bin/sh]"), json!(["/bin/sh"]));
    assert_eq!(
        argv(", command: [/bin/sh], args: [-c, x]"),
        json!(["/bin/sh", "-c", "x"])
    );
    let generated = generate(&pod(", securityContext: {runAsUser: 0}"), &options).unwrap();
    assert_eq!(generated.policy_data.pod.name, "^p$");
    let user = &generated.policy_data.containers[1].user;
    assert_eq!(
        (user.uid, user.gid, user.additional_gids.clone()),
        (0, 0, vec![0, 6])
    );
}

#[test]
fn refuses_what_a_confidential_pod_cannot_be() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(dir.path());
    let cases = [
        ("securityContext: {privileged: true}", "privileged"),
        ("envFrom: [{configMapRef: {name: c}}]", "envFrom"),
        ("securityContext: {capabilities: {add: [ALL]}}", "ALL"),
        ("volumeMounts: [{name: missing, mountPath: /m}]", "volume missing"),
        ("image: example/other:2", "no image docker.io/example/other:2"),
        ("args: ['$(TOKEN)']\n    env: [{name: TOKEN, valueFrom: {secretKeyRef: {name: s, key: k}}}]", "known only when the pod runs"),
        ("securityContext: {runAsUsr: 0}", "unknown field"),
    ];
    for (field, expected) in cases {
        let image = if field.starts_with("image:") {
            ""
        } else {
            "image: example/app:1\n    "
        };
        let yaml = format!("kind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n  - name: app\n    {image}{field}\n");
        let err = generate(&yaml, &options).expect_err(field).to_string();
        assert!(err.contains(expected), "{field}: {err}");
    }
    let host_network = "kind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers: [{name: app, image: example/app:1}]\n";
    assert!(generate(host_network, &options)
        .unwrap_err()
        .to_string()
        .contains("hostNetwork"));
    assert!(matches!(
        generate("kind: Service\n", &options),
        Err(GenerateError::NoWorkload)
    ));
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = archive(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Change one byte of the first layer's /etc/passwd content inside the archive.
    let at = bytes.windows(4).position(|w| w == b"web:").unwrap();
    bytes[at] = b'W';
    std::fs::write(&path, bytes).unwrap();
    let err = ImageStore::default().add_archive(&path).unwrap_err();
    assert!(matches!(err, GenerateError::DigestMismatch { .. }), "{err}");
}
