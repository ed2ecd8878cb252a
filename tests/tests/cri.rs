//! The Kubernetes path without Kubernetes: a private containerd with its CRI plugin (cloak as
//! runtime handler `cloak`, a CNI bridge network, a locally built pause image), driven by a
//! CRI client exactly as the kubelet drives it.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::time::Duration;

use cloak_tests::containerd::{image, PrivateContainerd};
use cloak_tests::cri::{cni_netns, cri_test_env, CriClient, PodSpec, RUNTIME_HANDLER};
use cloak_tests::{vm_slot, VmTestEnv};

fn cri_containerd(test: &str) -> Option<(VmTestEnv, PrivateContainerd)> {
    let (env, shim) = cri_test_env(test)?;
    let containerd =
        PrivateContainerd::start_with_cri(&env, &shim).expect("private containerd starts");
    Some((env, containerd))
}

fn pod_spec(containerd: &PrivateContainerd, name: &str) -> PodSpec {
    PodSpec::in_containerd(containerd, name, RUNTIME_HANDLER).unwrap()
}

/// QEMU processes of cloak pods under this containerd.
fn pod_vms(containerd: &PrivateContainerd) -> Vec<String> {
    cloak_tests::processes_mentioning(&containerd.run_dir)
        .into_iter()
        .filter(|p| p.contains("qemu-system"))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `body` against a fresh cloak pod `name` of a CRI-enabled private containerd, then
/// removes the pod and checks that nothing of it is left (VM, mounts, sockets, netns, tap).
fn with_cri_pod(
    test: &str,
    name: &str,
    body: impl AsyncFnOnce(&mut CriClient, &PodSpec, &str, &PrivateContainerd),
) {
    let _slot = vm_slot();
    let Some((_env, containerd)) = cri_containerd(test) else {
        return;
    };
    let netns_before = cni_netns();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let pod = pod_spec(&containerd, name);
        let pod_id = cri
            .run_pod(&pod)
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
        body(&mut cri, &pod, &pod_id, &containerd).await;
        cri.remove_pod(&pod_id).await.unwrap();
    });
    cloak_tests::cri::assert_pods_left_nothing(&containerd, &netns_before);
    assert_eq!(
        cloak_tests::cri::links_named(cloak_host::network::TAP_NAME),
        Vec::<String>::new()
    );
}

#[test]
fn a_pod_with_two_containers_runs_in_one_vm_and_leaves_nothing() {
    let test = "a_pod_with_two_containers_runs_in_one_vm_and_leaves_nothing";
    with_cri_pod(test, "two", async |cri, pod, pod_id, containerd| {
        let sleeper = cri
            .create_container(pod_id, pod, "sleeper", &image(), &["sleep", "3600"])
            .await
            .unwrap();
        let trapper = cri
            .create_container(
                pod_id,
                pod,
                "trapper",
                &image(),
                &["sh", "-c", "trap 'exit 7' TERM; sleep 3600 & wait"],
            )
            .await
            .unwrap();
        cri.start_container(&sleeper).await.unwrap();
        cri.start_container(&trapper).await.unwrap();
        assert_eq!(pod_vms(containerd).len(), 1, "one VM for the pod");

        for (id, name) in [(&sleeper, "sleeper"), (&trapper, "trapper")] {
            let out = cri
                .exec_sync(id, &["sh", "-c", "echo in-$(hostname); exit 3"])
                .await
                .unwrap();
            assert_eq!(out.exit_code, 3, "{name}: {}", text(&out.stderr));
            assert_eq!(text(&out.stdout), "in-two\n", "{name}");
        }
        // Both containers see each other's processes only through the pod VM: one kernel.
        let sleeper_kernel = cri.exec_sync(&sleeper, &["uname", "-r"]).await.unwrap();
        let trapper_kernel = cri.exec_sync(&trapper, &["uname", "-r"]).await.unwrap();
        assert_eq!(sleeper_kernel.stdout, trapper_kernel.stdout);
        assert_ne!(
            text(&sleeper_kernel.stdout).trim(),
            nix::sys::utsname::uname()
                .unwrap()
                .release()
                .to_string_lossy(),
            "containers run on the guest kernel"
        );

        cri.stop_container(&trapper, 10).await.unwrap();
        assert_eq!(
            cri.wait_for_exit(&trapper, Duration::from_secs(30))
                .await
                .unwrap(),
            7
        );
        // `sleep` as PID 1 ignores SIGTERM: StopContainer kills it after the grace period.
        cri.stop_container(&sleeper, 2).await.unwrap();
        assert_eq!(
            cri.wait_for_exit(&sleeper, Duration::from_secs(30))
                .await
                .unwrap(),
            137
        );
    });
}

/// Answers every connection with an HTTP response carrying `body`, until the test ends.
fn serve_http_on(address: &str, body: &'static str) -> std::net::SocketAddr {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind((address, 0)).unwrap();
    let bound = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    bound
}

