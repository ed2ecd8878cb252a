//! Agent policy benchmark, in one run:
//! 1. the cost of one decision of the default confidential rules (`configs/policy/rules.rego`
//!    with a pod's `policy_data`) for a CreateContainer and an Exec request, against the same
//!    requests under the allow-all default, on the host CPU;
//! 2. in the guest: the latency of a CreateContainer and an Exec request that the rules refuse
//!    after checking everything (one env variable changed, one argument added), against the
//!    same requests refused by a constant rule — the difference is what the rules cost in the
//!    pod VM; and the boot (launch to CreateSandbox done) with the rules' init-data against
//!    none;
//! 3. the agent's and the initrd's size.
//!
//! Medians of N rounds.
//!
//! Usage: cloak-bench-policy [--runs N]   (make bench-policy; needs the guest image for 2)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use cloak_policy::{
    input, with_policy_data, AgentPolicy, Decision, CONFIDENTIAL_RULES, DEFAULT_POLICY,
};
use cloak_protocol::agent::{CreateContainerRequest, ExecProcessRequest, Storage};
use cloak_tests::bench::{median, runs_from_args};
use cloak_tests::pod::{busybox_spec, ctx, Streams, TestPod, BUSYBOX_ROOTFS};
use cloak_tests::{vm_slot, VmTestEnv};
use oci_spec::runtime::Spec;
use serde_json::{json, Value};

const CONTAINER: &str = "bench";

/// The container's spec as the shim would send it: CRI annotations on a busybox spec.
fn container_spec() -> Spec {
    let mut spec = busybox_spec(&["sleep", "600"]);
    let annotations = [
        ("io.kubernetes.cri.container-type", "container"),
        ("io.kubernetes.cri.container-name", CONTAINER),
        (
            "io.kubernetes.cri.image-name",
            "docker.io/cloak/busybox:bench",
        ),
        ("io.kubernetes.cri.sandbox-name", "bench"),
        ("io.kubernetes.cri.sandbox-namespace", "default"),
    ];
    spec.set_annotations(Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    ));
    spec
}

/// `policy_data` pinning exactly `spec` (what the generator writes for a pod's container),
/// with one listed exec.
fn policy_data(spec: &Spec) -> anyhow::Result<Value> {
    let spec = serde_json::to_value(spec)?;
    let process = &spec["process"];
    let mounts: Vec<Value> = spec["mounts"]
        .as_array()
        .context("mounts")?
        .iter()
        .map(|m| {
            json!({"destination": m["destination"], "type": m["type"], "below": false, "options": [],
                   "source": format!("^{}$", m["source"].as_str().unwrap_or_default())})
        })
        .collect();
    Ok(json!({
        "pod": {"name": "^bench$", "namespace": "default", "hostname": "^cloak-pod$"},
        "env_patterns": [],
        "copy_file_prefix": "/run/cloak/copied/",
        "host_reports": false,
        "containers": [{
            "type": "container", "name": CONTAINER,
            "image": {"names": ["docker.io/cloak/busybox:bench"], "config_digest": "", "layers": []},
            "args": process["args"], "env": process["env"], "env_patterns": [],
            "cwd": process["cwd"],
            "user": {"uid": process["user"]["uid"], "gid": process["user"]["gid"], "additional_gids": []},
            "capabilities": process["capabilities"]["bounding"],
            "no_new_privileges": process["noNewPrivileges"].as_bool().unwrap_or(false),
            "readonly_rootfs": false,
            "mounts": mounts, "sysctls": {},
            "exec": [["true"]], "logs": true
        }]
    }))
}

fn create_request(spec: &Spec) -> anyhow::Result<CreateContainerRequest> {
    Ok(CreateContainerRequest {
        container_id: CONTAINER.to_owned(),
        oci_spec_json: serde_json::to_vec(spec)?,
        rootfs: Some(Storage {
            driver: "bind".into(),
            source: format!("/run/cloak/shared/{CONTAINER}/rootfs"),
            overlay_in_memory: true,
            ..Default::default()
        })
        .into(),
        ..Default::default()
    })
}

