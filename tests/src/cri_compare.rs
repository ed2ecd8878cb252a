//! runc as the expected behaviour: a scenario runs in a runc pod and then in a cloak pod of the
//! same private containerd (and CRI plugin), and the test compares the two results. Shared by
//! every CRI test file that states "what runc does" rather than a value of its own.

use crate::containerd::PrivateContainerd;
use crate::cri::{cni_netns, cri_test_env, CriClient, PodSpec, RUNTIME_HANDLER};

/// The two runtimes every scenario runs on: runc (the CRI plugin's default handler "") first.
pub const RUNTIMES: [(&str, &str); 2] = [("runc", ""), ("cloak", RUNTIME_HANDLER)];

/// Runs `scenario` in a fresh runc pod and then in a fresh cloak pod (each configured by
/// `configure`), removing each pod afterwards; returns (runc's result, cloak's result), or
/// `None` when the test cannot run here. Checks that the cloak pod left nothing behind.
///
/// # Panics
/// When containerd does not start or a pod cannot be created or removed (a test helper).
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub fn on_runc_and_cloak<T>(
    test: &str,
    configure: impl Fn(&mut PodSpec),
    scenario: impl AsyncFn(&mut CriClient, &PodSpec, &str, &PrivateContainerd) -> T,
) -> Option<(T, T)> {
    on_runc_and_cloak_in(Network::SingleStack, test, configure, scenario)
}

/// The pod network a comparison runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// IPv4, as every other test has it.
    SingleStack,
    /// IPv4 and IPv6 addresses and default routes.
    DualStack,
}

/// `on_runc_and_cloak` on the pod network `network`.
///
/// # Panics
/// As `on_runc_and_cloak`.
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub fn on_runc_and_cloak_in<T>(
    network: Network,
    test: &str,
    configure: impl Fn(&mut PodSpec),
    scenario: impl AsyncFn(&mut CriClient, &PodSpec, &str, &PrivateContainerd) -> T,
) -> Option<(T, T)> {
    let _slot = crate::vm_slot();
    let (env, shim) = cri_test_env(test)?;
    let containerd = match network {
        Network::SingleStack => PrivateContainerd::start_with_cri(&env, &shim),
        Network::DualStack => PrivateContainerd::start_with_cri_dual_stack(&env, &shim),
    }
    .expect("private containerd starts");
    let netns_before = cni_netns();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let results = runtime.block_on(async {
        let mut cri = CriClient::connect(&containerd.address).await.unwrap();
        let mut results = Vec::new();
        for (name, handler) in RUNTIMES {
            let log_directory = containerd.dir().join("pod-logs").join(name);
            std::fs::create_dir_all(&log_directory).unwrap();
            let mut pod = PodSpec::new(&format!("{name}-pod"), handler, log_directory);
            configure(&mut pod);
            let pod_id = cri
                .run_pod(&pod)
                .await
                .unwrap_or_else(|err| panic!("{name}: {err:#}\n{}", containerd.log_tail(40)));
            results.push(scenario(&mut cri, &pod, &pod_id, &containerd).await);
            cri.remove_pod(&pod_id).await.unwrap();
        }
        results
    });
    crate::cri::assert_pods_left_nothing(&containerd, &netns_before);
    let mut results = results.into_iter();
    Some((results.next().unwrap(), results.next().unwrap()))
}

/// Creates and starts `config` in the pod; the container id.
///
/// # Panics
/// When the CRI refuses (a test helper).
#[allow(clippy::unwrap_used)]
pub async fn start(
    cri: &mut CriClient,
    pod: &PodSpec,
    pod_id: &str,
    config: k8s_cri::v1::ContainerConfig,
) -> String {
    let id = cri
        .create_container_with(pod_id, pod, config)
        .await
        .unwrap_or_else(|err| panic!("{}: {err:#}", pod.name));
    cri.start_container(&id).await.unwrap();
    id
}

/// Starts busybox httpd serving `page` as /index.html on `listen` (`-p`: `PORT` or
/// `IP:PORT`) in a container named "web", and waits until it answers on the pod's loopback;
/// the container id.
///
/// # Panics
/// When the container does not start or httpd never answers (a test helper).
#[allow(clippy::unwrap_used)]
pub async fn start_httpd(
    cri: &mut CriClient,
    pod: &PodSpec,
    pod_id: &str,
    listen: &str,
    page: &str,
) -> String {
    let script = format!(
        "mkdir -p /www && printf '{}' > /www/index.html && exec httpd -f -p {listen} -h /www",
        page.replace('\n', "\\n")
    );
    let config =
        crate::cri::container_config("web", &crate::containerd::image(), &["sh", "-c", &script]);
    let id = start(cri, pod, pod_id, config).await;
    let port = listen.rsplit(':').next().unwrap_or(listen);
    let wait = format!(
        "for i in $(seq 100); do wget -q -O - http://127.0.0.1:{port}/ && exit 0; \
         sleep 0.1; done; exit 1"
    );
    let ready = cri
        .exec_sync_within(&id, &["sh", "-c", &wait], 60)
        .await
        .unwrap();
    assert_eq!(ready.exit_code, 0, "{}: httpd never served", pod.name);
    id
}
