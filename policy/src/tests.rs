//! The decision contract: what answers allow, what deny, the reasons, the record kept per
//! container, and that every request the agent serves has a rule in the default policy.

use super::*;
use serde_json::json;

const POLICY: &str = r#"
package agent_policy

default CreateContainerRequest := false

CreateContainerRequest := {"allowed": true, "record": {"entry": 1}} if {
    input.oci.process.args == ["/pause"]
}

CreateContainerRequest := {"allowed": false, "reason": "runs as root"} if {
    input.oci.process.user.uid == 0
}

ExecProcessRequest if {
    data.admitted[input.container_id].entry == 1
    input.process.args == ["/bin/true"]
}

StartContainerRequest := 42
"#;

fn create(args: &[&str], uid: u32) -> serde_json::Value {
    json!({"container_id": "c1", "oci": {"process": {"args": args, "user": {"uid": uid}}}})
}

#[test]
fn answers_allow_deny_and_give_reasons() {
    let policy = AgentPolicy::load(POLICY).expect("loads");
    assert_eq!(
        policy.decide("CreateContainerRequest", create(&["/pause"], 1000)),
        Decision::Allow {
            record: Some(json!({"entry": 1}))
        }
    );
    assert_eq!(
        policy.decide("CreateContainerRequest", create(&["/bin/sh"], 1000)),
        Decision::Deny { reason: None },
        "the default"
    );
    assert_eq!(
        policy.decide("CreateContainerRequest", create(&["/bin/sh"], 0)),
        Decision::Deny {
            reason: Some("runs as root".to_owned())
        }
    );
    // An answer that is not a decision, and a rule the policy does not have, deny.
    assert_eq!(
        policy.decide("StartContainerRequest", json!({})),
        Decision::Deny { reason: None }
    );
    assert_eq!(
        policy.decide("RemoveContainerRequest", json!({})),
        Decision::Deny { reason: None }
    );
}

#[test]
fn what_a_create_decision_records_serves_later_requests_until_forgotten() {
    let policy = AgentPolicy::load(POLICY).expect("loads");
    let exec = json!({"container_id": "c1", "process": {"args": ["/bin/true"]}});
    assert_eq!(
        policy.decide("ExecProcessRequest", exec.clone()),
        Decision::Deny { reason: None },
        "not admitted yet"
    );
    let Decision::Allow { record } =
        policy.decide("CreateContainerRequest", create(&["/pause"], 1000))
    else {
        panic!("admitted");
    };
    policy.admit("c1", record);
    assert_eq!(
        policy.decide("ExecProcessRequest", exec.clone()),
        Decision::Allow { record: None }
    );
    policy.forget("c1");
    assert_eq!(
        policy.decide("ExecProcessRequest", exec),
        Decision::Deny { reason: None }
    );
}

#[test]
fn a_policy_in_another_package_or_with_errors_is_refused() {
    let err = AgentPolicy::load("package other\nallow := true\n").expect_err("package");
    assert!(err.to_string().contains("data.other"), "{err}");
    let err = AgentPolicy::load("package agent_policy\nallow := \n").expect_err("syntax");
    assert!(matches!(err, PolicyError::Load(_)), "{err}");
}

#[test]
fn the_default_policy_has_a_rule_for_every_request_the_agent_serves() {
    let policy = AgentPolicy::load(DEFAULT_POLICY).expect("loads");
    let proto = include_str!("../../protocol/protos/agent.proto");
    let rpcs: Vec<&str> = proto
        .lines()
        .filter_map(|line| line.trim().strip_prefix("rpc "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    assert!(rpcs.len() > 20, "{rpcs:?}");
    for rpc in rpcs {
        assert_eq!(
            policy.decide(&format!("{rpc}Request"), json!({})),
            Decision::Allow { record: None },
            "{rpc}"
        );
    }
}

#[test]
fn init_data_without_a_policy_gets_the_default() {
    let document = b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n";
    let policy = AgentPolicy::of_init_data(document).expect("default");
    assert_eq!(
        policy.decide("CreateContainerRequest", json!({})),
        Decision::Allow { record: None }
    );
    let with_policy = b"version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n";
    let policy = AgentPolicy::of_init_data(with_policy).expect("its own");
    assert_eq!(
        policy.decide("CreateContainerRequest", json!({})),
        Decision::Deny { reason: None }
    );
}

#[test]
fn inputs_carry_proto_field_names_and_the_parsed_spec() {
    use cloak_protocol::agent::{CreateContainerRequest, CreateSandboxRequest};
    let request = CreateContainerRequest {
        container_id: "c1".into(),
        oci_spec_json: br#"{"process": {"args": ["sh"]}}"#.to_vec(),
        ..Default::default()
    };
    let value = input::of_message(&request);
    assert_eq!(value["container_id"], "c1");
    assert_eq!(value["oci"]["process"]["args"], json!(["sh"]));
    assert!(value.get("oci_spec_json").is_none());
    assert!(value.get("storages").is_some(), "defaults are present");
    let sandbox = CreateSandboxRequest {
        hostname: "pod".into(),
        init_data: b"secret-ish".to_vec(),
        ..Default::default()
    };
    let value = input::of_message(&sandbox);
    assert_eq!(value["hostname"], "pod");
    assert!(value.get("init_data").is_none());
}