/// GET `http://address/path` with a plain socket; the body.
fn http_get(address: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect_timeout(
        &address.parse().map_err(std::io::Error::other)?,
        Duration::from_secs(10),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

#[test]
fn a_pod_serves_http_at_its_cni_address_and_reaches_the_host() {
    let test = "a_pod_serves_http_at_its_cni_address_and_reaches_the_host";
    with_cri_pod(test, "web", async |cri, pod, pod_id, _containerd| {
        let pod_ip = cri.pod_ip(pod_id).await.unwrap();
        assert!(pod_ip.starts_with("10.213.0."), "CNI's address: {pod_ip:?}");
        let web = cri
            .create_container(
                pod_id,
                pod,
                "web",
                &image(),
                &[
                    "sh",
                    "-c",
                    "echo served-by-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www",
                ],
            )
            .await
            .unwrap();
        cri.start_container(&web).await.unwrap();

        // The guest has the address Kubernetes assigned.
        let addresses = cri
            .exec_sync(&web, &["ip", "-4", "addr", "show"])
            .await
            .unwrap();
        assert!(
            text(&addresses.stdout).contains(&format!("inet {pod_ip}/24")),
            "{}",
            text(&addresses.stdout)
        );
        // Host -> pod, at the pod IP (httpd may need a moment to listen).
        let url_host = format!("{pod_ip}:8080");
        let mut body = Err(std::io::Error::other("not tried"));
        for _ in 0..50 {
            body = tokio::task::spawn_blocking({
                let url_host = url_host.clone();
                move || http_get(&url_host, "/index.html")
            })
            .await
            .unwrap();
            if body.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(body.unwrap(), "served-by-web\n");

        // Pod -> host, at the bridge address (the pod's gateway).
        let host = serve_http_on(cloak_tests::cri::BRIDGE_ADDRESS, "hello-from-host");
        let fetched = cri
            .exec_sync(&web, &["wget", "-q", "-O", "-", &format!("http://{host}/")])
            .await
            .unwrap();
        assert_eq!(fetched.exit_code, 0, "{}", text(&fetched.stderr));
        assert_eq!(text(&fetched.stdout), "hello-from-host");
    });
}

/// containerd reads the cloak runtime from where `cloak install` merged it: the version 2
/// table for Debian's containerd 1.6, the version 3 one (`io.containerd.cri.v1.runtime`) for
/// containerd 2.x. The private containerd's configuration has no cloak runtime until
/// `cloak install --root` adds it; only the configuration path it names is pointed at the
/// test's own configuration.
#[test]
fn the_containerd_config_cloak_install_writes_runs_a_pod() {
    let test = "the_containerd_config_cloak_install_writes_runs_a_pod";
    let _slot = vm_slot();
    let Some((env, shim)) = cri_test_env(test) else {
        return;
    };
    let Some(cloak) = cloak_tests::cloak_binary(test) else {
        return;
    };
    let major = cloak_tests::containerd::containerd_major_version().unwrap();
    let guest_dir = env.guest_dir.clone();
    let install = move |dir: &std::path::Path, config: String| -> anyhow::Result<String> {
        let node = dir.join("node");
        let config_path = node.join("etc/containerd/config.toml");
        std::fs::create_dir_all(config_path.parent().unwrap())?;
        std::fs::write(&config_path, config)?;
        let output = std::process::Command::new(&cloak)
            .arg("install")
            .arg("--root")
            .arg(&node)
            .arg("--guest-image")
            .arg(&guest_dir)
            .output()?;
        assert!(
            output.status.success(),
            "cloak install: {}",
            text(&output.stderr)
        );
        let merged = std::fs::read_to_string(&config_path)?;
        let table = if major >= 2 {
            r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.cloak]"#
        } else {
            r#"[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.cloak]"#
        };
        assert!(merged.contains(table), "containerd {major}: {merged}");
        Ok(merged.replace(
            "\"/etc/cloak/configuration.toml\"",
            &format!("\"{}\"", dir.join("cloak.toml").display()),
        ))
    };
    let containerd = PrivateContainerd::start_with_cri_installed_by(&env, &shim, &install)
        .expect("private containerd starts with the installed config");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let pod = pod_spec(&containerd, "installed");
        let pod_id = cri
            .run_pod(&pod)
            .await
            .unwrap_or_else(|err| panic!("{err:#}\n{}", containerd.log_tail(40)));
        let id = cri
            .create_container(&pod_id, &pod, "main", &image(), &["sleep", "3600"])
            .await
            .unwrap();
        cri.start_container(&id).await.unwrap();
        assert_eq!(pod_vms(&containerd).len(), 1, "the pod runs in a cloak VM");
        let out = cri.exec_sync(&id, &["uname", "-r"]).await.unwrap();
        assert_eq!(out.exit_code, 0, "{}", text(&out.stderr));
        assert_ne!(
            text(&out.stdout).trim(),
            nix::sys::utsname::uname()
                .unwrap()
                .release()
                .to_string_lossy(),
            "the container runs on the guest kernel"
        );
        cri.remove_pod(&pod_id).await.unwrap();
    });
    assert_eq!(
        containerd.wait_for_no_leftovers(false),
        Vec::<String>::new()
    );
}
