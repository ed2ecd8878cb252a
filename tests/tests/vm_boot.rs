//! Pod VMs under the real qemu backend with the real guest kernel: a good boot answers and
//! leaves nothing behind; a guest whose init cannot start fails in time with its console tail.
//! The same boot under the cloak-vmm backend where KVM has VMX/SVM; elsewhere that backend
//! must refuse with the reason.

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use std::time::{Duration, Instant};

use cloak_host::hypervisor;
use cloak_host::pod_vm::vm_config_for;
use cloak_host::PodVm;
use cloak_tests::{processes_mentioning, sockets_below, vm_slot, VmTestEnv};

/// No process mentions the run directory any longer (within 5 s) and no socket is left in it.
fn assert_nothing_left(run_root: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_mentioning(run_root).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_mentioning(run_root), Vec::<String>::new());
    assert_eq!(sockets_below(run_root), Vec::<std::path::PathBuf>::new());
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("tokio runtime")
}

#[test]
fn agent_answers_and_shutdown_leaves_nothing_behind() {
    let Some(env) = VmTestEnv::get("agent_answers_and_shutdown_leaves_nothing_behind") else {
        return;
    };
    let _slot = vm_slot();
    let run_root = tempfile::tempdir().unwrap();
    let config = env.configuration(run_root.path());
    let vm_config = vm_config_for(&config, &env.manifest, "boot-test");

    runtime().block_on(async {
        let backend = hypervisor::from_config(&config.hypervisor);
        let vm = PodVm::boot(
            backend.as_ref(),
            vm_config.clone(),
            config.boot_timeout(),
            config.request_timeout(),
        )
        .await
        .unwrap_or_else(|err| panic!("boot failed: {err}"));

        // The VM's host processes exist while it runs...
        let pids = vm.process_ids();
        assert_eq!(pids.len(), 2, "qemu and the vsock backend");
        assert!(!processes_mentioning(run_root.path()).is_empty());

        vm.agent().check().await.unwrap();
        let details = vm.agent().guest_details().await.unwrap();
        assert_eq!(details.kernel_release, env.manifest.kernel.release);
        assert_eq!(details.online_vcpus, config.hypervisor.vcpus);
        let memory_mib = details.memory_total_bytes >> 20;
        assert!(
            memory_mib > 256 && memory_mib <= u64::from(config.hypervisor.memory_mib),
            "guest sees {memory_mib} MiB of {}",
            config.hypervisor.memory_mib
        );
        for module in ["vsock", "vmw_vsock_virtio_transport", "virtio_mmio"] {
            assert!(
                details.loaded_modules.iter().any(|m| m == module),
                "{module} not loaded: {:?}",
                details.loaded_modules
            );
        }
        let (protocol, _) = vm.agent().version().await.unwrap();
        assert_eq!(protocol, cloak_protocol::PROTOCOL_VERSION);

        vm.shutdown().await;
    });

    // ...and none is left afterwards, nor any socket.
    assert_nothing_left(run_root.path());
    // The agent powered the VM off itself: the console says so.
    let console = std::fs::read_to_string(vm_config.console_log()).unwrap();
    assert!(console.contains("agent serving"), "{console}");
    assert!(console.contains("reboot: Power down"), "{console}");
}

fn boot_expecting_failure(
    env: &VmTestEnv,
    image_dir: &std::path::Path,
    id: &str,
) -> (String, Duration) {
    let run_root = tempfile::tempdir().unwrap();
    let mut config = env.configuration(run_root.path());
    config.guest.image_dir = image_dir.to_owned();
    let manifest = cloak_image::Manifest::load(image_dir).unwrap();
    let vm_config = vm_config_for(&config, &manifest, id);
    let started = Instant::now();
    let result = runtime().block_on(async {
        let backend = hypervisor::from_config(&config.hypervisor);
        PodVm::boot(
            backend.as_ref(),
            vm_config,
            config.boot_timeout(),
            config.request_timeout(),
        )
        .await
    });
    let elapsed = started.elapsed();
    let err = match result {
        Ok(_) => panic!("a broken guest booted"),
        Err(err) => err.to_string(),
    };
    assert_eq!(processes_mentioning(run_root.path()), Vec::<String>::new());
    assert_eq!(
        sockets_below(run_root.path()),
        Vec::<std::path::PathBuf>::new()
    );
    (err, elapsed)
}

#[test]
fn guest_without_a_working_init_fails_in_time_with_the_console_tail() {
    let test = "guest_without_a_working_init_fails_in_time_with_the_console_tail";
    let Some(env) = VmTestEnv::get(test) else {
        return;
    };
    let _slot = vm_slot();
    let work = tempfile::tempdir().unwrap();
    // A text file as /init: the kernel cannot execute it and panics.
    let bogus_init = work.path().join("init");
    std::fs::write(&bogus_init, "this is not an executable\n").unwrap();
    let image = work.path().join("image");
    cloak_tests::build_image_with_init(&bogus_init, &image, |_| {});

    let (err, elapsed) = boot_expecting_failure(&env, &image, "broken-init");
    assert!(elapsed < cloak_tests::boot_timeout(), "took {elapsed:?}");
    assert!(err.contains("exited before the agent was ready"), "{err}");
    assert!(err.contains("last guest console lines"), "{err}");
    assert!(
        err.contains("Kernel panic"),
        "the console tail is missing: {err}"
    );
}

