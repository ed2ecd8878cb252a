//! The agent policy engine: every request the host makes of a pod's agent is decided by a Rego
//! policy (evaluated with `regorus`) before the agent acts on it. The agent enforces it; the
//! same engine lets the `cloak` command try a policy on requests without a VM. The policy comes from the pod's init-data
//! (`"policy.rego"`), which a TEE launch binds into HOST_DATA and the agent checks before it
//! loads anything; a pod whose init-data carries none gets the image's default (allow-all, for
//! pods whose host is trusted). It is loaded once, at CreateSandbox, and never replaced.
//!
//! The contract with policy authors (README, "Agent policy"): package `agent_policy`, one rule
//! per request named after its message (`CreateContainerRequest`, `ExecProcessRequest`...);
//! `input` is the request with the field names of `agent.proto` (see `input.rs`); a rule answers
//! `true`, `false`, or `{"allowed": bool, "reason": "...", "record": ...}`. An undefined rule,
//! an evaluation error or any other answer is a denial: the default is deny. What a
//! CreateContainerRequest decision records is kept as `data.admitted[<container id>]` for the
//! later requests about that container, until it is removed.

pub mod input;

use std::sync::Mutex;

/// The policy of a pod whose init-data names none (measured with the agent, in the initrd).
pub const DEFAULT_POLICY: &str = include_str!("../../configs/policy/allow-all.rego");

/// The rules of a confidential pod (`cloak policy generate` adds the pod's `policy_data`).
pub const CONFIDENTIAL_RULES: &str = include_str!("../../configs/policy/rules.rego");

/// A whole policy: `rules` followed by `policy_data := <data>` (JSON is Rego).
pub fn with_policy_data(rules: &str, data: &serde_json::Value) -> String {
    let data = serde_json::to_string_pretty(data).unwrap_or_else(|_| "null".to_owned());
    format!("{rules}\n# What `cloak policy generate` pinned for this pod.\npolicy_data := {data}\n")
}

/// The Rego package every policy defines its rules in.
const PACKAGE: &str = "agent_policy";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("the agent policy does not load: {0}")]
    Load(String),
    #[error("the agent policy is not in package {PACKAGE} (it is {0})")]
    Package(String),
    #[error("the init-data: {0}")]
    InitData(#[from] cloak_init_data::InitDataError),
}

/// What the policy said of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed; `record` is what the rule asked to keep (CreateContainerRequest).
    Allow { record: Option<serde_json::Value> },
    /// Denied, with the rule's reason where it gives one.
    Deny { reason: Option<String> },
}

pub struct AgentPolicy {
    engine: Mutex<regorus::Engine>,
    /// `data.admitted`: what each admitted container's decision recorded.
    admitted: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl std::fmt::Debug for AgentPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPolicy").finish_non_exhaustive()
    }
}

impl AgentPolicy {
    /// Loads `rego` (a whole policy module).
    pub fn load(rego: &str) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        let package = engine
            .add_policy("policy.rego".to_owned(), rego.to_owned())
            .map_err(|err| PolicyError::Load(format!("{err:#}")))?;
        if package != format!("data.{PACKAGE}") {
            return Err(PolicyError::Package(package));
        }
        Ok(Self {
            engine: Mutex::new(engine),
            admitted: Mutex::new(serde_json::Map::new()),
        })
    }

    /// The policy of `init_data` (already checked against HOST_DATA): its `policy.rego`, or the
    /// default.
    pub fn of_init_data(init_data: &[u8]) -> Result<Self, PolicyError> {
        if init_data.is_empty() {
            return Self::load(DEFAULT_POLICY);
        }
        let document = cloak_init_data::InitData::parse(init_data)?;
        Self::load(document.policy().unwrap_or(DEFAULT_POLICY))
    }

    /// Decides `request` (a message name such as "CreateContainerRequest") for `input`.
    pub fn decide(&self, request: &str, input: serde_json::Value) -> Decision {
        let answer = {
            let mut engine = self
                .engine
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            engine.set_input(regorus::Value::from(input));
            engine.eval_rule(format!("data.{PACKAGE}.{request}"))
        };
        match answer {
            Ok(value) => decision_of(&value),
            // A policy without a rule for the request denies it.
            Err(err) if err.to_string().contains("not a valid rule path") => {
                Decision::Deny { reason: None }
            }
            Err(err) => Decision::Deny {
                reason: Some(format!("the policy failed: {err:#}")),
            },
        }
    }

    /// Keeps what the decision that admitted container `id` recorded (`data.admitted[id]`).
    pub fn admit(&self, id: &str, record: Option<serde_json::Value>) {
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        admitted.insert(id.to_owned(), record.unwrap_or(serde_json::Value::Null));
        self.publish(&admitted);
    }

    /// Forgets container `id`.
    pub fn forget(&self, id: &str) {
        let mut admitted = self
            .admitted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if admitted.remove(id).is_some() {
            self.publish(&admitted);
        }
    }

    fn publish(&self, admitted: &serde_json::Map<String, serde_json::Value>) {
        let data = serde_json::json!({ "admitted": admitted });
        let mut engine = self
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        engine.clear_data();
        if let Err(err) = engine.add_data(regorus::Value::from(data)) {
            tracing::error!(error = %err, "the policy's record of admitted containers");
        }
    }
}

/// A rule's answer as a decision: `true`, or an object whose `allowed` is `true`, allows;
/// anything else denies.
fn decision_of(value: &regorus::Value) -> Decision {
    use regorus::Value;
    match value {
        Value::Bool(true) => Decision::Allow { record: None },
        Value::Object(fields) => {
            let field = |name: &str| fields.get(&Value::from(name));
            let reason = match field("reason") {
                Some(Value::String(text)) => Some(text.to_string()),
                _ => None,
            };
            match field("allowed") {
                Some(Value::Bool(true)) => Decision::Allow {
                    record: field("record").and_then(|record| {
                        record
                            .to_json_str()
                            .ok()
                            .and_then(|json| serde_json::from_str(&json).ok())
                    }),
                },
                _ => Decision::Deny { reason },
            }
        }
        _ => Decision::Deny { reason: None },
    }
}

#[cfg(test)]
mod tests;