fn exec_request(args: &[&str]) -> anyhow::Result<ExecProcessRequest> {
    let process = busybox_spec(args).process().clone().context("a process")?;
    Ok(ExecProcessRequest {
        container_id: CONTAINER.to_owned(),
        exec_id: "probe".to_owned(),
        process_json: serde_json::to_vec(&process)?,
        ..Default::default()
    })
}

/// The allow-all default with CreateContainer allowed for the bench container only and Exec
/// denied: the constant-cost baseline of the in-guest figures.
fn constant_policy() -> String {
    DEFAULT_POLICY
        .replace(
            "default CreateContainerRequest := true",
            "default CreateContainerRequest := false\nCreateContainerRequest if input.container_id == \"bench\"",
        )
        .replace("default ExecProcessRequest := true", "default ExecProcessRequest := false")
}

fn init_data(policy: &str) -> Vec<u8> {
    format!("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"policy.rego\" = '''\n{policy}'''\n").into_bytes()
}

/// Microseconds per decision over `batch` decisions, each of which must allow.
fn time_decisions(policy: &AgentPolicy, request: &str, input: &Value, batch: u32) -> f64 {
    let started = Instant::now();
    for _ in 0..batch {
        let decision = policy.decide(request, input.clone());
        assert!(
            matches!(decision, Decision::Allow { .. }),
            "{request}: {decision:?}"
        );
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(batch)
}

fn host_decisions(runs: usize, rules: &str) -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let spec = container_spec();
    let create = input::of_message(&create_request(&spec)?);
    let exec = input::of_message(&exec_request(&["true"])?);
    let pinned = AgentPolicy::load(rules)?;
    let Decision::Allow { record } = pinned.decide("CreateContainerRequest", create.clone()) else {
        anyhow::bail!("the rules refuse the container they pin");
    };
    pinned.admit(CONTAINER, record);
    let default = AgentPolicy::load(DEFAULT_POLICY)?;
    let batch = 100;
    let mut rows = Vec::new();
    for (request, input) in [
        ("CreateContainerRequest", create),
        ("ExecProcessRequest", exec),
    ] {
        let (mut rules_us, mut default_us) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            rules_us.push(time_decisions(&pinned, request, &input, batch));
            default_us.push(time_decisions(&default, request, &input, batch));
        }
        rows.push((request, median(&mut rules_us), median(&mut default_us)));
    }
    Ok(rows)
}