#[test]
fn agent_fatal_error_is_printed_and_powers_off() {
    let test = "agent_fatal_error_is_printed_and_powers_off";
    let Some(env) = VmTestEnv::get(test) else {
        return;
    };
    let Some(agent) = cloak_tests::init_binary(test, cloak_tests::ENV_AGENT_BIN) else {
        return;
    };
    let _slot = vm_slot();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("image");
    // Without the vsock modules the agent cannot bind its socket: a fatal error in PID 1.
    cloak_tests::build_image_with_init(&agent, &image, |config| {
        config.modules.load = vec!["virtio_mmio".to_owned()];
    });

    let (err, elapsed) = boot_expecting_failure(&env, &image, "fatal-agent");
    assert!(elapsed < cloak_tests::boot_timeout(), "took {elapsed:?}");
    assert!(
        err.contains("cloak-agent: fatal: binding the ttrpc server"),
        "{err}"
    );
    // It powered off deliberately rather than panicking the kernel.
    assert!(err.contains("reboot: Power down"), "{err}");
}

/// The built cloak-vmm, or None after saying why.
fn cloak_vmm_binary(test: &str) -> Option<std::path::PathBuf> {
    let found = cloak_tests::workspace_binary("cloak-vmm", "CLOAK_VMM_BIN");
    if found.as_ref().is_none_or(|path| !path.is_file()) {
        cloak_tests::skip(test, "cloak-vmm is not built (make vmm)");
        return None;
    }
    found
}

/// The guest image's kernel and initrd booted by cloak-vmm (direct launch, ACPI-described
/// virtio-mmio devices, vsock served by the VMM): the agent answers Check and reports the
/// guest, and stopping leaves nothing behind.
#[test]
fn cloak_vmm_boots_the_guest_image_and_the_agent_answers() {
    let test = "cloak_vmm_boots_the_guest_image_and_the_agent_answers";
    if !hypervisor::host::kvm_usable() {
        cloak_tests::skip_without_hardware(
            test,
            "cloak-vmm boots Linux on KVM with VMX or SVM; /proc/cpuinfo has neither (the \
             tiny-guest tests in vmm/tests/kvm_tiny.rs run the VMM here, and \
             cloak_vmm_backend_refuses_this_host_with_the_reason checks the refusal)",
        );
        return;
    }
    let Some(env) = VmTestEnv::get(test) else {
        return;
    };
    let Some(binary) = cloak_vmm_binary(test) else {
        return;
    };
    let _slot = vm_slot();
    let run_root = tempfile::tempdir().unwrap();
    let mut config = env.configuration(run_root.path());
    config.hypervisor.kind = cloak_host::config::HypervisorKind::CloakVmm;
    config.hypervisor.cloak_vmm_path = binary;
    let vm_config = vm_config_for(&config, &env.manifest, "vmm-boot-test");
    runtime().block_on(async {
        let backend = hypervisor::from_config(&config.hypervisor);
        let vm = PodVm::boot(
            backend.as_ref(),
            vm_config.clone(),
            config.boot_timeout(),
            config.request_timeout(),
        )
        .await
        .unwrap_or_else(|err| panic!("boot failed: {err}"));
        assert_eq!(vm.backend(), "cloak-vmm");
        vm.agent().check().await.unwrap();
        let details = vm.agent().guest_details().await.unwrap();
        assert_eq!(details.kernel_release, env.manifest.kernel.release);
        assert_eq!(details.online_vcpus, config.hypervisor.vcpus);
        vm.shutdown().await;
    });
    assert_nothing_left(run_root.path());
}

/// Where KVM cannot boot Linux, choosing cloak-vmm fails the pod at once with the reason and
/// the way out, and starts nothing.
#[test]
fn cloak_vmm_backend_refuses_this_host_with_the_reason() {
    let test = "cloak_vmm_backend_refuses_this_host_with_the_reason";
    if hypervisor::host::kvm_usable() {
        eprintln!("SKIPPED {test}: this host's KVM boots Linux (the boot test above runs)");
        return;
    }
    let run_root = tempfile::tempdir().unwrap();
    let mut config = cloak_host::config::Configuration::default();
    config.runtime.run_dir = run_root.path().to_owned();
    config.hypervisor.kind = cloak_host::config::HypervisorKind::CloakVmm;
    let vm_config = hypervisor::VmConfig {
        id: "refused".into(),
        kernel: run_root.path().join("vmlinuz"),
        initrd: run_root.path().join("initrd.img"),
        cmdline: "console=ttyS0".into(),
        vcpus: 1,
        memory_mib: 256,
        run_dir: run_root.path().join("vm"),
        shared_dir: None,
        init_data: Vec::new(),
        network: None,
    };
    runtime().block_on(async {
        let backend = hypervisor::from_config(&config.hypervisor);
        let err = PodVm::boot(
            backend.as_ref(),
            vm_config,
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .err()
        .expect("refused");
        let message = format!("{err:#}");
        assert!(message.contains("neither vmx nor svm"), "{message}");
        assert!(message.contains("kind = \"qemu\""), "{message}");
    });
    assert_eq!(processes_mentioning(run_root.path()), Vec::<String>::new());
}

/// `cloak check` asks cloak-host whether KVM can create a VM (a raw KVM_CREATE_VM, so the
/// command does not link the VMM); cloak-vmm's own answer, through kvm-ioctls, is the oracle.
#[test]
fn the_host_s_kvm_probe_agrees_with_cloak_vmm_s() {
    let host = cloak_host::hypervisor::host::kvm_creates_vms();
    let vmm = cloak_vmm::kvm_available();
    assert_eq!(
        host.is_ok(),
        vmm.is_ok(),
        "host: {host:?}, cloak-vmm: {vmm:?}"
    );
}
