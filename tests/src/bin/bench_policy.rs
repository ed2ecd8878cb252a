//! Agent policy benchmark: the cost of one decision of `cloak-policy` (the engine the agent
//! runs) for a CreateContainer and an Exec request of a pod whose policy pins a few containers
//! by argv, env and user the way a generated policy does, against the same requests under the
//! allow-all default in the same run; medians of N rounds, in microseconds. (On the host CPU:
//! the guest runs the same code, slower by whatever its vCPU is.)
//!
//! Usage: cloak-bench-policy [--runs N]   (make bench-policy)

#![allow(clippy::print_stdout)] // a benchmark prints its figures

use std::time::Instant;

use cloak_policy::{AgentPolicy, Decision, DEFAULT_POLICY};
use cloak_tests::bench::{median, runs_from_args};
use serde_json::json;

/// A policy shaped like a generated one: containers listed in data, matched on argv, env,
/// user and working directory; execs listed per container.
const PINNED: &str = r#"
package agent_policy

containers := [
    {"args": ["/pause"], "env": ["PATH=/usr/bin:/bin"], "uid": 65535, "cwd": "/", "execs": []},
    {"args": ["nginx", "-g", "daemon off;"], "env": ["PATH=/usr/bin:/bin", "NGINX_VERSION=1.27"],
     "uid": 101, "cwd": "/", "execs": [["nginx", "-t"]]},
    {"args": ["/bin/sh", "-c", "sleep infinity"], "env": ["PATH=/usr/bin:/bin", "MODE=side"],
     "uid": 1000, "cwd": "/work", "execs": [["cat", "/tmp/ready"], ["true"]]},
]

default CreateContainerRequest := false

CreateContainerRequest := {"allowed": true, "record": {"index": i}} if {
    some i, c in containers
    p := input.oci.process
    p.args == c.args
    every e in p.env { e in c.env }
    p.user.uid == c.uid
    p.cwd == c.cwd
}

default ExecProcessRequest := false

ExecProcessRequest if {
    i := data.admitted[input.container_id].index
    input.process.args in containers[i].execs
}
"#;

fn create_input() -> serde_json::Value {
    json!({
        "container_id": "side",
        "oci": {"process": {
            "args": ["/bin/sh", "-c", "sleep infinity"],
            "env": ["PATH=/usr/bin:/bin", "MODE=side"],
            "user": {"uid": 1000, "gid": 1000},
            "cwd": "/work"
        }},
        "storages": [],
    })
}

fn exec_input() -> serde_json::Value {
    json!({"container_id": "side", "exec_id": "probe", "process": {"args": ["cat", "/tmp/ready"]}})
}

/// Microseconds per decision of `request` with `input`, over `batch` decisions.
fn time_decisions(
    policy: &AgentPolicy,
    request: &str,
    input: &serde_json::Value,
    batch: u32,
) -> f64 {
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

fn main() -> anyhow::Result<()> {
    let runs = runs_from_args(10)?;
    let pinned = AgentPolicy::load(PINNED)?;
    let Decision::Allow { record } = pinned.decide("CreateContainerRequest", create_input()) else {
        anyhow::bail!("the pinned policy refuses its own container");
    };
    pinned.admit("side", record);
    let default = AgentPolicy::load(DEFAULT_POLICY)?;
    let batch = 200;
    let mut rows = Vec::new();
    for (request, input) in [
        ("CreateContainerRequest", create_input()),
        ("ExecProcessRequest", exec_input()),
    ] {
        let (mut pinned_us, mut default_us) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            pinned_us.push(time_decisions(&pinned, request, &input, batch));
            default_us.push(time_decisions(&default, request, &input, batch));
        }
        rows.push((request, median(&mut pinned_us), median(&mut default_us)));
    }
    println!("agent policy decisions ({runs} rounds of {batch}, medians, host CPU):");
    for (request, pinned, default) in rows {
        println!(
            "  {request:<24} pinned policy {pinned:8.1} us, allow-all {default:8.1} us, ratio {:.1}",
            pinned / default
        );
    }
    Ok(())
}
