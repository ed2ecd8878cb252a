//! The agent policy in a real pod VM: a pod whose init-data carries a policy runs exactly the
//! containers and execs it names, the host's other requests are refused with PERMISSION_DENIED
//! naming the request and the rule's reason, and output the policy keeps from the host never
//! reaches it while the container still runs to completion. (Without a TEE the policy is
//! enforced just the same; a TEE only adds that HOST_DATA proves which policy it is.)

#![allow(clippy::unwrap_used)] // a test fails loudly by design

use cloak_tests::pod::{busybox_spec, Streams, TestPod};
use cloak_tests::{vm_slot, VmTestEnv};

const TEN_MIB: &str = "10485760";

/// The pod's init-data: a policy admitting three containers by their exact argv, one exec in
/// one of them, and keeping the "quiet" container's output from the host.
fn init_data() -> Vec<u8> {
    format!(
        r#"version = "0.1.0"
algorithm = "sha256"

[data]
"policy.rego" = '''
package agent_policy

default CreateSandboxRequest := true
default DestroySandboxRequest := true
default StartContainerRequest := true
default WaitProcessRequest := true
default RemoveContainerRequest := true
default SignalProcessRequest := true
default WriteStdinRequest := true

default CreateContainerRequest := {{"allowed": false, "reason": "not a container of this pod"}}

CreateContainerRequest := {{"allowed": true, "record": {{"name": "talker"}}}} if {{
    input.oci.process.args == ["sh", "-c", "echo allowed"]
}}

CreateContainerRequest := {{"allowed": true, "record": {{"name": "quiet"}}}} if {{
    input.oci.process.args == ["head", "-c", "{TEN_MIB}", "/dev/zero"]
}}

CreateContainerRequest := {{"allowed": true, "record": {{"name": "long"}}}} if {{
    input.oci.process.args == ["sleep", "60"]
}}

ExecProcessRequest if {{
    data.admitted[input.container_id].name == "long"
    input.process.args == ["true"]
}}

ReadStdoutRequest if data.admitted[input.container_id].name != "quiet"
ReadStderrRequest if data.admitted[input.container_id].name != "quiet"
'''
"#
    )
    .into_bytes()
}

/// The ttrpc status behind a failed request.
fn status_of(err: &anyhow::Error) -> (ttrpc::Code, String) {
    match err.downcast_ref::<ttrpc::Error>() {
        Some(ttrpc::Error::RpcStatus(status)) => (status.code(), status.message().to_owned()),
        _ => panic!("not a ttrpc status: {err:#}"),
    }
}

#[test]
fn a_pod_runs_what_its_policy_names_and_nothing_else() {
    let Some(env) = VmTestEnv::get("a_pod_runs_what_its_policy_names_and_nothing_else") else {
        return;
    };
    let _slot = vm_slot();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let pod = TestPod::boot_with(&env, |_| {}, &init_data())
            .await
            .unwrap_or_else(|err| panic!("boot: {err:#}"));

        // The admitted container runs and its output reaches the host.
        let output = pod
            .run("talker", &busybox_spec(&["sh", "-c", "echo allowed"]), None)
            .await
            .unwrap();
        assert_eq!(output.stdout_text(), "allowed\n");

        // One changed argument: refused, naming the request and the rule's reason.
        let refused = pod
            .create(
                "changed",
                &busybox_spec(&["sh", "-c", "echo changed"]),
                Streams::default(),
            )
            .await
            .err()
            .expect("refused");
        let (code, message) = status_of(&refused);
        assert_eq!(code, ttrpc::Code::PERMISSION_DENIED, "{message}");
        assert_eq!(
            message,
            "CreateContainerRequest is blocked by policy: not a container of this pod"
        );

        // Output kept from the host: none arrives, and 10 MiB written still lets the
        // container finish.
        let quiet = pod
            .run(
                "quiet",
                &busybox_spec(&["head", "-c", TEN_MIB, "/dev/zero"]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(quiet.exit_status, 0);
        assert!(quiet.stdout.is_empty(), "{} bytes", quiet.stdout.len());

        // Execs: the listed command runs, the same with one more argument does not.
        let streams = pod
            .create("long", &busybox_spec(&["sleep", "60"]), Streams::default())
            .await
            .unwrap();
        drop(streams);
        pod.start("long").await.unwrap();
        let exec = pod
            .exec("long", "listed", &["true"], Streams::default())
            .await
            .unwrap();
        drop(exec);
        assert_eq!(pod.wait("long", "listed").await.unwrap().exit_status, 0);
        let refused = pod
            .exec("long", "extra", &["true", "x"], Streams::default())
            .await
            .err()
            .expect("refused");
        let (code, message) = status_of(&refused);
        assert_eq!(code, ttrpc::Code::PERMISSION_DENIED, "{message}");
        assert_eq!(message, "ExecProcessRequest is blocked by policy");

        pod.signal("long", "", 9).await.unwrap();
        pod.wait("long", "").await.unwrap();
        pod.remove("long").await.unwrap();
        pod.shutdown().await.unwrap();
    });
}