/// One pod VM under `policy`: its boot in ms, then the median latency in µs of a refused
/// CreateContainer and a refused Exec.
async fn guest_round(
    env: &VmTestEnv,
    policy: &str,
    requests: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let started = Instant::now();
    let pod = TestPod::boot_with(env, |_| {}, &init_data(policy)).await?;
    let boot_ms = started.elapsed().as_secs_f64() * 1e3;
    // The rules want the container's rootfs at its own entry of the shared directory.
    let entry = pod.shared.path().join(CONTAINER);
    std::fs::create_dir_all(&entry)?;
    std::os::unix::fs::symlink(Path::new("..").join(BUSYBOX_ROOTFS), entry.join("rootfs"))?;
    let spec = container_spec();
    pod.create_with_rootfs(
        CONTAINER,
        &spec,
        Streams::default(),
        &Path::new("/run/cloak/shared")
            .join(CONTAINER)
            .join("rootfs"),
    )
    .await
    .context("the pinned container")?;
    let mut changed = spec.clone();
    let mut process = changed.process().clone().context("a process")?;
    let mut env_vars = process.env().clone().unwrap_or_default();
    env_vars.push("EXTRA=1".to_owned());
    process.set_env(Some(env_vars));
    changed.set_process(Some(process));
    let mut refused_create = create_request(&changed)?;
    refused_create.container_id = "other".to_owned();
    let refused_exec = exec_request(&["true", "x"])?;
    let (mut create_us, mut exec_us) = (Vec::new(), Vec::new());
    for _ in 0..requests {
        let at = Instant::now();
        let denied = pod.agent().create_container(ctx(), &refused_create).await;
        create_us.push(at.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(denied.is_err(), "the changed container was admitted");
        let at = Instant::now();
        let denied = pod.agent().exec_process(ctx(), &refused_exec).await;
        exec_us.push(at.elapsed().as_secs_f64() * 1e6);
        anyhow::ensure!(denied.is_err(), "the unlisted exec ran");
    }
    pod.shutdown().await?;
    Ok((boot_ms, median(&mut create_us), median(&mut exec_us)))
}

fn size_mib(path: &Path) -> String {
    std::fs::metadata(path)
        .map(|m| format!("{:.2} MiB", m.len() as f64 / (1024.0 * 1024.0)))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn main() -> anyhow::Result<()> {
    let runs = runs_from_args(10)?;
    let rules = with_policy_data(CONFIDENTIAL_RULES, &policy_data(&container_spec())?);
    println!("agent policy decisions ({runs} rounds, medians, host CPU):");
    for (request, pinned, default) in host_decisions(runs, &rules)? {
        println!(
            "  {request:<24} default rules {pinned:8.1} us, allow-all {default:8.1} us, ratio {:.1}",
            pinned / default
        );
    }
    let Some(env) = VmTestEnv::get("cloak-bench-policy") else {
        println!("in the guest: skipped (no guest image; run make image first)");
        return Ok(());
    };
    let _slot = vm_slot();
    let guest_runs = runs.clamp(1, 5);
    let runtime = tokio::runtime::Runtime::new()?;
    let constant = constant_policy();
    let mut boots = [Vec::new(), Vec::new()];
    let (mut creates, mut execs) = ([Vec::new(), Vec::new()], [Vec::new(), Vec::new()]);
    for _ in 0..guest_runs {
        for (slot, policy) in [(0, rules.as_str()), (1, constant.as_str())] {
            let (boot, create, exec) = runtime.block_on(guest_round(&env, policy, 30))?;
            if slot == 0 {
                boots[0].push(boot);
            }
            creates[slot].push(create);
            execs[slot].push(exec);
        }
        // A pod without init-data (the allow-all default): the boot baseline.
        let started = Instant::now();
        let pod = runtime.block_on(TestPod::boot(&env))?;
        let boot = started.elapsed().as_secs_f64() * 1e3;
        runtime.block_on(pod.shutdown())?;
        boots[1].push(boot);
    }
    let [rules_create, constant_create] = creates.each_mut().map(|v| median(v));
    let [rules_exec, constant_exec] = execs.each_mut().map(|v| median(v));
    println!("in the guest ({guest_runs} pods each, medians of 30 refused requests per pod):");
    println!(
        "  CreateContainerRequest   default rules {rules_create:8.1} us, constant rule {constant_create:8.1} us: decision ~{:.1} us",
        rules_create - constant_create
    );
    println!(
        "  ExecProcessRequest       default rules {rules_exec:8.1} us, constant rule {constant_exec:8.1} us: decision ~{:.1} us",
        rules_exec - constant_exec
    );
    let rules_boot = median(&mut boots[0]);
    let other_boot = median(&mut boots[1]);
    println!(
        "  boot to CreateSandbox done: with the rules' init-data {rules_boot:.0} ms, without a policy of its own {other_boot:.0} ms, ratio {:.2}",
        rules_boot / other_boot
    );
    let agent = std::env::var_os("CLOAK_AGENT_BIN").map(std::path::PathBuf::from);
    println!(
        "agent binary {}, initrd {}",
        agent
            .as_deref()
            .map(size_mib)
            .unwrap_or_else(|| "unknown".into()),
        size_mib(&env.guest_dir.join("initrd.img"))
    );
    Ok(())
}
